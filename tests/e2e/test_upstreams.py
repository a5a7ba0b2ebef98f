"""Upstream groups end to end: keep-alive pools, balancing, health (active and
passive), retries, timeouts and the gateway errors they end in."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import free_port, read_response, wait_until


def get(url: str, **kw) -> httpx.Response:
    return httpx.get(url, timeout=10, **kw)



def metric(admin_port: int, name: str, **labels) -> float | None:
    text = get(f"http://127.0.0.1:{admin_port}/metrics").text
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    return None


def dead_url() -> str:
    """A loopback port nobody listens on: connects are refused."""
    return f"http://127.0.0.1:{free_port()}"


def group(name: str, urls, extra: str = "") -> str:
    lines = [f"  {name}:", "    targets:"]
    for u in urls:
        if isinstance(u, tuple):
            lines.append(f"      - url: {u[0]}\n        weight: {u[1]}")
        else:
            lines.append(f"      - url: {u}")
    return "\n".join(lines) + "\n" + "".join(f"    {line}\n" for line in extra.strip().splitlines())


def config(groups: str, routes: str = "", log: Path | None = None) -> str:
    """log: write the access log there, one line per request: status, length, error type, message."""
    access_log = "{path: 'off'}" if log is None else \
        f"{{path: '{log}', format: '{LOG_FORMAT}'}}"
    return (f"access_log: {access_log}\nupstreams:\n" + groups + "routes:\n" + (routes or
            "  - path: /{proxy+}\n    integration: {type: http, upstream: api}\n"))


LOG_FORMAT = "$context.status $context.responseLength $context.error.responseType $context.error.message"


def logged(log: Path, n: int = 1) -> list[str]:
    """The access log's lines once it has n (workers flush it every second)."""
    return wait_until(lambda: log.exists() and len(lines := log.read_text().splitlines()) >= n
                      and lines)


# --- keep-alive pool ----------------------------------------------------------------

def test_pool_reuses_upstream_connections_across_client_connections(gateway, upstream):
    g = gateway(config(group("api", [upstream.url])))
    before = get(upstream.url + "/stats").json()["connections"]
    bodies = []
    for _ in range(30):   # a fresh client connection each time: the pool is per target, not per client
        r = get(g.url + "/conn", headers={"Connection": "close"})
        assert r.status_code == 200
        bodies.append(r.text)
    assert len(set(bodies)) == 1, bodies
    # one pooled connection, plus the one of this /stats request
    assert get(upstream.url + "/stats").json()["connections"] - before == 2


def test_keepalive_zero_opens_a_connection_per_request(gateway, upstream):
    g = gateway(config(group("api", [upstream.url], "keepalive: 0")))
    with httpx.Client(timeout=10) as c:
        bodies = [c.get(g.url + "/conn").text for _ in range(10)]
    assert len(set(bodies)) == 10


# --- balancing ----------------------------------------------------------------------

def test_round_robin_honours_weights(gateway, make_upstream):
    a, b = make_upstream("a"), make_upstream("b")
    g = gateway(config(group("api", [(a.url, 1), (b.url, 3)])))
    with httpx.Client(timeout=10) as c:
        names = [c.get(g.url + "/name").text for _ in range(40)]
    assert Counter(names) == {"a": 10, "b": 30}
    # smooth: b never gets more than three in a row
    assert "bbbb" not in "".join(names)


def test_least_conn_sends_fewer_to_a_slow_target(gateway, make_upstream):
    slow, fast = make_upstream("slow"), make_upstream("fast")
    assert get(slow.url + "/set-delay/300").status_code == 200
    g = gateway(config(group("api", [slow.url, fast.url], "balance: least_conn")))
    counts = Counter()
    lock = threading.Lock()
    stop_at = time.monotonic() + 1.5

    def client():
        with httpx.Client(timeout=10) as c:
            while time.monotonic() < stop_at:
                name = c.get(g.url + "/name").text
                with lock:
                    counts[name] += 1
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert counts["slow"] >= 1
    # round robin would split evenly; least_conn keeps the slow one at about one request
    assert counts["fast"] > 5 * counts["slow"], counts


def hash_config(urls, hash_on: str) -> str:
    return config(group("api", urls, f"balance: hash\nhash_on: '{hash_on}'"))


