"""The libraries people deploy on API Gateway, behind fastgate's events, pool and result rules.

Each request goes the way the gateway sends it: FunctionRequest -> build_event_v1/v2 ->
FunctionPool.invoke (a real handler process) -> parse_response_v1/v2.
"""

import functools
import json

import pytest

from fastgate.phases.functions.errors import FunctionError, error_response
from fastgate.phases.functions.events import FunctionRequest, build_event_v1, build_event_v2
from fastgate.phases.functions.pool import FunctionPool, FunctionSpec
from fastgate.phases.functions.responses import ResponseError, parse_response_v1, parse_response_v2

from .conftest import HANDLERS, run

BINARY = b"\x00\x01\x02\xfe\xff"


def request(method, path, query=b"", headers=(), body=b"", stage="prod", **kw):
    return FunctionRequest(method=method, raw_path=path, raw_query=query,
                           headers=[(b"Host", b"api.example.com")] + list(headers),
                           body=body, request_id="rid-1", stage=stage, **kw)


async def call(pool, name, req, version, http_api=False, **parse_kw):
    """What the client would get: (status, headers, body)."""
    event = build_event_v1(req) if version == 1 else build_event_v2(req)
    try:
        result = await pool.invoke(name, event, timeout_ms=20000, request_id=req.request_id)
        if version == 1:
            return parse_response_v1(result, **parse_kw)
        return parse_response_v2(result)
    except (FunctionError, ResponseError) as err:
        status, body, _ = error_response(err, http_api=http_api)
        return status, [(b"content-type", b"application/json")], body


def header_values(headers, name):
    return [v for n, v in headers if n.lower() == name]


def with_function(name, handler, body):
    async def main():
        pool = FunctionPool([FunctionSpec(name=name, handler=handler, paths=(HANDLERS,),
                                          memory_mb=512, timeout_ms=20000)])
        try:
            await body(pool)
        finally:
            await pool.close()
    run(main())


@pytest.mark.parametrize("version", [1, 2])
def test_starlette_with_mangum(version):
    # HTTP APIs usually serve the $default stage; a named stage would prefix rawPath
    # (as on AWS's execute-api endpoint) and these apps would need a base path.
    rq = functools.partial(request, stage="prod" if version == 1 else "$default")

    async def body(pool):
        req = rq("GET", b"/items/42", b"tag=a&tag=b", [(b"Cookie", b"session=abc; theme=dark")],
                      resource_path="/items/{item_id}", path_parameters={"item_id": "42"},
                      route_key="GET /items/{item_id}")
        status, headers, payload = await call(pool, "app", req, version)
        assert status == 200
        assert json.loads(payload) == {"id": "42", "tags": ["a", "b"],
                                       "cookies": {"session": "abc", "theme": "dark"},
                                       "root_path": ""}
        cookies = header_values(headers, b"set-cookie")
        assert len(cookies) == 2
        assert cookies[0].startswith(b"seen=yes") and b"HttpOnly" in cookies[0]
        assert cookies[1].startswith(b"lang=en")

        # binary in and out: the body survives base64 both ways
        req = rq("POST", b"/upload", headers=[(b"Content-Type", b"application/octet-stream")],
                      body=BINARY, binary_media_types=("application/octet-stream",))
        status, headers, payload = await call(pool, "app", req, version)
        assert status == 200 and payload == BINARY[::-1]
        assert header_values(headers, b"content-type") == [b"application/octet-stream"]

        # an exception inside the app is Starlette's own 500
        status, _, payload = await call(pool, "app", rq("GET", b"/boom"), version)
        assert status == 500 and payload == b"Internal Server Error"
        status, _, _ = await call(pool, "app", rq("GET", b"/nowhere"), version)
        assert status == 404
    with_function("app", "starlette_app:handler", body)


