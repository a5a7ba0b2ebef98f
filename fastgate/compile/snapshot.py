"""Config -> Snapshot: everything the hot path reads, compiled once.

The hot path never parses config. A reload builds a whole new Snapshot off the
request path and the worker swaps one reference; requests in flight finish on
the snapshot they started with.
"""

from __future__ import annotations

import os

from fastgate._core.headers import HeaderTransform, PathRewrite, Template
from fastgate._core.pipeline import Integration, Route
from fastgate._core.snapshot import Snapshot
from fastgate._core.router import Router
from fastgate.compile.gcpause import gc_paused
from fastgate.compile.shared import limiter, shared_buckets, shared_cache, shared_quotas
from fastgate.compile.upstreams import build_group

def integration_type(integration) -> str:
    """"http" | "mock" | "echo": the tag of a config integration Struct."""
    return type(integration).__struct_config__.tag


def header_transform(loaded, where: tuple, spec) -> HeaderTransform | None:
    """Compile a request_headers/response_headers block; order: rename, remove, set, append."""
    if spec is None:
        return None
    ops = spec.ops()
    for op in ops:
        if op[0] in ("set", "append"):
            try:
                Template(op[2])
            except ValueError as e:
                raise loaded.error(where + (op[0], op[1]), str(e)) from None
    if not ops:
        return None
    try:
        return HeaderTransform(ops)
    except ValueError as e:
        raise loaded.error(where, str(e)) from None


class CoreHooks:
    """The Python the compiled core calls, handed to it with every snapshot (Snapshot.hooks):
    fastgate/_core imports nothing above it, so what it needs of the layers above comes here."""

    def __init__(self):
        from fastgate.compile.tls import client_cert_of
        from fastgate.phases import compression
        from fastgate.phases.functions.events import build_event_v1
        from fastgate.phases.functions.gateway import function_request
        self.client_cert_of = client_cert_of             # a TLS client's verified certificate
        self.choose_encoding = compression.choose_encoding   # response compression
        self.should_compress = compression.should_compress
        self.compress_body = compression.compress_body
        self.Compressor = compression.Compressor
        self.decode_request_body = compression.decode_request_body   # Content-Encoding bodies
        self.RequestBodyError = compression.RequestBodyError
        self._event = build_event_v1
        self._request = function_request

    def mapping_event(self, ctx, body: bytes) -> dict:
        """The payload 1.0 event of a request: mapping templates' $input and $context."""
        return self._event(self._request(ctx, body))


_HOOKS = None


def core_hooks() -> CoreHooks:
    global _HOOKS
    if _HOOKS is None:
        _HOOKS = CoreHooks()
    return _HOOKS


def iam_credentials_of(loaded) -> dict:
    """{access key id: (secret, principal ARN)} from the iam_credentials CSV, if any."""
    path = loaded.config.iam_credentials
    if not path:
        return {}
    from fastgate.phases.auth.iam import load_credentials_csv
    try:
        return load_credentials_csv(os.path.join(loaded.base_dir(), path))
    except (OSError, ValueError) as e:
        raise loaded.error(("iam_credentials",), str(getattr(e, "strerror", None) or e)) from None


def build_snapshot(loaded, metrics, *, open_logs: bool = True, warn=None, services=None) -> Snapshot:
    """Compile a LoadedConfig; errors are ConfigErrors naming file, line and field.
    open_logs=False only checks (the supervisor validating before it forks).
    warn(message) receives what the API compiler could not serve as declared.
    services: the worker's fastgate.phases.access.Services (authorizer caches, functions);
    None builds throwaway ones (checking a config)."""
    with gc_paused():       # PERF: see fastgate.compile.gcpause
        return _build_snapshot(loaded, metrics, open_logs, warn, services)


