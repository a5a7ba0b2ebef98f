# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Metrics in shared memory, summed over all worker processes; see metrics.pxd."""

import re

from libc.errno cimport errno, ESRCH
from libc.string cimport memcmp, memcpy
from posix.mman cimport mmap, munmap, MAP_FAILED, MAP_SHARED, MAP_ANONYMOUS, PROT_READ, PROT_WRITE
from posix.signal cimport kill
from posix.unistd cimport getpid

from fastgate._core.pipeline cimport RequestContext


cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from *:
    """
    /* Relaxed ordering for counters: each is an independent tally and render
       only needs every increment to land eventually. Slot publication and the
       allocation lock use acquire/release. Lock-free on x86-64 and aarch64,
       so they work across processes on a shared mapping. */
    static inline void fg_add_u64(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline void fg_add_i64(int64_t *p, int64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline void fg_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline int64_t fg_load_i64(int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline uint64_t fg_load_u64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline int32_t fg_load_i32(int32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void fg_store_i32(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline int fg_cas_i32(int32_t *p, int32_t expected, int32_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    /* Histogram upper bounds (le), microseconds: sub-millisecond cache hits up
       to the 60 s ceiling of a slow upstream. */
    static const long long FG_BUCKET_BOUNDS_US[16] = {
        500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
        250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
    };
    """
    void fg_add_u64(uint64_t* p, uint64_t v) nogil
    void fg_add_i64(int64_t* p, int64_t v) nogil
    void fg_store_i64(int64_t* p, int64_t v) nogil
    int64_t fg_load_i64(int64_t* p) nogil
    uint64_t fg_load_u64(uint64_t* p) nogil
    int32_t fg_load_i32(int32_t* p) nogil
    void fg_store_i32(int32_t* p, int32_t v) nogil
    bint fg_cas_i32(int32_t* p, int32_t expected, int32_t desired) nogil
    const long long FG_BUCKET_BOUNDS_US[16]

# `le` label text of each finite bucket, seconds, matching FG_BUCKET_BOUNDS_US.
BUCKET_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LE = [repr(b).encode() for b in BUCKET_BOUNDS_S] + [b"+Inf"]
_STATUS_CLASSES = (b"1xx", b"2xx", b"3xx", b"4xx", b"5xx")
_OVERFLOW_LABELS = b'route="other",api="",stage=""'
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# HELP text of the gauges the gateway itself creates; others get a generic one.
GAUGE_HELP = {
    "fastgate_open_connections": "Client connections open, all workers.",
    "fastgate_upstream_healthy": "1 when the active health check passes for the target, else 0.",
    "fastgate_upstream_connections": "Connections open to the upstream target, all workers.",
    "fastgate_workers": "Worker processes running.",
    "fastgate_worker_open_connections": "Client connections open, by worker.",
}


