# cython: language_level=3, boundscheck=False, wraparound=False
"""Header fields as the gateway reads them; fields.pxd is the map of this file."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.string cimport memcmp

from fastgate._core.http1 cimport ieq
from fastgate._core.pipeline cimport ascii_ieq

# methods a retry may send again (RFC 9110 section 9.2.2)
IDEMPOTENT = frozenset([b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"])


cdef inline bint lower_eq(const char* buf, const char* name, Py_ssize_t n) noexcept:
    return memcmp(buf, name, n) == 0


cdef int classify(bytes name) noexcept:
    return classify_ptr(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))


cdef int classify_ptr(const char* p, Py_ssize_t n) noexcept:
    """PERF: one C pass per header line instead of name.lower() plus dict lookups
    (bench/wrk_compare.py, scenario keepalive)."""
    cdef Py_ssize_t i
    cdef char buf[24]
    cdef char c
    if n < 2 or n > 19:
        return H_OTHER
    c = p[0] | 0x20
    if c != b'h' and c != b'c' and c != b't' and c != b'k' and c != b'p' and \
            c != b'u' and c != b'e' and c != b'x' and c != b'v' and c != b'd' and c != b'f':
        return H_OTHER
    for i in range(n):
        c = p[i]
        if b'A' <= c <= b'Z':
            c = c + 32
        buf[i] = c
    if n == 4:
        if lower_eq(buf, "host", 4):
            return H_HOST
        return H_DATE if lower_eq(buf, "date", 4) else H_OTHER
    if n == 14:
        if lower_eq(buf, "content-length", 14):
            return H_CONTENT_LENGTH
        if lower_eq(buf, "true-client-ip", 14):
            return H_TRUE_CLIENT_IP
        return H_HTTP2_SETTINGS if lower_eq(buf, "http2-settings", 14) else H_OTHER
    if n == 9:
        if lower_eq(buf, "forwarded", 9):
            return H_FORWARDED
        return H_X_REAL_IP if lower_eq(buf, "x-real-ip", 9) else H_OTHER
    if n == 19:
        return H_PROXY_AUTHORIZATION if lower_eq(buf, "proxy-authorization", 19) else H_OTHER
    if n == 17:
        if lower_eq(buf, "transfer-encoding", 17):
            return H_TRANSFER_ENCODING
        if lower_eq(buf, "x-forwarded-proto", 17):
            return H_XFP
        return H_OTHER
    if n == 10:
        if lower_eq(buf, "connection", 10):
            return H_CONNECTION
        if lower_eq(buf, "keep-alive", 10):
            return H_KEEP_ALIVE
        if lower_eq(buf, "tracestate", 10):
            return H_TRACESTATE
        return H_OTHER
    if n == 11:
        return H_TRACEPARENT if lower_eq(buf, "traceparent", 11) else H_OTHER
    if n == 16:
        if lower_eq(buf, "proxy-connection", 16):
            return H_PROXY_CONNECTION
        if lower_eq(buf, "x-forwarded-host", 16):
            return H_XFH
        if lower_eq(buf, "x-forwarded-port", 16):
            return H_XFPORT
        return H_OTHER
    if n == 2:
        return H_TE if lower_eq(buf, "te", 2) else H_OTHER
    if n == 7:
        if lower_eq(buf, "trailer", 7):
            return H_TRAILER
        if lower_eq(buf, "upgrade", 7):
            return H_UPGRADE
        return H_OTHER
    if n == 6:
        return H_EXPECT if lower_eq(buf, "expect", 6) else H_OTHER
    if n == 12:
        return H_REQUEST_ID if lower_eq(buf, "x-request-id", 12) else H_OTHER
    if n == 3:
        return H_VIA if lower_eq(buf, "via", 3) else H_OTHER
    if n == 15:
        if lower_eq(buf, "x-forwarded-for", 15):
            return H_XFF
        return H_XRAY if lower_eq(buf, "x-amzn-trace-id", 15) else H_OTHER
    return H_OTHER


def header_kind(bytes name):
    """classify() for tests."""
    return classify(name)


def named_tokens(bytes value):
    """connection_tokens() for tests."""
    return connection_tokens(value, None)


cdef bint client_cert_header(bytes name) noexcept:
    """X-Client-Cert-*: the gateway's to write (fastgate.compile.tls); a client's own are dropped."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef const char* p = PyBytes_AS_STRING(name)
    cdef const char* want = "x-client-cert-"
    if n < 14 or (p[0] | 0x20) != b'x':
        return False
    for i in range(1, 14):
        if (p[i] | 0x20 if b'A' <= p[i] <= b'Z' else p[i]) != want[i]:
            return False
    return True


cdef bint client_cert_allows(dict mtls_hosts, bytes host, object cert):
    """False when host is a mutual TLS domain (exact, else its "*." wildcard) and the
    connection has no client certificate verified by that domain's truststore."""
    cdef Py_ssize_t dot
    required = mtls_hosts.get(host)
    if required is None:
        dot = host.find(b".")
        if dot <= 0:
            return True
        required = mtls_hosts.get(b"*" + host[dot:])
        if required is None:
            return True
    return cert is not None and cert.domain == required


cdef list connection_tokens(bytes value, list into):
    return connection_tokens_ptr(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), into)


