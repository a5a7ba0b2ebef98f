"""API keys and usage plans shared by every host of one Redis.

Each host keeps its control-plane state in its own SQLite (fastgate.control.store); with
`redis:` in the config, the admin process of every host also runs a `KeySync` that
makes the `apikey`, `usageplan` and `usageplankey` documents the same everywhere:

    host A control API ── commit ──▶ A's SQLite ──▶ dirty set ──▶ PUSH script ──▶ Redis
                                                                   (docs hash, version+1,
                                                                    PUBLISH version)
    host B KeySync ◀── pub/sub message, or a version poll every sync_interval_ms
           └── reads the docs hash, writes the differences into B's SQLite, then asks
               B's supervisor to reload (SIGHUP): B's workers get the new KeyTable the
               way a change made through B's own control API reaches them.

Redis layout (prefix from the config):
    {prefix}:keys:docs      hash "kind/scope/id" -> JSON document
    {prefix}:keys:version   counter, +1 per push
    {prefix}:keys:epoch     random token of this copy of the data set
    {prefix}:keys:changed   pub/sub channel; the message is the new version

Key values never leave a host: documents carry `_hash` (SHA-256 of the value, what the
data plane matches) and never `_sealed` (the value under the host's own AES key, for
includeValue). A host keeps the `_sealed` it has for a key; on other hosts includeValue
answers without the value.

Each local document carries `_synced`, the digest of its content as last exchanged
with Redis (never sent): a document that no longer matches it changed here and is
pushed; one without it was never exchanged (the CLI, or before `redis:`) and is pushed;
a synced one that Redis lacks was deleted elsewhere. So nothing depends on memory that
an admin restart loses.

Failures. Redis unreachable: the host serves the key table it last built (it is in its
SQLite, so a restart serves it too), logs once, and retries every interval; its own
changes are pushed when Redis answers. Redis restarted empty (the epoch is gone): the
first host to notice seeds Redis with its documents (one atomic script, so only one
host seeds), the others then take that set and push what they changed meanwhile. A
message missed while disconnected is covered by the version poll.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from typing import Callable

import orjson

SHARED_KINDS = ("apikey", "usageplan", "usageplankey")
# never written to Redis: the host's sealed copy of a key value, and "_synced", the digest
# of the document as last exchanged with Redis. A document whose content no longer has
# that digest was changed here and not pushed yet (even across an admin restart); one
# without it was never exchanged (made by `fastgate keys`, or before `redis:` was set).
PRIVATE_FIELDS = ("_sealed", "_synced")

# KEYS docs, version, epoch; ARGV[1] channel, then field, doc pairs ("" doc = delete).
# Returns the new version, or -1 when the data set is gone (Redis restarted empty): the
# caller seeds first, then pushes again.
PUSH_LUA = """
if redis.call('EXISTS', KEYS[3]) == 0 then return -1 end
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i])
  else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], v)
return v
"""

# KEYS docs, version, epoch; ARGV[1] channel, ARGV[2] new epoch, then field, doc pairs.
# Only when there is no data set: two hosts seeding at once, one wins. Returns 1 or 0.
SEED_LUA = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('SET', KEYS[3], ARGV[2])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], v)
return 1
"""


def field_of(kind: str, scope: str, id: str) -> str:
    return f"{kind}/{scope}/{id}"


def public_doc(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in PRIVATE_FIELDS}


