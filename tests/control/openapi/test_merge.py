"""PutRestApi's merge and overwrite (fastgate/control/openapi/merge.py)."""

import json

import pytest

from fastgate.control.openapi import OpenAPIError, import_openapi
from tests.control.openapi.documents import imported, load, method, resource


def test_overwrite_keeps_identity_and_replaces_definition():
    existing = imported("petstore-swagger2.json")
    existing["tags"] = {"team": "pets"}
    api, _ = import_openapi(load("greedy-proxy.json"), existing=existing, mode="overwrite")
    assert api["id"] == existing["id"] and api["createdDate"] == existing["createdDate"]
    assert api["rootResourceId"] == existing["rootResourceId"]
    assert [r["path"] for r in api["resources"]] == ["/", "/{proxy+}"]
    assert api["name"] == "PetStoreWithProxyResource"
    assert api["models"] == [] and api["tags"] == {"team": "pets"}


def test_merge_replaces_same_methods_and_keeps_the_rest():
    existing = imported("petstore-swagger2.json")
    update = {
        "swagger": "2.0", "info": {"title": "PetStore v2", "version": "2"},
        "paths": {
            "/pets": {"get": {
                "responses": {"200": {"description": "ok"}, "400": {"description": "bad"}},
                "x-amazon-apigateway-integration": {
                    "type": "http_proxy", "httpMethod": "GET", "uri": "https://new.example.com/pets"}}},
            "/owners": {"get": {"responses": {}, "x-amazon-apigateway-integration": {
                "type": "mock", "requestTemplates": {"application/json": "{\"statusCode\": 200}"}}}},
        },
        "definitions": {"Pet": {"type": "object"}},
    }
    api, _ = import_openapi(update, existing=existing, mode="merge")
    assert api["id"] == existing["id"] and api["name"] == "PetStore v2"
    assert api["description"] == existing["description"]
    pets = resource(api, "/pets")
    assert pets["id"] == resource(existing, "/pets")["id"]
    assert sorted(pets["resourceMethods"]) == ["GET", "OPTIONS", "POST"]
    assert sorted(pets["resourceMethods"]["GET"]["methodResponses"]) == ["200", "400"]
    assert pets["resourceMethods"]["POST"] == method(existing, "/pets", "POST")
    owners = resource(api, "/owners")
    assert owners["parentId"] == existing["rootResourceId"]
    models = {m["name"]: m for m in api["models"]}
    old_pet = next(m for m in existing["models"] if m["name"] == "Pet")
    assert models["Pet"]["id"] == old_pet["id"]
    assert json.loads(models["Pet"]["schema"])["type"] == "object"
    assert "properties" not in json.loads(models["Pet"]["schema"])
    assert "NewPet" in models


def test_merge_keeps_authorizer_ids_used_by_methods():
    existing = imported("cognito-authorizer.json")
    api, _ = import_openapi(load("cognito-authorizer.json"), existing=existing, mode="merge")
    assert api["authorizers"] == existing["authorizers"]
    assert method(api, "/notes", "GET")["authorizerId"] == existing["authorizers"][0]["id"]


def test_mode_must_be_known():
    with pytest.raises(OpenAPIError, match="mode: 'replace'"):
        import_openapi(load("greedy-proxy.json"), existing=imported("greedy-proxy.json"),
                       mode="replace")
