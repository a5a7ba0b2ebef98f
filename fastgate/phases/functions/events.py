"""The events Amazon API Gateway sends a Lambda proxy integration, built from one request.

``build_event_v1`` makes the REST API event (payload format 1.0),
``build_event_v1_http`` an HTTP API's payload format 1.0 event and
``build_event_v2`` the HTTP API event (payload format 2.0), key for key as AWS
sends them: which keys are null and which are left out, header and query
folding, cookies, base64 bodies.  AWS's documentation for both:

- REST: "Input format of a Lambda function for proxy integration"
  (apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html)
- HTTP: "Create AWS Lambda proxy integrations for HTTP APIs", payload formats 1.0
  and 2.0 (apigateway/latest/developerguide/http-api-develop-integrations-lambda.html)

tests/data/events/ holds AWS's sample events; tests/phases/functions/test_events.py
checks ours against them field by field.  Where AWS is odd we match it and
docs/functions.md says so.
"""

from __future__ import annotations

import base64
import hashlib
import time
from urllib.parse import unquote

from fastgate._core.fncall import (
    _TEXT_TYPES_V2,
    AWS_SPELLING,
    DEFAULT_ACCOUNT_ID,
    format_request_time,
    trace_header,
)
from fastgate._core.fncall import media_type as _media_type
from fastgate._core.fncall import query_pairs as _query_pairs

__all__ = [
    "DEFAULT_ACCOUNT_ID", "FunctionRequest", "build_event_v1", "build_event_v1_http", "build_event_v2",
    "is_binary_v1", "is_binary_v2", "media_type_matches", "format_request_time",
]

# The identity block of a REST event: every key is present, null unless known.
_IDENTITY_KEYS = (
    "accessKey", "accountId", "caller", "cognitoAuthenticationProvider",
    "cognitoAuthenticationType", "cognitoIdentityId", "cognitoIdentityPoolId",
    "principalOrgId", "sourceIp", "user", "userAgent", "userArn",
)


class FunctionRequest:
    """What the gateway knows about a request when its function integration runs.

    Bytes are as received (path keeps its percent-encoding); strings are the
    gateway's own values.  ``authorizer`` is the authorizer's output in the
    shape of the payload format: for 1.0 a flat dict (``principalId``,
    ``integrationLatency`` and the context, or Cognito's ``claims``); for 2.0
    ``{"jwt": {"claims": ..., "scopes": ...}}``, ``{"lambda": {...}}`` or
    ``{"iam": {...}}``.  ``identity`` holds REST identity extras by their AWS
    names (``apiKey``, ``apiKeyId``, ``caller``, ``user``, ``userArn``,
    ``accessKey``, ``accountId``, ...).  ``forwarded`` is the (X-Forwarded-For,
    X-Forwarded-Port, X-Forwarded-Proto) values API Gateway adds to the event's
    headers (None: none of API Gateway's own headers added, X-Amzn-Trace-Id neither); ``deployment_id`` the deployment the stage serves;
    ``context_path`` a REST event's ``requestContext.path`` when it is not
    ``/{stage}`` + ``raw_path`` (the path as requested keeps repeated slashes).
    """

    __slots__ = (
        "method", "raw_path", "raw_query", "headers", "body", "source_ip",
        "user_agent", "request_id", "request_time_ms", "protocol", "domain_name",
        "api_id", "stage", "resource_path", "route_key", "path_parameters",
        "stage_variables", "authorizer", "identity", "binary_media_types",
        "account_id", "forwarded", "deployment_id", "context_path",
    )

    def __init__(self, *, method: str, raw_path: bytes, raw_query: bytes = b"",
                 headers: list[tuple[bytes, bytes]] = (), body: bytes = b"",
                 source_ip: str = "127.0.0.1", user_agent: str | None = None,
                 request_id: str = "", request_time_ms: int | None = None,
                 protocol: str = "HTTP/1.1", domain_name: str = "",
                 api_id: str = "fastgate", stage: str = "$default",
                 resource_path: str | None = None, route_key: str = "$default",
                 path_parameters: dict[str, str] | None = None,
                 stage_variables: dict[str, str] | None = None,
                 authorizer: dict | None = None, identity: dict | None = None,
                 binary_media_types: tuple[str, ...] = (),
                 account_id: str = DEFAULT_ACCOUNT_ID,
                 forwarded: tuple[str, str, str] | None = None,
                 deployment_id: str | None = None, context_path: str | None = None):
        self.method = method
        self.raw_path = raw_path
        self.raw_query = raw_query
        self.headers = list(headers)
        self.body = body
        self.source_ip = source_ip
        self.user_agent = user_agent
        self.request_id = request_id
        self.request_time_ms = int(time.time() * 1000) if request_time_ms is None else request_time_ms
        self.protocol = protocol
        self.domain_name = domain_name
        self.api_id = api_id
        self.stage = stage
        self.resource_path = resource_path
        self.route_key = route_key
        self.path_parameters = path_parameters
        self.stage_variables = stage_variables
        self.authorizer = authorizer
        self.identity = identity
        self.binary_media_types = tuple(binary_media_types)
        self.account_id = account_id
        self.forwarded = forwarded
        self.deployment_id = deployment_id
        self.context_path = context_path


