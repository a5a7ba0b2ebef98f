# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A shared-memory ring of the last finished requests; see tail.pxd."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.exc cimport PyErr_Clear
from libc.errno cimport errno
from libc.string cimport memcpy
from posix.mman cimport mmap, munmap, MAP_FAILED, MAP_SHARED, MAP_ANONYMOUS, PROT_READ, PROT_WRITE

from fastgate._core.pipeline cimport RequestContext, Route, ApiStage
# the ticket counter and each slot's seq are the only shared words written by several
# processes; the fields in between are plain stores, fenced like a seqlock (tail.pxd):
# the writer's BUSY mark is visible before any field store, the reader's field loads
# complete before its second seq load
from fastgate._core.shm cimport (fg_add_u64_rlx, fg_cas_u64_acqrel, fg_fence_acquire,
                                fg_fence_release, fg_fetch_add_u64_rlx, fg_load_u64_acq,
                                fg_load_u64_rlx, fg_store_u64_rel, sched_yield)


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

cdef inline uint64_t done_mark(uint64_t ticket) noexcept nogil:
    return 2 * (ticket + 1)


cdef inline uint8_t copy_bytes(char* dst, int cap, bytes src) noexcept:
    if src is None:
        return 0
    cdef Py_ssize_t n = PyBytes_GET_SIZE(src)
    if n > cap:
        n = cap
    memcpy(dst, PyBytes_AS_STRING(src), n)
    return <uint8_t>n


cdef inline uint8_t copy_str(char* dst, int cap, str src) noexcept:
    # PERF: for the ASCII strings route keys and error types are, CPython hands
    # out the string's own buffer: no allocation. A non-ASCII one gets its UTF-8
    # copy cached on the str the first time (once per route, not per request).
    if src is None:
        return 0
    cdef Py_ssize_t n = 0
    cdef const char* p
    try:
        p = PyUnicode_AsUTF8AndSize(src, &n)
    except BaseException:   # MemoryError only: record the field empty, never raise
        PyErr_Clear()
        return 0
    if n > cap:
        n = cap   # may cut a UTF-8 sequence; the reader decodes with errors="replace"
    memcpy(dst, p, n)
    return <uint8_t>n


cdef TailRing _installed = None


cdef void record_finished(RequestContext ctx, int worker_id, bytes api_key_id) noexcept:
    if _installed is not None:
        _installed.record(ctx, worker_id, api_key_id)


def install(TailRing ring):
    """Make ring the one record_finished writes to and installed() returns. The
    supervisor calls it before forking, so every child inherits it; None uninstalls."""
    global _installed
    _installed = ring


def installed():
    """The ring install()ed in this process (or inherited from the supervisor), or None."""
    return _installed


