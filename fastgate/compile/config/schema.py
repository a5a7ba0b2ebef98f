"""The config's schema: frozen msgspec Structs that reject unknown keys, with declared
bounds. docs/config.md is the reference for every option; keep it in step with the
Structs here."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta, field

from fastgate.compile.config.values import (
    CLAIM_NAME,
    TOKEN,
    ListenAddress,
    TargetURL,
    body_limit,
    parse_hash_on,
    parse_listen_address,
    parse_target_url,
)


# --- bounded scalar types -------------------------------------------------

Ms = Annotated[int, Meta(ge=0)]                       # milliseconds, 0 where documented = none
PositiveMs = Annotated[int, Meta(ge=1)]
Bytes = Annotated[int, Meta(ge=0)]
Count = Annotated[int, Meta(ge=0)]
Positive = Annotated[int, Meta(ge=1)]
Port = Annotated[int, Meta(ge=1, le=65535)]
Status = Annotated[int, Meta(ge=100, le=599)]
# "unlimited" rather than null or -1: null already means "inherit" on routes,
# and a negative size reads like a typo.
BodyLimit = Union[Bytes, Literal["unlimited"]]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config Struct: immutable, unknown keys rejected.  Subclasses
    repeat kw_only=True because msgspec applies it only to a class's own fields."""


# --- the schema --------------------------------------------------------------

class ListenerTLSConfig(_Section, kw_only=True):
    """TLS on a listener: its default certificate (custom domains may have their own,
    chosen by SNI). Paths are relative to the config file."""
    certificate: str                      # PEM: the certificate, then its chain
    key: str                              # PEM, unencrypted


class ListenerConfig(_Section, kw_only=True):
    """One listening socket: either ``address`` or ``interface`` + ``port``."""
    address: str | None = None            # "127.0.0.1:8080", "[::1]:8080", "localhost:8080"
    interface: str | None = None          # e.g. "eth0", resolved when binding
    port: Port | None = None              # with interface only
    family: Literal["ipv4", "ipv6", "both"] | None = None  # with interface only; default ipv4
    backlog: Positive = 1024
    # Linux: one socket per worker (SO_REUSEPORT), so the kernel spreads new connections
    # evenly; false: every worker accepts from one shared socket. Ignored elsewhere.
    reuseport: bool = True
    tls: ListenerTLSConfig | None = None  # null = plain HTTP

    def listen_address(self) -> ListenAddress:
        if self.interface is not None:
            family = {"ipv6": socket.AF_INET6, "both": socket.AF_UNSPEC}.get(
                self.family or "ipv4", socket.AF_INET)
            return ListenAddress(None, self.port or 0, family, self.interface)
        return parse_listen_address(self.address or "")


class AdminCredentials(_Section, kw_only=True):
    """SigV4 credentials of the control API (boto3 / the AWS CLI sign with these)."""
    access_key_id: Annotated[str, Meta(min_length=16, max_length=128, pattern=r"^[A-Z0-9]+$")]
    secret_access_key: Annotated[str, Meta(min_length=16)]


class AdminConfig(_Section, kw_only=True):
    """The control API and metrics endpoint."""
    listen: str = "127.0.0.1:9901"        # host:port or "off"
    # null: FASTGATE_ADMIN_ACCESS_KEY_ID / FASTGATE_ADMIN_SECRET_ACCESS_KEY, else the
    # control API refuses every call that needs a signature
    credentials: AdminCredentials | None = None

    def listen_address(self) -> ListenAddress | None:
        return None if self.listen == "off" else parse_listen_address(self.listen)


