# cython: language_level=3, boundscheck=False, wraparound=False
"""Radix router in API Gateway's precedence; router.pxd maps the tree, docs/routing.md the rules."""

import re
from urllib.parse import quote

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.string cimport memchr

# Parameter names as AWS's own APIs spell them (botocore has {resource-arn}, {Key+}).
_PARAM = re.compile(r"\{([A-Za-z0-9_.\-]+)(\+?)\}\Z")
# A static segment may hold RFC 3986 pchars; these can never arrive inside one.
_BAD_STATIC = re.compile(r"[\s?#{}\x00-\x1f\x7f]")
# Printable ASCII stays as written; anything else is stored percent-encoded
# (UTF-8, upper-case hex) because that is how it arrives on the wire.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7f))
_HOST = re.compile(r"[a-z0-9]([a-z0-9\-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9\-]*[a-z0-9])?)*\Z")
_METHOD = re.compile(r"[A-Z][A-Z0-9_\-]*\Z")

# Sort keys for routes(): within one host, paths in precedence order per segment.
_KIND_STATIC, _KIND_PARAM, _KIND_GREEDY = 0, 1, 2


cdef class Endpoint:
    def __cinit__(self, object value, str host, str method, str path, tuple names):
        self.value = value
        self.host = host
        self.method = method
        self.path = path
        self.names = names
        self.nparams = len(names)
        self.result = (value, None)

    def __repr__(self):
        return f"<Endpoint {self.host} {self.method} {self.path}>"


cdef class Methods:
    def __cinit__(self):
        self.by_method = {}
        self.any_ = None

    cdef Endpoint lookup(self, bytes method):
        cdef PyObject* hit
        if self.by_method:
            hit = PyDict_GetItem(self.by_method, method)
            if hit != NULL:
                return <Endpoint>hit
        return self.any_


cdef class Node:
    pass


cdef class HostTree:
    def __cinit__(self):
        self.root = Node()
        self.exact = {}


cdef Endpoint walk(Node node, const char* p, Py_ssize_t pos, Py_ssize_t end, bytes method,
                   Py_ssize_t* caps, int ncap):
    """Depth-first match of p[pos:end] below node: static, then {param}, then
    greedy, backtracking on failure.  caps[2i], caps[2i+1] receive the offsets
    of the i-th captured parameter of the winning route."""
    cdef Endpoint ep
    cdef const char* slash
    cdef Py_ssize_t seg_end
    cdef PyObject* child
    if pos > end:      # path exhausted: a route must end exactly here
        if node.here is not None:
            return node.here.lookup(method)
        return None
    slash = <const char*>memchr(p + pos, b'/', end - pos)
    seg_end = (slash - p) if slash != NULL else end
    if seg_end > pos:  # an empty segment ("//") matches neither a static nor a {param}
        if node.statics is not None:
            child = PyDict_GetItem(node.statics, PyBytes_FromStringAndSize(p + pos, seg_end - pos))
            if child != NULL:
                ep = walk(<Node>child, p, seg_end + 1, end, method, caps, ncap)
                if ep is not None:
                    return ep
        if node.param is not None:
            caps[2 * ncap] = pos
            caps[2 * ncap + 1] = seg_end
            ep = walk(node.param, p, seg_end + 1, end, method, caps, ncap + 1)
            if ep is not None:
                return ep
    if node.greedy is not None:
        ep = node.greedy.lookup(method)
        if ep is not None:
            caps[2 * ncap] = pos
            caps[2 * ncap + 1] = end
            return ep
    return None