cdef class TailRing:

    def __cinit__(self):
        self.header = NULL
        self.slots = NULL

    def __init__(self):
        raise TypeError("use TailRing.create(capacity) in the supervisor before forking")

    def __dealloc__(self):
        if self.header != NULL:
            munmap(<void*>self.header, self.map_size)
            self.header = NULL

    @staticmethod
    def create(int capacity=4096):
        """A new, empty ring of capacity entries (a power of two: the slot of a
        ticket is one AND). Call it before fork so the children share it."""
        if capacity < 2 or capacity > 1 << 20 or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two in 2..{1 << 20}, got {capacity}")
        cdef TailRing self = TailRing.__new__(TailRing)
        cdef size_t size = sizeof(TailHeader) + <size_t>capacity * sizeof(TailSlot)
        cdef void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "mmap of the request tail failed")
        # zero-filled: ticket 0, every seq 0 (never written)
        self.header = <TailHeader*>p
        self.slots = <TailSlot*>(<char*>p + sizeof(TailHeader))
        self.map_size = size
        self.capacity = capacity
        self.mask = <uint64_t>capacity - 1
        self.header.magic = TAIL_MAGIC
        self.header.capacity = capacity
        return self

    # --- hot path ---

    cdef bint claim(self, uint64_t ticket, TailSlot** out) noexcept nogil:
        cdef TailSlot* slot = &self.slots[ticket & self.mask]
        cdef uint64_t seen = fg_load_u64_acq(&slot.seq)
        # Odd: another writer is inside this slot (or died there). Newer than our
        # ticket: we were so slow that the ring lapped us. Either way, step aside:
        # two writers in one slot could publish a mix of both entries.
        if seen & 1 or seen > done_mark(ticket) or not fg_cas_u64_acqrel(&slot.seq, seen, done_mark(ticket) + 1):
            fg_add_u64_rlx(&self.header.dropped, 1)
            return False
        fg_fence_release()
        out[0] = slot
        return True

    cdef void publish(self, uint64_t ticket, TailSlot* slot) noexcept nogil:
        fg_store_u64_rel(&slot.seq, done_mark(ticket))

    cdef void record(self, RequestContext ctx, int worker_id, bytes api_key_id) noexcept:
        cdef uint64_t ticket = fg_fetch_add_u64_rlx(&self.header.ticket, 1)
        cdef TailSlot* slot
        if not self.claim(ticket, &slot):
            return
        cdef TailEntry* e = &slot.entry
        cdef Route route = ctx.route
        cdef ApiStage api = ctx.api
        cdef double integration_s = -1.0
        if ctx.integration_start > 0:
            integration_s = ctx.integration_latency()
        e.time_ms = ctx.request_time_ms
        e.latency_us = <int64_t>(ctx.latency() * 1e6 + 0.5)
        e.integration_us = <int64_t>(integration_s * 1e6 + 0.5) if integration_s >= 0 else -1
        e.bytes_in = ctx.request_length
        e.bytes_out = ctx.response_length
        e.worker_id = worker_id
        e.status = ctx.status
        e.method_len = copy_bytes(e.method, TAIL_METHOD, ctx.method)
        e.request_id_len = copy_bytes(e.request_id, TAIL_REQUEST_ID, ctx.request_id)
        e.route_len = copy_str(e.route, TAIL_ROUTE, route.route_key) if route is not None else 0
        e.path_len = copy_bytes(e.path, TAIL_PATH, ctx.path)
        if api is not None:
            e.api_len = copy_bytes(e.api, TAIL_API, api.api_id_b)
            e.stage_len = copy_bytes(e.stage, TAIL_STAGE, api.stage_b)
        else:
            e.api_len = 0
            e.stage_len = 0
        e.key_id_len = copy_bytes(e.key_id, TAIL_KEY_ID, api_key_id)
        e.error_len = copy_str(e.error, TAIL_ERROR, ctx.error_type)
        e.ip_len = copy_bytes(e.ip, TAIL_IP, ctx.client_ip if ctx.client_ip else ctx.source_ip)
        self.publish(ticket, slot)

    # --- Python-callable (admin process, tests) ---

    def record_ctx(self, RequestContext ctx, int worker_id=0, bytes api_key_id=None):
        """record() for Python callers."""
        self.record(ctx, worker_id, api_key_id)

    def write(self, *, long long time_ms=0, int worker_id=0, bytes method=b"GET", int status=200,
              long long latency_us=0, long long integration_us=-1, long long bytes_in=0,
              long long bytes_out=0, bytes request_id=b"", str route="", bytes path=b"/",
              bytes api=b"", bytes stage=b"", bytes key_id=b"", str error="", bytes ip=b""):
        """One entry from plain values, through the same claim/publish as record()
        (tests, and writers without a RequestContext)."""
        cdef uint64_t ticket = fg_fetch_add_u64_rlx(&self.header.ticket, 1)
        cdef TailSlot* slot
        if not self.claim(ticket, &slot):
            return False
        cdef TailEntry* e = &slot.entry
        e.time_ms = time_ms
        e.latency_us = latency_us
        e.integration_us = integration_us
        e.bytes_in = bytes_in
        e.bytes_out = bytes_out
        e.worker_id = worker_id
        e.status = status
        e.method_len = copy_bytes(e.method, TAIL_METHOD, method)
        e.request_id_len = copy_bytes(e.request_id, TAIL_REQUEST_ID, request_id)
        e.route_len = copy_str(e.route, TAIL_ROUTE, route)
        e.path_len = copy_bytes(e.path, TAIL_PATH, path)
        e.api_len = copy_bytes(e.api, TAIL_API, api)
        e.stage_len = copy_bytes(e.stage, TAIL_STAGE, stage)
        e.key_id_len = copy_bytes(e.key_id, TAIL_KEY_ID, key_id)
        e.error_len = copy_str(e.error, TAIL_ERROR, error)
        e.ip_len = copy_bytes(e.ip, TAIL_IP, ip)
        self.publish(ticket, slot)
        return True

    @property
    def head(self):
        """Tickets handed out so far: read_since(ring.head) returns only later entries."""
        return fg_load_u64_acq(&self.header.ticket)

    @property
    def dropped(self):
        """Entries writers stepped aside from (their slot was busy or lapped)."""
        return fg_load_u64_rlx(&self.header.dropped)

    def read_since(self, unsigned long long seq):
        """(new_seq, entries, lost): the entries with tickets seq..new_seq-1 in
        ticket order, as dicts. lost counts those that could not be read whole:
        overrun (more than capacity entries behind), dropped by their writer, or
        still being written after a short wait. Pass new_seq to the next call."""
        cdef uint64_t head = fg_load_u64_acq(&self.header.ticket)
        cdef uint64_t t, start = seq, v1, v2
        cdef TailSlot* slot
        cdef TailEntry copy
        cdef int spins
        if head < start:
            start = head     # a seq from another ring (or a restarted gateway): start over
        if head - start > <uint64_t>self.capacity:
            start = head - self.capacity
        lost = start - seq if start > seq else 0
        out = []
        t = start
        while t < head:
            slot = &self.slots[t & self.mask]
            spins = 0
            while True:
                v1 = fg_load_u64_acq(&slot.seq)
                if v1 == done_mark(t):
                    memcpy(&copy, &slot.entry, sizeof(TailEntry))
                    fg_fence_acquire()
                    v2 = fg_load_u64_rlx(&slot.seq)
                    if v2 == v1:
                        out.append(_entry_dict(t, &copy))
                        break
                    lost += 1    # overwritten while we copied it
                    break
                if v1 > done_mark(t):
                    lost += 1    # lapped: a newer ticket holds the slot
                    break
                # Not yet published: its writer holds the ticket and is about to
                # (nanoseconds), or stepped aside / died. Wait a little, then give up.
                spins += 1
                if spins > TAIL_BUSY_RETRIES:
                    lost += 1
                    break
                if spins % 100 == 0:
                    with nogil:
                        sched_yield()
            t += 1
        return head, out, lost

    def __reduce__(self):
        raise TypeError("TailRing is shared by fork inheritance, not by pickling")


cdef inline str _text(const char* p, int n):
    return p[:n].decode("utf-8", "replace")


cdef dict _entry_dict(uint64_t ticket, TailEntry* e):
    return {
        "seq": ticket,
        "time_ms": e.time_ms,
        "worker": e.worker_id,
        "method": _text(e.method, e.method_len),
        "status": e.status,
        "latency_us": e.latency_us,
        "integration_us": e.integration_us if e.integration_us >= 0 else None,
        "bytes_in": e.bytes_in,
        "bytes_out": e.bytes_out,
        "request_id": _text(e.request_id, e.request_id_len),
        "route": _text(e.route, e.route_len),
        "path": _text(e.path, e.path_len),
        "api": _text(e.api, e.api_len),
        "stage": _text(e.stage, e.stage_len),
        "key_id": _text(e.key_id, e.key_id_len),
        "error_type": _text(e.error, e.error_len),
        "source_ip": _text(e.ip, e.ip_len),
    }