cdef list connection_tokens_ptr(const char* p, Py_ssize_t n, list into):
    """Lowercase tokens of a Connection header other than close/keep-alive/upgrade.
    PERF: one C pass; a bytes object only for a token that is kept (the usual "keep-alive"
    or "close" makes none: bench/ir_per_request.py, about 700 instructions a request less
    than split/strip/lower)."""
    cdef Py_ssize_t i = 0, start, end, k
    cdef bytes tok
    cdef char* q
    while i <= n:
        start = i
        while i < n and p[i] != b',':
            i += 1
        end = i
        i += 1
        while start < end and (p[start] == b' ' or p[start] == b'\t'):
            start += 1
        while end > start and (p[end - 1] == b' ' or p[end - 1] == b'\t'):
            end -= 1
        if end == start:
            continue
        if (end - start == 5 and ieq(p + start, b"close", 5)) or \
                (end - start == 10 and ieq(p + start, b"keep-alive", 10)) or \
                (end - start == 7 and ieq(p + start, b"upgrade", 7)):
            continue
        tok = PyBytes_FromStringAndSize(p + start, end - start)
        q = PyBytes_AS_STRING(tok)      # a new object nobody else holds yet: lowered in place
        for k in range(end - start):
            if b'A' <= q[k] <= b'Z':
                q[k] = q[k] + 32
        if into is None:
            into = []
        into.append(tok)
    return into


cdef list drop_named(list headers, list names):
    """headers without those whose lowercase name is in names (RFC 9110 section 7.6.1)."""
    cdef list out = []
    cdef tuple pair
    for pair in headers:
        if (<bytes>pair[0]).lower() not in names:
            out.append(pair)
    return out


cdef bint valid_request_id(bytes v) noexcept:
    # visible ASCII without separators that would break logs or JSON, at most 200 bytes
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v), i
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(v)
    if n == 0 or n > 200:
        return False
    for i in range(n):
        if p[i] <= 32 or p[i] >= 127 or p[i] == 34 or p[i] == 92:
            return False
    return True


cdef long long parse_content_length(bytes v) noexcept:
    """-1 when v is not a plain decimal (RFC 9110 section 8.6 allows nothing else)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(v), i
    cdef const char* p = PyBytes_AS_STRING(v)
    cdef long long r = 0
    if n == 0 or n > 18:
        return -1
    for i in range(n):
        if p[i] < 48 or p[i] > 57:   # '0'..'9'
            return -1
        r = r * 10 + (p[i] - 48)
    return r


cdef inline bint hex_digit(unsigned char c) noexcept:
    return b'0' <= c <= b'9' or b'a' <= (c | 0x20) <= b'f'


cdef bint valid_host(bytes host) noexcept:
    """host is uri-host [":" port] (RFC 9110 section 7.2, RFC 3986 section 3.2.2): an IP literal
    in brackets, or a reg-name of letters, digits, "-._~", sub-delims and %XX. Anything else
    (a space, "@", "/", "\\", a second ":") makes a Host that parsers downstream may each read
    differently; nginx refuses the space, this refuses them all. Empty is valid (RFC 9112 3.2)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(host)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(host), i = 0
    cdef unsigned char c
    if n and p[0] == b'[':
        i = 1
        while i < n and p[i] != b']':
            if not (hex_digit(p[i]) or p[i] == b':' or p[i] == b'.'):
                return False
            i += 1
        if i == n or i == 1:
            return False
        i += 1
    else:
        while i < n and p[i] != b':':
            c = p[i]
            if c == b'%':
                if i + 2 >= n or not hex_digit(p[i + 1]) or not hex_digit(p[i + 2]):
                    return False
                i += 3
                continue
            if not (b'a' <= (c | 0x20) <= b'z' or b'0' <= c <= b'9' or c == b'-' or c == b'.' or
                    c == b'_' or c == b'~' or c == b'!' or c == b'$' or c == b'&' or c == 39 or
                    c == b'(' or c == b')' or c == b'*' or c == b'+' or c == b',' or c == b';' or
                    c == b'='):
                return False
            i += 1
    if i < n:
        if p[i] != b':':
            return False
        for i in range(i + 1, n):
            if not b'0' <= p[i] <= b'9':
                return False
    return True


cdef bytes route_host_of(bytes host):
    """Lowercase host without port, for routing ("[::1]:8080" -> "[::1]"); host itself
    when it has neither (no copy)."""
    cdef const char* p = PyBytes_AS_STRING(host)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(host), end = n, i
    cdef bint upper = False
    cdef bytes out
    cdef char* q
    if n and p[0] == b'[':
        for i in range(n):
            if p[i] == b']':
                end = i + 1
                break
    else:
        for i in range(n - 1, -1, -1):
            if p[i] == b':':
                end = i
                break
    for i in range(end):
        if b'A' <= p[i] <= b'Z':
            upper = True
            break
    if end == n and not upper:
        return host
    out = PyBytes_FromStringAndSize(p, end)
    if upper:
        q = PyBytes_AS_STRING(out)     # a new object nobody else holds yet: lowered in place
        for i in range(end):
            if b'A' <= q[i] <= b'Z':
                q[i] = q[i] + 32
    return out


cdef bytes chunk_frame(bytes data):
    return b"%x\r\n%b\r\n" % (PyBytes_GET_SIZE(data), data)



cdef list without_content_encoding(list headers):
    cdef tuple pair
    return [pair for pair in headers if not ascii_ieq(<bytes>pair[0], b"content-encoding")]


cdef list header_lines(bytes block):
    """b"A: 1\\r\\nB: 2\\r\\n" -> [(b"A", b"1"), (b"B", b"2")]"""
    cdef list out = []
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            out.append((name, value))
    return out
