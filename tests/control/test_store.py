"""fastgate.control.store: atomic changes, the version counter, readers in other processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

import pytest

from fastgate.control.model import Model
from fastgate.control.state import State
from fastgate.control.store import Store, StoreError, db_path, load_state


def test_every_committed_change_bumps_the_version(tmp_path):
    store = Store.in_dir(tmp_path)
    assert store.version() == 0
    with store.transaction() as txn:
        txn.put("restapi", "", "a1", {"id": "a1", "name": "x"})
        txn.put("stage", "a1", "prod", {"stageName": "prod"})
    assert store.version() == 1
    with store.transaction():
        pass    # nothing written: nothing changed
    assert store.version() == 1
    state = store.load()
    assert state.version == 1
    assert state.apis == {"a1": {"id": "a1", "name": "x"}}
    assert state.stages == {"a1": {"prod": {"stageName": "prod"}}}


def test_a_failed_change_leaves_nothing(tmp_path):
    store = Store.in_dir(tmp_path)
    with pytest.raises(RuntimeError):
        with store.transaction() as txn:
            txn.put("restapi", "", "a1", {"id": "a1"})
            raise RuntimeError("half way")
    assert store.load().apis == {} and store.version() == 0


def test_a_killed_writer_leaves_nothing(tmp_path):
    # the process dies inside its transaction, after writing: SQLite rolls the change back
    code = textwrap.dedent(f"""
        import os
        from fastgate.control.store import Store
        store = Store.in_dir({str(tmp_path)!r})
        with store.transaction() as txn:
            txn.put("restapi", "", "a1", {{"id": "a1"}})
            txn.put("deployment", "a1", "d1", {{"id": "d1"}})
            os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    state = load_state(tmp_path)
    assert state.apis == {} and state.deployments == {} and state.version == 0


def test_load_state_in_another_process(tmp_path):
    store = Store.in_dir(tmp_path)
    with store.transaction() as txn:
        txn.put("domain", "", "api.example.com", {"domainName": "api.example.com"})
        txn.put("mapping", "api.example.com", "(none)", {"basePath": "(none)", "restApiId": "a1"})
        txn.put("apikey", "", "k1", {"id": "k1"})   # a kind this module does not know
    code = (f"from fastgate.control.store import load_state; s = load_state({str(tmp_path)!r}); "
            "print(s.version, sorted(s.domains), sorted(s.mappings['api.example.com']), "
            "sorted(s.extra['apikey']['']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(None, 1) == ["1", "['api.example.com'] ['(none)'] ['k1']\n"]


def test_load_state_without_a_database(tmp_path):
    state = load_state(tmp_path / "nothing-here")
    assert state == State()


def test_a_model_sees_changes_made_through_another_store(tmp_path):
    a, b = Model(Store.in_dir(tmp_path)), Model(Store.in_dir(tmp_path))
    api = a.create_rest_api({"name": "shared"})
    assert b.get_rest_api({"restApiId": api["id"]})["name"] == "shared"
    b.update_rest_api({"restApiId": api["id"], "patchOperations": [
        {"op": "replace", "path": "/description", "value": "from b"}]})
    # a's next change starts from b's, not from its own stale copy
    a.update_rest_api({"restApiId": api["id"], "patchOperations": [
        {"op": "replace", "path": "/version", "value": "2"}]})
    got = b.get_rest_api({"restApiId": api["id"]})
    assert (got["description"], got["version"]) == ("from b", "2")


def test_unknown_schema_version_is_refused(tmp_path):
    Store.in_dir(tmp_path).close()
    conn = sqlite3.connect(db_path(tmp_path))
    conn.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="schema version 99"):
        Store.in_dir(tmp_path)


def test_wal_mode(tmp_path):
    store = Store.in_dir(tmp_path)
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
