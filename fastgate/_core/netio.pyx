# cython: language_level=3, boundscheck=False, wraparound=False
"""Plain TCP sockets read and written with direct system calls (netio.pxd is the map)."""

import os
import socket

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport errno, EAGAIN, EINTR, EINPROGRESS, ECONNABORTED, EMFILE, ENFILE, ENOBUFS, ENOMEM
from libc.stdlib cimport malloc
from posix.unistd cimport close as c_close

from fastgate._core.clock cimport batch_begin, batch_end

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void* ptr
        int fd
    struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    enum:
        EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLRDHUP, EPOLLET
        EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CLOEXEC

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ssize_t c_recv "recv"(int fd, void* buf, size_t n, int flags)
    ssize_t c_send "send"(int fd, const void* buf, size_t n, int flags)
    int accept4(int fd, void* addr, socklen_t* addrlen, int flags)
    int getsockopt(int fd, int level, int name, void* val, socklen_t* len)
    int setsockopt(int fd, int level, int name, const void* val, socklen_t len)
    int shutdown(int fd, int how)
    enum:
        MSG_NOSIGNAL, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET, SO_ERROR, SHUT_WR

cdef extern from "<netinet/in.h>":
    enum: IPPROTO_TCP
cdef extern from "<netinet/tcp.h>":
    enum: TCP_NODELAY

cdef enum:
    READ_MAX = 262144         # bytes per read (uvloop's buffer size)
    READ_BURST = 4            # reads per event before the loop runs again (read_ready)
    MAX_EVENTS = 256          # events taken per loop callback; the rest come next iteration
    ACCEPT_BATCH = 64         # connections accepted per listener event
    WRITE_HIGH = 65536        # asyncio's default write buffer limits: pause_writing above
    WRITE_LOW = 16384         # high, resume_writing at low

cdef unsigned int STREAM_EVENTS = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
cdef unsigned int READ_EVENTS = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR
cdef unsigned int END_EVENTS = EPOLLRDHUP | EPOLLHUP | EPOLLERR
cdef char* READ_BUF = <char*>malloc(READ_MAX)   # one per process: reads are handed on as bytes at once
cdef int ONE = 1


cdef object os_error(int err):
    return OSError(err, os.strerror(err))      # OSError picks the subclass (ConnectionResetError, ...)


cdef class StreamProtocol:
    cdef void bind(self, transport):
        self.transport = transport
        if type(transport) is Stream:
            self.stream = <Stream>transport
        else:
            self.t_write = transport.write
            self.t_is_closing = transport.is_closing

    cdef void put(self, data):
        if self.stream is not None:
            self.stream.send(data)
        else:
            self.t_write(data)

    cdef bint put_closed(self):
        if self.stream is not None:
            return self.stream.is_closed()
        return self.t_is_closing()

    cdef int data_in(self, bytes data) except -1:
        return 0


cdef class Watched:
    cdef void on_events(self, unsigned int events):
        pass


cdef class Poller:
    def __init__(self, loop):
        self.loop = loop
        self.live = set()
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise os_error(errno)

    cdef int watch(self, Watched w, unsigned int events) except -1:
        cdef epoll_event ev
        ev.events = events
        ev.data.ptr = <void*>w
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, w.fd, &ev) < 0:
            raise os_error(errno)
        self.live.add(w)
        if not self.started:
            self.started = True
            self.loop.add_reader(self.epfd, self.ready)
        return 0

    cdef void unwatch(self, Watched w):
        # Not left to close(2): the kernel drops a file from an epoll set only when its last
        # descriptor closes, and a child the worker forks (the functions pool: libuv's spawn
        # is a plain fork) holds a copy of every descriptor until its exec. An event in that
        # window would name a Stream already freed. One system call per connection.
        epoll_ctl(self.epfd, EPOLL_CTL_DEL, w.fd, NULL)

    cdef void forget(self, Watched w):
        self.loop.call_soon(self.live.discard, w)

    def ready(self):
        """The loop's callback: every socket that became ready since the last one."""
        cdef epoll_event evs[MAX_EVENTS]
        cdef int n = epoll_wait(self.epfd, evs, MAX_EVENTS, 0), i
        cdef Watched w
        if n <= 0:
            return
        batch_begin()           # the batch's requests take its time (clock.pxd)
        try:
            for i in range(n):
                w = <Watched>evs[i].data.ptr
                w.on_events(evs[i].events)
        finally:
            batch_end()

    def close(self):
        if self.epfd >= 0:
            if self.started:
                self.loop.remove_reader(self.epfd)
            c_close(self.epfd)
            self.epfd = -1


