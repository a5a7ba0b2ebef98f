"""The supervisor: binds the listeners, forks the workers and the admin process,
restarts what crashes, and turns signals into drains and reloads.

It runs no event loop itself, so forking a replacement worker at any time is
safe: each child builds its own uvloop loop from a clean state.

Signals: SIGTERM/SIGINT drain and stop; SIGHUP re-reads the config, checks it,
and has every worker swap it in without closing a connection; SIGUSR1 makes
every worker reopen its access log (logrotate); SIGUSR2 starts a binary upgrade:
a new fastgate process inherits the listening sockets and, once its workers
serve, this one drains and exits (docs/operations.md).

Reloads are coalesced: a signal only sets a flag, and the loop reloads once per
turn however many arrived. The config the supervisor accepted is handed to the
children as a pickle in a private directory, so every worker serves exactly
what was checked, never a file caught half-written.
"""

from __future__ import annotations

import errno
import os
import pickle
import resource
import select
import shutil
import signal
import socket
import sys
import tempfile
import time

from fastgate._core import tail
from fastgate._core.metrics import SharedMetrics
from fastgate.compile.gcpause import gc_paused
from fastgate.compile.shared import shared_buckets, shared_cache, shared_quotas, shared_usage
from fastgate.compile.snapshot import build_snapshot, integration_type
from fastgate.compile.upstreams import health_slots
from fastgate.observability.log import log
from fastgate.process.signals import die_with_parent

RESTART_BACKOFF_MAX_S = 5.0     # a worker that keeps crashing is restarted at most this often
STOP_GRACE_S = 5.0              # after the drain timeout, wait this long before SIGKILL
MAX_SERIES = 4096               # metric series slots shared by all processes
WATCH_INTERVAL_S = 0.5          # how often the config files are stat()ed
UPGRADE_READY_TIMEOUT_S = 60.0  # a new process that is not serving by then is stopped

# A binary upgrade hands these to the new process (inherited fds, comma-separated).
LISTEN_FDS_ENV = "FASTGATE_LISTEN_FDS"      # listening sockets of the data plane
ADMIN_FD_ENV = "FASTGATE_ADMIN_FD"          # the admin listener
UPGRADE_FD_ENV = "FASTGATE_UPGRADE_FD"      # pipe: the new process writes b"R" once it serves
# PERF: finished requests kept for the dashboard's live tail. Every request writes one
# ~600-byte slot; a 4096-slot ring (2.4 MB) made each write cold in cache: +0.8 us/request,
# x0.87 of nginx instead of x0.95 without the tail; 512 slots (300 KB) stay warm: x0.93
# (bench/wrk_compare.py --scenario keepalive). At high rates the tail is a sample anyway.
TAIL_ENTRIES = 512


def raise_open_files_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the children it forks.
    Each proxied request holds two sockets; the usual soft default (1,024) is gone at about
    500 requests in flight, after which every connect fails and every client gets an error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as e:
        log(f"open files: cannot raise the soft limit of {soft} to the hard limit: {e}")
        return
    log(f"open files: soft limit raised from {soft} to "
        f"{'unlimited' if hard == resource.RLIM_INFINITY else hard} (the hard limit)")


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


# SO_REUSEPORT spreads connections over the sockets of a group by a hash of the 4-tuple on
# Linux; elsewhere (BSD, macOS) the last socket bound takes them all, so only Linux uses it.
REUSEPORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class Listening:
    """The sockets of one listening address. With reuseport, one per worker, each in the
    same SO_REUSEPORT group: the kernel hashes each new connection to one socket, so every
    worker gets its share (one shared socket gave 53 of 64 connections to one worker of
    two). The supervisor keeps every socket open, so a dead worker's accept queue waits
    for its replacement, which gets the same socket back. Without reuseport, every worker
    accepts from every socket (normally just one)."""

    def __init__(self, sockets: list[socket.socket], backlog: int, per_worker: bool):
        self.sockets = sockets
        self.port = sockets[0].getsockname()[1]
        self.backlog = backlog
        self.per_worker = per_worker

    def for_worker(self, worker_id: int, n_workers: int) -> list[socket.socket]:
        """Worker i's sockets: the i-th, and every n-th after it when a binary upgrade
        inherited more sockets than this process has workers (each still holds a queue)."""
        if not self.per_worker:
            return self.sockets
        return self.sockets[worker_id::n_workers]


