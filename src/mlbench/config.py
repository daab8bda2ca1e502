"""Typed configuration: a dataclass tree per task, loaded from TOML/JSON, overridden with ``a.b=v``.

Why a dataclass tree and not a free-form dict: every hyperparameter of a benchmark must be visible,
typed and checked before any process starts, and a typo (``optim.lr_scalling``) must be an error,
not a silently ignored key that makes a run quietly non-comparable.

Fields carry metadata:

* ``open`` — the field is *not* part of the closed division (paths, limits, logging). Changing a
  closed field from the task's spec makes the run ``official: false``; changing an open one doesn't.
* ``choices`` / ``minimum`` / ``maximum`` — range checks applied on every load and override.
  Every integer is also held to 64 bits whatever its field declares (:data:`INT_MAX`): Python
  parses ``10**23`` happily, and torch, numpy and the master's database then fail on it inside a
  worker, long after the request was accepted.
* ``help`` — shown by ``mlbench tasks --show``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from mlbench.errors import ConfigError

T = TypeVar("T")

#: bounds every integer field gets on top of its own: what torch, numpy and the database hold
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: run seeds: torch and numpy take 64 bits, but loaders derive per-rank seeds from
#: ``seed * 1000 + rank`` and numpy's legacy seeding keeps 32 bits, so 32 bits is what is unique
SEED_MAX = 2**32 - 1
#: sane ceilings for counts of epochs, steps and samples (far above any benchmark's)
EPOCHS_MAX = 1_000_000
STEPS_MAX = 10**12
BATCH_MAX = 10**9


def param(
    default: Any,
    *,
    help: str = "",
    open: bool = False,
    choices: Iterable[Any] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
) -> Any:
    """A config field with its metadata (see module docstring)."""
    meta = {
        "help": help,
        "open": open,
        "choices": tuple(choices) if choices is not None else None,
        "minimum": minimum,
        "maximum": maximum,
    }
    if isinstance(default, list | dict | tuple) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: _copy(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(factory: Any) -> Any:
    """A nested config section (a dataclass instance built by ``factory``)."""
    return dataclasses.field(default_factory=factory)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


# ---------------------------------------------------------------------------- type handling


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _type_name(tp: Any) -> str:
    optional, inner = _is_optional(tp)
    if optional:
        return f"{_type_name(inner)} or null"
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return f"list of {_type_name(get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and minimally convert) a decoded TOML/JSON value against a field type."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: null is not allowed (expected {_type_name(tp)})")
    tp = inner
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        elem = get_args(tp)[0]
        return tuple(_coerce(v, elem, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # a JSON integer with hundreds of digits
                raise ConfigError(f"{key}: {value!r} is too large for a number") from None
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a field type this module does not know is a programming error
        raise AssertionError(f"unsupported config type {tp!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _parse_text(text: str, tp: Any, key: str) -> Any:
    """Parse the right-hand side of ``--set key=text`` according to the field's type."""
    optional, inner = _is_optional(tp)
    stripped = text.strip()
    if optional and stripped.lower() in ("null", "none", ""):
        return None
    origin = get_origin(inner)
    if origin is tuple:
        if stripped.startswith("["):
            try:
                return _coerce(json.loads(stripped), tp, key)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{key}: cannot parse {text!r} as a list ({exc.msg})") from exc
        parts = [p for p in (s.strip() for s in stripped.split(",")) if p]
        elem = get_args(inner)[0]
        return tuple(_parse_text(p, elem, f"{key}[{i}]") for i, p in enumerate(parts))
    if origin is Literal:
        for arg in get_args(inner):
            if str(arg) == stripped:
                return arg
        raise ConfigError(f"{key}: {text!r} is not {_type_name(inner)}")
    if inner is bool:
        low = stripped.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {text!r}")
    if inner is int:
        try:
            return int(stripped)
        except ValueError:
            try:
                as_float = float(stripped)
            except ValueError:
                as_float = float("nan")
            if as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"{key}: expected an integer, got {text!r}") from None
    if inner is float:
        try:
            return float(stripped)
        except ValueError:
            raise ConfigError(f"{key}: expected a number, got {text!r}") from None
    if inner is str:
        return text
    raise AssertionError(f"unsupported config type {inner!r} for {key}")  # pragma: no cover


def _check_range(value: Any, f: dataclasses.Field[Any], key: str) -> None:
    if value is None:
        return
    meta = f.metadata
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if not isinstance(v, int | float) or isinstance(v, bool):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{key}: {v!r} is not a finite number")
        minimum, maximum = _bounds(meta, integer=isinstance(v, int))
        if minimum is not None and v < minimum:
            raise ConfigError(f"{key}: {v!r} is below the minimum {minimum!r}")
        if maximum is not None and v > maximum:
            raise ConfigError(f"{key}: {v!r} is above the maximum {maximum!r}")


def _bounds(meta: typing.Mapping[str, Any], *, integer: bool) -> tuple[Any, Any]:
    """The field's declared range; integers also never leave 64 bits (:data:`INT_MAX`)."""
    minimum, maximum = meta.get("minimum"), meta.get("maximum")
    if integer:
        minimum = INT_MIN if minimum is None else max(minimum, INT_MIN)
        maximum = INT_MAX if maximum is None else min(maximum, INT_MAX)
    return minimum, maximum


