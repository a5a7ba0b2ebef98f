"""The control plane's state in PostgreSQL: one database shared by a fleet of hosts
(`fastgate serve --state postgresql://...`, config `state: {url: ...}`; docs/fleet.md).

The same entities as the SQLite store (fastgate.control.store), in two tables:

    fastgate_meta      (key TEXT PRIMARY KEY, value BIGINT)   'schema', 'version'
    fastgate_entities  (kind, scope, id TEXT, doc BYTEA)      PRIMARY KEY (kind, scope, id)

`doc` holds the JSON document's bytes exactly as the SQLite store writes them (BYTEA,
not JSONB: JSONB reorders object keys, and an exported document keeps its order).

Every change is one transaction that first locks the version row (SELECT ... FOR
UPDATE), so writers from any host run one after the other; the model reloads its State
inside that transaction when another writer committed first, so a patch applies to the
latest version (fastgate.control.model.base.ModelBase.change). The same transaction bumps
the version and sends NOTIFY fastgate_state with it: PostgreSQL delivers the notification
at commit, to every host's listener (fastgate.control.fleet.FleetSync).

While the database is unreachable, reads answer from the last State this process read
(or the host's local copy, fastgate.control.local_copy.LocalCopy) and writes raise
ServiceUnavailable, AWS's 503 ServiceUnavailableException.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator
import orjson

from fastgate.compile.config.values import redact_url as redact
from fastgate.control.errors import ServiceUnavailable
from fastgate.control.local_copy import LocalCopy
from fastgate.control.state import State
from fastgate.control.store import SCHEMA_VERSION, StoreError, db_path

CHANNEL = "fastgate_state"          # NOTIFY channel; the payload is the new version
CONNECT_TIMEOUT_S = 3               # libpq's connect_timeout (its minimum is 2)
STATEMENT_TIMEOUT_MS = 10_000       # a statement (a lock wait too) that takes longer fails
# a dead peer whose packets vanish: unacknowledged data fails the connection after this long
TCP_USER_TIMEOUT_MS = 5_000
RETRY_AFTER_S = 1.0                 # after a failure, the next attempt to connect waits this long
SCHEMA_LOCK = 0x66617374            # pg_advisory_xact_lock key: hosts creating the tables at once

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS fastgate_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS fastgate_entities (kind TEXT NOT NULL, scope TEXT NOT NULL, "
    "id TEXT NOT NULL, doc BYTEA NOT NULL, PRIMARY KEY (kind, scope, id))",
)
# The version counts commits (the model counts along: ModelBase.change). The stamp is a
# random number drawn by every commit: after a failover to a replica that had not seen the
# last commits, new commits reach version numbers the hosts already had, with other
# content; their stamps differ, so a host compares (version, stamp), never the version alone.
_META = ("(SELECT max(value) FILTER (WHERE key = 'version') AS version, "
         "max(value) FILTER (WHERE key = 'stamp') AS stamp FROM fastgate_meta)")
# One statement, so the version and the rows come from one snapshot even outside a
# transaction. The LEFT JOIN keeps the version's row when there is no entity.
SELECT_ALL = (f"SELECT m.version, m.stamp, e.kind, e.scope, e.id, e.doc FROM {_META} m "
              "LEFT JOIN fastgate_entities e ON true")
SELECT_STAMP = f"SELECT m.version, m.stamp FROM {_META} m"
SELECT_VERSION = "SELECT value FROM fastgate_meta WHERE key = 'version'"
BUMP = ("UPDATE fastgate_meta SET value = CASE key WHEN 'version' THEN value + 1 "
        "ELSE floor(random() * 9e18)::bigint END WHERE key IN ('version', 'stamp') "
        "RETURNING key, value")


class Unavailable(Exception):
    """PostgreSQL cannot be reached (or the connection broke); the message says why."""


def connect(url: str, *, autocommit: bool = False):
    """A psycopg connection with bounded waits: connecting, a statement (lock waits
    included), and unacknowledged writes to a peer that vanished."""
    import psycopg
    conn = psycopg.connect(url, autocommit=autocommit, **connect_options(url))
    with conn.cursor() as cur:
        cur.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    if not autocommit:
        conn.commit()
    return conn


def connect_options(url: str) -> dict:
    """Keyword arguments for psycopg's connect: timeouts unless the URL sets its own."""
    import psycopg.conninfo
    given = psycopg.conninfo.conninfo_to_dict(url)
    out = {"connect_timeout": CONNECT_TIMEOUT_S, "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
           "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
           "keepalives_count": 2, "application_name": "fastgate"}
    return {k: v for k, v in out.items() if k not in given}


