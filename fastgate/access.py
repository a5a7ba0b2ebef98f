"""The ACCESS phase of one route: resource policy, authorizer, API key — compiled
once per snapshot, run by the protocol once per request.

The protocol calls ``AccessPhase.run(conn, ctx, body)`` after routing. Checks
(fastgate.auth) answer synchronously when they can; the first one that must wait
(a JWKS fetch, a Lambda authorizer call) turns the rest of the phase into a task
that resumes the request with ``conn.access_done(...)``. A denial names a gateway
response type, so the API's customised gateway responses apply.
"""

from __future__ import annotations

import asyncio
import os
import sys

import orjson

from fastgate._core.protocol import AccessVerdict
from fastgate.auth import AuthRequest, AuthResult

ALLOW, DENY, WAIT = (AccessVerdict.ACCESS_ALLOW, AccessVerdict.ACCESS_DENY,
                     AccessVerdict.ACCESS_WAIT)


def log(msg: str) -> None:
    print(f"fastgate[{os.getpid()}]: {msg}", file=sys.stderr, flush=True)


class Services:
    """Per-worker state the access checks share across routes and reloads: the
    authorizers' caches, the HTTP client for JWKS and HTTP authorizers, and the
    function runner that Lambda authorizers call."""

    def __init__(self, functions=None):
        from fastgate.auth.compile import AuthCaches
        from fastgate.auth.http import HttpClient
        self.caches = AuthCaches()
        self.http_client = HttpClient()
        self.functions = functions          # fastgate.functions.gateway.FunctionRunner or None
        self.tasks: set = set()

    async def invoke(self, name, event, *, timeout_ms=None, request_id=None):
        if self.functions is None:
            from fastgate.functions.errors import FunctionError
            raise FunctionError("service", f"no functions are configured (authorizer {name!r})")
        return await self.functions.invoke(name, event, timeout_ms=timeout_ms, request_id=request_id)


class AccessPhase:
    """The checks of one route, in API Gateway's order (policy, then authorizer)."""

    __slots__ = ("checks", "needs_body", "services", "region", "account_id")

    def __init__(self, checks: list, services: Services, *, region: str = "us-east-1",
                 account_id: str = "123456789012"):
        self.checks = tuple(checks)
        self.needs_body = any(getattr(c, "needs_body", False) for c in checks)
        self.services = services
        self.region = region
        self.account_id = account_id

    def request(self, ctx, body) -> AuthRequest:
        api = ctx.api
        route = ctx.route
        return AuthRequest(
            method=ctx.method.decode("latin-1"), path=ctx.path.decode("latin-1"),
            stage_path=(ctx.stage_path or ctx.path).decode("latin-1"), query=ctx.query,
            headers=ctx.headers, body=body, source_ip=ctx.client_ip.decode("latin-1"),
            request_id=ctx.request_id.decode("latin-1"),
            api_id=api.api_id if api is not None else "fastgate",
            stage=api.stage if api is not None else "$default",
            resource_path=route.resource_path or None, route_key=route.route_key,
            path_params={k.decode("latin-1"): v.decode("latin-1")
                         for k, v in (ctx.path_params or {}).items()},
            stage_variables=api.variables if api is not None else None,
            account_id=self.account_id, region=self.region,
            domain_name=ctx.route_host.decode("latin-1"), request_time_ms=ctx.request_time_ms)

    def run(self, conn, ctx, body=None) -> int:
        req = self.request(ctx, body)
        for i, check in enumerate(self.checks):
            result = check.check(req)
            if not isinstance(result, AuthResult):
                task = asyncio.get_running_loop().create_task(
                    self.finish(conn, ctx, req, i, result))
                self.services.tasks.add(task)
                task.add_done_callback(self.services.tasks.discard)
                return WAIT
            if not result.allowed:
                deny(conn, ctx, check, result)
                return DENY
            grant(ctx, result)
        return ALLOW

    async def finish(self, conn, ctx, req, index: int, pending) -> None:
        """The rest of the checks once one had to wait; then resume the request."""
        try:
            for i in range(index, len(self.checks)):
                check = self.checks[i]
                result = pending if i == index else check.check(req)
                if not isinstance(result, AuthResult):
                    result = await result
                if not result.allowed:
                    body, code = denial_body(check, result)
                    conn.access_done(ctx, result.error_type, result.message, list(result.headers),
                                     body, code)
                    return
                grant(ctx, result)
        except asyncio.CancelledError:
            raise
        except Exception as e:   # a bug in a check must answer the client, never hang it
            log(f"access check failed: {e!r} (request {req.request_id})")
            conn.access_done(ctx, "AUTHORIZER_FAILURE", None, None, None, None)
            return
        conn.access_done(ctx)


def grant(ctx, result: AuthResult) -> None:
    """An allowing result's identity and authorizer context, for templates and events."""
    if result.principal_id is None and not result.context and not result.identity \
            and result.claims is None and result.usage_identifier_key is None:
        return      # a policy's Allow adds nothing
    ctx.auth = result


def denial_body(check, result: AuthResult) -> tuple[bytes | None, bytes | None]:
    """(body, x-amzn-ErrorType) when AWS's differ from the gateway response's defaults."""
    body = None
    if result.message is not None:
        # AWS spells the key "Message" in a resource policy's denial, "message" elsewhere
        key = "Message" if getattr(check, "kind", "") == "policy" else "message"
        body = orjson.dumps({key: result.message})
    code = result.error_code.encode() if result.error_code else None
    return body, code


def deny(conn, ctx, check, result: AuthResult) -> None:
    body, code = denial_body(check, result)
    conn.deny(ctx, result.error_type or "ACCESS_DENIED", result.message,
              list(result.headers), body, code)
