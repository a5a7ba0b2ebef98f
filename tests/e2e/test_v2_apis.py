"""HTTP APIs made with apigatewayv2, end to end: boto3 and the AWS CLI create them on a real
`fastgate serve`, httpx calls them through the data plane (the same one that serves imported
HTTP APIs), and updates, automatic deployments and deletions reach it after the reload."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config

from conftest import ROOT, Gateway, Upstream, wait_until
from tests.phases.auth.conftest import Issuer, SigningKey

KEY, SECRET = "AKIAFASTGATEV2TEST", "v2-test-secret-key"
REGION, ACCOUNT = "us-east-1", "123456789012"


def fn_arn(name: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


HANDLERS = '''
import json, os

def backend(event, context):
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"version": event.get("version"), "routeKey": event.get("routeKey"),
                                "rawPath": event.get("rawPath"), "path": event.get("path"),
                                "authorizer": (event.get("requestContext") or {}).get("authorizer")})}

def simple(event, context):
    # counts its calls in a file, so the test sees what the result cache saved
    with open(os.environ["AUTHZ_CALLS"], "a") as f:
        f.write(event["identitySource"][0] + "\\n")
    user = event["headers"].get("x-user")
    return {"isAuthorized": user == "alice", "context": {"user": user}}
'''


@pytest.fixture(scope="module")
def issuer():
    iss = Issuer()
    iss.keys.append(SigningKey("k1", "RS256"))
    yield iss
    iss.close()


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("v2")
    (tmp / "fn").mkdir()
    (tmp / "fn" / "handlers.py").write_text(HANDLERS)
    up = Upstream("v2up")
    calls = tmp / "authz-calls.txt"
    calls.write_text("")
    g = Gateway(tmp, f"""\
        access_log: {{path: 'off'}}
        data_dir: {tmp / 'state'}
        function_path: [fn]
        functions:
          backend: {{handler: handlers:backend}}
          authz-simple: {{handler: handlers:simple}}
        upstreams:
          pets:
            targets: [{{url: '{up.url}'}}]
        """, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET,
                  "AUTHZ_CALLS": str(calls)})
    g.upstream, g.calls, g.tmp = up, calls, tmp
    yield g
    g.stop()
    up.stop()


@pytest.fixture(scope="module")
def c(gw):
    return boto3.client("apigatewayv2", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))


def call(gw, api_id: str, path: str, method: str = "GET", **kw) -> httpx.Response:
    """A request to an API by its execute-api host, as AWS's default endpoint is addressed."""
    headers = {"Host": f"{api_id}.execute-api.localhost", **kw.pop("headers", {})}
    return httpx.request(method, f"{gw.url}{path}", headers=headers, timeout=10, **kw)


def served(gw, api_id, path, status=200, **kw) -> httpx.Response:
    """Waits for the reload that follows a change, until the API answers `status`."""
    out = []

    def ok():
        out[:] = [call(gw, api_id, path, **kw)]
        return out[0].status_code == status
    wait_until(ok, timeout=15)
    return out[0]


def gone(gw, api_id, path) -> None:
    """Waits until a deleted API no longer answers: 403 for an unknown execute-api id (404
    when no API is left at all: the host is then no API's)."""
    wait_until(lambda: call(gw, api_id, path).status_code in (403, 404), timeout=15)


def test_quick_create_serves_then_auto_deploys_updates_and_deletion(gw, c):
    api = c.create_api(Name="quick", ProtocolType="HTTP", Target=f"{gw.upstream.url}/echo")
    r = served(gw, api["ApiId"], "/any/path?x=1")
    assert r.json()["path"] == "/echo"          # an HTTP_PROXY URL is called as it is
    assert r.headers.get("apigw-requestid")     # an HTTP API's response
    assert api["ApiEndpoint"] == f"http://{api['ApiId']}.execute-api.localhost:{gw.port}"

    # a new route deploys itself on the $default stage (autoDeploy)
    integ = c.create_integration(ApiId=api["ApiId"], IntegrationType="HTTP_PROXY",
                                 IntegrationMethod="ANY", IntegrationUri=f"{gw.upstream.url}/echo/{{rest}}",
                                 RequestParameters={"overwrite:header.x-mapped": "$request.querystring.q",
                                                    "append:querystring.added": "yes"})
    c.create_route(ApiId=api["ApiId"], RouteKey="GET /items/{rest+}",
                   Target=f"integrations/{integ['IntegrationId']}")
    r = served(gw, api["ApiId"], "/items/a/b?q=hello", headers={"X-Probe": "1"})
    body = r.json()
    assert body["path"] == "/echo/a/b", body
    assert dict((k.lower(), v) for k, v in body["headers"]).get("x-mapped") == "hello"
    assert "added=yes" in body["query"]
    # metrics per API, stage and route, as for every API the gateway serves
    metrics = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=10).text
    assert (f'fastgate_requests_total{{route="GET /items/{{rest+}}",api="{api["ApiId"]}",'
            f'stage="$default",status_class="2xx"}}') in metrics
    # and on the dashboard, with its stage and the route's figures

    def on_dashboard():
        doc = httpx.get(f"http://127.0.0.1:{gw.admin_port}/dashboard/api/summary", timeout=10).json()
        stage = [s for s in doc["stages"] if s["api"] == api["ApiId"]]
        routes = [r["route"] for a in doc["apis"] if a["api"] == api["ApiId"] for r in a["routes"]]
        return stage and stage[0]["name"] == "quick" and "GET /items/{rest+}" in routes
    wait_until(on_dashboard, timeout=15)

    c.delete_api(ApiId=api["ApiId"])
    gone(gw, api["ApiId"], "/any/path")


