"""fastgate._core.router: precedence rules, errors, a naive oracle, the real AWS route table."""

import json
import pathlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastgate._core.router as router_module
from fastgate._core.router import Router

DATA = pathlib.Path("/work/shared/data/aws-routes.json")


def make(*routes):
    """Router from (host, method, path) triples; each route's value is "METHOD path@host"."""
    r = Router()
    for host, method, path in routes:
        r.add(host, method, path, f"{method} {path}@{host}")
    return r


def hit(r, method, path, host=b"h.example"):
    m = r.match(host, method, path)
    return None if m is None else m[0]


def test_compiled_module_is_loaded():
    assert router_module.__file__.endswith(".so"), router_module.__file__


# --- path precedence ----------------------------------------------------------

def test_static_beats_param_beats_greedy():
    r = make(("*", "GET", "/pets/dog"), ("*", "GET", "/pets/{id}"), ("*", "GET", "/pets/{proxy+}"))
    assert r.match(b"h", b"GET", b"/pets/dog") == ("GET /pets/dog@*", None)
    assert r.match(b"h", b"GET", b"/pets/cat") == ("GET /pets/{id}@*", {b"id": b"cat"})
    assert r.match(b"h", b"GET", b"/pets/cat/1") == ("GET /pets/{proxy+}@*", {b"proxy": b"cat/1"})


def test_aws_http_api_example_table():
    # The example of "Routing API requests" in the HTTP API developer guide.
    r = make(("*", "GET", "/pets/dog/1"), ("*", "GET", "/pets/dog/{id}"),
             ("*", "GET", "/pets/{proxy+}"), ("*", "ANY", "/{proxy+}"))
    assert hit(r, b"GET", b"/pets/dog/1") == "GET /pets/dog/1@*"
    assert hit(r, b"GET", b"/pets/dog/2") == "GET /pets/dog/{id}@*"
    assert hit(r, b"GET", b"/pets/cat/1") == "GET /pets/{proxy+}@*"
    assert hit(r, b"POST", b"/pets/cat/1") == "ANY /{proxy+}@*"
    assert hit(r, b"GET", b"/") is None      # greedy never matches the root


def test_backtracks_from_static_to_param_then_greedy():
    r = make(("*", "GET", "/a/b/x"), ("*", "GET", "/a/{p}/c"), ("*", "GET", "/a/{rest+}"))
    # /a/b/c: static b leads nowhere (only b/x), so {p} at that position
    assert r.match(b"h", b"GET", b"/a/b/c") == ("GET /a/{p}/c@*", {b"p": b"b"})
    # /a/b/d: neither b/x nor {p}/c; greedy at position 1
    assert r.match(b"h", b"GET", b"/a/b/d") == ("GET /a/{rest+}@*", {b"rest": b"b/d"})


def test_leftmost_segment_decides():
    r = make(("*", "GET", "/a/{x}/c"), ("*", "GET", "/{y}/b/c"))
    assert hit(r, b"GET", b"/a/b/c") == "GET /a/{x}/c@*"


def test_greedy_needs_at_least_one_segment():
    r = make(("*", "GET", "/files/{path+}"))
    assert r.match(b"h", b"GET", b"/files") is None
    assert r.match(b"h", b"GET", b"/files/") is None
    assert r.match(b"h", b"GET", b"/files/a") == ("GET /files/{path+}@*", {b"path": b"a"})


def test_greedy_value_has_no_leading_slash_and_keeps_encoding():
    r = make(("*", "GET", "/s3/{bucket}/{key+}"))
    assert r.match(b"h", b"GET", b"/s3/b1/a/b%2Fc/d.txt") == (
        "GET /s3/{bucket}/{key+}@*", {b"bucket": b"b1", b"key": b"a/b%2Fc/d.txt"})


def test_root_greedy_and_root_route():
    r = make(("*", "ANY", "/{proxy+}"), ("*", "GET", "/"))
    assert r.match(b"h", b"GET", b"/") == ("GET /@*", None)
    assert r.match(b"h", b"POST", b"/") is None
    assert r.match(b"h", b"POST", b"/a/b") == ("ANY /{proxy+}@*", {b"proxy": b"a/b"})