# --- shared pieces -----------------------------------------------------------

def _text(value: bytes) -> str:
    # Header and body bytes that are not UTF-8 cannot travel in a JSON string;
    # AWS substitutes U+FFFD the same way.
    return value.decode("utf-8", "replace")


def _domain(req: FunctionRequest) -> tuple[str, str]:
    """(domainName, domainPrefix): the Host without its port, and its first label."""
    host = req.domain_name
    if not host:
        for name, value in req.headers:
            if name.lower() == b"host":
                host = _text(value)
                break
    if host.startswith("["):
        host = host[:host.find("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host, host.split(".", 1)[0]


def _header(req: FunctionRequest, lname: bytes) -> bytes | None:
    for name, value in req.headers:
        if name.lower() == lname:
            return value
    return None


def media_type_matches(media_type: str, patterns) -> bool:
    """True when ``media_type`` ("image/png") matches one of an API's
    binaryMediaTypes: exact, "image/*", or "*/*"."""
    if not media_type:
        return False
    major = media_type.split("/", 1)[0]
    for pattern in patterns:
        pattern = pattern.strip().lower()
        if pattern in (media_type, "*/*") or pattern == major + "/*":
            return True
    return False


def is_binary_v1(req: FunctionRequest) -> bool:
    """REST APIs base64-encode the body when its Content-Type matches one of
    the API's binaryMediaTypes; without binary media types nothing is binary."""
    return media_type_matches(_media_type(_header(req, b"content-type")), req.binary_media_types)


def is_binary_v2(req: FunctionRequest) -> bool:
    """HTTP APIs send text/*, application/json, application/xml and
    application/javascript as text and base64-encode everything else."""
    media = _media_type(_header(req, b"content-type"))
    return not (media.startswith("text/") or media in _TEXT_TYPES_V2)


def _body(req: FunctionRequest, binary: bool) -> tuple[str, bool]:
    if binary:
        return base64.b64encode(req.body).decode("ascii"), True
    return _text(req.body), False


def _resource_id(api_id: str, resource_path: str) -> str:
    # REST resources have a 6-character id; ours is stable per API and resource.
    digest = hashlib.sha1(f"{api_id} {resource_path}".encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % 36] for b in digest[:6])


# --- payload format 1.0 (REST API) ----------------------------------------------

def _own_headers(req: FunctionRequest, length: bool) -> list[tuple[str, str]]:
    """What API Gateway adds to the client's headers: X-Forwarded-For (the client's value
    with its address appended), -Port and -Proto, and an X-Amzn-Trace-Id when the client
    sent none; an HTTP API also the body's Content-Length (sent even for an empty body:
    AWS's captures show "0")."""
    own = []
    if length:
        own.append(("Content-Length", str(len(req.body))))
    if req.forwarded is not None:
        own.extend(zip(("X-Forwarded-For", "X-Forwarded-Port", "X-Forwarded-Proto"), req.forwarded))
        if _header(req, b"x-amzn-trace-id") is None:
            own.append(("X-Amzn-Trace-Id", trace_header(req.request_id, req.request_time_ms)))
    return own


def _client_headers(req: FunctionRequest, own: list) -> list[tuple[str, str]]:
    """The client's headers as text, without its copies of the ones API Gateway writes."""
    replaced = {name.lower() for name, _ in own}
    return [(name, value) for name, value in ((_text(n), _text(v)) for n, v in req.headers)
            if name.lower() not in replaced]


def _v1_headers(req: FunctionRequest, length: bool) -> tuple[dict, dict]:
    """1.0's (headers, multiValueHeaders); ``headers`` keeps the last value, under the
    first spelling the client used, except the names API Gateway spells its own way
    (AWS_SPELLING: Authorization, Host, User-Agent); the headers it adds come last."""
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}   # lower-case name -> first spelling seen
    own = _own_headers(req, length)
    for name, value in _client_headers(req, own) + own:
        lname = name.lower()
        key = spelling.get(lname)
        if key is None:
            key = spelling[lname] = AWS_SPELLING.get(lname, name)
        headers[key] = value
        multi_headers.setdefault(key, []).append(value)
    return headers, multi_headers


