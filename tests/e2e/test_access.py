"""The ACCESS phase through a real fastgate: JWT (PyJWT tokens against a JWKS file), IP
allow/deny behind a trusted proxy, a Lambda REQUEST authorizer run in the function pool
(cached, its context reaching the upstream), SigV4 (botocore-signed requests, the body
hashed), and an OpenAPI API whose methods use a Lambda TOKEN authorizer."""

from __future__ import annotations

import json
import time

import httpx
import jwt
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import Gateway

AUTHZ = '''
import json, os

def request(event, context):
    with open(os.environ["CALLS"], "a") as f:
        f.write("1")
    token = event["headers"].get("x-token") or event["headers"].get("X-Token")
    effect = "Allow" if token == "good" else "Deny"
    return {"principalId": "user-" + str(token), "context": {"tier": "gold", "n": 7},
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": effect, "Resource": event["methodArn"]}]}}

def token(event, context):
    if event["authorizationToken"] == "boom":
        raise Exception("Unauthorized")
    return {"principalId": "tok", "context": {"who": event["authorizationToken"]},
            "policyDocument": {"Version": "2012-10-17", "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow",
                 "Resource": event["methodArn"].rsplit("/", 2)[0] + "/*"}]}}
'''


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_token(key, **claims) -> str:
    now = int(time.time())
    body = {"iss": "https://issuer.test", "aud": "my-client", "sub": "alice", "iat": now,
            "exp": now + 300, "scope": "pets/read"}
    body.update(claims)
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture(scope="module")
def gw(tmp_path_factory, key, up):
    tmp = tmp_path_factory.mktemp("access")
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    (tmp / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (tmp / "fn").mkdir()
    (tmp / "fn" / "authz.py").write_text(AUTHZ)
    (tmp / "calls").write_text("")
    (tmp / "iam.csv").write_text("access_key_id,secret_access_key,principal_arn\n"
                                 "AKIDCALLER0000000001,caller-secret,arn:aws:iam::111122223333:user/bob\n")
    (tmp / "api.json").write_text(json.dumps({
        "swagger": "2.0", "info": {"title": "A", "version": "1"},
        "securityDefinitions": {"tok": {
            "type": "apiKey", "name": "Authorization", "in": "header",
            "x-amazon-apigateway-authtype": "custom",
            "x-amazon-apigateway-authorizer": {
                "type": "token", "authorizerResultTtlInSeconds": 0,
                "authorizerUri": "arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/"
                                 "arn:aws:lambda:us-east-1:123456789012:function:tokenauth/invocations"}}},
        "paths": {"/pets": {"get": {
            "security": [{"tok": []}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET",
                "uri": f"http://127.0.0.1:{up.port}/echo/pets",
                "requestParameters": {"integration.request.header.X-Who": "context.authorizer.who"}}}}},
    }))
    g = Gateway(tmp, f"""\
        access_log: {{path: 'off'}}
        trusted_proxies: [127.0.0.1]
        iam_credentials: iam.csv
        function_path: [fn]
        functions:
          authz: {{handler: authz:request, environment: {{CALLS: {tmp / 'calls'}}}}}
          tokenauth: {{handler: authz:token}}
        apis:
          - {{openapi: api.json, id: authapi, stages: {{prod: {{}}}}}}
        routes:
          - path: /jwt
            integration: {{type: http, url: "http://127.0.0.1:{up.port}"}}
            path_rewrite: /echo/jwt
            auth:
              jwt: {{issuer: "https://issuer.test", audience: [my-client], jwks_file: jwks.json,
                     scopes: [pets/read]}}
            request_headers:
              set: {{X-Sub: $context.authorizer.claims.sub}}
          - path: /per-user
            integration: {{type: mock, body: ok}}
            auth:
              jwt: {{issuer: "https://issuer.test", audience: [my-client], jwks_file: jwks.json}}
            throttle: {{rate: 0, burst: 2, key: "claim:sub"}}
          - path: /ip
            integration: {{type: mock, body: ok}}
            auth: {{ip_allow: [203.0.113.0/24], ip_deny: [203.0.113.66]}}
          - path: /lambda
            integration: {{type: http, url: "http://127.0.0.1:{up.port}"}}
            path_rewrite: /echo/lambda
            auth:
              lambda: {{function: authz, identity_source: [method.request.header.X-Token], ttl_s: 60,
                       payload_version: "1.0"}}
            request_headers:
              set: {{X-Tier: $context.authorizer.tier, X-Principal: $context.authorizer.principalId}}
          - path: /iam
            method: POST
            integration: {{type: http, url: "http://127.0.0.1:{up.port}"}}
            path_rewrite: /echo/iam
            auth: {{iam: true}}
            request_headers:
              set: {{X-Caller: $context.identity.userArn}}
        """)
    g.tmp = tmp
    yield g
    g.stop()


def hdr(seen: dict, name: str):
    return next((v for k, v in seen["headers"] if k.lower() == name), None)


def test_throttle_per_jwt_claim(gw, key):
    # one bucket per value of the token's sub claim: alice's burst is not bob's
    with httpx.Client(base_url=gw.url, timeout=5) as c:
        def get(sub):
            return c.get("/per-user", headers={"Authorization": make_token(key, sub=sub)})
        assert [get("alice").status_code for _ in range(3)] == [200, 200, 429]
        r = get("alice")
        assert r.status_code == 429 and r.json() == {"message": "Too Many Requests"}
        assert [get("bob").status_code for _ in range(3)] == [200, 200, 429]
        # a numeric claim keys by its JSON text; no token at all is refused before the throttle
        assert [get(7).status_code for _ in range(3)] == [200, 200, 429]
        assert c.get("/per-user").status_code == 401


def test_jwt(gw, key):
    r = httpx.get(f"{gw.url}/jwt", headers={"Authorization": f"Bearer {make_token(key)}"}, timeout=5)
    assert r.status_code == 200 and hdr(r.json(), "x-sub") == "alice"
    r = httpx.get(f"{gw.url}/jwt", timeout=5)
    assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
    r = httpx.get(f"{gw.url}/jwt", headers={"Authorization": make_token(key, aud="other")}, timeout=5)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    r = httpx.get(f"{gw.url}/jwt", headers={"Authorization": make_token(key, exp=int(time.time()) - 10)},
                  timeout=5)
    assert r.status_code == 401
    none_token = jwt.encode({"sub": "x", "iss": "https://issuer.test", "aud": "my-client",
                             "exp": int(time.time()) + 60}, None, algorithm="none")
    assert httpx.get(f"{gw.url}/jwt", headers={"Authorization": none_token}, timeout=5).status_code == 401
    r = httpx.get(f"{gw.url}/jwt", headers={"Authorization": make_token(key, scope="other")}, timeout=5)
    assert r.status_code == 403
    # the keep-alive connection survives a denial
    with httpx.Client(timeout=5) as c:
        assert c.get(f"{gw.url}/jwt").status_code == 401
        assert c.get(f"{gw.url}/jwt", headers={"Authorization": make_token(key)}).status_code == 200


def test_ip_allow_deny_through_a_trusted_proxy(gw):
    def status(ip):
        return httpx.get(f"{gw.url}/ip", headers={"X-Forwarded-For": ip}, timeout=5).status_code
    assert status("203.0.113.5") == 200
    assert status("203.0.113.66") == 403
    assert status("198.51.100.1") == 403
    r = httpx.get(f"{gw.url}/ip", headers={"X-Forwarded-For": "198.51.100.1"}, timeout=5)
    assert r.json() and "not authorized" in json.dumps(r.json())


def test_lambda_request_authorizer_cached_and_context_passed(gw):
    calls = gw.tmp / "calls"
    before = len(calls.read_text())
    for _ in range(3):
        r = httpx.get(f"{gw.url}/lambda", headers={"X-Token": "good"}, timeout=10)
        assert r.status_code == 200
        assert hdr(r.json(), "x-tier") == "gold" and hdr(r.json(), "x-principal") == "user-good"
    assert len(calls.read_text()) - before == 1        # cached for ttl_s per identity source
    r = httpx.get(f"{gw.url}/lambda", headers={"X-Token": "bad"}, timeout=10)
    assert r.status_code == 403
    r = httpx.get(f"{gw.url}/lambda", timeout=10)       # identity source missing: no call, 401
    assert r.status_code == 401
    assert len(calls.read_text()) - before == 2


def signed(url: str, body: bytes, secret: str = "caller-secret"):
    creds = Credentials("AKIDCALLER0000000001", secret)
    req = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "text/plain"})
    SigV4Auth(creds, "execute-api", "us-east-1").add_auth(req)
    return dict(req.headers.items())


