"""The one config system: typed dataclasses, YAML files and ``key=value`` overrides.

A config is a (nested) dataclass. :func:`load_config` builds one from its defaults, then a YAML
file, then the Python API's nested values, then command-line overrides such as
``guidance.guidance_scale=7.5`` or ``steps=100``; every value is checked against the field's type
and unknown keys are errors that name the key and list the valid ones. :func:`save_config` writes
the resolved config next to a run's outputs, and the file it writes loads back to an equal config.

Parts of a run are chosen by a ``kind:`` key: a field typed as a union of config dataclasses that
each carry ``kind: Literal["name"]`` (e.g. ``guidance: SDSConfig | TargetConfig``) takes the class
its ``kind`` names (the first one when none is given); an unknown kind is an error listing the
known ones, and a key that the chosen kind does not have is an error naming the key. Which class
*runs* for each kind is a plain table beside the classes (e.g. ``dream3d.guidance.GUIDANCE``).
A config class may list old key names in ``renamed_keys = {"old": "new"}``.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .errors import ConfigError
from .io import write_text

T = TypeVar("T")


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
    values: Mapping[str, Any] | None = None,
) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path``, then by ``values`` (a nested mapping
    whose leaves may be dataclasses: the Python API's keyword arguments), then by ``key=value``
    overrides. Each of these is a layer merged over the ones before (:func:`merge_layer`)."""
    layers: list[dict[str, Any]] = []
    if path is not None:
        layers.append(read_yaml(path))
    if values:
        layers.append(to_dict(dict(values)))
    for item in overrides:
        key, value = parse_override(item)
        layer: dict[str, Any] = {}
        _set_dotted(layer, key, value)
        layers.append(layer)
    data: dict[str, Any] = {}
    for layer in layers:
        data = merge_layer(cls, data, layer)
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


def merge_layer(cls: Any, lower: dict[str, Any], upper: dict[str, Any]) -> dict[str, Any]:
    """``upper`` merged over ``lower`` for dataclass ``cls``: nested sections merge key by key.

    A section whose type is a union of kinds (:func:`kind_classes`) that ``upper`` switches to
    another ``kind`` keeps only the settings of ``lower`` that the new kind also has: a recipe's
    keys for one guidance do not leak into another (``guidance.kind=sds`` on a recipe written for
    ``target`` keeps the shared timestep range and drops ``denoise_steps``).
    """
    hints = get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    out = dict(lower)
    for key, value in _renamed(cls, upper).items():
        tp = _optional_dataclass(hints.get(key))
        below = out.get(key)
        if tp is None or not isinstance(value, dict) or not isinstance(below, (dict, type(None))):
            out[key] = value
            continue
        below = dict(below or {})
        kinds = kind_classes(tp)
        if kinds:
            below, value = _renamed_union(kinds, below), _renamed_union(kinds, value)
            old = below.get("kind", next(iter(kinds)))
            new = value.get("kind", old)
            if new != old and new in kinds:
                keep = {f.name for f in dataclasses.fields(kinds[new])}
                below = {k: v for k, v in below.items() if k in keep}
            tp = kinds.get(new)
        out[key] = merge_layer(tp, below, value) if dataclasses.is_dataclass(tp) else {**below, **value}
    return out


def kind_classes(tp: Any) -> dict[str, type] | None:
    """``{kind: config class}`` when ``tp`` is a union of dataclasses that each have a ``kind:
    Literal["name"]`` field (a part chosen by ``kind:``, the first one the default); else ``None``."""
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    members = [a for a in get_args(tp) if a is not type(None)]
    kinds = {}
    for member in members:
        if not dataclasses.is_dataclass(member):
            return None
        kind = get_type_hints(member).get("kind")
        if get_origin(kind) is not Literal or len(get_args(kind)) != 1:
            return None
        kinds[get_args(kind)[0]] = member
    return kinds


def _optional_dataclass(tp: Any) -> Any:
    """``X`` for ``X | None`` where ``X`` is a dataclass, else ``tp``."""
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1 and dataclasses.is_dataclass(members[0]):
            return members[0]
    return tp


def _renamed(cls: Any, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the old names of ``cls.renamed_keys`` (``{old: new}``) replaced by the new ones."""
    renamed = getattr(cls, "renamed_keys", None) or {}
    if not any(k in data for k in renamed):
        return data
    out = {}
    for key, value in data.items():
        new = renamed.get(key, key)
        if new in out or (new != key and new in data):
            raise ConfigError(
                f"config keys '{key}' and '{new}' are the same setting ('{key}' is its old name); keep '{new}'"
            )
        out[new] = value
    return out


def _renamed_union(kinds: dict[str, type], data: dict[str, Any]) -> dict[str, Any]:
    for member in kinds.values():
        data = _renamed(member, data)
    return data


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, checking keys and types recursively."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    data = _renamed(cls, data)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        valid = ", ".join(sorted(fields))
        kind = f" (kind '{data['kind']}')" if "kind" in fields and "kind" in data else ""
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'{kind}; valid keys here: {valid}")
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
    kinds = kind_classes(tp)
    if kinds:
        if any(isinstance(value, c) for c in kinds.values()):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        value = _renamed_union(kinds, value)
        kind = value.get("kind", next(iter(kinds)))
        if kind not in kinds:
            raise ConfigError(f"config key '{key}.kind' is {kind!r}; choose one of {', '.join(map(repr, kinds))}")
        return from_dict(kinds[kind], value, prefix=f"{key}.")
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
    write_text(path, to_yaml(cfg))
