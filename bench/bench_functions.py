"""Function integrations: event building, result parsing, and a warm handler process call
against the naive way to run a handler off the event loop (ProcessPoolExecutor).

Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_functions.py --benchmark-only
Target: FunctionPool.invoke of a trivial handler in about 0.1 ms round trip (orjson framing
over a Unix socketpair, two process wake-ups), half of ProcessPoolExecutor's pickling + queues.
"""
import asyncio
import concurrent.futures
import sys
from pathlib import Path

import pytest
import uvloop

from fastgate.phases.functions.events import FunctionRequest, build_event_v1, build_event_v2
from fastgate.phases.functions.pool import FunctionPool, FunctionSpec
from fastgate.phases.functions.responses import parse_response_v1, parse_response_v2

HANDLERS = Path(__file__).parent.parent / "tests" / "functions" / "handlers"
sys.path.insert(0, str(HANDLERS))
import bench_handler  # noqa: E402  (also imported by the executor's worker processes)

HEADERS = [
    (b"Host", b"api.example.com"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    (b"Accept", b"application/json"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Accept-Language", b"en-US,en;q=0.9"),
    (b"Authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"),
    (b"X-Tenant", b"acme"),
    (b"X-Forwarded-For", b"198.51.100.1"),
    (b"Cookie", b"session=abc123; theme=dark"),
    (b"Connection", b"keep-alive"),
]


def make_request():
    return FunctionRequest(method="GET", raw_path=b"/pets/42", raw_query=b"tag=a&tag=b&limit=10",
                           headers=HEADERS, request_id="0f9c2a1e-6b1d-4c55-9d1e-3b8e2f7a9c10",
                           resource_path="/pets/{id}", route_key="GET /pets/{id}",
                           path_parameters={"id": "42"}, stage="prod")


def test_build_event_v1(benchmark):
    req = make_request()
    benchmark(build_event_v1, req)


def test_build_event_v2(benchmark):
    req = make_request()
    benchmark(build_event_v2, req)


def test_parse_response_v1(benchmark):
    result = {"statusCode": 200, "headers": {"Content-Type": "application/json"},
              "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]}, "body": '{"ok":true}'}
    benchmark(parse_response_v1, result)


def test_parse_response_v2(benchmark):
    result = {"statusCode": 200, "headers": {"content-type": "application/json"},
              "cookies": ["a=1", "b=2"], "body": '{"ok":true}'}
    benchmark(parse_response_v2, result)


@pytest.fixture(scope="module")
def loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


def test_pool_invoke_round_trip(benchmark, loop):
    event = build_event_v1(make_request())
    pool = FunctionPool([FunctionSpec(name="const", handler="bench_handler:constant",
                                      paths=(str(HANDLERS),), concurrency=1)])
    try:
        loop.run_until_complete(pool.warm("const"))
        result = benchmark(lambda: loop.run_until_complete(pool.invoke("const", event, timeout_ms=5000)))
        assert result["statusCode"] == 200
    finally:
        loop.run_until_complete(pool.close())


def test_naive_process_pool_executor_round_trip(benchmark, loop):
    event = build_event_v1(make_request())
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as executor:
        loop.run_until_complete(loop.run_in_executor(executor, bench_handler.constant, event, None))
        result = benchmark(lambda: loop.run_until_complete(
            loop.run_in_executor(executor, bench_handler.constant, event, None)))
        assert result["statusCode"] == 200
