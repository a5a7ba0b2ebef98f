# Token buckets and usage-plan quotas shared by every worker of one host.
#
# The supervisor calls BucketTable.create() / QuotaTable.create() BEFORE it
# forks the workers: each table is one anonymous MAP_SHARED mapping, so every
# worker draws from the same physical buckets. A limit is therefore a limit
# for the whole host, never divided or multiplied by the worker count.
# Updates are lock-free compare-and-swap loops on the shared words (GCC
# __atomic / __sync builtins, see throttle.pyx); the hot path creates no
# Python object, takes no lock and makes no syscall.
#
# ---------------------------------------------------------------- buckets --
# Algorithm: GCRA (generic cell rate algorithm), the "virtual scheduling"
# form of a token bucket. One int64 per bucket, the theoretical arrival time
# TAT in ns of CLOCK_MONOTONIC (system-wide, so equal in every process).
# With rate R (tokens/s) and burst B (tokens):
#
#   T   = 1e9 / R          emission interval, ns per token
#   tau = B * T            a full bucket's worth of time, ns
#   tat = max(TAT, now)    a TAT in the past is a full bucket (no debt)
#   take allowed  <=>  tat + T - now <= tau           then TAT := tat + T
#   remaining      =  floor((tau - (TAT - now)) / T)  tokens left after it
#   reset (full)   =  TAT - now                       ns until B tokens again
#   retry_after    =  tat + T - tau - now             ns until one token (rejected)
#
# A fresh bucket (TAT 0) allows floor(B) takes at once, then one per T: over
# T seconds of overload exactly floor(B) + floor(R * T) takes pass. It is the
# same as "tokens + last refill" but needs one word, so one CAS updates it.
#
# Semantics as API Gateway's throttling:
#   - burst < 1 (e.g. 0): every take is rejected (POLICY_REJECT_ALL); no
#     state is read or written; Retry-After is "never" (-1).
#   - rate 0, burst B: B takes, then nothing, ever (POLICY_NO_REFILL). The
#     state is then a count, stored as NO_REFILL_BASE + used: far in the
#     future, so such a bucket never looks full and is never evicted idle.
# Clock edge cases:
#   - time going backwards: a `now` older than another worker's is normal
#     (read the clock, get preempted, CAS later), so TAT - now > tau just
#     rejects -- clamping TAT down to now + tau would hand out the difference
#     as tokens (measured: +30% in the forked accuracy test). Only a TAT more
#     than CLOCK_STEP_MAX_NS (60 s) past a full debt -- a clock that really
#     stepped back, or a reload that shrank tau a lot -- is clamped (and
#     stored) to now + tau: an empty bucket. So a backwards clock never grants
#     tokens and never blocks more than 60 s longer than an empty bucket.
#   - rate / burst changes (reload): the debt carries over in time (TAT is
#     absolute), up to that clamp.
#   - huge gaps: a TAT in the past counts as now (the bucket is full, tokens
#     do not pile up past B); no arithmetic grows with the gap.
#   - tiny rates / huge bursts: T and tau are capped (EMISSION_MAX_NS,
#     TOLERANCE_MAX_NS) so TAT + T never overflows int64.
#
# ----------------------------------------------------------- dynamic keys --
# Buckets per API key, client IP, header value or JWT claim live in a bounded
# open-addressing hash table: 64-bit key hash -> slot, linear probing inside a
# window of `probe` slots from hash & mask. A slot is {key, state} in 16
# aligned bytes, and every change to it is ONE 128-bit CAS of both words, so
# a key and its state can never be torn apart by a concurrent eviction
# (cmpxchg16b on x86-64, ldaxp/stlxp on aarch64). Key 0 marks an empty slot.
# Slots are never emptied again, so a key always sits within its window and a
# lookup stops at the first empty slot.
#
# Eviction: a bucket whose TAT <= now is FULL, and a full bucket is exactly a
# fresh one (the next take computes tat = now either way). So a full slot can
# be handed to another key without changing anybody's limit: the old key, if
# it comes back, gets a fresh -- i.e. full -- bucket, which it would have had
# anyway. That is why "per client IP" cannot exhaust memory and stays exact.
# When every slot of the window is in debt (a flood of distinct keys), the
# slot closest to full (smallest TAT - now) is taken over: the only loss of
# accuracy, counted in forced_evictions (size dynamic_slots so it stays 0).
# Two workers inserting the same new key race on the same first candidate
# slot; the CAS lets one win and the other finds the key on its rescan.
# Keys are hashed with a random per-table seed (mixed with a per-limiter
# namespace) so clients cannot aim their keys at one window.
#
# Static slots (route / stage / gateway / plan-method limits) sit in their own
# region, one per 64-byte cache line, allocated once by name at config-compile
# time (idempotent, so a reload keeps the buckets), never evicted.
#
# ----------------------------------------------------------------- quotas --
# Usage-plan quota: at most `limit` requests per period, periods in UTC as
# AWS usage plans count them: DAY from 00:00 UTC, WEEK from Sunday 00:00 UTC,
# MONTH from the 1st 00:00 UTC. `offset` is, as in AWS's QuotaSettings, the
# number of requests subtracted from the limit in the INITIAL period (the one
# containing the plan's start time): a plan created mid-month can allow less
# in that first month. The state is packed in one int64:
#   [63:62] period kind | [61:44] period ordinal | [43:0] count
# A slot whose ordinal is older than the current period is a fresh counter
# (count 0): only such stale slots are reused; a live quota is never evicted
# (that would reset its count). A take past the limit is rejected and not
# counted. When a key's window holds only live quotas (table undersized) the
# take is allowed (fail open) and counted in quota_no_slot.
#
# ----------------------------------------------------------------- headers --
# A take fills a ThrottleResult, whose numbers the protocol formats with
# format_headers() into (draft-ietf-httpapi-ratelimit-headers-10, the current
# structured-field form; see docs/throttling.md for the choice):
#   RateLimit-Policy: "<policy>";q=<limit>;w=<window_s>
#   RateLimit: "<policy>";r=<remaining>;t=<reset_s>
#   Retry-After: <seconds>                (rejected only; RFC 9110 s10.2.3)
# t and Retry-After are ceil(seconds); on a rejection t equals Retry-After
# (the draft: both SHOULD name the same point in time). A "never" (-1) reset
# omits t and Retry-After.