class Limits(_Section, kw_only=True):
    """Per-connection and per-request limits of the client side."""
    max_url_bytes: Positive = 8192        # request line target; 414 past this
    max_header_bytes: Positive = 32768    # all header lines together; 431
    max_headers: Positive = 100           # header count; 431
    max_body_bytes: BodyLimit = 10485760  # 413; routes may override
    header_timeout_ms: PositiveMs = 10000  # 408 when the head is not complete in time
    body_timeout_ms: PositiveMs = 60000   # idle gap between body reads; 408
    # slow POST: a body trickled a byte at a time restarts body_timeout forever, so it must also
    # average min_body_rate once body_rate_grace_ms has passed (Apache mod_reqtimeout's
    # body=20,MinRate=500), and, when set, be whole within body_deadline_ms; 408
    min_body_rate: Count = 500            # bytes/s; 0 = no minimum
    body_rate_grace_ms: Ms = 20000
    body_deadline_ms: Ms = 0              # 0 = none
    keepalive_timeout_ms: Ms = 75000      # idle client connection; 0 = no keep-alive
    keepalive_requests: Positive = 10000  # requests per client connection
    drain_timeout_ms: Ms = 30000          # on SIGTERM, in-flight requests get this long

    def max_body(self) -> int:
        """max_body_bytes as the runtime holds it: -1 = unlimited."""
        return body_limit(self.max_body_bytes)


class AccessLogConfig(_Section, kw_only=True):
    path: str | None = "-"                # file, "-" = stdout, null or "off" = no log
    format: str = "clf"                   # "clf" | "json" | a template of $context.* variables

    @property
    def destination(self) -> str | None:
        """The file to write ("-" for stdout), or None when logging is off."""
        return None if self.path in (None, "off") else self.path


class TargetConfig(_Section, kw_only=True):
    url: str                              # http(s)://host[:port], no path
    weight: Annotated[int, Meta(ge=1, le=10000)] = 1

    def parsed(self) -> TargetURL:
        return parse_target_url(self.url)


class HealthCheckConfig(_Section, kw_only=True):
    """Active checks, run by the admin process, shared with every worker."""
    path: str = "/healthz"
    interval_ms: PositiveMs = 2000
    timeout_ms: PositiveMs = 1000
    expected_status: Annotated[tuple[Status, ...], Meta(min_length=1)] = (200,)
    healthy_threshold: Positive = 2       # consecutive passes to re-admit a target
    unhealthy_threshold: Positive = 3     # consecutive failures to take it out
    host: str | None = None               # Host header; default: the target's host:port


class PassiveHealthConfig(_Section, kw_only=True):
    """Ejection by each worker after consecutive failed attempts."""
    max_failures: Count = 3               # 0 = never eject
    eject_ms: PositiveMs = 10000


class UpstreamConfig(_Section, kw_only=True):
    """A group of targets with one balancing policy and one set of timeouts."""
    targets: Annotated[tuple[TargetConfig, ...], Meta(min_length=1)]
    balance: Literal["round_robin", "least_conn", "hash"] = "round_robin"
    hash_on: str | None = None            # balance: hash only; "client_ip" | "header:NAME" | "cookie:NAME"
    keepalive: Count = 1024               # idle connections kept per target (per worker)
    connect_timeout_ms: PositiveMs = 5000
    first_byte_timeout_ms: PositiveMs = 60000
    total_timeout_ms: Ms = 0              # 0 = none: no 29-second ceiling
    retries: Annotated[int, Meta(ge=0, le=10)] = 1
    retry_non_idempotent: bool = False
    tls_verify: bool = True
    health_check: HealthCheckConfig | None = None
    passive: PassiveHealthConfig = field(default_factory=PassiveHealthConfig)

    def hash_key(self) -> tuple[str, str | None]:
        """("client_ip", None) | ("header", lowercase name) | ("cookie", name)."""
        return parse_hash_on(self.hash_on or "client_ip")


class HttpIntegration(_Section, kw_only=True, tag="http", tag_field="type"):
    """Proxy to a named upstream group, or to one URL (an implicit one-target group)."""
    upstream: str | None = None
    url: str | None = None


