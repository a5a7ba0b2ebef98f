# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The response cache in shared memory, one per host; see cache.pxd."""

import os

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport errno
from libc.string cimport memcmp, memcpy
from posix.mman cimport mmap, munmap, MAP_FAILED, MAP_SHARED, MAP_ANONYMOUS, PROT_READ, PROT_WRITE
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME

from fastgate._core.pipeline cimport ascii_ieq
from fastgate._core.shm cimport (fg_add_u64_rlx, fg_hash, fg_load_i32_rlx, fg_load_u16_rlx, sched_yield,
                                fg_load_u64_rlx, fg_seq_load, fg_seq_recheck, fg_seq_write_begin,
                                fg_seq_write_end, fg_store_u16_rlx, pid_lock, pid_unlock)


# "Warning" header added by SUCCEED_WITH_RESPONSE_HEADER, in API Gateway's words.
WARNING_HEADER = (b"Warning",
                  b"199 Cache-control headers were ignored because the caller was unauthorized.")
TTL_DEFAULT_S = 300              # s: caching/ttlInSeconds when unset
TTL_MAX_S = 3600                 # s: API Gateway's largest TTL
MIN_SLOTS = 64                   # index slots of the smallest cache
BLOCK_BYTES_PY = BLOCK_BYTES     # for tests and docs


ctypedef struct Cursor:
    # A position in one entry's block chain, for reading or writing it in pieces.
    int32_t block
    int32_t off                   # bytes used of `block`
    int32_t steps                 # blocks the walk may still enter (bounds a racing reader)


cdef inline long long now_epoch_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_REALTIME, &ts)
    return <long long>ts.tv_sec * 1000 + ts.tv_nsec // 1000000


cdef inline int walk(Cursor* c, int32_t* links, char* blocks, int64_t n_blocks,
                     char* dst, const char* src, const char* cmp, size_t n) noexcept nogil:
    """Move n bytes along the chain: copy out to dst, copy in from src, or
    compare with cmp (exactly one non-NULL). 0 = done, 1 = compare differed,
    -1 = a broken link (only a racing reader sees one)."""
    cdef size_t take
    cdef int32_t nxt
    cdef char* at
    while n > 0:
        if c.off == BLOCK_BYTES:
            c.steps -= 1
            nxt = fg_load_i32_rlx(&links[c.block])
            if c.steps <= 0 or nxt < 0 or nxt >= n_blocks:
                return -1
            c.block = nxt
            c.off = 0
        take = BLOCK_BYTES - c.off
        if take > n:
            take = n
        at = blocks + <size_t>c.block * BLOCK_BYTES + c.off
        if dst != NULL:
            memcpy(dst, at, take)
            dst += take
        elif src != NULL:
            memcpy(at, src, take)
            src += take
        else:
            if memcmp(at, cmp, take) != 0:
                return 1
            cmp += take
        n -= take
        c.off += <int32_t>take
    return 0


