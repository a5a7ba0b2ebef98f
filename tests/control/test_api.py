"""The control API over a real socket, driven by boto3 exactly as users drive AWS."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import socket
import threading

import boto3
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from fastgate.process.admin import Admin
from fastgate.control.api import DOCUMENT_BODY_MAX, ControlAPI
from fastgate.control.store import Store
from tests import signed_head as signing

KEY, SECRET = "AKIDFASTGATE", "fastgate-admin-secret"


class Server:
    """The admin listener's HTTP handling with a ControlAPI, on a free loopback port."""

    def __init__(self, data_dir, credentials=None):
        self.changes = 0
        self.store = Store.in_dir(data_dir)
        self.admin = Admin(None, None, None)
        self.admin.control = ControlAPI(self.store, {KEY: SECRET} if credentials is None else credentials,
                                        self.changed)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.server = self.loop.run_until_complete(
                asyncio.start_server(self.admin.handle, sock=self.sock, limit=16384))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(10)

    def changed(self):
        self.changes += 1

    def client(self, key=KEY, secret=SECRET):
        return boto3.client("apigateway", endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id=key, aws_secret_access_key=secret,
                            config=Config(retries={"max_attempts": 1}))

    def stop(self):
        async def close():
            self.server.close()
            # boto3 keeps its connections open: end their handlers before the loop goes
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.admin.control.executor.shutdown()
        self.store.close()


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "data")
    yield s
    s.stop()


@pytest.fixture
def c(server):
    return server.client()


