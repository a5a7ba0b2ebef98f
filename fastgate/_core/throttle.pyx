# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Token buckets and quotas in shared memory, one limit per host; see throttle.pxd."""

import math
import os
import time
from collections import namedtuple

from libc.errno cimport errno
from libc.string cimport memcpy
from posix.mman cimport mmap, munmap, MAP_FAILED, MAP_SHARED, MAP_ANONYMOUS, PROT_READ, PROT_WRITE
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC, CLOCK_REALTIME


# buckets are CAS loops on shared words: a static bucket's state alone (64-bit), a dynamic
# bucket's {key, state} pair together (128-bit), so an eviction never pairs one key with
# another's state
from fastgate._core.shm cimport (fg_add_u64_rlx, fg_cas_i64_acqrel, fg_cas_pair, fg_hash,
                                fg_load_i64_acq, fg_load_u64_acq, fg_mix64)


cdef inline uint64_t fg_hash_bytes(const char* p, size_t n, uint64_t seed) noexcept nogil:
    """A key's hash, never 0 (0 marks an empty slot)."""
    cdef uint64_t h = fg_hash(p, n, seed)
    return h if h else 1


cdef extern from *:
    """
    #define FG_INT64_MAX 0x7fffffffffffffffLL
    """
    int64_t INT64_MAX "FG_INT64_MAX"

# Units beside the limits; ints, not an enum: they exceed C int.
cdef int64_t NS = 1000000000                       # ns per s
cdef int64_t NO_REFILL_BASE = 1LL << 62            # ns; rate-0 state = base + takes used
cdef double EMISSION_MAX_NS = <double>(1LL << 52)  # ns per token (~52 days): rate >= ~2.2e-7/s
cdef int64_t CLOCK_STEP_MAX_NS = 60 * NS            # ns a TAT may sit past a full debt before it is clamped
cdef double TOLERANCE_MAX_NS = <double>(1LL << 60)  # ns (~36 years) of burst
cdef int QUOTA_COUNT_BITS = 44                     # quota state: count in the low bits
cdef int QUOTA_ORDINAL_BITS = 18                   # period ordinal above it, kind on top
cdef int64_t QUOTA_COUNT_MASK = (1LL << 44) - 1
cdef int64_t QUOTA_ORDINAL_MASK = (1LL << 18) - 1
cdef int64_t DAY_S = 86400                         # s

PERIODS = {"DAY": QUOTA_DAY, "WEEK": QUOTA_WEEK, "MONTH": QUOTA_MONTH}

# Python view of a ThrottleResult (tests, the control plane, the Redis path).
Take = namedtuple("Take", "allowed limit remaining reset_ns retry_after_ns window_s")


# ------------------------------------------------------------------ clocks --

cdef int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * NS + ts.tv_nsec


cdef int64_t epoch_s() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <int64_t>ts.tv_sec


# ------------------------------------------------------------ bucket math --

cdef int gcra(int64_t tat, int64_t now, const BucketPolicy* p, ThrottleResult* out,
              int64_t* new_tat) noexcept nogil:
    cdef int64_t T = p.emission_ns, tau = p.tolerance_ns, used, nt
    out.limit = p.limit
    out.window_s = p.window_s
    out.remaining = 0
    if p.mode == POLICY_REJECT_ALL:
        out.allowed = 0
        out.reset_ns = -1
        out.retry_after_ns = -1
        return 0
    if p.mode == POLICY_NO_REFILL:
        used = tat - NO_REFILL_BASE if tat >= NO_REFILL_BASE else 0
        out.reset_ns = -1
        if used >= p.limit:
            out.allowed = 0
            out.retry_after_ns = -1
            return 0
        new_tat[0] = NO_REFILL_BASE + used + 1
        out.allowed = 1
        out.remaining = p.limit - used - 1
        out.retry_after_ns = 0
        return 1
    cdef int rejected = 0
    if tat < now:
        tat = now                   # full bucket: no debt, tokens do not pile up past burst
    elif tat - now > tau + CLOCK_STEP_MAX_NS:
        # The clock went back a long way (or a reload shrank tau by more): an
        # empty bucket, stored even on a rejection so it refills from here.
        # Smaller excesses are normal -- another worker's fresher clock read
        # -- and clamping them would hand out tokens: they just reject.
        tat = now + tau
        new_tat[0] = tat
        rejected = -1
    nt = tat + T
    if nt - now <= tau:
        new_tat[0] = nt
        out.allowed = 1
        out.remaining = (tau - (nt - now)) // T
        out.reset_ns = nt - now
        out.retry_after_ns = 0
        return 1
    out.allowed = 0
    out.reset_ns = tat - now
    out.retry_after_ns = nt - tau - now
    return rejected