def test_lambda_payload_2_and_manual_deployment_to_a_stage(gw, c):
    api_id = c.create_api(Name="fn", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                 IntegrationUri=fn_arn("backend"), PayloadFormatVersion="2.0")
    c.create_route(ApiId=api_id, RouteKey="GET /pets/{id}", Target=f"integrations/{integ['IntegrationId']}")
    c.create_stage(ApiId=api_id, StageName="prod", StageVariables={"color": "blue"})
    r = call(gw, api_id, "/prod/pets/7")
    assert r.status_code == 404                 # a stage without a deployment serves nothing
    c.create_deployment(ApiId=api_id, StageName="prod")
    body = served(gw, api_id, "/prod/pets/7").json()
    assert body["version"] == "2.0" and body["routeKey"] == "GET /pets/{id}"
    assert body["rawPath"] == "/prod/pets/7"
    # a change is not served until the next deployment (no autoDeploy)
    integ1 = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                  IntegrationUri=fn_arn("backend"), PayloadFormatVersion="1.0")
    c.create_route(ApiId=api_id, RouteKey="GET /v1", Target=f"integrations/{integ1['IntegrationId']}")
    assert call(gw, api_id, "/prod/v1").status_code == 404
    c.create_deployment(ApiId=api_id, StageName="prod")
    assert served(gw, api_id, "/prod/v1").json()["path"] == "/prod/v1"   # payload 1.0


