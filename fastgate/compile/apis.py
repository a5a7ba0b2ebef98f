"""API state -> the data plane's mounts: API stages compiled into routers.

The state (APIs, deployments, stages, custom domains and their base path
mappings, in Amazon API Gateway's own JSON shapes: see fastgate.control.model) comes
from the control API's SQLite store, from `fastgate serve --openapi`, and from
the YAML `apis:` section. This module turns one such state into what the hot
path reads, once per reload:

  * every stage of every API becomes an ApiStage: the routes of the
    deployment the stage points at, compiled with the stage's variables (and a
    second ApiStage for a canary deployment, with the variable overrides);
  * each ApiStage is mounted where API Gateway would answer it:
      - ``{api_id}.execute-api.<anything>`` hosts, at ``/{stage}`` (``$default``: at the root);
      - any host, at ``/restapis/{api_id}/{stage}/_user_request_`` (LocalStack's form);
      - any host, at ``/{stage}`` (``$default``: the root) — if two APIs claim the same
        stage name, the API created first keeps it and the other gets a warning;
      - custom domains, at each base path mapping (longest wins, stripped before routing).

Integrations: HTTP_PROXY and HTTP proxy to the URI (stage variables substituted,
``{param}`` path segments filled from the mapped path parameters), MOCK answers
from its integration response, AWS_PROXY runs a mapped function, AWS calls the service
(or Lambda non-proxy) and an HTTP API's integration subtype its operation
(fastgate/phases/aws/). What cannot be served compiles to a route answering API
Gateway's 500 and a warning.
"""

from __future__ import annotations

import re
from typing import Any

from fastgate._core.headers import PathRewrite, Template
from fastgate._core.pipeline import ApiStage, GatewayResponse, Integration, Mount, Route
from fastgate._core.responses import GATEWAY_RESPONSES
from fastgate._core.router import Router
from fastgate.compile.config import TargetConfig, UpstreamConfig, parse_target_url
from fastgate.phases.functions.loader import lambda_function_name

STAGE_VAR = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}|\$stageVariables\.([A-Za-z0-9_]+)")
URI_PARAM = re.compile(r"\{([A-Za-z0-9._-]+\+?)\}")
AWS_DEFAULT_TIMEOUT_MS = 29000   # timeoutInMillis when an integration does not say


def stage_api_binary_types(stage, compiler) -> list[str]:
    return compiler.binary_media_types.get(stage.api_id, [])


# --- gateway responses -----------------------------------------------------------

def _static_value(value: str) -> str | None:
    """A responseParameters value "'text'" -> "text"; None for a mapping expression."""
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return None


def _mapping_template(expr: str) -> str | None:
    """An API Gateway mapping expression as a fastgate template source, or None when unsupported.
    'static', method.request.header.X, method.request.querystring.X, method.request.path.X,
    context.X, stageVariables.X."""
    static = _static_value(expr)
    if static is not None:
        return static.replace("$", "$$") if "$" in static else static
    for prefix, var in (("method.request.header.", "request.header."),
                        ("method.request.querystring.", "request.querystring."),
                        ("method.request.path.", "request.path."),
                        ("context.", "context."), ("stageVariables.", "stageVariables.")):
        if expr.startswith(prefix):
            return "${" + var + expr[len(prefix):] + "}"
    return None


def gateway_responses(api: dict, warn) -> dict:
    """type -> GatewayResponse for one API: AWS's defaults, DEFAULT_4XX/DEFAULT_5XX
    customisations applied to every type of their class, then per-type ones."""
    custom = api.get("gatewayResponses") or {}
    out = {}
    for rtype, (status, message, etype) in GATEWAY_RESPONSES.items():
        spec = custom.get(rtype)
        if spec is None and rtype not in ("DEFAULT_4XX", "DEFAULT_5XX"):
            spec = custom.get("DEFAULT_4XX" if status < 500 else "DEFAULT_5XX")
        if not spec:
            out[rtype] = GatewayResponse(rtype, status, message, etype.encode())
            continue
        code = spec.get("statusCode")
        # AWS: a DEFAULT_xXX status code applies to every type of its class not customised itself
        if code:
            try:
                status = int(code)
            except ValueError:
                warn(f"gatewayResponses.{rtype}.statusCode {code!r} is not a number; kept {status}")
        headers = []
        for key, value in (spec.get("responseParameters") or {}).items():
            if not key.startswith("gatewayresponse.header."):
                warn(f"gatewayResponses.{rtype}.responseParameters.{key}: only headers are supported")
                continue
            src = _mapping_template(value)
            if src is None:
                warn(f"gatewayResponses.{rtype}.responseParameters.{key}: unsupported value {value!r}")
                continue
            try:
                headers.append((key[len("gatewayresponse.header."):].encode(), Template(src)))
            except ValueError as e:
                warn(f"gatewayResponses.{rtype}.responseParameters.{key}: {e}")
        body = None
        templates = spec.get("responseTemplates") or {}
        text = templates.get("application/json", next(iter(templates.values()), None))
        if text is not None:
            try:
                body = Template(text, body=True)
            except ValueError as e:
                warn(f"gatewayResponses.{rtype}.responseTemplates: {e}; AWS's default body is used")
        out[rtype] = GatewayResponse(rtype, status, message, etype.encode(), headers, body,
                                     customised=bool(code))
    return out


