"""HTTP APIs' response parameter mapping: an integration's ``responseParameters``, chosen by
the status code the integration answered, change the response before the client gets it::

    "responseParameters": {
        "200": {"overwrite:header.Cache-Control": "no-store",
                "append:header.X-Trace": "$response.header.X-Upstream-Id",
                "remove:header.Server": "''"},
        "404": {"overwrite:statuscode": "200",
                "overwrite:header.X-Missing": "$response.body.error.code"}
    }

A value is static text, or text with ``$response.header.NAME`` (the integration response's
header, its values joined with ","), ``$response.body.JSONPATH`` (a member of its JSON body;
``$response.body`` the whole body), ``$context.*``, ``$stageVariables.*`` or ``$request.*``
(as in request mapping), each also as ``${...}``. Operations run in the order given; an
empty value adds nothing and an overwrite with it removes the header, as request mapping
does. ``overwrite:statuscode`` takes effect last.

The data plane calls ``ResponseMapping.wants(status)`` when a proxied response's head
arrives (only a mapped status makes the proxy hold the response whole, as AWS holds every
HTTP API response) and ``apply(ctx, status, headers, body)`` on the whole response, proxied
or a function's (fastgate/_core/respond.pyx: Responder.respond_integration).
"""

from __future__ import annotations

import re

import orjson

from fastgate._core.headers import Template
from fastgate.phases.vtl import jsonpath

_KEY = re.compile(r"^(overwrite|append|remove):header\.([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
# $response.header.X / $response.body[.path], bare or braced
_RESPONSE_VAR = re.compile(r"\$\{response\.(header|body)((?:\.|\[)[^}]*)?\}"
                           r"|\$response\.(header|body)((?:\.[A-Za-z0-9_-]+|\[[^\]]*\])*)")
# the response's own framing, which the gateway writes (RFC 9112 section 6): never mapped
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive",
                      b"te", b"trailer", b"upgrade", b"proxy-connection"))
_RESERVED = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive", "te",
                       "trailer", "upgrade", "proxy-connection"))


class _Value:
    """One value: its parts are str literals, Templates (request-side variables) and
    ("header", name) / ("body", path) references to the integration's response."""

    __slots__ = ("parts", "reads_body")

    def __init__(self, source: str, where: str):
        parts, pos = [], 0
        self.reads_body = False
        for m in _RESPONSE_VAR.finditer(source):
            if m.start() > pos:
                parts.append(_template(source[pos:m.start()], where))
            kind = m.group(1) or m.group(3)
            rest = (m.group(2) if m.group(1) else m.group(4)) or ""
            if kind == "header":
                if not rest.startswith(".") or len(rest) < 2:
                    raise ValueError(f"{where}: $response.header needs a header name")
                parts.append(("header", rest[1:].lower().encode("latin-1")))
            else:
                self.reads_body = True
                path = "$" + rest
                jsonpath({}, path)    # MappingError (a ValueError) on a path it cannot read
                parts.append(("body", path))
            pos = m.end()
        if pos < len(source):
            parts.append(_template(source[pos:], where))
        self.parts = tuple(parts)

    def render(self, ctx, headers: list, body: bytes, parsed: list) -> bytes:
        out = []
        for part in self.parts:
            if isinstance(part, bytes):
                out.append(part)
            elif isinstance(part, Template):
                out.append(part.render(ctx))
            elif part[0] == "header":
                out.append(b",".join(v for n, v in headers if n.lower() == part[1]))
            else:
                out.append(_body_value(body, part[1], parsed))
        return b"".join(out)


def _template(text: str, where: str):
    if "$" not in text:
        return text.encode("utf-8")
    try:
        return Template(text)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _body_value(body: bytes, path: str, parsed: list) -> bytes:
    if path == "$":
        return body
    if not parsed:
        try:
            parsed.append(orjson.loads(body))
        except orjson.JSONDecodeError:
            parsed.append(None)
    value = jsonpath(parsed[0], path) if parsed[0] is not None else None
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value)


class ResponseMapping:
    __slots__ = ("by_status",)

    def __init__(self, params: dict, where: str = "responseParameters"):
        """params: {"200": {key: value}}; ValueError naming the bad status, key or value."""
        self.by_status: dict[int, tuple] = {}
        for status, mapping in params.items():
            if not re.fullmatch(r"[1-5]\d\d", str(status)):
                raise ValueError(f"{where}: {status!r} is not a status code 100-599")
            ops, new_status = [], None
            for key, value in (mapping or {}).items():
                at = f"{where}.{status}.{key}"
                if not isinstance(value, str):
                    raise ValueError(f"{at}: the value must be a string")
                if key == "overwrite:statuscode":
                    new_status = _Value(value, at)
                    continue
                m = _KEY.match(key)
                if m is None:
                    raise ValueError(f"{at}: the key must be overwrite:statuscode or "
                                     "{append,overwrite,remove}:header.NAME")
                if m.group(2).lower() in _RESERVED:
                    raise ValueError(f"{at}: {m.group(2)} frames the response; the gateway writes it")
                ops.append((m.group(1), m.group(2).encode("latin-1"), m.group(2).lower().encode("latin-1"),
                            None if m.group(1) == "remove" else _Value(value, at)))
            self.by_status[int(status)] = (tuple(ops), new_status)

    def wants(self, int_status: int) -> bool:
        return int_status in self.by_status

    def apply(self, ctx, status: int, headers: list, body: bytes) -> tuple:
        """(status, headers) for the client: headers without the integration's framing,
        mapped by the parameters of `status`, if it has any."""
        named = set()      # the fields a Connection header names belong to the hop too
        for n, v in headers:
            if n.lower() == b"connection":
                named.update(t.strip().lower() for t in v.split(b","))
        headers = [(n, v) for n, v in headers if n.lower() not in _FRAMING and n.lower() not in named]
        chosen = self.by_status.get(status)
        if chosen is None:
            return status, headers
        ops, new_status = chosen
        source = list(headers)     # values read the integration's response, not the mapped one
        parsed: list = []
        for op, name, lname, value in ops:
            rendered = value.render(ctx, source, body, parsed) if value is not None else b""
            if op != "append":
                headers = [(n, v) for n, v in headers if n.lower() != lname]
            if rendered and op != "remove":
                headers.append((name, rendered))
        if new_status is not None:
            code = new_status.render(ctx, source, body, parsed).strip()
            if code.isdigit() and 100 <= int(code) <= 599:
                status = int(code)
            else:
                ctx.error_message = f"overwrite:statuscode rendered {code!r}, not a status code"
        return status, headers
