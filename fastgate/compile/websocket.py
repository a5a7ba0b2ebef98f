"""`websocket_apis:` -> the mounts, stages and routes of the snapshot.

Each stage of a WebSocket API is an ApiStage mounted as an API stage is (`/{stage}` on any
host, `{id}.execute-api.*/{stage}`), whose router has two kinds of route, both answered by
the stage's fastgate.phases.websocket.StageEndpoint (INTEGRATION_WEBSOCKET): `GET /`, the
upgrade ($connect: its authorizer is the route's ACCESS phase, the stage's throttle its
THROTTLE phase), and `/@connections/{connectionId}` (POST, GET, DELETE)."""

from __future__ import annotations

import os

from fastgate._core.pipeline import ApiStage, Integration, Mount, Route
from fastgate._core.responses import default_gateway_responses
from fastgate._core.router import Router
from fastgate.compile.config.websocket import websocket_api_id
from fastgate.compile.shared import limiter


def admin_credentials(config) -> dict[str, str]:
    """The admin credentials (config, else FASTGATE_ADMIN_*): they may call @connections."""
    if config.admin.credentials is not None:
        return {config.admin.credentials.access_key_id: config.admin.credentials.secret_access_key}
    key_id = os.environ.get("FASTGATE_ADMIN_ACCESS_KEY_ID", "")
    secret = os.environ.get("FASTGATE_ADMIN_SECRET_ACCESS_KEY", "")
    return {key_id: secret} if key_id and secret else {}


def websocket_runtime(services):
    """The worker's WebSocketRuntime (kept across reloads: connections outlive a config)."""
    if services.websockets is None:
        from fastgate.phases.websocket.endpoint import WebSocketRuntime
        services.websockets = WebSocketRuntime(services)
    return services.websockets


