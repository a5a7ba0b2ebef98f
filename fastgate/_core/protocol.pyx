# cython: language_level=3, boundscheck=False, wraparound=False
"""The HTTP/1.1 hot path; protocol.pxd is the map of this file."""

import asyncio
import errno
import ipaddress
import os
import socket
import struct
from email.utils import formatdate
from http import HTTPStatus

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdio cimport snprintf
from libc.string cimport memcmp

import orjson

from fastgate.compile.tls import client_cert_of

from fastgate._core.pipeline cimport (
    RequestContext, Route, monotonic, monotonic_coarse, epoch_ms, ascii_ieq,
    ACTION_CONTINUE, ACTION_RESPOND, ACTION_WAIT,
    INTEGRATION_HTTP, INTEGRATION_MOCK, INTEGRATION_ECHO, INTEGRATION_FUNCTION,
    PHASE_ACCESS, PHASE_THROTTLE, PHASE_VALIDATE, PHASE_REQUEST_TRANSFORM, PHASE_CACHE, PHASE_INTEGRATION,
)
from fastgate._core.tracing cimport Tracer, Trace, TRACE_LINE_MAX
from fastgate._core.tail cimport record_finished
from fastgate._core.cache cimport SharedCache, RouteCache, CACHE_BYPASS, CACHE_FORBIDDEN, \
    CACHE_REFRESH, CACHE_LOOKUP_WARN
from fastgate._core.cache import WARNING_HEADER as CACHE_WARNING
from fastgate._core.metrics cimport throttle_level_of, CACHE_RESULT_MISS, CACHE_RESULT_HIT, \
    CACHE_RESULT_REDIS_HIT
from fastgate._core.execlog cimport ExecutionLog
from fastgate._core.throttle cimport (
    Limiter, ThrottleResult, LIMIT_CLIENT_IP, LIMIT_HEADER, LIMIT_CLAIM, claim_key,
    monotonic_ns as throttle_now_ns, epoch_s as throttle_epoch_s,
)
from fastgate._core.keys cimport KeyGate, headers_for, KEY_ALLOW, KEY_INVALID, KEY_THROTTLED
from libc.stdint cimport int64_t
from fastgate._core.upstream cimport Target, UpstreamGroup
from fastgate._core.metrics cimport SharedMetrics
from fastgate._core.accesslog cimport AccessLog
from fastgate._core.headers cimport HeaderTransform, PathRewrite, Template
from fastgate._core.paths cimport canonical_path, lenient_path, refusal_reason
from fastgate._core.http1 cimport (
    Http1Parser, EV_NEED_MORE, EV_HEAD_COMPLETE, EV_BODY, EV_MESSAGE_COMPLETE, EV_UPGRADE, EV_ERROR,
    LIMIT_URL, LIMIT_HEADERS, LIMIT_HEAD,
)
from libc.string cimport memcpy
from libc.stdlib cimport realloc, free


