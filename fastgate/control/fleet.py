"""A fleet of hosts on one PostgreSQL: each host's local copy of the state, the admin
process's listener that keeps it current, and `fastgate state copy` (docs/fleet.md).

    host A control API ── one transaction: rows + version bump + NOTIFY ──▶ PostgreSQL
    every host's admin (FleetSync) ◀── NOTIFY fastgate_state, or a poll every few seconds
        └── reads the whole state in one statement, writes <data_dir>/state-copy.json
            (whole, then renamed in), and asks its supervisor to reload (SIGHUP)
    every host's supervisor ── reads only the local copy ──▶ checks, hands it to the workers

The supervisor never waits on the network: it serves whatever the local copy holds, which
is also what a host restarted while PostgreSQL is down serves.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

from fastgate.control.local_copy import LocalCopy
from fastgate.control.store import StoreError

POLL_INTERVAL_MS = 2000         # a missed notification is noticed within this long
RETRY_S = 1.0                   # between attempts to reach an unreachable database


def fetch_copy(url: str, copy: LocalCopy) -> int:
    """Read the whole state from PostgreSQL into the local copy (creating the tables in an
    empty database); returns its version. psycopg.Error / OSError when unreachable."""
    from fastgate.control.store_pg import SELECT_ALL, connect, ensure_schema, redact
    with connect(url) as conn:
        ensure_schema(conn)
        with conn.transaction():
            rows = conn.execute(SELECT_ALL, binary=True).fetchall()
    return copy.save(rows, redact(url))


class FleetSync:
    """The admin process's listener: LISTEN fastgate_state on its own connection, and on a
    notification (or every poll interval, for one missed while reconnecting) compare the
    database's (version, stamp) with the copy's; when they differ, read the whole state,
    save it as the copy and call on_change() (the admin's SIGHUP to its supervisor).

    `log(msg)` reports state changes once each (unreachable, reachable again)."""

    def __init__(self, url: str, copy: LocalCopy, *, poll_interval_ms: int = POLL_INTERVAL_MS,
                 on_change: Callable[[], None], log: Callable[[str], None]):
        self.url = url
        self.copy = copy
        self.poll_s = poll_interval_ms / 1000
        self.on_change = on_change
        self.log = log
        self.current: tuple[int, int] | None = None     # (version, stamp) of the copy
        self.down = False
        self.error = ""
        self.fetches = 0
        self.task: asyncio.Task | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            doc = self.copy.read()
        except StoreError as e:
            self.log(f"fleet: {e}; it is replaced by the next read from the database")
            doc = None
        if doc is not None:
            self.current = (doc["version"], doc["stamp"])
        self.task = loop.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def run(self) -> None:
        import psycopg
        from fastgate.control.store_pg import CHANNEL, connect_options, redact
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, **connect_options(self.url))
                try:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if self.down:
                        self.log(f"fleet: {redact(self.url)} reachable again")
                    self.down, self.error = False, ""
                    while True:
                        await self.catch_up(conn)
                        # one notification is enough: catch_up reads the latest state anyway
                        async for _ in conn.notifies(timeout=self.poll_s, stop_after=1):
                            pass
                finally:
                    await conn.close()
            except (psycopg.Error, OSError) as e:
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.error = reason
                if not self.down:
                    self.log(f"fleet: {redact(self.url)} unreachable ({reason}); serving the "
                             f"local copy (version {self.current[0] if self.current else 'none'}), "
                             "retrying")
                self.down = True
                await asyncio.sleep(RETRY_S)
            except asyncio.CancelledError:
                raise
            except Exception as e:      # a bug here must not stop the sync for good
                self.log(f"fleet: sync failed: {e!r}")
                await asyncio.sleep(RETRY_S)

    async def catch_up(self, conn) -> None:
        import psycopg
        from fastgate.control.store_pg import SELECT_ALL, SELECT_STAMP, redact
        try:
            row = await (await conn.execute(SELECT_STAMP)).fetchone()
        except psycopg.errors.UndefinedTable:
            return      # nothing was ever written there: the first writer creates the tables
        if tuple(row) == self.current:
            return
        rows = await (await conn.execute(SELECT_ALL, binary=True)).fetchall()
        loop = asyncio.get_running_loop()
        # the write and its fsync off the loop: the admin listener keeps answering meanwhile
        await loop.run_in_executor(None, self.copy.save, rows, redact(self.url))
        self.current = (rows[0][0], rows[0][1])
        self.fetches += 1
        self.on_change()


# ---------------------------------------------------------------- fastgate state copy

class CopyError(Exception):
    """`fastgate state copy` cannot go on; the message says why."""


def open_store(spec: str, *, source: bool):
    """The store a `fastgate state copy` argument names: sqlite:PATH (a data dir, or its
    .db file) or a postgresql:// URL. A source must exist; a SQLite destination is created."""
    from fastgate.compile.config.values import check_state_url, is_postgres_url
    from fastgate.control.store import DB_NAME, Store
    if is_postgres_url(spec):
        try:
            check_state_url(spec)
        except ValueError as e:
            raise CopyError(str(e)) from None
        from fastgate.control.store_pg import PgStore
        return PgStore(spec, None)
    if not spec.startswith("sqlite:") or spec == "sqlite:":
        raise CopyError(f"expected sqlite:PATH or postgresql://USER@HOST/DB, got {spec!r}")
    path = Path(spec[len("sqlite:"):]).expanduser()
    if path.is_dir() or path.suffix != ".db":
        path = path / DB_NAME
    if source and not path.exists():
        raise CopyError(f"no fastgate state at {path}")
    return Store(path)


def copy_state(source: str, dest: str, *, replace: bool = False) -> tuple[int, int]:
    """Every entity of source into dest, in one transaction of dest (its version bumped
    once; a PostgreSQL destination notifies every host). A destination that holds entities
    already is refused unless `replace` (then it ends up holding exactly the source's).
    Returns (entities copied, the destination's version). CopyError, StoreError,
    fastgate.control.errors.ApiError (the database unreachable) when it cannot."""
    src = open_store(source, source=True)
    try:
        state = src.load()
    finally:
        src.close()
    rows = list(state.entities())
    dst = open_store(dest, source=False)
    try:
        with dst.transaction() as txn:
            present = [(k, s, i) for k, s, i, _ in dst.read_state(txn).entities()]
            if present and not replace:
                raise CopyError(f"{describe(dest)} already holds {len(present)} entities; "
                                "--replace makes it a copy of the source")
            keep = {(k, s, i) for k, s, i, _ in rows}
            for kind, scope, id in present:
                if (kind, scope, id) not in keep:
                    txn.delete(kind, scope, id)
            for kind, scope, id, doc in rows:
                txn.put(kind, scope, id, doc)
        return len(rows), dst.version()
    finally:
        dst.close()


def describe(spec: str) -> str:
    from fastgate.compile.config.values import redact_url
    return redact_url(spec)
