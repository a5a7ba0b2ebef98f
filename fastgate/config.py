"""Gateway configuration: the schema, and a loader whose errors name file:line:column.

A config file (YAML, or JSON when the name ends in ``.json``) is parsed into a
tree that remembers where every value was written, converted into the frozen
Structs below by msgspec (types, bounds, unknown keys), then checked for what
types cannot say (URLs, addresses, CIDRs, route paths, references between
sections).  Every failure is one :class:`ConfigError`::

    gateway.yaml:14:7: routes[2].integration.upstream: unknown upstream 'billing' (defined: api, auth)

Later compile steps (templates, router conflicts) report through the same
machinery: ``raise config_error(loaded.source, ("routes", 2, "path"), "...")``.

Units: sizes are bytes, times are milliseconds (``*_ms``).  docs/config.md is
the reference for every option; keep it in step with the Structs here.
"""

from __future__ import annotations

import bisect
import difflib
import ipaddress
import json
import json.decoder
import os
import re
import socket
import typing
from typing import Annotated, Any, Literal, NamedTuple, Union
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta, field

__all__ = [
    "AccessLogConfig", "AdminConfig", "MetricsConfig", "Config", "ConfigError", "ConfigSource",
    "EchoIntegration", "HealthCheckConfig", "HeaderOps", "HttpIntegration",
    "Integration", "Limits", "ListenAddress", "ListenerConfig", "ListenerTLSConfig", "LoadedConfig",
    "MockIntegration", "PassiveHealthConfig", "RouteConfig", "RouteTimeouts",
    "TargetConfig", "TargetURL", "UpstreamConfig", "config_error",
    "default_config_path", "format_path", "load_config", "load_config_text",
    "locate", "parse_listen_address", "parse_route_path", "parse_size", "parse_target_url",
    "proxy_config",
]

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


# --- parsed forms handed to the runtime ------------------------------------

class ListenAddress(NamedTuple):
    host: str | None          # IP literal or name; None for an interface listener
    port: int
    family: socket.AddressFamily  # AF_INET, AF_INET6, or AF_UNSPEC (name to resolve / both)
    interface: str | None     # Linux interface name, its addresses resolved at bind time


class TargetURL(NamedTuple):
    scheme: str               # "http" | "https"
    host: str                 # name or IP, IPv6 without brackets
    port: int                 # explicit, else 80 / 443

    @property
    def label(self) -> str:
        """host:port as written in Host headers and logs (IPv6 bracketed)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


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
        return _body_limit(self.max_body_bytes)


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
        return _parse_hash_on(self.hash_on or "client_ip")


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
        if self.key.startswith("header:") and _TOKEN.match(self.key[7:]):
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
        return _body_limit(self.max_body_bytes)


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
    data_dir: str | None = None           # state of the control API (SQLite); null = none kept

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


# --- errors and positions ---------------------------------------------------

Path = tuple  # of str (mapping keys) and int (sequence indexes)


class ConfigError(Exception):
    """A config problem at a place in a file. line/column are 1-based; 0 = unknown."""

    def __init__(self, file: str, line: int, column: int, path: Path, message: str):
        super().__init__(file, line, column, path, message)
        self.file = file
        self.line = line
        self.column = column
        self.path = tuple(path)
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        if self.path:
            return f"{where}: {format_path(self.path)}: {self.message}"
        return f"{where}: {self.message}"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+\Z")


def format_path(path: Path) -> str:
    """("routes", 2, "integration") -> "routes[2].integration"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


class ConfigSource:
    """Where each value of a loaded document was written.

    ``marks`` maps a path to the 1-based (line, column) of the mapping key that
    holds it (of the item itself in a sequence).  A path with no mark falls back
    to its longest marked prefix, so a compile step may point one level deeper
    than the document went (e.g. at a character inside a template)."""

    def __init__(self, filename: str, marks: dict[Path, tuple[int, int]]):
        self.filename = filename
        self.marks = marks

    def locate(self, path: Path) -> tuple[int, int]:
        path = tuple(path)
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (0, 0))


def locate(source: ConfigSource, path: Path) -> tuple[int, int]:
    """(line, column), 1-based, of the value at ``path``; (0, 0) when unknown."""
    return source.locate(path)


def config_error(source: ConfigSource, path: Path, message: str) -> ConfigError:
    line, column = source.locate(path)
    return ConfigError(source.filename, line, column, tuple(path), message)


class LoadedConfig:
    """A checked Config and the source positions to report later errors against."""

    __slots__ = ("config", "source", "state", "warnings")

    def __init__(self, config: Config, source: ConfigSource, state=None):
        self.config = config
        self.source = source
        self.state = state        # fastgate.apis.State of the APIs served, or None
        self.warnings: list[str] = []   # what loading the APIs could not take as declared

    def error(self, path: Path, message: str) -> ConfigError:
        return config_error(self.source, path, message)

    def base_dir(self) -> str:
        """Relative paths in the config (openapi documents, function paths) start here."""
        name = self.source.filename
        return os.path.dirname(os.path.abspath(name)) if os.path.exists(name) else os.getcwd()

    def __repr__(self) -> str:
        return f"LoadedConfig({self.source.filename!r})"


