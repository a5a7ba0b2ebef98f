"""Lambda authorizers (TOKEN and REQUEST), with API Gateway's events, outputs and cache.

The authorizer is a function of fastgate's functions (``invoke``, FunctionPool.invoke's
signature: a local ``module:callable`` run in a warm handler process, or a remote
Lambda), or an HTTP endpoint that receives the event as a JSON POST and answers
the output as JSON (fastgate's extension; answering 401 means "Unauthorized").

Per request:
  1. the identity sources are read; one missing or empty -> 401 Unauthorized, no call
     (TOKEN: also when the token fails identityValidationExpression);
  2. the result cache is looked up by the identity values (and the route, when
     ``cache_by_route``): a hit answers synchronously;
  3. otherwise the authorizer is called with the event of its kind:
       TOKEN         {type, authorizationToken, methodArn}
       REQUEST (REST) {type, methodArn, resource, path, httpMethod, headers, ...}
       REQUEST (HTTP API, payload 1.0) the same plus version, identitySource, authorizationToken
       REQUEST (HTTP API, payload 2.0) {version, type, routeArn, identitySource, routeKey, ...}
  4. its output decides: an IAM policy evaluated against this request's ARN (explicit
     Deny 403, no Allow 403), or HTTP APIs' simple ``{"isAuthorized": bool}``.
     The output (not the decision) is cached: a cached policy is evaluated against each
     request's own ARN, as API Gateway does.
Failures follow AWS: the function raising "Unauthorized" -> 401; raising anything
else, timing out or returning an unusable output -> 500 AUTHORIZER_CONFIGURATION_ERROR
(REST's body message is null).
https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-lambda-authorizer-input.html
https://docs.aws.amazon.com/apigateway/latest/developerguide/api-gateway-lambda-authorizer-output.html
https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-lambda-authorizer.html
"""

from __future__ import annotations

import re
import time
from urllib.parse import unquote

from fastgate._core.fncall import query_pairs as _query_pairs
from fastgate.phases.auth import AuthRequest, AuthResult, Check, deny
from fastgate.phases.auth.http import HttpError
from fastgate.phases.auth.policy import (
    ALLOWED,
    EXPLICIT_DENY,
    PolicyError,
    arn_tail,
    compile_statements,
    evaluate,
)
from fastgate.phases.functions.errors import FunctionError
from fastgate.phases.functions.events import (
    FunctionRequest,
    build_event_v1,
    build_event_v2,
)

__all__ = ["LambdaAuthorizer", "LambdaCheck", "ResultCache", "parse_identity_sources",
           "AuthorizerOutputError"]

DEFAULT_TIMEOUT_MS = 10_000     # how long a call may take before the request fails (500)
CACHE_CAPACITY = 10_000         # cached outputs per authorizer

EXPLICIT_DENY_MESSAGE = "User is not authorized to access this resource with an explicit deny"
IMPLICIT_DENY_MESSAGE = "User is not authorized to access this resource"

# identity source prefixes: REST spelling, HTTP API spelling -> kind
_SOURCE_PREFIXES = (
    ("method.request.header.", "header"), ("method.request.querystring.", "query"),
    ("stageVariables.", "stage"), ("context.", "context"),
    ("$request.header.", "header"), ("$request.querystring.", "query"),
    ("$stageVariables.", "stage"), ("$context.", "context"),
    ("route.request.header.", "header"), ("route.request.querystring.", "query"),   # WebSocket APIs
)


class AuthorizerOutputError(ValueError):
    """The authorizer answered something API Gateway would not accept."""


