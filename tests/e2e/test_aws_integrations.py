"""AWS service integrations end to end: a real `fastgate serve` in front of moto's standalone
server (tests/moto_server.py, a real process on a loopback port), with the APIs imported
from OpenAPI files like the ones AWS exports and built with boto3 through the control API.

Every scenario checks the service's side too: the queue holds the message, the table the
item, the stream the record, the bucket the bytes, the state machine the execution."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import textwrap
import time

import boto3
import httpx
import pytest
import yaml
from botocore.config import Config

from conftest import PYTHON, ROOT, Gateway, Proc, free_port, wait_port, wait_until

ACCOUNT = "123456789012"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/apigw-integrations"
ADMIN_KEY, ADMIN_SECRET = "AKIDAWSINT", "aws-int-secret"

HANDLER = '''\
def handler(event, context):
    if event.get("b") == 0:
        raise ValueError("Bad input: division by zero")
    return {"q": event["a"] / event["b"]}
'''


class Moto:
    """moto's server, and boto3 clients of it (the test's view of "AWS")."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.p = Proc([PYTHON, str(ROOT / "tests" / "moto_server.py"), str(self.port)])
        wait_port(self.port, self.p.proc, timeout=60)

    def client(self, name: str):
        return boto3.client(name, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=Config(inject_host_prefix=False, retries={"max_attempts": 1}))

    def stop(self):
        self.p.stop()


class World:
    """The AWS resources the APIs front, made once per module in moto."""

    def __init__(self, moto: Moto):
        self.moto = moto
        self.sqs = moto.client("sqs")
        self.orders = self.sqs.create_queue(QueueName="orders")["QueueUrl"]
        self.events_queue = self.sqs.create_queue(QueueName="events-seen")["QueueUrl"]
        sfn = self.sfn = moto.client("stepfunctions")
        definition = {"StartAt": "Greet", "States": {"Greet": {
            "Type": "Pass", "Parameters": {"greeting.$": "$.name", "source": "sfn"}, "End": True}}}
        self.machine = sfn.create_state_machine(
            name="greeter", definition=json.dumps(definition), roleArn=ROLE,
            type="EXPRESS")["stateMachineArn"]
        events = moto.client("events")
        events.put_rule(Name="shop-orders", EventPattern=json.dumps({"source": ["shop"]}))
        arn = self.sqs.get_queue_attributes(QueueUrl=self.events_queue,
                                            AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_targets(Rule="shop-orders", Targets=[{"Id": "q", "Arn": arn}])
        self.ddb = moto.client("dynamodb")
        self.ddb.create_table(TableName="items", KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                              AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                              BillingMode="PAY_PER_REQUEST")
        sns = moto.client("sns")
        self.topic = sns.create_topic(Name="notices")["TopicArn"]
        self.notices = self.sqs.create_queue(QueueName="notices")["QueueUrl"]
        notices_arn = self.sqs.get_queue_attributes(QueueUrl=self.notices,
                                                    AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=self.topic, Protocol="sqs", Endpoint=notices_arn,
                      Attributes={"RawMessageDelivery": "true"})
        self.s3 = moto.client("s3")
        self.s3.create_bucket(Bucket="files")
        self.kinesis = moto.client("kinesis")
        self.kinesis.create_stream(StreamName="clicks", ShardCount=1)

    def messages(self, queue_url: str, want: int = 1) -> list[str]:
        got: list[str] = []

        def poll():
            out = self.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=0)
            for m in out.get("Messages", []):
                got.append(m["Body"])
                self.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            return len(got) >= want
        wait_until(poll, timeout=10, step=0.1)
        return got

    def records(self) -> list[bytes]:
        shard = self.kinesis.describe_stream(StreamName="clicks")["StreamDescription"]["Shards"][0]
        it = self.kinesis.get_shard_iterator(StreamName="clicks", ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        return [r["Data"] for r in self.kinesis.get_records(ShardIterator=it)["Records"]]


@pytest.fixture(scope="module")
def moto():
    m = Moto()
    yield m
    m.stop()


@pytest.fixture(scope="module")
def world(moto):
    return World(moto)


def aws_env(tmp_path, **extra) -> dict:
    """The gateway's environment: its own credentials (the "testing" keys moto takes), no
    shared files of the host, no instance metadata (never a request off the machine)."""
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
           "FASTGATE_ADMIN_ACCESS_KEY_ID": ADMIN_KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": ADMIN_SECRET}
    env.update(extra)
    return env


def start_gateway(tmp_path, config: str, env: dict) -> Gateway:
    return Gateway(tmp_path, config, env=env)


def one_route_gateway(tmp_path, name: str, path: str, integ: dict, aws_cfg: dict, env: dict,
                      stage: dict | None = None, **config) -> Gateway:
    """A gateway serving one REST API (stage prod) whose only method is POST `path`."""
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({
        "swagger": "2.0", "info": {"title": name, "version": "1"},
        "paths": {path: {"post": {"responses": {"200": {"description": "ok"}},
                                  "x-amazon-apigateway-integration": integ}}}}))
    return start_gateway(tmp_path, yaml.safe_dump({
        "access_log": {"path": "off"}, "aws": aws_cfg, **config,
        "apis": [{"openapi": f"{name}.yaml", "stages": {"prod": stage or {}}}]}), env)


# --- the REST API: one route per scenario, as AWS exports it -----------------------------

def aws(uri: str, template: str | None, responses: dict, method: str = "POST", **more) -> dict:
    integ = {"type": "aws", "httpMethod": method, "uri": uri, "credentials": ROLE,
             "passthroughBehavior": "when_no_templates", "responses": responses, **more}
    if template is not None:
        integ["requestTemplates"] = {"application/json": template}
    return integ


def ok(template: str | None = None, **more) -> dict:
    out = {"statusCode": "200", **more}
    if template is not None:
        out["responseTemplates"] = {"application/json": template}
    return out


# the query-protocol services read a form: the request body's type, set as a constant
FORM_BODY = {"integration.request.header.Content-Type": "'application/x-www-form-urlencoded'"}