class MockIntegration(_Section, kw_only=True, tag="mock", tag_field="type"):
    """Answer from the gateway itself; ``body`` is a template."""
    status: Status = 200
    headers: dict[str, str] = {}
    body: str = ""


class EchoIntegration(_Section, kw_only=True, tag="echo", tag_field="type"):
    """Answer with the request as an upstream would have received it, as JSON."""


class FunctionIntegration(_Section, kw_only=True, tag="function", tag_field="type"):
    """Run a function (a Lambda-style handler, see `functions`) with API Gateway's event."""
    function: str                         # a name under `functions:`
    payload_format: Literal["1.0", "2.0"] = "2.0"   # the HTTP API event of payload format 1.0 or 2.0
    timeout_ms: PositiveMs = 30000        # integration timeout: queueing, cold start and the call


Integration = Union[HttpIntegration, MockIntegration, EchoIntegration, FunctionIntegration]


class RemoteFunctionConfig(_Section, kw_only=True):
    """A function behind Lambda's Invoke API (real AWS Lambda or a local emulator), SigV4-signed."""
    endpoint: str                         # "https://lambda.us-east-1.amazonaws.com", "http://127.0.0.1:9001"
    region: str = "us-east-1"
    access_key_id: str
    secret_access_key: str
    function_name: str | None = None      # the name at the endpoint; default: this function's name


class FunctionConfig(_Section, kw_only=True):
    """A Lambda-style handler `def handler(event, context)` run in warm worker processes
    (docs/functions.md), or a remote function."""
    handler: str | None = None            # "module:callable", imported from `paths` / function_path
    remote: RemoteFunctionConfig | None = None   # instead of handler
    paths: tuple[str, ...] = ()           # directories searched first, relative to this file
    environment: dict[str, str] = {}
    memory_mb: Annotated[int, Meta(ge=16)] = 128   # address-space limit above the interpreter's
    timeout_ms: PositiveMs = 3000         # the function's own timeout (Lambda's default)
    concurrency: Positive = 4             # handler processes per gateway worker
    queue: Count = 64                     # calls waiting when all are busy; more answer 500


class AwsConfig(_Section, kw_only=True):
    """AWS service integrations (REST `type: AWS`, Lambda non-proxy, HTTP API integration
    subtypes; docs/aws-integrations.md): where the services answer and whose credentials
    sign the requests (botocore's chain: environment, shared config and credentials files,
    profiles)."""
    region: str | None = None             # HTTP API subtypes, STS, Lambda; null: AWS_REGION,
                                          # AWS_DEFAULT_REGION, the profile's, else us-east-1
    endpoint_url: str | None = None       # every service at this URL (a self-hosted, compatible one)
    # per service, by the name in integration URIs or botocore's: {sqs: ..., states: ...};
    # wins over AWS_ENDPOINT_URL_<SERVICE>, which wins over endpoint_url, then AWS_ENDPOINT_URL
    endpoints: dict[str, str] = {}
    profile: str | None = None            # the gateway's own credentials; null: the default chain
    # a role ARN in an integration's `credentials` -> the named profile signing instead
    roles: dict[str, str] = {}
    # other role ARNs are assumed through STS AssumeRole with the gateway's credentials;
    # false: the gateway's own credentials sign (a compatible service without STS)
    assume_roles: bool = True
    keepalive: Count = 64                 # idle connections kept per endpoint (per worker)
    connect_timeout_ms: PositiveMs = 5000
    tls_verify: bool = True


class HeaderOps(_Section, kw_only=True):
    """Header edits, applied in the order rename, remove, set, append."""
    set: dict[str, str] = {}              # name -> value template; replaces every value
    append: dict[str, str] = {}           # name -> value template; adds one more
    remove: tuple[str, ...] = ()
    rename: dict[str, str] = {}           # old name -> new name

    def ops(self) -> list[tuple[str, ...]]:
        """The edits in application order, as HeaderTransform takes them:
        ("rename", old, new), ("remove", name), ("set" | "append", name, template)."""
        out: list[tuple[str, ...]] = []
        out += [("rename", old, new) for old, new in self.rename.items()]
        out += [("remove", name) for name in self.remove]
        out += [("set", name, value) for name, value in self.set.items()]
        out += [("append", name, value) for name, value in self.append.items()]
        return out