def inherited_sockets(env_name: str) -> dict[tuple, list[socket.socket]]:
    """Listening sockets a previous fastgate passed on in env_name, by (host, port), in the
    order it passed them (a reuseport group's sockets keep their worker's place)."""
    out: dict[tuple, list[socket.socket]] = {}
    for fd in filter(None, os.environ.pop(env_name, "").split(",")):
        sock = socket.socket(fileno=int(fd))
        sock.set_inheritable(False)   # until the next upgrade passes it on again
        out.setdefault(sock.getsockname()[:2], []).append(sock)
    return out


def has_reuseport(sock: socket.socket) -> bool:
    return REUSEPORT and sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1


def new_socket(family: int, addr: tuple, host: str, reuseport: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{addr[1]}: {e.strerror}") from None
    return sock


def bind_sockets(host: str, port: int, backlog: int, inherited=None, count: int = 1,
                 reuseport: bool = False) -> list[socket.socket]:
    """Listening sockets on host:port: those inherited from the process being upgraded if
    there are any (their queues of pending connections come with them), else new ones;
    with reuseport, as many as `count` in one SO_REUSEPORT group (inherited ones first,
    while they are of such a group)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    socks = inherited.pop(addr[:2], []) if inherited else []
    reuseport = reuseport and REUSEPORT and all(has_reuseport(s) for s in socks)
    if not socks:
        if reuseport:
            # a socket of another SO_REUSEPORT group (a second fastgate of the same user)
            # would take a share of our connections: bind one without the option first, so
            # a port in use is refused as it is without reuseport
            new_socket(family, addr, host, False).close()
        socks.append(new_socket(family, addr, host, reuseport))
    while reuseport and len(socks) < count:
        socks.append(new_socket(family, addr, host, True))
    for sock in socks:
        sock.listen(backlog)
        sock.setblocking(False)
    return socks


def bind_socket(host: str, port: int, backlog: int, inherited=None) -> socket.socket:
    """One listening socket on host:port (the admin listener), inherited or new."""
    socks = bind_sockets(host, port, backlog, inherited)
    for extra in socks[1:]:
        extra.close()
    return socks[0]


def bind_listeners(config, inherited=None, n_workers: int = 1) -> list[Listening]:
    """The sockets of every configured listener."""
    out = []
    for listener in config.listeners:
        la = listener.listen_address()
        port = la.port
        if la.interface:
            hosts = interface_addresses(la.interface, listener.family or "ipv4")
        else:
            hosts = [la.host]
        for host in hosts:
            socks = bind_sockets(host, port, listener.backlog, inherited, n_workers,
                                 listener.reuseport)
            per_worker = listener.reuseport and all(has_reuseport(s) for s in socks)
            if listener.reuseport and REUSEPORT and not per_worker:
                log(f"listener {host}:{port}: the inherited socket is shared by all workers "
                    "(no SO_REUSEPORT); a restart gives each worker its own")
            out.append(Listening(socks, listener.backlog, per_worker))
    return out


def all_sockets(listeners: list[Listening]) -> list[socket.socket]:
    return [sock for lst in listeners for sock in lst.sockets]


def urls(listeners: list[Listening]) -> list[str]:
    out = []
    for lst in listeners:
        host = lst.sockets[0].getsockname()[0]
        if ":" in host:
            host = f"[{host}]"
        out.append(f"http://{host}:{lst.port}")
    return out


def config_files(loaded) -> list[str]:
    """The files a config was read from: the config itself and the OpenAPI documents its
    `apis:` name (resolved as fastgate.compile.apis.config_state resolves them)."""
    name = loaded.source.filename
    if not os.path.exists(name):
        return []
    base_dir = os.path.dirname(os.path.abspath(name))
    return [name] + [os.path.join(base_dir, api.openapi) for api in loaded.config.apis]


def file_signatures(paths) -> tuple:
    """(mtime, size, inode) of each file, None for a missing one: an edit in place changes
    the first two, an editor's write-and-rename the third."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


class Supervisor:
    def __init__(self, loader, *, banner: bool = True, watch: bool = False,
                 watch_extra: tuple = (), pid_file: str | None = None):
        self.loader = loader          # () -> LoadedConfig; called again on every reload
        self.accepted = None          # the LoadedConfig the children serve (accept_config)
        self.banner = banner
        self.watch = watch            # reload when a file the config came from changes
        self.watch_extra = list(watch_extra)   # more files to watch (--openapi)
        self.pid_file = pid_file
        self.watched_paths: list[str] = list(watch_extra)   # set by load()
        self.watched_signatures: tuple = ()
        self.watch_pending: tuple | None = None   # a change seen once, waiting to settle
        self.workers: dict[int, int] = {}     # pid -> worker id
        self.ready_workers: set[int] = set()  # worker pids whose loop serves the listeners
        self.admin_pid = 0
        self.restarts: dict[int, float] = {}  # worker id -> time of its last start
        self.stop_requested = False
        self.reload_requested = False
        self.reopen_requested = False
        self.upgrade_requested = False
        # the new process of a binary upgrade we started, while it starts up
        self.upgrade_pid = 0
        self.upgrade_r = -1
        self.upgrade_deadline = 0.0
        self.reloaded_during_upgrade = False
        self.upgraded = False         # a new process serves now: drain for it, then exit
        # the write end of an old process's pipe, when this process is its upgrade
        self.upgrade_fd = int(os.environ.pop(UPGRADE_FD_ENV, "-1"))

    # --- processes ------------------------------------------------------------

    def fork(self, target, *args) -> int:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            return pid
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for fd in (self.wake_r, self.wake_w, self.ready_r, self.upgrade_r, self.upgrade_fd):
                if fd >= 0:
                    os.close(fd)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                        signal.SIGCHLD, signal.SIGINT):
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
        from fastgate.process.worker import run_worker
        self.restarts[worker_id] = time.monotonic()
        ready_w = self.ready_w
        own = [(sock, lst.port, lst.backlog) for lst in self.listeners
               for sock in lst.for_worker(worker_id, self.n_workers)]

        def ready():
            os.write(ready_w, b"%d\n" % os.getpid())

        def worker_main():
            # other workers' reuseport sockets: a copy held here would keep one open, its
            # queue unserved, after its own worker closed it on a drain
            mine = {id(sock) for sock, _, _ in own}
            for sock in all_sockets(self.listeners):
                if id(sock) not in mine:
                    sock.close()
            return run_worker(worker_id, own, self.accepted_config, self.metrics, ready)
        pid = self.fork(worker_main)
        self.workers[pid] = worker_id

    def spawn_admin(self) -> None:
        from fastgate.observability.dashboard import tail_mark
        from fastgate.process.admin import run_admin
        # the dashboard counts the request tail from here, before the fork: the requests the
        # workers serve while the admin process loads the state are counted too
        since = tail_mark()

        def admin_main():
            # only workers accept: a listener copy held here would keep the port
            # accepting into a queue nobody serves once the workers drain
            for sock in all_sockets(self.listeners):
                sock.close()
            return run_admin(self.admin_socket, self.accepted_config, self.metrics, since)
        self.admin_pid = self.fork(admin_main)

    def signal_children(self, sig: int, workers_sig: int | None = None) -> None:
        for pid in self.workers:
            try:
                os.kill(pid, workers_sig or sig)
            except ProcessLookupError:
                pass
        if self.admin_pid:
            try:
                os.kill(self.admin_pid, sig)
            except ProcessLookupError:
                pass

    # --- the config the children serve ----------------------------------------

    def accept_config(self, loaded) -> None:
        """Publish a checked config for the children (written whole, then renamed in)."""
        tmp = os.path.join(self.state_dir, "config.pickle.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(loaded, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, os.path.join(self.state_dir, "config.pickle"))
        self.redis_config = loaded.config.redis     # where the final usage flush also goes
        self.accepted = loaded

    def accepted_config(self):
        """The children's loader: the config the supervisor last accepted."""
        with open(os.path.join(self.state_dir, "config.pickle"), "rb") as f, gc_paused():
            return pickle.load(f)   # PERF: a state of 1,000 APIs is ~380,000 objects

    def load(self, check: bool = True):
        """Load and check the config, noting which files it came from for the watch."""
        if self.watch:
            # stat before reading: an edit made while we read shows as a change next turn.
            # Taken even if the load fails, so a refused edit is reported once, not each turn.
            self.watched_signatures = file_signatures(self.watched_paths)
            self.watch_pending = None
        loaded = self.loader()
        if check:
            self.check(loaded)
        if self.watch:
            paths = config_files(loaded) + self.watch_extra
            if paths != self.watched_paths:
                self.watched_paths = paths
                self.watched_signatures = file_signatures(paths)
        return loaded

    # --- main loop ------------------------------------------------------------

    def run(self) -> int:
        self.wake_r = self.wake_w = self.ready_r = self.ready_w = -1
        self.state_dir = tempfile.mkdtemp(prefix="fastgate-")
        try:
            return self.serve()
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)
            if self.upgrade_fd >= 0:   # closing it unread tells the old process we failed
                os.close(self.upgrade_fd)

    def serve(self) -> int:
        loaded = self.load()   # fail here, before binding, on anything the workers would reject
        raise_open_files_limit()
        config = loaded.config
        self.accept_config(loaded)
        self.n_workers = config.worker_count()
        inherited = inherited_sockets(LISTEN_FDS_ENV)
        inherited_admin = inherited_sockets(ADMIN_FD_ENV)
        self.listeners = bind_listeners(config, inherited, self.n_workers)
        self.admin_socket = None
        admin_addr = config.admin.listen_address()
        if admin_addr is not None:
            self.admin_socket = bind_socket(admin_addr.host, admin_addr.port, 128, inherited_admin)
        for socks in [*inherited.values(), *inherited_admin.values()]:
            for sock in socks:
                sock.close()   # the old config listened there, this one does not
        self.metrics = SharedMetrics.create(MAX_SERIES)
        if self.admin_socket is not None:
            # inherited by every child, like metrics; no admin listener, no dashboard to read it
            tail.install(tail.TailRing.create(TAIL_ENTRIES))
        shared_buckets()   # before fork: every worker takes from the same buckets
        shared_quotas()    # ... counts in the same usage-plan quotas
        shared_cache(config.cache_memory_mb)   # ... and answers from one response cache
        shared_usage(self.n_workers)   # ... and meters API keys in one table the admin flushes
        for slot in health_slots(config, self.metrics):
            self.metrics.set(slot, 1)   # healthy until a check says otherwise
        self.drain_timeout_s = config.limits.drain_timeout_ms / 1000

        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.ready_r, self.ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)
        signal.signal(signal.SIGUSR1, self.on_reopen)
        signal.signal(signal.SIGUSR2, self.on_upgrade)
        signal.signal(signal.SIGCHLD, lambda *_: None)

        # the admin process also keeps a fleet host's copy of the shared state current
        self.need_admin = (self.admin_socket is not None or bool(health_slots(config, self.metrics))
                           or config.state is not None)
        if self.need_admin:
            self.spawn_admin()
        for i in range(self.n_workers):
            self.spawn_worker(i)
        if self.banner:
            self.print_banner(loaded, self.n_workers)
        if self.upgrade_fd < 0:
            self.write_pid_file()
        next_watch = time.monotonic() + WATCH_INTERVAL_S
        while not self.stop_requested:
            waiting = [self.wake_r, self.ready_r] + ([self.upgrade_r] if self.upgrade_r >= 0 else [])
            try:
                readable, _, _ = select.select(waiting, [], [], WATCH_INTERVAL_S)
            except InterruptedError:
                readable = []
            try:
                while os.read(self.wake_r, 512):
                    pass
            except BlockingIOError:
                pass
            if self.ready_r in readable:
                self.note_ready_workers()
            if self.upgrade_r in readable:
                self.upgrade_answered()
            self.reap(restart=True)
            if self.watch and time.monotonic() >= next_watch:
                next_watch = time.monotonic() + WATCH_INTERVAL_S
                self.check_watched_files()
            if self.reload_requested:
                self.reload_requested = False
                self.reload("SIGHUP")
            if self.reopen_requested:
                self.reopen_requested = False
                self.signal_children(signal.SIGUSR1)
            if self.upgrade_requested:
                self.upgrade_requested = False
                self.start_upgrade()
            if self.upgrade_pid and time.monotonic() > self.upgrade_deadline:
                log(f"binary upgrade: new process {self.upgrade_pid} is not serving after "
                    f"{UPGRADE_READY_TIMEOUT_S:.0f} s; stopping it, this one keeps serving")
                os.kill(self.upgrade_pid, signal.SIGTERM)
                self.upgrade_failed()
        return self.stop()

    def on_stop(self, *_):
        self.stop_requested = True

    def on_reload(self, *_):
        self.reload_requested = True

    def on_reopen(self, *_):
        self.reopen_requested = True

    def on_upgrade(self, *_):
        self.upgrade_requested = True

    def note_ready_workers(self) -> None:
        try:
            data = os.read(self.ready_r, 4096)
        except BlockingIOError:
            return
        self.ready_workers.update(int(p) for p in data.split())
        if self.upgrade_fd >= 0 and len(self.ready_workers & set(self.workers)) == self.n_workers:
            # every worker serves: the old process may stop accepting now
            self.write_pid_file()
            try:
                os.write(self.upgrade_fd, b"R")
                log("binary upgrade: serving; the old process drains")
            except BrokenPipeError:
                log("binary upgrade: the old process is gone; serving")
            os.close(self.upgrade_fd)
            self.upgrade_fd = -1

    def check_watched_files(self) -> None:
        """Reload when a watched file changed and then stayed the same for one more look, so
        an editor's write in several steps is read once, whole."""
        current = file_signatures(self.watched_paths)
        if current == self.watched_signatures:
            self.watch_pending = None
        elif current != self.watch_pending:
            self.watch_pending = current
        else:
            changed = [p for p, a, b in zip(self.watched_paths, self.watched_signatures, current)
                       if a != b]
            self.reload(f"{', '.join(changed)} changed")

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
            if pid == self.upgrade_pid:
                log(f"binary upgrade failed: the new process ended ({how}); this one keeps serving")
                self.upgrade_failed()
                continue
            if pid == self.admin_pid:
                self.admin_pid = 0
                if restart and self.need_admin:
                    log(f"admin process {pid} ended ({how}); restarting it")
                    self.spawn_admin()
                continue
            worker_id = self.workers.pop(pid, None)
            self.ready_workers.discard(pid)
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
        from fastgate.process.worker import open_connection_slots
        total, own = open_connection_slots(self.metrics, worker_id)
        self.metrics.add(total, -self.metrics.get(own))
        self.metrics.set(own, 0)
        # the same for its upstream and WebSocket API connections, series by series: labels
        # are sorted, so a worker's series is the total's label text + ',worker="N"'
        suffix = f',worker="{worker_id}"'
        for name in ("upstream_connections", "websocket_connections"):
            totals = {text: slot for slot, text in self.metrics.series_of(f"fastgate_{name}")}
            for own, text in self.metrics.series_of(f"fastgate_worker_{name}"):
                total = totals.get(text[:-len(suffix)]) if text.endswith(suffix) else None
                if total is not None:
                    self.metrics.add(total, -self.metrics.get(own))
                    self.metrics.set(own, 0)

    @staticmethod
    def check(loaded) -> None:
        """Compile the snapshot once, for its errors and warnings; workers build their own."""
        for w in loaded.warnings:
            log(f"warning: {w}")
        build_snapshot(loaded, None, open_logs=False, warn=lambda w: log(f"warning: {w}"))

    def reload(self, why: str) -> None:
        if self.upgrade_pid:
            # the new process may have read the config before this change: tell it too
            self.reloaded_during_upgrade = True
        previous = self.accepted
        try:
            loaded = self.load(check=False)
            # PERF: when only the state changed (an API written through the control API, a
            # fleet's change from PostgreSQL), the workers start their build at once and this
            # check runs beside it instead of before it: with 1,000 APIs it is a full compile,
            # ~0.2 s of a reload (bench/fleet_propagation.py --part reload). A change of the
            # config file itself is checked first, as before.
            state_only = previous is not None and loaded.config == previous.config
            if not state_only:
                self.check(loaded)
            self.accept_config(loaded)
        except Exception as e:
            log(f"reload rejected ({why}), the running config stays: {e}")
            return
        for slot in health_slots(loaded.config, self.metrics):
            if self.metrics.get(slot) == 0 and not self.admin_pid:
                self.metrics.set(slot, 1)
        log(f"config reloaded ({why}); workers swap it in without closing connections")
        self.signal_children(signal.SIGHUP)
        if state_only:
            try:
                self.check(loaded)
            except Exception as e:
                # the workers' builds fail the same way and they keep what they serve; a
                # worker started from now on gets that too, not this
                log(f"reload rejected ({why}), the running config stays: {e}")
                self.accept_config(previous)

    # --- binary upgrade -------------------------------------------------------

    def start_upgrade(self) -> None:
        """Start a new fastgate with the same command line; it inherits the listening sockets
        and a pipe on which it says when its workers serve (see upgrade_answered)."""
        if self.upgrade_pid:
            log(f"binary upgrade: already waiting for process {self.upgrade_pid}")
            return
        passed = all_sockets(self.listeners)
        env = dict(os.environ)
        env[LISTEN_FDS_ENV] = ",".join(str(sock.fileno()) for sock in passed)
        if self.admin_socket is not None:
            passed.append(self.admin_socket)
        r, w = os.pipe2(os.O_CLOEXEC)
        env[ADMIN_FD_ENV] = str(self.admin_socket.fileno()) if self.admin_socket is not None else ""
        env[UPGRADE_FD_ENV] = str(w)
        fds = [sock.fileno() for sock in passed] + [w]
        for fd in fds:
            os.set_inheritable(fd, True)
        try:
            # setsid: its own session, so a signal to this process group (a terminal's ^C)
            # does not reach it. It is not killed with us either: PR_SET_PDEATHSIG is set
            # only in forked workers, and a new process never inherits it.
            self.upgrade_pid = os.posix_spawn(sys.executable, sys.orig_argv, env, setsid=True)
        except OSError as e:
            log(f"binary upgrade: cannot start {sys.executable}: {e}")
            os.close(r)
            return
        finally:
            for fd in fds:
                os.set_inheritable(fd, False)
            os.close(w)
        self.upgrade_r = r
        self.upgrade_deadline = time.monotonic() + UPGRADE_READY_TIMEOUT_S
        self.reloaded_during_upgrade = False
        log(f"binary upgrade: started new process {self.upgrade_pid}: {' '.join(sys.orig_argv)}")

    def upgrade_answered(self) -> None:
        if os.read(self.upgrade_r, 1) != b"R":
            return   # closed unread: the process ends, and reap() says how
        log(f"binary upgrade: process {self.upgrade_pid} serves; draining this one")
        if self.reloaded_during_upgrade:
            os.kill(self.upgrade_pid, signal.SIGHUP)
        os.close(self.upgrade_r)
        self.upgrade_r = -1
        self.upgrade_pid = 0
        self.upgraded = True
        self.stop_requested = True

    def upgrade_failed(self) -> None:
        if self.upgrade_r >= 0:
            os.close(self.upgrade_r)
        self.upgrade_r = -1
        self.upgrade_pid = 0

    def write_pid_file(self) -> None:
        if self.pid_file:
            tmp = f"{self.pid_file}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, self.pid_file)

    def remove_pid_file(self) -> None:
        """Only while it still names us: after an upgrade it names the new process."""
        try:
            with open(self.pid_file) as f:
                if int(f.read().strip() or 0) == os.getpid():
                    os.unlink(self.pid_file)
        except (OSError, ValueError):
            pass

    def stop(self) -> int:
        if self.upgraded:
            # the new process's workers accept from the same sockets already; ours answer
            # what they hold (WebSockets too) and close each keep-alive after its next response
            log("stopping after the upgrade: draining in-flight requests")
            workers_sig = signal.SIGUSR2
        else:
            log("stopping: draining in-flight requests")
            workers_sig = signal.SIGTERM
        # the workers close their listener copies as they start draining; with ours
        # closed too, new connections are refused instead of queued unserved
        for sock in all_sockets(self.listeners):
            sock.close()
        if self.admin_socket is not None:
            self.admin_socket.close()
        self.signal_children(signal.SIGTERM, workers_sig)
        deadline = time.monotonic() + self.drain_timeout_s + STOP_GRACE_S
        while (self.workers or self.admin_pid) and time.monotonic() < deadline:
            self.reap(restart=False)
            time.sleep(0.05)
        if self.workers or self.admin_pid:
            log("children did not stop in time: killing them")
            self.signal_children(signal.SIGKILL)
            time.sleep(0.1)
            self.reap(restart=False)
        self.flush_usage(self.redis_config)
        if self.pid_file:
            self.remove_pid_file()
        return 0

    @staticmethod
    def flush_usage(redis_config=None) -> None:
        """The workers counted API key calls while draining, after the admin process's
        last flush: write them now (a flush never counts a call twice), and push them to
        Redis when the config has one (a push never counts a row twice either)."""
        rec = shared_usage()
        if rec is None or not any(True for _ in rec.entries()):
            return
        from fastgate.control.store import default_data_dir
        from fastgate.control.usage import UsageStore
        try:
            store = UsageStore.in_dir(os.environ.get("FASTGATE_DATA_DIR") or default_data_dir())
            try:
                store.flush(rec)
                if redis_config is not None:
                    from fastgate.control.usage_flusher import UsageFlusher
                    UsageFlusher(rec, "", log=log, redis_config=lambda: redis_config).push(store)
            finally:
                store.close()
        except Exception as e:   # never let a flush failure hide the rest of the shutdown
            log(f"final usage flush failed: {e}")

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
            lines.append(f"  admin: http://{host}:{port}/metrics   dashboard: http://{host}:{port}/dashboard")
        print("\n".join(lines), flush=True)
