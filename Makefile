# mlbench — set up, run a benchmark, test.
#   make run    venv + install + real data + a 2-worker benchmark (2a on a9a, light goal)
#   make test   lint, types and the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel. GPU users: put their own torch in the venv first (see README), or override, e.g.
#   make install TORCH_SPEC="torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
DATA ?= .data
SHARED_DATA ?= $(firstword $(wildcard ../shared/data /work/shared/data))

.PHONY: install data run test lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, so resolving "torch>=2.1" never pulls a multi-GB CUDA build on a CPU machine;
	# a torch already in the venv (yours) is kept.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

data: $(DATA)/.materialized

$(DATA)/.materialized:
	@test -n "$(SHARED_DATA)" || { echo "real datasets not found: set SHARED_DATA=path/to/shared/data"; exit 2; }
	$(PYTHON) $(SHARED_DATA)/materialize.py $(DATA) --only cifar10,libsvm
	touch $@

run: install data
	$(BIN)/mlbench run epsilon-logreg --workers 2 --goal light --set data.dataset=a9a --data-dir $(DATA)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	MLBENCH_TEST_DATA=$(abspath $(DATA)) $(BIN)/python -m pytest -q

format: install
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
