"""Keep-alive HTTP/1.1 connections to the AWS endpoints, one pool per origin and worker.

An AWS integration's request is small and whole (the mapped body), and so is the service's
answer (API Gateway reads it whole, up to 10 MB), so a connection here is a plain asyncio
protocol with an httptools parser: one exchange at a time, back to the pool after a
response the server lets it keep, closed otherwise. A request that fails on a reused
connection before any byte of an answer came (the service closed it while idle) is sent
once more on a new one, as botocore does.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

__all__ = ["Response", "TransportError", "HttpPool"]

MAX_RESPONSE = 10 * 1024 * 1024 + 64 * 1024   # API Gateway reads an integration answer up to 10 MB


class Response(NamedTuple):
    status: int
    headers: list          # [(name bytes, value bytes)] in arrival order
    body: bytes


class TransportError(Exception):
    """The endpoint could not be reached, or broke the exchange (the cause, for the logs)."""


class _Connection(asyncio.Protocol):
    """One connection; the pool hands it one request at a time."""

    def __init__(self, pool: "HttpPool"):
        self.pool = pool
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.used = False             # served a request before (a failure may be a stale close)
        self.got_bytes = False
        self.head_only = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list = []
        self.body: list = []
        self.size = 0
        self.complete = False
        self.got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self.close()              # bytes nobody asked for: the connection is not reusable
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(TransportError("the endpoint switched protocols"))
        except Exception as e:
            # httptools wraps what a callback raised (on_body's size limit)
            cause = e if isinstance(e, TransportError) else e.__context__
            self._fail(cause if isinstance(cause, TransportError) else TransportError(f"bad response: {e}"))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            if self.complete:
                self._finish()
            else:
                self.waiter.set_exception(TransportError(
                    f"connection closed before a whole response{f': {exc}' if exc else ''}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.head_only:
            self.complete = True
            self._finish(reusable=False)   # a HEAD's answer has no body, which the parser cannot know

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_RESPONSE:
            raise TransportError(f"the answer is larger than {MAX_RESPONSE} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self._finish(reusable=self.parser.should_keep_alive())

    def _finish(self, reusable: bool = False) -> None:
        if self.waiter is None or self.waiter.done():
            return
        self.waiter.set_result(Response(self.status, self.headers, b"".join(self.body)))
        self.waiter = None
        if reusable and not self.closed:
            self.used = True
            self.parser = httptools.HttpResponseParser(self)
            self._reset()
            self.pool.give_back(self)
        else:
            self.close()

    def _fail(self, err: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)
        self.close()

    def send(self, data: bytes, head_only: bool) -> asyncio.Future:
        self.waiter = asyncio.get_running_loop().create_future()
        self.head_only = head_only
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HttpPool:
    """The keep-alive connections of one worker to one origin (scheme, host, port)."""

    def __init__(self, origin: str, *, keepalive: int = 64, connect_timeout_s: float = 5.0,
                 tls_verify: bool = True):
        parts = urlsplit(origin)
        self.origin = origin
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = None
        if parts.scheme == "https":
            self.ssl = ssl.create_default_context()
            if not tls_verify:
                self.ssl.check_hostname = False
                self.ssl.verify_mode = ssl.CERT_NONE
        self.keepalive = keepalive
        self.connect_timeout_s = connect_timeout_s
        self.idle: list[_Connection] = []
        self.opened = 0                   # connections made (for tests and the benchmark)

    def give_back(self, conn: _Connection) -> None:
        if len(self.idle) < self.keepalive:
            self.idle.append(conn)
        else:
            conn.close()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self), self.host, self.port,
                                       ssl=self.ssl, server_hostname=self.host if self.ssl else None),
                self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise TransportError(f"connect to {self.origin} timed out after "
                                 f"{self.connect_timeout_s:g} s") from None
        except OSError as e:
            raise TransportError(f"connect to {self.origin}: {e.strerror or e}") from None
        self.opened += 1
        return conn

    def _idle_connection(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    async def request(self, data: bytes, head_only: bool = False) -> Response:
        """Send one whole request (head and body bytes); the response, read whole.
        TransportError when the endpoint cannot be reached or breaks the exchange; the
        caller bounds the time (asyncio.wait_for), and a cancelled exchange closes its
        connection."""
        conn = self._idle_connection()
        while True:
            fresh = conn is None
            if fresh:
                conn = await self._connect()
            try:
                return await conn.send(data, head_only)
            except TransportError:
                if fresh or conn.got_bytes:
                    raise
                # a reused connection the service closed while it was idle: once more, anew
                conn = None
            except BaseException:
                conn.close()     # cancelled (the integration's timeout): its answer is not wanted
                raise

    def close(self) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
