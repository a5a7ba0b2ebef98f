# Counters, histograms and gauges shared by every process of one gateway.
#
# The supervisor calls SharedMetrics.create() BEFORE it forks the workers: the
# table lives in one anonymous MAP_SHARED mapping, so every worker inherits the
# same physical pages. Workers update numbers with C atomics on the hot path
# (no lock, no syscall, no Python object); the admin listener in the
# supervisor renders the Prometheus text from the same pages.
#
# A *series* is one slot of the table: a metric kind plus its label set. Slots
# are allocated at config-compile time (request_series / gauge_series), never
# per request, under a short CAS spinlock in shared memory. Allocation is
# idempotent by (kind, name, labels): every worker that asks for the same label
# set gets the same slot, and a config reload that asks again gets the old
# slot back, so counters never reset on reload. Slots are never freed.
#
# Layout of the mapping (all fields naturally aligned, no pointers inside):
#
#   ShmHeader | Slot[0] ... Slot[capacity - 1] | Slot[capacity] (overflow)
#
# Past capacity, new request label sets fold into the overflow slot, rendered
# with route="other"; new gauge label sets get slot -1, which every update
# ignores. Hot-path methods accept any int slot: out-of-range ones are no-ops.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from fastgate._core.pipeline cimport RequestContext

cdef enum:
    SHM_MAGIC = 0x46474D31        # "FGM1": layout version, checked by attach
    LABELS_MAX = 384              # bytes of escaped label text per slot
    NAME_MAX = 64                 # bytes of gauge metric name per slot
    N_BUCKETS = 16                # finite histogram bounds (see BUCKET_BOUNDS_US)
    N_STATUS_CLASSES = 5          # 1xx..5xx
    LOCK_SPINS_BEFORE_CHECK = 1000  # sched_yield()s before checking the lock holder is alive

cdef enum SlotKind:
    SLOT_FREE = 0                 # never handed out; skipped by render
    SLOT_REQUEST = 1              # requests_total + two duration histograms for one route
    SLOT_GAUGE = 2                # one gauge value; name + labels are free-form


ctypedef struct ShmHeader:
    uint32_t magic
    int32_t capacity              # slots before the overflow slot
    int32_t lock                  # 0 = free, else pid of the holder (dead holders get robbed)
    int32_t used                  # slots handed out, in [0, capacity]
    int32_t overflow_used         # 1 once a request label set folded into the overflow slot
    int32_t _pad


ctypedef struct Histogram:
    # Per-bucket (not cumulative) counts; render accumulates them. Index
    # N_BUCKETS is the +Inf bucket. count is the sum of the buckets, so
    # _count and le="+Inf" always agree even while other processes record.
    uint64_t buckets[N_BUCKETS + 1]
    uint64_t sum_us               # microseconds: integers add atomically, doubles do not


ctypedef struct Slot:
    int32_t kind                  # a SlotKind; written last (release) so render sees whole slots
    int32_t labels_len
    int32_t name_len
    int32_t _pad
    char name[NAME_MAX]           # gauges: metric name; requests: empty
    char labels[LABELS_MAX]       # escaped label text without braces: route="x",api="",stage=""
    uint64_t status[N_STATUS_CLASSES]  # requests by status class, index = status // 100 - 1
    Histogram duration            # fastgate_request_duration_seconds
    Histogram integration         # fastgate_integration_duration_seconds (integrations only)
    int64_t gauge                 # gauges: the value (sum over workers of their adds)


cdef class SharedMetrics:
    cdef ShmHeader* header        # start of the mapping
    cdef Slot* slots              # capacity + 1 slots right after the header
    cdef size_t map_size          # bytes, for munmap
    cdef readonly int capacity    # slots available before overflow
    cdef readonly int overflow_slot   # == capacity

    cdef int alloc_slot(self, int kind, bytes name, bytes labels) except -2
    cdef void lock(self) noexcept nogil
    cdef void unlock(self) noexcept nogil

    # hot path: lock-free, allocation-free, never raise
    cdef void record_request(self, int slot, int status, double latency_s,
                             double integration_s) noexcept nogil
                                  # status outside 100..599 counts as 5xx;
                                  # integration_s < 0 = the request had no integration
    cdef void record_context(self, int slot, RequestContext ctx) noexcept
                                  # record_request from a finished context (LOG phase);
                                  # integration counted only when ctx.integration_start > 0
    cdef void gauge_add(self, int slot, long long delta) noexcept nogil
    cdef void gauge_set(self, int slot, long long value) noexcept nogil
    cdef long long gauge_get(self, int slot) noexcept nogil
