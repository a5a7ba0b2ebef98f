# cython: language_level=3, boundscheck=False, wraparound=False
"""Header transforms, value templates and path rewrites; see headers.pxd for the map."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdio cimport snprintf
from libc.string cimport memchr, memcmp

from fastgate._core.pipeline cimport RequestContext, Route, ascii_ieq


# --- the variable table (compile time only) ---------------------------------
# Names exactly as API Gateway spells them, without the leading "$".
_EXACT = {
    "request.path": VAR_PATH,
    "context.path": VAR_PATH,
    "context.requestId": VAR_REQUEST_ID,
    "context.identity.sourceIp": VAR_SOURCE_IP,
    "context.identity.userAgent": VAR_USER_AGENT,
    "context.requestTimeEpoch": VAR_REQUEST_TIME_EPOCH,
    "context.httpMethod": VAR_HTTP_METHOD,
    "context.protocol": VAR_PROTOCOL,
    "context.domainName": VAR_DOMAIN_NAME,
    "context.routeKey": VAR_ROUTE_KEY,
    "context.stage": VAR_STAGE,
    "context.apiId": VAR_API_ID,
    "context.resourcePath": VAR_RESOURCE_PATH,
    "context.error.message": VAR_ERROR_MESSAGE,
    "context.error.messageString": VAR_ERROR_MESSAGE_STRING,
    "context.error.responseType": VAR_ERROR_TYPE,
    # mutual TLS: the connection's verified client certificate (fastgate.compile.tls.ClientCert)
    "context.identity.clientCert.clientCertPem": VAR_CLIENT_CERT_PEM,
    "context.identity.clientCert.subjectDN": VAR_CLIENT_CERT_SUBJECT,
    "context.identity.clientCert.issuerDN": VAR_CLIENT_CERT_ISSUER,
    "context.identity.clientCert.serialNumber": VAR_CLIENT_CERT_SERIAL,
    "context.identity.clientCert.validity.notBefore": VAR_CLIENT_CERT_NOT_BEFORE,
    "context.identity.clientCert.validity.notAfter": VAR_CLIENT_CERT_NOT_AFTER,
}
# Variables that take a name argument: (prefix, kind, argument validator).
# Checked before _EXACT so "request.path.id" is a parameter, not "request.path".
_PREFIXED = (
    ("request.header.", VAR_HEADER, "header"),
    ("request.path.", VAR_PATH_PARAM, "path"),
    ("request.querystring.", VAR_QUERY, "query"),
    ("stageVariables.", VAR_STAGE_VARIABLE, "stagevar"),
    ("context.authorizer.", VAR_AUTHORIZER, "authorizer"),
    ("context.identity.", VAR_IDENTITY, "authorizer"),
)

# RFC 9110 §5.6.2 tchar.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                   b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# What an unbraced "$name" may contain; anything else ends it.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
_PARAM_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
# Framing and hop-by-hop headers belong to the proxy (RFC 9112 §6, RFC 9110 §7.6.1);
# letting a transform touch them would desynchronise message framing (smuggling).
_MANAGED = frozenset([b"connection", b"content-length", b"keep-alive", b"proxy-connection",
                      b"te", b"trailer", b"transfer-encoding", b"upgrade"])
_OPS = {"set": OP_SET, "append": OP_APPEND, "remove": OP_REMOVE, "rename": OP_RENAME}
_HEX = b"0123456789ABCDEF"


cdef bint is_token(bytes name):
    """name is a non-empty RFC 9110 token (a valid header field name)."""
    if not name:
        return False
    for c in name:
        if c not in _TCHAR:
            return False
    return True


# --- per-request lookups -----------------------------------------------------

cdef bytes _header_values(list headers, bytes lname):
    # API Gateway joins repeated headers with "," ($request.header.name).
    cdef tuple pair
    cdef bytes first = None
    cdef list more = None
    if headers is None:
        return b""
    for pair in headers:
        if ascii_ieq(<bytes>pair[0], lname):
            if first is None:
                first = <bytes>pair[1]
            elif more is None:
                more = [first, pair[1]]
            else:
                more.append(pair[1])
    if more is not None:
        return b",".join(more)
    return first if first is not None else b""


cdef bytes _query_values(bytes q, bytes name):
    # Case-sensitive name; values stay percent-encoded; repeats joined with ",".
    cdef Py_ssize_t n = PyBytes_GET_SIZE(q), nl = PyBytes_GET_SIZE(name), i = 0, j
    cdef const char* p = PyBytes_AS_STRING(q)
    cdef const char* amp
    cdef bytes value, first = None
    cdef list more = None
    while i < n:
        amp = <const char*>memchr(p + i, 38, n - i)  # '&'
        j = n if amp == NULL else amp - p
        value = None
        if j - i >= nl and memcmp(p + i, PyBytes_AS_STRING(name), nl) == 0:
            if j - i == nl:
                value = b""
            elif p[i + nl] == 61:  # '='
                value = q[i + nl + 1:j]
        if value is not None:
            if first is None:
                first = value
            elif more is None:
                more = [first, value]
            else:
                more.append(value)
        i = j + 1
    if more is not None:
        return b",".join(more)
    return first if first is not None else b""


cdef bytes _domain_name(bytes host):
    # lowercased, as routing, the access log and the echo integration see it
    cdef Py_ssize_t k
    if not host:
        return b""
    if host[0] == 91:  # '[': IPv6 literal, keep the brackets
        k = host.find(b"]")
        return (host if k < 0 else host[:k + 1]).lower()
    k = host.find(b":")
    return (host if k < 0 else host[:k]).lower()


cdef bytes _auth_value(object auth, bint identity, str name):
    """$context.authorizer.X / $context.identity.X from the access check's result."""
    if auth is None:
        return b""
    if identity:
        v = auth.identity.get(name)
    elif name == "principalId":
        v = auth.principal_id
    elif name.startswith("claims.") and auth.claims is not None:
        v = auth.claims.get(name[7:])
    else:
        v = auth.context.get(name)
    if v is None:
        return b""
    if isinstance(v, bool):
        return b"true" if v else b"false"
    return str(v).encode()


