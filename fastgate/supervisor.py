"""The supervisor: binds the listeners, forks the workers and the admin process,
restarts what crashes, and turns signals into drains and reloads.

It runs no event loop itself, so forking a replacement worker at any time is
safe: each child builds its own uvloop loop from a clean state.

Signals: SIGTERM/SIGINT drain and stop; SIGHUP re-reads the config, checks it,
and has every worker swap it in without closing a connection; SIGUSR1 makes
every worker reopen its access log (logrotate).
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import socket
import sys
import time

from fastgate._core import tail
from fastgate._core.metrics import SharedMetrics
from fastgate.snapshot import shared_buckets, build_snapshot, health_slots, integration_type

RESTART_BACKOFF_MAX_S = 5.0     # a worker that keeps crashing is restarted at most this often
STOP_GRACE_S = 5.0              # after the drain timeout, wait this long before SIGKILL
MAX_SERIES = 4096               # metric series slots shared by all processes
TAIL_ENTRIES = 4096             # finished requests kept for the dashboard's live tail


def log(msg: str) -> None:
    print(f"fastgate[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


PR_SET_PDEATHSIG = 1            # prctl(2)


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this child if the supervisor dies (even by SIGKILL), so workers
    never outlive it holding the listeners; they drain as on a normal stop."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        # the supervisor died between fork() and prctl(): no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


def interface_addresses(name: str, family: str) -> list[str]:
    """Addresses of a Linux interface, resolved with pyroute2 (netlink)."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise OSError(errno.ENODEV, f"no network interface named {name!r}")
        out = []
        for a in ipr.get_addr(index=idx[0]):
            fam = "ipv6" if a["family"] == socket.AF_INET6 else "ipv4"
            if family in (fam, "both"):
                addr = a.get_attr("IFA_ADDRESS")
                if fam == "ipv6" and addr.startswith("fe80:"):
                    addr = f"{addr}%{name}"   # link-local needs its scope
                out.append(addr)
        if not out:
            raise OSError(errno.EADDRNOTAVAIL, f"interface {name!r} has no {family} address")
        return out


