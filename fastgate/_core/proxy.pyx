# cython: language_level=3, boundscheck=False, wraparound=False
"""The HTTP integration; proxy.pxd is the map of this file."""

import asyncio
import errno

cimport cython
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize

from fastgate._core.buffers cimport Buf, buf_bytes, buf_put, buf_take
from fastgate._core.fields cimport H_OTHER, H_HOST, H_XFF, H_XFP, H_XFH, H_XFPORT, H_VIA, \
    H_REQUEST_ID, classify, chunk_frame
from fastgate._core.fields import IDEMPOTENT
from fastgate._core.http1 cimport EV_NEED_MORE, EV_HEAD_COMPLETE, EV_BODY, EV_MESSAGE_COMPLETE, \
    EV_UPGRADE
from fastgate._core.clock cimport event_time, monotonic, monotonic_coarse
from fastgate._core.pipeline cimport (
    RequestContext, Route, ACTION_CONTINUE, ACTION_RESPOND,
    ACTION_RETRY, BODY_NONE,
)
from fastgate._core.netio cimport connect_tcp
from fastgate._core.netio import connect_name
from fastgate._core.respond cimport RESPONSE_MAX_HEADERS, RESPONSE_MAX_HEAD
from fastgate._core.runtime cimport (
    DL_NONE, DL_BODY, DL_CONNECT, DL_UPSTREAM_READ, PAUSE_NOT_READY, PAUSE_PIPELINE,
    PAUSE_UPSTREAM_FULL,
)
from fastgate._core.tracing cimport Trace, TRACE_LINE_MAX
from fastgate._core.upstream cimport UpstreamGroup


cdef frozenset LOCAL_ERRNOS = frozenset([errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])


cdef inline int put(Buf* b, bytes s) except -1:
    return buf_bytes(b, s)


cdef bytes upstream_request_head(Worker worker, RequestContext ctx, bytes target_host):
    """The upstream request, rebuilt from parsed fields (never the client's raw bytes).
    target_host: the Host to send unless a transform sets one."""
    cdef Snapshot snap = <Snapshot>ctx.snapshot
    cdef Buf* h = &worker.head
    cdef tuple pair
    cdef bytes host = target_host
    cdef char trace_line[TRACE_LINE_MAX]
    cdef int kind, owned = 0
    if ctx.route.request_headers is not None:
        # A transform may set a header the gateway writes itself (Host, Via, X-Forwarded-*,
        # x-request-id): the transform's value replaces the gateway's, never a second line
        # (two Host lines are a request a server must reject, RFC 9112 section 3.2).
        for pair in ctx.upstream_headers:
            kind = classify(<bytes>pair[0])
            if kind != H_OTHER:
                owned |= 1 << kind
                if kind == H_HOST:
                    host = <bytes>pair[1]
    h.len = 0
    put(h, ctx.method)
    put(h, b" ")
    put(h, ctx.upstream_path)
    put(h, b" HTTP/1.1\r\nHost: ")
    put(h, host)
    put(h, b"\r\n")
    for pair in ctx.upstream_headers:
        if owned & (1 << H_HOST) and classify(<bytes>pair[0]) == H_HOST:
            continue
        put(h, <bytes>pair[0])
        put(h, b": ")
        put(h, <bytes>pair[1])
        put(h, b"\r\n")
    if not owned & (1 << H_XFF):
        put(h, b"X-Forwarded-For: ")
        put(h, ctx.forwarded_for)
        put(h, b"\r\n")
    if not owned & (1 << H_XFP):
        put(h, b"X-Forwarded-Proto: ")
        put(h, ctx.forwarded_proto)
        put(h, b"\r\n")
    if not owned & (1 << H_XFH) and ctx.forwarded_host is not None:
        put(h, b"X-Forwarded-Host: ")
        put(h, ctx.forwarded_host)
        put(h, b"\r\n")
    if not owned & (1 << H_XFPORT):
        put(h, b"X-Forwarded-Port: ")
        put(h, ctx.forwarded_port)
        put(h, b"\r\n")
    if snap.via is not None and not owned & (1 << H_VIA):
        put(h, b"Via: ")
        if ctx.via_received is not None:
            put(h, ctx.via_received)
            put(h, b", ")
        put(h, snap.via)
        put(h, b"\r\n")
    if not owned & (1 << H_REQUEST_ID):
        put(h, b"x-request-id: ")
        put(h, ctx.request_id)
        put(h, b"\r\n")
    if ctx.client_cert is not None:
        put(h, ctx.client_cert.headers)   # X-Client-Cert-*, built once per connection
    if ctx.trace is not None:
        # PERF: the trace context lines written in place, no bytes object
        # (bench/wrk_compare.py --scenario observed)
        buf_put(h, trace_line, (<Trace>ctx.trace).traceparent_line(trace_line))
        if (<Trace>ctx.trace).tracestate is not None:
            put(h, b"tracestate: ")
            put(h, (<Trace>ctx.trace).tracestate)
            put(h, b"\r\n")
        buf_put(h, trace_line, (<Trace>ctx.trace).xray_line(trace_line))
    if ctx.upgrade:
        put(h, b"Connection: upgrade\r\nUpgrade: ")
        put(h, ctx.upgrade_protocol)
        put(h, b"\r\n")
    if ctx.chunked:
        put(h, b"Transfer-Encoding: chunked\r\n")
    elif ctx.content_length >= 0:
        put(h, b"Content-Length: %d\r\n" % ctx.content_length)
    put(h, b"\r\n")
    return buf_take(h)