def test_param_values_are_raw():
    r = make(("*", "GET", "/u/{name}"))
    assert r.match(b"h", b"GET", b"/u/J%C3%B6rg%20x") == ("GET /u/{name}@*", {b"name": b"J%C3%B6rg%20x"})
    # an encoded slash stays inside its segment
    assert r.match(b"h", b"GET", b"/u/a%2Fb") == ("GET /u/{name}@*", {b"name": b"a%2Fb"})


def test_static_segments_compare_raw_and_case_sensitive():
    r = make(("*", "GET", "/Pets"))
    assert hit(r, b"GET", b"/Pets") == "GET /Pets@*"
    assert hit(r, b"GET", b"/pets") is None
    assert hit(r, b"GET", b"/%50ets") is None


def test_non_ascii_static_segment_matches_its_percent_encoding():
    r = make(("*", "GET", "/café"))
    assert hit(r, b"GET", b"/caf%C3%A9") == "GET /café@*"


def test_trailing_slashes_are_ignored():
    r = make(("*", "GET", "/pets"), ("*", "GET", "/pets/{id}"))
    assert hit(r, b"GET", b"/pets/") == "GET /pets@*"
    assert hit(r, b"GET", b"/pets//") == "GET /pets@*"
    assert r.match(b"h", b"GET", b"/pets/7/") == ("GET /pets/{id}@*", {b"id": b"7"})
    # a route declared with a trailing slash is the same route
    r2 = make(("*", "GET", "/pets/"))
    assert hit(r2, b"GET", b"/pets") == "GET /pets/@*"


def test_empty_segment_matches_no_param():
    r = make(("*", "GET", "/a/{x}/b"), ("*", "GET", "/a/{rest+}"))
    assert r.match(b"h", b"GET", b"/a//b") == ("GET /a/{rest+}@*", {b"rest": b"/b"})


def test_no_match_and_non_origin_form():
    r = make(("*", "GET", "/a"))
    assert r.match(b"h", b"GET", b"/b") is None
    assert r.match(b"h", b"GET", b"") is None
    assert r.match(b"h", b"OPTIONS", b"*") is None
    assert r.match(b"h", b"GET", b"http://h/a") is None
    assert Router().match(b"h", b"GET", b"/a") is None


def test_param_names_are_per_route():
    r = make(("*", "GET", "/x/{id}"), ("*", "DELETE", "/x/{name}"))
    assert r.match(b"h", b"GET", b"/x/1")[1] == {b"id": b"1"}
    assert r.match(b"h", b"DELETE", b"/x/1")[1] == {b"name": b"1"}


def test_static_route_result_is_shared_and_param_dict_is_fresh():
    r = make(("*", "GET", "/a"), ("*", "GET", "/b/{id}"))
    assert r.match(b"h", b"GET", b"/a") is r.match(b"h", b"GET", b"/a")
    first = r.match(b"h", b"GET", b"/b/1")[1]
    first[b"id"] = b"changed"
    assert r.match(b"h", b"GET", b"/b/1")[1] == {b"id": b"1"}


def test_deep_param_chain():
    path = "/" + "/".join(f"{{p{i}}}" for i in range(100))
    r = make(("*", "GET", path))
    request = b"/" + b"/".join(b"v%d" % i for i in range(100))
    value, params = r.match(b"h", b"GET", request)
    assert params == {b"p%d" % i: b"v%d" % i for i in range(100)}
    assert r.match(b"h", b"GET", request + b"/extra") is None


# --- methods ------------------------------------------------------------------

def test_specific_method_beats_any_on_the_same_path():
    r = make(("*", "ANY", "/pets"), ("*", "GET", "/pets"))
    assert hit(r, b"GET", b"/pets") == "GET /pets@*"
    assert hit(r, b"POST", b"/pets") == "ANY /pets@*"


