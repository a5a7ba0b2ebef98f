"""Authorizers made with the control API, end to end: boto3 creates a REST API, a TOKEN and a
REQUEST authorizer (Python functions) and a Cognito user pool authorizer (a local JWKS
issuer), attaches them to methods, deploys; httpx requests through fastgate are let in or
turned away with API Gateway's statuses and bodies."""

from __future__ import annotations

import json
import time

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from conftest import Gateway, wait_until
from tests.phases.auth.conftest import Issuer, SigningKey

KEY, SECRET = "AKIAFASTGATETEST07", "authorizers-test-secret"
REGION, ACCOUNT = "us-east-1", "123456789012"
POOL_ID = "us-east-1_TestPool1"
POOL_ARN = f"arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{POOL_ID}"


def fn_uri(name: str) -> str:
    return (f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}/invocations")


HANDLERS = '''
import json

def policy(effect, arn, principal="user-1", context=None):
    out = {"principalId": principal, "policyDocument": {"Version": "2012-10-17", "Statement": [
        {"Action": "execute-api:Invoke", "Effect": effect, "Resource": arn}]}}
    if context:
        out["context"] = context
    return out

def token(event, context):
    t = event["authorizationToken"]
    if t == "allow":
        return policy("Allow", event["methodArn"], context={"who": "token-user"})
    if t == "deny":
        return policy("Deny", event["methodArn"])
    raise Exception("Unauthorized")

def request(event, context):
    if event["headers"].get("X-User") == "alice" and event["queryStringParameters"].get("k") == "1":
        return policy("Allow", event["methodArn"], principal="alice", context={"who": "alice"})
    return policy("Deny", event["methodArn"])

def backend(event, context):
    return {"statusCode": 200, "body": json.dumps({
        "authorizer": event["requestContext"].get("authorizer"), "path": event["path"]})}
'''


@pytest.fixture(scope="module")
def issuer():
    iss = Issuer()
    yield iss
    iss.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory, issuer):
    tmp = tmp_path_factory.mktemp("authorizers")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "handlers.py").write_text(HANDLERS)
    g = Gateway(tmp, f"""\
        access_log: {{path: 'off'}}
        data_dir: {tmp / 'state'}
        function_path: [fn]
        functions:
          authz-token: {{handler: handlers:token}}
          authz-request: {{handler: handlers:request}}
          backend: {{handler: handlers:backend}}
        """, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET,
                  # the user pool's issuer is {endpoint}/{poolId}: the local issuer
                  "AWS_ENDPOINT_URL_COGNITO_IDENTITY_PROVIDER": issuer.url})
    yield g
    g.stop()


@pytest.fixture(scope="module")
def deployed(gw):
    """/token (CUSTOM, TOKEN), /request (CUSTOM, REQUEST), /pool (COGNITO, scope pets/read),
    /open (NONE): every one an AWS_PROXY integration of the backend function."""
    c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                     region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    api = c.create_rest_api(name="guarded")
    tok = c.create_authorizer(restApiId=api["id"], name="tok", type="TOKEN",
                              authorizerUri=fn_uri("authz-token"),
                              identitySource="method.request.header.Authorization",
                              authorizerResultTtlInSeconds=0)
    req = c.create_authorizer(restApiId=api["id"], name="req", type="REQUEST",
                              authorizerUri=fn_uri("authz-request"),
                              identitySource="method.request.header.X-User,method.request.querystring.k",
                              authorizerResultTtlInSeconds=0)
    pool = c.create_authorizer(restApiId=api["id"], name="pool", type="COGNITO_USER_POOLS",
                               providerARNs=[POOL_ARN])
    for part, auth_type, auth in (("token", "CUSTOM", tok), ("request", "CUSTOM", req),
                                  ("pool", "COGNITO_USER_POOLS", pool), ("open", "NONE", None)):
        res = c.create_resource(restApiId=api["id"], parentId=api["rootResourceId"], pathPart=part)
        kw = {"authorizerId": auth["id"]} if auth else {}
        if part == "pool":
            kw["authorizationScopes"] = ["pets/read"]
        c.put_method(restApiId=api["id"], resourceId=res["id"], httpMethod="GET",
                     authorizationType=auth_type, **kw)
        c.put_integration(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", type="AWS_PROXY",
                          integrationHttpMethod="POST", uri=fn_uri("backend"))
    c.create_deployment(restApiId=api["id"], stageName="prod")
    base = f"{gw.url}/prod"
    wait_until(lambda: httpx.get(f"{base}/open", timeout=5).status_code == 200, timeout=15)
    return c, api, base


def test_token_authorizer_allows_denies_and_rejects(deployed):
    _, _, base = deployed
    r = httpx.get(f"{base}/token", headers={"Authorization": "allow"}, timeout=10)
    assert r.status_code == 200
    assert r.json()["authorizer"]["who"] == "token-user"
    assert r.json()["authorizer"]["principalId"] == "user-1"
    r = httpx.get(f"{base}/token", timeout=10)          # no identity source: not even called
    assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"})
    assert r.headers["x-amzn-errortype"] == "UnauthorizedException"
    r = httpx.get(f"{base}/token", headers={"Authorization": "nobody"}, timeout=10)
    assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"})
    r = httpx.get(f"{base}/token", headers={"Authorization": "deny"}, timeout=10)
    assert r.status_code == 403
    assert r.json() == {"message": "User is not authorized to access this resource with an explicit deny"}
    assert r.headers["x-amzn-errortype"] == "AccessDeniedException"


