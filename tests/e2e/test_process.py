"""Processes end to end: workers, crash restart, graceful drain, reload without
dropping connections, log reopening, interface listeners, summed metrics."""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import threading
import time

import httpx
import pytest

from conftest import (FRESH, Gateway, free_port, listening_sockets, socket_inodes, wait_every_worker,
                      wait_until)

MOCK_ROUTES = """\
access_log: {path: 'off'}
upstreams:
  api:
    targets: [URL]
routes:
  - path: /hello
    method: GET
    integration: {type: mock, body: hello}
  - path: /up/{proxy+}
    strip_prefix: /up
    integration: {type: http, upstream: api}
"""


def routes(upstream_url: str) -> str:
    return MOCK_ROUTES.replace("URL", upstream_url)



def raw_get(sock: socket.socket, path: str) -> tuple[int, bytes]:
    """One keep-alive GET on an open socket; the response is read by its Content-Length."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = sock.recv(65536)
        assert c, f"connection closed; got {buf!r}"
        buf += c
    head, body = buf.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < n:
        c = sock.recv(65536)
        assert c
        body += c
    return int(head.split()[1]), body


def closed_by_peer(sock: socket.socket, timeout: float = 3.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def in_background(fn):
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # surfaced by the assertion on the result
            out["error"] = e
    t = threading.Thread(target=run)
    t.start()
    return t, out


def worker_pids(g: Gateway, n: int) -> list[int]:
    """The worker children (all children but the admin process, which has n+1)."""
    return wait_until(lambda: c if len(c := g.workers()) == n + 1 else None)


def test_two_workers_serve(gateway, upstream):
    g = gateway(routes(upstream.url), workers=2)
    assert len(worker_pids(g, 2)) == 3
    prefixes = set()
    deadline = time.monotonic() + 5
    # each worker has its own random request-id prefix: see both answer
    while len(prefixes) < 2 and time.monotonic() < deadline:
        socks = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(8)]
        for s in socks:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for s in socks:
            data = b""
            while c := s.recv(65536):
                data += c
            s.close()
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello")
            prefixes.add(request_id_prefix(data))
    assert len(prefixes) == 2


def own_sockets(g: Gateway, pids: list[int]) -> dict[int, int]:
    """{worker pid: inode of its listening socket}, once each worker holds one socket of its
    own (a worker closes the others' copies it inherited as it starts) and the supervisor
    holds them all."""
    def held():
        listening = set(listening_sockets(g.port))
        out = {pid: socket_inodes(pid) & listening for pid in pids}
        out = {pid: inodes for pid, inodes in out.items() if inodes}   # not the admin process
        return out, listening

    def settled():
        out, listening = held()
        return (sorted(len(i) for i in out.values()) == [1] * (len(pids) - 1)
                and set().union(*out.values()) == listening and len(listening) == len(out))
    try:
        wait_until(settled)
    except AssertionError:
        raise AssertionError(f"workers' listening sockets (pid: inodes): {held()}") from None
    out, listening = held()
    assert socket_inodes(g.pid) >= listening
    return {pid: inodes.pop() for pid, inodes in out.items()}


def request_id_prefix(data: bytes) -> bytes:
    """The x-request-id prefix that tells workers apart (each draws its own)."""
    return re.search(rb"x-request-id: ([0-9a-f]{8}-[0-9a-f]{4})", data).group(1)


def test_each_worker_accepts_from_its_own_socket(gateway, upstream):
    """SO_REUSEPORT: a listening socket per worker, over which the kernel spreads new
    connections by a hash of their addresses; one shared socket let whichever worker woke
    first take them (53 of 64 went to one worker of two, 8 of 8 another time)."""
    g = gateway(routes(upstream.url), workers=2)
    assert len(own_sockets(g, worker_pids(g, 2))) == 2
    n = 128
    socks = [socket.create_connection(("127.0.0.1", g.port), timeout=10) for _ in range(n)]
    try:
        served = collections.Counter()
        for s in socks:
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        for s in socks:
            data = b""
            while not data.endswith(b"hello"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
            served[request_id_prefix(data)] += 1
    finally:
        for s in socks:
            s.close()
    # the hash makes each worker's count binomial(128, 1/2), whatever the load: fewer than
    # 32 on one side comes about once in 10^8 runs
    assert len(served) == 2 and min(served.values()) >= 32, served


def test_reuseport_off_shares_one_socket(gateway, upstream):
    g = gateway(routes(upstream.url), workers=2, listener="reuseport: false")
    pids = worker_pids(g, 2)
    listening = set(listening_sockets(g.port))
    assert len(listening) == 1
    assert sum(bool(socket_inodes(pid) & listening) for pid in pids) == 2   # both workers
    assert FRESH.get(g.url + "/hello").text == "hello"


def test_a_dead_workers_queued_connections_go_to_its_replacement(gateway, upstream):
    """The supervisor keeps every worker's socket open and hands the same one to the
    replacement: connections the kernel queued there for the dead worker are served, none
    refused or reset, and no connection is refused while the replacement starts."""
    g = gateway(routes(upstream.url), workers=2)
    sockets = own_sockets(g, worker_pids(g, 2))
    victim, inode = max(sockets.items())
    os.kill(victim, signal.SIGSTOP)
    socks = []
    try:
        for _ in range(32):
            s = socket.create_connection(("127.0.0.1", g.port), timeout=15)
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            socks.append(s)
        # the stopped worker's share waits in its socket's queue (none of 32: 1 in 2^32)
        queued = wait_until(lambda: listening_sockets(g.port).get(inode))
        os.kill(victim, signal.SIGKILL)
        for _ in range(32):   # while the replacement starts: queued too, none refused
            s = socket.create_connection(("127.0.0.1", g.port), timeout=15)
            s.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            socks.append(s)
        for s in socks:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello"), data
        replacement = wait_until(lambda: [p for p in g.workers() if inode in socket_inodes(p)])
        assert victim not in replacement
        assert set(own_sockets(g, g.workers()).values()) == set(sockets.values())
        print(f"{queued} connections waited for the replacement worker")
    finally:
        for s in socks:
            s.close()
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_killed_worker_is_restarted(gateway, upstream):
    g = gateway(routes(upstream.url), workers=2)
    before = set(worker_pids(g, 2))
    victim = max(before)
    os.kill(victim, signal.SIGKILL)
    after = wait_until(lambda: c if len(c := set(g.workers())) == 3 and victim not in c else None)
    assert len(after & before) == 2
    with httpx.Client(timeout=5) as c:
        for _ in range(20):
            assert c.get(g.url + "/hello", headers={"Connection": "close"}).text == "hello"
    assert g.p.proc.poll() is None


def upstream_requests(upstream) -> int:
    """Requests the upstream has seen, this look included."""
    return httpx.get(upstream.url + "/stats", timeout=5).json()["requests"]


def test_sigterm_drains(gateway, upstream):
    g = gateway(routes(upstream.url), workers=1)
    idle = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    assert raw_get(idle, "/hello") == (200, b"hello")
    seen = upstream_requests(upstream)
    t, out = in_background(lambda: httpx.get(g.url + "/up/slow/2500", timeout=15))
    # the slow request is in flight once a later look counts it besides itself
    wait_until(lambda: upstream_requests(upstream) >= seen + 2)
    os.kill(g.pid, signal.SIGTERM)
    assert closed_by_peer(idle, timeout=10), "idle keep-alive connection stayed open"

    def refused():
        try:
            socket.create_connection(("127.0.0.1", g.port), timeout=0.2).close()
        except ConnectionRefusedError:
            return True
        return False
    # the worker's listener closes on its loop's next turn
    wait_until(refused, timeout=10, step=0.01)
    # both while the slow request is still running: the drain does not wait for it first
    assert t.is_alive() and not out, out
    t.join(15)
    assert "error" not in out, out
    r = out["result"]
    assert (r.status_code, r.text) == (200, "hello")
    assert r.headers["connection"] == "close"
    assert g.p.proc.wait(10) == 0


def test_sighup_reloads_without_closing_connections(gateway, upstream):
    g = gateway(routes(upstream.url), workers=2)
    worker_pids(g, 2)
    keep = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    assert raw_get(keep, "/hello") == (200, b"hello")
    assert raw_get(keep, "/new")[0] == 404
    t, out = in_background(lambda: httpx.get(g.url + "/up/slow/1500", timeout=10))
    time.sleep(0.3)
    text = g.config_path.read_text()
    g.config_path.write_text(text + """\
  - path: /new
    method: GET
    integration: {type: mock, body: new route}
""")
    os.kill(g.pid, signal.SIGHUP)
    wait_every_worker(g, lambda: FRESH.get(g.url + "/new"))
    # the keep-alive connection opened before the reload sees the new route
    assert raw_get(keep, "/new") == (200, b"new route")
    assert raw_get(keep, "/hello") == (200, b"hello")
    t.join(10)
    assert "error" not in out, out
    assert (out["result"].status_code, out["result"].text) == (200, "hello")
    # every worker has it: many fresh connections, all 200
    for _ in range(20):
        assert FRESH.get(g.url + "/new").text == "new route"
    keep.close()


def test_sighup_with_a_broken_config_keeps_the_old_one(gateway, upstream):
    g = gateway(routes(upstream.url), workers=1)
    keep = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    assert raw_get(keep, "/hello") == (200, b"hello")
    g.config_path.write_text(g.config_path.read_text() + "  - path: /broken\n    integration: {type: nope}\n")
    os.kill(g.pid, signal.SIGHUP)
    g.p.wait_output("reload rejected")
    assert raw_get(keep, "/hello") == (200, b"hello")
    assert httpx.get(g.url + "/hello").text == "hello"
    assert g.p.proc.poll() is None
    keep.close()


def test_sigusr1_reopens_the_access_log(tmp_path, gateway, upstream):
    log = tmp_path / "access.log"
    g = gateway(routes(upstream.url).replace("access_log: {path: 'off'}",
                                             f"access_log: {{path: '{log}', format: clf}}"))
    # clf logs $context.path, without the query (as API Gateway does): tell lines apart by path
    assert httpx.get(g.url + "/hello").status_code == 200
    wait_until(lambda: log.exists() and "GET /hello " in log.read_text())
    rotated = tmp_path / "access.log.1"
    log.rename(rotated)
    os.kill(g.pid, signal.SIGUSR1)
    wait_until(log.exists)
    assert httpx.get(g.url + "/up/name").status_code == 200
    wait_until(lambda: "/up/name" in log.read_text())
    assert "GET /hello " not in log.read_text()
    assert "/up/name" not in rotated.read_text()
    assert re.fullmatch(r'127\.0\.0\.1 - - \[[^]]+\] "GET /up/name HTTP/1\.1" 200 3 [0-9a-f-]{36}\n',
                        log.read_text()), log.read_text()


def test_interface_listener(tmp_path):
    port, admin = free_port(), free_port()
    cfg = tmp_path / "iface.yaml"
    cfg.write_text(f"""\
workers: 1
listeners:
  - interface: lo
    port: {port}
admin: {{listen: '127.0.0.1:{admin}'}}
access_log: {{path: 'off'}}
routes:
  - path: /hello
    integration: {{type: mock, body: via lo}}
""")
    from conftest import ROOT, Proc, wait_port
    p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "-c", str(cfg)])
    try:
        wait_port(port, p.proc)
        r = httpx.get(f"http://127.0.0.1:{port}/hello", timeout=5)
        assert (r.status_code, r.text) == (200, "via lo")
    finally:
        assert p.stop() == 0


def metric_value(text: str, name: str, **labels) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in metrics")


def test_metrics_sum_over_workers(gateway, upstream):
    g = gateway(routes(upstream.url), workers=2)
    worker_pids(g, 2)
    n_ok, n_404 = 30, 7
    for _ in range(n_ok):
        assert FRESH.get(g.url + "/hello").status_code == 200
    for _ in range(n_404):
        assert FRESH.get(g.url + "/up/status/404").status_code == 404
    held = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(5)]
    try:
        # the workers have accepted the held connections once the sum shows them all
        text = wait_until(lambda: (t := httpx.get(f"http://127.0.0.1:{g.admin_port}/metrics",
                                                  timeout=5).text)
                          and metric_value(t, "fastgate_open_connections") == 5 and t)
        assert metric_value(text, "fastgate_requests_total", route="GET /hello", status_class="2xx") == n_ok
        assert metric_value(text, "fastgate_requests_total", route="GET /hello", status_class="5xx") == 0
        assert metric_value(text, "fastgate_requests_total", route="ANY /up/{proxy+}",
                            status_class="4xx") == n_404
        assert metric_value(text, "fastgate_request_duration_seconds_count", route="GET /hello") == n_ok
        assert metric_value(text, "fastgate_request_duration_seconds_bucket", route="GET /hello",
                            le="+Inf") == n_ok
    finally:
        for s in held:
            s.close()
    wait_until(lambda: metric_value(httpx.get(f"http://127.0.0.1:{g.admin_port}/metrics").text,
                                    "fastgate_open_connections") == 0)


def test_workers_stop_when_the_supervisor_is_killed(tmp_path):
    """...and take their function handler processes with them."""
    (tmp_path / "fn.py").write_text("def handler(event, context):\n    return {'statusCode': 200}\n")
    g = Gateway(tmp_path, workers=2, admin=True, config=f"""\
access_log: {{path: 'off'}}
function_path: [{str(tmp_path)!r}]
functions:
  fn: {{handler: fn:handler, concurrency: 1}}
routes:
  - path: /health
    integration: {{type: mock, body: ok}}
  - path: /fn
    integration: {{type: function, function: fn}}
""")
    children = g.workers()
    assert len(children) == 3

    def handlers():
        out = []
        for pid in children:
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    out += [int(p) for p in f.read().split()]
            except FileNotFoundError:
                pass
        return out
    with httpx.Client(timeout=10) as c:     # new connections: both workers get one, in time
        wait_until(lambda: c.get(g.url + "/fn", headers={"Connection": "close"}).status_code == 200
                   and len(handlers()) == 2, timeout=15)
    children = children + handlers()
    os.kill(g.pid, signal.SIGKILL)
    g.p.proc.wait(5)

    def all_gone():
        return all(not os.path.exists(f"/proc/{pid}") or
                   open(f"/proc/{pid}/stat").read().split()[2] == "Z" for pid in children)
    wait_until(all_gone, timeout=10)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.port), timeout=1).close()


# Loaded into the gateway (PYTHONPATH): the worker kills its supervisor at the last step
# before its loop runs (gc.freeze), so the parent-death SIGTERM lands after the handlers
# are installed but while the loop is not running -- a window the full suite's load hits.
DIE_BEFORE_LOOP = """\
import gc, os, signal, time
_freeze = gc.freeze
def freeze():
    with open(os.environ["WORKER_PID_FILE"], "w") as f:
        f.write(str(os.getpid()))
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(0.3)          # the parent-death signal arrives now
    _freeze()
gc.freeze = freeze
"""


def test_a_worker_orphaned_before_its_loop_runs_still_stops(tmp_path):
    """uvloop reads signals only while its loop runs: one taken before that was noted and
    never acted on, leaving the orphaned worker serving forever."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DIE_BEFORE_LOOP)
    port = free_port()
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"""\
workers: 1
listeners: [{{address: 127.0.0.1:{port}}}]
admin: {{listen: 'off'}}
access_log: {{path: 'off'}}
routes:
  - {{path: /health, integration: {{type: mock, body: ok}}}}
""")
    from conftest import ROOT, Proc
    p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "-c", str(cfg), "--no-watch"],
             cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": str(site),
                                     "WORKER_PID_FILE": str(tmp_path / "worker.pid")})
    children = []
    try:
        assert p.proc.wait(15) == -signal.SIGKILL, "the worker did not kill its supervisor"
        children = [int((tmp_path / "worker.pid").read_text())]

        def gone():
            return all(not os.path.exists(f"/proc/{pid}") or
                       open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
                       for pid in children)
        wait_until(gone, timeout=10)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        p.stop()