class ThrottleConfig(_Section, kw_only=True):
    """A token bucket: `rate` requests per second refill it, `burst` is its size
    (API Gateway's ThrottleSettings). burst 0 rejects everything."""
    rate: Annotated[float, Meta(ge=0)]
    burst: Annotated[int, Meta(ge=0)]
    key: str | None = None                # null: one bucket; "client_ip"; "header:NAME" / "claim:NAME":
                                          # one per value of that header / JWT claim

    def key_kind(self) -> tuple[int, str | None]:
        from fastgate._core.throttle import LimiterKey
        if self.key is None:
            return LimiterKey.LIMIT_SHARED, None
        if self.key == "client_ip":
            return LimiterKey.LIMIT_CLIENT_IP, None
        if self.key.startswith("header:") and TOKEN.match(self.key[7:]):
            return LimiterKey.LIMIT_HEADER, self.key[7:]
        if self.key.startswith("claim:") and CLAIM_NAME.match(self.key[6:]):
            return LimiterKey.LIMIT_CLAIM, self.key[6:]
        raise ValueError(f'key must be null, "client_ip", "header:NAME" or "claim:NAME", got {self.key!r}')


class ExecutionLogConfig(_Section, kw_only=True):
    """Where the execution logs of stages whose logging level is ERROR or INFO go."""
    path: str = "-"                       # file or "-" (stdout)
    rate_per_s: Positive = 1000           # lines per second per worker; the excess is counted and dropped


class MetricsConfig(_Section, kw_only=True):
    """The request metrics of /metrics (docs/observability.md)."""
    # false: requests, latencies, throttles, gateway responses, cache and upstream
    # connection series are not recorded (the series of the health checks and open
    # client connections still are); bench/wrk_compare.py's `observed` scenario
    # measures what they cost
    enabled: bool = True


class RedisConfig(_Section, kw_only=True):
    """A Redis shared by several fastgate hosts: throttles and usage-plan quotas live there
    (one atomic script per take), so a limit is a limit for the whole deployment; the
    response cache is shared through it too (a local miss looks there; docs/cache.md)."""
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "fastgate"              # key prefix, so deployments can share one Redis
    fail_open: bool = True                # while Redis is unreachable: allow (true) or 429 (false)
    timeout_ms: PositiveMs = 50           # per take / cache lookup; past it: fail_open / a cache miss
    # API keys and usage plans are replicated through this Redis too (docs/api-keys.md):
    # each host checks for changes at least this often, besides pub/sub's immediate notice
    key_sync_interval_ms: PositiveMs = 500
    # per-day API key usage in this Redis expires this many days after its day (UTC), so
    # Redis does not grow forever; each host's SQLite keeps its own rows regardless
    usage_retention_days: Positive = 400


class StateConfig(_Section, kw_only=True):
    """The control plane's state in a PostgreSQL database shared by a fleet of hosts,
    instead of the data dir's SQLite (docs/fleet.md). Each host keeps a copy of it in its
    data dir and serves that copy while the database is unreachable."""
    # a libpq URL: postgresql://USER@HOST[:PORT]/DB[?sslmode=...]; a password may come from
    # PGPASSWORD or ~/.pgpass instead of the URL
    url: str
    # changes arrive by LISTEN/NOTIFY; besides, each host compares versions this often,
    # for a notification missed while it reconnected
    poll_interval_ms: PositiveMs = 2000


class RouteTimeouts(_Section, kw_only=True):
    """Per-route overrides of the upstream's timeouts; null = the upstream's."""
    connect_ms: PositiveMs | None = None
    first_byte_ms: PositiveMs | None = None
    total_ms: Ms | None = None