cdef bytes resolve_variable(int kind, bytes arg, RequestContext ctx):
    """The raw value of one variable for this request; b"" when absent."""
    cdef bytes v
    cdef Route route
    cdef char buf[24]  # a signed 64-bit integer in decimal: at most 20 chars + NUL
    if kind == VAR_HEADER:
        return _header_values(ctx.headers, arg)
    elif kind == VAR_PATH_PARAM:
        if ctx.path_params is None:
            return b""
        v = ctx.path_params.get(arg)
    elif kind == VAR_QUERY:
        return _query_values(ctx.query, arg) if ctx.query else b""
    elif kind == VAR_PATH:
        v = ctx.path
    elif kind == VAR_REQUEST_ID:
        v = ctx.request_id
    elif kind == VAR_SOURCE_IP:
        v = ctx.source_ip
    elif kind == VAR_REQUEST_TIME_EPOCH:
        return PyBytes_FromStringAndSize(buf, snprintf(buf, sizeof(buf), "%lld", ctx.request_time_ms))
    elif kind == VAR_HTTP_METHOD:
        v = ctx.method
    elif kind == VAR_PROTOCOL:
        return b"HTTP/1.0" if ctx.http_minor == 0 else b"HTTP/1.1"
    elif kind == VAR_DOMAIN_NAME:
        return _domain_name(ctx.host)
    elif kind == VAR_USER_AGENT:
        return _header_values(ctx.headers, b"user-agent")
    elif kind == VAR_ROUTE_KEY:
        route = ctx.route
        if route is None or route.route_key is None:
            return b""
        return route.route_key.encode()
    elif kind == VAR_STAGE:
        return ctx.api.stage_b if ctx.api is not None else b""
    elif kind == VAR_API_ID:
        return ctx.api.api_id_b if ctx.api is not None else b""
    elif kind == VAR_RESOURCE_PATH:
        route = ctx.route
        return route.resource_path.encode() if route is not None and route.resource_path else b""
    elif kind == VAR_STAGE_VARIABLE:
        if ctx.api is None:
            return b""
        sv = ctx.api.variables.get(arg.decode())
        return sv.encode() if sv is not None else b""
    elif kind == VAR_ERROR_MESSAGE:
        return ctx.error_message.encode() if ctx.error_message else b""
    elif kind == VAR_ERROR_MESSAGE_STRING:
        import orjson
        return orjson.dumps(ctx.error_message or "")
    elif kind == VAR_AUTHORIZER or kind == VAR_IDENTITY:
        return _auth_value(ctx.auth, kind == VAR_IDENTITY, arg.decode())
    elif kind == VAR_ERROR_TYPE:
        return ctx.error_type.encode() if ctx.error_type else b""
    elif VAR_CLIENT_CERT_PEM <= kind <= VAR_CLIENT_CERT_NOT_AFTER:
        cert = ctx.client_cert
        if cert is None:
            return b""
        if kind == VAR_CLIENT_CERT_SUBJECT:
            return cert.subject_dn
        if kind == VAR_CLIENT_CERT_ISSUER:
            return cert.issuer_dn
        if kind == VAR_CLIENT_CERT_SERIAL:
            return cert.serial_number
        if kind == VAR_CLIENT_CERT_NOT_BEFORE:
            return cert.not_before
        if kind == VAR_CLIENT_CERT_NOT_AFTER:
            return cert.not_after
        return cert.pem
    else:
        return b""
    return v if v is not None else b""


