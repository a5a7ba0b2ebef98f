"""TestInvokeAuthorizer: one authorizer of an API, as it is now (deployed or not), run on
a request described by the call (headers, pathWithQueryString, stageVariables), in the
admin process.

The authorizer is compiled by the data plane's own compiler
(fastgate.compile.access.compile_method_access) and run with fresh caches, so the answer
is what a request would get, never a cached one. TOKEN and REQUEST authorizers call
their function through a FunctionRunner of the admin process (started on first use,
configured from the same `functions:` as the workers); a Cognito authorizer fetches
its pool's keys like a worker does.

The output is AWS's TestInvokeAuthorizerResponse: `clientStatus` (200 when allowed,
else the status the gateway would answer: 401, 403, 500), `principalId`, `policy` (the
function's policy document, as a JSON string), `claims` (Cognito), `latency` (ms) and
`log` (what happened, one line a step, in the spirit of AWS's execution log).
"""

from __future__ import annotations

import asyncio
import json
import time

from fastgate.control.errors import BadRequest
from fastgate.control.names import GATEWAY_RESPONSE_STATUS

# AWS's test invocations name this stage in the method ARN the authorizer sees
TEST_STAGE = "ESTestInvoke-stage"
TEST_TIMEOUT_S = 35        # above any authorizer timeout: the call itself bounds the wait


class _Capture:
    """The function runner and HTTP client seen by the authorizer, keeping its raw output."""

    def __init__(self, functions, http_client):
        self.functions = functions
        self.http = http_client
        self.output = None

    async def invoke(self, name, event, **kw):
        if self.functions is None:
            from fastgate.phases.functions.errors import FunctionError
            raise FunctionError("service", f"function {name} is not configured")
        self.output = await self.functions.invoke(name, event, **kw)
        return self.output

    async def post_json(self, url, doc, **kw):
        self.output = await self.http.post_json(url, doc, **kw)
        return self.output

    def __getattr__(self, name):        # the rest of the HTTP client (JWKS fetches)
        return getattr(self.http, name)


class AuthorizerInvoker:
    """Runs TestInvokeAuthorizer calls on the admin's event loop; `invoke` is called from
    the control API's thread and waits for the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        from fastgate.phases.auth.http import HttpClient
        self.loop = loop
        self.http_client = HttpClient()
        self.functions = None
        self.loaded = None

    def configure(self, loaded) -> None:
        """The config whose `functions:` the authorizers call (on every reload)."""
        self.loaded = loaded
        if self.functions is not None:
            self.loop.call_soon_threadsafe(self._configure_functions)

    def _configure_functions(self) -> None:
        if self.loaded is None or not self.loaded.config.functions:
            return
        if self.functions is None:
            from fastgate.phases.functions.gateway import FunctionRunner
            self.functions = FunctionRunner(self.loop)
        self.functions.configure(self.loaded.config, self.loaded.base_dir())

    def invoke(self, api: dict, authorizer: dict, p: dict) -> dict:
        fut = asyncio.run_coroutine_threadsafe(self._invoke(api, authorizer, p), self.loop)
        return fut.result(TEST_TIMEOUT_S)

    async def _invoke(self, api: dict, authorizer: dict, p: dict) -> dict:
        from fastgate.phases.auth import AuthRequest, AuthResult
        from fastgate.compile.access import AccessError, compile_method_access
        from fastgate.phases.auth.caches import AuthCaches
        if self.functions is None:
            self._configure_functions()
        capture = _Capture(self.functions, self.http_client)
        atype = authorizer.get("type")
        method = {"authorizationType": "CUSTOM" if atype in ("TOKEN", "REQUEST") else atype,
                  "authorizerId": authorizer["id"]}
        log = [f"Starting authorizer: {authorizer['id']} for request: test-invoke"]
        try:
            checks = compile_method_access({**api, "policy": None}, method, invoke=capture.invoke,
                                           http_client=capture, warn=log.append,
                                           iam_credentials={}, caches=AuthCaches())
        except (AccessError, ValueError) as e:
            raise BadRequest(f"Invalid authorizer configuration: {e}") from None
        path, _, query = (p.get("pathWithQueryString") or "/").partition("?")
        if not path.startswith("/"):
            path = "/" + path
        headers = [(k.encode(), v.encode()) for k, v in (p.get("headers") or {}).items()]
        for k, values in (p.get("multiValueHeaders") or {}).items():
            headers += [(k.encode(), v.encode()) for v in values]
        req = AuthRequest(method="GET", path=f"/{TEST_STAGE}{path}", stage_path=path,
                          query=query.encode(), headers=headers, request_id="test-invoke-request",
                          api_id=api["id"], stage=TEST_STAGE, resource_path=path,
                          route_key=f"GET {path}", stage_variables=p.get("stageVariables") or {})
        started = time.monotonic()
        result = checks[-1].check(req)
        if not isinstance(result, AuthResult):
            result = await result
        latency = int((time.monotonic() - started) * 1000)
        out: dict = {"latency": latency}
        if capture.output is not None:
            log.append(f"Authorizer response: {json.dumps(capture.output, default=str)[:2000]}")
            if isinstance(capture.output, dict) and isinstance(capture.output.get("policyDocument"), dict):
                out["policy"] = json.dumps(capture.output["policyDocument"])
        if result.allowed:
            out["clientStatus"] = 200
            if result.principal_id is not None:
                out["principalId"] = result.principal_id
            if result.claims:
                out["claims"] = {k: v if isinstance(v, str) else json.dumps(v)
                                 for k, v in result.claims.items()}
            log.append("Authorized")
        else:
            status = GATEWAY_RESPONSE_STATUS.get(result.error_type) or "500"
            out["clientStatus"] = int(status)
            log.append(f"Denied: {result.error_type} {result.message or ''}".rstrip())
        out["log"] = "\n".join(log) + "\n"
        return out

    async def close(self) -> None:
        if self.functions is not None:
            await self.functions.close()
