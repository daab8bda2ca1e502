# mlbench — set up, run a benchmark, test.
#   make run    venv + install + real data + a 2-worker benchmark (2a on a9a, light goal)
#   make test   lint, types, system test dependencies and the whole test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel. GPU users: put their own torch in the venv first (see README), or override, e.g.
#   make install TORCH_SPEC="torch==2.6.0 --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
DATA ?= .data
# The shared dataset folder (the one holding materialize.py): $SHARED_DATA, $MLBENCH_SHARED_DATA,
# or ../shared/data beside the checkout. Empty when there is none (a machine with only internet).
SHARED_DATA ?= $(or $(MLBENCH_SHARED_DATA),$(patsubst %/materialize.py,%,$(firstword \
	$(wildcard ../shared/data/materialize.py))))

.PHONY: install data run test test-deps lint format clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, so resolving "torch>=2.1" never pulls a multi-GB CUDA build on a CPU machine;
	# a torch already in the venv (yours) is kept.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# With the shared folder: every dataset the tests use, in the official layouts (~20 s, no network).
# Without it: what the quick start needs (a9a), from the LIBSVM site, sha256-checked; re-running
# it makes no request once the files are there.
data: install
ifneq ($(SHARED_DATA),)
	@$(MAKE) --no-print-directory $(DATA)/.materialized
else
	@echo "no shared dataset folder (../shared/data, SHARED_DATA=...): fetching a9a from the internet"
	$(BIN)/mlbench data fetch a9a --data-dir $(DATA)
endif

$(DATA)/.materialized:
	@test -f "$(SHARED_DATA)/materialize.py" || { echo "$(SHARED_DATA)/materialize.py not found: set SHARED_DATA to the shared dataset folder"; exit 2; }
	$(PYTHON) $(SHARED_DATA)/materialize.py $(DATA) --only cifar10,libsvm
	touch $@

run: install data
	$(BIN)/mlbench run epsilon-logreg --workers 2 --goal light --set data.dataset=a9a --data-dir $(DATA)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Chromium (browser tests) and the PostgreSQL 15 binaries (throwaway clusters): installed with apt
# when missing and we may (root or password-less sudo), else a one-line list of what to install.
# Then helm, kubernetes-validate and checkov for tests/chart, into .tools/ (~75 s once, then ~0.3 s).
test-deps:
	./.ci/system-deps
	./.ci/chart-tools

# The tests train on the real datasets (CIFAR-10, a9a, ...), materialised from the shared folder.
test: lint test-deps
	@test -n "$(SHARED_DATA)" || test -f $(DATA)/.materialized || { echo "make test needs the real datasets: the shared dataset folder at ../shared/data, or SHARED_DATA=path/to/it"; exit 2; }
	MLBENCH_TEST_DATA=$(abspath $(DATA)) MLBENCH_SHARED_DATA=$(abspath $(SHARED_DATA)) \
		$(BIN)/python -m pytest -q

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
