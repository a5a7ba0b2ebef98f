# cython: boundscheck=False, wraparound=False
"""A function route's per-request conversions in compiled code (see fncall.pxd)."""

from urllib.parse import unquote

import base64
import hashlib
import time

# What the compiled events share with fastgate/phases/functions/events.py (the reference
# they are tested against), so the two cannot disagree on these.
DEFAULT_ACCOUNT_ID = "123456789012"   # AWS's own placeholder account in its samples

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# HTTP APIs send these Content-Types as text and base64-encode every other body,
# a missing Content-Type and application/x-www-form-urlencoded included (the
# documentation says only "binary"; this split was observed on real HTTP APIs).
_TEXT_TYPES_V2 = frozenset(("application/json", "application/xml", "application/javascript"))

# Header names a 1.0 event spells API Gateway's way whatever the client sent: LocalStack's
# AWS-validated recordings turn "authorization" into "Authorization", and live captures of
# HTTP/2 clients (whose names are all lower-case) show "Host" and "User-Agent".
AWS_SPELLING = {"authorization": "Authorization", "host": "Host", "user-agent": "User-Agent"}

def format_request_time(epoch_ms: int) -> str:
    """CLF time as AWS writes it, "09/Apr/2015:12:34:56 +0000", always UTC and
    English month names (strftime's %b follows the locale)."""
    t = time.gmtime(epoch_ms // 1000)
    return "%02d/%s/%04d:%02d:%02d:%02d +0000" % (
        t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


def media_type(content_type: bytes | None) -> str:
    if not content_type:
        return ""
    return content_type.decode("utf-8", "replace").split(";", 1)[0].strip().lower()


def query_pairs(raw_query: bytes) -> list[tuple[str, str]]:
    """Query parameters in order, decoded as a form is: "+" is a space, then %XX
    ("a+b" is "a b", "a%2Bb" is "a+b": AWS's recordings, REST and HTTP APIs alike);
    a key without "=" has the value ""."""
    pairs = []
    for part in raw_query.decode("utf-8", "replace").split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((unquote(key.replace("+", " ")), unquote(value.replace("+", " "))))
    return pairs


def trace_header(request_id: str, epoch_ms: int) -> str:
    """The X-Amzn-Trace-Id API Gateway adds to an event whose request came without one
    (AWS's recordings and captures carry one in every REST and HTTP API event): X-Ray's
    Root=1-{epoch seconds, 8 hex}-{24 hex}, the 24 digits derived from the request id so
    that one request has one trace id, whichever builder makes its event."""
    return "Root=1-%08x-%s" % (epoch_ms // 1000,
                               hashlib.blake2b(request_id.encode(), digest_size=12).hexdigest())


cpdef tuple forwarded_values(RequestContext ctx):
    """(X-Forwarded-For, X-Forwarded-Port, X-Forwarded-Proto) as API Gateway puts them in
    an event: whatever X-Forwarded-For the client sent, with the client's address
    appended (AWS appends; sourceIp is the address to trust), the listener's port and
    scheme (a trusted proxy's, as the HTTP integration sends them)."""
    cdef list chain = []
    cdef tuple pair
    for pair in ctx.headers:
        if len(<bytes>pair[0]) == 15 and (<bytes>pair[0]).lower() == b"x-forwarded-for":
            chain.append((<bytes>pair[1]).decode("latin-1").strip())
    chain.append(ctx.source_ip.decode("latin-1"))
    cdef bytes port = ctx.forwarded_port if ctx.forwarded_port is not None else \
        str(ctx.local_port).encode()
    cdef bytes proto = ctx.forwarded_proto if ctx.forwarded_proto is not None else \
        (b"https" if ctx.tls else b"http")
    return ", ".join(chain), port.decode("latin-1"), proto.decode("latin-1")


cdef long long _time_second = -1
cdef str _time_text = ""


cdef str request_time(long long epoch_ms):
    global _time_second, _time_text
    cdef long long second = epoch_ms // 1000
    if second != _time_second:
        _time_text = format_request_time(epoch_ms)
        _time_second = second
    return _time_text


cdef inline str _text(bytes value):
    # events._text: bytes that are not UTF-8 become U+FFFD, as AWS does
    return value.decode("utf-8", "replace")


# the headers event_v2 writes itself (events._own_headers)
_OWN_V2 = frozenset(("content-length", "x-forwarded-for", "x-forwarded-port", "x-forwarded-proto"))


cdef inline bint _is_host(bytes name):
    return len(name) == 4 and name.lower() == b"host"


cpdef dict event_v2(RequestContext ctx, bytes body):
    if ctx.auth is not None:
        return None
    cdef str domain = ctx.route_host.decode("latin-1")
    if not domain or ":" in domain or "[" in domain:
        return None
    cdef object api = ctx.api
    cdef list raw = ctx.upstream_headers if ctx.upstream_headers is not None else ctx.headers
    cdef dict headers = {}
    cdef list cookies = None
    cdef bytes content_type = None
    cdef tuple pair
    cdef str name, value, previous, part
    # function_request puts a Host first when the forwarded headers lack one
    for pair in raw:
        if _is_host(<bytes>pair[0]):
            break
    else:
        headers["host"] = _text(ctx.host)
    for pair in raw:
        name = _text(<bytes>pair[0]).lower()
        if name in _OWN_V2:
            continue        # API Gateway's own values, added below
        if content_type is None and name == "content-type":
            content_type = <bytes>pair[1]
        value = _text(<bytes>pair[1])
        if name == "cookie":
            # each cookie is one entry; the Cookie header itself is not sent
            if cookies is None:
                cookies = []
            for part in value.split(";"):
                part = part.strip()
                if part:
                    cookies.append(part)
            continue
        previous = headers.get(name)
        headers[name] = value if previous is None else previous + "," + value
    headers["content-length"] = str(len(body))
    forwarded = forwarded_values(ctx)
    headers["x-forwarded-for"] = forwarded[0]
    headers["x-forwarded-port"] = forwarded[1]
    headers["x-forwarded-proto"] = forwarded[2]
    if "x-amzn-trace-id" not in headers:
        headers["x-amzn-trace-id"] = trace_header(ctx.request_id.decode("latin-1"), ctx.request_time_ms)

    cdef dict query = None
    if ctx.query:
        query = {}
        for name, value in query_pairs(ctx.query):
            previous = query.get(name)
            query[name] = value if previous is None else previous + "," + value

    cdef str stage = api.stage if api is not None else "$default"
    # HTTP APIs percent-decode rawPath (events.build_event_v2)
    cdef str raw_path = unquote(_text(ctx.stage_path if ctx.stage_path is not None else ctx.path))
    if stage != "$default":
        raw_path = "/" + stage + raw_path
    cdef bytes ua = ctx.header(b"user-agent")
    cdef str user_agent = ua.decode("latin-1") if ua is not None else headers.get("user-agent", "")
    cdef str request_id = ctx.request_id.decode("latin-1")
    cdef str method = ctx.method.decode("latin-1")
    cdef str route_key = ctx.route.route_key
    cdef long long epoch = ctx.request_time_ms

    cdef dict event = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": _text(ctx.query),
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": DEFAULT_ACCOUNT_ID,
        "apiId": api.api_id if api is not None else "fastgate",
        "domainName": domain,
        "domainPrefix": domain.partition(".")[0],
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1" if ctx.http_minor == 1 else "HTTP/1.%d" % ctx.http_minor,
            "sourceIp": ctx.source_ip.decode("latin-1"),
            "userAgent": user_agent,
        },
        "requestId": request_id,
        "routeKey": route_key,
        "stage": stage,
        "time": request_time(epoch),
        "timeEpoch": epoch,
    }
    cdef bint encoded = False
    cdef str media
    if body:
        media = media_type(content_type)
        encoded = not (media.startswith("text/") or media in _TEXT_TYPES_V2)
        event["body"] = base64.b64encode(body).decode("ascii") if encoded else _text(body)
    if ctx.path_params:
        event["pathParameters"] = {(<bytes>k).decode("latin-1"): unquote((<bytes>v).decode("latin-1"))
                                   for k, v in ctx.path_params.items()}
    event["isBase64Encoded"] = encoded
    if api is not None and api.variables:
        event["stageVariables"] = dict(api.variables)
    return event