def bind_socket(host: str, port: int, backlog: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def bind_listeners(config) -> list[tuple[socket.socket, int, int]]:
    """[(socket, port, backlog)] for every configured listener."""
    out = []
    for listener in config.listeners:
        la = listener.listen_address()
        port = la.port
        if la.interface:
            hosts = interface_addresses(la.interface, listener.family or "ipv4")
        else:
            hosts = [la.host]
        for host in hosts:
            sock = bind_socket(host, port, listener.backlog)
            out.append((sock, sock.getsockname()[1], listener.backlog))
    return out


def urls(listeners) -> list[str]:
    out = []
    for sock, port, _ in listeners:
        host = sock.getsockname()[0]
        if ":" in host:
            host = f"[{host}]"
        out.append(f"http://{host}:{port}")
    return out


class Supervisor:
    def __init__(self, loader, *, banner: bool = True):
        self.loader = loader          # () -> LoadedConfig; called again on SIGHUP
        self.banner = banner
        self.workers: dict[int, int] = {}     # pid -> worker id
        self.admin_pid = 0
        self.restarts: dict[int, float] = {}  # worker id -> time of its last start
        self.stop_requested = False
        self.reload_requested = False
        self.reopen_requested = False

    # --- processes ------------------------------------------------------------

    def fork(self, target, *args) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            os.close(self.wake_r)
            os.close(self.wake_w)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            die_with_parent(parent)
            code = target(*args)
        except BaseException as e:  # a child must never return into the supervisor's code
            import traceback
            traceback.print_exc()
            log(f"child failed: {e}")
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)

    def spawn_worker(self, worker_id: int) -> None:
        from fastgate.worker import run_worker
        self.restarts[worker_id] = time.monotonic()
        pid = self.fork(run_worker, worker_id, self.listeners, self.loader, self.metrics)
        self.workers[pid] = worker_id

    def spawn_admin(self) -> None:
        from fastgate.admin import run_admin

        def admin_main():
            # only workers accept: a listener copy held here would keep the port
            # accepting into a queue nobody serves once the workers drain
            for sock, _, _ in self.listeners:
                sock.close()
            return run_admin(self.admin_socket, self.loader, self.metrics)
        self.admin_pid = self.fork(admin_main)

    def signal_children(self, sig: int) -> None:
        for pid in list(self.workers) + ([self.admin_pid] if self.admin_pid else []):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # --- main loop ------------------------------------------------------------

    def run(self) -> int:
        loaded = self.loader()
        config = loaded.config
        self.check(loaded)   # fail here, before binding, on anything the workers would reject
        self.listeners = bind_listeners(config)
        self.admin_socket = None
        admin_addr = config.admin.listen_address()
        if admin_addr is not None:
            self.admin_socket = bind_socket(admin_addr.host, admin_addr.port, 128)
        self.metrics = SharedMetrics.create(MAX_SERIES)
        tail.install(tail.TailRing.create(TAIL_ENTRIES))   # inherited by every child, like metrics
        shared_buckets()   # before fork: every worker takes from the same buckets
        for slot in health_slots(config, self.metrics):
            self.metrics.set(slot, 1)   # healthy until a check says otherwise
        n_workers = config.worker_count()
        self.drain_timeout_s = config.limits.drain_timeout_ms / 1000

        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)
        signal.signal(signal.SIGUSR1, self.on_reopen)
        signal.signal(signal.SIGCHLD, lambda *_: None)

        self.need_admin = self.admin_socket is not None or bool(health_slots(config, self.metrics))
        if self.need_admin:
            self.spawn_admin()
        for i in range(n_workers):
            self.spawn_worker(i)
        if self.banner:
            self.print_banner(loaded, n_workers)
        while not self.stop_requested:
            try:
                select.select([self.wake_r], [], [], 0.5)
            except InterruptedError:
                pass
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            self.reap(restart=True)
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            if self.reopen_requested:
                self.reopen_requested = False
                self.signal_children(signal.SIGUSR1)
        return self.stop()

    def on_stop(self, *_):
        self.stop_requested = True

    def on_reload(self, *_):
        self.reload_requested = True

    def on_reopen(self, *_):
        self.reopen_requested = True

    def reap(self, restart: bool) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit code {os.WEXITSTATUS(status)}")
            if pid == self.admin_pid:
                self.admin_pid = 0
                if restart and self.need_admin:
                    log(f"admin process {pid} ended ({how}); restarting it")
                    self.spawn_admin()
                continue
            worker_id = self.workers.pop(pid, None)
            if worker_id is None or not restart:
                continue
            self.forget_connections(worker_id)
            since = time.monotonic() - self.restarts.get(worker_id, 0)
            log(f"worker {worker_id} (pid {pid}) ended ({how}); restarting it")
            if since < 1.0:
                time.sleep(min(RESTART_BACKOFF_MAX_S, 1.0 - since + 0.2))
            self.spawn_worker(worker_id)

    def forget_connections(self, worker_id: int) -> None:
        """A dead worker's connections died with it: take them out of the shared gauge."""
        from fastgate.worker import open_connection_slots
        total, own = open_connection_slots(self.metrics, worker_id)
        self.metrics.add(total, -self.metrics.get(own))
        self.metrics.set(own, 0)

    @staticmethod
    def check(loaded) -> None:
        """Compile the snapshot once, for its errors and warnings; workers build their own."""
        for w in loaded.warnings:
            log(f"warning: {w}")
        build_snapshot(loaded, None, open_logs=False, warn=lambda w: log(f"warning: {w}"))

    def reload(self) -> None:
        try:
            loaded = self.loader()
            self.check(loaded)
        except Exception as e:
            log(f"reload rejected, the running config stays: {e}")
            return
        for slot in health_slots(loaded.config, self.metrics):
            if self.metrics.get(slot) == 0 and not self.admin_pid:
                self.metrics.set(slot, 1)
        log("config reloaded; workers swap it in without closing connections")
        self.signal_children(signal.SIGHUP)

    def stop(self) -> int:
        log("stopping: draining in-flight requests")
        # the workers close their listener copies as they start draining; with ours
        # closed too, new connections are refused instead of queued unserved
        for sock, _, _ in self.listeners:
            sock.close()
        self.signal_children(signal.SIGTERM)
        deadline = time.monotonic() + self.drain_timeout_s + STOP_GRACE_S
        while (self.workers or self.admin_pid) and time.monotonic() < deadline:
            self.reap(restart=False)
            time.sleep(0.05)
        if self.workers or self.admin_pid:
            log("children did not stop in time: killing them")
            self.signal_children(signal.SIGKILL)
            time.sleep(0.1)
            self.reap(restart=False)
        return 0

    def print_banner(self, loaded, n_workers: int) -> None:
        config = loaded.config
        bases = urls(self.listeners)
        lines = [f"fastgate: {n_workers} worker(s), config {loaded.source.filename}"]
        for base in bases:
            lines.append(f"  listening on {base}")
        for route in config.routes[:20]:
            lines.append(f"    {route.method:<6} {bases[0]}{route.path}   ({integration_type(route.integration)})")
        if len(config.routes) > 20:
            lines.append(f"    ... and {len(config.routes) - 20} more routes (fastgate check lists them)")
        state = loaded.state
        for api_id, stages in sorted(state.stages.items()) if state is not None else ():
            api = state.apis.get(api_id, {})
            kind = "HTTP API" if api.get("protocolType") == "HTTP" else "REST API"
            for name in sorted(stages):
                path = "/" if name == "$default" else f"/{name}/"
                lines.append(f"  {kind} {api.get('name', '')!r} ({api_id}) stage {name}: {bases[0]}{path}")
        if self.admin_socket is not None:
            host, port = self.admin_socket.getsockname()[:2]
            lines.append(f"  admin: http://{host}:{port}/metrics")
        print("\n".join(lines), flush=True)