def test_more_specific_path_beats_method():
    # Path first: ANY on /pets/{id} wins over GET on the greedy route.
    r = make(("*", "ANY", "/pets/{id}"), ("*", "GET", "/pets/{proxy+}"))
    assert hit(r, b"GET", b"/pets/1") == "ANY /pets/{id}@*"


def test_method_mismatch_falls_through_to_less_specific_path():
    # As LocalStack found against AWS: OPTIONS /{proxy+} answers OPTIONS /zap
    # when /zap only has POST.
    r = make(("*", "POST", "/zap"), ("*", "OPTIONS", "/{proxy+}"))
    assert hit(r, b"OPTIONS", b"/zap") == "OPTIONS /{proxy+}@*"
    assert hit(r, b"POST", b"/zap") == "POST /zap@*"
    assert hit(r, b"GET", b"/zap") is None


def test_head_is_not_get():
    r = make(("*", "GET", "/a"))
    assert hit(r, b"HEAD", b"/a") is None


# --- hosts --------------------------------------------------------------------

def test_host_precedence_exact_then_longest_wildcard_then_default():
    r = make(("*", "GET", "/a"), ("*.example.com", "GET", "/a"),
             ("*.eu.example.com", "GET", "/a"), ("api.eu.example.com", "GET", "/a"))
    assert hit(r, b"GET", b"/a", b"api.eu.example.com") == "GET /a@api.eu.example.com"
    assert hit(r, b"GET", b"/a", b"www.eu.example.com") == "GET /a@*.eu.example.com"
    assert hit(r, b"GET", b"/a", b"x.y.eu.example.com") == "GET /a@*.eu.example.com"
    assert hit(r, b"GET", b"/a", b"www.example.com") == "GET /a@*.example.com"
    assert hit(r, b"GET", b"/a", b"example.com") == "GET /a@*"
    assert hit(r, b"GET", b"/a", b"other.org") == "GET /a@*"
    assert hit(r, b"GET", b"/a", b".example.com") == "GET /a@*"


def test_chosen_host_does_not_fall_back_to_default():
    r = make(("*", "GET", "/health"), ("api.example.com", "GET", "/pets"))
    assert hit(r, b"GET", b"/pets", b"api.example.com") == "GET /pets@api.example.com"
    assert hit(r, b"GET", b"/health", b"api.example.com") is None
    assert hit(r, b"GET", b"/health", b"other.example.com") == "GET /health@*"


def test_no_default_host_means_unknown_hosts_miss():
    r = make(("api.example.com", "GET", "/a"))
    assert hit(r, b"GET", b"/a", b"other.example.com") is None


def test_host_is_declared_case_insensitively():
    r = make(("API.Example.com", "GET", "/a"))
    assert hit(r, b"GET", b"/a", b"api.example.com") == "GET /a@API.Example.com"
    assert r.routes()[0][0] == "api.example.com"


# --- errors -------------------------------------------------------------------