ROUTES = {
    # SQS, path style, as in AWS's tutorial: the form the query API reads, from the template
    ("/orders", "post"): aws(
        f"arn:aws:apigateway:{REGION}:sqs:path/{ACCOUNT}/orders",
        "Action=SendMessage&MessageBody=$util.urlEncode($input.body)",
        {"default": ok('{"queued": true}'),
         "4\\d{2}": {"statusCode": "400", "responseTemplates": {"application/json": '{"refused": true}'}}},
        requestParameters=FORM_BODY),
    # SQS, action style: Action in the query string, the rest mapped from the method request
    ("/orders/quick", "post"): aws(
        f"arn:aws:apigateway:{REGION}:sqs:action/SendMessage", None,
        {"default": ok('{"queued": "quick"}')},
        requestParameters={"integration.request.querystring.QueueUrl": "stageVariables.queueUrl",
                           "integration.request.querystring.MessageBody": "method.request.querystring.msg"}),
    # SNS, the other query-protocol service: Action in the URI, the topic and message in the
    # form the template writes; the topic's queue subscription receives it
    ("/notify", "post"): aws(
        f"arn:aws:apigateway:{REGION}:sns:action/Publish",
        "TopicArn=$util.urlEncode($stageVariables.topic)&Message=$util.urlEncode($input.body)",
        {"default": ok('{"published": true}')},
        requestParameters=FORM_BODY),
    # a queue that does not exist: SQS's 400 selects the 4xx integration response
    ("/orders/lost", "post"): aws(
        f"arn:aws:apigateway:{REGION}:sqs:path/{ACCOUNT}/no-such-queue",
        "Action=SendMessage&MessageBody=x",
        {"default": ok('{"queued": true}'),
         "4\\d{2}": {"statusCode": "404", "responseTemplates": {"application/json": '{"queue": "missing"}'}}},
        requestParameters=FORM_BODY),
    # Step Functions: an express workflow's output, mapped (sync-states: StartSyncExecution's host)
    ("/greet", "post"): aws(
        f"arn:aws:apigateway:{REGION}:sync-states:action/StartSyncExecution",
        '{"stateMachineArn": "$stageVariables.machine", "input": "$util.escapeJavaScript($input.json(\'$\'))"}',
        {"default": ok('#set($out = $util.parseJson($input.path(\'$.output\')))'
                       '{"status": "$input.path(\'$.status\')", "greeting": "$out.greeting"}')}),
    ("/greet/async", "post"): aws(
        f"arn:aws:apigateway:{REGION}:states:action/StartExecution",
        '{"stateMachineArn": "$stageVariables.machine", "name": "$context.requestId", '
        '"input": "$util.escapeJavaScript($input.json(\'$\'))"}',
        {"default": ok('{"execution": "$input.path(\'$.executionArn\')"}')}),
    # EventBridge: the target header is the API's to map, as on AWS
    ("/events", "post"): aws(
        f"arn:aws:apigateway:{REGION}:events:action/PutEvents",
        '{"Entries": [{"Source": "shop", "DetailType": "order", "EventBusName": "default", '
        '"Detail": "$util.escapeJavaScript($input.json(\'$\'))"}]}',
        {"default": ok('{"failed": $input.path(\'$.FailedEntryCount\')}')},
        requestParameters={"integration.request.header.X-Amz-Target": "'AWSEvents.PutEvents'",
                           "integration.request.header.Content-Type": "'application/x-amz-json-1.1'"}),
    # DynamoDB through mapping templates, both ways
    ("/items/{id}", "put"): aws(
        f"arn:aws:apigateway:{REGION}:dynamodb:action/PutItem",
        '{"TableName": "items", "Item": {"id": {"S": "$input.params(\'id\')"}, '
        '"name": {"S": "$input.path(\'$.name\')"}}}',
        {"default": ok('{"stored": "$input.params(\'id\')"}')}),
    ("/items/{id}", "get"): aws(
        f"arn:aws:apigateway:{REGION}:dynamodb:action/GetItem",
        '{"TableName": "items", "Key": {"id": {"S": "$input.params(\'id\')"}}}',
        {"default": ok('#if($input.path(\'$.Item\') != "")'
                       '{"id": "$input.path(\'$.Item.id.S\')", "name": "$input.path(\'$.Item.name.S\')"}'
                       '#else{"missing": true}#end')}),
    # S3 path style: the bytes as they are, both ways
    ("/files/{key}", "put"): aws(
        f"arn:aws:apigateway:{REGION}:s3:path/files/{{key}}", None, {"default": ok()}, method="PUT",
        requestParameters={"integration.request.path.key": "method.request.path.key",
                           "integration.request.header.Content-Type": "method.request.header.Content-Type"}),
    ("/files/{key}", "get"): aws(
        f"arn:aws:apigateway:{REGION}:s3:path/files/{{key}}", None,
        {"default": ok(responseParameters={
            "method.response.header.Content-Type": "integration.response.header.Content-Type"})},
        method="GET", requestParameters={"integration.request.path.key": "method.request.path.key"}),
    # Kinesis
    ("/clicks", "post"): aws(
        f"arn:aws:apigateway:{REGION}:kinesis:action/PutRecord",
        '{"StreamName": "clicks", "Data": "$util.base64Encode($input.body)", '
        '"PartitionKey": "$input.path(\'$.user\')"}',
        {"default": ok('{"shard": "$input.path(\'$.ShardId\')"}')}),
    # Lambda non-proxy: a function this gateway runs, its errors selected by errorMessage
    ("/calc", "post"): aws(
        f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:calc/invocations",
        '{"a": $input.path(\'$.a\'), "b": $input.path(\'$.b\')}',
        {"default": ok('{"quotient": $input.path(\'$.q\')}'),
         "Bad input.*": {"statusCode": "400", "responseTemplates": {
             "application/json": '{"error": "$input.path(\'$.errorMessage\')"}'}}}),
}
PARAMS = {"/orders/quick": [("querystring", "msg")], "/items/{id}": [("path", "id")],
          "/files/{key}": [("path", "key"), ("header", "Content-Type")]}


