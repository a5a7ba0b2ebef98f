"""The control plane's state in PostgreSQL (fastgate.control.store_pg, fastgate.control.fleet),
against a real PostgreSQL server started for this module (tests/postgres_server.py): two
stores play two hosts; each test has a database of its own."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import orjson
import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from postgres_server import PostgresServer  # noqa: E402

from fastgate.control.errors import NotFound, ServiceUnavailable  # noqa: E402
from fastgate.control.fleet import CopyError, FleetSync, copy_state  # noqa: E402
from fastgate.control.local_copy import LocalCopy  # noqa: E402
from fastgate.control.model import Model  # noqa: E402
from fastgate.control.store import Store  # noqa: E402
from fastgate.control.store_pg import CHANNEL, PgStore, Unavailable  # noqa: E402


@pytest.fixture(scope="module")
def pg():
    server = PostgresServer().start()
    yield server
    server.close()


@pytest.fixture
def url(pg):
    if not pg.pid:          # a test that stopped it failed before starting it again
        pg.start()
    return pg.new_database()


def host(url, tmp_path, name="a") -> Model:
    return Model(PgStore(url, tmp_path / name))


def mock_api(model: Model, name="pets") -> str:
    """A REST API with GET / as a mock, deployed to prod; its id."""
    api = model.create_rest_api({"name": name})
    root = model.get_resources({"restApiId": api["id"]})["items"][0]["id"]
    model.put_method({"restApiId": api["id"], "resourceId": root, "httpMethod": "GET",
                      "authorizationType": "NONE"})
    model.put_integration({"restApiId": api["id"], "resourceId": root, "httpMethod": "GET",
                           "type": "MOCK", "requestTemplates": {"application/json": '{"statusCode": 200}'}})
    model.create_deployment({"restApiId": api["id"], "stageName": "prod"})
    return api["id"]


def test_what_one_host_writes_the_other_reads(url, tmp_path):
    a, b = host(url, tmp_path, "a"), host(url, tmp_path, "b")
    api_id = mock_api(a)
    assert b.get_rest_api({"restApiId": api_id})["name"] == "pets"
    assert [s["stageName"] for s in b.get_stages({"restApiId": api_id})["item"]] == ["prod"]
    assert a.store.version() == b.store.version() == a.state.version
    # the documents are the bytes the SQLite store writes (orjson), not JSONB's reordering
    with psycopg.connect(url) as conn:
        raw = conn.execute("SELECT doc FROM fastgate_entities WHERE kind = 'restapi'").fetchone()[0]
    assert bytes(raw) == orjson.dumps(a.state.apis[api_id])
    b.delete_rest_api({"restApiId": api_id})
    with pytest.raises(NotFound):
        a.get_rest_api({"restApiId": api_id})


def test_a_commit_notifies_with_its_version_and_a_refused_change_does_not(url, tmp_path):
    a = host(url, tmp_path)
    with psycopg.connect(url, autocommit=True) as listener:
        listener.execute(f"LISTEN {CHANNEL}")
        api = a.create_rest_api({"name": "one"})
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
        assert got == [str(a.state.version)]
        with pytest.raises(NotFound):
            a.update_rest_api({"restApiId": "nosuchapi", "patchOperations": [
                {"op": "replace", "path": "/name", "value": "x"}]})
        assert list(listener.notifies(timeout=0.3)) == []
        a.update_rest_api({"restApiId": api["id"], "patchOperations": [
            {"op": "replace", "path": "/description", "value": "d"}]})
        assert [n.payload for n in listener.notifies(timeout=5, stop_after=1)] == [str(a.state.version)]


def test_two_hosts_writing_at_once_lose_no_update(url, tmp_path):
    """Each host adds its own binary media types to one API, patch by patch, at the same
    time: every patch reads the API as the other host last committed it."""
    a, b = host(url, tmp_path, "a"), host(url, tmp_path, "b")
    api_id = a.create_rest_api({"name": "shared"})["id"]
    b.fresh()
    n = 40
    errors = []

    def patch(model, prefix):
        try:
            for i in range(n):
                model.update_rest_api({"restApiId": api_id, "patchOperations": [
                    {"op": "add", "path": f"/binaryMediaTypes/{prefix}~1t{i}"}]})
        except Exception as e:   # surfaced below: a thread's failure must fail the test
            errors.append(e)
    threads = [threading.Thread(target=patch, args=(m, p)) for m, p in ((a, "image"), (b, "audio"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    types = set(host(url, tmp_path, "c").get_rest_api({"restApiId": api_id})["binaryMediaTypes"])
    assert types == {f"{p}/t{i}" for p in ("image", "audio") for i in range(n)}
    assert a.store.version() == 1 + 2 * n


def test_database_down_reads_answer_writes_get_503_and_it_comes_back(pg, url, tmp_path):
    a = host(url, tmp_path)
    api_id = mock_api(a)
    version = a.state.version
    pg.stop()
    try:
        assert a.get_rest_api({"restApiId": api_id})["name"] == "pets"
        assert a.store.version() == version
        t0 = time.monotonic()
        with pytest.raises(ServiceUnavailable) as e:
            a.create_rest_api({"name": "refused"})
        assert time.monotonic() - t0 < 10
        assert e.value.status == 503 and e.value.code == "ServiceUnavailableException"
        assert e.value.retry_after == "1"
        assert "unreachable" in e.value.message
        assert not a.store.available()
    finally:
        pg.start()
    # the first write after the restart works on a new connection (after the retry delay)
    deadline = time.monotonic() + 10
    while True:
        try:
            a.create_rest_api({"name": "after"})
            break
        except ServiceUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert a.store.available()
    assert sorted(x["name"] for x in host(url, tmp_path, "b").get_rest_apis({})["items"]) == ["after", "pets"]


def test_a_host_started_while_the_database_is_down_reads_its_local_copy(pg, url, tmp_path):
    a = host(url, tmp_path)
    api_id = mock_api(a)
    LocalCopy(tmp_path / "late").save(_rows(url), "test")
    pg.stop()
    try:
        late = host(url, tmp_path, "late")       # its Model loads while the database is down
        assert late.get_rest_api({"restApiId": api_id})["name"] == "pets"
        assert late.state.version == a.state.version
        with pytest.raises(ServiceUnavailable):
            late.delete_rest_api({"restApiId": api_id})
        with pytest.raises(Unavailable):        # no copy and no database: nothing to serve
            host(url, tmp_path, "nocopy")
    finally:
        pg.start()


def test_a_replaced_commit_with_the_same_version_is_noticed(url, tmp_path):
    """After a failover to a replica that missed the last commit, a new commit reaches the
    same version number with other content: the stamp tells them apart."""
    a, b = host(url, tmp_path, "a"), host(url, tmp_path, "b")
    api_id = a.create_rest_api({"name": "before"})["id"]
    b.fresh()
    with psycopg.connect(url) as conn:          # what the promoted replica committed instead
        doc = {**a.state.apis[api_id], "name": "after-failover"}
        conn.execute("UPDATE fastgate_entities SET doc = %s WHERE kind = 'restapi'", (orjson.dumps(doc),))
        conn.execute("UPDATE fastgate_meta SET value = 12345 WHERE key = 'stamp'")
    assert b.get_rest_api({"restApiId": api_id})["name"] == "after-failover"
    # a write reads the replaced state inside its transaction, then applies its patch to it
    a.update_rest_api({"restApiId": api_id, "patchOperations": [
        {"op": "replace", "path": "/description", "value": "patched"}]})
    got = host(url, tmp_path, "c").get_rest_api({"restApiId": api_id})
    assert (got["name"], got["description"]) == ("after-failover", "patched")


def _rows(url):
    from fastgate.control.store_pg import SELECT_ALL
    with psycopg.connect(url) as conn:
        return conn.execute(SELECT_ALL, binary=True).fetchall()


# ---- the admin process's listener

class Recorder:
    def __init__(self):
        self.changes = 0
        self.logs: list[str] = []


async def _until(pred, timeout: float):
    # 30 s everywhere: what is waited for comes in milliseconds, or never when broken
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_fleet_sync_follows_notifications_then_polls_and_rides_out_an_outage(pg, url, tmp_path):
    a = host(url, tmp_path)
    copy = LocalCopy(tmp_path / "b")
    rec = Recorder()

    async def scenario():
        sync = FleetSync(url, copy, poll_interval_ms=300, log=rec.logs.append,
                         on_change=lambda: setattr(rec, "changes", rec.changes + 1))
        sync.start(asyncio.get_running_loop())
        try:
            await _until(lambda: sync.current is not None, 30)   # the first read: version 0
            base = rec.changes
            loop = asyncio.get_running_loop()
            api_id = await loop.run_in_executor(None, mock_api, a)
            await _until(lambda: sync.current[0] == a.state.version, 30)
            state, _ = copy.load()
            assert state.version == a.state.version and api_id in state.apis
            assert state.stages[api_id]["prod"]["deploymentId"] in state.deployments[api_id]
            assert rec.changes > base

            # a change whose notification never came (written around the store): the poll
            with psycopg.connect(url) as conn:
                conn.execute("UPDATE fastgate_meta SET value = value + 1 WHERE key = 'version'")
            await _until(lambda: sync.current[0] == a.state.version + 1, 30)

            pg.stop()
            await _until(lambda: sync.down, 30)
            assert any("unreachable" in m for m in rec.logs)
            assert copy.load()[0].version == a.state.version + 1   # the copy stays as it was
            pg.start()
            await _until(lambda: not sync.down, 30)
            assert any("reachable again" in m for m in rec.logs)
            await loop.run_in_executor(None, a.create_rest_api, {"name": "after"})
            await _until(lambda: sync.current[0] == a.store.version(), 30)
            assert {x["name"] for x in copy.load()[0].apis.values()} == {"pets", "after"}
        finally:
            await sync.stop()
    asyncio.run(scenario())


def test_fleet_sync_waits_for_tables_in_an_empty_database(pg, tmp_path):
    url = pg.new_database()
    rec = Recorder()

    async def scenario():
        sync = FleetSync(url, LocalCopy(tmp_path), poll_interval_ms=200, log=rec.logs.append,
                         on_change=lambda: setattr(rec, "changes", rec.changes + 1))
        sync.start(asyncio.get_running_loop())
        try:
            await asyncio.sleep(0.6)
            assert not sync.down and rec.logs == [] and rec.changes == 0
            writer = host(url, tmp_path, "w")
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: writer.create_rest_api({"name": "first"}))
            # the sync may also see the tables made before the first write (version 0): one
            # change or two, ending with the write's version and its API
            await _until(lambda: sync.current is not None and sync.current[0] == writer.store.version(), 30)
            assert 1 <= rec.changes <= 2 and rec.logs == []
            assert [x["name"] for x in LocalCopy(tmp_path).load()[0].apis.values()] == ["first"]
        finally:
            await sync.stop()
    asyncio.run(scenario())


# ---- fastgate state copy

def test_state_copy_sqlite_to_postgres_and_back(url, tmp_path):
    one = Model(Store.in_dir(tmp_path / "one"))
    api_id = mock_api(one)
    one.create_api_key({"name": "k", "enabled": True})
    n = len(list(one.state.entities()))
    assert copy_state(f"sqlite:{tmp_path / 'one'}", url) == (n, 1)
    fleet = host(url, tmp_path)
    assert fleet.get_rest_api({"restApiId": api_id})["name"] == "pets"
    assert sorted(fleet.state.entities()) == sorted(one.state.entities())

    # a destination with entities is refused, unless --replace
    with pytest.raises(CopyError, match="already holds"):
        copy_state(f"sqlite:{tmp_path / 'one'}", url)
    fleet.create_rest_api({"name": "fleet only"})
    assert copy_state(url, f"sqlite:{tmp_path / 'back' / 'fastgate.db'}")[0] == n + 1
    back = Model(Store.in_dir(tmp_path / "back"))
    assert sorted(x["name"] for x in back.get_rest_apis({})["items"]) == ["fleet only", "pets"]
    copy_state(f"sqlite:{tmp_path / 'one'}", url, replace=True)
    fleet.fresh()
    assert sorted(fleet.state.entities()) == sorted(one.state.entities())
    with pytest.raises(CopyError, match="no fastgate state"):
        copy_state(f"sqlite:{tmp_path / 'missing'}", url)
    with pytest.raises(CopyError, match="expected sqlite:PATH"):
        copy_state("mysql://x", url)
