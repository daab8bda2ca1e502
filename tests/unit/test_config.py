"""mlbench.config: typed overrides, strict dict loading, config files and the closed division."""

from __future__ import annotations

import dataclasses
import json

import pytest

from mlbench.config import (
    apply_overrides,
    flat_items,
    from_dict,
    get,
    load_file,
    to_dict,
)
from mlbench.errors import ConfigError
from mlbench.registry import get_task
from mlbench.runs import load_run_config, resolve_config, write_config

CIFAR = "cifar10-resnet20"
EPS = "epsilon-logreg"


@pytest.fixture
def cifar_cfg():
    return resolve_config(CIFAR)[1]  # the default scheme's section resolved


@pytest.fixture
def eps_cfg():
    return resolve_config(EPS)[1]


# ---------------------------------------------------------------------------- overrides by type


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("seed=7", "seed", 7),
        ("seed=-3", "seed", -3),
        ("seed= 12 ", "seed", 12),
        ("seed=1e3", "seed", 1000),  # an integral float literal is an integer
        ("train.max_epochs=3.0", "train.max_epochs", 3),
        ("optim.lr=0.25", "optim.lr", 0.25),
        ("optim.lr=1e-3", "optim.lr", 0.001),
        ("optim.lr=2", "optim.lr", 2.0),
        ("data.augment=false", "data.augment", False),
        ("data.augment=0", "data.augment", False),
        ("data.augment=off", "data.augment", False),
        ("optim.nesterov=TRUE", "optim.nesterov", True),
        ("optim.nesterov=yes", "optim.nesterov", True),
        ("data.dir=/tmp/some where", "data.dir", "/tmp/some where"),
        ("algorithm.name=mypkg.algo:Mine", "algorithm.name", "mypkg.algo:Mine"),
        ("goal=light", "goal", "light"),
        ("model.shortcut=A", "model.shortcut", "A"),
        ("optim.warmup=epochs", "optim.warmup", "epochs"),
        ("train.max_steps=50", "train.max_steps", 50),
        ("train.max_steps=null", "train.max_steps", None),
        ("train.max_steps=None", "train.max_steps", None),
        ("train.time_limit=1.5", "train.time_limit", 1.5),
        ("optim.lr_scaling_cap=8", "optim.lr_scaling_cap", 8),
        ("data.train_samples=", "data.train_samples", None),
        ("data.mean=0.5,0.25,0.125", "data.mean", (0.5, 0.25, 0.125)),
        ("data.mean= 1 , 2 ,3", "data.mean", (1.0, 2.0, 3.0)),
        ("data.std=[0.1, 0.2, 0.3]", "data.std", (0.1, 0.2, 0.3)),
        ("data.std=[1, 2, 3]", "data.std", (1.0, 2.0, 3.0)),
        ("model.depth=56", "model.depth", 56),
    ],
)
def test_override_parses_by_declared_type(cifar_cfg, override, key, expected):
    cfg = apply_overrides(cifar_cfg, [override])
    value = get(cfg, key)
    assert value == expected
    assert type(value) is type(expected)


def test_override_tuple_elements_are_floats(cifar_cfg):
    cfg = apply_overrides(cifar_cfg, ["data.mean=1,2,3"])
    assert all(type(v) is float for v in cfg.data.mean)


def test_overrides_apply_in_order_and_leave_the_input_untouched(cifar_cfg):
    before = to_dict(cifar_cfg)
    cfg = apply_overrides(cifar_cfg, ["optim.lr=0.5", "seed=1", "optim.lr=0.75"])
    assert cfg.optim.lr == 0.75
    assert cfg.seed == 1
    # untouched siblings keep their task defaults
    assert cfg.optim.momentum == 0.9
    assert cfg.data.batch_size == 128
    assert to_dict(cifar_cfg) == before  # dataclasses.replace: the original is not mutated


