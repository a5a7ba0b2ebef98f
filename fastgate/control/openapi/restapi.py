"""The RestApi's own fields from the document's root: its x-amazon-apigateway-* extensions
(binary media types, compression, API key source, policy, gateway responses, endpoint
configuration), servers and tags."""

from __future__ import annotations

import copy
import json

from fastgate.control.names import API_KEY_SOURCES, GATEWAY_RESPONSE_STATUS
from fastgate.control.openapi.document import Document, OpenAPIError
from fastgate.control.openapi.documentation import EXTENSION as DOCUMENTATION
from fastgate.control.openapi.documentation import read_documentation
from fastgate.control.openapi.fields import (
    is_aws_extension,
    not_implemented,
    status_code,
    string_map,
)
from fastgate.control.openapi.validators import DEFINITIONS as VALIDATORS
from fastgate.control.openapi.validators import EXTENSION as VALIDATOR

_ENDPOINT = "x-amazon-apigateway-endpoint-configuration"
# Extensions understood at the document's root; the rest of x-amazon-apigateway-* warn.
_KEPT = ("x-amazon-apigateway-cors", "x-amazon-apigateway-importexport-version")


def read_root(document: Document, api: dict, extensions: dict, warnings: list[str]) -> None:
    """Set the RestApi fields that the root's extensions, servers and tags give; keep the
    other root extensions in `extensions`, for export."""
    doc = document.root
    for key, value in doc.items():
        if not key.startswith("x-"):
            continue
        where = key
        if key == "x-amazon-apigateway-binary-media-types":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise OpenAPIError(f"{where}: must be a list of media types")
            api["binaryMediaTypes"] = list(value)
        elif key == "x-amazon-apigateway-minimum-compression-size":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10485760:
                raise OpenAPIError(f"{where}: must be an integer from 0 to 10485760")
            api["minimumCompressionSize"] = value
        elif key == "x-amazon-apigateway-api-key-source":
            if not isinstance(value, str) or value.upper() not in API_KEY_SOURCES:
                raise OpenAPIError(f"{where}: must be HEADER or AUTHORIZER, not {value!r}")
            api["apiKeySource"] = value.upper()
        elif key == "x-amazon-apigateway-policy":
            api["policy"] = _policy(value, where)
        elif key == "x-amazon-apigateway-gateway-responses":
            api["gatewayResponses"] = _gateway_responses(value, where)
        elif key == _ENDPOINT:
            _endpoint_configuration(api, value, where)
        elif key in (VALIDATORS, VALIDATOR):
            pass  # read by RequestValidators
        elif key == DOCUMENTATION:
            try:
                api["documentationParts"] = read_documentation(value, where, warnings)
            except ValueError as e:
                raise OpenAPIError(str(e)) from None
        elif key in _KEPT or not is_aws_extension(key):
            extensions[key] = copy.deepcopy(value)
        else:
            warnings.append(not_implemented(key, "<root>"))
            extensions[key] = copy.deepcopy(value)
    if document.v3:
        for i, server in enumerate(doc.get("servers") or ()):
            if isinstance(server, dict) and _ENDPOINT in server:
                _endpoint_configuration(api, server[_ENDPOINT], f"servers.{i}.{_ENDPOINT}")
    tags = {}
    for i, tag in enumerate(doc.get("tags") or ()):
        if isinstance(tag, dict) and "x-amazon-apigateway-tag-value" in tag:
            if not isinstance(tag.get("name"), str):
                raise OpenAPIError(
                    f"tags.{i}.name: required with x-amazon-apigateway-tag-value")
            tags[tag["name"]] = str(tag["x-amazon-apigateway-tag-value"])
    if tags:
        api["tags"] = tags


def _policy(value, where: str) -> str:
    # AWS stores the resource policy as a JSON string; the document carries an object.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise OpenAPIError(f"{where}: not a JSON policy: {exc.msg}") from None
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an IAM policy object")
    return json.dumps(value, separators=(",", ":"))


def _endpoint_configuration(api: dict, value, where: str) -> None:
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an object")
    for key, item in value.items():
        if key == "vpcEndpointIds":
            if not (isinstance(item, list) and all(isinstance(v, str) for v in item)):
                raise OpenAPIError(f"{where}.vpcEndpointIds: must be a list of strings")
            api.setdefault("endpointConfiguration", {})["vpcEndpointIds"] = list(item)
        elif key == "disableExecuteApiEndpoint":
            if not isinstance(item, bool):
                raise OpenAPIError(f"{where}.disableExecuteApiEndpoint: must be true or false")
            api["disableExecuteApiEndpoint"] = item
        else:
            raise OpenAPIError(f"{where}.{key}: unknown property")


def _gateway_responses(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an object")
    responses = {}
    for rtype, body in value.items():
        at = f"{where}.{rtype}"
        if rtype not in GATEWAY_RESPONSE_STATUS:
            raise OpenAPIError(f"{at}: unknown gateway response type")
        if not isinstance(body, dict):
            raise OpenAPIError(f"{at}: must be an object")
        response = {"responseType": rtype}
        for key, item in body.items():
            if key == "statusCode":
                response["statusCode"] = status_code(item, f"{at}.statusCode")
            elif key in ("responseParameters", "responseTemplates"):
                response[key] = string_map(item, f"{at}.{key}")
            else:
                raise OpenAPIError(f"{at}.{key}: unknown property")
        response["defaultResponse"] = False
        responses[rtype] = response
    return responses
