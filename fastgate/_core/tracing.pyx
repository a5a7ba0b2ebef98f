# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Trace context parsing, sampling and span records; see tracing.pxd for the map."""

import os

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.stdint cimport uint64_t
from libc.string cimport memcpy, memcmp
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME

from fastgate._core.pipeline cimport RequestContext, Route, ApiStage
from fastgate._core.clock cimport monotonic
from fastgate._core.metrics cimport SharedMetrics
from fastgate._core.upstream cimport Target

cdef extern from "<time.h>" nogil:
    enum: CLOCK_REALTIME_COARSE

cdef const char* HEX = b"0123456789abcdef"
cdef unsigned char ZERO[16]           # static storage: all zero, for the all-zero id checks

# The order of the fields of one span record (a tuple) that finish() queues and
# the exporter turns into OTLP spans. Times are epoch nanoseconds, 0 = absent.
RECORD_FIELDS = (
    "trace_id", "span_id", "parent_id", "client_id", "auth_id", "tracestate",
    "start_ns", "end_ns", "integration_start_ns", "integration_end_ns",
    "auth_start_ns", "auth_end_ns",
    "status", "upstream_status", "method", "route_key", "host", "route_host", "path",
    "query", "tls", "local_port", "client_ip", "source_ip", "source_port", "user_agent",
    "api_id", "stage", "integration", "target_scheme", "target_host", "target_port",
    "function_name", "upstream_path", "error_type", "request_id", "http_minor", "attempts",
)

SAMPLERS = {
    "always_off": SAMPLER_ALWAYS_OFF,
    "always_on": SAMPLER_ALWAYS_ON,
    "ratio": SAMPLER_RATIO,
    "parentbased_ratio": SAMPLER_PARENT_RATIO,
}


# --- parsing ---

cdef inline int lower_hex(unsigned char c) noexcept nogil:
    # W3C ids are lowercase hex only (section 3.2.2.2)
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


cdef inline int any_hex(unsigned char c) noexcept nogil:
    if 65 <= c <= 70:
        return c - 55
    return lower_hex(c)


cdef inline bint decode_hex(const unsigned char* p, int nbytes, unsigned char* out,
                            bint lower_only) noexcept nogil:
    cdef int i, hi, lo
    for i in range(nbytes):
        hi = lower_hex(p[2 * i]) if lower_only else any_hex(p[2 * i])
        lo = lower_hex(p[2 * i + 1]) if lower_only else any_hex(p[2 * i + 1])
        if hi < 0 or lo < 0:
            return False
        out[i] = <unsigned char>(hi << 4 | lo)
    return True


cdef inline void trim(const unsigned char** p, Py_ssize_t* n) noexcept nogil:
    while n[0] > 0 and (p[0][0] == 32 or p[0][0] == 9):
        p[0] += 1
        n[0] -= 1
    while n[0] > 0 and (p[0][n[0] - 1] == 32 or p[0][n[0] - 1] == 9):
        n[0] -= 1


cdef int parse_traceparent(const unsigned char* p, Py_ssize_t n, TraceContext* out) noexcept nogil:
    # https://www.w3.org/TR/trace-context/#traceparent-header-field-values
    cdef unsigned char version, flags
    trim(&p, &n)
    if n < TRACEPARENT_LEN:
        return 0
    if not decode_hex(p, 1, &version, True) or version == 0xff:
        return 0
    # version 00 is exactly 55 bytes; a later version may append "-..." (section 3.2.4)
    if version == 0 and n != TRACEPARENT_LEN:
        return 0
    if n > TRACEPARENT_LEN and p[TRACEPARENT_LEN] != b'-':
        return 0
    if p[2] != b'-' or p[35] != b'-' or p[52] != b'-':
        return 0
    if not decode_hex(p + 3, 16, out.trace_id, True) or memcmp(out.trace_id, ZERO, 16) == 0:
        return 0
    if not decode_hex(p + 36, 8, out.parent_id, True) or memcmp(out.parent_id, ZERO, 8) == 0:
        return 0
    if not decode_hex(p + 53, 1, &flags, True):
        return 0
    out.has_parent = True
    out.sampled = flags & 1
    return 1


