# cython: language_level=3, boundscheck=False, wraparound=False
"""The client side of the HTTP/1.1 hot path; client.pxd is the map of this file."""

import ipaddress

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.string cimport memchr

from fastgate._core.exchange cimport Exchange
from fastgate._core.integrations cimport Integrations
from fastgate._core.fields cimport (
    H_OTHER, H_DATE, H_HOST, H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_CONNECTION, H_UPGRADE,
    H_EXPECT, H_REQUEST_ID, H_TRACEPARENT, H_TRACESTATE, H_XRAY, H_VIA, H_XFF, H_XFP, H_XFH,
    H_XFPORT, H_FORWARDED, H_X_REAL_IP, H_TRUE_CLIENT_IP, classify, client_cert_header,
    client_cert_allows, connection_tokens, drop_named, valid_request_id, parse_content_length,
    valid_host, route_host_of,
)
from fastgate._core.http1 cimport (
    EV_NEED_MORE, EV_HEAD_COMPLETE, EV_BODY, EV_MESSAGE_COMPLETE, EV_UPGRADE,
    LIMIT_URL, LIMIT_HEADERS, LIMIT_HEAD,
)
from fastgate._core.paths cimport canonical_path, refusal_reason
from fastgate._core.clock cimport event_epoch_ms, event_time, monotonic_coarse
from fastgate._core.proxy cimport Proxy, UpstreamConnection, RETRY_BODY_MAX
from fastgate._core.respond cimport Responder
from fastgate._core.runtime cimport (
    Worker, DL_NONE, DL_IDLE, DL_HEAD, DL_BODY, DL_CONNECT, DL_UPSTREAM_READ, DL_DRAIN,
    PAUSE_PIPELINE, PAUSE_NOT_READY, PAUSE_UPSTREAM_FULL, PAUSE_WS_WRITE, LINGER_IDLE_MS,
)
from fastgate._core.snapshot cimport Snapshot
from fastgate._core.websocket cimport WebSocket


def protocol_factory(Worker worker, int local_port):
    """What the worker's listeners create per accepted connection."""
    def factory():
        return ClientConnection(worker, local_port)
    return factory


