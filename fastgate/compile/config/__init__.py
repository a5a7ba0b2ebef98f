"""Gateway configuration: the schema, and a loader whose errors name file:line:column.

A config file (YAML, or JSON when the name ends in ``.json``) is parsed into a
tree that remembers where every value was written, converted into the frozen
Structs of schema.py by msgspec (types, bounds, unknown keys), then checked for what
types cannot say (URLs, addresses, CIDRs, route paths, references between
sections).  Every failure is one :class:`ConfigError`::

    gateway.yaml:14:7: routes[2].integration.upstream: unknown upstream 'billing' (defined: api, auth)

Later compile steps (templates, router conflicts) report through the same
machinery: ``raise config_error(loaded.source, ("routes", 2, "path"), "...")``.

Units: sizes are bytes, times are milliseconds (``*_ms``).  docs/config.md is
the reference for every option; keep it in step with the Structs in schema.py.

The modules, one concern each:

    schema.py    the frozen Structs (types, bounds, unknown keys rejected)
    values.py    string values parsed: listen addresses, upstream URLs, route paths
    source.py    YAML/JSON parsed with the line and column of every key; ConfigError
    load.py      load_config: parse, convert (msgspec errors -> paths), check
    checks.py    what types cannot say: references between sections, addresses, paths
    builders.py  with_overrides (command-line flags), proxy_config, empty_config
"""

from fastgate.compile.config.builders import (
    default_config_path,
    empty_config,
    proxy_config,
    with_overrides,
)
from fastgate.compile.config.load import (
    LoadedConfig,
    load_config,
    load_config_text,
)
from fastgate.compile.config.schema import (
    AccessLogConfig,
    AdminConfig,
    AdminCredentials,
    ApiConfig,
    Config,
    DomainConfig,
    EchoIntegration,
    ExecutionLogConfig,
    FunctionConfig,
    FunctionIntegration,
    HeaderOps,
    HealthCheckConfig,
    HttpIntegration,
    Integration,
    Limits,
    ListenerConfig,
    ListenerTLSConfig,
    MappingConfig,
    MetricsConfig,
    MockIntegration,
    PassiveHealthConfig,
    RedisConfig,
    StateConfig,
    RemoteFunctionConfig,
    RouteConfig,
    RouteTimeouts,
    StageConfig,
    TargetConfig,
    ThrottleConfig,
    UpstreamConfig,
    WebSocketApiConfig,
    WebSocketLimits,
    WebSocketRouteConfig,
)
from fastgate.compile.config.source import (
    ConfigError,
    ConfigSource,
    config_error,
    format_path,
    locate,
)
from fastgate.compile.config.values import (
    ListenAddress,
    TargetURL,
    parse_listen_address,
    parse_route_path,
    parse_size,
    parse_target_url,
)

__all__ = [
    "AccessLogConfig", "AdminConfig", "AdminCredentials", "ApiConfig", "Config",
    "config_error", "ConfigError", "ConfigSource", "default_config_path", "DomainConfig",
    "EchoIntegration", "empty_config", "ExecutionLogConfig", "format_path", "FunctionConfig",
    "FunctionIntegration", "HeaderOps", "HealthCheckConfig", "HttpIntegration", "Integration",
    "Limits", "ListenAddress", "ListenerConfig", "ListenerTLSConfig", "load_config",
    "load_config_text", "LoadedConfig", "locate", "MappingConfig", "MetricsConfig",
    "MockIntegration", "parse_listen_address", "parse_route_path", "parse_size", "parse_target_url",
    "PassiveHealthConfig", "proxy_config", "RedisConfig", "StateConfig", "RemoteFunctionConfig",
    "RouteConfig", "RouteTimeouts", "StageConfig", "TargetConfig", "TargetURL",
    "ThrottleConfig", "UpstreamConfig", "WebSocketApiConfig", "WebSocketLimits",
    "WebSocketRouteConfig", "with_overrides",
]