from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


cdef enum:
    THROTTLE_MAGIC = 0x46475431       # "FGT1": layout version of the mapping
    STATIC_STRIDE = 4                 # Slots per static bucket: 64 bytes, one cache line each.
                                      # PERF: workers hammering two different static buckets
                                      # do not bounce one line between cores. No benchmark
                                      # isolates it (bench_throttle is one process).
    PROBE_DEFAULT = 8                 # slots searched per key in the hash table
    PROBE_MAX = 64


cdef enum PolicyMode:
    POLICY_NORMAL = 0                 # GCRA with refill
    POLICY_REJECT_ALL = 1             # burst < 1: reject without touching state
    POLICY_NO_REFILL = 2              # rate 0: burst takes, then never again


cdef enum QuotaPeriod:
    QUOTA_DAY = 1                     # 00:00 UTC .. 24:00 UTC
    QUOTA_WEEK = 2                    # Sunday 00:00 UTC .. next Sunday
    QUOTA_MONTH = 3                   # the 1st 00:00 UTC .. the next 1st


ctypedef struct Slot:
    # 16 bytes, 16-aligned: the unit of the 128-bit CAS. Static slots use
    # only `state` (64-bit CAS); their key is the hash of their name.
    uint64_t key                      # hash of the key; 0 = empty
    int64_t state                     # buckets: TAT ns; quotas: packed period + count


ctypedef struct TableHeader:
    uint32_t magic
    int32_t static_capacity           # static buckets
    int32_t probe                     # hash window, slots
    int32_t _pad
    uint64_t mask                     # hashed slots - 1 (a power of two)
    uint64_t seed                     # random per table: keyed hashing of client keys
    uint64_t idle_evictions           # full buckets / stale quotas handed to a new key
    uint64_t forced_evictions         # buckets in debt taken over (table too small)
    uint64_t no_slot                  # quota takes allowed because no slot was free
    uint64_t _pad2


ctypedef struct BucketPolicy:
    # Built once per configured limit (ThrottleSettings), read-only after.
    int64_t emission_ns               # T = 1e9 / rate, ns; 0 with NO_REFILL
    int64_t tolerance_ns              # tau = burst * T, ns
    int64_t limit                     # floor(burst): RateLimit-Policy q
    int64_t window_s                  # ceil(burst / rate): w, s to refill an empty bucket
    int32_t mode                      # a PolicyMode
    int32_t _pad


ctypedef struct QuotaPolicy:
    # Built once per usage plan quota (QuotaSettings), read-only after.
    int64_t limit                     # requests per period
    int64_t first_limit               # limit - offset: the initial period's limit
    int32_t period                    # a QuotaPeriod
    int32_t initial_ordinal           # ordinal of the period the plan started in; -1 none


ctypedef struct ThrottleResult:
    # One take's verdict plus the header numbers (buckets and quotas alike).
    int32_t allowed                   # 1 = pass, 0 = answer 429
    int32_t _pad
    int64_t limit                     # q: burst (buckets) or the period's limit (quotas)
    int64_t remaining                 # r: whole tokens / requests left after this take
    int64_t reset_ns                  # ns until the bucket is full / the period ends; -1 never
    int64_t retry_after_ns            # rejected: ns until a take can pass; -1 never; 0 if allowed
    int64_t window_s                  # w: s to refill an empty bucket / period length


ctypedef struct Probe:
    # What SharedSlots.probe saw in one key's window.
    Slot* slot                        # the key's slot (found) or the one to claim; NULL: none
    uint64_t key                      # key read from *slot (0 = empty)
    int64_t state                     # state read from *slot, the CAS's expected value
    int32_t found                     # 1 = *slot holds the key
    int32_t _pad


