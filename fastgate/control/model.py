"""The control plane's state and its operations, in Amazon API Gateway's own terms.

`State` is what the data plane compiles: rest API documents (AWS's RestApi shape
plus its resources, methods and integrations, see docs/control-api.md), frozen
deployments, stages, domain names and base path mappings. `Model` holds a State
and applies the management API's operations to it, each one a single store
transaction. Every operation takes the input members of AWS's request shape
(camelCase, as botocore names them) in a dict and returns AWS's output shape;
invalid input raises an ApiError that the control API turns into AWS's error.

A mutation never edits the in-memory State in place: it writes new documents
through the transaction, and they replace the old ones only after the commit.
"""

from __future__ import annotations

import copy
import re
import secrets
import string
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fastgate.observability.log import log

if TYPE_CHECKING:
    from fastgate.control.state import State
    from fastgate.control.store import Store, Txn


# ---------------------------------------------------------------- errors

class ApiError(Exception):
    """An error of the management API: HTTP status, AWS error type (x-amzn-ErrorType), message."""
    status = 400
    code = "BadRequestException"

    def __init__(self, message: str | None):
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    status, code = 400, "BadRequestException"


class Unauthorized(ApiError):
    status, code = 401, "UnauthorizedException"


class NotFound(ApiError):
    status, code = 404, "NotFoundException"


class Conflict(ApiError):
    status, code = 409, "ConflictException"


class LimitExceeded(ApiError):
    status, code = 429, "LimitExceededException"


class TooManyRequests(ApiError):
    status, code = 429, "TooManyRequestsException"


class ServiceUnavailable(ApiError):
    status, code = 503, "ServiceUnavailableException"


# ---------------------------------------------------------------- gateway responses

# AWS's gateway response types: type -> (default status code, default message). None for
# DEFAULT_4XX/DEFAULT_5XX, which have no status of their own. Source: "Gateway response
# types for API Gateway" in the API Gateway developer guide. The data plane uses this too.
GATEWAY_RESPONSE_DEFAULTS: dict[str, tuple[str | None, str | None]] = {
    "ACCESS_DENIED": ("403", "User is not authorized to access this resource"),
    "API_CONFIGURATION_ERROR": ("500", "Internal server error"),
    "AUTHORIZER_CONFIGURATION_ERROR": ("500", "Internal server error"),
    "AUTHORIZER_FAILURE": ("500", "Internal server error"),
    "BAD_REQUEST_PARAMETERS": ("400", "Missing required request parameters"),
    "BAD_REQUEST_BODY": ("400", "Invalid request body"),
    "DEFAULT_4XX": (None, None),
    "DEFAULT_5XX": (None, None),
    "EXPIRED_TOKEN": ("403", "The security token included in the request is expired"),
    "INTEGRATION_FAILURE": ("504", "Internal server error"),
    "INTEGRATION_TIMEOUT": ("504", "Endpoint request timed out"),
    "INVALID_API_KEY": ("403", "Forbidden"),
    "INVALID_SIGNATURE": ("403", "The request signature we calculated does not match the "
                                 "signature you provided. Check your AWS Secret Access Key and "
                                 "signing method. Consult the service documentation for details."),
    "MISSING_AUTHENTICATION_TOKEN": ("403", "Missing Authentication Token"),
    "QUOTA_EXCEEDED": ("429", "Limit Exceeded"),
    "REQUEST_TOO_LARGE": ("413", "Request Too Long"),
    "RESOURCE_NOT_FOUND": ("404", "Not Found"),
    "THROTTLED": ("429", "Too Many Requests"),
    "UNAUTHORIZED": ("401", "Unauthorized"),
    "UNSUPPORTED_MEDIA_TYPE": ("415", "Unsupported Media Type"),
    "WAF_FILTERED": ("403", "Forbidden"),
}
DEFAULT_RESPONSE_TEMPLATE = {"application/json": '{"message":$context.error.messageString}'}


def default_gateway_response(response_type: str) -> dict:
    status, _ = GATEWAY_RESPONSE_DEFAULTS[response_type]
    doc = {"responseType": response_type, "responseParameters": {},
           "responseTemplates": dict(DEFAULT_RESPONSE_TEMPLATE), "defaultResponse": True}
    if status is not None:
        doc["statusCode"] = status
    return doc


# ---------------------------------------------------------------- helpers

ID_ALPHABET = string.ascii_lowercase + string.digits
PAGE_DEFAULT, PAGE_MAX = 25, 500        # AWS's default and largest `limit`
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY")
INTEGRATION_TYPES = ("HTTP", "HTTP_PROXY", "MOCK", "AWS", "AWS_PROXY")
AUTHORIZATION_TYPES = ("NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS", "JWT")
PATH_PART = re.compile(r"^(?:[A-Za-z0-9._\-]+|\{[A-Za-z0-9._\-]+\+?\})$")
STAGE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
VARIABLE_VALUE = re.compile(r"^[A-Za-z0-9 \-._~:/?#&=,+%@]{0,2048}$")
STATUS_CODE = re.compile(r"^[1-5]\d\d$")
DOMAIN_NAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
                         r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?$")
BASE_PATH = re.compile(r"^[A-Za-z0-9._\-$+]+(?:/[A-Za-z0-9._\-$+]+)*$")
NONE_BASE_PATH = "(none)"


def new_id(length: int) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


def _clone(doc):
    return copy.deepcopy(doc)


def _now() -> float:
    # whole seconds: AWS's timestamps in these shapes carry no fraction
    return float(int(time.time()))


def _page(items: list, p: dict) -> dict:
    """AWS-style paging: `limit` items from the opaque `position` on; the next position if more."""
    limit = p.get("limit")
    if limit is None:
        limit = PAGE_DEFAULT
    if not isinstance(limit, int) or not 1 <= limit <= PAGE_MAX:
        raise BadRequest(f"Invalid limit: must be between 1 and {PAGE_MAX}")
    start = 0
    if p.get("position"):
        if not str(p["position"]).isdigit():
            raise BadRequest("Invalid position parameter")
        start = int(p["position"])
    out = {"items": items[start:start + limit]}
    if start + limit < len(items):
        out["position"] = str(start + limit)
    return out


