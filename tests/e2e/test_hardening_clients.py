"""Clients that misbehave, through a running gateway: ones that leave halfway through an
upload or a download, slow readers and slow senders (served whole, never cut short while
within the limits; cut off once past them), clients whose faults must not count against
the upstream, and paths that climb out of the route that matched them."""

from __future__ import annotations

import os
import re
import socket
import struct
import time

import pytest

from request_fuzz import FuzzRequest
from strict_http import RecordingUpstream, StrictClient

from conftest import Gateway, wait_until

PATTERN = bytes(range(256))      # tests/upstream_server.py's /bytes/N body, repeated


ROUTES = """\
upstreams:
  rec: {{targets: ['{rec}']}}
  rec_fresh: {{targets: ['{rec}'], keepalive: 0}}
  up: {{targets: ['{up}']}}
routes:
  - path: /r/{{proxy+}}
    integration: {{type: http, upstream: rec}}
  - path: /rf/{{proxy+}}
    integration: {{type: http, upstream: rec_fresh}}
  - path: /up/{{proxy+}}
    strip_prefix: /up
    integration: {{type: http, upstream: up}}
  - path: /public/{{proxy+}}
    integration: {{type: http, upstream: rec}}
  - path: /admin/{{proxy+}}
    integration: {{type: mock, status: 403, body: admin only}}
"""


@pytest.fixture(scope="module")
def gw(recorder, up, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("clients"), admin=False, config="""\
access_log: {path: 'off'}
limits: {body_timeout_ms: 30000}
""" + ROUTES.format(rec=recorder.url, up=up.url))
    yield g
    g.stop()


def connect(g: Gateway) -> socket.socket:
    return socket.create_connection(("127.0.0.1", g.port), timeout=10)


# --- clients that leave ---