def test_connection_gauges_survive_a_worker_crash(gateway, upstream):
    """A killed worker's client and upstream connections leave fastgate_open_connections
    and fastgate_upstream_connections."""
    g = gateway(routes(upstream.url), workers=1)
    children = worker_pids(g, 1)
    worker = max(children)   # the admin process is forked first

    def metrics():
        return httpx.get(f"http://127.0.0.1:{g.admin_port}/metrics", timeout=5).text
    held = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(4)]
    try:
        for s in held:
            assert raw_get(s, "/up/hello")[0] == 200
        text = metrics()
        assert metric_value(text, "fastgate_open_connections") == 4
        assert metric_value(text, "fastgate_worker_open_connections", worker="0") == 4
        assert metric_value(text, "fastgate_upstream_connections", upstream="api") >= 1
        os.kill(worker, signal.SIGKILL)
        wait_until(lambda: worker not in g.workers() and len(g.workers()) == 2, timeout=10)
        wait_until(lambda: metric_value(metrics(), "fastgate_open_connections") == 0, timeout=5)
        assert metric_value(metrics(), "fastgate_worker_open_connections", worker="0") == 0
        # the dead worker's upstream connections are gone from the total too
        text = metrics()
        assert metric_value(text, "fastgate_upstream_connections", upstream="api") == 0
        assert metric_value(text, "fastgate_worker_upstream_connections", upstream="api",
                            worker="0") == 0
        assert httpx.get(g.url + "/up/hello").status_code == 200
        text = metrics()   # the new worker counts its own
        assert metric_value(text, "fastgate_upstream_connections", upstream="api") == 1
        assert metric_value(text, "fastgate_worker_upstream_connections", upstream="api",
                            worker="0") == 1
    finally:
        for s in held:
            s.close()
