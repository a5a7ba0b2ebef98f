"""One worker process: a uvloop event loop serving the inherited listeners.

The supervisor forks workers after binding the listeners and creating the
shared metrics table; each worker compiles its own snapshot from the config
and swaps in a new one on SIGHUP. SIGTERM drains: stop accepting, let requests
in flight finish (up to the drain timeout), close idle keep-alive connections.
SIGUSR2 retires the worker after a binary upgrade: the same drain, but a
keep-alive connection is closed only after its next response, or once idle for
RETIRE_IDLE_GRACE_S, because the new process's workers already serve the port.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time

import uvloop

from fastgate._core.pipeline import seed_random
from fastgate._core.client import protocol_factory
from fastgate._core.netio import Listener, Poller
from fastgate._core.runtime import Worker
from fastgate.compile.snapshot import build_snapshot
from fastgate.process.signals import Coalesced, add_loop_signal_handlers
from fastgate.compile.tls import listener_tls_for
from fastgate.observability.log import log


GC_GEN0_THRESHOLD = 20000   # container allocations between young-generation collections
RETIRE_IDLE_GRACE_S = 1.0   # on SIGUSR2, keep-alive connections with no request this long close
REBUILD_LATE_S = 0.05       # a stale snapshot is rebuilt this long after its rebuild_at_s
WS_CLOSE_WAIT_S = 1.0       # after the drain, WebSocket clients get this long to answer the 1001


def open_connection_slots(metrics, worker_id: int) -> tuple[int, int]:
    """(all workers' open connections, this worker's own count) gauge slots."""
    return (metrics.gauge_series("fastgate_open_connections", {}),
            metrics.gauge_series("fastgate_worker_open_connections", {"worker": str(worker_id)}))


class WorkerProcess:
    def __init__(self, worker_id: int, listeners, loader, metrics, on_ready=None):
        self.worker_id = worker_id
        self.listeners = listeners          # [(socket, port, backlog)]: this worker's own
        self.loader = loader                # () -> LoadedConfig
        self.metrics = metrics
        self.on_ready = on_ready            # called once the loop serves the listeners
        self.loop = None
        self.worker = None
        self.servers = []
        self.tls_listeners = []             # fastgate.compile.tls.ListenerTLS of the TLS listeners
        self.stopping = False
        self.rebuild_timer = None           # rebuilds a snapshot at its rebuild_at_s

    def run(self) -> int:
        seed_random(int.from_bytes(os.urandom(8), "little"))   # canary picks differ per worker
        self.loop = uvloop.new_event_loop()
        asyncio.set_event_loop(self.loop)
        loaded = self.loader()
        from fastgate.phases.access import Services
        from fastgate.compile.shared import shared_usage
        # authorizer caches and clients, kept across reloads; API key metering
        self.services = Services(worker_id=self.worker_id, usage=shared_usage())
        snapshot = build_snapshot(loaded, self.metrics, services=self.services)
        self.services.caches.sweep()
        self.worker = Worker(snapshot, self.loop, self.worker_id)
        # plain TCP (clients of plain listeners, upstreams by IP) in one epoll set (netio.pxd)
        self.worker.poller = Poller(self.loop)
        self.worker.usage = self.services.usage.counters if self.services.usage is not None else None
        self.configure_functions(loaded)
        if self.metrics is not None:
            self.worker.open_slot, self.worker.own_slot = open_connection_slots(
                self.metrics, self.worker_id)
        self.drain_timeout_s = loaded.config.limits.drain_timeout_ms / 1000
        for sock, port, backlog in self.listeners:
            # the listener's context is fixed here; its SNI callback reads the current
            # snapshot's domain certificates, so reloads change them without a restart
            tls = listener_tls_for(loaded, sock.getsockname(), lambda: self.worker.snapshot.tls)
            if tls is not None:
                self.tls_listeners.append(tls)
                server = self.loop.run_until_complete(self.loop.create_server(
                    protocol_factory(self.worker, port), sock=sock, backlog=backlog,
                    ssl=tls.context))
            else:
                sock.listen(backlog)
                server = Listener(self.worker.poller, sock, protocol_factory(self.worker, port))
            self.servers.append(server)
        add_loop_signal_handlers(self.loop, {
            signal.SIGTERM: self.drain, signal.SIGHUP: Coalesced(self.loop, self.reload),
            signal.SIGUSR1: self.reopen_logs, signal.SIGUSR2: self.retire,
            # Ctrl-C in a terminal reaches every process of the group: the supervisor decides
            signal.SIGINT: lambda: None})
        self.worker.start()
        self.schedule_rebuild()
        if self.on_ready is not None:
            self.loop.call_soon(self.on_ready)
        # PERF: what exists now (modules, config, snapshot) lives as long as the worker: keep it
        # out of every collection, and collect the young generation less often. With 1,000
        # client connections the default thresholds spent ~6% of the worker's CPU in the
        # cyclic GC (bench/wrk_compare.py --connections 1000).
        gc.freeze()
        gc.set_threshold(GC_GEN0_THRESHOLD, 20, 20)
        try:
            self.loop.run_forever()
        finally:
            if self.services.websockets is not None:
                self.services.websockets.close()
            if self.worker.functions is not None:
                self.loop.run_until_complete(self.worker.functions.close())
            for log_ in self.logs():
                log_.close()
        return 0

    def configure_functions(self, loaded) -> None:
        """Handler processes start on first use, so a gateway without functions pays nothing."""
        config = loaded.config
        if not config.functions and self.worker.functions is None:
            return
        if self.worker.functions is None:
            from fastgate.phases.functions.gateway import FunctionRunner
            self.worker.functions = FunctionRunner(self.loop)
        self.worker.functions.configure(config, loaded.base_dir())
        self.services.functions = self.worker.functions   # Lambda authorizers call it

    def reload(self) -> None:
        try:
            loaded = self.loader()
            snapshot = build_snapshot(loaded, self.metrics, services=self.services)
            self.services.caches.sweep()
            self.configure_functions(loaded)
        except Exception as e:  # a bad config never takes a working worker down
            log(f"reload failed, keeping the running config: {e}")
            return
        self.worker.swap(snapshot)
        self.schedule_rebuild()
        for tls in self.tls_listeners:
            tls.refresh()

    def schedule_rebuild(self) -> None:
        """A snapshot holding an UpdateUsage grant is stale when the grant's quota period
        ends: the key's quota falls back to its plan's then, not at the next reload."""
        if self.rebuild_timer is not None:
            self.rebuild_timer.cancel()
            self.rebuild_timer = None
        at_s = self.worker.snapshot.rebuild_at_s
        if at_s:
            # a little after the second: the rebuild compares whole epoch seconds
            delay_s = max(0.0, at_s - time.time()) + REBUILD_LATE_S
            self.rebuild_timer = self.loop.call_later(delay_s, self.reload)

    def logs(self) -> list:
        """The running snapshot's log files: the access log, the stages' and the execution log."""
        snap = self.worker.snapshot
        return [log_ for log_ in (snap.access_log, *snap.stage_logs, snap.execution_log)
                if log_ is not None]

    def reopen_logs(self) -> None:
        for log_ in self.logs():
            log_.reopen()

    def retire(self) -> None:
        if self.stopping:
            return
        for server in self.servers:
            server.close()
        self.worker.drain(close_idle=False)
        self.loop.call_later(RETIRE_IDLE_GRACE_S, self.drain)

    def drain(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        for server in self.servers:
            server.close()
        self.worker.drain()
        deadline = time.monotonic() + self.drain_timeout_s
        self.loop.create_task(self._wait_drained(deadline))

    async def _wait_drained(self, deadline: float) -> None:
        while self.worker.connection_count() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ws = self.services.websockets
        if ws is not None and ws.close_all(1001, "Going away"):
            # a WebSocket API's connections stay open through the drain, then hear 1001 (as
            # API Gateway's clients do when it goes away) and get a moment to answer it
            until = time.monotonic() + WS_CLOSE_WAIT_S
            while ws.count() and time.monotonic() < until:
                await asyncio.sleep(0.05)
        if self.worker.connection_count():
            log(f"drain timeout: closing {self.worker.connection_count()} connections")
            self.worker.close_all()
            await asyncio.sleep(0.05)
        self.loop.stop()


def run_worker(worker_id, listeners, loader, metrics, on_ready=None) -> int:
    return WorkerProcess(worker_id, listeners, loader, metrics, on_ready).run()
