"""WebSocket APIs made with apigatewayv2 (protocolType WEBSOCKET), end to end: boto3 builds
AWS's chat sample on a real `fastgate serve` (routes $connect with a REQUEST Lambda
authorizer, $disconnect, sendmessage; AWS_PROXY integrations naming local functions by
Lambda ARN, a MOCK two-way route with its integration response, an HTTP route with request
and response templates), deploys it to a stage, and real `websockets` clients chat through it
across two workers; a redeployment reaches open connections without closing them; and the
control API refuses what AWS refuses for WebSocket APIs."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conftest import ROOT, wait_until
from test_websocket_api import CHAT, ENV, KEY_ID, SECRET, mgmt, owner_pid

REGION, ACCOUNT = "us-east-1", "123456789012"

AUTHORIZE = '''

def authorize(event, context):
    with open(os.environ["EVENTS"] + ".auth", "a") as f:
        f.write(json.dumps(event) + "\\n")
    allow = (event.get("queryStringParameters") or {}).get("token") == "letmein"
    return {"principalId": "alice", "context": {"team": "blue"}, "policyDocument": {
        "Version": "2012-10-17", "Statement": [{"Action": "execute-api:Invoke",
        "Effect": "Allow" if allow else "Deny", "Resource": event["methodArn"]}]}}

def whoami(event, context):
    ctx = event["requestContext"]
    return {"statusCode": 200, "body": json.dumps({"connectionId": ctx["connectionId"],
            "routeKey": ctx["routeKey"], "authorizer": ctx.get("authorizer"),
            "apiId": ctx["apiId"], "stage": ctx["stage"]})}
'''


def fn_arn(name: str) -> str:
    return (f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
            f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}/invocations")


def gateway_config(tmp_path) -> str:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "chat.py").write_text(CHAT + AUTHORIZE)
    env = (f"{{CHAT_DB: {tmp_path / 'chat.sqlite'}, EVENTS: {tmp_path / 'events.jsonl'}, "
           f"GATEWAY_FILE: {tmp_path / 'gateway.url'}, AWS_ACCESS_KEY_ID: {KEY_ID}, "
           f"AWS_SECRET_ACCESS_KEY: {SECRET}}}")
    fns = "".join(f"  {name}: {{handler: 'chat:{name}', paths: [{src}], environment: {env}, "
                  f"concurrency: 2, timeout_ms: 10000}}\n"
                  for name in ("on_connect", "on_disconnect", "send_message", "authorize", "whoami"))
    return f"""\
