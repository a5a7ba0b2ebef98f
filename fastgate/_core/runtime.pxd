# A worker process's runtime: the Worker (the current snapshot, its connections, the
# timeout sweep, request ids, the output buffers), and Downstream, the client side of a
# connection as the response side sees it: where bytes go, corked or not, and how a
# connection closes. ClientConnection (client.pxd) is the Downstream that also parses
# requests; the response phase (respond.pxd), the proxy (proxy.pxd) and the dispatcher
# (exchange.pxd) only ever see this narrow side of it.

from fastgate._core.buffers cimport Buf
from fastgate._core.netio cimport Poller, StreamProtocol
from fastgate._core.pipeline cimport RequestContext
from fastgate._core.snapshot cimport Snapshot
from fastgate._core.usage cimport UsageCounters


cdef enum Timing:
    TICK_MS = 100                 # ms between timeout sweeps
    LINGER_IDLE_MS = 2000         # ms a lingering close waits for more client input before closing
    LINGER_MAX_MS = 30000         # ms a lingering close discards client input at most (nginx's
                                  # lingering_time), so an uploading client reads its 413

cdef enum CorkLimits:
    CORK_DIRECT = 16384           # bytes: a corked write this large goes out as it is (after what is gathered)
    CORK_MAX = 65536              # bytes gathered in the cork buffer at most before they are written
    CORK_KEEP = 262144            # bytes of cork buffer capacity kept between callbacks

cdef enum Deadline:               # what a connection's one deadline is for (Worker.tick sweeps them)
    DL_NONE = 0
    DL_IDLE = 1                   # keep-alive connection waiting for a request: close quietly
    DL_HEAD = 2                   # request head not complete: 408
    DL_BODY = 3                   # request body stalled, too slow or past its deadline: 408
                                  # (ClientConnection.body_due says when)
    DL_CONNECT = 4                # upstream connect: retry or 504
    DL_UPSTREAM_READ = 5          # waiting for upstream bytes (first byte, then between reads): 504
    DL_DRAIN = 6                  # lingering close / graceful shutdown: close whatever is left
    DL_WEBSOCKET = 7              # a WebSocket API's connection: idle, longest duration, close
                                  # handshake (websocket.pxd, WebSocket.check_timeout)

cdef enum PauseReason:            # bits: client reading is paused while any is set
    PAUSE_PIPELINE = 1            # a request is queued behind the active one
    PAUSE_UPSTREAM_FULL = 2       # the upstream's write buffer is full
    PAUSE_NOT_READY = 4           # body buffered while the upstream connection is not ready
    PAUSE_WS_WRITE = 8            # a WebSocket client is not reading what the gateway sends it
    PAUSE_WS_BUSY = 16            # a WebSocket client has too many messages in its routes (websocket.pxd)


cdef class Worker:
    # Per-process state: the current snapshot, live connections, the tick.
    cdef public Snapshot snapshot
    cdef public object functions          # fastgate.phases.functions.gateway.FunctionRunner, or None
    cdef public UsageCounters usage       # the API key metering counters (compile/shared.py), or None
    cdef readonly object loop
    cdef public Poller poller             # the plain sockets' epoll set (netio.pxd), None when the
                                          # worker's connections all come from the loop's own transports
    cdef readonly set connections         # Downstream (ClientConnection)
    cdef readonly bint draining
    cdef readonly int worker_id
    cdef public int open_slot             # metrics slot of fastgate_open_connections, -1 = none
    cdef public int own_slot              # this worker's share of it (fastgate_worker_open_connections),
                                          # so the supervisor can take a dead worker's count back out
    cdef unsigned long long rid_counter
    cdef char rid_prefix[20]              # random per-process part of generated request ids
    cdef object tick_handle
    cdef int ticks
    cdef readonly bytes date              # cached "Date" header value, refreshed every second
    # PERF: message heads are assembled in one C buffer (heads are built synchronously, never
    # interleaved) and leave as one bytes object: no bytearray regrowth per header line; and
    # while a read callback runs, what it writes to a client gathers in the cork buffer and
    # leaves in one write (bench/wrk_compare.py, scenario keepalive). One connection is corked
    # at a time (the loop runs one callback at a time): cork_owner.
    cdef Buf head
    cdef Buf cork
    cdef Downstream cork_owner

    cdef bytes new_request_id(self)
    cdef void tick(self)


cdef class Downstream(StreamProtocol):
    # The client side of one connection: where responses go. Subclassed by ClientConnection.
    # Its transport and write path: StreamProtocol (netio.pxd).
    cdef Worker worker
    cdef RequestContext ctx               # the active request (the one being answered), or None
    cdef bint closed
    cdef bint close_after                 # close the connection after this response
    cdef bint unread                      # client input may be left unread: close lingering
    cdef bint lingering                   # write side shut, discarding input until EOF or LINGER_*_MS
    cdef bint corked                      # inside a read callback: writes gather in the cork buffer
    cdef bint tunnel                      # after 101: bytes relayed both ways
    cdef bytes early_tunnel               # bytes after an Upgrade request, before the 101
    cdef object ws                        # fastgate._core.websocket.WebSocket once a WebSocket
                                          # API accepted the upgrade (the gateway reads the frames)
    cdef bint write_blocked               # the client's write buffer is full: it is not reading
                                          # what it asked for (pause_writing .. resume_writing)
    cdef int served                       # requests answered on this connection
    cdef int pause_reasons
    cdef bint reading_paused
    cdef double paused_at                 # when reading was last paused
    cdef double deadline
    cdef int deadline_kind                # a Deadline
    cdef double total_deadline            # the route's total timeout (or a linger's end), 0 = none

    # writing (to the transport: StreamProtocol.put), gathered while corked
    cdef void cork(self)
    cdef void send(self, data)
    cdef void send_ptr(self, const char* p, Py_ssize_t n, bytes whole)
    cdef void flush_cork(self)
    cdef void uncork(self)
    cdef Py_ssize_t cork_mark(self)       # where the next corked byte goes, -1 when not corked
    cdef bint uncork_to(self, Py_ssize_t mark)   # forget what was gathered after mark
    # reading
    cdef void set_pause(self, int reason, bint on)
    # the end of an exchange, and of the connection
    cdef void exchange_over(self, RequestContext ctx)   # the response is complete: next, or close
    cdef void release_upstream(self)      # the active request's upstream connection, if any, closed
    cdef double body_due(self, RequestContext ctx)      # when its body is late (408)
    cdef void check_timeout(self, double now)
    cdef void shutdown(self)
    cdef void abort(self)
    cdef void reset(self)                 # abort with SO_LINGER 0: an RST, not a FIN
    cpdef close_transport(self)