# --- sanitising ----------------------------------------------------------------

cdef inline bytes _clean_header(bytes v):
    # PERF: one pass over the value, no allocation when clean (bench_headers.py::test_transform_two_sets).
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(v)
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if c == 13 or c == 10 or c == 0:
            # CR/LF would split the header (response splitting); NUL truncates in C peers.
            return v.translate(None, b"\r\n\x00")
    return v


cdef inline bytes _clean(bytes v, int mode):
    if mode == SANITIZE_HEADER:
        return _clean_header(v)
    if mode == SANITIZE_PATH:
        return _clean_path(v)
    return v


cdef inline bint _path_unsafe(unsigned char c) noexcept:
    # RFC 3986 §3.3: a raw path holds no CTL, space, '?', '#' or non-ASCII byte.
    return c <= 0x20 or c >= 0x7f or c == 0x3f or c == 0x23


cdef bytes _clean_path(bytes v):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(v)
    cdef bytearray out
    for i in range(n):
        if _path_unsafe(p[i]):
            break
    else:
        return v
    out = bytearray()
    for i in range(n):
        if _path_unsafe(p[i]):
            out.append(37)  # '%'
            out.append(_HEX[p[i] >> 4])
            out.append(_HEX[p[i] & 15])
        else:
            out.append(p[i])
    return bytes(out)


# --- compiling -------------------------------------------------------------------

def _bad(str source, Py_ssize_t index, str what):
    return ValueError(f"{what} at column {index + 1} of template {source!r}")


