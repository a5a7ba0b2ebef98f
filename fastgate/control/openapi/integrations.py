"""Integrations: x-amazon-apigateway-integration on an operation, its responses, and API
Gateway's checks and defaults for each integration type, REST and HTTP API."""

from __future__ import annotations

import copy
import re

from fastgate.control.messages import IMPORT_WARNING_REQUEST_PARAMETER
from fastgate.control.names import (
    CONNECTION_TYPES,
    CONTENT_HANDLING,
    HTTP_METHODS,
    INTEGRATION_TYPES,
    PASSTHROUGH_BEHAVIORS,
    STAGE_VARIABLE_REF,
    STAGE_VARIABLE_REF_NAME,
)
from fastgate.control.openapi.document import OpenAPIError
from fastgate.phases.aws.checks import check_aws_uri, check_subtype
from fastgate.control.openapi.fields import (
    INTEGRATION,
    enum_value,
    is_aws_extension,
    not_implemented,
    status_code,
    string_map,
)

# x-amazon-apigateway-integration properties copied to the Integration unchanged.
_PLAIN = (
    "uri", "connectionId", "credentials", "cacheNamespace", "integrationSubtype",
    "payloadFormatVersion", "responseTransferMode", "integrationTarget")
_MAPS = ("requestParameters", "requestTemplates")


def integration(value, where: str, method: dict, rest: bool, warnings: list[str],
                resource_path: str = "") -> dict:
    """The Integration of x-amazon-apigateway-integration (`value`, its $ref resolved) on
    `method` (of the resource at `resource_path`), with the defaults API Gateway fills in;
    `rest`: of a REST API, else an HTTP API."""
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an object")
    if "type" not in value:
        raise OpenAPIError(f"{where}.type: required")
    itype = str(value["type"]).upper()
    if itype not in INTEGRATION_TYPES:
        raise OpenAPIError(f"{where}.type: {value['type']!r} is not one of "
                           "http, http_proxy, mock, aws, aws_proxy")
    integ: dict = {"type": itype}
    for key, item in value.items():
        at = f"{where}.{key}"
        if key == "type":
            continue
        if key == "httpMethod":
            if not isinstance(item, str) or item.upper() not in HTTP_METHODS:
                raise OpenAPIError(f"{at}: {item!r} is not an HTTP method")
            integ[key] = item.upper()
        elif key in _PLAIN:
            integ[key] = _plain_string(key, item, at)
        elif key == "connectionType":
            integ[key] = enum_value(item, CONNECTION_TYPES, at)
        elif key == "passthroughBehavior":
            integ[key] = enum_value(item, PASSTHROUGH_BEHAVIORS, at)
        elif key == "contentHandling":
            integ[key] = enum_value(item, CONTENT_HANDLING, at)
        elif key == "timeoutInMillis":
            if not isinstance(item, int) or isinstance(item, bool) or item < 50:
                raise OpenAPIError(f"{at}: must be an integer of at least 50")
            integ[key] = item
        elif key == "cacheKeyParameters":
            if not (isinstance(item, list) and all(isinstance(v, str) for v in item)):
                raise OpenAPIError(f"{at}: must be a list of strings")
            integ[key] = list(item)
        elif key == "requestParameters":
            integ[key] = _request_parameters(item, at, warnings, resource_path, method["httpMethod"])
        elif key in _MAPS:
            integ[key] = string_map(item, at)
        elif key == "responses":
            integ["integrationResponses"] = _responses(item, at)
        elif key == "responseParameters":
            # HTTP APIs: {"200": {"overwrite:header.x": "..."}} keyed by status code.
            if not isinstance(item, dict):
                raise OpenAPIError(f"{at}: must be an object")
            integ[key] = {str(k): string_map(v, f"{at}.{k}") for k, v in item.items()}
        elif key == "tlsConfig":
            if not isinstance(item, dict):
                raise OpenAPIError(f"{at}: must be an object")
            for tls_key in item:
                if tls_key not in ("insecureSkipVerification", "serverNameToVerify"):
                    raise OpenAPIError(f"{at}.{tls_key}: unknown property")
            integ[key] = dict(item)
        else:
            if is_aws_extension(key) or not key.startswith("x-"):
                warnings.append(not_implemented(f"{INTEGRATION}.{key}", where.rsplit(".", 1)[0]))
            integ.setdefault("extensions", {})[key] = copy.deepcopy(item)

    subtype = integ.get("integrationSubtype")
    if subtype is not None:
        # an HTTP API's first-class integration: its parameters name the service's
        if rest or itype != "AWS_PROXY":
            raise OpenAPIError(f"{where}.integrationSubtype: only an HTTP API's aws_proxy "
                               "integration has a subtype")
        problem = check_subtype(subtype, integ.get("requestParameters"))
        if problem is not None:
            raise OpenAPIError(f"{where}: {problem}")
        integ.setdefault("payloadFormatVersion", "1.0")
    elif itype != "MOCK" and "uri" not in integ:
        raise OpenAPIError(f"{where}.uri: required for a {itype.lower()} integration")
    if itype != "MOCK" and rest and "httpMethod" not in integ:
        raise OpenAPIError(f"{where}.httpMethod: required for a {itype.lower()} integration")
    if itype == "AWS" and not rest:
        raise OpenAPIError(f"{where}.type: Currently, an API with a protocol type of HTTP may "
                           "only be associated with proxy integrations (AWS_PROXY, HTTP_PROXY)")
    if "uri" in integ:
        _check_uri(integ["uri"], itype, f"{where}.uri")
    # A REST API's mappings are checked; then the defaults API Gateway fills in and
    # GetIntegration returns.
    if rest:
        _check_mappings(integ, method, where)
        integ.setdefault("passthroughBehavior", "WHEN_NO_MATCH")
        integ.setdefault("timeoutInMillis", 29000)
        integ.setdefault("cacheKeyParameters", [])
    else:
        integ.setdefault("timeoutInMillis", 30000)
        if "payloadFormatVersion" not in integ:
            if itype == "AWS_PROXY":
                raise OpenAPIError(f"{where}.payloadFormatVersion: required for an HTTP "
                                   "API's aws_proxy integration (1.0 or 2.0)")
            integ["payloadFormatVersion"] = "1.0"
        elif integ["payloadFormatVersion"] not in ("1.0", "2.0"):
            raise OpenAPIError(f"{where}.payloadFormatVersion: must be 1.0 or 2.0")
    if itype in ("HTTP", "HTTP_PROXY") or (not rest and itype != "MOCK"):
        # a REST API's AWS and AWS_PROXY integrations show no connectionType unless given
        # (AWS's recordings); an HTTP API's show INTERNET
        integ.setdefault("connectionType", "INTERNET")
    return integ