def _bool_value(value, path: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise BadRequest(f"Invalid boolean value '{value}' for {path}")


def _require_str(p: dict, key: str, what: str | None = None) -> str:
    v = p.get(key)
    if not isinstance(v, str) or not v:
        raise BadRequest(f"{what or key} must not be blank")
    return v


def _copy_known(src: dict, keys) -> dict:
    return {k: _clone(src[k]) for k in keys if src.get(k) is not None}


def _unescape_pointer(seg: str) -> str:
    # JSON Pointer escaping (RFC 6901): ~1 is '/', ~0 is '~'
    return seg.replace("~1", "/").replace("~0", "~")


def _patch_ops(p: dict) -> list[dict]:
    ops = p.get("patchOperations") or []
    for op in ops:
        if op.get("op") not in ("add", "remove", "replace", "move", "copy", "test"):
            raise BadRequest(f"Invalid patch operation specified: {op.get('op')}")
        if not isinstance(op.get("path"), str) or not op["path"].startswith("/"):
            raise BadRequest(f"Invalid patch path {op.get('path')}")
    return ops


def _bad_patch(op: dict) -> BadRequest:
    return BadRequest(f"Invalid patch path '{op['path']}' specified for op '{op['op']}'.")


def _check_variables(variables, what: str = "variables") -> dict:
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise BadRequest(f"{what} must be a map of strings")
    for name, value in variables.items():
        if not VARIABLE_NAME.match(name):
            raise BadRequest(f"Stage variable name '{name}' is invalid: it can only contain "
                             "alphanumeric characters and underscores (1 to 64 characters).")
        if not isinstance(value, str) or not VARIABLE_VALUE.match(value):
            raise BadRequest(f"Stage variable value for '{name}' is invalid: it can only contain "
                             "alphanumeric characters, spaces and -._~:/?#&=,+%@ (up to 2048 characters).")
    return dict(variables)


def _check_percent(value) -> float:
    try:
        pct = float(value)
    except (TypeError, ValueError):
        raise BadRequest(f"Invalid canary percentTraffic '{value}': must be a number") from None
    if not 0.0 <= pct <= 100.0:
        raise BadRequest("Canary traffic percentage must be between 0.0 and 100.0")
    return pct


# ---------------------------------------------------------------- authorizers

AUTHORIZERS_PER_API = 10               # AWS's quota of authorizers per API
AUTHORIZER_TYPES = ("TOKEN", "REQUEST", "COGNITO_USER_POOLS", "JWT")
AUTHORIZER_FIELDS = ("type", "providerARNs", "authType", "authorizerUri", "authorizerCredentials",
                     "identitySource", "identityValidationExpression",
                     "authorizerResultTtlInSeconds", "jwtConfiguration")
# which authorizer types each method authorizationType may name
METHOD_AUTHORIZER_TYPES = {"CUSTOM": ("TOKEN", "REQUEST"),
                           "COGNITO_USER_POOLS": ("COGNITO_USER_POOLS",), "JWT": ("JWT",)}
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
                raise Conflict(f"Authorizer with name {value} already exists for this RestApi")
        if top == "authorizerResultTtlInSeconds":
            if not str(value).isdigit():
                raise BadRequest(f"Invalid value '{value}' for authorizerResultTtlInSeconds")
            value = int(value)
        if value in (None, "") and top != "name":
            auth.pop(top, None)
        else:
            auth[top] = value
    elif path == "/providerARNs" and kind in ("add", "remove"):
        arns = auth.setdefault("providerARNs", [])
        if kind == "add" and value not in arns:
            arns.append(value)
        elif kind == "remove" and value in arns:
            arns.remove(value)
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
        raise BadRequest(f"Invalid authorizer ID specified. Setting the authorization type to "
                         f"{auth_type} requires a valid authorizer.")


# ---------------------------------------------------------------- API documents

REST_API_KEYS = ("name", "description", "version", "binaryMediaTypes", "minimumCompressionSize",
                 "apiKeySource", "endpointConfiguration", "policy", "tags",
                 "disableExecuteApiEndpoint")
# what GetRestApi returns: AWS's RestApi members (no resources, no fastgate extras)
REST_API_OUT = ("id", "name", "description", "createdDate", "version", "warnings",
                "binaryMediaTypes", "minimumCompressionSize", "apiKeySource",
                "endpointConfiguration", "policy", "tags", "disableExecuteApiEndpoint",
                "rootResourceId")
RESOURCE_OUT = ("id", "parentId", "pathPart", "path", "resourceMethods")


def root_resource(api: dict) -> dict:
    for r in api.get("resources", ()):
        if r.get("path") == "/":
            return r
    raise BadRequest("the API has no root resource")


def rest_api_view(api: dict) -> dict:
    out = {k: _clone(api[k]) for k in REST_API_OUT if k in api}
    try:
        out["rootResourceId"] = root_resource(api)["id"]
    except BadRequest:
        pass
    return out


def resource_view(resource: dict, embed_methods: bool) -> dict:
    out = {k: _clone(resource[k]) for k in RESOURCE_OUT if k in resource}
    methods = out.get("resourceMethods")
    if methods is not None and not embed_methods:
        # without embed=methods AWS lists each method as an empty object
        out["resourceMethods"] = {m: {} for m in methods}
    if not out.get("resourceMethods"):
        out.pop("resourceMethods", None)
    return out


def _child_path(parent: dict, part: str) -> str:
    return ("" if parent["path"] == "/" else parent["path"]) + "/" + part


def api_summary(api: dict) -> dict:
    """Deployment.apiSummary: path -> method -> {authorizationType, apiKeyRequired}."""
    summary: dict[str, dict] = {}
    for r in api.get("resources", ()):
        for m, method in (r.get("resourceMethods") or {}).items():
            summary.setdefault(r["path"], {})[m] = {
                "authorizationType": method.get("authorizationType", "NONE"),
                "apiKeyRequired": bool(method.get("apiKeyRequired", False))}
    return summary


def _new_stage(name: str, deployment_id: str, p: dict, variables: dict) -> dict:
    """A Stage as CreateStage (or CreateDeployment with a new stageName) makes it."""
    now = _now()
    stage = {"stageName": name, "deploymentId": deployment_id,
             "cacheClusterEnabled": bool(p.get("cacheClusterEnabled") or False),
             "cacheClusterStatus": "NOT_AVAILABLE", "methodSettings": {},
             "tracingEnabled": bool(p.get("tracingEnabled") or False),
             "createdDate": now, "lastUpdatedDate": now}
    if variables:
        stage["variables"] = variables
    return stage


def new_api_document(p: dict) -> dict:
    api = {"id": new_id(10), "createdDate": _now()}
    for k in REST_API_KEYS:
        if p.get(k) is not None:
            api[k] = _clone(p[k])
    api.setdefault("apiKeySource", "HEADER")
    api.setdefault("endpointConfiguration", {"types": ["REGIONAL"]})
    api.setdefault("disableExecuteApiEndpoint", False)
    api["protocolType"] = "REST"
    api["resources"] = [{"id": new_id(10), "path": "/"}]
    return api


# ---------------------------------------------------------------- certificates

def _load_pem_certs(data: bytes, what: str) -> list:
    from cryptography import x509
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise BadRequest(f"{what} is not a valid PEM certificate: {e}") from None
    if not certs:
        raise BadRequest(f"{what} holds no PEM certificate")
    return certs


def check_certificate(body: str, key: str, chain: str | None) -> None:
    """The certificate and private key must parse and belong together."""
    from cryptography.hazmat.primitives import serialization
    cert = _load_pem_certs(body.encode(), "certificateBody")[0]
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise BadRequest(f"certificatePrivateKey is not a valid unencrypted PEM private key: {e}") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if private.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise BadRequest("The certificate private key does not match the certificate body.")
    if chain:
        _load_pem_certs(chain.encode(), "certificateChain")


def check_truststore(uri: str) -> None:
    from fastgate.compile.tls import truststore_path
    try:
        path = truststore_path(uri)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadRequest(f"truststoreUri '{uri}' cannot be read: {e.strerror or e}") from None
    _load_pem_certs(data, f"The trust store at '{uri}'")


# ---------------------------------------------------------------- the model

class Model:
    """The management API's operations over a Store."""

    def __init__(self, store: "Store"):
        self.store = store
        self.state = store.load()
        # called with a committed transaction's writes [(kind, scope, id, doc|None)], on
        # the thread that ran the operation (fastgate.control.keys_sync replicates some kinds)
        self.on_commit = None
        # () -> {(api id, stage)} served from elsewhere than the store (the config's
        # `apis:`), which usage plans and stage keys may name too
        self.served_stages = lambda: set()
        # fastgate.control.authorizer_invoke.AuthorizerInvoker of the admin process (TestInvokeAuthorizer)
        self.authorizer_invoker = None

    # ---- plumbing

    def fresh(self) -> "State":
        """The current State, reloaded if another process has committed since."""
        if self.store.version() != self.state.version:
            self.state = self.store.load()
        return self.state

    @contextmanager
    def change(self):
        """One mutation: a store transaction over an up-to-date State; the writes reach
        the in-memory State only once the commit succeeded."""
        with self.store.transaction() as txn:
            if self.store.current_version(txn) != self.state.version:
                self.state = self.store.read_state(txn)
            yield txn
        if txn.writes:
            for kind, scope, id, doc in txn.writes:
                self.state.set(kind, scope, id, doc)
            self.state.version += 1
            if self.on_commit is not None:
                self.on_commit(txn.writes)

    def _api(self, api_id: str) -> dict:
        api = self.state.apis.get(api_id)
        if api is None:
            raise NotFound(f"Invalid API identifier specified {api_id}")
        return api

    @staticmethod
    def _resource(api: dict, resource_id: str) -> dict:
        for r in api.get("resources", ()):
            if r["id"] == resource_id:
                return r
        raise NotFound("Invalid Resource identifier specified")

    @staticmethod
    def _method(resource: dict, http_method: str) -> dict:
        method = (resource.get("resourceMethods") or {}).get(http_method.upper())
        if method is None:
            raise NotFound("Invalid Method identifier specified")
        return method

    def _deployment(self, api_id: str, dep_id: str) -> dict:
        dep = self.state.deployments.get(api_id, {}).get(dep_id)
        if dep is None:
            raise NotFound("Invalid Deployment identifier specified")
        return dep

    def _stage(self, api_id: str, name: str) -> dict:
        stage = self.state.stages.get(api_id, {}).get(name)
        if stage is None:
            raise NotFound("Invalid Stage identifier specified")
        return stage

    def _domain(self, name: str) -> dict:
        domain = self.state.domains.get(name)
        if domain is None:
            raise NotFound("Invalid domain name identifier specified")
        return domain

    def _edit_api(self, api_id: str) -> dict:
        """A private copy of an API document, to change and then save with _save_api."""
        return _clone(self._api(api_id))

    @staticmethod
    def _save_api(txn: "Txn", api: dict) -> None:
        txn.put("restapi", "", api["id"], api)

    # ---- rest APIs

    def create_rest_api(self, p: dict) -> dict:
        name = _require_str(p, "name", "name")
        with self.change() as txn:
            if p.get("cloneFrom"):
                src = _clone(self._api(p["cloneFrom"]))
                api = new_api_document({**{k: src.get(k) for k in REST_API_KEYS}, **p})
                api["resources"] = src.get("resources", api["resources"])
                for k in ("authorizers", "requestValidators", "models", "gatewayResponses",
                          "extensions", "protocolType"):
                    if k in src:
                        api[k] = src[k]
            else:
                api = new_api_document(p)
            api["name"] = name
            while api["id"] in self.state.apis:
                api["id"] = new_id(10)
            self._save_api(txn, api)
        return rest_api_view(api)

    def get_rest_api(self, p: dict) -> dict:
        self.fresh()
        return rest_api_view(self._api(p["restApiId"]))

    def get_rest_apis(self, p: dict) -> dict:
        state = self.fresh()
        apis = sorted(state.apis.values(), key=lambda a: (a.get("createdDate", 0), a["id"]))
        return _page([rest_api_view(a) for a in apis], p)

    def delete_rest_api(self, p: dict) -> dict:
        api_id = p["restApiId"]
        with self.change() as txn:
            self._api(api_id)
            for domain, mappings in self.state.mappings.items():
                for base, m in mappings.items():
                    if m.get("restApiId") == api_id:
                        raise BadRequest(f"Cannot delete this API: base path mapping "
                                         f"'{base}' of domain name '{domain}' refers to it. "
                                         "Delete the base path mapping first.")
            txn.delete("restapi", "", api_id)
            for dep_id in self.state.deployments.get(api_id, {}):
                txn.delete("deployment", api_id, dep_id)
            for name in self.state.stages.get(api_id, {}):
                txn.delete("stage", api_id, name)
        return {}

    def update_rest_api(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            for op in _patch_ops(p):
                path, value = op["path"], op.get("value")
                top = path[1:]
                if op["op"] == "replace" and top in ("name", "description", "version", "policy",
                                                     "apiKeySource"):
                    if top == "name" and not value:
                        raise BadRequest("name must not be blank")
                    if top == "apiKeySource" and value not in ("HEADER", "AUTHORIZER"):
                        raise BadRequest(f"Invalid API key source '{value}'")
                    api[top] = value
                elif op["op"] == "replace" and top == "minimumCompressionSize":
                    if value in (None, ""):
                        api.pop(top, None)
                    elif not str(value).isdigit() or int(value) > 10485760:
                        raise BadRequest("minimumCompressionSize must be between 0 and 10485760")
                    else:
                        api[top] = int(value)
                elif op["op"] == "replace" and top == "disableExecuteApiEndpoint":
                    api[top] = _bool_value(value, path)
                elif path.startswith("/binaryMediaTypes/") and op["op"] in ("add", "remove"):
                    media = _unescape_pointer(path[len("/binaryMediaTypes/"):])
                    types = api.setdefault("binaryMediaTypes", [])
                    if op["op"] == "add" and media not in types:
                        types.append(media)
                    elif op["op"] == "remove" and media in types:
                        types.remove(media)
                else:
                    raise _bad_patch(op)
            self._save_api(txn, api)
        return rest_api_view(api)

    def import_rest_api(self, p: dict) -> dict:
        from fastgate.control import openapi
        params = p.get("parameters") or {}
        doc = self._load_openapi(p)
        try:
            api, warnings = openapi.import_openapi(
                doc, base_path=params.get("basepath", "ignore"),
                fail_on_warnings=bool(p.get("failOnWarnings")))
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None
        with self.change() as txn:
            while api.get("id") in self.state.apis or not api.get("id"):
                api["id"] = new_id(10)
            api.setdefault("createdDate", _now())
            self._save_api(txn, api)
        out = rest_api_view(api)
        if warnings:
            out["warnings"] = list(warnings)
        return out

    def put_rest_api(self, p: dict) -> dict:
        from fastgate.control import openapi
        params = p.get("parameters") or {}
        mode = p.get("mode") or "merge"    # AWS's default for PutRestApi is merge
        if mode not in ("merge", "overwrite"):
            raise BadRequest(f"Invalid mode '{mode}': must be merge or overwrite")
        doc = self._load_openapi(p)
        with self.change() as txn:
            existing = self._api(p["restApiId"])
            try:
                api, warnings = openapi.import_openapi(
                    doc, base_path=params.get("basepath", "ignore"), api_id=existing["id"],
                    fail_on_warnings=bool(p.get("failOnWarnings")), existing=_clone(existing),
                    mode=mode)
            except openapi.OpenAPIError as e:
                raise BadRequest(str(e)) from None
            api["id"] = existing["id"]
            api["createdDate"] = existing.get("createdDate", _now())
            self._save_api(txn, api)
        out = rest_api_view(api)
        if warnings:
            out["warnings"] = list(warnings)
        return out

    @staticmethod
    def _load_openapi(p: dict):
        from fastgate.control import openapi
        body = p.get("body") or b""
        if not body.strip():
            raise BadRequest("The request body must hold an OpenAPI definition")
        try:
            return openapi.load_document(body, "<request body>")
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None

    def get_export(self, p: dict) -> dict:
        from fastgate.control import openapi
        self.fresh()
        api_id, stage_name = p["restApiId"], p["stageName"]
        self._api(api_id)
        stage = self._stage(api_id, stage_name)
        export_type = p["exportType"]
        if export_type not in ("oas30", "swagger"):
            raise BadRequest(f"Invalid export type '{export_type}': fastgate exports oas30 and swagger")
        params = p.get("parameters") or {}
        extensions = params.get("extensions", "")
        accepts = (p.get("accepts") or "application/json").lower()
        if accepts not in ("application/json", "application/yaml", "*/*"):
            raise BadRequest(f"Invalid Accept '{accepts}': use application/json or application/yaml")
        dep = self._deployment(api_id, stage["deploymentId"])
        try:
            doc = openapi.export_openapi(dep["api"], export_type=export_type,
                                         extensions=bool(extensions), stage=stage)
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None
        ext = "json"
        if accepts == "application/yaml":
            import yaml
            body = yaml.safe_dump(doc, sort_keys=False).encode()
            ext = "yaml"
        else:
            import orjson
            body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            accepts = "application/json"
        return {"contentType": accepts, "body": body,
                "contentDisposition": f'attachment; filename="{export_type}_{dep["api"]["id"]}_'
                                      f'{stage_name}.{ext}"'}

    # ---- resources

    def get_resources(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        embed = "methods" in (p.get("embed") or ())
        items = sorted(api.get("resources", ()), key=lambda r: r["path"])
        return _page([resource_view(r, embed) for r in items], p)

    def get_resource(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        return resource_view(self._resource(api, p["resourceId"]),
                             "methods" in (p.get("embed") or ()))

    def create_resource(self, p: dict) -> dict:
        part = _require_str(p, "pathPart", "pathPart")
        if not PATH_PART.match(part):
            raise BadRequest("Resource's path part only allow a-zA-Z0-9._- and curly braces at "
                             "the beginning and the end and an optional plus sign before the "
                             "closing brace.")
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            parent = self._resource(api, p["parentId"])
            if parent.get("pathPart", "").endswith("+}"):
                raise BadRequest("A greedy path variable ({proxy+}) must be the last part of a path")
            for r in api["resources"]:
                if r.get("parentId") == parent["id"]:
                    if r["pathPart"] == part:
                        raise Conflict(f"Another resource with the same parent already has this name: {part}")
                    if r["pathPart"].startswith("{") and part.startswith("{"):
                        raise BadRequest("A sibling ({}) of this resource already has a variable "
                                         "path part -- only one is allowed".format(r["pathPart"]))
            resource = {"id": new_id(10), "parentId": parent["id"], "pathPart": part,
                        "path": _child_path(parent, part)}
            api["resources"].append(resource)
            self._save_api(txn, api)
        return resource_view(resource, False)

    def delete_resource(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            target = self._resource(api, p["resourceId"])
            if target.get("path") == "/":
                raise BadRequest("Cannot delete root resource")
            doomed = {target["id"]}
            grew = True
            while grew:     # the resource and everything under it
                grew = False
                for r in api["resources"]:
                    if r.get("parentId") in doomed and r["id"] not in doomed:
                        doomed.add(r["id"])
                        grew = True
            api["resources"] = [r for r in api["resources"] if r["id"] not in doomed]
            self._save_api(txn, api)
        return {}

    # ---- methods, integrations, responses

    def _method_ctx(self, p: dict, create: bool = False):
        api = self._edit_api(p["restApiId"])
        resource = self._resource(api, p["resourceId"])
        http_method = p["httpMethod"].upper()
        if create:
            return api, resource, http_method
        return api, resource, self._method(resource, http_method)

    def put_method(self, p: dict) -> dict:
        http_method = p["httpMethod"].upper()
        if http_method not in HTTP_METHODS:
            raise BadRequest(f"Invalid HttpMethod specified. Valid options are {','.join(HTTP_METHODS)}")
        auth = _require_str(p, "authorizationType", "authorizationType")
        if auth not in AUTHORIZATION_TYPES:
            raise BadRequest(f"Invalid authorization type specified. Valid options are "
                             f"{','.join(AUTHORIZATION_TYPES)}")
        with self.change() as txn:
            api, resource, _ = self._method_ctx(p, create=True)
            methods = resource.setdefault("resourceMethods", {})
            if http_method in methods:
                raise Conflict("Method already exists for this resource")
            _check_method_authorizer(api, auth, p.get("authorizerId"))
            method = {"httpMethod": http_method, "authorizationType": auth,
                      "apiKeyRequired": bool(p.get("apiKeyRequired", False))}
            method.update(_copy_known(p, ("authorizerId", "operationName", "requestParameters",
                                          "requestModels", "requestValidatorId",
                                          "authorizationScopes")))
            methods[http_method] = method
            self._save_api(txn, api)
        return _clone(method)

    def get_method(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        return _clone(self._method(self._resource(api, p["resourceId"]), p["httpMethod"]))

    def update_method(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            for op in _patch_ops(p):
                path, value, kind = op["path"], op.get("value"), op["op"]
                top = path[1:]
                if kind == "replace" and top == "authorizationType":
                    if value not in AUTHORIZATION_TYPES:
                        raise BadRequest(f"Invalid authorization type specified. Valid options are "
                                         f"{','.join(AUTHORIZATION_TYPES)}")
                    method[top] = value
                elif kind == "replace" and top in ("authorizerId", "operationName", "requestValidatorId"):
                    if value in (None, ""):
                        method.pop(top, None)
                    else:
                        method[top] = value
                elif kind == "replace" and top == "apiKeyRequired":
                    method[top] = _bool_value(value, path)
                elif path == "/authorizationScopes" and kind in ("add", "remove"):
                    scopes = method.setdefault("authorizationScopes", [])
                    if kind == "add" and value not in scopes:
                        scopes.append(value)
                    elif kind == "remove" and value in scopes:
                        scopes.remove(value)
                    if not scopes:
                        del method["authorizationScopes"]
                elif path.startswith("/requestParameters/") and kind in ("add", "replace", "remove"):
                    name = _unescape_pointer(path[len("/requestParameters/"):])
                    params = method.setdefault("requestParameters", {})
                    if kind == "remove":
                        params.pop(name, None)
                    else:
                        params[name] = _bool_value(value if value is not None else "false", path)
                else:
                    raise _bad_patch(op)
            if method["authorizationType"] in ("NONE", "AWS_IAM"):
                # an authorizer and its scopes mean nothing without CUSTOM/COGNITO
                method.pop("authorizerId", None)
                method.pop("authorizationScopes", None)
            _check_method_authorizer(api, method["authorizationType"], method.get("authorizerId"))
            self._save_api(txn, api)
        return _clone(method)

    def delete_method(self, p: dict) -> dict:
        with self.change() as txn:
            api, resource, method = self._method_ctx(p)
            del resource["resourceMethods"][method["httpMethod"]]
            self._save_api(txn, api)
        return {}

    def put_integration(self, p: dict) -> dict:
        itype = _require_str(p, "type", "type")
        if itype not in INTEGRATION_TYPES:
            raise BadRequest(f"Invalid integration type specified. Valid options are "
                             f"{','.join(INTEGRATION_TYPES)}")
        if itype in ("HTTP", "HTTP_PROXY", "AWS", "AWS_PROXY"):
            if not p.get("uri"):
                raise BadRequest("Enumeration value for Integration uri must be non-empty")
            if not p.get("integrationHttpMethod"):
                raise BadRequest("Enumeration value for HttpMethod must be non-empty")
        timeout = p.get("timeoutInMillis")
        if timeout is not None and not 50 <= timeout <= 29000:
            raise BadRequest("Timeout should be between 50 ms and 29000 ms")
        if p.get("passthroughBehavior") not in (None, "WHEN_NO_MATCH", "WHEN_NO_TEMPLATES", "NEVER"):
            raise BadRequest("Invalid passthrough behavior specified. Valid options are "
                             "WHEN_NO_MATCH,WHEN_NO_TEMPLATES,NEVER")
        with self.change() as txn:
            api, resource, method = self._method_ctx(p)
            integ = {"type": itype}
            if p.get("integrationHttpMethod"):
                integ["httpMethod"] = p["integrationHttpMethod"].upper()
            integ.update(_copy_known(p, ("uri", "connectionType", "connectionId", "credentials",
                                         "requestParameters", "requestTemplates",
                                         "passthroughBehavior", "cacheNamespace",
                                         "cacheKeyParameters", "contentHandling", "tlsConfig")))
            integ.setdefault("connectionType", "INTERNET")
            integ.setdefault("passthroughBehavior", "WHEN_NO_MATCH")
            integ["timeoutInMillis"] = timeout if timeout is not None else 29000
            integ.setdefault("cacheNamespace", resource["id"])
            integ.setdefault("cacheKeyParameters", [])
            method["methodIntegration"] = integ
            self._save_api(txn, api)
        return _clone(integ)

    def get_integration(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        method = self._method(self._resource(api, p["resourceId"]), p["httpMethod"])
        if "methodIntegration" not in method:
            raise NotFound("No integration defined for method")
        return _clone(method["methodIntegration"])

    def delete_integration(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            if method.pop("methodIntegration", None) is None:
                raise NotFound("No integration defined for method")
            self._save_api(txn, api)
        return {}

    def put_integration_response(self, p: dict) -> dict:
        status = p["statusCode"]
        if not STATUS_CODE.match(status):
            raise BadRequest("Invalid status code specified. Must be a 3-digit code from 100 to 599")
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            integ = method.get("methodIntegration")
            if integ is None:
                raise NotFound("No integration defined for method")
            resp = {"statusCode": status}
            resp.update(_copy_known(p, ("selectionPattern", "responseParameters",
                                        "responseTemplates", "contentHandling")))
            integ.setdefault("integrationResponses", {})[status] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_integration_response(self, p: dict) -> dict:
        self.fresh()
        integ = self.get_integration(p)
        resp = (integ.get("integrationResponses") or {}).get(p["statusCode"])
        if resp is None:
            raise NotFound("Invalid Response status code specified")
        return resp

    def delete_integration_response(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            responses = (method.get("methodIntegration") or {}).get("integrationResponses") or {}
            if responses.pop(p["statusCode"], None) is None:
                raise NotFound("Invalid Response status code specified")
            self._save_api(txn, api)
        return {}

    def put_method_response(self, p: dict) -> dict:
        status = p["statusCode"]
        if not STATUS_CODE.match(status):
            raise BadRequest("Invalid status code specified. Must be a 3-digit code from 100 to 599")
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            responses = method.setdefault("methodResponses", {})
            if status in responses:
                raise Conflict("Response already exists for this resource")
            resp = {"statusCode": status}
            resp.update(_copy_known(p, ("responseParameters", "responseModels")))
            responses[status] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_method_response(self, p: dict) -> dict:
        self.fresh()
        method = self.get_method(p)
        resp = (method.get("methodResponses") or {}).get(p["statusCode"])
        if resp is None:
            raise NotFound("Invalid Response status code specified")
        return resp

    def delete_method_response(self, p: dict) -> dict:
        with self.change() as txn:
            api, _, method = self._method_ctx(p)
            if (method.get("methodResponses") or {}).pop(p["statusCode"], None) is None:
                raise NotFound("Invalid Response status code specified")
            self._save_api(txn, api)
        return {}

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
        raise NotFound("Invalid Authorizer identifier specified")

    def create_authorizer(self, p: dict) -> dict:
        name = _require_str(p, "name", "name")
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            authorizers = api.setdefault("authorizers", [])
            if len(authorizers) >= AUTHORIZERS_PER_API:
                raise LimitExceeded(f"Maximum number of Authorizers for this API has been "
                                    f"reached: {AUTHORIZERS_PER_API}")
            if any(a.get("name") == name for a in authorizers):
                raise Conflict(f"Authorizer with name {name} already exists for this RestApi")
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

    # ---- deployments

    @staticmethod
    def _deployment_view(dep: dict, embed_summary: bool = True) -> dict:
        out = {k: _clone(dep[k]) for k in ("id", "description", "createdDate") if k in dep}
        if embed_summary and "apiSummary" in dep:
            out["apiSummary"] = _clone(dep["apiSummary"])
        return out

    def create_deployment(self, p: dict) -> dict:
        api_id = p["restApiId"]
        stage_name = p.get("stageName")
        if stage_name is not None and not STAGE_NAME.match(stage_name):
            raise BadRequest("Stage name only allows a-zA-Z0-9_-")
        variables = _check_variables(p.get("variables"))
        canary = p.get("canarySettings")
        with self.change() as txn:
            api = self._api(api_id)
            methods = [(r["path"], m, method) for r in api.get("resources", ())
                       for m, method in (r.get("resourceMethods") or {}).items()]
            if not methods:
                raise BadRequest("The REST API doesn't contain any methods")
            for path, m, method in methods:
                if "methodIntegration" not in method:
                    raise BadRequest(f"No integration defined for method ({m} {path})")
            dep = {"id": new_id(6), "createdDate": _now(), "apiSummary": api_summary(api),
                   "api": _clone(api)}
            while dep["id"] in self.state.deployments.get(api_id, {}):
                dep["id"] = new_id(6)
            if p.get("description") is not None:
                dep["description"] = p["description"]
            txn.put("deployment", api_id, dep["id"], dep)
            if stage_name:
                stage = self.state.stages.get(api_id, {}).get(stage_name)
                now = _now()
                if canary is not None:
                    # a canary deployment: the stage keeps its deployment, the new one
                    # takes percentTraffic of the requests (AWS "Create a canary release")
                    if stage is None:
                        raise BadRequest("Invalid stage identifier specified: a canary deployment "
                                         "needs an existing stage")
                    stage = _clone(stage)
                    settings = {"deploymentId": dep["id"],
                                "percentTraffic": _check_percent(canary.get("percentTraffic", 0.0)),
                                "useStageCache": bool(canary.get("useStageCache", False))}
                    overrides = _check_variables(canary.get("stageVariableOverrides"),
                                                 "stageVariableOverrides")
                    if overrides:
                        settings["stageVariableOverrides"] = overrides
                    stage["canarySettings"] = settings
                elif stage is None:
                    stage = _new_stage(stage_name, dep["id"], p, variables)
                    if p.get("stageDescription") is not None:
                        stage["description"] = p["stageDescription"]
                else:
                    stage = _clone(stage)
                    stage["deploymentId"] = dep["id"]
                    if variables:
                        stage.setdefault("variables", {}).update(variables)
                    if p.get("stageDescription") is not None:
                        stage["description"] = p["stageDescription"]
                stage["lastUpdatedDate"] = now
                txn.put("stage", api_id, stage_name, stage)
        return self._deployment_view(dep, embed_summary=False)

    def get_deployment(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        dep = self._deployment(p["restApiId"], p["deploymentId"])
        return self._deployment_view(dep, "apisummary" in [e.lower() for e in p.get("embed") or ()])

    def get_deployments(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        deps = sorted(self.state.deployments.get(p["restApiId"], {}).values(),
                      key=lambda d: (d["createdDate"], d["id"]))
        return _page([self._deployment_view(d, False) for d in deps], p)

    def update_deployment(self, p: dict) -> dict:
        with self.change() as txn:
            self._api(p["restApiId"])
            dep = _clone(self._deployment(p["restApiId"], p["deploymentId"]))
            for op in _patch_ops(p):
                if op["op"] == "replace" and op["path"] == "/description":
                    dep["description"] = op.get("value") or ""
                else:
                    raise _bad_patch(op)
            txn.put("deployment", p["restApiId"], dep["id"], dep)
        return self._deployment_view(dep, False)

    def delete_deployment(self, p: dict) -> dict:
        api_id, dep_id = p["restApiId"], p["deploymentId"]
        with self.change() as txn:
            self._api(api_id)
            self._deployment(api_id, dep_id)
            for stage in self.state.stages.get(api_id, {}).values():
                if stage.get("deploymentId") == dep_id or \
                        (stage.get("canarySettings") or {}).get("deploymentId") == dep_id:
                    raise BadRequest("Active stages pointing to this deployment must be moved or deleted")
            txn.delete("deployment", api_id, dep_id)
        return {}

    # ---- stages

    def create_stage(self, p: dict) -> dict:
        api_id, name = p["restApiId"], _require_str(p, "stageName", "stageName")
        if not STAGE_NAME.match(name):
            raise BadRequest("Stage name only allows a-zA-Z0-9_-")
        variables = _check_variables(p.get("variables"))
        with self.change() as txn:
            self._api(api_id)
            self._deployment(api_id, _require_str(p, "deploymentId", "deploymentId"))
            if name in self.state.stages.get(api_id, {}):
                raise Conflict("Stage already exists")
            stage = _new_stage(name, p["deploymentId"], p, variables)
            stage.update(_copy_known(p, ("description", "cacheClusterSize", "documentationVersion", "tags")))
            if p.get("canarySettings") is not None:
                stage["canarySettings"] = self._canary_settings(api_id, p["canarySettings"], p["deploymentId"])
            txn.put("stage", api_id, name, stage)
        return _clone(stage)

    def _canary_settings(self, api_id: str, c: dict, default_dep: str) -> dict:
        dep_id = c.get("deploymentId") or default_dep
        self._deployment(api_id, dep_id)
        out = {"deploymentId": dep_id, "percentTraffic": _check_percent(c.get("percentTraffic", 0.0)),
               "useStageCache": bool(c.get("useStageCache", False))}
        overrides = _check_variables(c.get("stageVariableOverrides"), "stageVariableOverrides")
        if overrides:
            out["stageVariableOverrides"] = overrides
        return out

    def get_stage(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        return _clone(self._stage(p["restApiId"], p["stageName"]))

    def get_stages(self, p: dict) -> dict:
        self.fresh()
        self._api(p["restApiId"])
        stages = sorted(self.state.stages.get(p["restApiId"], {}).values(),
                        key=lambda s: s["stageName"])
        if p.get("deploymentId"):
            stages = [s for s in stages if s.get("deploymentId") == p["deploymentId"]]
        return {"item": [_clone(s) for s in stages]}

    def delete_stage(self, p: dict) -> dict:
        api_id, name = p["restApiId"], p["stageName"]
        with self.change() as txn:
            self._api(api_id)
            self._stage(api_id, name)
            for domain, mappings in self.state.mappings.items():
                for base, m in mappings.items():
                    if m.get("restApiId") == api_id and m.get("stage") == name:
                        raise BadRequest(f"Cannot delete stage '{name}': base path mapping "
                                         f"'{base}' of domain name '{domain}' refers to it.")
            txn.delete("stage", api_id, name)
        return {}

    def update_stage(self, p: dict) -> dict:
        api_id = p["restApiId"]
        with self.change() as txn:
            self._api(api_id)
            stage = _clone(self._stage(api_id, p["stageName"]))
            for op in _patch_ops(p):
                self._patch_stage(api_id, stage, op)
            stage["lastUpdatedDate"] = _now()
            txn.put("stage", api_id, stage["stageName"], stage)
        return _clone(stage)

    # Stage members a plain `replace` sets, with how the string value is read
    _STAGE_SCALARS = {"description": str, "deploymentId": str, "cacheClusterSize": str,
                      "clientCertificateId": str, "documentationVersion": str,
                      "webAclArn": str, "cacheClusterEnabled": bool, "tracingEnabled": bool}
    # method setting patch paths (after /{resource}/{method}/) -> (MethodSetting member, type)
    _METHOD_SETTINGS = {
        "metrics/enabled": ("metricsEnabled", bool),
        "logging/loglevel": ("loggingLevel", str),
        "logging/dataTrace": ("dataTraceEnabled", bool),
        "throttling/burstLimit": ("throttlingBurstLimit", int),
        "throttling/rateLimit": ("throttlingRateLimit", float),
        "caching/enabled": ("cachingEnabled", bool),
        "caching/ttlInSeconds": ("cacheTtlInSeconds", int),
        "caching/dataEncrypted": ("cacheDataEncrypted", bool),
        "caching/requireAuthorizationForCacheControl": ("requireAuthorizationForCacheControl", bool),
        "caching/unauthorizedCacheControlHeaderStrategy": ("unauthorizedCacheControlHeaderStrategy", str),
    }
    _METHOD_SETTING_DEFAULTS = {"metricsEnabled": False, "loggingLevel": "OFF",
                                "dataTraceEnabled": False, "throttlingBurstLimit": 5000,
                                "throttlingRateLimit": 10000.0, "cachingEnabled": False,
                                "cacheTtlInSeconds": 300, "cacheDataEncrypted": False,
                                "requireAuthorizationForCacheControl": True,
                                "unauthorizedCacheControlHeaderStrategy": "SUCCEED_WITH_RESPONSE_HEADER"}

    def _patch_stage(self, api_id: str, stage: dict, op: dict) -> None:
        kind, path, value = op["op"], op["path"], op.get("value")
        parts = path[1:].split("/")
        top = parts[0]
        if kind == "copy":
            src = op.get("from")
            canary = stage.get("canarySettings")
            if src == "/canarySettings/deploymentId" and path == "/deploymentId":
                if not canary:
                    raise BadRequest("Promotion not available. Canary does not exist.")
                stage["deploymentId"] = canary["deploymentId"]
            elif src == "/canarySettings/stageVariableOverrides" and path == "/variables":
                if not canary:
                    raise BadRequest("Promotion not available. Canary does not exist.")
                stage.setdefault("variables", {}).update(canary.get("stageVariableOverrides") or {})
            else:
                raise BadRequest(f"Invalid patch operation: copy from '{src}' to '{path}' is not "
                                 "supported. Promote a canary with copy from "
                                 "/canarySettings/deploymentId to /deploymentId and from "
                                 "/canarySettings/stageVariableOverrides to /variables.")
            return
        if len(parts) == 1 and top in self._STAGE_SCALARS and kind == "replace":
            if top == "deploymentId":
                self._deployment(api_id, value or "")
            reader = self._STAGE_SCALARS[top]
            stage[top] = _bool_value(value, path) if reader is bool else (value or "")
            return
        if top == "variables" and len(parts) >= 2 and kind in ("add", "replace", "remove"):
            name = _unescape_pointer("/".join(parts[1:]))
            variables = stage.setdefault("variables", {})
            if kind == "remove":
                variables.pop(name, None)
            else:
                variables.update(_check_variables({name: value if value is not None else ""}))
            if not variables:
                del stage["variables"]
            return
        if top == "accessLogSettings":
            if kind == "remove" and len(parts) == 1:
                stage.pop("accessLogSettings", None)
                return
            if kind == "replace" and len(parts) == 2 and parts[1] in ("destinationArn", "format"):
                stage.setdefault("accessLogSettings", {})[parts[1]] = value or ""
                return
            raise _bad_patch(op)
        if top == "canarySettings":
            self._patch_canary(api_id, stage, op, parts[1:])
            return
        if len(parts) >= 3 and kind in ("replace", "remove"):
            key = f"{parts[0]}/{parts[1]}"   # "*/*" or "~1pets/GET": AWS's methodSettings key
            setting = "/".join(parts[2:])
            if setting in self._METHOD_SETTINGS:
                member, reader = self._METHOD_SETTINGS[setting]
                settings = stage.setdefault("methodSettings", {})
                if kind == "remove":
                    settings.get(key, {}).pop(member, None)
                    return
                entry = settings.setdefault(key, dict(self._METHOD_SETTING_DEFAULTS))
                try:
                    entry[member] = _bool_value(value, path) if reader is bool else reader(value)
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid value '{value}' for {path}") from None
                return
        if len(parts) == 2 and kind == "remove" and parts[1] != "":
            key = f"{parts[0]}/{parts[1]}"
            if key in stage.get("methodSettings", {}):
                del stage["methodSettings"][key]
                return
        raise _bad_patch(op)

    def _patch_canary(self, api_id: str, stage: dict, op: dict, rest: list[str]) -> None:
        kind, value = op["op"], op.get("value")
        if not rest:
            if kind == "remove":    # discard the canary
                stage.pop("canarySettings", None)
                return
            raise _bad_patch(op)
        canary = stage.get("canarySettings")
        if canary is None:
            # the first canary patch creates the canary on the stage's own deployment
            canary = stage["canarySettings"] = {"deploymentId": stage["deploymentId"],
                                                "percentTraffic": 0.0, "useStageCache": False}
        field_name = rest[0]
        if field_name == "percentTraffic" and kind == "replace" and len(rest) == 1:
            canary["percentTraffic"] = _check_percent(value)
        elif field_name == "deploymentId" and kind == "replace" and len(rest) == 1:
            self._deployment(api_id, value or "")
            canary["deploymentId"] = value
        elif field_name == "useStageCache" and kind == "replace" and len(rest) == 1:
            canary["useStageCache"] = _bool_value(value, op["path"])
        elif field_name == "stageVariableOverrides" and len(rest) >= 2 and kind in ("add", "replace", "remove"):
            name = _unescape_pointer("/".join(rest[1:]))
            overrides = canary.setdefault("stageVariableOverrides", {})
            if kind == "remove":
                overrides.pop(name, None)
            else:
                overrides.update(_check_variables({name: value if value is not None else ""},
                                                  "stageVariableOverrides"))
            if not overrides:
                del canary["stageVariableOverrides"]
        else:
            raise _bad_patch(op)

    # ---- domain names and base path mappings

    _DOMAIN_IN = ("certificateName", "certificateArn", "regionalCertificateName",
                  "regionalCertificateArn", "endpointConfiguration", "tags", "securityPolicy",
                  "policy", "ownershipVerificationCertificateArn", "routingMode")

    @staticmethod
    def _domain_view(domain: dict) -> dict:
        # the PEMs stay on the server: AWS never returns a certificate or key either
        return {k: _clone(v) for k, v in domain.items() if not k.startswith("_")}

    def create_domain_name(self, p: dict) -> dict:
        name = _require_str(p, "domainName", "domainName").lower()
        if not DOMAIN_NAME.match(name):
            raise BadRequest(f"Invalid domain name: '{p['domainName']}'")
        body, key, chain = (p.get("certificateBody"), p.get("certificatePrivateKey"),
                            p.get("certificateChain"))
        if body or key:
            if not (body and key):
                raise BadRequest("certificateBody and certificatePrivateKey must be given together")
            check_certificate(body, key, chain)
        mtls = p.get("mutualTlsAuthentication")
        if mtls and mtls.get("truststoreUri"):
            check_truststore(mtls["truststoreUri"])
        with self.change() as txn:
            if name in self.state.domains:
                raise Conflict("The domain name you provided already exists.")
            domain = {"domainName": name, "domainNameStatus": "AVAILABLE",
                      "regionalDomainName": name, "securityPolicy": "TLS_1_2",
                      "endpointConfiguration": {"types": ["REGIONAL"]}}
            domain.update(_copy_known(p, self._DOMAIN_IN))
            if body:
                domain["certificateUploadDate"] = _now()
                domain["_certificateBody"] = body
                domain["_certificatePrivateKey"] = key
                if chain:
                    domain["_certificateChain"] = chain
            if mtls and mtls.get("truststoreUri"):
                domain["mutualTlsAuthentication"] = {"truststoreUri": mtls["truststoreUri"],
                                                     "truststoreWarnings": []}
                if mtls.get("truststoreVersion"):
                    domain["mutualTlsAuthentication"]["truststoreVersion"] = mtls["truststoreVersion"]
            txn.put("domain", "", name, domain)
        return self._domain_view(domain)

    def get_domain_name(self, p: dict) -> dict:
        self.fresh()
        return self._domain_view(self._domain(p["domainName"].lower()))

    def get_domain_names(self, p: dict) -> dict:
        state = self.fresh()
        return _page([self._domain_view(d) for _, d in sorted(state.domains.items())], p)

    def delete_domain_name(self, p: dict) -> dict:
        name = p["domainName"].lower()
        with self.change() as txn:
            self._domain(name)
            txn.delete("domain", "", name)
            for base in self.state.mappings.get(name, {}):
                txn.delete("mapping", name, base)
        return {}

    def _check_mapping_target(self, api_id: str, stage: str | None) -> None:
        if api_id not in self.state.apis:
            raise BadRequest("Invalid REST API identifier specified")
        if stage and stage not in self.state.stages.get(api_id, {}):
            raise BadRequest("Invalid stage identifier specified")

    def create_base_path_mapping(self, p: dict) -> dict:
        name = p["domainName"].lower()
        base = p.get("basePath") or ""
        if base in ("", NONE_BASE_PATH):
            base = NONE_BASE_PATH
        elif not BASE_PATH.match(base):
            raise BadRequest(f"Invalid base path '{base}': use letters, digits and ._-$+, "
                             "segments separated by '/'")
        with self.change() as txn:
            self._domain(name)
            self._check_mapping_target(_require_str(p, "restApiId", "restApiId"), p.get("stage"))
            if base in self.state.mappings.get(name, {}):
                raise Conflict("Base path already exists for this domain name")
            mapping = {"basePath": base, "restApiId": p["restApiId"]}
            if p.get("stage"):
                mapping["stage"] = p["stage"]
            txn.put("mapping", name, base, mapping)
        return dict(mapping)

    def _mapping(self, domain: str, base: str) -> dict:
        self._domain(domain)
        mapping = self.state.mappings.get(domain, {}).get(base or NONE_BASE_PATH)
        if mapping is None:
            raise NotFound("Invalid base path mapping identifier specified")
        return mapping

    def get_base_path_mapping(self, p: dict) -> dict:
        self.fresh()
        return dict(self._mapping(p["domainName"].lower(), p["basePath"]))

    def get_base_path_mappings(self, p: dict) -> dict:
        self.fresh()
        name = p["domainName"].lower()
        self._domain(name)
        return _page([dict(m) for _, m in sorted(self.state.mappings.get(name, {}).items())], p)

    def update_base_path_mapping(self, p: dict) -> dict:
        name = p["domainName"].lower()
        with self.change() as txn:
            old = self._mapping(name, p["basePath"])
            mapping = dict(old)
            for op in _patch_ops(p):
                field_name = op["path"][1:]
                if op["op"] != "replace" or field_name not in ("basePath", "restApiId", "stage"):
                    raise _bad_patch(op)
                value = op.get("value") or ""
                if field_name == "basePath":
                    value = value or NONE_BASE_PATH
                    if value != NONE_BASE_PATH and not BASE_PATH.match(value):
                        raise BadRequest(f"Invalid base path '{value}'")
                if value:
                    mapping[field_name] = value
                else:
                    mapping.pop(field_name, None)
            self._check_mapping_target(mapping.get("restApiId", ""), mapping.get("stage"))
            if mapping["basePath"] != old["basePath"]:
                if mapping["basePath"] in self.state.mappings.get(name, {}):
                    raise Conflict("Base path already exists for this domain name")
                txn.delete("mapping", name, old["basePath"])
            txn.put("mapping", name, mapping["basePath"], mapping)
        return dict(mapping)

    def delete_base_path_mapping(self, p: dict) -> dict:
        name = p["domainName"].lower()
        with self.change() as txn:
            mapping = self._mapping(name, p["basePath"])
            txn.delete("mapping", name, mapping["basePath"])
        return {}

    # ---- gateway responses

    @staticmethod
    def _response_type(p: dict) -> str:
        rtype = p["responseType"]
        if rtype not in GATEWAY_RESPONSE_DEFAULTS:
            raise BadRequest(f"Invalid gateway response type '{rtype}'. Valid types are "
                             f"{', '.join(GATEWAY_RESPONSE_DEFAULTS)}")
        return rtype

    def put_gateway_response(self, p: dict) -> dict:
        rtype = self._response_type(p)
        status = p.get("statusCode")
        if status is not None and not STATUS_CODE.match(status):
            raise BadRequest("Invalid status code specified. Must be a 3-digit code from 100 to 599")
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            resp = {"responseType": rtype, "defaultResponse": False,
                    "responseParameters": _clone(p.get("responseParameters") or {}),
                    "responseTemplates": _clone(p.get("responseTemplates") or {})}
            if status is not None:
                resp["statusCode"] = status
            api.setdefault("gatewayResponses", {})[rtype] = resp
            self._save_api(txn, api)
        return _clone(resp)

    def get_gateway_response(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        rtype = self._response_type(p)
        resp = (api.get("gatewayResponses") or {}).get(rtype)
        return _clone(resp) if resp is not None else default_gateway_response(rtype)

    def get_gateway_responses(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        custom = api.get("gatewayResponses") or {}
        items = [_clone(custom[t]) if t in custom else default_gateway_response(t)
                 for t in GATEWAY_RESPONSE_DEFAULTS]
        return _page(items, p)

    def delete_gateway_response(self, p: dict) -> dict:
        rtype = self._response_type(p)
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            if (api.get("gatewayResponses") or {}).pop(rtype, None) is None:
                raise NotFound("Invalid gateway response type specified")
            self._save_api(txn, api)
        return {}

    # ---- API keys
    #
    # An API key document (kind "apikey") is AWS's ApiKey without its value, plus
    # "_hash" (SHA-256 hex of the value: what the data plane matches) and "_sealed" (the
    # value under AES-GCM, for includeValue; see fastgate.compile.keys.KeySealer). A usage
    # plan (kind "usageplan") is AWS's UsagePlan plus "_createdDate" (its quota's
    # initial period). A key's membership in a plan is a "usageplankey" document
    # scoped by the plan id: {"id", "type"}, plus "_extension" after UpdateUsage.

    _API_KEY_OUT = ("id", "name", "customerId", "description", "enabled", "createdDate",
                    "lastUpdatedDate", "stageKeys", "tags")

    def _sealer(self):
        from fastgate.compile.keys import KeySealer
        if getattr(self, "_key_sealer", None) is None:
            self._key_sealer = KeySealer(Path(self.store.path).parent)
        return self._key_sealer

    def _api_key(self, key_id: str) -> dict:
        key = self.state.extra.get("apikey", {}).get("", {}).get(key_id)
        if key is None:
            raise NotFound("Invalid API Key identifier specified")
        return key

    def _api_key_view(self, key: dict, include_value: bool) -> dict:
        out = {k: _clone(key[k]) for k in self._API_KEY_OUT if k in key}
        if include_value and "_sealed" in key:
            # a key replicated from another host (fastgate.control.keys_sync) has no sealed value here
            out["value"] = self._sealer().open(key["id"], key["_sealed"])
        return out

    def _key_by_hash(self, hex_digest: str) -> dict | None:
        for key in self.state.extra.get("apikey", {}).get("", {}).values():
            if key.get("_hash") == hex_digest:
                return key
        return None

    def _stage_exists(self, api_id, stage) -> bool:
        return (api_id in self.state.apis and stage in self.state.stages.get(api_id, {})) or \
            (api_id, stage) in self.served_stages()

    def _check_stage_keys(self, stage_keys) -> list[str]:
        out = []
        for sk in stage_keys or ():
            api_id, stage = sk.get("restApiId"), sk.get("stageName")
            if not self._stage_exists(api_id, stage):
                raise BadRequest(f"Invalid stage key: restApiId {api_id}, stageName {stage}")
            out.append(f"{api_id}/{stage}")
        return out

    def _new_api_key(self, txn: "Txn", p: dict, value: str) -> dict:
        from fastgate.compile.keys import check_value, digest
        problem = check_value(value)
        if problem:
            raise BadRequest(problem)
        hex_digest = digest(value).hex()
        if self._key_by_hash(hex_digest) is not None:
            # two keys with one value would make the data plane's lookup ambiguous
            raise Conflict("An API key with the same value already exists")
        keys = self.state.extra.get("apikey", {}).get("", {})
        key_id = new_id(10)
        while key_id in keys:
            key_id = new_id(10)
        now = _now()
        key = {"id": key_id, "enabled": bool(p.get("enabled", False)),
               "createdDate": now, "lastUpdatedDate": now,
               "stageKeys": self._check_stage_keys(p.get("stageKeys"))}
        key.update(_copy_known(p, ("name", "description", "customerId", "tags")))
        key["_hash"] = hex_digest
        key["_sealed"] = self._sealer().seal(key_id, value)
        txn.put("apikey", "", key_id, key)
        return key

    def create_api_key(self, p: dict) -> dict:
        from fastgate.compile.keys import generate_value
        value = p.get("value")
        if value in (None, ""):
            value = generate_value()
        with self.change() as txn:
            key = self._new_api_key(txn, p, value)
        out = self._api_key_view(key, False)
        out["value"] = value       # AWS returns the value on creation
        return out

    def get_api_key(self, p: dict) -> dict:
        self.fresh()
        return self._api_key_view(self._api_key(p["apiKey"]), bool(p.get("includeValue")))

    def get_api_keys(self, p: dict) -> dict:
        state = self.fresh()
        keys = sorted(state.extra.get("apikey", {}).get("", {}).values(),
                      key=lambda k: (k.get("createdDate", 0), k["id"]))
        if p.get("nameQuery"):
            keys = [k for k in keys if (k.get("name") or "").startswith(p["nameQuery"])]
        if p.get("customerId"):
            keys = [k for k in keys if k.get("customerId") == p["customerId"]]
        page = _page(keys, p)
        page["items"] = [self._api_key_view(k, bool(p.get("includeValues"))) for k in page["items"]]
        return page

    def update_api_key(self, p: dict) -> dict:
        with self.change() as txn:
            key = _clone(self._api_key(p["apiKey"]))
            for op in _patch_ops(p):
                path, value, kind = op["path"], op.get("value"), op["op"]
                if kind == "replace" and path == "/enabled":
                    key["enabled"] = _bool_value(value, path)
                elif kind == "replace" and path in ("/name", "/description", "/customerId"):
                    if value in (None, ""):
                        key.pop(path[1:], None)
                    else:
                        key[path[1:]] = value
                elif kind in ("add", "remove") and path == "/stages":
                    # value "restApiId/stageName", AWS's legacy stage keys
                    api_id, _, stage = (value or "").partition("/")
                    stage_key = self._check_stage_keys([{"restApiId": api_id, "stageName": stage}])[0]
                    keys = key.setdefault("stageKeys", [])
                    if kind == "add" and stage_key not in keys:
                        keys.append(stage_key)
                    elif kind == "remove" and stage_key in keys:
                        keys.remove(stage_key)
                else:
                    raise _bad_patch(op)
            key["lastUpdatedDate"] = _now()
            txn.put("apikey", "", key["id"], key)
        return self._api_key_view(key, False)

    def delete_api_key(self, p: dict) -> dict:
        with self.change() as txn:
            key = self._api_key(p["apiKey"])
            txn.delete("apikey", "", key["id"])
            for plan_id, members in self.state.extra.get("usageplankey", {}).items():
                if key["id"] in members:
                    txn.delete("usageplankey", plan_id, key["id"])
        return {}

    def import_api_keys(self, p: dict) -> dict:
        """AWS's API key file format: CSV, header names case-insensitive, columns in any
        order, Name and Key required; Description, Enabled (default true) and
        UsagePlanIds ("id1,id2", quoted with " or ') optional; others ignored. A value
        imported again overwrites the key that has it."""
        from fastgate.compile.keys import check_value, digest
        if p.get("format") != "csv":
            raise BadRequest(f"Invalid format '{p.get('format')}': the only format is csv")
        rows, warnings = _parse_key_csv(p.get("body") or b"")
        if warnings and p.get("failOnWarnings"):
            raise BadRequest("Warnings found during import: " + "; ".join(warnings))
        ids = []
        with self.change() as txn:
            plans = self.state.extra.get("usageplan", {}).get("", {})
            # this file's keys and memberships so far: the in-memory State sees the
            # transaction's writes only after commit (and never, if it rolls back)
            imported: dict[str, dict] = {}
            members = {pid: dict(m) for pid, m in self.state.extra.get("usageplankey", {}).items()}
            for line, row in rows:
                problem = check_value(row["key"])
                if problem or not row["name"] or len(row["name"]) > 1024:
                    msg = problem or "Name must be 1 to 1024 characters"
                    if p.get("failOnWarnings"):
                        raise BadRequest(f"Line {line}: {msg}")
                    warnings.append(f"Line {line}: {msg}; the key was not imported")
                    continue
                unknown = [pid for pid in row["plans"] if pid not in plans]
                if unknown:
                    raise NotFound(f"Line {line}: Invalid Usage Plan ID specified: {unknown[0]}")
                hex_digest = digest(row["key"]).hex()
                existing = imported.get(hex_digest) or self._key_by_hash(hex_digest)
                fields = {"name": row["name"], "enabled": row["enabled"]}
                if row["description"]:
                    fields["description"] = row["description"]
                if existing is not None:
                    key = _clone(existing)
                    key.pop("description", None)
                    key.update(fields)
                    key["lastUpdatedDate"] = _now()
                    txn.put("apikey", "", key["id"], key)
                else:
                    key = self._new_api_key(txn, fields, row["key"])
                imported[hex_digest] = key
                for plan_id in row["plans"]:
                    if key["id"] in members.get(plan_id, {}):
                        continue    # already in: keep its membership (and any UpdateUsage grant)
                    self._check_plan_stages_free(plans[plan_id], key["id"], members, skip_plan=plan_id)
                    txn.put("usageplankey", plan_id, key["id"], {"id": key["id"], "type": "API_KEY"})
                    members.setdefault(plan_id, {})[key["id"]] = {"id": key["id"], "type": "API_KEY"}
                if key["id"] not in ids:
                    ids.append(key["id"])
        out = {"ids": ids}
        if warnings:
            out["warnings"] = warnings
        return out

    # ---- usage plans

    def _usage_plan(self, plan_id: str) -> dict:
        plan = self.state.extra.get("usageplan", {}).get("", {}).get(plan_id)
        if plan is None:
            raise NotFound("Invalid Usage Plan ID specified")
        return plan

    @staticmethod
    def _usage_plan_view(plan: dict) -> dict:
        return {k: _clone(v) for k, v in plan.items() if not k.startswith("_")}

    def _check_api_stage(self, stage: dict, plan_id: str | None = None) -> dict:
        api_id, name = stage.get("apiId"), stage.get("stage")
        if not api_id or not name or not self._stage_exists(api_id, name):
            raise BadRequest(f"Invalid API Stage {{api: {api_id}, stage: {name}}} specified for "
                             f"usageplan {plan_id or ''}".rstrip())
        out = {"apiId": api_id, "stage": name}
        if stage.get("throttle"):
            out["throttle"] = {m: _check_throttle(t, f"throttle {m}")
                               for m, t in _check_method_keys(stage["throttle"]).items()}
        return out

    def _check_plan_stages_free(self, plan: dict, key_id: str, members: dict,
                                skip_plan: str | None = None) -> None:
        """AWS: an API key cannot be in two usage plans that share an API stage."""
        mine = {(s["apiId"], s["stage"]) for s in plan.get("apiStages") or ()}
        for other_id, other_members in members.items():
            if other_id == (skip_plan or plan.get("id")) or key_id not in other_members:
                continue
            other = self.state.extra.get("usageplan", {}).get("", {}).get(other_id) or {}
            for s in other.get("apiStages") or ():
                if (s["apiId"], s["stage"]) in mine:
                    raise Conflict(f"Usage Plan {plan['id']} cannot be added because API Key "
                                   f"{key_id} cannot reference multiple Usage Plans with the same "
                                   f"API Stage: {s['apiId']}:{s['stage']}")

    def create_usage_plan(self, p: dict) -> dict:
        name = _require_str(p, "name", "name")
        with self.change() as txn:
            plans = self.state.extra.get("usageplan", {}).get("", {})
            plan_id = new_id(6)
            while plan_id in plans:
                plan_id = new_id(6)
            plan = {"id": plan_id, "name": name, "apiStages": []}
            for s in p.get("apiStages") or ():
                stage = self._check_api_stage(s, plan_id)
                if any((x["apiId"], x["stage"]) == (stage["apiId"], stage["stage"]) for x in plan["apiStages"]):
                    raise BadRequest(f"Duplicate API Stage {stage['apiId']}:{stage['stage']}")
                plan["apiStages"].append(stage)
            if p.get("throttle") is not None:
                plan["throttle"] = _check_throttle(p["throttle"], "throttle")
            if p.get("quota") is not None:
                plan["quota"] = _check_quota(p["quota"])
            plan.update(_copy_known(p, ("description", "tags")))
            plan["_createdDate"] = _now()
            txn.put("usageplan", "", plan_id, plan)
        return self._usage_plan_view(plan)

    def get_usage_plan(self, p: dict) -> dict:
        self.fresh()
        return self._usage_plan_view(self._usage_plan(p["usagePlanId"]))

    def get_usage_plans(self, p: dict) -> dict:
        state = self.fresh()
        plans = sorted(state.extra.get("usageplan", {}).get("", {}).values(),
                       key=lambda x: (x.get("_createdDate", 0), x["id"]))
        if p.get("keyId"):
            self._api_key(p["keyId"])
            members = state.extra.get("usageplankey", {})
            plans = [x for x in plans if p["keyId"] in members.get(x["id"], {})]
        return _page([self._usage_plan_view(x) for x in plans], p)

    def update_usage_plan(self, p: dict) -> dict:
        with self.change() as txn:
            plan = _clone(self._usage_plan(p["usagePlanId"]))
            for op in _patch_ops(p):
                self._patch_usage_plan(plan, op)
            # "/quota/limit" then "/quota/period" is a valid pair: check the end result
            if plan.get("throttle") is not None:
                plan["throttle"] = _check_throttle(plan["throttle"], "throttle")
            if plan.get("quota") is not None:
                plan["quota"] = _check_quota(plan["quota"])
            members = self.state.extra.get("usageplankey", {})
            for key_id in members.get(plan["id"], {}):
                self._check_plan_stages_free(plan, key_id, members)
            txn.put("usageplan", "", plan["id"], plan)
        return self._usage_plan_view(plan)

    def _patch_usage_plan(self, plan: dict, op: dict) -> None:
        kind, path, value = op["op"], op["path"], op.get("value")
        if kind == "replace" and path in ("/name", "/description", "/productCode"):
            if path == "/name" and not value:
                raise BadRequest("name must not be blank")
            if value in (None, ""):
                plan.pop(path[1:], None)
            else:
                plan[path[1:]] = value
            return
        if path == "/apiStages" and kind in ("add", "remove"):
            api_id, _, stage_name = (value or "").partition(":")
            stages = plan.setdefault("apiStages", [])
            found = [s for s in stages if (s["apiId"], s["stage"]) == (api_id, stage_name)]
            if kind == "add":
                if found:
                    raise Conflict(f"API Stage {value} is already associated with usage plan {plan['id']}")
                stages.append(self._check_api_stage({"apiId": api_id, "stage": stage_name}, plan["id"]))
            elif not found:
                raise NotFound(f"Invalid API Stage {value} specified for usage plan {plan['id']}")
            else:
                stages.remove(found[0])
            return
        if path.startswith("/apiStages/"):
            self._patch_stage_throttle(plan, op, path[len("/apiStages/"):])
            return
        for section, members in (("throttle", ("rateLimit", "burstLimit")),
                                 ("quota", ("limit", "offset", "period"))):
            if kind == "remove" and path == f"/{section}":
                plan.pop(section, None)
                return
            if kind in ("replace", "add") and path.startswith(f"/{section}/") and path[len(section) + 2:] in members:
                member = path[len(section) + 2:]
                current = dict(plan.get(section) or {})
                try:
                    current[member] = (value if member == "period" else
                                       float(value) if member == "rateLimit" else int(value))
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid value '{value}' for {path}") from None
                plan[section] = current     # checked whole after the last operation
                return
        raise _bad_patch(op)

    def _patch_stage_throttle(self, plan: dict, op: dict, rest: str) -> None:
        # "{apiId}:{stage}/throttle[/{resourcePath}/{httpMethod}[/rateLimit|/burstLimit]]";
        # the resource path keeps its slashes ("/apiStages/a:b/throttle//pets/GET/rateLimit")
        # or comes escaped as in JSON Pointer ("~1pets")
        kind, value = op["op"], op.get("value")
        stage_id, _, tail = rest.partition("/")
        api_id, _, stage_name = stage_id.partition(":")
        stage = next((s for s in plan.get("apiStages") or ()
                      if (s["apiId"], s["stage"]) == (api_id, stage_name)), None)
        if stage is None:
            raise NotFound(f"Invalid API Stage {stage_id} specified for usage plan {plan['id']}")
        tail = tail.strip()
        if tail == "throttle":
            if kind == "remove":
                stage.pop("throttle", None)
                return
            if kind == "replace":
                try:
                    doc = orjson.loads(value or "{}")
                    if isinstance(doc, str):
                        doc = orjson.loads(doc)      # the AWS CLI example double-quotes it
                except orjson.JSONDecodeError:
                    raise BadRequest(f"Invalid throttle map '{value}'") from None
                if not isinstance(doc, dict):
                    raise BadRequest(f"Invalid throttle map '{value}'")
                stage["throttle"] = {m: _check_throttle(t, f"throttle {m}")
                                     for m, t in _check_method_keys(doc).items()}
                if not stage["throttle"]:
                    del stage["throttle"]
                return
            raise _bad_patch(op)
        if not tail.startswith("throttle/"):
            raise _bad_patch(op)
        method_path = _unescape_pointer(tail[len("throttle/"):])
        member = None
        for m in ("rateLimit", "burstLimit"):
            if method_path.endswith("/" + m):
                member, method_path = m, method_path[:-len(m) - 1]
        if not method_path.startswith("/"):
            method_path = "/" + method_path
        _check_method_keys({method_path: None})
        throttles = stage.setdefault("throttle", {})
        if kind == "remove" and member is None:
            if throttles.pop(method_path, None) is None:
                raise NotFound(f"No throttle settings for {method_path}")
        elif kind in ("replace", "add") and member is not None:
            entry = dict(throttles.get(method_path) or {})
            try:
                entry[member] = float(value) if member == "rateLimit" else int(value)
            except (TypeError, ValueError):
                raise BadRequest(f"Invalid value '{value}' for {op['path']}") from None
            throttles[method_path] = _check_throttle(entry, f"throttle {method_path}")
        else:
            raise _bad_patch(op)
        if not throttles:
            del stage["throttle"]

    def delete_usage_plan(self, p: dict) -> dict:
        with self.change() as txn:
            plan = self._usage_plan(p["usagePlanId"])
            if plan.get("apiStages"):
                # AWS refuses too: the stages must be removed from the plan first
                raise BadRequest(f"Cannot delete Usage Plan {plan['id']} because there are API "
                                 "Stages associated with it. Remove the API Stages first.")
            txn.delete("usageplan", "", plan["id"])
            for key_id in self.state.extra.get("usageplankey", {}).get(plan["id"], {}):
                txn.delete("usageplankey", plan["id"], key_id)
        return {}

    # ---- usage plan keys

    def _usage_plan_key_view(self, key: dict) -> dict:
        out = {"id": key["id"], "type": "API_KEY"}
        if "_sealed" in key:
            out["value"] = self._sealer().open(key["id"], key["_sealed"])
        if key.get("name"):
            out["name"] = key["name"]
        return out

    def create_usage_plan_key(self, p: dict) -> dict:
        if p["keyType"] != "API_KEY":
            raise BadRequest(f"Invalid key type '{p['keyType']}': the only type is API_KEY")
        with self.change() as txn:
            plan = self._usage_plan(p["usagePlanId"])
            key = self._api_key(p["keyId"])
            members = self.state.extra.get("usageplankey", {})
            if key["id"] in members.get(plan["id"], {}):
                raise Conflict(f"Usage Plan {plan['id']} already contains API Key {key['id']}")
            self._check_plan_stages_free(plan, key["id"], members)
            txn.put("usageplankey", plan["id"], key["id"], {"id": key["id"], "type": "API_KEY"})
        return self._usage_plan_key_view(key)

    def _plan_member(self, plan_id: str, key_id: str) -> tuple[dict, dict]:
        plan = self._usage_plan(plan_id)
        member = self.state.extra.get("usageplankey", {}).get(plan["id"], {}).get(key_id)
        if member is None:
            raise NotFound("Invalid Usage Plan Key identifier specified")
        return plan, member

    def get_usage_plan_key(self, p: dict) -> dict:
        self.fresh()
        self._plan_member(p["usagePlanId"], p["keyId"])
        return self._usage_plan_key_view(self._api_key(p["keyId"]))

    def get_usage_plan_keys(self, p: dict) -> dict:
        state = self.fresh()
        plan = self._usage_plan(p["usagePlanId"])
        keys = state.extra.get("apikey", {}).get("", {})
        items = [keys[k] for k in state.extra.get("usageplankey", {}).get(plan["id"], {}) if k in keys]
        items.sort(key=lambda k: (k.get("createdDate", 0), k["id"]))
        if p.get("nameQuery"):
            items = [k for k in items if (k.get("name") or "").startswith(p["nameQuery"])]
        page = _page(items, p)
        page["items"] = [self._usage_plan_key_view(k) for k in page["items"]]
        return page

    def delete_usage_plan_key(self, p: dict) -> dict:
        with self.change() as txn:
            plan, member = self._plan_member(p["usagePlanId"], p["keyId"])
            txn.delete("usageplankey", plan["id"], member["id"])
        return {}

    # ---- usage

    # config `redis:` of the gateway serving this model (set by the admin process): usage
    # is then summed over every host that pushes to that Redis (fastgate.control.usage_redis)
    usage_redis = None

    def _usage_store(self):
        from fastgate.control.usage import UsageStore
        if getattr(self, "_usage", None) is None:
            self._usage = UsageStore(self.store.path)
        return self._usage

    def _usage_rows(self, end: str, key_ids: list[str]) -> list[tuple]:
        from fastgate.control.usage_redis import all_hosts_rows
        return all_hosts_rows(self._usage_store(), self.usage_redis, None, end, key_ids,
                              warn=log)

    @staticmethod
    def _plan_stages(plan: dict) -> set[tuple[str, str]]:
        return {(s["apiId"], s["stage"]) for s in plan.get("apiStages") or ()}

    def _quota_limit_for(self, plan: dict, now_s: int):
        """(key id, period start) -> that period's quota limit for the key: the plan's,
        less its offset in the plan's first period, or an UpdateUsage extension."""
        from fastgate.compile.keys import period_bounds
        quota = plan["quota"]
        members = self.state.extra.get("usageplankey", {}).get(plan["id"], {})
        first_start, _ = period_bounds(quota["period"], int(plan.get("_createdDate", now_s)))

        def limit_for(key_id: str, period_start: int) -> int:
            ext = (members.get(key_id) or {}).get("_extension")
            if ext and ext["period_start_s"] == period_start:
                return int(ext["limit"])
            if period_start == first_start:
                return max(quota["limit"] - quota.get("offset", 0), 0)
            return quota["limit"]
        return limit_for

    def get_usage(self, p: dict) -> dict:
        from fastgate.control.usage import parse_day, usage_values
        state = self.fresh()
        plan = self._usage_plan(p["usagePlanId"])
        try:
            start = parse_day(p["startDate"], "startDate")
            end = parse_day(p["endDate"], "endDate")
        except ValueError as e:
            raise BadRequest(str(e)) from None
        if end < start:
            raise BadRequest("The end date must not be before the start date")
        if (end - start).days > 90:
            # AWS keeps 90 days of usage and refuses longer windows
            raise BadRequest("The usage data can be queried for at most 90 days at once")
        members = sorted(state.extra.get("usageplankey", {}).get(plan["id"], {}))
        if p.get("keyId"):
            if p["keyId"] not in members:
                raise NotFound("Invalid API Key identifier specified")
            members = [p["keyId"]]
        page = _page(members, p)
        rows = self._usage_rows(p["endDate"], page["items"])
        values = usage_values(rows, page["items"], start, end, plan.get("quota"),
                              self._quota_limit_for(plan, int(time.time())) if plan.get("quota") else None,
                              self._plan_stages(plan))
        out = {"usagePlanId": plan["id"], "startDate": p["startDate"], "endDate": p["endDate"],
               "items": values}
        if "position" in page:
            out["position"] = page["position"]
        return out

    def update_usage(self, p: dict) -> dict:
        """Grant (or take back) quota for the current period of one key: replace
        /remaining. Stored as that key's limit for this period; the data plane's quota
        for the key follows on the next snapshot and falls back to the plan's at the
        period's end (KeyTable.valid_until_s)."""
        from fastgate.compile.keys import period_bounds
        from fastgate.control.usage import quota_used_by_day, utc_day
        self._usage_store()     # opened (tables created) before the write lock is taken
        with self.change() as txn:
            plan, member = self._plan_member(p["usagePlanId"], p["keyId"])
            quota = plan.get("quota")
            if not quota:
                raise BadRequest(f"Usage Plan {plan['id']} has no quota to extend")
            now = int(time.time())
            member = _clone(member)
            for op in _patch_ops(p):
                if op["op"] != "replace" or op["path"] != "/remaining":
                    raise _bad_patch(op)
                try:
                    remaining = int(op.get("value"))
                except (TypeError, ValueError):
                    raise BadRequest(f"Invalid value '{op.get('value')}' for /remaining") from None
                if remaining < 0:
                    raise BadRequest("remaining must not be negative")
                start, end = period_bounds(quota["period"], now)
                daily = quota_used_by_day(self._usage_rows(utc_day(now), [member["id"]]),
                                          self._plan_stages(plan)).get(member["id"], {})
                used = sum(n for d, n in daily.items() if d >= utc_day(start))
                member["_extension"] = {"limit": used + remaining, "period_start_s": start,
                                        "until_s": end}
            txn.put("usageplankey", plan["id"], member["id"], member)
        today = time.strftime("%Y-%m-%d", time.gmtime())
        return self.get_usage({"usagePlanId": plan["id"], "keyId": member["id"],
                               "startDate": today, "endDate": today})

# ---------------------------------------------------------------- API keys and usage plans

QUOTA_PERIODS = ("DAY", "WEEK", "MONTH")


def _check_throttle(t, what: str) -> dict:
    """AWS's ThrottleSettings {burstLimit: int >= 0, rateLimit: double >= 0}."""
    if not isinstance(t, dict):
        raise BadRequest(f"Invalid {what}: expected burstLimit and rateLimit")
    out = {}
    if t.get("burstLimit") is not None:
        burst = t["burstLimit"]
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise BadRequest(f"Invalid {what}: burstLimit must be an integer >= 0")
        out["burstLimit"] = burst
    if t.get("rateLimit") is not None:
        rate = t["rateLimit"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < float("inf"):
            raise BadRequest(f"Invalid {what}: rateLimit must be a number >= 0")
        out["rateLimit"] = float(rate)
    return out


def _check_quota(q) -> dict:
    """AWS's QuotaSettings {limit, offset, period}: a period of DAY, WEEK or MONTH and a
    limit are required; the offset is taken off the limit in the plan's first period."""
    if not isinstance(q, dict):
        raise BadRequest("Invalid quota: expected limit, offset and period")
    if q.get("period") not in QUOTA_PERIODS:
        raise BadRequest(f"Invalid quota period '{q.get('period')}': must be DAY, WEEK or MONTH")
    limit, offset = q.get("limit"), q.get("offset", 0) or 0
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise BadRequest("Invalid quota: limit must be an integer >= 0")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= limit:
        raise BadRequest("Invalid quota: offset must be an integer from 0 to the limit")
    return {"limit": limit, "offset": offset, "period": q["period"]}


def _check_method_keys(throttles: dict) -> dict:
    """Per-method throttle keys are "{resourcePath}/{httpMethod}": "/pets/GET", "//GET"
    for the root resource, "*" for any method."""
    for m in throttles:
        path, _, method = str(m).rpartition("/")
        if not path.startswith("/") or method not in HTTP_METHODS + ("*",):
            raise BadRequest(f"Invalid method throttle key '{m}': use "
                             "{resourcePath}/{httpMethod}, e.g. /pets/GET")
    return throttles


def _parse_key_csv(body: bytes) -> tuple[list[tuple[int, dict]], list[str]]:
    """Rows of an API key file: (line number, {name, key, description, enabled, plans})."""
    import csv
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("The API key file must be UTF-8 text") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise BadRequest("The API key file is empty")
    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    if "name" not in header or "key" not in header:
        raise BadRequest("The API key file must have the columns Name and Key")
    rows, warnings = [], []
    for n, line in enumerate(lines[1:], start=2):
        cells = next(csv.reader([line]))
        if len(cells) != len(header):
            # AWS also allows single quotes around a list of usage plan ids
            cells = next(csv.reader([line], quotechar="'"))
        if len(cells) != len(header):
            warnings.append(f"Line {n}: {len(cells)} columns where the header has {len(header)}")
            continue
        row = dict(zip(header, (c.strip() for c in cells)))
        enabled = row.get("enabled", "") or "true"
        if enabled.lower() not in ("true", "false"):
            warnings.append(f"Line {n}: Enabled '{enabled}' is not true or false; taken as true")
            enabled = "true"
        rows.append((n, {"name": row["name"], "key": row["key"],
                         "description": row.get("description", ""),
                         "enabled": enabled.lower() == "true",
                         "plans": [x.strip() for x in row.get("usageplanids", "").split(",") if x.strip()]}))
    return rows, warnings


# operation name (botocore's) -> Model method; what the control API serves
OPERATIONS: dict[str, str] = {
    name: re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    for name in (
        "CreateRestApi", "GetRestApi", "GetRestApis", "DeleteRestApi", "UpdateRestApi",
        "ImportRestApi", "PutRestApi", "GetExport",
        "GetResources", "GetResource", "CreateResource", "DeleteResource",
        "PutMethod", "GetMethod", "UpdateMethod", "DeleteMethod",
        "CreateAuthorizer", "GetAuthorizer", "GetAuthorizers", "UpdateAuthorizer", "DeleteAuthorizer",
        "TestInvokeAuthorizer",
        "PutIntegration", "GetIntegration", "DeleteIntegration",
        "PutIntegrationResponse", "GetIntegrationResponse", "DeleteIntegrationResponse",
        "PutMethodResponse", "GetMethodResponse", "DeleteMethodResponse",
        "CreateDeployment", "GetDeployment", "GetDeployments", "UpdateDeployment", "DeleteDeployment",
        "CreateStage", "GetStage", "GetStages", "UpdateStage", "DeleteStage",
        "CreateDomainName", "GetDomainName", "GetDomainNames", "DeleteDomainName",
        "CreateBasePathMapping", "GetBasePathMapping", "GetBasePathMappings",
        "UpdateBasePathMapping", "DeleteBasePathMapping",
        "PutGatewayResponse", "GetGatewayResponse", "GetGatewayResponses", "DeleteGatewayResponse",
        "CreateApiKey", "GetApiKey", "GetApiKeys", "UpdateApiKey", "DeleteApiKey", "ImportApiKeys",
        "CreateUsagePlan", "GetUsagePlan", "GetUsagePlans", "UpdateUsagePlan", "DeleteUsagePlan",
        "CreateUsagePlanKey", "GetUsagePlanKey", "GetUsagePlanKeys", "DeleteUsagePlanKey",
        "GetUsage", "UpdateUsage",
    )
}


def call(model: Model, operation: str, params: dict[str, Any]) -> dict:
    """Run one operation by its AWS name; KeyError if fastgate does not serve it."""
    return getattr(model, OPERATIONS[operation])(params)
