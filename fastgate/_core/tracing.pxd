# Distributed tracing on the hot path: parse the incoming trace context,
# decide sampling, write the context sent upstream, and queue a span record
# for the sampled requests. Encoding and export to an OTLP/HTTP collector
# happen on a thread (fastgate.observability.tracing_export), never on the event loop.
#
# Life of one request (the protocol's calls; docs/tracing.md has them verbatim):
#
#   headers complete  trace = tracer.begin(traceparent, tracestate, x_amzn_trace_id, ctx.start)
#                     -> a Trace (freelist), always: propagation happens for every
#                        request, sampled or not
#   authorizer        trace.auth_start / trace.auth_end = monotonic s around it (optional)
#   upstream head     trace.traceparent_line(buf), tracestate, trace.xray_line(buf) written
#                     into the head (upstream_headers() as one bytes, for Python); the
#                     client's own copies of those three headers are not forwarded
#   upstream status   trace.upstream_status = status of the upstream response head
#   LOG phase         tracer.finish(trace, ctx): unsampled -> returns at once;
#                     sampled -> one tuple onto the ring (or a counted drop)
#
# Incoming context (first valid one wins):
#   traceparent       W3C Trace Context level 1, section 3.2: version 00 is exactly
#                     55 bytes; a higher version may carry more after a '-' at byte 55;
#                     version ff, uppercase or non-hex digits, all-zero trace or parent
#                     id make it invalid. tracestate is passed through only with a
#                     valid traceparent (section 3.3).
#   X-Amzn-Trace-Id   Root=1-{8 hex epoch s}-{24 hex};Parent={16 hex};Sampled=1|0|?
#                     fields in any order; Self= (a load balancer's own segment) is
#                     dropped, every other field (Lineage=...) is kept as sent.
#   neither valid     a new trace: 4 bytes of epoch seconds + 12 random bytes, so the
#                     same id is a valid W3C trace-id and a valid X-Ray Root.
#
# Sampling (SamplerKind): a root decision takes reservoir_per_s traces per second
# first (per worker, like X-Ray's reservoir), then a ratio of the rest. The ratio
# test reads the trace id's low 8 bytes as an integer, as OpenTelemetry's
# TraceIdRatioBased does, so every service with the same ratio agrees.
#
# Threads: begin/finish and everything on Trace run on the loop thread; drain()
# runs on the exporter thread. The ring is a list indexed by two counters, and
# push/drain are C code that never releases the GIL, so each is atomic.

cimport cython
from libc.stdint cimport uint64_t
from fastgate._core.pipeline cimport RequestContext
from fastgate._core.metrics cimport SharedMetrics

cdef enum:
    TRACEPARENT_LEN = 55          # bytes of a version-00 traceparent
    TRACESTATE_MAX = 4096         # bytes of tracestate passed through; longer ones are dropped
                                  # (W3C asks to propagate at least 512)
    XRAY_MAX = 1024               # bytes of X-Amzn-Trace-Id looked at; longer ones are ignored
    XRAY_EXTRA_MAX = 512          # bytes of kept X-Ray fields (Lineage...) sent upstream
    TRACE_LINE_MAX = 640          # bytes of one header line traceparent_line / xray_line write

cpdef enum SamplerKind:
    SAMPLER_ALWAYS_OFF = 0        # never sample (propagation still happens, Sampled=0)
    SAMPLER_ALWAYS_ON = 1         # sample everything
    SAMPLER_RATIO = 2             # reservoir + ratio for every request, ignoring the caller's flag
    SAMPLER_PARENT_RATIO = 3      # the caller's flag when it sent one; else reservoir + ratio

cpdef enum Origin:                # where a Trace's context came from
    ORIGIN_NEW = 0                # no valid incoming context: a new trace
    ORIGIN_W3C = 1                # traceparent
    ORIGIN_XRAY = 2               # X-Amzn-Trace-Id

cpdef enum Result:                # the three span counters (fastgate_trace_spans_total{result})
    RESULT_EXPORTED = 0           # accepted by the collector
    RESULT_DROPPED_QUEUE_FULL = 1   # the ring was full at finish()
    RESULT_DROPPED_EXPORT_FAILED = 2   # rejected, or retries exhausted their budget

ctypedef struct TraceContext:     # one parsed incoming header
    unsigned char trace_id[16]
    unsigned char parent_id[8]
    bint has_parent               # parent_id is set (X-Ray may send a Root alone)
    int sampled                   # 1, 0, or -1 = undecided (no flag, or X-Ray "?")