def _plain_string(key: str, item, where: str) -> str:
    """A string property; AWS's reader takes a number or boolean for one too, as its text
    (`payloadFormatVersion: 1.0` is "1.0": AWS's own import tests)."""
    if isinstance(item, str):
        return item
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, float) and key == "payloadFormatVersion":
        return f"{item:.1f}"
    if isinstance(item, (int, float)):
        return str(item)
    raise OpenAPIError(f"{where}: must be a string")


def _request_parameters(value, where: str, warnings: list[str], resource_path: str,
                        http_method: str) -> dict:
    """An integration's requestParameters: a mapping to something other than a string
    (`integration.request.header.x: true`) is dropped with AWS's warning, not refused."""
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an object of strings")
    out = {}
    for name, item in value.items():
        if isinstance(item, str):
            out[str(name)] = item
        else:
            shown = ("true" if item else "false") if isinstance(item, bool) else item
            warnings.append(IMPORT_WARNING_REQUEST_PARAMETER.format(
                name=name, resource=resource_path or "/", method=http_method, value=shown))
    return out


def _check_uri(uri: str, itype: str, where: str) -> None:
    for match in STAGE_VARIABLE_REF.finditer(uri):
        if not STAGE_VARIABLE_REF_NAME.match(match.group(1)):
            raise OpenAPIError(f"{where}: stage variable name {match.group(1)!r} may only "
                               "use A-Za-z0-9_")
    if "${stageVariables." in STAGE_VARIABLE_REF.sub("", uri):
        raise OpenAPIError(f"{where}: unclosed ${{stageVariables.…}} reference")
    if itype == "AWS":
        problem = check_aws_uri(uri)
        if problem is not None:
            raise OpenAPIError(f"{where}: {problem}")
    if itype in ("HTTP", "HTTP_PROXY") and not re.match(
            r"^(https?://|\$\{stageVariables\.)", uri, re.IGNORECASE):
        raise OpenAPIError(f"{where}: an {itype.lower()} integration needs an http:// or "
                           f"https:// URL, not {uri!r}")


def _check_mappings(integ: dict, method: dict, where: str) -> None:
    """A REST API's request parameter mappings and response header mappings."""
    declared = method.get("requestParameters", {})
    for target, source in integ.get("requestParameters", {}).items():
        at = f"{where}.requestParameters.{target}"
        if not re.match(r"^integration\.request\.(path|querystring|header|multivaluequerystring"
                        r"|multivalueheader)\.[^.\s]+$", target):
            raise OpenAPIError(f"{at}: target must be integration.request."
                               "{path|querystring|header}.NAME")
        if source.startswith("method.request.") and not source.startswith(
                "method.request.body") and source not in declared:
            # API Gateway refuses a mapping from a parameter the method does not declare.
            raise OpenAPIError(f"{at}: {source} is not a request parameter of the method "
                               "(declare it in parameters)")
    for status, response in integ.get("integrationResponses", {}).items():
        for target in response.get("responseParameters", {}):
            if not target.startswith("method.response.header."):
                raise OpenAPIError(f"{where}.responses: responseParameters target {target!r}"
                                   " must be method.response.header.NAME")


def _responses(value, where: str) -> dict:
    """x-amazon-apigateway-integration.responses, keyed by selection pattern, as the
    IntegrationResponses keyed by status code."""
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an object")
    out: dict = {}
    for pattern, body in value.items():
        at = f"{where}.{pattern}"
        if not isinstance(body, dict):
            raise OpenAPIError(f"{at}: must be an object")
        if "statusCode" not in body:
            raise OpenAPIError(f"{at}.statusCode: required")
        status = status_code(body["statusCode"], f"{at}.statusCode")
        if status in out:
            raise OpenAPIError(f"{at}: status code {status} is already used by another "
                               "response of this integration")
        response = {"statusCode": status}
        if pattern != "default":
            response["selectionPattern"] = pattern
        for key, item in body.items():
            if key == "statusCode":
                continue
            if key in ("responseParameters", "responseTemplates"):
                response[key] = string_map(item, f"{at}.{key}")
            elif key == "contentHandling":
                response[key] = enum_value(item, CONTENT_HANDLING, f"{at}.{key}")
            else:
                raise OpenAPIError(f"{at}.{key}: unknown property")
        out[status] = response
    return out