def _arg(str kind, str name, str arg, str source, Py_ssize_t index):
    """Validates a variable's name argument and returns it as the hot path wants it."""
    if kind == "header":
        raw = arg.encode("latin-1", "replace")
        if not is_token(raw):
            raise _bad(source, index, f"invalid header name {arg!r} in variable ${name}")
        return raw.lower()
    if kind == "authorizer":
        if not arg or any(not (c.isascii() and (c.isalnum() or c in "_.:-")) for c in arg):
            raise _bad(source, index, f"invalid name {arg!r} in variable ${name}")
        return arg.encode()
    if kind == "stagevar":
        # AWS: stage variable names are [A-Za-z0-9_]
        if not arg or any(not (c.isascii() and (c.isalnum() or c == "_")) for c in arg):
            raise _bad(source, index, f"invalid stage variable name {arg!r} in variable ${name}")
        return arg.encode()
    if kind == "path":
        if not arg or any(c not in _PARAM_CHARS for c in arg):
            raise _bad(source, index, f"invalid path parameter name {arg!r} in variable ${name}")
        return arg.encode()
    # query: anything a query string key can hold between '&' and '='
    if not arg or any(c in "&=#{}" or c <= " " for c in arg):
        raise _bad(source, index, f"invalid query string name {arg!r} in variable ${name}")
    return arg.encode()


def _lookup(str name, str source, Py_ssize_t index, bint braced):
    """(kind, arg bytes, characters of `name` used) for the variable at source[index]."""
    cdef str trimmed
    if name in _EXACT:
        # before the prefixes: "context.identity.sourceIp" is a fixed name, not an identity key
        return _EXACT[name], None, len(name)
    for prefix, kind, argkind in _PREFIXED:
        if name.startswith(prefix):
            arg = name[len(prefix):]
            if not braced:
                # "$request.header.X-Foo-$x" and "...X-Foo." end the name before the punctuation
                arg = arg.rstrip(".-")
            if arg:
                return kind, _arg(argkind, prefix + arg, arg, source, index), len(prefix) + len(arg)
    trimmed = name
    if not braced:
        # fixed names hold no '-': "$context.requestId-x" is the id then "-x"
        trimmed = name.split("-", 1)[0].rstrip(".")
    kind = _EXACT.get(trimmed)
    if kind is None:
        raise _bad(source, index, f"unknown variable ${trimmed or name}")
    return kind, None, len(trimmed)


cdef class _Part:
    def __repr__(self):
        return f"<_Part {self.kind} {self.arg!r}>"


cdef _Part _part(int kind, bytes arg):
    cdef _Part p = _Part.__new__(_Part)
    p.kind = kind
    p.arg = arg
    return p