def rest_document() -> dict:
    """A Swagger 2.0 export, as API Gateway writes one (x-amazon-apigateway-* extensions)."""
    paths: dict = {}
    for (path, method), integ in ROUTES.items():
        op = {"responses": {"200": {"description": "ok"}}, "x-amazon-apigateway-integration": integ}
        params = [{"name": n, "in": {"querystring": "query"}.get(k, k), "required": k == "path",
                   "type": "string"} for k, n in PARAMS.get(path, ())]
        if params:
            op["parameters"] = params
        paths.setdefault(path, {})[method] = op
    return {"swagger": "2.0", "info": {"title": "aws-integrations", "version": "1"},
            "x-amazon-apigateway-binary-media-types": ["application/octet-stream", "image/png"],
            "paths": paths}


def stage_variables(world: World) -> dict:
    return {"machine": world.machine, "queueUrl": world.orders, "topic": world.topic}


def build_with_boto3(apigw, world: World) -> str:
    """The same API made call by call with boto3, as a user scripting API Gateway would."""
    api_id = apigw.create_rest_api(name="aws-integrations",
                                   binaryMediaTypes=["application/octet-stream", "image/png"])["id"]
    resources = {"/": next(r["id"] for r in apigw.get_resources(restApiId=api_id)["items"]
                           if r["path"] == "/")}

    def resource(path: str) -> str:
        if path not in resources:
            parent, _, part = path.rpartition("/")
            resources[path] = apigw.create_resource(restApiId=api_id, parentId=resource(parent or "/"),
                                                    pathPart=part)["id"]
        return resources[path]
    for (path, method), integ in ROUTES.items():
        rid, verb = resource(path), method.upper()
        apigw.put_method(restApiId=api_id, resourceId=rid, httpMethod=verb, authorizationType="NONE",
                         requestParameters={f"method.request.{k}.{n}": k == "path"
                                            for k, n in PARAMS.get(path, ())})
        kw = {k: integ[k] for k in ("requestParameters", "requestTemplates") if k in integ}
        apigw.put_integration(restApiId=api_id, resourceId=rid, httpMethod=verb, type="AWS",
                              integrationHttpMethod=integ["httpMethod"], uri=integ["uri"],
                              credentials=integ["credentials"],
                              passthroughBehavior=integ["passthroughBehavior"].upper(), **kw)
        for pattern, resp in integ["responses"].items():
            apigw.put_method_response(restApiId=api_id, resourceId=rid, httpMethod=verb,
                                      statusCode=resp["statusCode"])
            extra = {k: resp[k] for k in ("responseTemplates", "responseParameters") if k in resp}
            if pattern != "default":
                extra["selectionPattern"] = pattern
            apigw.put_integration_response(restApiId=api_id, resourceId=rid, httpMethod=verb,
                                           statusCode=resp["statusCode"], **extra)
    apigw.create_deployment(restApiId=api_id, stageName="prod", variables=stage_variables(world))
    return api_id


def gateway_config(world: World, apis: str = "") -> str:
    return textwrap.dedent(f"""\
        access_log: {{path: 'off'}}
        aws:
          region: {REGION}
          endpoint_url: {world.moto.url}
        function_path: [fn]
        functions:
          calc: {{handler: "calc:handler"}}
        """) + apis


def check_rest_api(base: str, world: World) -> None:
    """Every scenario of ROUTES through the gateway, and the service's side of it."""
    c = httpx.Client(base_url=base, timeout=30)
    # SQS
    r = c.post("/orders", json={"id": 7, "note": "a&b=c"})
    assert (r.status_code, r.json()) == (200, {"queued": True}), r.text
    assert [json.loads(b) for b in world.messages(world.orders)] == [{"id": 7, "note": "a&b=c"}]
    r = c.post("/orders/quick", params={"msg": "hello queue"})
    assert (r.status_code, r.json()) == (200, {"queued": "quick"}), r.text
    assert world.messages(world.orders) == ["hello queue"]
    r = c.post("/orders/lost", json={})
    assert (r.status_code, r.json()) == (404, {"queue": "missing"}), r.text
    # SNS: the topic's queue holds the message
    r = c.post("/notify", json={"notice": "a&b=c d"})
    assert (r.status_code, r.json()) == (200, {"published": True}), r.text
    assert [json.loads(b) for b in world.messages(world.notices)] == [{"notice": "a&b=c d"}]
    # Step Functions
    r = c.post("/greet", json={"name": "Ada"})
    assert (r.status_code, r.json()) == (200, {"status": "SUCCEEDED", "greeting": "Ada"}), r.text
    r = c.post("/greet/async", json={"name": "Grace"})
    assert r.status_code == 200, r.text
    execution = r.json()["execution"]
    assert execution.startswith(f"arn:aws:states:{REGION}:{ACCOUNT}:execution:greeter:")
    described = wait_until(lambda: (d := world.sfn.describe_execution(executionArn=execution))
                           ["status"] == "SUCCEEDED" and d)
    assert json.loads(described["output"]) == {"greeting": "Grace", "source": "sfn"}
    # EventBridge: the event reaches the rule's queue
    r = c.post("/events", json={"order": 42})
    assert (r.status_code, r.json()) == (200, {"failed": 0}), r.text
    event = json.loads(world.messages(world.events_queue)[0])
    assert (event["source"], event["detail-type"], event["detail"]) == ("shop", "order", {"order": 42})
    # DynamoDB
    r = c.put("/items/k1", json={"name": "kettle"})
    assert (r.status_code, r.json()) == (200, {"stored": "k1"}), r.text
    assert world.ddb.get_item(TableName="items", Key={"id": {"S": "k1"}})["Item"]["name"] == {"S": "kettle"}
    r = c.get("/items/k1")
    assert (r.status_code, r.json()) == (200, {"id": "k1", "name": "kettle"}), r.text
    # S3: every byte value, both ways
    blob = bytes(range(256)) * 64 + b"\r\n\x00end"
    r = c.put("/files/blob.bin", content=blob, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    assert world.s3.get_object(Bucket="files", Key="blob.bin")["Body"].read() == blob
    r = c.get("/files/blob.bin", headers={"Accept": "application/octet-stream"})
    assert r.status_code == 200 and r.content == blob
    assert r.headers["content-type"] == "application/octet-stream"
    # Kinesis
    r = c.post("/clicks", json={"user": "u1", "page": "/home"})
    assert r.status_code == 200 and r.json()["shard"].startswith("shardId-"), r.text
    assert json.loads(world.records()[-1]) == {"user": "u1", "page": "/home"}
    # Lambda non-proxy
    r = c.post("/calc", json={"a": 6, "b": 3})
    assert (r.status_code, r.json()) == (200, {"quotient": 2.0}), r.text
    r = c.post("/calc", json={"a": 6, "b": 0})
    assert (r.status_code, r.json()) == (400, {"error": "Bad input: division by zero"}), r.text


def write_handler(tmp_path) -> None:
    (tmp_path / "fn").mkdir(exist_ok=True)
    (tmp_path / "fn" / "calc.py").write_text(HANDLER)


def test_rest_api_imported_from_openapi(tmp_path, world):
    write_handler(tmp_path)
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump(rest_document()))
    variables = json.dumps(stage_variables(world))
    g = start_gateway(tmp_path, gateway_config(world, textwrap.dedent(f"""\
        apis:
          - openapi: rest.yaml
            stages: {{prod: {{variables: {variables}}}}}
        """)), aws_env(tmp_path))
    try:
        check_rest_api(g.url + "/prod", world)
    finally:
        print(g.p.output())     # shown when the test fails: the gateway's log says why