cdef inline bint field_is(const unsigned char* f, Py_ssize_t n, const char* key, Py_ssize_t k) noexcept nogil:
    """f starts with `key=` (key without the '=')."""
    return n > k and f[k] == b'=' and memcmp(f, key, k) == 0


cdef inline Py_ssize_t next_field(const unsigned char* p, Py_ssize_t n, Py_ssize_t i,
                                  const unsigned char** f, Py_ssize_t* fn) noexcept nogil:
    """The ';'-separated field at i, trimmed, into f/fn; returns where the next one starts."""
    cdef Py_ssize_t j = i
    while j < n and p[j] != b';':
        j += 1
    f[0] = p + i
    fn[0] = j - i
    trim(f, fn)
    return j + 1


cdef int parse_xray(const unsigned char* p, Py_ssize_t n, TraceContext* out) noexcept nogil:
    # https://docs.aws.amazon.com/xray/latest/devguide/xray-concepts.html#xray-concepts-tracingheader
    cdef Py_ssize_t i = 0, fn
    cdef const unsigned char* f
    cdef bint root = False
    out.has_parent = False
    out.sampled = -1
    while i < n:
        i = next_field(p, n, i, &f, &fn)
        if field_is(f, fn, "Root", 4):
            # 1-{8 hex epoch seconds}-{24 hex}
            if (fn != 5 + 35 or f[5] != b'1' or f[6] != b'-' or f[15] != b'-'
                    or not decode_hex(f + 7, 4, out.trace_id, False)
                    or not decode_hex(f + 16, 12, out.trace_id + 4, False)
                    or memcmp(out.trace_id, ZERO, 16) == 0):
                return 0
            root = True
        elif field_is(f, fn, "Parent", 6):
            if fn != 7 + 16 or not decode_hex(f + 7, 8, out.parent_id, False):
                return 0
            out.has_parent = memcmp(out.parent_id, ZERO, 8) != 0
        elif field_is(f, fn, "Sampled", 7):
            out.sampled = (1 if f[8] == b'1' else 0 if f[8] == b'0' else -1) if fn == 9 else -1
    return 1 if root else 0


cdef Py_ssize_t xray_extras(const unsigned char* p, Py_ssize_t n, char* out) noexcept nogil:
    # Fields the gateway does not rewrite go on as sent (Lineage, custom data);
    # Self= describes a load balancer's own hop, so it stops there.
    cdef Py_ssize_t i = 0, fn, k = 0
    cdef const unsigned char* f
    while i < n:
        i = next_field(p, n, i, &f, &fn)
        if (fn == 0 or field_is(f, fn, "Root", 4) or field_is(f, fn, "Parent", 6)
                or field_is(f, fn, "Sampled", 7) or field_is(f, fn, "Self", 4)):
            continue
        if k + 1 + fn > XRAY_EXTRA_MAX:
            break
        out[k] = b';'
        memcpy(out + k + 1, f, fn)
        k += 1 + fn
    return k


def parse_traceparent_value(bytes value):
    """(trace_id hex, parent_id hex, sampled 0|1) or None when invalid: for tests."""
    cdef TraceContext c
    if not parse_traceparent(<const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), &c):
        return None
    return (PyBytes_FromStringAndSize(<char*>c.trace_id, 16).hex(),
            PyBytes_FromStringAndSize(<char*>c.parent_id, 8).hex(), c.sampled)


