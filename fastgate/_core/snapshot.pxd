# Everything the hot path reads, compiled once by fastgate.compile.snapshot from config and
# state. Immutable once published: a reload builds a new one and the worker swaps one
# reference (runtime.pxd, Worker.swap); a request keeps the one it started with
# (RequestContext.snapshot).

from fastgate._core.router cimport Router
from fastgate._core.metrics cimport SharedMetrics
from fastgate._core.accesslog cimport AccessLog
from fastgate._core.tracing cimport Tracer


cdef class Snapshot:
    # Everything the hot path reads, compiled by fastgate.compile.snapshot from config.
    # Immutable once published; a reload builds a new one and swaps Worker.snapshot.
    cdef readonly Router router           # values are Routes
    cdef readonly list routes             # [Route] by Route.index
    cdef readonly list groups             # [UpstreamGroup]
    cdef readonly list route_series       # metrics slot per route index
    cdef readonly int unmatched_series    # metrics slot for requests no route matched
    cdef readonly AccessLog access_log    # or None
    cdef readonly tuple stage_logs        # (AccessLog,) of the stages' accessLogSettings, each once
    cdef readonly SharedMetrics metrics   # or None
    cdef readonly list trusted            # [ipaddress network] whose X-Forwarded-* are kept
    cdef readonly bytes via               # b"1.1 fastgate", or None for no Via
    cdef readonly dict responses          # gateway response type -> GatewayResponse (gateway-wide table)
    cdef readonly dict host_mounts        # lowercase host (custom domain) -> [Mount], longest prefix first
    cdef readonly dict host_rules         # lowercase host -> fastgate.phases.routing_rules.DomainRules,
                                          # tried before host_mounts
    cdef readonly dict api_mounts         # api id (bytes) -> [Mount] for "{id}.execute-api.*" hosts
    cdef readonly list any_mounts         # [Mount] on every other host, longest prefix first
    cdef readonly bint has_mounts         # any API is mounted (else routing is the top-level router alone)
    cdef readonly list stages             # [ApiStage] served, for /routes and metrics
    cdef readonly Tracer tracer           # fastgate._core.tracing.Tracer, or None (tracing off)
    cdef readonly object redis            # fastgate.phases.access.RedisLimits: throttles in Redis, or None
    cdef readonly object execution_log    # fastgate._core.execlog.ExecutionLog, or None
    cdef readonly object cache            # fastgate._core.cache.SharedCache of the host, or None
    cdef readonly object cache_redis      # fastgate.phases.cache_redis.CacheSharing: entries in Redis, or None
    cdef readonly Py_ssize_t max_url      # bytes, 414 past this
    cdef readonly Py_ssize_t max_head     # bytes of header section, 431 past this
    cdef readonly int max_headers         # 431 past this many header lines
    cdef readonly long long max_body      # bytes, 413; -1 = unlimited
    cdef readonly double header_timeout   # s
    cdef readonly double body_timeout     # s without a body byte
    cdef readonly double min_body_rate    # bytes/s a body must average once body_rate_grace has
                                          # passed; 0 = no minimum (a trickle is a slow POST attack)
    cdef readonly double body_rate_grace  # s before min_body_rate applies
    cdef readonly double body_deadline    # s for the whole body; 0 = none
    cdef readonly double keepalive_timeout  # s
    cdef readonly int keepalive_requests  # requests served per connection before closing it
    cdef readonly object source           # the config it was built from (for the control plane)
    cdef readonly object tls              # fastgate.compile.tls.TLSState: custom domains' certificates, or None
    cdef readonly dict mtls_hosts         # lowercase host / b"*.suffix" -> domain whose truststore must
                                          # have verified the client certificate (403 otherwise); None = none
    cdef readonly double rebuild_at_s     # epoch s at which it goes stale (an UpdateUsage grant ends):
                                          # the worker builds it again then; 0 = never
    cdef readonly object hooks            # the Python the core calls, handed down at compile time
                                          # (fastgate.compile.snapshot.CoreHooks: client certificates,
                                          # compression, mapping events); None = those features off