cdef class ClientConnection(Downstream):
    def __init__(self, Worker worker, int local_port=0):
        self.worker = worker
        self.local_port = local_port
        self.pending = []
        self.out = Responder(self)
        self.proxy = Proxy(self, self.out)
        self.exchange = Exchange(self, self.out, self.proxy, Integrations(self, self.out))

    # --- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport):
        cdef Snapshot snap = self.worker.snapshot
        self.bind(transport)
        self.port_bytes = b"%d" % self.local_port
        # limits live in the parser's C callbacks: the head buffer never grows past them
        self.parser = Http1Parser(False, snap.max_headers, snap.max_head, snap.max_url)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_ip = peer[0].encode()
            self.peer_port = peer[1]
            if snap.trusted:
                addr = ipaddress.ip_address(peer[0])
                self.trusted = any(addr in net for net in snap.trusted)
        else:
            self.peer_ip = b"127.0.0.1"
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.tls = True
            if snap.hooks is not None:
                self.client_cert = snap.hooks.client_cert_of(sslobj)
        self.worker.connections.add(self)
        if snap.metrics is not None and self.worker.open_slot >= 0:
            snap.metrics.gauge_add(self.worker.open_slot, 1)
            snap.metrics.gauge_add(self.worker.own_slot, 1)
        self.deadline_kind = DL_IDLE
        self.deadline = monotonic_coarse() + snap.header_timeout
        if self.worker.draining:
            self.shutdown()

    def connection_lost(self, exc):
        cdef Snapshot snap = self.worker.snapshot
        cdef RequestContext ctx = self.ctx
        self.closed = True
        self.worker.connections.discard(self)
        if snap.metrics is not None and self.worker.open_slot >= 0:
            snap.metrics.gauge_add(self.worker.open_slot, -1)
            snap.metrics.gauge_add(self.worker.own_slot, -1)
        if ctx is not None and ctx.status == 0 and not ctx.responding:
            ctx.status = 499
        self.release_upstream()     # the client went away mid-exchange: the upstream's state is unknown
        if self.ws is not None:
            (<WebSocket>self.ws).lost()                       # $disconnect
        if ctx is not None and ctx.streaming_function and self.worker.functions is not None:
            self.worker.functions.client_gone(self.exchange.integrations)   # stop the handler now, not at its next chunk
        if ctx is not None and ctx.end == 0:
            self.out.log(ctx)
        self.ctx = None
        self.pending = None

    def eof_received(self):
        # half-close from the client: finish what is in flight, then close
        cdef RequestContext ctx = self.ctx
        cdef UpstreamConnection up = <UpstreamConnection>ctx.upstream if ctx is not None else None
        if self.lingering or self.ws is not None:
            return False
        if self.tunnel and up is not None and up.transport is not None:
            up.tunnel_eofs += 1
            if up.tunnel_eofs >= 2:
                # both sides half-closed: nothing more can flow, and a transport whose eof_received
                # returned True stays open until closed; connection_lost closes the upstream
                return False
            if up.transport.can_write_eof():
                up.transport.write_eof()
            return True
        if ctx is None and not self.in_head:
            return False
        if ctx is None or not (ctx.body_complete or ctx.responding):
            # The client left halfway through a request (its head or its body), which can never
            # be complete now: release the upstream connection and the socket at once, not at
            # the header or body timeout (they would pile up in CLOSE-WAIT, each holding an
            # upstream connection). Returning False closes the transport; connection_lost logs
            # the request as 499. Not the upstream's failure.
            self.release_upstream()
            self.unread = False
            self.closed = True      # nothing may resume it meanwhile (an authorizer's answer)
            self.deadline_kind = DL_NONE
            return False
        # a complete request (or one being answered already) still gets its answer
        self.close_after = True
        return True

    def pause_writing(self):
        self.write_blocked = True
        if self.ws is not None:
            self.set_pause(PAUSE_WS_WRITE, True)     # its own messages' answers would pile up
        if not self.proxy.flow(self.ctx, True) and self.ctx is not None and \
                self.ctx.streaming_function and self.worker.functions is not None:
            self.worker.functions.flow(self.exchange.integrations, True)   # a streamed function response: hold it

    def resume_writing(self):
        self.write_blocked = False
        if self.ws is not None:
            self.set_pause(PAUSE_WS_WRITE, False)
        if not self.proxy.flow(self.ctx, False) and self.ctx is not None and \
                self.ctx.streaming_function and self.worker.functions is not None:
            self.worker.functions.flow(self.exchange.integrations, False)

    def data_received(self, bytes data):
        self.data_in(data)

    cdef int data_in(self, bytes data) except -1:
        if self.lingering:
            # discarded: the answer is out, the client is still sending its body
            self.deadline = monotonic_coarse() + LINGER_IDLE_MS / 1000.0
            return 0
        if self.closed:
            return 0
        if self.ws is not None:
            (<WebSocket>self.ws).feed(data)     # a WebSocket API's connection: frames
            return 0
        if self.tunnel:
            if self.ctx is not None and self.ctx.upstream is not None:
                (<UpstreamConnection>self.ctx.upstream).send_body(data)
            else:
                self.early_tunnel = (self.early_tunnel or b"") + data
            return 0
        self.cork()
        try:
            self.feed(data)
        finally:
            self.uncork()
        return 0

    cdef feed(self, bytes data):
        """Run the parser over one read; each event is handled in plain Cython."""
        cdef Http1Parser p = self.parser
        cdef const char* buf = PyBytes_AS_STRING(data)
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data), off = 0
        cdef int ev
        while True:
            if self.closed or self.lingering:
                return   # the connection is closing: the rest of the input is not ours to answer
            if self.parsing is None and off < n:
                self.message_begin()
            ev = p.feed(buf + off, n - off)
            off += p.consumed
            if ev == EV_NEED_MORE:
                if self.in_head and p.p.http_major == 0 and p.msg.url_len > 0 and \
                        p.msg.n_fields == 0 and n > 0 and buf[n - 1] == b'\n':
                    # A line ended after the URL with no version and no header yet: "GET /\r\n",
                    # however it was split across reads. llhttp takes it as a request line and
                    # would wait for headers an HTTP/0.9 client never sends.
                    self.unread = True
                    self.bad_input("BAD_REQUEST", "HTTP/0.9 request")
                return
            if ev == EV_HEAD_COMPLETE:
                if not self.head_complete():
                    self.unread = True
                    return
            elif ev == EV_BODY:
                if not self.body(data if p.msg.body_at == buf and p.msg.body_len == n
                                 else PyBytes_FromStringAndSize(p.msg.body_at, p.msg.body_len)):
                    self.unread = True
                    return
            elif ev == EV_MESSAGE_COMPLETE:
                if not self.message_complete():
                    # nothing after a "Connection: close" request is read (RFC 9112 section 9.6)
                    self.unread = off < n
                    return
            elif ev == EV_UPGRADE:
                if self.ws is not None:     # a WebSocket API accepted at once (its frames follow)
                    if off < n:
                        (<WebSocket>self.ws).feed(data[off:])
                    return
                self.early_tunnel = data[off:]
                self.set_pause(PAUSE_PIPELINE, True)   # nothing more to parse on this connection
                return
            else:
                self.unread = True
                if not self.closed:
                    self.parse_failed()
                return

    cdef void parse_failed(self):
        cdef Http1Parser p = self.parser
        cdef int limit = p.msg.limit
        if limit == LIMIT_URL:
            self.bad_input("URI_TOO_LONG", "request URI longer than %d bytes" % p.msg.max_url)
        elif limit == LIMIT_HEADERS:
            self.bad_input("HEADERS_TOO_LARGE", "more than %d header lines" % p.msg.max_headers)
        elif limit == LIMIT_HEAD:
            self.bad_input("HEADERS_TOO_LARGE", "header section larger than %d bytes" % p.msg.max_head)
        else:
            reason = (<bytes>p.p.reason).decode("latin-1", "replace") if p.p.reason != NULL else "?"
            self.bad_input("BAD_REQUEST", f"malformed request: {reason}")

    def bad_input(self, str error_type, str detail):
        """The input cannot be parsed further: answer in order, then close."""
        cdef RequestContext parsing = self.parsing
        cdef RequestContext ctx = self.ctx
        self.unread = True   # what follows is not read: the close must linger
        if parsing is None or parsing is ctx and ctx.responding:
            # nothing to attach the error to (or the active response already started): close
            if ctx is None:
                parsing = RequestContext()
                parsing.snapshot = self.worker.snapshot
                self.fill_basic(parsing)
                parsing.refused = error_type
                parsing.body_complete = True
                self.parsing = parsing
                self.begin_active(parsing)
                return
            self.close_after = True
            if not ctx.responding:
                self.out.respond_error(ctx, error_type, detail)
            return
        if parsing is ctx:
            self.close_after = True
            ctx.error_message = detail
            if not ctx.responding:
                self.release_upstream()
                self.out.respond_error(ctx, error_type, detail)
            return
        parsing.refused = error_type
        parsing.body_complete = True
        parsing.error_message = detail
        if parsing.queued:
            return
        # not yet queued (the head is incomplete)
        self.fill_basic(parsing)
        if ctx is None:
            self.begin_active(parsing)
        else:
            self.queue(parsing)
        self.parsing = None

    cdef fill_basic(self, RequestContext ctx):
        if ctx.method is None or not ctx.method:
            # the method is known once the request line's URL has started
            ctx.method = self.parser.method_bytes() if self.parser.msg.url_len > 0 else b"-"
        ctx.source_ip = self.peer_ip
        ctx.source_port = self.peer_port
        ctx.local_port = self.local_port
        if ctx.request_id is None or not ctx.request_id:
            ctx.request_id = self.worker.new_request_id()
        if ctx.url is not None and ctx.path == b"/":
            ctx.path = ctx.url[:256]
        if ctx.headers is None:
            ctx.headers = []
        if ctx.start == 0:
            ctx.start = event_time()
            ctx.request_time_ms = event_epoch_ms()

    # --- parser events ------------------------------------------------------------

    cdef void message_begin(self):
        cdef RequestContext ctx = RequestContext()
        cdef Snapshot snap = self.worker.snapshot
        ctx.snapshot = snap
        ctx.start = event_time()
        ctx.request_time_ms = event_epoch_ms()
        ctx.headers = []
        ctx.forward_headers = []
        ctx.source_ip = self.peer_ip
        ctx.source_port = self.peer_port
        ctx.local_port = self.local_port
        ctx.tls = self.tls
        ctx.client_cert = self.client_cert
        self.parsing = ctx
        self.in_head = True
        if self.ctx is None:
            self.deadline_kind = DL_HEAD
            self.deadline = ctx.start + snap.header_timeout

    cdef void take_header(self, RequestContext ctx, bytes name, bytes value):
        cdef tuple pair = (name, value)
        cdef int kind = classify(name)
        ctx.headers.append(pair)
        if kind == H_OTHER or kind == H_DATE:
            if not client_cert_header(name):
                ctx.forward_headers.append(pair)
        elif kind == H_HOST:
            ctx.host_count += 1
            ctx.host = value
        elif kind == H_CONTENT_LENGTH:
            ctx.cl_count += 1
            ctx.content_length = parse_content_length(value)
            if ctx.content_length < 0:
                ctx.cl_bad = True
        elif kind == H_TRANSFER_ENCODING:
            ctx.te_count += 1
            if value.strip().lower() != b"chunked":
                ctx.te_bad = True
            ctx.chunked = True
        elif kind == H_CONNECTION:
            ctx.conn_tokens = connection_tokens(value, ctx.conn_tokens)
        elif kind == H_UPGRADE:
            ctx.upgrade_protocol = value
        elif kind == H_EXPECT:
            if value.strip().lower() == b"100-continue":
                ctx.expect_continue = True
            else:
                ctx.parse_error = "EXPECTATION_FAILED"
        elif kind == H_REQUEST_ID:
            ctx.h_rid = value
        elif kind == H_TRACEPARENT or kind == H_TRACESTATE or kind == H_XRAY:
            if (<Snapshot>ctx.snapshot).tracer is None:
                ctx.forward_headers.append(pair)   # not tracing: pass the client's context through
            elif kind == H_TRACEPARENT:
                ctx.h_traceparent = value if ctx.h_traceparent is None else b""   # two: invalid
            elif kind == H_TRACESTATE:
                ctx.h_tracestate = value if ctx.h_tracestate is None else \
                    ctx.h_tracestate + b"," + value
            else:
                ctx.h_xray = value
        elif kind == H_VIA:
            ctx.via_received = value if ctx.via_received is None else ctx.via_received + b", " + value
        elif kind == H_XFF:
            ctx.h_xff = value if ctx.h_xff is None else ctx.h_xff + b", " + value
        elif kind == H_XFP:
            ctx.h_xfp = value
        elif kind == H_XFH:
            ctx.h_xfh = value
        elif kind == H_XFPORT:
            ctx.h_xfport = value
        elif kind == H_FORWARDED or kind == H_X_REAL_IP or kind == H_TRUE_CLIENT_IP:
            if self.trusted:
                ctx.forward_headers.append(pair)   # else a client could name any address to the upstream
        # keep-alive, proxy-connection, te, trailer, proxy-authorization, http2-settings:
        # hop-by-hop (or meant for this proxy), dropped

    cdef bint head_complete(self):
        """The request head is parsed: fill the context, validate, run or queue it.
        False when the rest of the input must not be read."""
        cdef Http1Parser p = self.parser
        cdef RequestContext ctx = self.parsing
        cdef int i
        self.in_head = False
        ctx.url = p.url_bytes()
        for i in range(p.msg.n_headers):
            self.take_header(ctx, p.name_bytes(i), p.value_bytes(i))
        if not self.validate_head(ctx):
            # nothing after a head that could not be trusted is read: it is answered in turn
            ctx.keep_alive = False
            ctx.body_complete = True
            self.unread = True   # a body (or more requests) may follow: the close must linger
            self.parsing = None
            if self.ctx is None:
                self.begin_active(ctx)
            else:
                self.queue(ctx)
            return False
        if self.ctx is None:
            self.begin_active(ctx)
        else:
            self.queue(ctx)
        return not self.closed

    cdef bint body(self, bytes data):
        cdef RequestContext ctx = self.parsing
        cdef long long limit
        ctx.request_length += PyBytes_GET_SIZE(data)
        # a routed request has its route's limit (the gateway's unless the route overrides it);
        # a pipelined one not yet routed is held to the gateway's
        limit = ctx.route.max_body_size if ctx.route is not None else \
            (<Snapshot>ctx.snapshot).max_body
        if 0 <= limit < ctx.request_length:
            self.bad_input("REQUEST_TOO_LARGE", "request body larger than the limit")
            return False
        if ctx is self.ctx:
            ctx.body_last = monotonic_coarse()
            if self.deadline_kind == DL_BODY:
                self.deadline = self.body_due(ctx)
            self.exchange.add_body(ctx, data)
        else:
            # queued behind the active request: kept for when its turn comes
            if ctx.body_chunks is None:
                ctx.body_chunks = []
            ctx.body_chunks.append(data)
            ctx.body_kept += PyBytes_GET_SIZE(data)
        return not self.closed

    cdef bint message_complete(self):
        cdef RequestContext ctx = self.parsing
        self.parsing = None
        if ctx is self.ctx:
            self.exchange.body_done(ctx)
        else:
            ctx.body_complete = True
        return ctx.keep_alive and not self.closed

    # --- the request ------------------------------------------------------------

    cdef bint validate_head(self, RequestContext ctx):
        """Fill ctx from the parsed head; False with ctx.refused set when it cannot be served
        (a 400-class gateway response, after which the connection closes)."""
        cdef Snapshot snap = <Snapshot>ctx.snapshot
        cdef bytes url = ctx.url
        cdef Py_ssize_t q
        cdef const char* hit
        cdef str err = None
        cdef str detail = None
        cdef Http1Parser p = self.parser
        cdef bytes canonical
        cdef int verdict = 0
        ctx.method = p.method_bytes()
        ctx.keep_alive = p.msg.keep_alive
        if p.p.http_major == 1 and p.p.http_minor <= 1:
            ctx.http_minor = p.p.http_minor
        else:
            err, detail = "BAD_REQUEST", "HTTP version %d.%d is not supported" % (
                p.p.http_major, p.p.http_minor)
        if url is None:
            url = b"/"
        if err is None:
            if url[0] != 47:   # not origin-form
                if url.startswith(b"http://") or url.startswith(b"https://"):
                    # absolute-form: the authority replaces Host (RFC 9112 section 3.2.2)
                    rest = url.split(b"//", 1)[1]
                    q = rest.find(b"/")
                    authority = rest if q < 0 else rest[:q]
                    url = b"/" if q < 0 else rest[q:]
                    if b"@" in authority or not authority:
                        err, detail = "BAD_REQUEST", "bad request target"
                    else:
                        ctx.host = authority
                        if ctx.host_count == 0:
                            ctx.host_count = 1
                elif url == b"*" and ctx.method == b"OPTIONS":
                    pass
                else:
                    err, detail = "BAD_REQUEST", "bad request target"
        # PERF: memchr, not bytes.find (a Python method call: about 800 instructions a
        # request, bench/ir_per_request.py)
        hit = <const char*>memchr(PyBytes_AS_STRING(url), b'?', PyBytes_GET_SIZE(url))
        q = hit - PyBytes_AS_STRING(url) if hit != NULL else -1
        if q >= 0:
            ctx.path = url[:q]
            ctx.query = url[q + 1:]
        else:
            ctx.path = url
        if err is None:
            # route, check and forward one spelling of the path (paths.pxd); the query stays as sent
            canonical = canonical_path(ctx.path, &verdict)
            if canonical is None:
                err, detail = "BAD_REQUEST", refusal_reason(verdict)
            else:
                ctx.path = canonical
        if err is None:
            if ctx.cl_count > 1:
                err, detail = "BAD_FRAMING", "more than one Content-Length"
            elif ctx.cl_bad:
                err, detail = "BAD_FRAMING", "malformed Content-Length"
            elif ctx.te_count and ctx.cl_count:
                err, detail = "BAD_FRAMING", "both Content-Length and Transfer-Encoding"
            elif ctx.te_count > 1 or ctx.te_bad:
                err, detail = "BAD_FRAMING", "Transfer-Encoding other than chunked"
            elif ctx.te_count and ctx.http_minor == 0:
                err, detail = "BAD_FRAMING", "Transfer-Encoding in an HTTP/1.0 request"
            elif ctx.http_minor == 1 and ctx.host_count == 0:
                err, detail = "MISSING_HOST", "missing Host header"
            elif ctx.host_count > 1:
                err, detail = "MISSING_HOST", "more than one Host header"
            elif ctx.parse_error is not None:
                err, detail = "BAD_REQUEST", "unsupported Expect"
            elif ctx.method == b"CONNECT":
                err, detail = "METHOD_NOT_ALLOWED", "CONNECT is not supported"
        if ctx.host is None or not ctx.host:
            ctx.host = b""
        if self.last_host is not None and ctx.host == self.last_host:
            ctx.route_host = self.last_route_host     # keep-alive clients repeat their Host
        else:
            ctx.route_host = route_host_of(ctx.host)
            if valid_host(ctx.host):
                self.last_host = ctx.host
                self.last_route_host = ctx.route_host
            elif err is None:
                err, detail = "BAD_REQUEST", "invalid Host header"
        if err is None and snap.mtls_hosts is not None and not client_cert_allows(
                snap.mtls_hosts, ctx.route_host, self.client_cert):
            err, detail = "CLIENT_CERT_REQUIRED", "no client certificate verified for this domain"
        ctx.upgrade = ctx.upgrade_protocol is not None and p.p.upgrade
        if ctx.h_rid is not None and valid_request_id(ctx.h_rid):
            ctx.request_id = ctx.h_rid
        else:
            ctx.request_id = self.worker.new_request_id()
        if snap.tracer is not None:
            ctx.trace = snap.tracer.begin(ctx.h_traceparent, ctx.h_tracestate, ctx.h_xray, ctx.start)
        if self.trusted and ctx.h_xff is not None:
            ctx.forwarded_for = ctx.h_xff + b", " + self.peer_ip
            # the address the trusted proxy saw: the last hop it appended
            last = ctx.h_xff.rpartition(b",")[2].strip()
            ctx.client_ip = last if last else self.peer_ip
        else:
            ctx.forwarded_for = self.peer_ip
            ctx.client_ip = self.peer_ip
        if ctx.conn_tokens is not None:
            ctx.forward_headers = drop_named(ctx.forward_headers, ctx.conn_tokens)
        ctx.forwarded_proto = ctx.h_xfp if (self.trusted and ctx.h_xfp is not None) else \
            (b"https" if ctx.tls else b"http")
        ctx.forwarded_host = ctx.h_xfh if (self.trusted and ctx.h_xfh is not None) else \
            (ctx.host or None)
        ctx.forwarded_port = ctx.h_xfport if (self.trusted and ctx.h_xfport is not None) else \
            self.port_bytes
        if err is not None:
            ctx.error_message = detail
            ctx.refused = err
            return False
        return True

    cdef void queue(self, RequestContext ctx):
        """ctx waits behind the active request; reading pauses until its turn."""
        ctx.queued = True
        self.pending.append(ctx)
        self.set_pause(PAUSE_PIPELINE, True)

    cdef void begin_active(self, RequestContext ctx):
        """Make ctx the active request and run its phases."""
        self.ctx = ctx
        self.total_deadline = 0
        ctx.body_retained = ctx.body_kept <= RETRY_BODY_MAX
        if not ctx.body_complete and ctx.content_length <= 0 and not ctx.chunked:
            # no body by framing: the request is whole at headers-complete
            ctx.body_complete = True
        self.deadline_kind = DL_BODY
        ctx.body_start = ctx.body_last = monotonic_coarse()
        self.deadline = self.body_due(ctx)
        self.exchange.begin(ctx)

    cdef void exchange_over(self, RequestContext ctx):
        """The response is fully written (and logged): serve the next request, or close."""
        cdef RequestContext nxt
        self.ctx = None
        self.total_deadline = 0
        self.set_pause(PAUSE_NOT_READY, False)
        self.set_pause(PAUSE_UPSTREAM_FULL, False)
        if self.close_after or self.closed or not ctx.body_complete:
            if not ctx.body_complete:
                self.unread = True
            self.close_transport()
            return
        if self.pending:
            nxt = <RequestContext>self.pending.pop(0)
            if not self.pending:
                self.set_pause(PAUSE_PIPELINE, False)
            self.begin_active(nxt)
            return
        self.set_pause(PAUSE_PIPELINE, False)
        if self.in_head:
            self.deadline_kind = DL_HEAD
            self.deadline = self.parsing.start + self.worker.snapshot.header_timeout
        else:
            self.deadline_kind = DL_IDLE
            self.deadline = ctx.end + self.worker.snapshot.keepalive_timeout

    cdef void release_upstream(self):
        self.proxy.drop(self.ctx)

    cdef void check_timeout(self, double now):
        cdef int kind = self.deadline_kind
        cdef RequestContext ctx = self.ctx
        cdef Snapshot snap
        cdef double due
        cdef str detail
        if self.total_deadline > 0 and self.total_deadline <= now and ctx is not None:
            kind = DL_UPSTREAM_READ
        if self.ws is not None and not self.lingering:
            (<WebSocket>self.ws).check_timeout(now)
        elif self.lingering:
            self.closed = True
            self.transport.close()
        elif kind == DL_IDLE or kind == DL_DRAIN:
            self.close_transport()
        elif kind == DL_HEAD:
            if ctx is None and self.parsing is not None:
                self.close_after = True
                self.bad_input("REQUEST_TIMEOUT", "request head not complete in time")
            elif ctx is None:
                self.close_transport()
        elif kind == DL_BODY:
            if ctx is not None and not ctx.responding:
                snap = <Snapshot>ctx.snapshot
                due = self.body_due(ctx)
                if due > now:
                    self.deadline = due     # a pause moved the body's clock on
                    return
                self.close_after = True
                if ctx.body_complete or now >= ctx.body_last + snap.body_timeout:
                    detail = "request body stalled"
                elif snap.body_deadline > 0 and now >= ctx.body_start + snap.body_deadline:
                    detail = "request body not complete within %g s" % snap.body_deadline
                else:
                    detail = "request body slower than %g bytes/s" % snap.min_body_rate
                self.out.respond_error(ctx, "REQUEST_TIMEOUT", detail)
            else:
                self.abort()
        elif kind == DL_CONNECT or kind == DL_UPSTREAM_READ:
            self.proxy.timed_out(kind)

    cdef void shutdown(self):
        """Graceful drain: close if idle, else close after the current response. A tunnel
        (WebSocket) runs on until one side closes it or the drain timeout ends it: pausing
        its reads, as for a pipelined request, would stall it."""
        self.close_after = True
        if self.tunnel or self.ws is not None:
            return      # (a WebSocket API's connections get 1001 when the drain ends: worker.py)
        if self.ctx is None and not self.in_head:
            self.close_transport()
        else:
            self.set_pause(PAUSE_PIPELINE, True)
