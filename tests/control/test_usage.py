"""fastgate/control/usage.py: shared usage counters across forked workers, the exactly-once flush
to SQLite, the migration of the calls-per-day table, what a crash or a graceful stop
keeps, and the CLI export."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import sqlite3

from fastgate.compile.shared import UsageRecorder
from fastgate.control.usage import UsageStore, utc_day
from tests.core.test_metrics import _fork, _wait_all

DAY_S = 86400
T0 = 1_700_000_000          # 2023-11-14 UTC


def wait_ok(pid: int) -> None:
    _wait_all([pid])


def ok(rec, slot, bytes_in=1, bytes_out=1, status=200):
    """One request that passed the key's plan (counted against its quota)."""
    rec.record(slot, status, False, True, bytes_in, bytes_out)


def calls(row) -> tuple:
    """(key, day, requests, bytes_in, bytes_out) of a usage row."""
    return (row[0], row[1], row[4], row[8], row[9])


def test_counters_are_shared_by_forked_workers():
    rec = UsageRecorder.create(workers=3, capacity=4)

    def worker(w):
        def run():
            a, b = rec.slot(w, "key-a"), rec.slot(w, "key-b")
            for _ in range(2000):
                ok(rec, a, 10, 100)
            for _ in range(w + 1):
                ok(rec, b, 1, 2)
        return run
    pids = [_fork(worker(w)) for w in range(3)]
    for pid in pids:
        wait_ok(pid)
    assert rec.totals() == {("key-a", "", ""): (6000, 0, 0, 0, 60000, 600000, 6000),
                            ("key-b", "", ""): (6, 0, 0, 0, 6, 12, 6)}
    # a replacement worker under the same id finds its predecessor's entries
    before = rec.slot(1, "key-a")
    pid = _fork(lambda: ok(rec, rec.slot(1, "key-a")))
    wait_ok(pid)
    assert rec.slot(1, "key-a") == before
    assert rec.totals()[("key-a", "", "")] == (6001, 0, 0, 0, 60001, 600001, 6001)
    assert rec.stats() == {"entries": 6, "capacity": 12, "dropped": 0}


def test_status_classes_throttles_and_quota_per_stage():
    rec = UsageRecorder.create(workers=1, capacity=4)
    prod, beta = rec.slot(0, "k", "api1", "prod"), rec.slot(0, "k", "api1", "beta")
    assert prod != beta and rec.slot(0, "k", "api1", "prod") == prod
    rec.record(prod, 200, False, True, 3, 5)
    rec.record(prod, 404, False, True, 0, 9)        # an upstream 4xx: the plan let it through
    rec.record(prod, 502, False, True, 0, 7)
    rec.record(prod, 429, True, False, 0, 1)        # the plan's throttle: no quota used
    rec.record(beta, 429, False, True, 0, 2)        # an upstream's own 429 is no throttle
    rec.record(beta, 499, False, True, 4, 0)        # the client left: 4xx
    assert rec.totals() == {("k", "api1", "prod"): (4, 1, 2, 1, 3, 22, 3),
                            ("k", "api1", "beta"): (2, 0, 2, 0, 4, 2, 2)}
    with pytest.raises(ValueError):
        rec.slot(0, "k", "a" * 64, "s" * 64)        # the ident does not fit an entry


def test_full_slab_counts_dropped_calls():
    rec = UsageRecorder.create(workers=1, capacity=2)
    rec.slot(0, "a"), rec.slot(0, "b")
    full = rec.slot(0, "c")
    assert full < 0
    ok(rec, full, 5, 5)
    ok(rec, full, 5, 5)
    assert rec.stats()["dropped"] == 2 and ("c", "", "") not in rec.totals()
    with pytest.raises(ValueError):
        rec.slot(1, "a")                     # no such worker id
    with pytest.raises(ValueError):
        rec.slot(0, "x" * 33)                # longer than an entry holds


def test_flush_moves_each_call_once(tmp_path):
    rec = UsageRecorder.create(workers=2, capacity=4)
    store = UsageStore(tmp_path / "fastgate.db")
    s0, s1 = rec.slot(0, "k"), rec.slot(1, "k")
    for _ in range(5):
        ok(rec, s0, 100, 10)
    ok(rec, s1)
    assert store.flush(rec, now_s=T0) == 6
    version = store.meta("version")
    assert store.flush(rec, now_s=T0) == 0           # nothing new, nothing moved, nothing written
    assert store.meta("version") == version
    for _ in range(3):
        ok(rec, s1)
    rec.record(s1, 503, False, True, 0, 0)
    assert store.flush(rec, now_s=T0 + DAY_S) == 4   # after midnight: the next day's row
    assert store.rows() == [("k", utc_day(T0), "", "", 6, 0, 0, 0, 501, 51, 6),
                            ("k", utc_day(T0 + DAY_S), "", "", 4, 0, 0, 1, 3, 3, 4)]
    # a new flusher (the admin process restarted) reads the cursor, not its memory
    other = UsageStore(tmp_path / "fastgate.db")
    assert other.flush(rec, now_s=T0 + DAY_S) == 0
    assert [calls(r) for r in store.rows(start=utc_day(T0 + DAY_S))] == [("k", utc_day(T0 + DAY_S), 4, 3, 3)]
    assert store.rows(key_ids=["nope"]) == []
    store.close()
    other.close()


