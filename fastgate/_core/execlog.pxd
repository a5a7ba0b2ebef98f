# Execution logs: API Gateway's per-stage "CloudWatch execution logging"
# (OFF / ERROR / INFO), one JSON line per request that says what the gateway
# decided, for debugging a stage, not for billing or audit (that is the access
# log and usage).
#
# Levels, per (api id, stage), as API Gateway's stage setting loggingLevel:
#   OFF    nothing
#   ERROR  requests that ended with a status >= 400
#   INFO   every request
#
# One line (all keys always present; null when not applicable):
#   {"time": epoch ms, "level": "INFO"|"ERROR", "requestId", "api", "stage",
#    "routeKey", "resourcePath", "method", "path",
#    "queryParams": [names only], "requestHeaders": [names only],
#    "apiKeyId": the key's id (never its value),
#    "authorizer": {"allowed": bool, "principalId": str|null} | null,
#    "throttle": "THROTTLED"|"QUOTA_EXCEEDED"|null, "throttleLevel": "usage_plan"|...|null,
#    "integration": {"target": "host:port"|null, "status": int|null, "latencyMs": float,
#                    "attempts": int} | null,
#    "transforms": ["requestHeaders", "pathRewrite", "responseHeaders"] (those the route applies),
#    "status", "latencyMs", "requestLength", "responseLength",
#    "errorType", "errorMessage"}
#
# Never a secret: header and query VALUES are not logged at all (only their
# names), so Authorization, Cookie, x-api-key, X-Amz-Security-Token and tokens
# in query strings cannot leak; the authorizer outcome is its principal id only
# (no context, no claims); the API key appears as its id.
#
# Rate limit: a token bucket per process (rate_per_s lines/s, burst lines).
# A line over the limit is dropped and counted (`dropped`, and
# fastgate_execution_log_dropped_total when metrics are attached); log() never
# blocks and never waits for the disk.
#
# Writing: the lines go through an AccessLog's buffer and writer thread (same
# destination rules: a file path or "-" for stdout, O_APPEND, reopen on SIGUSR1,
# 64 MiB writer backlog before dropping). Create it after fork, like AccessLog.

from fastgate._core.pipeline cimport RequestContext, ApiStage
from fastgate._core.accesslog cimport AccessLog
from fastgate._core.metrics cimport SharedMetrics

cpdef enum ExecLevel:
    EXEC_OFF = 0                      # no line
    EXEC_ERROR = 1                    # a line for status >= 400
    EXEC_INFO = 2                     # a line for every request

cdef enum:
    DEFAULT_RATE_PER_S = 1000         # lines/s per process before lines are dropped


cdef class ExecutionLog:
    cdef readonly str path            # file path, or "-" for stdout
    cdef AccessLog out                # its buffer and writer thread (JSON escaping)
    cdef dict levels                  # api id -> {stage -> ExecLevel int}
    cdef readonly int default_level   # requests without an API stage (top-level routes, no match)
    cdef readonly bint enabled        # some level is not OFF (else the caller may skip log())

    # token bucket, loop thread only
    cdef readonly double rate_per_s   # lines/s
    cdef readonly double burst        # lines
    cdef double tokens
    cdef double refilled_at           # monotonic s of the last refill

    cdef readonly long long dropped   # lines dropped by the rate limit
    cdef readonly long long written   # lines handed to the buffer
    cdef long long writer_dropped_seen  # out.dropped_lines already added to the metric
    cdef SharedMetrics metrics        # or None
    cdef int dropped_slot             # fastgate_execution_log_dropped_total, or -1

    cpdef int level_of(self, ApiStage api)            # ExecLevel of a request's stage (None: default)
    cpdef bint log(self, RequestContext ctx, int integration_status=*,
                   int throttle_level=*) except -1
                                      # the request's line if its stage's level asks for it and the
                                      # bucket has a token; True when a line was written.
                                      # integration_status: the upstream's status (0 = unknown);
                                      # throttle_level: a metrics.ThrottleLevel (-1 = derive)
    cdef bint take(self, double now) noexcept       # one token from the bucket
    cdef put_key_throttle(self, RequestContext ctx, int throttle_level)   # "throttle" value and "throttleLevel"
    cdef int put_json_str(self, object value) except -1   # str | bytes | None -> "..." | null
    cdef int put_key(self, const char* key) except -1     # ,"key": (no comma before the first)
    cdef int put_names(self, list headers) except -1      # ["name", ...] of (name, value) pairs
    cdef int put_query_names(self, bytes query) except -1 # ["name", ...] of a raw query string
    cdef int put_ms(self, double seconds) except -1       # milliseconds with 3 decimals