# Parsers: 1 = valid (out filled), 0 = invalid (out undefined). Surrounding
# spaces and tabs are ignored (the HTTP field's optional whitespace).
cdef int parse_traceparent(const unsigned char* p, Py_ssize_t n, TraceContext* out) noexcept nogil
cdef int parse_xray(const unsigned char* p, Py_ssize_t n, TraceContext* out) noexcept nogil
cdef Py_ssize_t xray_extras(const unsigned char* p, Py_ssize_t n, char* out) noexcept nogil
                                  # the kept fields, ";"-joined, into out (XRAY_EXTRA_MAX bytes)


@cython.final
cdef class Trace:            # @cython.freelist(256) in tracing.pyx
    # One request's trace context. Built by Tracer.begin for every request.
    cdef unsigned char trace_id[16]
    cdef unsigned char parent_id[8]       # the caller's span (valid when has_parent)
    cdef unsigned char span_id[8]         # the gateway's SERVER span
    cdef unsigned char client_id[8]       # the integration's CLIENT span: the parent sent upstream
    cdef readonly bint has_parent
    cdef readonly bint sampled
    cdef readonly int origin              # an Origin
    cdef readonly bytes tracestate        # incoming, passed through; None = none
    cdef bytes xray_in                    # incoming X-Amzn-Trace-Id when it parsed, for its extra fields
    cdef public double auth_start         # monotonic s; set by the access phase when an authorizer ran
    cdef public double auth_end
    cdef public int upstream_status       # status line of the upstream response; 0 = none arrived

    cdef Py_ssize_t extras(self, char* out) noexcept   # kept X-Ray fields into out (XRAY_EXTRA_MAX)
    # the header lines sent upstream, written into out (TRACE_LINE_MAX bytes); length returned
    cdef Py_ssize_t traceparent_line(self, char* out) noexcept   # "traceparent: ...\r\n"
    cdef Py_ssize_t xray_line(self, char* out) noexcept          # "X-Amzn-Trace-Id: ...\r\n"
    cpdef bytes upstream_headers(self)    # "traceparent: ...\r\n[tracestate: ...\r\n]X-Amzn-Trace-Id: ...\r\n"
    cpdef bytes traceparent(self)         # the value sent upstream (for function events, tests)
    cpdef bytes xray_header(self)         # the X-Amzn-Trace-Id value sent upstream


@cython.final
cdef class Tracer:
    # One per snapshot and worker, built by fastgate.observability.tracing_export.build_tracer.
    cdef readonly int sampler             # a SamplerKind
    cdef readonly double ratio            # 0..1
    cdef uint64_t ratio_bound             # sample when low 64 bits of the trace id < this
    cdef bint ratio_all                   # ratio >= 1: the bound does not fit 64 bits
    cdef readonly int reservoir_per_s     # root traces sampled per second before the ratio
    cdef long long reservoir_second       # the current one-second window (floor of `now`)
    cdef int reservoir_used               # traces taken from it
    cdef uint64_t rng                     # splitmix64 state, seeded per process from os.urandom

    # the ring of span records: ring[i % capacity] for head <= i < tail
    cdef list ring
    cdef readonly Py_ssize_t capacity     # records (one per sampled request, 1-3 spans each)
    cdef unsigned long long head          # next record drain() takes (exporter thread)
    cdef unsigned long long tail          # next free slot finish() fills (loop thread)
    cdef readonly Py_ssize_t batch_size   # records that wake the exporter early
    cdef public object wake               # callable (threading.Event.set) or None, called
                                          # from finish() when batch_size records are queued
    cdef public object exporter           # fastgate.observability.tracing_export.SpanExporter, or None

    # counters, in spans; the shared-memory copies sum over workers
    cdef long long counts[3]              # by Result
    cdef SharedMetrics metrics            # or None
    cdef int slots[3]                     # gauge slot per Result

    cdef void random_bytes(self, unsigned char* out, int n) noexcept nogil
    cdef bint decide_root(self, const unsigned char* trace_id, double now) noexcept nogil
    cpdef Trace begin(self, bytes traceparent, bytes tracestate, bytes xray, double now)
    cpdef void finish(self, Trace trace, RequestContext ctx) except *
    cdef void count(self, int result, long long n) noexcept   # + shared memory when attached
    cpdef list drain(self, Py_ssize_t max_records)
