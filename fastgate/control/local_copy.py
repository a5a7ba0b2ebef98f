"""A fleet host's local copy of the shared state: <data_dir>/state-copy.json, the last
state this host read from PostgreSQL. Its supervisor serves only this copy (so a reload
never waits on the network), and serves it still while the database is unreachable,
after a restart too (docs/fleet.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import orjson

from fastgate.compile.gcpause import gc_paused
from fastgate.control.state import State
from fastgate.control.store import StoreError

COPY_NAME = "state-copy.json"
COPY_FORMAT = 1


class LocalCopy:
    """<data_dir>/state-copy.json: the last state this host read from PostgreSQL.

    {"format": 1, "version": N, "stamp": S, "source": URL without password, "saved": epoch s,
     "entities": [[kind, scope, id, document], ...]}

    Written under a temporary name, flushed, then renamed over the old one: a reader (or
    a crash) sees the old copy or the new one, never half of one. Mode 0600: it holds
    what the database holds (sealed key values, certificates' private keys)."""

    def __init__(self, data_dir: str | os.PathLike):
        self.path = Path(data_dir) / COPY_NAME

    def save(self, rows, source: str) -> int:
        """Write the rows of store_pg.SELECT_ALL (version, stamp, kind, scope, id, doc bytes)
        as the copy; returns its version. The documents are copied as the bytes they are."""
        version = stamp = 0
        parts = []
        for version, stamp, kind, scope, id, doc in rows:
            if kind is not None:
                parts.append(orjson.dumps([kind, scope, id])[:-1] + b"," + bytes(doc) + b"]")
        head = orjson.dumps({"format": COPY_FORMAT, "version": version, "stamp": stamp,
                             "source": source, "saved": round(time.time(), 3)})
        data = head[:-1] + b',"entities":[' + b",".join(parts) + b"]}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{COPY_NAME}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)            # the rename itself survives a power loss
        finally:
            os.close(dir_fd)
        return version

    def read(self) -> dict | None:
        """The copy's parsed document; None when there is none. StoreError when unreadable."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"{self.path}: {e.strerror}") from None
        try:
            with gc_paused():       # PERF: see fastgate.compile.gcpause
                doc = orjson.loads(data)
            if doc.get("format") != COPY_FORMAT:
                raise ValueError(f"format {doc.get('format')!r}, this fastgate knows {COPY_FORMAT}")
            return doc
        except (ValueError, AttributeError) as e:
            raise StoreError(f"{self.path}: not a copy of the state: {e}") from None

    def load(self) -> tuple[State, int] | None:
        """(State, stamp) of the copy; None when there is none."""
        doc = self.read()
        if doc is None:
            return None
        state = State()
        for kind, scope, id, entity in doc["entities"]:
            state.set(kind, scope, id, entity)
        state.version = doc["version"]
        return state, doc["stamp"]
