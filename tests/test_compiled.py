"""The hot path must be the compiled one: no silent fallback to Python sources."""

import importlib
import pathlib

import pytest

CORE = pathlib.Path(__file__).resolve().parents[1] / "fastgate" / "_core"
MODULES = sorted(p.stem for p in CORE.glob("*.pyx"))


def test_every_pyx_is_listed():
    assert {"pipeline", "client", "exchange", "integrations", "proxy", "respond", "runtime", "snapshot", "fields",
            "responses", "upstream", "router", "headers", "metrics", "accesslog", "throttle",
            "tracing", "cache", "tail", "keys"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_compiled_module_is_loaded(name):
    mod = importlib.import_module(f"fastgate._core.{name}")
    assert mod.__file__.endswith(".so"), mod.__file__
    # a Cython extension has no Python bytecode behind it
    assert not hasattr(mod, "__cached__") or mod.__cached__ is None
