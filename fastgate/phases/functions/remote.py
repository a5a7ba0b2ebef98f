"""Remote functions: Lambda's Invoke API over HTTP, SigV4-signed.

``LambdaInvokeClient.invoke`` has the signature of ``FunctionPool.invoke``,
so a route can target a local handler, real AWS Lambda
(``https://lambda.us-east-1.amazonaws.com``) or a local Lambda emulator
(the runtime interface emulator, LocalStack, ``sam local start-lambda``)
without the data plane knowing which.

Invoke API (RequestResponse): ``POST /2015-03-31/functions/{name}/invocations``
with the event as the body; the answer is 200 with the function's result,
or 200 with ``X-Amz-Function-Error`` and Lambda's error object when the
handler failed; 4xx/5xx are the service's own errors (429 throttled).
"""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import quote, urlsplit

import httptools
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fastgate.phases.functions.errors import FunctionError

__all__ = ["LambdaInvokeClient"]

_MAX_RESPONSE = 6 * 1024 * 1024 + 64 * 1024   # Lambda's 6 MB payload, with room for errors


class _Response:
    """httptools callbacks collecting one response."""

    def __init__(self):
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.body = bytearray()
        self.done = False

    def on_header(self, name: bytes, value: bytes):
        self.headers[name.lower()] = value

    def on_body(self, body: bytes):
        self.body += body
        if len(self.body) > _MAX_RESPONSE:
            raise ValueError("Invoke response larger than Lambda's payload limit")

    def on_message_complete(self):
        self.done = True


class LambdaInvokeClient:
    """Calls functions through the Lambda Invoke API at ``endpoint``."""

    def __init__(self, endpoint: str, *, region: str, access_key: str, secret_key: str,
                 session_token: str | None = None, qualifier: str | None = None,
                 ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Lambda endpoint must be an http(s) URL, not {endpoint!r}")
        self.endpoint = endpoint.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self.qualifier = qualifier
        self.signer = SigV4Auth(Credentials(access_key, secret_key, session_token), "lambda", region)

    def signed_request(self, function_name: str, payload: bytes) -> tuple[str, dict[str, str]]:
        """(path with query, headers) of a signed Invoke request."""
        path = f"/2015-03-31/functions/{quote(function_name, safe='')}/invocations"
        if self.qualifier:
            path += f"?Qualifier={quote(self.qualifier, safe='')}"
        request = AWSRequest(method="POST", url=self.endpoint + path, data=payload, headers={
            "Content-Type": "application/json",
            "X-Amz-Invocation-Type": "RequestResponse",
            "X-Amz-Log-Type": "None",
        })
        self.signer.add_auth(request)
        return path, dict(request.headers.items())

    async def invoke(self, function_name: str, event, *, timeout_ms: int | None = None,
                     request_id: str | None = None):
        """The function's result; raises FunctionError as FunctionPool.invoke does."""
        payload = orjson.dumps(event)
        path, headers = self.signed_request(function_name, payload)
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(payload)}", "Connection: close"]
        head += [f"{name}: {value}" for name, value in headers.items() if name.lower() != "host"]
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        timeout = None if timeout_ms is None else timeout_ms / 1000
        try:
            response = await asyncio.wait_for(self._exchange(message), timeout)
        except TimeoutError:
            raise FunctionError("timeout", f"no Invoke answer within {timeout_ms} ms") from None
        except (OSError, ValueError, httptools.HttpParserError) as exc:
            raise FunctionError("service", f"Invoke request to {self.endpoint} failed: {exc}") from None
        return self._result(function_name, response)

    async def _exchange(self, message: bytes) -> _Response:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        try:
            writer.write(message)
            response = _Response()
            parser = httptools.HttpResponseParser(response)
            while not response.done:
                data = await reader.read(65536)
                if not data:
                    raise ValueError("connection closed before the Invoke response ended")
                parser.feed_data(data)
            response.status = parser.get_status_code()
            return response
        finally:
            writer.close()

    def _result(self, function_name: str, response: _Response):
        body = bytes(response.body)
        if response.status == 200:
            try:
                result = orjson.loads(body) if body else None
            except orjson.JSONDecodeError:
                raise FunctionError("malformed", "Invoke returned a result that is not JSON") from None
            if b"x-amz-function-error" in response.headers:
                error = result if isinstance(result, dict) else {"errorMessage": str(result)}
                raise FunctionError("raised", f"{error.get('errorType', 'Error')}: "
                                              f"{error.get('errorMessage', '')}", error)
            return result
        error_type = response.headers.get(b"x-amzn-errortype", b"").decode("latin-1").split(":")[0]
        message = body[:300].decode("utf-8", "replace")
        if response.status == 429:
            raise FunctionError("throttled", f"{function_name}: {error_type or 'TooManyRequests'} {message}")
        raise FunctionError("service", f"Invoke {function_name}: {response.status} {error_type} {message}")
