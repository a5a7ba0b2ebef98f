"""Metering: calls and bytes in/out per API key per UTC day, the basis for billing.

Three parts:

- `UsageRecorder`: counters in shared memory, created by the supervisor BEFORE it
  forks, incremented by the workers on the hot path (`record(slot, ...)`, no lock,
  no syscall). Each worker owns one slab of the mapping and is the only writer of
  its slab, so a plain read-modify-write is exact without atomics; the readers (the
  flusher) see each 8-byte counter whole because memoryview stores an aligned
  64-bit item with one machine store. Counters only grow: a worker that dies and is
  replaced under the same worker id finds its predecessor's entries and goes on
  counting in them.
- `UsageStore`: the `usage` table (key_id, day, calls, bytes_in, bytes_out) in the
  data dir's fastgate.db, next to the control plane's documents. `flush(recorder)`
  moves what the counters gained since the last flush into it, in ONE transaction
  that also advances a per-counter cursor (`usage_cursor`, keyed by the mapping's
  random generation id). So a flush is exactly-once: a flusher killed at any point
  and restarted (the admin process is restarted by the supervisor) neither loses
  nor double-counts; only the death of the whole gateway loses what was counted
  since the last flush, at most one flush interval.
- Reports: `get_usage()` in AWS's GetUsage shape, `export_rows()` for the CLI.

A flush attributes the calls it moves to the UTC day of the flush: a call made a
second before midnight and flushed after it counts for the next day. The error is
at most one flush interval per day boundary.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable

import orjson

from fastgate.compile.shared import COUNTERS, SEP, UsageRecorder, _ZEROS, _add, _sub

FLUSH_INTERVAL_S = 1.0
CURSOR_KEEP_S = 7 * 86400        # cursors of dead generations are dropped after this
SCHEMA_VERSION = 2               # PRAGMA user_version; 0/1 = the calls-per-key-per-day table

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,              -- YYYY-MM-DD, UTC
    api_id TEXT NOT NULL DEFAULT '', -- '' = counted before usage was kept per stage
    stage TEXT NOT NULL DEFAULT '',
    requests INTEGER NOT NULL DEFAULT 0,
    throttled INTEGER NOT NULL DEFAULT 0,
    status_4xx INTEGER NOT NULL DEFAULT 0,
    status_5xx INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    quota_used INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,   -- usage_meta 'version' of the flush that last changed it
    PRIMARY KEY (key_id, day, api_id, stage)
);
CREATE TABLE IF NOT EXISTS usage_cursor (
    generation TEXT NOT NULL,       -- one per UsageRecorder mapping (one gateway run)
    worker INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    ident TEXT NOT NULL,
    requests INTEGER NOT NULL,
    throttled INTEGER NOT NULL,
    status_4xx INTEGER NOT NULL,
    status_5xx INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    quota_used INTEGER NOT NULL,
    updated INTEGER NOT NULL,       -- epoch s of the last flush that moved it
    PRIMARY KEY (generation, worker, slot)
);
CREATE TABLE IF NOT EXISTS usage_meta (
    name TEXT PRIMARY KEY,          -- host_id, version, redis_pushed
    value TEXT NOT NULL
);
"""

# Schema 1 (calls, bytes per key per day) -> 2, in one transaction: every old row is kept
# as usage of no particular stage (api_id = stage = ''), its calls as both requests and
# quota_used (schema 1 counted only calls its plan let through). Schema 1's cursors
# belong to mappings of gateways that ran the old code: none survives an upgrade.
_MIGRATE_1_TO_2 = """
ALTER TABLE usage RENAME TO usage_v1;
DROP TABLE IF EXISTS usage_cursor;
{schema}
INSERT INTO usage (key_id, day, requests, bytes_in, bytes_out, quota_used)
    SELECT key_id, day, calls, bytes_in, bytes_out, calls FROM usage_v1;
DROP TABLE usage_v1
"""


def utc_day(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%d")


ROW_COLUMNS = ("key_id", "day", "api_id", "stage") + COUNTERS
_COLS = ", ".join(ROW_COLUMNS)
_UPSERT = (f"INSERT INTO usage ({_COLS}, version) VALUES ({', '.join('?' * (len(ROW_COLUMNS) + 1))}) "
           "ON CONFLICT (key_id, day, api_id, stage) DO UPDATE SET "
           + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTERS)
           + ", version = excluded.version")