def _parse_path(str path):
    """"/pets/{id}" -> [(kind, text)]; text is the encoded static segment or
    the parameter name.  One trailing slash is dropped, as for requests."""
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} must start with '/'")
    if "//" in path:
        raise ValueError(f"empty segment ('//') in route path {path!r}")
    body = path[1:]
    if body.endswith("/"):
        body = body[:len(body) - 1]
    if not body:
        return []
    segments = body.split("/")
    if len(segments) > MAX_SEGMENTS:
        raise ValueError(f"route path {path!r} has {len(segments)} segments; the limit is {MAX_SEGMENTS}")
    out = []
    seen = set()
    for i, seg in enumerate(segments):
        if not seg:
            raise ValueError(f"empty segment ('//') in route path {path!r}")
        if "{" in seg or "}" in seg:
            m = _PARAM.match(seg)
            if m is None:
                raise ValueError(f"segment {seg!r} of route path {path!r}: a parameter must be a "
                                 "whole segment, {name} or {name+}")
            name, greedy = m.group(1), m.group(2)
            if name in seen:
                raise ValueError(f"parameter {{{name}}} appears twice in route path {path!r}")
            seen.add(name)
            if greedy and i != len(segments) - 1:
                raise ValueError(f"greedy parameter {{{name}+}} must be the last segment of "
                                 f"route path {path!r}")
            out.append((_KIND_GREEDY if greedy else _KIND_PARAM, name))
            continue
        bad = _BAD_STATIC.search(seg)
        if bad is not None:
            raise ValueError(f"route path {path!r} contains {bad.group()!r} in segment {seg!r}")
        out.append((_KIND_STATIC, quote(seg, safe=_SAFE)))
    return out


def parse_route_path(str path):
    """The router's own reading of a route path, for the control plane's checks:
    [("static" | "param" | "greedy", encoded segment or name)]."""
    return [(_KIND_NAMES[k], t) for k, t in _parse_path(path)]


_KIND_NAMES = {_KIND_STATIC: "static", _KIND_PARAM: "param", _KIND_GREEDY: "greedy"}


def _host_key(str host):
    """"*" -> (0, None); "api.x.com" -> (1, b"api.x.com"); "*.x.com" -> (2, b".x.com")."""
    if host == "*":
        return 0, None
    bare = host[2:] if host.startswith("*.") else host
    if not _HOST.match(bare):
        raise ValueError(f"host must be a name (api.example.com), a wildcard (*.example.com) "
                         f"or '*', got {host!r}; a port is never part of it")
    if host.startswith("*."):
        return 2, ("." + bare).encode("ascii")
    return 1, bare.encode("ascii")


