"""Slow, stalling and departing clients: what they cost the gateway and its upstreams.

- A failure the client caused (a slow reader, a body that stalls, an upstream giving up on
  that body) never counts against the upstream: clients cannot eject a healthy target.
  The upstream's own failures still do, and an ejection is logged.
- A client that leaves (FIN) in the middle of its request releases its socket and its
  upstream connection at once, not at the body timeout; a client that half-closes after a
  complete request still gets its answer. The open-files limit is raised at start.
- A body trickled slower than limits.min_body_rate (after limits.body_rate_grace_ms), or
  not complete within limits.body_deadline_ms, is answered 408 like a stalled one.
"""

from __future__ import annotations

import json
import re
import resource
import socket
import threading
import time

import httpx
import pytest

from conftest import read_response, wait_until


def gateway_config(limits: str = "", upstreams: str = "", routes: str = "", log: str = "'off'") -> str:
    return (f"access_log: {{path: {log}}}\n"
            + (f"limits:\n{limits}" if limits else "")
            + f"upstreams:\n{upstreams}routes:\n{routes}")


def target_group(name: str, url: str, extra: str = "") -> str:
    return f"  {name}:\n    targets: [{url}]\n" + "".join(f"    {line}\n" for line in extra.splitlines())


def route(prefix: str, group: str) -> str:
    return (f"  - path: {prefix}/{{proxy+}}\n    strip_prefix: {prefix}\n"
            f"    integration: {{type: http, upstream: {group}}}\n")