cdef void keep_tightest(ThrottleResult* acc, const ThrottleResult* r) noexcept nogil:
    if acc.allowed and (not r.allowed or r.remaining < acc.remaining):
        acc[0] = r[0]


# ------------------------------------------------------------ quota periods --

cdef inline int64_t floordiv(int64_t a, int64_t b) noexcept nogil:
    cdef int64_t q = a // b
    if (a % b != 0) and ((a < 0) != (b < 0)):
        q -= 1
    return q


cdef void civil_from_days(int64_t z, int64_t* y, int64_t* m) noexcept nogil:
    # Howard Hinnant's days -> (year, month) for the proleptic Gregorian calendar.
    z += 719468
    cdef int64_t era = floordiv(z, 146097)
    cdef int64_t doe = z - era * 146097
    cdef int64_t yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    cdef int64_t doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    cdef int64_t mp = (5 * doy + 2) // 153
    m[0] = mp + 3 if mp < 10 else mp - 9
    y[0] = yoe + era * 400 + (1 if m[0] <= 2 else 0)


cdef int64_t days_from_civil(int64_t y, int64_t m) noexcept nogil:
    # days since 1970-01-01 of the 1st of month m of year y
    y -= 1 if m <= 2 else 0
    cdef int64_t era = floordiv(y, 400)
    cdef int64_t yoe = y - era * 400
    cdef int64_t doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5
    cdef int64_t doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


cdef int64_t period_ordinal(int kind, int64_t now_s) noexcept nogil:
    # Period number since the epoch: days, Sunday-weeks (1970-01-01 was a
    # Thursday, so day 3 is the first Sunday), or months.
    cdef int64_t days = floordiv(now_s, DAY_S), y, m
    if kind == QUOTA_WEEK:
        return floordiv(days + 4, 7)
    if kind == QUOTA_MONTH:
        civil_from_days(days, &y, &m)
        return (y - 1970) * 12 + m - 1
    return days


cdef void period_bounds(int kind, int64_t ordinal, int64_t* start_s, int64_t* end_s) noexcept nogil:
    cdef int64_t y, m
    if kind == QUOTA_WEEK:
        start_s[0] = (ordinal * 7 - 4) * DAY_S
        end_s[0] = start_s[0] + 7 * DAY_S
    elif kind == QUOTA_MONTH:
        y = 1970 + floordiv(ordinal, 12)
        m = ordinal - (y - 1970) * 12 + 1
        start_s[0] = days_from_civil(y, m) * DAY_S
        end_s[0] = (days_from_civil(y + 1, 1) if m == 12 else days_from_civil(y, m + 1)) * DAY_S
    else:
        start_s[0] = ordinal * DAY_S
        end_s[0] = start_s[0] + DAY_S


cdef inline int64_t quota_pack(int64_t kind, int64_t ordinal, int64_t count) noexcept nogil:
    return (kind << (QUOTA_COUNT_BITS + QUOTA_ORDINAL_BITS)) | (ordinal << QUOTA_COUNT_BITS) | count


