# The integrations the gateway answers itself, once a request's body is whole: a mock (its
# template, or Velocity mapping templates), echo (the request as an integration would see
# it), a function (fastgate/phases/functions: a local handler or a remote Lambda, which
# answers later through the def methods function_done / function_stream_*: the runner gets
# this object as its `conn`), the Python an INTEGRATION_PYTHON route carries (AWS services:
# integration_done) and a WebSocket API's stage URL (websocket_accept). The HTTP integration
# is proxy.pxd's.

from fastgate._core.pipeline cimport RequestContext, Route
from fastgate._core.respond cimport Responder
from fastgate._core.runtime cimport Downstream, Worker


cdef enum:
    DECODED_BODY_MAX = 10485760   # bytes a Content-Encoding may decode to on a route without a
                                  # body limit (API Gateway's 10 MB payload limit)


cdef class Integrations:
    cdef Downstream down                  # the client connection
    cdef Responder out                    # the response phase
    cdef Worker worker

    cdef void run(self, RequestContext ctx)               # the INTEGRATION phase
    cdef void respond_mock(self, RequestContext ctx)
    cdef void respond_mock_vtl(self, RequestContext ctx, Route route)
    cdef void start_function(self, RequestContext ctx)         # a function, or Route.runner's Python
    cdef void start_websocket(self, RequestContext ctx)        # a WebSocket API's upgrade or @connections
    cdef void respond_echo(self, RequestContext ctx)


# the whole request body as a phase that reads it must see it: its Content-Encoding undone
cdef bint decode_body(RequestContext ctx)
