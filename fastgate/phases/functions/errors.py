"""How a function integration fails, and what the client then gets.

Every failure below the gateway is a :class:`FunctionError` with a ``kind``;
:func:`error_response` turns it (or a :class:`ResponseError` from the result
parsers) into the status, JSON body and gateway response type Amazon API
Gateway answers with.  The type names are the keys of the data plane's
GATEWAY_RESPONSES table, so a customised gateway response applies here too.
"""

from __future__ import annotations

from fastgate.phases.functions.responses import ResponseError

__all__ = ["FunctionError", "KINDS", "error_response"]

# kind -> (REST status, REST message, gateway response type), one line per kind:
KINDS = {
    # the handler raised; Lambda's "Unhandled" function error
    "raised": (502, "Internal server error", "INTEGRATION_FAILURE"),
    # the function ran past its own timeout_ms (Lambda's "Task timed out")
    "function_timeout": (502, "Internal server error", "INTEGRATION_FAILURE"),
    # the integration timeout ran out first: API Gateway's own 504
    "timeout": (504, "Endpoint request timed out", "INTEGRATION_TIMEOUT"),
    # the handler process exited or was killed mid-call
    "crashed": (502, "Internal server error", "INTEGRATION_FAILURE"),
    # the handler ran out of memory_mb (Lambda's Runtime.OutOfMemory)
    "memory": (502, "Internal server error", "INTEGRATION_FAILURE"),
    # the result could not be serialised or exceeds Lambda's 6 MB response limit
    "malformed": (502, "Internal server error", "INTEGRATION_FAILURE"),
    # every process busy and the queue full: Lambda's 429 throttle, which
    # API Gateway answers with a 500, not a 429
    "throttled": (500, "Internal server error", "DEFAULT_5XX"),
    # the Lambda service refused the call (remote functions: 4xx/5xx from Invoke)
    "service": (500, "Internal server error", "DEFAULT_5XX"),
}

# HTTP APIs answer every integration failure with 500 "Internal Server Error"
# (capital S) and an integration timeout with 503 "Service Unavailable".
_HTTP_API_FAILURE = (500, "Internal Server Error", "INTEGRATION_FAILURE")
_HTTP_API_TIMEOUT = (503, "Service Unavailable", "INTEGRATION_TIMEOUT")


class FunctionError(Exception):
    """A function call that produced no usable result.

    ``kind`` is a key of :data:`KINDS`; ``detail`` is for the gateway's log,
    never the client.  ``error`` is Lambda's error object when the handler
    raised: ``{"errorType", "errorMessage", "stackTrace"}``.
    """

    def __init__(self, kind: str, detail: str, error: dict | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown FunctionError kind {kind!r}")
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.error = error


def error_response(err: FunctionError | ResponseError, *, http_api: bool = False
                   ) -> tuple[int, bytes, str]:
    """(status, JSON body, gateway response type) for a failed function call.

    ``http_api`` selects HTTP API answers instead of REST API ones.
    """
    if isinstance(err, ResponseError):
        status, message, kind = _HTTP_API_FAILURE if http_api else KINDS["malformed"]
    elif http_api:
        status, message, kind = _HTTP_API_TIMEOUT if err.kind == "timeout" else _HTTP_API_FAILURE
    else:
        status, message, kind = KINDS[err.kind]
    return status, b'{"message": "%s"}' % message.encode(), kind