@pytest.mark.parametrize("path, message", [
    ("pets", "must start with '/'"),
    ("/a//b", "empty segment"),
    ("//", "empty segment"),
    ("/a/{proxy+}/b", "must be the last segment"),
    ("/a/x{id}", "must be a whole segment"),
    ("/a/{id}x", "must be a whole segment"),
    ("/a/{}", "must be a whole segment"),
    ("/a/{id", "must be a whole segment"),
    ("/a/{id}/{id}", "appears twice"),
    ("/a/{id}/{id+}", "appears twice"),
    ("/a b", "' '"),
    ("/a?b", "'?'"),
    ("/a#b", "'#'"),
    ("/" + "/".join(["s"] * 129), "the limit is 128"),
])
def test_bad_paths(path, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Router().add("*", "GET", path, None)


@pytest.mark.parametrize("method", ["get", "G ET", "", "Get"])
def test_bad_methods(method):
    with pytest.raises(ValueError, match="upper-case HTTP method or ANY"):
        Router().add("*", method, "/a", None)


@pytest.mark.parametrize("host", ["", "api.example.com:8080", "a.*.com", "**.com", "*", "*."])
def test_bad_hosts(host):
    if host == "*":
        Router().add(host, "GET", "/a", None)   # the default host, valid
        return
    with pytest.raises(ValueError, match="host must be"):
        Router().add(host, "GET", "/a", None)


def test_duplicate_shape_names_both_routes():
    r = make(("*", "GET", "/pets/{id}"))
    with pytest.raises(ValueError) as e:
        r.add("*", "GET", "/pets/{name}", None)
    assert "GET /pets/{name}" in str(e.value) and "GET /pets/{id}" in str(e.value)
    with pytest.raises(ValueError, match="duplicates GET /pets/{id}"):
        r.add("*", "GET", "/pets/{petId}/", None)
    r.add("*", "ANY", "/pets/{name}", None)          # other method: fine
    r.add("x.example.com", "GET", "/pets/{name}", None)  # other host: fine
    r.add("*", "GET", "/pets/{proxy+}", None)        # greedy is another shape
    assert len(r) == 4


def test_failed_add_leaves_router_unchanged():
    r = make(("*", "GET", "/a/{id}"))
    with pytest.raises(ValueError):
        r.add("*", "GET", "/a/{other}", "new")
    assert len(r) == 1 and hit(r, b"GET", b"/a/1") == "GET /a/{id}@*"


def test_match_rejects_none():
    with pytest.raises(TypeError):
        Router().match(b"h", b"GET", None)


def test_routes_order_is_stable_and_readable():
    r = make(("b.example.com", "GET", "/z"), ("*", "ANY", "/pets/{id}"), ("*", "GET", "/pets/{id}"),
             ("*", "GET", "/pets/{proxy+}"), ("*", "POST", "/pets/dog"), ("*", "GET", "/"),
             ("*.example.com", "GET", "/a"))
    assert [(h, m, p) for h, m, p, _ in r.routes()] == [
        ("*", "GET", "/"),
        ("*", "POST", "/pets/dog"),
        ("*", "GET", "/pets/{id}"),
        ("*", "ANY", "/pets/{id}"),
        ("*", "GET", "/pets/{proxy+}"),
        ("*.example.com", "GET", "/a"),
        ("b.example.com", "GET", "/z"),
    ]
    assert r.routes()[0][3] == "GET /@*"
    assert len(r) == 7


# --- the naive oracle -----------------------------------------------------------

_KIND = {"static": 0, "param": 1, "greedy": 2}


def oracle_parse(path):
    body = path[1:].rstrip("/") if path != "/" else ""
    out = []
    for seg in body.split("/") if body else []:
        m = re.fullmatch(r"\{([^{}+]+)(\+?)\}", seg)
        if m:
            out.append(("greedy" if m.group(2) else "param", m.group(1)))
        else:
            out.append(("static", seg))
    return out


def oracle_match(routes, host, method, path):
    """What the docs say, done the slow way: pick the host, then among routes
    matching the path and method take the one whose kinds (static < param <
    greedy), read left to right, are smallest; a specific method before ANY."""
    host = host.decode()
    hosts = {h for h, _, _, _ in routes}
    if host in hosts:
        chosen = host
    else:
        wild = [h for h in hosts if h.startswith("*.") and host.endswith(h[1:]) and len(host) > len(h) - 1]
        chosen = max(wild, key=len) if wild else "*"
    path = path.decode("latin-1")
    if not path.startswith("/"):
        return None
    segs = path[1:].rstrip("/").split("/") if path.rstrip("/") else []
    best = None
    for h, m, p, value in routes:
        if h != chosen or m not in (method.decode(), "ANY"):
            continue
        params = {}
        kinds = []
        ok = True
        parts = oracle_parse(p)
        for i, (kind, text) in enumerate(parts):
            kinds.append(_KIND[kind])
            if kind == "greedy":
                if i >= len(segs):
                    ok = False
                else:
                    params[text.encode()] = "/".join(segs[i:]).encode("latin-1")
                break
            if i >= len(segs) or (kind == "static" and segs[i] != text) or (kind == "param" and not segs[i]):
                ok = False
                break
            if kind == "param":
                params[text.encode()] = segs[i].encode("latin-1")
        else:
            ok = ok and len(parts) == len(segs)
        if not ok:
            continue
        key = (kinds, m == "ANY")
        if best is None or key < best[0]:
            best = (key, (value, params or None))
    return None if best is None else best[1]


_seg = st.sampled_from(["a", "b", "c"])
_route_seg = st.one_of(_seg, _seg, st.just("{p}"))
_route = st.tuples(
    st.sampled_from(["*", "*", "*", "x.com", "*.x.com", "*.y.x.com"]),
    st.sampled_from(["GET", "POST", "ANY"]),
    st.tuples(st.lists(_route_seg, max_size=4), st.booleans()),
)
_request = st.tuples(
    st.sampled_from([b"x.com", b"a.x.com", b"z.y.x.com", b"other.org"]),
    st.sampled_from([b"GET", b"POST", b"PUT"]),
    st.tuples(st.lists(st.sampled_from(["a", "b", "c", "d", ""]), max_size=6), st.booleans()),
)


def _route_path(segs, greedy):
    # distinct parameter names per position, so names are checked too
    parts = [f"{{p{i}}}" if s == "{p}" else s for i, s in enumerate(segs)]
    if greedy:
        parts.append("{rest+}")
    return "/" + "/".join(parts)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_route, max_size=25), st.lists(_request, min_size=1, max_size=15))