def test_hash_on_header_is_sticky_and_removal_moves_only_its_keys(gateway, make_upstream):
    ups = [make_upstream(n) for n in ("a", "b", "c")]
    g = gateway(hash_config([u.url for u in ups], "header:X-User"))
    keys = [f"user-{i}" for i in range(60)]

    def mapping():
        with httpx.Client(timeout=10) as c:
            return {k: c.get(g.url + "/name", headers={"X-User": k}).text for k in keys}
    first = mapping()
    assert mapping() == first
    assert set(first.values()) == {"a", "b", "c"}
    # take target c out of the group and reload: only c's keys may move
    g.config_path.write_text(g.config_path.read_text().replace(f"      - url: {ups[2].url}\n", ""))
    import os
    import signal
    os.kill(g.pid, signal.SIGHUP)
    second = wait_until(lambda: m if "c" not in (m := mapping()).values() else None)
    for k in keys:
        if first[k] != "c":
            assert second[k] == first[k], k
        else:
            assert second[k] in ("a", "b")


def test_hash_on_cookie_is_sticky(gateway, make_upstream):
    ups = [make_upstream(n) for n in ("a", "b", "c")]
    g = gateway(hash_config([u.url for u in ups], "cookie:session"))
    seen = {}
    with httpx.Client(timeout=10) as c:
        for i in range(30):
            names = {c.get(g.url + "/name", headers={"Cookie": f"theme=dark; session=s{i}; x=1"}).text
                     for _ in range(3)}
            assert len(names) == 1
            seen[i] = names.pop()
        assert len(set(seen.values())) >= 2   # keys spread over the ring
        # another cookie's value does not count
        assert c.get(g.url + "/name", headers={"Cookie": "session=s0; theme=light"}).text == seen[0]


def test_hash_on_client_ip_is_sticky(gateway, make_upstream):
    ups = [make_upstream(n) for n in ("a", "b", "c")]
    g = gateway(hash_config([u.url for u in ups], "client_ip"))
    names = {get(g.url + "/name", headers={"Connection": "close"}).text for _ in range(20)}
    assert len(names) == 1


# --- active health checks -------------------------------------------------------------

HEALTH = """\
health_check:
  path: /health
  interval_ms: 100
  timeout_ms: 100
  expected_status: [200]
  healthy_threshold: 2
  unhealthy_threshold: 2
"""


def test_active_health_check_takes_a_target_out_and_back(gateway, make_upstream):
    a, b = make_upstream("a"), make_upstream("b")
    g = gateway(config(group("api", [a.url, b.url], HEALTH)))
    assert metric(g.admin_port, "fastgate_upstream_healthy", upstream="api", target=a.url) == 1
    with httpx.Client(timeout=10) as c:
        assert Counter(c.get(g.url + "/name").text for _ in range(10)) == {"a": 5, "b": 5}
        assert get(a.url + "/set-health/500").status_code == 200
        wait_until(lambda: metric(g.admin_port, "fastgate_upstream_healthy",
                                  upstream="api", target=a.url) == 0)
        assert metric(g.admin_port, "fastgate_upstream_healthy", upstream="api", target=b.url) == 1
        # workers copy the verdict every 0.5 s: then every request goes to b
        wait_until(lambda: Counter(c.get(g.url + "/name").text for _ in range(10)) == {"b": 10})
        assert get(a.url + "/set-health/200").status_code == 200
        wait_until(lambda: metric(g.admin_port, "fastgate_upstream_healthy",
                                  upstream="api", target=a.url) == 1)
        wait_until(lambda: Counter(c.get(g.url + "/name").text for _ in range(10)) == {"a": 5, "b": 5})


def test_no_healthy_target_is_503(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url], HEALTH), log=log))
    assert get(upstream.url + "/set-health/503").status_code == 200
    wait_until(lambda: metric(g.admin_port, "fastgate_upstream_healthy",
                              upstream="api", target=upstream.url) == 0)
    r = wait_until(lambda: (r := get(g.url + "/name")).status_code == 503 and r)   # once workers copy it
    assert r.status_code == 503
    assert r.headers["content-type"] == "application/json"
    # the group's name is for the log, not the client (AWS's body is the message alone)
    assert r.json() == {"message": "Service Unavailable"}
    assert "503 33 NO_HEALTHY_UPSTREAM no healthy target in upstream 'api'" in logged(log)


# --- passive ejection, retries ----------------------------------------------------------

def test_passive_ejection_after_consecutive_failures(gateway, upstream):
    dead = dead_url()
    g = gateway(config(group("api", [dead, upstream.url],
                             "retries: 0\npassive: {max_failures: 2, eject_ms: 30000}")))
    with httpx.Client(timeout=10) as c:
        statuses = [c.get(g.url + "/name").status_code for _ in range(20)]
    # round robin alternates: the dead target fails twice, then is skipped
    assert statuses[:4] == [502, 200, 502, 200]
    assert statuses[4:] == [200] * 16


