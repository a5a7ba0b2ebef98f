# The response cache shared by every worker of one host, and the per-route
# objects that decide what is cached under which key.
#
# The supervisor calls SharedCache.create() BEFORE it forks the workers: the
# whole cache is one anonymous MAP_SHARED mapping, so an entry one worker
# stores is a hit for every other worker. Across hosts, fastgate.phases.cache_redis
# offers the same get/put over Redis.
#
# ----------------------------------------------------------------- layout --
#
#   CacheHeader | Slot[n_slots] | next[n_blocks] (int32) | Block[n_blocks]
#
# Data lives in fixed BLOCK_BYTES blocks. An entry is the byte string
#   key | header block | body
# spread over a chain of blocks linked by next[] (-1 ends a chain); free
# blocks form one more chain from header.free_head. Fixed blocks mean no
# fragmentation and no compaction: a memory cap of M bytes holds every mix of
# entry sizes up to M // BLOCK_BYTES blocks (waste: half a block per entry).
#
# A key's slot is one of PROBE_WAYS consecutive slots from hash & mask (a
# set-associative index: no tombstones, a lookup reads at most PROBE_WAYS
# 64-byte slots). Each slot holds the 128-bit hash, the lengths, the expiry
# and the first block; the full key bytes sit at the head of the data, and a
# reader compares them, so two keys with one hash can never serve each
# other's entry.
#
# ----------------------------------------------------------- concurrency --
# Writers (put, eviction) serialise on one process-shared spinlock in the
# header (a CAS on the holder's pid, as in metrics.pyx). The critical section
# is a few slot updates plus one memcpy of the entry (<= max_entry_bytes),
# no syscall, no Python object. A holder that dies inside it is robbed by the
# next writer, which then CLEARS the whole cache (a cache may lose entries;
# it must not keep a half-linked free list).
#
# Readers take no lock: each slot has a seqlock word `seq`. A writer makes it
# odd before it touches the slot or the slot's blocks and even again after
# (seq += 1 twice). A reader loads seq (acquire), copies the metadata and
# the data, then (acquire fence) loads seq again: a changed or odd value
# means a writer was there, and the copy is thrown away (retried
# READ_RETRIES times, then a miss). Blocks are only freed or reused after
# their owner slot's seq went odd, so any byte a reader copied from a
# recycled block is caught by the second load. While racing, a reader may
# follow stale next[] links: every link is bounds-checked and a chain walk is
# bounded by the entry's block count, so it stays inside the mapping.
#
# -------------------------------------------------------------- eviction --
# TTL: an entry past expires_ms is a miss and the first slot a writer takes.
# Memory cap: when a put needs more free blocks than there are, a CLOCK hand
# sweeps the slots: expired entries go at once; an entry read since the hand
# last passed (referenced = 1, set by get without a lock) gets a second
# chance; an unreferenced one is evicted. That approximates LRU: an entry
# read more often than the hand comes round is never evicted. New entries
# start unreferenced (a hot key's neighbours go before it does).
# Index cap: when all PROBE_WAYS slots of a key's set hold live entries, the
# put evicts one in the set: expired first, then unreferenced, then any.
# Entry cap: a put whose key + headers + body exceeds max_entry_bytes is not
# stored (counted in too_large). API Gateway's cap is 1048576 bytes.

from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t


cdef enum:
    CACHE_MAGIC = 0x46474331          # "FGC1": layout version of the mapping
    BLOCK_BYTES = 512                 # bytes of entry data per block
    PROBE_WAYS = 8                    # slots per set: a key lives in one of them
    READ_RETRIES = 4                  # seqlock retries of a racing read before it is a miss
    MAX_ENTRY_DEFAULT = 1048576       # bytes: API Gateway's largest cacheable response


ctypedef struct CacheHeader:
    uint32_t magic
    int32_t lock                      # 0 = free, else pid of the writer holding it
    int64_t n_slots                   # a power of two
    int64_t n_blocks
    int64_t max_entry_bytes           # key + headers + body
    int64_t free_head                 # first free block, -1 = none
    int64_t free_blocks
    int64_t clock_hand                # next slot the eviction sweep looks at
    int64_t entries                   # live slots
    int64_t _pad[8]                   # stats on their own cache line: readers write them
    uint64_t hits
    uint64_t misses
    uint64_t evictions                # live entries dropped for memory or a full set
    uint64_t expired                  # expired entries dropped (reclaimed or replaced)
    uint64_t too_large                # puts over max_entry_bytes, not stored
    uint64_t torn_reads               # reads that saw a writer and retried
    uint64_t resets                   # times a dead writer's lock was robbed (cache cleared)
    uint64_t stores                   # successful puts


ctypedef struct Slot:
    # 64 bytes, one cache line. Only writers (under the lock) change it; seq
    # brackets every change (odd while changing).
    uint32_t seq                      # seqlock word
    uint16_t used                     # 1 = holds an entry
    uint16_t referenced               # CLOCK bit: 1 = read since the hand last passed
    uint32_t key_len
    uint32_t headers_len
    uint32_t body_len
    int32_t status                    # HTTP status of the cached response
    int32_t first_block               # head of the data chain
    int32_t n_blocks                  # blocks in the chain
    uint64_t hash_lo                  # 128-bit hash of the key
    uint64_t hash_hi
    int64_t expires_ms                # epoch ms; the entry is a miss from then on
    int64_t _pad