# --- routes ----------------------------------------------------------------------

class Compiler:
    """Compiles API stages into Routes appended to a snapshot's route list."""

    def __init__(self, *, routes: list, series: list, groups: dict, metrics, limits,
                 functions=None, gateway_limiter=None, services=None, iam_credentials=None,
                 key_index=None, gateway_log: str | None = None, open_logs: bool = False):
        self.routes = routes            # the snapshot's [Route], appended to
        self.series = series            # metrics slot per route index
        self.groups = groups            # upstream group name -> UpstreamGroup (shared pools)
        self.metrics = metrics
        self.limits = limits
        self.functions = functions      # names of the functions this gateway runs, or None
        self.binary_media_types: dict[str, list] = {}   # api id -> binaryMediaTypes
        self.gateway_limiter = gateway_limiter  # taken after every route's own limits
        self.services = services                # fastgate.phases.access.Services: authorizer caches, functions
        self.iam_credentials = iam_credentials or {}
        self.key_index = key_index              # fastgate._core.keys.KeyIndex of the snapshot, or None
        self.config_groups = set(groups)        # the config's own upstream groups (VPC links name them)
        self.vpc_links: dict = {}               # VPC link id -> VpcLink (compile_state sets them)
        self.client_certificates: dict = {}     # client certificate id -> its document
        self.current_stage_doc: dict = {}
        self.gateway_log = gateway_log          # the access_log destination (where CloudWatch ARNs log)
        self.open_logs = open_logs              # a worker's build: the stages' access logs are opened
        self.stage_logs: dict = {}              # (destination, format) -> AccessLog, shared by stages
        self.host_rules: dict = {}              # custom domain (bytes) -> its routing rules (compile_state)
        self.warnings: list[str] = []
        # () -> the snapshot's fastgate.compile.websocket.WebSocketCompiler (made on first use)
        self.websocket = None

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def api_stage(self, api: dict, stage_name: str, deployment_id: str, variables: dict,
                  *, canary: bool = False, method_settings: dict | None = None,
                  stage_doc: dict | None = None) -> ApiStage:
        router = Router()
        self.current_api = api
        # the stage's client certificate (mutual TLS to its HTTPS backends) and the
        # generation of its authorizer results (FlushStageAuthorizersCache moves it on)
        self.current_stage_doc = stage_doc or {}
        self.binary_media_types[api["id"]] = list(api.get("binaryMediaTypes") or ())
        where = f"API {api.get('id')} stage {stage_name}{' (canary)' if canary else ''}"
        stage = ApiStage(api_id=api["id"], api_name=api.get("name", ""), stage=stage_name,
                         deployment_id=deployment_id, rest=api.get("protocolType", "REST") != "HTTP",
                         is_canary=canary, router=router,
                         responses=gateway_responses(api, lambda m: self.warn(f"{where}: {m}")),
                         variables=dict(variables or {}), cors=self.api_cors(api, where),
                         min_compress=api["minimumCompressionSize"]
                         if isinstance(api.get("minimumCompressionSize"), int) else -1,
                         **self.stage_access_log(where))
        for res in api.get("resources", ()):
            for method, spec in (res.get("resourceMethods") or {}).items():
                path = res["path"]
                self.current_path = path
                self.current_settings = method_settings or {}
                try:
                    limiters = self.method_limiters(stage, path, method, method_settings or {})
                    route = self.method_route(stage, path, method, spec, f"{where}: {method} {path}",
                                              limiters)
                    router.add("*", method, self.router_path(path), route)
                    if path == "/$default":
                        try:            # "/" too, which /{proxy+} does not match
                            router.add("*", method, "/", route)
                        except ValueError:
                            pass        # the API has its own "/" route, which wins
                except ValueError as e:
                    self.warn(f"{where}: {method} {path}: {e}; route not served")
        return stage

    def stage_access_log(self, where: str) -> dict:
        """The stage's accessLogSettings as ApiStage's access_log: a file path or "-" (standard
        output) as given; a CloudWatch Logs ARN (AWS's only kind) is the gateway's own
        access_log destination, where the stage's line stands in for the gateway's."""
        settings = self.current_stage_doc.get("accessLogSettings") or {}
        dest, fmt = settings.get("destinationArn"), settings.get("format")
        if not dest or not fmt or not self.open_logs:
            return {}
        only = dest.startswith("arn:")
        if only:
            if self.gateway_log is None:
                self.warn(f"{where}: access log destination {dest} is the gateway's access_log, "
                          "which is off; the stage's requests are not logged")
                return {}
            dest = self.gateway_log
        log_ = self.stage_logs.get((dest, fmt))
        if log_ is None:
            from fastgate._core.accesslog import AccessLog
            try:
                log_ = self.stage_logs[(dest, fmt)] = AccessLog(dest, fmt)
            except (ValueError, OSError) as e:
                self.warn(f"{where}: access log {dest}: {e}; the stage's requests are not logged")
                return {}
        return dict(access_log=log_, access_log_only=only)

    def websocket_access_log(self, stage: ApiStage, stage_doc: dict) -> None:
        """A WebSocket API stage's accessLogSettings: its events' lines
        (fastgate.phases.websocket.accesslog), written through the same shared AccessLogs."""
        self.current_stage_doc = stage_doc
        logged = self.stage_access_log(f"WebSocket API {stage.api_id} stage {stage.stage}")
        if logged:
            from fastgate.phases.websocket.accesslog import WsAccessLog
            endpoint = self.websocket().endpoints[(stage.api_id, stage.stage)]
            endpoint.access_log = WsAccessLog(logged["access_log"], stage_doc["accessLogSettings"]["format"])

    def api_cors(self, api: dict, where: str):
        """The API's CORS configuration (HTTP APIs' x-amazon-apigateway-cors), or None."""
        from fastgate.phases.cors import CorsConfig
        try:
            return CorsConfig.from_api(api)
        except ValueError as e:
            self.warn(f"{where}: CORS: {e}; no CORS headers are added")
            return None

    @staticmethod
    def router_path(path: str) -> str:
        # HTTP APIs' catch-all route: "$default" matches whatever no other route does
        return "/{proxy+}" if path == "/$default" else path

    def method_access(self, stage: ApiStage, spec: dict, where: str):
        """The method's resource policy and authorizer as an AccessPhase, or None.
        self.current_gate: its KeyGate when the API key is the only check."""
        self.current_gate = None
        if self.services is None:
            return None
        from fastgate.phases.access import AccessPhase
        from fastgate.compile.access import compile_method_access
        api = self.current_api
        if any("stageVariables" in (a.get("authorizerUri") or "") for a in api.get("authorizers", ())):
            # an authorizer's function may be chosen per stage (function:${stageVariables.fn})
            api = dict(api, authorizers=[
                dict(a, authorizerUri=self.substitute(a["authorizerUri"], stage, where))
                if "stageVariables" in (a.get("authorizerUri") or "") else a
                for a in api["authorizers"]])
        checks = compile_method_access(
            api, spec, invoke=self.services.invoke, http_client=self.services.http_client,
            warn=lambda m: self.warn(f"{where}: {m}"), iam_credentials=self.iam_credentials,
            caches=self.services.caches,
            cache_scope=f"@{stage.stage}#{self.current_stage_doc.get('_authorizerCacheGeneration', 0)}")
        key = None
        if spec.get("apiKeyRequired"):
            from fastgate._core.keys import KeyGate
            from fastgate.phases.access import KeyRequirement
            gate = KeyGate(self.key_index, stage.api_id, stage.stage,
                           f"{self.current_path}/{spec.get('httpMethod', '')}",
                           from_authorizer=api.get("apiKeySource") == "AUTHORIZER")
            key = KeyRequirement(gate)
            if not checks and not gate.from_authorizer:
                self.current_gate = gate    # the protocol runs it without the AccessPhase
        return AccessPhase(checks, self.services, key=key) if checks or key else None

    def method_cache(self, stage: ApiStage, path: str, method: str, integ: dict, where: str):
        """The route's response cache when its stage caches (its own method setting, else
        "*/*": cachingEnabled, cacheTtlInSeconds), or None."""
        settings = self.current_settings
        spec = settings.get(method_settings_key(path, method)) or settings.get("*/*") or {}
        if not spec.get("cachingEnabled"):
            return None
        from fastgate._core.cache import CacheKeySpec, RouteCache
        try:
            key = CacheKeySpec(method_in_key=True, params=list(integ.get("cacheKeyParameters") or ()),
                               namespace=f"{stage.api_id}/{stage.stage}/{method} {path}".encode())
            return RouteCache(key, ttl_s=int(spec.get("cacheTtlInSeconds", 300)),
                              require_authorization=spec.get("requireAuthorizationForCacheControl", True),
                              unauthorized_strategy=spec.get("unauthorizedCacheControlHeaderStrategy",
                                                             "SUCCEED_WITH_RESPONSE_HEADER"))
        except ValueError as e:
            self.warn(f"{where}: caching: {e}; not cached")
            return None

    def method_limiters(self, stage: ApiStage, path: str, method: str, settings: dict) -> tuple:
        """The stage's method throttling for one route (its own "{resourcePath}/{METHOD}"
        method settings, else the stage default "*/*"), then the gateway-wide bucket."""
        out = []
        spec = settings.get(method_settings_key(path, method)) or settings.get("*/*") or {}
        rate, burst = spec.get("throttlingRateLimit"), spec.get("throttlingBurstLimit")
        if rate is not None or burst is not None:
            from fastgate.compile.config import ThrottleConfig
            from fastgate.compile.shared import limiter
            tc = ThrottleConfig(rate=float(rate if rate is not None else 10000),
                                burst=int(burst if burst is not None else 5000))
            out.append(limiter("stage", tc, f"stage:{stage.api_id}/{stage.stage}:{method} {path}"))
        if self.gateway_limiter is not None:
            out.append(self.gateway_limiter)
        return tuple(out)

    def method_route(self, stage: ApiStage, path: str, method: str, spec: dict, where: str,
                     limiters: tuple = ()) -> Route:
        integ = spec.get("methodIntegration") or {}
        itype = integ.get("type", "")
        route_key = "$default" if path == "/$default" else f"{method} {path}"
        self.current_method = spec
        cache = self.method_cache(stage, path, method, spec.get("methodIntegration") or {}, where)
        kw: dict[str, Any] = dict(route_key=route_key, resource_path=path, api=stage,
                                  max_body_size=self.limits.max_body(), limiters=limiters,
                                  cache=cache)
        why = None
        try:
            kw["access"] = self.method_access(stage, spec, where)
            kw["key_gate"] = self.current_gate
            from fastgate.phases.validation import compile_validator
            kw["validator"] = compile_validator(self.current_api, spec,
                                                warn=lambda m: self.warn(f"{where}: {m}"))
        except ValueError as e:
            # never serve a method unprotected because its authorizer is broken
            self.warn(f"{where}: access control or validation: {e}; it answers 500 Internal server error")
            itype = "(broken access control)"
        if itype in ("HTTP_PROXY", "HTTP"):
            try:
                kw.update(self.http_integration(stage, integ, where))
            except ValueError as e:
                why = str(e)
        elif itype == "MOCK":
            try:
                kw.update(self.mock_integration(integ, where))
            except ValueError as e:
                why = str(e)
        elif itype == "AWS" or (itype == "AWS_PROXY" and integ.get("integrationSubtype")):
            try:
                kw.update(self.aws_integration(stage, integ, where))
            except ValueError as e:
                why = str(e)
        elif itype == "AWS_PROXY":
            # API Gateway substitutes stage variables in the function ARN too
            # (function:${stageVariables.fn}), which is how stages pick function versions
            name = lambda_function_name(self.substitute(integ.get("uri", ""), stage, where))
            if self.current_api.get("protocolType", "REST") == "REST" and \
                    integ.get("httpMethod", "POST") != "POST":
                # Lambda is invoked with POST: AWS takes the integration and then fails every
                # request with a 500 (its recording of integrationHttpMethod GET)
                why = (f"an aws_proxy integration's httpMethod must be POST (Lambda's Invoke), "
                       f"not {integ.get('httpMethod')}")
            elif name and self.functions is not None and name in self.functions:
                v2 = integ.get("payloadFormatVersion", "1.0") == "2.0"
                timeout_ms = integ.get("timeoutInMillis") or AWS_DEFAULT_TIMEOUT_MS
                kw.update(integration=Integration.INTEGRATION_FUNCTION, function_name=name,
                          payload_v2=v2, first_byte_timeout=timeout_ms / 1000,
                          binary_media_types=tuple(stage_api_binary_types(stage, self)))
            else:
                why = (f"function {name!r} of this aws_proxy integration is not mapped to a handler "
                       f"(functions: in the config, or --function {name or 'NAME'}=module:callable)")
        elif not itype:
            why = "the method has no integration"
        elif itype == "(broken access control)":
            why = "its access control or validation could not be compiled"
            kw["access"] = kw["validator"] = kw["key_gate"] = None
        else:
            why = f"integration type {itype} is not supported"
        if why is None and integ.get("responseParameters") and self.current_api.get("protocolType") == "HTTP":
            from fastgate.phases.response_mapping import ResponseMapping
            try:
                kw["response_map"] = ResponseMapping(integ["responseParameters"])
            except ValueError as e:
                why = str(e)
        if why is not None:
            # AWS answers a broken integration at request time (API_CONFIGURATION_ERROR)
            self.warn(f"{where}: {why}; it answers 500 Internal server error")
            kw.update(integration=Integration.INTEGRATION_MOCK, mock_status=500,
                      mock_headers=[(b"Content-Type", b"application/json")],
                      mock_body=Template('{"message": "Internal server error"}', body=True))
        route = Route(index=len(self.routes), host="*", **kw)
        self.routes.append(route)
        self.series.append(self.metrics.request_series(route_key, stage.api_id, stage.stage)
                           if self.metrics is not None else -1)
        return route

    def substitute(self, text: str, stage: ApiStage, where: str) -> str:
        def repl(m):
            name = m.group(1) or m.group(2)
            value = stage.variables.get(name)
            if value is None:
                self.warn(f"{where}: stage variable {name!r} is not set; it is empty")
                return ""
            return value
        return STAGE_VAR.sub(repl, text)

    def http_integration(self, stage: ApiStage, integ: dict, where: str) -> dict:
        if integ.get("connectionType") == "VPC_LINK" and self.current_api.get("protocolType") == "HTTP":
            return self.vpc_link_integration(stage, integ, where)
        uri = self.substitute(integ.get("uri", ""), stage, where)
        m = re.match(r"^(https?)://([^/?#]+)(/[^?#]*)?(\?[^#]*)?$", uri)
        if not m:
            raise ValueError(f"integration uri {uri!r} is not an http(s) URL")
        base = f"{m.group(1)}://{m.group(2)}"
        if m.group(2).endswith(":") or not m.group(2).strip(":"):
            raise ValueError(f"integration uri {uri!r} has an empty host or port")
        parse_target_url(base)   # ValueError with the reason when the host or port is bad
        params = integ.get("requestParameters") or {}
        upath = m.group(3) or "/"
        if m.group(4):
            self.warn(f"{where}: the query string in the integration uri is not sent; map "
                      f"query parameters instead")

        def path_param(pm):
            name = pm.group(1)
            plain = name.rstrip("+")
            source = params.get(f"integration.request.path.{plain}")
            if source and source.startswith("method.request.path."):
                return "{" + source[len("method.request.path."):] + "}"
            if source:
                tpl = _mapping_template(source)
                if tpl is None:
                    raise ValueError(f"unsupported path mapping {source!r}")
                return tpl
            return "{" + plain + "}"
        template = URI_PARAM.sub(path_param, upath)
        http_map = None
        if integ.get("type", "").upper() == "HTTP" and (
                integ.get("requestTemplates") or integ.get("integrationResponses")):
            # non-proxy: body templates and integration responses (fastgate/phases/vtl.py)
            from fastgate.phases.vtl import HttpMapping, MappingError
            try:
                http_map = HttpMapping(integ, where, self.warn)
            except (MappingError, re.error) as e:
                raise ValueError(str(e)) from None
        from fastgate.phases.mapping import compile_request_mapping
        mapping = compile_request_mapping(self.current_api, self.current_method, integ)
        if mapping.path is not None:
            template = mapping.path     # HTTP APIs' overwrite:path
        group = self.integration_group(stage, integ, base, where)
        up = UpstreamConfig(targets=(TargetConfig(url=base),))
        timeout_ms = integ.get("timeoutInMillis") or AWS_DEFAULT_TIMEOUT_MS
        return dict(integration=Integration.INTEGRATION_HTTP, upstream=group,
                    connect_timeout=up.connect_timeout_ms / 1000,
                    first_byte_timeout=timeout_ms / 1000, total_timeout=timeout_ms / 1000,
                    retries=up.retries, retry_non_idempotent=False,
                    path_rewrite=PathRewrite(template), request_headers=mapping.headers,
                    query_mapping=mapping.query, drop_query=not mapping.keep_query,
                    http_map=http_map)

    def aws_integration(self, stage: ApiStage, integ: dict, where: str) -> dict:
        """A REST API's AWS integration (a service action or path, Lambda non-proxy) or an
        HTTP API's integration subtype: a Python runner (fastgate/phases/aws/)."""
        if self.services is None:
            raise ValueError("AWS integrations need the worker's services")
        from fastgate.phases.vtl import MappingError
        creds = integ.get("credentials")
        if creds:
            creds = self.substitute(creds, stage, where)
        if integ.get("integrationSubtype"):
            from fastgate.phases.aws.subtypes import SubtypeIntegration
            if integ.get("payloadFormatVersion", "1.0") != "1.0":
                raise ValueError(f"integration subtype {integ['integrationSubtype']} takes "
                                 "payloadFormatVersion 1.0")
            timeout_ms = integ.get("timeoutInMillis") or 30000
            runner = SubtypeIntegration(integ["integrationSubtype"], integ.get("requestParameters") or {},
                                        creds, where, self.services, timeout_ms / 1000)
        else:
            from fastgate.phases.aws.rest import AwsIntegration
            timeout_ms = integ.get("timeoutInMillis") or AWS_DEFAULT_TIMEOUT_MS
            try:
                runner = AwsIntegration(self.current_api, self.current_method, integ,
                                        self.substitute(integ.get("uri", ""), stage, where), creds,
                                        where, self.warn, self.services, timeout_ms / 1000,
                                        functions=self.functions or ())
            except (MappingError, re.error) as e:
                raise ValueError(str(e)) from None
        return dict(integration=Integration.INTEGRATION_PYTHON, runner=runner,
                    first_byte_timeout=timeout_ms / 1000,
                    binary_media_types=tuple(stage_api_binary_types(stage, self)))

    def integration_group(self, stage: ApiStage, integ: dict, base: str, where: str):
        """The upstream group an HTTP integration is sent to: a VPC link's (connectionType
        VPC_LINK: the config's upstream group the link names), else one for the URI's origin,
        shared by the integrations with the same TLS settings: the stage's client certificate
        (mutual TLS to the backend) and tlsConfig.insecureSkipVerification."""
        from fastgate.compile.upstreams import build_group, upstream_of
        if integ.get("connectionType") == "VPC_LINK":
            link_id = self.substitute(integ.get("connectionId") or "", stage, where)
            link = self.vpc_links.get(link_id)
            if link is None:
                raise ValueError(f"VPC link {link_id!r} does not exist")
            name = upstream_of((link.get("targetArns") or [""])[0])
            if name not in self.config_groups:
                raise ValueError(f"VPC link {link_id} names upstream {name!r}, which the "
                                 "config's upstreams: do not define")
            return self.groups[name]
        tls_config = integ.get("tlsConfig") or {}
        verify = not tls_config.get("insecureSkipVerification")
        server_name = tls_config.get("serverNameToVerify") or None
        cert_id = self.current_stage_doc.get("clientCertificateId")
        cert = self.client_certificates.get(cert_id) if cert_id else None
        if cert_id and cert is None:
            self.warn(f"{where}: client certificate {cert_id!r} of the stage does not exist; "
                      "none is presented")
        key = base + ("" if verify else " insecure") + (f" cert:{cert_id}" if cert else "") + \
            (f" sni:{server_name}" if server_name else "")
        if key not in self.groups:
            self.groups[key] = build_group(
                key, UpstreamConfig(targets=(TargetConfig(url=base),), tls_verify=verify),
                self.metrics, self.services.worker_id if self.services is not None else 0,
                client_cert=(cert["pemEncodedCertificate"], cert["_privateKey"]) if cert else None,
                server_name=server_name)
        return self.groups[key]

    def vpc_link_integration(self, stage: ApiStage, integ: dict, where: str) -> dict:
        """A private integration: the upstream group of the config that the VPC link names
        (frozen in the deployment as `upstreamGroup`), with its balancing and health checks;
        the request's path goes as it came, after the integration's parameter mapping."""
        name = integ.get("upstreamGroup")
        if not name:
            raise ValueError(f"VPC link {integ.get('connectionId')!r} of this integration does not exist")
        group = self.groups.get(name)
        if group is None:
            raise ValueError(f"VPC link {integ.get('connectionId')!r} names upstream {name!r}, which "
                             f"the config's upstreams: does not define")
        from fastgate.phases.mapping import compile_request_mapping
        mapping = compile_request_mapping(self.current_api, self.current_method, integ)
        timeout_ms = integ.get("timeoutInMillis") or AWS_DEFAULT_TIMEOUT_MS
        up = UpstreamConfig(targets=(TargetConfig(url="http://vpc-link"),))
        return dict(integration=Integration.INTEGRATION_HTTP, upstream=group,
                    connect_timeout=up.connect_timeout_ms / 1000,
                    first_byte_timeout=timeout_ms / 1000, total_timeout=timeout_ms / 1000,
                    retries=up.retries, retry_non_idempotent=False,
                    path_rewrite=mapping.path_rewrite(), request_headers=mapping.headers,
                    query_mapping=mapping.query, drop_query=not mapping.keep_query)

    def mock_integration(self, integ: dict, where: str) -> dict:
        if needs_vtl(integ):
            # PERF: only templates that really use Velocity pay for it per request
            from fastgate.phases.vtl import MappingError, MockIntegration
            try:
                return dict(integration=Integration.INTEGRATION_MOCK,
                            mock_vtl=MockIntegration(integ, where, self.warn))
            except (MappingError, re.error) as e:
                raise ValueError(str(e)) from None
        status = 200
        templates = integ.get("requestTemplates") or {}
        text = templates.get("application/json", next(iter(templates.values()), None))
        if text:
            sm = re.search(r'"statusCode"\s*:\s*"?(\d{3})', text)
            if sm:
                status = int(sm.group(1))
            else:
                self.warn(f"{where}: mock request template has no statusCode; 200 is used")
        responses = integ.get("integrationResponses") or {}
        chosen = None
        for resp in responses.values():
            pattern = resp.get("selectionPattern")
            if pattern and re.fullmatch(pattern, str(status)):
                chosen = resp
                break
        if chosen is None:
            chosen = next((r for r in responses.values() if not r.get("selectionPattern")), None)
        headers = [(b"Content-Type", b"application/json")]
        body = ""
        if chosen is not None:
            status = int(chosen.get("statusCode", status))
            for key, value in (chosen.get("responseParameters") or {}).items():
                static = _static_value(value)
                if key.startswith("method.response.header.") and static is not None:
                    name = key[len("method.response.header."):].encode()
                    headers = [h for h in headers if h[0].lower() != name.lower()] + [(name, static.encode())]
                else:
                    self.warn(f"{where}: mock responseParameters {key} = {value!r} not supported; ignored")
            rtemplates = chosen.get("responseTemplates") or {}
            if rtemplates:
                ctype, body = next(iter(rtemplates.items()))
                if "application/json" in rtemplates:
                    ctype, body = "application/json", rtemplates["application/json"]
                headers = [h for h in headers if h[0].lower() != b"content-type"] + \
                    [(b"Content-Type", ctype.encode())]
                body = body or ""
        try:
            tpl = Template(body, body=True)
        except ValueError as e:
            self.warn(f"{where}: mock response template is not plain $context text ({e}); sent as is")
            tpl = Template(body.replace("$", "$$"), body=True)
        return dict(integration=Integration.INTEGRATION_MOCK, mock_status=status,
                    mock_headers=headers, mock_body=tpl)


