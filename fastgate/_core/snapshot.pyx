# cython: language_level=3
"""The immutable snapshot the hot path reads; snapshot.pxd is the map of this file."""

from fastgate._core.responses import default_gateway_responses
from fastgate._core.upstream cimport Target, UpstreamGroup


cdef class Snapshot:
    def __init__(self, *, router, list routes, list groups=None, list route_series=None,
                 int unmatched_series=-1, access_log=None, tuple stage_logs=(), metrics=None, list trusted=None,
                 via="fastgate", dict responses=None, Py_ssize_t max_url=8192,
                 Py_ssize_t max_head=32768, int max_headers=100, long long max_body=10485760,
                 double header_timeout=10.0, double body_timeout=60.0, double min_body_rate=500.0,
                 double body_rate_grace=20.0, double body_deadline=0.0,
                 double keepalive_timeout=75.0, int keepalive_requests=10000, source=None,
                 dict host_mounts=None, dict host_rules=None, dict api_mounts=None, list any_mounts=None, list stages=None,
                 Tracer tracer=None, redis=None, execution_log=None, cache=None,
                 tls=None, cache_redis=None, double rebuild_at_s=0.0, hooks=None):
        self.router = router
        self.routes = routes
        self.groups = groups if groups is not None else []
        self.route_series = route_series if route_series is not None else [-1] * len(routes)
        self.unmatched_series = unmatched_series
        self.access_log = access_log
        self.stage_logs = stage_logs
        self.metrics = metrics
        self.trusted = trusted if trusted is not None else []
        self.via = (b"1.1 " + via.encode()) if via else None
        self.responses = default_gateway_responses()
        if responses:
            self.responses.update(responses)
        self.host_mounts = host_mounts if host_mounts is not None else {}
        self.host_rules = host_rules if host_rules is not None else {}
        self.api_mounts = api_mounts if api_mounts is not None else {}
        self.any_mounts = any_mounts if any_mounts is not None else []
        self.has_mounts = bool(self.host_mounts or self.api_mounts or self.any_mounts)
        self.stages = stages if stages is not None else []
        self.tracer = tracer
        self.redis = redis
        self.execution_log = execution_log
        self.cache = cache
        self.cache_redis = cache_redis if cache is not None else None
        self.tls = tls
        self.mtls_hosts = tls.mtls_hosts if tls is not None and tls.mtls_hosts else None
        self.max_url = max_url
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_body = max_body
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.min_body_rate = min_body_rate
        self.body_rate_grace = body_rate_grace
        self.body_deadline = body_deadline
        self.keepalive_timeout = keepalive_timeout
        self.keepalive_requests = keepalive_requests
        self.source = source
        self.rebuild_at_s = rebuild_at_s
        self.hooks = hooks

    def retire(self):
        """Called when a newer snapshot replaced this one: pool no more connections."""
        for g in self.groups:
            for t in (<UpstreamGroup>g).targets:
                (<Target>t).close_idle()