cdef class Stream(Watched):
    """An asyncio transport over a non-blocking TCP socket in the Poller's set."""

    def __init__(self, Poller poller, sock, protocol):
        self.poller = poller
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol = protocol
        self.fast = protocol if isinstance(protocol, StreamProtocol) else None
        self.wbuf = []
        self.high = WRITE_HIGH
        self.low = WRITE_LOW

    # --- events ------------------------------------------------------------------------

    cdef void on_events(self, unsigned int events):
        if self.state == S_CLOSED:
            return                  # closed by an earlier event of the same wait
        if self.state == S_CONNECTING:
            if events & (EPOLLOUT | EPOLLERR | EPOLLHUP):
                self.connected()
            if self.state != S_OPEN:
                return
        if self.wbuf and events & (EPOLLOUT | EPOLLERR | EPOLLHUP):
            self.flush()
        if events & READ_EVENTS and self.state == S_OPEN:
            self.read_ready((events & END_EVENTS) != 0)

    cdef void read_ready(self, bint drain):
        """Read until the socket is empty: edge-triggered, nothing says so again. A peer that
        sends faster than this reads is read READ_BURST times, then again on the loop's next
        iteration, as uvloop reads once per iteration: the other sockets get their turn, and
        callbacks due meanwhile (the connection_lost of a client that left) run before more
        of its response is relayed into nothing."""
        cdef ssize_t n
        cdef int err
        cdef int reads = 0
        cdef bytes data
        if self.paused:
            self.read_pending = True
            return
        if self.eof:
            return
        while True:
            n = c_recv(self.fd, READ_BUF, READ_MAX, 0)
            if n > 0:
                data = PyBytes_FromStringAndSize(READ_BUF, n)
                try:
                    if self.fast is not None:
                        self.fast.data_in(data)
                    else:
                        self.protocol.data_received(data)
                except BaseException as e:
                    self.fatal(e, "protocol.data_received() call failed.")
                    return
                if self.state != S_OPEN:
                    return
                if self.paused:
                    self.read_pending = True      # more may wait: read it on resume_reading
                    return
                # PERF: a short read emptied the socket (nginx's rule): no read that only says
                # EAGAIN. More input is a new edge; an end of input comes with its own event.
                if n < READ_MAX and not drain:
                    return
                reads += 1
                if reads >= READ_BURST:
                    self.read_pending = True
                    self.poller.loop.call_soon(self._resume_read)
                    return
                continue
            if n == 0:
                self.eof = True
                try:
                    keep_open = self.protocol.eof_received()
                except BaseException as e:
                    self.fatal(e, "protocol.eof_received() call failed.")
                    return
                if not keep_open:
                    self.close()
                return
            err = errno
            if err == EAGAIN:
                return
            if err != EINTR:
                self.fatal(os_error(err), "")
                return

    def _resume_read(self):
        if self.state == S_OPEN and not self.paused and self.read_pending:
            self.read_pending = False
            self.read_ready(True)

    # --- writing -------------------------------------------------------------------------

    cdef int send(self, object data) except -1:
        cdef Py_ssize_t size, n
        if self.state >= S_CLOSING or self.shut or self.shut_pending:
            return 0                # closing, or after write_eof: nothing may follow
        if type(data) is not bytes:
            data = bytes(data)
        size = PyBytes_GET_SIZE(data)
        if size == 0:
            return 0
        if not self.wbuf and self.state == S_OPEN:
            n = self.send_some(PyBytes_AS_STRING(data), size)
            if n < 0 or n == size:
                return 0
            if n:
                data = data[n:]
        self.wbuf.append(data)
        self.wsize += PyBytes_GET_SIZE(data)
        if self.wsize > self.high and not self.write_paused:
            self.write_paused = True
            try:
                self.protocol.pause_writing()
            except BaseException as e:
                self.fatal(e, "protocol.pause_writing() failed")
        return 0

    cdef Py_ssize_t send_some(self, const char* p, Py_ssize_t size):
        """What of size bytes at p the socket takes now (0 when full); -1 when the
        connection failed (closed here, connection_lost has the error)."""
        cdef Py_ssize_t n
        cdef int err
        while True:
            n = c_send(self.fd, p, size, MSG_NOSIGNAL)
            if n >= 0:
                return n
            err = errno
            if err == EAGAIN:
                return 0
            if err != EINTR:
                self.fatal(os_error(err), "")
                return -1

    cdef void flush(self):
        """The socket can take more: send what waits, then close or shut if that waited too."""
        cdef bytes chunk
        cdef Py_ssize_t n, size
        while self.wbuf:
            chunk = <bytes>self.wbuf[0]
            size = PyBytes_GET_SIZE(chunk)
            n = self.send_some(PyBytes_AS_STRING(chunk), size)
            if n < 0:
                return
            self.wsize -= n
            if n < size:
                if n:
                    self.wbuf[0] = chunk[n:]
                return
            del self.wbuf[0]
        if self.state == S_CLOSING:
            self.finish(None)
            return
        if self.shut_pending:
            self.shut_pending = False
            self.shut = True
            shutdown(self.fd, SHUT_WR)
        if self.write_paused and self.wsize <= self.low:
            self.write_paused = False
            try:
                self.protocol.resume_writing()
            except BaseException as e:
                self.fatal(e, "protocol.resume_writing() failed")

    # --- connecting ----------------------------------------------------------------------

    cdef void connected(self):
        cdef int err = 0
        cdef socklen_t size = sizeof(int)
        fut = self.connecting
        self.connecting = None
        if getsockopt(self.fd, SOL_SOCKET, SO_ERROR, &err, &size) < 0:
            err = errno
        if err or fut.done():
            # failed, or cancelled in this same batch of events: _connect_done, a callback of
            # the next iteration, finds the socket closed here already
            self.finish(None)
            if not fut.done():
                fut.set_exception(os_error(err))
            return
        self.state = S_OPEN
        self.made = True
        try:
            self.protocol.connection_made(self)
        except BaseException as e:
            self.fatal(e, "protocol.connection_made() failed")
            fut.set_exception(e)
            return
        fut.set_result((self, self.protocol))

    def _connect_done(self, fut):
        if fut.cancelled() and self.state == S_CONNECTING:
            self.connecting = None
            self.finish(None)

    # --- the end -------------------------------------------------------------------------

    cdef void finish(self, object exc):
        """Close the socket now; connection_lost comes on the next loop iteration (a socket
        whose connect failed or was cancelled had no protocol call yet, and gets none)."""
        if self.state == S_CLOSED:
            return
        self.state = S_CLOSED
        self.wbuf = []
        self.wsize = 0
        self.poller.unwatch(self)
        self.sock.close()
        if self.made:
            self.poller.loop.call_soon(self._lost, exc)
        else:
            self.poller.forget(self)

    def _lost(self, exc):
        try:
            self.protocol.connection_lost(exc)
        finally:
            self.protocol = None
            self.fast = None
            self.poller.live.discard(self)

    cdef void fatal(self, object exc, str what):
        if not isinstance(exc, OSError):
            self.poller.loop.call_exception_handler({
                "message": f"Fatal error on transport: {what}", "exception": exc,
                "transport": self, "protocol": self.protocol})
        self.finish(exc)

    # --- asyncio.Transport ---------------------------------------------------------------

    def write(self, data):
        self.send(data)

    def writelines(self, list_of_data):
        self.send(b"".join(list_of_data))

    def is_closing(self):
        return self.state >= S_CLOSING

    def close(self):
        if self.state >= S_CLOSING:
            return
        if self.state == S_CONNECTING or not self.wbuf:
            self.finish(None)
        else:
            self.state = S_CLOSING      # flush() finishes it

    def abort(self):
        self.finish(None)

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self.state >= S_CLOSING or self.shut or self.shut_pending:
            return
        if self.wbuf:
            self.shut_pending = True
        else:
            self.shut = True
            shutdown(self.fd, SHUT_WR)

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        if not self.paused:
            return
        self.paused = False
        if self.read_pending and self.state == S_OPEN:
            # edge-triggered: the input that came while paused announces itself no more
            self.poller.loop.call_soon(self._resume_read)

    def is_reading(self):
        return self.state == S_OPEN and not self.paused

    def get_write_buffer_size(self):
        return self.wsize

    def get_write_buffer_limits(self):
        return (self.low, self.high)

    def set_write_buffer_limits(self, high=None, low=None):
        if high is None:
            high = WRITE_HIGH if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high, self.low = high, low

    def get_protocol(self):
        return self.protocol

    def set_protocol(self, protocol):
        self.protocol = protocol
        self.fast = protocol if isinstance(protocol, StreamProtocol) else None

    def get_extra_info(self, name, default=None):
        if name == "socket":
            return self.sock
        if name == "peername":
            if self.peer is None:
                try:
                    self.peer = self.sock.getpeername()
                except OSError:
                    return default
            return self.peer
        if name == "sockname":
            try:
                return self.sock.getsockname()
            except OSError:
                return default
        return default

    def __repr__(self):
        return f"<fastgate Stream fd={self.fd} state={self.state}>"


