"""WebSocket through the gateway: a real `websockets` server as the upstream and
a real `websockets` client, messages both ways, the close handshake; and an
Upgrade that the upstream refuses with a plain response."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from conftest import Gateway, Upstream, free_port, read_response


def config(ws_port: int, http_url: str) -> str:
    return f"""\
access_log: {{path: 'off'}}
upstreams:
  ws:
    targets: [http://127.0.0.1:{ws_port}]
  plain:
    targets: [{http_url}]
routes:
  - path: /ws/{{proxy+}}
    integration: {{type: http, upstream: ws}}
  - path: /{{proxy+}}
    integration: {{type: http, upstream: plain}}
"""


@pytest.fixture(scope="module")
def up():
    u = Upstream("up1")
    yield u
    u.stop()


@pytest.fixture(scope="module")
def ws_port():
    return free_port()


@pytest.fixture(scope="module")
def gw(up, ws_port, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("ws"), config(ws_port, up.url), admin=False)
    yield g
    g.stop()


async def with_ws_upstream(port: int, scenario):
    """Run an echo server on port that also reports what it saw, then scenario(seen)."""
    seen = {"closed": [], "requests": []}

    async def handler(ws):
        seen["requests"].append((ws.request.path, dict(ws.request.headers)))
        try:
            async for msg in ws:
                if msg == "whoami":
                    await ws.send(json.dumps({"path": ws.request.path,
                                              "headers": dict(ws.request.headers.raw_items())}))
                elif msg == "server-close":
                    await ws.close(4001, "server says bye")
                else:
                    await ws.send(msg)   # text stays text, bytes stay bytes
        finally:
            seen["closed"].append((ws.close_code, ws.close_reason))

    async with serve(handler, "127.0.0.1", port):
        await asyncio.wait_for(scenario(seen), 20)


def test_messages_both_ways_and_close_handshake(gw, ws_port):
    async def scenario(seen):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws/chat?room=1", open_timeout=5,
                           additional_headers={"X-Request-Id": "ws-test-1"}) as ws:
            assert ws.response.status_code == 101
            assert ws.response.headers["x-request-id"] == "ws-test-1"
            await ws.send("hello text")
            assert await ws.recv() == "hello text"
            await ws.send(b"\x00\x01\xffbinary")
            got = await ws.recv()
            assert isinstance(got, bytes) and got == b"\x00\x01\xffbinary"
            big = bytes(range(256)) * 4096   # 1 MiB frame, spans many reads
            await ws.send(big)
            assert await ws.recv() == big
            for i in range(100):   # many small frames in flight at once
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(100)] == [f"m{i}" for i in range(100)]
            await ws.send("whoami")
            who = json.loads(await ws.recv())
            assert who["path"] == "/ws/chat?room=1"
            assert who["headers"]["X-Forwarded-For"] == "127.0.0.1"
            await ws.close(1000, "client done")
            assert (ws.close_code, ws.close_reason) == (1000, "client done")
        for _ in range(50):
            if seen["closed"]:
                break
            await asyncio.sleep(0.02)
        assert seen["closed"] == [(1000, "client done")]

    asyncio.run(with_ws_upstream(ws_port, scenario))


def test_close_started_by_the_upstream(gw, ws_port):
    async def scenario(seen):
        async with connect(f"ws://127.0.0.1:{gw.port}/ws/x", open_timeout=5) as ws:
            await ws.send("server-close")
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert (ws.close_code, ws.close_reason) == (4001, "server says bye")

    asyncio.run(with_ws_upstream(ws_port, scenario))


def test_upgrade_answered_200_is_relayed(gw):
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as s:
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        r = read_response(s.makefile("rb"))
        assert (r.status, r.body, r.header("x-upstream")) == (200, b"hello", "up1")
        assert r.header("upgrade") is None
        # the upstream saw the upgrade request it refused
        assert r.header("x-seen-connection") == "upgrade"


def test_upgrade_to_a_closed_port_is_502(tmp_path, up):
    g = Gateway(tmp_path, config(free_port(), up.url), admin=False)
    try:
        with socket.create_connection(("127.0.0.1", g.port), timeout=5) as s:
            s.sendall(b"GET /ws/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            r = read_response(s.makefile("rb"))
            assert r.status == 502
            assert json.loads(r.body)["message"] == "Internal server error"
    finally:
        g.stop()


def test_closed_tunnels_leave_no_connection_behind(tmp_path, up, ws_port):
    # a worker drains on SIGTERM until its connections are gone: it exits at once only if both
    # half-closed sides of each finished tunnel were really closed
    g = Gateway(tmp_path, config(ws_port, up.url), admin=False)
    try:
        async def scenario(seen):
            for path in ("/ws/a", "/ws/b"):
                async with connect(f"ws://127.0.0.1:{g.port}{path}", open_timeout=5) as ws:
                    await ws.send("x")
                    assert await ws.recv() == "x"
            # and a client that half-closes first, on a raw socket
            r, w = await asyncio.open_connection("127.0.0.1", g.port)
            w.write(b"GET /ws/c HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            assert (await r.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
            w.write_eof()
            assert await r.read() == b""   # the upstream saw EOF and closed; so did the gateway
            w.close()

        asyncio.run(with_ws_upstream(ws_port, scenario))
        t0 = time.monotonic()
        assert g.stop() == 0
        assert time.monotonic() - t0 < 10   # far from the 30 s drain a lingering tunnel holds
    finally:
        g.stop()