@pytest.mark.parametrize(
    "override",
    [
        "seed=abc",
        "seed=1.5",
        "seed=true",
        "seed=",
        "optim.lr=fast",
        "optim.lr=",
        "data.augment=maybe",
        "data.augment=2",
        "goal=medium",
        "goal=FULL",
        "model.shortcut=C",
        "train.max_steps=2.5",
        "train.max_steps=nil",
        "data.mean=a,b,c",
        "data.mean=[1, 2",
        'data.mean=[1, "x"]',
        "data.mean=[1, null]",
        'data.mean={"a": 1}',
    ],
)
def test_override_wrong_type_is_config_error(cifar_cfg, override):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cifar_cfg, [override])
    assert override.split("=")[0] in str(exc.value)


def test_config_error_is_a_value_error():
    # callers that only know ValueError still catch configuration mistakes
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("override", ["optim.lr", "=3", " =3", ""])
def test_override_without_key_value_shape_is_rejected(cifar_cfg, override):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cifar_cfg, [override])


def test_unknown_top_level_key_lists_valid_keys(cifar_cfg):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cifar_cfg, ["lr=0.1"])
    msg = str(exc.value)
    assert "'lr'" in msg
    for key in ("algorithm", "data", "goal", "model", "optim", "seed", "task", "train"):
        assert key in msg


def test_unknown_nested_key_lists_valid_keys_of_that_section(cifar_cfg):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cifar_cfg, ["optim.lr_scalling=linear"])
    msg = str(exc.value)
    assert "optim.lr_scalling" in msg
    for f in dataclasses.fields(cifar_cfg.optim):
        assert f"optim.{f.name}" in msg
    # and nothing from other sections
    assert "data.batch_size" not in msg


def test_section_cannot_be_overridden_as_a_value(cifar_cfg):
    with pytest.raises(ConfigError, match="section"):
        apply_overrides(cifar_cfg, ["optim=0.1"])


def test_leaf_has_no_sub_keys(cifar_cfg):
    with pytest.raises(ConfigError, match="no sub-keys"):
        apply_overrides(cifar_cfg, ["seed.x=1"])


def test_nested_leaf_sub_key_error_names_the_leaf(cifar_cfg):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cifar_cfg, ["optim.lr.x=1"])
    assert "'optim.lr' has no sub-keys" in str(exc.value)