cdef class Listener(Watched):
    """A listening socket whose connections get Streams (the worker's plain listeners)."""

    def __init__(self, Poller poller, sock, factory):
        self.poller = poller
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.factory = factory
        sock.setblocking(False)
        poller.watch(self, EPOLLIN)

    cdef void on_events(self, unsigned int events):
        cdef int fd, i
        cdef Stream s
        for i in range(ACCEPT_BATCH):
            if self.closed:
                return
            fd = accept4(self.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                err = errno
                if err == EINTR or err == ECONNABORTED:
                    continue
                if err == EMFILE or err == ENFILE or err == ENOBUFS or err == ENOMEM:
                    # out of descriptors or memory: stop accepting for a moment rather than
                    # spin on a listener that stays readable
                    self.poller.loop.call_exception_handler({
                        "message": f"accept failed: {os.strerror(err)}", "socket": self.sock})
                    self.pause_accepting()
                return          # EAGAIN: the backlog is empty
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &ONE, sizeof(int))
            sock = socket.socket(self.family, socket.SOCK_STREAM, 0, fileno=fd)
            try:
                protocol = self.factory()
                s = Stream(self.poller, sock, protocol)
                self.poller.watch(s, STREAM_EVENTS)
            except BaseException as e:
                sock.close()
                self.poller.loop.call_exception_handler({
                    "message": "accepting a connection failed", "exception": e})
                continue
            s.state = S_OPEN
            s.made = True
            try:
                protocol.connection_made(s)
            except BaseException as e:
                s.fatal(e, "protocol.connection_made() failed")

    cdef void pause_accepting(self):
        epoll_ctl(self.poller.epfd, EPOLL_CTL_DEL, self.fd, NULL)
        self.poller.loop.call_later(0.1, self._resume_accepting)

    def _resume_accepting(self):
        cdef epoll_event ev
        if not self.closed:
            ev.events = EPOLLIN
            ev.data.ptr = <void*>self
            epoll_ctl(self.poller.epfd, EPOLL_CTL_ADD, self.fd, &ev)

    # --- asyncio.Server, what the worker uses of it --------------------------------------

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.poller.unwatch(self)
        self.sock.close()
        self.poller.forget(self)

    def is_serving(self):
        return not self.closed

    @property
    def sockets(self):
        return () if self.closed else (self.sock,)