def test_retry_on_connect_failure(gateway, upstream):
    g = gateway(config(group("api", [dead_url(), upstream.url],
                             "retries: 1\npassive: {max_failures: 0}")))
    with httpx.Client(timeout=10) as c:
        for method in ("GET", "POST"):   # a refused connect is safe to retry for any method
            for _ in range(6):
                r = c.request(method, g.url + "/name", content=b"x")
                assert (r.status_code, r.text) == (200, "up1")


def test_retries_idempotent_methods_only_within_budget(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url], "retries: 2\npassive: {max_failures: 0}"), log=log))
    assert get(upstream.url + "/set-reset/1").status_code == 200

    def requests_seen():
        return get(upstream.url + "/stats").json()["requests"]
    before = requests_seen()
    r = get(g.url + "/x")
    assert r.status_code == 502
    assert r.json() == {"message": "Internal server error"}
    assert logged(log)[0].endswith("connection closed before the response completed")
    assert requests_seen() - before == 1 + 1 + 2   # the /stats itself, then 1 try + 2 retries
    before = requests_seen()
    r = httpx.post(g.url + "/x", content=b"data", timeout=10)
    assert r.status_code == 502
    assert requests_seen() - before == 1 + 1   # POST is never retried after the request was sent
    before = requests_seen()
    assert httpx.put(g.url + "/x", content=b"data", timeout=10).status_code == 502
    assert requests_seen() - before == 1 + 3


def test_retry_moves_a_get_to_the_healthy_target(gateway, make_upstream):
    bad, good = make_upstream("bad"), make_upstream("good")
    assert get(bad.url + "/set-reset/1").status_code == 200
    g = gateway(config(group("api", [bad.url, good.url], "retries: 1\npassive: {max_failures: 0}")))
    with httpx.Client(timeout=10) as c:
        assert [c.get(g.url + "/name").text for _ in range(6)] == ["good"] * 6
        posts = [c.post(g.url + "/name", content=b"x").status_code for _ in range(6)]
    assert sorted(set(posts)) == [200, 502]


# --- timeouts and gateway errors ------------------------------------------------------

def test_first_byte_timeout_is_504_and_long_total_timeout_is_accepted(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url], "retries: 0"), log=log, routes=f"""\
  - path: /short/{{proxy+}}
    strip_prefix: /short
    integration: {{type: http, upstream: api}}
    timeouts: {{first_byte_ms: 1000}}
  - path: /long/{{proxy+}}
    strip_prefix: /long
    integration: {{type: http, upstream: api}}
    timeouts: {{total_ms: 35000}}
"""))
    t0 = time.monotonic()
    r = get(g.url + "/short/slow/5000")
    took = time.monotonic() - t0
    assert r.status_code == 504
    assert r.json() == {"message": "Endpoint request timed out"}
    assert logged(log)[0] == f"504 40 INTEGRATION_TIMEOUT upstream 127.0.0.1:{upstream.port}: no response in time"
    assert 0.9 < took < 3.0   # the 1 s limit, well before the upstream's 5 s
    r = get(g.url + "/long/slow/1200")   # longer than the other route's limit: fine here
    assert (r.status_code, r.text) == (200, "hello")


def test_total_timeout_is_504(gateway, upstream):
    g = gateway(config(group("api", [upstream.url], "retries: 0"), """\
  - path: /{proxy+}
    integration: {type: http, upstream: api}
    timeouts: {total_ms: 800, first_byte_ms: 10000}
"""))
    t0 = time.monotonic()
    r = get(g.url + "/slow/4000")
    assert r.status_code == 504
    assert r.json()["message"] == "Endpoint request timed out"
    assert 0.7 < time.monotonic() - t0 < 2.4   # the 0.8 s limit, well before the upstream's 4 s


@pytest.fixture
def blackhole():
    """A listener whose accept queue is full: further connects hang (SYNs are dropped)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.3)
    try:
        probe.connect(("127.0.0.1", port))
        pytest.fail("the accept queue did not fill: cannot make a connect hang on loopback")
    except socket.timeout:
        pass
    finally:
        probe.close()
    yield f"http://127.0.0.1:{port}"
    for s in fillers:
        s.close()
    srv.close()


def test_connect_timeout_is_504(gateway, blackhole, tmp_path):
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [blackhole], "retries: 0"), log=log, routes="""\
  - path: /{proxy+}
    integration: {type: http, upstream: api}
    timeouts: {connect_ms: 300}