class UsageStore:
    """The usage tables of one database file (fastgate.db of a data dir)."""

    def __init__(self, path: str | os.PathLike):
        from fastgate.control.store import BUSY_TIMEOUT_MS
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                    isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")   # a flushed count survives power loss
        self._migrate()

    def _migrate(self) -> None:
        c = self.conn
        if c.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            # current; the tables may still be missing (a copy of the control plane's
            # documents without them): IF NOT EXISTS makes them
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                c.execute(stmt)
            return
        c.execute("BEGIN IMMEDIATE")     # one migrator; the others wait and find it done
        try:
            if c.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                cols = {r[1] for r in c.execute("PRAGMA table_info(usage)")}
                script = _MIGRATE_1_TO_2.format(schema=_SCHEMA) if "calls" in cols else _SCHEMA
                for stmt in filter(str.strip, script.split(";")):
                    c.execute(stmt)
                c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike) -> "UsageStore":
        from fastgate.control.store import db_path
        return cls(db_path(data_dir))

    def close(self) -> None:
        self.conn.close()

    def meta(self, name: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM usage_meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, name: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO usage_meta VALUES (?, ?)", (name, str(value)))

    def host_id(self) -> str:
        """This data dir's name among the hosts that share a Redis (made once, kept)."""
        host = self.meta("host_id")
        if host is None:
            self.conn.execute("INSERT OR IGNORE INTO usage_meta VALUES ('host_id', ?)",
                              (secrets.token_hex(8),))
            host = self.meta("host_id")
        return host

    def flush(self, recorder: UsageRecorder, now_s: float | None = None) -> int:
        """Move what the counters gained since the last flush into the usage table.
        One transaction; returns the requests moved."""
        now_s = time.time() if now_s is None else now_s
        day = utc_day(now_s)
        entries = list(recorder.entries())
        moved = 0
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            # the cursor is read inside the write transaction: two flushers (the admin
            # process and the supervisor's final flush) can never move the same delta
            cursor = {(w, s): tuple(rest) for w, s, *rest in c.execute(
                f"SELECT worker, slot, {', '.join(COUNTERS)} FROM usage_cursor "
                "WHERE generation = ?", (recorder.generation,))}
            version = int(self.meta("version", "0")) + 1
            changed = False
            for w, s, ident, counts in entries:
                delta = _sub(counts, cursor.get((w, s), _ZEROS))
                if not any(delta):
                    continue
                key, api, stage = ident.split(SEP)
                c.execute(_UPSERT, (key, day, api, stage, *delta, version))
                c.execute("INSERT OR REPLACE INTO usage_cursor VALUES "
                          f"(?, ?, ?, ?, {', '.join('?' * len(COUNTERS))}, ?)",
                          (recorder.generation, w, s, ident, *counts, int(now_s)))
                moved += delta[0]
                changed = True
            if changed:
                self._set_meta("version", version)
            c.execute("DELETE FROM usage_cursor WHERE generation != ? AND updated < ?",
                      (recorder.generation, int(now_s) - CURSOR_KEEP_S))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return moved

    def add(self, key_id: str, day: str, api_id: str = "", stage: str = "", **counts: int) -> None:
        """Add to one row directly (imports, tests): counts by COUNTERS name."""
        unknown = set(counts) - set(COUNTERS)
        if unknown:
            raise ValueError(f"unknown usage counters {sorted(unknown)}")
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            version = int(self.meta("version", "0")) + 1
            c.execute(_UPSERT, (key_id, day, api_id, stage,
                                *(counts.get(n, 0) for n in COUNTERS), version))
            self._set_meta("version", version)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def rows(self, start: str | None = None, end: str | None = None,
             key_ids: Iterable[str] | None = None) -> list[tuple]:
        """ROW_COLUMNS tuples by key, day, API, stage; days inclusive."""
        sql, args = _where(start, end, key_ids)
        return [tuple(r) for r in self.conn.execute(
            f"SELECT {_COLS} FROM usage {sql} ORDER BY key_id, day, api_id, stage", args)]

    def changed_since(self, version: int) -> tuple[int, list[tuple]]:
        """(the latest version, ROW_COLUMNS tuples of the rows changed after `version`)."""
        c = self.conn
        c.execute("BEGIN")      # one snapshot: the version read matches the rows read
        try:
            latest = int(self.meta("version", "0"))
            rows = [tuple(r) for r in c.execute(
                f"SELECT {_COLS} FROM usage WHERE version > ?", (version,))]
        finally:
            c.execute("COMMIT")
        return latest, rows


def _where(start, end, key_ids) -> tuple[str, list]:
    sql = "WHERE 1"
    args: list = []
    if start:
        sql += " AND day >= ?"
        args.append(start)
    if end:
        sql += " AND day <= ?"
        args.append(end)
    if key_ids is not None:
        ids = list(key_ids)
        sql += f" AND key_id IN ({','.join('?' * len(ids))})"
        args += ids
    return sql, args


DATE_FORMAT = "%Y-%m-%d"


def parse_day(value: str, what: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, DATE_FORMAT).date()
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {what} '{value}': use the format yyyy-MM-dd") from None


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def merge_rows(*row_lists: list[tuple]) -> list[tuple]:
    """ROW_COLUMNS rows of several hosts summed by (key, day, api, stage), sorted."""
    out: dict[tuple, tuple] = {}
    for rows in row_lists:
        for r in rows:
            k = tuple(r[:4])
            out[k] = _add(out.get(k, _ZEROS), tuple(r[4:]))
    return [k + v for k, v in sorted(out.items())]


def in_plan(row: tuple, stages: set[tuple[str, str]] | None) -> bool:
    """A row counts for a plan when its API stage is one of the plan's. Rows from before
    usage was kept per stage (api_id '') count for every plan of their key, as they did."""
    return stages is None or not row[2] or (row[2], row[3]) in stages


def quota_used_by_day(rows: list[tuple], stages: set[tuple[str, str]] | None) -> dict[str, dict[str, int]]:
    """key id -> day -> quota_used over the rows of the plan's stages."""
    out: dict[str, dict[str, int]] = {}
    q = ROW_COLUMNS.index("quota_used")
    for r in rows:
        if in_plan(r, stages):
            daily = out.setdefault(r[0], {})
            daily[r[1]] = daily.get(r[1], 0) + r[q]
    return out


def usage_values(rows: list[tuple], key_ids: list[str], start: dt.date, end: dt.date,
                 quota: dict | None, quota_limit_for,
                 stages: set[tuple[str, str]] | None = None) -> dict[str, list[list[int]]]:
    """AWS's GetUsage values: key id -> one [used, remaining] per day from start to end.
    `rows`: ROW_COLUMNS rows up to `end` (earlier days matter for the quota period);
    `used` is the requests counted against the plan's quota on the plan's stages;
    `remaining` is what the quota left after that day in that day's period (0 without a
    quota); quota_limit_for(key_id, period_start_s) gives a period's limit."""
    from fastgate.compile.keys import period_bounds
    out: dict[str, list[list[int]]] = {}
    by_key = quota_used_by_day(rows, stages)
    for key in key_ids:
        daily = by_key.get(key, {})
        series = []
        for d in days(start, end):
            day = d.strftime(DATE_FORMAT)
            used = daily.get(day, 0)
            remaining = 0
            if quota is not None:
                noon = int(dt.datetime(d.year, d.month, d.day, 12, tzinfo=dt.timezone.utc).timestamp())
                p_start, _ = period_bounds(quota["period"], noon)
                first = utc_day(p_start)
                in_period = sum(c for dd, c in daily.items() if first <= dd <= day)
                remaining = max(quota_limit_for(key, p_start) - in_period, 0)
            series.append([used, remaining])
        out[key] = series
    return out


# the export's columns; the counters' stored names differ for 4xx and 5xx only
EXPORT_COLUMNS = ("key_id", "day", "api_id", "stage", "requests", "throttled", "4xx", "5xx",
                  "bytes_in", "bytes_out", "quota_used")


def export(rows: list[tuple], fmt: str, names: dict[str, str] | None = None) -> str:
    """The CLI's export: CSV with a header row, or a JSON array of objects."""
    names = names or {}
    if fmt == "json":
        return orjson.dumps([dict(zip(EXPORT_COLUMNS, r), key_name=names.get(r[0], ""))
                             for r in rows], option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt != "csv":
        raise ValueError(f"unknown format {fmt!r}: use csv or json")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS + ("key_name",))
    for r in rows:
        w.writerow(tuple(r) + (names.get(r[0], ""),))
    return buf.getvalue()
