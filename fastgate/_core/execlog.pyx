# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Execution logs per stage (OFF / ERROR / INFO), rate-limited; see execlog.pxd."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_AsUTF8AndSize

from fastgate._core.pipeline cimport RequestContext, ApiStage, Route
from fastgate._core.clock cimport monotonic_coarse
from fastgate._core.accesslog cimport AccessLog, FLUSH_AT
from fastgate._core.metrics cimport SharedMetrics, THROTTLE_USAGE_PLAN, THROTTLE_QUOTA

LEVELS = {"OFF": EXEC_OFF, "ERROR": EXEC_ERROR, "INFO": EXEC_INFO}
_LEVEL_TEXT = (b"", b'"ERROR"', b'"INFO"')
_THROTTLE_TEXT = (b'"usage_plan"', b'"method"', b'"gateway"', b'"quota"')   # index = ThrottleLevel


def parse_level(level):
    """ExecLevel of "OFF" | "ERROR" | "INFO" (any case) or of an ExecLevel int."""
    if isinstance(level, int) and EXEC_OFF <= level <= EXEC_INFO:
        return int(level)
    value = LEVELS.get(str(level).upper())
    if value is None:
        raise ValueError(f'execution log level must be OFF, ERROR or INFO, got {level!r}')
    return value


cdef class ExecutionLog:

    def __init__(self, str path, levels=None, default_level="OFF", *,
                 double rate_per_s=DEFAULT_RATE_PER_S, double burst=0, SharedMetrics metrics=None):
        """levels: {(api id, stage): "OFF"|"ERROR"|"INFO"}; default_level for
        requests outside any API stage. burst defaults to one second of rate."""
        if rate_per_s <= 0:
            raise ValueError(f"rate_per_s must be > 0, got {rate_per_s}")
        self.path = path
        self.levels = {}
        self.default_level = parse_level(default_level)
        self.enabled = self.default_level != EXEC_OFF
        for (api_id, stage), level in (levels or {}).items():
            self.set_level(api_id, stage, level)
        self.rate_per_s = rate_per_s
        self.burst = burst if burst > 0 else rate_per_s
        self.tokens = self.burst
        self.refilled_at = monotonic_coarse()
        self.metrics = metrics
        self.dropped_slot = -1
        if metrics is not None:
            self.dropped_slot = metrics.counter_series("fastgate_execution_log_dropped_total")
        # The access log's writer: buffer, thread, O_APPEND, PIPE_BUF cuts, reopen.
        self.out = AccessLog(path, "json")

    def set_level(self, str api_id, str stage, level):
        cdef int value = parse_level(level)
        self.levels.setdefault(api_id, {})[stage] = value
        if value != EXEC_OFF:
            self.enabled = True

    # --- hot path (loop thread) ---

    cpdef int level_of(self, ApiStage api):
        if api is None:
            return self.default_level
        stages = self.levels.get(api.api_id)
        if stages is None:
            return EXEC_OFF
        level = (<dict>stages).get(api.stage)
        return EXEC_OFF if level is None else <int>level

    cdef bint take(self, double now) noexcept:
        cdef double t = self.tokens + (now - self.refilled_at) * self.rate_per_s
        self.refilled_at = now
        if t > self.burst:
            t = self.burst
        if t < 1.0:
            self.tokens = t
            return False
        self.tokens = t - 1.0
        return True

    cpdef bint log(self, RequestContext ctx, int integration_status=0,
                   int throttle_level=-1) except -1:
        cdef int level = self.level_of(ctx.api)
        cdef AccessLog out = self.out
        cdef Route route = ctx.route
        cdef bint first
        if level == EXEC_OFF or out.closed:
            return False
        if level == EXEC_ERROR and ctx.status < 400:
            return False
        if not self.take(monotonic_coarse()):
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.counter_add(self.dropped_slot, 1)
            return False

        out.put(b'{"time":', 8)
        out.put_int(ctx.request_time_ms)
        self.put_key(b"level")
        out.put(PyBytes_AS_STRING(_LEVEL_TEXT[level]), PyBytes_GET_SIZE(_LEVEL_TEXT[level]))
        self.put_key(b"requestId")
        self.put_json_str(ctx.request_id)
        self.put_key(b"api")
        self.put_json_str(ctx.api.api_id if ctx.api is not None else None)
        self.put_key(b"stage")
        self.put_json_str(ctx.api.stage if ctx.api is not None else None)
        self.put_key(b"routeKey")
        self.put_json_str(route.route_key if route is not None else None)
        self.put_key(b"resourcePath")
        self.put_json_str(route.resource_path if route is not None else None)
        self.put_key(b"method")
        self.put_json_str(ctx.method)
        self.put_key(b"path")
        self.put_json_str(ctx.path)
        self.put_key(b"queryParams")
        self.put_query_names(ctx.query)
        self.put_key(b"requestHeaders")
        self.put_names(ctx.headers)
        self.put_key(b"apiKeyId")
        self.put_json_str(ctx.api_key_id)

        self.put_key(b"authorizer")
        if ctx.auth is not None:
            out.put(b'{"allowed":', 11)
            if getattr(ctx.auth, "allowed", False):
                out.put(b"true", 4)
            else:
                out.put(b"false", 5)
            out.put(b',"principalId":', 15)
            principal = getattr(ctx.auth, "principal_id", None)
            self.put_json_str(principal if isinstance(principal, (str, bytes)) else None)
            out.put(b"}", 1)
        else:
            out.put(b"null", 4)

        self.put_key(b"throttle")
        self.put_key_throttle(ctx, throttle_level)

        self.put_key(b"integration")
        if ctx.integration_start > 0:
            out.put(b'{"target":', 10)
            target = ctx.target
            self.put_json_str(getattr(target, "label", None) if target is not None else None)
            out.put(b',"status":', 10)
            if integration_status > 0:
                out.put_int(integration_status)
            else:
                out.put(b"null", 4)
            out.put(b',"latencyMs":', 13)
            self.put_ms(ctx.integration_latency())
            out.put(b',"attempts":', 12)
            out.put_int(ctx.attempts)
            out.put(b"}", 1)
        else:
            out.put(b"null", 4)

        self.put_key(b"transforms")
        out.put(b"[", 1)
        first = True
        if route is not None:
            if route.request_headers is not None:
                out.put(b'"requestHeaders"', 16)
                first = False
            if route.path_rewrite is not None:
                if not first:
                    out.put(b",", 1)
                out.put(b'"pathRewrite"', 13)
                first = False
            if route.response_headers is not None:
                if not first:
                    out.put(b",", 1)
                out.put(b'"responseHeaders"', 17)
        out.put(b"]", 1)

        self.put_key(b"status")
        out.put_int(ctx.status)
        self.put_key(b"latencyMs")
        self.put_ms(ctx.latency() if ctx.start > 0 else 0.0)
        self.put_key(b"requestLength")
        out.put_int(ctx.request_length)
        self.put_key(b"responseLength")
        out.put_int(ctx.response_length)
        self.put_key(b"errorType")
        self.put_json_str(ctx.error_type)
        self.put_key(b"errorMessage")
        self.put_json_str(ctx.error_message)
        out.put(b"}\n", 2)
        out.buf_lines += 1
        self.written += 1
        if out.buf_len >= FLUSH_AT:
            self.flush()
        return True

    cdef put_key_throttle(self, RequestContext ctx, int throttle_level):
        cdef AccessLog out = self.out
        cdef str et = ctx.error_type
        cdef int level = -1
        if et == "THROTTLED":
            level = throttle_level if throttle_level >= 0 else THROTTLE_USAGE_PLAN
        elif et == "QUOTA_EXCEEDED":
            level = THROTTLE_QUOTA
        if level < 0 or level >= len(_THROTTLE_TEXT):
            out.put(b'null,"throttleLevel":null', 25)
            return
        self.put_json_str(et)
        out.put(b',"throttleLevel":', 17)
        out.put(PyBytes_AS_STRING(_THROTTLE_TEXT[level]), PyBytes_GET_SIZE(_THROTTLE_TEXT[level]))

    cdef int put_key(self, const char* key) except -1:
        cdef Py_ssize_t n = 0
        while key[n]:
            n += 1
        self.out.put(b',"', 2)
        self.out.put(key, n)
        return self.out.put(b'":', 2)

    cdef int put_json_str(self, object value) except -1:
        cdef Py_ssize_t n
        cdef const char* p
        if value is None:
            return self.out.put(b"null", 4)
        if isinstance(value, bytes):
            p = PyBytes_AS_STRING(value)
            n = PyBytes_GET_SIZE(value)
        else:
            p = PyUnicode_AsUTF8AndSize(<str>value, &n)
        self.out.put(b'"', 1)
        self.out.put_escaped(<const unsigned char*>p, n)
        return self.out.put(b'"', 1)

    cdef int put_names(self, list headers) except -1:
        cdef bint first = True
        self.out.put(b"[", 1)
        if headers is not None:
            for pair in headers:
                if not first:
                    self.out.put(b",", 1)
                self.put_json_str((<tuple>pair)[0])
                first = False
        return self.out.put(b"]", 1)

    cdef int put_query_names(self, bytes query) except -1:
        # Names only, straight from the raw bytes: a=1&b&c=x -> ["a","b","c"].
        cdef const unsigned char* p
        cdef Py_ssize_t n, i = 0, start, end
        cdef bint first = True
        self.out.put(b"[", 1)
        if query is not None:
            p = <const unsigned char*>PyBytes_AS_STRING(query)
            n = PyBytes_GET_SIZE(query)
            while i < n:
                start = i
                while i < n and p[i] != b'&':
                    i += 1
                end = start
                while end < i and p[end] != b'=':
                    end += 1
                if end > start:
                    if not first:
                        self.out.put(b",", 1)
                    self.out.put(b'"', 1)
                    self.out.put_escaped(p + start, end - start)
                    self.out.put(b'"', 1)
                    first = False
                i += 1
        return self.out.put(b"]", 1)

    cdef int put_ms(self, double seconds) except -1:
        cdef long long us = <long long>(seconds * 1e6 + 0.5)
        cdef char frac[4]
        if us < 0:
            us = 0
        self.out.put_int(us // 1000)
        frac[0] = b'.'
        frac[1] = <char>(48 + (us % 1000) // 100)
        frac[2] = <char>(48 + (us % 100) // 10)
        frac[3] = <char>(48 + us % 10)
        return self.out.put(frac, 4)

    # --- control (loop thread) ---

    def flush(self):
        """Hand buffered lines to the writer (call it where AccessLog.flush is called)."""
        self.out.flush()
        cdef long long lost = self.out.dropped_lines - self.writer_dropped_seen
        if lost > 0 and self.metrics is not None:
            self.metrics.counter_add(self.dropped_slot, lost)
        self.writer_dropped_seen = self.out.dropped_lines

    def start_timer(self, loop, double interval_s=1.0):
        self.out.start_timer(loop, interval_s)

    def reopen(self):
        self.out.reopen()

    def close(self):
        self.flush()
        self.out.close()

    @property
    def writer_dropped(self):
        """Lines lost because the writer fell 64 MiB behind."""
        return self.out.dropped_lines

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
