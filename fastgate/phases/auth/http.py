"""The authorizers' HTTP client: GET a JWKS or discovery document, POST an event to an
HTTP-endpoint authorizer.  One short-lived connection per call (these calls are rare:
a key set is fetched once and refetched at most once per interval; authorizer results
are cached), JSON in and out, a deadline on the whole exchange, a size limit on the answer.
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools
import orjson

__all__ = ["HttpClient", "HttpError"]

MAX_RESPONSE = 1024 * 1024     # bytes; a JWKS or an authorizer answer is a few KiB


class HttpError(Exception):
    """The exchange failed: unreachable, timed out, not 200, not JSON, too large.
    ``status`` is the answer's status when there was one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class _Collector:
    """httptools callbacks for one response."""

    def __init__(self):
        self.body = bytearray()
        self.done = False

    def on_body(self, body: bytes):
        self.body += body
        if len(self.body) > MAX_RESPONSE:
            raise HttpError(f"response larger than {MAX_RESPONSE} bytes")

    def on_message_complete(self):
        self.done = True


class HttpClient:
    """``await client.get_json(url)`` / ``await client.post_json(url, payload)``."""

    def __init__(self, *, timeout_s: float = 5.0, ssl_context: ssl.SSLContext | None = None):
        self.timeout_s = timeout_s
        self._ssl = ssl_context

    async def get_json(self, url: str, *, timeout_s: float | None = None):
        return await self._call("GET", url, None, timeout_s)

    async def post_json(self, url: str, payload, *, timeout_s: float | None = None,
                        headers: dict[str, str] | None = None):
        return await self._call("POST", url, orjson.dumps(payload), timeout_s, headers)

    async def _call(self, method: str, url: str, body: bytes | None, timeout_s, headers=None):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url!r}")
        try:
            return await asyncio.wait_for(self._exchange(method, parts, body, headers or {}),
                                          timeout_s or self.timeout_s)
        except TimeoutError:
            raise HttpError(f"{method} {url}: no answer within {timeout_s or self.timeout_s} s") from None
        except (OSError, httptools.HttpParserError) as exc:
            raise HttpError(f"{method} {url}: {exc}") from None

    async def _exchange(self, method, parts, body, headers):
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        context = (self._ssl or ssl.create_default_context()) if https else None
        reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=context)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            host = parts.netloc.rsplit("@", 1)[-1]
            head = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Accept: application/json",
                    "Connection: close", "User-Agent: fastgate-auth"]
            if body is not None:
                head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b""))
            collector = _Collector()
            parser = httptools.HttpResponseParser(collector)
            while not collector.done:
                data = await reader.read(65536)
                if not data:
                    raise HttpError(f"{method} {parts.geturl()}: connection closed mid-response")
                parser.feed_data(data)
            status = parser.get_status_code()
        finally:
            writer.close()
        if status != 200:
            raise HttpError(f"{method} {parts.geturl()}: status {status}", status)
        try:
            return orjson.loads(bytes(collector.body))
        except orjson.JSONDecodeError:
            raise HttpError(f"{method} {parts.geturl()}: the answer is not JSON") from None
