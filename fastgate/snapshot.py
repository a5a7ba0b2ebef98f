"""Config -> Snapshot: everything the hot path reads, compiled once.

The hot path never parses config. A reload builds a whole new Snapshot off the
request path and the worker swaps one reference; requests in flight finish on
the snapshot they started with.
"""

from __future__ import annotations

import os
import ssl

from fastgate._core.headers import HeaderTransform, PathRewrite, Template
from fastgate._core.pipeline import Integration, Route
from fastgate._core.protocol import Snapshot
from fastgate._core.router import Router
from fastgate._core.upstream import Balance, HashOn, UpstreamGroup

BALANCES = {"round_robin": Balance.BALANCE_ROUND_ROBIN, "least_conn": Balance.BALANCE_LEAST_CONN,
            "hash": Balance.BALANCE_HASH}


HASH_ON = {"client_ip": HashOn.HASH_CLIENT_IP, "header": HashOn.HASH_HEADER,
           "cookie": HashOn.HASH_COOKIE}


_BUCKETS = None   # the host's shared token buckets (fastgate._core.throttle.BucketTable)


def shared_buckets():
    """The bucket table every worker takes from. The supervisor calls this before it forks
    (so the mapping is shared); a process that never forked gets its own on first use."""
    global _BUCKETS
    if _BUCKETS is None:
        from fastgate._core.throttle import BucketTable
        _BUCKETS = BucketTable.create(STATIC_BUCKETS, DYNAMIC_BUCKETS)
    return _BUCKETS


_CACHE = None     # the response cache shared by the host's workers (fastgate._core.cache.SharedCache)
_QUOTAS = None    # usage-plan quotas (fastgate._core.throttle.QuotaTable)
_USAGE = None     # API key metering (fastgate.usage.UsageRecorder)


def shared_cache(memory_mb: int | None = None):
    """The response cache; the supervisor creates it before fork (memory_mb from the
    config). None until then: caching needs the supervisor's shared mapping."""
    global _CACHE
    if _CACHE is None and memory_mb:
        from fastgate._core.cache import SharedCache
        _CACHE = SharedCache.create(memory_mb << 20, CACHE_ENTRY_MAX)
    return _CACHE


CACHE_ENTRY_MAX = 1 << 20  # bytes: a larger response is not cached


def shared_quotas():
    """The quota counters every worker counts in; created before fork like the buckets."""
    global _QUOTAS
    if _QUOTAS is None:
        from fastgate._core.throttle import QuotaTable
        _QUOTAS = QuotaTable.create(QUOTA_SLOTS)
    return _QUOTAS


def shared_usage(workers: int | None = None):
    """The usage counters of API keys; the supervisor creates them (with its worker
    count) before fork, the admin process flushes them to SQLite. None elsewhere."""
    global _USAGE
    if _USAGE is None and workers is not None:
        from fastgate.usage import UsageRecorder
        _USAGE = UsageRecorder.create(workers=workers, capacity=USAGE_KEYS)
    return _USAGE


QUOTA_SLOTS = 65536        # (usage plan, key) quota counters, twice the pairs expected (16 B each)
USAGE_KEYS = 16384         # API keys metered per worker (64 B each)
STATIC_BUCKETS = 4096      # named buckets: routes, stage methods, gateway (64 B each)
DYNAMIC_BUCKETS = 65536    # per client IP / header value buckets (16 B each)


def limiter(name: str, tc, bucket: str):
    """A compiled Limiter of a ThrottleConfig."""
    from fastgate._core.throttle import Limiter, ThrottleSettings
    kind, arg = tc.key_kind()
    return Limiter(name, ThrottleSettings(tc.rate, tc.burst), shared_buckets(), bucket, kind, arg)


def integration_type(integration) -> str:
    """"http" | "mock" | "echo": the tag of a config integration Struct."""
    return type(integration).__struct_config__.tag


def health_slot_for(metrics, upstream_name: str, target) -> int:
    return metrics.gauge_series("fastgate_upstream_healthy",
                                {"upstream": upstream_name, "target": target.url})


def health_slots(config, metrics) -> list[int]:
    """Slots of every actively checked target (the supervisor marks them healthy at start)."""
    return [health_slot_for(metrics, name, t)
            for name, up in config.upstreams.items() if up.health_check is not None
            for t in up.targets]