def test_rest_api_created_with_boto3(tmp_path, world):
    write_handler(tmp_path)
    g = start_gateway(tmp_path, gateway_config(world), aws_env(tmp_path, FASTGATE_DATA_DIR=str(tmp_path / "data")))
    try:
        apigw = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                             region_name=REGION, aws_access_key_id=ADMIN_KEY,
                             aws_secret_access_key=ADMIN_SECRET, config=Config(retries={"max_attempts": 1}))
        build_with_boto3(apigw, world)
        wait_until(lambda: httpx.post(g.url + "/prod/calc", json={"a": 1, "b": 1}).status_code == 200,
                   timeout=20)
        check_rest_api(g.url + "/prod", world)
        # TestInvokeMethod runs the AWS integration too, in the admin process
        api_id = apigw.get_rest_apis()["items"][0]["id"]
        res = {r["path"]: r["id"] for r in apigw.get_resources(restApiId=api_id, limit=500)["items"]}
        out = apigw.test_invoke_method(restApiId=api_id, resourceId=res["/orders"], httpMethod="POST",
                                       body='{"id": 8}', headers={"Content-Type": "application/json"})
        assert (out["status"], json.loads(out["body"])) == (200, {"queued": True}), out
        assert [json.loads(b) for b in world.messages(world.orders)] == [{"id": 8}]
        out = apigw.test_invoke_method(restApiId=api_id, resourceId=res["/greet"], httpMethod="POST",
                                       body='{"name": "Lin"}', headers={"Content-Type": "application/json"},
                                       stageVariables=stage_variables(world))
        assert (out["status"], json.loads(out["body"])) == (200, {"status": "SUCCEEDED", "greeting": "Lin"}), out
    finally:
        print(g.p.output())     # shown when the test fails: the gateway's log says why


# --- an HTTP API's first-class integrations (integration subtypes) ------------------------

def subtype(name: str, params: dict) -> dict:
    return {"x-amazon-apigateway-integration": {
        "type": "aws_proxy", "integrationSubtype": name, "credentials": ROLE,
        "requestParameters": params, "payloadFormatVersion": "1.0", "connectionType": "INTERNET",
        "timeoutInMillis": 10000}}


def http_document(queue_url: str) -> dict:
    """An HTTP API export (OpenAPI 3, as `aws apigatewayv2 export-api` writes it)."""
    return {"openapi": "3.0.1", "info": {"title": "http-integrations", "version": "1"},
            "x-amazon-apigateway-importexport-version": "1.0", "paths": {
                "/send": {"post": subtype("SQS-SendMessage", {
                    "QueueUrl": queue_url, "MessageBody": "$request.body.message",
                    "MessageAttributes": '{"origin": {"DataType": "String", "StringValue": "api"}}'})},
                "/receive": {"post": subtype("SQS-ReceiveMessage", {
                    "QueueUrl": queue_url, "MaxNumberOfMessages": "1", "MessageAttributeNames": "All"})},
                "/delete": {"post": subtype("SQS-DeleteMessage", {
                    "QueueUrl": queue_url, "ReceiptHandle": "$request.body.handle"})},
                "/sync": {"post": subtype("StepFunctions-StartSyncExecution", {
                    "StateMachineArn": "$stageVariables.machine", "Input": "$request.body"})},
                "/start/{name}": {"post": subtype("StepFunctions-StartExecution", {
                    "StateMachineArn": "$stageVariables.machine", "Name": "run-${request.path.name}",
                    "Input": "$request.body"})},
                "/events": {"post": subtype("EventBridge-PutEvents", {
                    "Detail": "$request.body", "DetailType": "order", "Source": "shop"})},
                "/records/{user}": {"post": subtype("Kinesis-PutRecord", {
                    "StreamName": "clicks", "Data": "$request.body", "PartitionKey": "$request.path.user"})},
                "/enqueue": {"post": subtype("SQS-SendMessage", {
                    "QueueUrl": queue_url, "MessageBody": "$request.body"})},
                "/purge": {"post": subtype("SQS-PurgeQueue", {"QueueUrl": queue_url})},
                "/stop": {"post": subtype("StepFunctions-StopExecution", {
                    "ExecutionArn": "$request.body.execution", "Cause": "$request.header.x-cause",
                    "Error": "Cancelled"})},
            }}