def test_matches_naive_oracle(route_specs, requests):
    r = Router()
    accepted = []
    for i, (host, method, (segs, greedy)) in enumerate(route_specs):
        path = _route_path(segs, greedy)
        try:
            r.add(host, method, path, i)
        except ValueError as e:
            assert "duplicates" in str(e)
            continue
        accepted.append((host, method, path, i))
    for host, method, (segs, slash) in requests:
        path = ("/" + "/".join(segs) + ("/" if slash else "")).encode()
        assert r.match(host, method, path) == oracle_match(accepted, host, method, path), path


def test_oracle_agrees_on_a_hand_case():
    # guards the oracle itself against being vacuous
    routes = [("*", "GET", "/a/{x}", 1), ("*", "GET", "/a/{rest+}", 2)]
    assert oracle_match(routes, b"h", b"GET", b"/a/b") == (1, {b"x": b"b"})
    assert oracle_match(routes, b"h", b"GET", b"/a/b/c") == (2, {b"rest": b"b/c"})
    assert oracle_match(routes, b"h", b"GET", b"/a") is None


# --- the real table ---------------------------------------------------------------

def instantiate(path):
    """A request path for a route: {x} -> v-x, {x+} -> v-x/g/h; and the params it yields."""
    params = {}

    def sub(m):
        value = "v-" + m.group(1) + ("/g/h" if m.group(2) else "")
        params[m.group(1).encode()] = value.encode()
        return value
    return re.sub(r"\{([^{}+]+)(\+?)\}", sub, path).encode(), params or None


def test_whole_aws_table_matches_itself():
    routes = json.loads(DATA.read_text())
    assert len(routes) == 10567
    r = Router()
    loaded, refused = [], []
    for x in routes:
        try:
            r.add("*", x["method"], x["path"], x["name"])
            loaded.append(x)
        except ValueError as e:
            refused.append((x, str(e)))
    # botocore has a few greedy labels mid-path (s3control, workspaces-web);
    # API Gateway refuses those routes, and so do we.
    assert all("must be the last segment" in e and re.search(r"\{[^}]+\+\}/", x["path"])
               for x, e in refused)
    assert len(refused) == 23 and len(r) == len(loaded) == 10567 - 23
    for x in loaded:
        path, params = instantiate(x["path"])
        assert r.match(b"any.host", x["method"].encode(), path) == (x["name"], params), x
        assert r.match(b"any.host", x["method"].encode(), path + b"/") == (x["name"], params), x
