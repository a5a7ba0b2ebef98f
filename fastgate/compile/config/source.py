"""Where each value of a config document was written: YAML and JSON parsed into plain
data and the (line, column) of every key, and ConfigError, which names them:

    gateway.yaml:14:7: routes[2].integration.upstream: unknown upstream 'billing'
"""

from __future__ import annotations

import bisect
import json
import json.decoder
import re
from typing import Any

import yaml


# --- errors and positions ---------------------------------------------------

Path = tuple  # of str (mapping keys) and int (sequence indexes)


class ConfigError(Exception):
    """A config problem at a place in a file. line/column are 1-based; 0 = unknown."""

    def __init__(self, file: str, line: int, column: int, path: Path, message: str):
        super().__init__(file, line, column, path, message)
        self.file = file
        self.line = line
        self.column = column
        self.path = tuple(path)
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        if self.path:
            return f"{where}: {format_path(self.path)}: {self.message}"
        return f"{where}: {self.message}"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+\Z")


def format_path(path: Path) -> str:
    """("routes", 2, "integration") -> "routes[2].integration"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


class ConfigSource:
    """Where each value of a loaded document was written.

    ``marks`` maps a path to the 1-based (line, column) of the mapping key that
    holds it (of the item itself in a sequence).  A path with no mark falls back
    to its longest marked prefix, so a compile step may point one level deeper
    than the document went (e.g. at a character inside a template)."""

    def __init__(self, filename: str, marks: dict[Path, tuple[int, int]]):
        self.filename = filename
        self.marks = marks

    def locate(self, path: Path) -> tuple[int, int]:
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (0, 0))


def locate(source: ConfigSource, path: Path) -> tuple[int, int]:
    """(line, column), 1-based, of the value at ``path``; (0, 0) when unknown."""
    return source.locate(path)


def config_error(source: ConfigSource, path: Path, message: str) -> ConfigError:
    line, column = source.locate(path)
    return ConfigError(source.filename, line, column, tuple(path), message)


# --- parsing YAML and JSON into (plain data, marks) -------------------------

# PERF: libyaml's parser when PyYAML has it: composing a 5,000-route file
# takes a quarter of the pure-Python time (bench/bench_config.py; tests/compile/test_config.py
# test_large_route_table_loads_with_libyaml checks libyaml is the one used).
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """SafeLoader with YAML 1.2 core scalars: ``off``/``no`` stay strings (so
    ``listen: off`` works), ``010`` is ten, ``1:30`` is not 90, and dates stay
    strings."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers
         if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                        "tag:yaml.org,2002:timestamp")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))

_SCALAR_TAGS = {
    "tag:yaml.org,2002:null": lambda v: None,
    "tag:yaml.org,2002:bool": lambda v: v.lower() == "true",
    "tag:yaml.org,2002:int": lambda v: int(v.replace("_", ""), 0 if v[:2] in ("0x", "0o") else 10),
    "tag:yaml.org,2002:float": lambda v: float(v.replace("_", "").lower().replace(".inf", "inf")
                                               .replace(".nan", "nan")),
    "tag:yaml.org,2002:str": lambda v: v,
}


