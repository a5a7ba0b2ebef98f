"""load_document (fastgate/control/openapi/load.py): JSON and YAML text, duplicate keys, errors with lines."""

import json

import pytest

from fastgate.control.openapi import OpenAPIError, load_document
from tests.control.openapi.documents import load


def test_load_json_and_yaml_give_the_same_document():
    as_json = load("petstore-swagger2.json")
    as_yaml = load_document(json.dumps(as_json).encode())
    assert as_yaml == as_json


def test_load_yaml_keeps_dates_and_status_codes_as_strings():
    doc = load("petstore-oas3.yaml")
    assert doc["info"]["version"] == "2016-09-12T23:19:28Z"
    assert list(doc["paths"]["/pets"]["get"]["responses"]) == ["200"]


def test_load_reports_json_syntax_with_line():
    with pytest.raises(OpenAPIError, match=r"^api\.json:3:3: invalid JSON: Expecting ','"):
        load_document('{\n "a": 1\n  "b": 2\n}', "api.json")


def test_load_reports_yaml_syntax_with_line():
    with pytest.raises(OpenAPIError, match=r"^api\.yaml:3:14: invalid YAML: expected the node"):
        load_document("openapi: 3.0.1\npaths:\n  /a: {get: [}\n", "api.yaml")


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', "a: 1\na: 2\n"])
def test_load_rejects_duplicate_keys(text):
    with pytest.raises(OpenAPIError, match="duplicate key 'a'"):
        load_document(text, "dup")


@pytest.mark.parametrize("text", ["[1, 2]", "just text", ""])
def test_load_rejects_non_objects(text):
    with pytest.raises(OpenAPIError, match="an OpenAPI document is a JSON/YAML object"):
        load_document(text, "x.yaml")


def test_load_rejects_non_utf8():
    with pytest.raises(OpenAPIError, match=r"x\.json: not UTF-8"):
        load_document(b'{"a": "\xff"}', "x.json")
