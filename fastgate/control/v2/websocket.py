"""What apigatewayv2 takes only for WebSocket APIs (protocolType WEBSOCKET): the route
selection expression, route keys, route responses, integration responses, and the checks
that differ from HTTP APIs' (integration types, authorizers' identity sources, $connect-only
authorization). The deployed API is served by fastgate/compile/websocket.py
(docs/websocket.md#the-management-api)."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import _clone
from fastgate.control.v2.base import V2Base, fresh_id, is_lambda_arn, page

WEBSOCKET = "WEBSOCKET"
RESERVED_ROUTES = ("$connect", "$disconnect", "$default")
# AWS: "$request.body.action"; braces are allowed around the variable
_SELECTION = re.compile(r"^\$(\{request\.body\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*\}"
                        r"|request\.body\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*)$")
API_KEY_SELECTIONS = ("$request.header.x-api-key", "$context.authorizer.usageIdentifierKey")
INTEGRATION_TYPES = ("AWS_PROXY", "HTTP", "HTTP_PROXY", "MOCK")
# the only route response key, and route response selection expression, AWS takes for
# WebSocket APIs ("You can only define the $default route response")
DEFAULT_KEY = "$default"
# integration response keys: $default, or a status pattern /2\d\d/ (AWS's selection)
_RESPONSE_KEY = re.compile(r"^(\$default|/.+/)$")
# a WebSocket API's identity sources (no $, unlike HTTP APIs')
IDENTITY = re.compile(r"^(route\.request\.(header|querystring)|stageVariables|context)\.[^\s,]+$")
MAX_TIMEOUT_MS = 29000          # AWS: 50 ms - 29 s for WebSocket APIs
ROUTE_RESPONSE_IN = ("modelSelectionExpression", "responseModels", "responseParameters",
                     "routeResponseKey")
INTEGRATION_RESPONSE_IN = ("contentHandlingStrategy", "integrationResponseKey",
                           "responseParameters", "responseTemplates", "templateSelectionExpression")
CONTENT_HANDLING = ("CONVERT_TO_BINARY", "CONVERT_TO_TEXT")


def is_websocket(api: dict) -> bool:
    return api.get("protocolType") == WEBSOCKET


def check_selection(expr) -> str:
    if expr is None:
        raise BadRequest("RouteSelectionExpression is required for WEBSOCKET APIs")
    if not isinstance(expr, str) or not _SELECTION.match(expr):
        raise BadRequest(f"Unsupported route selection expression: {expr}. Use "
                         "$request.body.NAME (a JSON field of the message, dotted for nested ones)")
    return expr


def check_api_key_selection(expr) -> str:
    if expr is None:
        return API_KEY_SELECTIONS[0]
    if expr not in API_KEY_SELECTIONS:
        raise BadRequest(f"Invalid API key selection expression: {expr}. Must be one of "
                         f"[{', '.join(API_KEY_SELECTIONS)}]")
    return expr


def check_ws_route_key(key) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 128:
        raise BadRequest(f"Invalid route key: {key!r}. A route key is 1 to 128 characters")
    if key.startswith("$") and key not in RESERVED_ROUTES:
        raise BadRequest(f"Invalid route key: {key}. A route key starting with $ must be one of "
                         f"{', '.join(RESERVED_ROUTES)}")
    return key


def check_model_names(api: dict, models: dict) -> None:
    """Request or response models ({key: model name}) name models of the API."""
    names = {m["name"] for m in api["models"].values()}
    for name in models.values():
        if name not in names:
            raise BadRequest(f"Invalid model specified: {name}")


def check_ws_route(api: dict, route: dict) -> None:
    """A WebSocket route's own rules: authorization and API keys only on $connect, the
    route response selection expression $default (or none), never on $disconnect."""
    key = route["routeKey"]
    atype = route.get("authorizationType") or "NONE"
    if atype not in ("NONE", "AWS_IAM", "CUSTOM"):
        raise BadRequest(f"Invalid authorization type {atype} for a WebSocket API. Must be one "
                         "of [NONE, AWS_IAM, CUSTOM]")
    if key != "$connect" and atype != "NONE":
        raise BadRequest("Currently, authorization is restricted to the $connect route only")
    if key != "$connect" and route.get("apiKeyRequired"):
        raise BadRequest("API keys are supported only on the $connect route")
    expr = route.get("routeResponseSelectionExpression")
    if expr is not None and expr != DEFAULT_KEY:
        raise BadRequest(f"Invalid route response selection expression {expr}: WebSocket APIs "
                         "support only $default")
    if expr is not None and key == "$disconnect":
        raise BadRequest("The $disconnect route cannot have a route response")
    if route.get("modelSelectionExpression") is not None:
        from fastgate.phases.websocket.models import selection_of
        try:
            selection_of(route["modelSelectionExpression"])
        except ValueError as e:
            raise BadRequest(f"Invalid model selection expression: {e}") from None
    check_model_names(api, route.get("requestModels") or {})


def check_ws_integration(integ: dict) -> None:
    itype = integ.get("integrationType")
    if itype == "AWS":
        raise BadRequest("fastgate does not serve AWS (non-proxy) integrations: use AWS_PROXY for "
                         "a Lambda function")
    if itype not in INTEGRATION_TYPES:
        raise BadRequest(f"Invalid integration type {itype}. Must be one of "
                         f"[{', '.join(INTEGRATION_TYPES)}]")
    integ.setdefault("connectionType", "INTERNET")
    if integ["connectionType"] != "INTERNET":
        raise BadRequest("WebSocket API integrations of fastgate connect over INTERNET only")
    uri = integ.get("integrationUri")
    if itype == "AWS_PROXY":
        if not is_lambda_arn(uri or ""):
            raise BadRequest(f"Invalid integration URI specified {uri}: an AWS_PROXY integration "
                             "needs a Lambda function ARN")
        integ.setdefault("integrationMethod", "POST")
    elif itype in ("HTTP", "HTTP_PROXY"):
        if not uri or not (re.match(r"^https?://[^/?#\s]+", uri) or uri.startswith("${stageVariables.")):
            raise BadRequest(f"Invalid HTTP endpoint specified for URI: {uri}")
        method = integ.setdefault("integrationMethod", "POST")
        if not (isinstance(method, str) and method.isalpha() and method.isupper()):
            raise BadRequest(f"Invalid integration method {method}")
    elif uri:
        raise BadRequest("A MOCK integration has no IntegrationUri")
    integ.setdefault("payloadFormatVersion", "1.0")
    if integ["payloadFormatVersion"] != "1.0":
        raise BadRequest("WebSocket APIs support only payload format version 1.0")
    timeout = integ.setdefault("timeoutInMillis", MAX_TIMEOUT_MS)
    if not isinstance(timeout, int) or not 50 <= timeout <= MAX_TIMEOUT_MS:
        raise BadRequest(f"Invalid timeoutInMillis {timeout}: must be between 50 and {MAX_TIMEOUT_MS}")
    check_template_selection(integ, "request")
    templates = integ.get("requestTemplates")
    if templates is not None:
        if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
            raise BadRequest("Invalid requestTemplates: must be a map of strings")
        compile_templates(templates, "requestTemplates")
    if itype == "MOCK":
        mock_status(integ)
    for k in ("requestParameters", "responseParameters", "tlsConfig", "integrationSubtype"):
        if integ.get(k):
            raise BadRequest(f"{k[0].upper() + k[1:]} is not supported by fastgate for WebSocket "
                             "API integrations")


def check_template_selection(item: dict, what: str) -> None:
    tse = item.get("templateSelectionExpression")
    if tse is not None and tse not in ("\\$default", DEFAULT_KEY):
        raise BadRequest(f"Unsupported template selection expression {tse}: fastgate selects the "
                         f"$default {what} template (\\$default)")


def compile_templates(templates: dict, what: str) -> None:
    """Velocity templates compile as the data plane will compile them."""
    from fastgate.phases.vtl import MappingError, compile_template
    for key, text in templates.items():
        try:
            compile_template(text, f"{what}.{key}")
        except MappingError as e:
            raise BadRequest(f"Invalid mapping template for {key}: {e}") from None


def mock_status(integ: dict) -> int:
    """A MOCK integration's status: its $default request template's statusCode, as AWS reads
    it ({"statusCode": 200}); 200 without one."""
    import json
    text = (integ.get("requestTemplates") or {}).get(DEFAULT_KEY)
    if text is None:
        return 200
    try:
        status = json.loads(text).get("statusCode", 200)
    except (ValueError, AttributeError):
        raise BadRequest('A MOCK integration\'s $default request template is JSON with a '
                         'statusCode, e.g. {"statusCode": 200}') from None
    if not isinstance(status, int) or not 100 <= status <= 599:
        raise BadRequest(f"Invalid statusCode {status!r} in the MOCK request template")
    return status


def check_ws_authorizer(auth: dict) -> None:
    if auth.get("authorizerType") != "REQUEST":
        raise BadRequest(f"Invalid authorizer type {auth.get('authorizerType')}. WebSocket APIs "
                         "support only REQUEST authorizers")
    sources = auth.get("identitySource") or []
    if not isinstance(sources, list):
        raise BadRequest("Invalid identitySource: must be a list")
    for s in sources:
        if not isinstance(s, str) or not IDENTITY.match(s):
            raise BadRequest(f"Invalid identity source specified: {s}. Use "
                             "route.request.header.NAME, route.request.querystring.NAME, "
                             "stageVariables.NAME or context.NAME")
    uri = auth.get("authorizerUri") or ""
    if not is_lambda_arn(uri):
        raise BadRequest(f"Invalid Authorizer URI: {uri}. Authorizer URI should be a valid API "
                         "Gateway ARN that represents a Lambda function invocation.")
    for k in ("authorizerPayloadFormatVersion", "enableSimpleResponses", "jwtConfiguration"):
        if auth.get(k) is not None:
            raise BadRequest(f"{k[0].upper() + k[1:]} is supported only for HTTP APIs")
    ttl = auth.get("authorizerResultTtlInSeconds")
    if ttl is not None and (not isinstance(ttl, int) or not 0 <= ttl <= 3600):
        raise BadRequest("AuthorizerResultTtlInSeconds must be between 0 and 3600")


def _check_route_response(api: dict, route: dict, rr: dict) -> None:
    if rr.get("routeResponseKey") != DEFAULT_KEY:
        raise BadRequest("Only the $default route response is supported for WebSocket APIs")
    if route["routeKey"] == "$disconnect":
        raise BadRequest("The $disconnect route cannot have a route response")
    check_model_names(api, rr.get("responseModels") or {})


def _check_integration_response(api: dict, integ: dict, ir: dict) -> None:
    key = ir.get("integrationResponseKey")
    if not isinstance(key, str) or not _RESPONSE_KEY.match(key):
        raise BadRequest(f"Invalid integration response key {key}: use $default or a status "
                         "pattern such as /2\\d\\d/")
    if key != DEFAULT_KEY:
        try:
            re.compile(key[1:-1])
        except re.error as e:
            raise BadRequest(f"Invalid integration response key {key}: {e}") from None
    templates = ir.get("responseTemplates")
    if templates is not None:
        if not isinstance(templates, dict) or not all(isinstance(v, str) for v in templates.values()):
            raise BadRequest("Invalid responseTemplates: must be a map of strings")
        compile_templates(templates, "responseTemplates")
    check_template_selection(ir, "response")
    chs = ir.get("contentHandlingStrategy")
    if chs is not None and chs not in CONTENT_HANDLING:
        raise BadRequest(f"Invalid content handling strategy {chs}")
    if ir.get("responseParameters"):
        raise BadRequest("ResponseParameters are not supported by fastgate for WebSocket "
                         "integration responses (a WebSocket message has no headers)")


class _Kind:
    """One kind of response kept under its parent (a route's route responses, an
    integration's integration responses): its names, fields and check."""

    def __init__(self, name: str, parents: str, parent_id: str, parent_what: str, fields, check):
        self.name = name                    # "routeResponse"
        self.table = name + "s"             # the parent's member holding them by id
        self.id_key = name + "Id"
        self.key = name + "Key"
        self.what = name[0].upper() + name[1:]
        self.parents, self.parent_id, self.parent_what = parents, parent_id, parent_what
        self.fields = fields
        self.out = (self.id_key, *fields)
        self.check = check
        self.refusal = f"{parent_what} responses are supported only for WebSocket APIs"

    def view(self, item: dict) -> dict:
        return {k: _clone(item[k]) for k in self.out if item.get(k) is not None}


ROUTE_RESPONSE = _Kind("routeResponse", "routes", "routeId", "Route", ROUTE_RESPONSE_IN,
                       _check_route_response)
INTEGRATION_RESPONSE = _Kind("integrationResponse", "integrations", "integrationId",
                             "Integration", INTEGRATION_RESPONSE_IN, _check_integration_response)


class WebSocketResponses(V2Base):
    """Route responses and integration responses (WebSocket APIs only, as on AWS): the same
    five operations over each _Kind."""

    def _parent(self, kind: _Kind, p: dict, edit: bool = False) -> tuple[dict, dict]:
        api = self._edit_api2(p["apiId"]) if edit else self._api2(p["apiId"])
        parent = self._child(api, kind.parents, p[kind.parent_id], kind.parent_what)
        if not is_websocket(api):
            raise BadRequest(kind.refusal)
        return api, parent

    @staticmethod
    def _item(kind: _Kind, parent: dict, p: dict) -> dict:
        item = (parent.get(kind.table) or {}).get(p[kind.id_key])
        if item is None:
            raise NotFound(f"Invalid {kind.what} identifier specified {p[kind.id_key]}")
        return item

    @staticmethod
    def _checked(kind: _Kind, api: dict, parent: dict, item: dict) -> None:
        kind.check(api, parent, item)
        for other in parent[kind.table].values():
            if other[kind.key] == item[kind.key] and other[kind.id_key] != item[kind.id_key]:
                raise Conflict(f"{kind.what} with key {item[kind.key]} already exists")

    def _create(self, kind: _Kind, p: dict) -> dict:
        with self.change() as txn:
            api, parent = self._parent(kind, p, edit=True)
            item = {k: _clone(p[k]) for k in kind.fields if p.get(k) is not None}
            table = parent.setdefault(kind.table, {})
            item[kind.id_key] = fresh_id(table, 6)
            table[item[kind.id_key]] = item
            self._checked(kind, api, parent, item)
            self._save_api2(txn, api)
        return kind.view(item)

    def _get(self, kind: _Kind, p: dict) -> dict:
        self.fresh()
        return kind.view(self._item(kind, self._parent(kind, p)[1], p))

    def _list(self, kind: _Kind, p: dict) -> dict:
        self.fresh()
        items = sorted((self._parent(kind, p)[1].get(kind.table) or {}).values(),
                       key=lambda r: r[kind.key])
        return page([kind.view(r) for r in items], p)

    def _update(self, kind: _Kind, p: dict) -> dict:
        with self.change() as txn:
            api, parent = self._parent(kind, p, edit=True)
            item = self._item(kind, parent, p)
            for k in kind.fields:
                if p.get(k) is not None:
                    item[k] = _clone(p[k])
            self._checked(kind, api, parent, item)
            self._save_api2(txn, api)
        return kind.view(item)

    def _delete(self, kind: _Kind, p: dict) -> dict:
        with self.change() as txn:
            api, parent = self._parent(kind, p, edit=True)
            self._item(kind, parent, p)
            del parent[kind.table][p[kind.id_key]]
            self._save_api2(txn, api)
        return {}

    def create_route_response(self, p: dict) -> dict:
        return self._create(ROUTE_RESPONSE, p)

    def get_route_response(self, p: dict) -> dict:
        return self._get(ROUTE_RESPONSE, p)

    def get_route_responses(self, p: dict) -> dict:
        return self._list(ROUTE_RESPONSE, p)

    def update_route_response(self, p: dict) -> dict:
        return self._update(ROUTE_RESPONSE, p)

    def delete_route_response(self, p: dict) -> dict:
        return self._delete(ROUTE_RESPONSE, p)

    def create_integration_response(self, p: dict) -> dict:
        return self._create(INTEGRATION_RESPONSE, p)

    def get_integration_response(self, p: dict) -> dict:
        return self._get(INTEGRATION_RESPONSE, p)

    def get_integration_responses(self, p: dict) -> dict:
        return self._list(INTEGRATION_RESPONSE, p)

    def update_integration_response(self, p: dict) -> dict:
        return self._update(INTEGRATION_RESPONSE, p)

    def delete_integration_response(self, p: dict) -> dict:
        return self._delete(INTEGRATION_RESPONSE, p)
