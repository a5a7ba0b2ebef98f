"""APIs served from OpenAPI documents: stages, stage variables, mounts (stage prefix,
execute-api host, /restapis/.../_user_request_, custom domains), REST vs HTTP API
semantics, gateway responses — real fastgate processes, real upstream, httpx."""

from __future__ import annotations

import json
import textwrap

import httpx
import pytest

from conftest import ROOT, Gateway, Proc, free_port, wait_port


def petstore(upstream_port: int) -> dict:
    """A REST API in the shape API Gateway exports: http_proxy with a stage variable
    and a path parameter, a greedy proxy, a mock, a customised gateway response."""
    return {
        "openapi": "3.0.1",
        "info": {"title": "PetStore", "version": "1.0"},
        "paths": {
            "/pets": {
                "get": {"x-amazon-apigateway-integration": {
                    "type": "http_proxy", "httpMethod": "GET",
                    "uri": "http://127.0.0.1:${stageVariables.port}/echo/pets"}},
            },
            "/pets/{petId}": {
                "get": {
                    "parameters": [{"name": "petId", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "x-amazon-apigateway-integration": {
                        "type": "http_proxy", "httpMethod": "GET",
                        "uri": f"http://127.0.0.1:{upstream_port}/echo/pet/{{id}}",
                        "requestParameters": {
                            "integration.request.path.id": "method.request.path.petId",
                            "integration.request.header.X-Stage": "context.stage",
                            "integration.request.header.X-Color": "stageVariables.color",
                            "integration.request.header.X-Static": "'fixed'",
                        }}},
            },
            "/files/{proxy+}": {
                "x-amazon-apigateway-any-method": {
                    "parameters": [{"name": "proxy", "in": "path", "required": True,
                                    "schema": {"type": "string"}}],
                    "x-amazon-apigateway-integration": {
                        "type": "http_proxy", "httpMethod": "ANY",
                        "uri": f"http://127.0.0.1:{upstream_port}/echo/files/{{proxy}}",
                        "requestParameters": {"integration.request.path.proxy": "method.request.path.proxy"},
                    }},
            },
            "/status": {
                "get": {"x-amazon-apigateway-integration": {
                    "type": "mock",
                    "requestTemplates": {"application/json": '{"statusCode": 200}'},
                    "responses": {"default": {
                        "statusCode": "200",
                        "responseParameters": {"method.response.header.X-Mock": "'yes'"},
                        "responseTemplates": {"application/json":
                                              '{"stage": "$context.stage", "id": "$context.requestId"}'}}}}},
            },
        },
        "x-amazon-apigateway-gateway-responses": {
            "THROTTLED": {"statusCode": 429,
                          "responseTemplates": {"application/json": '{"slow": "down"}'}},
        },
    }


def http_api(upstream_port: int) -> dict:
    return {
        "openapi": "3.0.1",
        "info": {"title": "HttpApi", "version": "1.0"},
        "x-amazon-apigateway-cors": {"allowOrigins": ["*"]},
        "paths": {
            "/items/{id}": {
                "get": {"x-amazon-apigateway-integration": {
                    "type": "http_proxy", "httpMethod": "GET", "payloadFormatVersion": "1.0",
                    "uri": f"http://127.0.0.1:{upstream_port}/echo/items/{{id}}"}},
            },
        },
    }


def hdr(seen: dict, name: str):
    """A header the upstream received (its echo lists [name, value] pairs)."""
    return next((v for k, v in seen["headers"] if k.lower() == name), None)


def get(url, **kw):
    return httpx.get(url, timeout=5, **kw)


@pytest.fixture
def rest_gateway(tmp_path, up):
    (tmp_path / "petstore.json").write_text(json.dumps(petstore(up.port)))
    gw = Gateway(tmp_path, f"""\
        access_log:
          path: off
        apis:
          - openapi: petstore.json
            id: petstore01
            stages:
              prod:
                variables: {{port: "{up.port}", color: blue}}
              dev:
                variables: {{port: "{up.port}", color: green}}
        domains:
          - name: api.example.com
            mappings:
              - base_path: v1
                api: petstore01
                stage: prod
              - api: petstore01
                stage: dev
        """)
    yield gw
    gw.stop()


def test_stage_prefix_routes_to_the_api_with_stage_variables(rest_gateway):
    r = get(f"{rest_gateway.url}/prod/pets/42")
    assert r.status_code == 200
    seen = r.json()
    assert seen["path"] == "/echo/pet/42"
    assert hdr(seen, "x-stage") == "prod"
    assert hdr(seen, "x-color") == "blue"
    assert hdr(seen, "x-static") == "fixed"
    # REST APIs answer with API Gateway's request id header
    assert r.headers["x-amzn-requestid"] == r.headers["x-request-id"]
    dev = get(f"{rest_gateway.url}/dev/pets/7").json()
    assert dev["path"] == "/echo/pet/7" and hdr(dev, "x-color") == "green"
    # the host part of a URI from a stage variable
    assert get(f"{rest_gateway.url}/prod/pets").json()["path"] == "/echo/pets"


def test_greedy_proxy_keeps_the_rest_of_the_path_and_query(rest_gateway):
    r = httpx.post(f"{rest_gateway.url}/prod/files/a/b%20c/d.txt?x=1&y=2", content=b"data", timeout=5)
    seen = r.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/echo/files/a/b%20c/d.txt"
    assert seen["query"] == "x=1&y=2"


def test_unknown_route_of_a_rest_api_is_missing_authentication_token(rest_gateway):
    for path in ("/prod/nope", "/prod", "/prod/pets/1/extra"):
        r = get(f"{rest_gateway.url}{path}")
        assert r.status_code == 403, path
        assert r.json() == {"message": "Missing Authentication Token"}
        assert r.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
        assert r.headers["x-amzn-requestid"]
    r = httpx.delete(f"{rest_gateway.url}/prod/pets/1", timeout=5)   # no DELETE method
    assert r.status_code == 403


def test_mock_integration_answers_its_template(rest_gateway):
    r = get(f"{rest_gateway.url}/dev/status")
    assert r.status_code == 200
    assert r.headers["x-mock"] == "yes"
    body = r.json()
    assert body["stage"] == "dev"
    assert body["id"] == r.headers["x-request-id"]


def test_execute_api_host_and_restapis_path(rest_gateway):
    r = get(f"{rest_gateway.url}/prod/pets/5", headers={"Host": "petstore01.execute-api.localhost"})
    assert r.json()["path"] == "/echo/pet/5"
    r = get(f"{rest_gateway.url}/restapis/petstore01/dev/_user_request_/pets/6")
    assert r.json()["path"] == "/echo/pet/6" and hdr(r.json(), "x-color") == "green"
    # another API id on an execute-api host: no other API answers for it
    r = get(f"{rest_gateway.url}/prod/pets/5", headers={"Host": "other.execute-api.localhost"})
    assert r.status_code == 403 and r.json() == {"message": "Forbidden"}


def test_custom_domain_base_path_mappings(rest_gateway):
    host = {"Host": "API.example.com:8443"}
    r = get(f"{rest_gateway.url}/v1/pets/3", headers=host)
    assert r.status_code == 200 and hdr(r.json(), "x-color") == "blue"   # v1 -> prod
    r = get(f"{rest_gateway.url}/pets/3", headers=host)
    assert r.status_code == 200 and hdr(r.json(), "x-color") == "green"  # (none) -> dev
    # the stage name is not part of a custom domain's paths
    r = get(f"{rest_gateway.url}/prod/pets/3", headers=host)
    assert r.status_code == 403 and r.json() == {"message": "Missing Authentication Token"}


def test_custom_domain_without_a_root_mapping_is_forbidden(tmp_path, up):
    (tmp_path / "petstore.json").write_text(json.dumps(petstore(up.port)))
    gw = Gateway(tmp_path, f"""\
        apis:
          - openapi: petstore.json
            id: petstore01
            stages: {{prod: {{variables: {{port: "{up.port}"}}}}}}
        domains:
          - name: api.example.com
            mappings: [{{base_path: v1, api: petstore01, stage: prod}}]
        """)
    try:
        r = get(f"{gw.url}/v2/pets/1", headers={"Host": "api.example.com"})
        assert r.status_code == 403 and r.json() == {"message": "Forbidden"}
        assert get(f"{gw.url}/v1/pets/1", headers={"Host": "api.example.com"}).status_code == 200
    finally:
        gw.stop()


def test_http_api_semantics(tmp_path, up):
    (tmp_path / "items.json").write_text(json.dumps(http_api(up.port)))
    port = free_port()
    p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "--openapi", str(tmp_path / "items.json"),
              "--listen", f"127.0.0.1:{port}", "--control", "off"], cwd=str(tmp_path))
    try:
        wait_port(port, p.proc)
        r = get(f"http://127.0.0.1:{port}/items/9")    # $default stage: at the root
        assert r.status_code == 200 and r.json()["path"] == "/echo/items/9"
        assert r.headers["apigw-requestid"] == r.headers["x-request-id"]
        assert "x-amzn-requestid" not in r.headers
        r = get(f"http://127.0.0.1:{port}/nothing")
        assert r.status_code == 404 and r.json() == {"message": "Not Found"}
        assert "x-amzn-errortype" not in r.headers
    finally:
        p.stop()