cdef class Proxy:
    def __init__(self, Downstream down, Responder out):
        self.down = down
        self.out = out
        self.worker = down.worker

    # --- the request ---------------------------------------------------------------------

    cdef void start(self, RequestContext ctx):
        cdef Route route = ctx.route
        if route.total_timeout > 0:
            self.down.total_deadline = monotonic_coarse() + route.total_timeout
        self.attempt(ctx, None)

    cdef void attempt(self, RequestContext ctx, Target exclude):
        cdef Route route = ctx.route
        cdef UpstreamGroup group = <UpstreamGroup>route.upstream
        cdef double now = event_time()
        cdef Target target = group.pick(ctx, exclude, now)
        cdef UpstreamConnection conn
        if target is None and exclude is not None:
            # the only target just failed; try it again rather than give up (e.g. a stale pooled socket)
            target = group.pick(ctx, None, now)
        if target is None:
            self.out.respond_error(ctx, "NO_HEALTHY_UPSTREAM", f"no healthy target in upstream {group.name!r}")
            return
        ctx.target = target
        ctx.attempts += 1
        if ctx.integration_start == 0:
            ctx.integration_start = now
        target.active += 1
        conn = <UpstreamConnection>target.pop_idle()
        while conn is not None and not conn.alive():
            conn = <UpstreamConnection>target.pop_idle()    # dead while idle: dropped
        if conn is not None:
            self.ready(conn)
        else:
            self.connect(ctx, target)

    cdef void connect(self, RequestContext ctx, Target target):
        cdef UpstreamConnection conn = UpstreamConnection(target)
        ctx.upstream = conn
        conn.proxy = self
        self.down.deadline_kind = DL_CONNECT
        self.down.deadline = monotonic_coarse() + ctx.route.connect_timeout
        target.opened()
        if self.worker.poller is not None and target.ssl is None:
            if target.family != 0:
                ctx.connect_task = connect_tcp(self.worker.poller, conn, target.family,
                                               (target.host, target.port))
            else:
                ctx.connect_task = asyncio.ensure_future(
                    connect_name(self.worker.poller, conn, target.host, target.port),
                    loop=self.worker.loop)
        else:
            # TLS: the loop's own transport
            coro = self.worker.loop.create_connection(
                lambda: conn, target.host, target.port, ssl=target.ssl,
                server_hostname=target.server_hostname if target.ssl is not None else None)
            ctx.connect_task = asyncio.ensure_future(coro, loop=self.worker.loop)
        ctx.connect_task.add_done_callback(conn.on_connected)

    cdef void ready(self, UpstreamConnection conn):
        """conn is connected (or came from the pool): the head goes out, then what of the
        body arrived meanwhile, and only then any later body byte (send_body)."""
        cdef RequestContext ctx = self.down.ctx
        cdef Downstream down = self.down
        cdef list chunks = ctx.body_chunks if ctx.body_chunks is not None else []
        cdef bytes c
        ctx.connect_task = None
        ctx.upstream = conn
        conn.attach(self, ctx.method == b"HEAD")
        ctx.body_mode = BODY_NONE
        if not chunks and not ctx.chunked:
            # PERF: no body yet: the head alone, no list (bench/wrk_compare.py, scenario keepalive)
            conn.send_head(upstream_request_head(self.worker, ctx, conn.target.host_header))
        else:
            # the head and the body chunks received so far, in one write
            out = [upstream_request_head(self.worker, ctx, conn.target.host_header)]
            if ctx.chunked:
                for c in chunks[ctx.body_sent:]:
                    if PyBytes_GET_SIZE(c):
                        out.append(chunk_frame(c))
            else:
                out.extend(chunks[ctx.body_sent:])
            if ctx.body_retained:
                ctx.body_sent = len(chunks)
            else:
                ctx.body_chunks = []
                ctx.body_sent = 0
                ctx.body_kept = 0
            if ctx.body_complete and ctx.chunked:
                out.append(b"0\r\n\r\n")
            conn.send_head(b"".join(out))
        down.set_pause(PAUSE_NOT_READY, False)
        if ctx.body_complete:
            down.deadline_kind = DL_UPSTREAM_READ
            down.deadline = monotonic_coarse() + ctx.route.first_byte_timeout
        else:
            down.deadline_kind = DL_BODY
            down.deadline = down.body_due(ctx)

    cdef void send_body(self, RequestContext ctx, bytes data):
        """A body chunk, framed as the request is (the head went out already)."""
        cdef UpstreamConnection conn = <UpstreamConnection>ctx.upstream
        if ctx.chunked:
            if PyBytes_GET_SIZE(data):
                conn.send_body(chunk_frame(data))
        else:
            conn.send_body(data)

    cdef void finish(self, RequestContext ctx):
        """The client's body is complete: the last chunk, and the wait for the response."""
        cdef UpstreamConnection conn = <UpstreamConnection>ctx.upstream
        if ctx.chunked:
            conn.send_body(b"0\r\n\r\n")
        if not conn.head_done:
            self.down.deadline_kind = DL_UPSTREAM_READ
            self.down.deadline = monotonic_coarse() + ctx.route.first_byte_timeout

    cdef bint flow(self, RequestContext ctx, bint paused):
        """The client's write buffer filled (or drained): stop (or resume) reading the upstream.
        False when there is no upstream to hold."""
        cdef UpstreamConnection conn
        if ctx is None or ctx.upstream is None:
            return False
        conn = <UpstreamConnection>ctx.upstream
        if conn.transport is None:
            return False
        if paused:
            conn.transport.pause_reading()
        else:
            conn.transport.resume_reading()
        return True

    # --- failures ------------------------------------------------------------------------

    cdef void fail(self, str kind, str detail, bint retryable):
        cdef RequestContext ctx = self.down.ctx
        cdef int action = self.failed(kind, detail, retryable)
        if action == ACTION_RETRY:
            ctx.body_sent = 0      # the next attempt sends the whole retained body behind its head
            self.attempt(ctx, <Target>ctx.target)
        elif action == ACTION_RESPOND:
            # a failed HTTP call answers 502, as on AWS (INTEGRATION_FAILURE's default is 504)
            self.out.respond_error(ctx, ctx.error_type, ctx.error_message,
                                   502 if ctx.error_type == "INTEGRATION_FAILURE" else -1)

    cdef int failed(self, str kind, str detail, bint retryable):
        """The upstream failed: ACTION_RETRY (another attempt may still serve the request),
        ACTION_RESPOND (ctx.error_type says what to answer), or ACTION_CONTINUE when part
        of the response had reached the client and the exchange was ended here."""
        cdef RequestContext ctx = self.down.ctx
        cdef Target target
        cdef UpstreamConnection conn
        if ctx is None:
            return ACTION_CONTINUE
        conn = <UpstreamConnection>ctx.upstream
        ctx.map_parts = ctx.map_headers = None   # a response being mapped is not one any more
        target = <Target>ctx.target
        ctx.upstream = None
        ctx.connect_task = None
        if conn is not None:
            conn.proxy = None
            conn.close()
        if target is not None:
            target.active -= 1
            if self.to_blame(ctx, kind):
                target.record_failure(monotonic(), detail)
        where = f"upstream {target.label.decode() if target is not None else '?'}: {detail}"
        if ctx.responding and not self.out.take_back_head(ctx):
            # part of the response reached the client: say what happened in the logs, and
            # end the client's response short of its framing
            ctx.error_type = "INTEGRATION_TIMEOUT" if kind == "timeout" else "INTEGRATION_FAILURE"
            ctx.error_message = where + " (after the response head was sent)"
            if self.down.write_blocked:
                # a client that is not reading would never take the clean end: a close would
                # wait on its full buffer for ever, holding the socket
                self.down.abort()
            else:
                self.out.cut_short(ctx)
            return ACTION_CONTINUE
        if retryable and ctx.attempts <= ctx.route.retries and ctx.body_retained and (
                kind == "connect" or kind == "connect_timeout" or ctx.method in IDEMPOTENT
                or ctx.route.retry_non_idempotent):
            return ACTION_RETRY
        ctx.error_message = where
        # a connect that timed out is a timeout too (504, as the docs promise), a refused one is 502
        ctx.error_type = "INTEGRATION_TIMEOUT" if kind == "timeout" or kind == "connect_timeout" \
            else "INTEGRATION_FAILURE"
        return ACTION_RESPOND

    cdef bint to_blame(self, RequestContext ctx, str kind):
        """Whether a failure of `kind` counts against the target (passive ejection). Only the
        upstream's own faults do, or any client could eject a healthy target: a timeout or a
        closed connection while the client still owed body bytes (the upstream was waiting for
        them, and may have given up on them) or while the client was not reading the response
        (flow control had stopped reading the upstream) is the client's doing, and running out
        of this host's resources (file descriptors) is no target's."""
        if kind == "local":
            return False
        if kind == "timeout" or kind == "reset":
            return ctx.body_complete and not self.down.write_blocked
        return True

    cdef void drop(self, RequestContext ctx):
        """Close the exchange's upstream connection, connected or still connecting (its state
        is unknown), and give its target's slot back. No failure is counted against it."""
        if ctx is None:
            return
        if ctx.connect_task is not None:
            ctx.connect_task.cancel()
            ctx.connect_task = None
        if ctx.upstream is not None:
            if ctx.target is not None:
                (<Target>ctx.target).active -= 1
            (<UpstreamConnection>ctx.upstream).release(False)
            ctx.upstream = None

    cdef void timed_out(self, int deadline_kind):
        cdef RequestContext ctx = self.down.ctx
        if deadline_kind == DL_CONNECT:
            if ctx is not None and ctx.connect_task is not None:
                ctx.connect_task.cancel()
                ctx.connect_task = None
            self.fail("connect_timeout", "connect timed out", True)
        else:
            self.down.deadline_kind = DL_NONE
            self.fail("timeout", "no response in time", False)

    # --- the response --------------------------------------------------------------------

    cdef void head(self, UpstreamConnection conn, int status):
        """The response head arrived: through the response phase to the client (or, for an
        http integration with mapping templates, buffered until its body is whole)."""
        cdef RequestContext ctx = self.down.ctx
        cdef Http1Parser p = conn.parser
        cdef int i
        if status != 101 and (ctx.route.http_map is not None or (
                ctx.route.response_map is not None and ctx.route.response_map.wants(status))):
            (<Target>ctx.target).record_success()
            ctx.map_status = status
            ctx.map_headers = [(p.name_bytes(i), p.value_bytes(i)) for i in range(p.msg.n_headers)]
            ctx.map_parts = []
            ctx.map_size = 0
            return
        (<Target>ctx.target).record_success()
        self.out.relay_head(ctx, p, status)
        if status == 101:
            self.down.tunnel = True
            conn.tunnel = True
            self.down.set_pause(PAUSE_PIPELINE, False)
            self.down.deadline_kind = DL_NONE
            if self.down.early_tunnel:
                conn.send_body(self.down.early_tunnel)
                self.down.early_tunnel = None
            return
        self.down.deadline_kind = DL_UPSTREAM_READ
        self.down.deadline = monotonic_coarse() + ctx.route.first_byte_timeout

    cdef void body(self, bytes data):
        cdef RequestContext ctx = self.down.ctx
        if ctx.map_parts is not None:
            ctx.map_size += PyBytes_GET_SIZE(data)
            if ctx.map_size <= MAP_RESPONSE_MAX:
                ctx.map_parts.append(data)
            else:
                ctx.map_parts = []     # over the limit: drained, answered 502 at the end
            self.down.deadline = monotonic_coarse() + ctx.route.first_byte_timeout
            return
        self.out.relay_data(ctx, data)

    cdef void done(self, UpstreamConnection conn, bint reusable):
        cdef RequestContext ctx = self.down.ctx
        if ctx.map_parts is not None:
            self.finish_mapped(ctx, conn, reusable)
            return
        self.out.finish_relay(ctx)
        ctx.integration_end = event_time()
        (<Target>ctx.target).active -= 1
        ctx.upstream = None
        self.give_back(ctx, conn, reusable)
        self.out.done(ctx)

    cdef void give_back(self, RequestContext ctx, UpstreamConnection conn, bint reusable):
        """After its whole response: conn to its target's pool when it may be reused and the
        whole request went out, else closed."""
        reusable = reusable and ctx.body_complete
        if reusable and self.down.write_blocked and conn.alive():
            # This client's full write buffer paused conn's reading (pause_writing), and the
            # resume_writing that undoes it goes to the next upstream or none. Pooled paused,
            # conn would not see its own close, and the next request's response on it would
            # never be read (a 504 after first_byte_timeout).
            conn.transport.resume_reading()
        conn.release(reusable)

    cdef void finish_mapped(self, RequestContext ctx, UpstreamConnection conn, bint reusable):
        """An http (non-proxy) integration's whole response, through its integration
        response mapping (fastgate.phases.vtl), or an HTTP API's, through its response
        parameter mapping."""
        body = b"".join(ctx.map_parts)
        headers = ctx.map_headers
        ctx.map_parts = ctx.map_headers = None
        ctx.integration_end = event_time()
        (<Target>ctx.target).active -= 1
        ctx.upstream = None
        self.give_back(ctx, conn, reusable)
        if ctx.map_size > MAP_RESPONSE_MAX:
            self.out.respond_error(ctx, "INTEGRATION_FAILURE", "the upstream response is over %d bytes, "
                                   "more than an integration response mapping takes" % MAP_RESPONSE_MAX, 502)
            return
        if ctx.route.http_map is None:      # held for the route's response parameter mapping
            self.out.respond_integration(ctx, ctx.map_status, headers, body)
            return
        accept = ctx.header(b"accept")
        try:
            result = ctx.route.http_map.response(
                (<Snapshot>ctx.snapshot).hooks.mapping_event(ctx, b""), ctx.map_status, headers, body,
                accept.decode("latin-1") if accept is not None else None)
        except Exception as e:
            result = "DEFAULT_5XX"
            ctx.error_message = repr(e)
        self.out.respond_result(ctx, result)


