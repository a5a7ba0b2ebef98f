"""Deployments through the control API change what the data plane serves: boto3
imports an OpenAPI document, deploys it to a stage, patches stage variables, rolls
back, runs and promotes a canary — and requests through fastgate follow each step."""

from __future__ import annotations

import json

import boto3
import httpx
import pytest
from botocore.config import Config

from conftest import FRESH, Gateway, wait_every_worker, wait_until

KEY, SECRET = "AKIAFASTGATETEST01", "deploy-test-secret-key"
CREDENTIALS = {"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}


def doc(prefix: str) -> bytes:
    return json.dumps({
        "openapi": "3.0.1",
        "info": {"title": "Deployed", "version": "1"},
        "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": {
            "parameters": [{"name": "proxy", "in": "path", "required": True, "schema": {"type": "string"}}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "ANY",
                "uri": "http://127.0.0.1:${stageVariables.port}/echo/" + prefix + "/${stageVariables.v}/{proxy}",
                "requestParameters": {"integration.request.path.proxy": "method.request.path.proxy"}}}}},
    }).encode()


@pytest.fixture
def gw(tmp_path, up):
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        data_dir: {tmp_path / 'state'}
        """, workers=2, env=CREDENTIALS)
    yield g
    g.stop()


@pytest.fixture
def apigw(gw):
    return boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{gw.admin_port}",
                        region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                        config=Config(retries={"max_attempts": 1}))


def served_path(gw, path="/prod/x"):
    r = FRESH.get(gw.url + path)   # a new connection per look: both workers answer
    return r.json()["path"] if r.status_code == 200 else r.status_code


def everywhere(gw, served: str, path="/prod/x") -> None:
    """Until every worker (two; each builds a change on its own) has served `served`."""
    wait_every_worker(gw, lambda: FRESH.get(gw.url + path),
                      ok=lambda r: r.status_code == 200 and r.json()["path"] == served)


def test_import_deploy_patch_rollback_canary(gw, apigw, up):
    api = apigw.import_rest_api(body=doc("one"))
    api_id = api["id"]
    assert served_path(gw) == 404            # nothing deployed yet: the top level answers
    d1 = apigw.create_deployment(restApiId=api_id, stageName="prod", description="first",
                                 variables={"port": str(up.port), "v": "v1"})["id"]
    everywhere(gw, "/echo/one/v1/x")
    # a REST API now owns /prod: an unknown method/path there is API Gateway's 403
    r = httpx.get(gw.url + "/prod", timeout=5)
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"

    apigw.update_stage(restApiId=api_id, stageName="prod",
                       patchOperations=[{"op": "replace", "path": "/variables/v", "value": "v2"}])
    everywhere(gw, "/echo/one/v2/x")

    # a new version of the API, deployed: the stage moves to it
    apigw.put_rest_api(restApiId=api_id, mode="overwrite", body=doc("two"))
    assert served_path(gw) == "/echo/one/v2/x"   # not deployed yet: the stage keeps its deployment
    d2 = apigw.create_deployment(restApiId=api_id, stageName="prod", description="second")["id"]
    everywhere(gw, "/echo/two/v2/x")

    # roll back: point the stage at the first deployment again
    apigw.update_stage(restApiId=api_id, stageName="prod",
                       patchOperations=[{"op": "replace", "path": "/deploymentId", "value": d1}])
    everywhere(gw, "/echo/one/v2/x")

    # canary: half the traffic to deployment two, with its own variable
    apigw.update_stage(restApiId=api_id, stageName="prod", patchOperations=[
        {"op": "replace", "path": "/canarySettings/deploymentId", "value": d2},
        {"op": "replace", "path": "/canarySettings/percentTraffic", "value": "50"},
        {"op": "replace", "path": "/canarySettings/stageVariableOverrides/v", "value": "c"},
    ])
    everywhere(gw, "/echo/two/c/x")    # a worker that shows the canary has it
    seen = [served_path(gw) for _ in range(200)]
    assert set(seen) == {"/echo/one/v2/x", "/echo/two/c/x"}
    assert 60 <= seen.count("/echo/two/c/x") <= 140

    # promote: the canary's deployment and variables become the stage's, no canary left
    apigw.update_stage(restApiId=api_id, stageName="prod", patchOperations=[
        {"op": "replace", "path": "/canarySettings/percentTraffic", "value": "0.0"},
        {"op": "copy", "from": "/canarySettings/deploymentId", "path": "/deploymentId"},
        {"op": "copy", "from": "/canarySettings/stageVariableOverrides", "path": "/variables"},
        {"op": "remove", "path": "/canarySettings"},
    ])
    stage = apigw.get_stage(restApiId=api_id, stageName="prod")
    assert stage["deploymentId"] == d2 and "canarySettings" not in stage
    assert wait_until(lambda: all(served_path(gw) == "/echo/two/c/x" for _ in range(20)))

    # a stage deleted stops answering
    apigw.delete_stage(restApiId=api_id, stageName="prod")
    assert wait_until(lambda: served_path(gw) == 404)


def test_state_survives_a_restart(tmp_path, up):
    cfg = f"""\
        access_log: {{path: 'off'}}
        data_dir: {tmp_path / 'state'}
        """
    g = Gateway(tmp_path, cfg, env=CREDENTIALS)
    try:
        c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                         region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        api_id = c.import_rest_api(body=doc("kept"))["id"]
        c.create_deployment(restApiId=api_id, stageName="live", variables={"port": str(up.port), "v": "1"})
        assert wait_until(lambda: served_path(g, "/live/y") == "/echo/kept/1/y")
    finally:
        g.stop()
    g = Gateway(tmp_path, cfg, env=CREDENTIALS)
    try:
        assert served_path(g, "/live/y") == "/echo/kept/1/y"
        r = httpx.get(g.url + "/y", headers={"Host": f"{api_id}.execute-api.localhost"}, timeout=5)
        assert r.status_code == 403       # the stage is in the path on execute-api hosts too
        r = httpx.get(g.url + "/live/y", headers={"Host": f"{api_id}.execute-api.localhost"}, timeout=5)
        assert r.json()["path"] == "/echo/kept/1/y"
    finally:
        g.stop()