cdef class SharedCache:

    def __cinit__(self):
        self.header = NULL

    def __init__(self):
        raise TypeError("use SharedCache.create(memory_bytes, max_entry_bytes) in the supervisor before forking")

    def __dealloc__(self):
        # Unmaps only this process's view; the other processes keep theirs.
        if self.header != NULL:
            munmap(<void*>self.header, self.map_size)
            self.header = NULL

    @staticmethod
    def create(long long memory_bytes, long long max_entry_bytes=MAX_ENTRY_DEFAULT, long long slots=0):
        """A new, empty cache holding at most memory_bytes of entry data (key +
        headers + body, rounded up to BLOCK_BYTES blocks), each at most
        max_entry_bytes. slots: index size (0 = one per two blocks, a power of
        two); a key competes for PROBE_WAYS of them. Call it in the supervisor
        before fork so the workers inherit the mapping."""
        if max_entry_bytes < 1 or memory_bytes < max_entry_bytes:
            raise ValueError(f"need 1 <= max_entry_bytes <= memory_bytes, got {max_entry_bytes}, {memory_bytes}")
        if memory_bytes > (1LL << 40) or memory_bytes // BLOCK_BYTES >= (1LL << 31):
            raise ValueError(f"memory_bytes too large: {memory_bytes}")
        cdef int64_t n_blocks = (memory_bytes + BLOCK_BYTES - 1) // BLOCK_BYTES
        cdef int64_t want = slots if slots > 0 else n_blocks // 2
        cdef int64_t n_slots = MIN_SLOTS
        while n_slots < want:
            n_slots <<= 1
        if n_slots >= (1LL << 31):
            raise ValueError(f"slots too large: {slots}")
        cdef size_t size = (sizeof(CacheHeader) + <size_t>n_slots * sizeof(Slot)
                            + <size_t>n_blocks * sizeof(int32_t) + <size_t>n_blocks * BLOCK_BYTES)
        cdef void* p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "mmap of the response cache failed")
        cdef SharedCache self = SharedCache.__new__(SharedCache)
        self.header = <CacheHeader*>p
        self.slots = <Slot*>(<char*>p + sizeof(CacheHeader))
        self.next_block = <int32_t*>(<char*>self.slots + <size_t>n_slots * sizeof(Slot))
        self.blocks = <char*>self.next_block + <size_t>n_blocks * sizeof(int32_t)
        self.map_size = size
        self.memory_bytes = n_blocks * BLOCK_BYTES
        self.max_entry_bytes = max_entry_bytes
        seeds = os.urandom(16)
        self.seed_lo = int.from_bytes(seeds[:8], "little")
        self.seed_hi = int.from_bytes(seeds[8:], "little")
        # An anonymous mapping is zero-filled: every slot is empty with seq 0.
        self.header.magic = CACHE_MAGIC
        self.header.n_slots = n_slots
        self.header.n_blocks = n_blocks
        self.header.max_entry_bytes = max_entry_bytes
        self.reset()
        return self

    # --- the writer lock ---

    cdef void lock(self) noexcept nogil:
        if pid_lock(&self.header.lock):
            # a worker killed inside a put may have left the chains half-linked: clear it
            fg_add_u64_rlx(&self.header.resets, 1)
            self.reset()

    cdef void unlock(self) noexcept nogil:
        pid_unlock(&self.header.lock)

    cdef void reset(self) noexcept nogil:
        cdef int64_t i, n = self.header.n_blocks
        cdef Slot* s
        for i in range(self.header.n_slots):
            s = &self.slots[i]
            fg_seq_write_begin(&s.seq)
            s.used = 0
            s.referenced = 0
            fg_seq_write_end(&s.seq)
        for i in range(n - 1):
            self.next_block[i] = <int32_t>(i + 1)
        self.next_block[n - 1] = -1
        self.header.free_head = 0
        self.header.free_blocks = n
        self.header.entries = 0
        self.header.clock_hand = 0

    cdef void drop(self, Slot* s) noexcept nogil:
        # Caller holds the lock and made s.seq odd.
        cdef int32_t tail = s.first_block
        cdef int32_t k
        if not s.used:
            return
        for k in range(s.n_blocks - 1):
            tail = self.next_block[tail]
        self.next_block[tail] = <int32_t>self.header.free_head
        self.header.free_head = s.first_block
        self.header.free_blocks += s.n_blocks
        self.header.entries -= 1
        s.used = 0
        s.referenced = 0

    cdef bint reclaim(self, int64_t need, Slot* keep, long long now_ms) noexcept nogil:
        cdef int64_t mask = self.header.n_slots - 1
        cdef int64_t steps = 0, limit = 2 * self.header.n_slots + 1
        cdef Slot* s
        while self.header.free_blocks < need and steps < limit:
            s = &self.slots[self.header.clock_hand]
            self.header.clock_hand = (self.header.clock_hand + 1) & mask
            steps += 1
            if s == keep or not s.used:
                continue
            if s.expires_ms <= now_ms:
                self.header.expired += 1
            elif fg_load_u16_rlx(&s.referenced):
                fg_store_u16_rlx(&s.referenced, 0)     # second chance
                continue
            else:
                self.header.evictions += 1
            fg_seq_write_begin(&s.seq)
            self.drop(s)
            fg_seq_write_end(&s.seq)
        return self.header.free_blocks >= need

    # --- hot path ---

    cdef object read_slot(self, Slot* s, const char* key, Py_ssize_t key_len,
                          uint64_t lo, uint64_t hi, long long now_ms):
        """(status, headers, body) on a hit; None when s holds another key;
        False when s holds the key but it is expired or kept changing."""
        cdef uint32_t seq
        cdef uint32_t klen, hlen, blen
        cdef int32_t status, first, nb
        cdef int64_t expires
        cdef int attempt, r
        cdef Cursor c
        cdef bytes headers, body
        for attempt in range(READ_RETRIES):
            seq = fg_seq_load(&s.seq)
            if seq & 1:
                fg_add_u64_rlx(&self.header.torn_reads, 1)
                sched_yield()
                continue
            if not s.used or s.hash_lo != lo or s.hash_hi != hi:
                if fg_seq_recheck(&s.seq) != seq:
                    continue
                return None
            klen = s.key_len
            hlen = s.headers_len
            blen = s.body_len
            status = s.status
            first = s.first_block
            nb = s.n_blocks
            expires = s.expires_ms
            if fg_seq_recheck(&s.seq) != seq:
                fg_add_u64_rlx(&self.header.torn_reads, 1)
                continue
            # The metadata is one consistent snapshot from here on.
            if klen != key_len:
                return None
            if expires <= now_ms:
                return False
            if first < 0 or first >= self.header.n_blocks or <int64_t>klen + hlen + blen > self.max_entry_bytes:
                return False
            headers = PyBytes_FromStringAndSize(NULL, hlen)
            body = PyBytes_FromStringAndSize(NULL, blen)
            c.block = first
            c.off = 0
            c.steps = nb
            r = walk(&c, self.next_block, self.blocks, self.header.n_blocks, NULL, NULL, key, klen)
            if r == 0 and hlen:
                r = walk(&c, self.next_block, self.blocks, self.header.n_blocks,
                         PyBytes_AS_STRING(headers), NULL, NULL, hlen)
            if r == 0 and blen:
                r = walk(&c, self.next_block, self.blocks, self.header.n_blocks,
                         PyBytes_AS_STRING(body), NULL, NULL, blen)
            if fg_seq_recheck(&s.seq) != seq:
                fg_add_u64_rlx(&self.header.torn_reads, 1)
                continue
            if r != 0:
                return None          # same 128-bit hash, another key
            # PERF: test before set, so a hot entry's line is not written by
            # every hit on every core (bench/bench_cache.py::test_get_hit).
            if not fg_load_u16_rlx(&s.referenced):
                fg_store_u16_rlx(&s.referenced, 1)
            return (status, headers, body)
        return False

    cdef object get(self, bytes key, long long now_ms):
        cdef const char* k = key
        cdef Py_ssize_t n = len(key)
        cdef uint64_t lo = fg_hash(k, n, self.seed_lo), hi = fg_hash(k, n, self.seed_hi)
        cdef int64_t mask = self.header.n_slots - 1
        cdef int i
        cdef object r
        for i in range(PROBE_WAYS):
            r = self.read_slot(&self.slots[(lo + i) & mask], k, n, lo, hi, now_ms)
            if r is None:
                continue
            if r is not False:
                fg_add_u64_rlx(&self.header.hits, 1)
                return r
            break
        fg_add_u64_rlx(&self.header.misses, 1)
        return None

    cdef void put(self, bytes key, long long expires_ms, int status, bytes headers, bytes body):
        cdef Py_ssize_t klen = len(key), hlen = len(headers), blen = len(body)
        cdef int64_t total = klen + hlen + blen
        cdef int64_t need = (total + BLOCK_BYTES - 1) // BLOCK_BYTES
        cdef const char* k = key
        cdef uint64_t lo = fg_hash(k, klen, self.seed_lo), hi = fg_hash(k, klen, self.seed_hi)
        cdef int64_t mask = self.header.n_slots - 1
        cdef long long now_ms = now_epoch_ms()
        cdef Slot* s
        cdef Slot* target = NULL
        cdef Slot* empty = NULL
        cdef Slot* stale = NULL
        cdef Slot* cold = NULL
        cdef int i
        cdef int32_t head, tail
        cdef Cursor c
        if total > self.max_entry_bytes:
            fg_add_u64_rlx(&self.header.too_large, 1)
            return
        if need < 1:
            need = 1
        if expires_ms <= now_ms:
            return
        self.lock()
        for i in range(PROBE_WAYS):
            s = &self.slots[(lo + i) & mask]
            if not s.used:
                if empty == NULL:
                    empty = s
            elif s.hash_lo == lo and s.hash_hi == hi:
                target = s               # the key itself (or its 128-bit twin): replace it
                break
            elif s.expires_ms <= now_ms:
                if stale == NULL:
                    stale = s
            elif cold == NULL and not fg_load_u16_rlx(&s.referenced):
                cold = s
        if target == NULL:
            target = empty if empty != NULL else stale if stale != NULL else cold
            if target == NULL:
                target = &self.slots[lo & mask]
        fg_seq_write_begin(&target.seq)
        if target.used:
            if target.expires_ms <= now_ms:
                self.header.expired += 1
            elif target.hash_lo != lo or target.hash_hi != hi:
                self.header.evictions += 1
            self.drop(target)
        if self.header.free_blocks < need and not self.reclaim(need, target, now_ms):
            fg_seq_write_end(&target.seq)
            self.unlock()
            return
        # Take `need` blocks off the free chain; they are already linked in order.
        head = <int32_t>self.header.free_head
        tail = head
        for i in range(need - 1):
            tail = self.next_block[tail]
        self.header.free_head = self.next_block[tail]
        self.next_block[tail] = -1
        self.header.free_blocks -= need
        c.block = head
        c.off = 0
        c.steps = <int32_t>need
        walk(&c, self.next_block, self.blocks, self.header.n_blocks, NULL, k, NULL, klen)
        walk(&c, self.next_block, self.blocks, self.header.n_blocks, NULL, headers, NULL, hlen)
        walk(&c, self.next_block, self.blocks, self.header.n_blocks, NULL, body, NULL, blen)
        target.key_len = <uint32_t>klen
        target.headers_len = <uint32_t>hlen
        target.body_len = <uint32_t>blen
        target.status = status
        target.first_block = head
        target.n_blocks = <int32_t>need
        target.hash_lo = lo
        target.hash_hi = hi
        target.expires_ms = expires_ms
        target.referenced = 0
        target.used = 1
        self.header.entries += 1
        self.header.stores += 1
        fg_seq_write_end(&target.seq)
        self.unlock()

    cdef bint delete(self, bytes key):
        cdef const char* k = key
        cdef Py_ssize_t n = len(key)
        cdef uint64_t lo = fg_hash(k, n, self.seed_lo), hi = fg_hash(k, n, self.seed_hi)
        cdef int64_t mask = self.header.n_slots - 1
        cdef Slot* s
        cdef int i
        cdef bint found = False
        self.lock()
        for i in range(PROBE_WAYS):
            s = &self.slots[(lo + i) & mask]
            if s.used and s.hash_lo == lo and s.hash_hi == hi:
                fg_seq_write_begin(&s.seq)
                self.drop(s)
                fg_seq_write_end(&s.seq)
                found = True
                break
        self.unlock()
        return found

    # --- Python API (tests, control plane) ---

    def lookup(self, bytes key, now_ms=None):
        """get() for Python callers: None or (status, headers_block, body)."""
        return self.get(key, now_epoch_ms() if now_ms is None else now_ms)

    def store(self, bytes key, long long expires_ms, int status, bytes headers, bytes body):
        """put() for Python callers."""
        self.put(key, expires_ms, status, headers, body)

    def remove(self, bytes key):
        """Drop one key's entry; True if it was cached."""
        return self.delete(key)

    def flush(self, bytes prefix=b""):
        """Drop every entry whose key starts with prefix (b"" = all), e.g. one
        stage's namespace for FlushStageCache. Returns the entries dropped.
        Holds the writer lock for one pass over the index."""
        cdef const char* p = prefix
        cdef Py_ssize_t n = len(prefix)
        cdef int64_t i
        cdef long long dropped = 0
        cdef Slot* s
        cdef Cursor c
        self.lock()
        try:
            for i in range(self.header.n_slots):
                s = &self.slots[i]
                if not s.used or s.key_len < n:
                    continue
                c.block = s.first_block
                c.off = 0
                c.steps = s.n_blocks
                if n and walk(&c, self.next_block, self.blocks, self.header.n_blocks, NULL, NULL, p, n) != 0:
                    continue
                fg_seq_write_begin(&s.seq)
                self.drop(s)
                fg_seq_write_end(&s.seq)
                dropped += 1
        finally:
            self.unlock()
        return dropped

    def _hold_lock_for_test(self):
        """Take the writer lock and keep it: a test forks a child that calls
        this and exits, to prove the next writer robs a dead holder."""
        self.lock()

    def stats(self):
        """Counters since create(), summed over every process."""
        cdef CacheHeader* h = self.header
        return {
            "hits": fg_load_u64_rlx(&h.hits),
            "misses": fg_load_u64_rlx(&h.misses),
            "evictions": h.evictions,
            "expired": h.expired,
            "too_large": fg_load_u64_rlx(&h.too_large),
            "torn_reads": fg_load_u64_rlx(&h.torn_reads),
            "resets": h.resets,
            "stores": h.stores,
            "entries": h.entries,
            "bytes_used": (h.n_blocks - h.free_blocks) * BLOCK_BYTES,
            "memory_bytes": self.memory_bytes,
            "slots": h.n_slots,
        }