def content_digest(doc: dict) -> str:
    import hashlib
    return hashlib.sha256(orjson.dumps(public_doc(doc), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def local_docs(state) -> dict[str, dict]:
    """field -> document of every shared kind in a State."""
    out = {}
    for kind in SHARED_KINDS:
        for scope, docs in (state.extra.get(kind) or {}).items():
            for id, doc in docs.items():
                out[field_of(kind, scope, id)] = doc
    return out


class KeySync:
    """One host's replication of keys and usage plans through Redis (see the module doc).

    `model` is the control API's fastgate.control.model.Model and `executor` the one thread its
    operations run on: local reads and writes go through that thread, so they never
    interleave with an operation. `on_change()` asks for a reload (the admin's SIGHUP
    to the supervisor); `log(msg)` reports state changes, once each."""

    def __init__(self, model, executor, *, url: str, prefix: str = "fastgate",
                 interval_ms: int = 500, timeout_ms: int = 1000,
                 on_change: Callable[[], None], log: Callable[[str], None]):
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        self.model = model
        self.executor = executor
        self.url = url
        self.interval_s = interval_ms / 1000
        self.on_change = on_change
        self.log = log
        timeout_s = timeout_ms / 1000
        self.redis = aioredis.Redis.from_url(url, socket_timeout=timeout_s,
                                             socket_connect_timeout=timeout_s,
                                             retry=Retry(NoBackoff(), 0))
        self.keys = (f"{prefix}:keys:docs", f"{prefix}:keys:version", f"{prefix}:keys:epoch")
        self.channel = f"{prefix}:keys:changed"
        self._push = self.redis.register_script(PUSH_LUA)
        self._seed = self.redis.register_script(SEED_LUA)
        # field -> generation of the last local commit touching it, not yet pushed.
        # Written on the executor thread (Model.on_commit), read on the loop: a lock.
        self._dirty: dict[str, int] = {}
        self._generation = 0
        self._lock = threading.Lock()
        self.applied: tuple[bytes | None, int] | None = None   # (epoch, version) in SQLite
        self.local_applied: int | None = None                  # the store's version after it
        self.down = False
        self.pushes = self.applies = 0      # counters for tests and /metrics-like checks
        self._kick: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        model.on_commit = self.note_writes

    # ---- the control API's commits (executor thread)

    def note_writes(self, writes) -> None:
        with self._lock:
            for kind, scope, id, _ in writes:
                if kind in SHARED_KINDS:
                    self._generation += 1
                    self._dirty[field_of(kind, scope, id)] = self._generation
            touched = bool(self._dirty)
        if touched and self._loop is not None:
            self._loop.call_soon_threadsafe(self._kick.set)

    # ---- life cycle (event loop)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._kick = asyncio.Event()
        self._kick.set()                     # a first round at once
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._listen())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    async def _run(self) -> None:
        from redis.exceptions import RedisError
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._kick.clear()
            try:
                await self.round()
            except (RedisError, OSError) as e:
                if not self.down:
                    self.log(f"key sync: Redis {self.url} unreachable ({e}); serving the last "
                             "key table, retrying")
                self.down = True
                continue
            except Exception as e:      # a bug here must not stop the sync for good
                self.log(f"key sync: round failed: {e!r}")
                continue
            if self.down:
                self.log(f"key sync: Redis {self.url} reachable again")
                self.down = False

    async def _listen(self) -> None:
        """Pub/sub wakes the sync loop at once; the version poll covers what it misses."""
        from redis.exceptions import RedisError
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if msg is not None:
                        self._kick.set()
            except (RedisError, OSError):
                await asyncio.sleep(self.interval_s)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    # ---- one round: seed if needed, push what changed here, take what changed elsewhere

    async def round(self) -> None:
        epoch, version = await self.redis.mget(self.keys[2], self.keys[1])
        if epoch is None:
            await self._seed_from_local()
            epoch, version = await self.redis.mget(self.keys[2], self.keys[1])
        if await self._push_dirty():
            epoch, version = await self.redis.mget(self.keys[2], self.keys[1])
        current = (epoch, int(version or 0))
        loop = asyncio.get_running_loop()
        # a local write that was no control API call (`fastgate keys create`) shows here
        local_version = await loop.run_in_executor(self.executor, self.model.store.version)
        if current != self.applied or local_version != self.local_applied:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys[2]).get(self.keys[1]).hgetall(self.keys[0])
                epoch, version, docs = await pipe.execute()
            remote = {f.decode(): orjson.loads(d) for f, d in docs.items()}
            changed, self.local_applied = await loop.run_in_executor(self.executor, self._apply, remote)
            self.applied = (epoch, int(version or 0))
            if self._dirty and self._kick is not None:
                self._kick.set()         # documents only this host has: pushed next round
            if changed:
                self.applies += 1
                self.on_change()

    async def _seed_from_local(self) -> None:
        loop = asyncio.get_running_loop()
        docs = await loop.run_in_executor(self.executor, lambda: local_docs(self.model.fresh()))
        args = [self.channel, secrets.token_hex(8)]
        for f, doc in sorted(docs.items()):
            args += [f, orjson.dumps(public_doc(doc))]
        if await self._seed(keys=self.keys, args=args):
            self.log(f"key sync: seeded Redis {self.url} with this host's {len(docs)} documents")

    async def _push_dirty(self) -> bool:
        with self._lock:
            dirty = dict(self._dirty)
        if not dirty:
            return False
        loop = asyncio.get_running_loop()
        docs = await loop.run_in_executor(self.executor, lambda: local_docs(self.model.fresh()))
        args = [self.channel]
        for f in sorted(dirty):
            args += [f, orjson.dumps(public_doc(docs[f])) if f in docs else b""]
        version = await self._push(keys=self.keys, args=args)
        if version == -1:
            await self._seed_from_local()   # Redis lost the set: ours (with these) is it now
        with self._lock:
            for f, gen in dirty.items():
                if self._dirty.get(f) == gen:     # not committed again meanwhile
                    del self._dirty[f]
        self.pushes += 1
        return True

    def _apply(self, remote: dict[str, dict]) -> tuple[bool, int]:
        """Make this host's shared documents agree with Redis (executor thread). `changed`:
        a document the data plane reads changed (the caller reloads).

        Per field: only in Redis -> taken; in both and equal -> marked synced; different ->
        Redis's wins unless ours changed since it was last synced (then ours is pushed);
        only here -> deleted if it had been synced (deleted elsewhere), else pushed. Fields
        with a commit waiting in the dirty set keep theirs."""
        state = self.model.fresh()
        local = local_docs(state)
        with self._lock:
            dirty = set(self._dirty)
        writes, to_push, changed = [], [], False
        for f in sorted(set(local) | set(remote)):
            if f in dirty:
                continue
            mine, theirs = local.get(f), remote.get(f)
            unsynced = mine is not None and mine.get("_synced") != content_digest(mine)
            if theirs is None:
                if unsynced:
                    to_push.append(f)
                else:
                    writes.append((f, None))
                    changed = True
            elif mine is not None and public_doc(mine) == theirs:
                if unsynced:
                    writes.append((f, {**mine, "_synced": content_digest(theirs)}))
            elif mine is not None and unsynced and "_synced" in mine:
                to_push.append(f)        # changed here since the last exchange: ours goes out
            else:
                doc = dict(theirs)
                if mine is not None and "_sealed" in mine:
                    doc["_sealed"] = mine["_sealed"]    # a key's value never changes
                doc["_synced"] = content_digest(theirs)
                writes.append((f, doc))
                changed = True
        if to_push:
            with self._lock:
                for f in to_push:
                    self._generation += 1
                    self._dirty.setdefault(f, self._generation)
        if writes:
            with self.model.store.transaction() as txn:
                for f, doc in writes:
                    kind, scope, id = f.split("/", 2)
                    if doc is None:
                        txn.delete(kind, scope, id)
                    else:
                        txn.put(kind, scope, id, doc)
            self.model.fresh()
        return changed, self.model.store.version()