@cython.final     # PERF: its cpdef alive() is a direct C call (bench/wrk_compare.py keepalive)
cdef class UpstreamConnection:
    def __init__(self, Target target):
        self.target = target
        self.parser = Http1Parser(True, RESPONSE_MAX_HEADERS, RESPONSE_MAX_HEAD, RESPONSE_MAX_HEAD)

    cpdef bint alive(self):
        return self.is_alive and self.transport is not None and not self.put_closed()

    cdef void attach(self, Proxy proxy, bint head_request):
        self.proxy = proxy
        self.head_request = head_request
        self.got_bytes = False
        self.head_done = False
        self.until_close = False
        self.interim = False
        self.head_written = False
        # a HEAD response has no body whatever its Content-Length says
        self.parser.msg.skip_body = head_request

    cdef void send_head(self, bytes data):
        """The request head, with whatever body bytes came before it."""
        self.put(data)
        self.head_written = True

    cdef void send_body(self, bytes data):
        """Request body bytes (or tunnel bytes) after the head. Before it they are not
        sent: the exchange keeps them until the head goes (Exchange.add_body)."""
        if self.head_written:
            self.put(data)

    cdef void release(self, bint reusable):
        """Return to the pool when its state is known-good, else close it."""
        cdef Target t = self.target
        self.proxy = None
        # a transport already closing is caught when popped (alive()), or leaves the pool
        # at connection_lost: no Python is_closing() call per request here
        if reusable and self.is_alive and self.transport is not None and t.push_idle(self):
            return
        self.close()

    cpdef close(self):
        if self.transport is not None and self.is_alive:
            self.is_alive = False
            self.transport.close()

    def on_connected(self, fut):
        cdef Proxy proxy = self.proxy
        cdef RequestContext ctx = proxy.down.ctx if proxy is not None else None
        if fut.cancelled():
            # connect timed out, or the client left
            if self.transport is None:
                self.target.closed()    # never connected: no connection_lost will count it
            else:
                self.close()            # connection_lost counts it closed
            return
        exc = fut.exception()
        if ctx is None or ctx.upstream is not self:
            if exc is None:
                self.close()
            return
        if exc is not None:
            self.target.closed()
            if isinstance(exc, OSError) and exc.errno in LOCAL_ERRNOS:
                # this host is out of sockets or memory: no target's fault, and no other would do
                proxy.fail("local", f"connect failed: {exc.strerror or exc}", False)
            else:
                proxy.fail("connect", f"connect failed: {exc.strerror or exc}"
                           if isinstance(exc, OSError) else f"connect failed: {exc}", True)
            return
        proxy.ready(self)

    # asyncio.Protocol
    def connection_made(self, transport):
        self.bind(transport)
        self.is_alive = True

    def connection_lost(self, exc):
        cdef Proxy proxy = self.proxy
        self.is_alive = False
        self.target.closed()
        if proxy is None:
            self.target.forget_idle(self)
            return
        if self.tunnel:
            self.proxy = None
            proxy.down.close_transport()
            return
        if self.until_close and self.head_done:
            self.proxy = None
            proxy.done(self, False)
            return
        # reset before the response completed; a reused socket that said nothing was stale
        proxy.fail("reset", "connection closed before the response completed", not self.got_bytes)

    def eof_received(self):
        cdef Downstream down
        if self.tunnel and self.proxy is not None:
            down = self.proxy.down
            self.tunnel_eofs += 1
            if self.tunnel_eofs >= 2:
                # the client half-closed first: both directions are done (see ClientConnection)
                down.close_transport()
                return False
            if down.transport.can_write_eof():
                down.transport.write_eof()
            return True
        return False

    def pause_writing(self):
        if self.proxy is not None:
            self.proxy.down.set_pause(PAUSE_UPSTREAM_FULL, True)

    def resume_writing(self):
        if self.proxy is not None:
            self.proxy.down.set_pause(PAUSE_UPSTREAM_FULL, False)

    def data_received(self, bytes data):
        self.data_in(data)

    cdef int data_in(self, bytes data) except -1:
        cdef Proxy proxy = self.proxy
        cdef const char* buf = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), off = 0
        cdef int ev
        if proxy is None:
            # an idle connection must not speak: its state is unknown now
            self.close()
            return 0
        if self.tunnel:
            proxy.down.put(data)
            return 0
        self.got_bytes = True
        # PERF: a response head and body that arrive together leave in one write
        # (bench/wrk_compare.py, scenario keepalive)
        proxy.down.cork()
        try:
            while True:
                ev = self.parser.feed(buf + off, n - off)
                off += self.parser.consumed
                if ev == EV_NEED_MORE or not self.on_event(ev, data, buf, off, n):
                    break
        finally:
            proxy.down.uncork()
        return 0

    cdef bint on_event(self, int ev, bytes data, const char* buf, Py_ssize_t off, Py_ssize_t n):
        """Handle one parser event; False stops reading this input."""
        cdef Proxy proxy = self.proxy
        cdef Http1Parser p = self.parser
        cdef int status = p.p.status_code
        cdef RequestContext ctx
        if proxy is None:
            if off < n or ev != EV_MESSAGE_COMPLETE:
                self.close()   # bytes after the response: this connection's state is unknown
            return False
        ctx = proxy.down.ctx
        if ev == EV_HEAD_COMPLETE:
            if 100 <= status < 200 and status != 101:
                self.interim = True   # not relayed; the final response follows
                return True
            if status == 101 and not ctx.upgrade:
                self.proxy = None
                proxy.fail("protocol", "101 to a request that did not ask to upgrade", False)
                self.close()
                return False
            self.head_done = True
            ctx.upstream_status = status
            if ctx.trace is not None:
                (<Trace>ctx.trace).upstream_status = status
            self.until_close = (not p.msg.chunked and p.msg.content_length < 0 and not self.head_request
                                and status >= 200 and status != 204 and status != 304)
            proxy.head(self, status)
            return True
        if ev == EV_BODY:
            if self.head_done:
                if proxy.out.relays_raw(ctx):
                    # PERF: relayed from the parser's buffer into the client's cork buffer, no
                    # bytes object (bench/wrk_compare.py, scenario keepalive)
                    proxy.out.relay(ctx, p.msg.body_at, p.msg.body_len,
                                    data if p.msg.body_at == buf and p.msg.body_len == n else None)
                else:
                    proxy.body(data if p.msg.body_at == buf and p.msg.body_len == n
                               else PyBytes_FromStringAndSize(p.msg.body_at, p.msg.body_len))
            return True
        if ev == EV_MESSAGE_COMPLETE:
            if self.interim:
                self.interim = False
                return True
            if not self.head_done or status == 101:
                return True
            self.proxy = None
            proxy.done(self, p.msg.keep_alive)
            return True   # anything after the response closes the connection (above)
        if ev == EV_UPGRADE:
            if self.tunnel and off < n:
                proxy.down.send(data[off:])
            return False
        # EV_ERROR
        self.proxy = None
        proxy.fail("protocol", "invalid response: " + (<bytes>p.p.reason).decode("latin-1", "replace"),
                   False)
        self.close()
        return False