def test_concurrent_flushers_never_double_count(tmp_path):
    rec = UsageRecorder.create(workers=1, capacity=4)
    slot = rec.slot(0, "k")
    stores = [UsageStore(tmp_path / "fastgate.db") for _ in range(3)]
    stop = threading.Event()

    def flusher(store):
        while not stop.is_set():
            store.flush(rec, now_s=T0)
    threads = [threading.Thread(target=flusher, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for _ in range(20000):
        ok(rec, slot, 1, 0)
    stop.set()
    for t in threads:
        t.join()
    stores[0].flush(rec, now_s=T0)
    assert [calls(r) for r in stores[0].rows()] == [("k", utc_day(T0), 20000, 20000, 0)]
    for s in stores:
        s.close()


def test_a_flusher_killed_and_replaced_neither_loses_nor_double_counts(tmp_path):
    """The admin process dies (kill -9) after a flush; the supervisor and the workers
    live on, and so does the mapping: the next admin process flushes the rest."""
    db = tmp_path / "fastgate.db"
    UsageStore(db).close()
    rec = UsageRecorder.create(workers=1, capacity=4)
    slot = rec.slot(0, "k")
    for _ in range(10):
        ok(rec, slot)
    r, w = os.pipe()

    def admin():
        UsageStore(db).flush(rec)
        os.write(w, b"x")
        time.sleep(60)
    pid = _fork(admin)
    assert os.read(r, 1) == b"x"
    for _ in range(5):
        ok(rec, slot)                   # counted while the admin process is gone
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    wait_ok(_fork(lambda: UsageStore(db).flush(rec)))
    assert [r[4] for r in UsageStore(db).rows()] == [15]


def test_migration_from_the_calls_per_day_table_keeps_every_row(tmp_path):
    db = tmp_path / "fastgate.db"
    old = sqlite3.connect(db)
    old.executescript("""
        CREATE TABLE usage (key_id TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL DEFAULT 0,
            bytes_in INTEGER NOT NULL DEFAULT 0, bytes_out INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, day));
        CREATE TABLE usage_cursor (generation TEXT NOT NULL, worker INTEGER NOT NULL,
            slot INTEGER NOT NULL, key_id TEXT NOT NULL, calls INTEGER NOT NULL,
            bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, updated INTEGER NOT NULL,
            PRIMARY KEY (generation, worker, slot));
        INSERT INTO usage VALUES ('k1', '2024-03-01', 10, 100, 1000), ('k2', '2024-03-02', 3, 0, 7);
        INSERT INTO usage_cursor VALUES ('old', 0, 8, 'k1', 10, 100, 1000, 1);
        CREATE TABLE documents (id TEXT);   -- the control plane's own tables are left alone
    """)
    old.commit()
    old.close()
    stores = [UsageStore(db) for _ in range(2)]    # the second finds it migrated
    assert stores[1].rows() == [("k1", "2024-03-01", "", "", 10, 0, 0, 0, 100, 1000, 10),
                                ("k2", "2024-03-02", "", "", 3, 0, 0, 0, 0, 7, 3)]
    # the old rows and the new per-stage rows of the same day live side by side
    rec = UsageRecorder.create(workers=1, capacity=2)
    ok(rec, rec.slot(0, "k1", "a1", "prod"), 2, 3)
    stores[0].flush(rec, now_s=dt_s("2024-03-01"))
    assert [r[:5] for r in stores[0].rows(key_ids=["k1"])] == [
        ("k1", "2024-03-01", "", "", 10), ("k1", "2024-03-01", "a1", "prod", 1)]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM documents").fetchone() == (0,)
    for s in stores:
        s.close()


def dt_s(day: str) -> float:
    import datetime as dt
    return dt.datetime.strptime(day + " 12", "%Y-%m-%d %H").replace(tzinfo=dt.timezone.utc).timestamp()


GATEWAY = textwrap.dedent("""
    import os, signal, sys, time
    from fastgate.compile.shared import UsageRecorder
    from fastgate.control.usage import UsageStore
    from fastgate.control.usage_flusher import UsageFlusher
    data_dir, interval = sys.argv[1], float(sys.argv[2])
    rec = UsageRecorder.create(workers=1, capacity=4)
    slot = rec.slot(0, "k")
    flusher = UsageFlusher(rec, data_dir, interval_s=interval)
    flusher.start()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    for _ in range(100):
        rec.record(slot, 200, False, True, 1, 1)
    UsageStore.in_dir(data_dir).flush(rec)          # a flush the test knows happened
    print("flushed", flush=True)
    for _ in range(50):
        rec.record(slot, 200, False, True, 1, 1)
    print("recorded", flush=True)
    while not stopping:
        time.sleep(0.01)
    flusher.stop()
    print("stopped", flush=True)
""")


def start_gateway(tmp_path, interval):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, "-c", GATEWAY, str(tmp_path), str(interval)],
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "flushed"
    assert p.stdout.readline().strip() == "recorded"
    return p


def usage_calls(tmp_path) -> int:
    store = UsageStore.in_dir(tmp_path)
    try:
        return sum(r[4] for r in store.rows())
    finally:
        store.close()


def test_crash_loses_at_most_what_came_after_the_last_flush(tmp_path):
    p = start_gateway(tmp_path, interval=3600)      # no periodic flush before the kill
    try:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        p.kill()
    assert usage_calls(tmp_path) == 100             # the 50 after the last flush are lost


def test_periodic_flush_bounds_the_loss_to_one_interval(tmp_path):
    p = start_gateway(tmp_path, interval=0.1)
    try:
        deadline = time.monotonic() + 10
        while usage_calls(tmp_path) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
    finally:
        p.kill()
    assert usage_calls(tmp_path) == 150


def test_graceful_stop_loses_nothing(tmp_path):
    p = start_gateway(tmp_path, interval=3600)
    try:
        p.send_signal(signal.SIGTERM)
        assert p.stdout.readline().strip() == "stopped"
        assert p.wait(10) == 0
    finally:
        p.kill()
    assert usage_calls(tmp_path) == 150


# ---------------------------------------------------------------- CLI

def fastgate(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "fastgate", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_cli_export_csv_and_json(tmp_path):
    created = fastgate("keys", "create", "billing-test", "--data-dir", str(tmp_path))
    assert created.returncode == 0, created.stderr
    key_id, value = created.stdout.split()
    assert len(value) == 40
    store = UsageStore.in_dir(tmp_path)
    store.add(key_id, "2024-03-01", "a1", "prod", requests=10, throttled=2, status_4xx=3,
              status_5xx=1, bytes_in=1000, bytes_out=5000, quota_used=8)
    store.add(key_id, "2024-03-02", "a1", "prod", requests=3, bytes_in=30, bytes_out=60, quota_used=3)
    store.add("~otherkey", "2024-03-02", requests=1, bytes_in=1, bytes_out=1, quota_used=1)
    store.close()
    out = fastgate("usage", "export", "--data-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == ("key_id,day,api_id,stage,requests,throttled,4xx,5xx,"
                                          "bytes_in,bytes_out,quota_used,key_name")
    rows = list(csv.reader(io.StringIO(out.stdout)))[1:]
    assert rows == [
        [key_id, "2024-03-01", "a1", "prod", "10", "2", "3", "1", "1000", "5000", "8", "billing-test"],
        [key_id, "2024-03-02", "a1", "prod", "3", "0", "0", "0", "30", "60", "3", "billing-test"],
        ["~otherkey", "2024-03-02", "", "", "1", "0", "0", "0", "1", "1", "1", ""]]
    out = fastgate("usage", "export", "--data-dir", str(tmp_path), "--format", "json",
                   "--from", "2024-03-02", "--to", "2024-03-02", "--key", key_id)
    assert json.loads(out.stdout) == [{"key_id": key_id, "day": "2024-03-02", "api_id": "a1",
                                       "stage": "prod", "requests": 3, "throttled": 0, "4xx": 0,
                                       "5xx": 0, "bytes_in": 30, "bytes_out": 60, "quota_used": 3,
                                       "key_name": "billing-test"}]
    bad = fastgate("usage", "export", "--data-dir", str(tmp_path), "--from", "03/01/2024")
    assert bad.returncode == 2 and "yyyy-MM-dd" in bad.stderr
    missing = fastgate("usage", "export", "--data-dir", str(tmp_path / "none"))
    assert missing.returncode == 2


def test_cli_keys_list_and_delete(tmp_path):
    key_id = fastgate("keys", "create", "k1", "--customer-id", "acme", "--data-dir", str(tmp_path)).stdout.split()[0]
    listed = fastgate("keys", "list", "--data-dir", str(tmp_path))
    assert listed.stdout.splitlines()[1] == f"{key_id}\tk1\ttrue\tacme"
    assert fastgate("keys", "delete", key_id, "--data-dir", str(tmp_path)).returncode == 0
    again = fastgate("keys", "delete", key_id, "--data-dir", str(tmp_path))
    assert again.returncode == 1 and "Invalid API Key" in again.stderr
    given = subprocess.run([sys.executable, "-m", "fastgate", "keys", "create", "k2", "--value-stdin",
                            "--data-dir", str(tmp_path)], input="s" * 30 + "\n", capture_output=True,
                           text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=60)
    assert given.stdout.split()[1] == "s" * 30


def test_tables_missing_under_a_current_schema_version_are_made(tmp_path):
    """A database copied with the usage tables dropped but user_version kept (a replica
    of the control plane's documents) still gets working usage tables."""
    db = tmp_path / "fastgate.db"
    UsageStore(db).close()
    with sqlite3.connect(db) as c:
        for table in ("usage", "usage_cursor", "usage_meta"):
            c.execute(f"DROP TABLE {table}")
    store = UsageStore(db)
    rec = UsageRecorder.create(workers=1, capacity=2)
    ok(rec, rec.slot(0, "k", "a1", "prod"))
    assert store.flush(rec, now_s=T0) == 1 and store.host_id()
    store.close()
