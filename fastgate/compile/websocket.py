"""WebSocket APIs -> the mounts, stages and routes of the snapshot: the config's
`websocket_apis:`, and the control plane's deployed apigatewayv2 WebSocket APIs, read into
the same WebSocketApiConfig (websocket_api_from_state) and compiled by the same code.

Each stage of a WebSocket API is an ApiStage mounted as an API stage is (`/{stage}` on any
host, `{id}.execute-api.*/{stage}`), whose router has two kinds of route, both answered by
the stage's fastgate.phases.websocket.StageEndpoint (INTEGRATION_WEBSOCKET): `GET /`, the
upgrade ($connect: its authorizer is the route's ACCESS phase, the stage's throttle its
THROTTLE phase), and `/@connections/{connectionId}` (POST, GET, DELETE)."""

from __future__ import annotations

import json
import os
import re

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


class WebSocketCompiler:
    """Compiles WebSocket APIs, the config's and the control plane's deployed ones, into
    routes, ApiStages and their mounts; finish() hands every stage's endpoint to the worker's
    WebSocketRuntime at once."""

    def __init__(self, loaded, *, routes: list, series: list, metrics, services,
                 iam_credentials: dict, gateway_limiter, key_index, serve: bool, warn=None):
        self.loaded = loaded
        self.routes = routes
        self.series = series
        self.metrics = metrics
        self.services = services
        self.iam_credentials = iam_credentials
        self.gateway_limiter = gateway_limiter
        self.key_index = key_index
        self.serve = serve
        self.warn = warn or (lambda m: None)
        self.runtime = websocket_runtime(services)
        self.credentials = admin_credentials(loaded.config)
        self.credentials.update({k: v[0] for k, v in iam_credentials.items()})
        self.endpoints: dict = {}
        self.responses = default_gateway_responses()   # AWS's; a WebSocket API cannot change them

    def compile_api(self, api, error, cache_scope: str = "") -> list:
        """-> [(stage name, ApiStage)] of a WebSocketApiConfig; error(path, message) raises;
        cache_scope names the authorizer's result cache apart from the API's."""
        from fastgate.compile.access import AccessError, compile_route_access
        from fastgate.phases.access import AccessPhase
        from fastgate.phases.websocket.endpoint import StageEndpoint, StageMetrics, WsRoute
        from fastgate.phases.vtl import MappingError, compile_template
        from fastgate.phases.websocket.integrations import RouteIntegration
        services, metrics, gateway_limiter = self.services, self.metrics, self.gateway_limiter
        api_id = websocket_api_id(api)
        ws_routes = {}
        for key, rc in api.routes.items():
            integ = rc.integration
            kind = type(integ).__struct_config__.tag
            if kind == "function":
                ri = RouteIntegration("function", function=integ.function, timeout_ms=integ.timeout_ms)
            elif kind in ("http_proxy", "http", "mock"):
                templates = {}
                names = {"http": ("request_template", "response_template"),
                         "mock": ("response_template",)}.get(kind, ())
                for name in names:
                    text = getattr(integ, name)
                    if text is not None:
                        try:
                            templates[name] = compile_template(text, f"routes.{key}.integration.{name}")
                        except MappingError as e:
                            error(("routes", key, "integration", name), str(e))
                if kind == "http" and integ.response_templates:
                    from fastgate.compile.config.websocket import status_pattern
                    by_status = []
                    for pattern, text in integ.response_templates.items():
                        try:
                            by_status.append((status_pattern(pattern), compile_template(
                                text, f"routes.{key}.integration.response_templates.{pattern}")))
                        except (MappingError, ValueError) as e:
                            error(("routes", key, "integration", "response_templates", pattern), str(e))
                    templates["response_templates"] = tuple(by_status)
                if kind == "mock":
                    ri = RouteIntegration("mock", status=integ.status, body=integ.body, **templates)
                else:
                    ri = RouteIntegration(kind, url=integ.url, method=integ.method,
                                          timeout_ms=integ.timeout_ms, **templates)
            models = None
            if rc.model_selection_expression is not None and key not in ("$connect", "$disconnect"):
                from fastgate.phases.websocket.models import RouteModels
                try:
                    models = RouteModels(rc.model_selection_expression, dict(rc.request_models),
                                         dict(api.models))
                except ValueError as e:
                    error(("routes", key, "request_models"), str(e))
            ws_routes[key] = (ri, rc.route_response_selection_expression is not None, models)
        connect = api.routes.get("$connect")
        checks = []
        if connect is not None and connect.auth is not None:
            try:
                checks = compile_route_access(
                    connect.auth, api_id=api_id, http_api=False, invoke=services.invoke,
                    http_client=services.http_client, warn=self.warn,
                    iam_credentials=self.iam_credentials, caches=services.caches,
                    cache_scope=cache_scope)
            except AccessError as e:
                error(("routes", "$connect", "auth"), str(e))
        limits = api.limits
        limit_kw = dict(max_frame=limits.max_frame_bytes, max_message=limits.max_message_bytes,
                        idle_timeout=limits.idle_timeout_ms / 1000,
                        max_duration=limits.max_duration_ms / 1000)
        selection = tuple(api.route_selection_expression[len("$request.body."):].split("."))
        out = []
        for stage_name, st in sorted(api.stages.items()):
            # a message route is throttled by its route settings' throttle, else the stage's
            # default route throttling (a bucket per route, as AWS's), then by the
            # gateway-wide bucket
            def message_limiters(key):
                throttle = st.method_throttles.get(key, st.throttle)
                own = [limiter("method", throttle, f"ws:{api_id}/{stage_name}/{key}")] \
                    if throttle is not None and key not in ("$connect", "$disconnect") else []
                return tuple(own + ([gateway_limiter] if gateway_limiter is not None
                                    and key != "$disconnect" else []))
            stage_routes = {key: WsRoute(key, ri, two_way, message_limiters(key), models)
                            for key, (ri, two_way, models) in ws_routes.items()}
            endpoint = StageEndpoint(self.runtime, api_id=api_id, name=api.name, stage=stage_name,
                                     selection=selection, routes=stage_routes, limits=limit_kw,
                                     credentials=self.credentials,
                                     metrics=StageMetrics(metrics, api_id, stage_name,
                                                          services.worker_id),
                                     variables=dict(st.variables))
            self.endpoints[(api_id, stage_name)] = endpoint
            stage = ApiStage(api_id=api_id, api_name=api.name, stage=stage_name, rest=True,
                             router=Router(), variables=dict(st.variables), responses=self.responses)
            access = AccessPhase(checks, services) if checks else None
            key_gate = None
            if connect is not None and connect.api_key_required:
                # the key from x-api-key, or the authorizer's usageIdentifierKey
                from fastgate._core.keys import KeyGate
                from fastgate.phases.access import KeyRequirement
                gate = KeyGate(self.key_index, api_id, stage_name, "/$connect/GET",
                               from_authorizer=api.api_key_selection_expression.startswith("$context"))
                access = AccessPhase(checks, services, key=KeyRequirement(gate))
                if not checks and not gate.from_authorizer:
                    key_gate = gate     # run in C (exchange.pyx check_key)
            limiters = []
            throttle = st.method_throttles.get("$connect", st.throttle)
            if throttle is not None:
                limiters.append(limiter("method", throttle, f"ws:{api_id}/{stage_name}"))
            if gateway_limiter is not None:
                limiters.append(gateway_limiter)
            for method, path, key, route_access, route_limiters in (
                    ("GET", "/", "$connect", access, tuple(limiters)),
                    ("POST", "/@connections/{connectionId}", "POST /@connections/{connectionId}", None, ()),
                    ("GET", "/@connections/{connectionId}", "GET /@connections/{connectionId}", None, ()),
                    ("DELETE", "/@connections/{connectionId}", "DELETE /@connections/{connectionId}", None, ())):
                route = Route(index=len(self.routes), route_key=key, host="*",
                              key_gate=key_gate if route_access is not None else None,
                              integration=Integration.INTEGRATION_WEBSOCKET, websocket=endpoint,
                              api=stage, access=route_access, limiters=route_limiters,
                              max_body_size=limits.max_message_bytes + 1, resource_path=path,
                              first_byte_timeout=29.0)
                stage.router.add("*", method, path, route)
                self.routes.append(route)
                self.series.append(metrics.request_series(key, api_id, stage_name)
                                   if metrics is not None else -1)
            out.append((stage_name, stage))
        return out

    def compile_config(self) -> tuple[dict, list, list]:
        """`websocket_apis:` -> (api_mounts {id bytes: [Mount]}, any_mounts [Mount], stages)."""
        api_mounts: dict[bytes, list] = {}
        any_mounts: list = []
        stages: list = []
        for i, api in enumerate(self.loaded.config.websocket_apis):
            def error(path, message, where=("websocket_apis", i)):
                raise self.loaded.error(where + path, message) from None
            api_id = websocket_api_id(api)
            for stage_name, stage in self.compile_api(api, error):
                stages.append(stage)
                prefix = b"/" + stage_name.encode()
                api_mounts.setdefault(api_id.encode(), []).append(
                    Mount(prefix, stage, None, 0.0, "execute-api"))
                any_mounts.append(Mount(prefix, stage, None, 0.0, "websocket stage"))
        return api_mounts, any_mounts, stages

    def compile_deployed(self, doc: dict, stage_name: str, stage_doc: dict, functions):
        """A deployed apigatewayv2 WebSocket API's stage -> its ApiStage, or None (warned)."""
        where = f"WebSocket API {doc.get('id')} stage {stage_name}"
        try:
            api = websocket_api_from_state(doc, stage_name, stage_doc, functions,
                                           lambda m: self.warn(f"{where}: {m}"))

            def error(path, message):
                raise ValueError(f"{'.'.join(path)}: {message}")
            generation = stage_doc.get("_authorizerCacheGeneration", 0)
            return self.compile_api(api, error, f"@{stage_name}#{generation}")[0][1]
        except ValueError as e:
            self.warn(f"{where}: {e}; stage not served")
            return None

    def finish(self) -> None:
        self.runtime.configure(self.endpoints, self.loaded.config.redis, self.serve)


