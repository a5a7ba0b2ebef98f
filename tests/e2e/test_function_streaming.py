"""Streamed responses from generator handlers through a real fastgate: chunks reach an
httpx client while the handler is still running (Server-Sent Events), a handler that
raises or runs out of time mid-stream ends the response without its last chunk, a
slow client holds the handler back, and the handler process stays healthy."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from conftest import Gateway

HANDLERS = '''
import os, time

def sse(event, context):
    gate = event["queryStringParameters"]["gate"]
    yield {"statusCode": 200, "headers": {"Content-Type": "text/event-stream",
                                          "Cache-Control": "no-cache"}}
    yield "data: first\\n\\n"
    deadline = time.time() + 10
    while not os.path.exists(gate):      # the test opens the gate once it has the first chunk
        if time.time() > deadline:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.01)
    yield b"data: second\\n\\n"
    yield "data: pid %d\\n\\n" % os.getpid()

def headless(event, context):
    return iter([b"raw ", "bytes"])

def broken(event, context):
    yield {"statusCode": 200, "headers": {"Content-Type": "text/plain"}}
    yield "partial"
    raise RuntimeError("mid-stream failure")

def early(event, context):
    raise ValueError("before the first chunk")
    yield "never"

def endless(event, context):
    yield {"statusCode": 200}
    while True:
        yield "tick\\n"
        time.sleep(0.05)

def flood(event, context):
    yield {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"}}
    block = b"x" * 65536
    for i in range(int(event["queryStringParameters"]["blocks"])):
        yield block
        with open(event["queryStringParameters"]["progress"], "w") as f:
            f.write(str(i + 1))

def pid(event, context):
    return {"statusCode": 200, "body": str(os.getpid())}
'''


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("streaming")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "streams.py").write_text(HANDLERS)
    g = Gateway(tmp, """\
        access_log: {path: 'off'}
        function_path: [fn]
        functions:
          sse: {handler: streams:sse, concurrency: 1, timeout_ms: 20000}
          headless: {handler: streams:headless, concurrency: 1}
          broken: {handler: streams:broken, concurrency: 1}
          early: {handler: streams:early, concurrency: 1}
          endless: {handler: streams:endless, concurrency: 1, timeout_ms: 600}
          ticker: {handler: streams:endless, concurrency: 1, timeout_ms: 60000}
          flood: {handler: streams:flood, concurrency: 1, timeout_ms: 20000}
          pid: {handler: streams:pid, concurrency: 1}
        routes:
          - {path: /sse, integration: {type: function, function: sse}}
          - {path: /headless, integration: {type: function, function: headless}}
          - {path: /broken, integration: {type: function, function: broken}}
          - {path: /early, integration: {type: function, function: early}}
          - {path: /endless, integration: {type: function, function: endless}}
          - {path: /ticker, integration: {type: function, function: ticker}}
          - {path: /flood, integration: {type: function, function: flood}}
        """)
    g.tmp = tmp
    yield g
    g.stop()


def test_chunks_arrive_while_the_handler_runs(gw):
    gate = gw.tmp / "gate"
    with httpx.Client(timeout=15) as client:
        with client.stream("GET", f"{gw.url}/sse", params={"gate": str(gate)}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/event-stream"
            assert r.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.headers
            chunks = r.iter_raw()
            first = next(chunks)
            # the handler is still waiting for the gate: this chunk was not buffered to the end
            assert first == b"data: first\n\n"
            assert not gate.exists()
            gate.write_text("open")
            rest = b"".join(chunks)
        assert rest.startswith(b"data: second\n\n") and rest.endswith(b"\n\n")
        pid1 = rest.split(b"pid ")[1].strip()
        # the same keep-alive connection serves the next streamed response, from the same
        # warm handler process
        r = client.get(f"{gw.url}/sse", params={"gate": str(gate)})
        assert r.status_code == 200 and r.content.split(b"pid ")[1].strip() == pid1


def test_an_iterator_without_a_head_is_an_octet_stream(gw):
    r = httpx.get(f"{gw.url}/headless", timeout=10)
    assert r.status_code == 200 and r.content == b"raw bytes"
    assert r.headers["content-type"] == "application/octet-stream"


def test_raising_before_the_first_value_is_an_ordinary_failure(gw):
    r = httpx.get(f"{gw.url}/early", timeout=10)
    assert r.status_code == 502 and r.json() == {"message": "Internal server error"}


def test_raising_mid_stream_closes_without_the_last_chunk(gw):
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{gw.url}/broken") as r:
            assert r.status_code == 200
            got = b""
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in r.iter_raw():
                    got += chunk
            assert got == b"partial"
        # the function still answers: its process was kept (it raised, it did not crash)
        with client.stream("GET", f"{gw.url}/broken") as r:
            assert next(r.iter_raw()) == b"partial"


def test_the_function_timeout_covers_the_whole_stream(gw):
    started = time.monotonic()
    got = b""
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{gw.url}/endless") as r:
            assert r.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                for chunk in r.iter_raw():
                    got += chunk
    assert got.startswith(b"tick\n") and 0.5 < time.monotonic() - started < 5
    # a new process serves the next call
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{gw.url}/endless") as r:
            assert next(r.iter_raw()).startswith(b"tick")


def test_a_slow_client_holds_the_handler_back(gw):
    progress = gw.tmp / "progress"
    blocks = 400      # 25 MiB: far more than the socket buffers between handler and client
    with httpx.Client(timeout=20) as client:
        with client.stream("GET", f"{gw.url}/flood",
                           params={"blocks": str(blocks), "progress": str(progress)}) as r:
            chunks = r.iter_raw(65536)
            got = len(next(chunks))
            time.sleep(1.0)          # not reading: the buffers fill, the handler must block
            produced = int(progress.read_text())
            assert produced < blocks / 2, f"the handler ran ahead to block {produced}"
            for chunk in chunks:
                got += len(chunk)
    assert got == blocks * 65536
    assert int(progress.read_text()) == blocks


def test_the_worker_and_pool_survive_streams(gw):
    before = gw.workers()
    for _ in range(3):
        assert httpx.get(f"{gw.url}/headless", timeout=10).content == b"raw bytes"
    assert gw.workers() == before
    assert os.path.exists(gw.tmp / "fn" / "streams.py")


def test_an_http_1_0_client_gets_the_stream_up_to_the_close(gw):
    import socket
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /headless HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head.lower() and b"content-length" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body == b"raw bytes"


def test_a_client_that_leaves_mid_stream_stops_its_handler(gw):
    import socket
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        s.sendall(b"GET /ticker HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while b"tick" not in got:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
        handler = [p for w in gw.workers() for p in _children(w, "streams:endless")]
        assert len(handler) == 1
    # the handler would tick for a minute; the gateway notices the closed connection at the
    # next chunk it relays and stops the handler's process
    deadline = time.monotonic() + 5
    while not _gone(handler[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(handler[0])
    r = httpx.get(f"{gw.url}/headless", timeout=10)      # the worker is fine
    assert r.content == b"raw bytes"


def _children(pid, handler):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        pids = [int(p) for p in f.read().split()]
    out = []
    for p in pids:
        try:
            with open(f"/proc/{p}/cmdline") as f:
                if handler in f.read().replace("\0", " "):
                    out.append(p)
        except OSError:
            pass
    return out


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