def test_http_api_integration_subtypes(tmp_path, world):
    queue = world.sqs.create_queue(QueueName="http-orders")["QueueUrl"]
    doc = http_document(queue)
    # the service's answer goes through the integration's response parameter mapping
    doc["paths"]["/enqueue"]["post"]["x-amazon-apigateway-integration"]["responseParameters"] = {
        "200": {"overwrite:statuscode": "202", "append:header.x-message-id": "$response.body.MessageId"}}
    (tmp_path / "http.yaml").write_text(yaml.safe_dump(doc))
    g = start_gateway(tmp_path, gateway_config(world, textwrap.dedent(f"""\
        apis:
          - openapi: http.yaml
            stages: {{"$default": {{variables: {{machine: "{world.machine}"}}}}}}
        """)), aws_env(tmp_path))
    try:
        c = httpx.Client(base_url=g.url, timeout=30)
        # SQS: send, receive, delete
        r = c.post("/send", json={"message": "from the http api"})
        assert r.status_code == 200 and r.json()["MessageId"], r.text
        r = c.post("/receive")
        assert r.status_code == 200, r.text
        (message,) = r.json()["Messages"]
        assert message["Body"] == "from the http api"
        assert message["MessageAttributes"]["origin"]["StringValue"] == "api"
        r = c.post("/delete", json={"handle": message["ReceiptHandle"]})
        assert r.status_code == 200, r.text
        r = c.post("/receive")
        assert r.status_code == 200 and not r.json().get("Messages"), r.text
        # Step Functions: the output as the service answers it
        r = c.post("/sync", json={"name": "Hedy"})
        assert r.status_code == 200 and r.json()["status"] == "SUCCEEDED", r.text
        assert json.loads(r.json()["output"]) == {"greeting": "Hedy", "source": "sfn"}
        r = c.post("/start/42", json={"name": "Barbara"})
        assert r.status_code == 200, r.text
        assert r.json()["executionArn"].endswith(":execution:greeter:run-42")
        # EventBridge
        r = c.post("/events", json={"order": 43})
        assert r.status_code == 200 and r.json()["FailedEntryCount"] == 0, r.text
        event = json.loads(world.messages(world.events_queue)[0])
        assert (event["source"], event["detail-type"], event["detail"]) == ("shop", "order", {"order": 43})
        # Kinesis: the body is the record's data (base64 on the wire, as the SDKs send it)
        r = c.post("/records/u9", content=b'{"click": 1}', headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.json()["ShardId"].startswith("shardId-"), r.text
        assert world.records()[-1] == b'{"click": 1}'
        # a service's own error goes back as the service answered it
        r = c.post("/delete", json={"handle": "not-a-handle"})
        assert r.status_code == 400, r.text
        r = c.post("/enqueue", json={"mapped": True})
        assert r.status_code == 202 and r.headers["x-message-id"] == r.json()["MessageId"], r.text
        assert [json.loads(b) for b in world.messages(queue)] == [{"mapped": True}]
        # SQS-PurgeQueue empties the queue
        world.sqs.send_message(QueueUrl=queue, MessageBody="to be purged")
        r = c.post("/purge")
        assert r.status_code == 200, r.text
        assert world.sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=0).get("Messages") is None
        # StepFunctions-StopExecution stops a running standard workflow, with the cause mapped
        waiting = world.sfn.create_state_machine(
            name="waiter", roleArn=ROLE, definition=json.dumps(
                {"StartAt": "Wait", "States": {"Wait": {"Type": "Wait", "Seconds": 600, "End": True}}}))
        execution = world.sfn.start_execution(stateMachineArn=waiting["stateMachineArn"])["executionArn"]
        r = c.post("/stop", json={"execution": execution}, headers={"X-Cause": "customer cancelled"})
        assert r.status_code == 200, r.text
        described = world.sfn.describe_execution(executionArn=execution)
        assert described["status"] == "ABORTED", described
    finally:
        print(g.p.output())


def test_http_api_subtypes_created_with_apigatewayv2(tmp_path, world):
    """An HTTP API fronting SQS and Step Functions built with boto3's apigatewayv2 client, as
    the AWS tutorials build one: AWS's refusals at CreateIntegration / UpdateIntegration,
    then the $default stage deploys itself and the queue and the state machine answer."""
    from botocore.exceptions import ClientError
    queue = world.sqs.create_queue(QueueName="v2-orders")["QueueUrl"]
    g = start_gateway(tmp_path, gateway_config(world),
                      aws_env(tmp_path, FASTGATE_DATA_DIR=str(tmp_path / "data")))
    try:
        c = boto3.client("apigatewayv2", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                         region_name=REGION, aws_access_key_id=ADMIN_KEY,
                         aws_secret_access_key=ADMIN_SECRET, config=Config(retries={"max_attempts": 1}))
        api_id = c.create_api(Name="orders", ProtocolType="HTTP")["ApiId"]

        def refused(call, **kw) -> str:
            with pytest.raises(ClientError) as e:
                call(ApiId=api_id, **kw)
            err = e.value.response
            assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == \
                ("BadRequestException", 400)
            return err["Error"]["Message"]

        common = dict(IntegrationType="AWS_PROXY", PayloadFormatVersion="1.0", CredentialsArn=ROLE)
        create = dict(ApiId=api_id, **common)
        assert refused(c.create_integration, IntegrationSubtype="SQS-SendMessage",
                       RequestParameters={"QueueUrl": queue}, **common) == (
            "Operation: SQS-SendMessage requires enabling passthrough, or defining all of the "
            "following parameters: QueueUrl, MessageBody")
        assert refused(c.create_integration, IntegrationSubtype="SQS-SendMessage",
                       RequestParameters={"QueueUrl": queue, "MessageBody": "$request.body",
                                          "Bogus": "x"}, **common).startswith(
            "Parameter: Bogus is not a valid parameter for operation: SQS-SendMessage. "
            "Valid parameters are: QueueUrl, MessageBody, DelaySeconds")
        assert refused(c.create_integration, IntegrationSubtype="SQS-Send",
                       RequestParameters={"QueueUrl": queue}, **common).startswith(
            "Integration subtype SQS-Send is not supported")
        assert c.get_integrations(ApiId=api_id)["Items"] == []

        send = c.create_integration(IntegrationSubtype="SQS-SendMessage", RequestParameters={
            "QueueUrl": queue, "MessageBody": "$request.body.message"}, **create)
        assert (send["IntegrationSubtype"], send["RequestParameters"]["MessageBody"]) == \
            ("SQS-SendMessage", "$request.body.message")
        assert refused(c.update_integration, IntegrationId=send["IntegrationId"],
                       RequestParameters={"QueueUrl": queue}).startswith(
            "Operation: SQS-SendMessage requires enabling passthrough")
        got = c.get_integration(ApiId=api_id, IntegrationId=send["IntegrationId"])
        assert got["RequestParameters"]["MessageBody"] == "$request.body.message"   # unchanged
        sync = c.create_integration(IntegrationSubtype="StepFunctions-StartSyncExecution",
                                    RequestParameters={"StateMachineArn": "$stageVariables.machine",
                                                       "Input": "$request.body"}, **create)
        c.create_route(ApiId=api_id, RouteKey="POST /send", Target=f"integrations/{send['IntegrationId']}")
        c.create_route(ApiId=api_id, RouteKey="POST /sync", Target=f"integrations/{sync['IntegrationId']}")
        c.create_stage(ApiId=api_id, StageName="$default", AutoDeploy=True,
                       StageVariables={"machine": world.machine})

        host = {"Host": f"{api_id}.execute-api.localhost"}

        def post(path, body):
            return httpx.post(g.url + path, json=body, headers=host, timeout=30)
        wait_until(lambda: post("/sync", {"name": "Alan"}).status_code == 200, timeout=20)
        r = post("/sync", {"name": "Ada"})
        assert r.json()["status"] == "SUCCEEDED", r.text
        assert json.loads(r.json()["output"]) == {"greeting": "Ada", "source": "sfn"}
        r = post("/send", {"message": "through apigatewayv2"})
        assert r.status_code == 200 and r.json()["MessageId"], r.text
        assert world.messages(queue) == ["through apigatewayv2"]
    finally:
        print(g.p.output())


