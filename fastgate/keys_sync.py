"""API keys and usage plans shared by every host of one Redis.

Each host keeps its control-plane state in its own SQLite (fastgate.store); with
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

Failures. Redis unreachable: the host serves the key table it last built (it is in its
SQLite, so a restart serves it too), logs once, and retries every interval; its own
changes wait in the dirty set and are pushed when Redis answers. Redis restarted empty
(the epoch is gone): the first host to notice seeds Redis with its documents (one
atomic script, so only one host seeds), the others then take that set. A message
missed while disconnected is covered by the version poll.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from typing import Callable

import orjson

SHARED_KINDS = ("apikey", "usageplan", "usageplankey")
PRIVATE_FIELDS = ("_sealed",)        # never written to Redis

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

    `model` is the control API's fastgate.model.Model and `executor` the one thread its
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
        if current != self.applied:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.get(self.keys[2]).get(self.keys[1]).hgetall(self.keys[0])
                epoch, version, docs = await pipe.execute()
            remote = {f.decode(): orjson.loads(d) for f, d in docs.items()}
            loop = asyncio.get_running_loop()
            changed = await loop.run_in_executor(self.executor, self._apply, remote)
            self.applied = (epoch, int(version or 0))
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

    def _apply(self, remote: dict[str, dict]) -> bool:
        """Make this host's shared documents those of Redis (executor thread); fields with
        an unpushed local change keep theirs. True if anything was written."""
        state = self.model.fresh()
        local = local_docs(state)
        with self._lock:
            dirty = set(self._dirty)
        writes = []
        for f, doc in remote.items():
            mine = local.get(f)
            if f in dirty or (mine is not None and public_doc(mine) == doc):
                continue
            if mine is not None:
                for k in PRIVATE_FIELDS:     # the value cannot change: our sealed copy holds
                    if k in mine:
                        doc[k] = mine[k]
            writes.append((*f.split("/", 2), doc))
        for f in local:
            if f not in remote and f not in dirty:
                writes.append((*f.split("/", 2), None))
        if not writes:
            return False
        with self.model.store.transaction() as txn:
            for kind, scope, id, doc in writes:
                if doc is None:
                    txn.delete(kind, scope, id)
                else:
                    txn.put(kind, scope, id, doc)
        self.model.fresh()
        return True
