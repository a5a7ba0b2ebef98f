# cython: language_level=3, boundscheck=False, wraparound=False
"""WebSocket framing (RFC 6455) for a connection the gateway terminates; websocket.pxd is
the map of this file."""

import base64
import hashlib

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memmove

from fastgate._core.buffers cimport Buf, buf_put, buf_shrink
from fastgate._core.clock cimport monotonic_coarse, epoch_ms
from fastgate._core.runtime cimport DL_WEBSOCKET, PAUSE_WS_BUSY

cdef bytes GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 section 1.3
cdef enum:
    INBUF_KEEP = 65536            # bytes of a connection's input buffer kept between reads


def accept_key(bytes key):
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + GUID).digest())


cdef inline void unmask(char* dst, const unsigned char* src, Py_ssize_t n,
                        const unsigned char* mask) noexcept:
    """dst = src XOR the 4-byte mask, repeating (RFC 6455 section 5.3). PERF: 8 bytes at a
    time (bench/bench_websocket.py)."""
    cdef uint64_t m8, w
    cdef Py_ssize_t i = 0
    cdef unsigned char m[8]
    for i in range(8):
        m[i] = mask[i & 3]
    memcpy(&m8, m, 8)
    i = 0
    while i + 8 <= n:
        memcpy(&w, src + i, 8)
        w ^= m8
        memcpy(dst + i, &w, 8)
        i += 8
    while i < n:
        dst[i] = <char>(src[i] ^ mask[i & 3])
        i += 1


cdef inline bint valid_close_code(int code) noexcept:
    """A code a peer may send in a close frame (RFC 6455 section 7.4)."""
    if 3000 <= code <= 4999:
        return True
    return 1000 <= code <= 1014 and code != 1004 and code != 1005 and code != 1006


