"""The one config system: typed dataclasses, YAML files and ``key=value`` overrides.

A config is a (nested) dataclass. :func:`load_config` builds one from its defaults, then a YAML
file, then command-line overrides such as ``guidance.scale=7.5`` or ``steps=100``; every value is
checked against the field's type and unknown keys are errors that name the key and list the valid
ones. :func:`save_config` writes the resolved config next to a run's outputs, and the file it
writes loads back to an equal config.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError

T = TypeVar("T")


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path``, then by ``key=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(path)
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    return from_dict(cls, data)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist; pass an existing YAML file to --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"config file '{path}' is not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of keys to values, not {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is parsed as YAML (``1e-3``, ``true``, ``[1, 2]``)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not key=value; write it as e.g. guidance.scale=7.5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has no key; write it as e.g. guidance.scale=7.5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        valid = ", ".join(sorted(fields))
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys here: {valid}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}")
    # Nested dataclass fields not mentioned keep their defaults; mentioned ones are merged.
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key '{key}' has an invalid value {value!r}")
    if origin is Literal:
        if value in args:
            return value
        choices = ", ".join(repr(a) for a in args)
        raise ConfigError(f"config key '{key}' is {value!r}; choose one of {choices}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value if value is not None else {}, prefix=f"{key}.")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is not None:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"config key '{key}' needs {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (tuples as lists) that :func:`from_dict` turns back into an equal config."""

    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def to_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (``config.yaml`` next to a run's outputs)."""
    from .io import write_text

    write_text(path, to_yaml(cfg))


def merge(cfg: T, overrides: dict[str, Any]) -> T:
    """A copy of ``cfg`` with dotted ``overrides`` applied and checked, e.g. ``{"guidance.scale": 50}``."""
    data = to_dict(cfg)
    for key, value in overrides.items():
        _check_key(type(cfg), key)
        _set_dotted(data, key, value)
    return from_dict(type(cfg), data)


def _check_key(cls: Any, key: str) -> None:
    node = cls
    done = []
    for part in key.split("."):
        if not dataclasses.is_dataclass(node):
            raise ConfigError(f"unknown config key '{key}': '{'.'.join(done)}' has no sub-keys")
        hints = get_type_hints(node)
        if part not in hints:
            valid = ", ".join(sorted(f.name for f in dataclasses.fields(node)))
            raise ConfigError(f"unknown config key '{'.'.join(done + [part])}'; valid keys here: {valid}")
        node = hints[part]
        done.append(part)