access_log: {{path: 'off'}}
data_dir: {tmp_path / 'state'}
functions:
{fns}"""


def v2(gw):
    return boto3.client("apigatewayv2", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))


def error(call, **kw) -> tuple[str, str]:
    with pytest.raises(ClientError) as e:
        call(**kw)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 120))


async def served(url: str):
    """A connection to a stage once its deployment is served (before it, the upgrade is
    refused: the reload that follows the change has not happened yet)."""
    for _ in range(60):
        try:
            return await connect(url, open_timeout=15)
        except InvalidStatus:
            await asyncio.sleep(0.25)
    return await connect(url, open_timeout=15)


def build_chat(c, upstream_url: str) -> tuple[str, dict]:
    """AWS's chat sample through apigatewayv2 -> (api id, route ids by key)."""
    api = c.create_api(Name="chat", ProtocolType="WEBSOCKET",
                       RouteSelectionExpression="$request.body.action")
    api_id = api["ApiId"]
    assert api["ApiEndpoint"].startswith(f"ws://{api_id}.execute-api.")
    assert api["ApiKeySelectionExpression"] == "$request.header.x-api-key"
    fn = {name: c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                     IntegrationUri=fn_arn(name))["IntegrationId"]
          for name in ("on_connect", "on_disconnect", "send_message", "whoami")}
    mock = c.create_integration(ApiId=api_id, IntegrationType="MOCK",
                                RequestTemplates={"$default": '{"statusCode": 200}'},
                                TemplateSelectionExpression="\\$default")
    assert mock["PayloadFormatVersion"] == "1.0" and mock["TimeoutInMillis"] == 29000
    c.create_integration_response(ApiId=api_id, IntegrationId=mock["IntegrationId"],
                                  IntegrationResponseKey="$default",
                                  ResponseTemplates={"$default": "pong"})
    http = c.create_integration(
        ApiId=api_id, IntegrationType="HTTP", IntegrationMethod="POST",
        IntegrationUri=upstream_url + "/echo/${stageVariables.where}",
        RequestTemplates={"$default": '{"who": "$context.connectionId", "data": $input.json("$.data")}'})
    c.create_integration_response(
        ApiId=api_id, IntegrationId=http["IntegrationId"], IntegrationResponseKey="/2\\d\\d/",
        ResponseTemplates={"$default": '{"path": "$input.path(\'$.path\')"}'})
    # the backend's status picks the integration response (AWS's
    # ${integration.response.statuscode}), else $default
    missing = c.create_integration(ApiId=api_id, IntegrationType="HTTP",
                                   IntegrationUri=f"{upstream_url}/status/404")
    for key, text in (("/2\\d\\d/", "found"), ("/4\\d\\d/", "nope at $context.routeKey"),
                      ("$default", "other")):
        c.create_integration_response(ApiId=api_id, IntegrationId=missing["IntegrationId"],
                                      IntegrationResponseKey=key, ResponseTemplates={"$default": text})
    auth = c.create_authorizer(ApiId=api_id, Name="token", AuthorizerType="REQUEST",
                               AuthorizerUri=fn_arn("authorize"),
                               IdentitySource=["route.request.querystring.token"])
    routes = {}
    for key, target, extra in (
            ("$connect", fn["on_connect"], {"AuthorizationType": "CUSTOM",
                                            "AuthorizerId": auth["AuthorizerId"]}),
            ("$disconnect", fn["on_disconnect"], {}),
            ("sendmessage", fn["send_message"], {}),
            ("whoami", fn["whoami"], {"RouteResponseSelectionExpression": "$default"}),
            ("ping", mock["IntegrationId"], {"RouteResponseSelectionExpression": "$default"}),
            ("mapped", http["IntegrationId"], {"RouteResponseSelectionExpression": "$default"}),
            ("missing", missing["IntegrationId"], {"RouteResponseSelectionExpression": "$default"})):
        route = c.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{target}", **extra)
        routes[key] = route["RouteId"]
        if "RouteResponseSelectionExpression" in extra:
            rr = c.create_route_response(ApiId=api_id, RouteId=route["RouteId"],
                                         RouteResponseKey="$default")
            assert rr["RouteResponseKey"] == "$default"
    return api_id, routes


