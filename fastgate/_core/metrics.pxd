# Counters, histograms and gauges shared by every process of one gateway.
#
# The supervisor calls SharedMetrics.create() BEFORE it forks the workers: the
# table lives in one anonymous MAP_SHARED mapping, so every worker inherits the
# same physical pages. Workers update numbers with C atomics on the hot path
# (no lock, no syscall, no Python object); the admin listener in the
# supervisor renders the Prometheus text from the same pages.
#
# A *series* is one slot of the table: a metric kind plus its label set. Slots
# are allocated at config-compile time (request_series / gauge_series /
# counter_series), under a short CAS spinlock in shared memory; the one
# exception is the per-API-key request series, found-or-allocated on a key's
# first request in each process (key_slot) and cached per process after that.
# Allocation is idempotent by (kind, name, labels): every worker that asks for
# the same label set gets the same slot, and a config reload that asks again
# gets the old slot back, so counters never reset on reload. Slots are never freed.
#
# Request series carry `api` and `stage` always, `route` (the route key, never
# the raw path) when the stage switches it on, and `api_key` (the key id, never
# its value) when the stage switches that on. Each request series points at the
# *stage entry* of its (api, stage): the per-stage counters API Gateway keeps
# without a route dimension (throttles by level, cache hits, gateway responses
# by type), in a second table after the series.
#
# Layout of the mapping (all fields naturally aligned, no pointers inside):
#
#   ShmHeader | Slot[0] ... Slot[capacity - 1] | Slot[capacity] (overflow)
#             | StageSlot[0] ... StageSlot[stage_capacity - 1] | StageSlot[stage_capacity] (overflow)
#
# Caps: route- and key-labelled series together take at most labelled_cap slots;
# past it a new route folds into route="other" of its (api, stage) and a new key
# into api_key="other" of its series. Past capacity, new request label sets fold
# into the overflow slot (route="other",api="",stage=""); new gauge and counter
# label sets get slot -1, which every update ignores; new stages share the
# overflow stage entry (api="other",stage="other"). Hot-path methods accept any
# int slot: out-of-range ones are no-ops.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from fastgate._core.pipeline cimport RequestContext

cdef enum:
    SHM_MAGIC = 0x46474D32        # "FGM2": layout version, checked by attach
    LABELS_MAX = 384              # bytes of escaped label text per slot
    NAME_MAX = 64                 # bytes of gauge metric name per slot
    N_BUCKETS = 16                # finite histogram bounds (see BUCKET_BOUNDS_US)
    N_STATUS_CLASSES = 5          # 1xx..5xx
    N_THROTTLE_LEVELS = 4         # members of ThrottleLevel
    N_RESPONSE_TYPES = 64         # gateway response types a stage entry counts (protocol's
                                  # GATEWAY_RESPONSES has ~32; create() rejects more than this)
    KEY_CACHE_MAX = 65536         # (series, key id) pairs one process caches; past it key_slot
                                  # answers the series' api_key="other" slot without caching

cdef enum SlotKind:
    SLOT_FREE = 0                 # never handed out; skipped by render
    SLOT_REQUEST = 1              # requests_total + two duration histograms for one route
    SLOT_GAUGE = 2                # one gauge value; name + labels are free-form
    SLOT_COUNTER = 3              # one counter value (renders `# TYPE counter`); name + labels free-form

cpdef enum ThrottleLevel:
    # fastgate_throttled_total{level}: which of API Gateway's limits said no.
    THROTTLE_USAGE_PLAN = 0       # the API key's usage plan rate (429 THROTTLED from the access phase)
    THROTTLE_METHOD = 1           # stage default or per-method (route) throttling
    THROTTLE_GATEWAY = 2          # the gateway-wide limit
    THROTTLE_QUOTA = 3            # the usage plan's quota (429 QUOTA_EXCEEDED)


ctypedef struct ShmHeader:
    uint32_t magic
    int32_t capacity              # slots before the overflow slot
    int32_t lock                  # 0 = free, else pid of the holder (dead holders get robbed)
    int32_t used                  # slots handed out, in [0, capacity]
    int32_t overflow_used         # 1 once a request label set folded into the overflow slot
    int32_t labelled_cap          # route- and key-labelled series allowed, <= capacity
    int32_t labelled_used         # route- and key-labelled series handed out
    int32_t stage_capacity        # stage entries before the overflow stage entry
    int32_t stages_used           # stage entries handed out, in [0, stage_capacity]
    int32_t stage_overflow_used   # 1 once a stage folded into the overflow stage entry


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
    int32_t stage                 # requests: index of its (api, stage) entry in the stage table
    int32_t split_by_key          # requests: 1 = record_context moves each request to the
                                  # series of its API key (key_slot); 0 = no api_key label
    int32_t labelled              # 1 = counts against labelled_cap (route or api_key label)
    char name[NAME_MAX]           # gauges, counters: metric name; requests: empty
    char labels[LABELS_MAX]       # escaped label text without braces:
                                  # [route="x",]api="a",stage="s"[,api_key="k"]
    uint64_t status[N_STATUS_CLASSES]  # requests by status class, index = status // 100 - 1
    Histogram duration            # fastgate_request_duration_seconds
    Histogram integration         # fastgate_integration_duration_seconds (integrations only)
    int64_t gauge                 # gauges and counters: the value (sum over workers of their adds)