def _build_snapshot(loaded, metrics, open_logs, warn, services) -> Snapshot:
    config = loaded.config
    if not config.metrics.enabled:
        # no request series, no upstream gauges, no span counters: the hot path skips
        # every `metrics is not None` branch (health and connection gauges stay)
        metrics = None
    if services is None:
        from fastgate.phases.access import Services
        services = Services()
    iam = iam_credentials_of(loaded)
    key_index = None
    rebuild_at_s = 0.0
    state = loaded.state
    if config.api_keys or config.usage_plans or (state is not None and getattr(state, "extra", None)):
        from fastgate._core.keys import KeyIndex
        from fastgate.compile.keys import KeyTable
        try:
            key_table = KeyTable.from_state(state, {"api_keys": list(config.api_keys),
                                                    "usage_plans": list(config.usage_plans)})
            # compiled for this worker: its usage slots are this worker's
            key_index = KeyIndex(key_table, shared_buckets(), shared_quotas(),
                                 services.usage_slot if services.usage is not None else None)
            rebuild_at_s = key_table.valid_until_s or 0.0
        except (ValueError, KeyError, TypeError) as e:
            raise loaded.error(("api_keys",), f"API keys and usage plans: {e}") from None
    groups = {name: build_group(name, up, metrics, services.worker_id) for name, up in config.upstreams.items()}
    gateway_limiter = limiter("gateway", config.throttle, "gateway") \
        if config.throttle is not None else None
    router = Router()
    routes = []
    series = []
    for i, rc in enumerate(config.routes):
        where = ("routes", i)
        integ = rc.integration
        kw = {}
        if integration_type(integ) == "http":
            name, up = config.route_upstream(rc)
            if name not in groups:   # a url: integration's implicit group, shared by its routes
                groups[name] = build_group(name, up, metrics, services.worker_id)
            connect_ms, first_byte_ms, total_ms = rc.effective_timeouts(up)
            kw.update(integration=Integration.INTEGRATION_HTTP, upstream=groups[name],
                      connect_timeout=connect_ms / 1000, first_byte_timeout=first_byte_ms / 1000,
                      total_timeout=total_ms / 1000, retries=rc.effective_retries(up),
                      retry_non_idempotent=up.retry_non_idempotent)
        elif integration_type(integ) == "mock":
            try:
                body = Template(integ.body, body=True)
            except ValueError as e:
                raise loaded.error(where + ("integration", "body"), str(e)) from None
            kw.update(integration=Integration.INTEGRATION_MOCK, mock_status=integ.status,
                      mock_headers=[(k.encode(), v.encode()) for k, v in integ.headers.items()],
                      mock_body=body)
        elif integration_type(integ) == "function":
            kw.update(integration=Integration.INTEGRATION_FUNCTION, function_name=integ.function,
                      payload_v2=integ.payload_format == "2.0",
                      first_byte_timeout=integ.timeout_ms / 1000)
        else:
            kw.update(integration=Integration.INTEGRATION_ECHO)
        rewrite = None
        if rc.path_rewrite or rc.strip_prefix:
            try:
                rewrite = PathRewrite(rc.path_rewrite, rc.strip_prefix)
            except ValueError as e:
                raise loaded.error(where + ("path_rewrite" if rc.path_rewrite else "strip_prefix",),
                                   str(e)) from None
        limiters = []
        if rc.throttle is not None:
            limiters.append(limiter("route", rc.throttle, f"route:{rc.host} {rc.method} {rc.path}"))
        if gateway_limiter is not None:
            limiters.append(gateway_limiter)
        access = None
        if rc.auth is not None:
            from fastgate.phases.access import AccessPhase
            from fastgate.compile.access import AccessError, compile_route_access
            try:
                checks = compile_route_access(
                    rc.auth, api_id="fastgate", http_api=True, invoke=services.invoke,
                    http_client=services.http_client, warn=warn or (lambda m: None),
                    iam_credentials=iam, caches=services.caches)
            except AccessError as e:
                raise loaded.error(where + ("auth",), str(e)) from None
            access = AccessPhase(checks, services) if checks else None
        route = Route(
            index=i, route_key=f"{rc.method} {rc.path}", host=rc.host, limiters=tuple(limiters),
            access=access,
            request_headers=header_transform(loaded, where + ("request_headers",), rc.request_headers),
            response_headers=header_transform(loaded, where + ("response_headers",), rc.response_headers),
            path_rewrite=rewrite,
            max_body_size=rc.effective_max_body(config.limits),
            **kw)
        try:
            router.add(rc.host, rc.method, rc.path, route)
        except ValueError as e:
            raise loaded.error(where + ("path",), str(e)) from None
        routes.append(route)
        series.append(metrics.request_series(route.route_key) if metrics is not None else -1)
    mounts = {}
    compiler = None
    try:
        services.configure_aws(config.aws)
    except ValueError as e:
        raise loaded.error(("aws",), str(e)) from None
    websocket = None

    def websocket_compiler():
        nonlocal websocket
        if websocket is None:
            from fastgate.compile.websocket import WebSocketCompiler
            websocket = WebSocketCompiler(
                loaded, routes=routes, series=series, metrics=metrics, services=services,
                iam_credentials=iam, gateway_limiter=gateway_limiter, key_index=key_index,
                serve=open_logs, warn=warn)
        return websocket
    if loaded.state is not None and loaded.state.apis:
        from fastgate.compile.apis import Compiler, compile_state
        compiler = Compiler(routes=routes, series=series, groups=groups, metrics=metrics,
                            limits=config.limits, functions=set(config.functions),
                            gateway_limiter=gateway_limiter, services=services,
                            iam_credentials=iam, key_index=key_index,
                            gateway_log=config.access_log.destination, open_logs=open_logs)
        compiler.websocket = websocket_compiler
        host_mounts, api_mounts, any_mounts, stages = compile_state(loaded.state, compiler)
        mounts = dict(host_mounts=host_mounts, api_mounts=api_mounts, any_mounts=any_mounts,
                      stages=stages, host_rules=compiler.host_rules)
        if warn is not None:
            for w in compiler.warnings:
                warn(w)
    if config.websocket_apis:
        ws_api, ws_any, ws_stages = websocket_compiler().compile_config()
        any_mounts = mounts.get("any_mounts", []) + ws_any
        any_mounts.sort(key=lambda m: -len(m.prefix))
        api_mounts = dict(mounts.get("api_mounts", {}))
        for api_id, lst in ws_api.items():
            api_mounts[api_id] = sorted(api_mounts.get(api_id, []) + lst, key=lambda m: -len(m.prefix))
        mounts.update(any_mounts=any_mounts, api_mounts=api_mounts,
                      stages=mounts.get("stages", []) + ws_stages)
    if websocket is not None:
        websocket.finish()
    tls = None
    if loaded.state is not None and loaded.state.domains:
        from fastgate.compile.tls import build_tls_state
        tls = build_tls_state(loaded.state, warn)
    access_log = None
    if config.access_log.destination is not None:
        from fastgate._core.accesslog import AccessLog
        try:
            access_log = AccessLog(config.access_log.destination if open_logs else "-",
                                   config.access_log.format)
        except (ValueError, OSError) as e:
            raise loaded.error(("access_log",), str(e)) from None
        if not open_logs:
            access_log.close()
            access_log = None
    execution_log = None
    if open_logs:
        services.configure_redis(config.redis)
        from fastgate.compile.apis import logging_levels
        levels = logging_levels(loaded.state)
        if levels:
            from fastgate._core.execlog import ExecutionLog
            el = config.execution_log
            try:
                execution_log = ExecutionLog(el.path if el else "-", levels,
                                             rate_per_s=el.rate_per_s if el else 1000, metrics=metrics)
            except (ValueError, OSError) as e:
                raise loaded.error(("execution_log",), str(e)) from None
    tracer = None
    if config.tracing is not None and open_logs:
        from fastgate.observability.tracing_export import build_tracer
        tracer = build_tracer(config.tracing, worker_id=services.worker_id, metrics=metrics)
    limits = config.limits
    return Snapshot(
        router=router, routes=routes, groups=list(groups.values()), route_series=series,
        unmatched_series=metrics.request_series("unmatched") if metrics is not None else -1,
        access_log=access_log, metrics=metrics,
        stage_logs=tuple(compiler.stage_logs.values()) if compiler is not None else (),
        trusted=list(config.trusted_networks()),
        via=config.via, max_url=limits.max_url_bytes, max_head=limits.max_header_bytes,
        max_headers=limits.max_headers, max_body=limits.max_body(),
        header_timeout=limits.header_timeout_ms / 1000, body_timeout=limits.body_timeout_ms / 1000,
        min_body_rate=limits.min_body_rate, body_rate_grace=limits.body_rate_grace_ms / 1000,
        body_deadline=limits.body_deadline_ms / 1000,
        keepalive_timeout=limits.keepalive_timeout_ms / 1000,
        # keepalive_timeout_ms: 0 means no keep-alive: every response closes its connection
        keepalive_requests=limits.keepalive_requests if limits.keepalive_timeout_ms > 0 else 1,
        source=loaded, tls=tls, tracer=tracer, redis=services.redis if open_logs else None,
        execution_log=execution_log, cache=shared_cache() if open_logs else None,
        cache_redis=services.cache_redis if open_logs else None,
        rebuild_at_s=rebuild_at_s, hooks=core_hooks(), **mounts)