def test_openapi_flag_with_a_stage(tmp_path, up):
    (tmp_path / "api.json").write_text(json.dumps(petstore(up.port)))
    port = free_port()
    p = Proc([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "--openapi", str(tmp_path / "api.json"),
              "--stage", "prod", "--listen", f"127.0.0.1:{port}", "--control", "off"], cwd=str(tmp_path))
    try:
        wait_port(port, p.proc)
        assert get(f"http://127.0.0.1:{port}/prod/pets/1").json()["path"] == "/echo/pet/1"
        assert get(f"http://127.0.0.1:{port}/pets/1").status_code == 404   # nothing at the root
        # /pets takes its port from a stage variable this stage does not set
        r = get(f"http://127.0.0.1:{port}/prod/pets")
        assert r.status_code == 500 and r.json() == {"message": "Internal server error"}
    finally:
        out = p.output()
    assert "stage variable 'port' is not set" in out
    assert "GET /pets" in out


def test_openapi_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"openapi": "3.0.1", "info": {"title": "x", "version": "1"}, "paths": {"/a": '
                   '{"get": {"x-amazon-apigateway-integration": {"uri": "http://x"}}}}}')
    import subprocess
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "--openapi", str(bad),
                        "--control", "off"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "paths./a.get" in r.stderr and "type" in r.stderr
    missing = subprocess.run([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "--openapi",
                              str(tmp_path / "nope.json")], capture_output=True, text=True, timeout=30)
    assert missing.returncode == 2 and "nope.json" in missing.stderr


