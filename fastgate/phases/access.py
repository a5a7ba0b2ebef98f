"""The ACCESS phase of one route: resource policy, authorizer, API key — compiled
once per snapshot, run by the protocol once per request.

The core's dispatcher calls ``AccessPhase.run(conn, ctx, body)`` after routing, ``conn``
being the request's exchange (fastgate/_core/exchange.pyx). Checks (fastgate.phases.auth)
answer synchronously when they can; the first one that must wait (a JWKS fetch, a Lambda
authorizer call) turns the rest of the phase into a task that resumes the request with
``conn.access_done(...)``. Like every phase it returns a pipeline Action. A denial names a gateway
response type, so the API's customised gateway responses apply.
"""

from __future__ import annotations

import asyncio

import orjson

from fastgate._core.fncall import forwarded_values
from fastgate._core.pipeline import Action
from fastgate._core.throttle import LimiterKey, claim_key, header_block
from fastgate.phases.auth import AuthRequest, AuthResult
from fastgate.compile.keys import bucket_name
from fastgate.observability.log import log

ALLOW, DENY, WAIT = Action.ACTION_CONTINUE, Action.ACTION_RESPOND, Action.ACTION_WAIT


class Services:
    """Per-worker state the access checks share across routes and reloads: the
    authorizers' caches, the HTTP client for JWKS and HTTP authorizers, and the
    function runner that Lambda authorizers call."""

    def __init__(self, functions=None, *, worker_id: int = 0, usage=None):
        from fastgate.phases.auth.caches import AuthCaches
        from fastgate.phases.auth.http import HttpClient
        self.caches = AuthCaches()
        self.http_client = HttpClient()
        self.functions = functions          # fastgate.phases.functions.gateway.FunctionRunner or None
        self.tasks: set = set()
        self.worker_id = worker_id
        self.usage = usage                  # fastgate.control.usage.UsageRecorder shared by the host, or None
        self.usage_slots: dict[tuple, int] = {}
        self.redis = None                   # RedisLimits when the config names a Redis
        self.cache_redis = None             # fastgate.phases.cache_redis.CacheSharing, likewise
        self._aws = None                    # fastgate.phases.aws.client.AwsClients (AWS integrations)
        self._aws_cfg = None                # ... from the config's `aws:` section
        self.websockets = None              # fastgate.phases.websocket.endpoint.WebSocketRuntime

    def configure_redis(self, cfg) -> None:
        """Throttles and cached responses in Redis (config `redis:`); kept across
        reloads while unchanged."""
        if cfg is None:
            self.redis = self.cache_redis = None
        elif self.redis is None or self.redis.cfg != cfg:
            from fastgate.phases.cache_redis import CacheSharing
            self.redis = RedisLimits(cfg)
            self.cache_redis = CacheSharing(cfg)

    def configure_aws(self, cfg) -> None:
        """The AWS integrations' client (config `aws:`, None: AWS's defaults), made on first
        use and kept across reloads while the section is unchanged, so its connections and
        credentials stay warm. ValueError for a bad endpoint URL."""
        from fastgate.phases.aws import check_config
        check_config(cfg)
        if self._aws is not None and self._aws.cfg != cfg:
            self._aws.close()
            self._aws = None
        self._aws_cfg = cfg

    def close(self) -> None:
        """Services made for one use (TestInvokeMethod's): the AWS integrations' idle
        connections closed now rather than when the process ends."""
        if self._aws is not None:
            self._aws.close()
            self._aws = None

    @property
    def aws(self):
        """fastgate.phases.aws.client.AwsClients of this worker."""
        if self._aws is None:
            from fastgate.phases.aws.client import AwsClients
            self._aws = AwsClients(self._aws_cfg)
        return self._aws

    def usage_slot(self, key_id: str, api_id: str, stage: str) -> int:
        """This worker's usage slot of (key, API stage), claimed on first use; the
        compiled key gates (fastgate._core.keys.KeyIndex) call it once per pair."""
        ident = (key_id, api_id, stage)
        slot = self.usage_slots.get(ident)
        if slot is None:
            slot = self.usage_slots[ident] = self.usage.slot(self.worker_id, *ident)
        return slot

    def meter(self, ctx, ident: tuple) -> None:
        """Count this request in the usage of ident = (key id, API id, stage) when it
        ends (status, bytes; the LOG phase records it in C)."""
        if self.usage is None:
            return
        ctx.usage_slot = self.usage_slot(*ident)
        ctx.metered = True

    async def invoke(self, name, event, *, timeout_ms=None, request_id=None):
        if self.functions is None:
            from fastgate.phases.functions.errors import FunctionError
            raise FunctionError("service", f"no functions are configured (authorizer {name!r})")
        return await self.functions.invoke(name, event, timeout_ms=timeout_ms, request_id=request_id)


