"""fastgate._core.headers against a naive pure-Python transform on a realistic request.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_headers.py
Target: a transform with two `set` ops on a 10-header request in about 1 µs.
"""
import re

import pytest

from fastgate._core.headers import HeaderTransform, PathRewrite, Template
from fastgate._core.pipeline import RequestContext

# What curl/browsers plus a load balancer typically send: 10 headers.
HEADERS = [
    (b"Host", b"api.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    (b"Accept", b"application/json"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Accept-Language", b"en-US,en;q=0.9"),
    (b"Authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"),
    (b"X-Tenant", b"acme"),
    (b"X-Forwarded-For", b"198.51.100.1"),
    (b"Cookie", b"session=abc123; theme=dark"),
    (b"Connection", b"keep-alive"),
]
TWO_SETS = [("set", "X-Request-Id", "$context.requestId"),
            ("set", "X-Tenant-Id", "tenant-${request.header.X-Tenant}")]
MIXED = TWO_SETS + [("append", "Via", "1.1 fastgate"), ("remove", "Cookie"),
                    ("rename", "Authorization", "X-Original-Authorization")]


def make_ctx():
    ctx = RequestContext()
    ctx.method = b"GET"
    ctx.path = b"/api/items/42/photos/7"
    ctx.headers = HEADERS
    ctx.request_id = b"0f9c2a1e-6b1d-4c55-9d1e-3b8e2f7a9c10"
    ctx.source_ip = b"198.51.100.1"
    ctx.path_params = {b"id": b"42", b"proxy": b"photos/7"}
    return ctx


_VAR = re.compile(r"\$\{([^}]+)\}|\$([A-Za-z][A-Za-z0-9_.]*)")


def naive_render(template, ctx):
    """What a straightforward Python gateway does: regex substitution per request."""
    def sub(m):
        name = m.group(1) or m.group(2)
        if name.startswith("request.header."):
            want = name[15:].lower()
            vals = [v.decode() for k, v in ctx.headers if k.decode().lower() == want]
            return ",".join(vals)
        if name == "context.requestId":
            return ctx.request_id.decode()
        if name.startswith("request.path."):
            return (ctx.path_params or {}).get(name[13:].encode(), b"").decode()
        return ""
    out = _VAR.sub(sub, template)
    return out.replace("\r", "").replace("\n", "").replace("\0", "").encode()


def naive_apply(ops, headers, ctx):
    out = list(headers)
    for op in ops:
        kind, name = op[0], op[1]
        lname = name.lower()
        if kind == "set":
            value = naive_render(op[2], ctx)
            kept, placed = [], False
            for k, v in out:
                if k.decode().lower() == lname:
                    if not placed:
                        kept.append((name.encode(), value))
                        placed = True
                else:
                    kept.append((k, v))
            if not placed:
                kept.append((name.encode(), value))
            out = kept
        elif kind == "append":
            out.append((name.encode(), naive_render(op[2], ctx)))
        elif kind == "remove":
            out = [(k, v) for k, v in out if k.decode().lower() != lname]
        else:
            out = [(op[2].encode(), v) if k.decode().lower() == lname else (k, v) for k, v in out]
    return out


def test_transform_two_sets(benchmark):
    """Compiled HeaderTransform: two `set` ops on a 10-header request."""
    t, ctx = HeaderTransform(TWO_SETS), make_ctx()
    out = benchmark(t.apply, HEADERS, ctx)
    assert out == naive_apply(TWO_SETS, HEADERS, ctx)


def test_transform_two_sets_naive(benchmark):
    """Naive pure-Python baseline for test_transform_two_sets."""
    ctx = make_ctx()
    benchmark(naive_apply, TWO_SETS, HEADERS, ctx)


def test_transform_mixed(benchmark):
    """Compiled HeaderTransform: set, set, append, remove, rename on 10 headers."""
    t, ctx = HeaderTransform(MIXED), make_ctx()
    out = benchmark(t.apply, HEADERS, ctx)
    assert out == naive_apply(MIXED, HEADERS, ctx)


def test_transform_mixed_naive(benchmark):
    """Naive pure-Python baseline for test_transform_mixed."""
    ctx = make_ctx()
    benchmark(naive_apply, MIXED, HEADERS, ctx)


def test_template_render(benchmark):
    """Compiled Template: literal + header + context variable."""
    source = "v1-${request.header.X-Tenant}-$context.requestId"
    t, ctx = Template(source), make_ctx()
    assert benchmark(t.render, ctx) == naive_render(source, ctx)


def test_template_render_naive(benchmark):
    """Naive regex-substitution baseline for test_template_render."""
    ctx = make_ctx()
    benchmark(naive_render, "v1-${request.header.X-Tenant}-$context.requestId", ctx)


def test_path_rewrite(benchmark):
    """Compiled PathRewrite with a parameter and a greedy parameter."""
    p, ctx = PathRewrite("/v2/items/{id}/{proxy}"), make_ctx()
    assert benchmark(p.apply, ctx) == b"/v2/items/42/photos/7"


def test_path_rewrite_naive(benchmark):
    """Naive str.format-style baseline for test_path_rewrite."""
    ctx = make_ctx()

    def naive():
        params = {k.decode(): v.decode() for k, v in ctx.path_params.items()}
        return re.sub(r"\{(\w+)\+?\}", lambda m: params.get(m.group(1), ""),
                      "/v2/items/{id}/{proxy}").encode()
    assert benchmark(naive) == b"/v2/items/42/photos/7"