cdef class Router:
    """Routes (host, method, path) to the value of the most specific route."""

    def __cinit__(self):
        self.default_tree = None
        self.exact_hosts = {}
        self.wildcard_hosts = {}
        self.host_specific = False
        self.endpoints = []
        self.shapes = {}

    def add(self, str host, str method, str path, object value):
        """Declare a route; ValueError names the problem (and the clashing route)."""
        cdef HostTree tree
        cdef Node node, child
        cdef Methods methods
        cdef Endpoint ep, other
        host = host.lower()
        kind, hkey = _host_key(host)
        if method != "ANY" and not _METHOD.match(method):
            raise ValueError(f"method must be an upper-case HTTP method or ANY, got {method!r}")
        segments = _parse_path(path)
        shape = tuple(text if k == _KIND_STATIC else k for k, text in segments)
        other = self.shapes.get((host, method, shape))
        if other is not None:
            raise ValueError(f"route {method} {path} for host {host!r} duplicates {other.method} "
                             f"{other.path}: parameter names do not make paths differ")
        names = tuple(text.encode() for k, text in segments if k != _KIND_STATIC)
        ep = Endpoint(value, host, method, path, names)

        if kind == 0:
            if self.default_tree is None:
                self.default_tree = HostTree()
            tree = self.default_tree
        else:
            table = self.exact_hosts if kind == 1 else self.wildcard_hosts
            tree = table.get(hkey)
            if tree is None:
                tree = table[hkey] = HostTree()
            self.host_specific = True

        node = tree.root
        greedy = bool(segments) and segments[len(segments) - 1][0] == _KIND_GREEDY
        for k, text in (segments[:len(segments) - 1] if greedy else segments):
            if k == _KIND_STATIC:
                if node.statics is None:
                    node.statics = {}
                key = text.encode("ascii")
                child = node.statics.get(key)
                if child is None:
                    child = node.statics[key] = Node()
            else:
                child = node.param
                if child is None:
                    child = node.param = Node()
            node = child
        if greedy:
            if node.greedy is None:
                node.greedy = Methods()
            methods = node.greedy
        else:
            if node.here is None:
                node.here = Methods()
            methods = node.here
            if not names:
                # Same Methods object as the tree's, so later methods on this path show up too.
                tree.exact[("".join("/" + text for _, text in segments)).encode("ascii")] = methods
        if method == "ANY":
            methods.any_ = ep
        else:
            methods.by_method[method.encode("ascii")] = ep
        self.shapes[(host, method, shape)] = ep
        self.endpoints.append(ep)

    cpdef object match(self, bytes host, bytes method, bytes path):
        """(value, params) of the best route, or None.  host: lowercased, no
        port; path: raw, without the query.  params is None for a route without
        parameters, else {b"name": b"raw value"}."""
        cdef HostTree tree
        if host is None or method is None or path is None:
            raise TypeError("Router.match() takes bytes, not None")
        if self.host_specific:
            tree = self.tree_for(host)
        else:
            tree = self.default_tree
        if tree is None:
            return None
        return self.match_tree(tree, method, path)

    cdef HostTree tree_for(self, bytes host):
        """Exact name, else the longest wildcard suffix, else "*".  No fallback
        afterwards: the chosen host's routes are the only candidates."""
        cdef PyObject* hit
        cdef const char* h
        cdef Py_ssize_t i, n
        if self.exact_hosts:
            hit = PyDict_GetItem(self.exact_hosts, host)
            if hit != NULL:
                return <HostTree>hit
        if self.wildcard_hosts:
            h = PyBytes_AS_STRING(host)
            n = PyBytes_GET_SIZE(host)
            # i > 0: "*.example.com" needs a non-empty label before the suffix.
            for i in range(1, n):
                if h[i] == b'.':
                    hit = PyDict_GetItem(self.wildcard_hosts, PyBytes_FromStringAndSize(h + i, n - i))
                    if hit != NULL:
                        return <HostTree>hit
        return self.default_tree

    cdef object match_tree(self, HostTree tree, bytes method, bytes path):
        cdef Py_ssize_t caps[2 * MAX_SEGMENTS]
        cdef Py_ssize_t n = PyBytes_GET_SIZE(path)
        cdef Py_ssize_t end = n
        cdef Py_ssize_t i
        cdef const char* p = PyBytes_AS_STRING(path)
        cdef PyObject* hit
        cdef Endpoint ep
        cdef dict params
        if n == 0 or p[0] != b'/':
            return None
        while end > 0 and p[end - 1] == b'/':   # trailing slashes are ignored
            end -= 1
        # PERF(bench_router test_router_static): a path made only of static
        # segments beats every parameterised route, so one dict lookup of the
        # whole path answers it without splitting.
        if tree.exact:
            hit = PyDict_GetItem(tree.exact, path if end == n else PyBytes_FromStringAndSize(p, end))
            if hit != NULL:
                ep = (<Methods>hit).lookup(method)
                if ep is not None:
                    return ep.result
        ep = walk(tree.root, p, 1, end, method, caps, 0)
        if ep is None:
            return None
        if ep.nparams == 0:
            return ep.result
        params = {}
        for i in range(ep.nparams):
            params[ep.names[i]] = PyBytes_FromStringAndSize(p + caps[2 * i], caps[2 * i + 1] - caps[2 * i])
        return (ep.value, params)

    def routes(self):
        """[(host, method, path, value)]: "*" first, then hosts by name; within a
        host, paths in precedence order segment by segment (static before
        {param} before greedy), specific methods before ANY."""
        def key(Endpoint ep):
            segs = tuple((k, text if k == _KIND_STATIC else "") for k, text in _parse_path(ep.path))
            return (ep.host != "*", ep.host, segs, ep.method == "ANY", ep.method)
        return [(ep.host, ep.method, ep.path, ep.value) for ep in sorted(self.endpoints, key=key)]

    def __len__(self):
        return len(self.endpoints)

    def __repr__(self):
        return f"<Router {len(self.endpoints)} routes>"