def test_chat_made_with_apigatewayv2(gateway, tmp_path, upstream):
    gw = gateway(gateway_config(tmp_path), workers=2, env=ENV)
    (tmp_path / "gateway.url").write_text(gw.url)
    c = v2(gw)
    api_id, routes = build_chat(c, upstream.url)
    # a stage without a deployment is not served; the deployment is
    c.create_stage(ApiId=api_id, StageName="prod", StageVariables={"where": "mapped"})
    dep = c.create_deployment(ApiId=api_id, StageName="prod", Description="first")
    assert dep["DeploymentStatus"] == "DEPLOYED"
    assert c.get_stage(ApiId=api_id, StageName="prod")["DeploymentId"] == dep["DeploymentId"]
    url = f"ws://127.0.0.1:{gw.port}/prod"

    async def refused(uri, **kw) -> int:
        with pytest.raises(InvalidStatus) as e:
            await connect(uri, open_timeout=15, **kw)
        return e.value.response.status_code

    async def scenario():
        async def first():
            try:
                ws = await connect(url + "?token=letmein", open_timeout=15)
            except InvalidStatus:
                return None         # not yet reloaded: the stage is not there
            return ws
        # both workers serve the deployment (each builds it on its own) before a new connection
        # is asserted on: probe until connections owned by each worker have answered
        owners = set()
        for _ in range(120):
            probe = await first()
            if probe is None:
                await asyncio.sleep(0.25)
                continue
            await probe.send(json.dumps({"action": "whoami"}))
            owners.add(owner_pid(json.loads(await asyncio.wait_for(probe.recv(), 15))["connectionId"]))
            await probe.close()
            if len(owners) == 2:
                break
        assert len(owners) == 2, f"the deployed stage answered on {len(owners)} of 2 workers"
        ws = await first()
        assert ws is not None
        clients = [ws]
        # the REQUEST authorizer on $connect: no identity source 401, a Deny 403
        assert await refused(url) == 401
        assert await refused(url + "?token=wrong") == 403
        # the {apiId}.execute-api host form
        sock = socket.create_connection(("127.0.0.1", gw.port))
        clients.append(await connect(f"ws://{api_id}.execute-api.localhost:{gw.port}/prod?token=letmein",
                                     open_timeout=15, sock=sock))
        ids = []
        for _ in range(20):
            if len(clients) > len(ids):
                await clients[-1].send(json.dumps({"action": "whoami"}))
                me = json.loads(await asyncio.wait_for(clients[-1].recv(), 15))
                assert me["apiId"] == api_id and me["stage"] == "prod" and me["routeKey"] == "whoami"
                assert me["authorizer"]["principalId"] == "alice" and me["authorizer"]["team"] == "blue"
                ids.append(me["connectionId"])
            if len(ids) >= 2 and len({owner_pid(i) for i in ids}) >= 2:
                break
            clients.append(await connect(url + "?token=letmein", open_timeout=15))
        assert len({owner_pid(i) for i in ids}) >= 2, "every connection landed on one worker"
        # sendmessage broadcasts to everyone through @connections, across the workers
        await clients[0].send(json.dumps({"action": "sendmessage", "data": "hi all"}))
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), 20) == "hi all"
        # MOCK two-way: its integration response's template; HTTP: both templates
        await clients[1].send(json.dumps({"action": "ping"}))
        assert await asyncio.wait_for(clients[1].recv(), 15) == "pong"
        await clients[1].send(json.dumps({"action": "mapped", "data": [1, 2]}))
        assert json.loads(await asyncio.wait_for(clients[1].recv(), 15)) == {"path": "/echo/mapped"}
        await clients[1].send(json.dumps({"action": "missing"}))
        assert await asyncio.wait_for(clients[1].recv(), 15) == "nope at missing"
        # no such route and no $default: AWS's Forbidden frame
        await clients[1].send(json.dumps({"action": "nowhere"}))
        assert json.loads(await asyncio.wait_for(clients[1].recv(), 15))["message"] == "Forbidden"

        # a $default route and a redeployment reach the open connections, which stay open
        fallback = c.create_integration(ApiId=api_id, IntegrationType="MOCK",
                                        RequestTemplates={"$default": '{"statusCode": 200}'})
        c.create_integration_response(ApiId=api_id, IntegrationId=fallback["IntegrationId"],
                                      IntegrationResponseKey="$default",
                                      ResponseTemplates={"$default": "fallback #if($input.path('$.n') == 7)seven#end from $context.routeKey"})
        default = c.create_route(ApiId=api_id, RouteKey="$default",
                                 Target=f"integrations/{fallback['IntegrationId']}",
                                 RouteResponseSelectionExpression="$default")
        c.create_route_response(ApiId=api_id, RouteId=default["RouteId"], RouteResponseKey="$default")
        # one-way from now on: the route response goes
        rr = c.get_route_responses(ApiId=api_id, RouteId=routes["ping"])["Items"][0]
        c.delete_route_response(ApiId=api_id, RouteId=routes["ping"],
                                RouteResponseId=rr["RouteResponseId"])
        c.create_deployment(ApiId=api_id, StageName="prod")

        async def answer(ws) -> str:
            await ws.send(json.dumps({"action": "nowhere", "n": 7}))
            return await asyncio.wait_for(ws.recv(), 15)
        # (the MOCK's response template is Velocity over the message and its context)
        fallback = "fallback seven from $default"
        # every connection, on either worker, gets the new routes. The workers build the new
        # snapshot each on its own, so one may serve it a moment before the other does.
        for ws in clients[1:]:
            for _ in range(60):
                got = await answer(ws)
                if got == fallback:
                    break
                await asyncio.sleep(0.25)
            assert got == fallback
        await clients[1].send(json.dumps({"action": "ping"}))       # one-way now: nothing back
        await clients[1].send(json.dumps({"action": "whoami"}))
        assert json.loads(await asyncio.wait_for(clients[1].recv(), 15))["routeKey"] == "whoami"
        # @connections from the test on the data-plane listener
        api = mgmt(gw)
        info = await asyncio.to_thread(api.get_connection, ConnectionId=ids[0])
        assert info["Identity"]["SourceIp"] == "127.0.0.1"
        # and on the admin listener
        admin = mgmt(gw, port=gw.admin_port)
        # (ids[i] is clients[i + 1]'s: the first client's id was never asked)
        await asyncio.to_thread(admin.post_to_connection, ConnectionId=ids[0], Data=b"from admin")
        assert await asyncio.wait_for(clients[1].recv(), 15) == "from admin"
        for ws in clients:
            await ws.close()
        return ids
    ids = run(scenario())
    # $disconnect ran for each: the chat table is empty again
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    wait_until(lambda: len([e for e in (json.loads(line) for line in
                                        (tmp_path / "events.jsonl").read_text().splitlines())
                            if e["requestContext"]["eventType"] == "DISCONNECT"]) >= len(ids))
    assert {e["requestContext"]["connectionId"] for e in events
            if e["requestContext"]["eventType"] == "CONNECT"} >= set(ids)


