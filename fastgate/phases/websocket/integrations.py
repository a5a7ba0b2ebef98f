"""What a WebSocket API route calls: a function (AWS_PROXY; local handler processes or
Lambda's Invoke API, through the worker's FunctionRunner), an HTTP endpoint (HTTP_PROXY)
or nothing (MOCK). Each call ends in done(result, error): a function's result, or
{"statusCode", "body"} for the others; error a FunctionError / HttpProxyError."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

import httptools
import orjson

from fastgate.phases.functions.errors import FunctionError

MAX_HTTP_RESPONSE = 10 * 1024 * 1024


class HttpProxyError(Exception):
    pass


class _Collector:
    def __init__(self):
        self.body = bytearray()
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body += body
        if len(self.body) > MAX_HTTP_RESPONSE:
            raise HttpProxyError("integration response too large")

    def on_message_complete(self):
        self.done = True


async def http_exchange(method: str, url: str, headers: list[tuple[str, str]], body: bytes,
                        timeout_s: float) -> tuple[int, list, bytes]:
    """One HTTP/1.1 request (Connection: close): (status, headers, body)."""
    parts = urlsplit(url)
    https = parts.scheme == "https"

    async def run():
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port or (443 if https else 80),
            ssl=ssl.create_default_context() if https else None)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            head = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close",
                    f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
            c = _Collector()
            parser = httptools.HttpResponseParser(c)
            while not c.done:
                data = await reader.read(65536)
                if not data:
                    parser.feed_eof() if hasattr(parser, "feed_eof") else None
                    if c.done:
                        break
                    raise HttpProxyError("connection closed mid-response")
                parser.feed_data(data)
            return parser.get_status_code(), c.headers, bytes(c.body)
        finally:
            writer.close()
    try:
        return await asyncio.wait_for(run(), timeout_s)
    except asyncio.TimeoutError:
        raise HttpProxyError(f"{method} {url}: no answer within {timeout_s} s") from None
    except (OSError, httptools.HttpParserError) as e:
        raise HttpProxyError(f"{method} {url}: {e}") from None


class RouteIntegration:
    """One route's integration, compiled from its config (fastgate.compile.websocket)."""

    def __init__(self, kind: str, *, function: str | None = None, url: str | None = None,
                 method: str = "POST", timeout_ms: int = 29000, status: int = 200,
                 body: str = "", request_template=None, response_template=None,
                 response_templates: tuple = ()):
        self.kind = kind                  # "function" | "http_proxy" | "http" | "mock"
        self.function = function
        self.url = url
        self.method = method
        self.timeout_ms = timeout_ms
        self.status = status
        self.body = body                  # a mock's answer, as it is
        self.request_template = request_template     # "http": compiled Velocity, or None
        self.response_template = response_template   # "http", "mock": compiled Velocity, or None
        # "http": ((compiled status regex, compiled Velocity), ...): the first whose regex the
        # response's status matches shapes the answer, else response_template
        self.response_templates = response_templates
        # whether a message's call needs its event (a mock without a template does not: PERF)
        self.needs_event = kind in ("function", "http") or response_template is not None

    def call(self, runtime, event: dict, request_id: str, done, *, message=None,
             headers: list | None = None) -> None:
        """Run it; done(result, error) follows (at once for a mock). `message` is the raw
        message (HTTP_PROXY's body); `headers` the $connect request's (HTTP_PROXY)."""
        if self.kind == "mock":
            body = self.body or None
            if self.response_template is not None:
                # Velocity over the message and its event ($input, $context), as AWS renders
                # a MOCK's integration response template
                try:
                    from fastgate.phases.vtl import variables_of
                    text = message.decode("utf-8", "replace") if isinstance(message, (bytes, bytearray, memoryview)) \
                        else (message or "")
                    body = self.response_template.merge(variables_of(event or {}, text))
                except Exception as err:
                    done(None, err)
                    return
            done({"statusCode": self.status, "body": body}, None)
            return
        if self.kind == "function":
            functions = runtime.functions()
            if functions is None:
                done(None, FunctionError("service", "no function runner in this worker"))
                return
            if self.function not in functions.remotes:
                # PERF: a local function is a callback, no task (as FunctionRunner.start)
                try:
                    functions.pool.submit(self.function, event, self.timeout_ms, request_id, done)
                except Exception as err:
                    done(None, err)
                return
            runtime.spawn(self._remote(functions, event, request_id, done))
            return
        runtime.spawn(self._http(message, headers, done, event))

    async def _remote(self, functions, event, request_id, done):
        try:
            result = await functions.invoke(self.function, event, timeout_ms=self.timeout_ms,
                                            request_id=request_id)
        except Exception as err:
            done(None, err)
            return
        done(result, None)

    async def _http(self, message, headers, done, event=None):
        if isinstance(message, str):
            body = message.encode()
        elif message is None:
            body = b""
        else:
            body = bytes(message)
        ns = None
        try:
            if self.request_template is not None or self.response_template is not None \
                    or self.response_templates:
                from fastgate.phases.vtl import variables_of
                ns = variables_of(event or {}, body.decode("utf-8", "replace"))
            if self.request_template is not None:
                body = self.request_template.merge(ns).encode()
            status, _, out = await http_exchange(self.method, self.url, headers or [], body,
                                                 self.timeout_ms / 1000)
            text = out.decode("utf-8", "replace")
            template = self.response_template
            for pattern, candidate in self.response_templates:
                if pattern.fullmatch(str(status)):
                    template = candidate
                    break
            if template is not None:
                ns["input"] = ns["input"].with_body(text)
                text = template.merge(ns)
        except Exception as err:      # a template's error too: the route's error frame
            done(None, err)
            return
        done({"statusCode": status, "body": text}, None)


def result_status(result) -> int:
    """A $connect result's status: its statusCode; a function that returned no object (or
    none with a statusCode) allows the connection, as on AWS."""
    if isinstance(result, dict):
        code = result.get("statusCode", 200)
        try:
            return int(code)
        except (TypeError, ValueError):
            return 502
    return 200


def result_body(result):
    """What a two-way route sends back: the result's body (a string as it is, anything else
    as JSON), None for nothing."""
    if isinstance(result, dict):
        body = result.get("body")
    else:
        body = result
    if body is None:
        return None
    if isinstance(body, (str, bytes)):
        return body
    return orjson.dumps(body).decode()