# --- failures: the cause in the logs, never in the response -------------------------------

def failing_gateway(tmp_path, sqs_endpoint: str, env: dict, timeout_ms: int = 20000) -> Gateway:
    """An API sending to SQS at `sqs_endpoint` with the gateway's own credentials (no role:
    nothing is asked of STS), its stage's execution log on at ERROR."""
    integ = aws(f"arn:aws:apigateway:{REGION}:sqs:path/{ACCOUNT}/orders",
                "Action=SendMessage&MessageBody=x", {"default": ok('{"queued": true}')},
                timeoutInMillis=timeout_ms)
    del integ["credentials"]
    return one_route_gateway(tmp_path, "failing", "/send", integ, {"endpoints": {"sqs": sqs_endpoint}},
                             env, stage={"logging_level": "ERROR"}, execution_log={"path": "exec.log"})


def assert_hidden_failure(g: Gateway, tmp_path, status: int, message: str, cause: str) -> None:
    r = httpx.post(g.url + "/prod/send", json={}, timeout=30)
    assert (r.status_code, r.json()) == (status, {"message": message}), r.text
    assert r.headers["x-amzn-ErrorType"] == "InternalServerErrorException"
    assert cause not in r.text
    log = g.p.output()
    assert "aws integration" in log and cause in log, log
    lines = [json.loads(line) for line in (tmp_path / "exec.log").read_text().splitlines()]
    assert any(cause in (line.get("errorMessage") or "") for line in lines), lines


def test_unreachable_endpoint_answers_500_with_the_cause_logged(tmp_path):
    closed = free_port()     # nothing listens there
    g = failing_gateway(tmp_path, f"http://127.0.0.1:{closed}", aws_env(tmp_path))
    assert_hidden_failure(g, tmp_path, 500, "Internal server error", f"connect to http://127.0.0.1:{closed}")


def test_missing_credentials_answer_500_with_the_cause_logged(tmp_path, moto):
    env = aws_env(tmp_path, AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="")
    g = failing_gateway(tmp_path, moto.url, env)
    assert_hidden_failure(g, tmp_path, 500, "Internal server error", "credentials")


def test_an_endpoint_that_never_answers_times_out_as_the_integration_says(tmp_path):
    with socket.socket() as silent:      # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        g = failing_gateway(tmp_path, f"http://127.0.0.1:{silent.getsockname()[1]}", aws_env(tmp_path),
                            timeout_ms=400)
        started = time.monotonic()
        r = httpx.post(g.url + "/prod/send", json={}, timeout=30)
        took = time.monotonic() - started
        g.stop()
    assert (r.status_code, r.json()) == (504, {"message": "Endpoint request timed out"}), r.text
    assert took < 10        # timeoutInMillis 400, not the gateway's defaults
    assert "no answer within 400 ms" in g.p.output()


def test_http_api_subtype_failures_answer_as_http_apis_do(tmp_path):
    """An HTTP API's subtype whose endpoint refuses the connection answers 500 "Internal
    Server Error", one that never answers 503 "Service Unavailable" at its timeoutInMillis,
    as HTTP APIs answer; the cause is in the gateway's log only."""
    closed = free_port()
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        doc = {"openapi": "3.0.1", "info": {"title": "failing-http", "version": "1"}, "paths": {
            "/refused": {"post": subtype("SQS-SendMessage", {
                "QueueUrl": f"http://127.0.0.1:{closed}/{ACCOUNT}/q", "MessageBody": "$request.body"})},
            "/silent": {"post": subtype("Kinesis-PutRecord", {
                "StreamName": "s", "Data": "$request.body", "PartitionKey": "k"})}}}
        doc["paths"]["/silent"]["post"]["x-amazon-apigateway-integration"]["timeoutInMillis"] = 400
        for op in doc["paths"].values():
            del op["post"]["x-amazon-apigateway-integration"]["credentials"]
        (tmp_path / "failing-http.yaml").write_text(yaml.safe_dump(doc))
        g = start_gateway(tmp_path, textwrap.dedent(f"""\
            access_log: {{path: 'off'}}
            aws:
              region: {REGION}
              endpoints: {{sqs: "http://127.0.0.1:{closed}", kinesis: "http://127.0.0.1:{silent.getsockname()[1]}"}}
            apis:
              - openapi: failing-http.yaml
            """), aws_env(tmp_path))
        try:
            r = httpx.post(g.url + "/refused", json={"a": 1}, timeout=30)
            assert (r.status_code, r.json()) == (500, {"message": "Internal Server Error"}), r.text
            assert str(closed) not in r.text
            started = time.monotonic()
            r = httpx.post(g.url + "/silent", json={"a": 1}, timeout=30)
            assert (r.status_code, r.json()) == (503, {"message": "Service Unavailable"}), r.text
            assert time.monotonic() - started < 10      # timeoutInMillis 400, not the default 30 s
        finally:
            g.stop()
    log = g.p.output()
    assert f"connect to http://127.0.0.1:{closed}" in log and "no answer within 400 ms" in log, log


