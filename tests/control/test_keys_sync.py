"""KeySync's rounds against a real redis-server, two hosts' stores in one process: what
is pushed (digests, never values), what is applied, who seeds an empty Redis, and an
unpushed local change surviving a stale remote copy. The two-process version with real
gateways is tests/e2e/test_keys_sync.py."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import redis
from redis.exceptions import RedisError

from fastgate.control.keys_sync import KeySync, field_of, public_doc
from fastgate.control.model import Model
from fastgate.control.store import Store, load_state
from tests.redis_server import RedisServer


class Host:
    def __init__(self, data_dir, url):
        self.data_dir = data_dir
        self.store = Store.in_dir(data_dir)
        self.model = Model(self.store)
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.changes = 0
        self.logs: list[str] = []
        self.sync = KeySync(self.model, self.executor, url=url, interval_ms=100, timeout_ms=500,
                            on_change=self.changed, log=self.logs.append)

    def changed(self):
        self.changes += 1

    def call(self, op, **p):
        return self.executor.submit(getattr(self.model, op), p).result()

    def keys(self) -> dict:
        return load_state(self.data_dir).extra.get("apikey", {}).get("", {})

    def close(self):
        asyncio.run(self.sync.redis.aclose())
        self.executor.shutdown()
        self.store.close()


@pytest.fixture
def rs():
    r = RedisServer().start()
    yield r
    r.stop()


@pytest.fixture
def hosts(tmp_path, rs):
    made = [Host(tmp_path / "a", rs.url), Host(tmp_path / "b", rs.url)]
    yield made
    for h in made:
        h.close()


def run(host, n=1):
    async def rounds():
        for _ in range(n):
            await host.sync.round()
        await host.sync.redis.aclose()     # its connections belong to this loop
    asyncio.run(rounds())


def test_a_key_made_on_one_host_reaches_the_other_without_its_value(hosts, rs):
    a, b = hosts
    key = a.call("create_api_key", name="partner", enabled=True)
    run(a)
    stored = redis.Redis.from_url(rs.url).hgetall("fastgate:keys:docs")
    doc = orjson.loads(stored[field_of("apikey", "", key["id"]).encode()])
    assert "_sealed" not in doc and "_hash" in doc and key["value"] not in orjson.dumps(doc).decode()
    assert a.changes == 0                     # its own change: nothing to reload
    run(b)
    assert b.changes == 1
    got = b.keys()[key["id"]]
    assert got["_hash"] == doc["_hash"] and "_sealed" not in got
    assert "value" not in b.call("get_api_key", apiKey=key["id"], includeValue=True)
    # A keeps its sealed copy when the document comes back from Redis changed
    b.call("update_api_key", apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/enabled", "value": "false"}])
    run(b)
    run(a)
    assert a.keys()[key["id"]]["enabled"] is False
    assert a.call("get_api_key", apiKey=key["id"], includeValue=True)["value"] == key["value"]
    run(b)
    assert b.changes == 1                     # nothing new for B: no reload


def test_an_empty_redis_is_seeded_by_one_host_and_unsynced_documents_are_pushed(hosts, rs):
    a, b = hosts
    ka = a.call("create_api_key", name="from-a", enabled=True)
    run(a)
    assert any("seeded" in line for line in a.logs)
    kb = b.call("create_api_key", name="from-b", enabled=True)
    run(b)
    run(a)
    assert set(a.keys()) == set(b.keys()) == {ka["id"], kb["id"]}
    assert all("_synced" in k for k in a.keys().values())
    rs.stop()
    rs.start()                                # Redis lost everything
    kc = b.call("create_api_key", name="while-down", enabled=True)
    b.sync._dirty.clear()                     # and B's admin restarted: only its SQLite knows
    run(a)                                    # A seeds with ka, kb
    run(b, 2)                                 # B: kc was never exchanged -> pushed next round
    run(a)
    assert set(a.keys()) == set(b.keys()) == {ka["id"], kb["id"], kc["id"]}
    assert sum("seeded" in line for line in b.logs) == 0


def test_a_deletion_elsewhere_reaches_a_restarted_host_and_cli_keys_are_pushed(hosts, rs):
    a, b = hosts
    ka = a.call("create_api_key", name="doomed", enabled=True)
    run(a)
    run(b)
    a.call("delete_api_key", apiKey=ka["id"])
    run(a)
    b.sync._dirty.clear()
    b.sync.applied = b.sync.local_applied = None     # B's admin restarted
    run(b)
    assert ka["id"] not in b.keys()           # it had been synced: deleted elsewhere
    # a key written to B's SQLite directly (as `fastgate keys create` does)
    with b.store.transaction() as txn:
        txn.put("apikey", "", "clikey0001", {"id": "clikey0001", "name": "cli", "enabled": True,
                                            "_hash": "00" * 32})
    run(b, 2)
    run(a)
    assert a.keys()["clikey0001"]["name"] == "cli"


def test_an_unpushed_local_change_is_not_overwritten_by_a_stale_copy(hosts):
    a, b = hosts
    key = a.call("create_api_key", name="k", enabled=True)
    run(a)
    run(b)
    field = field_of("apikey", "", key["id"])
    stale = {field: public_doc(b.keys()[key["id"]])}
    b.call("update_api_key", apiKey=key["id"], patchOperations=[
        {"op": "replace", "path": "/enabled", "value": "false"}])
    assert b.sync._apply(stale)[0] is False   # B's change waits to be pushed: kept
    assert b.keys()[key["id"]]["enabled"] is False
    b.sync._dirty.clear()                     # even with the dirty set lost (admin restart),
    assert b.sync._apply(stale)[0] is False   # the stale _synced digest tells: kept, and queued
    assert b.keys()[key["id"]]["enabled"] is False and field in b.sync._dirty
    run(b)                                    # pushed, then B's copy equals Redis's
    run(a)
    assert a.keys()[key["id"]]["enabled"] is False


def test_redis_down_keeps_the_change_pending_until_it_is_back(hosts, rs):
    a, b = hosts
    run(a)
    rs.stop()
    key = a.call("create_api_key", name="late", enabled=True)
    with pytest.raises((RedisError, OSError)):
        run(a)
    assert field_of("apikey", "", key["id"]) in a.sync._dirty
    rs.start()                                # empty: A seeds, with its pending key
    run(a)
    assert not a.sync._dirty
    run(b)
    assert key["id"] in b.keys()