# ---------------------------------------------------------------------------- range checks


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("optim.lr=-0.1", "below the minimum"),
        ("optim.momentum=1.5", "above the maximum"),
        ("optim.plateau_factor=-1", "below the minimum"),
        ("train.max_epochs=0", "below the minimum"),
        ("train.max_steps=0", "below the minimum"),
        ("data.batch_size=0", "below the minimum"),
        ("model.depth=21", "one of"),
        ("model.depth=18", "one of"),
        ("task=epsilon-logreg", "one of"),
        ("algorithm.bucket_mb=0", "below the minimum"),
    ],
)
def test_range_checks_on_override(cifar_cfg, override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(cifar_cfg, [override])


@pytest.mark.parametrize(
    "override",
    ["optim.lr=0", "optim.momentum=1", "optim.momentum=0", "train.max_epochs=1", "model.depth=110"],
)
def test_range_boundaries_are_inclusive(cifar_cfg, override):
    key, _, text = override.partition("=")
    cfg = apply_overrides(cifar_cfg, [override])
    assert get(cfg, key) == float(text)


def test_nan_is_rejected_by_range_check(cifar_cfg):
    with pytest.raises(ConfigError):
        apply_overrides(cifar_cfg, ["optim.lr=nan"])


@pytest.mark.parametrize(
    ("override", "bound"),
    [
        ("seed=100000000000000000000000", "4294967295"),  # 10**23: the probe's value
        ("seed=-100000000000000000000000", "-4294967295"),
        ("train.max_epochs=1e23", "1000000"),
        ("train.max_steps=100000000000000000000000", "1000000000000"),
        ("data.batch_size=1e23", "1000000000"),
    ],
)
def test_integer_overrides_have_upper_bounds_named_in_the_error(cifar_cfg, override, bound):
    key = override.partition("=")[0]
    with pytest.raises(ConfigError) as exc:
        apply_overrides(cifar_cfg, [override])
    msg = str(exc.value)
    assert msg.startswith(f"{key}: ") and bound in msg, msg


def _int_keys(cfg):
    return [k for k, v, f in flat_items(cfg) if type(v) is int or f.type in ("int", "int | None")]


@pytest.mark.parametrize("task", [CIFAR, EPS, "comm-backend"])
@pytest.mark.parametrize("scheme", ["allreduce", "ddp", "powersgd", "localsgd", "gossip"])
def test_every_integer_key_is_bounded_by_64_bits(task, scheme):
    """Whatever a field declares, no integer past 64 bits reaches torch, numpy or the database."""
    _, cfg = resolve_config(task, overrides=[f"algorithm.name={scheme}"])
    keys = _int_keys(cfg)
    assert "seed" in keys and "train.max_steps" in keys
    for key in keys:
        with pytest.raises(ConfigError, match=r"above the maximum|is not one of") as exc:
            apply_overrides(cfg, [f"{key}={2**63}"])
        assert str(exc.value).startswith(f"{key}: ")


def test_bounds_apply_to_config_files_too(cifar_cfg):
    with pytest.raises(ConfigError, match=r"seed: .* above the maximum 4294967295"):
        from_dict(type(cifar_cfg), {"seed": 10**23}, base=cifar_cfg)
    # a JSON integer too large for a float is a config error, not an OverflowError
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        from_dict(type(cifar_cfg), {"optim": {"lr": 10**400}}, base=cifar_cfg)


def test_largest_seed_is_accepted(cifar_cfg):
    assert apply_overrides(cifar_cfg, ["seed=4294967295"]).seed == 2**32 - 1


# ---------------------------------------------------------------------------- from_dict


def test_from_dict_applies_nested_changes_and_keeps_base(cifar_cfg):
    cfg = from_dict(
        type(cifar_cfg),
        {"seed": 3, "optim": {"lr": 0.5}, "data": {"mean": [0.1, 0.2, 0.3]}},
        base=cifar_cfg,
    )
    assert cfg.seed == 3
    assert cfg.optim.lr == 0.5
    assert cfg.optim.momentum == 0.9  # from the task's base, not the SGDConfig class default 0.0
    assert cfg.data.mean == (0.1, 0.2, 0.3)
    assert isinstance(cfg.data.mean, tuple)


def test_from_dict_without_base_uses_class_defaults(cifar_cfg):
    cfg = from_dict(type(cifar_cfg), {"optim": {"lr": 0.5}})
    assert cfg.optim.lr == 0.5
    assert cfg.train.max_epochs == 164  # Cifar10Config's default factory


def test_from_dict_unknown_key_names_it_and_valid_keys(cifar_cfg):
    with pytest.raises(ConfigError) as exc:
        from_dict(type(cifar_cfg), {"optim": {"lr": 0.1, "lrr": 0.2}}, base=cifar_cfg)
    msg = str(exc.value)
    assert "optim.lrr" in msg
    assert "momentum" in msg and "plateau_patience" in msg


def test_from_dict_unknown_top_level_key(cifar_cfg):
    with pytest.raises(ConfigError, match="'bogus'"):
        from_dict(type(cifar_cfg), {"bogus": 1}, base=cifar_cfg)


@pytest.mark.parametrize(
    "data",
    [
        {"seed": True},  # bool is not an int
        {"seed": "3"},
        {"seed": 2.5},
        {"seed": None},
        {"optim": {"lr": "0.1"}},
        {"optim": {"lr": True}},
        {"optim": {"nesterov": 1}},
        {"optim": {"nesterov": "true"}},
        {"data": {"dir": 3}},
        {"data": {"mean": "0.5,0.5,0.5"}},
        {"data": {"mean": [0.5, "x", 0.5]}},
        {"data": {"mean": [0.5, True, 0.5]}},
        {"goal": "medium"},
        {"optim": 0.1},  # a section needs a table
        {"optim": {"lr": {"value": 1}}},
        {"optim": {"lr": -1.0}},  # range checked too
        {"model": {"depth": 19}},
        {"train": {"max_steps": 0}},
    ],
)
def test_from_dict_is_strict(cifar_cfg, data):
    with pytest.raises(ConfigError):
        from_dict(type(cifar_cfg), data, base=cifar_cfg)


def test_from_dict_accepts_integral_float_for_int_and_int_for_float(cifar_cfg):
    cfg = from_dict(type(cifar_cfg), {"seed": 4.0, "optim": {"lr": 1}}, base=cifar_cfg)
    assert cfg.seed == 4 and type(cfg.seed) is int
    assert cfg.optim.lr == 1.0 and type(cfg.optim.lr) is float


def test_from_dict_null_allowed_only_for_optional(cifar_cfg):
    base = apply_overrides(cifar_cfg, ["train.max_steps=10"])
    cfg = from_dict(type(cifar_cfg), {"train": {"max_steps": None}}, base=base)
    assert cfg.train.max_steps is None
    with pytest.raises(ConfigError, match="null"):
        from_dict(type(cifar_cfg), {"train": {"max_epochs": None}}, base=cifar_cfg)


def test_from_dict_rejects_non_mapping(cifar_cfg):
    with pytest.raises(ConfigError):
        from_dict(type(cifar_cfg), [1, 2], base=cifar_cfg)  # type: ignore[arg-type]


def test_to_dict_from_dict_round_trip(cifar_cfg, eps_cfg):
    for cfg in (
        apply_overrides(cifar_cfg, ["data.mean=0.1,0.2,0.3", "train.max_steps=9", "goal=light"]),
        apply_overrides(eps_cfg, ["data.dataset=a9a", "data.dir=/d"]),
    ):
        plain = to_dict(cfg)
        assert plain["task"] == cfg.task
        json.dumps(plain)  # plain JSON types only
        assert resolve_config(cfg.task, data=plain)[1] == cfg  # the scheme from its name


def test_flat_items_lists_every_leaf_once(cifar_cfg):
    keys = [k for k, _, _ in flat_items(cifar_cfg)]
    assert len(keys) == len(set(keys))
    assert {"seed", "optim.lr", "data.mean", "model.depth", "train.max_steps"} <= set(keys)
    assert "optim" not in keys  # sections are not leaves


# ---------------------------------------------------------------------------- config files


def test_load_toml_file(tmp_path, cifar_cfg):
    p = tmp_path / "run.toml"
    p.write_text(
        'task = "cifar10-resnet20"\nseed = 5\n[optim]\nlr = 0.05\n'
        "[data]\nmean = [0.5, 0.5, 0.5]\naugment = false\n"
    )
    data = load_file(p)
    assert data == {
        "task": CIFAR,
        "seed": 5,
        "optim": {"lr": 0.05},
        "data": {"mean": [0.5, 0.5, 0.5], "augment": False},
    }
    cfg = from_dict(type(cifar_cfg), data, base=cifar_cfg)
    assert (cfg.seed, cfg.optim.lr, cfg.data.mean, cfg.data.augment) == (
        5,
        0.05,
        (0.5, 0.5, 0.5),
        False,
    )


def test_load_json_file(tmp_path):
    p = tmp_path / "run.json"
    p.write_text(json.dumps({"optim": {"lr": 0.3}, "train": {"max_steps": None}}))
    assert load_file(p) == {"optim": {"lr": 0.3}, "train": {"max_steps": None}}


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.toml", b"seed = = 3\n", "not valid"),
        ("bad.json", b'{"seed": 3,', "not valid"),
        ("list.json", b"[1, 2, 3]", "top level"),
        ("latin.toml", b'dir = "\xff\xfe"\n', "not valid"),
        ("run.yaml", b"seed: 3\n", ".toml or .json"),
        ("run.cfg", b"seed=3\n", ".toml or .json"),
    ],
)
def test_bad_config_files_are_config_errors(tmp_path, name, content, fragment):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")) as exc:
        load_file(p)
    assert name in str(exc.value)