def _v1_event(req: FunctionRequest, resource: str, path: str, headers: dict,
              multi_headers: dict, context: dict, binary: bool) -> dict:
    """The top level every 1.0 event shares: every key present, null when empty."""
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for key, value in _query_pairs(req.raw_query):
        query[key] = value
        multi_query.setdefault(key, []).append(value)
    if req.body:
        body, encoded = _body(req, binary)
    else:
        body, encoded = None, False
    return {
        "resource": resource,
        "path": path,
        "httpMethod": req.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": req.path_parameters or None,
        "stageVariables": req.stage_variables or None,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": encoded,
    }


def build_event_v1(req: FunctionRequest) -> dict:
    """The REST API proxy event.  Every top-level key is always present:
    query, path parameters, stage variables and body are null when empty."""
    headers, multi_headers = _v1_headers(req, length=False)
    # REST APIs keep the path's percent-encoding ("%2B" stays "%2B"; AWS's recordings)
    path = _text(req.raw_path)
    stage_prefix = "" if req.stage == "$default" else "/" + req.stage
    resource = req.resource_path if req.resource_path is not None else path
    domain_name, domain_prefix = _domain(req)
    user_agent = req.user_agent
    if user_agent is None:
        ua = _header(req, b"user-agent")
        user_agent = _text(ua) if ua is not None else None

    identity = dict.fromkeys(_IDENTITY_KEYS)
    identity["sourceIp"] = req.source_ip
    identity["userAgent"] = user_agent
    if req.identity:
        identity.update(req.identity)

    context = {
        "accountId": req.account_id,
        "apiId": req.api_id,
    }
    if req.authorizer is not None:
        context["authorizer"] = req.authorizer
    if req.deployment_id is not None:
        context["deploymentId"] = req.deployment_id
    context.update({
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "extendedRequestId": req.request_id,
        "httpMethod": req.method,
        "identity": identity,
        # as on the execute-api endpoint: /{stage}/..., repeated slashes kept
        "path": req.context_path if req.context_path is not None else stage_prefix + path,
        "protocol": req.protocol,
        "requestId": req.request_id,
        "requestTime": format_request_time(req.request_time_ms),
        "requestTimeEpoch": req.request_time_ms,
        "resourceId": _resource_id(req.api_id, resource),
        "resourcePath": resource,
        "stage": req.stage,
    })

    return _v1_event(req, resource, path, headers, multi_headers, context, is_binary_v1(req))


# --- payload format 1.0 on an HTTP API ----------------------------------------------

# An HTTP API's 1.0 event without an authorizer still carries this authorizer block
# (AWS's published sample); a JWT authorizer fills it in.
_NO_AUTHORIZER_V1_HTTP = {"claims": None, "scopes": None}