cpdef object connect_tcp(Poller poller, object protocol, int family, tuple address):
    """Connect to an IP address ((host, port), or IPv6's 4-tuple); a Future of (transport,
    protocol), as loop.create_connection. Cancelling it while connecting closes the socket."""
    cdef Stream s
    cdef int err
    fut = poller.loop.create_future()
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        setsockopt(sock.fileno(), IPPROTO_TCP, TCP_NODELAY, &ONE, sizeof(int))
        err = sock.connect_ex(address)
        if err != 0 and err != EINPROGRESS:
            raise os_error(err)
        s = Stream(poller, sock, protocol)
        s.connecting = fut
        poller.watch(s, STREAM_EVENTS)
    except OSError as e:
        sock.close()
        fut.set_exception(e)
        return fut
    fut.add_done_callback(s._connect_done)
    return fut


async def connect_name(Poller poller, object protocol, str host, int port):
    """Resolve host (through the loop: getaddrinfo in its thread pool), then connect to its
    addresses in turn, as loop.create_connection does; the same errors as it raises."""
    infos = await poller.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                          proto=socket.IPPROTO_TCP)
    if not infos:
        raise OSError(f"getaddrinfo({host!r}) returned empty list")
    errors = []
    for family, _, _, _, address in infos:
        try:
            return await connect_tcp(poller, protocol, family, address)
        except OSError as e:
            errors.append(e)
    if len(errors) == 1 or all(str(e) == str(errors[0]) for e in errors):
        raise errors[0]
    raise OSError(f"Multiple exceptions: {', '.join(str(e) for e in errors)}")