cdef class SharedCache:
    cdef CacheHeader* header          # start of the mapping
    cdef Slot* slots
    cdef int32_t* next_block          # chain links, one per block
    cdef char* blocks                 # n_blocks * BLOCK_BYTES
    cdef size_t map_size              # bytes, for munmap
    cdef uint64_t seed_lo             # hash seeds, random per cache, inherited over fork
    cdef uint64_t seed_hi
    cdef readonly long long memory_bytes
    cdef readonly long long max_entry_bytes

    # hot path (no lock). get: None or (status, headers_block, body).
    cdef object get(self, bytes key, long long now_ms)
    cdef void put(self, bytes key, long long expires_ms, int status, bytes headers, bytes body)
    cdef bint delete(self, bytes key)             # drop the key's entry; True if there was one

    # internals, all called with the writer lock held (except read_slot)
    cdef object read_slot(self, Slot* s, const char* key, Py_ssize_t key_len,
                          uint64_t lo, uint64_t hi, long long now_ms)
    cdef void lock(self) noexcept nogil
    cdef void unlock(self) noexcept nogil
    cdef void reset(self) noexcept nogil          # every slot empty, every block free
    cdef void drop(self, Slot* s) noexcept nogil  # free an entry's blocks; seq must be odd
    cdef bint reclaim(self, int64_t need, Slot* keep, long long now_ms) noexcept nogil
                                                  # CLOCK sweep until `need` blocks are free


# ------------------------------------------------------------------ keys --
# What a route's cache key is made of, compiled once per route by the
# control plane. API Gateway keys a method's cache on the method, the
# resource and the integration's cacheKeyParameters
# (method.request.querystring.x, method.request.header.y,
# method.request.path.z); fastgate keys on the request path itself (so
# /pets/1 and /pets/2 never share an entry even without path parameters in
# cacheKeyParameters, a common API Gateway surprise) plus the same
# parameters. The namespace (api id, stage, route) keeps stages and routes
# apart in one shared cache. It leads the key raw, NUL-terminated (it comes
# from the control plane, never from a request), so every key of a stage
# starts with namespace_prefix(b"api/stage/"): FlushStageCache is one prefix
# flush, locally and in Redis.

cpdef enum ParamSource:
    PARAM_QUERYSTRING = 0             # every value of ?name=, raw (percent-encoding kept), in order
    PARAM_HEADER = 1                  # every value of the header, name case-insensitive, in order
    PARAM_PATH = 2                    # a path parameter {name} from ctx.path_params


cdef class CacheKeySpec:
    cdef readonly bytes namespace     # b"api/stage/GET /pets/{id}"
    cdef readonly bint method_in_key
    cdef readonly tuple params        # ((ParamSource, name bytes, lowercase name bytes), ...)

    cpdef bytes key(self, bytes method, bytes path, bytes query, list headers, dict path_params=*)


# --------------------------------------------------------------- policy --
# Cache-Control: max-age=0 on a request asks for a fresh response (the
# integration is called and its answer replaces the entry). API Gateway
# honours it only for callers allowed execute-api:InvalidateCache when the
# method setting requireAuthorizationForCacheControl is on; other callers get
# unauthorizedCacheControlHeaderStrategy.

cpdef enum UnauthorizedStrategy:
    FAIL_WITH_403 = 0                 # answer 403, the integration is not called
    SUCCEED_WITH_RESPONSE_HEADER = 1  # ignore the header (serve the cache) and add WARNING_HEADER
    SUCCEED_WITHOUT_RESPONSE_HEADER = 2   # ignore the header silently

cpdef enum CacheDecision:
    CACHE_LOOKUP = 0                  # get(); a hit answers, a miss calls the integration then put()
    CACHE_REFRESH = 1                 # skip get(); call the integration, then put() its answer
    CACHE_FORBIDDEN = 2               # answer 403 (FAIL_WITH_403)
    CACHE_LOOKUP_WARN = 3             # as CACHE_LOOKUP, and add WARNING_HEADER to the response
    CACHE_BYPASS = 4                  # method not cached: no get(), no put()


cdef class RouteCache:
    # One route's cache settings, as methodSettings + the integration compile
    # to (immutable). ttl_ms > 0 (TTL 0 means caching off: no RouteCache).
    cdef readonly CacheKeySpec spec
    cdef readonly long long ttl_ms
    cdef readonly frozenset methods           # methods cached (b"GET", b"HEAD" by default)
    cdef readonly bint require_authorization  # requireAuthorizationForCacheControl
    cdef readonly int unauthorized_strategy   # an UnauthorizedStrategy

    cpdef int decide(self, bytes method, list headers, bint may_invalidate)
                                              # a CacheDecision; may_invalidate: the caller is
                                              # allowed execute-api:InvalidateCache


cpdef bint wants_refresh(list headers)        # Cache-Control has max-age=0 (RFC 9111 s5.2.1.1)