def test_powertools_rest_resolver():
    async def body(pool):
        req = request("GET", b"/todos/7", b"tag=x&tag=y", [(b"Cookie", b"a=1")],
                      resource_path="/todos/{todo_id}", path_parameters={"todo_id": "7"})
        status, headers, payload = await call(pool, "rest", req, 1)
        assert status == 200
        assert json.loads(payload) == {"id": "7", "tags": ["x", "y"], "cookie": "a=1", "stage": "prod"}
        assert header_values(headers, b"set-cookie") == [b"seen=yes; Secure", b"lang=en; Secure"]

        req = request("POST", b"/echo", headers=[(b"Content-Type", b"application/json")],
                      body=b'{"n": [1, 2]}')
        status, _, payload = await call(pool, "rest", req, 1)
        assert status == 200 and json.loads(payload) == {"raw": '{"n": [1, 2]}', "json": {"n": [1, 2]}}

        # binary response: decoded when the client accepts a binary media type of the API
        png = b"\x89PNG\r\n\x1a\n\x00\x01"
        req = request("GET", b"/logo", headers=[(b"Accept", b"image/png")])
        status, headers, payload = await call(pool, "rest", req, 1, accept=b"image/png",
                                              binary_media_types=("image/*",))
        assert status == 200 and payload == png
        assert header_values(headers, b"content-type") == [b"image/png"]

        status, _, payload = await call(pool, "rest", request("GET", b"/missing"), 1)
        assert status == 404 and json.loads(payload) == {"statusCode": 404, "message": "no such todo"}
        # an unhandled exception leaves the function: API Gateway's 502
        status, _, payload = await call(pool, "rest", request("GET", b"/crash"), 1)
        assert (status, payload) == (502, b'{"message": "Internal server error"}')
        status, _, payload = await call(pool, "rest", request("GET", b"/nowhere"), 1)
        assert status == 404 and json.loads(payload)["message"] == "Not found"
    with_function("rest", "powertools_rest:handler", body)


def test_powertools_http_resolver():
    async def body(pool):
        req = request("GET", b"/todos/7", b"tag=x&tag=y", [(b"Cookie", b"a=1; b=2")],
                      path_parameters={"todo_id": "7"}, route_key="GET /todos/{todo_id}")
        status, headers, payload = await call(pool, "http", req, 2, http_api=True)
        assert status == 200
        assert json.loads(payload) == {"id": "7", "tags": "x,y", "cookies": ["a=1", "b=2"],
                                       "route": "GET /todos/{todo_id}"}
        assert header_values(headers, b"set-cookie") == [b"seen=yes; Secure", b"lang=en; Secure"]

        # HTTP APIs send form data base64-encoded; powertools decodes it
        req = request("POST", b"/echo", headers=[(b"Content-Type", b"application/x-www-form-urlencoded")],
                      body=b"a=1&b=%20")
        status, _, payload = await call(pool, "http", req, 2, http_api=True)
        assert status == 200 and json.loads(payload) == {"raw": "a=1&b=%20"}

        status, headers, payload = await call(pool, "http", request("GET", b"/logo"), 2, http_api=True)
        assert status == 200 and payload == b"\x89PNG\r\n\x1a\n\x00\x01"

        status, _, payload = await call(pool, "http", request("GET", b"/missing"), 2, http_api=True)
        assert status == 404 and json.loads(payload)["message"] == "no such todo"
        status, _, payload = await call(pool, "http", request("GET", b"/crash"), 2, http_api=True)
        assert (status, payload) == (500, b'{"message": "Internal Server Error"}')
    with_function("http", "powertools_http:handler", body)


@pytest.mark.parametrize("version", [1, 2])
def test_flask_with_apig_wsgi(version):
    # HTTP APIs usually serve the $default stage; a named stage would prefix rawPath
    # (as on AWS's execute-api endpoint) and these apps would need a base path.
    rq = functools.partial(request, stage="prod" if version == 1 else "$default")

    async def body(pool):
        req = rq("GET", b"/hello/ada", b"tag=a&tag=b", [(b"Cookie", b"session=abc")],
                      path_parameters={"name": "ada"})
        status, headers, payload = await call(pool, "flask", req, version)
        assert status == 200
        assert json.loads(payload) == {"name": "ada", "tags": ["a", "b"],
                                       "cookies": {"session": "abc"}, "script_root": ""}
        cookies = header_values(headers, b"set-cookie")
        assert [c.split(b";")[0] for c in cookies] == [b"seen=yes", b"lang=en"]

        req = rq("POST", b"/upload", headers=[(b"Content-Type", b"application/octet-stream")],
                      body=BINARY, binary_media_types=("*/*",))
        status, headers, payload = await call(pool, "flask", req, version)
        assert status == 200 and payload == BINARY[::-1]

        status, _, payload = await call(pool, "flask", rq("GET", b"/missing"), version)
        assert status == 404 and b"Not Found" in payload
        status, _, payload = await call(pool, "flask", rq("GET", b"/crash"), version)
        assert status == 500 and b"Internal Server Error" in payload
    with_function("flask", "flask_app:handler", body)
