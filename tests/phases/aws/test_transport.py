"""The keep-alive pool (fastgate/phases/aws/transport.py) against a loopback server that
counts its connections: reuse, a connection the server closed while idle, HEAD, limits."""

from __future__ import annotations

import asyncio

import pytest

from fastgate.phases.aws.transport import HttpPool, TransportError


class Server:
    """HTTP/1.1 answers on a loopback socket; `close_after` closes each connection after
    that many answers (a server dropping idle keep-alive connections)."""

    def __init__(self, close_after: int = 0, body: bytes = b"ok"):
        self.connections = 0
        self.close_after = close_after
        self.body = body

    async def handle(self, reader, writer):
        try:
            await self.serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass        # the client went away: the tests close pools and servers mid-way
        finally:
            writer.close()

    async def serve(self, reader, writer):
        self.connections += 1
        served = 0
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            method = head.split(b" ", 1)[0]
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n"
                         % (len(self.body), self.connections)
                         + (b"" if method == b"HEAD" else self.body))
            await writer.drain()
            served += 1
            if self.close_after and served >= self.close_after:
                return

    async def __aenter__(self):
        self.server = await asyncio.start_server(
            lambda r, w: self.handle(r, w), "127.0.0.1", 0)
        self.origin = "http://127.0.0.1:%d" % self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()


def request(method: str = "POST", body: bytes = b"x") -> bytes:
    return (f"{method} / HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def test_connections_are_kept_and_reused():
    async def main():
        async with Server() as srv:
            pool = HttpPool(srv.origin)
            for _ in range(5):
                resp = await pool.request(request())
                assert (resp.status, resp.body) == (200, b"ok")
            assert srv.connections == pool.opened == 1
            pool.close()
    asyncio.run(main())


def test_a_connection_closed_while_idle_is_replaced_without_failing_the_request():
    async def main():
        async with Server(close_after=1) as srv:
            pool = HttpPool(srv.origin)
            for _ in range(3):
                assert (await pool.request(request())).status == 200
                await asyncio.sleep(0.05)      # the server's close arrives while idle, or not yet
            assert srv.connections == 3
    asyncio.run(main())


def test_head_answers_without_a_body_and_big_answers_are_refused():
    async def main():
        async with Server(body=b"z" * 100) as srv:
            resp = await HttpPool(srv.origin).request(request("HEAD", b""), head_only=True)
            assert (resp.status, resp.body) == (200, b"")
        import fastgate.phases.aws.transport as transport
        async with Server(body=b"z" * (transport.MAX_RESPONSE + 1)) as srv:
            with pytest.raises(TransportError, match="larger than"):
                await HttpPool(srv.origin).request(request())
    asyncio.run(main())


def test_unreachable_is_a_transport_error():
    async def main():
        async with Server() as srv:
            origin = srv.origin
        with pytest.raises(TransportError, match="connect to"):
            await HttpPool(origin).request(request())
    asyncio.run(main())
