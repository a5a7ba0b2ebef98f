"""Authorizers of HTTP APIs: JWT (issuer, audience, identity source) and REQUEST Lambda
authorizers (payload 1.0/2.0, simple responses, result caching by identity sources);
ResetAuthorizersCache."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, Conflict, LimitExceeded
from fastgate.control.model.base import _clone, _now
from fastgate.control.v2.base import V2Base
from fastgate.control.v2.base import is_lambda_arn
from fastgate.control.v2.websocket import check_ws_authorizer, is_websocket
from fastgate.control.model.authorizer_caches import GENERATION

AUTHORIZER_IN = ("authorizerCredentialsArn", "authorizerPayloadFormatVersion",
                 "authorizerResultTtlInSeconds", "authorizerType", "authorizerUri",
                 "enableSimpleResponses", "identitySource", "identityValidationExpression",
                 "jwtConfiguration", "name")
AUTHORIZER_OUT = ("authorizerId", *AUTHORIZER_IN)
MAX_AUTHORIZERS = 10        # AWS's quota per API
# an identity source of an HTTP API: $request.header.X, $request.querystring.X, $context.X,
# $stageVariables.X
_IDENTITY = re.compile(r"^\$(request\.(header|querystring)|context|stageVariables)\.[^\s,]+$")


class Authorizers(V2Base):
    @staticmethod
    def authorizer_view(auth: dict) -> dict:
        return {k: _clone(auth[k]) for k in AUTHORIZER_OUT if auth.get(k) is not None}

    @staticmethod
    def _check_authorizer(api: dict, auth: dict) -> None:
        atype = auth.get("authorizerType")
        if is_websocket(api):
            check_ws_authorizer(auth)
        elif atype not in ("JWT", "REQUEST"):
            raise BadRequest(f"Invalid authorizer type {atype}. Must be one of [REQUEST, JWT]")
        if not auth.get("name"):
            raise BadRequest("Name must not be blank")
        for other in api["authorizers"].values():
            if other["name"] == auth["name"] and other["authorizerId"] != auth["authorizerId"]:
                raise Conflict(f"Authorizer name {auth['name']} already exists for this API")
        if is_websocket(api):
            return
        sources = auth.get("identitySource") or []
        if not isinstance(sources, list):
            raise BadRequest("Invalid identitySource: must be a list")
        for s in sources:
            if not isinstance(s, str) or not _IDENTITY.match(s):
                raise BadRequest(f"Invalid identity source specified: {s}. Use $request.header.NAME, "
                                 "$request.querystring.NAME, $context.NAME or $stageVariables.NAME")
        if atype == "JWT":
            cfg = auth.get("jwtConfiguration") or {}
            if not cfg.get("issuer"):
                raise BadRequest("JwtConfiguration.Issuer is required for a JWT authorizer")
            if not cfg.get("audience"):
                raise BadRequest("JwtConfiguration.Audience needs at least one entry for a JWT "
                                 "authorizer")
            if len(sources) != 1 or not sources[0].startswith("$request.header."):
                raise BadRequest("A JWT authorizer takes exactly one identity source, a header "
                                 "($request.header.Authorization)")
            for k in ("authorizerUri", "authorizerPayloadFormatVersion", "enableSimpleResponses",
                      "authorizerResultTtlInSeconds", "authorizerCredentialsArn"):
                if auth.get(k) is not None:
                    raise BadRequest(f"{k[0].upper() + k[1:]} is not supported for JWT authorizers")
            return
        uri = auth.get("authorizerUri") or ""
        if not (is_lambda_arn(uri) or uri.startswith(("http://", "https://"))):
            raise BadRequest(f"Invalid Authorizer URI: {uri}. Authorizer URI should be a valid API "
                             "Gateway ARN that represents a Lambda function invocation.")
        fmt = auth.get("authorizerPayloadFormatVersion")
        if fmt not in ("1.0", "2.0"):
            raise BadRequest("AuthorizerPayloadFormatVersion is required for REQUEST authorizers "
                             "(1.0 or 2.0)")
        if auth.get("enableSimpleResponses") and fmt != "2.0":
            raise BadRequest("Simple responses are supported only with payload format version 2.0")
        ttl = auth.setdefault("authorizerResultTtlInSeconds", 0)
        if not isinstance(ttl, int) or not 0 <= ttl <= 3600:
            raise BadRequest("AuthorizerResultTtlInSeconds must be between 0 and 3600")
        if ttl > 0 and not sources:
            raise BadRequest("IdentitySource is required when authorizer caching is enabled: the "
                             "identity sources are the cache key")
        auth.setdefault("enableSimpleResponses", False)

    def create_authorizer(self, p: dict) -> dict:
        def check(api, auth):
            if len(api["authorizers"]) >= MAX_AUTHORIZERS:
                raise LimitExceeded(f"The maximum number of authorizers ({MAX_AUTHORIZERS}) for "
                                    "this API has been reached")
            self._check_authorizer(api, auth)
        return self._create_child(p, "authorizers", "authorizerId", 6, AUTHORIZER_IN, check,
                                  self.authorizer_view)

    def get_authorizer(self, p: dict) -> dict:
        return self._get_child(p, "authorizers", "authorizerId", "Authorizer", self.authorizer_view)

    def get_authorizers(self, p: dict) -> dict:
        return self._list_children(p, "authorizers", lambda a: a["name"], self.authorizer_view)

    def update_authorizer(self, p: dict) -> dict:
        def check(api, auth):
            self._check_authorizer(api, auth)
            for route in api["routes"].values():
                if route.get("authorizerId") == auth["authorizerId"]:
                    needed = {"JWT": "JWT", "CUSTOM": "REQUEST"}.get(route.get("authorizationType"))
                    if needed and needed != auth["authorizerType"]:
                        raise BadRequest(f"Route {route['routeKey']} uses this authorizer with "
                                         f"authorization type {route['authorizationType']}")
        return self._update_child(p, "authorizers", "authorizerId", "Authorizer", AUTHORIZER_IN,
                                  check, self.authorizer_view)

    def delete_authorizer(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            self._child(api, "authorizers", p["authorizerId"], "Authorizer")
            users = sorted(r["routeKey"] for r in api["routes"].values()
                           if r.get("authorizerId") == p["authorizerId"])
            if users:
                raise Conflict(f"Authorizer {p['authorizerId']} is used by route(s) "
                               f"{', '.join(users)}")
            del api["authorizers"][p["authorizerId"]]
            self._save_api2(txn, api)
        return {}

    def reset_authorizers_cache(self, p: dict) -> dict:
        """Drops the stage's cached authorizer results: the stage's cache generation moves on,
        so the reload that follows compiles its authorizers with fresh caches."""
        with self.change() as txn:
            self._api2(p["apiId"])
            stage = dict(self._stage2(p["apiId"], p["stageName"]))
            stage[GENERATION] = int(stage.get(GENERATION, 0)) + 1
            stage["lastUpdatedDate"] = _now()
            txn.put("stage", p["apiId"], stage["stageName"], stage)
        return {}