def parse_identity_sources(value) -> tuple[tuple[str, str], ...]:
    """``"method.request.header.Auth, method.request.querystring.q"`` (or the HTTP API
    ``$request.header.X`` form, or a list) -> ((kind, name), ...)."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        for prefix, kind in _SOURCE_PREFIXES:
            if item.startswith(prefix) and len(item) > len(prefix):
                name = item[len(prefix):]
                out.append((kind, name.lower() if kind == "header" else name))
                break
        else:
            raise ValueError(f"identity source {item!r}: expected method.request.header.NAME, "
                             "method.request.querystring.NAME, stageVariables.NAME or context.NAME "
                             "(HTTP APIs: $request.header.NAME, ...)")
    return tuple(out)


def _context_value(req: AuthRequest, name: str) -> str | None:
    return {
        "requestId": req.request_id, "apiId": req.api_id, "stage": req.stage,
        "httpMethod": req.method, "resourcePath": req.resource_path, "routeKey": req.route_key,
        "domainName": req.domain_name, "accountId": req.account_id,
        "identity.sourceIp": req.source_ip,
    }.get(name)


def _identity_value(req: AuthRequest, kind: str, name: str, http_api: bool) -> str | None:
    if kind == "header":
        lname = name.encode("latin-1")
        values = [v.decode("utf-8", "replace") for n, v in req.headers if n.lower() == lname]
        if not values:
            return None
        # HTTP APIs join repeated headers with commas, as their events do
        return ",".join(values) if http_api else values[0]
    if kind == "query":
        values = [v for k, v in _query_pairs(req.query) if k == name]
        if not values:
            return None
        return ",".join(values) if http_api else values[-1]
    if kind == "stage":
        return req.stage_variables.get(name)
    return _context_value(req, name)


class ResultCache:
    """Authorizer outputs by identity key, each for ``ttl_s``; at most ``capacity``
    (the oldest entry goes first).  One per authorizer, shared by its routes."""

    def __init__(self, ttl_s: float, capacity: int = CACHE_CAPACITY, clock=time.monotonic):
        self.ttl_s = ttl_s
        self.capacity = capacity
        self.clock = clock
        self._entries: dict = {}
        self.hits = 0
        self.misses = 0

    def get(self, key):
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self.clock():
                self.hits += 1
                return entry[1]
            del self._entries[key]
        self.misses += 1
        return None

    def put(self, key, value) -> None:
        if self.ttl_s <= 0:
            return
        entries = self._entries
        entries.pop(key, None)
        while len(entries) >= self.capacity:
            del entries[next(iter(entries))]
        entries[key] = (self.clock() + self.ttl_s, value)

    def clear(self) -> None:
        self._entries.clear()


class _Output:
    """An authorizer's output, validated: either a simple answer or a policy."""

    __slots__ = ("simple", "statements", "principal_id", "context", "usage_key")

    def __init__(self, simple, statements, principal_id, context, usage_key):
        self.simple = simple              # True/False for simple responses, else None
        self.statements = statements
        self.principal_id = principal_id
        self.context = context
        self.usage_key = usage_key