class RouteConfig(_Section, kw_only=True):
    path: str                             # "/pets/{id}", greedy "{proxy+}" last
    method: str = "ANY"                   # an upper-case method, or ANY
    host: str = "*"                       # "api.example.com" | "*.example.com" | "*"
    integration: Integration
    path_rewrite: str | None = None       # "/v1/pets/{id}"; not with strip_prefix
    strip_prefix: str | None = None       # "/api"; not with path_rewrite
    request_headers: HeaderOps | None = None
    response_headers: HeaderOps | None = None
    timeouts: RouteTimeouts | None = None  # http only
    max_body_bytes: BodyLimit | None = None  # null = limits.max_body_bytes
    retries: Annotated[int, Meta(ge=0, le=10)] | None = None  # http only; null = the upstream's
    throttle: ThrottleConfig | None = None  # this route's own bucket (before the gateway-wide one)
    # who may call: ip_allow / ip_deny / policy, and one of jwt / lambda / iam (docs/authorizers.md)
    auth: dict[str, Any] | None = None

    @property
    def route_key(self) -> str:
        """"GET /pets/{id}", as API Gateway writes routeKey."""
        return f"{self.method} {self.path}"

    def effective_timeouts(self, upstream: UpstreamConfig) -> tuple[int, int, int]:
        """(connect_ms, first_byte_ms, total_ms) after this route's overrides."""
        t = self.timeouts or RouteTimeouts()
        return (
            upstream.connect_timeout_ms if t.connect_ms is None else t.connect_ms,
            upstream.first_byte_timeout_ms if t.first_byte_ms is None else t.first_byte_ms,
            upstream.total_timeout_ms if t.total_ms is None else t.total_ms,
        )

    def effective_retries(self, upstream: UpstreamConfig) -> int:
        return upstream.retries if self.retries is None else self.retries

    def effective_max_body(self, limits: Limits) -> int:
        """Bytes; -1 = unlimited."""
        if self.max_body_bytes is None:
            return limits.max_body()
        return body_limit(self.max_body_bytes)


class StageConfig(_Section, kw_only=True):
    """One stage of an API declared in the config."""
    variables: dict[str, str] = {}        # ${stageVariables.NAME} in URIs, mappings, templates
    throttle: ThrottleConfig | None = None  # default method throttling: a bucket per route
    # per-route overrides, keyed like API Gateway's method settings: "/pets/{id}/GET"
    method_throttles: dict[str, ThrottleConfig] = {}
    logging_level: Literal["OFF", "ERROR", "INFO"] = "OFF"   # execution log (see execution_log)
    cache_ttl_s: Annotated[int, Meta(ge=0, le=3600)] = 0     # response cache TTL of its GET routes; 0 = off


class ApiConfig(_Section, kw_only=True):
    """An API served from its OpenAPI document (Swagger 2.0 / OpenAPI 3.x, JSON or YAML),
    with its x-amazon-apigateway-* extensions (docs/openapi.md)."""
    openapi: str                          # path, relative to this config file
    id: Annotated[str, Meta(pattern=r"^[a-z0-9]{1,32}$")] | None = None  # default: derived from the path
    base_path: Literal["ignore", "prepend", "split"] = "ignore"   # AWS's basepath import mode
    # "$default" answers at the root; any other stage under /NAME
    stages: dict[str, StageConfig] = field(default_factory=lambda: {"$default": StageConfig()})


class WsFunctionIntegration(_Section, kw_only=True, tag="function", tag_field="type"):
    """AWS_PROXY: a function (see `functions`, local or remote) gets API Gateway's WebSocket
    event; on $connect its statusCode allows (2xx) or refuses the upgrade, on a two-way route
    its body goes back to the client."""
    function: str
    timeout_ms: Annotated[int, Meta(ge=50, le=29000)] = 29000   # AWS: 50 ms - 29 s


