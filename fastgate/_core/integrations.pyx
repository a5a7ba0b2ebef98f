# cython: language_level=3, boundscheck=False, wraparound=False
"""The integrations answered in the gateway; integrations.pxd is the map of this file."""

from cpython.bytes cimport PyBytes_GET_SIZE

import orjson

from fastgate._core.headers cimport Template
from fastgate._core.fields cimport without_content_encoding
from fastgate._core.clock cimport event_time
from fastgate._core.pipeline cimport (
    RequestContext, Route, INTEGRATION_MOCK, INTEGRATION_ECHO, INTEGRATION_FUNCTION,
    INTEGRATION_PYTHON, INTEGRATION_WEBSOCKET,
)
from fastgate._core.proxy cimport upstream_request_head, RETRY_BODY_MAX
from fastgate._core.respond cimport Responder
from fastgate._core.runtime cimport Downstream, Worker, DL_NONE, PAUSE_PIPELINE
from fastgate._core.snapshot cimport Snapshot
from fastgate._core.websocket cimport WebSocket


cdef bint decode_body(RequestContext ctx):
    """The whole request body, as a phase that reads it (body validation, a function's
    event) must see it: a Content-Encoding (gzip, deflate, br, zstd) undone once, in
    place -- body_chunks, framing and the forwarded headers then describe the decoded
    body, so an http integration gets it decoded too (API Gateway decompresses before
    dispatching). False after choosing the gateway response: 415 for an unknown coding
    or data not in it (AWS's answer for both), 413 past the route's body limit, which
    caps the decoded size (the decoders stop at it: a bomb never inflates further).
    Also before a mapping template reads the body (http integrations, VTL mocks).
    Plain proxying never calls this: a compressed body passes through untouched."""
    if ctx.body_decoded:
        return True
    ctx.body_decoded = True
    coding = ctx.header(b"content-encoding")
    if coding is None:
        return True
    hooks = (<Snapshot>ctx.snapshot).hooks
    cap = ctx.route.max_body_size if ctx.route.max_body_size >= 0 else DECODED_BODY_MAX
    raw = b"".join(ctx.body_chunks) if ctx.body_chunks else b""
    try:
        body = hooks.decode_request_body(coding, raw, cap)
    except hooks.RequestBodyError as e:
        ctx.error_type = "REQUEST_TOO_LARGE" if e.status == 413 else "UNSUPPORTED_MEDIA_TYPE"
        ctx.error_message = str(e)
        return False
    ctx.body_chunks = [body]
    ctx.body_sent = 0
    ctx.body_kept = PyBytes_GET_SIZE(body)
    ctx.body_retained = ctx.body_kept <= RETRY_BODY_MAX   # as for a body that arrived plain
    ctx.content_length = PyBytes_GET_SIZE(body)
    ctx.chunked = False
    ctx.forward_headers = without_content_encoding(ctx.forward_headers)
    if ctx.upstream_headers is not None:    # transforms ran already (a function's event)
        ctx.upstream_headers = without_content_encoding(ctx.upstream_headers)
    return True