# ------------------------------------------------------------------ keys --

cdef inline void add_field(list out, bytes value):
    # Length-prefixed, so no value can forge a field boundary.
    out.append(b"%d:" % len(value))
    out.append(value)


def namespace_prefix(namespace_start):
    """The key prefix shared by every namespace that starts with namespace_start:
    b"api/prod/" -> the prefix that flushes stage prod of API api (FlushStageCache)."""
    start = namespace_start.encode() if isinstance(namespace_start, str) else bytes(namespace_start)
    return b"fgk2" + start


_SOURCES = {"querystring": PARAM_QUERYSTRING, "header": PARAM_HEADER, "path": PARAM_PATH}
_SOURCE_NAMES = {PARAM_QUERYSTRING: "querystring", PARAM_HEADER: "header", PARAM_PATH: "path"}


cdef class CacheKeySpec:

    def __init__(self, bint method_in_key=True, params=(), namespace=b""):
        """params: [(source, name)] with source "querystring", "header" or
        "path" -- or API Gateway's cacheKeyParameters strings
        "method.request.querystring.x" (see parse_cache_key_parameter)."""
        compiled = []
        for item in params:
            if isinstance(item, str):
                item = parse_cache_key_parameter(item)
            source, name = item
            if source not in _SOURCES:
                raise ValueError(f"cache key source must be querystring, header or path, got {source!r}")
            if not name:
                raise ValueError("cache key parameter needs a name")
            nb = name.encode() if isinstance(name, str) else bytes(name)
            compiled.append((_SOURCES[source], nb, nb.lower()))
        self.namespace = namespace.encode() if isinstance(namespace, str) else bytes(namespace)
        if b"\0" in self.namespace:
            raise ValueError("cache namespace must not contain NUL")
        self.method_in_key = method_in_key
        self.params = tuple(compiled)

    def __repr__(self):
        return (f"CacheKeySpec(method_in_key={self.method_in_key}, params="
                f"{[(_SOURCE_NAMES[s], n.decode()) for s, n, _ in self.params]}, namespace={self.namespace!r})")

    cpdef bytes key(self, bytes method, bytes path, bytes query, list headers, dict path_params=None):
        """The cache key of one request: the namespace, then method, path and
        each parameter's values, length-prefixed. Absent and empty parameters differ."""
        cdef list out = [b"fgk2", self.namespace, b"\0"]
        cdef int source
        cdef bytes name, lower, part, value
        cdef list values
        cdef Py_ssize_t eq
        add_field(out, method if self.method_in_key else b"")
        add_field(out, path)
        for source, name, lower in self.params:
            values = []
            if source == PARAM_QUERYSTRING:
                if query:
                    for part in query.split(b"&"):
                        eq = part.find(b"=")
                        if eq < 0:
                            if part == name:
                                values.append(b"")
                        elif part[:eq] == name:
                            values.append(part[eq + 1:])
            elif source == PARAM_HEADER:
                for hname, hvalue in headers:
                    if ascii_ieq(hname, lower):
                        values.append(hvalue)
            elif path_params is not None:
                value = path_params.get(name)
                if value is not None:
                    values.append(value)
            out.append(b"|%d" % source)
            add_field(out, name)
            out.append(b"#%d" % len(values))
            for value in values:
                add_field(out, value)
        return b"".join(out)