cdef inline bint quota_stale(int64_t state, int64_t now_s) noexcept nogil:
    cdef int kind = <int>((<uint64_t>state) >> (QUOTA_COUNT_BITS + QUOTA_ORDINAL_BITS))
    cdef int64_t ordinal = (state >> QUOTA_COUNT_BITS) & QUOTA_ORDINAL_MASK
    return ordinal < period_ordinal(kind, now_s)


def quota_period(str period, long long now_s):
    """(ordinal, start_s, end_s) of the UTC period containing epoch second now_s."""
    cdef int kind = PERIODS[period]
    cdef int64_t o = period_ordinal(kind, now_s), start, end
    period_bounds(kind, o, &start, &end)
    return o, start, end


# ---------------------------------------------------------------- settings --

cdef class ThrottleSettings:
    """rate (requests/s, >= 0) and burst (>= 0), API Gateway's rateLimit and
    burstLimit. burst < 1 rejects everything; rate 0 allows burst, then nothing."""

    def __init__(self, double rate, double burst):
        if not (math.isfinite(rate) and math.isfinite(burst)) or rate < 0 or burst < 0:
            raise ValueError(f"rate and burst must be finite and >= 0, got {rate}, {burst}")
        self.rate = rate
        self.burst = burst
        self.c.limit = <int64_t>burst
        self.c.emission_ns = 0
        self.c.tolerance_ns = 0
        self.c.window_s = 0
        if burst < 1:
            self.c.mode = POLICY_REJECT_ALL
            self.c.limit = 0
            return
        if rate == 0:
            self.c.mode = POLICY_NO_REFILL
            return
        cdef double T = 1e9 / rate
        if T > EMISSION_MAX_NS or burst * T > TOLERANCE_MAX_NS:
            raise ValueError(f"rate {rate}/s is too small for burst {burst}")
        self.c.mode = POLICY_NORMAL
        self.c.emission_ns = max(<int64_t>(T + 0.5), 1)
        # tau from the rounded T, so a full bucket is exactly floor(burst) takes
        self.c.tolerance_ns = <int64_t>(burst * <double>self.c.emission_ns)
        self.c.window_s = <int64_t>math.ceil(burst / rate)

    @property
    def limit(self):
        """Whole tokens of a full bucket (RateLimit-Policy q); 0 rejects all."""
        return self.c.limit

    @property
    def window_s(self):
        """s for an empty bucket to fill (RateLimit-Policy w); 0 with rate 0."""
        return self.c.window_s

    def __repr__(self):
        return f"ThrottleSettings(rate={self.rate!r}, burst={self.burst!r})"

    def __reduce__(self):
        return ThrottleSettings, (self.rate, self.burst)


cdef class QuotaSettings:
    """limit requests per period ("DAY", "WEEK", "MONTH", UTC). offset is
    subtracted from the limit in the initial period, the one containing
    start_s (epoch s the plan started; default now), as AWS's QuotaSettings."""

    def __init__(self, long long limit, str period="DAY", long long offset=0, start_s=None):
        if period not in PERIODS:
            raise ValueError(f"period must be DAY, WEEK or MONTH, got {period!r}")
        if limit < 0 or offset < 0 or limit >= QUOTA_COUNT_MASK:
            raise ValueError(f"limit and offset must be >= 0 (limit < 2**44), got {limit}, {offset}")
        self.limit = limit
        self.offset = offset
        self.period = period
        self.start_s = int(time.time()) if start_s is None else int(start_s)
        self.c.limit = limit
        self.c.first_limit = max(limit - offset, 0)
        self.c.period = PERIODS[period]
        self.c.initial_ordinal = <int32_t>period_ordinal(self.c.period, self.start_s)

    @property
    def first_limit(self):
        """limit - offset: the limit of the initial period."""
        return self.c.first_limit

    @property
    def initial_ordinal(self):
        """Ordinal (quota_period) of the initial period, the one offset applies to."""
        return self.c.initial_ordinal

    def __repr__(self):
        return (f"QuotaSettings(limit={self.limit}, period={self.period!r}, "
                f"offset={self.offset}, start_s={self.start_s})")

    def __reduce__(self):
        return QuotaSettings, (self.limit, self.period, self.offset, self.start_s)


