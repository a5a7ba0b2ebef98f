"""Authorizers: AWS's rules for each type, patches, TestInvokeAuthorizer."""

from __future__ import annotations

import re

from fastgate.control import messages as msg
from fastgate.control.errors import (
    BadRequest,
    Conflict,
    LimitExceeded,
    NotFound,
    ServiceUnavailable,
)
from fastgate.control.model.base import (
    ModelBase,
    _bad_patch,
    _clone,
    _copy_known,
    _page,
    _patch_ops,
    _require_str,
    _unescape_pointer,
)
from fastgate.control.model.patching import patch_list_member
from fastgate.control.names import AUTHORIZER_TYPES, METHOD_AUTHORIZER_TYPES, new_id

AUTHORIZERS_PER_API = 10               # AWS's quota of authorizers per API
AUTHORIZER_FIELDS = ("type", "providerARNs", "authType", "authorizerUri", "authorizerCredentials",
                     "identitySource", "identityValidationExpression",
                     "authorizerResultTtlInSeconds", "jwtConfiguration")
COGNITO_POOL_ARN = re.compile(r"^arn:aws[a-z-]*:cognito-idp:[a-z0-9-]+:\d{12}:userpool/[\w-]+_[0-9A-Za-z]+$")
AUTHORIZER_URI_INVALID = ("Invalid Authorizer URI: {uri}. Authorizer URI should be a valid API "
                          "Gateway ARN that represents a Lambda function invocation.")