def _substitute(text: str, variables: dict) -> str:
    return re.sub(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}",
                  lambda m: variables.get(m.group(1), ""), text or "")


def _default_template(templates: dict | None) -> str | None:
    """The template AWS selects with \\$default: the `$default` one, else the only one."""
    templates = templates or {}
    if "$default" in templates:
        return templates["$default"]
    return next(iter(templates.values())) if len(templates) == 1 else None


def _status_templates(integ: dict) -> tuple[str | None, dict]:
    """An HTTP integration's integration responses as (the $default one's template, {/REGEX/:
    template}), which the response's status selects among, as AWS's
    ${integration.response.statuscode} selection does."""
    default, by_status = None, {}
    for ir in sorted((integ.get("integrationResponses") or {}).values(),
                     key=lambda r: r["integrationResponseKey"]):
        text = _default_template(ir.get("responseTemplates"))
        if text is None:
            continue
        if ir["integrationResponseKey"] == "$default":
            default = text
        else:
            by_status[ir["integrationResponseKey"]] = text
    return default, by_status


def _throttle(settings: dict | None):
    """A route settings' throttle as a ThrottleConfig (AWS's account defaults fill a missing
    half: 10,000 requests/s, burst 5,000), or None."""
    from fastgate.compile.config.schema import ThrottleConfig
    settings = settings or {}
    rate, burst = settings.get("throttlingRateLimit"), settings.get("throttlingBurstLimit")
    if rate is None and burst is None:
        return None
    return ThrottleConfig(rate=float(10000.0 if rate is None else rate),
                          burst=int(5000 if burst is None else burst))