def namespace(str name):
    """Stable 64-bit id of a limiter name, mixed into its keys' hashes so equal
    keys of different limiters (an IP for two routes) get different buckets."""
    cdef bytes b = name.encode()
    return fg_hash_bytes(b, len(b), 0)


cdef object _take(const ThrottleResult* r):
    return Take(bool(r.allowed), r.limit, r.remaining, r.reset_ns, r.retry_after_ns, r.window_s)


# ----------------------------------------------------------- shared tables --

cdef class SharedSlots:

    def __cinit__(self):
        self.header = NULL

    def __init__(self):
        raise TypeError(f"use {type(self).__name__}.create(...) in the supervisor before forking")

    def __dealloc__(self):
        # Unmaps only this process's view; the other processes keep theirs.
        if self.header != NULL:
            munmap(<void*>self.header, self.map_size)
            self.header = NULL

    cdef _map(self, int static_capacity, long long hashed, int probe):
        if static_capacity < 0 or static_capacity > 1 << 20:
            raise ValueError(f"static slots must be in 0..{1 << 20}, got {static_capacity}")
        if hashed < 1 or hashed > 1 << 28 or hashed & (hashed - 1):
            raise ValueError(f"hashed slots must be a power of two in 1..2**28, got {hashed}")
        if probe < 1 or probe > PROBE_MAX:
            raise ValueError(f"probe must be in 1..{PROBE_MAX}, got {probe}")
        cdef size_t size = (sizeof(TableHeader)
                            + <size_t>static_capacity * STATIC_STRIDE * sizeof(Slot)
                            + <size_t>hashed * sizeof(Slot))
        cdef void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "mmap of the throttle table failed")
        # zero-filled: every slot empty, every bucket fresh (TAT 0 = full)
        self.header = <TableHeader*>p
        self.map_size = size
        self.static_slots = <Slot*>(<char*>p + sizeof(TableHeader))
        self.slots = self.static_slots + <size_t>static_capacity * STATIC_STRIDE
        self.header.magic = THROTTLE_MAGIC
        self.header.static_capacity = static_capacity
        self.header.probe = min(probe, <int>hashed)
        self.header.mask = <uint64_t>(hashed - 1)
        self.header.seed = int.from_bytes(os.urandom(8), "little")

    cdef uint64_t key_hash(self, uint64_t namespace, const char* data, Py_ssize_t n) noexcept nogil:
        return fg_hash_bytes(data, <size_t>n, self.header.seed ^ fg_mix64(namespace))

    cdef void probe(self, uint64_t key, int64_t now, bint quota, Probe* out) noexcept nogil:
        cdef uint64_t mask = self.header.mask, start = key & mask, k
        cdef int64_t st, cost, best = INT64_MAX
        cdef int j
        cdef Slot* s
        out.slot = NULL
        out.found = 0
        for j in range(self.header.probe):
            s = &self.slots[(start + <uint64_t>j) & mask]
            # state before key: the 128-bit store is atomic, so a key read
            # after a state can only be newer; a mismatched pair fails the CAS
            st = fg_load_i64_acq(&s.state)
            k = fg_load_u64_acq(&s.key)
            if k == key:
                out.slot, out.key, out.state, out.found = s, k, st, 1
                return
            if k == 0:
                cost = 0
            elif quota:
                cost = 0 if quota_stale(st, now) else INT64_MAX
            else:
                # full buckets all cost 0, so racing inserters of one key pick
                # the same (first) slot and the CAS serialises them
                cost = st - now if st > now else 0
            if cost < best:
                best = cost
                out.slot, out.key, out.state = s, k, st
            if k == 0:
                return          # keys never sit past an empty slot
        if best == INT64_MAX:
            out.slot = NULL

    def stats(self):
        """Counters of the hash table (all processes): slots in use, evictions."""
        cdef uint64_t used = 0, i
        for i in range(self.header.mask + 1):
            if fg_load_u64_acq(&self.slots[i].key) != 0:
                used += 1
        return {
            "hashed_slots": self.header.mask + 1,
            "hashed_used": used,
            "idle_evictions": fg_load_u64_acq(&self.header.idle_evictions),
            "forced_evictions": fg_load_u64_acq(&self.header.forced_evictions),
            "no_slot": fg_load_u64_acq(&self.header.no_slot),
        }

    def key(self, bytes key, namespace=0):
        """The 64-bit hash the hot path uses for bytes `key` in a limiter namespace."""
        return self.key_hash(namespace, key, len(key))

    def __reduce__(self):
        raise TypeError("throttle tables are shared by fork inheritance, not by pickling")


