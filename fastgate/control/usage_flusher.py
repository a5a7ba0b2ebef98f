"""The admin process's usage flush loop: the workers' shared-memory counters into the
data dir's SQLite (fastgate.control.usage.UsageStore), then, with `redis:`, what changed
to Redis (fastgate.control.usage_redis)."""

from __future__ import annotations

import os

from fastgate.compile.shared import UsageRecorder
from fastgate.control.usage import FLUSH_INTERVAL_S, UsageStore
from fastgate.control.usage_redis import RedisUsage


class UsageFlusher:
    """The flush loop of the admin process: flush() every interval, and once more at
    stop(); then, when the config has `redis:`, push what changed to Redis
    (fastgate.control.usage_redis). Runs in a thread so a busy database or a slow Redis never
    stalls the admin's event loop."""

    def __init__(self, recorder: UsageRecorder, data_dir: str | os.PathLike,
                 interval_s: float = FLUSH_INTERVAL_S, log=None, redis_config=None):
        import threading
        self.recorder = recorder
        self.data_dir = data_dir
        self.interval_s = interval_s
        self.log = log or (lambda msg: None)
        self.redis_config = redis_config or (lambda: None)   # -> config.RedisConfig or None
        self._redis = None
        self._redis_down = False
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
                    # no key used yet: no database to create in the data dir, unless one
                    # exists with rows a Redis outage kept from an earlier run to push
                    if not any(True for _ in self.recorder.entries()) and not (
                            self.redis_config() is not None and self._db_exists()):
                        if stopping:
                            break
                        continue
                    store = UsageStore.in_dir(self.data_dir)
                store.flush(self.recorder)
            except Exception as e:   # a locked or full disk: the counters keep it for the next try
                self.log(f"usage flush failed, retrying: {e}")
            if store is not None:
                self.push(store)
            if stopping:
                break
        if store is not None:
            store.close()
        if self._redis is not None:
            self._redis.close()

    def _db_exists(self) -> bool:
        from fastgate.control.store import db_path
        return db_path(self.data_dir).exists()

    def push(self, store: UsageStore) -> None:
        """The rows SQLite gained since the last push, to Redis. While Redis is down they
        wait in SQLite (the push cursor does not move) and go with the next push that
        gets through."""
        cfg = self.redis_config()
        if cfg is None:
            return
        if self._redis is None or self._redis.cfg != cfg:
            if self._redis is not None:
                self._redis.close()
            self._redis = RedisUsage(cfg)
        try:
            self._redis.push(store)
        except Exception as e:
            if not self._redis_down:
                self.log(f"usage push to Redis failed, counting locally until it is back: {e}")
            self._redis_down = True
            return
        if self._redis_down:
            self.log("usage push to Redis: back, backlog pushed")
        self._redis_down = False

    def stop(self, timeout_s: float = 15.0) -> None:
        """Flush one last time and end the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)


# ---------------------------------------------------------------- reports