def code_of(exc_info) -> tuple[str, int]:
    err = exc_info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def build_api(c, name="pets"):
    """An API with GET /pets and GET /pets/{id}, both HTTP_PROXY, built call by call."""
    api = c.create_rest_api(name=name, description="the pet store")
    root = api["rootResourceId"]
    pets = c.create_resource(restApiId=api["id"], parentId=root, pathPart="pets")
    pet = c.create_resource(restApiId=api["id"], parentId=pets["id"], pathPart="{id}")
    for res in (pets, pet):
        c.put_method(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", authorizationType="NONE")
        c.put_integration(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", type="HTTP_PROXY",
                          integrationHttpMethod="GET", uri="http://${stageVariables.host}" + res["path"])
    return api, pets, pet


# ---------------------------------------------------------------- authentication

def test_wrong_secret_is_403(server):
    with pytest.raises(ClientError) as e:
        server.client(secret="wrong").get_rest_apis()
    assert code_of(e) == ("InvalidSignatureException", 403)
    assert "does not match the signature you provided" in str(e.value)


def test_unknown_key_is_403(server):
    with pytest.raises(ClientError) as e:
        server.client(key="AKIDOTHER").get_rest_apis()
    assert code_of(e) == ("UnrecognizedClientException", 403)


def _raw(server, method, path, body=b"", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def test_unsigned_is_403(server):
    status, headers, body = _raw(server, "GET", "/restapis")
    assert status == 403 and headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert orjson.loads(body) == {"message": "Missing Authentication Token"}
    status, _, _ = _raw(server, "POST", "/restapis", b'{"name":"x"}')
    assert status == 403
    assert server.changes == 0


def test_no_credentials_refuses_everything(tmp_path):
    s = Server(tmp_path / "d", credentials={})
    try:
        with pytest.raises(ClientError) as e:
            s.client().create_rest_api(name="x")
        assert code_of(e) == ("AccessDeniedException", 403)
        assert "FASTGATE_ADMIN_ACCESS_KEY_ID" in e.value.response["Error"]["Message"]
        status, _, body = _raw(s, "GET", "/live")
        assert status == 200 and orjson.loads(body) == {"status": "ok"}
    finally:
        s.stop()


def test_ready_live_openapi_unauthenticated(server):
    status, _, body = _raw(server, "GET", "/ready")
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    status, _, body = _raw(server, "GET", "/openapi.json")
    doc = orjson.loads(body)
    assert doc["openapi"].startswith("3.")
    assert doc["paths"]["/restapis/{restapi_id}/stages/{stage_name}"]["patch"]["operationId"] == "UpdateStage"
    assert "201" in doc["paths"]["/restapis"]["post"]["responses"]


def test_unknown_path_and_sdk_types(server, c):
    status, headers, _ = _raw(server, "GET", "/nothing/here", headers={})
    assert status == 403   # unsigned first, as AWS checks the signature before routing
    assert c.get_sdk_types()["items"] == []          # fastgate generates no SDKs
    with pytest.raises(ClientError) as e:
        c.get_sdk_type(id="java")
    assert code_of(e) == ("NotFoundException", 404)


# ---------------------------------------------------------------- admin listener

def signed_head(method: str, path: str, length: int, secret: str = SECRET,
                content_sha256: str | None = None) -> bytes:
    return signing.signed_head(method, path, length, KEY, secret, content_sha256)


def head_only(server, head: bytes) -> tuple[int, dict, bytes]:
    """Send a head announcing a body, never the body; the answer that comes anyway."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(head)
        return signing.read_answer(conn.makefile("rb"))


def test_bodies_are_refused_from_the_head_before_they_are_read(server):
    # each answer comes although the body is never sent: nothing of it was waited for
    status, headers, body = head_only(
        server, b"PUT /restapis/x HTTP/1.1\r\nHost: h\r\nContent-Length: 5000000\r\n\r\n")
    assert (status, headers["x-amzn-errortype"]) == (403, "MissingAuthenticationTokenException")
    assert orjson.loads(body) == {"message": "Missing Authentication Token"}
    status, headers, _ = head_only(server, signed_head("PUT", "/restapis/x", 5000000).replace(
        KEY.encode(), b"AKIDSOMEONEELSE"))
    assert (status, headers["x-amzn-errortype"]) == (403, "UnrecognizedClientException")
    # a document operation takes up to 10 MiB, any other a small JSON object
    status, headers, body = head_only(server, signed_head("PUT", "/restapis/x", DOCUMENT_BODY_MAX + 1))
    assert (status, headers["x-amzn-errortype"]) == (413, "RequestTooLongException")
    assert b"exceeds the limit of %d bytes" % DOCUMENT_BODY_MAX in body
    status, headers, body = head_only(server, signed_head("POST", "/restapis", 3 * 1024 * 1024))
    assert status == 413 and b"exceeds the limit of 2097152 bytes" in body
    # with its hash declared, a body's signature is checked before the body is read
    status, headers, body = head_only(server, signed_head(
        "POST", "/restapis", 1000, secret="wrong", content_sha256="ab" * 32))
    assert (status, headers["x-amzn-errortype"]) == (403, "InvalidSignatureException")
    status, _, body = _raw(server, "POST", "/restapis", headers={"Transfer-Encoding": "chunked"},
                           body=iter([b"abc"]))
    assert status == 411 and b"Content-Length" in body
    assert server.changes == 0


def test_a_declared_hash_is_checked_against_the_body(server, c):
    body = b'{"name": "declared"}'
    digest = hashlib.sha256(body).hexdigest()
    for sent, status in ((body, 201), (b'{"name": "tampered"}', 403)):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(signed_head("POST", "/restapis", len(sent), content_sha256=digest) + sent)
            assert int(conn.makefile("rb").readline().split()[1]) == status
    assert [a["name"] for a in c.get_rest_apis()["items"]] == ["declared"]


def test_keep_alive_serves_several_calls(server, c):
    for i in range(5):
        c.create_rest_api(name=f"api{i}")
    assert len(c.get_rest_apis()["items"]) == 5


# ---------------------------------------------------------------- rest APIs

def test_rest_api_lifecycle(server, c):
    api = c.create_rest_api(name="one", description="d", version="v1", binaryMediaTypes=["image/png"],
                            tags={"team": "a"})
    assert api["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert len(api["id"]) == 10 and api["id"].isalnum() and api["id"].islower()
    got = c.get_rest_api(restApiId=api["id"])
    for k in ("name", "description", "version", "binaryMediaTypes", "tags", "rootResourceId"):
        assert got[k] == api[k]
    assert "resources" not in got and "protocolType" not in got
    assert [a["id"] for a in c.get_rest_apis()["items"]] == [api["id"]]
    upd = c.update_rest_api(restApiId=api["id"], patchOperations=[
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/binaryMediaTypes/application~1pdf"}])
    assert upd["name"] == "renamed" and upd["binaryMediaTypes"] == ["image/png", "application/pdf"]
    r = c.delete_rest_api(restApiId=api["id"])
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 202
    with pytest.raises(ClientError) as e:
        c.get_rest_api(restApiId=api["id"])
    assert code_of(e) == ("NotFoundException", 404)
    assert server.changes == 3


def test_create_rest_api_validation(c):
    with pytest.raises(ClientError) as e:
        c.create_rest_api(name="")
    assert code_of(e) == ("BadRequestException", 400)


def test_paging(c):
    ids = [c.create_rest_api(name=f"a{i}")["id"] for i in range(7)]
    first = c.get_rest_apis(limit=3)
    assert len(first["items"]) == 3 and first["position"]
    pages = list(c.get_paginator("get_rest_apis").paginate(PaginationConfig={"PageSize": 3}))
    assert sorted(a["id"] for p in pages for a in p["items"]) == sorted(ids)
    assert len(pages) == 3


# ---------------------------------------------------------------- resources and methods

def test_resources_methods_integrations(c):
    api, pets, pet = build_api(c)
    assert pet["path"] == "/pets/{id}" and pet["parentId"] == pets["id"]
    items = {r["path"]: r for r in c.get_resources(restApiId=api["id"])["items"]}
    assert set(items) == {"/", "/pets", "/pets/{id}"}
    assert items["/pets"]["resourceMethods"] == {"GET": {}}
    embedded = {r["path"]: r for r in c.get_resources(restApiId=api["id"], embed=["methods"])["items"]}
    integ = embedded["/pets/{id}"]["resourceMethods"]["GET"]["methodIntegration"]
    assert integ["uri"] == "http://${stageVariables.host}/pets/{id}" and integ["type"] == "HTTP_PROXY"
    m = c.get_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET")
    assert m["authorizationType"] == "NONE" and m["methodIntegration"]["httpMethod"] == "GET"
    i = c.get_integration(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET")
    assert i["timeoutInMillis"] == 29000

    ir = c.put_integration_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET",
                                    statusCode="200", selectionPattern="", responseTemplates={"application/json": ""})
    assert ir["statusCode"] == "200"
    assert c.get_integration_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET",
                                      statusCode="200")["statusCode"] == "200"
    mr = c.put_method_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", statusCode="200",
                               responseParameters={"method.response.header.X-Id": False})
    assert mr["responseParameters"] == {"method.response.header.X-Id": False}
    assert c.get_method_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET",
                                 statusCode="200")["statusCode"] == "200"
    r = c.delete_method_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", statusCode="200")
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    c.delete_integration_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", statusCode="200")
    with pytest.raises(ClientError) as e:
        c.get_integration_response(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", statusCode="200")
    assert code_of(e) == ("NotFoundException", 404)

    c.delete_integration(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET")
    with pytest.raises(ClientError) as e:
        c.get_integration(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET")
    assert code_of(e) == ("NotFoundException", 404)
    c.delete_method(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET")
    with pytest.raises(ClientError) as e:
        c.get_method(restApiId=api["id"], resourceId=pet["id"], httpMethod="GET")
    assert code_of(e) == ("NotFoundException", 404)
    c.delete_resource(restApiId=api["id"], resourceId=pets["id"])   # takes /pets/{id} with it
    assert [r["path"] for r in c.get_resources(restApiId=api["id"])["items"]] == ["/"]


def test_resource_errors(c):
    api, pets, _ = build_api(c)
    with pytest.raises(ClientError) as e:
        c.create_resource(restApiId=api["id"], parentId=api["rootResourceId"], pathPart="pets")
    assert code_of(e) == ("ConflictException", 409)
    with pytest.raises(ClientError) as e:
        c.create_resource(restApiId=api["id"], parentId=api["rootResourceId"], pathPart="bad part!")
    assert code_of(e) == ("BadRequestException", 400)
    with pytest.raises(ClientError) as e:
        c.create_resource(restApiId=api["id"], parentId="nosuchres", pathPart="x")
    assert code_of(e) == ("NotFoundException", 404)
    with pytest.raises(ClientError) as e:
        c.put_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", authorizationType="NONE")
    assert code_of(e) == ("ConflictException", 409)
    with pytest.raises(ClientError) as e:
        c.put_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="FETCH", authorizationType="NONE")
    assert code_of(e) == ("BadRequestException", 400)
    with pytest.raises(ClientError) as e:
        c.put_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="POST", authorizationType="CUSTOM",
                     authorizerId="nope")
    assert code_of(e) == ("BadRequestException", 400)
    with pytest.raises(ClientError) as e:
        c.put_integration(restApiId=api["id"], resourceId=pets["id"], httpMethod="GET", type="HTTP",
                          integrationHttpMethod="GET", uri="http://x", timeoutInMillis=30000)
    assert code_of(e) == ("BadRequestException", 400)
    with pytest.raises(ClientError) as e:
        c.delete_resource(restApiId=api["id"], resourceId=api["rootResourceId"])
    assert code_of(e) == ("BadRequestException", 400)


# ---------------------------------------------------------------- deployments and stages

def test_deployments(c):
    api, _, _ = build_api(c)
    dep = c.create_deployment(restApiId=api["id"], description="first")
    assert len(dep["id"]) == 6 and dep["ResponseMetadata"]["HTTPStatusCode"] == 201
    got = c.get_deployment(restApiId=api["id"], deploymentId=dep["id"], embed=["apisummary"])
    assert got["description"] == "first"
    assert got["apiSummary"]["/pets/{id}"]["GET"] == {"authorizationType": "NONE", "apiKeyRequired": False}
    assert [d["id"] for d in c.get_deployments(restApiId=api["id"])["items"]] == [dep["id"]]
    c.update_deployment(restApiId=api["id"], deploymentId=dep["id"],
                        patchOperations=[{"op": "replace", "path": "/description", "value": "renamed"}])
    assert c.get_deployment(restApiId=api["id"], deploymentId=dep["id"])["description"] == "renamed"
    c.create_stage(restApiId=api["id"], stageName="prod", deploymentId=dep["id"])
    with pytest.raises(ClientError) as e:
        c.delete_deployment(restApiId=api["id"], deploymentId=dep["id"])
    assert code_of(e) == ("BadRequestException", 400)
    assert "Active stages pointing to this deployment" in e.value.response["Error"]["Message"]
    c.delete_stage(restApiId=api["id"], stageName="prod")
    assert c.delete_deployment(restApiId=api["id"], deploymentId=dep["id"])["ResponseMetadata"]["HTTPStatusCode"] == 202
    with pytest.raises(ClientError) as e:
        c.get_deployment(restApiId=api["id"], deploymentId=dep["id"])
    assert code_of(e) == ("NotFoundException", 404)


def test_deployment_is_a_frozen_copy(server, c):
    api, pets, _ = build_api(c)
    dep = c.create_deployment(restApiId=api["id"], stageName="prod")
    c.put_method(restApiId=api["id"], resourceId=pets["id"], httpMethod="POST", authorizationType="NONE")
    frozen = server.admin.control.model.state.deployments[api["id"]][dep["id"]]["api"]
    pets_doc = [r for r in frozen["resources"] if r["path"] == "/pets"][0]
    assert set(pets_doc["resourceMethods"]) == {"GET"}


def test_deployment_needs_methods_and_integrations(c):
    api = c.create_rest_api(name="empty")
    with pytest.raises(ClientError) as e:
        c.create_deployment(restApiId=api["id"], stageName="prod")
    assert code_of(e) == ("BadRequestException", 400)
    c.put_method(restApiId=api["id"], resourceId=api["rootResourceId"], httpMethod="GET", authorizationType="NONE")
    with pytest.raises(ClientError) as e:
        c.create_deployment(restApiId=api["id"], stageName="prod")
    assert "No integration defined for method" in e.value.response["Error"]["Message"]


def test_stage_create_get_list_delete(c):
    api, _, _ = build_api(c)
    dep = c.create_deployment(restApiId=api["id"])
    st = c.create_stage(restApiId=api["id"], stageName="beta", deploymentId=dep["id"], description="b",
                        variables={"host": "127.0.0.1:8000"}, tags={"k": "v"})
    assert st["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert st["variables"] == {"host": "127.0.0.1:8000"} and st["deploymentId"] == dep["id"]
    assert c.get_stage(restApiId=api["id"], stageName="beta")["description"] == "b"
    assert [s["stageName"] for s in c.get_stages(restApiId=api["id"])["item"]] == ["beta"]
    with pytest.raises(ClientError) as e:
        c.create_stage(restApiId=api["id"], stageName="beta", deploymentId=dep["id"])
    assert code_of(e) == ("ConflictException", 409)
    with pytest.raises(ClientError) as e:
        c.create_stage(restApiId=api["id"], stageName="gamma", deploymentId="nosuch")
    assert code_of(e) == ("NotFoundException", 404)
    with pytest.raises(ClientError) as e:
        c.create_stage(restApiId=api["id"], stageName="bad name", deploymentId=dep["id"])
    assert code_of(e) == ("BadRequestException", 400)
    with pytest.raises(ClientError) as e:
        c.create_stage(restApiId=api["id"], stageName="v", deploymentId=dep["id"], variables={"bad-name": "x"})
    assert code_of(e) == ("BadRequestException", 400)
    c.delete_stage(restApiId=api["id"], stageName="beta")
    with pytest.raises(ClientError) as e:
        c.get_stage(restApiId=api["id"], stageName="beta")
    assert code_of(e) == ("NotFoundException", 404)


def test_stage_variable_patches_and_rollback(c):
    api, _, _ = build_api(c)
    d1 = c.create_deployment(restApiId=api["id"], stageName="prod", variables={"host": "a"})
    d2 = c.create_deployment(restApiId=api["id"], stageName="prod")
    assert c.get_stage(restApiId=api["id"], stageName="prod")["deploymentId"] == d2["id"]

    def patch(*ops):
        return c.update_stage(restApiId=api["id"], stageName="prod", patchOperations=list(ops))

    st = patch({"op": "add", "path": "/variables/color", "value": "blue"},
               {"op": "replace", "path": "/variables/host", "value": "b"},
               {"op": "replace", "path": "/description", "value": "live"})
    assert st["variables"] == {"host": "b", "color": "blue"} and st["description"] == "live"
    st = patch({"op": "remove", "path": "/variables/color"})
    assert st["variables"] == {"host": "b"}
    st = patch({"op": "replace", "path": "/deploymentId", "value": d1["id"]})   # rollback
    assert st["deploymentId"] == d1["id"]
    st = patch({"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "100"},
               {"op": "replace", "path": "/*/*/throttling/burstLimit", "value": "20"},
               {"op": "replace", "path": "/~1pets/GET/metrics/enabled", "value": "true"},
               {"op": "replace", "path": "/tracingEnabled", "value": "true"})
    assert st["methodSettings"]["*/*"]["throttlingRateLimit"] == 100.0
    assert st["methodSettings"]["*/*"]["throttlingBurstLimit"] == 20
    assert st["methodSettings"]["~1pets/GET"]["metricsEnabled"] is True
    assert st["tracingEnabled"] is True
    for bad in ({"op": "replace", "path": "/nonsense", "value": "x"},
                {"op": "replace", "path": "/deploymentId", "value": "nosuch"},
                {"op": "replace", "path": "/*/*/throttling/rateLimit", "value": "fast"}):
        with pytest.raises(ClientError) as e:
            patch(bad)
        assert code_of(e)[0] in ("BadRequestException", "NotFoundException")
    # a failed patch list changes nothing, even its valid operations
    with pytest.raises(ClientError):
        patch({"op": "replace", "path": "/description", "value": "half"}, {"op": "replace", "path": "/bad"})
    assert c.get_stage(restApiId=api["id"], stageName="prod")["description"] == "live"


def test_canary_create_update_promote_discard(c):
    api, _, _ = build_api(c)
    base = c.create_deployment(restApiId=api["id"], stageName="prod", variables={"host": "v1"})
    canary = c.create_deployment(restApiId=api["id"], stageName="prod",
                                 canarySettings={"percentTraffic": 10.0,
                                                 "stageVariableOverrides": {"host": "v2"}})
    st = c.get_stage(restApiId=api["id"], stageName="prod")
    assert st["deploymentId"] == base["id"]
    assert st["canarySettings"] == {"deploymentId": canary["id"], "percentTraffic": 10.0,
                                    "stageVariableOverrides": {"host": "v2"}, "useStageCache": False}

    def patch(*ops):
        return c.update_stage(restApiId=api["id"], stageName="prod", patchOperations=list(ops))

    st = patch({"op": "replace", "path": "/canarySettings/percentTraffic", "value": "25.5"},
               {"op": "replace", "path": "/canarySettings/stageVariableOverrides/extra", "value": "x"})
    assert st["canarySettings"]["percentTraffic"] == 25.5
    assert st["canarySettings"]["stageVariableOverrides"] == {"host": "v2", "extra": "x"}
    with pytest.raises(ClientError) as e:
        patch({"op": "replace", "path": "/canarySettings/percentTraffic", "value": "101"})
    assert code_of(e) == ("BadRequestException", 400)

    # promotion, as AWS documents it: copy the canary's deployment and overrides, 0 % canary
    st = patch({"op": "replace", "path": "/canarySettings/percentTraffic", "value": "0.0"},
               {"op": "copy", "from": "/canarySettings/deploymentId", "path": "/deploymentId"},
               {"op": "copy", "from": "/canarySettings/stageVariableOverrides", "path": "/variables"})
    assert st["deploymentId"] == canary["id"]
    assert st["variables"] == {"host": "v2", "extra": "x"}
    assert st["canarySettings"]["percentTraffic"] == 0.0
    # discard
    st = patch({"op": "remove", "path": "/canarySettings"})
    assert "canarySettings" not in st
    with pytest.raises(ClientError) as e:
        patch({"op": "copy", "from": "/canarySettings/deploymentId", "path": "/deploymentId"})
    assert code_of(e) == ("BadRequestException", 400)
    # a canary made by patching the stage: it starts on the stage's deployment
    st = patch({"op": "replace", "path": "/canarySettings/deploymentId", "value": base["id"]},
               {"op": "replace", "path": "/canarySettings/percentTraffic", "value": "5"})
    assert st["canarySettings"]["deploymentId"] == base["id"] and st["canarySettings"]["percentTraffic"] == 5.0
    with pytest.raises(ClientError) as e:
        c.delete_deployment(restApiId=api["id"], deploymentId=base["id"])
    assert code_of(e) == ("BadRequestException", 400)


def test_canary_needs_existing_stage(c):
    api, _, _ = build_api(c)
    with pytest.raises(ClientError) as e:
        c.create_deployment(restApiId=api["id"], stageName="nostage", canarySettings={"percentTraffic": 5})
    assert code_of(e) == ("BadRequestException", 400)


# ---------------------------------------------------------------- domain names

def _cert(cn="api.example.com"):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_domain_names_and_mappings(c, tmp_path):
    cert, key = _cert()
    other_cert, other_key = _cert("other")
    trust = tmp_path / "ca.pem"
    trust.write_text(other_cert)
    d = c.create_domain_name(domainName="api.example.com", certificateBody=cert, certificatePrivateKey=key,
                             mutualTlsAuthentication={"truststoreUri": f"file://{trust}"})
    assert d["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert d["domainName"] == "api.example.com" and d["domainNameStatus"] == "AVAILABLE"
    assert "certificatePrivateKey" not in d and d["mutualTlsAuthentication"]["truststoreUri"] == f"file://{trust}"
    assert c.get_domain_name(domainName="api.example.com")["domainName"] == "api.example.com"
    assert [x["domainName"] for x in c.get_domain_names()["items"]] == ["api.example.com"]
    with pytest.raises(ClientError) as e:
        c.create_domain_name(domainName="api.example.com")
    assert code_of(e) == ("ConflictException", 409)
    for bad in ({"certificateBody": cert, "certificatePrivateKey": other_key},
                {"certificateBody": "not a pem", "certificatePrivateKey": key},
                {"mutualTlsAuthentication": {"truststoreUri": str(tmp_path / "missing.pem")}},
                {"mutualTlsAuthentication": {"truststoreUri": "s3://bucket/ca.pem"}}):
        with pytest.raises(ClientError) as e:
            c.create_domain_name(domainName="bad.example.com", **bad)
        assert code_of(e) == ("BadRequestException", 400), bad

    api, _, _ = build_api(c)
    c.create_deployment(restApiId=api["id"], stageName="prod")
    m = c.create_base_path_mapping(domainName="api.example.com", restApiId=api["id"], stage="prod")
    assert m["basePath"] == "(none)" and m["ResponseMetadata"]["HTTPStatusCode"] == 201
    m2 = c.create_base_path_mapping(domainName="api.example.com", basePath="v1", restApiId=api["id"], stage="prod")
    assert m2["basePath"] == "v1"
    with pytest.raises(ClientError) as e:
        c.create_base_path_mapping(domainName="api.example.com", basePath="v1", restApiId=api["id"])
    assert code_of(e) == ("ConflictException", 409)
    with pytest.raises(ClientError) as e:
        c.create_base_path_mapping(domainName="api.example.com", basePath="v2", restApiId=api["id"], stage="nostage")
    assert code_of(e) == ("BadRequestException", 400)
    assert c.get_base_path_mapping(domainName="api.example.com", basePath="(none)")["restApiId"] == api["id"]
    assert {x["basePath"] for x in c.get_base_path_mappings(domainName="api.example.com")["items"]} == {"(none)", "v1"}
    up = c.update_base_path_mapping(domainName="api.example.com", basePath="v1",
                                    patchOperations=[{"op": "replace", "path": "/basePath", "value": "v2"}])
    assert up["basePath"] == "v2"
    with pytest.raises(ClientError) as e:
        c.get_base_path_mapping(domainName="api.example.com", basePath="v1")
    assert code_of(e) == ("NotFoundException", 404)
    with pytest.raises(ClientError) as e:
        c.delete_rest_api(restApiId=api["id"])     # still mapped
    assert code_of(e) == ("BadRequestException", 400)
    c.delete_base_path_mapping(domainName="api.example.com", basePath="v2")
    c.delete_domain_name(domainName="api.example.com")   # takes its remaining mapping along
    with pytest.raises(ClientError) as e:
        c.get_domain_name(domainName="api.example.com")
    assert code_of(e) == ("NotFoundException", 404)
    c.delete_rest_api(restApiId=api["id"])


# ---------------------------------------------------------------- gateway responses

def test_gateway_responses(c):
    from fastgate.control.names import GATEWAY_RESPONSE_STATUS
    api = c.create_rest_api(name="gr")
    items = c.get_gateway_responses(restApiId=api["id"], limit=500)["items"]
    assert {i["responseType"] for i in items} == set(GATEWAY_RESPONSE_STATUS)
    assert all(i["defaultResponse"] for i in items)
    by_type = {i["responseType"]: i for i in items}
    assert by_type["THROTTLED"]["statusCode"] == "429" and "statusCode" not in by_type["DEFAULT_4XX"]
    put = c.put_gateway_response(restApiId=api["id"], responseType="MISSING_AUTHENTICATION_TOKEN",
                                 statusCode="404", responseTemplates={"application/json": '{"m":"nope"}'})
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 201 and put["defaultResponse"] is False
    got = c.get_gateway_response(restApiId=api["id"], responseType="MISSING_AUTHENTICATION_TOKEN")
    assert got["statusCode"] == "404" and got["responseTemplates"] == {"application/json": '{"m":"nope"}'}
    c.delete_gateway_response(restApiId=api["id"], responseType="MISSING_AUTHENTICATION_TOKEN")
    got = c.get_gateway_response(restApiId=api["id"], responseType="MISSING_AUTHENTICATION_TOKEN")
    assert got["defaultResponse"] is True and got["statusCode"] == "403"
    with pytest.raises(ClientError) as e:
        c.delete_gateway_response(restApiId=api["id"], responseType="MISSING_AUTHENTICATION_TOKEN")
    assert code_of(e) == ("NotFoundException", 404)


# ---------------------------------------------------------------- persistence

def test_state_survives_restart(tmp_path):
    s = Server(tmp_path / "data")
    c = s.client()
    api, _, _ = build_api(c)
    dep = c.create_deployment(restApiId=api["id"], stageName="prod", variables={"host": "h"})
    c.update_stage(restApiId=api["id"], stageName="prod",
                   patchOperations=[{"op": "replace", "path": "/description", "value": "kept"}])
    s.stop()
    s = Server(tmp_path / "data")
    try:
        c = s.client()
        assert c.get_rest_api(restApiId=api["id"])["name"] == "pets"
        st = c.get_stage(restApiId=api["id"], stageName="prod")
        assert st["description"] == "kept" and st["deploymentId"] == dep["id"]
        assert len(c.get_resources(restApiId=api["id"])["items"]) == 3
    finally:
        s.stop()


def test_json_errors_are_aws_shaped(server, c):
    # a signed request with a body that is not JSON: botocore's own signer, raw body
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    req = AWSRequest(method="POST", url=f"{server.url}/restapis", data=b"{not json")
    SigV4Auth(Credentials(KEY, SECRET), "apigateway", "us-east-1").add_auth(req)
    status, headers, body = _raw(server, "POST", "/restapis", b"{not json", dict(req.headers.items()))
    assert status == 400 and headers["x-amzn-ErrorType"] == "BadRequestException"
    assert "Could not parse request body into json" in orjson.loads(body)["message"]


# ---------------------------------------------------------------- import and export

PETSTORE = {
    "openapi": "3.0.1",
    "info": {"title": "PetStore", "version": "1.0"},
    "paths": {
        "/pets": {"get": {"responses": {"200": {"description": "ok"}},
                          "x-amazon-apigateway-integration": {
                              "type": "http_proxy", "httpMethod": "GET",
                              "uri": "http://petstore.example.com/pets"}}},
        "/pets/{id}": {"get": {"parameters": [{"name": "id", "in": "path", "required": True,
                                               "schema": {"type": "string"}}],
                               "responses": {"200": {"description": "ok"}},
                               "x-amazon-apigateway-integration": {
                                   "type": "http_proxy", "httpMethod": "GET",
                                   "uri": "http://petstore.example.com/pets/{id}",
                                   "requestParameters": {"integration.request.path.id": "method.request.path.id"}}}},
    },
}


def test_import_put_export(c):
    api = c.import_rest_api(body=orjson.dumps(PETSTORE), failOnWarnings=False)
    assert api["ResponseMetadata"]["HTTPStatusCode"] == 201 and api["name"] == "PetStore"
    paths = {r["path"] for r in c.get_resources(restApiId=api["id"])["items"]}
    assert paths == {"/", "/pets", "/pets/{id}"}
    m = [r for r in c.get_resources(restApiId=api["id"], embed=["methods"])["items"] if r["path"] == "/pets/{id}"][0]
    assert m["resourceMethods"]["GET"]["methodIntegration"]["uri"] == "http://petstore.example.com/pets/{id}"

    # merge adds /owners and keeps /pets; overwrite replaces everything
    extra = {**PETSTORE, "paths": {"/owners": {"get": {
        "responses": {"200": {"description": "ok"}},
        "x-amazon-apigateway-integration": {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'}}}}}}
    c.put_rest_api(restApiId=api["id"], mode="merge", body=orjson.dumps(extra))
    paths = {r["path"] for r in c.get_resources(restApiId=api["id"])["items"]}
    assert {"/pets", "/pets/{id}", "/owners"} <= paths
    c.put_rest_api(restApiId=api["id"], mode="overwrite", body=orjson.dumps(extra))
    paths = {r["path"] for r in c.get_resources(restApiId=api["id"])["items"]}
    assert paths == {"/", "/owners"}
    assert c.get_rest_api(restApiId=api["id"])["id"] == api["id"]

    c.put_rest_api(restApiId=api["id"], mode="overwrite", body=orjson.dumps(PETSTORE))
    c.create_deployment(restApiId=api["id"], stageName="prod")
    out = c.get_export(restApiId=api["id"], stageName="prod", exportType="oas30",
                       parameters={"extensions": "integrations"}, accepts="application/json")
    assert out["contentType"] == "application/json"
    doc = orjson.loads(out["body"].read())
    assert set(doc["paths"]) == {"/pets", "/pets/{id}"}
    assert doc["paths"]["/pets"]["get"]["x-amazon-apigateway-integration"]["uri"] == "http://petstore.example.com/pets"
    yaml_out = c.get_export(restApiId=api["id"], stageName="prod", exportType="swagger", accepts="application/yaml")
    assert yaml_out["contentType"] == "application/yaml" and b"swagger:" in yaml_out["body"].read()
    with pytest.raises(ClientError) as e:
        c.get_export(restApiId=api["id"], stageName="nostage", exportType="oas30")
    assert code_of(e) == ("NotFoundException", 404)


def test_import_errors_and_warnings(c):
    with pytest.raises(ClientError) as e:
        c.import_rest_api(body=b"{not: valid: yaml: [")
    assert code_of(e) == ("BadRequestException", 400)
    with pytest.raises(ClientError) as e:
        c.import_rest_api(body=b"")
    assert code_of(e)[1] == 400
    odd = {**PETSTORE, "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}},
                                                 "x-amazon-apigateway-integration": {"type": "mock"},
                                                 "x-amazon-apigateway-unknown-thing": {"a": 1}}}}}
    api = c.import_rest_api(body=orjson.dumps(odd))
    # an extension fastgate does not implement: a warning in RestApi.warnings, as AWS does
    assert any("x-amazon-apigateway-unknown-thing" in w for w in api["warnings"])
    with pytest.raises(ClientError) as e:
        c.import_rest_api(body=orjson.dumps(odd), failOnWarnings=True)
    assert code_of(e) == ("BadRequestException", 400)
    assert len(c.get_rest_apis()["items"]) == 1    # the refused import left nothing behind
    assert c.get_rest_api(restApiId=api["id"])["name"] == "PetStore"
