# cython: language_level=3, boundscheck=False, wraparound=False
"""The response phase; respond.pxd is the map of this file."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

import orjson

from fastgate._core.accesslog cimport AccessLog
from fastgate._core.buffers cimport Buf, buf_bytes, buf_put
from fastgate._core.cache cimport SharedCache, RouteCache
from fastgate._core.execlog cimport ExecutionLog
from fastgate._core.fields cimport (
    H_CONNECTION, H_CONTENT_LENGTH, H_DATE, H_UPGRADE, classify, classify_ptr, chunk_frame,
    connection_tokens_ptr, drop_named, forwarded_response_header,
)
from fastgate._core.headers cimport HeaderTransform, Template
from fastgate._core.clock cimport event_epoch_ms, event_time, monotonic_coarse
from fastgate._core.pipeline cimport (
    RequestContext, Route, GatewayResponse,
    BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_CLOSE,
)
from fastgate._core.responses cimport status_line
from fastgate._core.responses import PROTOCOL_ERRORS
from fastgate._core.runtime cimport Downstream, Worker, CORK_DIRECT
from fastgate._core.snapshot cimport Snapshot
from fastgate._core.tail cimport record_finished
from fastgate._core.tracing cimport Trace


cdef inline int put(Buf* b, bytes s) except -1:
    return buf_bytes(b, s)


cdef bytes cache_head_of(list headers):
    """The header lines a cache entry keeps: not Date (a hit gets its own) and not
    Content-Length (respond() writes the hit's; two would be a response a proxy rejects)."""
    cdef tuple pair
    cdef int kind
    cdef list out = []
    for pair in headers:
        kind = classify(<bytes>pair[0])
        if kind != H_DATE and kind != H_CONTENT_LENGTH:
            out.append(<bytes>pair[0] + b": " + <bytes>pair[1] + b"\r\n")
    return b"".join(out)


cdef inline bint without_body(RequestContext ctx, int status) noexcept:
    return ctx.method == b"HEAD" or status == 204 or status == 304 or status < 200


cdef class Responder:
    def __init__(self, Downstream down):
        self.down = down
        self.worker = down.worker

    # --- responses the gateway makes ---------------------------------------------------

    cdef void respond(self, RequestContext ctx, int status, list headers, bytes body):
        """A complete response the gateway makes itself."""
        cdef Route route = ctx.route
        if route is not None and route.response_headers is not None:
            headers = (<HeaderTransform>route.response_headers).apply(headers, ctx)
        if route is not None and ctx.api is not None and ctx.api.cors is not None:
            # (a preflight answered before routing carries its own CORS headers)
            headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        if ctx.api is not None and ctx.api.min_compress >= 0 and status == 200 and body and \
                ctx.header(b"accept-encoding") is not None:
            body, headers = self.compress_whole(ctx, headers, body)
        ctx.status = status
        ctx.responding = True
        self.keep_alive_decision(ctx)
        self.write_head(ctx, status, headers, PyBytes_GET_SIZE(body))
        if not without_body(ctx, status):
            self.down.send(body)
            ctx.response_length = PyBytes_GET_SIZE(body)
        self.done(ctx)

    cdef void respond_integration(self, RequestContext ctx, int status, list headers, bytes body):
        """An integration's whole response (a function's, or a proxied one held whole for
        its mapping): through the route's response parameter mapping, then respond()."""
        cdef Route route = ctx.route
        if route is not None and route.response_map is not None:
            try:
                status, headers = route.response_map.apply(ctx, status, headers, body)
            except Exception as e:
                self.respond_error(ctx, "DEFAULT_5XX", "responseParameters: %r" % (e,))
                return
        self.respond(ctx, status, headers, body)

    cdef void respond_error(self, RequestContext ctx, str error_type, str detail, int status=-1):
        """A gateway response: the API's table when an API stage matched, else the gateway's.
        status: what this failure answers when the API did not customise the type (a failed
        integration answers 502 though INTEGRATION_FAILURE's default is 504, as on AWS)."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef dict table = ctx.api.responses if ctx.api is not None else snap.responses
        cdef GatewayResponse gr = table.get(error_type)
        cdef list headers
        cdef bytes body
        if gr is None:
            gr = table.get("DEFAULT_5XX")
        if status < 0 or gr.customised:
            status = gr.status
        self.down.release_upstream()
        ctx.error_type = error_type
        if detail:
            # what failed (an upstream's address, a template's exception) is for the access and
            # execution logs ($context.error.message, errorMessage), never the client: AWS's
            # bodies carry only the type's message
            ctx.error_message = detail
        headers = [(b"Content-Type", b"application/json")]
        if ctx.api is not None and ctx.api.rest and gr.error_type:
            headers.append((b"x-amzn-ErrorType", ctx.error_code or gr.error_type))
        ctx.error_code = None
        if ctx.error_headers is not None:
            headers.extend(ctx.error_headers)
            ctx.error_headers = None
        body = None
        if gr.headers or gr.body is not None:
            # a customised response renders $context.error.message as AWS does: the type's message
            logged = ctx.error_message
            ctx.error_message = gr.message
            for pair in gr.headers or ():
                headers.append((<bytes>pair[0], (<Template>pair[1]).render(ctx)))
            if gr.body is not None:
                body = (<Template>gr.body).render(ctx)
            ctx.error_message = logged
        if body is None:
            # AWS's own body for this denial (an authorizer's message), else the type's message
            body = ctx.error_body if ctx.error_body is not None else orjson.dumps({"message": gr.message})
        ctx.error_body = None
        if error_type in PROTOCOL_ERRORS:
            self.down.close_after = True
        self.respond(ctx, status, headers, body)

    cdef void respond_result(self, RequestContext ctx, object result):
        """What a mapping (fastgate.phases.vtl) made: (status, headers, body), or the gateway
        response type it chose."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        if isinstance(result, str):
            self.respond_error(ctx, result, ctx.error_message)
            return
        if ctx.cache_key is not None and snap.cache is not None and result[0] == 200:
            # an http (non-proxy) integration's stage cache holds the mapped response
            self.store_cached(ctx, 200, cache_head_of(result[1]), result[2])
        if ctx.cache_result == 2:
            self.respond(ctx, result[0], result[1] + [(b"X-Cache", b"Miss")], result[2])
            return
        self.respond(ctx, result[0], result[1], result[2])

    cdef tuple compress_whole(self, RequestContext ctx, list headers, bytes body):
        """A gateway-made body (mock, function) compressed when the API and client agree."""
        cdef tuple pair
        hooks = (<Snapshot>ctx.snapshot).hooks
        if hooks is None:
            return body, headers
        ctype = None
        for pair in headers:
            if (<bytes>pair[0]).lower() == b"content-type":
                ctype = pair[1]
            elif (<bytes>pair[0]).lower() == b"content-encoding":
                return body, headers
        enc = hooks.choose_encoding(ctx.header(b"accept-encoding"))
        if enc is None or not hooks.should_compress(ctype, len(body), ctx.api.min_compress, False):
            return body, headers
        headers = headers + [(b"Content-Encoding", enc.encode()), (b"Vary", b"Accept-Encoding")]
        return hooks.compress_body(enc, body), headers

    # --- a proxied response ----------------------------------------------------------------

    cdef void relay_head(self, RequestContext ctx, Http1Parser p, int status):
        """The response head the upstream's parser just completed, through the response
        phase: Connection-named headers dropped, transforms, cache fill, compression, CORS."""
        cdef Route route = ctx.route
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef Downstream down = self.down
        cdef Buf* h = &self.worker.head
        cdef int i, n = p.msg.n_headers
        cdef tuple pair
        cdef list headers = None
        cdef list conn_tokens = None
        cdef char num[4]
        cdef bint has_length = p.msg.content_length >= 0 and not p.msg.chunked
        cdef bint has_date = False
        cdef int kind
        cdef int kinds[RESPONSE_MAX_HEADERS]   # each header classified once, used twice below
        cdef bint no_body = without_body(ctx, status)
        ctx.responding = True
        ctx.status = status
        for i in range(n):
            kinds[i] = classify_ptr(p.name_ptr(i), p.name_len(i))
            if kinds[i] == H_CONNECTION:
                conn_tokens = connection_tokens_ptr(p.value_ptr(i), p.value_len(i), conn_tokens)
        cdef bint may_compress = (ctx.api is not None and ctx.api.min_compress >= 0 and not no_body
                                  and status == 200 and ctx.header(b"accept-encoding") is not None)
        if conn_tokens is not None or route.response_headers is not None or may_compress or \
                ctx.cache_key is not None or (ctx.api is not None and ctx.api.cors is not None):
            # slow path: headers as objects, for Connection-named removal, transforms, CORS
            headers = []
            for i in range(n):
                if forwarded_response_header(kinds[i]):
                    headers.append((p.name_bytes(i), p.value_bytes(i)))
            if conn_tokens is not None:
                headers = drop_named(headers, conn_tokens)
            if route.response_headers is not None:
                headers = (<HeaderTransform>route.response_headers).apply(headers, ctx)
            if ctx.cache_key is not None:
                self.start_cache_fill(ctx, status, p.msg.content_length, headers)
            if may_compress:
                headers = self.start_compression(ctx, headers, p.msg.content_length if has_length else -1)
                if ctx.compressor is not None:
                    has_length = False      # the compressed length is not known yet: chunked
            if ctx.api is not None and ctx.api.cors is not None:
                headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        self.keep_alive_decision(ctx)
        if status == 101 or no_body:
            ctx.body_mode = BODY_NONE
        elif has_length:
            ctx.body_mode = BODY_LENGTH
        elif ctx.http_minor == 1:
            ctx.body_mode = BODY_CHUNKED
        else:
            ctx.body_mode = BODY_CLOSE
            down.close_after = True
        h.len = 0
        put(h, b"HTTP/1.1 ")
        num[0] = <char>(48 + (status // 100) % 10)   # llhttp guarantees 3 digits
        num[1] = <char>(48 + (status // 10) % 10)
        num[2] = <char>(48 + status % 10)
        num[3] = b' '
        buf_put(h, num, 4)
        buf_put(h, p.msg.buf + p.msg.reason_off, p.msg.reason_len)
        buf_put(h, "\r\n", 2)
        if headers is None:
            # PERF: header lines copied from the parser's buffer, no objects
            # (bench/wrk_compare.py, scenario keepalive)
            for i in range(n):
                kind = kinds[i]
                if kind == H_DATE:
                    has_date = True
                if forwarded_response_header(kind):
                    buf_put(h, p.name_ptr(i), p.name_len(i))
                    buf_put(h, ": ", 2)
                    buf_put(h, p.value_ptr(i), p.value_len(i))
                    buf_put(h, "\r\n", 2)
        else:
            for pair in headers:
                if classify(<bytes>pair[0]) == H_DATE:
                    has_date = True
                put(h, <bytes>pair[0])
                put(h, b": ")
                put(h, <bytes>pair[1])
                put(h, b"\r\n")
        self.head_tail(ctx, status, has_date)
        down.send_ptr(h.p, h.len, None)
        # while the head sits in the cork buffer, take_back_head() can still unsay it
        ctx.head_mark = down.cork_mark() - h.len if down.corked and h.len < CORK_DIRECT \
            and not down.lingering else -1

    cdef bint relays_raw(self, RequestContext ctx):
        return ctx.map_parts is None and ctx.cache_parts is None and ctx.compressor is None

    cdef void relay(self, RequestContext ctx, const char* p, Py_ssize_t n, bytes whole):
        """Send n body bytes at p to the client in its framing (whole: the same bytes as an
        object, or None). relay_data() ends here; a body with no cache fill or compression
        comes here straight from the upstream parser's buffer."""
        if n == 0 or ctx.body_mode == BODY_NONE:
            return
        ctx.response_length += n
        if ctx.body_mode == BODY_CHUNKED:
            self.down.send(chunk_frame(whole if whole is not None else PyBytes_FromStringAndSize(p, n)))
        else:
            self.down.send_ptr(p, n, whole)
        self.down.deadline = monotonic_coarse() + ctx.route.first_byte_timeout

    cdef void relay_data(self, RequestContext ctx, bytes data):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if ctx.cache_parts is not None:
            ctx.cache_parts.append(data)
        if ctx.compressor is not None and n:
            data = ctx.compressor.compress(data)
            n = PyBytes_GET_SIZE(data)
            if n == 0:
                return
        self.relay(ctx, PyBytes_AS_STRING(data), n, data)

    cdef void finish_relay(self, RequestContext ctx):
        """The whole response body arrived: the cache keeps it, the compressor's tail and
        the last chunk go out."""
        if ctx.cache_parts is not None:
            # the next requests for this key get it from the cache
            self.store_cached(ctx, ctx.cache_status, ctx.cache_head, b"".join(ctx.cache_parts))
            ctx.cache_parts = None
        if ctx.compressor is not None:
            tail = ctx.compressor.finish()
            ctx.compressor = None
            if tail and ctx.body_mode != BODY_NONE:
                ctx.response_length += len(tail)
                self.down.send(chunk_frame(tail) if ctx.body_mode == BODY_CHUNKED else tail)
        if ctx.body_mode == BODY_CHUNKED:
            self.down.send(b"0\r\n\r\n")

    cdef bint take_back_head(self, RequestContext ctx):
        """The relayed response head (and any body after it) is still in the cork buffer,
        not written: drop it, so the client gets a gateway response rather than an empty
        reply (a head and a bad chunk size in one read). False once any of it was written."""
        if ctx.head_mark < 0 or not self.down.uncork_to(ctx.head_mark):
            return False
        ctx.head_mark = -1
        ctx.responding = False
        ctx.body_mode = BODY_NONE
        ctx.status = 0
        ctx.response_length = 0
        ctx.cache_parts = None
        ctx.compressor = None
        return True

    cdef void cut_short(self, RequestContext ctx):
        """End a response whose head reached the client but whose body cannot be completed.
        A body framed by Content-Length or chunking ends short, with a clean close that every
        client detects, after what was already relayed; a body delimited by the close itself
        would pass for complete, so that connection is reset."""
        if ctx.body_mode == BODY_CLOSE:
            self.down.reset()
            return
        ctx.body_mode = BODY_NONE      # no last chunk
        self.down.close_after = True
        self.done(ctx)

    # --- a streamed response ------------------------------------------------------------

    cdef void start_stream(self, RequestContext ctx, int status, list headers):
        """A streamed (function) response's head; its chunks follow with stream()."""
        if ctx.route.response_headers is not None:
            headers = (<HeaderTransform>ctx.route.response_headers).apply(headers, ctx)
        if ctx.api is not None and ctx.api.cors is not None:
            headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        ctx.status = status
        ctx.responding = True
        ctx.streaming_function = True
        self.keep_alive_decision(ctx)
        if without_body(ctx, status):
            ctx.body_mode = BODY_NONE
        elif ctx.http_minor == 1:
            ctx.body_mode = BODY_CHUNKED
        else:
            ctx.body_mode = BODY_CLOSE      # HTTP/1.0: the end of the body is the end of the connection
            self.down.close_after = True
        self.write_head(ctx, status, headers, -1)     # (which frames the stream itself)

    cdef void stream(self, RequestContext ctx, bytes data):
        if ctx.body_mode == BODY_NONE or not data:
            return
        ctx.response_length += PyBytes_GET_SIZE(data)
        self.down.send(chunk_frame(data) if ctx.body_mode == BODY_CHUNKED else data)

    cdef void end_stream(self, RequestContext ctx, str error_type, str detail):
        """The stream is over. Complete: the last chunk, then the next request. Failed
        mid-stream: the connection is closed without the last chunk, so the client can
        tell the body is incomplete (nothing else can be said once the head is out)."""
        ctx.streaming_function = False
        if error_type is not None:
            ctx.error_type = error_type
            ctx.error_message = detail
            self.down.close_after = True
            if ctx.body_mode == BODY_CHUNKED:
                ctx.body_mode = BODY_NONE
        elif ctx.body_mode == BODY_CHUNKED:
            self.down.send(b"0\r\n\r\n")
        self.done(ctx)

    # --- the cache ---------------------------------------------------------------------

    cdef void start_cache_fill(self, RequestContext ctx, int status, long long length, list headers):
        """A cacheable response (200 with a length that fits an entry): keep its head and body."""
        if status != 200 or length < 0 or \
                length > (<SharedCache>(<Snapshot>ctx.snapshot).cache).max_entry_bytes:
            return
        ctx.cache_head = cache_head_of(headers)
        ctx.cache_status = status
        ctx.cache_parts = []

    cdef void store_cached(self, RequestContext ctx, int status, bytes head, bytes body):
        """Keep a response for ctx.cache_key, in this host's cache and in Redis when shared."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef long long expires_ms
        if PyBytes_GET_SIZE(body) > (<SharedCache>snap.cache).max_entry_bytes:
            return
        expires_ms = event_epoch_ms() + (<RouteCache>ctx.route.cache).ttl_ms
        (<SharedCache>snap.cache).put(ctx.cache_key, expires_ms, status, head, body)
        if snap.cache_redis is not None:
            # written by a task: the response does not wait for Redis
            snap.cache_redis.store(ctx.cache_key, expires_ms, status, head, body)

    cdef list start_compression(self, RequestContext ctx, list headers, long long length):
        """The API compresses responses (minimumCompressionSize) and the client accepts an
        encoding: set up ctx.compressor and return the headers to send instead."""
        cdef tuple pair
        hooks = (<Snapshot>ctx.snapshot).hooks
        if hooks is None:
            return headers
        ctype = None
        encoded = False
        for pair in headers:
            name = (<bytes>pair[0]).lower()
            if name == b"content-type":
                ctype = pair[1]
            elif name == b"content-encoding":
                encoded = True
        enc = hooks.choose_encoding(ctx.header(b"accept-encoding"))
        if enc is None or not hooks.should_compress(ctype, length, ctx.api.min_compress, encoded):
            return headers
        streaming = length < 0      # chunked / SSE: every chunk must reach the client at once
        ctx.compressor = hooks.Compressor(enc, flush_each_chunk=streaming)
        out = [pair for pair in headers if (<bytes>pair[0]).lower() not in (b"content-length", b"etag")]
        out.append((b"Content-Encoding", enc.encode()))
        out.append((b"Vary", b"Accept-Encoding"))
        return out

    # --- the parts every response shares ------------------------------------------------

    cdef list finish_headers(self, RequestContext ctx, list headers):
        """Response transforms, then CORS: what a route and its API add to any response."""
        if ctx.route is not None and ctx.route.response_headers is not None:
            headers = (<HeaderTransform>ctx.route.response_headers).apply(headers, ctx)
        if ctx.route is not None and ctx.api is not None and ctx.api.cors is not None:
            headers = ctx.api.cors.apply(headers, ctx.header(b"origin"))
        return headers

    cdef void keep_alive_decision(self, RequestContext ctx):
        """Whether the connection serves another request after this response: not when the
        request's body did not all arrive (the rest is not worth reading), the client asked to
        close, the worker drains, or the connection served its keepalive_requests."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        if (not ctx.body_complete and ctx.status != 101) or not ctx.keep_alive or \
                self.worker.draining or (snap.keepalive_requests > 0 and
                                         self.down.served + 1 >= snap.keepalive_requests):
            self.down.close_after = True

    cdef void head_tail(self, RequestContext ctx, int status, bint has_date):
        """The lines the gateway ends a relayed head with: Date when the origin had none (a
        proxy adds one, RFC 9110 section 6.6.1), Via, the request id, framing, Connection."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef Buf* h = &self.worker.head
        if not has_date:
            put(h, b"Date: ")
            put(h, self.worker.date)
            put(h, b"\r\n")
        if snap.via is not None:
            put(h, b"Via: ")
            put(h, snap.via)
            put(h, b"\r\n")
        self.request_id_lines(ctx)
        if ctx.cache_result == 2:
            put(h, b"X-Cache: Miss\r\n")
        if status == 101:
            put(h, b"Connection: upgrade\r\nUpgrade: ")
            put(h, ctx.upgrade_protocol)
            put(h, b"\r\n")
        elif ctx.body_mode == BODY_CHUNKED:
            put(h, b"Transfer-Encoding: chunked\r\n")
        if status != 101:
            self.connection_line(ctx)
        put(h, b"\r\n")

    cdef void request_id_lines(self, RequestContext ctx):
        """x-request-id, and the one API Gateway adds: REST APIs x-amzn-RequestId, HTTP APIs
        apigw-requestid."""
        cdef Buf* h = &self.worker.head
        put(h, b"x-request-id: ")
        put(h, ctx.request_id)
        put(h, b"\r\n")
        if ctx.api is None:
            return
        put(h, b"x-amzn-RequestId: " if ctx.api.rest else b"apigw-requestid: ")
        put(h, ctx.request_id)
        put(h, b"\r\n")

    cdef void connection_line(self, RequestContext ctx):
        if self.down.close_after:
            put(&self.worker.head, b"Connection: close\r\n")
        elif ctx.http_minor == 0:
            put(&self.worker.head, b"Connection: keep-alive\r\n")

    cdef void write_head(self, RequestContext ctx, int status, list headers, long long length):
        """A head the gateway makes; length -1: no Content-Length (a stream, framed by body_mode).
        The framing is the gateway's alone: framing and hop-by-hop headers among `headers`
        (a function's result, a mock's or a mapping's headers) never reach the client as
        such (RFC 9112 section 6.3: two Content-Lengths, or one beside Transfer-Encoding,
        make clients refuse the response or read it wrong). A REST API keeps an
        integration's Content-Length, Connection and Date as x-amzn-Remapped-*, as API
        Gateway does; anything else drops them (the gateway writes its own Date)."""
        cdef Buf* h = &self.worker.head
        cdef tuple pair
        cdef int kind
        cdef bint rest = ctx.api is not None and ctx.api.rest
        h.len = 0
        put(h, status_line(status, None))
        put(h, b"Date: ")
        put(h, self.worker.date)
        put(h, b"\r\n")
        for pair in headers:
            kind = classify(<bytes>pair[0])
            if kind == H_CONTENT_LENGTH or kind == H_CONNECTION or kind == H_DATE:
                if not rest:
                    continue
                put(h, b"x-amzn-Remapped-")
            elif not forwarded_response_header(kind) and not (status == 426 and kind == H_UPGRADE):
                continue    # (a 426 names the protocol to upgrade to: RFC 9110 section 15.5.22)
            put(h, <bytes>pair[0])
            put(h, b": ")
            put(h, <bytes>pair[1])
            put(h, b"\r\n")
        self.request_id_lines(ctx)
        if status < 200 or status == 204 or status == 304:
            pass    # no body, so no framing (RFC 9110 sections 8.6, 15.3.5, 15.4.5)
        elif length >= 0:
            put(h, b"Content-Length: %d\r\n" % length)
        elif ctx.body_mode == BODY_CHUNKED:
            put(h, b"Transfer-Encoding: chunked\r\n")
        self.connection_line(ctx)
        put(h, b"\r\n")
        self.down.send_ptr(h.p, h.len, None)

    # --- the end of the exchange ---------------------------------------------------------

    cdef void done(self, RequestContext ctx):
        """The response is fully written: log it, then the connection serves its next
        request or closes."""
        ctx.end = event_time()
        self.log(ctx)
        self.down.served += 1
        self.down.exchange_over(ctx)

    cdef void log(self, RequestContext ctx):
        """The LOG phase: access log, live tail, tracing, usage, metrics, execution log."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef int slot
        if snap is None:
            return
        if ctx.end == 0:
            ctx.end = event_time()
        if ctx.status == 0:
            ctx.status = 499
        if ctx.api is not None and ctx.api.access_log is not None:
            (<AccessLog>ctx.api.access_log).log(ctx)
            if snap.access_log is not None and not ctx.api.access_log_only:
                snap.access_log.log(ctx)
        elif snap.access_log is not None:
            snap.access_log.log(ctx)
        # the dashboard's live tail (a shared ring; nothing when no ring is installed)
        record_finished(ctx, self.worker.worker_id, ctx.api_key_id)
        if ctx.trace is not None:
            snap.tracer.finish(<Trace>ctx.trace, ctx)
        if ctx.metered and self.worker.usage is not None:
            # an API key's usage per stage, the basis for billing (fastgate.control.usage); a 429
            # the gateway made itself (an error type set) is a throttle or the quota.
            # PERF: C increments on the shared mapping, no Python call (bench/bench_usage.py)
            self.worker.usage.record(ctx.usage_slot, ctx.status,
                                     ctx.status == 429 and ctx.error_type is not None,
                                     ctx.quota_used, ctx.request_length, ctx.response_length)
        if snap.metrics is not None:
            slot = snap.route_series[ctx.route.index] if ctx.route is not None else snap.unmatched_series
            if slot >= 0:
                snap.metrics.record_context(slot, ctx, ctx.throttle_level)
        if snap.execution_log is not None:
            (<ExecutionLog>snap.execution_log).log(ctx, ctx.upstream_status, ctx.throttle_level)
