# A function route's per-request conversions, compiled: API Gateway's payload
# 2.0 event built from the RequestContext, and the common 2.0 result read back.
#
# fastgate/phases/functions/events.py and responses.py are the reference and serve
# every case declined here (these return None and the caller falls back to
# them); tests/core/test_fncall.py holds the two to the same output.
#
# PERF: bench/wrk_functions.py. The interpreted path (FunctionRequest, the
# generic builder, the full AWS rules for a result) was ~40 % of the gateway
# worker's interpreter time per function request.

from fastgate._core.pipeline cimport RequestContext

cpdef dict event_v2(RequestContext ctx, bytes body)
    # The 2.0 event of ctx's request, or None when an access check left an
    # authorizer result (events.build_event_v2 shapes those), or the Host is
    # not a plain name (a literal IPv6 address, a port left in).

# trace_header(request_id, epoch_ms): the X-Amzn-Trace-Id an event gets when the request
# has none (a def: events.py's builders use it too).

cpdef tuple forwarded_values(RequestContext ctx)
    # (X-Forwarded-For, X-Forwarded-Port, X-Forwarded-Proto) as an event carries them:
    # the client's X-Forwarded-For with its address appended, the listener's port and
    # scheme. events.py's builders take it through FunctionRequest.forwarded.

cpdef tuple response_v2(object result)
    # (status, [(name, value)], body) for the usual result -- a dict with an
    # int statusCode, headers str -> str, a str (or null) body, isBase64Encoded
    # false or absent, and no other key -- or None: responses.parse_response_v2
    # then reads it with every AWS rule (and its errors).

cdef str request_time(long long epoch_ms)
    # events.format_request_time, computed once per second