def test_request_authorizer_reads_header_and_query(deployed):
    _, _, base = deployed
    r = httpx.get(f"{base}/request?k=1", headers={"X-User": "alice"}, timeout=10)
    assert r.status_code == 200 and r.json()["authorizer"]["who"] == "alice"
    r = httpx.get(f"{base}/request?k=1", headers={"X-User": "mallory"}, timeout=10)
    assert r.status_code == 403
    r = httpx.get(f"{base}/request", headers={"X-User": "alice"}, timeout=10)
    assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"})


def test_cognito_authorizer_against_a_local_issuer(deployed, issuer):
    _, _, base = deployed
    key = SigningKey("pool-key", "RS256")
    issuer.keys.append(key)
    iss = f"{issuer.url}/{POOL_ID}"
    now = int(time.time())
    access = key.token({"iss": iss, "sub": "u-1", "token_use": "access", "client_id": "app",
                        "scope": "pets/read openid", "iat": now, "exp": now + 300})
    r = httpx.get(f"{base}/pool", headers={"Authorization": access}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["authorizer"]["claims"]["sub"] == "u-1"
    # an access token without the method's scope, an ID token (scopes need access tokens),
    # a foreign issuer, an expired token, none at all
    for token in (
            key.token({"iss": iss, "sub": "u-1", "token_use": "access", "scope": "other",
                       "iat": now, "exp": now + 300}),
            key.token({"iss": iss, "sub": "u-1", "token_use": "id", "aud": "app",
                       "iat": now, "exp": now + 300}),
            key.token({"iss": "https://elsewhere.example", "sub": "u-1", "token_use": "access",
                       "scope": "pets/read", "iat": now, "exp": now + 300}),
            key.token({"iss": iss, "sub": "u-1", "token_use": "access", "scope": "pets/read",
                       "iat": now - 900, "exp": now - 600})):
        r = httpx.get(f"{base}/pool", headers={"Authorization": token}, timeout=10)
        assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"}), token
    r = httpx.get(f"{base}/pool", timeout=10)
    assert (r.status_code, r.json()) == (401, {"message": "Unauthorized"})
    assert issuer.hits.get(f"/{POOL_ID}/.well-known/jwks.json", 0) >= 1


def test_update_authorizer_takes_effect_after_redeploy(deployed):
    c, api, base = deployed
    tok = next(a for a in c.get_authorizers(restApiId=api["id"])["items"] if a["name"] == "tok")
    c.update_authorizer(restApiId=api["id"], authorizerId=tok["id"], patchOperations=[
        {"op": "replace", "path": "/identityValidationExpression", "value": "^allow-only$"}])
    # not deployed yet: the stage still serves the old authorizer. A stage made after the
    # change, once served, shows that the worker has built it (a build reads the whole state)
    prod = c.get_stage(restApiId=api["id"], stageName="prod")
    c.create_stage(restApiId=api["id"], stageName="probe", deploymentId=prod["deploymentId"])
    probe = f"{base.removesuffix('/prod')}/probe/open"
    wait_until(lambda: httpx.get(probe, timeout=5).status_code == 200, timeout=15)
    assert httpx.get(f"{base}/token", headers={"Authorization": "allow"}, timeout=10).status_code == 200
    c.create_deployment(restApiId=api["id"], stageName="prod")
    # "allow" no longer matches the expression: 401 without calling the function
    wait_until(lambda: httpx.get(f"{base}/token", headers={"Authorization": "allow"},
                                 timeout=10).status_code == 401, timeout=15)


def test_test_invoke_authorizer(deployed, issuer):
    c, api, _ = deployed
    auths = {a["name"]: a for a in c.get_authorizers(restApiId=api["id"])["items"]}
    req = auths["req"]
    out = c.test_invoke_authorizer(restApiId=api["id"], authorizerId=req["id"],
                                   headers={"X-User": "alice"}, pathWithQueryString="/request?k=1")
    assert out["clientStatus"] == 200 and out["principalId"] == "alice"
    policy = json.loads(out["policy"])
    assert policy["Statement"][0]["Effect"] == "Allow"
    assert "ESTestInvoke-stage" in policy["Statement"][0]["Resource"]
    assert out["latency"] >= 0 and "Authorized" in out["log"]
    out = c.test_invoke_authorizer(restApiId=api["id"], authorizerId=req["id"],
                                   headers={"X-User": "mallory"}, pathWithQueryString="/request?k=1")
    assert out["clientStatus"] == 403 and json.loads(out["policy"])["Statement"][0]["Effect"] == "Deny"
    out = c.test_invoke_authorizer(restApiId=api["id"], authorizerId=req["id"], headers={})
    assert out["clientStatus"] == 401
    key = SigningKey("pool-key-2", "RS256")
    issuer.keys.append(key)
    now = int(time.time())
    token = key.token({"iss": f"{issuer.url}/{POOL_ID}", "sub": "u-9", "token_use": "id",
                       "iat": now, "exp": now + 300})
    out = c.test_invoke_authorizer(restApiId=api["id"], authorizerId=auths["pool"]["id"],
                                   headers={"Authorization": token})
    assert out["clientStatus"] == 200 and out["claims"]["sub"] == "u-9"
    with pytest.raises(ClientError) as e:
        c.test_invoke_authorizer(restApiId=api["id"], authorizerId="nope00")
    assert e.value.response["Error"]["Code"] == "NotFoundException"
