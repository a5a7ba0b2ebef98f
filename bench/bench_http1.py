"""fastgate._core.http1 (llhttp, C callbacks) against httptools (the same llhttp, Python callbacks).

Each round parses 100 pipelined copies of one message, so the per-call overhead of
pytest-benchmark and of the Python-level entry point is spread out: time / 100 is
the cost per message (extra_info["ns_per_message"]; `python bench/bench_http1.py`
prints a table of ns per message, best of 30 runs).

Inputs: the request wrk sends and the response nginx answers it with (5 headers,
5-byte body), as in bench/wrk_compare.py's keepalive scenario.
Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_http1.py --benchmark-only
"""
import timeit

import httptools
import pytest

from fastgate._core.http1 import Http1Parser

N = 100
WRK_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"
NGINX_RESPONSE = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 11 May 2026 10:00:00 GMT\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello")
INPUTS = {"request": WRK_REQUEST * N, "response": NGINX_RESPONSE * N}


class Collect:
    """The naive baseline: httptools with callbacks that append to a list (uvicorn's style)."""

    def __init__(self, response):
        self.items = []
        self.parser = httptools.HttpResponseParser(self) if response else httptools.HttpRequestParser(self)

    def on_message_begin(self):
        self.items = []

    def on_url(self, url):
        self.items.append(url)

    def on_status(self, reason):
        self.items.append(reason)

    def on_header(self, name, value):
        self.items.append((name, value))

    def on_headers_complete(self):
        self.items.append(self.parser.get_method() if isinstance(self.parser, httptools.HttpRequestParser)
                          else self.parser.get_status_code())

    def on_body(self, body):
        self.items.append(body)

    def on_message_complete(self):
        self.done += 1

    def parse(self, data):
        self.done = 0
        self.parser.feed_data(data)
        return self.done


def ours(kind, materialize):
    p = Http1Parser(response=kind == "response")
    data = INPUTS[kind]
    return lambda: p.drain(data, materialize)


def theirs(kind):
    c = Collect(kind == "response")
    data = INPUTS[kind]
    return lambda: c.parse(data)


def python_loop(kind):
    """http1 driven from Python (feed_bytes per event): the price of a Python-level caller."""
    p = Http1Parser(response=kind == "response")
    data = INPUTS[kind]

    def run():
        off = done = 0
        while True:
            ev, n = p.feed_bytes(data, off)
            off += n
            if ev == 0:
                return done
            if ev == 3:
                done += 1
    return run


CASES = {
    "http1 C loop, no objects": lambda kind: ours(kind, 0),
    "http1 C loop, method+url+values as bytes": lambda kind: ours(kind, 1),
    "http1 C loop, httptools-like list of tuples": lambda kind: ours(kind, 2),
    "http1 Python feed_bytes loop": python_loop,
    "httptools, Python callbacks to a list": theirs,
}


@pytest.mark.parametrize("kind", ["request", "response"])
@pytest.mark.parametrize("case", list(CASES))
def test_parse(benchmark, kind, case):
    fn = CASES[case](kind)
    assert fn() == N
    benchmark.group = kind
    benchmark(fn)
    benchmark.extra_info["ns_per_message"] = round(benchmark.stats.stats.min * 1e9 / N, 1)


if __name__ == "__main__":
    for kind in ("request", "response"):
        print(f"{kind} ({len(INPUTS[kind]) // N} bytes), ns per message, best of 30:")
        for case, make in CASES.items():
            fn = make(kind)
            best = min(timeit.repeat(fn, number=200, repeat=30)) / 200
            print(f"  {case:45s} {best * 1e9 / N:8.1f}")