cdef class ThrottleSettings:
    # rate (tokens/s) + burst, as API Gateway's ThrottleSettings; immutable.
    cdef BucketPolicy c
    cdef readonly double rate
    cdef readonly double burst


cdef class QuotaSettings:
    # limit per DAY / WEEK / MONTH with offset, as API Gateway's QuotaSettings.
    cdef QuotaPolicy c
    cdef readonly long long limit
    cdef readonly long long offset
    cdef readonly str period
    cdef readonly long long start_s   # epoch s the plan started (picks the initial period)


cdef class SharedSlots:
    # One mapping: TableHeader | static region | hashed region. Base of both tables.
    cdef TableHeader* header
    cdef Slot* static_slots           # static_capacity * STATIC_STRIDE slots
    cdef Slot* slots                  # mask + 1 hashed slots
    cdef size_t map_size              # bytes, for munmap

    cdef _map(self, int static_capacity, long long hashed, int probe)

    cdef uint64_t key_hash(self, uint64_t namespace, const char* data, Py_ssize_t n) noexcept nogil
                                      # never 0 (0 marks an empty slot)
    cdef void probe(self, uint64_t key, int64_t now, bint quota, Probe* out) noexcept nogil
                                      # find key in its window, else the first free slot (empty,
                                      # full bucket, stale quota), else the bucket closest to full


cdef class BucketTable(SharedSlots):
    # hot path: lock-free, allocation-free, never raise; return out.allowed
    cdef int try_take(self, int slot, const BucketPolicy* p, int64_t now_ns,
                      ThrottleResult* out) noexcept nogil
                                      # static slot from static_slot(); out-of-range slots allow
    cdef int try_take_key(self, uint64_t key, const BucketPolicy* p, int64_t now_ns,
                          ThrottleResult* out) noexcept nogil
                                      # dynamic bucket of key_hash(...)


cdef class QuotaTable(SharedSlots):
    cdef int try_take(self, uint64_t key, const QuotaPolicy* p, int64_t now_s,
                      ThrottleResult* out) noexcept nogil
                                      # now_s: epoch seconds (UTC); periods are calendar ones


# --- helpers for the protocol (pure C, no table) ---
cdef int64_t monotonic_ns() noexcept nogil      # CLOCK_MONOTONIC, the buckets' clock
cdef int64_t epoch_s() noexcept nogil           # CLOCK_REALTIME seconds, the quotas' clock
cdef int gcra(int64_t tat, int64_t now_ns, const BucketPolicy* p, ThrottleResult* out,
              int64_t* new_tat) noexcept nogil  # the bucket math alone: 1 = allowed, store
                                  # *new_tat; 0 = rejected; -1 = rejected, but store *new_tat
                                  # (a TAT clamped after the clock went back)
cdef void keep_tightest(ThrottleResult* acc, const ThrottleResult* r) noexcept nogil
                                  # acc := r when r rejects or has fewer remaining (the draft:
                                  # report the policy with the lowest remaining)
cdef Py_ssize_t format_headers(char* buf, Py_ssize_t cap, const char* policy,
                               Py_ssize_t policy_len, const ThrottleResult* r) noexcept nogil
                                  # "RateLimit-Policy: ...\r\nRateLimit: ...\r\n[Retry-After: ...\r\n]";
                                  # bytes written, or -1 when cap is too small (nothing usable)


# ---------------------------------------------------------------- limiters --
# One configured limit of one level, as the control plane compiles it for a
# route (fastgate.compile.snapshot / fastgate.compile.apis); the protocol's THROTTLE phase
# takes from each of a route's limiters in API Gateway's order and answers
# 429 THROTTLED at the first rejection.

cpdef enum LimiterKey:
    LIMIT_SHARED = 0                  # one bucket (a static slot) for every request
    LIMIT_CLIENT_IP = 1               # a bucket per client address (ctx.source_ip)
    LIMIT_HEADER = 2                  # a bucket per value of a request header (absent: shared "" bucket)
    LIMIT_CLAIM = 3                   # a bucket per value of a JWT claim of the authorizer's result
                                      # (no token or no such claim: shared "" bucket)


cpdef bytes claim_key(object auth, bytes name)


cdef class Limiter:
    cdef readonly str name            # "gateway", "stage", "route": the RateLimit policy name
    cdef readonly ThrottleSettings settings
    cdef readonly BucketTable table
    cdef readonly int slot            # LIMIT_SHARED: static slot; else -1
    cdef readonly int key_kind        # a LimiterKey
    cdef readonly bytes key_arg       # LIMIT_HEADER: lowercase header name; LIMIT_CLAIM: claim name
    cdef readonly bytes bucket        # the limit's stable name (its Redis key across hosts)
    cdef uint64_t ns                  # namespace of its keyed buckets
    cdef bytes name_b                 # name, ASCII, for format_headers

    cdef int take(self, const char* key, Py_ssize_t key_len, int64_t now_ns,
                  ThrottleResult* out) noexcept nogil
    cdef bytes headers(self, const ThrottleResult* r)   # the RateLimit/Retry-After lines
