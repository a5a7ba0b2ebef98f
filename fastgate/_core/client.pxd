# The client side of the HTTP/1.1 hot path: one ClientConnection per accepted socket.
# The parser (http1.pxd) only records spans; each event is handled here in plain Cython:
# a request's head is read into a fresh RequestContext (the one per-request object) and
# validated (framing, Host, version, the canonical path), then run by the dispatcher
# (exchange.pxd). One request per connection is active at a time: pipelined requests
# parsed meanwhile wait in `pending` with reading paused, so memory stays bounded, and
# are answered in order. Flow control (a full write buffer on one side pauses reading on
# the other), timeouts (one deadline per connection, swept by Worker.tick) and the
# lingering close live on the Downstream side (runtime.pxd) this class completes.

from fastgate._core.exchange cimport Exchange
from fastgate._core.http1 cimport Http1Parser
from fastgate._core.pipeline cimport RequestContext
from fastgate._core.proxy cimport Proxy
from fastgate._core.respond cimport Responder
from fastgate._core.runtime cimport Downstream


cdef class ClientConnection(Downstream):
    cdef Http1Parser parser               # requests, driven from C (http1.pxd)
    cdef Responder out                    # the response phase
    cdef Proxy proxy                      # the HTTP integration
    cdef Exchange exchange                # the dispatcher
    cdef bytes peer_ip
    cdef int peer_port
    cdef int local_port
    cdef bytes port_bytes                 # local_port as X-Forwarded-Port sends it
    cdef bytes last_host                  # the Host of the last request, and its route_host_of()
    cdef bytes last_route_host
    cdef bint trusted                     # peer is a configured trusted proxy
    cdef bint tls                         # accepted on a TLS listener
    cdef object client_cert               # fastgate.compile.tls.ClientCert, read once at connection_made, or None
    cdef RequestContext parsing           # the request whose head or body is being parsed
    cdef bint in_head                     # between message begin and headers complete
    cdef list pending                     # [RequestContext] parsed behind the active one

    cdef feed(self, bytes data)
    cdef void message_begin(self)
    cdef void take_header(self, RequestContext ctx, bytes name, bytes value)
    cdef bint head_complete(self)
    cdef bint body(self, bytes data)
    cdef bint message_complete(self)
    cdef void parse_failed(self)
    cdef bint validate_head(self, RequestContext ctx)
    cdef fill_basic(self, RequestContext ctx)
    cdef void queue(self, RequestContext ctx)
    cdef void begin_active(self, RequestContext ctx)
