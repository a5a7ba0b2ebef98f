# cython: language_level=3, boundscheck=False, wraparound=False
"""A worker's runtime and the client side of its connections; runtime.pxd is the map."""

import os
import socket
import struct
from email.utils import formatdate

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdio cimport snprintf
from libc.stdlib cimport free
from libc.string cimport memcpy

from fastgate._core.buffers cimport Buf, buf_put, buf_shrink, buf_take
from fastgate._core.metrics cimport SharedMetrics
from fastgate._core.clock cimport monotonic, monotonic_coarse
from fastgate._core.upstream cimport Target, UpstreamGroup

cdef const char* HEX = "0123456789abcdef"
cdef bytes LINGER_RESET = struct.pack("ii", 1, 0)   # struct linger {l_onoff=1, l_linger=0}


cdef class Worker:
    def __init__(self, Snapshot snapshot, loop, int worker_id=0):
        self.snapshot = snapshot
        self.loop = loop
        self.connections = set()
        self.worker_id = worker_id
        self.open_slot = -1
        self.own_slot = -1
        self.reseed()
        self.date = formatdate(usegmt=True).encode()

    def reseed(self):
        """New random request-id prefix; call in every process after fork."""
        cdef bytes r = os.urandom(8)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(r)
        # 8-4-4 groups of a version-4 UUID; the counter fills the last two groups
        snprintf(self.rid_prefix, 20, "%02x%02x%02x%02x-%02x%02x-4%01x%02x-",
                 p[0], p[1], p[2], p[3], p[4], p[5], p[6] & 15, p[7])
        self.rid_counter = 0

    cdef bytes new_request_id(self):
        # PERF: hex digits by hand, not snprintf (bench/wrk_compare.py, scenario keepalive)
        cdef char buf[36]
        cdef unsigned long long c = self.rid_counter
        cdef unsigned long long v
        cdef int i
        self.rid_counter += 1
        memcpy(buf, self.rid_prefix, 19)            # "xxxxxxxx-xxxx-4xxx-"
        v = 0x8000 | ((c >> 48) & 0x3fff)           # RFC 4122 variant bits
        for i in range(3, -1, -1):
            buf[19 + i] = HEX[v & 15]
            v >>= 4
        buf[23] = b'-'
        v = c & 0xffffffffffffULL
        for i in range(11, -1, -1):
            buf[24 + i] = HEX[v & 15]
            v >>= 4
        return PyBytes_FromStringAndSize(buf, 36)

    def request_id(self):
        return self.new_request_id()

    def start(self):
        self.tick_handle = self.loop.call_later(TICK_MS / 1000.0, self._tick)

    def _tick(self):
        self.tick()
        if not (self.draining and not self.connections):
            self.tick_handle = self.loop.call_later(TICK_MS / 1000.0, self._tick)

    cdef void tick(self):
        cdef double now = monotonic()
        cdef Downstream c
        self.ticks += 1
        if self.ticks % 10 == 0:
            self.date = formatdate(usegmt=True).encode()
            if self.snapshot.access_log is not None:
                self.snapshot.access_log.flush()
            for log_ in self.snapshot.stage_logs:
                log_.flush()
            if self.snapshot.execution_log is not None:
                self.snapshot.execution_log.flush()
        if self.ticks % 5 == 0:
            self.refresh_health()
        for c in list(self.connections):
            if c.deadline_kind != DL_NONE and (c.deadline <= now or
                                               (c.total_deadline > 0 and c.total_deadline <= now)):
                c.check_timeout(now)

    def refresh_health(self):
        """Copy the admin process's active health-check verdicts into this worker's targets."""
        cdef SharedMetrics m = self.snapshot.metrics
        if m is None:
            return
        for g in self.snapshot.groups:
            for t in (<UpstreamGroup>g).targets:
                if (<Target>t).health_slot >= 0:
                    (<Target>t).healthy = m.gauge_get((<Target>t).health_slot) != 0

    def swap(self, Snapshot snapshot):
        """Publish a new snapshot; requests in flight keep the one they started with."""
        old, self.snapshot = self.snapshot, snapshot
        if old is not None and old is not snapshot:
            if old.access_log is not None and old.access_log is not snapshot.access_log:
                old.access_log.close()
            if old.execution_log is not None and old.execution_log is not snapshot.execution_log:
                old.execution_log.close()
            for log_ in old.stage_logs:
                if log_ not in snapshot.stage_logs:
                    log_.close()
            if old.tracer is not None and old.tracer is not snapshot.tracer:
                old.tracer.close(0)     # its thread still exports what is queued
            old.retire()
        self.refresh_health()

    def drain(self, bint close_idle=True):
        """Stop taking requests: every connection closes after its next response (which says
        Connection: close). Idle ones close now, unless close_idle is False: on a binary
        upgrade a client may be sending on one this very moment, and it should get an answer,
        not a reset."""
        self.draining = True
        if close_idle:
            for c in list(self.connections):
                (<Downstream>c).shutdown()

    def close_all(self):
        for c in list(self.connections):
            (<Downstream>c).abort()

    def connection_count(self):
        return len(self.connections)

    def __dealloc__(self):
        free(self.head.p)
        free(self.cork.p)