cdef class Template:
    def __init__(self, str source, *, bint body=False):
        """Compiles `source`; raises ValueError naming the bad variable and its column.

        body=True makes a body template (mock integrations): CR/LF allowed in the
        text and kept in values, since a body has no lines to split.
        """
        self._compile(source, False, body)

    cdef _compile(self, str source, bint path_mode, bint body=False):
        cdef Py_ssize_t i = 0, n = len(source), j, end
        cdef list parts = []      # (kind, arg); a literal's arg is its str
        cdef list literal = []
        self.source = source
        self._mode = SANITIZE_PATH if path_mode else SANITIZE_NONE if body else SANITIZE_HEADER
        while i < n:
            c = source[i]
            if c == "$":
                nxt = source[i + 1] if i + 1 < n else ""
                if nxt == "$":          # "$$" is a literal "$"
                    literal.append("$")
                    i += 2
                    continue
                if nxt == "{":
                    end = source.find("}", i + 2)
                    if end < 0:
                        raise _bad(source, i, "unterminated ${")
                    kind, arg, _ = _lookup(source[i + 2:end], source, i, True)
                    parts.append((VAR_LITERAL, "".join(literal)))
                    literal = []
                    parts.append((kind, arg))
                    i = end + 1
                    continue
                if nxt.isascii() and nxt.isalpha():
                    j = i + 1
                    while j < n and source[j] in _NAME_CHARS:
                        j += 1
                    kind, arg, used = _lookup(source[i + 1:j], source, i, False)
                    parts.append((VAR_LITERAL, "".join(literal)))
                    literal = []
                    parts.append((kind, arg))
                    i += 1 + used
                    continue
                literal.append("$")     # "$5", "$ ", trailing "$": plain text
                i += 1
                continue
            if path_mode and c == "{":
                end = source.find("}", i + 1)
                if end < 0:
                    raise _bad(source, i, "unterminated {")
                name = source[i + 1:end]
                if name.endswith("+"):  # greedy {proxy+} as in the route
                    name = name[:len(name) - 1]
                parts.append((VAR_LITERAL, "".join(literal)))
                literal = []
                parts.append((VAR_PATH_PARAM, _arg("path", "{" + name + "}", name, source, i)))
                i = end + 1
                continue
            if c in "\r\n\x00" and not body:
                raise _bad(source, i, "CR, LF or NUL in literal text")
            if path_mode and c in "?#}":
                raise _bad(source, i, f"{c!r} in a path template")
            literal.append(c)
            i += 1
        parts.append((VAR_LITERAL, "".join(literal)))

        cdef list compiled = []
        for kind, arg in parts:
            if kind == VAR_LITERAL:
                if arg:
                    raw = arg.encode()
                    compiled.append(_part(VAR_LITERAL, _clean_path(raw) if path_mode else raw))
            else:
                compiled.append(_part(kind, arg))
        self._parts = compiled
        self.is_static = all((<_Part>p).kind == VAR_LITERAL for p in compiled)
        if self.is_static:
            self._static = b"".join([(<_Part>p).arg for p in compiled])

    cpdef bytes render(self, RequestContext ctx):
        """The value for this request; never contains CR, LF or NUL."""
        cdef _Part part
        cdef bytes v
        cdef list pieces
        if self.is_static:
            return self._static
        # PERF: a lone variable skips the join (bench_headers.py::test_transform_two_sets).
        if len(self._parts) == 1:
            part = <_Part>self._parts[0]
            v = resolve_variable(part.kind, part.arg, ctx)
            return _clean(v, self._mode)
        pieces = []
        for part in self._parts:
            if part.kind == VAR_LITERAL:
                pieces.append(part.arg)
            else:
                v = resolve_variable(part.kind, part.arg, ctx)
                pieces.append(_clean(v, self._mode))
        return b"".join(pieces)

    def __repr__(self):
        return f"Template({self.source!r})"


cdef class _Op:
    pass


def _header_name(object name, Py_ssize_t index, str role):
    if not isinstance(name, str):
        raise ValueError(f"op {index}: {role} must be a string, got {name!r}")
    raw = name.encode("latin-1", "replace")
    if not is_token(raw):
        raise ValueError(f"op {index}: invalid header name {name!r}")
    if raw.lower() in _MANAGED:
        raise ValueError(f"op {index}: header {name!r} is managed by the proxy and cannot be transformed")
    return raw


