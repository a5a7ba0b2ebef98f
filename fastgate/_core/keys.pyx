# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled key table of a snapshot and the per-method key check; see keys.pxd."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from fastgate._core.usage cimport UsageCounters

from fastgate._core.throttle cimport (
    BucketPolicy, QuotaPolicy, ThrottleSettings, QuotaSettings, format_headers, monotonic_ns, epoch_s,
)


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* SHA-256 (FIPS 180-4), portable C. A key of up to 55 bytes is one block:
       ~0.3 us, about what hashlib.sha256(v).digest() costs with its objects
       (bench/bench_keys.py races them). */
    static const uint32_t fg_sha_k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    #define FG_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
    static void fg_sha256_block(uint32_t *h, const uint8_t *p) {
        uint32_t w[64], a, b, c, d, e, f, g, hh, t1, t2;
        int i;
        for (i = 0; i < 16; i++)
            w[i] = ((uint32_t)p[4*i] << 24) | ((uint32_t)p[4*i+1] << 16) | ((uint32_t)p[4*i+2] << 8) | p[4*i+3];
        for (i = 16; i < 64; i++) {
            uint32_t s0 = FG_ROR(w[i-15], 7) ^ FG_ROR(w[i-15], 18) ^ (w[i-15] >> 3);
            uint32_t s1 = FG_ROR(w[i-2], 17) ^ FG_ROR(w[i-2], 19) ^ (w[i-2] >> 10);
            w[i] = w[i-16] + s0 + w[i-7] + s1;
        }
        a = h[0]; b = h[1]; c = h[2]; d = h[3]; e = h[4]; f = h[5]; g = h[6]; hh = h[7];
        for (i = 0; i < 64; i++) {
            t1 = hh + (FG_ROR(e, 6) ^ FG_ROR(e, 11) ^ FG_ROR(e, 25)) + ((e & f) ^ (~e & g)) + fg_sha_k[i] + w[i];
            t2 = (FG_ROR(a, 2) ^ FG_ROR(a, 13) ^ FG_ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            hh = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
        }
        h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
    }
    /* The same block with the x86 SHA extensions (Intel SHA-NI, AMD since Zen):
       ~10x faster. Message schedule 4 words at a time: block i (i >= 4) is
       msg2(msg1(M[i-4], M[i-3]) + words 1..4 of (M[i-2], M[i-1]), M[i-1]). The
       state is kept as ABEF / CDGH, the order sha256rnds2 wants. */
    #if defined(__x86_64__) && defined(__GNUC__)
    #include <immintrin.h>
    #include <cpuid.h>
    __attribute__((target("sha,sse4.1,ssse3")))
    static void fg_sha256_block_ni(uint32_t *h, const uint8_t *p) {
        const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
        __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[0]), 0xB1);   /* CDAB */
        __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&h[4]), 0x1B);    /* EFGH */
        __m128i s0 = _mm_alignr_epi8(tmp, s1, 8);                                         /* ABEF */
        __m128i abef, cdgh, m[4], w;
        int i;
        s1 = _mm_blend_epi16(s1, tmp, 0xF0);                                              /* CDGH */
        abef = s0; cdgh = s1;
        #pragma GCC unroll 16
        for (i = 0; i < 16; i++) {
            if (i < 4)
                m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * i)), MASK);
            else
                m[i & 3] = _mm_sha256msg2_epu32(
                    _mm_add_epi32(_mm_sha256msg1_epu32(m[i & 3], m[(i + 1) & 3]),
                                  _mm_alignr_epi8(m[(i + 3) & 3], m[(i + 2) & 3], 4)),
                    m[(i + 3) & 3]);
            w = _mm_add_epi32(m[i & 3], _mm_loadu_si128((const __m128i *)&fg_sha_k[4 * i]));
            s1 = _mm_sha256rnds2_epu32(s1, s0, w);
            s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(w, 0x0E));
        }
        s0 = _mm_add_epi32(s0, abef);
        s1 = _mm_add_epi32(s1, cdgh);
        tmp = _mm_shuffle_epi32(s0, 0x1B);                                                /* FEBA */
        s1 = _mm_shuffle_epi32(s1, 0xB1);                                                 /* DCHG */
        _mm_storeu_si128((__m128i *)&h[0], _mm_blend_epi16(tmp, s1, 0xF0));               /* A..D */
        _mm_storeu_si128((__m128i *)&h[4], _mm_alignr_epi8(s1, tmp, 8));                  /* E..H */
    }
    static int fg_cpu_has_sha(void) {
        unsigned a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9)))
            return 0;                       /* SSE4.1, SSSE3 */
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
            return 0;
        return (b >> 29) & 1;               /* SHA */
    }
    #else
    #define fg_sha256_block_ni fg_sha256_block
    static int fg_cpu_has_sha(void) { return 0; }
    #endif
    typedef void (*fg_block_fn)(uint32_t *, const uint8_t *);
    static fg_block_fn fg_sha256_block_best = fg_sha256_block;
    static void fg_sha256_use(int hardware) {
        fg_sha256_block_best = hardware && fg_cpu_has_sha() ? fg_sha256_block_ni : fg_sha256_block;
    }
    static int fg_sha256_hardware(void) { return fg_sha256_block_best != fg_sha256_block; }

    static void fg_sha256(const uint8_t *data, size_t n, uint8_t *out) {
        fg_block_fn block = fg_sha256_block_best;
        uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
        uint8_t tail[128];
        uint64_t bits = (uint64_t)n * 8;
        size_t i, rest, pad;
        for (i = 0; i + 64 <= n; i += 64) block(h, data + i);
        rest = n - i;
        memcpy(tail, data + i, rest);
        tail[rest] = 0x80;
        pad = rest < 56 ? 64 : 128;
        memset(tail + rest + 1, 0, pad - rest - 1);
        for (i = 0; i < 8; i++) tail[pad - 1 - i] = (uint8_t)(bits >> (8 * i));
        block(h, tail);
        if (pad == 128) block(h, tail + 64);
        for (i = 0; i < 8; i++) {
            out[4*i] = (uint8_t)(h[i] >> 24); out[4*i+1] = (uint8_t)(h[i] >> 16);
            out[4*i+2] = (uint8_t)(h[i] >> 8); out[4*i+3] = (uint8_t)h[i];
        }
    }
    /* Every byte is read whatever differs; the volatile accumulator keeps the
       compiler from turning the loop into an early-exit memcmp. */
    static int fg_digest_equal(const uint8_t *a, const uint8_t *b) {
        volatile uint8_t acc = 0;
        int i;
        for (i = 0; i < 32; i++) acc |= a[i] ^ b[i];
        return acc == 0;
    }
    static inline uint64_t fg_prefix64(const uint8_t *d) { uint64_t v; memcpy(&v, d, 8); return v; }
    """
    void fg_sha256(const uint8_t* data, size_t n, uint8_t* out) nogil
    void fg_sha256_use(int hardware) nogil
    int fg_sha256_hardware() nogil
    int fg_digest_equal(const uint8_t* a, const uint8_t* b) nogil
    uint64_t fg_prefix64(const uint8_t* d) nogil


cdef void sha256(const uint8_t* data, size_t n, uint8_t* out) noexcept nogil:
    fg_sha256(data, n, out)


cdef bint digest_equal(const uint8_t* a, const uint8_t* b) noexcept nogil:
    return fg_digest_equal(a, b)




# PERF: the SHA extensions when the CPU has them (bench/bench_keys.py test_sha256_*)
fg_sha256_use(1)


def sha256_use_hardware(bint on):
    """Hash with the CPU's SHA extensions (the default when present) or portable C
    (tests check both); returns whether the extensions are now in use."""
    fg_sha256_use(on)
    return bool(fg_sha256_hardware())


def sha256_digest(bytes data):
    """SHA-256 of data through the C implementation (tests compare it with hashlib)."""
    cdef uint8_t out[32]
    sha256(<const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
    return (<char*>out)[:32]


INVALID_API_KEY = "INVALID_API_KEY"
# gateway response type and RateLimit policy name of each rejecting verdict
DENIALS = {KEY_INVALID: ("INVALID_API_KEY", None), KEY_THROTTLED: ("THROTTLED", "usage-plan"),
           KEY_QUOTA: ("QUOTA_EXCEEDED", "quota")}


cdef class KeyIndex:
    def __cinit__(self):
        self.entries = NULL
        self.slots = NULL
        self.grants = NULL
        self.methods = NULL

    def __dealloc__(self):
        free(self.entries)
        free(self.slots)
        free(self.grants)
        free(self.methods)

    def __init__(self, table, BucketTable buckets, QuotaTable quotas, usage_slot_of=None):
        """Compile fastgate.compile.keys.KeyTable `table`: its digests, each key's plans per
        (api, stage) with their policies and bucket keys, into C arrays.
        usage_slot_of(key_id, api_id, stage): this worker's usage slot (None: no metering)."""
        cdef KeyEntry* e
        cdef Grant* g
        cdef MethodGrant* m
        cdef bytes d
        cdef uint64_t i, size = 8
        cdef int32_t n_grants = 0, n_methods = 0, k = 0, gi = 0, mi = 0
        self.table = table
        self.buckets = buckets
        self.quotas = quotas
        self.usage_slot_of = usage_slot_of
        self.usage_slots = {}
        self.key_infos = []
        self.key_ids = []
        self.plan_infos = []
        self.stage_numbers = {}
        self.method_numbers = {}
        # (digest, KeyInfo) in the table's order; the index is built from digests only
        stored = list(table.digests())
        for _, info in stored:
            n_grants += len(info.plans)
            for plan in info.plans.values():
                n_methods += len(plan.method_throttles)
        while size < <uint64_t>(2 * len(stored)):
            size <<= 1
        self.mask = size - 1
        self.entries = <KeyEntry*>calloc(max(len(stored), 1), sizeof(KeyEntry))
        self.slots = <int32_t*>calloc(size, sizeof(int32_t))
        self.grants = <Grant*>calloc(max(n_grants, 1), sizeof(Grant))
        self.methods = <MethodGrant*>calloc(max(n_methods, 1), sizeof(MethodGrant))
        if not (self.entries and self.slots and self.grants and self.methods):
            raise MemoryError()
        for i in range(size):
            self.slots[i] = -1
        for d, info in stored:
            if len(d) != DIGEST_BYTES:
                raise ValueError(f"API key {info.key_id!r}: a digest must be {DIGEST_BYTES} bytes")
            e = &self.entries[k]
            memcpy(e.digest, PyBytes_AS_STRING(d), DIGEST_BYTES)
            e.enabled = bool(info.enabled)
            e.first_grant = gi
            e.n_grants = len(info.plans)
            for (api_id, stage), plan in info.plans.items():
                g = &self.grants[gi]
                g.stage = self.stage_numbers.setdefault((api_id, stage), len(self.stage_numbers))
                g.has_throttle = plan.throttle is not None
                if g.has_throttle:
                    g.throttle = (<ThrottleSettings>plan.throttle).c
                g.bucket_key = plan.bucket_key
                g.has_quota = plan.quota is not None
                if g.has_quota:
                    g.quota = (<QuotaSettings>plan.quota).c
                g.quota_key = plan.quota_key
                g.first_method = mi
                g.n_methods = len(plan.method_throttles)
                for method_key, settings in plan.method_throttles.items():
                    m = &self.methods[mi]
                    m.method = self.method_numbers.setdefault(method_key, len(self.method_numbers))
                    m.throttle = (<ThrottleSettings>settings).c
                    m.bucket_key = plan.method_bucket_keys[method_key]
                    mi += 1
                self.plan_infos.append(plan)
                gi += 1
            i = fg_prefix64(e.digest) & self.mask
            while self.slots[i] >= 0:
                i = (i + 1) & self.mask
            self.slots[i] = k
            self.key_infos.append(info)
            self.key_ids.append(info.key_id.encode())
            k += 1
        self.n_entries = k
        self.n_grants = gi
        self.n_methods = mi

    def __len__(self):
        return self.n_entries

    def stage_number(self, str api_id, str stage):
        """The number gates use for (api_id, stage); -1 when no plan covers it."""
        return self.stage_numbers.get((api_id, stage), -1)

    def method_number(self, str method_key):
        """The number gates use for "/pets/GET"; -1 when no plan overrides it."""
        return self.method_numbers.get(method_key, -1)

    cdef int32_t find(self, const char* value, Py_ssize_t n) noexcept nogil:
        cdef uint8_t d[32]
        cdef uint64_t i, prefix
        cdef int32_t k
        if n <= 0 or n > VALUE_MAX_BYTES:
            return -1
        sha256(<const uint8_t*>value, n, d)
        prefix = fg_prefix64(d)
        i = prefix & self.mask
        # which slots are probed depends only on the presented value's digest; a
        # stored digest is compared whole, in constant time, once its prefix matches
        while True:
            k = self.slots[i]
            if k < 0:
                return -1
            if fg_prefix64(self.entries[k].digest) == prefix and digest_equal(self.entries[k].digest, d):
                return k
            i = (i + 1) & self.mask

    cdef int32_t grant_of(self, int32_t entry, int32_t stage) noexcept nogil:
        cdef KeyEntry* e = &self.entries[entry]
        cdef int32_t g
        for g in range(e.first_grant, e.first_grant + e.n_grants):
            if self.grants[g].stage == stage:
                return g
        return -1

    cdef long long usage_slot(self, int32_t entry, int32_t stage) except? -2:
        # one dict lookup per metered request; the slot is claimed once per (key, stage)
        cache_key = (<long long>entry << 20) | stage
        slot = self.usage_slots.get(cache_key)
        if slot is None:
            api_id, stage_name = next(k for k, v in self.stage_numbers.items() if v == stage)
            slot = self.usage_slots[cache_key] = self.usage_slot_of(
                self.key_infos[entry].key_id, api_id, stage_name)
        return slot

    def lookup(self, value):
        """The fastgate.compile.keys.KeyInfo of a presented value (str or bytes), or None."""
        cdef int32_t k
        if not value:
            return None
        b = value.encode() if isinstance(value, str) else value
        k = self.find(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
        return self.key_infos[k] if k >= 0 else None

    def __reduce__(self):
        raise TypeError("a KeyIndex is compiled per worker, not pickled")


cdef class KeyGate:
    def __init__(self, KeyIndex index, str api_id, str stage, str method_key, *,
                 bint from_authorizer=False):
        self.index = index
        self.api_id = api_id
        self.stage = stage
        self.method_key = method_key
        self.from_authorizer = from_authorizer
        self.stage_no = index.stage_number(api_id, stage) if index is not None else -1
        self.method_no = index.method_number(method_key) if index is not None else -1

    cdef int check(self, RequestContext ctx, const char* value, Py_ssize_t n, int64_t now_ns,
                   int64_t now_s, ThrottleResult* out) except -1:
        cdef KeyIndex idx = self.index
        cdef int32_t k, g, j
        cdef Grant* gr
        cdef MethodGrant* m
        cdef const BucketPolicy* policy = NULL
        cdef uint64_t bucket = 0
        if idx is None or value == NULL or self.stage_no < 0:
            return KEY_INVALID
        k = idx.find(value, n)
        if k < 0 or not idx.entries[k].enabled:
            return KEY_INVALID
        g = idx.grant_of(k, self.stage_no)
        if g < 0:
            return KEY_INVALID
        ctx.api_key_id = <bytes>idx.key_ids[k]
        if idx.usage_slot_of is not None:
            # metered from here: a throttled request counts too (requests, throttled)
            ctx.usage_slot = idx.usage_slot(k, self.stage_no)
            ctx.metered = True
        gr = &idx.grants[g]
        if self.method_no >= 0:
            for j in range(gr.first_method, gr.first_method + gr.n_methods):
                m = &idx.methods[j]
                if m.method == self.method_no:
                    policy = &m.throttle
                    bucket = m.bucket_key
                    break
        if policy == NULL and gr.has_throttle:
            policy = &gr.throttle
            bucket = gr.bucket_key
        if policy != NULL and not idx.buckets.try_take_key(bucket, policy, now_ns, out):
            return KEY_THROTTLED
        if gr.has_quota and not idx.quotas.try_take(gr.quota_key, &gr.quota, now_s, out):
            return KEY_QUOTA
        ctx.quota_used = True             # GetUsage's "used": let through by the plan
        return KEY_ALLOW

    # --- Python callers: the access phase's slow paths (an authorizer's key, Redis), tests ---

    def identify(self, value):
        """(None, KeyInfo, PlanInfo) when value is an enabled key in a plan of this stage,
        else (INVALID_API_KEY, KeyInfo or None, None): fastgate.compile.keys.check_key's verdict."""
        cdef int32_t k, g
        cdef KeyIndex idx = self.index
        if idx is None or not value:
            return INVALID_API_KEY, None, None
        b = value.encode() if isinstance(value, str) else value
        k = idx.find(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
        if k < 0:
            return INVALID_API_KEY, None, None
        info = idx.key_infos[k]
        if not idx.entries[k].enabled or self.stage_no < 0:
            return INVALID_API_KEY, info, None
        g = idx.grant_of(k, self.stage_no)
        if g < 0:
            return INVALID_API_KEY, info, None
        return None, info, idx.plan_infos[g]

    def run(self, RequestContext ctx, value, now_ns=None, now_s=None):
        """check() for a value from Python: (None, None) to go on, else (gateway
        response type, RateLimit header block or None)."""
        cdef ThrottleResult r
        cdef char buf[512]
        cdef Py_ssize_t n
        cdef int rc
        b = value.encode() if isinstance(value, str) else value
        rc = self.check(ctx, PyBytes_AS_STRING(b) if b else NULL, PyBytes_GET_SIZE(b) if b else 0,
                        monotonic_ns() if now_ns is None else now_ns,
                        epoch_s() if now_s is None else now_s, &r)
        if rc == KEY_ALLOW:
            return None, None
        error_type, policy = DENIALS[rc]
        if policy is None:
            return error_type, None
        n = headers_for(rc, &r, buf, sizeof(buf))
        return error_type, buf[:n] if n > 0 else None

    def check_n(self, RequestContext ctx, bytes value, long long n, UsageCounters usage=None,
                long long bytes_in=0, long long bytes_out=0):
        """n checks of one value, each passed one recorded in `usage` as the LOG phase
        records it (benchmarks: the loop stays in C); returns how many passed."""
        cdef ThrottleResult r
        cdef long long i, passed = 0
        for i in range(n):
            if self.check(ctx, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), monotonic_ns(),
                          epoch_s(), &r) == KEY_ALLOW:
                passed += 1
                if usage is not None and ctx.metered:
                    usage.record(ctx.usage_slot, 200, False, ctx.quota_used, bytes_in, bytes_out)
        return passed

    def __repr__(self):
        return f"<KeyGate {self.api_id}/{self.stage} {self.method_key}>"


cdef Py_ssize_t headers_for(int verdict, const ThrottleResult* r, char* buf, Py_ssize_t cap) noexcept nogil:
    if verdict == KEY_THROTTLED:
        return format_headers(buf, cap, b"usage-plan", 10, r)
    if verdict == KEY_QUOTA:
        return format_headers(buf, cap, b"quota", 5, r)
    return -1
