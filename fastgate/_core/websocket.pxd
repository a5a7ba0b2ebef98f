# A WebSocket connection the gateway terminates itself (a WebSocket API's client), after
# the 101 the dispatcher sends (exchange.pxd, websocket_accept): RFC 6455 framing in C —
# frame headers, the client's mask, fragmented messages reassembled, control frames
# (ping answered with pong, the close handshake), the limits a WebSocket API has (frame
# and message sizes, the idle timeout, the longest connection) — and the frames the
# gateway sends. What a message means (route selection, integrations, @connections) is
# the Python `handler`'s (fastgate.phases.websocket): it gets each whole message and the
# end of the connection, once:
#
#     handler.message(ws, text: bool, payload: str | bytes)
#     handler.closed(ws, code: int, reason: str)
#
# ClientConnection (client.pxd) hands a read to feed() once its `ws` is set, sweeps
# check_timeout() with its other deadlines (DL_WEBSOCKET) and calls lost() when the
# socket closes.

from fastgate._core.buffers cimport Buf
from fastgate._core.metrics cimport SharedMetrics
from fastgate._core.runtime cimport Downstream


cdef enum Opcode:                 # RFC 6455 section 5.2
    OP_CONTINUATION = 0
    OP_TEXT = 1
    OP_BINARY = 2
    OP_CLOSE = 8
    OP_PING = 9
    OP_PONG = 10

cpdef enum CloseCode:             # RFC 6455 section 7.4.1, the ones the gateway sends or reports
    CLOSE_NORMAL = 1000
    CLOSE_GOING_AWAY = 1001       # idle timeout, longest duration, a draining worker
    CLOSE_PROTOCOL_ERROR = 1002   # a frame RFC 6455 forbids (unmasked, reserved bits, bad opcode)
    CLOSE_NO_STATUS = 1005        # reported only: the peer's close frame had no code
    CLOSE_ABNORMAL = 1006         # reported only: the socket closed without a close frame
    CLOSE_INVALID_DATA = 1007     # a text message (or close reason) that is not UTF-8
    CLOSE_TOO_BIG = 1009          # a frame or message past the API's limits (AWS: 1009 for both)
    CLOSE_INTERNAL = 1011

cpdef enum WsCounter:             # WebSocket.slots: metrics series a session records in C
    WS_MESSAGES_IN = 0            # fastgate_websocket_messages_total{direction="in"}
    WS_MESSAGES_OUT = 1           # ... {direction="out"}
    WS_ERR_PROTOCOL = 2           # fastgate_websocket_errors_total{kind="protocol"} (1002 / 1007)
    WS_ERR_TOO_BIG = 3            # ... {kind="too_big"} (1009)
    WS_CONNECTIONS = 4            # fastgate_websocket_connections (gauge, +1 while open)
    WS_WORKER_CONNECTIONS = 5     # ... this worker's share (fastgate_worker_websocket_connections), so
                                  # the supervisor can take a dead worker's out of the total
    WS_SLOTS = 6

cdef enum WsTiming:
    CLOSE_WAIT_MS = 2000          # ms the gateway waits for the client's close frame after its own


cdef class WebSocket:
    cdef Downstream down                  # the client connection the frames go to
    cdef readonly object handler          # see above
    cdef readonly str connection_id
    cdef public object info               # the handler's per-connection data
    cdef Buf inbuf                        # bytes of a frame not yet complete
    cdef Buf message                      # a fragmented message being reassembled
    cdef int msg_opcode                   # OP_TEXT / OP_BINARY while reassembling, else 0
    cdef readonly Py_ssize_t max_frame    # bytes of one frame's payload, both ways (AWS: 32 KB)
    cdef readonly Py_ssize_t max_message  # bytes of one message, both ways (AWS: 128 KB)
    cdef double idle_timeout              # s without a frame either way (AWS: 10 min)
    cdef double max_duration              # s a connection may last (AWS: 2 h)
    cdef readonly double connected        # monotonic s of the 101
    cdef readonly double last_active      # monotonic s of the last frame either way
    cdef readonly long long connected_ms  # epoch ms of the 101 (connectedAt)
    cdef bint closing                     # the gateway's close frame went out
    cdef bint ended                       # handler.closed() was called
    cdef readonly int close_code          # the code the connection ended with (0 while open)
    cdef readonly str close_reason
    cdef SharedMetrics metrics            # or None
    cdef int slots[WS_SLOTS]              # series by WsCounter, -1 = none

    cdef void feed(self, bytes data)
    cdef Py_ssize_t frame(self, const unsigned char* p, Py_ssize_t n)   # bytes used; 0 more; -1 failed
    cdef bint deliver(self, int opcode, const char* p, Py_ssize_t n)
    cdef bint control(self, int opcode, const char* p, Py_ssize_t n)
    cdef void send_frame(self, int opcode, const char* p, Py_ssize_t n, bint fin)
    cdef void fail(self, int code, str reason, int counter)
    cdef void check_timeout(self, double now)
    cdef void lost(self)
    cdef void count(self, int counter, long long n) noexcept
