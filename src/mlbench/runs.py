"""Run directories and config resolution, shared by the CLI, the launcher and the worker.

A run directory holds everything a run produced: ``config.json`` (resolved config), ``run.json``
(launch request), ``rank-<r>.jsonl`` (events), ``rank-<r>.stdout``/``.stderr`` and ``result.json``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlbench.config import apply_overrides, from_dict, load_file, to_dict
from mlbench.errors import ConfigError
from mlbench.registry import algorithm_names, get_algorithm, get_task
from mlbench.tasks.base import RunConfig, TaskBase

CONFIG_FILE = "config.json"
LAUNCH_FILE = "run.json"


def mlbench_home() -> Path:
    return Path(os.environ.get("MLBENCH_HOME", "~/.mlbench")).expanduser()


def default_runs_dir() -> Path:
    return mlbench_home() / "runs"


def new_run_id(task: str) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{task}-{secrets.token_hex(3)}"


def create_run_dir(runs_dir: Path, task: str, run_id: str | None = None) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    if run_id is not None:
        if not run_id or "/" in run_id or run_id.startswith("."):
            raise ConfigError(f"invalid run id {run_id!r}")
        path = runs_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise ConfigError(f"run directory {path} already exists") from None
        return path
    for _ in range(10):
        path = runs_dir / new_run_id(task)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh run directory in {runs_dir}")


def _scheme_name(default: str, data: dict[str, Any], overrides: list[str]) -> str:
    """``algorithm.name`` as the sources say it: the last override, else the file, else the
    task's default. Needed first, because it decides the type of the ``algorithm`` section."""
    name = default
    section = data.get("algorithm")
    if isinstance(section, dict) and isinstance(section.get("name"), str):
        name = section["name"]
    for item in overrides:
        key, sep, text = item.partition("=")
        if sep and key.strip() == "algorithm.name":
            name = text.strip()
    return name


def _owners(key: str) -> list[str]:
    """The built-in or installed schemes that have option ``key`` (for an error message)."""
    import dataclasses

    out = []
    for name in algorithm_names():
        try:
            cls = get_algorithm(name)
        except ConfigError:
            continue
        if key in {f.name for f in dataclasses.fields(cls.config_cls)}:
            out.append(name)
    return out


def resolve_config(
    task_name: str,
    *,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    data: dict[str, Any] | None = None,
) -> tuple[TaskBase, RunConfig]:
    """Task defaults ← the scheme's section ← config file (or ``data``) ← ``--set`` overrides,
    each strictly type-checked.

    The ``algorithm`` section's type comes from ``algorithm.name`` (resolved first): a key of
    another scheme is an error that names the schemes that have it.
    """
    task = get_task(task_name)
    overrides = list(overrides)
    if config_file is not None:
        data = load_file(config_file)
        if data.get("task", task_name) != task_name:
            raise ConfigError(f"config file {config_file} is for task {data['task']!r}")
    data = data or {}
    cfg = task.default_config()
    name = _scheme_name(cfg.algorithm.name, data, overrides)
    cfg = task.with_scheme(cfg, name, get_algorithm(name).config_cls)
    try:
        cfg = from_dict(type(cfg), data, base=cfg)
        cfg = apply_overrides(cfg, overrides)
    except ConfigError as exc:
        raise _explain_scheme_key(exc, name) from None
    if cfg.task != task.name:
        raise ConfigError("task cannot be changed by an override; name it on the command line")
    return task, cfg


def _explain_scheme_key(exc: ConfigError, scheme: str) -> ConfigError:
    """An unknown ``algorithm.X`` that another scheme has: say whose option it is."""
    import re

    match = re.match(r"unknown config key 'algorithm\.([A-Za-z_]\w*)'", str(exc))
    if match is None:
        return exc
    owners = _owners(match.group(1))
    if not owners:
        return exc
    return ConfigError(
        f"algorithm.{match.group(1)} is not an option of scheme {scheme!r}; it is an option of "
        f"{', '.join(owners)} (set algorithm.name / --algorithm first). {exc}"
    )


def task_spec(task_name: str) -> dict[str, Any]:
    """A task's spec with its default scheme's options resolved (``tasks --show``, the API)."""
    task, cfg = resolve_config(task_name)
    return task.spec(cfg)


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    (run_dir / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")


def load_run_config(run_dir: Path) -> tuple[TaskBase, RunConfig]:
    path = run_dir / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found (is this a run directory?)") from None
    # a task named as module:Class is found again by that reference (run.json), not its name
    ref = read_launch(run_dir).get("task_ref") or data.get("task", "")
    return resolve_config(ref, data=data)


def write_launch(run_dir: Path, info: dict[str, Any]) -> None:
    (run_dir / LAUNCH_FILE).write_text(json.dumps(info, indent=2) + "\n")


def read_launch(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / LAUNCH_FILE).read_text())
    except FileNotFoundError:
        return {}


def make_result(
    run_dir: Path,
    task: TaskBase,
    cfg: RunConfig,
    *,
    state: str,
    world_size: int,
    backend: str | None,
    ranks: list[dict[str, Any]],
    reason: str | None = None,
) -> dict[str, Any]:
    """result.json content for a run of ``task`` — the one place that assembles it."""
    from dataclasses import asdict

    from mlbench.results.summary import build_result
    from mlbench.telemetry.environment import collect

    launch = read_launch(run_dir)
    faults = launch.get("faults") or []
    differences = (
        task.official_differences(cfg)
        + launch.get("official_data_issues", [])
        + [f"fault injected: {f['spec']}" for f in faults]  # docs/faults.md
    )
    result = build_result(
        run_id=run_dir.name,
        task=task.name,
        state=state,
        reason=reason,
        config=asdict(cfg),
        official=not differences,
        official_differences=differences,
        environment=collect(cfg.seed),
        world_size=world_size,
        backend=backend,
        algorithm=cfg.algorithm.name,
        goal=task.describe_goal(cfg),
        ranks=ranks,
    )
    result["faults"] = faults
    return result


def validate_run(task: TaskBase, cfg: RunConfig, world_size: int) -> None:
    """Run-level validation before any process starts: the task's own checks, then the scheme's.

    It lives here, in a composition root, because it needs both the task and the scheme named by
    ``algorithm.name`` — and a task never imports a scheme (DESIGN §3).
    """
    from mlbench.registry import get_algorithm

    task.validate(cfg, world_size)
    get_algorithm(cfg.algorithm.name).check_config(cfg.algorithm, world_size)


def algorithm_specs() -> list[dict[str, Any]]:
    """Every communication scheme with the ``algorithm.*`` options it reads (CLI and API)."""
    import sys

    from mlbench.config import flat_items

    out = []
    for name in algorithm_names():
        cls = get_algorithm(name)
        module_doc = sys.modules[cls.__module__].__doc__
        doc = (cls.__doc__ or module_doc or "").strip().split("\n\n")[0]
        options = [
            {
                "key": f"algorithm.{k}",
                "default": v,
                "open": bool(f.metadata.get("open")),
                "help": f.metadata.get("help", ""),
            }
            for k, v, f in flat_items(cls.config_cls(name=name))
            if k != "name"
        ]
        out.append({"name": name, "summary": " ".join(doc.split()), "options": options})
    return out