# --- parsing YAML and JSON into (plain data, marks) -------------------------

# PERF: libyaml's parser when PyYAML has it: composing a 5,000-route file
# takes a quarter of the pure-Python time (bench/bench_config.py; tests/test_config.py
# test_large_route_table_loads_with_libyaml checks libyaml is the one used).
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):
    """SafeLoader with YAML 1.2 core scalars: ``off``/``no`` stay strings (so
    ``listen: off`` works), ``010`` is ten, ``1:30`` is not 90, and dates stay
    strings."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers
         if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int",
                        "tag:yaml.org,2002:timestamp")]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9][0-9_]*|0x[0-9a-fA-F_]+|0o[0-7_]+)$"),
    list("-+0123456789"))

_SCALAR_TAGS = {
    "tag:yaml.org,2002:null": lambda v: None,
    "tag:yaml.org,2002:bool": lambda v: v.lower() == "true",
    "tag:yaml.org,2002:int": lambda v: int(v.replace("_", ""), 0 if v[:2] in ("0x", "0o") else 10),
    "tag:yaml.org,2002:float": lambda v: float(v.replace("_", "").lower().replace(".inf", "inf")
                                               .replace(".nan", "nan")),
    "tag:yaml.org,2002:str": lambda v: v,
}


def _parse_yaml(text: str, filename: str) -> tuple[Any, dict]:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        if e.context and e.problem:
            problem = f"{problem} ({e.context})"
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(filename, line, col, (), problem) from None
    except yaml.YAMLError as e:
        raise ConfigError(filename, 0, 0, (), str(e)) from None
    marks: dict[Path, tuple[int, int]] = {}
    if root is None:
        return None, marks

    def pos(node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def fail(node: yaml.Node, path: Path, message: str):
        line, col = pos(node)
        raise ConfigError(filename, line, col, path, message)

    def build(node: yaml.Node, path: Path, active: set) -> Any:
        if isinstance(node, yaml.ScalarNode):
            convert = _SCALAR_TAGS.get(node.tag)
            if convert is None:
                fail(node, path, f"unsupported YAML tag {node.tag}")
            try:
                return convert(node.value)
            except ValueError:
                fail(node, path, f"not a valid {node.tag.rsplit(':', 1)[-1]}: {node.value!r}")
        if id(node) in active:
            fail(node, path, "recursive alias")
        active = active | {id(node)}
        if isinstance(node, yaml.SequenceNode):
            out = []
            for i, item in enumerate(node.value):
                marks[path + (i,)] = pos(item)
                out.append(build(item, path + (i,), active))
            return out
        out: dict = {}
        first: dict = {}
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for src in sources:
                    if not isinstance(src, yaml.MappingNode):
                        fail(src, path, "a merge key (<<) needs a mapping")
                    merged.extend(src.value)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                fail(key_node, path, "mapping keys must be scalars")
            key = build(key_node, path, active)
            if key in first:
                fail(key_node, path + (key,), f"duplicate key (first at line {first[key][0]})")
            first[key] = pos(key_node)
            marks[path + (key,)] = pos(key_node)
            out[key] = build(value_node, path + (key,), active)
        for key_node, value_node in merged:   # explicit keys win over merged ones
            key = build(key_node, path, active)
            if key not in out:
                marks[path + (key,)] = pos(key_node)
                out[key] = build(value_node, path + (key,), active)
        return out

    marks[()] = pos(root)
    return build(root, (), set()), marks


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")


def _parse_json(text: str, filename: str) -> tuple[Any, dict]:
    # Our own small parser rather than YAML's: YAML rejects tab indentation and
    # json.loads keeps no positions, and errors must point at a line.
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    marks: dict[Path, tuple[int, int]] = {}

    def pos(i: int) -> tuple[int, int]:
        n = bisect.bisect_right(line_starts, i) - 1
        return n + 1, i - line_starts[n] + 1

    def fail(i: int, message: str, path: Path = ()):
        line, col = pos(i)
        raise ConfigError(filename, line, col, path, message)

    def ws(i: int) -> int:
        return _JSON_SPACE.match(text, i).end()

    def string(i: int) -> tuple[str, int]:
        try:
            return json.decoder.scanstring(text, i + 1)
        except json.JSONDecodeError as e:
            fail(e.pos, e.msg)

    def value(i: int, path: Path, depth: int) -> tuple[Any, int]:
        if depth > 200:
            fail(i, "nested too deeply")
        ch = text[i:i + 1]
        if ch == "{":
            out: dict = {}
            i = ws(i + 1)
            if text[i:i + 1] == "}":
                return out, i + 1
            while True:
                if text[i:i + 1] != '"':
                    fail(i, "expected a string key")
                key_at = i
                key, i = string(i)
                if key in out:
                    fail(key_at, f"duplicate key (first at line {marks[path + (key,)][0]})",
                         path + (key,))
                marks[path + (key,)] = pos(key_at)
                i = ws(i)
                if text[i:i + 1] != ":":
                    fail(i, "expected ':'")
                out[key], i = value(ws(i + 1), path + (key,), depth + 1)
                i = ws(i)
                if text[i:i + 1] == "}":
                    return out, i + 1
                if text[i:i + 1] != ",":
                    fail(i, "expected ',' or '}'")
                i = ws(i + 1)
        if ch == "[":
            items: list = []
            i = ws(i + 1)
            if text[i:i + 1] == "]":
                return items, i + 1
            while True:
                marks[path + (len(items),)] = pos(i)
                item, i = value(i, path + (len(items),), depth + 1)
                items.append(item)
                i = ws(i)
                if text[i:i + 1] == "]":
                    return items, i + 1
                if text[i:i + 1] != ",":
                    fail(i, "expected ',' or ']'")
                i = ws(i + 1)
        if ch == '"':
            return string(i)
        for word, val in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, i):
                return val, i + len(word)
        m = _JSON_NUMBER.match(text, i)
        if m and m.end() > i:
            num = m.group()
            return (float(num) if m.group(1) or m.group(2) else int(num)), m.end()
        fail(i, "expected a JSON value" if ch else "unexpected end of JSON")

    start = ws(0)
    if start == len(text):
        return None, marks
    marks[()] = pos(start)
    data, end = value(start, (), 0)
    end = ws(end)
    if end != len(text):
        fail(end, "extra data after the JSON document")
    return data, marks


# --- msgspec errors -> paths -------------------------------------------------

_MSGSPEC_AT = re.compile(r"^(.*?)(?: - at (?:`(key)` in )?`(\$[^`]*)`)?$", re.S)
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]|\[(\.\.\.)\]")


def _msgspec_path(expr: str) -> list:
    """"$.routes[2].set[...]" -> ["routes", 2, "set", ...]; Ellipsis = an unnamed dict key."""
    out: list = []
    for m in _PATH_PART.finditer(expr, 1):
        out.append(m.group(1) if m.group(1) else int(m.group(2)) if m.group(2) else ...)
    return out


def _get(data: Any, path: Path) -> Any:
    for part in path:
        data = data[part]
    return data


def _with_only_key(data: Any, path: Path, key: Any) -> Any:
    """A copy of data whose dict at path holds only ``key`` (copies along the path only)."""
    if not path:
        return {key: data[key]}
    head, rest = path[0], path[1:]
    copy = list(data) if isinstance(data, list) else dict(data)
    copy[head] = _with_only_key(data[head], rest, key)
    return copy


def _resolve_dict_key(data: Any, prefix: Path, target: type) -> Any:
    """msgspec names no dict key in its error paths; find the one that fails
    by converting the document with that dict cut down to each key alone."""
    mapping = _get(data, prefix)
    if not isinstance(mapping, dict):
        return None
    for key in mapping:
        try:
            msgspec.convert(_with_only_key(data, prefix, key), target)
        except msgspec.ValidationError:
            return key
    return None


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) is Union or isinstance(tp, type(int | None))


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _pick_member(tp: Any, data: Any) -> Any:
    """The container member of a union that ``data`` was decoded as (tag-aware)."""
    tp = _unwrap(tp)
    if not _is_union(tp):
        return tp
    args = [_unwrap(a) for a in typing.get_args(tp) if a is not type(None)]
    tagged = [a for a in args if _is_struct(a) and a.__struct_config__.tag is not None]
    if tagged:
        tag = data.get("type") if isinstance(data, dict) else None
        return next((a for a in tagged if a.__struct_config__.tag == tag), None)
    return next((a for a in args if _is_struct(a) or typing.get_origin(a) in (tuple, list, dict)),
                args[0] if len(args) == 1 else None)


def _type_at(path: Path, data: Any, tp: Any = Config) -> Any:
    """The declared type of the value at path (Annotated stripped), or None."""
    for part in path:
        tp = _pick_member(tp, data)
        origin = typing.get_origin(tp)
        if _is_struct(tp):
            tp = typing.get_type_hints(tp, include_extras=True).get(part)
        elif origin in (tuple, list):
            tp = typing.get_args(tp)[0]
        elif origin is dict:
            tp = typing.get_args(tp)[1]
        else:
            return None
        if tp is None:
            return None
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            data = None
    return _unwrap(tp)


def _choices(tp: Any) -> list[str]:
    """The literal strings a (possibly union) type admits."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) is Literal:
        return [repr(v) for v in typing.get_args(tp)]
    if tp is int:
        return ["an integer"]
    if _is_union(tp):
        return [c for a in typing.get_args(tp) for c in _choices(a)]
    return []


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping" if value else "an empty mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    return repr(value)


