"""fastgate._core.paths against a naive Python normaliser (unquote + posixpath.normpath).

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_paths.py
Target: the usual path (no "%", no "\\", no segment starting with ".") costs one scan and
returns the caller's object (nothing allocated): within ~20 ns of calling an empty
function from Python, whatever its length; lenient_path on it the same. Times include the
Python call into the module (~40 ns here), which the protocol does not pay (it calls
canonical_path from C).
"""
import posixpath
from urllib.parse import unquote_to_bytes

import pytest

from fastgate._core.paths import canonical, lenient_path

PATHS = {
    "usual": b"/v1/accounts/8f14e45f/transactions/2024-06/items",
    "dotted_file": b"/static/js/app.3f9a1c.min.js",
    "encoded": b"/search/caf%C3%A9/na%C3%AFve%20query",
    "traversal": b"/public/assets/../../admin/users/%2e%2e/secret",
    "long_usual": b"/" + b"/".join(b"segment%d" % i for i in range(60)),
}

from tests.core.test_paths import oracle  # noqa: E402  (what the results must be)


def naive(path: bytes) -> bytes:
    """What a Python gateway typically writes: decode everything, let posixpath resolve.
    (Wrong in ways paths.pyx is not, e.g. it decodes %2F and merges "//"; a speed baseline.)"""
    return posixpath.normpath(unquote_to_bytes(path))


def nothing(path):
    return 0, path


@pytest.mark.parametrize("name", list(PATHS))
def test_canonical(benchmark, name):
    path = PATHS[name]
    verdict, result = benchmark(canonical, path)
    assert result == oracle(path)
    if name in ("usual", "dotted_file", "long_usual"):
        assert result is path


@pytest.mark.parametrize("name", list(PATHS))
def test_naive(benchmark, name):
    benchmark(naive, PATHS[name])


def test_call_overhead(benchmark):
    """The floor: a Python call of the same shape that does nothing."""
    benchmark(nothing, PATHS["usual"])


@pytest.mark.parametrize("name", ["usual", "long_usual"])
def test_lenient_path(benchmark, name):
    assert benchmark(lenient_path, PATHS[name]) is None