cdef class BucketTable(SharedSlots):

    @staticmethod
    def create(int static_slots=1024, long long dynamic_slots=65536, int probe=PROBE_DEFAULT):
        """A new table: static_slots named buckets (routes, stages, plans) and a
        hash table of dynamic_slots (a power of two) for per-key buckets. Call it
        in the supervisor before fork so the workers inherit the mapping.
        Memory: 64 B per static slot + 16 B per dynamic slot."""
        cdef BucketTable self = BucketTable.__new__(BucketTable)
        self._map(static_slots, dynamic_slots, probe)
        return self

    @property
    def static_capacity(self):
        return self.header.static_capacity

    def static_slot(self, str name):
        """Slot of the named static bucket ("stage:prod", "route:GET /pets"...),
        claiming a free one if new. Idempotent across workers and reloads."""
        cdef bytes b = name.encode()
        cdef uint64_t h = fg_hash_bytes(b, len(b), 0x5354415449435321)   # unseeded: stable names
        cdef int i
        cdef Slot* s
        cdef uint64_t k
        for i in range(self.header.static_capacity):
            s = &self.static_slots[i * STATIC_STRIDE]
            while True:
                k = fg_load_u64_acq(&s.key)
                if k == h:
                    return i
                if k != 0:
                    break
                # claimed in order, never released: first empty slot is ours unless raced
                if fg_cas_pair(s, 0, fg_load_i64_acq(&s.state), h, fg_load_i64_acq(&s.state)):
                    return i
        raise ValueError(f"no free static throttle slot for {name!r} "
                         f"(static_slots={self.header.static_capacity})")

    cdef int try_take(self, int slot, const BucketPolicy* p, int64_t now_ns,
                      ThrottleResult* out) noexcept nogil:
        cdef int64_t tat, nt
        cdef int64_t* state
        if <unsigned int>slot >= <unsigned int>self.header.static_capacity:
            out.allowed = 1      # no bucket configured: nothing to take, *out untouched otherwise
            return 1
        state = &self.static_slots[slot * STATIC_STRIDE].state
        cdef int rc
        tat = fg_load_i64_acq(state)
        while True:
            rc = gcra(tat, now_ns, p, out, &nt)
            if rc == 0:
                return 0
            if fg_cas_i64_acqrel(state, &tat, nt):   # failed: tat is the fresher value; decide again
                return rc > 0

    cdef int try_take_key(self, uint64_t key, const BucketPolicy* p, int64_t now_ns,
                          ThrottleResult* out) noexcept nogil:
        cdef Probe pr
        cdef int64_t nt
        cdef int rc
        if p.mode == POLICY_REJECT_ALL:
            return gcra(0, now_ns, p, out, &nt)
        if key == 0:
            key = 1
        while True:
            self.probe(key, now_ns, 0, &pr)
            if pr.found:
                rc = gcra(pr.state, now_ns, p, out, &nt)
                if rc != 0:
                    if fg_cas_pair(pr.slot, key, pr.state, key, nt):
                        return rc > 0
                # rejected: a no-op CAS proves the pair judged was one slot's true state
                elif fg_cas_pair(pr.slot, key, pr.state, key, pr.state):
                    return 0
                continue
            if pr.slot == NULL:   # cannot happen for buckets (every slot has a finite cost)
                return gcra(0, now_ns, p, out, &nt)
            gcra(0, now_ns, p, out, &nt)   # a fresh bucket always allows (burst >= 1)
            if fg_cas_pair(pr.slot, pr.key, pr.state, key, nt):
                if pr.key != 0:
                    fg_add_u64_rlx(&self.header.forced_evictions if pr.state > now_ns
                               else &self.header.idle_evictions, 1)
                return 1

    # --- Python wrappers (tests, control plane, benchmarks) ---

    def take(self, int slot, ThrottleSettings settings, now_ns=None):
        """One take from static slot; now_ns defaults to time.monotonic_ns()."""
        cdef ThrottleResult r
        cdef int64_t now = monotonic_ns() if now_ns is None else now_ns
        r.limit = r.remaining = r.reset_ns = r.retry_after_ns = r.window_s = 0
        self.try_take(slot, &settings.c, now, &r)
        return _take(&r)

    def take_key(self, key, ThrottleSettings settings, now_ns=None, namespace=0):
        """One take from the dynamic bucket of bytes `key` (or its int hash)."""
        cdef ThrottleResult r
        cdef int64_t now = monotonic_ns() if now_ns is None else now_ns
        cdef uint64_t h = key if isinstance(key, int) else self.key(key, namespace)
        self.try_take_key(h, &settings.c, now, &r)
        return _take(&r)

    def take_n(self, int slot, ThrottleSettings settings, long long n, bytes key=None, now_ns=None):
        """n takes in a row, as n requests would: a static slot, or, when key is
        given, key's dynamic bucket (hashed on every take, as the protocol must);
        at now_ns or each at the clock. Returns how many passed. The loop runs
        in C: benchmarks divide by n."""
        cdef ThrottleResult r
        cdef long long i, passed = 0
        cdef bint fixed = now_ns is not None
        cdef int64_t now = now_ns if fixed else 0
        cdef bint dynamic = key is not None
        cdef const char* data = NULL
        cdef Py_ssize_t size = 0
        if dynamic:
            data = key
            size = len(key)
        with nogil:
            for i in range(n):
                if not fixed:
                    now = monotonic_ns()
                if dynamic:
                    passed += self.try_take_key(self.key_hash(0, data, size), &settings.c, now, &r)
                else:
                    passed += self.try_take(slot, &settings.c, now, &r)
        return passed