def connect(port: int, timeout: float = 10.0, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    return s


def closed_by_peer(s: socket.socket) -> bool:
    """Whether the peer closed s (EOF or reset), reading away whatever came before."""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except (socket.timeout, BlockingIOError):
        return False


# --- item: clients cannot eject a healthy upstream ---------------------------------------------

PASSIVE = "passive: {max_failures: 2, eject_ms: 60000}"


def slow_readers(g, n: int) -> None:
    # Each asks for a large response and reads none of it: the gateway stops reading the
    # upstream (flow control) and its first-byte timeout ends the exchange. The upstream was
    # waiting for the client all along.
    socks = [connect(g.port, rcvbuf=4096) for _ in range(n)]
    for s in socks:
        s.sendall(b"GET /api/bytes/400000000 HTTP/1.1\r\nHost: gw\r\n\r\n")
    wait_until(lambda: g.access_log().count("/api/bytes/") >= n, timeout=30)
    for s in socks:
        s.close()


def stalled_bodies(g, n: int, path: bytes, status: int) -> None:
    # Each sends a tenth of its body and stalls until something gives up on it: the answer
    # is `status`.
    socks = [connect(g.port) for _ in range(n)]
    for s in socks:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n%s" % (path, b"x" * 100))
    for s in socks:
        r = read_response(s.makefile("rb"))
        assert r.status == status, (r.status, r.body)
        s.close()


def stalled_bodies_past_total_timeout(g, n: int) -> None:
    stalled_bodies(g, n, b"/total/x", 504)    # the route's total timeout answers


def bodies_the_upstream_gave_up_on(g, n: int) -> None:
    stalled_bodies(g, n, b"/rec/x", 502)      # the upstream's own body timeout closes its end


@pytest.mark.parametrize("offend", [slow_readers, stalled_bodies_past_total_timeout,
                                    bodies_the_upstream_gave_up_on])
def test_clients_at_fault_do_not_eject_the_upstream(gateway, upstream, recording_upstream, tmp_path,
                                                    offend):
    rec = recording_upstream("--body-timeout-ms", "300")
    log = tmp_path / "access.log"
    g = gateway(gateway_config(
        upstreams=target_group("api", upstream.url, f"first_byte_timeout_ms: 1000\n{PASSIVE}")
        + target_group("total", upstream.url, f"total_timeout_ms: 1500\n{PASSIVE}")
        + target_group("rec", rec.url, PASSIVE),
        routes=route("/api", "api") + route("/total", "total") + route("/rec", "rec"),
        log=f"'{log}'"))
    g.access_log = lambda: log.read_text() if log.exists() else ""
    offend(g, 3)    # more than max_failures
    # every other client is still served by the (only) target of each group
    with httpx.Client(timeout=10) as c:
        assert c.get(g.url + "/api/name").status_code == 200
        assert c.get(g.url + "/total/name").status_code == 200
        r = c.post(g.url + "/rec/y", content=b"ok")
        assert r.status_code == 200 and r.json()["body_len"] == 2
    assert "ejected" not in g.p.output()


def test_upstream_faults_still_eject_and_the_ejection_is_logged(gateway, upstream):
    g = gateway(gateway_config(
        upstreams=target_group("api", upstream.url, f"first_byte_timeout_ms: 500\nretries: 0\n{PASSIVE}"),
        routes=route("/api", "api")))
    with httpx.Client(timeout=10) as c:
        # the upstream itself is too slow, twice: that is its own failure
        assert [c.get(g.url + "/api/slow/3000").status_code for _ in range(2)] == [504, 504]
        assert c.get(g.url + "/api/name").status_code == 503
    out = g.p.wait_output("ejected")
    port = upstream.url.rsplit(":", 1)[1]
    assert re.search(r"fastgate\[\d+\]: upstream 'api': target 127\.0\.0\.1:%s ejected for 60 s after 2 "
                     r"consecutive failures \(last: no response in time\)" % port, out), out


def test_a_connection_paused_for_a_slow_reader_reads_again_in_the_pool(gateway, upstream):
    # A client reading slower than the upstream sends fills its write buffer, and the gateway
    # stops reading the upstream. When the response ends in that state, the connection goes
    # back to the pool: it must read again, or the next request on it waits for an answer
    # nobody reads (504 after first_byte_timeout). Before the fix this hit one round in two.
    g = gateway(gateway_config(upstreams=target_group("api", upstream.url, "first_byte_timeout_ms: 2000"),
                               routes=route("/api", "api")))
    for i in range(12):
        with connect(g.port, rcvbuf=1) as s:    # the kernel's smallest: slower than the upstream
            s.sendall(b"GET /api/bytes/3000000 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            got = b""
            while data := s.recv(65536):
                got += data
            assert got.startswith(b"HTTP/1.1 200 ") and len(got.partition(b"\r\n\r\n")[2]) == 3000000
        # a new client connection: the pooled upstream connection serves it
        r = httpx.get(g.url + "/api/name", timeout=10)
        assert (r.status_code, r.text) == (200, "up1"), (i, r.status_code, r.text)


# --- item: clients that leave halfway ------------------------------------------------------------

N_ABANDONED = 100


def test_abandoned_requests_release_both_sides_at_once(gateway, recording_upstream):
    rec = recording_upstream()
    # the body and header timeouts stay long: only noticing the client's FIN frees anything soon
    g = gateway(gateway_config(limits="  header_timeout_ms: 60000\n",
                               upstreams=target_group("api", rec.url), routes=route("/api", "api")))
    socks = [connect(g.port) for _ in range(N_ABANDONED)]
    for i, s in enumerate(socks):
        s.sendall(b"POST /api/%d HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\n%s"
                  % (i, b"x" * 1000))
    # each request has its upstream connection, then every client leaves halfway
    wait_until(lambda: rec.open_connections() >= N_ABANDONED, timeout=20)
    heads = [connect(g.port) for _ in range(20)]
    for s in heads:
        s.sendall(b"GET /api/x HTTP/1.1\r\nHost: gw\r\n")   # a head that will never end
    time.sleep(0.2)     # the heads have been read; nothing waits on this
    left = time.monotonic()
    for s in socks + heads:
        s.shutdown(socket.SHUT_WR)
    # a broken gateway holds both until its body timeout (60 s) or header timeout (60 s)
    for s in socks + heads:
        s.settimeout(max(0.1, left + 10 - time.monotonic()))
        assert closed_by_peer(s), "the gateway kept a client that left"
    wait_until(lambda: rec.open_connections() == 0, timeout=max(0.1, left + 10 - time.monotonic()))
    for s in socks + heads:
        s.close()
    # nothing was sent upstream as a request, and the gateway serves on
    assert not rec.events("request")
    assert httpx.post(g.url + "/api/ok", content=b"fine", timeout=10).json()["body_len"] == 4


def test_a_half_close_after_a_complete_request_still_gets_the_answer(gateway, upstream):
    g = gateway(gateway_config(upstreams=target_group("api", upstream.url), routes=route("/api", "api")))
    for req in (b"POST /api/slow/300 HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello",
                b"POST /api/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n0\r\n\r\n",
                b"GET /api/slow/300 HTTP/1.1\r\nHost: gw\r\n\r\n"):
        with connect(g.port) as s:
            s.sendall(req)
            s.shutdown(socket.SHUT_WR)
            r = read_response(s.makefile("rb"))
            assert r.status == 200, (req, r.status, r.body)
            assert r.body == (b"hello" if b"slow" in req else r.body)
            assert s.recv(1) == b""     # and then the connection is closed


def test_the_open_files_limit_is_raised_to_the_hard_limit(gateway, upstream):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip("the hard limit leaves nothing to raise")
    low = 256
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:   # the gateway inherits the low soft limit
        g = gateway(gateway_config(upstreams=target_group("api", upstream.url), routes=route("/api", "api")))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    want = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    for pid in [g.pid, *g.workers()]:
        with open(f"/proc/{pid}/limits") as f:
            line = next(x for x in f if x.startswith("Max open files"))
        assert line.split()[3:5] == [want, want], line
    out = g.p.wait_output("open files")
    assert re.search(r"fastgate\[\d+\]: open files: soft limit raised from %d to %s \(the hard limit\)"
                     % (low, want), out), out


# --- item: slow POST ---------------------------------------------------------------------------

def trickle(s: socket.socket, byte_every_s: float, until_s: float) -> float | None:
    """Send one body byte every byte_every_s until the gateway answers (the time it took)
    or until_s passes (None)."""
    import select
    t0 = time.monotonic()
    while time.monotonic() - t0 < until_s:
        if select.select([s], [], [], byte_every_s)[0]:
            return time.monotonic() - t0
        try:
            s.sendall(b"x")
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0
    return None


def test_a_trickled_body_is_answered_408_and_the_upstream_is_not_blamed(gateway, recording_upstream):
    rec = recording_upstream()
    g = gateway(gateway_config(
        limits="  min_body_rate: 1000\n  body_rate_grace_ms: 1000\n",
        upstreams=target_group("api", rec.url, "passive: {max_failures: 1, eject_ms: 60000}"),
        routes=route("/api", "api")))
    # 5 bytes/s: each byte restarts the body timeout (60 s), but the rate is far below 1000/s
    # after a second's grace
    clients = [connect(g.port) for _ in range(2)]
    for s in clients:
        s.sendall(b"POST /api/slow HTTP/1.1\r\nHost: gw\r\nContent-Length: 100000\r\n\r\nx")
    took = [None, None]

    def run(i):
        took[i] = trickle(clients[i], 0.2, 15)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert None not in took, "a 5 bytes/s body held its connection"
    for s in clients:
        r = read_response(s.makefile("rb"))
        assert r.status == 408 and json.loads(r.body) == {"message": "Request Timeout"}, (r.status, r.body)
        assert r.header("connection") == "close"
        s.close()
    # the upstream connections went with them, and the upstream is still in service
    wait_until(lambda: rec.open_connections() == 0)
    r = httpx.post(g.url + "/api/fast", content=b"x" * 50000, timeout=10)
    assert r.status_code == 200 and r.json()["body_len"] == 50000


def test_a_body_past_its_deadline_is_answered_408(gateway, upstream):
    g = gateway(gateway_config(
        limits="  min_body_rate: 0\n  body_deadline_ms: 1500\n",
        upstreams=target_group("api", upstream.url), routes=route("/api", "api")))
    with connect(g.port) as s:
        s.sendall(b"POST /api/echo HTTP/1.1\r\nHost: gw\r\nContent-Length: 10000000\r\n\r\n")
        # a steady 40 KB/s: neither stalled nor slow, but 10 MB would take four minutes
        import select
        t0 = time.monotonic()
        while not select.select([s], [], [], 0.05)[0]:
            assert time.monotonic() - t0 < 15, "the body deadline never came"
            s.sendall(b"x" * 2000)
        r = read_response(s.makefile("rb"))
    assert r.status == 408 and json.loads(r.body) == {"message": "Request Timeout"}, (r.status, r.body)
    assert time.monotonic() - t0 >= 1.4