"""))
    t0 = time.monotonic()
    r = get(g.url + "/x")
    assert r.status_code == 504
    assert r.json() == {"message": "Endpoint request timed out"}
    assert time.monotonic() - t0 < 2.0
    assert logged(log)[0] == f"504 40 INTEGRATION_TIMEOUT upstream {blackhole[7:]}: connect timed out"


def test_refused_is_502(gateway, tmp_path):
    dead = dead_url()
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [dead], "retries: 0"), log=log))
    r = get(g.url + "/x")
    assert r.status_code == 502
    # AWS's body: the message alone; the upstream's address and the error go to the log
    assert r.content == b'{"message":"Internal server error"}'
    line = logged(log)[0]
    assert line.startswith(f"502 35 INTEGRATION_FAILURE upstream {dead[7:]}: connect failed:")
    assert "refused" in line.lower()


def test_an_upstream_named_by_host_name(gateway, upstream, tmp_path):
    # resolved when a connection is made (not per request: the pool keeps it), then each
    # address tried in turn: "localhost" may name ::1 first, where nothing listens
    by_name = upstream.url.replace("127.0.0.1", "localhost")
    dead = dead_url().replace("127.0.0.1", "localhost")
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [by_name]) + group("gone", [dead], "retries: 0"), log=log,
                       routes="""\
  - path: /gone/{proxy+}
    integration: {type: http, upstream: gone}
  - path: /{proxy+}
    integration: {type: http, upstream: api}
"""))
    bodies = {get(g.url + "/conn").text for _ in range(5)}
    assert len(bodies) == 1         # one pooled connection served all five
    r = get(g.url + "/gone/x")
    assert r.status_code == 502
    line = logged(log, 6)[5]
    assert line.startswith(f"502 35 INTEGRATION_FAILURE upstream {dead[7:]}: connect failed:")
    assert "refused" in line.lower()


def test_reset_is_502(gateway, upstream, tmp_path):
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url]), log=log))
    r = get(g.url + "/reset")
    assert r.status_code == 502
    assert r.json() == {"message": "Internal server error"}
    assert get(g.url + "/name").status_code == 200
    assert logged(log, 2)[0] == (f"502 35 INTEGRATION_FAILURE upstream 127.0.0.1:{upstream.port}: "
                                 "connection closed before the response completed")


def test_invalid_chunk_size_with_the_head_is_502(gateway, upstream, tmp_path):
    """A chunked head and an invalid chunk size in one read: nothing reached the client yet, so
    the relayed head is taken back and the client gets the 502, not an empty reply."""
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url], "retries: 0"), log=log))
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"GET /badchunk/0 HTTP/1.1\r\nHost: a\r\n\r\nGET /name HTTP/1.1\r\nHost: a\r\n\r\n")
        f = s.makefile("rb")
        r = read_response(f)
        assert (r.status, r.body) == (502, b'{"message":"Internal server error"}')
        assert len(r.all("content-length")) == 1 and r.header("transfer-encoding") is None
        assert read_response(f).body == b"up1"      # the client's connection goes on
    line = logged(log, 2)[0]
    assert line.startswith(f"502 35 INTEGRATION_FAILURE upstream 127.0.0.1:{upstream.port}: "
                           "invalid response: "), line


def test_invalid_chunk_size_after_the_head_was_sent_ends_the_response_short(gateway, upstream, tmp_path):
    """The head and a chunk reached the client before the bad chunk size: the response ends
    without its last chunk, with a clean close after what was relayed (no reset), and the
    access log says what happened."""
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url], "retries: 0"), log=log))
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"GET /badchunk/300 HTTP/1.1\r\nHost: a\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):       # a reset would raise here
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nTransfer-Encoding: chunked" in head, head
    assert body == b"5\r\nhello\r\n"        # no last chunk: every client sees the body is incomplete
    line = logged(log)[0]
    assert line.startswith(f"200 5 INTEGRATION_FAILURE upstream 127.0.0.1:{upstream.port}: "
                           "invalid response: "), line
    assert line.endswith("(after the response head was sent)")


def test_invalid_chunk_size_after_the_head_resets_a_close_delimited_response(gateway, upstream, tmp_path):
    """An HTTP/1.0 client gets the chunked response delimited by the close: a clean close
    would tell it the body is complete, so the connection is reset instead (RFC 9112 section 8)."""
    log = tmp_path / "access.log"
    g = gateway(config(group("api", [upstream.url], "retries: 0"), log=log))
    with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
        s.sendall(b"GET /badchunk/300 HTTP/1.0\r\nHost: a\r\n\r\n")
        data = b""
        with pytest.raises(ConnectionResetError):
            while chunk := s.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nConnection: close" in head, head
    assert body == b"hello"
    assert logged(log)[0].startswith(f"200 5 INTEGRATION_FAILURE upstream 127.0.0.1:{upstream.port}: ")
