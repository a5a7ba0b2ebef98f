"""Routes: route keys, authorization, targets and request parameters (route responses,
WebSocket APIs only, are in websocket.py)."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import _clone
from fastgate.control.v2.base import V2Base
from fastgate.control.v2.document import DEFAULT_ROUTE, target_integration
from fastgate.control.v2.websocket import check_ws_route, check_ws_route_key, is_websocket

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY")
# a path segment: a literal, a {param}, or a greedy {param+} (last only)
_SEGMENT = re.compile(r"^(?:[A-Za-z0-9._~!$&'()*,;=:@%-]+|\{[A-Za-z0-9._-]+\}|\{[A-Za-z0-9._-]+\+\})$")
AUTHORIZATION_TYPES = ("NONE", "AWS_IAM", "CUSTOM", "JWT")
# which authorizer type each route authorizationType needs
ROUTE_AUTHORIZER_TYPES = {"CUSTOM": "REQUEST", "JWT": "JWT"}
ROUTE_IN = ("apiKeyRequired", "authorizationScopes", "authorizationType", "authorizerId",
            "modelSelectionExpression", "operationName", "requestModels", "requestParameters",
            "routeKey", "routeResponseSelectionExpression", "target")
ROUTE_OUT = ("routeId", "routeKey", "apiGatewayManaged", "apiKeyRequired", "authorizationScopes",
             "authorizationType", "authorizerId", "modelSelectionExpression", "operationName",
             "requestModels", "requestParameters", "routeResponseSelectionExpression", "target")


def check_route_key(key) -> str:
    """An HTTP API route key: `$default`, or `METHOD /path` (AWS: "Route key must be in the
    format of 'METHOD PATH' or '$default'"); a greedy variable only as the last segment."""
    if key == DEFAULT_ROUTE:
        return key
    bad = BadRequest(f"Invalid route key: {key!r}. Route key must be '$default' or an HTTP method "
                     f"({', '.join(HTTP_METHODS)}) and a path beginning with '/', e.g. 'GET /pets/{{id}}'")
    if not isinstance(key, str) or " " not in key:
        raise bad
    method, _, path = key.partition(" ")
    if method not in HTTP_METHODS or not path.startswith("/"):
        raise bad
    if path != "/":
        segments = path[1:].split("/")
        names = set()
        for i, seg in enumerate(segments):
            if not _SEGMENT.match(seg):
                raise bad
            if seg.endswith("+}") and i != len(segments) - 1:
                raise BadRequest(f"Invalid route key: {key!r}. A greedy path variable must be the "
                                 "last segment")
            if seg.startswith("{"):
                name = seg.strip("{}+")
                if name in names:
                    raise BadRequest(f"Invalid route key: {key!r}. Duplicate path variable {name}")
                names.add(name)
    return key


def _check_request_parameters(params) -> dict:
    """Route request parameters ({"route.request.header.x": {"required": true}}), as AWS's
    RouteParameters: checked for their form; HTTP APIs keep them (WebSocket APIs use them)."""
    if not isinstance(params, dict):
        raise BadRequest("Invalid requestParameters: must be a map")
    out = {}
    for key, value in params.items():
        if not re.match(r"^route\.request\.(header|querystring|path)\.[^\s]+$", key):
            raise BadRequest(f"Invalid request parameter key: {key}. Use "
                             "route.request.{header|querystring|path}.NAME")
        if not isinstance(value, dict) or not isinstance(value.get("required", False), bool):
            raise BadRequest(f"Invalid request parameter constraints for {key}")
        out[key] = {"required": bool(value.get("required", False))}
    return out


class Routes(V2Base):
    @staticmethod
    def route_view(route: dict) -> dict:
        return {k: _clone(route[k]) for k in ROUTE_OUT if route.get(k) is not None}

    def _check_route(self, api: dict, route: dict) -> None:
        """The route as a whole, as AWS checks it on create and update."""
        ws = is_websocket(api)
        key = check_ws_route_key(route.get("routeKey")) if ws else check_route_key(route.get("routeKey"))
        for other in api["routes"].values():
            if other["routeKey"] == key and other["routeId"] != route["routeId"]:
                raise Conflict(f"Route with key {key} already exists for this API")
        atype = route.get("authorizationType") or "NONE"
        if atype not in AUTHORIZATION_TYPES:
            raise BadRequest(f"Invalid authorization type {atype}. Must be one of "
                             f"[{', '.join(AUTHORIZATION_TYPES)}]")
        route["authorizationType"] = atype
        needed = ROUTE_AUTHORIZER_TYPES.get(atype)
        if needed is None:
            route.pop("authorizerId", None)
        else:
            auth = (api.get("authorizers") or {}).get(route.get("authorizerId") or "")
            if auth is None or auth["authorizerType"] != needed:
                raise BadRequest(f"Invalid authorizer ID specified. Setting the authorization type "
                                 f"to {atype} requires a valid authorizer of type {needed}.")
        if route.get("authorizationScopes"):
            if atype != "JWT":
                raise BadRequest("Authorization scopes are supported only for routes with JWT "
                                 "authorization")
        else:
            route.pop("authorizationScopes", None)
        target = route.get("target")
        if target:
            integ_id = target_integration(route)
            if integ_id is None or integ_id not in api["integrations"]:
                raise BadRequest(f"Invalid target: {target}. A target must be "
                                 "integrations/{integrationId} of an integration of this API")
        else:
            route.pop("target", None)
        if route.get("requestParameters") is not None:
            route["requestParameters"] = _check_request_parameters(route["requestParameters"])
        if ws:
            check_ws_route(api, route)
        elif route.get("routeResponseSelectionExpression") is not None:
            raise BadRequest("RouteResponseSelectionExpression is supported only for WebSocket APIs")

    def create_route(self, p: dict) -> dict:
        def check(api, route):
            route.setdefault("apiKeyRequired", False)
            self._check_route(api, route)
        return self._create_child(p, "routes", "routeId", 7, ROUTE_IN, check, self.route_view)

    def get_route(self, p: dict) -> dict:
        return self._get_child(p, "routes", "routeId", "Route", self.route_view)

    def get_routes(self, p: dict) -> dict:
        return self._list_children(p, "routes", lambda r: r["routeKey"], self.route_view)

    def update_route(self, p: dict) -> dict:
        def before(api, route, p):
            if route.get("apiGatewayManaged") and p.get("routeKey") not in (None, route["routeKey"]):
                raise BadRequest("The route key of a route made by quick create is changed with "
                                 "UpdateApi")
            if p.get("authorizationType") in ("NONE", "AWS_IAM"):
                route.pop("authorizationScopes", None)
        return self._update_child(p, "routes", "routeId", "Route", ROUTE_IN, self._check_route,
                                  self.route_view, before)

    def delete_route(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            self._child(api, "routes", p["routeId"], "Route")
            del api["routes"][p["routeId"]]
            if (api.get("quickCreate") or {}).get("routeId") == p["routeId"]:
                api.pop("quickCreate")
            self._save_api2(txn, api)
        return {}

    def delete_route_request_parameter(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            route = self._child(api, "routes", p["routeId"], "Route")
            params = route.get("requestParameters") or {}
            if p["requestParameterKey"] not in params:
                raise NotFound(f"Invalid request parameter key specified {p['requestParameterKey']}")
            del params[p["requestParameterKey"]]
            self._save_api2(txn, api)
        return {}
