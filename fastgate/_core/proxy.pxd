# The HTTP integration: one request proxied to an upstream group. Proxy (one per client
# connection) picks a target, borrows an UpstreamConnection from its keep-alive pool or
# connects one, writes the request head before any body byte (a body byte can never pass
# for a request: request smuggling), streams the body, relays the response through the
# response phase (respond.pxd), retries what may be retried, and decides which failures
# count against a target (passive ejection). A connection whose state is unknown (body
# half sent, response half read, timeout, protocol error) is closed, never pooled.

from fastgate._core.http1 cimport Http1Parser
from fastgate._core.netio cimport StreamProtocol
from fastgate._core.pipeline cimport RequestContext
from fastgate._core.respond cimport Responder
from fastgate._core.runtime cimport Downstream, Worker
from fastgate._core.snapshot cimport Snapshot
from fastgate._core.upstream cimport Target


cdef enum ProxyLimits:
    RETRY_BODY_MAX = 65536        # bytes of request body kept for a retry on another target
    BUFFER_HIGH = 65536           # bytes buffered for a not-yet-ready upstream before pausing the client
    MAP_RESPONSE_MAX = 10485760   # bytes of upstream body an http (non-proxy) integration maps (AWS: 10 MB)


cdef class Proxy:
    cdef Downstream down                  # the client connection it proxies for
    cdef Responder out                    # the response phase
    cdef Worker worker

    cdef void start(self, RequestContext ctx)           # the INTEGRATION phase of an http route
    cdef void attempt(self, RequestContext ctx, Target exclude)
    cdef void connect(self, RequestContext ctx, Target target)
    cdef void ready(self, UpstreamConnection conn)      # connected (or taken from the pool)
    cdef void send_body(self, RequestContext ctx, bytes data)   # a body chunk from the client
    cdef void finish(self, RequestContext ctx)          # the client's body is complete
    cdef int failed(self, str kind, str detail, bint retryable)  # an Action: RETRY or RESPOND
    cdef void fail(self, str kind, str detail, bint retryable)   # failed(), then act on it
    cdef bint to_blame(self, RequestContext ctx, str kind)
    cdef void drop(self, RequestContext ctx)            # close the upstream, count nothing
    cdef void timed_out(self, int deadline_kind)        # DL_CONNECT / DL_UPSTREAM_READ passed
    cdef bint flow(self, RequestContext ctx, bint paused)   # the client stopped/resumed reading
    # the upstream's response
    cdef void head(self, UpstreamConnection conn, int status)
    cdef void body(self, bytes data)
    cdef void done(self, UpstreamConnection conn, bint reusable)
    cdef void give_back(self, RequestContext ctx, UpstreamConnection conn, bint reusable)
    cdef void finish_mapped(self, RequestContext ctx, UpstreamConnection conn, bint reusable)


cdef class UpstreamConnection(StreamProtocol):
    # its transport and write path: StreamProtocol (netio.pxd)
    cdef Target target
    cdef Http1Parser parser               # responses, driven from C (http1.pxd)
    cdef Proxy proxy                      # the exchange using it; None while idle
    cdef bint is_alive
    cdef bint got_bytes                   # any response byte arrived for the current request
    cdef bint head_request                # response to HEAD: no body whatever the headers say
    cdef bint head_written                # the request head went out: body bytes may follow
    cdef bint head_done                   # response head received
    cdef bint until_close                 # body delimited by connection close
    cdef bint tunnel
    cdef int tunnel_eofs                  # half-closes seen in the tunnel, one per side; at 2 both close
    cdef bint interim                     # the message being parsed is a 1xx (not relayed)

    cdef void attach(self, Proxy proxy, bint head_request)
    cdef void send_head(self, bytes data)
    cdef void send_body(self, bytes data)
    cdef bint on_event(self, int ev, bytes data, const char* buf, Py_ssize_t off, Py_ssize_t n)
    cdef void release(self, bint reusable)
    cpdef close(self)
    cpdef bint alive(self)


cdef bytes upstream_request_head(Worker worker, RequestContext ctx, bytes target_host)