class WsHttpProxyIntegration(_Section, kw_only=True, tag="http_proxy", tag_field="type"):
    """HTTP_PROXY: the message (the $connect request's headers) is sent to `url`; a 2xx on
    $connect allows the upgrade, a two-way route sends the response body back."""
    url: str                              # http(s)://host[:port]/path
    method: str = "POST"
    timeout_ms: Annotated[int, Meta(ge=50, le=29000)] = 29000


class WsHttpIntegration(_Section, kw_only=True, tag="http", tag_field="type"):
    """HTTP (not proxy): the request body is `request_template` rendered (Velocity, over
    $input — the message —, $context, $stageVariables, $util), else the message as it is; a
    two-way route sends `response_template` rendered over the response ($input), else its
    body."""
    url: str
    method: str = "POST"
    request_template: str | None = None
    response_template: str | None = None
    # integration responses by status: "/4\\d\\d/" (a regular expression the whole status
    # matches) -> template; the first that matches is used, else response_template
    response_templates: dict[str, str] = {}
    timeout_ms: Annotated[int, Meta(ge=50, le=29000)] = 29000


class WsMockIntegration(_Section, kw_only=True, tag="mock", tag_field="type"):
    """MOCK: answered by the gateway; `status` allows or refuses $connect, `body` goes back
    as it is on a two-way route, or `response_template` rendered (Velocity over $input — the
    message —, $context, $stageVariables, $util)."""
    status: Status = 200
    body: str = ""
    response_template: str | None = None


WsIntegration = Union[WsFunctionIntegration, WsHttpProxyIntegration, WsHttpIntegration, WsMockIntegration]


class WebSocketRouteConfig(_Section, kw_only=True):
    """One route of a WebSocket API: $connect, $disconnect, $default or a custom route key."""
    integration: WsIntegration
    # "$default": a two-way route, whose integration's answer is sent to the client (AWS's
    # only route response selection expression for WebSocket APIs); null: one-way
    route_response_selection_expression: Literal["$default"] | None = None
    auth: dict[str, Any] | None = None    # $connect only: as routes' auth (lambda, iam, ...)
    api_key_required: bool = False        # $connect only: a key of a usage plan of the stage
    # request validation of its messages: the expression ($default, or $request.body.NAME)
    # picks a key of request_models (else its $default), whose model the message must match
    model_selection_expression: str | None = None
    request_models: dict[str, str] = {}   # selection key -> a name of the API's models


class WebSocketLimits(_Section, kw_only=True):
    """AWS's quotas for WebSocket APIs, which AWS does not let you raise; here you may."""
    max_frame_bytes: Annotated[int, Meta(ge=125)] = 32768        # a larger frame closes with 1009
    max_message_bytes: Annotated[int, Meta(ge=125)] = 131072     # a larger message closes with 1009
    idle_timeout_ms: PositiveMs = 600000                         # no frame either way: 1001
    max_duration_ms: PositiveMs = 7200000                        # 1001 once a connection is this old


class WebSocketApiConfig(_Section, kw_only=True):
    """A WebSocket API (API Gateway's protocolType WEBSOCKET): clients connect at
    ws://HOST/{stage} (or {id}.execute-api.HOST/{stage}); each message is routed by the
    route selection expression. docs/websocket.md."""
    name: str
    id: Annotated[str, Meta(pattern=r"^[a-z0-9]{1,32}$")] | None = None  # default: derived from the name
    route_selection_expression: str = "$request.body.action"
    api_key_selection_expression: str = "$request.header.x-api-key"
    routes: dict[str, WebSocketRouteConfig]
    models: dict[str, Any] = {}           # name -> JSON schema (draft 4 unless it says), for request_models
    stages: Annotated[dict[str, StageConfig], Meta(min_length=1)] = field(
        default_factory=lambda: {"production": StageConfig()})
    limits: WebSocketLimits = field(default_factory=WebSocketLimits)