def build_event_v1_http(req: FunctionRequest) -> dict:
    """The event an HTTP API sends with payloadFormatVersion 1.0.

    The REST event's keys (every top-level key present, null when empty,
    multiValue maps, header spellings) with HTTP API differences: ``"version":
    "1.0"`` first; a Content-Length header (the Cookie header stays a header); the body is
    base64 by the HTTP API rule (``is_binary_v2``), not binaryMediaTypes;
    the path is percent-decoded, as ``rawPath`` is in 2.0;
    ``requestContext.authorizer`` is always there (``{"claims": null,
    "scopes": null}`` without an authorizer); ``resourceId`` is null; identity
    has no API key fields (HTTP APIs have no API keys).  ``path`` and
    ``requestContext.path`` both carry a named stage, as ``rawPath`` does in 2.0.
    """
    headers, multi_headers = _v1_headers(req, length=True)
    # HTTP APIs percent-decode the path (live captures), unlike REST APIs
    path = unquote(_text(req.raw_path))
    if req.stage != "$default":
        path = "/" + req.stage + path
    # The catch-all route has no resource of its own: the request path stands in.
    resource = req.resource_path if req.resource_path not in (None, "/$default") else path
    domain_name, domain_prefix = _domain(req)
    user_agent = req.user_agent
    if user_agent is None:
        user_agent = headers.get("User-Agent")

    identity = dict.fromkeys(_IDENTITY_KEYS)
    identity["sourceIp"] = req.source_ip
    identity["userAgent"] = user_agent
    if req.identity:
        identity.update((k, v) for k, v in req.identity.items() if not k.startswith("apiKey"))

    context = {
        "accountId": req.account_id,
        "apiId": req.api_id,
        "authorizer": req.authorizer if req.authorizer is not None else dict(_NO_AUTHORIZER_V1_HTTP),
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "extendedRequestId": req.request_id,
        "httpMethod": req.method,
        "identity": identity,
        "path": path,
        "protocol": req.protocol,
        "requestId": req.request_id,
        "requestTime": format_request_time(req.request_time_ms),
        "requestTimeEpoch": req.request_time_ms,
        "resourceId": None,
        "resourcePath": resource,
        "stage": req.stage,
    }
    # "version" comes first, as AWS sends it
    return {"version": "1.0",
            **_v1_event(req, resource, path, headers, multi_headers, context, is_binary_v2(req))}


# --- payload format 2.0 (HTTP API) ----------------------------------------------

def build_event_v2(req: FunctionRequest) -> dict:
    """The HTTP API event.  Unlike 1.0, empty parts are left out rather than
    null: cookies, queryStringParameters, body, pathParameters, stageVariables,
    and requestContext.authorizer."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    own = _own_headers(req, True)
    for name, value in _client_headers(req, own):
        name = name.lower()
        if name == "cookie":
            # Each cookie becomes one entry; the Cookie header itself is not sent.
            cookies.extend(c.strip() for c in value.split(";") if c.strip())
            continue
        previous = headers.get(name)
        headers[name] = value if previous is None else previous + "," + value
    headers.update((name.lower(), value) for name, value in own)

    query: dict[str, str] = {}
    for key, value in _query_pairs(req.raw_query):
        previous = query.get(key)
        query[key] = value if previous is None else previous + "," + value

    # On the execute-api endpoint a named stage is the path's first segment and
    # rawPath keeps it (libraries such as aws-lambda-powertools strip it again).
    # HTTP APIs percent-decode it, despite the name (live captures: "%20" arrives as " ").
    raw_path = unquote(_text(req.raw_path))
    if req.stage != "$default":
        raw_path = "/" + req.stage + raw_path
    domain_name, domain_prefix = _domain(req)
    user_agent = req.user_agent
    if user_agent is None:
        user_agent = headers.get("user-agent", "")

    context = {"accountId": req.account_id, "apiId": req.api_id}
    if req.authorizer is not None:
        context["authorizer"] = req.authorizer
    context.update({
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "http": {
            "method": req.method,
            "path": raw_path,
            "protocol": req.protocol,
            "sourceIp": req.source_ip,
            "userAgent": user_agent,
        },
        "requestId": req.request_id,
        "routeKey": req.route_key,
        "stage": req.stage,
        "time": format_request_time(req.request_time_ms),
        "timeEpoch": req.request_time_ms,
    })

    event: dict = {
        "version": "2.0",
        "routeKey": req.route_key,
        "rawPath": raw_path,
        "rawQueryString": _text(req.raw_query),
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = context
    encoded = False
    if req.body:
        event["body"], encoded = _body(req, is_binary_v2(req))
    if req.path_parameters:
        event["pathParameters"] = req.path_parameters
    event["isBase64Encoded"] = encoded
    if req.stage_variables:
        event["stageVariables"] = req.stage_variables
    return event