def test_websocket_api_refusals(gateway, tmp_path):
    gw = gateway(gateway_config(tmp_path), workers=1, env=ENV)
    c = v2(gw)
    assert error(c.create_api, Name="w", ProtocolType="WEBSOCKET") == (
        "BadRequestException", "RouteSelectionExpression is required for WEBSOCKET APIs")
    code, msg = error(c.create_api, Name="w", ProtocolType="WEBSOCKET",
                      RouteSelectionExpression="$request.method $request.path")
    assert code == "BadRequestException" and "route selection" in msg
    code, _ = error(c.create_api, Name="w", ProtocolType="WEBSOCKET",
                    RouteSelectionExpression="$request.body.action",
                    Target=fn_arn("whoami"))
    assert code == "BadRequestException"
    api_id = c.create_api(Name="w", ProtocolType="WEBSOCKET",
                          RouteSelectionExpression="${request.body.action}",
                          ApiKeySelectionExpression="$context.authorizer.usageIdentifierKey")["ApiId"]
    # nothing to deploy yet
    assert error(c.create_deployment, ApiId=api_id) == (
        "BadRequestException", "At least one route is required before deploying the Api.")
    integ = c.create_integration(ApiId=api_id, IntegrationType="AWS_PROXY",
                                 IntegrationUri=fn_arn("whoami"))["IntegrationId"]
    assert error(c.create_route, ApiId=api_id, RouteKey="$bogus")[0] == "BadRequestException"
    # authorization and API keys belong to $connect
    assert error(c.create_route, ApiId=api_id, RouteKey="send", AuthorizationType="AWS_IAM",
                 Target=f"integrations/{integ}") == (
        "BadRequestException", "Currently, authorization is restricted to the $connect route only")
    assert error(c.create_route, ApiId=api_id, RouteKey="send", ApiKeyRequired=True)[0] == \
        "BadRequestException"
    route = c.create_route(ApiId=api_id, RouteKey="send", Target=f"integrations/{integ}")
    assert error(c.create_route, ApiId=api_id, RouteKey="send")[0] == "ConflictException"
    # only the $default route response, never on $disconnect
    assert error(c.create_route_response, ApiId=api_id, RouteId=route["RouteId"],
                 RouteResponseKey="ok")[0] == "BadRequestException"
    disc = c.create_route(ApiId=api_id, RouteKey="$disconnect", Target=f"integrations/{integ}")
    assert error(c.create_route_response, ApiId=api_id, RouteId=disc["RouteId"],
                 RouteResponseKey="$default")[0] == "BadRequestException"
    # integration types, payload format, timeout and templates as AWS takes them
    for kw in ({"IntegrationType": "HTTP_PROXY", "IntegrationUri": "not a url"},
               {"IntegrationType": "AWS_PROXY", "IntegrationUri": fn_arn("x"), "PayloadFormatVersion": "2.0"},
               {"IntegrationType": "MOCK", "TimeoutInMillis": 30000},
               {"IntegrationType": "MOCK", "RequestTemplates": {"$default": "not json"}},
               {"IntegrationType": "HTTP", "IntegrationUri": "http://127.0.0.1:9/",
                "RequestTemplates": {"$default": "$input.json("}}):
        assert error(c.create_integration, ApiId=api_id, **kw)[0] == "BadRequestException", kw
    mock = c.create_integration(ApiId=api_id, IntegrationType="MOCK")["IntegrationId"]
    assert error(c.create_integration_response, ApiId=api_id, IntegrationId=mock,
                 IntegrationResponseKey="200")[0] == "BadRequestException"
    ir = c.create_integration_response(ApiId=api_id, IntegrationId=mock,
                                       IntegrationResponseKey="$default",
                                       ResponseTemplates={"$default": "x"})
    got = c.get_integration_response(ApiId=api_id, IntegrationId=mock,
                                     IntegrationResponseId=ir["IntegrationResponseId"])
    assert got["ResponseTemplates"] == {"$default": "x"}
    up = c.update_integration_response(ApiId=api_id, IntegrationId=mock,
                                       IntegrationResponseId=ir["IntegrationResponseId"],
                                       ResponseTemplates={"$default": "y"})
    assert up["ResponseTemplates"] == {"$default": "y"}
    assert [i["IntegrationResponseKey"] for i in
            c.get_integration_responses(ApiId=api_id, IntegrationId=mock)["Items"]] == ["$default"]
    c.delete_integration_response(ApiId=api_id, IntegrationId=mock,
                                  IntegrationResponseId=ir["IntegrationResponseId"])
    assert error(c.get_integration_response, ApiId=api_id, IntegrationId=mock,
                 IntegrationResponseId=ir["IntegrationResponseId"])[0] == "NotFoundException"
    # REQUEST authorizers only, with WebSocket identity sources
    assert error(c.create_authorizer, ApiId=api_id, Name="j", AuthorizerType="JWT",
                 IdentitySource=["$request.header.Authorization"],
                 JwtConfiguration={"Issuer": "https://x", "Audience": ["a"]})[0] == "BadRequestException"
    assert error(c.create_authorizer, ApiId=api_id, Name="r", AuthorizerType="REQUEST",
                 AuthorizerUri=fn_arn("authorize"),
                 IdentitySource=["$request.header.Auth"])[0] == "BadRequestException"
    # WebSocket APIs have no $default stage, no export
    assert error(c.create_stage, ApiId=api_id, StageName="$default")[0] == "BadRequestException"
    assert error(c.export_api, ApiId=api_id, OutputType="JSON", Specification="OAS30")[0] == \
        "BadRequestException"
    # an automatic deployment waits for every route to have a target
    c.create_route(ApiId=api_id, RouteKey="later")
    stage = c.create_stage(ApiId=api_id, StageName="auto", AutoDeploy=True)
    assert "DeploymentId" not in stage
    assert error(c.create_deployment, ApiId=api_id)[0] == "BadRequestException"
    # and an HTTP API still has no route responses
    http = c.create_api(Name="h", ProtocolType="HTTP")["ApiId"]
    hr = c.create_route(ApiId=http, RouteKey="GET /x")
    code, msg = error(c.create_route_response, ApiId=http, RouteId=hr["RouteId"],
                      RouteResponseKey="$default")
    assert code == "BadRequestException" and "WebSocket" in msg