def ensure_schema(conn) -> None:
    """Create the tables if this database has none (one host at a time: an advisory lock),
    or refuse a schema this fastgate does not know. conn is not in autocommit mode."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for stmt in _SCHEMA:
            conn.execute(stmt)
        row = conn.execute("SELECT value FROM fastgate_meta WHERE key = 'schema'").fetchone()
        if row is None:
            conn.execute("INSERT INTO fastgate_meta VALUES ('schema', %s), ('version', 0), "
                         "('stamp', 0)", (SCHEMA_VERSION,))
        elif row[0] != SCHEMA_VERSION:
            raise StoreError(f"{redact(conn.info.dsn)}: schema version {row[0]}, this fastgate "
                             f"knows {SCHEMA_VERSION}")


def rows_to_state(rows) -> tuple[State, int]:
    """(State, stamp) from SELECT_ALL's rows (version, stamp, kind, scope, id, doc)."""
    state, stamp = State(), 0
    for version, stamp, kind, scope, id, doc in rows:
        state.version = version
        if kind is not None:
            state.set(kind, scope, id, orjson.loads(doc))
    return state, stamp


class PgTxn:
    """The writes of one transaction; applied to the in-memory State only after commit."""

    def __init__(self, conn, version: int):
        self.conn = conn
        self.version = version          # the committed version, read under the row lock
        self.writes: list[tuple[str, str, str, dict | None]] = []

    def put(self, kind: str, scope: str, id: str, doc: dict) -> None:
        self.conn.execute(
            "INSERT INTO fastgate_entities (kind, scope, id, doc) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (kind, scope, id) DO UPDATE SET doc = EXCLUDED.doc",
            (kind, scope, id, orjson.dumps(doc)))
        self.writes.append((kind, scope, id, doc))

    def delete(self, kind: str, scope: str, id: str) -> None:
        self.conn.execute("DELETE FROM fastgate_entities WHERE kind = %s AND scope = %s AND id = %s",
                          (kind, scope, id))
        self.writes.append((kind, scope, id, None))