cdef class QuotaTable(SharedSlots):

    @staticmethod
    def create(long long slots=65536, int probe=16):
        """A new quota table of `slots` (a power of two) counters, one per
        (usage plan, API key); size it to at least twice the pairs. Call it in
        the supervisor before fork. Memory: 16 B per slot."""
        cdef QuotaTable self = QuotaTable.__new__(QuotaTable)
        self._map(0, slots, probe)
        return self

    cdef int try_take(self, uint64_t key, const QuotaPolicy* p, int64_t now_s,
                      ThrottleResult* out) noexcept nogil:
        cdef Probe pr
        cdef int64_t cur = period_ordinal(p.period, now_s), start, end, lim, count, ordinal
        cdef int kind
        period_bounds(p.period, cur, &start, &end)
        lim = p.first_limit if cur == p.initial_ordinal else p.limit
        out.limit = lim
        out.window_s = end - start
        out.reset_ns = (end - now_s) * NS
        out.remaining = 0
        out.retry_after_ns = 0
        if key == 0:
            key = 1
        while True:
            if lim <= 0:
                break
            self.probe(key, now_s, 1, &pr)
            if pr.found:
                kind = <int>((<uint64_t>pr.state) >> (QUOTA_COUNT_BITS + QUOTA_ORDINAL_BITS))
                ordinal = (pr.state >> QUOTA_COUNT_BITS) & QUOTA_ORDINAL_MASK
                count = 0
                if kind == p.period and ordinal >= cur:
                    count = pr.state & QUOTA_COUNT_MASK
                    cur = ordinal    # a clock stepped back over a boundary keeps counting
                if count >= lim:
                    if fg_cas_pair(pr.slot, key, pr.state, key, pr.state):
                        break        # verified: over the limit
                    continue
                if fg_cas_pair(pr.slot, key, pr.state, key, quota_pack(p.period, cur, count + 1)):
                    out.allowed = 1
                    out.remaining = lim - count - 1
                    return 1
                continue
            if pr.slot == NULL:
                # every slot of the window holds a live quota: allow, and count it
                fg_add_u64_rlx(&self.header.no_slot, 1)
                out.allowed = 1
                out.remaining = lim - 1
                return 1
            if fg_cas_pair(pr.slot, pr.key, pr.state, key, quota_pack(p.period, cur, 1)):
                if pr.key != 0:
                    fg_add_u64_rlx(&self.header.idle_evictions, 1)
                out.allowed = 1
                out.remaining = lim - 1
                return 1
        out.allowed = 0
        out.retry_after_ns = out.reset_ns
        return 0

    def take_n(self, bytes key, QuotaSettings settings, long long n, now_s=None):
        """n requests against key's quota (hashed on each, clock read on each
        unless now_s is given); how many passed. For benchmarks."""
        cdef ThrottleResult r
        cdef long long i, passed = 0
        cdef bint fixed = now_s is not None
        cdef int64_t now = now_s if fixed else 0
        cdef const char* data = key
        cdef Py_ssize_t size = len(key)
        with nogil:
            for i in range(n):
                if not fixed:
                    now = epoch_s()
                passed += self.try_take(self.key_hash(0, data, size), &settings.c, now, &r)
        return passed

    def take(self, key, QuotaSettings settings, now_s=None, namespace=0):
        """One request against bytes `key`'s quota (or its int hash); now_s is
        epoch seconds, default the wall clock."""
        cdef ThrottleResult r
        cdef int64_t now = epoch_s() if now_s is None else now_s
        cdef uint64_t h = key if isinstance(key, int) else self.key(key, namespace)
        self.try_take(h, &settings.c, now, &r)
        return _take(&r)