class RedisLimits:
    """Throttles and quotas shared by several hosts: the same limits as the local
    shared-memory buckets, taken in Redis (fastgate.phases.ratelimit_redis, one atomic script
    per take). One per worker (connections do not survive fork); fail_open decides
    while Redis is unreachable."""

    def __init__(self, cfg):
        from fastgate.phases.ratelimit_redis import RedisThrottle
        self.cfg = cfg
        self.throttle = RedisThrottle(cfg.url, prefix=cfg.prefix, fail_open=cfg.fail_open,
                                      timeout_ms=cfg.timeout_ms)
        self.tasks: set = set()

    def start(self, conn, ctx, limiters) -> None:
        task = asyncio.get_running_loop().create_task(self.run(conn, ctx, limiters))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, conn, ctx, limiters) -> None:
        try:
            for lim in limiters:
                key = lim.bucket
                if lim.key_kind == LimiterKey.LIMIT_CLIENT_IP:
                    key = key + b"|" + ctx.client_ip
                elif lim.key_kind == LimiterKey.LIMIT_HEADER:
                    key = key + b"|" + (ctx.header(lim.key_arg) or b"")
                elif lim.key_kind == LimiterKey.LIMIT_CLAIM:
                    key = key + b"|" + claim_key(ctx.auth, lim.key_arg)
                take = await self.throttle.take(key, lim.settings)
                if not take.allowed:
                    conn.throttle_done(ctx, header_block(lim.name, take), lim.name)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as e:     # never leave a request hanging on a bug here
            log(f"redis throttle failed: {e!r}")
        conn.throttle_done(ctx, None)

    async def close(self) -> None:
        await self.throttle.close()


class KeyRequirement:
    """A method with apiKeyRequired, when the ACCESS phase runs in Python: after an
    authorizer (whose usageIdentifierKey is the key when the API's key source is
    AUTHORIZER), or with the limits in Redis. The lookup and the local takes are the
    compiled gate's (fastgate._core.keys.KeyGate); a method whose only check is the key
    never comes here (the protocol runs the gate itself)."""

    __slots__ = ("gate",)

    def __init__(self, gate):
        self.gate = gate

    def value(self, ctx):
        if self.gate.from_authorizer:
            return ctx.auth.usage_identifier_key if ctx.auth is not None else None
        return ctx.header(b"x-api-key")

    def identify(self, conn, ctx, services):
        """(key, plan) of the request, or None after conn.deny(...)."""
        error, key, plan = self.gate.identify(self.value(ctx))
        if error is not None:
            conn.deny(ctx, error)
            return None
        ctx.api_key_id = key.key_id.encode()
        # metered from here: a throttled request counts too (requests, throttled)
        services.meter(ctx, (key.key_id, self.gate.api_id, self.gate.stage))
        return key, plan

    async def check_redis(self, conn, ctx, services) -> int:
        """check() with the plan's throttle and quota taken in Redis (several hosts)."""
        found = self.identify(conn, ctx, services)
        if found is None:
            return DENY
        key, plan = found
        rt = services.redis.throttle
        method_key = self.gate.method_key
        method = plan.method_limit(method_key)
        settings = method[0] if method is not None else plan.throttle
        if settings is not None:
            name = bucket_name(plan.plan_id, key.key_id, *((method_key,) if method else ()))
            take = await rt.take(name.encode(), settings)
            if not take.allowed:
                conn.deny(ctx, "THROTTLED", None, _lines(header_block("usage-plan", take)))
                return DENY
        if plan.quota is not None:
            take = await rt.take_quota(bucket_name(plan.plan_id, key.key_id, "quota").encode(),
                                       plan.quota)
            if not take.allowed:
                conn.deny(ctx, "QUOTA_EXCEEDED", None, _lines(header_block("quota", take)))
                return DENY
        ctx.quota_used = True
        return ALLOW

    def check(self, conn, ctx, services) -> int:
        error, block = self.gate.run(ctx, self.value(ctx))
        if error is not None:
            conn.deny(ctx, error, None, _lines(block) if block else None)
            return DENY
        return ALLOW


def _lines(block: bytes) -> list:
    return [tuple(line.split(b": ", 1)) for line in block.split(b"\r\n") if b": " in line]


class AccessPhase:
    """The checks of one route, in API Gateway's order (policy, then authorizer)."""

    __slots__ = ("checks", "needs_body", "services", "region", "account_id", "key")

    def __init__(self, checks: list, services: Services, *, region: str = "us-east-1",
                 account_id: str = "123456789012", key=None):
        self.checks = tuple(checks)
        self.key = key          # KeyRequirement: the method requires an API key
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
            domain_name=ctx.route_host.decode("latin-1"), request_time_ms=ctx.request_time_ms,
            forwarded=forwarded_values(ctx),
            deployment_id=api.deployment_id if api is not None and api.rest else None)

    def run(self, conn, ctx, body=None) -> int:
        # PERF: a method that only requires an API key builds no AuthRequest
        # (bench/wrk_compare.py --scenario keyed)
        req = self.request(ctx, body) if self.checks else None
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
        if self.key is not None:
            if self.services.redis is not None:
                task = asyncio.get_running_loop().create_task(
                    self.finish(conn, ctx, req, len(self.checks), None))
                self.services.tasks.add(task)
                task.add_done_callback(self.services.tasks.discard)
                return WAIT
            return self.key.check(conn, ctx, self.services)
        return ALLOW

    async def finish(self, conn, ctx, req, index: int, pending) -> None:
        """The rest of the checks once one had to wait; then resume the request."""
        if req is None:
            req = self.request(ctx, None)
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
            if self.key is not None and (
                    await self.key.check_redis(conn, ctx, self.services) if self.services.redis is not None
                    else self.key.check(conn, ctx, self.services)) == DENY:
                conn.access_done(ctx, ctx.error_type, ctx.error_message, conn.take_error_headers())
                return
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