VTL_MARKS = re.compile(r"#(?:if|set|foreach|else|end|elseif|macro|break|stop)\b|\$!?\{?(?:input|util|stageVariables)\b")


def needs_vtl(integ: dict) -> bool:
    """Whether a mock's templates use Velocity (directives, $input, $util, $stageVariables)
    rather than a fixed statusCode and $context text, which the Cython Template serves."""
    texts = list((integ.get("requestTemplates") or {}).values())
    for resp in (integ.get("integrationResponses") or integ.get("responses") or {}).values():
        texts.extend((resp.get("responseTemplates") or {}).values())
    return any(t and VTL_MARKS.search(t) for t in texts)


def logging_levels(state) -> dict:
    """{(api id, stage): "ERROR"|"INFO"} of stages whose execution logging is on
    (their "*/*" method setting loggingLevel, as API Gateway stores it)."""
    out = {}
    for api_id, stages in (state.stages.items() if state is not None else ()):
        for name, st in stages.items():
            level = (stage_serving(st)[1].get("*/*") or {}).get("loggingLevel", "OFF")
            if level in ("ERROR", "INFO"):
                out[(api_id, name)] = level
    return out


def method_settings_key(path: str, method: str) -> str:
    """API Gateway's method settings key: "/pets/{id}" GET -> "~1pets~1{id}/GET"."""
    return path.replace("/", "~1") + "/" + method


