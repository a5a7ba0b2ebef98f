"""Authorizers and resource policies: the checks of the ACCESS phase.

The control plane compiles each method's access rules (fastgate.compile.access)
into an ordered list of :class:`Check` objects, built once per reload and
shared by every request of the snapshot.  Per request the gateway builds one
:class:`AuthRequest` and runs the checks in order; the first result that is not
``allowed`` ends the request with the gateway response named by its
``error_type``.  Checks answer synchronously whenever they can (a cached JWKS
key, a cached Lambda result, a policy, a SigV4 signature); only a check that
must wait for the network or a function returns an awaitable.

    checks = compile_method_access(api, method, invoke=pool.invoke, ...)
    for check in checks:
        result = check.check(req)
        if not isinstance(result, AuthResult):
            result = await result
        if not result.allowed:
            respond(result.error_type, result.message, result.headers)

The modules: ``policy`` (resource policies, IP allow/deny, IAM policy
evaluation shared with Lambda authorizers), ``jwt`` (JWT and Cognito user-pool
authorizers), ``lambda_authorizer`` (TOKEN/REQUEST Lambda authorizers),
``iam`` (AWS_IAM: SigV4 with replay protection), ``http`` (the small asyncio
client for JWKS and HTTP-endpoint authorizers), ``compile`` (API documents and
YAML route specs -> checks).  docs/authorizers.md describes the behaviour.
"""

from __future__ import annotations

from typing import Awaitable

__all__ = ["AuthRequest", "AuthResult", "Check", "ALLOW", "header_value", "deny"]


class AuthRequest:
    """What the checks may read of one request; built by the gateway once per request."""

    __slots__ = (
        "method",            # "GET"
        "path",              # raw path as received, stage prefix included, still %-encoded
        "stage_path",        # the path inside the stage ("/pets/1"), as received
        "query",             # raw query string (bytes, no "?")
        "headers",           # [(name, value)] bytes, in order, names as received
        "body",              # bytes, or None when not buffered (only IAM needs it)
        "source_ip",         # the client address (already resolved through trusted proxies)
        "request_id", "api_id", "stage", "resource_path", "route_key",
        "path_params", "stage_variables", "account_id", "region", "domain_name",
        "request_time_ms",
        "forwarded",         # (X-Forwarded-For, -Port, -Proto) as a proxy event carries them, or None
        "deployment_id",     # the deployment the REST API's stage serves, or None
    )

    def __init__(self, *, method: str, path: str, stage_path: str | None = None,
                 query: bytes = b"", headers=(), body: bytes | None = None,
                 source_ip: str = "127.0.0.1", request_id: str = "", api_id: str = "fastgate",
                 stage: str = "$default", resource_path: str | None = None,
                 route_key: str = "$default", path_params: dict | None = None,
                 stage_variables: dict | None = None, account_id: str = "123456789012",
                 region: str = "us-east-1", domain_name: str = "", request_time_ms: int = 0,
                 forwarded: tuple[str, str, str] | None = None, deployment_id: str | None = None):
        self.method = method
        self.path = path
        self.stage_path = path if stage_path is None else stage_path
        self.query = query
        self.headers = list(headers)
        self.body = body
        self.source_ip = source_ip
        self.request_id = request_id
        self.api_id = api_id
        self.stage = stage
        self.resource_path = self.stage_path if resource_path is None else resource_path
        self.route_key = route_key
        self.path_params = path_params or {}
        self.stage_variables = stage_variables or {}
        self.account_id = account_id
        self.region = region
        self.domain_name = domain_name
        self.request_time_ms = request_time_ms
        self.forwarded = forwarded
        self.deployment_id = deployment_id

    def method_arn(self) -> str:
        """The execute-api ARN of this request, as Lambda authorizers and resource policies
        see it: arn:aws:execute-api:{region}:{account}:{api}/{stage}/{METHOD}/{path without
        its leading slash}.  AWS builds it from the request's path, not the resource template.
        A WebSocket API's $connect: {api}/{stage}/$connect."""
        if self.route_key == "$connect":
            # a WebSocket API's upgrade: its route, not a method and path
            return f"arn:aws:execute-api:{self.region}:{self.account_id}:{self.api_id}/{self.stage}/$connect"
        return (f"arn:aws:execute-api:{self.region}:{self.account_id}:{self.api_id}/"
                f"{self.stage}/{self.method}/{self.stage_path[1:]}")


class AuthResult:
    """The outcome of one check.  A denial names the gateway response type (the keys of
    the data plane's GATEWAY_RESPONSES) and AWS's message for the case; ``message`` None
    keeps the gateway response's own message.  ``error_code`` overrides the response
    type's x-amzn-ErrorType where AWS sends a different one for the same type (SigV4's
    IncompleteSignatureException)."""

    __slots__ = ("allowed", "error_type", "message", "error_code", "headers", "principal_id",
                 "context", "claims", "identity", "usage_identifier_key")

    def __init__(self, allowed: bool, error_type: str | None = None, message: str | None = None,
                 *, error_code: str | None = None, headers=(), principal_id: str | None = None,
                 context: dict | None = None, claims: dict | None = None,
                 identity: dict | None = None, usage_identifier_key: str | None = None):
        self.allowed = allowed
        self.error_type = error_type
        self.message = message
        self.error_code = error_code
        self.headers: list[tuple[bytes, bytes]] = list(headers)
        self.principal_id = principal_id
        self.context: dict = context if context is not None else {}    # $context.authorizer.X
        self.claims = claims                                            # JWT/Cognito claims
        self.identity: dict = identity if identity is not None else {}  # $context.identity.X
        self.usage_identifier_key = usage_identifier_key

    def __repr__(self) -> str:
        if self.allowed:
            return f"AuthResult(allowed, principal_id={self.principal_id!r})"
        return f"AuthResult(denied, {self.error_type}, {self.message!r})"


# A check that lets the request through and adds nothing (a policy's Allow). Shared:
# the gateway must not mutate results.
ALLOW = AuthResult(True)


def deny(error_type: str, message: str | None, **kw) -> AuthResult:
    return AuthResult(False, error_type, message, **kw)


class Check:
    """One compiled check (a resource policy, an authorizer): immutable after
    compilation and shared by all requests of a snapshot."""

    needs_body = False      # True: the gateway must buffer the body before check()
    kind = "check"          # for logs: "policy", "jwt", "lambda", "iam"

    def check(self, req: AuthRequest) -> AuthResult | Awaitable[AuthResult]:
        raise NotImplementedError


def header_value(headers, lname: bytes) -> bytes | None:
    """The first value of a header (``lname`` lower-case), or None."""
    for name, value in headers:
        if name.lower() == lname:
            return value
    return None
