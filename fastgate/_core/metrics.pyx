# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Metrics in shared memory, summed over all worker processes; see metrics.pxd."""

import re

from libc.errno cimport errno
from libc.string cimport memcmp, memcpy
from posix.mman cimport mmap, munmap, MAP_FAILED, MAP_SHARED, MAP_ANONYMOUS, PROT_READ, PROT_WRITE

from fastgate._core.pipeline cimport RequestContext
# counters are independent tallies (relaxed); slot publication and the allocation lock
# use acquire/release
from fastgate._core.shm cimport (fg_add_i64_rlx, fg_add_u64_rlx, fg_cas_i32_acq, fg_load_i32_acq,
                                fg_load_i64_rlx, fg_load_u64_rlx, fg_store_i32_rel, fg_store_i64_rlx,
                                pid_lock, pid_unlock)


cdef extern from *:
    """
    /* Histogram upper bounds (le), microseconds: sub-millisecond cache hits up
       to the 60 s ceiling of a slow upstream. */
    static const long long FG_BUCKET_BOUNDS_US[16] = {
        500, 1000, 2500, 5000, 10000, 25000, 50000, 100000,
        250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
    };
    """
    const long long FG_BUCKET_BOUNDS_US[16]

# `le` label text of each finite bucket, seconds, matching FG_BUCKET_BOUNDS_US.
BUCKET_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_LE = [repr(b).encode() for b in BUCKET_BOUNDS_S] + [b"+Inf"]
_STATUS_CLASSES = (b"1xx", b"2xx", b"3xx", b"4xx", b"5xx")
_OVERFLOW_LABELS = b'route="other",api="",stage=""'
_STAGE_OVERFLOW_LABELS = b'api="other",stage="other"'
_THROTTLE_LEVELS = (b"usage_plan", b"method", b"gateway", b"quota")   # index = ThrottleLevel
_CACHE_RESULTS = (b"miss", b"hit", b"redis_hit")   # by CacheResult
_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

# HELP text of the gauges the gateway itself creates; others get a generic one.
GAUGE_HELP = {
    "fastgate_open_connections": "Client connections open, all workers.",
    "fastgate_upstream_healthy": "1 when the active health check passes for the target, else 0.",
    "fastgate_upstream_connections": "Connections open to the upstream target, all workers.",
    "fastgate_workers": "Worker processes running.",
    "fastgate_worker_open_connections": "Client connections open, by worker.",
    "fastgate_worker_upstream_connections": "Connections open to the upstream target, by worker.",
}
# HELP text of the counters the gateway creates (counter_series).
COUNTER_HELP = {
    "fastgate_trace_spans_total": "Finished trace spans, by what became of them.",
    "fastgate_execution_log_dropped_total": "Execution log lines dropped by the rate limit or a stalled writer.",
}

_LIMITER_LEVELS = {"route": THROTTLE_METHOD, "stage": THROTTLE_METHOD, "method": THROTTLE_METHOD,
                   "gateway": THROTTLE_GATEWAY, "usage-plan": THROTTLE_USAGE_PLAN,
                   "usage_plan": THROTTLE_USAGE_PLAN, "quota": THROTTLE_QUOTA}


cdef int throttle_level_of(str limiter_name) noexcept:
    """ThrottleLevel of a Limiter's name; unknown names count as method (stage/route)."""
    level = _LIMITER_LEVELS.get(limiter_name)
    return THROTTLE_METHOD if level is None else <int>level


def level_of(str limiter_name):
    """throttle_level_of for Python callers (fastgate.phases.access, tests)."""
    return throttle_level_of(limiter_name)


def _default_response_types():
    from fastgate._core.responses import GATEWAY_RESPONSES
    return tuple(sorted(GATEWAY_RESPONSES))