def _prefix(stage_name: str) -> bytes:
    return b"" if stage_name == "$default" else b"/" + stage_name.encode()


def stage_serving(stage: dict) -> tuple[dict, dict]:
    """(stage variables, method settings) of a stored stage: a REST API's (`variables`,
    `methodSettings`) or an apigatewayv2 stage's (`stageVariables`; `defaultRouteSettings`
    and `routeSettings` by route key, whose throttles become the same method settings)."""
    if "stageVariables" not in stage and "routeSettings" not in stage:
        return stage.get("variables") or {}, stage.get("methodSettings") or {}
    settings = {}
    for key, rs in [("*/*", stage.get("defaultRouteSettings") or {}),
                    *((k, v) for k, v in (stage.get("routeSettings") or {}).items())]:
        entry = {k: rs[k] for k in ("throttlingRateLimit", "throttlingBurstLimit", "loggingLevel")
                 if rs.get(k) is not None}
        if rs.get("detailedMetricsEnabled") is not None:
            entry["metricsEnabled"] = rs["detailedMetricsEnabled"]
        if key != "*/*":
            method, _, path = key.partition(" ")
            key = method_settings_key("/$default", "ANY") if key == "$default" \
                else method_settings_key(path, method)
        settings[key] = entry
    return stage.get("stageVariables") or {}, settings