def parse_cache_key_parameter(str parameter):
    """API Gateway's cacheKeyParameters entry -> (source, name):
    "method.request.querystring.page" -> ("querystring", "page");
    "method.request.header.Accept" -> ("header", "Accept");
    "method.request.path.id" -> ("path", "id");
    "method.request.multivaluequerystring.x" / "multivalueheader.y" likewise."""
    parts = parameter.split(".", 3)
    if len(parts) != 4 or parts[0] != "method" or parts[1] != "request":
        raise ValueError(f"cache key parameter must be method.request.<source>.<name>, got {parameter!r}")
    source = {"multivaluequerystring": "querystring", "multivalueheader": "header"}.get(parts[2], parts[2])
    if source not in _SOURCES or not parts[3]:
        raise ValueError(f"cache key parameter source must be querystring, header or path: {parameter!r}")
    return source, parts[3]


# ---------------------------------------------------------------- policy --

cpdef bint wants_refresh(list headers):
    cdef bytes name, value, directive
    for name, value in headers:
        if not ascii_ieq(name, b"cache-control"):
            continue
        for directive in value.split(b","):
            directive = directive.strip().lower()
            if directive.startswith(b"max-age="):
                directive = directive[8:].strip(b'" \t')
                if directive and directive.isdigit() and int(directive) == 0:
                    return True
    return False