def compile_websocket_apis(loaded, *, routes: list, series: list, metrics, services,
                           iam_credentials: dict, gateway_limiter, key_index, serve: bool,
                           warn=None):
    """-> (api_mounts {id bytes: [Mount]}, any_mounts [Mount], stages [ApiStage]); the
    routes and their metrics series are appended to `routes` and `series`."""
    from fastgate.compile.access import AccessError, compile_route_access
    from fastgate.phases.access import AccessPhase
    from fastgate.phases.websocket.endpoint import StageEndpoint, StageMetrics, WsRoute
    from fastgate.phases.vtl import MappingError, compile_template
    from fastgate.phases.websocket.integrations import RouteIntegration
    config = loaded.config
    runtime = websocket_runtime(services)
    credentials = admin_credentials(config)
    credentials.update({k: v[0] for k, v in iam_credentials.items()})
    api_mounts: dict[bytes, list] = {}
    any_mounts: list = []
    stages: list = []
    endpoints = {}
    responses = default_gateway_responses()     # AWS's; a WebSocket API cannot change them
    for i, api in enumerate(config.websocket_apis):
        where = ("websocket_apis", i)
        api_id = websocket_api_id(api)
        ws_routes = {}
        for key, rc in api.routes.items():
            integ = rc.integration
            kind = type(integ).__struct_config__.tag
            if kind == "function":
                ri = RouteIntegration("function", function=integ.function, timeout_ms=integ.timeout_ms)
            elif kind in ("http_proxy", "http"):
                templates = {}
                for name in ("request_template", "response_template") if kind == "http" else ():
                    text = getattr(integ, name)
                    if text is not None:
                        try:
                            templates[name] = compile_template(text, f"routes.{key}.integration.{name}")
                        except MappingError as e:
                            raise loaded.error(where + ("routes", key, "integration", name), str(e)) from None
                ri = RouteIntegration(kind, url=integ.url, method=integ.method,
                                      timeout_ms=integ.timeout_ms, **templates)
            else:
                ri = RouteIntegration("mock", status=integ.status, body=integ.body)
            ws_routes[key] = (ri, rc.route_response_selection_expression is not None)
        connect = api.routes.get("$connect")
        checks = []
        if connect is not None and connect.auth is not None:
            try:
                checks = compile_route_access(
                    connect.auth, api_id=api_id, http_api=False, invoke=services.invoke,
                    http_client=services.http_client, warn=warn or (lambda m: None),
                    iam_credentials=iam_credentials, caches=services.caches)
            except AccessError as e:
                raise loaded.error(where + ("routes", "$connect", "auth"), str(e)) from None
        limits = api.limits
        limit_kw = dict(max_frame=limits.max_frame_bytes, max_message=limits.max_message_bytes,
                        idle_timeout=limits.idle_timeout_ms / 1000,
                        max_duration=limits.max_duration_ms / 1000)
        selection = tuple(api.route_selection_expression[len("$request.body."):].split("."))
        for stage_name, st in sorted(api.stages.items()):
            # a message route is throttled by the stage's default route throttling (a bucket
            # per route, as AWS's), then by the gateway-wide bucket
            stage_routes = {key: WsRoute(key, ri, two_way, tuple(
                ([limiter("method", st.throttle, f"ws:{api_id}/{stage_name}/{key}")]
                 if st.throttle is not None and key not in ("$connect", "$disconnect") else []) +
                ([gateway_limiter] if gateway_limiter is not None and key != "$disconnect" else [])))
                for key, (ri, two_way) in ws_routes.items()}
            endpoint = StageEndpoint(runtime, api_id=api_id, name=api.name, stage=stage_name,
                                     selection=selection, routes=stage_routes, limits=limit_kw,
                                     credentials=credentials,
                                     metrics=StageMetrics(metrics, api_id, stage_name,
                                                          services.worker_id),
                                     variables=dict(st.variables))
            endpoints[(api_id, stage_name)] = endpoint
            stage = ApiStage(api_id=api_id, api_name=api.name, stage=stage_name, rest=True,
                             router=Router(), variables=dict(st.variables), responses=responses)
            access = AccessPhase(checks, services) if checks else None
            key_gate = None
            if connect is not None and connect.api_key_required:
                # the key from x-api-key, or the authorizer's usageIdentifierKey
                from fastgate._core.keys import KeyGate
                from fastgate.phases.access import KeyRequirement
                gate = KeyGate(key_index, api_id, stage_name, "/$connect/GET",
                               from_authorizer=api.api_key_selection_expression.startswith("$context"))
                access = AccessPhase(checks, services, key=KeyRequirement(gate))
                if not checks and not gate.from_authorizer:
                    key_gate = gate     # run in C (exchange.pyx check_key)
            limiters = []
            if st.throttle is not None:
                limiters.append(limiter("method", st.throttle, f"ws:{api_id}/{stage_name}"))
            if gateway_limiter is not None:
                limiters.append(gateway_limiter)
            for method, path, key, route_access, route_limiters in (
                    ("GET", "/", "$connect", access, tuple(limiters)),
                    ("POST", "/@connections/{connectionId}", "POST /@connections/{connectionId}", None, ()),
                    ("GET", "/@connections/{connectionId}", "GET /@connections/{connectionId}", None, ()),
                    ("DELETE", "/@connections/{connectionId}", "DELETE /@connections/{connectionId}", None, ())):
                route = Route(index=len(routes), route_key=key, host="*",
                              key_gate=key_gate if route_access is not None else None,
                              integration=Integration.INTEGRATION_WEBSOCKET, websocket=endpoint,
                              api=stage, access=route_access, limiters=route_limiters,
                              max_body_size=limits.max_message_bytes + 1, resource_path=path,
                              first_byte_timeout=29.0)
                stage.router.add("*", method, path, route)
                routes.append(route)
                series.append(metrics.request_series(key, api_id, stage_name)
                              if metrics is not None else -1)
            stages.append(stage)
            prefix = b"/" + stage_name.encode()
            api_mounts.setdefault(api_id.encode(), []).append(Mount(prefix, stage, None, 0.0, "execute-api"))
            any_mounts.append(Mount(prefix, stage, None, 0.0, "websocket stage"))
    runtime.configure(endpoints, config.redis, serve)
    return api_mounts, any_mounts, stages
