"""Mock integrations with Velocity mapping templates, served from an OpenAPI document
through a real fastgate process and called with httpx."""

from __future__ import annotations

import json

import httpx

from conftest import Gateway, wait_until


def api() -> dict:
    return {
        "openapi": "3.0.1", "info": {"title": "Mocks", "version": "1"},
        "paths": {
            "/scope": {"get": {"x-amazon-apigateway-integration": {
                "type": "mock",
                "requestTemplates": {"application/json":
                                     '{ #if( $input.params(\'scope\') == "internal" ) "statusCode": 200 '
                                     '#else "statusCode": 500 #end }'},
                "responses": {
                    "default": {"statusCode": "200", "responseTemplates": {
                        "application/json": '{"message": "Go ahead without me", "stage": "$context.stage", '
                                            '"color": "$stageVariables.color"}'}},
                    "5\\d{2}": {"statusCode": "500",   # the key is the selection pattern
                                "responseParameters": {"method.response.header.X-Why": "'scope'"},
                                "responseTemplates": {"application/json":
                                                      '{"message": "The invoked method is not supported '
                                                      'on the API resource."}'}}}}}},
            "/pets/{id}": {"post": {"x-amazon-apigateway-integration": {
                "type": "mock", "passthroughBehavior": "WHEN_NO_TEMPLATES",
                # the request template echoes into the status: 201 for a named pet, else 400
                "requestTemplates": {"application/json":
                                     '#set($b = $input.path(\'$\'))'
                                     '{"statusCode": #if($b.name && $b.name != "")201#{else}400#end}'},
                "responses": {
                    "default": {"statusCode": "201", "responseTemplates": {"application/json":
                                '{"id": "$input.params(\'id\')", "trace": "$util.escapeJavaScript($input.params(\'x-trace\'))"}'}},
                    "400": {"statusCode": "400",
                            "responseTemplates": {"application/json": '{"message": "name required"}'}}}}}},
            # what Velocity prints: Java's toString (API Gateway runs Java's Velocity)
            "/print": {"get": {"x-amazon-apigateway-integration": {
                "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
                "responses": {"default": {"statusCode": "200", "responseTemplates": {"text/plain":
                              "#set($d = $util.parseJson($input.params('x-doc')))"
                              "$d|$d.list|$d.flag|$d.none|$missing|#set($l = [1, true])$l"}}}}}},
        },
    }


def test_velocity_mocks_through_the_gateway(tmp_path):
    (tmp_path / "api.json").write_text(json.dumps(api()))
    g = Gateway(tmp_path, """\
        access_log: {path: 'off'}
        apis:
          - openapi: api.json
            id: mocks01
            stages:
              prod: {variables: {color: blue}}
        """)
    try:
        with httpx.Client(base_url=g.url, timeout=5) as c:
            r = c.get("/prod/scope", params={"scope": "internal"})
            assert r.status_code == 200
            assert r.json() == {"message": "Go ahead without me", "stage": "prod", "color": "blue"}
            r = c.get("/prod/scope", params={"scope": "public"})
            assert r.status_code == 500 and r.headers["x-why"] == "scope"
            assert r.json() == {"message": "The invoked method is not supported on the API resource."}

            r = c.post("/prod/pets/42", json={"name": "rex"}, headers={"X-Trace": 'a"b'})
            assert r.status_code == 201 and r.json() == {"id": "42", "trace": 'a"b'}
            assert c.post("/prod/pets/42", json={"kind": "cat"}).status_code == 400
            # WHEN_NO_TEMPLATES with templates defined: another media type is refused
            r = c.post("/prod/pets/42", content=b"<pet/>", headers={"Content-Type": "application/xml"})
            assert r.status_code == 415 and r.json() == {"message": "Unsupported Media Type"}
            # a body the template cannot read is a 500, never a dead worker
            r = c.post("/prod/pets/42", content=b"{not json", headers={"Content-Type": "application/json"})
            assert r.status_code == 500 and r.json() == {"message": "Internal server error"}
            assert c.get("/prod/scope", params={"scope": "internal"}).status_code == 200

            doc = '{"a": 1, "list": [{"c": 5}, "x"], "m": {"k": "v"}, "flag": true, "none": null}'
            r = c.get("/prod/print", headers={"X-Doc": doc, "Accept": "text/plain"})
            assert r.status_code == 200
            assert r.text == ('{a=1, list=[{"c":5},"x"], m={k=v}, flag=true, none=null}'
                              '|[{"c":5},"x"]|true|||[1, true]')
    finally:
        g.stop()


