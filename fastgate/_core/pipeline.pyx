# cython: language_level=3, boundscheck=False, wraparound=False
"""Per-request context and compiled routes; see pipeline.pxd for the map."""

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memchr

from fastgate._core.clock cimport monotonic


cdef bint ascii_ieq(bytes a, bytes lower_b):
    """a equals lower_b ignoring ASCII case; lower_b must already be lowercase."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(a), i
    if n != PyBytes_GET_SIZE(lower_b):
        return False
    cdef const unsigned char* pa = <const unsigned char*>PyBytes_AS_STRING(a)
    cdef const unsigned char* pb = <const unsigned char*>PyBytes_AS_STRING(lower_b)
    cdef unsigned char c
    for i in range(n):
        c = pa[i]
        if 65 <= c <= 90:
            c += 32
        if c != pb[i]:
            return False
    return True


cdef unsigned long long _rng_state = 0x9E3779B97F4A7C15


cdef inline double random_percent() noexcept nogil:
    """PERF: xorshift64*, no Python call per canary decision; [0, 100)."""
    global _rng_state
    cdef unsigned long long x = _rng_state
    x ^= x >> 12
    x ^= x << 25
    x ^= x >> 27
    _rng_state = x
    return <double>((x * 0x2545F4914F6CDD1DULL) >> 11) * (100.0 / 9007199254740992.0)


def seed_random(unsigned long long seed):
    """Per-process seed (each forked worker calls it, so workers do not share a sequence)."""
    global _rng_state
    _rng_state = seed or 0x9E3779B97F4A7C15


cdef class ApiStage:
    def __init__(self, *, str api_id, str api_name="", str stage, str deployment_id="",
                 bint rest=True, bint is_canary=False, router=None, dict responses=None,
                 dict variables=None, cors=None, long long min_compress=-1, access_log=None,
                 bint access_log_only=False):
        self.api_id = api_id
        self.api_name = api_name
        self.stage = stage
        self.deployment_id = deployment_id
        self.rest = rest
        self.is_canary = is_canary
        self.router = router
        self.responses = responses if responses is not None else {}
        self.variables = variables if variables is not None else {}
        self.cors = cors
        self.min_compress = min_compress
        self.stage_b = stage.encode()
        self.api_id_b = api_id.encode()
        self.access_log = access_log
        self.access_log_only = access_log_only

    def __repr__(self):
        return f"<ApiStage {self.api_id}/{self.stage}{' canary' if self.is_canary else ''}>"


cdef class Mount:
    def __init__(self, bytes prefix, ApiStage main, ApiStage canary=None,
                 double canary_percent=0.0, str source=""):
        self.prefix = prefix
        self.main = main
        self.canary = canary
        self.canary_percent = canary_percent if canary is not None else 0.0
        self.source = source

    cdef ApiStage pick(self):
        if self.canary_percent > 0.0 and random_percent() < self.canary_percent:
            return self.canary
        return self.main

    def pick_stage(self):
        """pick() for tests."""
        return self.pick()

    def __repr__(self):
        return f"<Mount {self.prefix!r} -> {self.main!r}>"


cdef class GatewayResponse:
    def __init__(self, str response_type, int status, str message, bytes error_type=b"",
                 list headers=None, body=None, bint customised=False):
        self.response_type = response_type
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers if headers is not None else []
        self.body = body
        self.customised = customised

    def __repr__(self):
        return f"<GatewayResponse {self.response_type} {self.status}>"


cdef class Route:
    def __init__(self, *, int index=0, str route_key="", str host="*",
                 int integration=INTEGRATION_HTTP, upstream=None,
                 request_headers=None, response_headers=None, path_rewrite=None,
                 int mock_status=200, list mock_headers=None, mock_body=None, mock_vtl=None, http_map=None,
                 response_map=None,
                 double connect_timeout=5.0, double first_byte_timeout=60.0,
                 double total_timeout=0.0, long long max_body_size=-1,
                 int retries=1, bint retry_non_idempotent=False, ApiStage api=None,
                 str resource_path="", str function_name=None, bint payload_v2=False,
                 tuple binary_media_types=(), tuple limiters=(), access=None, validator=None,
                 query_mapping=None, bint drop_query=False, cache=None, key_gate=None,
                 runner=None, websocket=None):
        self.index = index
        self.route_key = route_key
        self.host = host
        self.integration = integration
        self.upstream = upstream
        self.request_headers = request_headers
        self.response_headers = response_headers
        self.path_rewrite = path_rewrite
        self.mock_status = mock_status
        self.mock_headers = mock_headers if mock_headers is not None else []
        self.mock_body = mock_body
        self.mock_vtl = mock_vtl
        self.http_map = http_map
        self.response_map = response_map
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.total_timeout = total_timeout
        self.max_body_size = max_body_size
        self.retries = retries
        self.retry_non_idempotent = retry_non_idempotent
        self.api = api
        self.resource_path = resource_path
        self.function_name = function_name
        self.payload_v2 = payload_v2
        self.binary_media_types = binary_media_types
        self.limiters = limiters
        self.access = access
        self.key_gate = key_gate
        self.validator = validator
        self.query_mapping = query_mapping
        self.drop_query = drop_query
        self.cache = cache
        self.runner = runner
        self.websocket = websocket

    def __repr__(self):
        return f"<Route {self.index} {self.route_key!r} host={self.host!r}>"


@cython.freelist(64)
cdef class RequestContext:
    def __cinit__(self):
        self.content_length = -1
        self.method = b""
        self.path = b"/"
        self.query = b""
        self.host = b""
        self.route_host = b""
        self.source_ip = b""
        self.client_ip = b""
        self.request_id = b""
        self.forwarded_for = b""
        self.throttle_level = -1
        self.head_mark = -1

    cpdef bytes header(self, bytes lower_name):
        """First value of a request header, by lowercase name; None when absent."""
        cdef tuple pair
        if self.headers is None:
            return None
        for pair in self.headers:
            if ascii_ieq(<bytes>pair[0], lower_name):
                return <bytes>pair[1]
        return None

    cpdef bytes query_param(self, bytes name):
        """First raw (still percent-encoded) value of a query parameter; None when absent."""
        cdef bytes q = self.query
        cdef Py_ssize_t n = len(q), nl = len(name), i = 0, j, eq
        while i <= n:
            j = q.find(b"&", i)
            if j < 0:
                j = n
            eq = i + nl
            if eq <= j and q[i:eq] == name:
                if eq == j:
                    return b""
                if q[eq] == 61:  # '='
                    return q[eq + 1:j]
            i = j + 1
        return None

    cpdef bytes path_param(self, bytes name):
        if self.path_params is None:
            return None
        return self.path_params.get(name)

    cpdef double latency(self):
        """Seconds from the first request byte to the last response byte (responseLatency)."""
        if self.end <= 0:
            return monotonic() - self.start
        return self.end - self.start

    cpdef double integration_latency(self):
        if self.integration_start <= 0:
            return 0.0
        if self.integration_end <= 0:
            return monotonic() - self.integration_start
        return self.integration_end - self.integration_start