_STRATEGIES = {"FAIL_WITH_403": FAIL_WITH_403,
               "SUCCEED_WITH_RESPONSE_HEADER": SUCCEED_WITH_RESPONSE_HEADER,
               "SUCCEED_WITHOUT_RESPONSE_HEADER": SUCCEED_WITHOUT_RESPONSE_HEADER}


cdef class RouteCache:

    def __init__(self, CacheKeySpec spec, long long ttl_s=TTL_DEFAULT_S, methods=(b"GET", b"HEAD"),
                 bint require_authorization=True,
                 unauthorized_strategy="SUCCEED_WITH_RESPONSE_HEADER"):
        """One route's caching as API Gateway's method settings say:
        caching/ttlInSeconds (1..3600; 0 means off, so build no RouteCache),
        requireAuthorizationForCacheControl, unauthorizedCacheControlHeaderStrategy."""
        if not 0 < ttl_s <= TTL_MAX_S:
            raise ValueError(f"ttlInSeconds must be in 1..{TTL_MAX_S} (0 turns caching off), got {ttl_s}")
        if unauthorized_strategy not in _STRATEGIES:
            raise ValueError(f"unauthorizedCacheControlHeaderStrategy must be one of {sorted(_STRATEGIES)}")
        self.spec = spec
        self.ttl_ms = ttl_s * 1000
        self.methods = frozenset(m.encode() if isinstance(m, str) else bytes(m) for m in methods)
        self.require_authorization = require_authorization
        self.unauthorized_strategy = _STRATEGIES[unauthorized_strategy]

    cpdef int decide(self, bytes method, list headers, bint may_invalidate):
        if method not in self.methods:
            return CACHE_BYPASS
        if not wants_refresh(headers):
            return CACHE_LOOKUP
        if may_invalidate or not self.require_authorization:
            return CACHE_REFRESH
        if self.unauthorized_strategy == FAIL_WITH_403:
            return CACHE_FORBIDDEN
        if self.unauthorized_strategy == SUCCEED_WITH_RESPONSE_HEADER:
            return CACHE_LOOKUP_WARN
        return CACHE_LOOKUP