cdef class WebSocket:
    def __init__(self, Downstream down, handler, str connection_id, *,
                 Py_ssize_t max_frame=32768, Py_ssize_t max_message=131072,
                 double idle_timeout=600.0, double max_duration=7200.0,
                 SharedMetrics metrics=None, tuple slots=()):
        cdef int i
        self.down = down
        self.handler = handler
        self.connection_id = connection_id
        self.max_frame = max_frame
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        self.max_duration = max_duration
        self.connected = self.last_active = monotonic_coarse()
        self.connected_ms = epoch_ms()
        self.metrics = metrics
        for i in range(WS_SLOTS):
            self.slots[i] = slots[i] if i < len(slots) else -1
        self.count(WS_CONNECTIONS, 1)
        down.deadline_kind = DL_WEBSOCKET
        down.deadline = self.connected + min(idle_timeout, max_duration)

    def __dealloc__(self):
        free(self.inbuf.p)
        free(self.message.p)

    cdef void count(self, int counter, long long n) noexcept:
        cdef int slot = self.slots[counter]
        if self.metrics is None or slot < 0:
            return
        if counter == WS_CONNECTIONS:
            self.metrics.gauge_add(slot, n)
            if self.slots[<int>WS_WORKER_CONNECTIONS] >= 0:
                self.metrics.gauge_add(self.slots[<int>WS_WORKER_CONNECTIONS], n)
        else:
            self.metrics.counter_add(slot, <unsigned long long>n)

    # --- reading ----------------------------------------------------------------------

    cdef void feed(self, bytes data):
        """One read from the client: every whole frame in it is handled, a partial one kept."""
        cdef const unsigned char* p
        cdef Py_ssize_t n, off = 0, used = 0
        cdef bint buffered = self.inbuf.len > 0
        if self.ended:
            return
        self.last_active = monotonic_coarse()
        if buffered:
            buf_put(&self.inbuf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
            p = <const unsigned char*>self.inbuf.p
            n = self.inbuf.len
        else:
            p = <const unsigned char*>PyBytes_AS_STRING(data)
            n = PyBytes_GET_SIZE(data)
        while off < n and not self.ended and not self.down.closed and not self.down.lingering:
            used = self.frame(p + off, n - off)
            if used <= 0:
                break
            off += used
        if used < 0 or self.ended or self.down.closed or self.down.lingering:
            self.inbuf.len = 0
            buf_shrink(&self.inbuf, 0)
            return
        if buffered:
            if off:
                memmove(self.inbuf.p, self.inbuf.p + off, n - off)
                self.inbuf.len = n - off
            if self.inbuf.len == 0:
                buf_shrink(&self.inbuf, INBUF_KEEP)
        elif off < n:
            buf_put(&self.inbuf, <const char*>(p + off), n - off)

    cdef Py_ssize_t frame(self, const unsigned char* p, Py_ssize_t n):
        """Handle the frame at p if it is whole: the bytes it took, 0 when more are needed,
        -1 when it failed the connection (RFC 6455 section 5.2)."""
        cdef int b0, b1, opcode
        cdef bint fin
        cdef unsigned long long length
        cdef Py_ssize_t head = 2, total, i
        cdef const unsigned char* mask
        cdef bytes payload
        if n < 2:
            return 0
        b0 = p[0]
        b1 = p[1]
        fin = (b0 & 0x80) != 0
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        if length == 126:
            if n < 4:
                return 0
            length = (<unsigned long long>p[2] << 8) | p[3]
            head = 4
        elif length == 127:
            if n < 10:
                return 0
            length = 0
            for i in range(2, 10):
                length = (length << 8) | p[i]
            head = 10
            if length >> 63:
                self.fail(CLOSE_PROTOCOL_ERROR, "frame length out of range", WS_ERR_PROTOCOL)
                return -1
        # what can be refused from the head alone is refused before waiting for the payload
        if b0 & 0x70:
            self.fail(CLOSE_PROTOCOL_ERROR, "reserved bits set", WS_ERR_PROTOCOL)
            return -1
        if not (b1 & 0x80):
            self.fail(CLOSE_PROTOCOL_ERROR, "unmasked client frame", WS_ERR_PROTOCOL)
            return -1
        if opcode >= 8:
            if opcode > OP_PONG:
                self.fail(CLOSE_PROTOCOL_ERROR, "unknown opcode", WS_ERR_PROTOCOL)
                return -1
            if not fin or length > 125:
                self.fail(CLOSE_PROTOCOL_ERROR, "fragmented or long control frame", WS_ERR_PROTOCOL)
                return -1
        else:
            if opcode > OP_BINARY:
                self.fail(CLOSE_PROTOCOL_ERROR, "unknown opcode", WS_ERR_PROTOCOL)
                return -1
            if opcode == OP_CONTINUATION and self.msg_opcode == 0:
                self.fail(CLOSE_PROTOCOL_ERROR, "continuation without a message", WS_ERR_PROTOCOL)
                return -1
            if opcode != OP_CONTINUATION and self.msg_opcode != 0:
                self.fail(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one", WS_ERR_PROTOCOL)
                return -1
            if length > <unsigned long long>self.max_frame:
                self.fail(CLOSE_TOO_BIG, "Frame size exceeded", WS_ERR_TOO_BIG)
                return -1
            if <unsigned long long>self.message.len + length > <unsigned long long>self.max_message:
                self.fail(CLOSE_TOO_BIG, "Message too big", WS_ERR_TOO_BIG)
                return -1
        total = head + 4 + <Py_ssize_t>length
        if n < total:
            return 0
        mask = p + head
        if opcode >= 8:
            payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
            unmask(PyBytes_AS_STRING(payload), p + head + 4, <Py_ssize_t>length, mask)
            return total if self.control(opcode, PyBytes_AS_STRING(payload), <Py_ssize_t>length) else -1
        if fin and opcode != OP_CONTINUATION:
            # PERF: a message in one frame is unmasked straight into the object handed on
            payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
            unmask(PyBytes_AS_STRING(payload), p + head + 4, <Py_ssize_t>length, mask)
            return total if self.deliver(opcode, PyBytes_AS_STRING(payload), <Py_ssize_t>length) else -1
        if opcode != OP_CONTINUATION:
            self.msg_opcode = opcode
            self.message.len = 0
        if length:
            buf_put(&self.message, <const char*>(p + head + 4), <Py_ssize_t>length)
            unmask(self.message.p + self.message.len - <Py_ssize_t>length,
                   <const unsigned char*>(self.message.p + self.message.len - <Py_ssize_t>length),
                   <Py_ssize_t>length, mask)
        if fin:
            opcode = self.msg_opcode
            self.msg_opcode = 0
            if not self.deliver(opcode, self.message.p, self.message.len):
                return -1
            self.message.len = 0
            buf_shrink(&self.message, 0)
        return total

    cdef bint deliver(self, int opcode, const char* p, Py_ssize_t n):
        """A whole message to the handler (False: it failed the connection). Once the
        gateway's close frame is out, messages are read and dropped (RFC 6455 section 7.1.2:
        nothing may answer them)."""
        if self.closing:
            return True
        self.count(WS_MESSAGES_IN, 1)
        if opcode == OP_TEXT:
            try:
                text = PyUnicode_DecodeUTF8(p, n, NULL)
            except UnicodeDecodeError:
                self.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a text message", WS_ERR_PROTOCOL)
                return False
            self.handler.message(self, True, text)
        else:
            self.handler.message(self, False, PyBytes_FromStringAndSize(p, n))
        return True

    cdef bint control(self, int opcode, const char* p, Py_ssize_t n):
        """A control frame; False when it ended the reading (a bad close frame, or the close
        handshake's last frame)."""
        cdef int code
        cdef str reason
        if opcode == OP_PING:
            if not self.closing:
                self.send_frame(OP_PONG, p, n, True)
            return True
        if opcode == OP_PONG:
            return True
        # OP_CLOSE
        if self.closing:
            # the answer to the gateway's own close frame: the handshake is complete
            self.down.close_transport()
            return False
        if n == 1:
            self.fail(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload", WS_ERR_PROTOCOL)
            return False
        if n == 0:
            code = CLOSE_NO_STATUS
            reason = "Client-side close frame status not set"   # AWS's disconnectReason for it
        else:
            code = ((<unsigned char>p[0]) << 8) | (<unsigned char>p[1])
            if not valid_close_code(code):
                self.fail(CLOSE_PROTOCOL_ERROR, "invalid close code", WS_ERR_PROTOCOL)
                return False
            try:
                reason = PyUnicode_DecodeUTF8(p + 2, n - 2, NULL)
            except UnicodeDecodeError:
                self.fail(CLOSE_INVALID_DATA, "invalid UTF-8 in a close reason", WS_ERR_PROTOCOL)
                return False
        self.close_code = code
        self.close_reason = reason
        self.closing = True
        # echo the code (RFC 6455 section 5.5.1), then the server closes the TCP connection first
        self.send_frame(OP_CLOSE, p, 2 if n >= 2 else 0, True)
        self.down.close_transport()
        return False

    # --- writing ----------------------------------------------------------------------

    cdef void send_frame(self, int opcode, const char* p, Py_ssize_t n, bint fin):
        """One unmasked server frame (RFC 6455 section 5.1: a server never masks)."""
        cdef unsigned char head[10]
        cdef Py_ssize_t h = 2, i
        head[0] = <unsigned char>((0x80 if fin else 0) | opcode)
        if n < 126:
            head[1] = <unsigned char>n
        elif n < 65536:
            head[1] = 126
            head[2] = <unsigned char>(n >> 8)
            head[3] = <unsigned char>(n & 0xFF)
            h = 4
        else:
            head[1] = 127
            for i in range(8):
                head[9 - i] = <unsigned char>((<unsigned long long>n >> (8 * i)) & 0xFF)
            h = 10
        frame = PyBytes_FromStringAndSize(NULL, h + n)
        memcpy(PyBytes_AS_STRING(frame), head, h)
        if n:
            memcpy(PyBytes_AS_STRING(frame) + h, p, n)
        self.down.send(frame)

    def send(self, data):
        """Send one message (str: text, bytes: binary) in frames of at most max_frame bytes
        (AWS splits what @connections posts into 32 KB frames). False when the connection is
        closing or gone."""
        cdef bytes raw
        cdef int opcode
        cdef Py_ssize_t n, off = 0, step
        if self.ended or self.closing or self.down.closed or self.down.lingering:
            return False
        if isinstance(data, str):
            raw = (<str>data).encode("utf-8")
            opcode = OP_TEXT
        else:
            raw = bytes(data)
            opcode = OP_BINARY
        n = PyBytes_GET_SIZE(raw)
        self.last_active = monotonic_coarse()
        self.count(WS_MESSAGES_OUT, 1)
        if n <= self.max_frame:
            self.send_frame(opcode, PyBytes_AS_STRING(raw), n, True)
            return True
        while off < n:
            step = min(self.max_frame, n - off)
            self.send_frame(opcode if off == 0 else OP_CONTINUATION, PyBytes_AS_STRING(raw) + off,
                            step, off + step >= n)
            off += step
        return True

    def close(self, int code=CLOSE_NORMAL, str reason=""):
        """Start the close handshake (RFC 6455 section 7.1.2); the connection ends when the
        client answers, or CLOSE_WAIT_MS later."""
        cdef bytes payload
        if self.ended or self.closing or self.down.closed or self.down.lingering:
            return
        self.closing = True
        self.close_code = code
        self.close_reason = reason
        payload = bytes(((code >> 8) & 0xFF, code & 0xFF)) + reason.encode("utf-8")[:123]
        self.send_frame(OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), True)
        self.down.deadline_kind = DL_WEBSOCKET
        self.down.deadline = monotonic_coarse() + CLOSE_WAIT_MS / 1000.0

    cdef void fail(self, int code, str reason, int counter):
        """Fail the connection (RFC 6455 section 7.1.7): a close frame with the code, then a
        lingering close, so the frame is read before any reset the unread input would cause."""
        self.count(counter, 1)
        if not self.closing:
            self.closing = True
            self.close_code = code
            self.close_reason = reason
            payload = bytes(((code >> 8) & 0xFF, code & 0xFF)) + reason.encode("utf-8")
            self.send_frame(OP_CLOSE, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload), True)
        self.down.unread = True
        self.down.close_transport()

    # --- time and the end ---------------------------------------------------------------

    cdef void check_timeout(self, double now):
        """The connection's deadline passed: the close handshake's wait, the idle timeout or
        the longest duration (both end with 1001 Going Away, as API Gateway's do)."""
        cdef double idle_due, end_due
        if self.closing:
            self.down.closed = True
            self.down.transport.close()
            return
        idle_due = self.last_active + self.idle_timeout
        end_due = self.connected + self.max_duration
        if now >= end_due or now >= idle_due:
            self.close(CLOSE_GOING_AWAY, "Going away")
            return
        self.down.deadline = min(idle_due, end_due)

    cdef void lost(self):
        """The socket closed: the handler hears of it once, with the code the connection ended
        with (1006 when no close frame was exchanged)."""
        if self.ended:
            return
        self.ended = True
        self.count(WS_CONNECTIONS, -1)
        if self.close_code == 0:
            self.close_code = CLOSE_ABNORMAL
            self.close_reason = "Connection closed abnormally"
        self.inbuf.len = 0
        buf_shrink(&self.inbuf, 0)
        self.message.len = 0
        buf_shrink(&self.message, 0)
        self.handler.closed(self, self.close_code, self.close_reason or "")

    # --- for the handler --------------------------------------------------------------

    def hold(self, bint on):
        """Stop (or resume) reading the client's frames: its messages wait in the socket."""
        self.down.set_pause(PAUSE_WS_BUSY, on)

    def receive(self, bytes data):
        """feed() for Python: tests and bench/bench_websocket.py."""
        self.feed(data)

    @property
    def open(self):
        return not (self.ended or self.closing or self.down.closed or self.down.lingering)

    @property
    def last_active_ms(self):
        """Epoch ms of the last frame either way (GetConnection's lastActiveAt)."""
        return self.connected_ms + <long long>((self.last_active - self.connected) * 1000)

    def write_buffer_size(self):
        """Bytes written to the client and not yet taken by it (LimitExceededException past a bound)."""
        t = self.down.transport
        return t.get_write_buffer_size() if t is not None else 0