def http_api(port: int) -> dict:
    base = f"http://127.0.0.1:{port}"
    return {
        "openapi": "3.0.1", "info": {"title": "NonProxy", "version": "1"},
        "paths": {
            "/items": {"post": {"x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "POST", "uri": f"{base}/echo/items",
                "passthroughBehavior": "WHEN_NO_TEMPLATES",
                "requestTemplates": {"application/json":
                                     '{"name": $input.json(\'$.name\'), "by": "$input.params(\'x-user\')"}'},
                "responses": {"default": {
                    "statusCode": "201",
                    "responseParameters": {
                        "method.response.header.X-From": "integration.response.header.X-Upstream",
                        "method.response.header.X-Method": "integration.response.body.method",
                        "method.response.header.X-Fixed": "'yes'"},
                    "responseTemplates": {"application/json":
                                          '{"size": $input.path(\'$.body_size\'), '
                                          '"sha": "$input.path(\'$.body_sha256\')", '
                                          '"path": $input.json(\'$.path\')}'}}}}}},
            "/missing": {"get": {"x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "GET", "uri": f"{base}/status/404",
                "responses": {
                    "4\\d{2}": {"statusCode": "404", "responseTemplates": {
                        "application/json": '{"error": "not here", "upstream": "$util.escapeJavaScript($input.body)"}'}},
                    "default": {"statusCode": "200"}}}}},
            "/broken": {"get": {"x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "GET", "uri": f"{base}/status/500",
                "responses": {"2\\d{2}": {"statusCode": "200"}}}}},
            "/raw": {"get": {"x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "GET", "uri": f"{base}/bytes/100",
                "responses": {"default": {"statusCode": "200"}}}}},
            "/huge": {"get": {"x-amazon-apigateway-integration": {
                "type": "http", "httpMethod": "GET", "uri": f"{base}/bytes/{11 * 1024 * 1024}",
                "responses": {"default": {"statusCode": "200"}}}}},
        },
    }


def test_http_non_proxy_integration_maps_request_and_response(tmp_path, up):
    import hashlib
    (tmp_path / "api.json").write_text(json.dumps(http_api(up.port)))
    log = tmp_path / "access.log"
    g = Gateway(tmp_path, f"""\
        access_log: {{path: {log}, format: '$context.path $context.status $context.error.message'}}
        apis:
          - {{openapi: api.json, id: nonproxy1, stages: {{prod: {{}}}}}}
        """)
    try:
        with httpx.Client(base_url=g.url, timeout=5) as c:
            r = c.post("/prod/items", json={"name": "rex", "age": 3}, headers={"X-User": "alice"})
            assert r.status_code == 201, r.text
            sent = b'{"name": "rex", "by": "alice"}'    # the request template's output
            assert r.json() == {"size": len(sent), "sha": hashlib.sha256(sent).hexdigest(),
                                "path": "/echo/items"}
            assert r.headers["x-from"] == "up1" and r.headers["x-method"] == "POST"
            assert r.headers["x-fixed"] == "yes" and r.headers["content-type"] == "application/json"
            # another media type than the templates': 415 (WHEN_NO_TEMPLATES)
            r = c.post("/prod/items", content=b"name=rex",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status_code == 415 and r.json() == {"message": "Unsupported Media Type"}

            r = c.get("/prod/missing")
            assert r.status_code == 404
            assert r.json() == {"error": "not here", "upstream": "status 404"}
            assert "x-upstream" not in r.headers      # non-proxy: only mapped headers go back
            # a status no integration response selects, and no default: 500, as AWS answers
            r = c.get("/prod/broken")
            assert r.status_code == 500 and r.json() == {"message": "Internal server error"}
            # no template: the body passes through as it came
            r = c.get("/prod/raw")
            assert r.status_code == 200 and len(r.content) == 100
            # over API Gateway's 10 MB an integration response is not mapped: 502
            r = c.get("/prod/huge")
            assert r.status_code == 502 and r.json() == {"message": "Internal server error"}
            # why is for the log: AWS's body is the message alone
            line = wait_until(lambda: next((x for x in log.read_text().splitlines()
                                            if x.startswith("/prod/huge ")), None) if log.exists() else None)
            assert line.startswith("/prod/huge 502 ") and "over 10485760 bytes" in line, line
            # and the keep-alive connection serves on
            assert c.post("/prod/items", json={"name": "tom"}).status_code == 201
    finally:
        g.stop()