# --- what reaches the service: API Gateway's request, signed, over kept-alive connections --

def test_service_requests_are_signed_as_api_gateway_sends_them_on_kept_alive_connections(
        tmp_path, recording_upstream):
    from fastgate.phases.auth.sigv4 import verify
    rec = recording_upstream()
    template = '{"TableName": "t", "Key": {"id": {"S": "$input.params(\'id\')"}}}'
    doc = {"swagger": "2.0", "info": {"title": "recorded", "version": "1"}, "paths": {
        "/items/{id}": {"get": {
            "parameters": [{"name": "id", "in": "path", "required": True, "type": "string"}],
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": aws(
                f"arn:aws:apigateway:{REGION}:dynamodb:action/GetItem", template,
                {"default": ok()})}},
        "/files/{key}": {"get": {
            "parameters": [{"name": "key", "in": "path", "required": True, "type": "string"}],
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": aws(
                f"arn:aws:apigateway:{REGION}:s3:path/bucket/{{key}}", None, {"default": ok()},
                method="GET", requestParameters={"integration.request.path.key": "method.request.path.key"})}}}}
    for op in doc["paths"].values():
        del op["get"]["x-amazon-apigateway-integration"]["credentials"]   # the gateway's own keys
    (tmp_path / "recorded.yaml").write_text(yaml.safe_dump(doc))
    g = start_gateway(tmp_path, textwrap.dedent(f"""\
        access_log: {{path: 'off'}}
        aws:
          endpoints: {{dynamodb: "{rec.url}", s3: "{rec.url}"}}
        apis:
          - openapi: recorded.yaml
            stages: {{prod: {{}}}}
        """), aws_env(tmp_path))
    try:
        c = httpx.Client(base_url=g.url + "/prod", timeout=30)
        for i in range(3):
            assert c.get(f"/items/k{i}").status_code == 200
        assert c.get("/files/plain.txt").status_code == 200
        assert c.get("/files/a%20b.txt").status_code == 200
    finally:
        g.stop()
    requests = rec.events("request")
    assert len(requests) == 5 and not rec.events("error")
    assert {r["conn"] for r in requests} == {requests[0]["conn"]}      # one connection, kept
    port = rec.url.rsplit(":", 1)[1]
    for r, service, body in [(requests[0], "dynamodb", b'{"TableName": "t", "Key": {"id": {"S": "k0"}}}'),
                             (requests[3], "s3", b"")]:
        headers = [(k, v) for k, v in r["headers"]]
        h = {k.lower(): v for k, v in headers}
        assert h["host"] == f"127.0.0.1:{port}"
        assert h["accept"] == "application/json"
        assert h["user-agent"].startswith("AmazonAPIGateway_")
        path, _, query = r["target"].partition("?")
        # the signature checks out under fastgate's own SigV4 verifier (the server side's
        # rules; S3's canonical path is not encoded twice, so its check takes a plain key)
        principal = verify(r["method"], path, query, headers, body, {"testing": "testing"},
                           service=service, region=REGION)
        assert (principal.access_key_id, principal.service) == ("testing", service)
    first = {k.lower(): v for k, v in requests[0]["headers"]}
    assert requests[0]["target"] == "/?Action=GetItem"
    assert first["x-amz-target"] == "DynamoDB_20120810.GetItem"
    assert first["content-type"] == "application/x-amz-json-1.0"
    assert requests[4]["method"] == "GET" and requests[4]["target"] == "/bucket/a%20b.txt"
    assert "x-amz-content-sha256" in {k.lower() for k, _ in requests[4]["headers"]}


def test_test_invoke_method_runs_an_aws_integration_and_closes_its_connections(
        tmp_path, recording_upstream):
    """TestInvokeMethod (the console's Test button) on a REST API's AWS integration: the
    signed request reaches the service from the admin process, and the invocation's own
    keep-alive connection is closed with it rather than left open until the process ends."""
    rec = recording_upstream()
    g = start_gateway(tmp_path, textwrap.dedent(f"""\
        access_log: {{path: 'off'}}
        aws:
          region: {REGION}
          endpoints: {{dynamodb: "{rec.url}"}}
        """), aws_env(tmp_path, FASTGATE_DATA_DIR=str(tmp_path / "data")))
    try:
        apigw = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                             region_name=REGION, aws_access_key_id=ADMIN_KEY,
                             aws_secret_access_key=ADMIN_SECRET, config=Config(retries={"max_attempts": 1}))
        api = apigw.create_rest_api(name="tested")
        root = apigw.get_resources(restApiId=api["id"])["items"][0]["id"]
        apigw.put_method(restApiId=api["id"], resourceId=root, httpMethod="GET", authorizationType="NONE")
        apigw.put_integration(restApiId=api["id"], resourceId=root, httpMethod="GET", type="AWS",
                              integrationHttpMethod="POST",
                              uri=f"arn:aws:apigateway:{REGION}:dynamodb:action/GetItem",
                              requestTemplates={"application/json": '{"TableName": "$stageVariables.table"}'})
        apigw.put_method_response(restApiId=api["id"], resourceId=root, httpMethod="GET", statusCode="200")
        apigw.put_integration_response(restApiId=api["id"], resourceId=root, httpMethod="GET",
                                       statusCode="200", selectionPattern="")
        out = apigw.test_invoke_method(restApiId=api["id"], resourceId=root, httpMethod="GET",
                                       stageVariables={"table": "tested"})
        assert out["status"] == 200, out
        (request,) = rec.events("request")
        h = {k.lower(): v for k, v in request["headers"]}
        assert (h["x-amz-target"], request["body_sha256"]) == (
            "DynamoDB_20120810.GetItem", hashlib.sha256(b'{"TableName": "tested"}').hexdigest())
        assert h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=testing/")
        wait_until(lambda: rec.open_connections() == 0, timeout=10)
    finally:
        print(g.p.output())


