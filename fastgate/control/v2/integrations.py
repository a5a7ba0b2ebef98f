"""Integrations of HTTP APIs: HTTP_PROXY (public or through a VPC link) and AWS_PROXY (a
Lambda function, or an AWS service with integrationSubtype), payload format, timeout,
parameter mapping, TLS (WebSocket APIs' integrations and integration responses: websocket.py)."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, Conflict
from fastgate.control.model.base import _clone
from fastgate.control.v2.base import V2Base, is_lambda_arn
from fastgate.control.v2.document import target_integration
from fastgate.control.v2.websocket import check_ws_integration, is_websocket

INTEGRATION_IN = ("connectionId", "connectionType", "contentHandlingStrategy", "credentialsArn",
                  "description", "integrationMethod", "integrationSubtype", "integrationType",
                  "integrationUri", "passthroughBehavior", "payloadFormatVersion",
                  "requestParameters", "requestTemplates", "responseParameters",
                  "templateSelectionExpression", "timeoutInMillis", "tlsConfig")
INTEGRATION_OUT = ("integrationId", "apiGatewayManaged", "integrationResponseSelectionExpression",
                   *INTEGRATION_IN)
# HTTP APIs take these integration types (AWS: HTTP, MOCK and AWS are WebSocket APIs' only)
HTTP_API_TYPES = ("HTTP_PROXY", "AWS_PROXY")
PAYLOAD_FORMATS = ("1.0", "2.0")
# AWS documents 30 s as HTTP APIs' largest integration timeout; it is the default here and
# not a limit (docs/control-api.md)
DEFAULT_TIMEOUT_MS = 30000
MIN_TIMEOUT_MS = 50
_RESPONSE_KEY = re.compile(r"^(overwrite|append|remove):header\.[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def _check_response_parameters(params) -> dict:
    """{"200": {"overwrite:header.x": "v", "overwrite:statuscode": "204"}, ...}: response
    mapping by status code, as AWS's HTTP APIs take it."""
    if not isinstance(params, dict):
        raise BadRequest("Invalid responseParameters: must be a map of status codes to mappings")
    out = {}
    for status, mapping in params.items():
        if not re.fullmatch(r"[1-5]\d\d", status):
            raise BadRequest(f"Invalid status code {status} in responseParameters: must be 100-599")
        if not isinstance(mapping, dict):
            raise BadRequest(f"Invalid responseParameters for {status}: must be a map")
        for key, value in mapping.items():
            if key == "overwrite:statuscode":
                if not re.fullmatch(r"[1-5]\d\d", str(value)):
                    raise BadRequest(f"Invalid value {value} for overwrite:statuscode: must be a "
                                     "status code 100-599")
            elif not _RESPONSE_KEY.match(key):
                raise BadRequest(f"Invalid mapping key {key} in responseParameters: use "
                                 "overwrite:header.NAME, append:header.NAME, remove:header.NAME "
                                 "or overwrite:statuscode")
            if not isinstance(value, str):
                raise BadRequest(f"Invalid value for {key} in responseParameters: must be a string")
        out[status] = dict(mapping)
    return out


def _check_subtype_integration(itype, subtype: str, integ: dict) -> None:
    """A first-class AWS service integration: AWS_PROXY, payload format 1.0 (the only one the
    subtypes take), and the subtype's requestParameters as AWS defines each subtype (the
    same check the OpenAPI importer makes: fastgate.phases.aws.checks)."""
    from fastgate.phases.aws.checks import check_subtype
    if itype != "AWS_PROXY":
        raise BadRequest(f"Integration subtype {subtype} is supported only for AWS_PROXY "
                         "integrations")
    problem = check_subtype(subtype, integ.get("requestParameters"))
    if problem is not None:
        raise BadRequest(problem)
    if integ.get("payloadFormatVersion") not in (None, "1.0"):
        raise BadRequest(f"Integration subtype {subtype} supports only payload format version 1.0")


