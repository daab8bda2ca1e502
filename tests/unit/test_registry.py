"""mlbench.registry: task and algorithm lookup."""

from __future__ import annotations

import textwrap

import pytest

from mlbench.algorithms.allreduce import AllReduce
from mlbench.algorithms.base import Algorithm
from mlbench.errors import ConfigError
from mlbench.registry import (
    algorithm_names,
    get_algorithm,
    get_task,
    task_names,
    training_task_names,
)
from mlbench.tasks.base import Task


def test_task_names():
    builtins = [
        "comm-backend",
        "cifar10-resnet20",
        "imagenet-resnet50",
        "epsilon-logreg",
        "wikitext2-lstm",
        "wmt16-gnmt",
        "wmt17-transformer",
    ]
    assert task_names() == builtins
    assert training_task_names() == builtins[1:]


@pytest.mark.parametrize(
    ("name", "task_id"),
    [
        ("cifar10-resnet20", "1a"),
        ("imagenet-resnet50", "1b"),
        ("epsilon-logreg", "2a"),
        ("wikitext2-lstm", "3a"),
        ("wmt16-gnmt", "4a"),
        ("wmt17-transformer", "4b"),
    ],
)
def test_get_task(name, task_id):
    task = get_task(name)
    assert isinstance(task, Task)
    assert task.name == name and task.task_id == task_id
    cfg = task.default_config()
    assert cfg.task == name
    assert isinstance(cfg, task.config_cls)


def test_get_task_returns_fresh_instances():
    assert get_task("epsilon-logreg") is not get_task("epsilon-logreg")


@pytest.mark.parametrize("name", ["cifar10", "resnet20", "", "CIFAR10-RESNET20"])
def test_unknown_task_lists_known_tasks(name):
    with pytest.raises(ConfigError) as exc:
        get_task(name)
    msg = str(exc.value)
    assert repr(name) in msg
    assert "cifar10-resnet20" in msg and "epsilon-logreg" in msg


def test_get_algorithm_builtin():
    assert get_algorithm("allreduce") is AllReduce
    assert "allreduce" in algorithm_names()


def test_get_algorithm_module_path(tmp_path, monkeypatch):
    (tmp_path / "mlbench_test_plugin_mod.py").write_text(
        textwrap.dedent(
            """
            from mlbench.algorithms.base import Algorithm

            class Gossip(Algorithm):
                name = "gossip"

                def setup(self, model):
                    pass

            class NotAnAlgorithm:
                pass

            not_a_class = 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = get_algorithm("mlbench_test_plugin_mod:Gossip")
    assert issubclass(cls, Algorithm) and cls.__name__ == "Gossip"
    with pytest.raises(ConfigError, match="not a subclass"):
        get_algorithm("mlbench_test_plugin_mod:NotAnAlgorithm")
    with pytest.raises(ConfigError, match="not a subclass"):
        get_algorithm("mlbench_test_plugin_mod:not_a_class")
    with pytest.raises(ConfigError, match="cannot load"):
        get_algorithm("mlbench_test_plugin_mod:Missing")


def test_get_algorithm_builtin_by_module_path():
    assert get_algorithm("mlbench.algorithms.allreduce:AllReduce") is AllReduce


@pytest.mark.parametrize("name", ["collections:OrderedDict", "os:path", "builtins:int"])
def test_non_algorithm_class_is_config_error(name):
    with pytest.raises(ConfigError, match="not a subclass"):
        get_algorithm(name)


def test_unimportable_module_is_config_error():
    with pytest.raises(ConfigError, match="cannot load") as exc:
        get_algorithm("no_such_module_xyz:Thing")
    assert "no_such_module_xyz" in str(exc.value)


@pytest.mark.parametrize("name", ["ring", "AllReduce", ""])
def test_unknown_algorithm_lists_known(name):
    with pytest.raises(ConfigError, match="unknown algorithm") as exc:
        get_algorithm(name)
    assert "allreduce" in str(exc.value)
    assert "module:Class" in str(exc.value)


def test_validate_rejects_unknown_algorithm_name():
    from mlbench.runs import validate_run

    task = get_task("cifar10-resnet20")
    from mlbench.config import apply_overrides

    cfg = apply_overrides(task.default_config(), ["algorithm.name=ring"])
    with pytest.raises(ConfigError, match="ring"):
        validate_run(task, cfg, 2)
    validate_run(task, task.default_config(), 2)  # the default passes