class MappingConfig(_Section, kw_only=True):
    base_path: str = "(none)"             # "(none)" = the whole domain; else its first path segment(s)
    api: str                              # API id
    stage: str


class DomainConfig(_Section, kw_only=True):
    """A custom domain name: requests whose Host is `name` go to its base path mappings."""
    name: str
    mappings: Annotated[tuple[MappingConfig, ...], Meta(min_length=1)]
    # served on TLS listeners to clients whose SNI names this domain; paths relative to
    # the config file; without them the listener's certificate answers
    certificate: str | None = None        # PEM: the certificate, then its chain
    key: str | None = None                # PEM, unencrypted
    truststore: str | None = None         # PEM CA certificates: mutual TLS (needs certificate)
    mtls_required: bool = True            # false: a client certificate is verified when sent, not demanded


class Config(_Section, kw_only=True):
    """The whole gateway configuration, as decoded and checked by the loader."""
    workers: Union[Positive, Literal["auto"]] = "auto"
    listeners: Annotated[tuple[ListenerConfig, ...], Meta(min_length=1)]
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: Limits = field(default_factory=Limits)
    trusted_proxies: tuple[str, ...] = ()  # CIDRs whose X-Forwarded-* are kept
    via: str | None = "fastgate"          # pseudonym in "Via: 1.1 fastgate"; null = no Via
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    upstreams: dict[str, UpstreamConfig] = {}
    routes: tuple[RouteConfig, ...] = ()
    apis: tuple[ApiConfig, ...] = ()
    domains: tuple[DomainConfig, ...] = ()
    websocket_apis: tuple[WebSocketApiConfig, ...] = ()
    throttle: ThrottleConfig | None = None  # gateway-wide bucket, taken last (API Gateway's account level)
    # SigV4 (AWS_IAM) callers: a CSV of access_key_id,secret_access_key,principal_arn
    iam_credentials: str | None = None
    redis: RedisConfig | None = None      # throttles and quotas shared by several hosts
    cache_memory_mb: Count = 64           # the host's response cache (stages with caching on); 0 = none
    execution_log: ExecutionLogConfig | None = None  # per-stage execution logs (stages' logging_level)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)   # request metrics on /metrics
    # distributed tracing: W3C traceparent / X-Amzn-Trace-Id, sampling, OTLP/HTTP export
    # (docs/tracing.md has the keys: sampler, ratio, reservoir_per_s, endpoint, ...)
    tracing: dict[str, Any] | None = None
    # API keys and usage plans declared statically (docs/api-keys.md has the shapes)
    api_keys: tuple[dict[str, Any], ...] = ()
    usage_plans: tuple[dict[str, Any], ...] = ()
    functions: dict[str, FunctionConfig] = {}
    function_path: tuple[str, ...] = ()   # directories handlers are imported from (all functions)
    aws: AwsConfig | None = None          # AWS service integrations: endpoints, credentials
    data_dir: str | None = None           # state of the control API (SQLite); null = none kept
    state: StateConfig | None = None      # the state in PostgreSQL, shared by a fleet (docs/fleet.md)

    def worker_count(self) -> int:
        if self.workers == "auto":
            return os.cpu_count() or 1
        return self.workers

    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(c) for c in self.trusted_proxies)

    def route_upstream(self, route: RouteConfig) -> tuple[str, UpstreamConfig] | None:
        """The (name, group) an http route proxies to; None for mock and echo.
        A ``url:`` integration gets an implicit group named by the URL itself,
        so routes naming the same URL can share one pool."""
        integ = route.integration
        if not isinstance(integ, HttpIntegration):
            return None
        if integ.upstream is not None:
            return integ.upstream, self.upstreams[integ.upstream]
        return integ.url, UpstreamConfig(targets=(TargetConfig(url=integ.url),))