# ----------------------------------------------------------------- headers --

cdef inline Py_ssize_t put(char* buf, Py_ssize_t pos, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(buf + pos, s, n)
    return pos + n


cdef Py_ssize_t put_int(char* buf, Py_ssize_t pos, int64_t v) noexcept nogil:
    cdef char tmp[24]
    cdef int n = 0
    if v < 0:
        v = 0
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n:
        n -= 1
        buf[pos] = tmp[n]
        pos += 1
    return pos


cdef inline int64_t ceil_s(int64_t ns) noexcept nogil:
    return (ns + NS - 1) // NS


cdef Py_ssize_t format_headers(char* buf, Py_ssize_t cap, const char* policy,
                               Py_ssize_t policy_len, const ThrottleResult* r) noexcept nogil:
    # 2 names + fixed text (~80 B) + 5 numbers of <= 20 digits: fits the bound
    if cap < 2 * policy_len + 200:
        return -1
    cdef Py_ssize_t pos = 0
    cdef int64_t t = r.reset_ns
    if not r.allowed:
        t = r.retry_after_ns      # the draft: t and Retry-After name the same moment
    pos = put(buf, pos, b'RateLimit-Policy: "', 19)
    pos = put(buf, pos, policy, policy_len)
    pos = put(buf, pos, b'";q=', 4)
    pos = put_int(buf, pos, r.limit)
    if r.window_s > 0:
        pos = put(buf, pos, b";w=", 3)
        pos = put_int(buf, pos, r.window_s)
    pos = put(buf, pos, b'\r\nRateLimit: "', 14)
    pos = put(buf, pos, policy, policy_len)
    pos = put(buf, pos, b'";r=', 4)
    pos = put_int(buf, pos, r.remaining)
    if t >= 0:
        pos = put(buf, pos, b";t=", 3)
        pos = put_int(buf, pos, ceil_s(t))
    pos = put(buf, pos, b"\r\n", 2)
    if not r.allowed and r.retry_after_ns >= 0:
        pos = put(buf, pos, b"Retry-After: ", 13)
        pos = put_int(buf, pos, ceil_s(r.retry_after_ns))
        pos = put(buf, pos, b"\r\n", 2)
    return pos


def header_block(str policy, take):
    """The header lines format_headers writes for a Take (Python callers: the
    Redis path, tests). policy must be a valid structured-field string body."""
    cdef ThrottleResult r
    cdef bytes name = policy.encode("ascii")
    if any(c < 0x20 or c > 0x7e or c in b'"\\' for c in name):
        raise ValueError(f"policy name must be printable ASCII without quote or backslash: {policy!r}")
    r.allowed, r.limit, r.remaining, r.reset_ns, r.retry_after_ns, r.window_s = take
    cdef char[512] small
    cdef Py_ssize_t cap = 2 * len(name) + 200
    if cap > 512:
        raise ValueError("policy name too long")
    cdef Py_ssize_t n = format_headers(small, cap, name, len(name), &r)
    return small[:n]


cpdef bytes claim_key(object auth, bytes name):
    """The bucket key of a LIMIT_CLAIM limiter: the claim's value in the access phase's
    result (fastgate.phases.auth.AuthResult.claims); b"" when there is no token or no such claim.
    Non-string claims (numbers, lists) key by their JSON text."""
    if auth is None:
        return b""
    claims = auth.claims
    if claims is None:
        return b""
    value = claims.get(name.decode())
    if value is None:
        return b""
    if isinstance(value, str):
        return (<str>value).encode()
    import json
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


cdef class Limiter:
    def __init__(self, str name, ThrottleSettings settings, BucketTable table, str bucket,
                 int key_kind=LIMIT_SHARED, str key_arg=None):
        """bucket: a stable name for this limit ("route:GET /pets", "stage:api/prod:GET /x"),
        so a reload keeps its tokens; keyed limiters use it as their namespace."""
        self.name = name
        self.settings = settings
        self.table = table
        self.key_kind = key_kind
        if key_arg:
            self.key_arg = (key_arg.lower() if key_kind == LIMIT_HEADER else key_arg).encode()
        else:
            self.key_arg = None
        self.bucket = bucket.encode()
        self.name_b = name.encode("ascii")
        if any(c < 0x20 or c > 0x7e or c in b'"\\' for c in self.name_b):
            raise ValueError(f"limiter name must be printable ASCII without quote or backslash: {name!r}")
        if key_kind == LIMIT_SHARED:
            self.slot = table.static_slot(bucket)
        else:
            self.slot = -1
            self.ns = namespace(bucket)

    cdef int take(self, const char* key, Py_ssize_t key_len, int64_t now_ns,
                  ThrottleResult* out) noexcept nogil:
        if self.key_kind == LIMIT_SHARED:
            return self.table.try_take(self.slot, &self.settings.c, now_ns, out)
        return self.table.try_take_key(self.table.key_hash(self.ns, key, key_len),
                                       &self.settings.c, now_ns, out)

    cdef bytes headers(self, const ThrottleResult* r):
        cdef char buf[512]
        cdef Py_ssize_t n = format_headers(buf, sizeof(buf), self.name_b, len(self.name_b), r)
        return buf[:n] if n > 0 else b""

    def take_for(self, bytes key=b""):
        """One take (tests): (allowed, header block)."""
        cdef ThrottleResult r
        r.allowed = 1
        allowed = self.take(key, len(key), monotonic_ns(), &r)
        return bool(allowed), self.headers(&r)

    def __repr__(self):
        return f"<Limiter {self.name} rate={self.settings.rate} burst={self.settings.burst}>"
