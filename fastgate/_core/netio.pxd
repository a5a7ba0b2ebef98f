# The data plane's own socket I/O for plain TCP: the client connections of the worker's
# plain listeners and the connections to http:// upstreams. Each socket is
# read and written with direct system calls; their readiness comes from one edge-triggered
# epoll set that the event loop watches as a single file descriptor, so one loop callback
# serves every ready socket of an iteration.
#
# PERF: uvloop takes the GIL back and enters a context twice per read (buffer allocation,
# then the read callback), calls data_received through a Python method call, and looks a
# method up on every write; its epoll set is level-triggered (every ready socket is polled
# again on the next wait). About 3,000 of ~28,800 user-space instructions per proxied
# keep-alive request (bench/ir_per_request.py; bench/wrk_compare.py --scenario keepalive).
#
# A Stream is an asyncio transport (write, close, abort, pause_reading, write_eof,
# get_extra_info, ...) with asyncio's semantics, so any protocol works on it; the two
# protocols of the data plane subclass StreamProtocol and are called from C. TLS stays on
# the event loop's own transports.

cdef class Stream


cdef class StreamProtocol:
    # A protocol written to and read from C on a Stream, through its methods on any other
    # transport: the client and upstream connections.
    cdef object transport
    cdef Stream stream                    # transport, when it is a Stream
    cdef object t_write                   # else transport.write and .is_closing, bound once
    cdef object t_is_closing              # PERF: no method lookup per call (wrk_compare.py keepalive)
    cdef void bind(self, transport)       # connection_made: choose the write path
    cdef void put(self, data)             # write to the transport, now
    cdef bint put_closed(self)            # the transport is closing: nothing more leaves
    # the read callback, called from C; data_received (asyncio's name) calls it too
    cdef int data_in(self, bytes data) except -1


cdef class Watched:
    # something in the epoll set (its epoll_event.data.ptr, held alive by Poller.live)
    cdef Poller poller
    cdef int fd
    cdef void on_events(self, unsigned int events)


cdef class Poller:
    cdef int epfd
    cdef object loop
    cdef set live                         # what is in the epoll set, and the closed until their
                                          # connection_lost ran (an event of the same wait may name them)
    cdef bint started                     # epfd is watched by the loop
    cdef int watch(self, Watched w, unsigned int events) except -1
    cdef void unwatch(self, Watched w)    # out of the set, before w's fd is closed
    cdef void forget(self, Watched w)     # w's fd was closed: drop it after this iteration


cdef enum StreamState:
    S_CONNECTING = 0
    S_OPEN = 1
    S_CLOSING = 2                         # close() called: the write buffer drains, then it closes
    S_CLOSED = 3


cdef class Stream(Watched):
    cdef object sock                      # the socket object: owns the fd
    cdef object protocol
    cdef StreamProtocol fast              # protocol, when data_in can be called from C
    cdef public int state                 # a StreamState
    cdef bint made                        # connection_made was called: connection_lost will be
    cdef bint paused                      # pause_reading
    cdef bint read_pending                # input may wait unread (an edge came while paused)
    cdef bint eof                         # the peer's FIN was read
    cdef bint shut_pending                # write_eof after the buffer drains
    cdef bint shut                        # write side shut
    cdef bint write_paused                # pause_writing was called, resume_writing not yet
    cdef list wbuf                        # unsent bytes objects, in order
    cdef Py_ssize_t wsize
    cdef Py_ssize_t high, low             # write buffer limits (asyncio's defaults)
    cdef object connecting                # the connect's Future while S_CONNECTING
    cdef object peer

    cdef int send(self, object data) except -1    # write(): direct, or buffered behind what waits
    cdef Py_ssize_t send_some(self, const char* p, Py_ssize_t size)   # one send(2), EINTR retried
    cdef inline bint is_closed(self):
        return self.state >= S_CLOSING
    cdef void read_ready(self, bint drain)
    cdef void flush(self)
    cdef void connected(self)
    cdef void finish(self, object exc)
    cdef void fatal(self, object exc, str what)


cdef class Listener(Watched):
    cdef object sock
    cdef object factory
    cdef int family
    cdef bint closed
    cdef void pause_accepting(self)       # out of descriptors: retry in a moment


cpdef object connect_tcp(Poller poller, object protocol, int family, tuple address)
# and connect_name(poller, protocol, host, port): a coroutine that resolves host first