def _validation_error(err: msgspec.ValidationError, data: Any, filename: str,
                      marks: dict) -> ConfigError:
    m = _MSGSPEC_AT.match(str(err))
    message, key_error, expr = m.group(1), m.group(2), m.group(3) or "$"
    parts = _msgspec_path(expr)
    # Fill in dict keys msgspec left unnamed, outermost first.
    path: list = []
    for part in parts + ([...] if key_error else []):
        if part is ...:
            key = _resolve_dict_key(data, tuple(path), Config)
            if key is None:
                break
            path.append(key)
        else:
            path.append(part)
    path_t = tuple(path)
    try:
        value = _get(data, path_t)
    except (KeyError, IndexError, TypeError):
        value = None
    unknown = re.match(r"Object contains unknown field `(.*)`", message)
    missing = re.match(r"Object missing required field `(.*)`", message)
    if unknown:
        name = unknown.group(1)
        owner = _pick_member(_type_at(path_t, data), value)
        allowed = sorted(f for f in getattr(owner, "__struct_fields__", ()))
        message = f"unknown field {name!r}"
        close = difflib.get_close_matches(name, allowed, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        elif allowed:
            message += f" (expected one of: {', '.join(allowed)})"
        path_t += (name,)
    elif missing:
        message = f"missing required field {missing.group(1)!r}"
    elif key_error:
        message = f"{message[0].lower()}{message[1:]} as a key"
    elif message.startswith("Invalid value") and path_t and path_t[-1] == "type":
        kinds = [s.__struct_config__.tag for s in typing.get_args(Integration)]
        message = f"unknown integration type {_describe(value)} (expected one of: {', '.join(kinds)})"
    elif message.startswith("Invalid enum value"):
        choices = _choices(_type_at(path_t, data))
        message = f"invalid value {_describe(value)}"
        if choices:
            message += f" (expected one of: {', '.join(choices)})"
    else:
        message = message[0].lower() + message[1:]
        if message.startswith("expected") and ", got" not in message:
            message += f", got {_describe(value)}"
        elif ", got `" in message and isinstance(value, (int, float, str)):
            message += f" ({value!r})"
    line, col = ConfigSource(filename, marks).locate(path_t)
    return ConfigError(filename, line, col, path_t, message)


# --- value parsers (shared by the loader's checks and the runtime helpers) ----

_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")     # RFC 9110 section 5.6.2
# A mock may not set these: the gateway frames every response itself (RFC 9112 section 6)
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive",
                      "proxy-connection", "te", "trailer", "upgrade", "date"))
