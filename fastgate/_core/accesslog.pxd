# The access log: one line per finished request, formatted on the hot path
# into an in-memory buffer, written to disk by a background thread.
#
# Formats (the `format` argument):
#   "clf"    Common Log Format as API Gateway's CLF template writes it, with
#            $context.requestId appended:
#            1.2.3.4 - - [25/Nov/2026:09:29:35 +0000] "GET /pets HTTP/1.1" 200 17 <requestId>
#   "json"   one JSON object per line; every listed variable, as a string
#            (API Gateway's own JSON template quotes every value too)
#   other    a template of API Gateway $context.* variables, e.g.
#            '$context.requestId $context.status $context.responseLatency'
#
# Variables (units as API Gateway documents them; a missing value renders "-"):
#   $context.requestId             x-request-id of the request
#   $context.identity.sourceIp     TCP peer address
#   $context.identity.userAgent    User-Agent header
#   $context.httpMethod            request method
#   $context.path                  request path as sent, without the query
#   $context.routeKey              matched route key ("GET /pets/{id}")
#   $context.protocol              "HTTP/1.1" | "HTTP/1.0"
#   $context.status                status sent to the client
#   $context.responseLength        response body bytes sent
#   $context.requestTime           CLF time, UTC: 25/Nov/2026:09:29:35 +0000 (cached per second)
#   $context.requestTimeEpoch      epoch ms of the first request byte
#   $context.integrationLatency    ms (integer) spent in the integration
#   $context.responseLatency       ms (integer) first request byte -> last response byte
#   $context.domainName            Host without port, lowercased
#   $context.error.responseType    gateway response type when the gateway answered itself
#   $context.error.message         its message
#   $context.cacheStatus           fastgate's own: the response cache's answer, "hit" (this
#                                  host), "redis_hit" (another host's, via Redis), "miss";
#                                  "-" for a route that does not cache
# Any other $context.* name is accepted and renders "-" (so templates copied from
# API Gateway keep working); AccessLog.unsupported lists them for a config warning.
#
# Escaping: "clf" escapes as nginx's default does (\" \\ and \xHH for bytes
# below 0x20 and from 0x7f); "json" and templates escape as JSON strings
# (invalid UTF-8 bytes become \u00XX), so a JSON-shaped template stays valid.
#
# Threads: log() and flush() must run on one thread (the worker's event loop);
# only whole chunks of lines cross to the writer thread. Create the AccessLog
# after fork: threads do not survive fork.

from fastgate._core.pipeline cimport RequestContext

cdef enum:
    FLUSH_AT = 65536                  # bytes buffered before log() flushes by itself (64 KiB)
    MAX_PENDING = 64 * 1024 * 1024    # bytes queued for the writer before lines are dropped (64 MiB)
    PIPE_CHUNK = 4096                 # bytes per write to a pipe: PIPE_BUF, so workers sharing
                                      # stdout never interleave inside a line

cdef enum Escape:
    ESCAPE_CLF = 0
    ESCAPE_JSON = 1

cdef enum Var:
    VAR_LITERAL = 0                   # op writes only its literal
    VAR_REQUEST_ID = 1
    VAR_SOURCE_IP = 2
    VAR_USER_AGENT = 3
    VAR_HTTP_METHOD = 4
    VAR_PATH = 5
    VAR_ROUTE_KEY = 6
    VAR_PROTOCOL = 7
    VAR_STATUS = 8
    VAR_RESPONSE_LENGTH = 9
    VAR_REQUEST_TIME = 10
    VAR_REQUEST_TIME_EPOCH = 11
    VAR_INTEGRATION_LATENCY = 12
    VAR_RESPONSE_LATENCY = 13
    VAR_DOMAIN_NAME = 14
    VAR_ERROR_RESPONSE_TYPE = 15
    VAR_ERROR_MESSAGE = 16
    VAR_CACHE_STATUS = 17             # fastgate's own: hit | miss | redis_hit, "-" when not cached

ctypedef struct Op:
    Py_ssize_t lit_start              # literal text before the variable, in AccessLog.literals
    Py_ssize_t lit_len
    int var                           # a Var; VAR_LITERAL for the trailing literal


cdef class AccessLog:
    cdef readonly str path            # file path, or "-" for stdout
    cdef readonly str format          # as given
    cdef readonly list unsupported    # $context names in the template that render "-"
    cdef readonly long long dropped_lines   # lines lost because the writer fell MAX_PENDING behind
    cdef readonly long long write_errors    # failed write() calls (disk full, ...)

    # compiled template
    cdef bytes literals               # all literal text, concatenated
    cdef Op* ops
    cdef int n_ops
    cdef int escape                   # an Escape

    # hot buffer, owned by the loop thread
    cdef char* buf
    cdef Py_ssize_t buf_len
    cdef Py_ssize_t buf_cap
    cdef long long buf_lines

    # requestTime cache: the CLF text of one epoch second
    cdef long long time_cached_s
    cdef char time_text[32]
    cdef int time_len

    # writer side
    cdef object queue                 # queue.SimpleQueue of bytes chunks and control sentinels
    cdef object thread
    cdef long long pending            # bytes queued and not yet written
    cdef object timer                 # asyncio TimerHandle of start_timer(), or None
    cdef bint closed

    cpdef void log(self, RequestContext ctx) except *
    cdef int grow(self, Py_ssize_t need) except -1       # slow path of every put: realloc the buffer
    cdef int put(self, const char* p, Py_ssize_t n) except -1
    cdef int put_escaped(self, const unsigned char* p, Py_ssize_t n) except -1
    cdef int put_int(self, long long v) except -1
    cdef int put_bytes(self, bytes value) except -1     # None or b"" -> "-"
    cdef int put_str(self, str value) except -1         # None or "" -> "-"
    cdef int put_ms(self, double seconds) except -1     # integer milliseconds, rounded
    cdef int put_request_time(self, long long epoch_ms) except -1
