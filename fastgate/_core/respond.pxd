# The response phase: the one place every response goes through, however it was made —
# proxied from an upstream (relay_head / relay / finish_relay), made by the gateway whole
# (respond: mock, echo, function result, cache hit, mapped integration response), a
# gateway response for an error (respond_error), or streamed by a function (start_stream /
# stream / end_stream). Here, and only here: response header transforms, CORS, compression,
# cache fill, framing (BodyMode) and the keep-alive decision, the head written in one C
# buffer, and the end of the exchange (access log, metrics, usage, tracing, then the
# connection's next request).

from fastgate._core.http1 cimport Http1Parser
from fastgate._core.pipeline cimport RequestContext
from fastgate._core.runtime cimport Downstream, Worker


cdef enum:
    RESPONSE_MAX_HEADERS = 200    # header lines of an upstream response (its parser stops there)
    RESPONSE_MAX_HEAD = 65536     # bytes of an upstream response head: larger than what clients
                                  # may send (cookies, CSP); nginx's proxy_buffer_size is 4-8 KiB


cdef class Responder:
    cdef Downstream down                  # the client side the response goes to
    cdef Worker worker

    # responses the gateway makes
    cdef void respond(self, RequestContext ctx, int status, list headers, bytes body)
    cdef void respond_error(self, RequestContext ctx, str error_type, str detail, int status=*)
    cdef void respond_integration(self, RequestContext ctx, int status, list headers, bytes body)
    cdef void respond_result(self, RequestContext ctx, object result)   # (status, headers, body) | type
    # a proxied response: its head from the upstream's parser, then its body
    cdef void relay_head(self, RequestContext ctx, Http1Parser p, int status)
    cdef void relay(self, RequestContext ctx, const char* p, Py_ssize_t n, bytes whole)
    cdef void relay_data(self, RequestContext ctx, bytes data)     # with cache fill / compression
    cdef bint relays_raw(self, RequestContext ctx)                 # relay() may take parser bytes
    cdef void finish_relay(self, RequestContext ctx)
    cdef bint take_back_head(self, RequestContext ctx)   # unsay a head still in the cork buffer
    cdef void cut_short(self, RequestContext ctx)        # end a body that cannot be completed
    # a streamed response (a function's)
    cdef void start_stream(self, RequestContext ctx, int status, list headers)
    cdef void stream(self, RequestContext ctx, bytes data)
    cdef void end_stream(self, RequestContext ctx, str error_type, str detail)
    # the cache
    cdef void store_cached(self, RequestContext ctx, int status, bytes head, bytes body)
    # the end of the exchange
    cdef void done(self, RequestContext ctx)
    cdef void log(self, RequestContext ctx)

    # the parts every response shares
    cdef list finish_headers(self, RequestContext ctx, list headers)
    cdef void keep_alive_decision(self, RequestContext ctx)
    cdef void write_head(self, RequestContext ctx, int status, list headers, long long length)
    cdef void head_tail(self, RequestContext ctx, int status, bint has_date)
    cdef void request_id_lines(self, RequestContext ctx)
    cdef void connection_line(self, RequestContext ctx)
    cdef tuple compress_whole(self, RequestContext ctx, list headers, bytes body)
    cdef list start_compression(self, RequestContext ctx, list headers, long long length)
    cdef void start_cache_fill(self, RequestContext ctx, int status, long long length, list headers)


cdef bytes cache_head_of(list headers)    # the header lines a cache entry keeps