def websocket_api_from_state(doc: dict, stage_name: str, stage_doc: dict, functions, warn):
    """A deployed apigatewayv2 WebSocket API (the frozen v2 shapes: routes, integrations
    with their integration responses, authorizers) and one of its stages as the config's
    WebSocketApiConfig, which compile_api serves. Raises ValueError."""
    import msgspec
    from fastgate.compile.config.schema import StageConfig, WebSocketApiConfig
    from fastgate.phases.functions.loader import lambda_function_name
    variables = dict(stage_doc.get("stageVariables") or {})

    def function_of(uri: str) -> str:
        name = lambda_function_name(_substitute(uri, variables))
        if not name:
            raise ValueError(f"no function name in {uri!r}")
        if functions is not None and name not in functions:
            warn(f"function {name!r} is not mapped to a handler (functions: in the config); "
                 "its routes answer Internal server error")
        return name
    integrations = doc.get("integrations") or {}
    authorizers = doc.get("authorizers") or {}
    routes = {}
    for route in (doc.get("routes") or {}).values():
        key = route["routeKey"]
        integ = integrations.get((route.get("target") or "")[len("integrations/"):])
        if integ is None:
            raise ValueError(f"route {key} has no integration")
        itype = integ["integrationType"]
        timeout = min(int(integ.get("timeoutInMillis") or 29000), 29000)
        if itype == "AWS_PROXY":
            spec = {"type": "function", "function": function_of(integ["integrationUri"]),
                    "timeout_ms": timeout}
        elif itype in ("HTTP_PROXY", "HTTP"):
            spec = {"type": itype.lower(), "url": _substitute(integ["integrationUri"], variables),
                    "method": integ.get("integrationMethod") or "POST", "timeout_ms": timeout}
            if itype == "HTTP":
                spec["request_template"] = _default_template(integ.get("requestTemplates"))
                spec["response_template"], spec["response_templates"] = _status_templates(integ)
        elif itype == "MOCK":
            status = 200
            text = (integ.get("requestTemplates") or {}).get("$default")
            if text:
                status = int(json.loads(text).get("statusCode", 200))
            # a MOCK's status selects its integration response as an HTTP response's does
            default, by_status = _status_templates(integ)
            chosen = next((t for k, t in by_status.items() if re.fullmatch(k[1:-1], str(status))),
                          default)
            spec = {"type": "mock", "status": status, "response_template": chosen}
        else:
            raise ValueError(f"route {key}: integration type {itype} is not served")
        rc: dict = {"integration": spec}
        if any(rr.get("routeResponseKey") == "$default"
               for rr in (route.get("routeResponses") or {}).values()):
            # AWS passes the backend's answer on only through a route response
            rc["route_response_selection_expression"] = "$default"
        if route.get("modelSelectionExpression") and key not in ("$connect", "$disconnect"):
            rc["model_selection_expression"] = route["modelSelectionExpression"]
            rc["request_models"] = dict(route.get("requestModels") or {})
        if key == "$connect":
            atype = route.get("authorizationType") or "NONE"
            if atype == "AWS_IAM":
                rc["auth"] = {"iam": True}
            elif atype == "CUSTOM":
                auth = authorizers.get(route.get("authorizerId") or "")
                if auth is None:
                    raise ValueError(f"route {key}: authorizer {route.get('authorizerId')} is gone")
                lam = {"function": function_of(auth["authorizerUri"]), "type": "REQUEST",
                       "ttl_s": int(auth.get("authorizerResultTtlInSeconds") or 0)}
                if auth.get("identitySource"):
                    lam["identity_source"] = list(auth["identitySource"])
                rc["auth"] = {"lambda": lam}
            rc["api_key_required"] = bool(route.get("apiKeyRequired"))
        routes[key] = rc
    selection = doc["routeSelectionExpression"]
    if selection.startswith("${"):
        selection = "$" + selection[2:-1]
    stage = StageConfig(variables=variables,
                        throttle=_throttle(stage_doc.get("defaultRouteSettings")),
                        method_throttles={k: t for k, v in (stage_doc.get("routeSettings") or {}).items()
                                          if (t := _throttle(v)) is not None})
    try:
        api = msgspec.convert({"name": doc["name"], "id": doc["id"],
                               "route_selection_expression": selection,
                               "api_key_selection_expression": doc.get("apiKeySelectionExpression")
                               or "$request.header.x-api-key",
                               "routes": routes,
                               "models": {m["name"]: m.get("schema") or "{}"
                                          for m in (doc.get("models") or {}).values()}},
                              WebSocketApiConfig)
    except msgspec.ValidationError as e:
        raise ValueError(str(e)) from None
    return msgspec.structs.replace(api, stages={stage_name: stage})
