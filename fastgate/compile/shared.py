"""The shared-memory tables every worker's snapshot points into: token buckets, quota
counters, the response cache and API key usage counters. The supervisor creates each
one before it forks, so the mapping is shared by all its children; a process that never
forked (a test, `fastgate check`) gets its own on first use where that makes sense."""

from __future__ import annotations

import mmap
import secrets
from typing import Iterable

from fastgate._core.usage import (COUNTER_WORDS, ENTRY_WORDS, HEADER_WORDS, IDENT_MAX, MAGIC,
                                  SLAB_HEADER_WORDS, UsageCounters)

KEY_MAX = 32                     # bytes of key id (AWS's ids are 10)
SEP = "\x1f"                     # between key id, api id and stage in an entry's ident
# word offsets of the counters inside an entry, in COUNTERS order (fastgate/_core/usage.pxd)
REQUESTS, THROTTLED, STATUS_4XX, STATUS_5XX, BYTES_IN, BYTES_OUT, QUOTA_USED = COUNTER_WORDS
COUNTERS = ("requests", "throttled", "status_4xx", "status_5xx", "bytes_in", "bytes_out",
            "quota_used")
_ZEROS = (0,) * len(COUNTERS)

def _add(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b))


def _sub(a: tuple, b: tuple) -> tuple:
    return tuple(x - y for x, y in zip(a, b))


_BUCKETS = None   # the host's shared token buckets (fastgate._core.throttle.BucketTable)


def shared_buckets():
    """The bucket table every worker takes from. The supervisor calls this before it forks
    (so the mapping is shared); a process that never forked gets its own on first use."""
    global _BUCKETS
    if _BUCKETS is None:
        from fastgate._core.throttle import BucketTable
        _BUCKETS = BucketTable.create(STATIC_BUCKETS, DYNAMIC_BUCKETS)
    return _BUCKETS


_CACHE = None     # the response cache shared by the host's workers (fastgate._core.cache.SharedCache)
_QUOTAS = None    # usage-plan quotas (fastgate._core.throttle.QuotaTable)
_USAGE = None     # API key metering (UsageRecorder, below)


def shared_cache(memory_mb: int | None = None):
    """The response cache; the supervisor creates it before fork (memory_mb from the
    config). None until then: caching needs the supervisor's shared mapping."""
    global _CACHE
    if _CACHE is None and memory_mb:
        from fastgate._core.cache import SharedCache
        _CACHE = SharedCache.create(memory_mb << 20, CACHE_ENTRY_MAX)
    return _CACHE


CACHE_ENTRY_MAX = 1 << 20  # bytes: a larger response is not cached


def shared_quotas():
    """The quota counters every worker counts in; created before fork like the buckets."""
    global _QUOTAS
    if _QUOTAS is None:
        from fastgate._core.throttle import QuotaTable
        _QUOTAS = QuotaTable.create(QUOTA_SLOTS)
    return _QUOTAS


def shared_usage(workers: int | None = None):
    """The usage counters of API keys; the supervisor creates them (with its worker
    count) before fork, the admin process flushes them to SQLite. None elsewhere."""
    global _USAGE
    if _USAGE is None and workers is not None:
        _USAGE = UsageRecorder.create(workers=workers, capacity=USAGE_KEYS)
    return _USAGE


QUOTA_SLOTS = 65536        # (usage plan, key) quota counters, twice the pairs expected (16 B each)
USAGE_KEYS = 16384         # API keys metered per worker (64 B each)
STATIC_BUCKETS = 4096      # named buckets: routes, stage methods, gateway (64 B each)
DYNAMIC_BUCKETS = 65536    # per client IP / header value buckets (16 B each)


def limiter(name: str, tc, bucket: str):
    """A compiled Limiter of a ThrottleConfig."""
    from fastgate._core.throttle import Limiter, ThrottleSettings
    kind, arg = tc.key_kind()
    return Limiter(name, ThrottleSettings(tc.rate, tc.burst), shared_buckets(), bucket, kind, arg)