CLAIM_NAME = re.compile(r"[A-Za-z0-9_:./-]{1,128}\Z")                 # a JWT claim name (throttle claim:NAME)
_INTERFACE = re.compile(r"[^/\s:]{1,15}\Z")                # Linux IFNAMSIZ - 1
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9_.\-]+\Z")


def _check_host(host: str) -> socket.AddressFamily:
    """AF_INET / AF_INET6 for IP literals, AF_UNSPEC for a valid name; ValueError else."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"invalid host {host!r}") from None
        return socket.AF_UNSPEC
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def parse_listen_address(text: str) -> ListenAddress:
    """"127.0.0.1:8080" | "[::1]:8080" | "localhost:8080" -> ListenAddress."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [IPv6]:port, got {text!r}")
        if _check_host(host) != socket.AF_INET6:
            raise ValueError(f"{host!r} in brackets is not an IPv6 address")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected host:port, got {text!r}")
        if ":" in host:
            raise ValueError(f"write an IPv6 address in brackets: [{host}]:{port}")
    family = _check_host(host)
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return ListenAddress(host, int(port), family, None)


def parse_target_url(url: str) -> TargetURL:
    """"http://host:port" -> TargetURL; ValueError naming what is wrong."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as e:  # urlsplit's own: bad brackets, bad port
        raise ValueError(f"URL {url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"URL {url!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"URL {url!r} must not carry credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment or url.endswith(("?", "#")):
        raise ValueError(f"URL {url!r} must have no path, query or fragment "
                         "(use path_rewrite to change the path)")
    if not host:
        raise ValueError(f"URL {url!r} has no host")
    if port == 0:
        raise ValueError(f"URL {url!r} has an invalid port")
    if "[" in parts.netloc:
        if _check_host(host) != socket.AF_INET6:
            raise ValueError(f"URL {url!r}: {host!r} in brackets is not an IPv6 address")
    else:
        _check_host(host)
    return TargetURL(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def _parse_hash_on(text: str) -> tuple[str, str | None]:
    if text == "client_ip":
        return "client_ip", None
    kind, sep, name = text.partition(":")
    if sep and kind in ("header", "cookie") and _TOKEN.match(name):
        return kind, (name.lower() if kind == "header" else name)
    raise ValueError(f"hash_on must be client_ip, header:NAME or cookie:NAME, got {text!r}")


def _body_limit(value: int | str) -> int:
    return -1 if value == "unlimited" else int(value)


_SIZE = re.compile(r"(\d+)([kmg]?)", re.I)


def parse_size(text: str) -> int | str:
    """A size as nginx writes one (client_max_body_size): bytes, or a number with k, m or g
    (binary multiples: "512k", "10m", "2g"), or "unlimited" (returned as is, a BodyLimit).
    ValueError otherwise."""
    text = text.strip()
    if text.lower() == "unlimited":
        return "unlimited"
    m = _SIZE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a size: bytes, or a number with k, m or g "
                         "(512k, 10m, 2g), or 'unlimited'")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


_BAD_PATH_CHARS = re.compile(r"[\s?#\x00-\x1f\x7f]")


def parse_route_path(path: str) -> list[tuple[str, str]]:
    """"/pets/{id}" -> [("static", "pets"), ("param", "id")]; kinds: static,
    param, greedy.  ValueError for what API Gateway would refuse."""
    if not path.startswith("/"):
        raise ValueError(f"route path {path!r} must start with '/'")
    bad = _BAD_PATH_CHARS.search(path)
    if bad:
        raise ValueError(f"route path {path!r} contains {bad.group()!r} at offset {bad.start()}")
    depth = 0
    for i, ch in enumerate(path):
        depth += (ch == "{") - (ch == "}")
        if depth not in (0, 1):
            raise ValueError(f"unbalanced braces in {path!r} at offset {i}")
    if depth:
        raise ValueError(f"unbalanced braces in {path!r}: '{{' is never closed")
    # segments as the router itself reads them, so the check and the runtime never disagree
    # (one trailing slash ignored, parameter names as the router accepts them)
    from fastgate._core.router import parse_route_path as router_parse
    return router_parse(path)


def _route_shape(segments: list[tuple[str, str]]) -> str:
    """The path as the router sees it: parameter names do not make routes differ."""
    return "/" + "/".join({"param": "{}", "greedy": "{+}"}.get(k, v) for k, v in segments)


# --- semantic checks ----------------------------------------------------------

class _Checker:
    def __init__(self, config: Config, source: ConfigSource):
        self.config = config
        self.source = source

    def fail(self, path: Path, message: str):
        raise config_error(self.source, path, message)

    def attempt(self, path: Path, fn, *args):
        try:
            return fn(*args)
        except ValueError as e:
            self.fail(path, str(e))

    def run(self) -> None:
        cfg = self.config
        bound: dict[tuple, int] = {}
        for i, lst in enumerate(cfg.listeners):
            p = ("listeners", i)
            if (lst.address is None) == (lst.interface is None):
                self.fail(p, "give either address (host:port) or interface with port")
            if lst.address is not None:
                for extra in ("port", "family"):
                    if getattr(lst, extra) is not None:
                        self.fail(p + (extra,), f"{extra} goes with interface; address already "
                                  "names the port and family")
                addr = self.attempt(p + ("address",), parse_listen_address, lst.address)
                key = (addr.host, addr.port)
            else:
                if not _INTERFACE.match(lst.interface):
                    self.fail(p + ("interface",), f"invalid interface name {lst.interface!r}")
                if lst.port is None:
                    self.fail(p, "an interface listener needs a port")
                key = (f"%{lst.interface}", lst.port)
            if key in bound:
                self.fail(p, f"listens where listeners[{bound[key]}] already does")
            bound[key] = i
        if cfg.admin.listen != "off":
            addr = self.attempt(("admin", "listen"), parse_listen_address, cfg.admin.listen)
            if (addr.host, addr.port) in bound:
                self.fail(("admin", "listen"),
                          f"same address as listeners[{bound[addr.host, addr.port]}]")
        for i, cidr in enumerate(cfg.trusted_proxies):
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                try:
                    net = ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    self.fail(("trusted_proxies", i), f"not an IP address or CIDR: {cidr!r}")
                self.fail(("trusted_proxies", i),
                          f"{cidr!r} has host bits set; did you mean {str(net)!r}?")
        if cfg.via is not None and not _TOKEN.match(cfg.via):
            self.fail(("via",), f"must be a token (no spaces), got {cfg.via!r}; "
                      "null turns the Via header off")
        if cfg.access_log.path == "":
            self.fail(("access_log", "path"), 'empty path; use "-" for stdout or null for none')
        if not cfg.access_log.format:
            self.fail(("access_log", "format"), "empty format")
        for i, lst in enumerate(cfg.listeners):
            if lst.tls is not None:
                self.check_tls(("listeners", i, "tls"), lst.tls.certificate, lst.tls.key, None)
        for i, dom in enumerate(cfg.domains):
            p = ("domains", i)
            if (dom.certificate is None) != (dom.key is None):
                self.fail(p + ("key" if dom.key is None else "certificate",),
                          "certificate and key go together")
            if dom.truststore is not None and dom.certificate is None:
                self.fail(p + ("truststore",), "mutual TLS needs the domain's own certificate and key")
            if dom.certificate is not None:
                self.check_tls(p, dom.certificate, dom.key, dom.truststore)
        for name, up in cfg.upstreams.items():
            self.check_upstream(name, up)
        if cfg.throttle is not None:
            self.attempt(("throttle", "key"), cfg.throttle.key_kind)
        if cfg.tracing is not None:
            from fastgate.tracing_export import parse_spec
            self.attempt(("tracing",), parse_spec, cfg.tracing)
        for i, route in enumerate(cfg.routes):
            if route.throttle is not None:
                self.attempt(("routes", i, "throttle", "key"), route.throttle.key_kind)
        for name, fn in cfg.functions.items():
            fp = ("functions", name)
            if (fn.handler is None) == (fn.remote is None):
                self.fail(fp, "a function needs exactly one of handler (module:callable) or remote")
            if fn.handler is not None:
                from fastgate.functions.loader import parse_handler
                self.attempt(fp + ("handler",), parse_handler, fn.handler)
            if fn.remote is not None and not re.match(r"^https?://[^/]+/?$", fn.remote.endpoint):
                self.fail(fp + ("remote", "endpoint"),
                          f"expected http(s)://host[:port], got {fn.remote.endpoint!r}")
        seen: dict[tuple, int] = {}
        for i, route in enumerate(cfg.routes):
            key = self.check_route(i, route)
            if key in seen:
                j = seen[key]
                line = self.source.locate(("routes", j))[0]
                where = f"routes[{j}]" + (f", line {line}" if line else "")
                self.fail(("routes", i), f"duplicate route {route.route_key} for host "
                          f"{route.host!r}: same as {where}")
            seen[key] = i

    def check_tls(self, path: Path, certificate: str, key: str, truststore: str | None) -> None:
        """The files are readable PEMs and the key belongs to the certificate."""
        from fastgate.tls import TLSError, check_key_pair, read_pem, server_context
        base = os.path.dirname(os.path.abspath(self.source.filename)) \
            if os.path.exists(self.source.filename) else os.getcwd()
        files = {"certificate": certificate, "key": key, "truststore": truststore}
        try:
            pems = {f: read_pem(os.path.join(base, v), f) for f, v in files.items() if v is not None}
            check_key_pair(pems["certificate"], pems["key"], f"certificate {certificate}",
                           f"key {key}")
            server_context(pems["certificate"], pems["key"], truststore_pem=pems.get("truststore"))
        except TLSError as e:
            self.fail(path + (e.field,), str(e))

    def check_upstream(self, name: str, up: UpstreamConfig) -> None:
        p = ("upstreams", name)
        if not _UPSTREAM_NAME.match(name):
            self.fail(p, f"upstream name {name!r} may hold only letters, digits, '_', '.', '-'")
        urls: dict[TargetURL, int] = {}
        for i, t in enumerate(up.targets):
            parsed = self.attempt(p + ("targets", i, "url"), parse_target_url, t.url)
            if parsed in urls:
                self.fail(p + ("targets", i), f"same target as targets[{urls[parsed]}]; "
                          "raise its weight instead")
            urls[parsed] = i
        if up.hash_on is not None:
            if up.balance != "hash":
                self.fail(p + ("hash_on",), "hash_on needs balance: hash")
            self.attempt(p + ("hash_on",), _parse_hash_on, up.hash_on)
        hc = up.health_check
        if hc is not None:
            if not hc.path.startswith("/") or _BAD_PATH_CHARS.search(hc.path.replace("?", "")):
                self.fail(p + ("health_check", "path"), f"invalid check path {hc.path!r}")
            if hc.timeout_ms > hc.interval_ms:
                self.fail(p + ("health_check", "timeout_ms"),
                          f"timeout_ms ({hc.timeout_ms}) exceeds interval_ms ({hc.interval_ms})")
            if hc.host is not None and not _HOSTNAME.match(hc.host.rsplit(":", 1)[0]):
                self.fail(p + ("health_check", "host"), f"invalid host {hc.host!r}")

    def check_headers(self, path: Path, ops: HeaderOps | None) -> None:
        if ops is None:
            return
        for section in ("set", "append", "rename"):
            for name, value in getattr(ops, section).items():
                if not _TOKEN.match(name):
                    self.fail(path + (section, name), f"invalid header name {name!r}")
                if section == "rename" and not _TOKEN.match(value):
                    self.fail(path + (section, name), f"invalid header name {value!r}")
                if any(c in value for c in "\r\n\x00"):
                    self.fail(path + (section, name), "header values may not hold CR, LF or NUL")
        for i, name in enumerate(ops.remove):
            if not _TOKEN.match(name):
                self.fail(path + ("remove", i), f"invalid header name {name!r}")

    def check_route(self, i: int, route: RouteConfig) -> tuple:
        p = ("routes", i)
        segments = self.attempt(p + ("path",), parse_route_path, route.path)
        if route.method != "ANY" and not (_TOKEN.match(route.method) and route.method.isupper()):
            hint = f"; write {route.method.upper()!r}" if _TOKEN.match(route.method) else ""
            self.fail(p + ("method",), f"method must be an upper-case HTTP method or ANY, "
                      f"got {route.method!r}{hint}")
        host = route.host
        if host != "*":
            bare = host[2:] if host.startswith("*.") else host
            if ":" in bare:
                self.fail(p + ("host",), f"host {host!r}: patterns match the Host header "
                          "without its port")
            if "*" in bare or not _HOSTNAME.match(bare):
                self.fail(p + ("host",), f"host must be a name, *.domain or *, got {host!r}")
        integ = route.integration
        ip = p + ("integration",)
        if isinstance(integ, HttpIntegration):
            if (integ.upstream is None) == (integ.url is None):
                self.fail(ip, "an http integration needs exactly one of upstream or url")
            if integ.upstream is not None and integ.upstream not in self.config.upstreams:
                defined = ", ".join(sorted(self.config.upstreams)) or "none"
                self.fail(ip + ("upstream",),
                          f"unknown upstream {integ.upstream!r} (defined: {defined})")
            if integ.url is not None:
                self.attempt(ip + ("url",), parse_target_url, integ.url)
        else:
            for name in ("timeouts", "retries"):
                if getattr(route, name) is not None:
                    self.fail(p + (name,), f"{name} apply to http integrations only")
            if isinstance(integ, FunctionIntegration) and integ.function not in self.config.functions:
                defined = ", ".join(sorted(self.config.functions)) or "none"
                self.fail(ip + ("function",), f"unknown function {integ.function!r} (defined: {defined})")
            if isinstance(integ, (FunctionIntegration, MockIntegration)):
                # only http and echo integrations are sent a path; a function's event carries the
                # request path next to the route's resource, as API Gateway's does (docs/config.md)
                why = ("its event carries the request path, as on API Gateway: strip a base path "
                       "in the function" if isinstance(integ, FunctionIntegration)
                       else "a mock answers without one")
                for name in ("strip_prefix", "path_rewrite"):
                    if getattr(route, name) is not None:
                        self.fail(p + (name,), f"{name} changes the path sent to an http integration; "
                                  f"{why}")
            if isinstance(integ, MockIntegration):
                if integ.status < 200:
                    self.fail(ip + ("status",), f"{integ.status} is informational: a mock "
                              "answers with a final status, 200-599")
                for name, value in integ.headers.items():
                    if not _TOKEN.match(name):
                        self.fail(ip + ("headers", name), f"invalid header name {name!r}")
                    if name.lower() in _FRAMING:
                        self.fail(ip + ("headers", name), f"{name} is the gateway's to write")
                    if any(c in value for c in "\r\n\x00"):
                        self.fail(ip + ("headers", name), "header values may not hold CR, LF or NUL")
        if route.path_rewrite is not None and route.strip_prefix is not None:
            self.fail(p + ("strip_prefix",), "use path_rewrite or strip_prefix, not both")
        if route.path_rewrite is not None:
            self.check_rewrite(p + ("path_rewrite",), route.path_rewrite, segments)
        if route.strip_prefix is not None:
            prefix = route.strip_prefix
            if not prefix.startswith("/") or prefix == "/" or prefix.endswith("/"):
                self.fail(p + ("strip_prefix",), f"strip_prefix must look like /api "
                          f"(leading '/', no trailing '/'), got {prefix!r}")
            static = "/" + "/".join(v for k, v in segments[:prefix.count("/")] if k == "static")
            if static != prefix:
                self.fail(p + ("strip_prefix",), f"{prefix!r} is not a prefix of the static "
                          f"start of the route path {route.path!r}")
        self.check_headers(p + ("request_headers",), route.request_headers)
        self.check_headers(p + ("response_headers",), route.response_headers)
        return host.lower(), route.method, _route_shape(segments)

    def check_rewrite(self, path: Path, rewrite: str, segments: list) -> None:
        if not rewrite.startswith("/"):
            self.fail(path, f"path_rewrite must start with '/', got {rewrite!r}")
        depth = 0
        for ch in rewrite:
            depth += (ch == "{") - (ch == "}")
            if depth not in (0, 1):
                break
        if depth:
            self.fail(path, f"unbalanced braces in {rewrite!r}")
        params = {v for k, v in segments if k != "static"}
        # "$$" and "${variable}" are template syntax, not path parameters
        for m in re.finditer(r"\$\$|\$\{[^}]*\}|\{([^{}]*)\}", rewrite):
            if m.group(1) is None:
                continue
            name = m.group(1).rstrip("+")
            if name not in params:
                known = ", ".join(sorted(params)) or "none"
                self.fail(path, f"path_rewrite uses {{{m.group(1)}}}, which the route path does "
                          f"not capture (parameters: {known})")


# --- public entry points --------------------------------------------------------

def _normalise(data: Any) -> Any:
    # A target may be written as a bare URL string; give msgspec the mapping.
    if isinstance(data, dict) and isinstance(data.get("upstreams"), dict):
        for up in data["upstreams"].values():
            if isinstance(up, dict) and isinstance(up.get("targets"), list):
                up["targets"] = [{"url": t} if isinstance(t, str) else t for t in up["targets"]]
    return data


def _build(data: Any, source: ConfigSource) -> LoadedConfig:
    if data is None:
        raise ConfigError(source.filename, 0, 0, (), "the document is empty")
    data = _normalise(data)
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise _validation_error(e, data, source.filename, source.marks) from None
    _Checker(config, source).run()
    return LoadedConfig(config, source)


def load_config_text(text: str, filename: str = "<config>") -> LoadedConfig:
    """Parse, convert and check a config document; JSON when filename ends in .json."""
    if filename.lower().endswith(".json"):
        data, marks = _parse_json(text, filename)
    else:
        data, marks = _parse_yaml(text, filename)
    return _build(data, ConfigSource(filename, marks))


def load_config(path: str) -> LoadedConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, 0, 0, (), e.strerror or str(e)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, 0, 0, (), f"not UTF-8 ({e.reason} at byte {e.start})") from None
    return load_config_text(text, path)


def with_overrides(loaded: LoadedConfig, *, listen: list[str] | None = None,
                   control: str | None = None, data_dir: str | None = None,
                   functions: list[str] | None = None, function_path: list[str] | None = None,
                   iam_credentials: str | None = None,
                   flag_source: str = "fastgate serve") -> LoadedConfig:
    """The config with command-line flags applied (--listen, --control, --data-dir,
    --function NAME=module:callable, --function-path DIR); a bad flag value is a
    ConfigError naming the flag."""
    config = loaded.config
    changes = {}
    if functions:
        from fastgate.functions.loader import parse_handler
        table = dict(config.functions)
        for spec in functions:
            name, sep, handler = spec.partition("=")
            try:
                if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
                    raise ValueError(f"expected NAME=module:callable, got {spec!r}")
                parse_handler(handler)
            except ValueError as e:
                raise ConfigError(flag_source, 0, 0, ("--function",), str(e)) from None
            table[name] = FunctionConfig(handler=handler)
        changes["functions"] = table
    if function_path:
        changes["function_path"] = tuple(os.path.abspath(p) for p in function_path) + \
            config.function_path
    try:
        if listen:
            for a in listen:
                parse_listen_address(a)
            changes["listeners"] = tuple(ListenerConfig(address=a) for a in listen)
        if control is not None:
            if control != "off":
                parse_listen_address(control)
            changes["admin"] = msgspec.structs.replace(config.admin, listen=control)
    except ValueError as e:
        flag = "--listen" if "admin" not in changes and listen else "--control"
        raise ConfigError(flag_source, 0, 0, (flag,), str(e)) from None
    if data_dir is not None:
        changes["data_dir"] = data_dir
    if iam_credentials is not None:
        changes["iam_credentials"] = os.path.abspath(iam_credentials)
    if not changes:
        return loaded
    out = LoadedConfig(msgspec.structs.replace(config, **changes), loaded.source, loaded.state)
    out.warnings = loaded.warnings
    return out


def empty_config() -> LoadedConfig:
    """A gateway with a listener and no routes (`fastgate serve --openapi`)."""
    return _build({"listeners": [{"address": "127.0.0.1:8080"}]}, ConfigSource("fastgate serve", {}))


def default_config_path() -> str:
    """The packaged default config (fastgate/default.yaml)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "default.yaml")