def test_sigv4_with_the_body(gw):
    url = f"{gw.url}/iam"
    body = b"x" * 100000                                 # more than the gateway buffers at once
    r = httpx.post(url, content=body, headers=signed(url, body), timeout=10)
    assert r.status_code == 200
    assert hdr(r.json(), "x-caller") == "arn:aws:iam::111122223333:user/bob"
    assert r.json()["body_size"] == len(body)
    r = httpx.post(url, content=body + b"!", headers=signed(url, body), timeout=10)
    assert r.status_code == 403                          # the payload hash does not match
    assert httpx.post(url, content=b"hi", timeout=10).status_code == 403   # unsigned
    r = httpx.post(url, content=b"hi", headers=signed(url, b"hi", secret="wrong"), timeout=10)
    assert r.status_code == 403


def test_openapi_token_authorizer(gw):
    r = httpx.get(f"{gw.url}/prod/pets", headers={"Authorization": "abc"}, timeout=10)
    assert r.status_code == 200 and hdr(r.json(), "x-who") == "abc"
    r = httpx.get(f"{gw.url}/prod/pets", headers={"Authorization": "boom"}, timeout=10)
    assert r.status_code == 401 and r.json() == {"message": "Unauthorized"}
    assert r.headers["x-amzn-errortype"] == "UnauthorizedException"
    r = httpx.get(f"{gw.url}/prod/pets", timeout=10)
    assert r.status_code == 401