def test_a_role_is_assumed_through_sts_and_signs_a_remote_lambda_invoke(tmp_path, moto, recording_upstream):
    """`credentials: <role ARN>`: the gateway's own keys ask STS (moto's) for the role's
    session, whose keys and token sign the service call; a Lambda function the gateway does
    not run is Lambda's Invoke API, at the path API Gateway's URI names."""
    rec = recording_upstream()
    fn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:remote"
    integ = aws(f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{fn}/invocations",
                '{"n": $input.json(\'$.n\')}', {"default": ok()},
                requestParameters={"integration.request.header.X-Amz-Invocation-Type": "'Event'"})
    g = one_route_gateway(tmp_path, "remote", "/fn", integ,
                          {"region": REGION, "endpoints": {"sts": moto.url, "lambda": rec.url}},
                          aws_env(tmp_path))
    try:
        for n in (1, 2):
            r = httpx.post(g.url + "/prod/fn", json={"n": n}, timeout=30)
            assert r.status_code == 200, r.text
    finally:
        g.stop()
    requests = rec.events("request")
    assert len(requests) == 2
    for r, n in zip(requests, (1, 2)):
        h = {k.lower(): v for k, v in r["headers"]}
        assert r["method"] == "POST"
        assert r["target"] == f"/2015-03-31/functions/{fn}/invocations"
        assert h["x-amz-invocation-type"] == "Event"
        assert r["body_sha256"] == hashlib.sha256(f'{{"n": {n}}}'.encode()).hexdigest()
        # signed with the role's session (moto's STS hands out ASIA... keys), not the
        # gateway's own "testing" key, and with its token
        credential = h["authorization"].split("Credential=", 1)[1].split(",", 1)[0]
        key, _, scope = credential.partition("/")
        assert key.startswith("ASIA") and scope.endswith(f"/{REGION}/lambda/aws4_request"), credential
        assert h["x-amz-security-token"]
    # the session is reused while it is valid: one AssumeRole for both calls
    keys = {r_h["authorization"].split("Credential=", 1)[1].split("/", 1)[0]
            for r_h in ({k.lower(): v for k, v in r["headers"]} for r in requests)}
    assert len(keys) == 1


def test_a_remote_lambda_non_proxy_error_is_selected_by_its_error_message(tmp_path):
    """Lambda non-proxy against Lambda's Invoke API (tests/fake_lambda.py, a real process): a
    function error (200 with X-Amz-Function-Error) selects the integration response whose
    selectionPattern matches its errorMessage, a result the default one, as AWS does."""
    port = free_port()
    fake = Proc([PYTHON, str(ROOT / "tests" / "fake_lambda.py"), str(port)])
    try:
        wait_port(port, fake.proc)
        integ = ROUTES[("/calc", "post")] | {
            "uri": f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
                   f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:divide/invocations"}
        del integ["credentials"]
        g = one_route_gateway(tmp_path, "remote-calc", "/calc", integ,
                              {"region": REGION, "endpoints": {"lambda": f"http://127.0.0.1:{port}"}},
                              aws_env(tmp_path))
        try:
            c = httpx.Client(base_url=g.url + "/prod", timeout=30)
            r = c.post("/calc", json={"a": 9, "b": 3})
            assert (r.status_code, r.json()) == (200, {"quotient": 3.0}), r.text
            r = c.post("/calc", json={"a": 9, "b": 0})
            assert (r.status_code, r.json()) == (400, {"error": "Bad input: division by zero"}), r.text
        finally:
            print(g.p.output())
    finally:
        fake.stop()


def test_appconfig_get_configuration_is_sent_as_appconfig_reads_it(tmp_path, recording_upstream):
    """moto does not serve AppConfig's GetConfiguration: a recording server shows the request
    the subtype makes (rest-json: the names in the path, the client's in the query), signed."""
    from fastgate.phases.auth.sigv4 import verify
    rec = recording_upstream()
    op = subtype("AppConfig-GetConfiguration", {
        "Application": "shop", "Environment": "$request.path.env", "Configuration": "flags",
        "ClientId": "$request.header.x-client", "ClientConfigurationVersion": "$request.querystring.v"})
    del op["x-amazon-apigateway-integration"]["credentials"]     # the gateway's own keys
    doc = {"openapi": "3.0.1", "info": {"title": "appconfig", "version": "1"},
           "paths": {"/config/{env}": {"get": op}}}
    (tmp_path / "appconfig.yaml").write_text(yaml.safe_dump(doc))
    g = start_gateway(tmp_path, textwrap.dedent(f"""\
        access_log: {{path: 'off'}}
        aws:
          endpoints: {{appconfig: "{rec.url}"}}
        apis:
          - openapi: appconfig.yaml
            stages: {{"$default": {{}}}}
        """), aws_env(tmp_path))
    try:
        r = httpx.get(f"{g.url}/config/prod?v=7", headers={"x-client": "web-1"}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        g.stop()
    (req,) = rec.events("request")
    path, _, query = req["target"].partition("?")
    assert req["method"] == "GET"
    assert path == "/applications/shop/environments/prod/configurations/flags"
    assert sorted(query.split("&")) == ["client_configuration_version=7", "client_id=web-1"]
    principal = verify("GET", path, query, [(k, v) for k, v in req["headers"]], b"",
                       {"testing": "testing"}, service="appconfig", region=REGION)
    assert principal.service == "appconfig"