# Where `fastgate proxy` errors point: the flag that produced the value.
_PROXY_FLAGS = (
    (("listeners",), "--listen"),
    (("upstreams",), "--upstream"),
    (("workers",), "--workers"),
    (("admin",), "--control"),
    (("access_log",), "--access-log"),
    (("limits",), "--max-body-size"),
)


def proxy_config(listen: list[str], upstreams: list[str], workers: int | str = "auto",
                 access_log: str | None = None, control: str = "127.0.0.1:9901",
                 max_body_size: str = "unlimited") -> LoadedConfig:
    """The config of ``fastgate proxy``: every request, any method and path, to
    one round-robin group of ``upstreams``.  ``access_log``: a path, "-" for
    stdout, None or "off" for none (the default).  ``control``: host:port of
    the admin API or "off".  ``max_body_size``: parse_size() text; a plain
    reverse proxy streams bodies of any size unless told otherwise.  Errors
    name the flag instead of a file line."""
    if isinstance(workers, str) and workers.isdigit():
        workers = int(workers)
    try:
        max_body = parse_size(max_body_size)
    except ValueError as e:
        raise ConfigError("fastgate proxy", 0, 0, ("--max-body-size",), str(e)) from None
    data = {
        "workers": workers,
        "listeners": [{"address": a} for a in listen],
        "admin": {"listen": control},
        "access_log": {"path": None if access_log in (None, "off") else access_log},
        "limits": {"max_body_bytes": max_body},
        "upstreams": {"proxy": {"targets": [{"url": u} for u in upstreams]}},
        "routes": [
            {"path": "/{proxy+}", "method": "ANY", "integration": {"type": "http", "upstream": "proxy"}},
            {"path": "/", "method": "ANY", "integration": {"type": "http", "upstream": "proxy"}},
        ],
    }
    source = ConfigSource("fastgate proxy", {})
    try:
        return _build(data, source)
    except ConfigError as e:
        flag = next((f for prefix, f in _PROXY_FLAGS if e.path[:1] == prefix), None)
        if flag is None:
            raise
        detail = e.message
        if flag == "--listen" and not listen:
            detail = "at least one --listen address is required"
        elif flag == "--upstream" and not upstreams:
            detail = "at least one --upstream URL is required"
        raise ConfigError("fastgate proxy", 0, 0, (flag,), detail) from None
