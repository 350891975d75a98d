"""Typed configs: dataclasses filled from YAML presets and dotted command-line overrides.

Each component owns a dataclass next to its code; this module turns plain data into
those dataclasses and rejects anything it does not know before any work starts:

    cfg = load_config(ReconstructConfig, "configs/reconstruct/gaussian.yaml", ["renderer.sh_degree=0", "steps=500"])

Unknown keys and values of the wrong type raise `ConfigError`, whose message names the
dotted key and what is allowed there.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from core.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config value or key the schema does not allow; the message says which and why."""


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    """`value` checked and converted to type `tp`; `key` is its dotted name for errors."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as e:
                errors.append(f"as {_type_name(arg)}: {str(e).removeprefix(f'{key}: ')}")
        reasons = "; ".join(errors)
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}" + (f" ({reasons})" if reasons else ""))
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list ({_type_name(tp)}), got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}: {value!r}")
            return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        out = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def from_dict(schema: type[T], data: dict, prefix: str = "") -> T:
    """Build dataclass `schema` from nested plain data, validating every key and type."""
    hints = get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key '{where}{unknown[0]}'; allowed keys{' under ' + prefix if prefix else ''}: "
            + ", ".join(fields)
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{prefix}.{name}" if prefix else name)
    try:
        return schema(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix or schema.__name__}: {e}") from None


def to_dict(cfg: Any) -> Any:
    """Plain data (dicts, lists, scalars) from a config dataclass, for saving."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def parse_override(text: str) -> tuple[list[str], Any]:
    """'renderer.sh_degree=0' -> (['renderer', 'sh_degree'], 0); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.subkey=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """A copy of `data` with dotted overrides set (intermediate mappings are created)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for part in parts[:-1]:
            if isinstance(node, list):
                node = _list_item(node, part, text)
                continue
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, (dict, list)):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        if isinstance(node, list):
            index = int(parts[-1]) if parts[-1].isdigit() else None
            _list_item(node, parts[-1], text)
            node[index] = value
        else:
            node[parts[-1]] = value
    return out


def _list_item(items: list, part: str, text: str):
    """items[int(part)] for a list index in a dotted override ('stages.0.steps=4')."""
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"override '{text}': '{part}' must index the list (0..{len(items) - 1})")
    return items[int(part)]


def read_yaml(path: str | Path) -> dict:
    """A YAML preset as a dict, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of keys to values")
    return data


def presets_dir() -> Path:
    """The folder of shipped presets (the `configs` package)."""
    import configs

    return Path(configs.__file__).parent


def list_presets() -> list[str]:
    """Shipped preset names, e.g. 'reconstruct/gaussian'."""
    root = presets_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """A YAML path from a file path or a shipped preset name ('text_to_3d/gaussian_sds')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = presets_dir() / path.with_suffix(".yaml")
    if shipped.is_file():
        return shipped
    raise ConfigError(f"no preset '{name_or_path}': give a YAML file or one of {', '.join(list_presets())}")


def load_config(schema: type[T], path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> T:
    """Schema defaults <- YAML preset at `path` <- dotted `overrides`, validated."""
    data = read_yaml(path) if path is not None else {}
    return from_dict(schema, apply_overrides(data, list(overrides)))


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