cpdef enum CacheResult:           # label result= of fastgate_cache_requests_total
    CACHE_RESULT_MISS = 0         # "miss": neither this host's cache nor Redis had it
    CACHE_RESULT_HIT = 1          # "hit": answered from this host's shared-memory cache
    CACHE_RESULT_REDIS_HIT = 2    # "redis_hit": a local miss answered from Redis (several hosts)
    N_CACHE_RESULTS = 3

ctypedef struct StageSlot:
    # The per-stage counters of one (api, stage). Only the labels are written
    # under the lock; the numbers with relaxed atomics like the rest.
    int32_t used                  # 1 once handed out; written last (release)
    int32_t labels_len
    char labels[LABELS_MAX]       # api="a",stage="s"
    uint64_t throttled[N_THROTTLE_LEVELS]   # fastgate_throttled_total, index = ThrottleLevel
    uint64_t cache[N_CACHE_RESULTS]   # fastgate_cache_requests_total, index = CacheResult
    uint64_t responses[N_RESPONSE_TYPES]    # fastgate_gateway_responses_total, index = response_index


cdef class SharedMetrics:
    cdef ShmHeader* header        # start of the mapping
    cdef Slot* slots              # capacity + 1 slots right after the header
    cdef StageSlot* stages        # stage_capacity + 1 entries right after the slots
    cdef size_t map_size          # bytes, for munmap
    cdef readonly int capacity    # slots available before overflow
    cdef readonly int overflow_slot   # == capacity
    cdef readonly tuple response_types    # gateway response type names, index = counter position
    cdef dict response_index      # type name -> index; fixed before fork so all processes agree
    cdef list key_cache           # per process: [slot] -> {key id bytes: slot int} or None

    cdef int alloc_slot(self, int kind, bytes name, bytes labels, bint labelled=*) except -2
                                  # -1 when the table (or, labelled, the labelled cap) is full
    cdef int alloc_stage(self, bytes labels) except -2    # stage entry; the overflow one when full
    cdef int key_slot_slow(self, int slot, bytes key_id, dict cache) except -2
    cdef _render_stages(self, w)  # throttled, cache and gateway response families
    cdef void lock(self) noexcept nogil
    cdef void unlock(self) noexcept nogil

    # hot path: lock-free, allocation-free, never raise
    cdef void record_request(self, int slot, int status, double latency_s,
                             double integration_s) noexcept nogil
                                  # status outside 100..599 counts as 5xx;
                                  # integration_s < 0 = the request had no integration
    cdef void record_context(self, int slot, RequestContext ctx, int throttle_level=*) noexcept
                                  # a finished request (LOG phase): record_request on its
                                  # series (its key's series when the slot splits by key),
                                  # plus its stage's gateway response type and throttle:
                                  # error_type THROTTLED counts at throttle_level (default
                                  # usage_plan: pass THROTTLE_METHOD / THROTTLE_GATEWAY when
                                  # the THROTTLE phase rejected), QUOTA_EXCEEDED at quota.
                                  # Integration counted only when ctx.integration_start > 0.
    cdef int key_slot(self, int slot, bytes key_id) noexcept
                                  # series of `slot` split by key id (found or allocated;
                                  # api_key="other" past the cap); slot itself when the key
                                  # is None or the slot does not split by key
    cdef void record_throttled(self, int slot, int level) noexcept nogil
                                  # one throttle at a ThrottleLevel in the stage of series `slot`
    cdef void record_cache(self, int slot, int result) noexcept nogil
                                  # one response cache lookup in the stage of series `slot`
    cdef void record_response_type(self, int slot, str response_type) noexcept
                                  # one gateway response of this type in the stage of `slot`
    cdef void counter_add(self, int slot, unsigned long long n) noexcept nogil
    cdef void gauge_add(self, int slot, long long delta) noexcept nogil
    cdef void gauge_set(self, int slot, long long value) noexcept nogil
    cdef long long gauge_get(self, int slot) noexcept nogil


cdef int throttle_level_of(str limiter_name) noexcept
                                  # Limiter.name ("route", "stage", "gateway", "usage-plan",
                                  # "quota") -> ThrottleLevel
