"""No input crashes a worker: a bounded, seeded stream of mangled requests, split at random
points and pipelined, against a real gateway in front of a real upstream. After each batch
the same worker must still answer, and nothing may have raised inside the worker."""

from __future__ import annotations

import random
import socket
import time

import pytest

from conftest import Gateway

SEEDS = range(110, 116)   # 110-112 found a write after the lingering FIN
CASES_PER_SEED = 60

GOOD = [
    b"GET /up/hello HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /up/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /up/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /mock HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc\r\n\r\n",
    b"HEAD /up/bytes/100 HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /echo?x=1 HTTP/1.0\r\n\r\n",
    b"GET /up/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET http://a/up/hello HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /up/echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
]
NOISE = [b"\r\n", b"\n", b"\x00", b" ", b":", b"\xff\xfe", b"Transfer-Encoding: chunked\r\n",
         b"Content-Length: 99999999999999999999\r\n", b"Content-Length: -1\r\n", b"Host: b\r\n",
         b"Connection: close, x-a\r\n", b"ffffffffffffffff\r\n", b"0\r\n\r\n", b"HTTP/1.1 200 OK\r\n",
         b"GET / HTTP/9.9\r\n", b"%00", b"/" * 300, b"X" * 5000, b"\t", b"\r\r\n"]


def mangle(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            del data[pos:pos + rng.randrange(1, 8)]
        elif op == 1:
            data[pos:pos] = rng.choice(NOISE)
        elif op == 2 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        else:
            data[pos:pos] = rng.choice(GOOD)
    return bytes(data)


def blast(port: int, payload: bytes, rng: random.Random) -> None:
    """Send payload in random pieces, read whatever comes back, never wait long."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.settimeout(0.3)
        i = 0
        try:
            while i < len(payload):
                n = rng.randrange(1, 64) if rng.random() < 0.5 else len(payload)
                s.sendall(payload[i:i + n])
                i += n
            if rng.random() < 0.5:
                s.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                if not s.recv(65536):
                    break
        except OSError:
            pass


@pytest.fixture(scope="module")
def fuzz_gw(up, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("fuzz"), admin=False, config=f"""\
access_log: {{path: 'off'}}
limits:
  header_timeout_ms: 500
  body_timeout_ms: 500
  max_body_bytes: 100000
upstreams:
  api:
    targets: [{up.url}]
    first_byte_timeout_ms: 1000
routes:
  - path: /mock
    integration: {{type: mock, body: mocked}}
  - path: /echo
    integration: {{type: echo}}
  - path: /up/{{proxy+}}
    strip_prefix: /up
    integration: {{type: http, upstream: api}}
""")
    g.initial_workers = g.workers()
    yield g
    g.stop()


def still_serving(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(b"GET /mock HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"mocked")


@pytest.mark.parametrize("seed", SEEDS)
def test_mangled_input_never_crashes_a_worker(fuzz_gw, seed):
    rng = random.Random(seed)
    for _ in range(CASES_PER_SEED):
        parts = [mangle(rng, rng.choice(GOOD)) for _ in range(rng.randrange(1, 4))]
        blast(fuzz_gw.port, b"".join(parts), rng)
    assert still_serving(fuzz_gw.port)
    assert fuzz_gw.workers() == fuzz_gw.initial_workers


def test_no_traceback_in_the_gateway_log(fuzz_gw):
    """Runs after the fuzz cases (file order): the worker logged no exception."""
    fuzz_gw.p.proc.send_signal(15)
    out = fuzz_gw.p.proc.communicate(timeout=15)[0]
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
