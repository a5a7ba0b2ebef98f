"""fastgate._core.router against a naive regex-list router on the real AWS route table.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_router.py
Target: under 1 µs a lookup, and the same lookups no slower than 1.5x at 10,000
routes than at 10 (test_lookup_time_is_flat asserts it).

Every table is a prefix of one fixed shuffle of the 10,544 routes API Gateway
accepts (botocore's 23 mid-path greedy routes are left out), so every table
holds the 10 routes that are looked up and the work per lookup is the same:
only the table size changes.
"""
import json
import pathlib
import random
import re
import time

import pytest

from fastgate._core.router import Router

DATA = pathlib.Path("/work/shared/data/aws-routes.json")
SIZES = [10, 1000, 10000]
LOOKUPS = 10          # routes looked up per benchmark round (the first ones of the shuffle)


def _load():
    routes = [r for r in json.loads(DATA.read_text()) if not re.search(r"\+\}/", r["path"])]
    random.Random(20240601).shuffle(routes)
    return routes


ROUTES = _load()


def _instantiate(path):
    return re.sub(r"\{([^{}+]+)(\+?)\}",
                  lambda m: "v-" + m.group(1) + ("/g/h" if m.group(2) else ""), path).encode()


REQUESTS = [(r["method"].encode(), _instantiate(r["path"]), r["name"]) for r in ROUTES[:LOOKUPS]]


def build_router(n):
    r = Router()
    for x in ROUTES[:n]:
        r.add("*", x["method"], x["path"], x["name"])
    return r


class NaiveRouter:
    """What a simple gateway does: one compiled regex per route, sorted most
    specific first (static < {param} < greedy, segment by segment, method
    before ANY), scanned in order until one matches."""

    def __init__(self, routes):
        compiled = []
        for x in routes:
            kinds, parts = [], []
            for seg in x["path"].strip("/").split("/"):
                m = re.fullmatch(r"\{([^{}+]+)(\+?)\}", seg)
                if m is None:
                    kinds.append(0)
                    parts.append(re.escape(seg))
                elif m.group(2):
                    kinds.append(2)
                    parts.append(f"(?P<g{len(parts)}>.+)")
                else:
                    kinds.append(1)
                    parts.append(f"(?P<g{len(parts)}>[^/]+)")
            names = re.findall(r"\{([^{}+]+)\+?\}", x["path"])
            regex = re.compile(("/" + "/".join(parts) + "/*\\Z").encode())
            compiled.append(((kinds, x["method"] == "ANY"), x["method"].encode(), regex,
                             [n.encode() for n in names], x["name"]))
        compiled.sort(key=lambda c: c[0])
        self.routes = [c[1:] for c in compiled]

    def match(self, host, method, path):
        for route_method, regex, names, value in self.routes:
            if route_method != method and route_method != b"ANY":
                continue
            m = regex.match(path)
            if m is not None:
                groups = m.groups()
                return value, (dict(zip(names, groups)) if names else None)
        return None


def _lookup_all(match):
    for method, path, _ in REQUESTS:
        match(b"api.example.com", method, path)


@pytest.mark.parametrize("n", SIZES)
def test_router(benchmark, n):
    """Router.match for 10 real routes' paths in a table of n real routes (time is for all 10)."""
    r = build_router(n)
    for method, path, name in REQUESTS:
        assert r.match(b"api.example.com", method, path)[0] == name
    benchmark.group = f"{n} routes"
    benchmark(_lookup_all, r.match)


@pytest.mark.parametrize("n", SIZES)
def test_naive_regex(benchmark, n):
    """The naive regex list for the same 10 lookups in a table of n routes (time is for all 10)."""
    r = NaiveRouter(ROUTES[:n])
    for method, path, name in REQUESTS:
        assert r.match(b"api.example.com", method, path)[0] == name
    benchmark.group = f"{n} routes"
    benchmark.pedantic(_lookup_all, args=(r.match,), rounds=5 if n >= 1000 else 200, iterations=1)


def test_router_static(benchmark):
    """Router.match of a parameterless route in the full table: the whole-path dict fast path."""
    r = build_router(len(ROUTES))
    static = next(x for x in ROUTES if "{" not in x["path"])
    args = (b"api.example.com", static["method"].encode(), static["path"].encode())
    assert r.match(*args) == (static["name"], None)
    benchmark.group = "static path"
    benchmark(r.match, *args)


def _per_lookup_ns(matches, repeat=40, number=300):
    """Best-of-repeat ns per lookup for each match function, measured in
    alternation so a busy neighbour on the machine slows all of them alike."""
    best = [float("inf")] * len(matches)
    for _ in range(repeat):
        for i, match in enumerate(matches):
            t0 = time.perf_counter()
            for _ in range(number):
                _lookup_all(match)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [b / (number * LOOKUPS) * 1e9 for b in best]


def test_lookup_time_is_flat():
    """The same 10 lookups at 10, 1,000 and 10,000 routes: within 1.5x, and under 1 µs each."""
    small, mid, large = _per_lookup_ns([build_router(n).match for n in SIZES])
    print(f"\nper lookup: 10 routes {small:.0f} ns, 1,000 routes {mid:.0f} ns, "
          f"10,000 routes {large:.0f} ns; 10,000/10 ratio {large / small:.2f}")
    assert large < 1.5 * small
    assert large < 1000