def compile_state(state, compiler: Compiler):
    """-> (host_mounts, api_mounts, any_mounts, [ApiStage]) for a Snapshot."""
    host_mounts: dict[bytes, list] = {}
    api_mounts: dict[bytes, list] = {}
    any_mounts: list = []
    stages_out: list = []
    by_stage: dict[tuple[str, str], Mount] = {}
    claimed: dict[bytes, str] = {}
    apis = sorted(state.apis.values(), key=lambda a: (a.get("createdDate", 0), a["id"]))
    extra = getattr(state, "extra", None) or {}
    compiler.vpc_links = extra.get("vpclink", {}).get("", {})
    compiler.client_certificates = extra.get("clientcertificate", {}).get("", {})
    for api in apis:
        api_id = api["id"]
        deployments = state.deployments.get(api_id, {})
        for name, st in sorted(state.stages.get(api_id, {}).items()):
            if not st.get("deploymentId") and "stageVariables" in st:
                continue        # an apigatewayv2 stage not deployed yet: not served, as AWS
            dep = deployments.get(st.get("deploymentId"))
            if dep is None:
                compiler.warn(f"API {api_id} stage {name}: deployment {st.get('deploymentId')!r} "
                              f"does not exist; stage not served")
                continue
            variables, settings = stage_serving(st)
            doc = dep.get("api", api)
            if doc.get("protocolType") == "WEBSOCKET":
                # an apigatewayv2 WebSocket API: the WebSocket data plane serves it
                main = compiler.websocket().compile_deployed(doc, name, st, compiler.functions)
                if main is None:
                    continue
                compiler.websocket_access_log(main, st)
            else:
                main = compiler.api_stage(doc, name, dep["id"], variables,
                                          method_settings=settings, stage_doc=st)
            stages_out.append(main)
            canary = None
            percent = 0.0
            cs = st.get("canarySettings") if doc.get("protocolType") != "WEBSOCKET" else None
            if cs:
                cdep = deployments.get(cs.get("deploymentId")) if cs.get("deploymentId") else dep
                if cdep is None:
                    compiler.warn(f"API {api_id} stage {name}: canary deployment "
                                  f"{cs.get('deploymentId')!r} does not exist; no canary")
                else:
                    cvars = dict(variables)
                    cvars.update(cs.get("stageVariableOverrides") or {})
                    canary = compiler.api_stage(cdep.get("api", api), name, cdep["id"], cvars,
                                                canary=True, method_settings=settings, stage_doc=st)
                    stages_out.append(canary)
                    percent = float(cs.get("percentTraffic") or 0.0)
            prefix = _prefix(name)

            def mount(pfx, source, main=main, canary=canary, percent=percent):
                return Mount(pfx, main, canary, percent, source)
            by_stage[(api_id, name)] = mount(prefix, "stage")
            if api.get("disableExecuteApiEndpoint") and api.get("service") == "apigatewayv2":
                # AWS: only its custom domains serve it (an apigatewayv2 API; REST APIs'
                # documents keep the flag for export and are still served at their stages)
                continue
            api_mounts.setdefault(api_id.encode(), []).append(mount(prefix, "execute-api"))
            any_mounts.append(mount(f"/restapis/{api_id}/{name}/_user_request_".encode(), "restapis"))
            owner = claimed.get(prefix)
            if owner is None:
                claimed[prefix] = api_id
                any_mounts.append(mount(prefix, "stage"))
            else:
                compiler.warn(f"API {api_id} stage {name}: /{name} on any host already serves API "
                              f"{owner}; use {api_id}.execute-api.<host> or /restapis/{api_id}/{name}/_user_request_")
    for domain, maps in sorted(state.mappings.items()):
        lst = host_mounts.setdefault(domain.lower().encode(), [])
        for base_path, mp in maps.items():
            target = by_stage.get((mp.get("restApiId"), mp.get("stage")))
            if target is None:
                compiler.warn(f"domain {domain} base path {base_path}: API {mp.get('restApiId')} "
                              f"stage {mp.get('stage')} is not deployed; mapping not served")
                continue
            pfx = b"" if base_path in ("(none)", "", "/") else b"/" + base_path.strip("/").encode()
            lst.append(Mount(pfx, target.main, target.canary, target.canary_percent,
                             f"domain {domain}"))
    compile_routing_rules(state, compiler, by_stage, host_mounts)
    for lst in [any_mounts, *host_mounts.values(), *api_mounts.values()]:
        lst.sort(key=lambda m: -len(m.prefix))
    return host_mounts, api_mounts, any_mounts, stages_out


def compile_routing_rules(state, compiler: Compiler, by_stage: dict, host_mounts: dict) -> None:
    """compiler.host_rules: each custom domain's routing rules (fastgate.phases.routing_rules)
    unless its routingMode is API_MAPPING_ONLY; ROUTING_RULE_ONLY drops its API mappings."""
    from fastgate.phases.routing_rules import ROUTING_RULE_ONLY, DomainRules
    for domain, rules in sorted((state.extra.get("routingrule") or {}).items()):
        mode = (state.domains.get(domain) or {}).get("routingMode", "API_MAPPING_ONLY")
        if mode == "API_MAPPING_ONLY" or not rules:
            continue
        host = domain.lower().encode()

        def mount_of(api_id, stage, prefix, domain=domain):
            target = by_stage.get((api_id, stage))
            return None if target is None else Mount(prefix, target.main, target.canary,
                                                     target.canary_percent, f"domain {domain} rule")
        compiler.host_rules[host] = DomainRules(list(rules.values()), mode, mount_of,
                                                lambda m, d=domain: compiler.warn(f"domain {d}: {m}"))
        if mode == ROUTING_RULE_ONLY or host not in host_mounts:
            host_mounts[host] = []      # the host is the domain's: no rule matched is its 403


