"""HTTP APIs made with apigatewayv2, end to end: boto3 and the AWS CLI create them on a real
`fastgate serve`, httpx calls them through the data plane (the same one that serves imported
HTTP APIs), and updates, automatic deployments and deletions reach it after the reload."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import boto3
import httpx
import pytest
import trustme
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
    # the CA the gateway trusts for HTTPS backends (OpenSSL reads SSL_CERT_FILE)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
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
                  "AUTHZ_CALLS": str(calls), "SSL_CERT_FILE": str(tmp / "ca.pem")})
    g.upstream, g.calls, g.tmp, g.ca = up, calls, tmp, ca
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


def settled(gw, c) -> None:
    """Waits until every change made so far is served, for asserting what a change must NOT
    do: a throwaway API made now (quick create) answers once a build holding it is served,
    and a build reads the whole state."""
    sentinel = c.create_api(Name="sentinel", ProtocolType="HTTP",
                            Target=f"{gw.upstream.url}/echo")["ApiId"]
    served(gw, sentinel, "/")
    c.delete_api(ApiId=sentinel)


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
    settled(gw, c)
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
    settled(gw, c)
    assert call(gw, api_id, "/prod/v1").status_code == 404
    c.create_deployment(ApiId=api_id, StageName="prod")
    assert served(gw, api_id, "/prod/v1").json()["path"] == "/prod/v1"   # payload 1.0


def test_response_parameters_map_proxied_and_function_responses(gw, c):
    api_id = c.create_api(Name="respmap", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(
        ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationMethod="ANY",
        IntegrationUri=f"{gw.upstream.url}/{{proxy}}", PayloadFormatVersion="1.0",
        ResponseParameters={
            "200": {"overwrite:header.X-Upstream": "mapped-$response.header.X-Upstream",
                    "append:header.X-Path": "$response.body.path",
                    "remove:header.X-Seen-Connection": "''",
                    "overwrite:header.X-Stage": "${context.stage} $stageVariables.color"},
            "404": {"overwrite:statuscode": "200", "overwrite:header.X-Was": "404"}})
    c.create_route(ApiId=api_id, RouteKey="ANY /{proxy+}", Target=f"integrations/{integ['IntegrationId']}")
    fn = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY", IntegrationUri=fn_arn("backend"),
                              PayloadFormatVersion="2.0",
                              ResponseParameters={"200": {"overwrite:statuscode": "201",
                                                          "overwrite:header.X-Route": "$response.body.routeKey"}})
    c.create_route(ApiId=api_id, RouteKey="GET /fn", Target=f"integrations/{fn['IntegrationId']}")
    c.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True, StageVariables={"color": "blue"})

    r = served(gw, api_id, "/echo/x")
    assert r.headers["x-upstream"] == "mapped-v2up"            # the integration's header, read
    assert r.headers["x-path"] == "/echo/x"                    # a member of its JSON body
    assert "x-seen-connection" not in r.headers
    assert r.headers["x-stage"] == "$default blue"
    assert r.json()["path"] == "/echo/x"                       # the body is the integration's

    r = call(gw, api_id, "/status/404")                        # overwrite:statuscode
    assert (r.status_code, r.text, r.headers["x-was"]) == (200, "status 404", "404")
    r = call(gw, api_id, "/status/500")                        # a status without parameters
    assert r.status_code == 500 and "x-was" not in r.headers and r.text == "status 500"

    # a mapped response is held whole: its hop-by-hop fields stay behind, it is framed anew
    r = call(gw, api_id, "/hopbyhop")
    assert r.text == "hop" and r.headers["x-end-to-end"] == "kept"
    for name in ("x-conn-named", "keep-alive", "proxy-connection", "upgrade", "te", "trailer"):
        assert name not in r.headers
    r = call(gw, api_id, "/chunked/300000")
    assert len(r.content) == 300000 and r.headers["content-length"] == "300000"
    assert "transfer-encoding" not in r.headers and r.headers["x-upstream"] == "mapped-v2up"

    r = served(gw, api_id, "/fn", status=201)                  # a function's response too
    assert r.headers["x-route"] == "GET /fn" and r.json()["routeKey"] == "GET /fn"


def test_stage_access_log_settings_write_the_stages_lines(gw, c):
    api_id = c.create_api(Name="logged", ProtocolType="HTTP", Target=f"{gw.upstream.url}/echo")["ApiId"]
    served(gw, api_id, "/before")
    path = gw.tmp / f"access-{api_id}.log"
    fmt = ('{"requestId":"$context.requestId","routeKey":"$context.routeKey",'
           '"status":"$context.status","path":"$context.path"}')
    c.update_stage(ApiId=api_id, StageName="$default",
                   AccessLogSettings={"DestinationArn": str(path), "Format": fmt})

    def lines():
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def logged():
        call(gw, api_id, "/after")     # also what makes the reload's snapshot serve
        return any(x["path"] == "/after" for x in lines())
    wait_until(logged, timeout=15)
    line = next(x for x in lines() if x["path"] == "/after")
    assert line["routeKey"] == "$default" and line["status"] == "200" and line["requestId"]
    assert not any(x["path"] == "/before" for x in lines())   # only what the stage served since

    c.delete_access_log_settings(ApiId=api_id, StageName="$default")

    def stopped():
        n = len(lines())
        call(gw, api_id, "/stopped")
        time.sleep(1.5)                # the worker writes its buffered lines every second
        return len(lines()) == n
    wait_until(stopped, timeout=20)

    # a REST API's stage, patched through apigateway, logs the same way
    rest = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name=REGION, aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    r_api = rest.create_rest_api(name="rest-logged")["id"]
    root = rest.get_resources(restApiId=r_api)["items"][0]["id"]
    rest.put_method(restApiId=r_api, resourceId=root, httpMethod="GET", authorizationType="NONE")
    rest.put_integration(restApiId=r_api, resourceId=root, httpMethod="GET", type="MOCK",
                         requestTemplates={"application/json": '{"statusCode": 200}'})
    rest.put_integration_response(restApiId=r_api, resourceId=root, httpMethod="GET", statusCode="200")
    rest.create_deployment(restApiId=r_api, stageName="logged")
    rest_log = gw.tmp / f"access-{r_api}.log"
    rest.update_stage(restApiId=r_api, stageName="logged", patchOperations=[
        {"op": "replace", "path": "/accessLogSettings/destinationArn", "value": str(rest_log)},
        {"op": "replace", "path": "/accessLogSettings/format", "value": "$context.httpMethod $context.status"}])

    def rest_logged():
        call(gw, r_api, "/logged/")
        return rest_log.exists() and "GET 200" in rest_log.read_text().splitlines()
    wait_until(rest_logged, timeout=15)


def test_tls_config_server_name_to_verify(gw, c, tmp_path):
    from test_tls_upstream import TlsUpstream
    leaf = gw.ca.issue_cert("backend.internal")     # not the address the URL names
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    backend = TlsUpstream(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), name="sni")
    try:
        api_id = c.create_api(Name="sni", ProtocolType="HTTP")["ApiId"]
        c.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True)
        for key, tls in (("plain", None), ("named", {"ServerNameToVerify": "backend.internal"}),
                         ("wrong", {"ServerNameToVerify": "other.internal"})):
            integ = c.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationMethod="GET",
                                         IntegrationUri=f"{backend.url}/name", PayloadFormatVersion="1.0",
                                         **({"TlsConfig": tls} if tls else {}))
            c.create_route(ApiId=api_id, RouteKey=f"GET /{key}", Target=f"integrations/{integ['IntegrationId']}")
        # the last route made is served once it fails (before, it is a 404)
        wait_until(lambda: call(gw, api_id, "/wrong").status_code >= 500, timeout=15)
        r = served(gw, api_id, "/named")               # the certificate is checked for that name
        assert r.text == "sni"
        assert call(gw, api_id, "/plain").status_code >= 500   # for 127.0.0.1 it is not valid
        assert call(gw, api_id, "/wrong").status_code >= 500
    finally:
        backend.p.stop()


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


def test_routing_rules_choose_the_stage_before_the_mappings(gw, c):
    mapped = c.create_api(Name="mapped", ProtocolType="HTTP", Target=f"{gw.upstream.url}/echo")["ApiId"]
    ruled = c.create_api(Name="ruled", ProtocolType="HTTP")["ApiId"]
    integ = c.create_integration(ApiId=ruled, IntegrationType="HTTP_PROXY", IntegrationMethod="ANY",
                                 IntegrationUri=f"{gw.upstream.url}/echo/b/{{proxy}}",
                                 PayloadFormatVersion="1.0")
    c.create_route(ApiId=ruled, RouteKey="ANY /{proxy+}", Target=f"integrations/{integ['IntegrationId']}")
    c.create_stage(ApiId=ruled, StageName="live", AutoDeploy=True)
    host = "rules.example.com"
    c.create_domain_name(DomainName=host, RoutingMode="ROUTING_RULE_THEN_API_MAPPING")
    c.create_api_mapping(DomainName=host, ApiId=mapped, Stage="$default", ApiMappingKey="")
    c.create_routing_rule(DomainName=host, Priority=20,
                          Conditions=[{"MatchBasePaths": {"AnyOf": ["orders"]}}],
                          Actions=[{"InvokeApi": {"ApiId": ruled, "Stage": "live", "StripBasePath": True}}])
    c.create_routing_rule(DomainName=host, Priority=10,
                          Conditions=[{"MatchHeaders": {"AnyOf": [{"Header": "X-Version", "ValueGlob": "beta-*"}]}}],
                          Actions=[{"InvokeApi": {"ApiId": ruled, "Stage": "live"}}])

    def path(p, **headers):
        r = httpx.get(f"{gw.url}{p}", headers={"Host": host, **headers}, timeout=10)
        return r.json()["path"] if r.status_code == 200 else r.status_code
    # the priority-10 rule was the last change: once it is served, so is everything before it
    wait_until(lambda: path("/orders/7", **{"x-version": "beta-2"}) == "/echo/b/orders/7",
               timeout=15)                                      # priority 10 first
    assert path("/orders/7") == "/echo/b/7"                         # base path rule, stripped
    assert path("/x") == "/echo"                                    # no rule matches: the mapping
    assert path("/x", **{"X-VERSION": "Beta-2"}) == "/echo"         # the value glob is case-sensitive
    assert path("/ordersx") == "/echo"                              # a base path is whole segments

    c.update_domain_name(DomainName=host, RoutingMode="ROUTING_RULE_ONLY")
    wait_until(lambda: path("/x") == 403, timeout=15)               # no mapping serves any more
    assert path("/orders/7") == "/echo/b/7"
    c.update_domain_name(DomainName=host, RoutingMode="API_MAPPING_ONLY")
    wait_until(lambda: path("/orders/7") == "/echo", timeout=15)    # the rules are not read


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