@pytest.mark.parametrize("how", ["fin", "rst"])
def test_a_client_that_leaves_mid_upload_releases_both_sides_at_once(gw, recorder, how):
    """Issue 11, item 4: not after body_timeout_ms (30 s here), at once."""
    before = recorder.connections
    sock = connect(gw)
    sock.sendall(b"POST /rf/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    # the head went upstream on a new connection (rec_fresh pools none)
    (conn_id,) = wait_until(lambda: {i for i in recorder.open_ids if i > before})
    t0 = time.monotonic()
    if how == "fin":
        sock.shutdown(socket.SHUT_WR)
        # the gateway closes its side too (after an answer or not)
        sock.settimeout(5)
        try:
            while sock.recv(65536):
                pass
        except ConnectionResetError:
            pass
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_until(lambda: conn_id not in recorder.open_ids, timeout=5)
    assert time.monotonic() - t0 < 5
    assert not [r for r in recorder.recorded() if r.target == "/rf/upload"]   # never whole


def test_a_client_that_leaves_mid_download_does_not_leave_the_connection_pooled(gw):
    """The upstream connection still holds the rest of the body: it must be closed, so
    the next request gets a connection of its own, and its own answer."""
    with connect(gw) as sock:
        client = StrictClient(sock)
        sock.sendall(b"GET /up/conn HTTP/1.1\r\nHost: a\r\n\r\n")
        first = client.answer().body
        sock.sendall(b"GET /up/bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        got = 0
        while got < 200_000:
            got += len(sock.recv(65536))
    with connect(gw) as sock:
        sock.sendall(b"GET /up/conn HTTP/1.1\r\nHost: a\r\n\r\n")
        answer = StrictClient(sock).answer()
    assert answer.status == 200 and re.fullmatch(rb"up1:\d+", answer.body), answer
    assert answer.body != first


# --- slow clients within the limits are served whole ---

def test_a_slow_reader_gets_every_byte(gw):
    n = 8_000_000
    with connect(gw) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /up/bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % n)
        time.sleep(1.0)   # reads nothing: the gateway must hold off, not drop or time out
        answer = StrictClient(sock).answer()
    assert answer.status == 200 and answer.complete and len(answer.body) == n
    assert answer.body == (PATTERN * (n // 256 + 1))[:n]


def test_a_slow_sender_within_the_idle_timeout_is_delivered_intact(gw, recorder):
    body = os.urandom(20 * 1500)
    req = FuzzRequest("PUT", "/r/slow", [], body, "length", fid="slow-sender")
    data = req.wire()
    with connect(gw) as sock:
        for i in range(0, len(data), 1500):
            sock.sendall(data[i:i + 1500])
            time.sleep(0.05)
        answer = StrictClient(sock).answer("PUT")
    assert answer.status == 200
    (got,) = recorder.recorded({"slow-sender"})
    assert got.body == body


# --- clients past the limits are cut off, and their faults are their own ---

def stalled_upload(g: Gateway) -> None:
    """A body that stops coming while the client stays connected, until the gateway answers."""
    with connect(g) as sock:
        sock.sendall(b"POST /r/stalled HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        answer = StrictClient(sock).answer("POST")
    assert answer is not None and answer.status >= 400, answer


def stalled_download(g: Gateway) -> None:
    """A client that reads nothing of a large response, until the gateway gives up."""
    with connect(g) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /up/bytes/50000000 HTTP/1.1\r\nHost: a\r\n\r\n")
        try:
            wait_until(lambda: g.p.proc.poll() is not None or closed_for_us(sock), timeout=10, step=0.3)
        except AssertionError:
            raise AssertionError("a client that reads nothing stayed connected 10 s past "
                                 "total_timeout_ms: the gateway must give up on it") from None


def closed_for_us(sock: socket.socket) -> bool:
    """True once the gateway has given up on a connection we read nothing from: its end
    is no longer ESTABLISHED (/proc/net/tcp state 01; its FIN waits behind the unread
    data, so ours still is)."""
    port = f":{sock.getsockname()[1]:04X}"
    with open("/proc/net/tcp") as f:
        return all(line.split()[3] != "01" for line in f if line.split()[2].endswith(port))


@pytest.mark.parametrize("stall, then", [(stalled_upload, "/r/after"), (stalled_download, "/up/hello")])
def test_clients_that_stall_do_not_eject_the_upstream(tmp_path, recorder, up, stall, then):
    """Issue 11, item 2: a request that outlives total_timeout_ms because its client
    stopped sending or reading is the client's fault, not the upstream's; three of them
    (the passive ejection's 3 consecutive failures) must not get everyone else a 503."""
    g = Gateway(tmp_path, admin=False, config=f"""\
access_log: {{path: 'off'}}
limits: {{body_timeout_ms: 30000}}
""" + ROUTES.format(rec=recorder.url, up=up.url).replace(
        "targets: [", "total_timeout_ms: 800, targets: ["))
    try:
        for _ in range(3):
            stall(g)
        with connect(g) as sock:
            sock.sendall(f"GET {then} HTTP/1.1\r\nHost: a\r\n\r\n".encode())
            answer = StrictClient(sock).answer()
        assert answer.status == 200, answer
    finally:
        g.stop()


def test_a_trickled_body_is_cut_off(tmp_path, recorder, up):
    """Issue 11, item 5: one byte every 0.2 s restarts any idle timeout; the minimum body
    rate stops it (here 500 B/s after a 1 s grace) with a 408."""
    g = Gateway(tmp_path, admin=False, config="""\
access_log: {path: 'off'}
limits: {body_timeout_ms: 30000, min_body_rate: 500, body_rate_grace_ms: 1000}
""" + ROUTES.format(rec=recorder.url, up=up.url))
    try:
        with connect(g) as sock:
            sock.sendall(b"POST /r/trickle HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
            t0 = time.monotonic()
            sock.settimeout(0.2)
            answer = None
            while answer is None and time.monotonic() - t0 < 10:
                try:
                    sock.sendall(b"x")
                    answer = StrictClient(sock).answer("POST")
                except socket.timeout:
                    continue
                except (BrokenPipeError, ConnectionResetError):
                    break
        assert answer is not None and answer.status == 408, answer
        assert time.monotonic() - t0 < 10
    finally:
        g.stop()


# --- paths that climb out of their route (issue 11, item 3) ---

def served_path(target: str) -> str:
    """The path a lenient upstream would serve for `target`: %2e decoded, `;` parameters
    dropped from each segment (Tomcat's `..;`), dot segments removed."""
    path = re.sub("%2e", ".", target.split("?")[0], flags=re.I)
    out: list[str] = []
    for seg in path.split("/")[1:]:
        seg = seg.split(";")[0]
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    return "/" + "/".join(out)


ESCAPES = ["/public/../admin/secret", "/public/%2e%2e/admin/secret", "/public/%2E%2E/admin/secret",
           "/public/.%2e/admin/secret", "/public/..;/admin/secret", "/public/x/../../admin/secret",
           "/public/./../admin/secret", "/public/x/..;/..;/admin/secret"]
ABOVE_ROOT = ["/public/../../etc/passwd", "/public/%2e%2e/%2e%2e/etc/passwd", "/public/x/../../../a",
              "/public/..;/..;/etc/passwd"]


@pytest.mark.parametrize("target", ESCAPES + ABOVE_ROOT)
def test_a_path_never_leaves_its_route(gw, recorder, target):
    """Whatever the gateway does with dot segments, the upstream behind /public/ never gets
    a path it would serve from outside /public/; one that climbs above the root is 400."""
    fid = f"path-{target}"
    with connect(gw) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: a\r\nX-Fuzz-Id: {fid}\r\n\r\n".encode())
        answer = StrictClient(sock).answer()
    leaked = [r.target for r in recorder.recorded({fid}) if not served_path(r.target).startswith("/public/")]
    assert leaked == [], f"{target} reached the /public upstream as {leaked}"
    if target in ABOVE_ROOT:
        assert answer.status == 400, answer
    else:
        assert answer.status in (400, 403), answer   # refused, or the admin route's own answer


def test_dot_segments_inside_a_route_still_reach_it(gw, recorder):
    with connect(gw) as sock:
        sock.sendall(b"GET /public/a/./b/../c HTTP/1.1\r\nHost: a\r\nX-Fuzz-Id: inside\r\n\r\n")
        answer = StrictClient(sock).answer()
    assert answer.status == 200
    (got,) = recorder.recorded({"inside"})
    assert served_path(got.target) == "/public/a/c"