def test_missing_config_file_is_config_error(tmp_path):
    p = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read") as exc:
        load_file(p)
    assert str(p) in str(exc.value)


# ---------------------------------------------------------------------------- resolve_config


def test_resolve_config_layers_defaults_file_and_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('task = "cifar10-resnet20"\n[optim]\nlr = 0.05\nmomentum = 0.5\n')
    task, cfg = resolve_config(CIFAR, config_file=p, overrides=["optim.lr=0.07"])
    assert task.name == CIFAR
    assert cfg.optim.lr == 0.07  # override beats file
    assert cfg.optim.momentum == 0.5  # file beats default
    assert cfg.optim.weight_decay == 1e-4  # default kept


def test_resolve_config_rejects_file_for_other_task(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"task": EPS}))
    with pytest.raises(ConfigError, match="epsilon-logreg"):
        resolve_config(CIFAR, config_file=p)


def test_resolve_config_rejects_task_override():
    with pytest.raises(ConfigError):
        resolve_config(CIFAR, overrides=["task=epsilon-logreg"])


def test_resolve_config_bad_key_in_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match=r"optim\.learning_rate"):
        resolve_config(CIFAR, config_file=p)


def test_write_config_and_load_run_config_round_trip(tmp_path):
    _, cfg = resolve_config(EPS, overrides=["data.dataset=a9a", "optim.lr=2", "train.max_steps=7"])
    write_config(tmp_path, cfg)
    task, loaded = load_run_config(tmp_path)
    assert task.name == EPS
    assert loaded == cfg


