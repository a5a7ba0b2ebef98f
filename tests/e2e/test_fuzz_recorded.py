"""Fuzzed requests through a running gateway to an upstream that records what it receives,
parsed strictly (tests/request_fuzz.py): an answer for every request, every valid request
delivered once and intact, malformed ones refused, and no smuggled request, whether the
upstream connection is pooled or new. Then concurrent uploads on new upstream connections
with request lines hidden in their bodies, and the worker must have survived it all."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import HealthCheck, given, settings

from request_fuzz import SMUGGLE, FuzzRequest, check_answer, check_upstream, exchanges
from strict_http import StrictClient

from conftest import Gateway


@pytest.fixture(scope="module")
def fuzz_gw(recorder, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("fuzzrec"), admin=False, config=f"""\
access_log: {{path: 'off'}}
upstreams:
  pooled: {{targets: ['{recorder.url}']}}
  fresh: {{targets: ['{recorder.url}'], keepalive: 0}}
routes:
  - path: /p/{{proxy+}}
    integration: {{type: http, upstream: pooled}}
  - path: /f/{{proxy+}}
    integration: {{type: http, upstream: fresh}}
""")
    g.initial_workers = g.workers()
    yield g
    g.stop()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(ex=exchanges())
def test_fuzzed_requests_reach_the_upstream_once_and_intact(fuzz_gw, recorder, ex):
    from request_fuzz import check_exchange
    check_exchange(fuzz_gw.port, recorder, ex)


def test_pipelined_requests_reach_the_upstream_with_their_own_headers(fuzz_gw, recorder):
    """Found by the fuzzer above: a request queued behind another on its connection was
    forwarded with the headers of the last request parsed after it."""
    reqs = [FuzzRequest("GET", f"/p/pipe/{i}", [("X-F-Own", f"mine-{i}")], fid=f"pipe{i}")
            for i in range(3)]
    with socket.create_connection(("127.0.0.1", fuzz_gw.port), timeout=10) as sock:
        sock.sendall(b"".join(r.wire() for r in reqs))
        client = StrictClient(sock)
        answers = [client.answer() for _ in reqs]
    assert [a.status for a in answers] == [200] * 3
    got = {r.target: [(k, v) for k, v in r.headers if k in ("x-fuzz-id", "x-f-own")]
           for r in recorder.recorded({r.fid for r in reqs})}
    assert got == {r.target: [("x-fuzz-id", r.fid), ("x-f-own", f"mine-{i}")]
                   for i, r in enumerate(reqs)}, got
    assert [a.header("x-fuzz-id") for a in answers] == [r.fid for r in reqs]


def upload(port: int, i: int, expect: bool, out: list) -> None:
    body = (bytes(range(256)) * 1024)[:65536] + SMUGGLE + b"z" * 200_000
    req = FuzzRequest("POST", f"/f/upload/{i}", [], body, "length", expect=expect, fid=f"up{i}")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            data = req.wire()
            head_end = data.index(b"\r\n\r\n") + 4
            sock.sendall(data[:head_end])   # the body follows at once, 100-continue or not
            sock.sendall(data[head_end:])
            check_answer(req, StrictClient(sock).answer("POST"))
        out.append(None)
    except BaseException as e:  # reported by the assertion in the test
        out.append(e)


def test_concurrent_uploads_on_new_upstream_connections_smuggle_nothing(fuzz_gw, recorder):
    """Issue 11's first item in small: a body read while the upstream connection is still
    being made must reach it after the request head, never before."""
    for round_ in range(2):
        out: list = []
        threads = [threading.Thread(target=upload, args=(fuzz_gw.port, round_ * 100 + i, i % 2 == 0, out))
                   for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [e for e in out if e is not None] == [] and len(out) == 24
        check_upstream(recorder)
        got = recorder.recorded({f"up{round_ * 100 + i}" for i in range(24)})
        assert len(got) == 24 and all(len(r.body) == 65536 + len(SMUGGLE) + 200_000 for r in got)


def test_the_worker_survived(fuzz_gw, recorder):
    """Runs after the others (file order): same worker, no exception in its log."""
    assert fuzz_gw.workers() == fuzz_gw.initial_workers
    fuzz_gw.p.proc.send_signal(15)
    out = fuzz_gw.p.proc.communicate(timeout=15)[0]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