def escape_label_value(str value):
    """Label value escaping of the text exposition format 0.0.4: backslash,
    double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


cdef inline void observe(Histogram* h, double seconds) noexcept nogil:
    cdef long long us = <long long>(seconds * 1e6 + 0.5)
    cdef int i = 0
    if us < 0:
        us = 0
    # PERF: a linear scan over 16 bounds beats a binary search at this size
    # and most requests stop in the first few buckets (bench/bench_accesslog.py::test_record_request).
    while i < N_BUCKETS and us > FG_BUCKET_BOUNDS_US[i]:
        i += 1
    fg_add_u64(&h.buckets[i], 1)
    fg_add_u64(&h.sum_us, <uint64_t>us)


cdef class SharedMetrics:

    def __cinit__(self):
        self.header = NULL
        self.slots = NULL

    def __init__(self):
        raise TypeError("use SharedMetrics.create(max_series) in the supervisor before forking")

    def __dealloc__(self):
        # Unmaps only this process's view; the other processes keep theirs.
        if self.header != NULL:
            munmap(<void*>self.header, self.map_size)
            self.header = NULL

    @staticmethod
    def create(int max_series=4096):
        """A new, zeroed table for max_series series (+1 overflow slot). Call it
        in the supervisor before fork so the workers inherit the mapping."""
        if max_series < 1 or max_series > 1 << 20:
            raise ValueError(f"max_series must be in 1..{1 << 20}, got {max_series}")
        cdef SharedMetrics self = SharedMetrics.__new__(SharedMetrics)
        cdef size_t size = sizeof(ShmHeader) + (<size_t>max_series + 1) * sizeof(Slot)
        cdef void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "mmap of the metrics table failed")
        # An anonymous mapping is zero-filled: every slot starts SLOT_FREE with zero numbers.
        self.header = <ShmHeader*>p
        self.slots = <Slot*>(<char*>p + sizeof(ShmHeader))
        self.map_size = size
        self.capacity = max_series
        self.overflow_slot = max_series
        self.header.magic = SHM_MAGIC
        self.header.capacity = max_series
        cdef Slot* over = &self.slots[max_series]
        memcpy(over.labels, <char*>_OVERFLOW_LABELS, len(_OVERFLOW_LABELS))
        over.labels_len = len(_OVERFLOW_LABELS)
        fg_store_i32(&over.kind, SLOT_REQUEST)
        return self

    # --- allocation (config-compile time) ---

    cdef void lock(self) noexcept nogil:
        cdef int32_t me = getpid(), holder
        cdef int spins = 0
        while not fg_cas_i32(&self.header.lock, 0, me):
            spins += 1
            if spins >= LOCK_SPINS_BEFORE_CHECK:
                # A worker killed inside the critical section would wedge every
                # later allocation (and so every config reload): rob dead holders.
                spins = 0
                holder = fg_load_i32(&self.header.lock)
                if holder != 0 and kill(holder, 0) != 0 and errno == ESRCH:
                    fg_cas_i32(&self.header.lock, holder, 0)
            sched_yield()

    cdef void unlock(self) noexcept nogil:
        fg_store_i32(&self.header.lock, 0)

    cdef int alloc_slot(self, int kind, bytes name, bytes labels) except -2:
        """Slot of (kind, name, labels), allocating it if new; -1 when full."""
        cdef Py_ssize_t nlen = len(name), llen = len(labels)
        cdef const char* pname = name
        cdef const char* plabels = labels
        cdef int i, used
        cdef Slot* s
        if nlen > NAME_MAX or llen > LABELS_MAX:
            raise ValueError("metric name or labels too long")
        self.lock()
        try:
            used = fg_load_i32(&self.header.used)
            for i in range(used):
                s = &self.slots[i]
                if (fg_load_i32(&s.kind) == kind and s.name_len == nlen and s.labels_len == llen
                        and memcmp(s.name, pname, nlen) == 0
                        and memcmp(s.labels, plabels, llen) == 0):
                    return i
            if used >= self.capacity:
                return -1
            # Count the slot before filling it: a holder that dies mid-fill
            # leaks one slot (kind stays FREE, render skips it) instead of
            # leaving a half-written slot for the next allocation to reuse.
            fg_store_i32(&self.header.used, used + 1)
            s = &self.slots[used]
            memcpy(s.name, pname, nlen)
            s.name_len = <int32_t>nlen
            memcpy(s.labels, plabels, llen)
            s.labels_len = <int32_t>llen
            fg_store_i32(&s.kind, kind)
            return used
        finally:
            self.unlock()

    def request_series(self, str route, str api="", str stage=""):
        """Slot for the request metrics of one route (route key as API Gateway
        writes it). Idempotent; past capacity returns the route="other" slot."""
        labels = (f'route="{escape_label_value(route)}",api="{escape_label_value(api)}",'
                  f'stage="{escape_label_value(stage)}"').encode()
        cdef int slot = -1
        if len(labels) <= LABELS_MAX:
            slot = self.alloc_slot(SLOT_REQUEST, b"", labels)
        if slot < 0:
            fg_store_i32(&self.header.overflow_used, 1)
            return self.overflow_slot
        return slot

    def gauge_series(self, str name, dict labels=None):
        """Slot of one gauge series, e.g. gauge_series("fastgate_upstream_healthy",
        {"upstream": "pets", "target": "10.0.0.1:80"}). Idempotent (label order
        does not matter); -1 past capacity, which every update ignores."""
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        parts = []
        for key in sorted(labels or ()):
            if not _LABEL_NAME.match(key) or key.startswith("__"):
                raise ValueError(f"invalid label name {key!r}")
            parts.append(f'{key}="{escape_label_value(str(labels[key]))}"')
        return self.alloc_slot(SLOT_GAUGE, name.encode(), ",".join(parts).encode())

    # --- hot path ---

    cdef void record_request(self, int slot, int status, double latency_s,
                             double integration_s) noexcept nogil:
        if <unsigned int>slot > <unsigned int>self.capacity:
            return
        cdef Slot* s = &self.slots[slot]
        cdef int cls = status // 100 - 1
        if cls < 0 or cls >= N_STATUS_CLASSES:
            cls = N_STATUS_CLASSES - 1
        fg_add_u64(&s.status[cls], 1)
        observe(&s.duration, latency_s)
        if integration_s >= 0.0:
            observe(&s.integration, integration_s)

    cdef void record_context(self, int slot, RequestContext ctx) noexcept:
        cdef double integration_s = -1.0
        if ctx.integration_start > 0:
            integration_s = ctx.integration_latency()
        self.record_request(slot, ctx.status, ctx.latency(), integration_s)

    cdef void gauge_add(self, int slot, long long delta) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            fg_add_i64(&self.slots[slot].gauge, delta)

    cdef void gauge_set(self, int slot, long long value) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            fg_store_i64(&self.slots[slot].gauge, value)

    cdef long long gauge_get(self, int slot) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            return fg_load_i64(&self.slots[slot].gauge)
        return 0

    # --- Python-callable wrappers (control plane, tests) ---

    def record(self, int slot, int status, double latency_s, double integration_s=-1.0):
        """record_request for Python callers; integration_s < 0 = no integration."""
        self.record_request(slot, status, latency_s, integration_s)

    def record_many(self, int slot, long n, int status, double latency_s, double integration_s=-1.0):
        """record_request n times from C: measures the hot-path cost without
        Python call overhead (bench/bench_accesslog.py)."""
        cdef long i
        with nogil:
            for i in range(n):
                self.record_request(slot, status, latency_s, integration_s)

    def record_ctx(self, int slot, RequestContext ctx):
        self.record_context(slot, ctx)

    def add(self, int slot, long long delta):
        self.gauge_add(slot, delta)

    def set(self, int slot, long long value):
        self.gauge_set(slot, value)

    def get(self, int slot):
        return self.gauge_get(slot)

    def request_stats(self, int slot):
        """Numbers of one request slot as a dict (control API, tests)."""
        if <unsigned int>slot > <unsigned int>self.capacity:
            raise IndexError(slot)
        cdef Slot* s = &self.slots[slot]
        return {
            "status": {_STATUS_CLASSES[i].decode(): fg_load_u64(&s.status[i])
                       for i in range(N_STATUS_CLASSES)},
            "count": _hist_count(&s.duration),
            "duration_sum_s": fg_load_u64(&s.duration.sum_us) / 1e6,
            "integration_count": _hist_count(&s.integration),
            "integration_sum_s": fg_load_u64(&s.integration.sum_us) / 1e6,
        }

    # --- exposition (admin listener, off the request path) ---

    def render(self):
        """All series in the Prometheus text exposition format 0.0.4."""
        cdef int used = fg_load_i32(&self.header.used), i
        cdef Slot* s
        requests = []
        gauges = {}
        for i in range(used):
            s = &self.slots[i]
            kind = fg_load_i32(&s.kind)
            if kind == SLOT_REQUEST:
                requests.append(i)
            elif kind == SLOT_GAUGE:
                gauges.setdefault(s.name[:s.name_len], []).append(i)
        if fg_load_i32(&self.header.overflow_used):
            requests.append(self.overflow_slot)

        out = []
        w = out.append
        w(b"# HELP fastgate_requests_total Requests answered, by route and status class.\n"
          b"# TYPE fastgate_requests_total counter\n")
        for i in requests:
            s = &self.slots[i]
            labels = s.labels[:s.labels_len]
            for c in range(N_STATUS_CLASSES):
                w(b"fastgate_requests_total{%s,status_class=\"%s\"} %d\n"
                  % (labels, _STATUS_CLASSES[c], fg_load_u64(&s.status[c])))
        _render_histogram(self, w, requests, b"fastgate_request_duration_seconds",
                          b"Time from the first request byte to the last response byte.", False)
        _render_histogram(self, w, requests, b"fastgate_integration_duration_seconds",
                          b"Time spent in the integration (upstream), requests with one only.", True)
        for name in sorted(gauges):
            help_text = GAUGE_HELP.get(name.decode(), "fastgate gauge.").encode()
            w(b"# HELP %s %s\n# TYPE %s gauge\n" % (name, help_text, name))
            for i in gauges[name]:
                s = &self.slots[i]
                if s.labels_len:
                    w(b"%s{%s} %d\n" % (name, s.labels[:s.labels_len], fg_load_i64(&s.gauge)))
                else:
                    w(b"%s %d\n" % (name, fg_load_i64(&s.gauge)))
        return b"".join(out)

    def __reduce__(self):
        raise TypeError("SharedMetrics is shared by fork inheritance, not by pickling")


cdef uint64_t _hist_count(Histogram* h) noexcept nogil:
    cdef uint64_t n = 0
    cdef int b
    for b in range(N_BUCKETS + 1):
        n += fg_load_u64(&h.buckets[b])
    return n


cdef _render_histogram(SharedMetrics m, w, list slots, bytes name, bytes help_text, bint integration):
    cdef Slot* s
    cdef Histogram* h
    cdef uint64_t cumulative
    cdef int b
    w(b"# HELP %s %s\n# TYPE %s histogram\n" % (name, help_text, name))
    for i in slots:
        s = &m.slots[<int>i]
        h = &s.integration if integration else &s.duration
        # Snapshot the buckets first: other processes keep recording, and
        # _count must equal the +Inf bucket for the output to be valid.
        counts = [fg_load_u64(&h.buckets[b]) for b in range(N_BUCKETS + 1)]
        if integration and not any(counts):
            continue  # route without an integration (mock, echo) or none yet
        labels = s.labels[:s.labels_len]
        cumulative = 0
        for b in range(N_BUCKETS + 1):
            cumulative += <uint64_t>counts[b]
            w(b"%s_bucket{%s,le=\"%s\"} %d\n" % (name, labels, _LE[b], cumulative))
        w(b"%s_sum{%s} %s\n" % (name, labels, repr(fg_load_u64(&h.sum_us) / 1e6).encode()))
        w(b"%s_count{%s} %d\n" % (name, labels, cumulative))
