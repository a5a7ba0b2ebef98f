"""Fuzzed requests through a running gateway to an upstream that records what it receives,
parsed strictly (tests/request_fuzz.py): an answer for every request, every valid request
delivered once and intact, malformed ones refused, and no smuggled request, whether the
upstream connection is pooled or new. Then concurrent uploads on new upstream connections
with request lines hidden in their bodies, and the worker must have survived it all."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings

from request_fuzz import FuzzRequest, concurrent_uploads, exchanges, gateway_config
from strict_http import StrictClient

from conftest import Gateway


@pytest.fixture(scope="module")
def fuzz_gw(recorder, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("fuzzrec"), admin=False, config=gateway_config(recorder.url))
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


def test_concurrent_uploads_on_new_upstream_connections_smuggle_nothing(fuzz_gw, recorder):
    """Issue 11's first item in small: a body read while the upstream connection is still
    being made must reach it after the request head, never before."""
    for round_ in range(2):
        assert concurrent_uploads(fuzz_gw.port, recorder, f"up{round_}-", 24, 270_000) == []


def test_the_worker_survived(fuzz_gw, recorder):
    """Runs after the others (file order): same worker, no exception in its log."""
    assert fuzz_gw.workers() == fuzz_gw.initial_workers
    fuzz_gw.p.proc.send_signal(15)
    out = fuzz_gw.p.proc.communicate(timeout=15)[0]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