def parse_xray_value(bytes value):
    """(trace_id hex, parent_id hex or None, sampled 1|0|-1, kept fields) or None: for tests."""
    cdef TraceContext c
    cdef char extra[XRAY_EXTRA_MAX]
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    if n > XRAY_MAX or not parse_xray(p, n, &c):
        return None
    cdef Py_ssize_t k = xray_extras(p, n, extra)
    return (PyBytes_FromStringAndSize(<char*>c.trace_id, 16).hex(),
            PyBytes_FromStringAndSize(<char*>c.parent_id, 8).hex() if c.has_parent else None,
            c.sampled, PyBytes_FromStringAndSize(extra, k))


# --- writing ---

cdef inline char* put(char* o, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(o, s, n)
    return o + n


cdef inline char* put_hex(char* o, const unsigned char* b, int n) noexcept nogil:
    cdef int i
    for i in range(n):
        o[2 * i] = HEX[b[i] >> 4]
        o[2 * i + 1] = HEX[b[i] & 15]
    return o + 2 * n


cdef inline char* put_traceparent(char* o, Trace t) noexcept:
    # the CLIENT span is the parent of whatever the upstream records
    o = put(o, "00-", 3)
    o = put_hex(o, t.trace_id, 16)
    o[0] = b'-'
    o = put_hex(o + 1, t.client_id, 8)
    return put(o, "-01" if t.sampled else "-00", 3)


cdef inline char* put_xray(char* o, Trace t, const char* extra, Py_ssize_t extra_len) noexcept:
    o = put(o, "Root=1-", 7)
    o = put_hex(o, t.trace_id, 4)
    o[0] = b'-'
    o = put_hex(o + 1, t.trace_id + 4, 12)
    o = put(o, ";Parent=", 8)
    o = put_hex(o, t.client_id, 8)
    o = put(o, ";Sampled=1" if t.sampled else ";Sampled=0", 10)
    return put(o, extra, extra_len)


cdef enum:
    XRAY_VALUE_LEN = 7 + 8 + 1 + 24 + 8 + 16 + 10    # bytes of Root=...;Parent=...;Sampled=x


# PERF: no GC tracking (its only references are bytes, no cycle is possible) and a
# freelist: one Trace per request when tracing is on (bench/wrk_compare.py --scenario observed)
@cython.no_gc
@cython.freelist(256)
cdef class Trace:

    cdef Py_ssize_t extras(self, char* out) noexcept:
        if self.xray_in is None:
            return 0
        return xray_extras(<const unsigned char*>PyBytes_AS_STRING(self.xray_in),
                           PyBytes_GET_SIZE(self.xray_in), out)

    cdef Py_ssize_t traceparent_line(self, char* out) noexcept:
        cdef char* o = put(out, "traceparent: ", 13)
        o = put_traceparent(o, self)
        return put(o, "\r\n", 2) - out

    cdef Py_ssize_t xray_line(self, char* out) noexcept:
        cdef char extra[XRAY_EXTRA_MAX]
        cdef Py_ssize_t ne = self.extras(extra)
        cdef char* o = put(out, "X-Amzn-Trace-Id: ", 17)
        o = put_xray(o, self, extra, ne)
        return put(o, "\r\n", 2) - out

    cpdef bytes upstream_headers(self):
        cdef char line[TRACE_LINE_MAX]
        cdef list parts = [PyBytes_FromStringAndSize(line, self.traceparent_line(line))]
        if self.tracestate is not None:
            parts.append(b"tracestate: " + self.tracestate + b"\r\n")
        parts.append(PyBytes_FromStringAndSize(line, self.xray_line(line)))
        return b"".join(parts)

    cpdef bytes traceparent(self):
        cdef char buf[TRACEPARENT_LEN]
        put_traceparent(buf, self)
        return PyBytes_FromStringAndSize(buf, TRACEPARENT_LEN)

    cpdef bytes xray_header(self):
        cdef char extra[XRAY_EXTRA_MAX]
        cdef char buf[XRAY_VALUE_LEN + XRAY_EXTRA_MAX]
        cdef Py_ssize_t ne = self.extras(extra)
        put_xray(buf, self, extra, ne)
        return PyBytes_FromStringAndSize(buf, XRAY_VALUE_LEN + ne)

    # --- for Python callers and tests ---

    @property
    def trace_id(self):
        return PyBytes_FromStringAndSize(<char*>self.trace_id, 16).hex()

    @property
    def span_id(self):
        return PyBytes_FromStringAndSize(<char*>self.span_id, 8).hex()

    @property
    def client_span_id(self):
        return PyBytes_FromStringAndSize(<char*>self.client_id, 8).hex()

    @property
    def parent_id(self):
        return PyBytes_FromStringAndSize(<char*>self.parent_id, 8).hex() if self.has_parent else None

    def __repr__(self):
        return (f"<Trace {PyBytes_FromStringAndSize(<char*>self.trace_id, 16).hex()} "
                f"sampled={bool(self.sampled)} origin={self.origin}>")


cdef inline long long realtime_minus_monotonic_ns() noexcept nogil:
    cdef timespec rt, mono
    clock_gettime(CLOCK_REALTIME, &rt)
    clock_gettime(CLOCK_MONOTONIC, &mono)
    return ((<long long>rt.tv_sec - mono.tv_sec) * 1000000000LL + (rt.tv_nsec - mono.tv_nsec))


cdef inline long long epoch_ns(double monotonic_s, long long offset_ns) noexcept nogil:
    return <long long>(monotonic_s * 1e9) + offset_ns if monotonic_s > 0 else 0


@cython.final
cdef class Tracer:

    def __init__(self, *, int sampler=SAMPLER_PARENT_RATIO, double ratio=0.01,
                 int reservoir_per_s=0, Py_ssize_t queue_size=8192, Py_ssize_t batch_size=512):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be within 0..1, not {ratio}")
        if queue_size < 1 or batch_size < 1:
            raise ValueError("queue_size and batch_size must be at least 1")
        if reservoir_per_s < 0:
            raise ValueError("reservoir_per_s must be >= 0")
        self.sampler = sampler
        self.ratio = ratio
        # as OpenTelemetry's TraceIdRatioBased: bound = round(ratio * 2**64)
        self.ratio_all = ratio >= 1.0
        self.ratio_bound = 0 if self.ratio_all else <uint64_t>(ratio * 18446744073709551616.0)
        self.reservoir_per_s = reservoir_per_s
        self.reservoir_second = -1
        self.capacity = queue_size
        self.batch_size = min(batch_size, queue_size)
        self.ring = [None] * queue_size
        self.slots[0] = self.slots[1] = self.slots[2] = -1
        self.reseed()

    def reseed(self, seed=None):
        """New random state; call in every process after fork (build_tracer does).
        A fixed seed makes ids reproducible (tests)."""
        self.rng = int.from_bytes(os.urandom(8), "little") if seed is None else seed

    def attach_metrics(self, SharedMetrics metrics):
        """Also count into shared memory: fastgate_trace_spans_total{result=...},
        one counter series per result, summed over workers by the series' idempotence."""
        self.metrics = metrics
        for i, result in enumerate(("exported", "dropped_queue_full", "dropped_export_failed")):
            self.slots[i] = metrics.counter_series("fastgate_trace_spans_total", {"result": result})

    # --- hot path (loop thread) ---

    cdef void random_bytes(self, unsigned char* out, int n) noexcept nogil:
        # PERF: splitmix64, not os.urandom: ids need uniqueness, not secrecy
        # (bench/bench_tracing.py, test_begin_unsampled)
        cdef uint64_t z
        cdef int i = 0, k
        while i < n:
            self.rng += 0x9E3779B97F4A7C15ULL
            z = self.rng
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
            z = z ^ (z >> 31)
            k = 0
            while k < 8 and i < n:
                out[i] = <unsigned char>(z >> (8 * k))
                i += 1
                k += 1

    cdef bint decide_root(self, const unsigned char* trace_id, double now) noexcept nogil:
        cdef long long second
        cdef uint64_t low = 0
        cdef int i
        if self.reservoir_per_s > 0:
            second = <long long>now
            if second != self.reservoir_second:
                self.reservoir_second = second
                self.reservoir_used = 0
            if self.reservoir_used < self.reservoir_per_s:
                self.reservoir_used += 1
                return True
        if self.ratio_all:
            return True
        for i in range(8, 16):
            low = low << 8 | trace_id[i]
        return low < self.ratio_bound

    cpdef Trace begin(self, bytes traceparent, bytes tracestate, bytes xray, double now):
        """The request's trace: context from its headers (None = absent) or new, the
        sampling decision, new span ids. now: monotonic s (the reservoir's clock)."""
        cdef Trace t = Trace.__new__(Trace)
        cdef TraceContext c, scratch
        cdef timespec ts
        cdef int flag = -1
        cdef Py_ssize_t n
        if traceparent is not None and parse_traceparent(
                <const unsigned char*>PyBytes_AS_STRING(traceparent), PyBytes_GET_SIZE(traceparent), &c):
            t.origin = ORIGIN_W3C
            n = PyBytes_GET_SIZE(tracestate) if tracestate is not None else 0
            if 0 < n <= TRACESTATE_MAX:
                t.tracestate = tracestate
        if xray is not None and PyBytes_GET_SIZE(xray) <= XRAY_MAX:
            if t.origin == ORIGIN_NEW:
                if parse_xray(<const unsigned char*>PyBytes_AS_STRING(xray), PyBytes_GET_SIZE(xray), &c):
                    t.origin = ORIGIN_XRAY
                    t.xray_in = xray
            elif parse_xray(<const unsigned char*>PyBytes_AS_STRING(xray), PyBytes_GET_SIZE(xray), &scratch):
                t.xray_in = xray       # for its Lineage and other fields only
        if t.origin != ORIGIN_NEW:
            memcpy(t.trace_id, c.trace_id, 16)
            if c.has_parent:
                memcpy(t.parent_id, c.parent_id, 8)
                t.has_parent = True
            flag = c.sampled
        else:
            # X-Ray requires the first 4 bytes to be the epoch seconds; W3C is fine with it
            clock_gettime(CLOCK_REALTIME_COARSE, &ts)
            t.trace_id[0] = <unsigned char>(ts.tv_sec >> 24)
            t.trace_id[1] = <unsigned char>(ts.tv_sec >> 16)
            t.trace_id[2] = <unsigned char>(ts.tv_sec >> 8)
            t.trace_id[3] = <unsigned char>ts.tv_sec
            self.random_bytes(t.trace_id + 4, 12)
        self.random_bytes(t.span_id, 8)
        self.random_bytes(t.client_id, 8)
        # an all-zero span id is invalid (chance 2**-64, but it would break the parent link)
        t.span_id[0] |= (memcmp(t.span_id, ZERO, 8) == 0)
        t.client_id[0] |= (memcmp(t.client_id, ZERO, 8) == 0)
        if self.sampler == SAMPLER_ALWAYS_OFF:
            t.sampled = False
        elif self.sampler == SAMPLER_ALWAYS_ON:
            t.sampled = True
        elif self.sampler == SAMPLER_PARENT_RATIO and flag >= 0:
            t.sampled = flag == 1
        else:
            t.sampled = self.decide_root(t.trace_id, now)
        return t

    cpdef void finish(self, Trace trace, RequestContext ctx) except *:
        """After the last byte (LOG phase): queue the span record of a sampled request."""
        if not trace.sampled:
            return
        cdef int nspans = 1 + (ctx.integration_start > 0) + (trace.auth_start > 0)
        if self.tail - self.head >= <unsigned long long>self.capacity:
            # a slow or absent collector: lose spans, never block the loop
            self.count(RESULT_DROPPED_QUEUE_FULL, nspans)
            return
        cdef long long off = realtime_minus_monotonic_ns()
        cdef double end = ctx.end if ctx.end > 0 else monotonic()
        cdef unsigned char ids[8]
        cdef Route route = ctx.route
        cdef ApiStage api = ctx.api
        cdef Target target = None
        cdef object client_id = None, auth_id = None
        if ctx.integration_start > 0:
            client_id = PyBytes_FromStringAndSize(<char*>trace.client_id, 8)
        if trace.auth_start > 0:
            self.random_bytes(ids, 8)
            ids[0] |= 1
            auth_id = PyBytes_FromStringAndSize(<char*>ids, 8)
        if isinstance(ctx.target, Target):
            target = <Target>ctx.target
        rec = (
            PyBytes_FromStringAndSize(<char*>trace.trace_id, 16),
            PyBytes_FromStringAndSize(<char*>trace.span_id, 8),
            PyBytes_FromStringAndSize(<char*>trace.parent_id, 8) if trace.has_parent else None,
            client_id, auth_id, trace.tracestate,
            epoch_ns(ctx.start, off), epoch_ns(end, off),
            epoch_ns(ctx.integration_start, off), epoch_ns(ctx.integration_end, off),
            epoch_ns(trace.auth_start, off), epoch_ns(trace.auth_end, off),
            ctx.status, trace.upstream_status, ctx.method,
            route.route_key if route is not None else None,
            ctx.host, ctx.route_host, ctx.path, ctx.query, ctx.tls, ctx.local_port,
            ctx.client_ip, ctx.source_ip, ctx.source_port, ctx.header(b"user-agent"),
            api.api_id if api is not None else None, api.stage if api is not None else None,
            route.integration if route is not None else -1,
            target.scheme if target is not None else None,
            target.host if target is not None else None,
            target.port if target is not None else 0,
            route.function_name if route is not None else None,
            ctx.upstream_path, ctx.error_type, ctx.request_id, ctx.http_minor, ctx.attempts,
        )
        self.ring[self.tail % <unsigned long long>self.capacity] = rec
        self.tail += 1
        if self.tail - self.head == <unsigned long long>self.batch_size and self.wake is not None:
            self.wake()

    cdef void count(self, int result, long long n) noexcept:
        self.counts[result] += n
        if self.metrics is not None:
            self.metrics.counter_add(self.slots[result], n)

    # --- exporter thread ---

    cpdef list drain(self, Py_ssize_t max_records):
        """Take up to max_records span records, oldest first (RECORD_FIELDS order)."""
        cdef list out = []
        cdef Py_ssize_t i
        while self.head < self.tail and len(out) < max_records:
            i = self.head % <unsigned long long>self.capacity
            out.append(self.ring[i])
            self.ring[i] = None
            self.head += 1
        return out

    def close(self, timeout_s=None):
        """Stop the exporter after it flushed what it can (see SpanExporter.close)."""
        if self.exporter is not None:
            self.exporter.close(timeout_s)

    def count_result(self, int result, long long n):
        """Add n spans to a Result counter (the exporter's exported / export_failed)."""
        if not 0 <= result <= 2:
            raise ValueError(f"bad result {result}")
        self.count(result, n)

    @property
    def queued(self):
        """Span records waiting for the exporter."""
        return self.tail - self.head

    @property
    def counters(self):
        """Spans by result, this worker only: {"exported", "dropped_queue_full", "dropped_export_failed"}."""
        return {"exported": self.counts[0], "dropped_queue_full": self.counts[1],
                "dropped_export_failed": self.counts[2]}

    def begin_many(self, list headers, double now, long n):
        """begin() n times over (traceparent, tracestate, xray) triples from C, for
        bench/bench_tracing.py (no Python call per request)."""
        cdef long i
        cdef Py_ssize_t k = len(headers)
        cdef tuple h
        cdef long sampled = 0
        for i in range(n):
            h = <tuple>headers[i % k]
            sampled += self.begin(<bytes>h[0], <bytes>h[1], <bytes>h[2], now).sampled
        return sampled
