"""Lambda authorizers through a real FunctionPool (handler files written here, run in
warm handler processes) and through an HTTP endpoint on a local server."""

from __future__ import annotations

import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fastgate.phases.auth import AuthResult
from fastgate.phases.auth.http import HttpClient
from fastgate.phases.auth.lambda_authorizer import LambdaAuthorizer, LambdaCheck, ResultCache
from fastgate.phases.functions.pool import FunctionPool, FunctionSpec

from .conftest import request, run

HANDLER = '''
import json, os

def _log(event):
    with open(os.environ["CALLS"], "a") as f:
        f.write(json.dumps(event) + "\\n")

def policy(effect, resource, **extra):
    out = {"principalId": "user-7",
           "policyDocument": {"Version": "2012-10-17", "Statement": [
               {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}]}}
    out.update(extra)
    return out

def token(event, context):
    _log(event)
    t = event["authorizationToken"]
    arn = event["methodArn"]
    base = arn.split("/")[0]
    if t == "allow":
        return policy("Allow", arn, context={"tier": "gold", "n": 3, "ok": True},
                      usageIdentifierKey="key-123")
    if t == "deny":
        return policy("Deny", arn)
    if t == "wild":
        # only GET on any path of any stage
        return policy("Allow", base + "/*/GET/*")
    if t == "one-char":
        return policy("Allow", base + "/prod/GET/pets/?")
    if t == "unauthorized":
        raise Exception("Unauthorized")
    if t == "nested":
        return policy("Allow", arn, context={"deep": {"x": 1}})
    if t == "garbage":
        return {"hello": "world"}
    raise ValueError("boom")

def request(event, context):
    _log(event)
    if event.get("version") == "2.0":
        return {"isAuthorized": event["headers"].get("x-user") == "alice",
                "context": {"user": event["headers"].get("x-user"), "list": [1, 2]}}
    return policy("Allow", event["methodArn"], context={"q": event["queryStringParameters"]["q"]})
'''


@pytest.fixture
def handler_dir(tmp_path):
    (tmp_path / "authz.py").write_text(HANDLER)
    return tmp_path


def calls(tmp_path) -> list[dict]:
    path = tmp_path / "calls"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def with_pool(handler_dir, body):
    """Run ``body(pool)`` with a warm pool of the authz handlers, then close the pool."""
    specs = [FunctionSpec(name=name, handler=f"authz:{name}", paths=(str(handler_dir),),
                          environment={"CALLS": str(handler_dir / "calls")}, timeout_ms=5000)
             for name in ("token", "request")]

    async def main():
        pool = FunctionPool(specs)
        try:
            return await body(pool)
        finally:
            await pool.close()
    return run(main())


async def decide(check, req) -> AuthResult:
    result = check.check(req)
    return result if isinstance(result, AuthResult) else await result


def token_check(pool, *, ttl_s=300, **kw) -> LambdaCheck:
    auth = LambdaAuthorizer(type="TOKEN", function="token", ttl_s=ttl_s,
                            identity_source="method.request.header.Authorization", **kw)
    return LambdaCheck(auth, ResultCache(ttl_s), invoke=pool.invoke)


def tok(value: str, **kw):
    return request(headers=[(b"Host", b"h"), (b"Authorization", value.encode())], **kw)


def test_token_allow_context_and_cache(handler_dir):
    async def body(pool):
        check = token_check(pool)
        first = await decide(check, tok("allow"))
        second = check.check(tok("allow"))        # a cache hit answers synchronously
        return first, second
    first, second = with_pool(handler_dir, body)
    for result in (first, second):
        assert result.allowed and result.principal_id == "user-7"
        assert result.context == {"tier": "gold", "n": 3, "ok": True}
        assert result.usage_identifier_key == "key-123"
    events = calls(handler_dir)
    assert events == [{"type": "TOKEN", "authorizationToken": "allow",
                       "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/pets/1"}]


def test_token_deny_and_wildcards(handler_dir):
    async def body(pool):
        check = token_check(pool)
        return [await decide(check, r) for r in (
            tok("deny"),
            tok("wild"), tok("wild", method="POST"),
            tok("one-char", stage_path="/pets/1"), tok("one-char", stage_path="/pets/12"))]
    deny, wild_get, wild_post, one, two = with_pool(handler_dir, body)
    assert (deny.error_type, deny.message) == (
        "ACCESS_DENIED", "User is not authorized to access this resource with an explicit deny")
    assert wild_get.allowed
    # the cached policy is evaluated against each request's own ARN
    assert (wild_post.error_type, wild_post.message) == (
        "ACCESS_DENIED", "User is not authorized to access this resource")
    assert one.allowed and not two.allowed
    assert [e["authorizationToken"] for e in calls(handler_dir)] == ["deny", "wild", "one-char"]


def test_ttl_zero_calls_every_time(handler_dir):
    async def body(pool):
        check = token_check(pool, ttl_s=0)
        return [await decide(check, tok("allow")) for _ in range(3)]
    assert all(r.allowed for r in with_pool(handler_dir, body))
    assert len(calls(handler_dir)) == 3


def test_missing_identity_or_failed_validation_is_401_without_call(handler_dir):
    async def body(pool):
        check = token_check(pool, validation_expression=r"[a-z]+")
        return [await decide(check, r) for r in (
            request(headers=[(b"Host", b"h")]), tok(""), tok("UPPER-case"))]
    for result in with_pool(handler_dir, body):
        assert (result.error_type, result.message) == ("UNAUTHORIZED", "Unauthorized")
    assert calls(handler_dir) == []


