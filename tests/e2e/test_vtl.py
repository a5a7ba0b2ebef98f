"""Mock integrations with Velocity mapping templates, served from an OpenAPI document
through a real fastgate process and called with httpx."""

from __future__ import annotations

import json

import httpx

from conftest import Gateway


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
    finally:
        g.stop()