def test_admin_routes_lists_api_stages(rest_gateway):
    doc = httpx.get(f"http://127.0.0.1:{rest_gateway.admin_port}/routes", timeout=5).json()
    stages = {(a["api"], a["stage"]) for a in doc["apis"]}
    assert stages == {("petstore01", "dev"), ("petstore01", "prod")}
    prod = next(a for a in doc["apis"] if a["stage"] == "prod")
    assert prod["type"] == "REST"
    assert {"method": "GET", "path": "/pets/{petId}", "integration": "HTTP_PROXY"} in prod["routes"]


def test_http_api_default_route_catches_what_no_route_matches(tmp_path, up):
    doc = {
        "openapi": "3.0.1", "info": {"title": "Catch", "version": "1"},
        "paths": {
            "/pets": {"get": {"x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "GET", "payloadFormatVersion": "1.0",
                "uri": f"http://127.0.0.1:{up.port}/echo/pets"}}},
            "$default": {"x-amazon-apigateway-any-method": {"x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "ANY", "payloadFormatVersion": "1.0",
                "uri": f"http://127.0.0.1:{up.port}/echo/default"}}},
        },
    }
    (tmp_path / "http.json").write_text(json.dumps(doc))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis:
          - {openapi: http.json, id: catchall1, stages: {$default: {}}}
        """)
    try:
        with httpx.Client(base_url=g.url, timeout=5) as c:
            assert c.get("/pets").json()["path"] == "/echo/pets"
            assert c.get("/anything/else").json()["path"] == "/echo/default"
            assert c.post("/pets").json()["path"] == "/echo/default"    # no POST /pets route
            assert c.get("/").json()["path"] == "/echo/default"
    finally:
        g.stop()
