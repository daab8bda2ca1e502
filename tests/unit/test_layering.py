"""Imports point down the layers (DESIGN §3), checked by parsing every module's imports.

Why a test: a layering rule that is only written down erodes one convenient import at a time —
the import circle ``algorithms/base → tasks/base → registry / train/loop → algorithms`` grew that
way. Every ``import``/``from`` statement counts, including those inside functions and under
``TYPE_CHECKING``: a lazy or type-only import still couples the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mlbench"

#: layer of each top-level part of the package (higher may import lower, never the reverse)
LAYERS: dict[str, int] = {
    # the bottom: formats, models, metrics, schedules, records, config, process group, errors
    "data": 0,
    "models": 0,
    "metrics": 0,
    "schedules": 0,
    "telemetry": 0,
    "config": 0,
    "dist": 0,
    "errors": 0,
    "vocab": 0,
    "limits": 0,
    "attempts": 0,  # the restart record: engines write it, the loop reads it
    "faults": 0,  # the --fault grammar: the session checks it, the ranks act on it
    "__init__": 0,
    # siblings: a scheme never imports a task, a task never a scheme
    "tasks": 1,
    "algorithms": 1,
    # the loop, handed its task and scheme
    "train": 2,
    # engines, the launch session, summaries, reports; the registry and the run-level roots
    "launch": 3,
    "results": 3,
    "report": 3,
    "clusters": 3,  # the cloud helpers' plans (argv lists, config files): no engine, no server
    "registry": 3,
    "runs": 3,
    "testing": 3,
    # faces
    "cli": 4,
    "server": 4,
}
SIBLINGS = {("tasks", "algorithms"), ("algorithms", "tasks")}
#: the composition roots: the only modules that may import the registry (which names every task
#: and scheme), besides the faces
ROOTS = {"runs.py", "launch/worker.py", "testing.py", "registry.py"}


def _part(module: str) -> str | None:
    """``mlbench.tasks.base`` → ``tasks``; None for modules outside the package."""
    parts = module.split(".")
    if parts[0] != "mlbench":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, src: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("mlbench", *path.relative_to(src).parent.parts))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            out.append((node.lineno, module))
            # ``from mlbench import runs`` imports the module ``mlbench.runs``
            if module == "mlbench":
                out += [
                    (node.lineno, f"mlbench.{alias.name}")
                    for alias in node.names
                    if (src / alias.name).is_dir() or (src / f"{alias.name}.py").is_file()
                ]
    return out


def violations(src: Path = SRC) -> list[str]:
    found = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        own = rel.split("/")[0].removesuffix(".py")
        own_layer = LAYERS.get(own)
        if own_layer is None:
            found.append(f"{rel}: not assigned to a layer in this test (add it to LAYERS)")
            continue
        for lineno, module in _imports(path, src):
            target = _part(module)
            if target is None or target == own or module == "mlbench":
                continue
            where = f"src/mlbench/{rel}:{lineno}: imports {module}"
            if target not in LAYERS:
                found.append(f"{where} (a part with no layer)")
            elif LAYERS[target] > own_layer:
                found.append(f"{where}, a higher layer ({target} above {own})")
            elif (own, target) in SIBLINGS:
                found.append(f"{where}: {own} and {target} are siblings, neither imports the other")
            elif target == "registry" and own not in ("cli", "server") and rel not in ROOTS:
                found.append(f"{where}: only composition roots look tasks/schemes up by name")
    return found


def test_imports_point_down() -> None:
    problems = violations()
    assert not problems, "layering violations (DESIGN §3):\n" + "\n".join(problems)


def test_the_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself can fail: a bottom-layer module importing the loop is reported with
    its file and line."""
    pkg = tmp_path / "mlbench"
    (pkg / "data").mkdir(parents=True)
    (pkg / "tasks").mkdir()
    (pkg / "data" / "bad.py").write_text("import os\n\nfrom mlbench.train.loop import train\n")
    (pkg / "tasks" / "worse.py").write_text(
        "def f():\n    from mlbench.algorithms.base import Algorithm\n"
    )
    (pkg / "registry.py").write_text("")
    (pkg / "tasks" / "lookup.py").write_text("from mlbench import registry\n")
    found = violations(pkg)
    assert any("data/bad.py:3: imports mlbench.train.loop" in v for v in found), found
    assert any("tasks/worse.py:2" in v and "siblings" in v for v in found), found
    assert any("tasks/lookup.py:1" in v for v in found), found


@pytest.mark.parametrize("module", ["mlbench.tasks.base", "mlbench.algorithms.base"])
def test_contract_modules_import_without_the_registry(module: str) -> None:
    import subprocess
    import sys

    code = f"import sys, {module}; print('mlbench.registry' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