class LambdaAuthorizer:
    """One authorizer's configuration, as compiled from an Authorizer or a YAML spec."""

    def __init__(self, *, type: str, function: str | None = None, url: str | None = None,
                 identity_source=None, validation_expression: str | None = None,
                 ttl_s: float = 300, cache_by_route: bool = False, http_api: bool = False,
                 payload_version: str = "1.0", simple_responses: bool = False,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, name: str = ""):
        type = type.upper()
        if type not in ("TOKEN", "REQUEST"):
            raise ValueError(f"authorizer type must be TOKEN or REQUEST, not {type!r}")
        if (function is None) == (url is None):
            raise ValueError("an authorizer needs exactly one of function or url")
        if payload_version not in ("1.0", "2.0"):
            raise ValueError(f"payload format version must be 1.0 or 2.0, not {payload_version!r}")
        if simple_responses and not (http_api and payload_version == "2.0"):
            raise ValueError("simple responses need an HTTP API authorizer with payload format 2.0")
        self.type = type
        self.function = function
        self.url = url
        self.sources = parse_identity_sources(identity_source)
        if type == "TOKEN":
            if len(self.sources) != 1 or self.sources[0][0] != "header":
                raise ValueError("a TOKEN authorizer takes its token from one header "
                                 "(identitySource method.request.header.NAME)")
        elif ttl_s > 0 and not self.sources:
            raise ValueError("a cached REQUEST authorizer needs identity sources (the cache key)")
        self.validation = re.compile(validation_expression) if validation_expression else None
        self.ttl_s = ttl_s
        self.cache_by_route = cache_by_route
        self.http_api = http_api
        self.payload_version = payload_version
        self.simple_responses = simple_responses
        self.timeout_ms = timeout_ms
        self.name = name

    def cache_identity(self) -> tuple:
        """What makes two authorizers share results: the same answers for the same input."""
        return (self.type, self.function, self.url, self.sources, self.http_api,
                self.payload_version, self.simple_responses, self.ttl_s)

    # -- events ----------------------------------------------------------------------

    def event(self, req: AuthRequest, values: list[str]) -> dict:
        arn = req.method_arn()
        if self.type == "TOKEN":
            return {"type": "TOKEN", "methodArn": arn, "authorizationToken": values[0]}
        if req.route_key == "$connect":
            return websocket_request_event(req, arn)
        freq = FunctionRequest(
            method=req.method, raw_path=req.stage_path.encode("latin-1"), raw_query=req.query,
            headers=req.headers, source_ip=req.source_ip, request_id=req.request_id,
            request_time_ms=req.request_time_ms or None, domain_name=req.domain_name,
            api_id=req.api_id, stage=req.stage, resource_path=req.resource_path,
            route_key=req.route_key, stage_variables=req.stage_variables,
            account_id=req.account_id, forwarded=req.forwarded, deployment_id=req.deployment_id,
            # REST APIs keep a path parameter's escapes, HTTP APIs decode them (as in proxy events)
            path_parameters={k: unquote(v) for k, v in req.path_params.items()} if self.http_api
            else req.path_params)
        if self.http_api and self.payload_version == "2.0":
            proxy = build_event_v2(freq)
            event = {"version": "2.0", "type": "REQUEST", "routeArn": arn,
                     "identitySource": values}
            for key, value in proxy.items():
                if key not in ("version", "body", "isBase64Encoded"):
                    event[key] = value
            return event
        proxy = build_event_v1(freq)
        event = {"type": "REQUEST", "methodArn": arn}
        if self.http_api:
            joined = ",".join(values)
            event = {"version": "1.0", "type": "REQUEST", "methodArn": arn,
                     "identitySource": joined, "authorizationToken": joined}
        for key, value in proxy.items():
            if key not in ("body", "isBase64Encoded"):
                event[key] = value
        return event

    # -- outputs ---------------------------------------------------------------------

    def parse_output(self, result) -> _Output:
        if not isinstance(result, dict):
            raise AuthorizerOutputError(f"the output is {type(result).__name__}, not an object")
        context = result.get("context")
        if context is None:
            context = {}
        elif not isinstance(context, dict):
            raise AuthorizerOutputError("context must be an object")
        if not (self.http_api and self.payload_version == "2.0"):
            # REST and HTTP payload 1.0: string, number and boolean values only
            for k, v in context.items():
                if not isinstance(v, (str, int, float, bool)):
                    raise AuthorizerOutputError(f"context.{k}: values must be strings, numbers "
                                                "or booleans")
        if self.simple_responses:
            allowed = result.get("isAuthorized")
            if not isinstance(allowed, bool):
                raise AuthorizerOutputError("isAuthorized must be true or false")
            return _Output(allowed, (), None, context, None)
        principal = result.get("principalId")
        if principal is not None and not isinstance(principal, str):
            principal = str(principal)
        if principal is None and not self.http_api:
            raise AuthorizerOutputError("principalId is required")
        doc = result.get("policyDocument")
        if doc is None:
            raise AuthorizerOutputError("policyDocument is required")
        try:
            statements = compile_statements(doc, "policyDocument")
        except PolicyError as exc:
            raise AuthorizerOutputError(str(exc)) from None
        usage = result.get("usageIdentifierKey")
        if usage is not None and not isinstance(usage, str):
            raise AuthorizerOutputError("usageIdentifierKey must be a string")
        return _Output(None, statements, principal, context, usage)