def mock_route(c, api_id: str, key: str, *, status: int = 200, body: str | None = None, **route):
    """A MOCK integration answering `status`, two-way with `body`; its route -> route id."""
    integ = c.create_integration(ApiId=api_id, IntegrationType="MOCK",
                                 RequestTemplates={"$default": json.dumps({"statusCode": status})})
    if body is not None:
        c.create_integration_response(ApiId=api_id, IntegrationId=integ["IntegrationId"],
                                      IntegrationResponseKey="$default",
                                      ResponseTemplates={"$default": body})
        route["RouteResponseSelectionExpression"] = "$default"
    rid = c.create_route(ApiId=api_id, RouteKey=key, Target=f"integrations/{integ['IntegrationId']}",
                         **route)["RouteId"]
    if body is not None:
        c.create_route_response(ApiId=api_id, RouteId=rid, RouteResponseKey="$default")
    return rid


def test_connect_guards_and_stage_throttling(gateway, tmp_path):
    """API keys of a usage plan, AWS_IAM and a MOCK's refusal on $connect; the stage's route
    throttling on messages; an API mapping of a custom domain."""
    (tmp_path / "iam.csv").write_text("access_key_id,secret_access_key,principal_arn\n"
                                      "AKIDCALLER0000000001,caller-secret,arn:aws:iam::123456789012:user/caller\n")
    gw = gateway(gateway_config(tmp_path) + "iam_credentials: iam.csv\n", workers=1, env=ENV)
    c = v2(gw)
    keyed = c.create_api(Name="keyed", ProtocolType="WEBSOCKET",
                         RouteSelectionExpression="$request.body.action")["ApiId"]
    mock_route(c, keyed, "$connect", ApiKeyRequired=True)
    mock_route(c, keyed, "ping", body="pong")
    # request validation: the model the message's "kind" names, else the $default model
    c.create_model(ApiId=keyed, Name="Order", ContentType="application/json", Schema=json.dumps(
        {"type": "object", "required": ["qty"], "properties": {"qty": {"type": "integer"}}}))
    c.create_model(ApiId=keyed, Name="Any", ContentType="application/json",
                   Schema=json.dumps({"type": "object"}))
    mock_route(c, keyed, "order", body="ordered", ModelSelectionExpression="$request.body.kind",
               RequestModels={"strict": "Order", "$default": "Any"})
    # a MOCK's statusCode selects its integration response: /2\d\d/ before $default
    rid = mock_route(c, keyed, "both", body="fallback")
    both = c.get_route(ApiId=keyed, RouteId=rid)["Target"].split("/")[1]
    c.create_integration_response(ApiId=keyed, IntegrationId=both, IntegrationResponseKey="/2\\d\\d/",
                                  ResponseTemplates={"$default": "two hundred"})
    assert error(c.create_route, ApiId=keyed, RouteKey="bad", RequestModels={"$default": "Nope"},
                 ModelSelectionExpression="$default")[0] == "BadRequestException"
    c.create_stage(ApiId=keyed, StageName="live", AutoDeploy=True,
                   DefaultRouteSettings={"ThrottlingRateLimit": 0.01, "ThrottlingBurstLimit": 2},
                   RouteSettings={k: {"ThrottlingRateLimit": 100.0, "ThrottlingBurstLimit": 100}
                                  for k in ("order", "both")})
    rest = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))
    key = rest.create_api_key(name="partner", enabled=True, value="partner-key-0123456789abcdef")
    plan = rest.create_usage_plan(name="gold", apiStages=[{"apiId": keyed, "stage": "live"}])
    rest.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")

    iam = c.create_api(Name="iam", ProtocolType="WEBSOCKET",
                       RouteSelectionExpression="$request.body.action")["ApiId"]
    mock_route(c, iam, "$connect", AuthorizationType="AWS_IAM")
    mock_route(c, iam, "$default", body="hello")
    c.create_stage(ApiId=iam, StageName="v1", AutoDeploy=True)

    closed = c.create_api(Name="closed", ProtocolType="WEBSOCKET",
                          RouteSelectionExpression="$request.body.action")["ApiId"]
    mock_route(c, closed, "$connect", status=403)
    c.create_stage(ApiId=closed, StageName="shut", AutoDeploy=True)
    # a function the gateway does not run: served, and its route answers AWS's error frame
    ghost = c.create_api(Name="ghost", ProtocolType="WEBSOCKET",
                         RouteSelectionExpression="$request.body.action")["ApiId"]
    integ = c.create_integration(ApiId=ghost, IntegrationType="AWS_PROXY",
                                 IntegrationUri=fn_arn("nosuch"))["IntegrationId"]
    rid = c.create_route(ApiId=ghost, RouteKey="$default", Target=f"integrations/{integ}",
                         RouteResponseSelectionExpression="$default")["RouteId"]
    c.create_route_response(ApiId=ghost, RouteId=rid, RouteResponseKey="$default")
    c.create_stage(ApiId=ghost, StageName="boo", AutoDeploy=True)
    c.create_domain_name(DomainName="chat.example.com")
    c.create_api_mapping(DomainName="chat.example.com", ApiId=iam, Stage="v1", ApiMappingKey="ws")

    async def status(uri: str, **kw) -> int:
        try:
            ws = await connect(uri, open_timeout=15, **kw)
        except InvalidStatus as e:
            return e.response.status_code
        await ws.close()
        return 101

    def signed_headers(url: str) -> dict:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        req = AWSRequest(method="GET", url=url)
        SigV4Auth(Credentials("AKIDCALLER0000000001", "caller-secret"), "execute-api",
                  REGION).add_auth(req)
        return {k: v for k, v in req.headers.items() if k.lower() != "host"}

    mapped = f"ws://chat.example.com:{gw.port}/ws"

    async def status_mapped(query: str = "", **kw) -> int:
        return await status(mapped + query, sock=socket.create_connection(("127.0.0.1", gw.port)),
                            **kw)

    async def scenario():
        base = f"ws://127.0.0.1:{gw.port}"
        # the automatic deployments and the API mapping reach the worker. The mapping was the
        # last change: once it is served, so is everything before it (a build reads the whole
        # state). A refusal proves nothing here (an unknown API is refused too): wait for the
        # signed upgrade through the mapping to be accepted. Each attempt signs a request of its
        # own: the gateway refuses a signature it has seen (replay protection).
        for attempt in range(60):
            query = f"?attempt={attempt}"
            signed = signed_headers(f"http://chat.example.com:{gw.port}/ws{query}")
            if await status_mapped(query, additional_headers=signed) == 101:
                break
            await asyncio.sleep(0.25)
        assert await status(f"{base}/shut") == 403          # the MOCK's statusCode refuses
        assert await status(f"{base}/live") == 403          # no API key
        assert await status(f"{base}/live", additional_headers={"x-api-key": "nope"}) == 403
        async with connect(f"{base}/live", open_timeout=15,
                           additional_headers={"x-api-key": "partner-key-0123456789abcdef"}) as ws:
            answers = []
            for _ in range(4):
                await ws.send(json.dumps({"action": "ping"}))
                answers.append(await asyncio.wait_for(ws.recv(), 15))
            assert answers[:2] == ["pong", "pong"]
            assert json.loads(answers[3])["message"] == "Too Many Requests"
            await ws.send(json.dumps({"action": "both"}))
            assert await asyncio.wait_for(ws.recv(), 15) == "two hundred"
            async def order(msg) -> str:
                await ws.send(msg)
                return await asyncio.wait_for(ws.recv(), 15)
            assert await order(json.dumps({"action": "order", "kind": "strict", "qty": 2})) == "ordered"
            assert await order(json.dumps({"action": "order", "kind": "loose"})) == "ordered"
            for bad in (json.dumps({"action": "order", "kind": "strict", "qty": "two"}),
                        json.dumps({"action": "order", "kind": "strict"})):
                frame = json.loads(await order(bad))
                assert frame["message"] == "Invalid request body" and frame["connectionId"]
        assert await status(f"{base}/v1") == 403            # AWS_IAM: unsigned
        async with connect(f"{base}/v1", open_timeout=15,
                           additional_headers=signed_headers(f"http://127.0.0.1:{gw.port}/v1")) as ws:
            await ws.send("anything")
            assert await asyncio.wait_for(ws.recv(), 15) == "hello"
        async with connect(f"{base}/boo", open_timeout=15) as ws:
            await ws.send("hello?")
            assert json.loads(await asyncio.wait_for(ws.recv(), 15))["message"] == "Internal server error"
            await ws.send("still there?")       # the connection stays
            assert json.loads(await asyncio.wait_for(ws.recv(), 15))["message"] == "Internal server error"
        # the custom domain's API mapping serves the (IAM) API under /ws
        assert await status_mapped() == 403                 # unsigned
        async with connect(mapped, open_timeout=15, sock=socket.create_connection(("127.0.0.1", gw.port)),
                           additional_headers=signed_headers(f"http://chat.example.com:{gw.port}/ws")) as ws:
            await ws.send("anything")
            assert await asyncio.wait_for(ws.recv(), 15) == "hello"
    run(scenario())