def test_jwt_and_request_authorizers_with_caching_and_reset(gw, c, issuer):
    api_id = c.create_api(Name="guarded", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                 IntegrationUri=fn_arn("backend"), PayloadFormatVersion="2.0")
    jwt = c.create_authorizer(ApiId=api_id, AuthorizerType="JWT", Name="jwt",
                              IdentitySource=["$request.header.Authorization"],
                              JwtConfiguration={"Issuer": issuer.url, "Audience": ["my-client"]})
    lam = c.create_authorizer(ApiId=api_id, AuthorizerType="REQUEST", Name="simple",
                              AuthorizerUri=fn_arn("authz-simple"), AuthorizerPayloadFormatVersion="2.0",
                              EnableSimpleResponses=True, AuthorizerResultTtlInSeconds=300,
                              IdentitySource=["$request.header.X-User"])
    target = f"integrations/{integ['IntegrationId']}"
    c.create_route(ApiId=api_id, RouteKey="GET /jwt", Target=target, AuthorizationType="JWT",
                   AuthorizerId=jwt["AuthorizerId"], AuthorizationScopes=["pets/read"])
    c.create_route(ApiId=api_id, RouteKey="GET /lambda", Target=target, AuthorizationType="CUSTOM",
                   AuthorizerId=lam["AuthorizerId"])
    c.create_route(ApiId=api_id, RouteKey="GET /open", Target=target)
    c.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True)
    served(gw, api_id, "/open")

    key = issuer.keys[0]
    good = key.token(issuer.claims(scope="pets/read"))
    r = call(gw, api_id, "/jwt", headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 200, r.text
    assert r.json()["authorizer"]["jwt"]["claims"]["sub"] == "user-1"
    assert call(gw, api_id, "/jwt").status_code == 401
    no_scope = key.token(issuer.claims(scope="other"))
    assert call(gw, api_id, "/jwt", headers={"Authorization": f"Bearer {no_scope}"}).status_code == 403

    gw.calls.write_text("")
    r = call(gw, api_id, "/lambda", headers={"X-User": "alice"})
    assert r.status_code == 200 and r.json()["authorizer"]["lambda"] == {"user": "alice"}
    assert call(gw, api_id, "/lambda", headers={"X-User": "alice"}).status_code == 200
    assert call(gw, api_id, "/lambda", headers={"X-User": "bob"}).status_code == 403
    assert call(gw, api_id, "/lambda").status_code == 401        # no identity source
    assert gw.calls.read_text().split() == ["alice", "bob"]      # alice's answer was cached
    c.reset_authorizers_cache(ApiId=api_id, StageName="$default")

    def asked_again():
        call(gw, api_id, "/lambda", headers={"X-User": "alice"})
        return gw.calls.read_text().split().count("alice") >= 2
    wait_until(asked_again, timeout=15)


def test_cors_as_http_apis_answer_it(gw, c):
    api = c.create_api(Name="cors", ProtocolType="HTTP", Target=f"{gw.upstream.url}/echo",
                       CorsConfiguration={"AllowOrigins": ["https://app.example"],
                                          "AllowMethods": ["GET", "POST"], "AllowHeaders": ["x-custom"],
                                          "ExposeHeaders": ["x-upstream"], "MaxAge": 600})
    api_id = api["ApiId"]
    served(gw, api_id, "/x")
    pre = call(gw, api_id, "/x", method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-custom"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert pre.headers["access-control-max-age"] == "600"
    assert "POST" in pre.headers["access-control-allow-methods"]
    r = call(gw, api_id, "/x", headers={"Origin": "https://app.example"})
    assert r.headers["access-control-allow-origin"] == "https://app.example"
    assert r.headers["access-control-expose-headers"] == "x-upstream"
    other = call(gw, api_id, "/x", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers

    # without a CORS configuration the preflight is a request like any other ($default route)
    c.delete_cors_configuration(ApiId=api_id)

    def plain():
        r = call(gw, api_id, "/x", method="OPTIONS", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
        return r.status_code == 200 and "access-control-allow-origin" not in r.headers
    wait_until(plain, timeout=15)


def test_custom_domain_maps_rest_and_http_apis(gw, c):
    rest = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    r_api = rest.create_rest_api(name="rest-side")
    root = rest.get_resources(restApiId=r_api["id"])["items"][0]["id"]
    rest.put_method(restApiId=r_api["id"], resourceId=root, httpMethod="GET", authorizationType="NONE")
    rest.put_integration(restApiId=r_api["id"], resourceId=root, httpMethod="GET", type="MOCK",
                         requestTemplates={"application/json": '{"statusCode": 200}'})
    rest.put_integration_response(restApiId=r_api["id"], resourceId=root, httpMethod="GET",
                                  statusCode="200", responseTemplates={"application/json": '{"side": "rest"}'})
    rest.create_deployment(restApiId=r_api["id"], stageName="prod")
    h_api = c.create_api(Name="http-side", ProtocolType="HTTP", Target=f"{gw.upstream.url}/echo",
                         DisableExecuteApiEndpoint=True)["ApiId"]

    c.create_domain_name(DomainName="both.example.com")
    rest.create_base_path_mapping(domainName="both.example.com", basePath="rest",
                                  restApiId=r_api["id"], stage="prod")
    c.create_api_mapping(DomainName="both.example.com", ApiId=h_api, Stage="$default",
                         ApiMappingKey="http")
    host = {"Host": "both.example.com"}

    def both():
        a = httpx.get(f"{gw.url}/rest", headers=host, timeout=10)
        b = httpx.get(f"{gw.url}/http/x", headers=host, timeout=10)
        return a.status_code == 200 and b.status_code == 200 and (a, b)
    a, b = wait_until(both, timeout=15)
    assert a.json() == {"side": "rest"}
    assert b.json()["path"] == "/echo"
    # disableExecuteApiEndpoint: only the custom domain serves the HTTP API
    assert call(gw, h_api, "/x").status_code == 403


def test_vpc_link_routes_to_an_upstream_group(gw, c):
    link = c.create_vpc_link(Name="pets", SubnetIds=["subnet-local"])
    assert link["VpcLinkStatus"] == "AVAILABLE"        # the config has an upstream named pets
    assert c.create_vpc_link(Name="nowhere", SubnetIds=["s"])["VpcLinkStatus"] == "FAILED"
    api_id = c.create_api(Name="private", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationMethod="ANY",
                                 ConnectionType="VPC_LINK", ConnectionId=link["VpcLinkId"],
                                 IntegrationUri="arn:aws:elasticloadbalancing:us-east-1:123456789012:"
                                                "listener/app/pets/1/2")
    c.create_route(ApiId=api_id, RouteKey="ANY /{proxy+}", Target=f"integrations/{integ['IntegrationId']}")
    c.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True)
    r = served(gw, api_id, "/echo/through/link")
    assert r.json()["path"] == "/echo/through/link" and r.headers["x-upstream"] == "v2up"


def aws(gw, *args: str) -> dict:
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    out = subprocess.run([str(Path(ROOT) / ".venv" / "bin" / "aws"), "apigatewayv2", *args,
                          "--endpoint-url", f"http://127.0.0.1:{gw.admin_port}", "--output", "json"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if out.stdout.strip() else {}


def test_aws_cli_creates_calls_updates_and_deletes(gw):
    api = aws(gw, "create-api", "--name", "cli", "--protocol-type", "HTTP",
              "--target", f"{gw.upstream.url}/echo")
    assert api["ProtocolType"] == "HTTP"
    assert api["ApiId"] in [a["ApiId"] for a in aws(gw, "get-apis")["Items"]]
    assert served(gw, api["ApiId"], "/cli").json()["path"] == "/echo"
    aws(gw, "update-api", "--api-id", api["ApiId"], "--target", f"{gw.upstream.url}/echo/updated")
    wait_until(lambda: call(gw, api["ApiId"], "/cli").json().get("path") == "/echo/updated", timeout=15)
    (route,) = aws(gw, "get-routes", "--api-id", api["ApiId"])["Items"]
    assert route["RouteKey"] == "$default"
    aws(gw, "delete-api", "--api-id", api["ApiId"])
    gone(gw, api["ApiId"], "/cli")