def client_ssl_context(verify: bool) -> ssl.SSLContext:
    """TLS towards an upstream (proxying and health checks alike)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def host_header(t) -> str:
    """Host for a parsed target URL: the port only when it is not the scheme's default."""
    default = 443 if t.scheme == "https" else 80
    return t.label if t.port != default else t.label.rsplit(":", 1)[0]


def build_group(name: str, up, metrics, worker_id: int) -> UpstreamGroup:
    kind, hash_name = up.hash_key()
    passive = up.passive
    group = UpstreamGroup(name, BALANCES[up.balance], HASH_ON[kind], hash_name or "",
                          passive.max_failures, passive.eject_ms / 1000)
    for tc in up.targets:
        t = tc.parsed()
        ssl_ctx = client_ssl_context(up.tls_verify) if t.scheme == "https" else None
        target = group.add_target(tc.url, t.scheme, t.host, t.port, tc.weight, up.keepalive, ssl_ctx)
        if metrics is not None:
            target.metrics = metrics
            target.conn_slot = metrics.gauge_series("fastgate_upstream_connections",
                                                    {"upstream": name, "target": tc.url})
            target.own_conn_slot = metrics.gauge_series(
                "fastgate_worker_upstream_connections",
                {"upstream": name, "target": tc.url, "worker": str(worker_id)})
            if up.health_check is not None:
                target.health_slot = health_slot_for(metrics, name, tc)
    return group


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


def iam_credentials_of(loaded) -> dict:
    """{access key id: (secret, principal ARN)} from the iam_credentials CSV, if any."""
    path = loaded.config.iam_credentials
    if not path:
        return {}
    from fastgate.auth.iam import load_credentials_csv
    try:
        return load_credentials_csv(os.path.join(loaded.base_dir(), path))
    except (OSError, ValueError) as e:
        raise loaded.error(("iam_credentials",), str(getattr(e, "strerror", None) or e)) from None


def build_snapshot(loaded, metrics, *, open_logs: bool = True, warn=None, services=None) -> Snapshot:
    """Compile a LoadedConfig; errors are ConfigErrors naming file, line and field.
    open_logs=False only checks (the supervisor validating before it forks).
    warn(message) receives what the API compiler could not serve as declared.
    services: the worker's fastgate.access.Services (authorizer caches, functions);
    None builds throwaway ones (checking a config)."""
    config = loaded.config
    if not config.metrics.enabled:
        # no request series, no upstream gauges, no span counters: the hot path skips
        # every `metrics is not None` branch (health and connection gauges stay)
        metrics = None
    if services is None:
        from fastgate.access import Services
        services = Services()
    iam = iam_credentials_of(loaded)
    key_index = None
    rebuild_at_s = 0.0
    state = loaded.state
    if config.api_keys or config.usage_plans or (state is not None and getattr(state, "extra", None)):
        from fastgate._core.keys import KeyIndex
        from fastgate.keys import KeyTable
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
            from fastgate.access import AccessPhase
            from fastgate.auth.compile import AccessError, compile_route_access
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
    if loaded.state is not None and loaded.state.apis:
        from fastgate.apis import Compiler, compile_state
        compiler = Compiler(routes=routes, series=series, groups=groups, metrics=metrics,
                            limits=config.limits, functions=set(config.functions),
                            gateway_limiter=gateway_limiter, services=services,
                            iam_credentials=iam, key_index=key_index)
        host_mounts, api_mounts, any_mounts, stages = compile_state(loaded.state, compiler)
        mounts = dict(host_mounts=host_mounts, api_mounts=api_mounts, any_mounts=any_mounts,
                      stages=stages)
        if warn is not None:
            for w in compiler.warnings:
                warn(w)
    tls = None
    if loaded.state is not None and loaded.state.domains:
        from fastgate.tls import build_tls_state
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
        from fastgate.apis import logging_levels
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
        from fastgate.tracing_export import build_tracer
        tracer = build_tracer(config.tracing, worker_id=services.worker_id, metrics=metrics)
    limits = config.limits
    return Snapshot(
        router=router, routes=routes, groups=list(groups.values()), route_series=series,
        unmatched_series=metrics.request_series("unmatched") if metrics is not None else -1,
        access_log=access_log, metrics=metrics,
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
        rebuild_at_s=rebuild_at_s, **mounts)
