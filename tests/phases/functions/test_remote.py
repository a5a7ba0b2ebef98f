"""LambdaInvokeClient against a local server implementing the Invoke API on a FunctionPool.

The server checks every request's SigV4 signature with botocore, as Lambda would.
"""

import asyncio
import json

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fastgate.phases.functions.errors import FunctionError
from fastgate.phases.functions.events import FunctionRequest, build_event_v2
from fastgate.phases.functions.pool import FunctionPool, FunctionSpec
from fastgate.phases.functions.remote import LambdaInvokeClient

from .conftest import HANDLERS, run

ACCESS, SECRET, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "eu-west-1"
PREFIX = "/2015-03-31/functions/"


def signature_ok(method, path, headers, body) -> bool:
    auth = headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    signed = fields["SignedHeaders"].split(";")
    if fields["Credential"].split("/")[0] != ACCESS or "/lambda/aws4_request" not in fields["Credential"]:
        return False
    request = AWSRequest(method=method, url=f"http://{headers['host']}{path}", data=body,
                         headers={name: headers[name] for name in signed if name != "host"})
    request.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(ACCESS, SECRET), "lambda", fields["Credential"].split("/")[2])
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    return expected == fields["Signature"]


class InvokeServer:
    """Just enough of Lambda's Invoke API, backed by a FunctionPool."""

    def __init__(self, pool):
        self.pool = pool
        self.requests = []

    async def handle(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ")
        headers = {k.lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if l)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        self.requests.append((method, path, headers))
        status, extra, payload = await self.answer(method, path, headers, body)
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: {len(payload)}\r\n{extra}"
                     f"Content-Type: application/json\r\n\r\n".encode() + payload)
        await writer.drain()
        writer.close()

    async def answer(self, method, path, headers, body):
        if not signature_ok(method, path, headers, body):
            return 403, "X-Amzn-ErrorType: InvalidSignatureException\r\n", b'{"message":"bad signature"}'
        name = path[len(PREFIX):].split("/")[0]
        if name == "throttle":
            return 429, "X-Amzn-ErrorType: TooManyRequestsException\r\n", b'{"message":"Rate exceeded"}'
        if name not in self.pool.function_names():
            return 404, "X-Amzn-ErrorType: ResourceNotFoundException\r\n", b'{"message":"Function not found"}'
        try:
            result = await self.pool.invoke(name, json.loads(body), timeout_ms=10000)
        except FunctionError as err:
            if err.error is None:
                raise
            return 200, "X-Amz-Function-Error: Unhandled\r\n", json.dumps(err.error).encode()
        return 200, "", json.dumps(result).encode()


def with_server(body):
    async def main():
        pool = FunctionPool([
            FunctionSpec(name="echo", handler="basic:echo", paths=(HANDLERS,)),
            FunctionSpec(name="raises", handler="basic:raises", paths=(HANDLERS,)),
            FunctionSpec(name="slow", handler="basic:sleeps", paths=(HANDLERS,), timeout_ms=10000),
        ])
        server_side = InvokeServer(pool)
        server = await asyncio.start_server(server_side.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await body(f"http://127.0.0.1:{port}", server_side)
        finally:
            server.close()
            await server.wait_closed()
            await pool.close()
    run(main())


def client(endpoint, **kw):
    base = dict(region=REGION, access_key=ACCESS, secret_key=SECRET)
    base.update(kw)
    return LambdaInvokeClient(endpoint, **base)


def test_signed_invoke_returns_the_result():
    async def body(endpoint, server):
        event = build_event_v2(FunctionRequest(method="GET", raw_path=b"/x", raw_query=b"a=1"))
        result = await client(endpoint).invoke("echo", event, timeout_ms=10000)
        assert result["event"] == event
        method, path, headers = server.requests[-1]
        assert (method, path) == ("POST", "/2015-03-31/functions/echo/invocations")
        assert headers["x-amz-invocation-type"] == "RequestResponse"
        assert f"/{REGION}/lambda/aws4_request" in headers["authorization"]
    with_server(body)


def test_session_token_and_qualifier_are_signed():
    async def body(endpoint, server):
        c = client(endpoint, session_token="tok3n", qualifier="live")
        assert (await c.invoke("echo", {"n": 1}))["event"] == {"n": 1}
        method, path, headers = server.requests[-1]
        assert path.endswith("/invocations?Qualifier=live")
        assert headers["x-amz-security-token"] == "tok3n"
    with_server(body)


def test_wrong_secret_is_rejected_by_the_signature_check():
    async def body(endpoint, server):
        err = await client(endpoint, secret_key="wrong").invoke("echo", {})
    with pytest.raises(FunctionError) as info:
        with_server(body)
    assert info.value.kind == "service" and "InvalidSignatureException" in info.value.detail


@pytest.mark.parametrize("name,kind", [("raises", "raised"), ("throttle", "throttled"),
                                       ("missing", "service")])
def test_invoke_errors(name, kind):
    async def body(endpoint, server):
        with pytest.raises(FunctionError) as info:
            await client(endpoint).invoke(name, {})
        assert info.value.kind == kind
        if kind == "raised":
            assert info.value.error["errorType"] == "KeyError"
    with_server(body)


def test_timeout_and_unreachable_endpoint():
    async def body(endpoint, server):
        with pytest.raises(FunctionError) as info:
            await client(endpoint).invoke("slow", {"seconds": 2}, timeout_ms=300)
        assert info.value.kind == "timeout"
        with pytest.raises(FunctionError) as info:
            await client("http://127.0.0.1:1").invoke("echo", {})
        assert info.value.kind == "service"
    with_server(body)


def test_endpoint_must_be_http():
    with pytest.raises(ValueError):
        client("ftp://lambda.example")