# ---------------------------------------------------------------------------
# Gateway responses: every error the gateway answers itself, by type, with
# Amazon API Gateway's default status and message. Snapshot.responses starts
# from this table; the control plane may override entries per API.
GATEWAY_RESPONSES = {
    # type: (status, message, x-amzn-ErrorType). AWS's own types first, then the
    # gateway's protocol-level ones (answered before any API is known, so only
    # the gateway-wide table applies to them).
    "ACCESS_DENIED": (403, "Forbidden", "AccessDeniedException"),
    "API_CONFIGURATION_ERROR": (500, "Internal server error", "InternalServerErrorException"),
    # AWS answers a failed Lambda authorizer with {"message": null}
    "AUTHORIZER_CONFIGURATION_ERROR": (500, None, "AuthorizerConfigurationException"),
    "AUTHORIZER_FAILURE": (500, "Internal server error", "InternalServerErrorException"),
    "BAD_REQUEST_PARAMETERS": (400, "Bad Request", "BadRequestException"),
    "BAD_REQUEST_BODY": (400, "Invalid request body", "BadRequestException"),
    "EXPIRED_TOKEN": (403, "Signature expired", "InvalidSignatureException"),
    "INTEGRATION_FAILURE": (502, "Internal server error", "InternalServerErrorException"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out", "InternalServerErrorException"),
    "INVALID_API_KEY": (403, "Forbidden", "ForbiddenException"),
    "INVALID_SIGNATURE": (403, "The request signature we calculated does not match the signature you provided.",
                          "InvalidSignatureException"),
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token", "MissingAuthenticationTokenException"),
    "QUOTA_EXCEEDED": (429, "Limit Exceeded", "LimitExceededException"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "RequestTooLongException"),
    "RESOURCE_NOT_FOUND": (404, "Not Found", "NotFoundException"),
    "THROTTLED": (429, "Too Many Requests", "TooManyRequestsException"),
    "UNAUTHORIZED": (401, "Unauthorized", "UnauthorizedException"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported Media Type", "UnsupportedMediaTypeException"),
    "WAF_FILTERED": (403, "Forbidden", "ForbiddenException"),
    "DEFAULT_4XX": (400, "Bad Request", "BadRequestException"),
    "DEFAULT_5XX": (500, "Internal server error", "InternalServerErrorException"),
    # fastgate's own (protocol errors, before routing; HTTP API routing; upstream groups)
    "BAD_REQUEST": (400, "Bad Request", "BadRequestException"),
    "MISSING_HOST": (400, "Bad Request", "BadRequestException"),
    "BAD_FRAMING": (400, "Bad Request", "BadRequestException"),
    "NOT_FOUND": (404, "Not Found", "NotFoundException"),
    "DOMAIN_NOT_MAPPED": (403, "Forbidden", "ForbiddenException"),
    # a mutual TLS domain without a client certificate verified for it (AWS answers 403 too)
    "CLIENT_CERT_REQUIRED": (403, "Forbidden", "ForbiddenException"),
    "METHOD_NOT_ALLOWED": (405, "Method Not Allowed", "MethodNotAllowedException"),
    "REQUEST_TIMEOUT": (408, "Request Timeout", "RequestTimeoutException"),
    "URI_TOO_LONG": (414, "Request-URI Too Long", "RequestUriTooLongException"),
    "HEADERS_TOO_LARGE": (431, "Request Header Fields Too Large", "RequestHeaderFieldsTooLargeException"),
    "NO_HEALTHY_UPSTREAM": (503, "Service Unavailable", "ServiceUnavailableException"),
}


cdef list without_content_encoding(list headers):
    cdef tuple pair
    return [pair for pair in headers if not ascii_ieq(<bytes>pair[0], b"content-encoding")]


def default_gateway_responses():
    """type -> GatewayResponse with AWS's defaults: the table an API starts from."""
    return {t: GatewayResponse(t, v[0], v[1], v[2].encode()) for t, v in GATEWAY_RESPONSES.items()}


cdef const char* HEX = "0123456789abcdef"

cdef dict STATUS_LINES = {}
for _s in HTTPStatus:
    STATUS_LINES[_s.value] = b"HTTP/1.1 %d %s\r\n" % (_s.value, _s.phrase.encode())

cdef bytes status_line(int status, bytes reason):
    cdef bytes line
    if reason is None or not reason:
        line = STATUS_LINES.get(status)
        if line is not None:
            return line
        return b"HTTP/1.1 %d Unknown\r\n" % status
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)


cdef bytes LINGER_RESET = struct.pack("ii", 1, 0)   # struct linger {l_onoff=1, l_linger=0}

cdef frozenset IDEMPOTENT = frozenset([b"GET", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"])


# ---------------------------------------------------------------------------
# Header classification: which header lines the gateway owns or must not forward.

cdef enum HeaderKind:
    H_OTHER = 0
    H_HOST
    H_CONTENT_LENGTH
    H_TRANSFER_ENCODING
    H_CONNECTION
    H_KEEP_ALIVE
    H_PROXY_CONNECTION
    H_TE
    H_TRAILER
    H_UPGRADE
    H_EXPECT
    H_REQUEST_ID
    H_VIA
    H_XFF
    H_XFP
    H_XFH
    H_XFPORT
    H_DATE
    H_TRACEPARENT                 # W3C trace context: the gateway writes its own when tracing
    H_TRACESTATE
    H_XRAY                        # X-Amzn-Trace-Id
    H_PROXY_AUTHORIZATION         # credentials meant for this proxy: never forwarded
    H_HTTP2_SETTINGS              # of an h2c upgrade (RFC 7540 section 3.2.1): hop-by-hop, dropped
    H_FORWARDED                   # RFC 7239 Forwarded, X-Real-IP, True-Client-IP: claims about the
    H_X_REAL_IP                   # client's address, forwarded only from a trusted proxy (as
    H_TRUE_CLIENT_IP              # X-Forwarded-For is kept only from one)


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


cdef inline bint client_cert_header(bytes name) noexcept:
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
    """Lowercase tokens of a Connection header other than close/keep-alive/upgrade."""
    cdef bytes tok
    for tok in value.split(b","):
        tok = tok.strip().lower()
        if tok and tok != b"close" and tok != b"keep-alive" and tok != b"upgrade":
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


# A growable C byte buffer: heads are assembled in one, and a connection's corked output
# gathers in another.
cdef struct Buf:
    char* p
    Py_ssize_t len
    Py_ssize_t cap


cdef int buf_put(Buf* b, const char* p, Py_ssize_t n) except -1:
    cdef Py_ssize_t need = b.len + n, cap
    cdef char* grown
    if need > b.cap:
        cap = need * 2 if need > 2048 else 4096
        grown = <char*>realloc(b.p, cap)
        if grown == NULL:
            raise MemoryError()
        b.p = grown
        b.cap = cap
    memcpy(b.p + b.len, p, n)
    b.len = need
    return 0


# PERF: message heads are assembled in one C buffer shared by the whole worker (heads are
# built synchronously, never interleaved) and leave as one bytes object: no bytearray
# regrowth per header line (bench/wrk_compare.py, scenario keepalive).
cdef Buf OUT_BUF


cdef inline void out_reset() noexcept:
    OUT_BUF.len = 0


cdef inline int out_put(const char* p, Py_ssize_t n) except -1:
    return buf_put(&OUT_BUF, p, n)


cdef inline int out_bytes(bytes b) except -1:
    return buf_put(&OUT_BUF, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))


cdef inline bytes out_take():
    return PyBytes_FromStringAndSize(OUT_BUF.p, OUT_BUF.len)


# PERF: while a read callback runs, what it writes to the client (the response head from
# OUT_BUF, the body straight from the upstream parser's buffer) gathers in this one buffer
# and leaves in one write: no bytes object per part, no list, no join
# (bench/wrk_compare.py, scenario keepalive). One connection is corked at a time (the
# loop runs one callback at a time); CORK_OWNER is it.
cdef Buf CORK_BUF
cdef ClientConnection CORK_OWNER = None


cdef inline bint forwarded_response_header(int kind) noexcept:
    # hop-by-hop (RFC 9110 section 7.6.1) and framing headers are the gateway's to write
    return not (kind == H_TRANSFER_ENCODING or kind == H_CONNECTION or kind == H_KEEP_ALIVE or
                kind == H_PROXY_CONNECTION or kind == H_TE or kind == H_TRAILER or kind == H_UPGRADE)


cdef inline bytes chunk_frame(bytes data):
    return b"%x\r\n%b\r\n" % (PyBytes_GET_SIZE(data), data)


# ---------------------------------------------------------------------------

cdef class Snapshot:
    def __init__(self, *, router, list routes, list groups=None, list route_series=None,
                 int unmatched_series=-1, access_log=None, metrics=None, list trusted=None,
                 via="fastgate", dict responses=None, Py_ssize_t max_url=8192,
                 Py_ssize_t max_head=32768, int max_headers=100, long long max_body=10485760,
                 double header_timeout=10.0, double body_timeout=60.0, double min_body_rate=500.0,
                 double body_rate_grace=20.0, double body_deadline=0.0,
                 double keepalive_timeout=75.0, int keepalive_requests=10000, source=None,
                 dict host_mounts=None, dict api_mounts=None, list any_mounts=None, list stages=None,
                 Tracer tracer=None, redis=None, execution_log=None, cache=None,
                 tls=None, cache_redis=None, double rebuild_at_s=0.0):
        self.router = router
        self.routes = routes
        self.groups = groups if groups is not None else []
        self.route_series = route_series if route_series is not None else [-1] * len(routes)
        self.unmatched_series = unmatched_series
        self.access_log = access_log
        self.metrics = metrics
        self.trusted = trusted if trusted is not None else []
        self.via = (b"1.1 " + via.encode()) if via else None
        self.responses = default_gateway_responses()
        if responses:
            self.responses.update(responses)
        self.host_mounts = host_mounts if host_mounts is not None else {}
        self.api_mounts = api_mounts if api_mounts is not None else {}
        self.any_mounts = any_mounts if any_mounts is not None else []
        self.has_mounts = bool(self.host_mounts or self.api_mounts or self.any_mounts)
        self.stages = stages if stages is not None else []
        self.tracer = tracer
        self.redis = redis
        self.execution_log = execution_log
        self.cache = cache
        self.cache_redis = cache_redis if cache is not None else None
        self.tls = tls
        self.mtls_hosts = tls.mtls_hosts if tls is not None and tls.mtls_hosts else None
        self.max_url = max_url
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.body_rate_grace = body_rate_grace
        self.body_deadline = body_deadline
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_requests = keepalive_requests
        self.source = source
        self.rebuild_at_s = rebuild_at_s

    def retire(self):
        """Called when a newer snapshot replaced this one: pool no more connections."""
        for g in self.groups:
            for t in (<UpstreamGroup>g).targets:
                (<Target>t).close_idle()


cdef class Worker:
    def __init__(self, Snapshot snapshot, loop, int worker_id=0):
        self.snapshot = snapshot
        self.loop = loop
        self.connections = set()
        self.worker_id = worker_id
        self.open_slot = -1
        self.own_slot = -1
        self.reseed()
        self.date = formatdate(usegmt=True).encode()

    def reseed(self):
        """New random request-id prefix; call in every process after fork."""
        cdef bytes r = os.urandom(8)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(r)
        # 8-4-4 groups of a version-4 UUID; the counter fills the last two groups
        snprintf(self.rid_prefix, 20, "%02x%02x%02x%02x-%02x%02x-4%01x%02x-",
                 p[0], p[1], p[2], p[3], p[4], p[5], p[6] & 15, p[7])
        self.rid_counter = 0

    cdef bytes new_request_id(self):
        # PERF: hex digits by hand, not snprintf (bench/wrk_compare.py, scenario keepalive)
        cdef char buf[36]
        cdef unsigned long long c = self.rid_counter
        cdef unsigned long long v
        cdef int i
        self.rid_counter += 1
        memcpy(buf, self.rid_prefix, 19)            # "xxxxxxxx-xxxx-4xxx-"
        v = 0x8000 | ((c >> 48) & 0x3fff)           # RFC 4122 variant bits
        for i in range(3, -1, -1):
            buf[19 + i] = HEX[v & 15]
            v >>= 4
        buf[23] = b'-'
        v = c & 0xffffffffffffULL
        for i in range(11, -1, -1):
            buf[24 + i] = HEX[v & 15]
            v >>= 4
        return PyBytes_FromStringAndSize(buf, 36)

    def request_id(self):
        return self.new_request_id()

    def start(self):
        self.tick_handle = self.loop.call_later(TICK_MS / 1000.0, self._tick)

    def _tick(self):
        self.tick()
        if not (self.draining and not self.connections):
            self.tick_handle = self.loop.call_later(TICK_MS / 1000.0, self._tick)

    cdef void tick(self):
        cdef double now = monotonic()
        cdef ClientConnection c
        self.ticks += 1
        if self.ticks % 10 == 0:
            self.date = formatdate(usegmt=True).encode()
            if self.snapshot.access_log is not None:
                self.snapshot.access_log.flush()
            if self.snapshot.execution_log is not None:
                self.snapshot.execution_log.flush()
        if self.ticks % 5 == 0:
            self.refresh_health()
        for c in list(self.connections):
            if c.deadline_kind != DL_NONE and (c.deadline <= now or
                                               (c.total_deadline > 0 and c.total_deadline <= now)):
                c.check_timeout(now)

    def refresh_health(self):
        """Copy the admin process's active health-check verdicts into this worker's targets."""
        cdef SharedMetrics m = self.snapshot.metrics
        if m is None:
            return
        for g in self.snapshot.groups:
            for t in (<UpstreamGroup>g).targets:
                if (<Target>t).health_slot >= 0:
                    (<Target>t).healthy = m.gauge_get((<Target>t).health_slot) != 0

    def swap(self, Snapshot snapshot):
        """Publish a new snapshot; requests in flight keep the one they started with."""
        old, self.snapshot = self.snapshot, snapshot
        if old is not None and old is not snapshot:
            if old.access_log is not None and old.access_log is not snapshot.access_log:
                old.access_log.close()
            if old.execution_log is not None and old.execution_log is not snapshot.execution_log:
                old.execution_log.close()
            if old.tracer is not None and old.tracer is not snapshot.tracer:
                old.tracer.close(0)     # its thread still exports what is queued
            old.retire()
        self.refresh_health()

    def drain(self, bint close_idle=True):
        """Stop taking requests: every connection closes after its next response (which says
        Connection: close). Idle ones close now, unless close_idle is False: on a binary
        upgrade a client may be sending on one this very moment, and it should get an answer,
        not a reset."""
        self.draining = True
        if close_idle:
            for c in list(self.connections):
                (<ClientConnection>c).shutdown()

    def close_all(self):
        for c in list(self.connections):
            (<ClientConnection>c).abort()

    def connection_count(self):
        return len(self.connections)

    def protocol_factory(self, int local_port):
        def factory():
            return ClientConnection(self, local_port)
        return factory


# Protocol-level 4xx after which the connection closes (framing may be in doubt).
cdef tuple compressed_whole(RequestContext ctx, list headers, bytes body):
    """A gateway-made body (mock, function) compressed when the API and client agree."""
    from fastgate.phases.compression import choose_encoding, compress_body, should_compress
    cdef tuple pair
    ctype = None
    for pair in headers:
        if (<bytes>pair[0]).lower() == b"content-type":
            ctype = pair[1]
        elif (<bytes>pair[0]).lower() == b"content-encoding":
            return body, headers
    enc = choose_encoding(ctx.header(b"accept-encoding"))
    if enc is None or not should_compress(ctype, len(body), ctx.api.min_compress, False):
        return body, headers
    headers = headers + [(b"Content-Encoding", enc.encode()), (b"Vary", b"Accept-Encoding")]
    return compress_body(enc, body), headers


cdef list header_lines(bytes block):
    """b"A: 1\\r\\nB: 2\\r\\n" -> [(b"A", b"1"), (b"B", b"2")]"""
    cdef list out = []
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            out.append((name, value))
    return out


cdef bytes cache_head_of(list headers):
    """The header lines a cache entry keeps: not Date (a hit gets its own) and not
    Content-Length (respond() writes the hit's; two would be a response a proxy rejects)."""
    cdef tuple pair
    cdef int kind
    cdef list out = []
    for pair in headers:
        kind = classify(<bytes>pair[0])
        if kind != H_DATE and kind != H_CONTENT_LENGTH:
            out.append(<bytes>pair[0] + b": " + <bytes>pair[1] + b"\r\n")
    return b"".join(out)


cdef frozenset PROTOCOL_ERRORS = frozenset(["BAD_REQUEST", "MISSING_HOST", "BAD_FRAMING",
                                            "REQUEST_TIMEOUT", "URI_TOO_LONG", "HEADERS_TOO_LARGE",
                                            "METHOD_NOT_ALLOWED"])


cdef inline bint prefix_matches(bytes path, bytes prefix):
    """prefix is a whole-segment prefix of path ("/prod" matches "/prod" and "/prod/x", not "/prodx")."""
    cdef Py_ssize_t k = PyBytes_GET_SIZE(prefix), n = PyBytes_GET_SIZE(path)
    if k == 0:
        return True
    if n < k or memcmp(PyBytes_AS_STRING(path), PyBytes_AS_STRING(prefix), k) != 0:
        return False
    return n == k or PyBytes_AS_STRING(path)[k] == 47   # '/'


cdef object find_mount(Snapshot snap, RequestContext ctx):
    """The Mount serving ctx (its stage_path set), or None. A custom domain with no
    mapping for the path sets ctx.error_type (AWS answers 403 Forbidden)."""
    cdef list mounts = None
    cdef Mount mount
    cdef bytes host = ctx.route_host
    cdef Py_ssize_t dot
    cdef bint domain = False
    if snap.host_mounts:
        mounts = snap.host_mounts.get(host)
        domain = mounts is not None
    if mounts is None and snap.api_mounts:
        dot = host.find(b".execute-api.")
        if dot > 0:
            # the host names an API: only that API answers there (an unknown id: 403, as AWS)
            mounts = snap.api_mounts.get(host[:dot])
            if mounts is None:
                mounts = []
            domain = True
    if mounts is None:
        mounts = snap.any_mounts
    for mount in mounts:
        if prefix_matches(ctx.path, mount.prefix):
            ctx.stage_path = ctx.path[PyBytes_GET_SIZE(mount.prefix):] or b"/"
            if ctx.stage_path.startswith(b"//"):
                # API Gateway reads /prod//x as the stage's /x (paths.pxd: leading slashes)
                ctx.stage_path = b"/" + ctx.stage_path.lstrip(b"/")
            return mount
    if domain:
        ctx.error_type = "DOMAIN_NOT_MAPPED"
    return None


@cython.freelist(32)
cdef class PendingRequest:
    pass


cdef class ClientConnection:
    def __init__(self, Worker worker, int local_port=0):
        self.worker = worker
        self.local_port = local_port
        self.throttle_level = -1
        self.head_mark = -1
        self.pending = []
        self.body_chunks = []

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport):
        cdef Snapshot snap = self.worker.snapshot
        self.transport = transport
        self.t_write = transport.write
        self.t_is_closing = transport.is_closing
        self.port_bytes = b"%d" % self.local_port
        # limits live in the parser's C callbacks: the head buffer never grows past them
        self.parser = Http1Parser(False, snap.max_headers, snap.max_head, snap.max_url)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.peer_port = peer[1]
            if snap.trusted:
                addr = ipaddress.ip_address(peer[0])
                self.trusted = any(addr in net for net in snap.trusted)
        else:
            self.peer_ip = b"127.0.0.1"
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.tls = True
            self.client_cert = client_cert_of(sslobj)
        self.worker.connections.add(self)
        if snap.metrics is not None and self.worker.open_slot >= 0:
            snap.metrics.gauge_add(self.worker.open_slot, 1)
            snap.metrics.gauge_add(self.worker.own_slot, 1)
        self.deadline_kind = DL_IDLE
        self.deadline = monotonic_coarse() + snap.header_timeout
        if self.worker.draining:
            self.shutdown()

    def connection_lost(self, exc):
        cdef Snapshot snap = self.worker.snapshot
        self.closed = True
        self.worker.connections.discard(self)
        if snap.metrics is not None and self.worker.open_slot >= 0:
            snap.metrics.gauge_add(self.worker.open_slot, -1)
            snap.metrics.gauge_add(self.worker.own_slot, -1)
        if self.ctx is not None and self.ctx.status == 0:
            self.ctx.status = 499 if not self.responding else self.ctx.status
        self.drop_upstream()     # the client went away mid-exchange: the upstream's state is unknown
        if self.streaming_function and self.worker.functions is not None:
            self.worker.functions.client_gone(self)    # stop the handler now, not at its next chunk
        if self.ctx is not None and self.ctx.end == 0:
            self.log_exchange()
        self.ctx = None
        self.pending = None
        self.body_chunks = None

    def eof_received(self):
        # half-close from the client: finish what is in flight, then close
        if self.lingering:
            return False
        if self.tunnel and self.upstream is not None and self.upstream.transport is not None:
            self.upstream.tunnel_eofs += 1
            if self.upstream.tunnel_eofs >= 2:
                # both sides half-closed: nothing more can flow, and a transport whose eof_received
                # returned True stays open until closed; connection_lost closes the upstream
                return False
            if self.upstream.transport.can_write_eof():
                self.upstream.transport.write_eof()
            return True
        if self.ctx is None and not self.in_head:
            return False
        if self.ctx is None or not (self.req_complete or self.responding):
            # The client left halfway through a request (its head or its body), which can never
            # be complete now: release the upstream connection and the socket at once, not at
            # the header or body timeout (they would pile up in CLOSE-WAIT, each holding an
            # upstream connection). Returning False closes the transport; connection_lost logs
            # the request as 499. Not the upstream's failure.
            self.drop_upstream()
            self.unread = False
            self.closed = True      # nothing may resume it meanwhile (an authorizer's answer)
            self.deadline_kind = DL_NONE
            return False
        # a complete request (or one being answered already) still gets its answer
        self.close_after = True
        return True

    def pause_writing(self):
        self.write_blocked = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()
        elif self.streaming_function and self.worker.functions is not None:
            self.worker.functions.flow(self, True)   # a streamed function response: hold the handler

    def resume_writing(self):
        self.write_blocked = False
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()
        elif self.streaming_function and self.worker.functions is not None:
            self.worker.functions.flow(self, False)

    def data_received(self, bytes data):
        if self.lingering:
            # discarded: the answer is out, the client is still sending its body
            self.deadline = monotonic_coarse() + LINGER_IDLE_MS / 1000.0
            return
        if self.closed:
            return
        if self.tunnel:
            if self.upstream is not None:
                self.upstream.send_body(data)
            else:
                self.early_tunnel = (self.early_tunnel or b"") + data
            return
        self.cork()
        try:
            self.feed(data)
        finally:
            self.uncork()

    cdef feed(self, bytes data):
        """Run the parser over one read; each event is handled in plain Cython."""
        cdef Http1Parser p = self.parser
        cdef const char* buf = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), off = 0
        cdef int ev
        while True:
            if self.closed or self.lingering:
                return   # the connection is closing: the rest of the input is not ours to answer
            if self.parsing is None and off < n:
                self.message_begin()
            ev = p.feed(buf + off, n - off)
            off += p.consumed
            if ev == EV_NEED_MORE:
                if self.in_head and p.p.http_major == 0 and p.msg.url_len > 0 and \
                        p.msg.n_fields == 0 and n > 0 and buf[n - 1] == b'\n':
                    # A line ended after the URL with no version and no header yet: "GET /\r\n",
                    # however it was split across reads. llhttp takes it as a request line and
                    # would wait for headers an HTTP/0.9 client never sends.
                    self.unread = True
                    self.bad_input("BAD_REQUEST", "HTTP/0.9 request")
                return
            if ev == EV_HEAD_COMPLETE:
                if not self.head_complete():
                    self.unread = True
                    return
            elif ev == EV_BODY:
                if not self.body(data if p.msg.body_at == buf and p.msg.body_len == n
                                 else PyBytes_FromStringAndSize(p.msg.body_at, p.msg.body_len)):
                    self.unread = True
                    return
            elif ev == EV_MESSAGE_COMPLETE:
                if not self.message_complete():
                    # nothing after a "Connection: close" request is read (RFC 9112 section 9.6)
                    self.unread = off < n
                    return
            elif ev == EV_UPGRADE:
                self.early_tunnel = data[off:]
                self.set_pause(PAUSE_PIPELINE, True)   # nothing more to parse on this connection
                return
            else:
                self.unread = True
                if not self.closed:
                    self.parse_failed()
                return

    cdef void parse_failed(self):
        cdef Http1Parser p = self.parser
        cdef int limit = p.msg.limit
        if limit == LIMIT_URL:
            self.bad_input("URI_TOO_LONG", "request URI longer than %d bytes" % p.msg.max_url)
        elif limit == LIMIT_HEADERS:
            self.bad_input("HEADERS_TOO_LARGE", "more than %d header lines" % p.msg.max_headers)
        elif limit == LIMIT_HEAD:
            self.bad_input("HEADERS_TOO_LARGE", "header section larger than %d bytes" % p.msg.max_head)
        else:
            reason = (<bytes>p.p.reason).decode("latin-1", "replace") if p.p.reason != NULL else "?"
            self.bad_input("BAD_REQUEST", f"malformed request: {reason}")

    def bad_input(self, str error_type, str detail):
        """The input cannot be parsed further: answer in order, then close."""
        cdef PendingRequest p
        self.unread = True   # what follows is not read: the close must linger
        if self.parsing is None or self.parsing is self.ctx and self.responding:
            # nothing to attach the error to (or the active response already started): close
            if self.ctx is None:
                self.parsing = RequestContext()
                self.fill_basic(self.parsing)
                self.begin_active(self.parsing, self.worker.snapshot, None, True, error_type)
                return
            self.close_after = True
            if not self.responding:
                self.respond_error(error_type, detail)
            return
        if self.parsing is self.ctx:
            self.close_after = True
            self.ctx.error_message = detail
            if not self.responding:
                self.drop_upstream()
                self.respond_error(error_type, detail)
            return
        if self.parsing_pending is not None:
            self.parsing_pending.error_type = error_type
            self.parsing_pending.complete = True
            self.parsing_pending.ctx.error_message = detail
            return
        # not yet queued (the head is incomplete)
        self.fill_basic(self.parsing)
        self.parsing.error_message = detail
        if self.ctx is None:
            self.begin_active(self.parsing, self.parsing_snap, None, True, error_type)
        else:
            p = PendingRequest()
            p.ctx = self.parsing
            p.snap = self.parsing_snap
            p.chunks = None
            p.complete = True
            p.error_type = error_type
            self.pending.append(p)
            self.set_pause(PAUSE_PIPELINE, True)
        self.parsing = None

    cdef fill_basic(self, RequestContext ctx):
        if ctx.method is None or not ctx.method:
            # the method is known once the request line's URL has started
            ctx.method = self.parser.method_bytes() if self.parser.msg.url_len > 0 else b"-"
        ctx.source_ip = self.peer_ip
        ctx.source_port = self.peer_port
        ctx.local_port = self.local_port
        if ctx.request_id is None or not ctx.request_id:
            ctx.request_id = self.worker.new_request_id()
        if self.url is not None and ctx.path == b"/":
            ctx.path = self.url[:256]
        if ctx.headers is None:
            ctx.headers = []
        if ctx.start == 0:
            ctx.start = monotonic()
            ctx.request_time_ms = epoch_ms()

    # --- parser events ------------------------------------------------------------

    cdef void message_begin(self):
        cdef RequestContext ctx = RequestContext()
        cdef Snapshot snap = self.worker.snapshot
        ctx.start = monotonic()
        ctx.request_time_ms = epoch_ms()
        ctx.headers = []
        ctx.source_ip = self.peer_ip
        ctx.source_port = self.peer_port
        ctx.local_port = self.local_port
        ctx.tls = self.tls
        ctx.client_cert = self.client_cert
        self.parsing = ctx
        self.parsing_snap = snap
        self.parsing_pending = None
        self.url = None
        self.fwd = []
        self.in_head = True
        self.cl_count = 0
        self.cl_bad = False
        self.te_count = 0
        self.te_bad = False
        self.host_count = 0
        self.conn_tokens = None
        self.h_via = self.h_xff = self.h_xfp = self.h_xfh = self.h_xfport = None
        self.h_rid = self.h_upgrade = None
        self.h_traceparent = self.h_tracestate = self.h_xray = None
        self.parse_error = None
        if self.ctx is None:
            self.deadline_kind = DL_HEAD
            self.deadline = ctx.start + snap.header_timeout

    cdef void take_header(self, bytes name, bytes value):
        cdef RequestContext ctx = self.parsing
        cdef tuple pair = (name, value)
        cdef int kind = classify(name)
        ctx.headers.append(pair)
        if kind == H_OTHER or kind == H_DATE:
            if not client_cert_header(name):
                self.fwd.append(pair)
        elif kind == H_HOST:
            self.host_count += 1
            ctx.host = value
        elif kind == H_CONTENT_LENGTH:
            self.cl_count += 1
            ctx.content_length = parse_content_length(value)
            if ctx.content_length < 0:
                self.cl_bad = True
        elif kind == H_TRANSFER_ENCODING:
            self.te_count += 1
            if value.strip().lower() != b"chunked":
                self.te_bad = True
            ctx.chunked = True
        elif kind == H_CONNECTION:
            self.conn_tokens = connection_tokens(value, self.conn_tokens)
        elif kind == H_UPGRADE:
            self.h_upgrade = value
        elif kind == H_EXPECT:
            if value.strip().lower() == b"100-continue":
                ctx.expect_continue = True
            else:
                self.parse_error = "EXPECTATION_FAILED"
        elif kind == H_REQUEST_ID:
            self.h_rid = value
        elif kind == H_TRACEPARENT or kind == H_TRACESTATE or kind == H_XRAY:
            if self.parsing_snap is None or self.parsing_snap.tracer is None:
                self.fwd.append(pair)       # not tracing: pass the client's context through
            elif kind == H_TRACEPARENT:
                self.h_traceparent = value if self.h_traceparent is None else b""   # two: invalid
            elif kind == H_TRACESTATE:
                self.h_tracestate = value if self.h_tracestate is None else \
                    self.h_tracestate + b"," + value
            else:
                self.h_xray = value
        elif kind == H_VIA:
            self.h_via = value if self.h_via is None else self.h_via + b", " + value
        elif kind == H_XFF:
            self.h_xff = value if self.h_xff is None else self.h_xff + b", " + value
        elif kind == H_XFP:
            self.h_xfp = value
        elif kind == H_XFH:
            self.h_xfh = value
        elif kind == H_XFPORT:
            self.h_xfport = value
        elif kind == H_FORWARDED or kind == H_X_REAL_IP or kind == H_TRUE_CLIENT_IP:
            if self.trusted:
                self.fwd.append(pair)   # else a client could name any address to the upstream
        # keep-alive, proxy-connection, te, trailer, proxy-authorization, http2-settings:
        # hop-by-hop (or meant for this proxy), dropped

    cdef bint head_complete(self):
        """The request head is parsed: fill the context, validate, run or queue it.
        False when the rest of the input must not be read."""
        cdef Http1Parser p = self.parser
        cdef RequestContext ctx = self.parsing
        cdef Snapshot snap = self.parsing_snap
        cdef PendingRequest pend
        cdef int i
        self.in_head = False
        self.url = p.url_bytes()
        for i in range(p.msg.n_headers):
            self.take_header(p.name_bytes(i), p.value_bytes(i))
        if not self.validate_head(ctx, snap):
            # validate_head queued or answered the error; nothing after this head is trustworthy
            return False
        if self.ctx is None:
            self.begin_active(ctx, snap, None, False, None)
        else:
            pend = PendingRequest()
            pend.ctx = ctx
            pend.snap = snap
            pend.chunks = []
            pend.complete = False
            pend.error_type = None
            self.parsing_pending = pend
            self.pending.append(pend)
            self.set_pause(PAUSE_PIPELINE, True)
        return not self.closed

    cdef bint body(self, bytes data):
        cdef RequestContext ctx = self.parsing
        cdef Snapshot snap = self.parsing_snap
        cdef long long limit
        ctx.request_length += PyBytes_GET_SIZE(data)
        # a routed request has its route's limit (the gateway's unless the route overrides it);
        # a pipelined one not yet routed is held to the gateway's
        limit = ctx.route.max_body_size if ctx.route is not None else snap.max_body
        if 0 <= limit < ctx.request_length:
            self.bad_input("REQUEST_TOO_LARGE", "request body larger than the limit")
            return False
        if ctx is self.ctx:
            self.body_last = monotonic_coarse()
            if self.deadline_kind == DL_BODY:
                self.deadline = self.body_due()
            self.add_body(data)
        elif self.parsing_pending is not None:
            self.parsing_pending.chunks.append(data)
        return not self.closed

    cdef bint message_complete(self):
        cdef RequestContext ctx = self.parsing
        self.parsing = None
        if ctx is self.ctx:
            self.request_finished()
        elif self.parsing_pending is not None:
            self.parsing_pending.complete = True
        return ctx.keep_alive and not self.closed

    # --- the request ------------------------------------------------------------

    cdef bint validate_head(self, RequestContext ctx, Snapshot snap):
        """Fill ctx from the parsed head; False after queueing a 400-class answer."""
        cdef bytes url = self.url
        cdef Py_ssize_t q
        cdef str err = None
        cdef str detail = None
        cdef Http1Parser p = self.parser
        cdef PendingRequest pend
        cdef bytes canonical
        cdef int verdict = 0
        ctx.method = p.method_bytes()
        ctx.keep_alive = p.msg.keep_alive
        if p.p.http_major == 1 and p.p.http_minor <= 1:
            ctx.http_minor = p.p.http_minor
        else:
            err, detail = "BAD_REQUEST", "HTTP version %d.%d is not supported" % (
                p.p.http_major, p.p.http_minor)
        if url is None:
            url = b"/"
        if err is None:
            if url[0] != 47:   # not origin-form
                if url.startswith(b"http://") or url.startswith(b"https://"):
                    # absolute-form: the authority replaces Host (RFC 9112 section 3.2.2)
                    rest = url.split(b"//", 1)[1]
                    q = rest.find(b"/")
                    authority = rest if q < 0 else rest[:q]
                    url = b"/" if q < 0 else rest[q:]
                    if b"@" in authority or not authority:
                        err, detail = "BAD_REQUEST", "bad request target"
                    else:
                        ctx.host = authority
                        if self.host_count == 0:
                            self.host_count = 1
                elif url == b"*" and ctx.method == b"OPTIONS":
                    pass
                else:
                    err, detail = "BAD_REQUEST", "bad request target"
        q = url.find(b"?")
        if q >= 0:
            ctx.path = url[:q]
            ctx.query = url[q + 1:]
        else:
            ctx.path = url
        if err is None:
            # route, check and forward one spelling of the path (paths.pxd); the query stays as sent
            canonical = canonical_path(ctx.path, &verdict)
            if canonical is None:
                err, detail = "BAD_REQUEST", refusal_reason(verdict)
            else:
                ctx.path = canonical
        if err is None:
            if self.cl_count > 1:
                err, detail = "BAD_FRAMING", "more than one Content-Length"
            elif self.cl_bad:
                err, detail = "BAD_FRAMING", "malformed Content-Length"
            elif self.te_count and self.cl_count:
                err, detail = "BAD_FRAMING", "both Content-Length and Transfer-Encoding"
            elif self.te_count > 1 or self.te_bad:
                err, detail = "BAD_FRAMING", "Transfer-Encoding other than chunked"
            elif self.te_count and ctx.http_minor == 0:
                err, detail = "BAD_FRAMING", "Transfer-Encoding in an HTTP/1.0 request"
            elif ctx.http_minor == 1 and self.host_count == 0:
                err, detail = "MISSING_HOST", "missing Host header"
            elif self.host_count > 1:
                err, detail = "MISSING_HOST", "more than one Host header"
            elif self.parse_error is not None:
                err, detail = "BAD_REQUEST", "unsupported Expect"
            elif ctx.method == b"CONNECT":
                err, detail = "METHOD_NOT_ALLOWED", "CONNECT is not supported"
        if ctx.host is None or not ctx.host:
            ctx.host = b""
        if self.last_host is not None and ctx.host == self.last_host:
            ctx.route_host = self.last_route_host     # keep-alive clients repeat their Host
        else:
            ctx.route_host = route_host_of(ctx.host)
            if valid_host(ctx.host):
                self.last_host = ctx.host
                self.last_route_host = ctx.route_host
            elif err is None:
                err, detail = "BAD_REQUEST", "invalid Host header"
        if err is None and snap.mtls_hosts is not None and not client_cert_allows(
                snap.mtls_hosts, ctx.route_host, self.client_cert):
            err, detail = "CLIENT_CERT_REQUIRED", "no client certificate verified for this domain"
        ctx.upgrade = self.h_upgrade is not None and p.p.upgrade
        if self.h_rid is not None and valid_request_id(self.h_rid):
            ctx.request_id = self.h_rid
        else:
            ctx.request_id = self.worker.new_request_id()
        if snap.tracer is not None:
            ctx.trace = snap.tracer.begin(self.h_traceparent, self.h_tracestate, self.h_xray, ctx.start)
        if self.trusted and self.h_xff is not None:
            ctx.forwarded_for = self.h_xff + b", " + self.peer_ip
            # the address the trusted proxy saw: the last hop it appended
            last = self.h_xff.rpartition(b",")[2].strip()
            ctx.client_ip = last if last else self.peer_ip
        else:
            ctx.forwarded_for = self.peer_ip
            ctx.client_ip = self.peer_ip
        if self.conn_tokens is not None:
            self.fwd = drop_named(self.fwd, self.conn_tokens)
        ctx.forward_headers = self.fwd
        ctx.upgrade_protocol = self.h_upgrade
        ctx.via_received = self.h_via
        ctx.forwarded_proto = self.h_xfp if (self.trusted and self.h_xfp is not None) else \
            (b"https" if ctx.tls else b"http")
        ctx.forwarded_host = self.h_xfh if (self.trusted and self.h_xfh is not None) else \
            (ctx.host or None)
        ctx.forwarded_port = self.h_xfport if (self.trusted and self.h_xfport is not None) else \
            self.port_bytes
        if err is not None:
            ctx.keep_alive = False
            ctx.error_message = detail
            self.unread = True   # a body (or more requests) may follow: the close must linger
            if self.ctx is None:
                self.begin_active(ctx, snap, None, True, err)
            else:
                pend = PendingRequest()
                pend.ctx = ctx
                pend.snap = snap
                pend.chunks = None
                pend.complete = True
                pend.error_type = err
                self.pending.append(pend)
                self.set_pause(PAUSE_PIPELINE, True)
            self.parsing = None
            return False
        return True

    cdef void begin_active(self, RequestContext ctx, Snapshot snap, list chunks, bint complete, str error):
        """Make ctx the active request and run its phases."""
        self.ctx = ctx
        self.snap = snap
        self.req_complete = complete
        self.responding = False
        self.body_mode = BODY_NONE
        if chunks is not None:
            self.body_chunks = chunks
        elif self.body_chunks is None or self.body_chunks:
            self.body_chunks = []   # else the empty list the last request left is reused
        self.body_decoded = False
        self.body_sent = 0
        self.body_kept = 0
        for c in self.body_chunks:
            self.body_kept += PyBytes_GET_SIZE(c)
        self.body_retained = self.body_kept <= RETRY_BODY_MAX
        self.total_deadline = 0
        if not complete and ctx.content_length <= 0 and not ctx.chunked:
            # no body by framing: the request is whole at headers-complete
            self.req_complete = True
        self.deadline_kind = DL_BODY
        self.start_body_clock()
        self.deadline = self.body_due()
        if error is not None:
            self.close_after = True
            self.respond_error(error, ctx.error_message)
            return
        if self.run_phases() == ACTION_RESPOND:
            self.respond_error(ctx.error_type, ctx.error_message)

    cdef int run_phases(self):
        """The pipeline dispatcher: each phase returns an Action (pipeline.pxd)."""
        cdef RequestContext ctx = self.ctx
        cdef Snapshot snap = self.snap
        cdef Route route
        cdef Router router
        cdef bytes routed, lenient
        # PHASE_ROUTE: an API stage's mount first (custom domain, execute-api host,
        # stage prefix), then the top-level routes
        cdef ApiStage api = None
        if snap.has_mounts:
            mount = find_mount(snap, ctx)
            if mount is not None:
                api = (<Mount>mount).pick()
                ctx.api = api
                if api.cors is not None:
                    # CORS preflight: the gateway answers it before routing and authorization
                    pre = api.cors.preflight(ctx.method, ctx.header(b"origin"),
                                             ctx.header(b"access-control-request-method"),
                                             ctx.header(b"access-control-request-headers"))
                    if pre is not None:
                        self.respond(pre[0], pre[1], b"")
                        return ACTION_CONTINUE
            elif ctx.error_type is not None:
                return ACTION_RESPOND
        if api is not None:
            router = <Router>api.router
            routed = ctx.stage_path
        else:
            router = snap.router
            routed = ctx.path
        m = router.match(ctx.route_host, ctx.method, routed)
        if m is None:
            ctx.error_type = "MISSING_AUTHENTICATION_TOKEN" if api is not None and api.rest else "NOT_FOUND"
            return ACTION_RESPOND
        route = <Route>m[0]
        lenient = lenient_path(routed)
        if lenient is not None:
            # a server that drops ;parameters or merges slashes must reach this route too
            other = router.match(ctx.route_host, ctx.method, lenient)
            if other is None or other[0] is not route:
                ctx.error_type = "BAD_REQUEST"
                ctx.error_message = "the path reaches another route once ';' parameters, '\\' or '//' are read leniently"
                return ACTION_RESPOND
        ctx.route = route
        ctx.path_params = m[1]
        if route.max_body_size >= 0 and ctx.content_length > route.max_body_size:
            # decided before reading a byte of the body (and before any 100 Continue)
            ctx.error_type = "REQUEST_TOO_LARGE"
            ctx.error_message = "Content-Length %d exceeds the limit of %d bytes" % (
                ctx.content_length, route.max_body_size)
            return ACTION_RESPOND
        return self.continue_phases(PHASE_ACCESS)

    cdef int wait_for_body(self, RequestContext ctx, int phase):
        """A phase needs the whole body: request_finished() resumes the phases at `phase`
        (and a client that sent Expect: 100-continue is asked for the body now)."""
        self.waiting = WAIT_BODY
        self.wait_phase = phase
        if ctx.expect_continue:
            self.ask_for_body()
        return ACTION_WAIT

    cdef int continue_phases(self, int phase):
        """The phases after routing, from `phase` on (a phase that waited resumes here)."""
        cdef RequestContext ctx = self.ctx
        cdef Route route = ctx.route
        cdef int verdict
        # PHASE_ACCESS: resource policy, API key, authorizers (fastgate.phases.access)
        if phase <= PHASE_ACCESS and route.access is not None:
            if route.access.needs_body and not self.req_complete:
                # SigV4 signs the payload: check once the body is here (request_finished)
                return self.wait_for_body(ctx, PHASE_ACCESS)
            if ctx.trace is not None:
                (<Trace>ctx.trace).auth_start = monotonic()
            if route.key_gate is not None and self.snap.redis is None:
                # PERF: a method whose only check is an API key runs it in C: no Python call,
                # no object per request (bench/wrk_compare.py --scenario keyed)
                verdict = self.check_key(ctx, <KeyGate>route.key_gate)
            else:
                verdict = route.access.run(
                    self, ctx, b"".join(self.body_chunks) if route.access.needs_body else None)
            if ctx.trace is not None and verdict != ACCESS_WAIT:
                (<Trace>ctx.trace).auth_end = monotonic()
            if verdict == ACCESS_DENY:
                return ACTION_RESPOND
            if verdict == ACCESS_WAIT:
                self.waiting = WAIT_ACCESS      # access_done() resumes
                return ACTION_WAIT
        # PHASE_THROTTLE
        if phase <= PHASE_THROTTLE and route.limiters:
            if self.snap.redis is not None:
                # buckets shared by several hosts live in Redis: throttle_done() resumes
                self.waiting = WAIT_THROTTLE
                self.snap.redis.start(self, ctx, route.limiters)
                return ACTION_WAIT
            if not self.run_throttle(ctx, route):
                return ACTION_RESPOND
        # PHASE_VALIDATE: required parameters, the body's model (fastgate.phases.validation)
        if phase <= PHASE_VALIDATE and route.validator is not None:
            if route.validator.needs_body and not self.req_complete:
                return self.wait_for_body(ctx, PHASE_VALIDATE)
            if route.validator.needs_body and not self.decode_body(ctx):
                return ACTION_RESPOND
            failure = route.validator.check(
                ctx.query, ctx.headers, ctx.path_params, ctx.header(b"content-type"),
                b"".join(self.body_chunks) if route.validator.needs_body else None)
            if failure is not None:
                ctx.error_type = failure[0]
                ctx.error_message = failure.message
                self.error_body = failure[1]
                return ACTION_RESPOND
        # PHASE_REQUEST_TRANSFORM: an http (non-proxy) integration's body template needs the body
        if phase <= PHASE_REQUEST_TRANSFORM:
            if route.http_map is not None and route.http_map.maps_request:
                if not self.req_complete:
                    return self.wait_for_body(ctx, PHASE_REQUEST_TRANSFORM)
                if not self.map_request(ctx, route):
                    return ACTION_RESPOND
            if route.path_rewrite is not None:
                ctx.upstream_path = (<PathRewrite>route.path_rewrite).apply(ctx)
            else:
                ctx.upstream_path = ctx.path
            if route.query_mapping is not None:
                q = route.query_mapping.apply(ctx)
                if q:
                    ctx.upstream_path = ctx.upstream_path + b"?" + q
            elif ctx.query and not route.drop_query:
                ctx.upstream_path = ctx.upstream_path + b"?" + ctx.query
            if route.request_headers is not None:
                ctx.upstream_headers = (<HeaderTransform>route.request_headers).apply(ctx.forward_headers, ctx)
            else:
                ctx.upstream_headers = ctx.forward_headers
        # PHASE_CACHE: a fresh cached response answers without the integration
        if phase <= PHASE_CACHE and route.cache is not None and self.snap.cache is not None and \
                route.integration == INTEGRATION_HTTP:
            verdict = self.serve_cached(ctx, route)
            if verdict == 1:
                return ACTION_CONTINUE
            if verdict == 2:
                self.waiting = WAIT_CACHE       # cache_done() resumes
                return ACTION_WAIT
            if ctx.error_type is not None:      # an unauthorised Cache-Control: max-age=0
                return ACTION_RESPOND
        if ctx.expect_continue and not self.req_complete:
            # admitted: ask for the body (RFC 9110 section 10.1.1); the upstream never sees Expect
            self.ask_for_body()
        # PHASE_INTEGRATION
        if route.integration == INTEGRATION_HTTP:
            self.start_http()
        # mock and echo answer once the body is complete (request_finished)
        elif self.req_complete:
            self.request_finished()
        return ACTION_CONTINUE

    def access_done(self, RequestContext ctx, str error_type=None, str message=None,
                    list headers=None, bytes body=None, bytes code=None):
        """An asynchronous access check finished: deny with error_type, or run the
        remaining phases (throttle, transforms, the integration)."""
        if ctx is not self.ctx or self.closed or self.responding or self.waiting != WAIT_ACCESS:
            return      # the client went away, or a timeout answered meanwhile
        self.waiting = WAIT_NONE
        if ctx.trace is not None:
            (<Trace>ctx.trace).auth_end = monotonic()
        if error_type is not None:
            self.deny(ctx, error_type, message, headers, body, code)
            self.respond_error(error_type, None)
        elif self.continue_phases(PHASE_THROTTLE) == ACTION_RESPOND:
            self.respond_error(ctx.error_type, ctx.error_message)
        self.uncork()

    def throttle_done(self, RequestContext ctx, bytes rejected=None, str limiter=None):
        """The Redis takes of the THROTTLE phase finished: `rejected` is the header block
        of the limit that said no (429), or None to go on."""
        if ctx is not self.ctx or self.closed or self.responding or self.waiting != WAIT_THROTTLE:
            return
        self.waiting = WAIT_NONE
        if rejected is not None:
            ctx.error_type = "THROTTLED"
            if limiter is not None:
                self.throttle_level = throttle_level_of(limiter)
            self.error_headers = header_lines(rejected)
            self.respond_error("THROTTLED", None)
        elif self.continue_phases(PHASE_VALIDATE) == ACTION_RESPOND:
            self.respond_error(ctx.error_type, ctx.error_message)
        self.uncork()

    def take_error_headers(self):
        """The headers a denial queued (for an access check that finishes asynchronously)."""
        h = self.error_headers
        self.error_headers = None
        return h

    def deny(self, RequestContext ctx, str error_type, str message=None, list headers=None,
             bytes body=None, bytes code=None):
        """What a denied access check answers: the gateway response `error_type`, with AWS's
        body for the case (unless the API customised that response) and x-amzn-ErrorType."""
        ctx.error_type = error_type
        ctx.error_message = message
        self.error_headers = headers or None
        self.error_body = body
        self.error_code = code

    cdef int serve_cached(self, RequestContext ctx, Route route):
        """CACHE phase: 1 when a cached response was sent, 2 when the lookup goes on in
        Redis (cache_done() resumes), 0 to call the integration. On a miss, ctx.cache_key
        marks the response to store (upstream_head/upstream_body/upstream_done)."""
        cdef RouteCache rc = <RouteCache>route.cache
        cdef int decision = rc.decide(ctx.method, ctx.headers, False)
        if decision == CACHE_BYPASS:
            return 0
        if decision == CACHE_FORBIDDEN:
            ctx.error_type = "UNAUTHORIZED"     # AWS: 403 on an unauthorised Cache-Control
            return 0
        self.cache_decision = decision
        key = rc.spec.key(ctx.method, ctx.path, ctx.query, ctx.headers, ctx.path_params)
        ctx.cache_key = key
        if decision != CACHE_REFRESH:
            hit = (<SharedCache>self.snap.cache).get(key, epoch_ms())
            if hit is not None:
                ctx.cache_result = 1
                self.answer_cached(ctx, <tuple>hit)
                return 1
            if self.snap.cache_redis is not None:
                # another host may have it; the lookup is bounded by redis.timeout_ms
                # and answers a miss at once while Redis is down
                self.snap.cache_redis.lookup(self, ctx, key)
                return 2
        ctx.cache_result = 2
        self.record_cache_result(ctx)
        return 0

    cdef void answer_cached(self, RequestContext ctx, tuple hit):
        """Send a cache entry (status, header lines, body) as the response."""
        self.record_cache_result(ctx)
        ctx.cache_key = None
        # entries stored before cache_head_of() dropped Content-Length may still carry it
        headers = [pair for pair in header_lines(<bytes>hit[1])
                   if classify(<bytes>pair[0]) != H_CONTENT_LENGTH]
        headers.append((b"X-Cache", b"Hit"))
        if self.cache_decision == CACHE_LOOKUP_WARN:
            headers.append(CACHE_WARNING)
        ctx.integration_start = ctx.integration_end = monotonic()
        self.respond(<int>hit[0], headers, <bytes>hit[2])

    cdef void record_cache_result(self, RequestContext ctx):
        cdef int slot = self.snap.route_series[ctx.route.index] if self.snap.metrics is not None else -1
        if slot >= 0:
            self.snap.metrics.record_cache(slot, CACHE_RESULT_MISS if ctx.cache_result == 2 else
                                           CACHE_RESULT_REDIS_HIT if ctx.cache_result == 3 else
                                           CACHE_RESULT_HIT)

    def cache_done(self, RequestContext ctx, hit=None, long long expires_ms=0):
        """The Redis lookup of the CACHE phase finished: hit is (status, header lines,
        body), valid until expires_ms (epoch ms; the local cache keeps it that long), or
        None (a miss, Redis down or slow): call the integration and store its answer."""
        if ctx is not self.ctx or self.closed or self.responding or self.waiting != WAIT_CACHE:
            return
        self.waiting = WAIT_NONE
        cdef long long now = epoch_ms()
        if hit is not None:
            ctx.cache_result = 3
            # never longer than this route's TTL: a host with a clock behind stored it
            expires_ms = min(expires_ms, now + (<RouteCache>ctx.route.cache).ttl_ms)
            if expires_ms > now:
                (<SharedCache>self.snap.cache).put(ctx.cache_key, expires_ms, <int>hit[0],
                                                   <bytes>hit[1], <bytes>hit[2])
            self.answer_cached(ctx, <tuple>hit)
        else:
            ctx.cache_result = 2
            self.record_cache_result(ctx)
            if self.continue_phases(PHASE_INTEGRATION) == ACTION_RESPOND:
                self.respond_error(ctx.error_type, ctx.error_message)
        self.uncork()

    cdef bint decode_body(self, RequestContext ctx):
        """The whole request body, as a phase that reads it (body validation, a function's
        event) must see it: a Content-Encoding (gzip, deflate, br, zstd) undone once, in
        place -- body_chunks, framing and the forwarded headers then describe the decoded
        body, so an http integration gets it decoded too (API Gateway decompresses before
        dispatching). False after choosing the gateway response: 415 for an unknown coding
        or data not in it (AWS's answer for both), 413 past the route's body limit, which
        caps the decoded size (the decoders stop at it: a bomb never inflates further).
        Also before a mapping template reads the body (http integrations, VTL mocks).
        Plain proxying never calls this: a compressed body passes through untouched."""
        if self.body_decoded:
            return True
        self.body_decoded = True
        coding = ctx.header(b"content-encoding")
        if coding is None:
            return True
        from fastgate.phases.compression import RequestBodyError, decode_request_body
        cap = ctx.route.max_body_size if ctx.route.max_body_size >= 0 else DECODED_BODY_MAX
        raw = b"".join(self.body_chunks) if self.body_chunks else b""
        try:
            body = decode_request_body(coding, raw, cap)
        except RequestBodyError as e:
            ctx.error_type = "REQUEST_TOO_LARGE" if e.status == 413 else "UNSUPPORTED_MEDIA_TYPE"
            ctx.error_message = str(e)
            return False
        self.body_chunks = [body]
        self.body_sent = 0
        self.body_kept = PyBytes_GET_SIZE(body)
        self.body_retained = self.body_kept <= RETRY_BODY_MAX   # as for a body that arrived plain
        ctx.content_length = PyBytes_GET_SIZE(body)
        ctx.chunked = False
        ctx.forward_headers = without_content_encoding(ctx.forward_headers)
        if ctx.upstream_headers is not None:    # transforms ran already (a function's event)
            ctx.upstream_headers = without_content_encoding(ctx.upstream_headers)
        return True

    cdef int check_key(self, RequestContext ctx, KeyGate gate) except -1:
        """The ACCESS phase of a method that requires an API key (x-api-key) and nothing
        else: 403 INVALID_API_KEY, 429 THROTTLED / QUOTA_EXCEEDED with RateLimit headers."""
        cdef ThrottleResult res
        cdef char buf[512]
        cdef Py_ssize_t n
        cdef bytes value = ctx.header(b"x-api-key")
        cdef int rc = gate.check(ctx, PyBytes_AS_STRING(value) if value is not None else NULL,
                                 PyBytes_GET_SIZE(value) if value is not None else 0,
                                 throttle_now_ns(), throttle_epoch_s(), &res)
        if rc == KEY_ALLOW:
            return ACCESS_ALLOW
        # as deny(): API Gateway's bodies for these types are the gateway responses' own
        ctx.error_message = None
        self.error_body = None
        self.error_code = None
        self.error_headers = None
        if rc == KEY_INVALID:
            ctx.error_type = "INVALID_API_KEY"
        else:
            ctx.error_type = "THROTTLED" if rc == KEY_THROTTLED else "QUOTA_EXCEEDED"
            n = headers_for(rc, &res, buf, sizeof(buf))
            if n > 0:
                self.error_headers = header_lines(buf[:n])
        return ACCESS_DENY

    cdef bint run_throttle(self, RequestContext ctx, Route route):
        """Take from each of the route's limiters in API Gateway's order; the first
        rejection answers 429 THROTTLED with RateLimit and Retry-After headers."""
        cdef ThrottleResult res
        cdef Limiter lim
        cdef int64_t now = throttle_now_ns()
        cdef bytes key
        for lim in route.limiters:
            if lim.key_kind == LIMIT_CLIENT_IP:
                key = ctx.client_ip
            elif lim.key_kind == LIMIT_HEADER:
                key = ctx.header(lim.key_arg) or b""
            elif lim.key_kind == LIMIT_CLAIM:
                key = claim_key(ctx.auth, lim.key_arg)
            else:
                key = b""
            res.allowed = 1
            if not lim.take(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key), now, &res):
                ctx.error_type = "THROTTLED"
                self.throttle_level = throttle_level_of(lim.name)
                self.error_headers = header_lines(lim.headers(&res))
                return False
        return True

    cdef void add_body(self, bytes data):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if self.responding and self.ctx.route is not None and self.ctx.route.integration != INTEGRATION_HTTP:
            return
        if self.upstream is not None and self.upstream.head_written:
            self.send_body_chunk(data)
            if self.body_retained:
                self.body_chunks.append(data)
                self.body_sent = len(self.body_chunks)
                self.body_kept += n
                if self.body_kept > RETRY_BODY_MAX:
                    self.body_retained = False
                    self.body_chunks = []
                    self.body_sent = 0
                    self.body_kept = 0
            return
        # no upstream yet, or its head waits for the connect: kept, to follow the head (upstream_ready)
        self.body_chunks.append(data)
        self.body_kept += n
        if self.body_kept > RETRY_BODY_MAX:
            self.body_retained = False
        if self.body_kept > BUFFER_HIGH and self.ctx.route is not None and \
                self.ctx.route.integration == INTEGRATION_HTTP and self.waiting != WAIT_BODY:
            self.set_pause(PAUSE_NOT_READY, True)

    cdef void start_body_clock(self):
        self.body_start = self.body_last = monotonic_coarse()

    cdef double body_due(self):
        """When the active request's body is late (check_timeout answers 408): body_timeout
        after its last bytes and, while it is not complete, once it averages less than
        min_body_rate after body_rate_grace (as Apache's mod_reqtimeout MinRate: each byte buys
        1/min_body_rate s more), or body_deadline after it started. A trickle that restarts the
        idle timeout with every byte would otherwise hold the connection forever (slow POST).
        While the gateway itself is not reading (the upstream is full or not ready) the rate is
        not checked, and the clock moves on by that time when reading resumes (set_pause)."""
        cdef Snapshot snap = self.snap
        cdef double due = self.body_last + snap.body_timeout, t
        if self.req_complete or self.ctx.expect_continue:
            return due      # (a client waiting for its 100 Continue has not been asked yet)
        if snap.min_body_rate > 0 and not self.reading_paused:
            t = self.body_start + snap.body_rate_grace + self.ctx.request_length / snap.min_body_rate
            if t < due:
                due = t
        if snap.body_deadline > 0 and self.body_start + snap.body_deadline < due:
            due = self.body_start + snap.body_deadline
        return due

    cdef void ask_for_body(self):
        """100 Continue: the client sends its body from now on, so its clock starts now."""
        self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.ctx.expect_continue = False
        self.start_body_clock()
        if self.deadline_kind == DL_BODY:
            self.deadline = self.body_due()

    cdef void request_finished(self):
        """The active request's body is complete."""
        cdef RequestContext ctx = self.ctx
        self.req_complete = True
        if ctx.route is None or self.responding:
            return
        if self.waiting == WAIT_BODY:
            self.waiting = WAIT_NONE
            if self.continue_phases(self.wait_phase) == ACTION_RESPOND:
                self.respond_error(ctx.error_type, ctx.error_message)
            return
        if self.waiting != WAIT_NONE:
            return      # the integration starts when access_done() resumes the phases
        if ctx.route.integration == INTEGRATION_HTTP:
            if self.upstream is not None and self.upstream.head_written:
                self.finish_upstream_request()
            # else upstream_ready ends the request right behind its head
        elif ctx.route.integration == INTEGRATION_MOCK:
            self.respond_mock()
        elif ctx.route.integration == INTEGRATION_ECHO:
            self.respond_echo()
        elif ctx.route.integration == INTEGRATION_FUNCTION:
            self.start_function()

    # --- HTTP integration ---------------------------------------------------------

    cdef void start_http(self):
        cdef Route route = self.ctx.route
        if route.total_timeout > 0:
            self.total_deadline = monotonic_coarse() + route.total_timeout
        self.attempt(None)

    cdef void attempt(self, Target exclude):
        cdef RequestContext ctx = self.ctx
        cdef Route route = ctx.route
        cdef UpstreamGroup group = <UpstreamGroup>route.upstream
        cdef double now = monotonic()
        cdef Target target = group.pick(ctx, exclude, now)
        cdef UpstreamConnection conn
        if target is None and exclude is not None:
            # the only target just failed; try it again rather than give up (e.g. a stale pooled socket)
            target = group.pick(ctx, None, now)
        if target is None:
            ctx.error_type = "NO_HEALTHY_UPSTREAM"
            ctx.error_message = f"no healthy target in upstream {group.name!r}"
            self.respond_error(ctx.error_type, ctx.error_message)
            return
        ctx.target = target
        ctx.attempts += 1
        if ctx.integration_start == 0:
            ctx.integration_start = now
        target.active += 1
        conn = <UpstreamConnection>target.pop_idle()
        while conn is not None and not conn.alive():
            conn = <UpstreamConnection>target.pop_idle()    # dead while idle: dropped
        if conn is not None:
            self.upstream_ready(conn)
        else:
            self.connect(target)

    cdef void connect(self, Target target):
        cdef UpstreamConnection conn = UpstreamConnection(target)
        self.upstream = conn
        conn.client = self
        self.deadline_kind = DL_CONNECT
        self.deadline = monotonic_coarse() + self.ctx.route.connect_timeout
        target.opened()
        coro = self.worker.loop.create_connection(
            lambda: conn, target.host, target.port, ssl=target.ssl,
            server_hostname=target.server_hostname if target.ssl is not None else None)
        self.connect_task = asyncio.ensure_future(coro, loop=self.worker.loop)
        self.connect_task.add_done_callback(conn.on_connected)

    cdef void upstream_ready(self, UpstreamConnection conn):
        cdef RequestContext ctx = self.ctx
        cdef list chunks
        self.connect_task = None
        self.upstream = conn
        conn.attach(self, ctx.method == b"HEAD")
        self.body_mode = BODY_NONE
        chunks = self.body_chunks
        if not chunks and not ctx.chunked:
            # PERF: no body yet: the head alone, no list (bench/wrk_compare.py, scenario keepalive)
            conn.send_head(self.build_upstream_head(conn.target.host_header))
        else:
            self.write_upstream_request(conn, chunks)
        self.set_pause(PAUSE_NOT_READY, False)
        if self.req_complete:
            self.deadline_kind = DL_UPSTREAM_READ
            self.deadline = monotonic_coarse() + ctx.route.first_byte_timeout
        else:
            self.deadline_kind = DL_BODY
            self.deadline = self.body_due()

    cdef void write_upstream_request(self, UpstreamConnection conn, list chunks):
        """The head and the body chunks received so far, in one write."""
        cdef RequestContext ctx = self.ctx
        cdef bytes c
        out = [self.build_upstream_head(conn.target.host_header)]
        if ctx.chunked:
            for c in chunks[self.body_sent:]:
                if PyBytes_GET_SIZE(c):
                    out.append(chunk_frame(c))
        else:
            out.extend(chunks[self.body_sent:])
        if self.body_retained:
            self.body_sent = len(chunks)
        else:
            self.body_chunks = []
            self.body_sent = 0
            self.body_kept = 0
        if self.req_complete and ctx.chunked:
            out.append(b"0\r\n\r\n")
        conn.send_head(b"".join(out))

    cdef bytes build_upstream_head(self, bytes target_host):
        """The upstream request, rebuilt from parsed fields (never the client's raw bytes).
        target_host: the Host to send unless a transform sets one."""
        cdef RequestContext ctx = self.ctx
        cdef Snapshot snap = self.snap
        cdef tuple pair
        cdef bytes host = target_host
        cdef char trace_line[TRACE_LINE_MAX]
        cdef int kind, owned = 0
        if ctx.route.request_headers is not None:
            # A transform may set a header the gateway writes itself (Host, Via, X-Forwarded-*,
            # x-request-id): the transform's value replaces the gateway's, never a second line
            # (two Host lines are a request a server must reject, RFC 9112 section 3.2).
            for pair in ctx.upstream_headers:
                kind = classify(<bytes>pair[0])
                if kind != H_OTHER:
                    owned |= 1 << kind
                    if kind == H_HOST:
                        host = <bytes>pair[1]
        out_reset()
        out_bytes(ctx.method)
        out_bytes(b" ")
        out_bytes(ctx.upstream_path)
        out_bytes(b" HTTP/1.1\r\nHost: ")
        out_bytes(host)
        out_bytes(b"\r\n")
        for pair in ctx.upstream_headers:
            if owned & (1 << H_HOST) and classify(<bytes>pair[0]) == H_HOST:
                continue
            out_bytes(<bytes>pair[0])
            out_bytes(b": ")
            out_bytes(<bytes>pair[1])
            out_bytes(b"\r\n")
        if not owned & (1 << H_XFF):
            out_bytes(b"X-Forwarded-For: ")
            out_bytes(ctx.forwarded_for)
            out_bytes(b"\r\n")
        if not owned & (1 << H_XFP):
            out_bytes(b"X-Forwarded-Proto: ")
            out_bytes(ctx.forwarded_proto)
            out_bytes(b"\r\n")
        if not owned & (1 << H_XFH) and ctx.forwarded_host is not None:
            out_bytes(b"X-Forwarded-Host: ")
            out_bytes(ctx.forwarded_host)
            out_bytes(b"\r\n")
        if not owned & (1 << H_XFPORT):
            out_bytes(b"X-Forwarded-Port: ")
            out_bytes(ctx.forwarded_port)
            out_bytes(b"\r\n")
        if snap.via is not None and not owned & (1 << H_VIA):
            out_bytes(b"Via: ")
            if ctx.via_received is not None:
                out_bytes(ctx.via_received)
                out_bytes(b", ")
            out_bytes(snap.via)
            out_bytes(b"\r\n")
        if not owned & (1 << H_REQUEST_ID):
            out_bytes(b"x-request-id: ")
            out_bytes(ctx.request_id)
            out_bytes(b"\r\n")
        if ctx.client_cert is not None:
            out_bytes(ctx.client_cert.headers)   # X-Client-Cert-*, built once per connection
        if ctx.trace is not None:
            # PERF: the trace context lines written in place, no bytes object
            # (bench/wrk_compare.py --scenario observed)
            out_put(trace_line, (<Trace>ctx.trace).traceparent_line(trace_line))
            if (<Trace>ctx.trace).tracestate is not None:
                out_bytes(b"tracestate: ")
                out_bytes((<Trace>ctx.trace).tracestate)
                out_bytes(b"\r\n")
            out_put(trace_line, (<Trace>ctx.trace).xray_line(trace_line))
        if ctx.upgrade:
            out_bytes(b"Connection: upgrade\r\nUpgrade: ")
            out_bytes(ctx.upgrade_protocol)
            out_bytes(b"\r\n")
        if ctx.chunked:
            out_bytes(b"Transfer-Encoding: chunked\r\n")
        elif ctx.content_length >= 0:
            out_bytes(b"Content-Length: %d\r\n" % ctx.content_length)
        out_bytes(b"\r\n")
        return out_take()

    cdef void send_body_chunk(self, bytes data):
        if self.ctx.chunked:
            if PyBytes_GET_SIZE(data):
                self.upstream.send_body(chunk_frame(data))
        else:
            self.upstream.send_body(data)

    cdef void finish_upstream_request(self):
        if self.ctx.chunked:
            self.upstream.send_body(b"0\r\n\r\n")
        if not self.upstream.head_done:
            self.deadline_kind = DL_UPSTREAM_READ
            self.deadline = monotonic_coarse() + self.ctx.route.first_byte_timeout

    cdef void upstream_failed(self, str kind, str detail, bint retryable):
        """The upstream failed before the response reached the client (else: abort)."""
        cdef RequestContext ctx = self.ctx
        cdef Target target
        cdef UpstreamConnection conn = self.upstream
        if ctx is None:
            return
        self.map_parts = self.map_headers = None   # a response being mapped is not one any more
        target = <Target>ctx.target
        self.upstream = None
        self.connect_task = None
        if conn is not None:
            conn.client = None
            conn.close()
        if target is not None:
            target.active -= 1
            if self.upstream_to_blame(kind):
                target.record_failure(monotonic(), detail)
        if self.responding and not self.take_back_head():
            # part of the response reached the client: say what happened in the logs, and
            # end the client's response short of its framing
            ctx.error_type = "INTEGRATION_TIMEOUT" if kind == "timeout" else "INTEGRATION_FAILURE"
            ctx.error_message = f"upstream {target.label.decode() if target is not None else '?'}: " \
                                f"{detail} (after the response head was sent)"
            if self.write_blocked:
                # a client that is not reading would never take the clean end: a close would
                # wait on its full buffer for ever, holding the socket
                self.abort()
            else:
                self.cut_response()
            return
        if retryable and ctx.attempts <= ctx.route.retries and self.body_retained and (
                kind == "connect" or kind == "connect_timeout" or ctx.method in IDEMPOTENT
                or ctx.route.retry_non_idempotent):
            self.body_sent = 0      # the next attempt sends the whole retained body behind its head
            self.attempt(target)
            return
        ctx.error_message = f"upstream {target.label.decode() if target is not None else '?'}: {detail}"
        # a connect that timed out is a timeout too (504, as the docs promise), a refused one is 502
        self.respond_error("INTEGRATION_TIMEOUT" if kind == "timeout" or kind == "connect_timeout"
                           else "INTEGRATION_FAILURE", ctx.error_message)

    cdef bint upstream_to_blame(self, str kind):
        """Whether a failure of `kind` counts against the target (passive ejection). Only the
        upstream's own faults do, or any client could eject a healthy target: a timeout or a
        closed connection while the client still owed body bytes (the upstream was waiting for
        them, and may have given up on them) or while the client was not reading the response
        (flow control had stopped reading the upstream) is the client's doing, and running out
        of this host's resources (file descriptors) is no target's."""
        if kind == "local":
            return False
        if kind == "timeout" or kind == "reset":
            return self.req_complete and not self.write_blocked
        return True

    cdef void drop_upstream(self):
        """Close the active exchange's upstream connection, connected or still connecting (its
        state is unknown), and give its target's slot back. No failure is counted against it."""
        if self.connect_task is not None:
            self.connect_task.cancel()
            self.connect_task = None
        if self.upstream is not None:
            if self.ctx is not None and self.ctx.target is not None:
                (<Target>self.ctx.target).active -= 1
            self.upstream.release(False)
            self.upstream = None

    cdef bint take_back_head(self):
        """The relayed response head (and any body after it) is still in the cork buffer,
        not written: drop it, so the client gets a gateway response rather than an empty
        reply (a head and a bad chunk size in one read). False once any of it was written."""
        if not self.corked or self.head_mark < 0:
            return False
        CORK_BUF.len = self.head_mark
        self.head_mark = -1
        self.responding = False
        self.body_mode = BODY_NONE
        self.ctx.status = 0
        self.ctx.response_length = 0
        self.cache_parts = None
        self.compressor = None
        return True

    cdef void cut_response(self):
        """End a response whose head reached the client but whose body cannot be completed.
        A body framed by Content-Length or chunking ends short, with a clean close that every
        client detects, after what was already relayed; a body delimited by the close itself
        would pass for complete, so that connection is reset."""
        if self.body_mode == BODY_CLOSE:
            sock = self.transport.get_extra_info("socket") if self.transport is not None else None
            if sock is not None:
                # SO_LINGER 0: a reset, not a FIN that would end the body as if complete
                # (RFC 9112 section 8)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self.abort()
            return
        self.body_mode = BODY_NONE      # no last chunk
        self.close_after = True
        self.exchange_done()

    cdef void upstream_head(self, UpstreamConnection conn, int status):
        """Relay the response head the upstream's parser just completed."""
        cdef RequestContext ctx = self.ctx
        cdef Route route = ctx.route
        cdef Snapshot snap = self.snap
        cdef Http1Parser p = conn.parser
        cdef int i, n = p.msg.n_headers
        cdef tuple pair
        cdef list headers = None
        cdef list conn_tokens = None
        cdef char num[16]
        cdef bint chunked = p.msg.chunked
        cdef bint has_length = p.msg.content_length >= 0 and not chunked
        cdef bint has_date = False
        cdef int kind
        cdef int kinds[RESPONSE_MAX_HEADERS]   # each header classified once, used twice below
        cdef bint no_body = ctx.method == b"HEAD" or status == 204 or status == 304 or status < 200
        if route.http_map is not None and status != 101:
            self.start_mapped_response(conn, status)
            return
        self.responding = True
        ctx.status = status
        (<Target>ctx.target).record_success()
        for i in range(n):
            kinds[i] = classify_ptr(p.name_ptr(i), p.name_len(i))
            if kinds[i] == H_CONNECTION:
                conn_tokens = connection_tokens(p.value_bytes(i), conn_tokens)
        cdef bint may_compress = (ctx.api is not None and ctx.api.min_compress >= 0 and not no_body
                                  and status == 200 and ctx.header(b"accept-encoding") is not None)
        if conn_tokens is not None or route.response_headers is not None or may_compress or \
                ctx.cache_key is not None or (ctx.api is not None and ctx.api.cors is not None):
            # slow path: headers as objects, for Connection-named removal, transforms, CORS
            headers = []
            for i in range(n):
                if forwarded_response_header(kinds[i]):
                    headers.append((p.name_bytes(i), p.value_bytes(i)))
            if conn_tokens is not None:
                headers = drop_named(headers, conn_tokens)
            if route.response_headers is not None:
                headers = (<HeaderTransform>route.response_headers).apply(headers, ctx)
            if ctx.cache_key is not None:
                self.start_cache_fill(ctx, status, p.msg.content_length, headers)
            if may_compress:
                headers = self.start_compression(ctx, headers, p.msg.content_length if has_length else -1)
                if self.compressor is not None:
                    has_length = False      # the compressed length is not known yet: chunked
            if ctx.api is not None and ctx.api.cors is not None:
                headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        if self.worker.draining or (self.snap.keepalive_requests > 0 and
                                    self.served + 1 >= self.snap.keepalive_requests):
            self.close_after = True
        if status == 101:
            self.body_mode = BODY_NONE
        elif no_body:
            self.body_mode = BODY_NONE
        elif has_length:
            self.body_mode = BODY_LENGTH
        elif ctx.http_minor == 1:
            self.body_mode = BODY_CHUNKED
        else:
            self.body_mode = BODY_CLOSE
            self.close_after = True
        if not ctx.keep_alive:
            self.close_after = True
        if not self.req_complete and status != 101:
            # answered before the whole body arrived: the rest of the body is not worth reading
            self.close_after = True
        out_reset()
        out_bytes(b"HTTP/1.1 ")
        num[0] = <char>(48 + (status // 100) % 10)   # llhttp guarantees 3 digits
        num[1] = <char>(48 + (status // 10) % 10)
        num[2] = <char>(48 + status % 10)
        num[3] = b' '
        out_put(num, 4)
        out_put(p.msg.buf + p.msg.reason_off, p.msg.reason_len)
        out_put("\r\n", 2)
        if headers is None:
            # PERF: header lines copied from the parser's buffer, no objects
            # (bench/wrk_compare.py, scenario keepalive)
            for i in range(n):
                kind = kinds[i]
                if kind == H_DATE:
                    has_date = True
                if forwarded_response_header(kind):
                    out_put(p.name_ptr(i), p.name_len(i))
                    out_put(": ", 2)
                    out_put(p.value_ptr(i), p.value_len(i))
                    out_put("\r\n", 2)
        else:
            for pair in headers:
                if classify(<bytes>pair[0]) == H_DATE:
                    has_date = True
                out_bytes(<bytes>pair[0])
                out_bytes(b": ")
                out_bytes(<bytes>pair[1])
                out_bytes(b"\r\n")
        if not has_date:
            # an origin without a clock: a proxy adds one (RFC 9110 section 6.6.1)
            out_bytes(b"Date: ")
            out_bytes(self.worker.date)
            out_bytes(b"\r\n")
        if snap.via is not None:
            out_bytes(b"Via: ")
            out_bytes(snap.via)
            out_bytes(b"\r\n")
        out_bytes(b"x-request-id: ")
        out_bytes(ctx.request_id)
        out_bytes(b"\r\n")
        self.out_api_headers(ctx)
        if ctx.cache_result == 2:
            out_bytes(b"X-Cache: Miss\r\n")
        if status == 101:
            out_bytes(b"Connection: upgrade\r\nUpgrade: ")
            out_bytes(ctx.upgrade_protocol)
            out_bytes(b"\r\n")
        elif self.body_mode == BODY_CHUNKED:
            out_bytes(b"Transfer-Encoding: chunked\r\n")
        if status != 101:
            if self.close_after:
                out_bytes(b"Connection: close\r\n")
            elif ctx.http_minor == 0:
                out_bytes(b"Connection: keep-alive\r\n")
        out_bytes(b"\r\n")
        self.send_ptr(OUT_BUF.p, OUT_BUF.len, None)
        # while the head sits in the cork buffer, take_back_head() can still unsay it
        self.head_mark = CORK_BUF.len - OUT_BUF.len if self.corked and OUT_BUF.len < CORK_DIRECT \
            and not self.lingering else -1
        if status == 101:
            self.tunnel = True
            conn.tunnel = True
            self.set_pause(PAUSE_PIPELINE, False)
            self.deadline_kind = DL_NONE
            if self.early_tunnel:
                conn.send_body(self.early_tunnel)
                self.early_tunnel = None
            return
        self.deadline_kind = DL_UPSTREAM_READ
        self.deadline = monotonic_coarse() + route.first_byte_timeout

    cdef void start_cache_fill(self, RequestContext ctx, int status, long long length, list headers):
        """A cacheable response (200 with a length that fits an entry): keep its head and body."""
        cdef tuple pair
        if status != 200 or length < 0 or length > (<SharedCache>self.snap.cache).max_entry_bytes:
            return
        self.cache_head = cache_head_of(headers)
        self.cache_status = status
        self.cache_parts = []

    cdef list start_compression(self, RequestContext ctx, list headers, long long length):
        """The API compresses responses (minimumCompressionSize) and the client accepts an
        encoding: set up self.compressor and return the headers to send instead."""
        from fastgate.phases.compression import Compressor, choose_encoding, should_compress
        cdef tuple pair
        ctype = None
        encoded = False
        for pair in headers:
            name = (<bytes>pair[0]).lower()
            if name == b"content-type":
                ctype = pair[1]
            elif name == b"content-encoding":
                encoded = True
        enc = choose_encoding(ctx.header(b"accept-encoding"))
        if enc is None or not should_compress(ctype, length, ctx.api.min_compress, encoded):
            return headers
        streaming = length < 0      # chunked / SSE: every chunk must reach the client at once
        self.compressor = Compressor(enc, flush_each_chunk=streaming)
        out = [pair for pair in headers if (<bytes>pair[0]).lower() not in (b"content-length", b"etag")]
        out.append((b"Content-Encoding", enc.encode()))
        out.append((b"Vary", b"Accept-Encoding"))
        return out

    cdef void upstream_body(self, bytes data):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if self.map_parts is not None:
            self.map_size += n
            if self.map_size <= MAP_RESPONSE_MAX:
                self.map_parts.append(data)
            else:
                self.map_parts = []     # over the limit: drained, answered 502 at the end
            self.deadline = monotonic_coarse() + self.ctx.route.first_byte_timeout
            return
        if self.cache_parts is not None:
            self.cache_parts.append(data)
        if self.compressor is not None and n:
            data = self.compressor.compress(data)
            n = PyBytes_GET_SIZE(data)
            if n == 0:
                return
        self.relay_body(PyBytes_AS_STRING(data), n, data)

    cdef void relay_body(self, const char* p, Py_ssize_t n, bytes whole):
        """Send n body bytes at p to the client in its framing (whole: the same bytes as an
        object, or None). upstream_body() ends here; a body with no mapping, cache fill or
        compression comes here straight from the upstream parser's buffer."""
        if n == 0 or self.body_mode == BODY_NONE:
            return
        self.ctx.response_length += n
        if self.body_mode == BODY_CHUNKED:
            self.send(chunk_frame(whole if whole is not None else PyBytes_FromStringAndSize(p, n)))
        else:
            self.send_ptr(p, n, whole)
        self.deadline = monotonic_coarse() + self.ctx.route.first_byte_timeout

    cdef void upstream_done(self, UpstreamConnection conn, bint reusable):
        cdef RequestContext ctx = self.ctx
        if self.map_parts is not None:
            self.finish_mapped_response(conn, reusable)
            return
        if self.cache_parts is not None:
            # the whole response arrived: the next requests for this key get it from the cache
            self.store_cached(ctx, self.cache_status, self.cache_head, b"".join(self.cache_parts))
            self.cache_parts = None
        if self.compressor is not None:
            tail = self.compressor.finish()
            self.compressor = None
            if tail and self.body_mode != BODY_NONE:
                ctx.response_length += len(tail)
                self.send(chunk_frame(tail) if self.body_mode == BODY_CHUNKED else tail)
        if self.body_mode == BODY_CHUNKED:
            self.send(b"0\r\n\r\n")
        ctx.integration_end = monotonic()
        (<Target>ctx.target).active -= 1
        self.upstream = None
        self.give_back(conn, reusable)
        self.exchange_done()

    cdef void give_back(self, UpstreamConnection conn, bint reusable):
        """After its whole response: conn to its target's pool when it may be reused and the
        whole request went out, else closed."""
        reusable = reusable and self.req_complete
        if reusable and self.write_blocked and conn.alive():
            # This client's full write buffer paused conn's reading (pause_writing), and the
            # resume_writing that undoes it goes to the next upstream or none. Pooled paused,
            # conn would not see its own close, and the next request's response on it would
            # never be read (a 504 after first_byte_timeout).
            conn.transport.resume_reading()
        conn.release(reusable)

    cdef void store_cached(self, RequestContext ctx, int status, bytes head, bytes body):
        """Keep a response for ctx.cache_key, in this host's cache and in Redis when shared."""
        cdef long long expires_ms
        if PyBytes_GET_SIZE(body) > (<SharedCache>self.snap.cache).max_entry_bytes:
            return
        expires_ms = epoch_ms() + (<RouteCache>ctx.route.cache).ttl_ms
        (<SharedCache>self.snap.cache).put(ctx.cache_key, expires_ms, status, head, body)
        if self.snap.cache_redis is not None:
            # written by a task: the response does not wait for Redis
            self.snap.cache_redis.store(ctx.cache_key, expires_ms, status, head, body)

    cdef void respond_mock(self):
        cdef Route route = self.ctx.route
        if route.mock_vtl is not None:
            self.respond_mock_vtl(route)
            return
        cdef bytes body = (<Template>route.mock_body).render(self.ctx) if route.mock_body is not None else b""
        self.respond(route.mock_status, route.mock_headers, body)

    cdef object mapping_event(self, RequestContext ctx, bytes body):
        """The payload 1.0 event of the request: mapping templates' $input and $context."""
        from fastgate.phases.functions.events import build_event_v1
        from fastgate.phases.functions.gateway import function_request
        return build_event_v1(function_request(ctx, body))

    cdef bint map_request(self, RequestContext ctx, Route route):
        """An http (non-proxy) integration's request template: the body sent upstream
        (False with ctx.error_type set when it refuses the request)."""
        if not self.decode_body(ctx):
            return False
        body = b"".join(self.body_chunks) if self.body_chunks else b""
        ctype = ctx.header(b"content-type")
        try:
            out = route.http_map.request(self.mapping_event(ctx, body), body,
                                         ctype.decode("latin-1") if ctype is not None else None)
        except Exception as e:    # never let a template bug take the worker down
            out = "DEFAULT_5XX"
            ctx.error_message = repr(e)
        if isinstance(out, str):
            ctx.error_type = out
            return False
        self.body_chunks = [out] if out else []
        self.body_kept = PyBytes_GET_SIZE(out)
        self.body_sent = 0
        self.body_retained = self.body_kept <= RETRY_BODY_MAX
        ctx.content_length = self.body_kept   # the upstream gets the mapped body, framed anew
        ctx.chunked = False
        return True

    cdef void start_mapped_response(self, UpstreamConnection conn, int status):
        """An http (non-proxy) integration's response: buffered, mapped at the end."""
        cdef Http1Parser p = conn.parser
        cdef int i
        (<Target>self.ctx.target).record_success()
        self.map_status = status
        self.map_headers = [(p.name_bytes(i), p.value_bytes(i)) for i in range(p.msg.n_headers)]
        self.map_parts = []
        self.map_size = 0

    cdef void finish_mapped_response(self, UpstreamConnection conn, bint reusable):
        cdef RequestContext ctx = self.ctx
        body = b"".join(self.map_parts)
        headers = self.map_headers
        self.map_parts = self.map_headers = None
        ctx.integration_end = monotonic()
        (<Target>ctx.target).active -= 1
        self.upstream = None
        self.give_back(conn, reusable)
        if self.map_size > MAP_RESPONSE_MAX:
            self.respond_error("INTEGRATION_FAILURE", "the upstream response is over %d bytes, "
                               "more than an integration response mapping takes" % MAP_RESPONSE_MAX)
            return
        accept = ctx.header(b"accept")
        try:
            result = ctx.route.http_map.response(
                self.mapping_event(ctx, b""), self.map_status, headers, body,
                accept.decode("latin-1") if accept is not None else None)
        except Exception as e:
            result = "DEFAULT_5XX"
            ctx.error_message = repr(e)
        self.respond_mapped(result)

    cdef void respond_mapped(self, object result):
        """What fastgate.phases.vtl made: (status, headers, body), or a gateway response type."""
        cdef RequestContext ctx = self.ctx
        if isinstance(result, str):
            self.respond_error(result, ctx.error_message)
            return
        if ctx.cache_key is not None and self.snap.cache is not None and result[0] == 200:
            # an http (non-proxy) integration's stage cache holds the mapped response
            self.store_cached(ctx, 200, cache_head_of(result[1]), result[2])
        if ctx.cache_result == 2:
            self.respond(result[0], result[1] + [(b"X-Cache", b"Miss")], result[2])
            return
        self.respond(result[0], result[1], result[2])

    cdef void respond_mock_vtl(self, Route route):
        """A mock with Velocity mapping templates (fastgate/phases/vtl.py): Python, off the fast path."""
        cdef RequestContext ctx = self.ctx
        if not self.decode_body(ctx):
            self.respond_error(ctx.error_type, ctx.error_message)
            return
        body = b"".join(self.body_chunks) if self.body_chunks else b""
        self.body_chunks = []
        ctype = ctx.header(b"content-type")
        accept = ctx.header(b"accept")
        try:
            result = route.mock_vtl.respond(self.mapping_event(ctx, body), body,
                                            ctype.decode("latin-1") if ctype is not None else None,
                                            accept.decode("latin-1") if accept is not None else None)
        except Exception as e:    # never let a template bug take the worker down
            result = "DEFAULT_5XX"
            ctx.error_message = repr(e)
        self.respond_mapped(result)

    cdef void start_function(self):
        """The whole body is here: hand the request to the worker's function runner, which
        calls function_done() when the function answers (or fails)."""
        cdef RequestContext ctx = self.ctx
        if ctx.integration_start > 0:
            # already running: a request without a body is whole at head-complete (the phases
            # start the function) and message-complete comes after; a function answers later,
            # so `responding` cannot tell, and the handler would run twice
            return
        ctx.integration_start = monotonic()
        if self.worker.functions is None:
            self.respond_error("INTEGRATION_FAILURE", "no function runner in this worker")
            return
        if not self.decode_body(ctx):
            self.respond_error(ctx.error_type, ctx.error_message)
            return
        body = b"".join(self.body_chunks) if self.body_chunks else b""
        self.body_chunks = []
        self.deadline_kind = DL_NONE   # the runner enforces the integration timeout itself
        self.worker.functions.start(self, ctx, body)

    def function_done(self, RequestContext ctx, int status, list headers, bytes body,
                      str error_type=None, str detail=None):
        """A function's response (or its failure: error_type set, body AWS's JSON)."""
        if ctx is not self.ctx or self.closed or self.responding:
            return      # the client went away meanwhile, or a timeout already answered
        ctx.integration_end = monotonic()
        if error_type is not None:
            ctx.error_type = error_type
            ctx.error_message = detail
            headers = [(b"Content-Type", b"application/json")]
            if ctx.api is not None and ctx.api.rest:
                headers.append((b"x-amzn-ErrorType", b"InternalServerErrorException"))
        self.respond(status, headers, body)
        self.uncork()

    def function_stream_head(self, RequestContext ctx, int status, list headers):
        """A streamed function response's head; chunks follow with function_stream_chunk.
        False when the client is gone (or a timeout answered): the stream is not wanted."""
        if ctx is not self.ctx or self.closed or self.responding:
            return False
        ctx.integration_end = monotonic()     # the first byte: the integration latency
        if ctx.route.response_headers is not None:
            headers = (<HeaderTransform>ctx.route.response_headers).apply(headers, ctx)
        if ctx.api is not None and ctx.api.cors is not None:
            headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        ctx.status = status
        self.responding = True
        self.streaming_function = True
        if not self.req_complete or not ctx.keep_alive or self.worker.draining or (
                self.snap.keepalive_requests > 0 and self.served + 1 >= self.snap.keepalive_requests):
            self.close_after = True
        if ctx.method == b"HEAD" or status == 204 or status == 304 or status < 200:
            self.body_mode = BODY_NONE
        elif ctx.http_minor == 1:
            self.body_mode = BODY_CHUNKED
        else:
            self.body_mode = BODY_CLOSE      # HTTP/1.0: the end of the body is the end of the connection
            self.close_after = True
        self.write_head(status, None, headers, -1)     # (which frames the stream itself)
        self.uncork()
        return True

    def function_stream_chunk(self, RequestContext ctx, bytes data):
        """One chunk of a streamed function response, written as it comes (False: client gone)."""
        if ctx is not self.ctx or self.closed:
            return False
        if self.body_mode == BODY_NONE or not data:
            return True
        ctx.response_length += PyBytes_GET_SIZE(data)
        self.send(chunk_frame(data) if self.body_mode == BODY_CHUNKED else data)
        return True

    def function_stream_end(self, RequestContext ctx, str error_type=None, str detail=None):
        """The stream is over. Complete: the last chunk, then the next request. Failed
        mid-stream: the connection is closed without the last chunk, so the client can
        tell the body is incomplete (nothing else can be said once the head is out)."""
        if ctx is not self.ctx or self.closed:
            return
        self.streaming_function = False
        if error_type is not None:
            ctx.error_type = error_type
            ctx.error_message = detail
            self.close_after = True
            if self.body_mode == BODY_CHUNKED:
                self.body_mode = BODY_NONE
        elif self.body_mode == BODY_CHUNKED:
            self.send(b"0\r\n\r\n")
        self.exchange_done()

    cdef void respond_echo(self):
        """The request as the integration would have received it, after transforms, as JSON."""
        cdef RequestContext ctx = self.ctx
        body = b"".join(self.body_chunks) if self.body_chunks else b""
        try:
            text = body.decode("utf-8")
            b64 = False
        except UnicodeDecodeError:
            import base64
            text = base64.b64encode(body).decode()
            b64 = True
        headers = {}
        # exactly the head an http integration would get (gateway headers included), with the
        # request's own Host; framing lines say nothing about the request itself
        for line in self.build_upstream_head(ctx.host).split(b"\r\n")[1:]:
            name, sep, value = line.partition(b": ")
            if not sep:
                continue
            k = name.decode("latin-1").lower()
            if k in ("content-length", "transfer-encoding"):
                continue
            v = value.decode("latin-1")
            headers[k] = headers[k] + "," + v if k in headers else v
        doc = {
            "method": ctx.method.decode(),
            "path": ctx.upstream_path.split(b"?", 1)[0].decode("latin-1"),
            "rawPath": ctx.path.decode("latin-1"),
            "query": ctx.query.decode("latin-1"),
            "routeKey": ctx.route.route_key,
            "resourcePath": ctx.route.resource_path or None,
            "stagePath": ctx.stage_path.decode("latin-1") if ctx.stage_path is not None else None,
            "pathParameters": {k.decode("latin-1"): v.decode("latin-1")
                               for k, v in ctx.path_params.items()} if ctx.path_params else {},
            "headers": headers,
            "body": text,
            "isBase64Encoded": b64,
            "requestContext": {
                "requestId": ctx.request_id.decode("latin-1"),
                "sourceIp": ctx.source_ip.decode(),
                "forwardedFor": ctx.forwarded_for.decode("latin-1"),
                "protocol": "HTTP/1.%d" % ctx.http_minor,
                "domainName": ctx.route_host.decode("latin-1"),
                "requestTimeEpoch": ctx.request_time_ms,
            },
        }
        if ctx.api is not None:
            doc["requestContext"].update({
                "apiId": ctx.api.api_id, "stage": ctx.api.stage,
                "deploymentId": ctx.api.deployment_id, "canary": ctx.api.is_canary})
            doc["stageVariables"] = ctx.api.variables or None
        self.respond(200, [(b"Content-Type", b"application/json")],
                     orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")

    # --- responses ----------------------------------------------------------------

    cdef void respond(self, int status, list headers, bytes body):
        """A complete response the gateway makes itself."""
        cdef RequestContext ctx = self.ctx
        if ctx.route is not None and ctx.route.response_headers is not None:
            headers = (<HeaderTransform>ctx.route.response_headers).apply(headers, ctx)
        if ctx.route is not None and ctx.api is not None and ctx.api.cors is not None:
            # (a preflight answered before routing carries its own CORS headers)
            headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        if ctx.api is not None and ctx.api.min_compress >= 0 and status == 200 and body and \
                ctx.header(b"accept-encoding") is not None:
            body, headers = compressed_whole(ctx, headers, body)
        ctx.status = status
        self.responding = True
        if not self.req_complete:
            self.close_after = True
        if not ctx.keep_alive or self.worker.draining or (
                self.snap.keepalive_requests > 0 and self.served + 1 >= self.snap.keepalive_requests):
            self.close_after = True
        self.write_head(status, None, headers, PyBytes_GET_SIZE(body))
        if ctx.method != b"HEAD" and status >= 200 and status != 204 and status != 304:
            self.send(body)
            ctx.response_length = PyBytes_GET_SIZE(body)
        self.exchange_done()

    cdef void respond_error(self, str error_type, str detail):
        """A gateway response: the API's table when an API stage matched, else the gateway's."""
        cdef RequestContext ctx = self.ctx
        cdef dict table = ctx.api.responses if ctx.api is not None else self.snap.responses
        cdef GatewayResponse gr = table.get(error_type)
        cdef list headers
        cdef bytes body
        if gr is None:
            gr = table.get("DEFAULT_5XX")
        cdef int status = gr.status
        self.drop_upstream()
        ctx.error_type = error_type
        if detail:
            # what failed (an upstream's address, a template's exception) is for the access and
            # execution logs ($context.error.message, errorMessage), never the client: AWS's
            # bodies carry only the type's message
            ctx.error_message = detail
        headers = [(b"Content-Type", b"application/json")]
        if ctx.api is not None and ctx.api.rest and gr.error_type:
            headers.append((b"x-amzn-ErrorType", self.error_code or gr.error_type))
        self.error_code = None
        if self.error_headers is not None:
            headers.extend(self.error_headers)
            self.error_headers = None
        body = None
        if gr.headers or gr.body is not None:
            # a customised response renders $context.error.message as AWS does: the type's message
            logged = ctx.error_message
            ctx.error_message = gr.message
            for pair in gr.headers or ():
                headers.append((<bytes>pair[0], (<Template>pair[1]).render(ctx)))
            if gr.body is not None:
                body = (<Template>gr.body).render(ctx)
            ctx.error_message = logged
        if body is None:
            # AWS's own body for this denial (an authorizer's message), else the type's message
            body = self.error_body if self.error_body is not None else orjson.dumps({"message": gr.message})
        self.error_body = None
        if error_type in PROTOCOL_ERRORS:
            self.close_after = True
        self.respond(status, headers, body)

    cdef void out_api_headers(self, RequestContext ctx):
        """The request id header API Gateway adds: REST APIs x-amzn-RequestId, HTTP APIs apigw-requestid."""
        if ctx.api is None:
            return
        if ctx.api.rest:
            out_bytes(b"x-amzn-RequestId: ")
        else:
            out_bytes(b"apigw-requestid: ")
        out_bytes(ctx.request_id)
        out_bytes(b"\r\n")

    cdef void write_head(self, int status, bytes reason, list headers, long long length):
        """A head the gateway makes; length -1: no Content-Length (a stream, framed by body_mode).
        The framing is the gateway's alone: framing and hop-by-hop headers among `headers`
        (a function's result, a mock's or a mapping's headers) never reach the client as
        such (RFC 9112 section 6.3: two Content-Lengths, or one beside Transfer-Encoding,
        make clients refuse the response or read it wrong). A REST API keeps an
        integration's Content-Length, Connection and Date as x-amzn-Remapped-*, as API
        Gateway does; anything else drops them (the gateway writes its own Date)."""
        cdef RequestContext ctx = self.ctx
        cdef tuple pair
        cdef int kind
        cdef bint rest = ctx.api is not None and ctx.api.rest
        out_reset()
        out_bytes(status_line(status, reason))
        out_bytes(b"Date: ")
        out_bytes(self.worker.date)
        out_bytes(b"\r\n")
        for pair in headers:
            kind = classify(<bytes>pair[0])
            if kind == H_CONTENT_LENGTH or kind == H_CONNECTION or kind == H_DATE:
                if not rest:
                    continue
                out_bytes(b"x-amzn-Remapped-")
            elif not forwarded_response_header(kind):
                continue
            out_bytes(<bytes>pair[0])
            out_bytes(b": ")
            out_bytes(<bytes>pair[1])
            out_bytes(b"\r\n")
        out_bytes(b"x-request-id: ")
        out_bytes(ctx.request_id)
        out_bytes(b"\r\n")
        self.out_api_headers(ctx)
        if status < 200 or status == 204 or status == 304:
            pass    # no body, so no framing (RFC 9110 sections 8.6, 15.3.5, 15.4.5)
        elif length >= 0:
            out_bytes(b"Content-Length: %d\r\n" % length)
        elif self.body_mode == BODY_CHUNKED:
            out_bytes(b"Transfer-Encoding: chunked\r\n")
        if self.close_after:
            out_bytes(b"Connection: close\r\n")
        elif ctx.http_minor == 0:
            out_bytes(b"Connection: keep-alive\r\n")
        out_bytes(b"\r\n")
        self.send_ptr(OUT_BUF.p, OUT_BUF.len, None)

    cdef void exchange_done(self):
        """The response is fully written: log it, then serve the next request or close."""
        cdef RequestContext ctx = self.ctx
        cdef PendingRequest p
        ctx.end = monotonic()
        self.log_exchange()
        self.served += 1
        self.ctx = None
        self.responding = False
        self.head_mark = -1
        self.streaming_function = False
        self.waiting = WAIT_NONE
        self.cache_parts = None
        self.compressor = None
        self.map_parts = self.map_headers = None
        if self.body_chunks:
            self.body_chunks = []
        self.body_kept = 0
        self.body_sent = 0
        self.total_deadline = 0
        self.set_pause(PAUSE_NOT_READY, False)
        self.set_pause(PAUSE_UPSTREAM_FULL, False)
        if self.close_after or self.closed or not self.req_complete:
            if not self.req_complete:
                self.unread = True
            self.close_transport()
            return
        if self.pending:
            p = <PendingRequest>self.pending.pop(0)
            if not self.pending:
                self.set_pause(PAUSE_PIPELINE, False)
            if self.parsing_pending is p:
                self.parsing_pending = None
            self.begin_active(p.ctx, p.snap, p.chunks, p.complete, p.error_type)
            return
        self.set_pause(PAUSE_PIPELINE, False)
        if self.in_head:
            self.deadline_kind = DL_HEAD
            self.deadline = self.parsing.start + self.worker.snapshot.header_timeout
        else:
            self.deadline_kind = DL_IDLE
            self.deadline = ctx.end + self.worker.snapshot.keepalive_timeout

    cdef void log_exchange(self):
        cdef RequestContext ctx = self.ctx
        cdef Snapshot snap = self.snap
        cdef int slot
        if ctx is None or snap is None:
            return
        if ctx.end == 0:
            ctx.end = monotonic()
        if ctx.status == 0:
            ctx.status = 499
        if snap.access_log is not None:
            snap.access_log.log(ctx)
        # the dashboard's live tail (a shared ring; nothing when no ring is installed)
        record_finished(ctx, self.worker.worker_id, ctx.api_key_id)
        if ctx.trace is not None:
            snap.tracer.finish(<Trace>ctx.trace, ctx)
        if ctx.metered and self.worker.usage is not None:
            # an API key's usage per stage, the basis for billing (fastgate.control.usage); a 429 the
            # gateway made itself (an error type set) is a throttle or the quota.
            # PERF: C increments on the shared mapping, no Python call (bench/bench_usage.py)
            self.worker.usage.record(ctx.usage_slot, ctx.status,
                                     ctx.status == 429 and ctx.error_type is not None,
                                     ctx.quota_used, ctx.request_length, ctx.response_length)
        if snap.metrics is not None:
            slot = snap.route_series[ctx.route.index] if ctx.route is not None else snap.unmatched_series
            if slot >= 0:
                snap.metrics.record_context(slot, ctx, self.throttle_level)
        if snap.execution_log is not None:
            (<ExecutionLog>snap.execution_log).log(ctx, ctx.upstream_status, self.throttle_level)
        self.throttle_level = -1

    cdef void set_pause(self, int reason, bint on):
        cdef double pause
        if on:
            self.pause_reasons |= reason
        else:
            self.pause_reasons &= ~reason
        if self.closed or self.transport is None:
            return
        if self.pause_reasons and not self.reading_paused:
            self.reading_paused = True
            self.paused_at = monotonic_coarse()
            self.transport.pause_reading()
        elif not self.pause_reasons and self.reading_paused:
            self.reading_paused = False
            # time the gateway did not read is not the client's: its body clock moves on by it
            pause = monotonic_coarse() - self.paused_at
            self.body_start += pause
            self.body_last += pause
            self.transport.resume_reading()

    cdef void check_timeout(self, double now):
        cdef int kind = self.deadline_kind
        cdef double due
        cdef str detail
        if self.total_deadline > 0 and self.total_deadline <= now and self.ctx is not None:
            kind = DL_UPSTREAM_READ
        if self.lingering:
            self.closed = True
            self.transport.close()
        elif kind == DL_IDLE or kind == DL_DRAIN:
            self.close_transport()
        elif kind == DL_HEAD:
            if self.ctx is None and self.parsing is not None:
                self.close_after = True
                self.bad_input("REQUEST_TIMEOUT", "request head not complete in time")
            elif self.ctx is None:
                self.close_transport()
        elif kind == DL_BODY:
            if self.ctx is not None and not self.responding:
                due = self.body_due()
                if due > now:
                    self.deadline = due     # a pause moved the body's clock on
                    return
                self.close_after = True
                if self.req_complete or now >= self.body_last + self.snap.body_timeout:
                    detail = "request body stalled"
                elif self.snap.body_deadline > 0 and now >= self.body_start + self.snap.body_deadline:
                    detail = "request body not complete within %g s" % self.snap.body_deadline
                else:
                    detail = "request body slower than %g bytes/s" % self.snap.min_body_rate
                self.respond_error("REQUEST_TIMEOUT", detail)
            else:
                self.abort()
        elif kind == DL_CONNECT:
            if self.connect_task is not None:
                self.connect_task.cancel()
                self.connect_task = None
            self.upstream_failed("connect_timeout", "connect timed out", True)
        elif kind == DL_UPSTREAM_READ:
            self.deadline_kind = DL_NONE
            self.upstream_failed("timeout", "no response in time", False)

    cdef void abort(self):
        """Close now: the client's framing cannot be completed."""
        self.drop_upstream()
        self.close_after = True
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def close_transport(self):
        if self.transport is None or self.closed or self.lingering:
            return
        self.uncork()
        if self.unread and not self.tunnel and self.transport.can_write_eof():
            # Lingering close (nginx's): closing with unread input makes the kernel send a reset,
            # which can destroy the response we just wrote before the client reads it, and a
            # client that writes its whole body before reading (http.client, h11) fails on the
            # reset instead of reading the answer. Send FIN, discard what still comes, close on
            # EOF, after LINGER_IDLE_MS without input, or after LINGER_MAX_MS in all.
            self.lingering = True
            self.transport.write_eof()
            self.pause_reasons = 0
            if self.reading_paused:
                self.reading_paused = False
                self.transport.resume_reading()
            self.deadline_kind = DL_DRAIN
            self.deadline = monotonic_coarse() + LINGER_IDLE_MS / 1000.0
            # a draining worker does not wait for an uploader that will not stop
            self.total_deadline = self.deadline if self.worker.draining else \
                monotonic_coarse() + LINGER_MAX_MS / 1000.0
            return
        self.closed = True
        self.transport.close()

    cdef void cork(self):
        """Gather writes to the client until uncork() (a read callback's writes leave together)."""
        global CORK_OWNER
        if CORK_OWNER is not None and CORK_OWNER is not self:
            CORK_OWNER.uncork()
        CORK_OWNER = self
        self.corked = True

    cdef void send(self, data):
        """Write to the client; while corked (inside a read callback), gather instead."""
        if self.lingering:
            return   # the write side is shut: nothing may follow the FIN
        if self.corked and type(data) is bytes:
            self.send_ptr(PyBytes_AS_STRING(<bytes>data), PyBytes_GET_SIZE(<bytes>data), <bytes>data)
            return
        self.flush_cork()
        if self.transport is not None:
            self.t_write(data)

    cdef void send_ptr(self, const char* p, Py_ssize_t n, bytes whole):
        """Write n bytes at p to the client (whole: the same bytes as an object, or None)."""
        if self.lingering or n == 0:
            return
        if self.corked and n < CORK_DIRECT:
            if CORK_BUF.len + n > CORK_MAX:
                self.flush_cork()
            buf_put(&CORK_BUF, p, n)
            return
        self.flush_cork()
        if self.transport is not None:
            self.t_write(whole if whole is not None else PyBytes_FromStringAndSize(p, n))

    cdef void flush_cork(self):
        """Write what the cork gathered so far (the cork stays)."""
        cdef bytes data
        if not self.corked or CORK_BUF.len == 0:
            return
        data = PyBytes_FromStringAndSize(CORK_BUF.p, CORK_BUF.len)
        CORK_BUF.len = 0
        self.head_mark = -1
        if self.transport is not None and not self.t_is_closing():
            self.t_write(data)

    cdef void uncork(self):
        global CORK_OWNER
        if not self.corked:
            return
        self.flush_cork()
        self.corked = False
        CORK_OWNER = None
        if CORK_BUF.cap > CORK_KEEP:
            free(CORK_BUF.p)
            CORK_BUF.p = NULL
            CORK_BUF.cap = 0

    cdef void shutdown(self):
        """Graceful drain: close if idle, else close after the current response. A tunnel
        (WebSocket) runs on until one side closes it or the drain timeout ends it: pausing
        its reads, as for a pipelined request, would stall it."""
        self.close_after = True
        if self.tunnel:
            return
        if self.ctx is None and not self.in_head:
            self.close_transport()
        else:
            self.set_pause(PAUSE_PIPELINE, True)


cdef frozenset LOCAL_ERRNOS = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])


@cython.final     # PERF: its cpdef alive() is a direct C call (bench/wrk_compare.py keepalive)
cdef class UpstreamConnection:
    def __init__(self, Target target):
        self.target = target
        # upstream heads may be larger than what clients may send (cookies, CSP); nginx's
        # proxy_buffer_size is only 4-8 KiB by default
        self.parser = Http1Parser(True, RESPONSE_MAX_HEADERS, RESPONSE_MAX_HEAD, RESPONSE_MAX_HEAD)

    cpdef bint alive(self):
        return self.is_alive and self.transport is not None and not self.t_is_closing()

    cdef void attach(self, ClientConnection client, bint head_request):
        self.client = client
        self.head_request = head_request
        self.got_bytes = False
        self.head_done = False
        self.until_close = False
        self.interim = False
        self.head_written = False
        # a HEAD response has no body whatever its Content-Length says
        self.parser.msg.skip_body = head_request

    cdef void send_head(self, bytes data):
        """The request head, with whatever body bytes came before it."""
        self.t_write(data)
        self.head_written = True

    cdef void send_body(self, bytes data):
        """Request body bytes (or tunnel bytes) after the head. Before it they are not
        sent: the caller keeps them until the head goes (ClientConnection.add_body)."""
        if self.head_written:
            self.t_write(data)

    cdef void release(self, bint reusable):
        """Return to the pool when its state is known-good, else close it."""
        cdef Target t = self.target
        self.client = None
        # a transport already closing is caught when popped (alive()), or leaves the pool
        # at connection_lost: no Python is_closing() call per request here
        if reusable and self.is_alive and self.transport is not None and t.push_idle(self):
            return
        self.close()

    cpdef close(self):
        if self.transport is not None and self.is_alive:
            self.is_alive = False
            self.transport.close()

    def on_connected(self, fut):
        cdef ClientConnection client = self.client
        if fut.cancelled():
            # connect timed out, or the client left
            if self.transport is None:
                self.target.closed()    # never connected: no connection_lost will count it
            else:
                self.close()            # connection_lost counts it closed
            return
        exc = fut.exception()
        if client is None or client.upstream is not self:
            if exc is None:
                self.close()
            return
        if exc is not None:
            self.target.closed()
            if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
                # this host is out of sockets or memory: no target's fault, and no other would do
                client.upstream_failed("local", f"connect failed: {exc.strerror or exc}", False)
            else:
                client.upstream_failed("connect", f"connect failed: {exc.strerror or exc}"
                                       if isinstance(exc, OSError) else f"connect failed: {exc}", True)
            return
        client.upstream_ready(self)

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport
        self.t_write = transport.write
        self.t_is_closing = transport.is_closing
        self.is_alive = True

    def connection_lost(self, exc):
        cdef ClientConnection client = self.client
        self.is_alive = False
        self.target.closed()
        if client is None:
            self.target.forget_idle(self)
            return
        if self.tunnel:
            self.client = None
            client.close_transport()
            return
        if self.until_close and self.head_done:
            self.client = None
            client.upstream_done(self, False)
            return
        # reset before the response completed; a reused socket that said nothing was stale
        client.upstream_failed("reset", "connection closed before the response completed",
                               not self.got_bytes)

    def eof_received(self):
        if self.tunnel and self.client is not None:
            self.tunnel_eofs += 1
            if self.tunnel_eofs >= 2:
                # the client half-closed first: both directions are done (see ClientConnection)
                self.client.close_transport()
                return False
            if self.client.transport.can_write_eof():
                self.client.transport.write_eof()
            return True
        return False

    def pause_writing(self):
        if self.client is not None:
            self.client.set_pause(PAUSE_UPSTREAM_FULL, True)

    def resume_writing(self):
        if self.client is not None:
            self.client.set_pause(PAUSE_UPSTREAM_FULL, False)

    def data_received(self, bytes data):
        cdef ClientConnection client = self.client
        cdef const char* buf = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), off = 0
        cdef int ev
        if client is None:
            # an idle connection must not speak: its state is unknown now
            self.close()
            return
        if self.tunnel:
            client.transport.write(data)
            return
        self.got_bytes = True
        # PERF: a response head and body that arrive together leave in one write
        # (bench/wrk_compare.py, scenario keepalive)
        client.cork()
        try:
            while True:
                ev = self.parser.feed(buf + off, n - off)
                off += self.parser.consumed
                if ev == EV_NEED_MORE or not self.on_event(ev, data, buf, off, n):
                    break
        finally:
            client.uncork()

    cdef bint on_event(self, int ev, bytes data, const char* buf, Py_ssize_t off, Py_ssize_t n):
        """Handle one parser event; False stops reading this input."""
        cdef ClientConnection client = self.client
        cdef Http1Parser p = self.parser
        cdef int status = p.p.status_code
        if client is None:
            if off < n or ev != EV_MESSAGE_COMPLETE:
                self.close()   # bytes after the response: this connection's state is unknown
            return False
        if ev == EV_HEAD_COMPLETE:
            if 100 <= status < 200 and status != 101:
                self.interim = True   # not relayed; the final response follows
                return True
            if status == 101 and not client.ctx.upgrade:
                self.client = None
                client.upstream_failed("protocol", "101 to a request that did not ask to upgrade", False)
                self.close()
                return False
            self.head_done = True
            client.ctx.upstream_status = status
            if client.ctx.trace is not None:
                (<Trace>client.ctx.trace).upstream_status = status
            self.until_close = (not p.msg.chunked and p.msg.content_length < 0 and not self.head_request
                                and status >= 200 and status != 204 and status != 304)
            client.upstream_head(self, status)
            return True
        if ev == EV_BODY:
            if self.head_done:
                if client.map_parts is None and client.cache_parts is None and \
                        client.compressor is None:
                    # PERF: relayed from the parser's buffer into the client's cork buffer, no
                    # bytes object (bench/wrk_compare.py, scenario keepalive)
                    client.relay_body(p.msg.body_at, p.msg.body_len,
                                      data if p.msg.body_at == buf and p.msg.body_len == n else None)
                else:
                    client.upstream_body(data if p.msg.body_at == buf and p.msg.body_len == n
                                         else PyBytes_FromStringAndSize(p.msg.body_at, p.msg.body_len))
            return True
        if ev == EV_MESSAGE_COMPLETE:
            if self.interim:
                self.interim = False
                return True
            if not self.head_done or status == 101:
                return True
            self.client = None
            client.upstream_done(self, p.msg.keep_alive)
            return True   # anything after the response closes the connection (above)
        if ev == EV_UPGRADE:
            if self.tunnel and off < n:
                client.send(data[off:])
            return False
        # EV_ERROR
        self.client = None
        client.upstream_failed("protocol", "invalid response: " + (<bytes>p.p.reason).decode(
            "latin-1", "replace"), False)
        self.close()
        return False