def _check_authorizer(auth: dict, api: dict) -> None:
    """AWS's rules for an Authorizer, checked after create and after every patch."""
    from fastgate.phases.functions.loader import LAMBDA_ARN
    atype = auth.get("type")
    if atype not in AUTHORIZER_TYPES:
        raise BadRequest(f"Invalid authorizer type specified. Valid options are "
                         f"{','.join(AUTHORIZER_TYPES)}")
    if atype == "JWT" and api.get("protocolType") != "HTTP":
        raise BadRequest("JWT authorizers are supported only for HTTP APIs")
    ttl = auth.get("authorizerResultTtlInSeconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 3600):
        raise BadRequest("Authorizer result TTL must be between 0 and 3600 seconds")
    if atype in ("TOKEN", "REQUEST"):
        uri = auth.get("authorizerUri")
        if not uri:
            raise BadRequest(f"Authorizer URI must be specified for a {atype} authorizer")
        # fastgate also calls a remote authorizer over HTTP(S) (docs/authorizers.md)
        if not uri.startswith(("http://", "https://")) and not LAMBDA_ARN.search(uri):
            raise BadRequest(AUTHORIZER_URI_INVALID.format(uri=uri))
        auth.pop("providerARNs", None)
        if auth.get("authorizerResultTtlInSeconds") is None:
            auth["authorizerResultTtlInSeconds"] = 300      # AWS's default
    if atype == "TOKEN":
        source = auth.get("identitySource")
        if not source or not re.fullmatch(r"method\.request\.header\.[!#$%&'*+\-.^_`|~0-9A-Za-z]+", source):
            raise BadRequest("Invalid identity source specified for a TOKEN authorizer: it must be "
                             "one request header, method.request.header.NAME")
    if atype == "REQUEST" and auth["authorizerResultTtlInSeconds"] > 0 and not auth.get("identitySource"):
        # the identity sources are the cache key
        raise BadRequest("Identity source must be specified for a REQUEST authorizer when "
                         "authorization caching is enabled (authorizerResultTtlInSeconds > 0)")
    if atype == "COGNITO_USER_POOLS":
        arns = auth.get("providerARNs") or []
        if not arns:
            raise BadRequest("ProviderARNs must be specified for a COGNITO_USER_POOLS authorizer")
        for arn in arns:
            if not isinstance(arn, str) or not COGNITO_POOL_ARN.match(arn):
                raise BadRequest(f"Invalid Cognito User Pool ARN: {arn}")
        auth.setdefault("identitySource", "method.request.header.Authorization")
        if auth.get("authorizerResultTtlInSeconds") is None:
            auth["authorizerResultTtlInSeconds"] = 300
    if atype == "JWT" and not (auth.get("jwtConfiguration") or {}).get("issuer"):
        raise BadRequest("jwtConfiguration.issuer must be specified for a JWT authorizer")


_AUTHORIZER_REPLACEABLE = ("name", "type", "authType", "authorizerUri", "authorizerCredentials",
                           "identitySource", "identityValidationExpression",
                           "authorizerResultTtlInSeconds")


def _patch_authorizer(auth: dict, op: dict, api: dict) -> None:
    path, value, kind = op["path"], op.get("value"), op["op"]
    top = path[1:]
    if kind == "replace" and top in _AUTHORIZER_REPLACEABLE:
        if top == "name":
            if not value:
                raise BadRequest("name must not be blank")
            if any(a.get("name") == value and a is not auth for a in api.get("authorizers", ())):
                raise Conflict(msg.AUTHORIZER_NAME_EXISTS.format(name=value))
        if top == "authorizerResultTtlInSeconds":
            if not str(value).isdigit():
                raise BadRequest(f"Invalid value '{value}' for authorizerResultTtlInSeconds")
            value = int(value)
        if value in (None, "") and top != "name":
            auth.pop(top, None)
        else:
            auth[top] = value
    elif path == "/providerARNs" and kind in ("add", "remove"):
        patch_list_member(auth, "providerARNs", kind, value)
    elif path.startswith("/providerARNs/") and kind == "remove":
        arn = _unescape_pointer(path[len("/providerARNs/"):])
        arns = auth.get("providerARNs") or []
        if arn in arns:
            arns.remove(arn)
    else:
        raise _bad_patch(op)


def _methods_of(api: dict):
    """(resource, http method, Method) of every method of an API document."""
    for resource in api.get("resources", ()):
        for verb, method in (resource.get("resourceMethods") or {}).items():
            yield resource, verb, method


def _check_method_authorizer(api: dict, auth_type: str, authorizer_id) -> None:
    """A CUSTOM / COGNITO_USER_POOLS / JWT method must name an authorizer of a matching type."""
    allowed = METHOD_AUTHORIZER_TYPES.get(auth_type)
    if allowed is None:
        return
    auth = next((a for a in api.get("authorizers", ()) if a.get("id") == authorizer_id), None)
    if auth is None or auth.get("type") not in allowed:
        raise BadRequest(msg.METHOD_NEEDS_AUTHORIZER)


class Authorizers(ModelBase):
    # ---- authorizers
    #
    # An API's authorizers are AWS's Authorizer shapes in the API document's
    # "authorizers" list, where the OpenAPI importer puts x-amazon-apigateway-authorizer
    # too, so a deployment freezes them with the methods that name them and the data
    # plane compiles both alike (fastgate.compile.access.compile_method_access).

    def _authorizer(self, api: dict, authorizer_id: str) -> dict:
        for auth in api.get("authorizers", ()):
            if auth.get("id") == authorizer_id:
                return auth
        raise NotFound(msg.INVALID_AUTHORIZER_ID)

    def create_authorizer(self, p: dict) -> dict:
        name = _require_str(p, "name", "name")
        with self.change() as txn:
            if p["restApiId"] not in self.state.apis:
                raise Conflict(msg.CONCURRENT_MODIFICATION)     # AWS's answer, odd as it is
            api = self._edit_api(p["restApiId"])
            authorizers = api.setdefault("authorizers", [])
            if len(authorizers) >= AUTHORIZERS_PER_API:
                raise LimitExceeded(f"Maximum number of Authorizers for this API has been "
                                    f"reached: {AUTHORIZERS_PER_API}")
            if any(a.get("name") == name for a in authorizers):
                raise Conflict(msg.AUTHORIZER_NAME_EXISTS.format(name=name))
            auth = {"id": new_id(6), "name": name}
            auth.update(_copy_known(p, AUTHORIZER_FIELDS))
            ids = {a.get("id") for a in authorizers}
            while auth["id"] in ids:
                auth["id"] = new_id(6)
            _check_authorizer(auth, api)
            authorizers.append(auth)
            self._save_api(txn, api)
        return _clone(auth)

    def get_authorizer(self, p: dict) -> dict:
        self.fresh()
        return _clone(self._authorizer(self._api(p["restApiId"]), p["authorizerId"]))

    def get_authorizers(self, p: dict) -> dict:
        self.fresh()
        return _page([_clone(a) for a in self._api(p["restApiId"]).get("authorizers", ())], p)

    def update_authorizer(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            auth = self._authorizer(api, p["authorizerId"])
            for op in _patch_ops(p):
                _patch_authorizer(auth, op, api)
            _check_authorizer(auth, api)
            # a method of another type may not keep pointing at it (AWS checks this too)
            for resource, verb, method in _methods_of(api):
                if method.get("authorizerId") == auth["id"]:
                    _check_method_authorizer(api, method["authorizationType"], auth["id"])
            self._save_api(txn, api)
        return _clone(auth)

    def test_invoke_authorizer(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        auth = self._authorizer(api, p["authorizerId"])
        if self.authorizer_invoker is None:
            raise ServiceUnavailable("TestInvokeAuthorizer needs the admin process's function runner")
        return self.authorizer_invoker.invoke(_clone(api), _clone(auth), p)

    def delete_authorizer(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            auth = self._authorizer(api, p["authorizerId"])
            for resource, verb, method in _methods_of(api):
                if method.get("authorizerId") == auth["id"]:
                    raise Conflict(f"Cannot delete authorizer '{auth['name']}', is referenced in "
                                   f"method: {verb} {resource['path']}")
            api["authorizers"] = [a for a in api["authorizers"] if a is not auth]
            self._save_api(txn, api)
        return {}
