"""Loading a config: parse (source.py), convert into the Structs with msgspec
(schema.py) — its errors turned into `file:line:col: field.path: message` — and check
what types cannot say (checks.py)."""

from __future__ import annotations

import difflib
import os
import re
import typing
from typing import Annotated, Any, Literal, Union

import msgspec

from fastgate.compile.config.checks import Checker
from fastgate.compile.config.schema import Config, Integration
from fastgate.compile.config.source import (
    ConfigError,
    ConfigSource,
    Path,
    config_error,
    parse_json,
    parse_yaml,
)


class LoadedConfig:
    """A checked Config and the source positions to report later errors against."""

    __slots__ = ("config", "source", "state", "warnings")

    def __init__(self, config: Config, source: ConfigSource, state=None):
        self.config = config
        self.source = source
        self.state = state        # fastgate.compile.apis.State of the APIs served, or None
        self.warnings: list[str] = []   # what loading the APIs could not take as declared

    def error(self, path: Path, message: str) -> ConfigError:
        return config_error(self.source, path, message)

    def base_dir(self) -> str:
        """Relative paths in the config (openapi documents, function paths) start here."""
        name = self.source.filename
        return os.path.dirname(os.path.abspath(name)) if os.path.exists(name) else os.getcwd()

    def __repr__(self) -> str:
        return f"LoadedConfig({self.source.filename!r})"


# --- msgspec errors -> paths -------------------------------------------------

_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at (?:`(key)` in )?`(\$[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[(\.\.\.)\]")


def _msgspec_path(expr: str) -> list:
    """"$.routes[2].set[...]" -> ["routes", 2, "set", ...]; Ellipsis = an unnamed dict key."""
    out: list = []
    for m in _PATH_PART.finditer(expr, 1):
        out.append(m.group(1) if m.group(1) else int(m.group(2)) if m.group(2) else ...)
    return out


def _get(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _with_only_key(data: Any, path: Path, key: Any) -> Any:
    """A copy of data whose dict at path holds only ``key`` (copies along the path only)."""
    if not path:
        return {key: data[key]}
    head, rest = path[0], path[1:]
    copy = list(data) if isinstance(data, list) else dict(data)
    copy[head] = _with_only_key(data[head], rest, key)
    return copy


def _resolve_dict_key(data: Any, prefix: Path, target: type) -> Any:
    """msgspec names no dict key in its error paths; find the one that fails
    by converting the document with that dict cut down to each key alone."""
    mapping = _get(data, prefix)
    if not isinstance(mapping, dict):
        return None
    for key in mapping:
        try:
            msgspec.convert(_with_only_key(data, prefix, key), target)
        except msgspec.ValidationError:
            return key
    return None


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, type(int | None))


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _pick_member(tp: Any, data: Any) -> Any:
    """The container member of a union that ``data`` was decoded as (tag-aware)."""
    tp = _unwrap(tp)
    if not _is_union(tp):
        return tp
    args = [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    tagged = [a for a in args if _is_struct(a) and a.__struct_config__.tag is not None]
    if tagged:
        tag = data.get("type") if isinstance(data, dict) else None
        return next((a for a in tagged if a.__struct_config__.tag == tag), None)
    return next((a for a in args if _is_struct(a) or typing.get_origin(a) in (tuple, list, dict)),
                args[0] if len(args) == 1 else None)


def _type_at(path: Path, data: Any, tp: Any = Config) -> Any:
    """The declared type of the value at path (Annotated stripped), or None."""
    for part in path:
        tp = _pick_member(tp, data)
        origin = typing.get_origin(tp)
        if _is_struct(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(part)
        elif origin in (tuple, list):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            data = None
    return _unwrap(tp)


def _choices(tp: Any) -> list[str]:
    """The literal strings a (possibly union) type admits."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return [repr(v) for v in typing.get_args(tp)]
    if tp is int:
        return ["an integer"]
    if _is_union(tp):
        return [c for a in typing.get_args(tp) for c in _choices(a)]
    return []


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)


def _validation_error(err: msgspec.ValidationError, data: Any, filename: str,
                      marks: dict) -> ConfigError:
    m = _MSGSPEC_AT.match(str(err))
    message, key_error, expr = m.group(1), m.group(2), m.group(3) or "$"
    parts = _msgspec_path(expr)
    # Fill in dict keys msgspec left unnamed, outermost first.
    path: list = []
    for part in parts + ([...] if key_error else []):
        if part is ...:
            key = _resolve_dict_key(data, tuple(path), Config)
            if key is None:
                break
            path.append(key)
        else:
            path.append(part)
    path_t = tuple(path)
    try:
        value = _get(data, path_t)
    except (KeyError, IndexError, TypeError):
        value = None
    unknown = re.match(r"Object contains unknown field `(.*)`", message)
    missing = re.match(r"Object missing required field `(.*)`", message)
    if unknown:
        name = unknown.group(1)
        owner = _pick_member(_type_at(path_t, data), value)
        allowed = sorted(f for f in getattr(owner, "__struct_fields__", ()))
        message = f"unknown field {name!r}"
        close = difflib.get_close_matches(name, allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif allowed:
            message += f" (expected one of: {', '.join(allowed)})"
        path_t += (name,)
    elif missing:
        message = f"missing required field {missing.group(1)!r}"
    elif key_error:
        message = f"{message[0].lower()}{message[1:]} as a key"
    elif message.startswith("Invalid value") and path_t and path_t[-1] == "type":
        kinds = [s.__struct_config__.tag for s in typing.get_args(Integration)]
        message = f"unknown integration type {_describe(value)} (expected one of: {', '.join(kinds)})"
    elif message.startswith("Invalid enum value"):
        choices = _choices(_type_at(path_t, data))
        message = f"invalid value {_describe(value)}"
        if choices:
            message += f" (expected one of: {', '.join(choices)})"
    else:
        message = message[0].lower() + message[1:]
        if message.startswith("expected") and ", got" not in message:
            message += f", got {_describe(value)}"
        elif ", got `" in message and isinstance(value, (int, float, str)):
            message += f" ({value!r})"
    line, col = ConfigSource(filename, marks).locate(path_t)
    return ConfigError(filename, line, col, path_t, message)


# --- public entry points --------------------------------------------------------

def _normalise(data: Any) -> Any:
    # A target may be written as a bare URL string; give msgspec the mapping.
    if isinstance(data, dict) and isinstance(data.get("upstreams"), dict):
        for up in data["upstreams"].values():
            if isinstance(up, dict) and isinstance(up.get("targets"), list):
                up["targets"] = [{"url": t} if isinstance(t, str) else t for t in up["targets"]]
    return data


def build(data: Any, source: ConfigSource) -> LoadedConfig:
    if data is None:
        raise ConfigError(source.filename, 0, 0, (), "the document is empty")
    data = _normalise(data)
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise _validation_error(e, data, source.filename, source.marks) from None
    Checker(config, source).run()
    return LoadedConfig(config, source)


def load_config_text(text: str, filename: str = "<config>") -> LoadedConfig:
    """Parse, convert and check a config document; JSON when filename ends in .json."""
    if filename.lower().endswith(".json"):
        data, marks = parse_json(text, filename)
    else:
        data, marks = parse_yaml(text, filename)
    return build(data, ConfigSource(filename, marks))


def load_config(path: str) -> LoadedConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, 0, 0, (), e.strerror or str(e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, 0, 0, (), f"not UTF-8 ({e.reason} at byte {e.start})") from None
    return load_config_text(text, path)
