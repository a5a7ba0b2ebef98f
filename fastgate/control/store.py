"""The control plane's state on disk: one SQLite database, <data_dir>/fastgate.db.

Every entity (a rest API document, a deployment, a stage, a domain name, a base
path mapping, and later API keys and usage plans) is one JSON document in one
table, keyed by (kind, scope, id): scope is the owner (the rest API id of a
stage, the domain name of a mapping, "" for top-level entities). Every change
is one transaction that also bumps a version counter, so a crash leaves either
the whole change or none of it, and a reader can tell cheaply whether anything
moved. WAL mode lets the data-plane processes read while the admin process
writes; a busy timeout makes concurrent openers wait instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import orjson

from fastgate.control.state import State

DB_NAME = "fastgate.db"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000        # how long an opener waits for another process's write lock

# kind -> the State attribute it fills; kinds not listed land in State.extra
KIND_RESTAPI = "restapi"
KIND_DEPLOYMENT = "deployment"
KIND_STAGE = "stage"
KIND_DOMAIN = "domain"
KIND_MAPPING = "mapping"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    id TEXT NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (kind, scope, id)
);
"""


class StoreError(Exception):
    """The database cannot be opened or has a schema this fastgate does not know."""


def db_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / DB_NAME


class Txn:
    """The writes of one transaction; applied to the in-memory State only after commit."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.writes: list[tuple[str, str, str, dict | None]] = []

    def put(self, kind: str, scope: str, id: str, doc: dict) -> None:
        self.conn.execute("INSERT OR REPLACE INTO entities (kind, scope, id, doc) VALUES (?, ?, ?, ?)",
                          (kind, scope, id, orjson.dumps(doc)))
        self.writes.append((kind, scope, id, doc))

    def delete(self, kind: str, scope: str, id: str) -> None:
        self.conn.execute("DELETE FROM entities WHERE kind = ? AND scope = ? AND id = ?",
                          (kind, scope, id))
        self.writes.append((kind, scope, id, None))


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are begun and ended explicitly below
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn


class Store:
    """The database of one data directory. Writes are serialised by SQLite's write lock
    (BEGIN IMMEDIATE), so several processes may open the same store."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        try:
            self.conn = _connect(self.path)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")   # a committed change survives power loss
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    self.conn.execute(stmt)
                row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if row is None:
                    self.conn.execute("INSERT INTO meta VALUES ('schema', ?), ('version', 0)",
                                      (SCHEMA_VERSION,))
                elif row[0] != SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {row[0]}, this fastgate "
                                     f"knows {SCHEMA_VERSION}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise StoreError(f"{self.path}: {e}") from e

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike) -> "Store":
        return cls(db_path(data_dir))

    def close(self) -> None:
        self.conn.close()

    def version(self) -> int:
        with self.lock:
            return self.conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]

    def load(self) -> State:
        with self.lock:
            self.conn.execute("BEGIN")   # one consistent snapshot of rows and version
            try:
                return _read_state(self.conn)
            finally:
                self.conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[Txn]:
        """One atomic change: all of the Txn's writes and a version bump, or nothing."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            txn = Txn(self.conn)
            try:
                yield txn
                if txn.writes:
                    self.conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'version'")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def current_version(self, txn: Txn) -> int:
        """The committed version, read inside a transaction (no lock taken)."""
        return txn.conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]

    def read_state(self, txn: Txn) -> State:
        return _read_state(txn.conn)


def _read_state(conn: sqlite3.Connection) -> State:
    state = State()
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return state    # a database the usage flusher created before any control API change
    state.version = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
    for kind, scope, id, doc in conn.execute("SELECT kind, scope, id, doc FROM entities"):
        state.set(kind, scope, id, orjson.loads(doc))
    return state


def load_state(data_dir: str | os.PathLike) -> State:
    """The state of a data directory, read once (the data-plane compiler calls this from
    any process). An empty State when the directory has no database yet."""
    path = db_path(data_dir)
    if not path.exists():
        return State()
    try:
        conn = _connect(path)
    except sqlite3.Error as e:
        raise StoreError(f"{path}: {e}") from e
    try:
        conn.execute("BEGIN")
        try:
            return _read_state(conn)
        finally:
            conn.execute("COMMIT")
    except sqlite3.Error as e:
        raise StoreError(f"{path}: {e}") from e
    finally:
        conn.close()


def default_data_dir() -> Path:
    """Where the state lives without FASTGATE_DATA_DIR: $XDG_STATE_HOME/fastgate when
    that is set, else ./.fastgate beside the directory fastgate was started in."""
    xdg = os.environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "fastgate"
    return Path.cwd() / ".fastgate"