# ---------------------------------------------------------------------------- public API


@dataclasses.dataclass
class SchemeConfig:
    """The ``algorithm`` section every run has: which scheme. Each scheme subclasses it with its
    own options (``Algorithm.config_cls``); the section's concrete type is chosen from ``name``
    when the config is resolved, so ``algorithm.topology`` is a typed key of gossip runs and an
    error anywhere else. It lives here, in the bottom layer, because both tasks (``RunConfig``)
    and schemes use it and neither may import the other.
    """

    name: str = param("allreduce", help="communication scheme (see docs/algorithms.md)")


#: option keys that were renamed: old ``algorithm.<key>`` → new key (the error names the new one)
RENAMED_KEYS = {
    "algorithm.rank": "algorithm.matrix_rank",
}


def from_dict(cls: type[T], data: dict[str, Any], *, base: T | None = None, prefix: str = "") -> T:
    """Build ``cls`` from a nested dict, strictly: unknown keys and wrong types are errors.

    Keys absent from ``data`` keep their value from ``base`` (or the class default), so a config
    file only needs to say what it changes.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table/object, got {data!r}")
    obj: Any = base if base is not None else cls()
    fields = {f.name: f for f in dataclasses.fields(obj)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        if prefix + unknown[0] in RENAMED_KEYS:
            raise ConfigError(
                f"{prefix + unknown[0]!r} was renamed {RENAMED_KEYS[prefix + unknown[0]]!r}"
            )
        where = prefix or "top level"
        raise ConfigError(
            f"unknown config key {prefix + unknown[0]!r} ({where}); valid keys: "
            + ", ".join(sorted(fields))
        )
    hints = _hints(type(obj))
    changes: dict[str, Any] = {}
    for name, value in data.items():
        f, key = fields[name], prefix + name
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            changes[name] = from_dict(type(current), value, base=current, prefix=key + ".")
        else:
            coerced = _coerce(value, hints[name], key)
            _check_range(coerced, f, key)
            changes[name] = coerced
    return dataclasses.replace(obj, **changes)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) — what is written to ``config.json``."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict (by extension)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        if p.suffix == ".json":
            data = json.loads(raw)
        elif p.suffix == ".toml":
            data = tomllib.loads(raw.decode())
        else:
            raise ConfigError(f"config file {p}: use a .toml or .json file")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a table/object")
    return data


def _resolve_field(cfg: Any, dotted: str) -> tuple[Any, dataclasses.Field[Any], Any]:
    """Find the dataclass holding ``dotted`` and its field; errors name the valid keys."""
    parts = dotted.split(".")
    obj = cfg
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(obj)}
        here = ".".join(parts[:depth])
        if part not in fields:
            if dotted in RENAMED_KEYS:
                raise ConfigError(f"{dotted!r} was renamed {RENAMED_KEYS[dotted]!r}")
            valid = ", ".join((here + "." if here else "") + n for n in sorted(fields))
            raise ConfigError(f"unknown config key {dotted!r}; valid keys here: {valid}")
        value = getattr(obj, part)
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(value):
                raise ConfigError(f"{dotted!r} is a section; set one of its keys, e.g. {dotted}.x")
            return obj, fields[part], _hints(type(obj))[part]
        if not dataclasses.is_dataclass(value):
            raise ConfigError(
                f"unknown config key {dotted!r}: {'.'.join(parts[: depth + 1])!r} has no sub-keys"
            )
        obj = value
    raise AssertionError("unreachable")  # pragma: no cover


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Apply ``a.b=value`` overrides, parsing each value by the field's declared type."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. optim.lr=0.1)")
        _, f, tp = _resolve_field(cfg, key)
        value = _parse_text(text, tp, key)
        _check_range(value, f, key)
        cfg = _set(cfg, key.split("."), value)
    return cfg


def _set(obj: Any, parts: list[str], value: Any) -> Any:
    if len(parts) == 1:
        return dataclasses.replace(obj, **{parts[0]: value})
    child = getattr(obj, parts[0])
    return dataclasses.replace(obj, **{parts[0]: _set(child, parts[1:], value)})


def get(cfg: Any, dotted: str) -> Any:
    """Value at a dotted key."""
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def flat_items(cfg: Any, prefix: str = "") -> list[tuple[str, Any, dataclasses.Field[Any]]]:
    """All leaf fields as ``(dotted_key, value, field)``, in declaration order."""
    out: list[tuple[str, Any, dataclasses.Field[Any]]] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.extend(flat_items(value, prefix + f.name + "."))
        else:
            out.append((prefix + f.name, value, f))
    return out


def closed_differences(cfg: Any, spec: Any) -> list[str]:
    """Dotted keys of closed-division fields where ``cfg`` differs from the task's ``spec``."""
    spec_values = {k: v for k, v, _ in flat_items(spec)}
    return [
        key
        for key, value, f in flat_items(cfg)
        if not f.metadata.get("open", False) and spec_values.get(key) != value
    ]