def escape_label_value(str value):
    """Label value escaping of the text exposition format 0.0.4: backslash,
    double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _label_text(dict labels):
    parts = []
    for key in sorted(labels or ()):
        if not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ValueError(f"invalid label name {key!r}")
        parts.append(f'{key}="{escape_label_value(str(labels[key]))}"')
    return ",".join(parts).encode()


cdef inline void observe(Histogram* h, double seconds) noexcept nogil:
    cdef long long us = <long long>(seconds * 1e6 + 0.5)
    cdef int i = 0
    if us < 0:
        us = 0
    # PERF: a linear scan over 16 bounds beats a binary search at this size
    # and most requests stop in the first few buckets (bench/bench_accesslog.py::test_record_request).
    while i < N_BUCKETS and us > FG_BUCKET_BOUNDS_US[i]:
        i += 1
    fg_add_u64_rlx(&h.buckets[i], 1)
    fg_add_u64_rlx(&h.sum_us, <uint64_t>us)


cdef class SharedMetrics:

    def __cinit__(self):
        self.header = NULL
        self.slots = NULL
        self.stages = NULL

    def __init__(self):
        raise TypeError("use SharedMetrics.create(max_series) in the supervisor before forking")

    def __dealloc__(self):
        # Unmaps only this process's view; the other processes keep theirs.
        if self.header != NULL:
            munmap(<void*>self.header, self.map_size)
            self.header = NULL

    @staticmethod
    def create(int max_series=4096, int max_labelled_series=-1, int max_stages=1024,
               response_types=None):
        """A new, zeroed table for max_series series (+1 overflow slot), of which
        at most max_labelled_series (default: all) carry a route or api_key
        label, and max_stages (api, stage) entries. response_types: the gateway
        response types counted per stage (default: the protocol's table). Call
        it in the supervisor before fork so the workers inherit the mapping."""
        if max_series < 1 or max_series > 1 << 20:
            raise ValueError(f"max_series must be in 1..{1 << 20}, got {max_series}")
        if max_labelled_series < 0 or max_labelled_series > max_series:
            max_labelled_series = max_series
        if max_stages < 1 or max_stages > 1 << 16:
            raise ValueError(f"max_stages must be in 1..{1 << 16}, got {max_stages}")
        types = tuple(response_types) if response_types is not None else _default_response_types()
        if len(types) > N_RESPONSE_TYPES:
            raise ValueError(f"at most {N_RESPONSE_TYPES} gateway response types, got {len(types)}")
        cdef SharedMetrics self = SharedMetrics.__new__(SharedMetrics)
        self.response_types = types
        self.response_index = {t: i for i, t in enumerate(types)}
        self.key_cache = [None] * (max_series + 1)
        cdef size_t series_bytes = (<size_t>max_series + 1) * sizeof(Slot)
        cdef size_t size = sizeof(ShmHeader) + series_bytes + (<size_t>max_stages + 1) * sizeof(StageSlot)
        cdef void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "mmap of the metrics table failed")
        # An anonymous mapping is zero-filled: every slot starts SLOT_FREE with zero numbers.
        self.header = <ShmHeader*>p
        self.slots = <Slot*>(<char*>p + sizeof(ShmHeader))
        self.stages = <StageSlot*>(<char*>p + sizeof(ShmHeader) + series_bytes)
        self.map_size = size
        self.capacity = max_series
        self.overflow_slot = max_series
        self.header.magic = SHM_MAGIC
        self.header.capacity = max_series
        self.header.labelled_cap = max_labelled_series
        self.header.stage_capacity = max_stages
        cdef StageSlot* stage_over = &self.stages[max_stages]
        memcpy(stage_over.labels, <char*>_STAGE_OVERFLOW_LABELS, len(_STAGE_OVERFLOW_LABELS))
        stage_over.labels_len = len(_STAGE_OVERFLOW_LABELS)
        fg_store_i32_rel(&stage_over.used, 1)
        cdef Slot* over = &self.slots[max_series]
        memcpy(over.labels, <char*>_OVERFLOW_LABELS, len(_OVERFLOW_LABELS))
        over.labels_len = len(_OVERFLOW_LABELS)
        over.stage = -1             # its stage entry is allocated on first use (request_series)
        fg_store_i32_rel(&over.kind, SLOT_REQUEST)
        return self

    # --- allocation (config-compile time) ---

    cdef void lock(self) noexcept nogil:
        # a worker killed inside the critical section would wedge every later allocation
        # (and so every config reload): pid_lock robs a dead holder
        pid_lock(&self.header.lock)

    cdef void unlock(self) noexcept nogil:
        pid_unlock(&self.header.lock)

    cdef int alloc_slot(self, int kind, bytes name, bytes labels, bint labelled=False) except -2:
        """Slot of (kind, name, labels), allocating it if new; -1 when full
        (for a labelled series: also when labelled_cap series are out)."""
        cdef Py_ssize_t nlen = len(name), llen = len(labels)
        cdef const char* pname = name
        cdef const char* plabels = labels
        cdef int i, used
        cdef Slot* s
        if nlen > NAME_MAX or llen > LABELS_MAX:
            raise ValueError("metric name or labels too long")
        self.lock()
        try:
            used = fg_load_i32_acq(&self.header.used)
            for i in range(used):
                s = &self.slots[i]
                if (fg_load_i32_acq(&s.kind) == kind and s.name_len == nlen and s.labels_len == llen
                        and memcmp(s.name, pname, nlen) == 0
                        and memcmp(s.labels, plabels, llen) == 0):
                    return i
            if used >= self.capacity:
                return -1
            if labelled:
                if self.header.labelled_used >= self.header.labelled_cap:
                    return -1
                self.header.labelled_used += 1
            # Count the slot before filling it: a holder that dies mid-fill
            # leaks one slot (kind stays FREE, render skips it) instead of
            # leaving a half-written slot for the next allocation to reuse.
            fg_store_i32_rel(&self.header.used, used + 1)
            s = &self.slots[used]
            memcpy(s.name, pname, nlen)
            s.name_len = <int32_t>nlen
            memcpy(s.labels, plabels, llen)
            s.labels_len = <int32_t>llen
            s.labelled = labelled
            s.stage = -1
            fg_store_i32_rel(&s.kind, kind)
            return used
        finally:
            self.unlock()

    cdef int alloc_stage(self, bytes labels) except -2:
        cdef Py_ssize_t llen = len(labels)
        cdef const char* plabels = labels
        cdef int i, used
        cdef StageSlot* e
        if llen > LABELS_MAX:
            fg_store_i32_rel(&self.header.stage_overflow_used, 1)
            return self.header.stage_capacity
        self.lock()
        try:
            used = fg_load_i32_acq(&self.header.stages_used)
            for i in range(used):
                e = &self.stages[i]
                if (fg_load_i32_acq(&e.used) and e.labels_len == llen
                        and memcmp(e.labels, plabels, llen) == 0):
                    return i
            if used >= self.header.stage_capacity:
                fg_store_i32_rel(&self.header.stage_overflow_used, 1)
                return self.header.stage_capacity
            fg_store_i32_rel(&self.header.stages_used, used + 1)
            e = &self.stages[used]
            memcpy(e.labels, plabels, llen)
            e.labels_len = <int32_t>llen
            fg_store_i32_rel(&e.used, 1)
            return used
        finally:
            self.unlock()

    def request_series(self, str route, str api="", str stage="", *, bint route_label=True,
                       bint api_key_label=False):
        """Slot for the request metrics of one route (route key as API Gateway
        writes it) of one API stage. route_label=False: one series per (api,
        stage) whatever the route (pass any route; every route of the stage gets
        the same slot). api_key_label=True: record_context moves each request
        with an API key to that key's own series (api_key="<key id>").
        Idempotent. Past labelled_cap a new route folds into route="other" of
        its stage; past capacity into the overflow slot."""
        stage_labels = f'api="{escape_label_value(api)}",stage="{escape_label_value(stage)}"'
        cdef int slot = -1
        cdef bint folded = False
        if route_label:
            labels = f'route="{escape_label_value(route)}",{stage_labels}'
            slot = self._request_slot(labels, True, api_key_label)
            if slot < 0 and (api or stage):
                # past the labelled cap (or too long): the stage's route="other"
                folded = True
                slot = self._request_slot(f'route="other",{stage_labels}', False, api_key_label)
        else:
            slot = self._request_slot(stage_labels, False, api_key_label)
        if slot < 0:
            fg_store_i32_rel(&self.header.overflow_used, 1)
            slot = self.overflow_slot
            stage_labels = 'api="",stage=""'
        if self.slots[slot].stage < 0:
            # Written by whoever allocated or found it first; every writer writes
            # the same index (alloc_stage is idempotent), so the race is benign.
            self.slots[slot].stage = self.alloc_stage(stage_labels.encode())
        return slot

    def _request_slot(self, str labels, bint labelled, bint split_by_key):
        data = labels.encode()
        if len(data) > LABELS_MAX:
            return -1
        cdef int slot = self.alloc_slot(SLOT_REQUEST, b"", data, labelled)
        if slot >= 0:
            # The flag lives in shared memory, so the last compile wins for every
            # process; all workers compile the same config, so they agree.
            self.slots[slot].split_by_key = split_by_key
        return slot

    def gauge_series(self, str name, dict labels=None):
        """Slot of one gauge series, e.g. gauge_series("fastgate_upstream_healthy",
        {"upstream": "pets", "target": "10.0.0.1:80"}). Idempotent (label order
        does not matter); -1 past capacity, which every update ignores."""
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        return self.alloc_slot(SLOT_GAUGE, name.encode(), _label_text(labels))

    def series_of(self, str name):
        """[(slot, label text)] of every gauge or counter series called name, e.g. to
        find a dead worker's series by their worker label."""
        cdef int used = fg_load_i32_acq(&self.header.used), i
        cdef Slot* s
        cdef bytes want = name.encode()
        found = []
        for i in range(used):
            s = &self.slots[i]
            if fg_load_i32_acq(&s.kind) in (SLOT_GAUGE, SLOT_COUNTER) and s.name[:s.name_len] == want:
                found.append((i, s.labels[:s.labels_len].decode()))
        return found

    def counter_series(self, str name, dict labels=None):
        """Slot of one counter series (renders `# TYPE name counter`; name it
        *_total), e.g. counter_series("fastgate_trace_spans_total", {"result":
        "exported"}); counter_add / add update it. Idempotent; -1 past capacity."""
        if not _METRIC_NAME.match(name):
            raise ValueError(f"invalid metric name {name!r}")
        return self.alloc_slot(SLOT_COUNTER, name.encode(), _label_text(labels))

    def stage_entry(self, int slot):
        """Index of the stage entry of request series `slot` (tests)."""
        if <unsigned int>slot > <unsigned int>self.capacity:
            raise IndexError(slot)
        return self.slots[slot].stage

    # --- hot path ---

    cdef void record_request(self, int slot, int status, double latency_s,
                             double integration_s) noexcept nogil:
        if <unsigned int>slot > <unsigned int>self.capacity:
            return
        cdef Slot* s = &self.slots[slot]
        cdef int cls = status // 100 - 1
        if cls < 0 or cls >= N_STATUS_CLASSES:
            cls = N_STATUS_CLASSES - 1
        fg_add_u64_rlx(&s.status[cls], 1)
        observe(&s.duration, latency_s)
        if integration_s >= 0.0:
            observe(&s.integration, integration_s)

    cdef void record_context(self, int slot, RequestContext ctx,
                             int throttle_level=-1) noexcept:
        cdef double integration_s = -1.0
        cdef str error_type = ctx.error_type
        if <unsigned int>slot > <unsigned int>self.capacity:
            return
        if ctx.integration_start > 0:
            integration_s = ctx.integration_latency()
        if error_type is not None:
            # stage counters hang off the route's series, not the key's
            self.record_response_type(slot, error_type)
            if error_type == "QUOTA_EXCEEDED":
                self.record_throttled(slot, THROTTLE_QUOTA)
            elif error_type == "THROTTLED":
                self.record_throttled(slot, throttle_level if throttle_level >= 0 else THROTTLE_USAGE_PLAN)
        if self.slots[slot].split_by_key and ctx.api_key_id is not None:
            slot = self.key_slot(slot, ctx.api_key_id)
        self.record_request(slot, ctx.status, ctx.latency(), integration_s)

    cdef int key_slot(self, int slot, bytes key_id) noexcept:
        if key_id is None or <unsigned int>slot > <unsigned int>self.capacity:
            return slot
        if not self.slots[slot].split_by_key:
            return slot
        cdef dict cache = <dict>self.key_cache[slot] if self.key_cache[slot] is not None else None
        if cache is not None:
            # PERF: one dict lookup by the key id bytes (hash cached on the object)
            # after the key's first request in this process (bench/bench_accesslog.py::test_key_slot).
            found = cache.get(key_id)
            if found is not None:
                return <int>found
        else:
            cache = {}
            self.key_cache[slot] = cache
        try:
            return self.key_slot_slow(slot, key_id, cache)
        except Exception:
            return slot     # cannot happen short of MemoryError; the request still counts

    cdef int key_slot_slow(self, int slot, bytes key_id, dict cache) except -2:
        cdef Slot* base = &self.slots[slot]
        cdef int found = -1
        base_labels = base.labels[:base.labels_len].decode()
        labels = f'{base_labels},api_key="{escape_label_value(key_id.decode("utf-8", "replace"))}"'.encode()
        if len(labels) <= LABELS_MAX:
            found = self.alloc_slot(SLOT_REQUEST, b"", labels, True)
        if found < 0:
            # past the labelled cap: the series' api_key="other"
            found = self.alloc_slot(SLOT_REQUEST, b"", f'{base_labels},api_key="other"'.encode(), False)
        if found < 0:
            fg_store_i32_rel(&self.header.overflow_used, 1)
            found = self.overflow_slot
        elif self.slots[found].stage < 0:
            self.slots[found].stage = base.stage
        if len(cache) < KEY_CACHE_MAX:
            cache[key_id] = found
        return found

    cdef void record_throttled(self, int slot, int level) noexcept nogil:
        if <unsigned int>slot > <unsigned int>self.capacity or <unsigned int>level >= N_THROTTLE_LEVELS:
            return
        cdef int st = self.slots[slot].stage
        if <unsigned int>st <= <unsigned int>self.header.stage_capacity:
            fg_add_u64_rlx(&self.stages[st].throttled[level], 1)

    cdef void record_cache(self, int slot, int result) noexcept nogil:
        if <unsigned int>slot > <unsigned int>self.capacity or <unsigned int>result >= N_CACHE_RESULTS:
            return
        cdef int st = self.slots[slot].stage
        if <unsigned int>st <= <unsigned int>self.header.stage_capacity:
            fg_add_u64_rlx(&self.stages[st].cache[result], 1)

    cdef void record_response_type(self, int slot, str response_type) noexcept:
        if <unsigned int>slot > <unsigned int>self.capacity or response_type is None:
            return
        cdef int st = self.slots[slot].stage
        if <unsigned int>st > <unsigned int>self.header.stage_capacity:
            return
        index = self.response_index.get(response_type)
        if index is None:
            # a type outside the table: count it as the default of its family
            index = self.response_index.get("DEFAULT_5XX" if response_type.endswith("5XX") else "DEFAULT_4XX")
            if index is None:
                return
        fg_add_u64_rlx(&self.stages[st].responses[<int>index], 1)

    cdef void counter_add(self, int slot, unsigned long long n) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            fg_add_i64_rlx(&self.slots[slot].gauge, <int64_t>n)

    cdef void gauge_add(self, int slot, long long delta) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            fg_add_i64_rlx(&self.slots[slot].gauge, delta)

    cdef void gauge_set(self, int slot, long long value) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            fg_store_i64_rlx(&self.slots[slot].gauge, value)

    cdef long long gauge_get(self, int slot) noexcept nogil:
        if <unsigned int>slot <= <unsigned int>self.capacity:
            return fg_load_i64_rlx(&self.slots[slot].gauge)
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

    def record_ctx(self, int slot, RequestContext ctx, int throttle_level=-1):
        self.record_context(slot, ctx, throttle_level)

    def key_series(self, int slot, bytes key_id):
        """key_slot for Python callers (tests)."""
        return self.key_slot(slot, key_id)

    def throttled(self, int slot, int level):
        """record_throttled for Python callers (fastgate.phases.access)."""
        self.record_throttled(slot, level)

    def cache(self, int slot, int result):
        """record_cache for Python callers (True = hit, False = miss, or a CacheResult)."""
        self.record_cache(slot, result)

    def response_type(self, int slot, str response_type):
        """record_response_type for Python callers (tests)."""
        self.record_response_type(slot, response_type)

    def key_slot_many(self, int slot, bytes key_id, long n):
        """key_slot n times: the cached lookup's cost without the Python call (benchmarks)."""
        cdef long i
        cdef int r = 0
        for i in range(n):
            r = self.key_slot(slot, key_id)
        return r

    def add(self, int slot, long long delta):
        """gauge_add, or counter_add for a counter slot (delta >= 0)."""
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
            "status": {_STATUS_CLASSES[i].decode(): fg_load_u64_rlx(&s.status[i])
                       for i in range(N_STATUS_CLASSES)},
            "count": _hist_count(&s.duration),
            "duration_sum_s": fg_load_u64_rlx(&s.duration.sum_us) / 1e6,
            "integration_count": _hist_count(&s.integration),
            "integration_sum_s": fg_load_u64_rlx(&s.integration.sum_us) / 1e6,
        }

    def stage_stats(self, int slot):
        """Stage counters of the stage of request series `slot` (tests, control API)."""
        if <unsigned int>slot > <unsigned int>self.capacity:
            raise IndexError(slot)
        cdef int st = self.slots[slot].stage
        if <unsigned int>st > <unsigned int>self.header.stage_capacity:
            return None
        cdef StageSlot* e = &self.stages[st]
        return {
            "labels": e.labels[:e.labels_len].decode(),
            "throttled": {_THROTTLE_LEVELS[i].decode(): fg_load_u64_rlx(&e.throttled[i])
                          for i in range(N_THROTTLE_LEVELS)},
            "cache": {_CACHE_RESULTS[i].decode(): fg_load_u64_rlx(&e.cache[i]) for i in range(<int>N_CACHE_RESULTS)},
            "responses": {self.response_types[i]: fg_load_u64_rlx(&e.responses[i])
                          for i in range(len(self.response_types)) if fg_load_u64_rlx(&e.responses[i])},
        }

    # --- exposition (admin listener, off the request path) ---

    def render(self):
        """All series in the Prometheus text exposition format 0.0.4."""
        cdef int used = fg_load_i32_acq(&self.header.used), i
        cdef Slot* s
        requests = []
        gauges = {}
        counters = {}
        for i in range(used):
            s = &self.slots[i]
            kind = fg_load_i32_acq(&s.kind)
            if kind == SLOT_REQUEST:
                requests.append(i)
            elif kind == SLOT_GAUGE:
                gauges.setdefault(s.name[:s.name_len], []).append(i)
            elif kind == SLOT_COUNTER:
                counters.setdefault(s.name[:s.name_len], []).append(i)
        if fg_load_i32_acq(&self.header.overflow_used):
            requests.append(self.overflow_slot)

        out = []
        w = out.append
        w(b"# HELP fastgate_requests_total Requests answered, by API stage (route, key) and status class.\n"
          b"# TYPE fastgate_requests_total counter\n")
        for i in requests:
            s = &self.slots[i]
            labels = s.labels[:s.labels_len]
            for c in range(N_STATUS_CLASSES):
                w(b"fastgate_requests_total{%s,status_class=\"%s\"} %d\n"
                  % (labels, _STATUS_CLASSES[c], fg_load_u64_rlx(&s.status[c])))
        _render_histogram(self, w, requests, b"fastgate_request_duration_seconds",
                          b"Time from the first request byte to the last response byte.", False)
        _render_histogram(self, w, requests, b"fastgate_integration_duration_seconds",
                          b"Time spent in the integration (upstream), requests with one only.", True)
        self._render_stages(w)
        for families, kind, helps in ((counters, b"counter", COUNTER_HELP), (gauges, b"gauge", GAUGE_HELP)):
            for name in sorted(families):
                help_text = helps.get(name.decode(), "fastgate %s." % kind.decode()).encode()
                w(b"# HELP %s %s\n# TYPE %s %s\n" % (name, help_text, name, kind))
                for i in families[name]:
                    s = &self.slots[i]
                    if s.labels_len:
                        w(b"%s{%s} %d\n" % (name, s.labels[:s.labels_len], fg_load_i64_rlx(&s.gauge)))
                    else:
                        w(b"%s %d\n" % (name, fg_load_i64_rlx(&s.gauge)))
        return b"".join(out)

    cdef _render_stages(self, w):
        cdef int n = fg_load_i32_acq(&self.header.stages_used), i, j
        cdef StageSlot* e
        entries = [i for i in range(n) if fg_load_i32_acq(&self.stages[i].used)]
        if fg_load_i32_acq(&self.header.stage_overflow_used):
            entries.append(self.header.stage_capacity)
        if not entries:
            return
        w(b"# HELP fastgate_throttled_total Requests refused with 429 by a throttle or quota, by level.\n"
          b"# TYPE fastgate_throttled_total counter\n")
        for i in entries:
            e = &self.stages[i]
            for j in range(N_THROTTLE_LEVELS):
                w(b"fastgate_throttled_total{%s,level=\"%s\"} %d\n"
                  % (e.labels[:e.labels_len], _THROTTLE_LEVELS[j], fg_load_u64_rlx(&e.throttled[j])))
        lines = []
        for i in entries:
            e = &self.stages[i]
            if fg_load_u64_rlx(&e.cache[0]) or fg_load_u64_rlx(&e.cache[1]) or fg_load_u64_rlx(&e.cache[2]):
                for j in range(<int>N_CACHE_RESULTS):
                    lines.append(b"fastgate_cache_requests_total{%s,result=\"%s\"} %d\n"
                                 % (e.labels[:e.labels_len], _CACHE_RESULTS[j], fg_load_u64_rlx(&e.cache[j])))
        if lines:
            w(b"# HELP fastgate_cache_requests_total Response cache lookups, by result.\n"
              b"# TYPE fastgate_cache_requests_total counter\n")
            w(b"".join(lines))
        lines = []
        types = [t.encode() for t in self.response_types]
        for i in entries:
            e = &self.stages[i]
            for j in range(len(types)):
                if fg_load_u64_rlx(&e.responses[j]):
                    lines.append(b"fastgate_gateway_responses_total{%s,type=\"%s\"} %d\n"
                                 % (e.labels[:e.labels_len], types[j], fg_load_u64_rlx(&e.responses[j])))
        if lines:
            w(b"# HELP fastgate_gateway_responses_total Responses the gateway answered itself, by gateway response type.\n"
              b"# TYPE fastgate_gateway_responses_total counter\n")
            w(b"".join(lines))

    def __reduce__(self):
        raise TypeError("SharedMetrics is shared by fork inheritance, not by pickling")


cdef uint64_t _hist_count(Histogram* h) noexcept nogil:
    cdef uint64_t n = 0
    cdef int b
    for b in range(N_BUCKETS + 1):
        n += fg_load_u64_rlx(&h.buckets[b])
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
        counts = [fg_load_u64_rlx(&h.buckets[b]) for b in range(N_BUCKETS + 1)]
        if integration and not any(counts):
            continue  # route without an integration (mock, echo) or none yet
        labels = s.labels[:s.labels_len]
        cumulative = 0
        for b in range(N_BUCKETS + 1):
            cumulative += <uint64_t>counts[b]
            w(b"%s_bucket{%s,le=\"%s\"} %d\n" % (name, labels, _LE[b], cumulative))
        w(b"%s_sum{%s} %s\n" % (name, labels, repr(fg_load_u64_rlx(&h.sum_us) / 1e6).encode()))
        w(b"%s_count{%s} %d\n" % (name, labels, cumulative))