cdef class HeaderTransform:
    def __init__(self, list ops):
        """ops: [("set"|"append", name, template), ("remove", name), ("rename", old, new)]."""
        cdef _Op op
        cdef list compiled = []
        cdef list normal = []
        for index, spec in enumerate(ops):
            if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in _OPS:
                raise ValueError(f"op {index}: expected (set|append|remove|rename, ...), got {spec!r}")
            spec = tuple(spec)
            op = _Op.__new__(_Op)
            op.kind = _OPS[spec[0]]
            want = 2 if op.kind == OP_REMOVE else 3
            if len(spec) != want:
                raise ValueError(f"op {index}: {spec[0]!r} takes {want - 1} arguments, got {spec!r}")
            op.name = _header_name(spec[1], index, "name")
            op.lname = op.name.lower()
            if op.kind == OP_RENAME:
                op.new_name = _header_name(spec[2], index, "new name")
            elif op.kind != OP_REMOVE:
                if not isinstance(spec[2], str):
                    raise ValueError(f"op {index}: value must be a template string, got {spec[2]!r}")
                try:
                    op.value = Template(spec[2])
                except ValueError as exc:
                    raise ValueError(f"op {index} ({spec[0]} {spec[1]}): {exc}") from None
                if op.value.is_static and not op.value._static:
                    raise ValueError(f"op {index}: empty value for {spec[1]!r}; use ('remove', name)")
            compiled.append(op)
            normal.append(spec)
        self._ops = compiled
        self.ops = tuple(normal)

    cpdef list apply(self, list headers, RequestContext ctx):
        """A new [(name, value)] list: ops applied in order, names matched ignoring case."""
        cdef list out = list(headers)
        cdef _Op op
        cdef tuple pair
        cdef Py_ssize_t i, n, first
        cdef bytes v
        for op in self._ops:
            if op.kind == OP_SET:
                v = op.value.render(ctx)
                first = -1
                i = 0
                n = len(out)
                while i < n:
                    pair = out[i]
                    if ascii_ieq(<bytes>pair[0], op.lname):
                        if first < 0:
                            first = i
                            i += 1
                        else:
                            del out[i]
                            n -= 1
                    else:
                        i += 1
                # An empty result removes the header: a client-sent value must not survive
                # a `set` whose source (header, claim, parameter) was missing.
                if PyBytes_GET_SIZE(v) == 0:
                    if first >= 0:
                        del out[first]
                elif first >= 0:
                    out[first] = (op.name, v)
                else:
                    out.append((op.name, v))
            elif op.kind == OP_APPEND:
                v = op.value.render(ctx)
                if PyBytes_GET_SIZE(v) != 0:
                    out.append((op.name, v))
            elif op.kind == OP_REMOVE:
                i = len(out) - 1
                while i >= 0:
                    pair = out[i]
                    if ascii_ieq(<bytes>pair[0], op.lname):
                        del out[i]
                    i -= 1
            else:  # OP_RENAME
                for i in range(len(out)):
                    pair = out[i]
                    if ascii_ieq(<bytes>pair[0], op.lname):
                        out[i] = (op.new_name, pair[1])
        return out

    def __repr__(self):
        return f"HeaderTransform({list(self.ops)!r})"


cdef class PathRewrite:
    def __init__(self, str template=None, str strip_prefix=None):
        """Exactly one of: template ("/v2/items/{id}/{proxy}", $-variables allowed) or strip_prefix."""
        if (template is None) == (strip_prefix is None):
            raise ValueError("PathRewrite needs exactly one of template or strip_prefix")
        self.template = template
        if template is not None:
            if not template.startswith("/"):
                raise ValueError(f"path template must start with '/': {template!r}")
            self._template = Template.__new__(Template)
            self._template._compile(template, True)
        else:
            prefix = strip_prefix.rstrip("/")
            if not strip_prefix.startswith("/") or not prefix:
                raise ValueError(f"strip_prefix must start with '/' and not be '/': {strip_prefix!r}")
            if any(c in "?#{}$" or c <= " " or c > "~" for c in prefix):
                raise ValueError(f"strip_prefix must be a plain ASCII path: {strip_prefix!r}")
            self.strip_prefix = prefix.encode()
            self._prefix_len = len(self.strip_prefix)

    cpdef bytes apply(self, RequestContext ctx):
        """The raw path to send upstream (no query); ctx.path when a prefix does not match."""
        cdef bytes path = ctx.path
        cdef Py_ssize_t n, k = self._prefix_len
        if self._template is not None:
            return self._template.render(ctx)
        n = PyBytes_GET_SIZE(path)
        # Match whole segments only: "/api" strips "/api" and "/api/x", never "/apix".
        if n >= k and memcmp(PyBytes_AS_STRING(path), PyBytes_AS_STRING(self.strip_prefix), k) == 0:
            if n == k:
                return b"/"
            if PyBytes_AS_STRING(path)[k] == 47:  # '/'
                return path[k:]
        return path

    def __repr__(self):
        if self.template is not None:
            return f"PathRewrite(template={self.template!r})"
        return f"PathRewrite(strip_prefix={self.strip_prefix.decode()!r})"
