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
import mmap
import os
import secrets
import sqlite3
import time
from pathlib import Path
from typing import Iterable

import orjson

MAGIC = 0x46475531               # "FGU1": layout version of the mapping
HEADER_WORDS = 8                 # 64 bytes: magic, workers, capacity, generation (2 words), pad
SLAB_HEADER_WORDS = 8            # 64 bytes per slab: entries used, dropped records, pad
ENTRY_WORDS = 8                  # 64 bytes per entry: key length, 32 key bytes, 3 counters
KEY_MAX = 32                     # bytes of key id an entry holds (AWS's ids are 10)
CALLS, BYTES_IN, BYTES_OUT = 5, 6, 7   # word offsets of the counters inside an entry
FLUSH_INTERVAL_S = 1.0
CURSOR_KEEP_S = 7 * 86400        # cursors of dead generations are dropped after this

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    key_id TEXT NOT NULL,
    day TEXT NOT NULL,              -- YYYY-MM-DD, UTC
    calls INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key_id, day)
);
CREATE TABLE IF NOT EXISTS usage_cursor (
    generation TEXT NOT NULL,       -- one per UsageRecorder mapping (one gateway run)
    worker INTEGER NOT NULL,
    slot INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    calls INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    updated INTEGER NOT NULL,       -- epoch s of the last flush that moved it
    PRIMARY KEY (generation, worker, slot)
);
"""


class UsageRecorder:
    """Per-key counters in one anonymous shared mapping: `workers` slabs of `capacity`
    entries. Create it in the supervisor before forking (`UsageRecorder.create`)."""

    def __init__(self, mm: mmap.mmap, workers: int, capacity: int, generation: str):
        self._mm = mm
        self._q = memoryview(mm).cast("Q")      # the whole mapping as uint64 words
        self.workers = workers
        self.capacity = capacity
        self.generation = generation
        self._slab_words = SLAB_HEADER_WORDS + capacity * ENTRY_WORDS

    @classmethod
    def create(cls, workers: int, capacity: int = 16384) -> "UsageRecorder":
        """A zeroed table for `workers` worker ids (0..workers-1) and `capacity` distinct
        keys per worker. Memory: 64 B per entry (1 MiB per worker by default)."""
        if workers < 1 or capacity < 1:
            raise ValueError("workers and capacity must be >= 1")
        size = 8 * (HEADER_WORDS + workers * (SLAB_HEADER_WORDS + capacity * ENTRY_WORDS))
        mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        gen = secrets.token_bytes(16)
        rec = cls(mm, workers, capacity, gen.hex())
        q = rec._q
        q[0], q[1], q[2] = MAGIC, workers, capacity
        q[3], q[4] = int.from_bytes(gen[:8], "little"), int.from_bytes(gen[8:], "little")
        return rec

    def _slab(self, worker: int) -> int:
        if not 0 <= worker < self.workers:
            raise ValueError(f"worker id {worker} outside 0..{self.workers - 1}")
        return HEADER_WORDS + worker * self._slab_words

    def slot(self, worker: int, key_id: str) -> int:
        """The entry of key_id in this worker's slab, claimed if new; a negative slot when
        the slab is full (record() then only counts the call in stats()["dropped"]). Call it once per key per
        snapshot, in the worker that will record."""
        raw = key_id.encode()
        if not 0 < len(raw) <= KEY_MAX:
            raise ValueError(f"key id must be 1..{KEY_MAX} bytes")
        base = self._slab(worker)
        q, used = self._q, self._q[base]
        first = base + SLAB_HEADER_WORDS
        for i in range(used):
            e = first + i * ENTRY_WORDS
            if q[e] == len(raw) and self._key_at(e) == raw:
                return e
        if used >= self.capacity:
            return -(base + 2)      # record() then counts into this slab's `dropped` word
        e = first + used * ENTRY_WORDS
        # key bytes, then their length, then the count: a reader that sees the new count
        # sees a complete entry (x86-64 keeps stores in order; on weaker orders a reader
        # that still sees length 0 skips the entry until the next flush)
        off = e * 8 + 8
        self._mm[off:off + KEY_MAX] = raw.ljust(KEY_MAX, b"\0")
        q[e] = len(raw)
        q[base] = used + 1
        return e

    def words(self) -> memoryview:
        """The whole mapping as uint64 words: what fastgate._core.keys.UsageCounters
        records through on the request path."""
        return self._q

    def _key_at(self, e: int) -> bytes:
        off = e * 8 + 8
        return self._mm[off:off + self._q[e]]

    def record(self, slot: int, bytes_in: int, bytes_out: int) -> None:
        """One call of the slot's key. Only the worker that owns the slot calls this."""
        q = self._q
        if slot < 0:
            # a full slab: count what could not be attributed, so the loss is visible
            q[-slot - 1] += 1
            return
        q[slot + CALLS] += 1
        q[slot + BYTES_IN] += bytes_in
        q[slot + BYTES_OUT] += bytes_out

    def entries(self) -> Iterable[tuple[int, int, str, int, int, int]]:
        """(worker, slot, key id, calls, bytes_in, bytes_out) of every claimed entry,
        cumulative since the mapping was created."""
        q = self._q
        for w in range(self.workers):
            base = self._slab(w)
            first = base + SLAB_HEADER_WORDS
            for i in range(min(q[base], self.capacity)):
                e = first + i * ENTRY_WORDS
                n = q[e]
                if not 0 < n <= KEY_MAX:
                    continue        # being claimed right now: next flush
                yield w, e, self._key_at(e).decode(errors="replace"), q[e + CALLS], q[e + BYTES_IN], q[e + BYTES_OUT]

    def stats(self) -> dict:
        """Entries in use and calls dropped because a slab was full, over all workers."""
        used = dropped = 0
        for w in range(self.workers):
            base = self._slab(w)
            used += self._q[base]
            dropped += self._q[base + 1]
        return {"entries": used, "capacity": self.capacity * self.workers, "dropped": dropped}

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """key id -> (calls, bytes_in, bytes_out) summed over the workers."""
        out: dict[str, tuple[int, int, int]] = {}
        for _, _, key, c, bi, bo in self.entries():
            pc, pi, po = out.get(key, (0, 0, 0))
            out[key] = (pc + c, pi + bi, po + bo)
        return out