cdef class Downstream:
    """The client side of a connection (see runtime.pxd); ClientConnection fills it in."""

    # --- writing ------------------------------------------------------------------

    cdef void cork(self):
        """Gather writes to the client until uncork() (a read callback's writes leave together)."""
        cdef Worker w = self.worker
        if w.cork_owner is not None and w.cork_owner is not self:
            w.cork_owner.uncork()
        w.cork_owner = self
        self.corked = True

    cdef void send(self, data):
        """Write to the client; while corked (inside a read callback), gather instead."""
        if self.lingering:
            return   # the write side is shut: nothing may follow the FIN
        if self.corked and type(data) is bytes:
            self.send_ptr(PyBytes_AS_STRING(<bytes>data), PyBytes_GET_SIZE(<bytes>data), <bytes>data)
            return
        self.flush_cork()
        if self.transport is not None:
            self.put(data)

    cdef void send_ptr(self, const char* p, Py_ssize_t n, bytes whole):
        """Write n bytes at p to the client (whole: the same bytes as an object, or None)."""
        if self.lingering or n == 0:
            return
        if self.corked and n < CORK_DIRECT:
            if self.worker.cork.len + n > CORK_MAX:
                self.flush_cork()
            buf_put(&self.worker.cork, p, n)
            return
        self.flush_cork()
        if self.transport is not None:
            self.put(whole if whole is not None else PyBytes_FromStringAndSize(p, n))

    cdef void flush_cork(self):
        """Write what the cork gathered so far (the cork stays)."""
        cdef bytes data
        cdef Buf* b = &self.worker.cork
        if not self.corked or b.len == 0:
            return
        data = buf_take(b)
        b.len = 0
        if self.ctx is not None:
            self.ctx.head_mark = -1     # the head left: it can no longer be taken back
        if self.transport is not None and not self.put_closed():
            self.put(data)

    cdef void uncork(self):
        if not self.corked:
            return
        self.flush_cork()
        self.corked = False
        self.worker.cork_owner = None
        buf_shrink(&self.worker.cork, CORK_KEEP)

    cdef Py_ssize_t cork_mark(self):
        return self.worker.cork.len if self.corked else -1

    cdef bint uncork_to(self, Py_ssize_t mark):
        """Forget what was gathered after mark (a relayed head that must be unsaid); False
        when it left already."""
        if not self.corked or mark < 0 or mark > self.worker.cork.len:
            return False
        self.worker.cork.len = mark
        return True

    # --- reading ------------------------------------------------------------------

    cdef void set_pause(self, int reason, bint on):
        cdef double pause
        if on:
            self.pause_reasons |= reason
        else:
            self.pause_reasons &= ~reason
        if self.closed or self.transport is None:
            return
        if self.pause_reasons and not self.reading_paused:
            self.reading_paused = True
            self.paused_at = monotonic_coarse()
            self.transport.pause_reading()
        elif not self.pause_reasons and self.reading_paused:
            self.reading_paused = False
            # time the gateway did not read is not the client's: its body clock moves on by it
            if self.ctx is not None:
                pause = monotonic_coarse() - self.paused_at
                self.ctx.body_start += pause
                self.ctx.body_last += pause
            self.transport.resume_reading()

    # --- the end of an exchange, and of the connection -----------------------------

    cdef void exchange_over(self, RequestContext ctx):
        """The response is complete (ClientConnection: serve the next request, or close)."""
        self.close_transport()

    cdef void release_upstream(self):
        """Close the active request's upstream connection (ClientConnection: its Proxy)."""

    cdef double body_due(self, RequestContext ctx):
        """When the active request's body is late (check_timeout answers 408): body_timeout
        after its last bytes and, while it is not complete, once it averages less than
        min_body_rate after body_rate_grace (as Apache's mod_reqtimeout MinRate: each byte buys
        1/min_body_rate s more), or body_deadline after it started. A trickle that restarts the
        idle timeout with every byte would otherwise hold the connection forever (slow POST).
        While the gateway itself is not reading (the upstream is full or not ready) the rate is
        not checked, and the clock moves on by that time when reading resumes (set_pause)."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef double due = ctx.body_last + snap.body_timeout, t
        if ctx.body_complete or ctx.expect_continue:
            return due      # (a client waiting for its 100 Continue has not been asked yet)
        if snap.min_body_rate > 0 and not self.reading_paused:
            t = ctx.body_start + snap.body_rate_grace + ctx.request_length / snap.min_body_rate
            if t < due:
                due = t
        if snap.body_deadline > 0 and ctx.body_start + snap.body_deadline < due:
            due = ctx.body_start + snap.body_deadline
        return due

    cdef void check_timeout(self, double now):
        """The deadline passed (ClientConnection decides what that means)."""
        self.abort()

    cdef void shutdown(self):
        """Graceful drain: close after the current response."""
        self.close_after = True
        if self.ctx is None and not self.tunnel:
            self.close_transport()

    cdef void abort(self):
        """Close now: the client's framing cannot be completed."""
        self.release_upstream()
        self.close_after = True
        if self.transport is not None and not self.closed:
            self.transport.abort()

    cpdef close_transport(self):
        if self.transport is None or self.closed or self.lingering:
            return
        self.uncork()
        if self.unread and not self.tunnel and self.transport.can_write_eof():
            # Lingering close (nginx's): closing with unread input makes the kernel send a reset,
            # which can destroy the response we just wrote before the client reads it, and a
            # client that writes its whole body before reading (http.client, h11) fails on the
            # reset instead of reading the answer. Send FIN, discard what still comes, close on
            # EOF, after LINGER_IDLE_MS without input, or after LINGER_MAX_MS in all.
            self.lingering = True
            self.transport.write_eof()
            self.pause_reasons = 0
            if self.reading_paused:
                self.reading_paused = False
                self.transport.resume_reading()
            self.deadline_kind = DL_DRAIN
            self.deadline = monotonic_coarse() + LINGER_IDLE_MS / 1000.0
            # a draining worker does not wait for an uploader that will not stop
            self.total_deadline = self.deadline if self.worker.draining else \
                monotonic_coarse() + LINGER_MAX_MS / 1000.0
            return
        self.closed = True
        self.transport.close()

    cdef void reset(self):
        """Close with a reset (SO_LINGER 0): a body delimited by the close must not look
        complete when it was cut short (RFC 9112 section 8)."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        self.abort()