class UsageRecorder:
    """Per (key, API, stage) counters in one anonymous shared mapping: `workers` slabs
    of `capacity` entries. Create it in the supervisor before forking
    (`UsageRecorder.create`)."""

    def __init__(self, mm: mmap.mmap, workers: int, capacity: int, generation: str):
        self._mm = mm
        self._q = memoryview(mm).cast("Q")      # the whole mapping as uint64 words
        # the workers' side: the LOG phase records through its C pointer (respond.pyx)
        self.counters = UsageCounters(mm)
        self.workers = workers
        self.capacity = capacity
        self.generation = generation
        self._slab_words = SLAB_HEADER_WORDS + capacity * ENTRY_WORDS

    @classmethod
    def create(cls, workers: int, capacity: int = 16384) -> "UsageRecorder":
        """A zeroed table for `workers` worker ids (0..workers-1) and `capacity` distinct
        (key, API stage) pairs per worker. Address space: 192 B per entry (3 MiB per
        worker by default); pages are touched only as entries are claimed."""
        if workers < 1 or capacity < 1:
            raise ValueError("workers and capacity must be >= 1")
        size = 8 * (HEADER_WORDS + workers * (SLAB_HEADER_WORDS + capacity * ENTRY_WORDS))
        mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        gen = secrets.token_bytes(16)
        rec = cls(mm, workers, capacity, gen.hex())
        q = rec._q
        q[0], q[1], q[2] = MAGIC, workers, capacity
        q[3], q[4] = int.from_bytes(gen[:8], "little"), int.from_bytes(gen[8:], "little")
        return rec

    def _slab(self, worker: int) -> int:
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker id {worker} outside 0..{self.workers - 1}")
        return HEADER_WORDS + worker * self._slab_words

    def slot(self, worker: int, key_id: str, api_id: str = "", stage: str = "") -> int:
        """The entry of (key_id, api_id, stage) in this worker's slab, claimed if new; a
        negative slot when the slab is full (record() then only counts the request in
        stats()["dropped"]). Call it once per key and stage per process, in the worker
        that will record."""
        if not 0 < len(key_id.encode()) <= KEY_MAX:
            raise ValueError(f"key id must be 1..{KEY_MAX} bytes")
        raw = SEP.join((key_id, api_id, stage)).encode()
        if len(raw) > IDENT_MAX:
            raise ValueError(f"key id, API id and stage together must fit {IDENT_MAX} bytes")
        base = self._slab(worker)
        q, used = self._q, self._q[base]
        first = base + SLAB_HEADER_WORDS
        for i in range(used):
            e = first + i * ENTRY_WORDS
            if q[e] == len(raw) and self._ident_at(e) == raw:
                return e
        if used >= self.capacity:
            return -(base + 2)      # record() then counts into this slab's `dropped` word
        e = first + used * ENTRY_WORDS
        # ident bytes, then their length, then the count: a reader that sees the new count
        # sees a complete entry (x86-64 keeps stores in order; on weaker orders a reader
        # that still sees length 0 skips the entry until the next flush)
        off = e * 8 + 8
        self._mm[off:off + IDENT_MAX] = raw.ljust(IDENT_MAX, b"\0")
        q[e] = len(raw)
        q[base] = used + 1
        return e

    def _ident_at(self, e: int) -> bytes:
        off = e * 8 + 8
        return self._mm[off:off + self._q[e]]

    def record(self, slot: int, status: int, throttled: bool, quota_used: bool,
               bytes_in: int, bytes_out: int) -> None:
        """One finished request of the slot's key on its stage: the status sent, whether
        the gateway throttled it (a 429 of a throttle or the quota) and whether it
        counted against the plan's quota. Only the worker that owns the slot calls this;
        the protocol calls `counters.record` from C instead."""
        self.counters.record_py(slot, status, throttled, quota_used, bytes_in, bytes_out)

    def entries(self) -> Iterable[tuple[int, int, str, tuple[int, ...]]]:
        """(worker, slot, ident, counters in COUNTERS order) of every claimed entry,
        cumulative since the mapping was created. ident: "key_id US api_id US stage"."""
        q = self._q
        for w in range(self.workers):
            base = self._slab(w)
            first = base + SLAB_HEADER_WORDS
            for i in range(min(q[base], self.capacity)):
                e = first + i * ENTRY_WORDS
                n = q[e]
                if not 0 < n <= IDENT_MAX:
                    continue        # being claimed right now: next flush
                yield (w, e, self._ident_at(e).decode(errors="replace"),
                       tuple(q[e + REQUESTS:e + QUOTA_USED + 1]))

    def stats(self) -> dict:
        """Entries in use and requests dropped because a slab was full, over all workers."""
        used = dropped = 0
        for w in range(self.workers):
            base = self._slab(w)
            used += self._q[base]
            dropped += self._q[base + 1]
        return {"entries": used, "capacity": self.capacity * self.workers, "dropped": dropped}

    def totals(self) -> dict[tuple[str, str, str], tuple[int, ...]]:
        """(key id, api id, stage) -> counters (COUNTERS order) summed over the workers."""
        out: dict[tuple[str, str, str], tuple[int, ...]] = {}
        for _, _, ident, counts in self.entries():
            ks = tuple(ident.split(SEP))
            out[ks] = _add(out.get(ks, _ZEROS), counts)
        return out