def test_authorizer_result_cache_and_reset(gateway, tmp_path):
    """A REQUEST authorizer with a TTL answers from its cache per identity source;
    ResetAuthorizersCache starts the stage's cache afresh."""
    gw = gateway(gateway_config(tmp_path), workers=1, env=ENV)
    c = v2(gw)
    api_id = c.create_api(Name="cached", ProtocolType="WEBSOCKET",
                          RouteSelectionExpression="$request.body.action")["ApiId"]
    auth = c.create_authorizer(ApiId=api_id, Name="token", AuthorizerType="REQUEST",
                               AuthorizerUri=fn_arn("authorize"), AuthorizerResultTtlInSeconds=300,
                               IdentitySource=["route.request.querystring.token"])
    assert auth["AuthorizerResultTtlInSeconds"] == 300
    mock_route(c, api_id, "$connect", AuthorizationType="CUSTOM", AuthorizerId=auth["AuthorizerId"])
    mock_route(c, api_id, "$default", body="hi")
    c.create_stage(ApiId=api_id, StageName="s", AutoDeploy=True)
    calls = tmp_path / "events.jsonl.auth"

    def called() -> int:
        return len(calls.read_text().splitlines()) if calls.exists() else 0

    async def hello():
        async with connect(f"ws://127.0.0.1:{gw.port}/s?token=letmein", open_timeout=15) as ws:
            await ws.send("x")
            assert await asyncio.wait_for(ws.recv(), 15) == "hi"

    async def scenario():
        for _ in range(60):
            try:
                await hello()
                break
            except InvalidStatus:
                await asyncio.sleep(0.25)
        first = called()
        assert first == 1
        event = json.loads(calls.read_text().splitlines()[0])
        assert event["type"] == "REQUEST" and event["methodArn"].endswith(f":{api_id}/s/$connect")
        await hello()
        await hello()
        assert called() == 1            # from the cache
        c.reset_authorizers_cache(ApiId=api_id, StageName="s")
        for _ in range(60):             # after the reload the authorizer is asked again
            await hello()
            if called() > 1:
                break
            await asyncio.sleep(0.25)
        assert called() == 2
    run(scenario())