class PgStore:
    """The fleet's state in PostgreSQL, with the interface of fastgate.control.store.Store.

    One connection, used by one thread at a time (the control API's executor; a lock
    guards it anyway). `path` is this host's own SQLite database in its data dir: API key
    usage is counted per host there (fastgate.control.usage), and the key sealer's secret
    lives beside it (fastgate.compile.keys.KeySealer)."""

    def __init__(self, url: str, data_dir: str | os.PathLike | None):
        self.url = url
        # without a data dir (`fastgate state copy`): no usage, no sealer, no local copy
        self.path = db_path(data_dir) if data_dir is not None else None
        self.copy = LocalCopy(data_dir) if data_dir is not None else None
        self.lock = threading.Lock()
        self.conn = None
        self.retry_at = 0.0             # monotonic time before which no new connection is tried
        self.error = ""                 # why the database was last unreachable
        # (version, stamp) of the State last loaded or committed, from either source
        self.seen: tuple[int, int] | None = None
        self.seen_version: int | None = None

    def close(self) -> None:
        with self.lock:
            self._drop()

    def available(self) -> bool:
        """Whether the database answered the last time it was asked."""
        return not self.error

    # ---- connection

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None

    def _failed(self, e: Exception) -> Unavailable:
        import psycopg
        self._drop()
        self.retry_at = time.monotonic() + RETRY_AFTER_S
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, psycopg.Error) and getattr(e, "sqlstate", None):
            reason = f"{reason} ({e.sqlstate})"
        self.error = f"{redact(self.url)}: {reason}"
        return Unavailable(self.error)

    def _connection(self):
        """The open connection, or a new one (Unavailable when that fails)."""
        import psycopg
        if self.conn is not None and not self.conn.closed:
            return self.conn
        if time.monotonic() < self.retry_at:
            raise Unavailable(self.error)
        try:
            conn = connect(self.url)
            ensure_schema(conn)
        except (psycopg.OperationalError, OSError) as e:
            raise self._failed(e) from None
        self.conn = conn
        self.error = ""
        return conn

    def _run(self, fn):
        """fn(conn) on the connection. A connection that was open before this call may have
        died meanwhile (a PostgreSQL restart): its first failure is retried once on a new
        connection, so the first call after a restart does not fail for nothing."""
        import psycopg
        reused = self.conn is not None and not self.conn.closed
        for attempt in (0, 1):
            conn = self._connection()
            try:
                return fn(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as e:
                err = self._failed(e)
                if not reused or attempt:
                    raise err from None
                self.retry_at = 0.0

    # ---- the Store interface

    def _note(self, version: int, stamp: int) -> None:
        self.seen = (version, stamp)
        self.seen_version = version

    def _known(self, version: int, stamp: int) -> int:
        """version as the model should compare it: -1 when the number is the one last seen
        but the stamp is not (a failover replaced that commit: the State must be reloaded)."""
        if self.seen is not None and self.seen[0] == version and self.seen[1] != stamp:
            return -1
        return version

    def version(self) -> int:
        """The committed version; while the database is unreachable, that of the State last
        loaded (so a reader keeps what it has instead of failing)."""
        with self.lock:
            def read(conn):
                with conn.transaction():
                    return conn.execute(SELECT_STAMP).fetchone()
            try:
                return self._known(*self._run(read))
            except Unavailable:
                if self.seen_version is None:
                    return -1           # never loaded: whatever the State has, load() runs
                return self.seen_version

    def load(self) -> State:
        """The whole State; while the database is unreachable, this host's local copy
        (Unavailable when there is none)."""
        with self.lock:
            def read(conn):
                with conn.transaction():
                    return rows_to_state(conn.execute(SELECT_ALL, binary=True).fetchall())
            try:
                state, stamp = self._run(read)
            except Unavailable:
                copied = self.copy.load() if self.copy is not None else None
                if copied is None:
                    raise
                state, stamp = copied
            self._note(state.version, stamp)
            return state

    @contextmanager
    def transaction(self) -> Iterator[PgTxn]:
        """One atomic change: all of the Txn's writes, a version bump and its NOTIFY, or
        nothing. Raises ServiceUnavailable when the database cannot be reached."""
        import psycopg
        with self.lock:
            def begin(conn):
                # the version row's lock serialises the writers of every host; under READ
                # COMMITTED the statements after it see what the previous writer committed
                conn.execute("SELECT value FROM fastgate_meta WHERE key = 'version' FOR UPDATE")
                return conn.execute(SELECT_STAMP).fetchone()
            try:
                version, stamp = self._run(begin)
            except Unavailable as e:
                raise unavailable(self, e) from None
            conn = self.conn
            try:
                txn = PgTxn(conn, self._known(version, stamp))
                yield txn
                if txn.writes:
                    bumped = dict(conn.execute(BUMP).fetchall())
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(bumped["version"])))
                    version, stamp = bumped["version"], bumped["stamp"]
                conn.commit()
                if txn.writes or txn.version != -1:
                    self._note(version, stamp)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as e:
                # the outcome of a commit cut off is unknown: the next read reloads either way
                self.seen = None
                raise unavailable(self, self._failed(e)) from None
            except BaseException:
                try:
                    conn.rollback()
                except psycopg.Error as e:
                    self._failed(e)
                raise

    def current_version(self, txn: PgTxn) -> int:
        return txn.version

    def read_state(self, txn: PgTxn) -> State:
        state, stamp = rows_to_state(txn.conn.execute(SELECT_ALL, binary=True).fetchall())
        self._note(state.version, stamp)
        return state


def unavailable(store: PgStore, e: Unavailable) -> ServiceUnavailable:
    err = ServiceUnavailable(
        f"The state database is unreachable ({e}); changes are refused until it answers "
        f"again, reads answer from this host's copy (version {store.seen_version}).")
    err.retry_after = "1"
    return err
