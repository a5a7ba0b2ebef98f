# cython: language_level=3
"""Shared memory primitives, in one place: the atomics, seqlock steps, hashes and the
robust cross-process lock that the tables in shared memory (metrics, cache, throttle,
tail, usage) are built from. Declarations and inline code only: every module that
cimports this file compiles them in, so a call is an inlined instruction, not a call
across modules.

The tables live in one anonymous mapping shared by the supervisor's children. The
atomics below are lock-free on x86-64 and aarch64, so they are valid across processes.
Each name says its memory order: _rlx (relaxed: an independent tally, read whole),
_acq (acquire: what the writer published before it is visible after it), _rel
(release: everything written before it is visible to an _acq reader)."""

from libc.stdint cimport int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.errno cimport errno, ESRCH
from posix.signal cimport kill
from posix.unistd cimport getpid

cdef extern from "<sched.h>" nogil:
    int sched_yield()

cdef extern from *:
    """
    #include <string.h>
    static inline uint64_t fg_load_u64_rlx(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline uint64_t fg_load_u64_acq(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline int64_t fg_load_i64_rlx(int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline int64_t fg_load_i64_acq(int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline int32_t fg_load_i32_rlx(int32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline int32_t fg_load_i32_acq(int32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint16_t fg_load_u16_rlx(uint16_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
    static inline void fg_store_u16_rlx(uint16_t *p, uint16_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void fg_store_i64_rlx(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
    static inline void fg_store_i32_rel(int32_t *p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void fg_store_u64_rel(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline void fg_add_u64_rlx(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline void fg_add_i64_rlx(int64_t *p, int64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    /* the value before the add: a ticket */
    static inline uint64_t fg_fetch_add_u64_rlx(uint64_t *p, uint64_t v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
    static inline int fg_cas_i32_acq(int32_t *p, int32_t expected, int32_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
    }
    static inline int fg_cas_u64_acqrel(uint64_t *p, uint64_t expected, uint64_t desired) {
        return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
    /* on failure *expected receives the current value, ready for the next try */
    static inline int fg_cas_i64_acqrel(int64_t *p, int64_t *expected, int64_t desired) {
        return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
    }
    /* {key, state} changed together by one 128-bit CAS, so an eviction can never pair
       one key with another's state. x86-64 needs cmpxchg16b, which every 64-bit x86 CPU
       since 2006 has; the pragma enables it for this helper only (no global -mcx16).
       aarch64 gets an ldaxp/stlxp loop. __sync builtins are full barriers. */
    #if defined(__x86_64__)
    #pragma GCC push_options
    #pragma GCC target("cx16")
    #endif
    static inline int fg_cas_pair(void *slot, uint64_t old_key, int64_t old_state,
                                  uint64_t new_key, int64_t new_state) {
        unsigned __int128 o = ((unsigned __int128)(uint64_t)old_state << 64) | old_key;
        unsigned __int128 n = ((unsigned __int128)(uint64_t)new_state << 64) | new_key;
        return __sync_bool_compare_and_swap((unsigned __int128 *)slot, o, n);
    }
    #if defined(__x86_64__)
    #pragma GCC pop_options
    #endif
    static inline void fg_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }
    static inline void fg_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

    /* Seqlock (Linux's write_seqcount_begin + smp_wmb / read_seqcount + smp_rmb): the
       writer's odd store is followed by a release fence, so no data store becomes
       visible before it; the reader's acquire fence before its second load keeps every
       data load before it. */
    static inline uint32_t fg_seq_load(uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline uint32_t fg_seq_recheck(uint32_t *p) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    static inline void fg_seq_write_begin(uint32_t *p) {
        uint32_t v = __atomic_load_n(p, __ATOMIC_RELAXED);
        /* odd already: a dead writer's slot, being reset; stay odd */
        __atomic_store_n(p, (v & 1) ? v + 2 : v + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
    static inline void fg_seq_write_end(uint32_t *p) {
        __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + 1, __ATOMIC_RELEASE);
    }

    /* murmur3's finaliser (a bijection that spreads every input bit) and a seeded 64-bit
       hash of short key bytes. Not cryptographic: full keys are compared anyway, the
       secret seeds only keep clients from aiming many keys at one probe window. */
    static inline uint64_t fg_mix64(uint64_t x) {
        x ^= x >> 33; x *= 0xff51afd7ed558ccdULL;
        x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
        x ^= x >> 33; return x;
    }
    static inline uint64_t fg_hash(const char *p, size_t n, uint64_t seed) {
        uint64_t h = seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ULL), w;
        while (n >= 8) { memcpy(&w, p, 8); h = fg_mix64(h ^ w) + 0x9E3779B97F4A7C15ULL; p += 8; n -= 8; }
        w = 0; memcpy(&w, p, n);
        return fg_mix64(h ^ w ^ ((uint64_t)n << 56));
    }
    """
    uint64_t fg_load_u64_rlx(uint64_t* p) nogil
    uint64_t fg_load_u64_acq(uint64_t* p) nogil
    int64_t fg_load_i64_rlx(int64_t* p) nogil
    int64_t fg_load_i64_acq(int64_t* p) nogil
    int32_t fg_load_i32_rlx(int32_t* p) nogil
    int32_t fg_load_i32_acq(int32_t* p) nogil
    uint16_t fg_load_u16_rlx(uint16_t* p) nogil
    void fg_store_u16_rlx(uint16_t* p, uint16_t v) nogil
    void fg_store_i64_rlx(int64_t* p, int64_t v) nogil
    void fg_store_i32_rel(int32_t* p, int32_t v) nogil
    void fg_store_u64_rel(uint64_t* p, uint64_t v) nogil
    void fg_add_u64_rlx(uint64_t* p, uint64_t v) nogil
    void fg_add_i64_rlx(int64_t* p, int64_t v) nogil
    uint64_t fg_fetch_add_u64_rlx(uint64_t* p, uint64_t v) nogil
    int fg_cas_i32_acq(int32_t* p, int32_t expected, int32_t desired) nogil
    int fg_cas_u64_acqrel(uint64_t* p, uint64_t expected, uint64_t desired) nogil
    int fg_cas_i64_acqrel(int64_t* p, int64_t* expected, int64_t desired) nogil
    int fg_cas_pair(void* slot, uint64_t old_key, int64_t old_state, uint64_t new_key, int64_t new_state) nogil
    void fg_fence_release() nogil
    void fg_fence_acquire() nogil
    uint32_t fg_seq_load(uint32_t* p) nogil
    uint32_t fg_seq_recheck(uint32_t* p) nogil
    void fg_seq_write_begin(uint32_t* p) nogil
    void fg_seq_write_end(uint32_t* p) nogil
    uint64_t fg_mix64(uint64_t x) nogil
    uint64_t fg_hash(const char* p, size_t n, uint64_t seed) nogil


cdef enum:
    LOCK_SPINS_BEFORE_CHECK = 1000     # sched_yield()s before checking the lock holder is alive


cdef inline bint pid_lock(int32_t* lock) noexcept nogil:
    """Take a lock word in shared memory (0 = free, else the holder's pid). A process
    killed inside its critical section would wedge every later writer, so a holder that
    no longer exists is robbed. True when the lock was robbed: the caller may have to
    repair what the dead holder left half-written."""
    cdef int32_t me = getpid(), holder
    cdef int spins = 0
    while not fg_cas_i32_acq(lock, 0, me):
        spins += 1
        if spins >= LOCK_SPINS_BEFORE_CHECK:
            spins = 0
            holder = fg_load_i32_acq(lock)
            if holder != 0 and kill(holder, 0) != 0 and errno == ESRCH and fg_cas_i32_acq(lock, holder, me):
                return True
        sched_yield()
    return False


cdef inline void pid_unlock(int32_t* lock) noexcept nogil:
    fg_store_i32_rel(lock, 0)