cdef inline bint _token(bytes name):
    # responses._name: non-empty, no CR, LF, ":", NUL or space (ASCII checked by the caller)
    cdef const unsigned char* p = name
    cdef Py_ssize_t i, n = len(name)
    if n == 0:
        return False
    for i in range(n):
        if p[i] == 13 or p[i] == 10 or p[i] == 58 or p[i] == 0 or p[i] == 32:
            return False
    return True


cdef inline bint _field_value(bytes value):
    # responses._value: no CR, LF or NUL (UTF-8 never makes these bytes from other characters)
    cdef const unsigned char* p = value
    cdef Py_ssize_t i, n = len(value)
    for i in range(n):
        if p[i] == 13 or p[i] == 10 or p[i] == 0:
            return False
    return True


cpdef tuple response_v2(object result):
    if type(result) is not dict:
        return None
    cdef dict d = <dict>result
    cdef Py_ssize_t known = 1
    status = d.get("statusCode")
    if type(status) is not int or not (200 <= status <= 599):
        return None      # (a 1xx is refused by the reference, which says why)
    cdef list out = []
    cdef bytes name_b, value_b
    headers = d.get("headers")
    if "headers" in d:
        known += 1
    if headers is not None:
        if type(headers) is not dict:
            return None
        for name, value in (<dict>headers).items():
            if type(name) is not str or type(value) is not str or not (<str>name).isascii():
                return None
            name_b = (<str>name).encode("ascii")
            value_b = (<str>value).encode("utf-8")
            if not _token(name_b) or not _field_value(value_b):
                return None
            out.append((name_b, value_b))
    body = d.get("body")
    if "body" in d:
        known += 1
        if body is not None and type(body) is not str:
            return None
    if "isBase64Encoded" in d:
        known += 1
        flag = d["isBase64Encoded"]
        if flag is not None and flag is not False:
            return None
    if known != len(d):
        return None      # cookies, or keys the reference ignores: it decides
    return status, out, (<str>body).encode("utf-8") if body is not None else b""