# ---------------------------------------------------------------------------- closed division


def test_default_config_is_official(cifar_cfg, eps_cfg):
    assert get_task(CIFAR).official_differences(cifar_cfg) == []
    assert get_task(EPS).official_differences(eps_cfg) == []


@pytest.mark.parametrize(
    "override",
    [
        "train.max_steps=10",
        "train.time_limit=60",
        "train.stop_at_goal=false",
        "train.log_every_steps=1",
        "train.resource_every_seconds=0",
        "train.resource_every_seconds=0.5",
        "data.dir=/data",
        "data.download=false",
        "data.val_batch_size=512",
        "goal=light",
        "algorithm.bucket_mb=1",
        "seed=1",  # repeats vary the seed (MLPerf's rule): a repeat stays official
    ],
)
def test_open_field_changes_keep_the_run_official(override):
    task, cfg = resolve_config(CIFAR, overrides=[override])
    assert cfg != task.default_config()  # the override did change something
    assert task.official_differences(cfg) == []
    assert task.official_differences(cfg) == []


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lr=0.1", "optim.lr"),
        ("optim.momentum=0", "optim.momentum"),
        ("data.batch_size=64", "data.batch_size"),
        ("data.augment=false", "data.augment"),
        ("model.depth=32", "model.depth"),
        ("train.max_epochs=10", "train.max_epochs"),
        ("data.train_samples=100", "data.train_samples"),
        ("algorithm.mode=weights", "algorithm.mode"),
    ],
)
def test_closed_field_changes_make_the_run_unofficial(override, key):
    task, cfg = resolve_config(CIFAR, overrides=[override])
    assert task.official_differences(cfg) == [key]
    assert task.official_differences(cfg) == [key]


def test_closed_differences_lists_all_changed_closed_keys_only():
    task, cfg = resolve_config(
        EPS, overrides=["optim.lr=1", "data.dataset=a9a", "data.dir=/x", "train.max_steps=3"]
    )
    assert sorted(task.official_differences(cfg)) == ["data.dataset", "optim.lr"]


def test_equal_value_set_explicitly_stays_official():
    task, cfg = resolve_config(CIFAR, overrides=["optim.lr=0.02", "data.mean=0.4914,0.4822,0.4465"])
    assert task.official_differences(cfg) == []


def test_task_defaults_carry_reference_hyperparameters():
    # the closed division is defined by these values; a silent change would redefine the benchmark
    c = get_task(CIFAR).default_config()
    assert (c.data.batch_size, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == (
        128,
        0.02,
        0.9,
        1e-4,
    )
    assert (c.optim.warmup, c.optim.plateau_factor, c.optim.min_lr, c.train.max_epochs) == (
        "log2k",
        0.5,
        0.02,
        164,
    )
    e = resolve_config(EPS)[1]
    assert (e.data.batch_size, e.optim.lr, e.optim.lr_scaling_cap, e.model.l2) == (
        100,
        4.0,
        16,
        2.5e-6,
    )
    assert (e.optim.plateau_factor, e.optim.plateau_patience, e.algorithm.mode) == (
        0.75,
        0,
        "weights",
    )


def test_load_file_accepts_str_path(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    assert load_file(str(p)) == {}
