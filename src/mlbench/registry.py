"""Name → class registries for tasks and algorithms.

Built-ins are listed here; user plug-ins join through the ``mlbench.algorithms`` entry-point group
or as ``module:Class`` on the command line. Imports are lazy so ``mlbench --help`` stays instant.
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING

from mlbench.errors import ConfigError

if TYPE_CHECKING:
    from mlbench.algorithms.base import Algorithm
    from mlbench.tasks.base import TaskBase

TASKS: dict[str, str] = {
    "comm-backend": "mlbench.tasks.comm_backend:CommBackend",
    "cifar10-resnet20": "mlbench.tasks.cifar10_resnet20:Cifar10ResNet20",
    "imagenet-resnet50": "mlbench.tasks.imagenet_resnet50:ImageNetResNet50",
    "epsilon-logreg": "mlbench.tasks.epsilon_logreg:EpsilonLogReg",
    "wikitext2-lstm": "mlbench.tasks.wikitext2_lstm:WikiText2LSTM",
    "wmt16-gnmt": "mlbench.tasks.wmt16_gnmt:WMT16GNMT",
    "wmt17-transformer": "mlbench.tasks.wmt17_transformer:WMT17Transformer",
}

ALGORITHMS: dict[str, str] = {
    "allreduce": "mlbench.algorithms.allreduce:AllReduce",
    "adam": "mlbench.algorithms.adam:CentralizedAdam",
    "ddp": "mlbench.algorithms.ddp:DDP",
    "powersgd": "mlbench.algorithms.powersgd:PowerSGD",
    "gossip": "mlbench.algorithms.gossip:Gossip",
    "topk": "mlbench.algorithms.sparse:TopK",
    "randomk": "mlbench.algorithms.sparse:RandomK",
    "signsgd": "mlbench.algorithms.sign:SignSGD",
    "localsgd": "mlbench.algorithms.localsgd:LocalSGD",
}


def _load(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _names(builtins: dict[str, str], group: str) -> list[str]:
    """Built-in names, then those installed through entry-point ``group``."""
    names = list(builtins)
    for ep in metadata.entry_points(group=group):
        if ep.name not in names:
            names.append(ep.name)
    return names


def _find(name: str, builtins: dict[str, str], group: str, kind: str) -> type:
    """The class a name stands for: built-in, entry point, or ``module:Class``."""
    if name in builtins:
        return _load(builtins[name])
    eps = {ep.name: ep for ep in metadata.entry_points(group=group)}
    if name in eps:
        return eps[name].load()
    if ":" in name:
        try:
            return _load(name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load {kind} {name!r}: {exc}") from None
    known = ", ".join(_names(builtins, group))
    label = "known tasks" if kind == "task" else "known"
    raise ConfigError(f"unknown {kind} {name!r}; {label}: {known} (or module:Class)")


def task_names() -> list[str]:
    """Built-in tasks, then tasks installed through the ``mlbench.tasks`` entry-point group."""
    return _names(TASKS, "mlbench.tasks")


def training_task_names() -> list[str]:
    """The tasks that train a model (every scheme applies to them), not measurement tasks."""
    from mlbench.tasks.base import Task

    return [name for name in task_names() if isinstance(get_task(name), Task)]


def get_task(name: str) -> TaskBase:
    """A task by registered name, entry point, or ``module:Class`` (a task of your own)."""
    from mlbench.tasks.base import TaskBase

    cls = _find(name, TASKS, "mlbench.tasks", "task")
    if not (isinstance(cls, type) and issubclass(cls, TaskBase)):
        raise ConfigError(f"task {name!r} is not a subclass of mlbench's Task")
    return cls()


def algorithm_names() -> list[str]:
    return _names(ALGORITHMS, "mlbench.algorithms")


def get_algorithm(name: str) -> type[Algorithm]:
    from mlbench.algorithms.base import Algorithm

    cls = _find(name, ALGORITHMS, "mlbench.algorithms", "algorithm")
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise ConfigError(f"algorithm {name!r} is not a subclass of mlbench Algorithm")
    return cls