def test_failures(handler_dir):
    async def body(pool):
        check = token_check(pool)
        return [await decide(check, tok(t)) for t in ("unauthorized", "boom", "garbage", "nested")]
    unauthorized, boom, garbage, nested = with_pool(handler_dir, body)
    # AWS: raising "Unauthorized" is the authorizer's way to answer 401
    assert unauthorized.error_type == "UNAUTHORIZED"
    for result in (boom, garbage, nested):
        assert (result.error_type, result.message) == ("AUTHORIZER_CONFIGURATION_ERROR", None)
    # failures are not cached
    assert len(calls(handler_dir)) == 4


def test_request_v1_event_and_cache_by_route(handler_dir):
    async def body(pool):
        auth = LambdaAuthorizer(type="REQUEST", function="request", ttl_s=60, cache_by_route=True,
                                identity_source="method.request.querystring.q, stageVariables.v")
        check = LambdaCheck(auth, ResultCache(60), invoke=pool.invoke)
        common = dict(query=b"q=abc", stage_variables={"v": "1"},
                      headers=[(b"Host", b"api.example.com"), (b"X-A", b"1")])
        results = [await decide(check, request(**common)),
                   await decide(check, request(**common)),
                   await decide(check, request(route_key="GET /other", **common)),
                   await decide(check, request(query=b"", stage_variables={"v": "1"}))]
        return results
    a, b, c, missing = with_pool(handler_dir, body)
    assert a.allowed and b.allowed and c.allowed and a.context == {"q": "abc"}
    assert missing.error_type == "UNAUTHORIZED"
    events = calls(handler_dir)
    assert len(events) == 2            # one per route; the repeat was a cache hit
    event = events[0]
    assert list(event)[:2] == ["type", "methodArn"] and event["type"] == "REQUEST"
    assert event["resource"] == "/pets/{id}" and event["path"] == "/pets/1"
    assert event["httpMethod"] == "GET" and event["headers"]["X-A"] == "1"
    assert event["multiValueQueryStringParameters"] == {"q": ["abc"]}
    assert event["stageVariables"] == {"v": "1"}
    assert event["requestContext"]["stage"] == "prod"
    assert "body" not in event


def test_http_api_simple_responses_v2(handler_dir):
    async def body(pool):
        auth = LambdaAuthorizer(type="REQUEST", function="request", ttl_s=0, http_api=True,
                                payload_version="2.0", simple_responses=True,
                                identity_source="$request.header.X-User")
        check = LambdaCheck(auth, ResultCache(0), invoke=pool.invoke)
        h = lambda user: request(headers=[(b"Host", b"h"), (b"X-User", user.encode())])
        return await decide(check, h("alice")), await decide(check, h("bob"))
    alice, bob = with_pool(handler_dir, body)
    assert alice.allowed and alice.context == {"user": "alice", "list": [1, 2]}
    assert (bob.error_type, bob.message) == ("ACCESS_DENIED", "Forbidden")
    event = calls(handler_dir)[0]
    assert event["version"] == "2.0" and event["type"] == "REQUEST"
    assert event["routeArn"].endswith("abc123/prod/GET/pets/1")
    assert event["identitySource"] == ["alice"] and event["routeKey"] == "GET /pets/{id}"


class Endpoint:
    """An authorizer served over HTTP: answers by the token, counts calls."""

    def __init__(self):
        self.events = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.events.append(event)
                t = event.get("authorizationToken")
                if t == "nope":
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                effect = "Allow" if t == "allow" else "Deny"
                data = json.dumps({"principalId": "svc", "policyDocument": {
                    "Version": "2012-10-17", "Statement": [{
                        "Effect": effect, "Action": "execute-api:Invoke",
                        "Resource": event["methodArn"]}]}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/authorize"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_http_endpoint_authorizer():
    endpoint = Endpoint()
    try:
        auth = LambdaAuthorizer(type="TOKEN", url=endpoint.url, ttl_s=300,
                                identity_source="method.request.header.Authorization")
        check = LambdaCheck(auth, ResultCache(300), http_client=HttpClient(timeout_s=2))
        dead = LambdaCheck(LambdaAuthorizer(type="TOKEN", url="http://127.0.0.1:1/x", ttl_s=0,
                                            identity_source="method.request.header.Authorization"),
                           ResultCache(0), http_client=HttpClient(timeout_s=2))

        async def body():
            return [await decide(check, tok("allow")), await decide(check, tok("allow")),
                    await decide(check, tok("deny")), await decide(check, tok("nope")),
                    await decide(dead, tok("allow"))]
        allow, cached, deny, nope, unreachable = run(body())
    finally:
        endpoint.server.shutdown()
        endpoint.server.server_close()
    assert allow.allowed and cached.allowed and allow.principal_id == "svc"
    assert deny.error_type == "ACCESS_DENIED" and nope.error_type == "UNAUTHORIZED"
    assert unreachable.error_type == "AUTHORIZER_CONFIGURATION_ERROR"
    assert [e["authorizationToken"] for e in endpoint.events] == ["allow", "deny", "nope"]


def test_configuration_errors():
    with pytest.raises(ValueError):
        LambdaAuthorizer(type="TOKEN", function="f", identity_source="method.request.querystring.q")
    with pytest.raises(ValueError):
        LambdaAuthorizer(type="REQUEST", function="f", ttl_s=300)      # cached, no key
    with pytest.raises(ValueError):
        LambdaAuthorizer(type="REQUEST", function="f", url="http://x", ttl_s=0)
    with pytest.raises(ValueError):
        LambdaAuthorizer(type="REQUEST", function="f", ttl_s=0, simple_responses=True)


def test_result_cache_ttl_and_bound():
    now = [0.0]
    cache = ResultCache(10, capacity=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a") is None and cache.get("c") == 3
    now[0] = 11
    assert cache.get("c") is None
