"""Request parameter mapping: API Gateway's REST and HTTP API syntaxes compiled into the
header transform, a query-string rewrite and a path template, once per integration.

REST APIs (``methodIntegration.requestParameters``)::

    integration.request.header.X       = method.request.querystring.y | method.request.header.y
    integration.request.querystring.X  =   | method.request.path.y | 'static value'
    integration.request.path.X         =   | context.requestId | stageVariables.v

HTTP APIs (``requestParameters`` of the integration)::

    overwrite:header.X | append:header.X | remove:header.X            = value template
    overwrite:querystring.X | append:querystring.X | remove:querystring.X
    overwrite:path                                                     = /v2/$request.path.proxy

where a value template is API Gateway's: ``$request.header.name``, ``$request.querystring.name``,
``$request.path.name``, ``$context.*``, ``$stageVariables.*``, static text, or a mix.

``compile_request_mapping(api, method, integration)`` returns a RequestMapping; the request
pipeline applies ``headers`` (fastgate._core.headers.HeaderTransform), ``query``
(QueryMapping.apply(ctx) -> the upstream query string) and ``path`` (a PathRewrite template).
Compile errors are ValueError with the mapping's key in the message.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from fastgate._core.headers import HeaderTransform, PathRewrite, Template

# HTTP APIs refuse mappings of these (http-api-parameter-mapping, "Reserved headers").
_HTTP_RESERVED = frozenset((
    "authorization", "connection", "content-encoding", "content-length", "content-location",
    "forwarded", "keep-alive", "origin", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade", "x-forwarded-for", "x-forwarded-host",
    "x-forwarded-proto", "via"))
_HTTP_RESERVED_PREFIXES = ("access-control-", "apigw-", "x-amz-", "x-amzn-")
# REST APIs: the headers that frame the message or belong to the hop (RFC 9112 §6,
# RFC 9110 §7.6.1) and Host, which API Gateway never forwards to HTTP endpoints.
_REST_RESERVED = frozenset((
    "connection", "content-length", "host", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade"))

_REST_TARGET = re.compile(r"^integration\.request\.(header|querystring|path|multivalueheader|"
                          r"multivaluequerystring)\.(.+)$")
_REST_SOURCE = re.compile(r"^method\.request\.(header|querystring|path|multivalueheader|"
                          r"multivaluequerystring)\.(.+)$")
_HTTP_KEY = re.compile(r"^(overwrite|append|remove):(header|querystring)\.(.+)$")
_URI_PATH = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*(/[^?#]*)?")
_URI_PARAM = re.compile(r"\{([^{}/]+?)\+?\}")
# Bytes a query component may keep as they are: RFC 3986 unreserved. Everything else in a
# rendered value is percent-encoded, except %XX escapes that are already there.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789ABCDEFabcdef")


class RequestMapping(NamedTuple):
    """What one integration does to the request it sends upstream."""
    headers: HeaderTransform | None   # header ops, in configuration order; None: none
    query: QueryMapping | None        # None: the query string goes as keep_query says
    path: str | None                  # PathRewrite template ("/v2/{id}"), None: unchanged
    keep_query: bool                  # the client's query string is sent (before `query`'s ops)
    keep_headers: bool                # the client's headers are sent (before `headers`' ops)

    def path_rewrite(self) -> PathRewrite | None:
        return PathRewrite(self.path) if self.path is not None else None


def compile_request_mapping(api: dict, method: dict, integration: dict) -> RequestMapping:
    """The integration's request mapping. ``api["protocolType"] == "HTTP"`` selects the
    HTTP API syntax; everything else is a REST API."""
    params = integration.get("requestParameters") or {}
    itype = integration.get("type", "HTTP_PROXY")
    if api.get("protocolType") == "HTTP":
        return _compile_http(params)
    return _compile_rest(params, itype, integration.get("uri") or "")


# --- REST APIs -------------------------------------------------------------------------

def _compile_rest(params: dict, itype: str, uri: str) -> RequestMapping:
    header_ops, query_ops, path_sources = [], [], {}
    for key, source in params.items():
        m = _REST_TARGET.match(key)
        if m is None:
            raise ValueError(f"requestParameters {key}: the target must be "
                             "integration.request.{header,querystring,path}.NAME")
        kind, name = m.group(1), m.group(2)
        if kind in ("header", "multivalueheader"):
            _check_header(name, key, _REST_RESERVED)
            header_ops.append(("set", name, _rest_value(source, key)))
        elif kind in ("querystring", "multivaluequerystring"):
            sm = _REST_SOURCE.match(source)
            if sm and sm.group(1) in ("querystring", "multivaluequerystring"):
                # copied as received (still percent-encoded); a single-value source is the
                # last value, as API Gateway passes it, a multi-value one every value
                query_ops.append(QueryOp("copy", name, sm.group(2),
                                         every=sm.group(1) == "multivaluequerystring"))
            else:
                query_ops.append(QueryOp("set", name, _rest_value(source, key)))
        else:
            path_sources[name] = _rest_value(source, key, path=True)
    path = None
    m = _URI_PATH.match(uri)
    if m is not None or path_sources:
        upath = (m.group(1) if m else None) or "/"

        def fill(pm):
            plain = pm.group(1)
            # an unmapped {x} takes the method's path parameter of the same name
            return path_sources.get(plain, "{" + plain + "}")
        path = _URI_PARAM.sub(fill, upath)
        unused = sorted(set(path_sources) - set(_URI_PARAM.findall(upath)))
        if unused:
            raise ValueError(f"requestParameters integration.request.path.{unused[0]}: the "
                             f"integration uri has no {{{unused[0]}}}")
    # HTTP_PROXY passes the client's query string and headers through; an HTTP (custom)
    # integration sends only what is mapped.
    proxy = itype != "HTTP"
    return RequestMapping(
        headers=HeaderTransform(header_ops) if header_ops else None,
        query=QueryMapping(query_ops, keep_query=proxy) if query_ops else None,
        path=path, keep_query=proxy, keep_headers=proxy)


def _rest_value(source, key: str, path: bool = False) -> str:
    """A REST mapping source as a fastgate template."""
    if not isinstance(source, str) or not source:
        raise ValueError(f"requestParameters {key}: the source must be a non-empty string")
    if len(source) >= 2 and source[0] == source[-1] == "'":
        literal = source[1:-1].replace("$", "$$")
        return literal.replace("{", "%7B").replace("}", "%7D") if path else literal
    m = _REST_SOURCE.match(source)
    if m is not None:
        kind = {"multivalueheader": "header", "multivaluequerystring": "querystring"}.get(
            m.group(1), m.group(1))
        if kind == "path" and path:
            return "{" + m.group(2) + "}"    # keeps a greedy parameter's "/"
        return "${request." + kind + "." + m.group(2) + "}"
    if source.startswith(("context.", "stageVariables.")):
        return "${" + source + "}"
    if source.startswith("method.request.body"):
        raise ValueError(f"requestParameters {key} = {source}: mapping from the request body "
                         "is not supported")
    raise ValueError(f"requestParameters {key} = {source!r}: the source must be "
                     "method.request.{header,querystring,path}.NAME, 'static', context.* or "
                     "stageVariables.*")


# --- HTTP APIs -------------------------------------------------------------------------

def _compile_http(params: dict) -> RequestMapping:
    header_ops, query_ops, path = [], [], None
    for key, value in params.items():
        if not isinstance(value, str):
            raise ValueError(f"requestParameters {key}: the value must be a string")
        if key == "overwrite:path":
            if not value.startswith("/"):
                raise ValueError(f"requestParameters overwrite:path = {value!r}: the path must "
                                 "start with '/' (for example /v2/$request.path.proxy)")
            PathRewrite(value)   # ValueError naming the bad variable
            path = value
            continue
        m = _HTTP_KEY.match(key)
        if m is None:
            raise ValueError(f"requestParameters {key}: the key must be "
                             "{append,overwrite,remove}:{header,querystring}.NAME or overwrite:path")
        op, kind, name = m.groups()
        op = "set" if op == "overwrite" else op
        if kind == "header":
            _check_header(name, key, _HTTP_RESERVED, _HTTP_RESERVED_PREFIXES)
            header_ops.append((op, name) if op == "remove" else (op, name, value))
        else:
            query_ops.append(QueryOp(op, name, None if op == "remove" else value))
    return RequestMapping(
        headers=HeaderTransform(header_ops) if header_ops else None,
        query=QueryMapping(query_ops, keep_query=True) if query_ops else None,
        path=path, keep_query=True, keep_headers=True)


def _check_header(name: str, key: str, reserved, prefixes=()) -> None:
    lname = name.lower()
    if lname in reserved or lname.startswith(prefixes):
        raise ValueError(f"requestParameters {key}: {name} is a reserved header; API Gateway "
                         "does not allow mapping it")


# --- the query string ------------------------------------------------------------------

class QueryOp:
    """One query-string operation: set (overwrite), append, remove, or copy (REST: a query
    parameter of the request, values kept percent-encoded as received)."""

    __slots__ = ("kind", "name", "raw_name", "value", "source", "every")

    def __init__(self, kind: str, name: str, value, every: bool = False):
        if kind not in ("set", "append", "remove", "copy"):
            raise ValueError(f"query operation {kind!r} is not set, append, remove or copy")
        if not name:
            raise ValueError("a query parameter name is empty")
        self.kind = kind
        self.name = name
        self.raw_name = _encode(name.encode())   # how the name appears in a raw query string
        self.every = every
        self.source = _encode(value.encode()) if kind == "copy" else None
        self.value = Template(value) if kind in ("set", "append") else None


class QueryMapping:
    """Builds the upstream query string from the request's, per request.

    PERF: pure Python, a few µs for a handful of operations; only integrations with query
    mappings have one."""

    __slots__ = ("ops", "keep_query")

    def __init__(self, ops: list, *, keep_query: bool):
        self.ops = tuple(ops)
        self.keep_query = keep_query

    def apply(self, ctx) -> bytes:
        """The query string to send (without "?"; b"" for none)."""
        query = ctx.query or b""
        pairs = _split(query) if self.keep_query else []
        for op in self.ops:
            if op.kind == "remove":
                pairs = [p for p in pairs if p[0] != op.raw_name]
                continue
            if op.kind == "copy":
                values = [v for n, v in _split(query) if n == op.source and v is not None]
                if values and not op.every:
                    values = values[-1:]
            else:
                rendered = op.value.render(ctx)
                # an empty value adds nothing; an overwrite with it removes (as for headers)
                values = [_encode(rendered, keep_escapes=True)] if rendered else []
            if op.kind != "append":
                pairs = [p for p in pairs if p[0] != op.raw_name]
            pairs.extend((op.raw_name, v) for v in values)
        return b"&".join(n if v is None else n + b"=" + v for n, v in pairs)

    def __repr__(self) -> str:
        return f"QueryMapping({[(o.kind, o.name) for o in self.ops]}, keep_query={self.keep_query})"


def _split(query: bytes) -> list:
    """[(raw name, raw value or None for a bare name)], empty pieces dropped."""
    out = []
    for piece in query.split(b"&"):
        if piece:
            name, eq, value = piece.partition(b"=")
            out.append((name, value if eq else None))
    return out


def _encode(value: bytes, keep_escapes: bool = False) -> bytes:
    """Percent-encode all but unreserved bytes, so a value cannot add a parameter ("&"),
    a fragment ("#") or a space. With keep_escapes, valid %XX escapes stay as they are:
    values taken from the path or the query are still percent-encoded."""
    if all(c in _UNRESERVED for c in value):
        return value
    out = bytearray()
    n = len(value)
    for i, c in enumerate(value):
        if c in _UNRESERVED:
            out.append(c)
        elif (keep_escapes and c == 0x25 and i + 2 < n and value[i + 1] in _HEX
              and value[i + 2] in _HEX):
            out.append(c)
        else:
            out += b"%%%02X" % c
    return bytes(out)
