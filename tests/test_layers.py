"""The dependency rule, kept by a test (docs/architecture.md, "Layers"):

- no import cycle among fastgate's modules, function-local imports included;
- fastgate/_core imports (and cimports) nothing outside fastgate._core;
- the control plane never imports the processes.

Imports are read from the sources (ast for .py, the import/cimport lines of .pyx/.pxd),
so a lazy import inside a function counts the same as one at the top."""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "fastgate"
# the control plane and the code a request may run, which must not reach the processes
NOT_TO_PROCESS = ("fastgate.control.api", "fastgate.compile", "fastgate.phases")
PROCESS = "fastgate.process"

PYX_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+c?import\b|c?import\s+([\w., ]+))", re.M)


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, list[pathlib.Path]]:
    """module name -> its source files (a .pyx and its .pxd are one module)."""
    out: dict[str, list[pathlib.Path]] = {}
    for path in sorted(PKG.rglob("*")):
        if path.suffix in (".py", ".pyx", ".pxd") and "__pycache__" not in path.parts:
            out.setdefault(module_name(path), []).append(path)
    return out


def resolve(name: str, modules: set[str]) -> str | None:
    """The fastgate module `name` refers to: itself, or its longest known prefix
    (`from fastgate.x import y` names y in module fastgate.x)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(mod: str, path: pathlib.Path, modules: set[str]) -> set[str]:
    names: set[str] = set()
    text = path.read_text()
    if path.suffix == ".py":
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[: len(up) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)
    else:
        for m in PYX_IMPORT.finditer(text):
            if m.group(1):
                names.add(m.group(1))
            else:
                names.update(n.strip().split(" ")[0] for n in m.group(2).split(","))
    found = {resolve(n, modules) for n in names if n.startswith("fastgate")}
    return {f for f in found if f and f != mod}


def graph() -> dict[str, set[str]]:
    srcs = sources()
    modules = set(srcs)
    g: dict[str, set[str]] = {m: set() for m in modules}
    for mod, paths in srcs.items():
        for p in paths:
            g[mod] |= imports_of(mod, p, modules)
    # a package's __init__ is imported with any of its modules; that edge is not a cycle
    for mod in g:
        g[mod] = {d for d in g[mod] if not mod.startswith(d + ".")}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


GRAPH = graph()


def test_the_graph_is_read():
    # a broken reader would make every rule below pass vacuously
    assert "fastgate._core.pipeline" in GRAPH
    assert any(GRAPH.values())


def test_no_import_cycles():
    found = cycles(GRAPH)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_core_imports_nothing_above_it():
    bad = {m: sorted(d for d in deps if not d.startswith("fastgate._core"))
           for m, deps in GRAPH.items() if m.startswith("fastgate._core")}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"fastgate._core imports upward: {bad}"


def test_the_control_plane_never_imports_the_processes():
    bad = {m: sorted(d for d in deps if d.startswith(PROCESS))
           for m, deps in GRAPH.items() if m.startswith(NOT_TO_PROCESS)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"imports of fastgate.process: {bad}"


@pytest.mark.parametrize("src,expected", [
    ("import fastgate.b\n", {"fastgate.b"}),
    ("def f():\n    from fastgate.b import x\n", {"fastgate.b"}),
    ("from . import b\n", {"fastgate.b"}),
])
def test_the_reader_sees_every_import_form(tmp_path, src, expected):
    p = tmp_path / "a.py"
    p.write_text(src)
    # (the package itself, imported with any of its modules, is no edge: graph() drops it)
    assert imports_of("fastgate.a", p, {"fastgate", "fastgate.a", "fastgate.b"}) - {"fastgate"} == expected


def test_the_reader_sees_cimports():
    p = ROOT / "fastgate" / "_core" / "client.pyx"
    assert "fastgate._core.clock" in imports_of("fastgate._core.client", p, set(sources()))