def websocket_request_event(req: AuthRequest, arn: str) -> dict:
    """A WebSocket API's REQUEST authorizer event on $connect: the upgrade request's headers
    and query, the stage variables, and the request context $connect's own event has
    (connectionId included: the connection's id is known before it is allowed)."""
    from fastgate.phases.websocket.connections import connection_id_for
    from fastgate.phases.websocket.events import ConnectionInfo, connect_event
    ua = next((v for n, v in req.headers if n.lower() == b"user-agent"), None)
    info = ConnectionInfo(connection_id_for(req.request_id.encode()), req.api_id, req.stage,
                          req.domain_name, req.source_ip,
                          ua.decode("latin-1") if ua is not None else None, req.request_time_ms)
    proxy = connect_event(info, req.request_id, req.request_time_ms, req.headers, req.query)
    event = {"type": "REQUEST", "methodArn": arn}
    for key in ("headers", "multiValueHeaders", "queryStringParameters",
                "multiValueQueryStringParameters"):
        if key in proxy:
            event[key] = proxy[key]
    event["stageVariables"] = dict(req.stage_variables or {})
    event["requestContext"] = proxy["requestContext"]
    return event


class LambdaCheck(Check):
    """A method protected by a Lambda authorizer (shared config, shared cache)."""

    kind = "lambda"

    def __init__(self, authorizer: LambdaAuthorizer, cache: ResultCache, *, invoke=None,
                 http_client=None):
        if authorizer.function is not None and invoke is None:
            raise ValueError(f"authorizer {authorizer.name or authorizer.function}: "
                             "no function runner to call it with")
        self.auth = authorizer
        self.cache = cache
        self.invoke = invoke
        self.http = http_client
        self.calls = 0          # authorizer invocations through this check (tests, stats)

    def _failure(self) -> AuthResult:
        return deny("AUTHORIZER_CONFIGURATION_ERROR",
                    "Internal Server Error" if self.auth.http_api else None)

    def _unauthorized(self) -> AuthResult:
        return deny("UNAUTHORIZED", "Unauthorized")

    def check(self, req: AuthRequest):
        auth = self.auth
        values = []
        for kind, name in auth.sources:
            value = _identity_value(req, kind, name, auth.http_api)
            if not value:
                return self._unauthorized()
            values.append(value)
        if auth.validation is not None and not auth.validation.fullmatch(values[0]):
            return self._unauthorized()
        key = None
        if auth.ttl_s > 0:
            key = (tuple(values), req.route_key) if auth.cache_by_route else tuple(values)
            output = self.cache.get(key)
            if output is not None:
                return self._decide(output, req)
        return self._call(req, values, key)

    async def _call(self, req: AuthRequest, values: list[str], key) -> AuthResult:
        auth = self.auth
        event = auth.event(req, values)
        self.calls += 1
        try:
            if auth.function is not None:
                result = await self.invoke(auth.function, event, timeout_ms=auth.timeout_ms,
                                           request_id=req.request_id or None)
            else:
                result = await self.http.post_json(auth.url, event, timeout_s=auth.timeout_ms / 1000)
        except FunctionError as err:
            if err.kind == "raised" and (err.error or {}).get("errorMessage") == "Unauthorized":
                return self._unauthorized()
            return self._failure()
        except HttpError as err:
            return self._unauthorized() if err.status == 401 else self._failure()
        try:
            output = auth.parse_output(result)
        except AuthorizerOutputError:
            return self._failure()
        if key is not None:
            self.cache.put(key, output)
        return self._decide(output, req)

    def _decide(self, output: _Output, req: AuthRequest) -> AuthResult:
        if output.simple is not None:
            if not output.simple:
                return deny("ACCESS_DENIED", "Forbidden")
        else:
            arn = req.method_arn()
            outcome = evaluate(output.statements, arn, arn_tail(req))
            if outcome != ALLOWED:
                if self.auth.http_api:
                    return deny("ACCESS_DENIED", "Forbidden")
                return deny("ACCESS_DENIED", EXPLICIT_DENY_MESSAGE if outcome == EXPLICIT_DENY
                            else IMPLICIT_DENY_MESSAGE)
        return AuthResult(True, principal_id=output.principal_id, context=output.context,
                          usage_identifier_key=output.usage_key)