def utc_day(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.timezone.utc).strftime("%Y-%m-%d")


class UsageStore:
    """The usage tables of one database file (fastgate.db of a data dir)."""

    def __init__(self, path: str | os.PathLike):
        from fastgate.store import BUSY_TIMEOUT_MS
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_MS / 1000,
                                    isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")   # a flushed count survives power loss
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            self.conn.execute(stmt)

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike) -> "UsageStore":
        from fastgate.store import db_path
        return cls(db_path(data_dir))

    def close(self) -> None:
        self.conn.close()

    def flush(self, recorder: UsageRecorder, now_s: float | None = None) -> int:
        """Move what the counters gained since the last flush into the usage table.
        One transaction; returns the calls moved."""
        now_s = time.time() if now_s is None else now_s
        day = utc_day(now_s)
        entries = list(recorder.entries())
        moved = 0
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            # the cursor is read inside the write transaction: two flushers (the admin
            # process and the supervisor's final flush) can never move the same delta
            cursor = {(w, s): (k, ca, bi, bo) for w, s, k, ca, bi, bo in c.execute(
                "SELECT worker, slot, key_id, calls, bytes_in, bytes_out FROM usage_cursor "
                "WHERE generation = ?", (recorder.generation,))}
            for w, s, key, calls, b_in, b_out in entries:
                _, pc, pi, po = cursor.get((w, s), (key, 0, 0, 0))
                dc, di, do = calls - pc, b_in - pi, b_out - po
                if not (dc or di or do):
                    continue
                c.execute("INSERT INTO usage (key_id, day, calls, bytes_in, bytes_out) "
                          "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, day) DO UPDATE SET "
                          "calls = calls + excluded.calls, bytes_in = bytes_in + excluded.bytes_in, "
                          "bytes_out = bytes_out + excluded.bytes_out", (key, day, dc, di, do))
                c.execute("INSERT OR REPLACE INTO usage_cursor VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          (recorder.generation, w, s, key, calls, b_in, b_out, int(now_s)))
                moved += dc
            c.execute("DELETE FROM usage_cursor WHERE generation != ? AND updated < ?",
                      (recorder.generation, int(now_s) - CURSOR_KEEP_S))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return moved

    def add(self, key_id: str, day: str, calls: int, bytes_in: int = 0, bytes_out: int = 0) -> None:
        """Add to one day's row directly (imports, tests, the Redis sink)."""
        self.conn.execute("INSERT INTO usage VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_id, day) DO "
                          "UPDATE SET calls = calls + excluded.calls, bytes_in = bytes_in + "
                          "excluded.bytes_in, bytes_out = bytes_out + excluded.bytes_out",
                          (key_id, day, calls, bytes_in, bytes_out))

    def rows(self, start: str | None = None, end: str | None = None,
             key_ids: Iterable[str] | None = None) -> list[tuple[str, str, int, int, int]]:
        """(key_id, day, calls, bytes_in, bytes_out) by key then day; days inclusive."""
        sql = "SELECT key_id, day, calls, bytes_in, bytes_out FROM usage WHERE 1"
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
        return [tuple(r) for r in self.conn.execute(sql + " ORDER BY key_id, day", args)]

    def calls_between(self, key_id: str, start: str, end: str) -> int:
        row = self.conn.execute("SELECT COALESCE(SUM(calls), 0) FROM usage WHERE key_id = ? AND "
                                "day >= ? AND day <= ?", (key_id, start, end)).fetchone()
        return row[0]


class UsageFlusher:
    """The flush loop of the admin process: flush() every interval, and once more at
    stop(). Runs in a thread so a busy database never stalls the admin's event loop."""

    def __init__(self, recorder: UsageRecorder, data_dir: str | os.PathLike,
                 interval_s: float = FLUSH_INTERVAL_S, log=None):
        import threading
        self.recorder = recorder
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.log = log or (lambda msg: None)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastgate-usage", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        store = None
        while True:
            stopping = self._stop.wait(self.interval_s)
            try:
                if store is None:
                    if not any(True for _ in self.recorder.entries()):
                        if stopping:
                            break
                        continue    # no key used yet: no database to create in the data dir
                    store = UsageStore.in_dir(self.data_dir)
                store.flush(self.recorder)
            except Exception as e:   # a locked or full disk: the counters keep it for the next try
                self.log(f"usage flush failed, retrying: {e}")
            if stopping:
                break
        if store is not None:
            store.close()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Flush one last time and end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)


# ---------------------------------------------------------------- reports

DATE_FORMAT = "%Y-%m-%d"


def parse_day(value: str, what: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, DATE_FORMAT).date()
    except (TypeError, ValueError):
        raise ValueError(f"Invalid {what} '{value}': use the format yyyy-MM-dd") from None


def days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def usage_values(store: UsageStore, key_ids: list[str], start: dt.date, end: dt.date,
                 quota: dict | None, quota_limit_for) -> dict[str, list[list[int]]]:
    """AWS's GetUsage values: key id -> one [used, remaining] per day from start to end.
    `remaining` is what the quota left after that day in that day's period (0 without a
    quota); quota_limit_for(key_id, period_start_s) gives a period's limit."""
    from fastgate.keys import period_bounds
    out: dict[str, list[list[int]]] = {}
    rows = store.rows(None, end.strftime(DATE_FORMAT), key_ids)
    by_key: dict[str, dict[str, int]] = {}
    for key, day, calls, _, _ in rows:
        by_key.setdefault(key, {})[day] = calls
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


EXPORT_COLUMNS = ("key_id", "day", "calls", "bytes_in", "bytes_out")


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