def test_aws_cli_makes_a_websocket_api(gateway, tmp_path):
    """The issue's own command: `aws apigatewayv2 create-api --protocol-type WEBSOCKET
    --route-selection-expression '$request.body.action'`, then a route, a stage and a
    deployment with the CLI; a client talks to it."""
    gw = gateway(gateway_config(tmp_path), workers=1, env=ENV)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": os.devnull,
           "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def aws(*args: str) -> dict:
        out = subprocess.run([str(Path(ROOT) / ".venv" / "bin" / "aws"), "apigatewayv2", *args,
                              "--endpoint-url", f"http://127.0.0.1:{gw.admin_port}",
                              "--output", "json"], env=env, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}
    api = aws("create-api", "--name", "cli-chat", "--protocol-type", "WEBSOCKET",
              "--route-selection-expression", "$request.body.action")
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"
    api_id = api["ApiId"]
    integ = aws("create-integration", "--api-id", api_id, "--integration-type", "AWS_PROXY",
                "--integration-uri", fn_arn("whoami"))
    route = aws("create-route", "--api-id", api_id, "--route-key", "$default",
                "--target", f"integrations/{integ['IntegrationId']}")
    aws("create-route-response", "--api-id", api_id, "--route-id", route["RouteId"],
        "--route-response-key", "$default")
    aws("create-stage", "--api-id", api_id, "--stage-name", "dev")
    aws("create-deployment", "--api-id", api_id, "--stage-name", "dev")

    async def scenario():
        async with await served(f"ws://127.0.0.1:{gw.port}/dev") as ws:
            await ws.send("hello")
            me = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert me["apiId"] == api_id and me["routeKey"] == "$default" and me["stage"] == "dev"
    run(scenario())