def parse_yaml(text: str, filename: str) -> tuple[Any, dict]:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            problem = f"{problem} ({e.context})"
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(filename, line, col, (), problem) from None
    except yaml.YAMLError as e:
        raise ConfigError(filename, 0, 0, (), str(e)) from None
    marks: dict[Path, tuple[int, int]] = {}
    if root is None:
        return None, marks

    def pos(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def fail(node: yaml.Node, path: Path, message: str):
        line, col = pos(node)
        raise ConfigError(filename, line, col, path, message)

    def build(node: yaml.Node, path: Path, active: set) -> Any:
        if isinstance(node, yaml.ScalarNode):
            convert = _SCALAR_TAGS.get(node.tag)
            if convert is None:
                fail(node, path, f"unsupported YAML tag {node.tag}")
            try:
                return convert(node.value)
            except ValueError:
                fail(node, path, f"not a valid {node.tag.rsplit(':', 1)[-1]}: {node.value!r}")
        if id(node) in active:
            fail(node, path, "recursive alias")
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                marks[path + (i,)] = pos(item)
                out.append(build(item, path + (i,), active))
            return out
        out: dict = {}
        first: dict = {}
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        fail(src, path, "a merge key (<<) needs a mapping")
                    merged.extend(src.value)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                fail(key_node, path, "mapping keys must be scalars")
            key = build(key_node, path, active)
            if key in first:
                fail(key_node, path + (key,), f"duplicate key (first at line {first[key][0]})")
            first[key] = pos(key_node)
            marks[path + (key,)] = pos(key_node)
            out[key] = build(value_node, path + (key,), active)
        for key_node, value_node in merged:   # explicit keys win over merged ones
            key = build(key_node, path, active)
            if key not in out:
                marks[path + (key,)] = pos(key_node)
                out[key] = build(value_node, path + (key,), active)
        return out

    marks[()] = pos(root)
    return build(root, (), set()), marks


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def parse_json(text: str, filename: str) -> tuple[Any, dict]:
    # Our own small parser rather than YAML's: YAML rejects tab indentation and
    # json.loads keeps no positions, and errors must point at a line.
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    marks: dict[Path, tuple[int, int]] = {}

    def pos(i: int) -> tuple[int, int]:
        n = bisect.bisect_right(line_starts, i) - 1
        return n + 1, i - line_starts[n] + 1

    def fail(i: int, message: str, path: Path = ()):
        line, col = pos(i)
        raise ConfigError(filename, line, col, path, message)

    def ws(i: int) -> int:
        return _JSON_SPACE.match(text, i).end()

    def string(i: int) -> tuple[str, int]:
        try:
            return json.decoder.scanstring(text, i + 1)
        except json.JSONDecodeError as e:
            fail(e.pos, e.msg)

    def value(i: int, path: Path, depth: int) -> tuple[Any, int]:
        if depth > 200:
            fail(i, "nested too deeply")
        ch = text[i:i + 1]
        if ch == "{":
            out: dict = {}
            i = ws(i + 1)
            if text[i:i + 1] == "}":
                return out, i + 1
            while True:
                if text[i:i + 1] != '"':
                    fail(i, "expected a string key")
                key_at = i
                key, i = string(i)
                if key in out:
                    fail(key_at, f"duplicate key (first at line {marks[path + (key,)][0]})",
                         path + (key,))
                marks[path + (key,)] = pos(key_at)
                i = ws(i)
                if text[i:i + 1] != ":":
                    fail(i, "expected ':'")
                out[key], i = value(ws(i + 1), path + (key,), depth + 1)
                i = ws(i)
                if text[i:i + 1] == "}":
                    return out, i + 1
                if text[i:i + 1] != ",":
                    fail(i, "expected ',' or '}'")
                i = ws(i + 1)
        if ch == "[":
            items: list = []
            i = ws(i + 1)
            if text[i:i + 1] == "]":
                return items, i + 1
            while True:
                marks[path + (len(items),)] = pos(i)
                item, i = value(i, path + (len(items),), depth + 1)
                items.append(item)
                i = ws(i)
                if text[i:i + 1] == "]":
                    return items, i + 1
                if text[i:i + 1] != ",":
                    fail(i, "expected ',' or ']'")
                i = ws(i + 1)
        if ch == '"':
            return string(i)
        for word, val in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, i):
                return val, i + len(word)
        m = _JSON_NUMBER.match(text, i)
        if m and m.end() > i:
            num = m.group()
            return (float(num) if m.group(1) or m.group(2) else int(num)), m.end()
        fail(i, "expected a JSON value" if ch else "unexpected end of JSON")

    start = ws(0)
    if start == len(text):
        return None, marks
    marks[()] = pos(start)
    data, end = value(start, (), 0)
    end = ws(end)
    if end != len(text):
        fail(end, "extra data after the JSON document")
    return data, marks