cdef class Integrations:
    def __init__(self, Downstream down, Responder out):
        self.down = down
        self.out = out
        self.worker = down.worker

    cdef void run(self, RequestContext ctx):
        """The INTEGRATION phase of a route that is not proxied, once the body is whole."""
        cdef int integration = ctx.route.integration
        if integration == INTEGRATION_MOCK:
            self.respond_mock(ctx)
        elif integration == INTEGRATION_ECHO:
            self.respond_echo(ctx)
        elif integration == INTEGRATION_FUNCTION or integration == INTEGRATION_PYTHON:
            self.start_function(ctx)
        elif integration == INTEGRATION_WEBSOCKET:
            self.start_websocket(ctx)

    cdef void respond_mock(self, RequestContext ctx):
        cdef Route route = ctx.route
        if route.mock_vtl is not None:
            self.respond_mock_vtl(ctx, route)
            return
        cdef bytes body = (<Template>route.mock_body).render(ctx) if route.mock_body is not None else b""
        self.out.respond(ctx, route.mock_status, route.mock_headers, body)

    cdef void respond_mock_vtl(self, RequestContext ctx, Route route):
        """A mock with Velocity mapping templates (fastgate/phases/vtl.py): Python, off the fast path."""
        if not decode_body(ctx):
            self.out.respond_error(ctx, ctx.error_type, ctx.error_message)
            return
        body = b"".join(ctx.body_chunks) if ctx.body_chunks else b""
        ctx.body_chunks = []
        ctype = ctx.header(b"content-type")
        accept = ctx.header(b"accept")
        try:
            result = route.mock_vtl.respond((<Snapshot>ctx.snapshot).hooks.mapping_event(ctx, body), body,
                                            ctype.decode("latin-1") if ctype is not None else None,
                                            accept.decode("latin-1") if accept is not None else None)
        except Exception as e:    # never let a template bug take the worker down
            result = "DEFAULT_5XX"
            ctx.error_message = repr(e)
        self.out.respond_result(ctx, result)

    cdef void start_function(self, RequestContext ctx):
        """The whole body is here: hand the request to the worker's function runner (or the
        Python runner an INTEGRATION_PYTHON route carries: fastgate.phases.aws), which calls
        function_done() (integration_done()) when it answers or fails."""
        if ctx.integration_start > 0:
            # already running: a request without a body is whole at head-complete (the phases
            # start the function) and message-complete comes after; a function answers later,
            # so `responding` cannot tell, and the handler would run twice
            return
        ctx.integration_start = event_time()
        runner = ctx.route.runner if ctx.route.integration == INTEGRATION_PYTHON else self.worker.functions
        if runner is None:
            self.out.respond_error(ctx, "INTEGRATION_FAILURE", "no function runner in this worker", 502)
            return
        if not decode_body(ctx):
            self.out.respond_error(ctx, ctx.error_type, ctx.error_message)
            return
        body = b"".join(ctx.body_chunks) if ctx.body_chunks else b""
        ctx.body_chunks = []
        self.down.deadline_kind = DL_NONE   # the runner enforces the integration timeout itself
        runner.start(self, ctx, body)

    def function_done(self, RequestContext ctx, int status, list headers, bytes body,
                      str error_type=None, str detail=None):
        """A function's response (or its failure: error_type set, body AWS's JSON)."""
        if ctx is not self.down.ctx or self.down.closed or ctx.responding:
            return      # the client went away meanwhile, or a timeout already answered
        ctx.integration_end = event_time()
        if error_type is not None:
            ctx.error_type = error_type
            ctx.error_message = detail
            headers = [(b"Content-Type", b"application/json")]
            if ctx.api is not None and ctx.api.rest:
                headers.append((b"x-amzn-ErrorType", b"InternalServerErrorException"))
            self.out.respond(ctx, status, headers, body)
        else:
            self.out.respond_integration(ctx, status, headers, body)
        self.down.uncork()

    def integration_done(self, RequestContext ctx, result, str detail=None, int status=-1):
        """A Python integration's answer (INTEGRATION_PYTHON): (status, headers, body) as its
        integration response mapped it, or the gateway response type of its failure, with
        the cause (detail: for the logs, never the client) and the status it answers unless
        the API customised the type."""
        if ctx is not self.down.ctx or self.down.closed or ctx.responding:
            return      # the client went away meanwhile
        ctx.integration_end = event_time()
        if isinstance(result, str):
            self.out.respond_error(ctx, result, detail, status)
        elif ctx.route.response_map is not None:    # an HTTP API's responseParameters
            self.out.respond_integration(ctx, result[0], result[1], result[2])
        else:
            self.out.respond_result(ctx, result)
        self.down.uncork()

    def function_stream_head(self, RequestContext ctx, int status, list headers):
        """A streamed function response's head; chunks follow with function_stream_chunk.
        False when the client is gone (or a timeout answered): the stream is not wanted."""
        if ctx is not self.down.ctx or self.down.closed or ctx.responding:
            return False
        ctx.integration_end = event_time()     # the first byte: the integration latency
        self.out.start_stream(ctx, status, headers)
        self.down.uncork()
        return True

    def function_stream_chunk(self, RequestContext ctx, bytes data):
        """One chunk of a streamed function response, written as it comes (False: client gone)."""
        if ctx is not self.down.ctx or self.down.closed:
            return False
        self.out.stream(ctx, data)
        return True

    def function_stream_end(self, RequestContext ctx, str error_type=None, str detail=None):
        if ctx is not self.down.ctx or self.down.closed:
            return
        self.out.end_stream(ctx, error_type, detail)

    cdef void start_websocket(self, RequestContext ctx):
        """A WebSocket API's stage URL (the upgrade: $connect) or its @connections API: the
        stage's Python endpoint answers, through function_done() (a refusal, an @connections
        answer) or websocket_accept() (the 101)."""
        if ctx.integration_start > 0:
            return      # (as start_function: the request was whole at head-complete already)
        ctx.integration_start = event_time()
        body = b"".join(ctx.body_chunks) if ctx.body_chunks else b""
        ctx.body_chunks = []
        self.down.deadline_kind = DL_NONE   # the endpoint bounds its integration itself
        ctx.route.websocket.start(self, ctx, body)

    def websocket_accept(self, RequestContext ctx, handler, str connection_id, bytes accept,
                         bytes protocol=None, **limits):
        """$connect allowed the connection: the 101, then this connection speaks WebSocket
        (websocket.pxd); the request is logged now and let go (an idle connection holds
        only its WebSocket). The WebSocket, or None when the client went away meanwhile."""
        cdef Downstream down = self.down
        cdef WebSocket ws
        if ctx is not down.ctx or down.closed or ctx.responding:
            return None
        ctx.integration_end = event_time()
        ctx.status = 101
        ctx.responding = True
        head = [b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: ", accept, b"\r\n"]
        if protocol:
            head += [b"Sec-WebSocket-Protocol: ", protocol, b"\r\n"]
        head += [b"Date: ", self.worker.date, b"\r\nx-amzn-RequestId: ", ctx.request_id, b"\r\n\r\n"]
        down.send(b"".join(head))
        ws = WebSocket(down, handler, connection_id, **limits)
        down.ws = ws
        self.out.log(ctx)
        down.served += 1
        down.ctx = None
        down.set_pause(PAUSE_PIPELINE, False)
        if down.early_tunnel:
            early, down.early_tunnel = down.early_tunnel, None
            ws.feed(early)
        down.uncork()
        return ws

    cdef void respond_echo(self, RequestContext ctx):
        """The request as the integration would have received it, after transforms, as JSON."""
        body = b"".join(ctx.body_chunks) if ctx.body_chunks else b""
        try:
            text = body.decode("utf-8")
            b64 = False
        except UnicodeDecodeError:
            import base64
            text = base64.b64encode(body).decode()
            b64 = True
        headers = {}
        # exactly the head an http integration would get (gateway headers included), with the
        # request's own Host; framing lines say nothing about the request itself
        for line in upstream_request_head(self.worker, ctx, ctx.host).split(b"\r\n")[1:]:
            name, sep, value = line.partition(b": ")
            if not sep:
                continue
            k = name.decode("latin-1").lower()
            if k in ("content-length", "transfer-encoding"):
                continue
            v = value.decode("latin-1")
            headers[k] = headers[k] + "," + v if k in headers else v
        doc = {
            "method": ctx.method.decode(),
            "path": ctx.upstream_path.split(b"?", 1)[0].decode("latin-1"),
            "rawPath": ctx.path.decode("latin-1"),
            "query": ctx.query.decode("latin-1"),
            "routeKey": ctx.route.route_key,
            "resourcePath": ctx.route.resource_path or None,
            "stagePath": ctx.stage_path.decode("latin-1") if ctx.stage_path is not None else None,
            "pathParameters": {k.decode("latin-1"): v.decode("latin-1")
                               for k, v in ctx.path_params.items()} if ctx.path_params else {},
            "headers": headers,
            "body": text,
            "isBase64Encoded": b64,
            "requestContext": {
                "requestId": ctx.request_id.decode("latin-1"),
                "sourceIp": ctx.source_ip.decode(),
                "forwardedFor": ctx.forwarded_for.decode("latin-1"),
                "protocol": "HTTP/1.%d" % ctx.http_minor,
                "domainName": ctx.route_host.decode("latin-1"),
                "requestTimeEpoch": ctx.request_time_ms,
            },
        }
        if ctx.api is not None:
            doc["requestContext"].update({
                "apiId": ctx.api.api_id, "stage": ctx.api.stage,
                "deploymentId": ctx.api.deployment_id, "canary": ctx.api.is_canary})
            doc["stageVariables"] = ctx.api.variables or None
        self.out.respond(ctx, 200, [(b"Content-Type", b"application/json")],
                         orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