def test_stage_access_log_settings_log_each_event(gateway, tmp_path):
    """A WebSocket stage's accessLogSettings: a line per event (CONNECT, each MESSAGE,
    DISCONNECT) in the stage's format, with AWS's WebSocket variables."""
    gw = gateway(gateway_config(tmp_path), workers=1, env=ENV)
    c = v2(gw)
    api_id = c.create_api(Name="logged", ProtocolType="WEBSOCKET",
                          RouteSelectionExpression="$request.body.action")["ApiId"]
    mock_route(c, api_id, "$connect")
    mock_route(c, api_id, "ping", body="pong")
    path = tmp_path / "ws-access.log"
    fmt = ('{"eventType":"$context.eventType","routeKey":"$context.routeKey",'
           '"connectionId":"$context.connectionId","status":"$context.status",'
           '"requestId":"$context.requestId","ip":"$context.identity.sourceIp",'
           '"stage":"$context.stage","error":"$context.error.message"}')
    c.create_stage(ApiId=api_id, StageName="logs", AutoDeploy=True,
                   AccessLogSettings={"DestinationArn": str(path), "Format": fmt})

    def lines():
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    async def scenario():
        async with await served(f"ws://127.0.0.1:{gw.port}/logs") as ws:
            await ws.send(json.dumps({"action": "ping"}))
            assert await asyncio.wait_for(ws.recv(), 15) == "pong"
            await ws.send(json.dumps({"action": "nowhere"}))      # no route, no $default
            assert json.loads(await asyncio.wait_for(ws.recv(), 15))["message"] == "Forbidden"
    run(scenario())
    wait_until(lambda: [x["eventType"] for x in lines()] == ["CONNECT", "MESSAGE", "MESSAGE", "DISCONNECT"],
               timeout=15)
    connect_line, ping, nowhere, disconnect = lines()
    assert {x["connectionId"] for x in lines()} == {connect_line["connectionId"]} != {"-"}
    assert (connect_line["routeKey"], connect_line["status"]) == ("$connect", "200")
    assert (ping["routeKey"], ping["status"], ping["error"]) == ("ping", "200", "-")
    assert (nowhere["routeKey"], nowhere["status"], nowhere["error"]) == ("-", "403", "Forbidden")
    assert (disconnect["routeKey"], disconnect["status"]) == ("$disconnect", "200")
    assert all(x["ip"] == "127.0.0.1" and x["stage"] == "logs" and x["requestId"] != "-" for x in lines())