class Integrations(V2Base):
    @staticmethod
    def integration_view(integ: dict) -> dict:
        return {k: _clone(integ[k]) for k in INTEGRATION_OUT if integ.get(k) is not None}

    def _check_integration(self, api: dict, integ: dict) -> None:
        itype = integ.get("integrationType")
        if is_websocket(api):
            return check_ws_integration(integ)
        if api.get("protocolType") == "HTTP" and itype not in HTTP_API_TYPES:
            raise BadRequest(f"Integration type {itype} is not supported for HTTP APIs. Use "
                             "HTTP_PROXY or AWS_PROXY.")
        integ.setdefault("connectionType", "INTERNET")
        if integ["connectionType"] not in ("INTERNET", "VPC_LINK"):
            raise BadRequest(f"Invalid connection type {integ['connectionType']}")
        if integ["connectionType"] == "VPC_LINK":
            links = (self.state.extra.get("vpclink") or {}).get("", {})
            if integ.get("connectionId") not in links:
                raise BadRequest(f"Invalid VPC link identifier specified {integ.get('connectionId')}")
        else:
            integ.pop("connectionId", None)
        uri = integ.get("integrationUri")
        subtype = integ.get("integrationSubtype")
        if subtype is not None:
            _check_subtype_integration(itype, subtype, integ)
        if itype == "AWS_PROXY":
            fmt = integ.get("payloadFormatVersion")
            if fmt is None:
                raise BadRequest("PayloadFormatVersion is required for AWS_PROXY integrations "
                                 "(1.0 or 2.0)")
            if subtype is None and not is_lambda_arn(uri or ""):
                raise BadRequest(f"Invalid integration URI specified {uri}: an AWS_PROXY "
                                 "integration needs a Lambda function ARN (or an integrationSubtype)")
        elif itype == "HTTP_PROXY":
            integ.setdefault("payloadFormatVersion", "1.0")
            if integ["payloadFormatVersion"] != "1.0":
                raise BadRequest("HTTP_PROXY integrations support only payload format version 1.0")
            if not uri:
                raise BadRequest("IntegrationUri is required for HTTP_PROXY integrations")
            if integ["connectionType"] == "INTERNET" and not re.match(r"^https?://[^/?#\s]+", uri) \
                    and not uri.startswith("${stageVariables."):
                raise BadRequest(f"Invalid HTTP endpoint specified for URI: {uri}")
            integ.setdefault("integrationMethod", "ANY")
        if integ.get("payloadFormatVersion") not in PAYLOAD_FORMATS:
            raise BadRequest(f"Invalid payload format version {integ.get('payloadFormatVersion')}: "
                             "must be 1.0 or 2.0")
        timeout = integ.setdefault("timeoutInMillis", DEFAULT_TIMEOUT_MS)
        if not isinstance(timeout, int) or timeout < MIN_TIMEOUT_MS:
            raise BadRequest(f"Invalid timeoutInMillis {timeout}: at least {MIN_TIMEOUT_MS}")
        if integ.get("requestParameters") and subtype is None:
            # the data plane's own compiler: what it refuses, the API refuses now
            from fastgate.phases.mapping import compile_request_mapping
            try:
                compile_request_mapping({"protocolType": "HTTP"}, {},
                                        {"type": itype, "requestParameters": integ["requestParameters"]})
            except ValueError as e:
                raise BadRequest(f"Invalid mapping expression specified: {e}") from None
        if integ.get("responseParameters") is not None:
            integ["responseParameters"] = _check_response_parameters(integ["responseParameters"])
        tls = integ.get("tlsConfig")
        if tls is not None and (not isinstance(tls, dict) or set(tls) - {"serverNameToVerify"}):
            raise BadRequest("Invalid tlsConfig: only serverNameToVerify is supported")

    def create_integration(self, p: dict) -> dict:
        return self._create_child(p, "integrations", "integrationId", 7, INTEGRATION_IN,
                                  self._check_integration, self.integration_view)

    def get_integration(self, p: dict) -> dict:
        return self._get_child(p, "integrations", "integrationId", "Integration",
                               self.integration_view)

    def get_integrations(self, p: dict) -> dict:
        return self._list_children(p, "integrations", lambda i: i["integrationId"],
                                   self.integration_view)

    def update_integration(self, p: dict) -> dict:
        def before(api, integ, p):
            if p.get("connectionType") == "INTERNET":
                integ.pop("connectionId", None)
        return self._update_child(p, "integrations", "integrationId", "Integration",
                                  INTEGRATION_IN, self._check_integration, self.integration_view,
                                  before)

    def delete_integration(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            self._child(api, "integrations", p["integrationId"], "Integration")
            users = sorted(r["routeKey"] for r in api["routes"].values()
                           if target_integration(r) == p["integrationId"])
            if users:
                raise Conflict(f"Integration {p['integrationId']} is the target of route(s) "
                               f"{', '.join(users)}: change their target first")
            del api["integrations"][p["integrationId"]]
            self._save_api2(txn, api)
        return {}
