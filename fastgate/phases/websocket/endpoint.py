"""A WebSocket API stage as a worker serves it.

The core routes two kinds of request here (Route.websocket, INTEGRATION_WEBSOCKET), after
the ACCESS and THROTTLE phases ran ($connect's authorizer, the stage's throttle):

- the upgrade on the stage URL: $connect's integration decides; a 2xx (or no $connect
  route) answers 101 and the connection speaks WebSocket from then on, any other status
  refuses the upgrade with that status;
- the @connections API (/@connections/{connectionId}: POST, GET, DELETE), SigV4-signed
  for the execute-api service, as botocore's apigatewaymanagementapi calls it.

Then each message comes to WebSocketRuntime.message (the handler of every WebSocket of
the worker, fastgate/_core/websocket.pxd), which routes it by the API's route selection
expression to its route, else $default, else answers AWS's Forbidden frame; the end of a
connection runs $disconnect once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import time
from urllib.parse import unquote

import orjson

from fastgate._core.websocket import WsCounter, accept_key
from fastgate.observability.log import log
from fastgate.phases.functions.gateway import authorizer_of
from fastgate.phases.websocket import management
from fastgate.phases.websocket.connections import (
    OP_POST, ConnectionBus, LocalConnections, connection_id_for,
)
from fastgate.phases.websocket.events import (
    ConnectionInfo, connect_event, disconnect_event, epoch_ms_now, message_event, new_request_id,
    reseed,
)
from fastgate.phases.websocket.integrations import result_body, result_status

# A client's messages in its routes at once: past HOLD_AT the gateway stops reading it (they
# wait in the socket); the ones a single read already held, past REFUSE_AT, answer "Too Many
# Requests" (a read of 64 KiB can hold thousands of tiny frames).
HOLD_AT = 64
REFUSE_AT = 256
ERROR_KINDS = ("protocol", "too_big", "route", "integration", "refused", "gone", "throttled",
               "invalid")
JSON = (b"Content-Type", b"application/json")


class WsRoute:
    """One route of the stage: its key, integration and whether it answers (two-way)."""

    __slots__ = ("key", "integration", "two_way", "limiters", "models")

    def __init__(self, key: str, integration, two_way: bool, limiters: tuple = (), models=None):
        self.key = key
        self.integration = integration
        self.two_way = two_way
        self.limiters = limiters     # fastgate._core.throttle.Limiter: the stage's, per route, then the gateway's
        self.models = models         # fastgate.phases.websocket.models.RouteModels, or None


class StageMetrics:
    """The stage's series: WebSocket.slots for the compiled session, the rest here."""

    def __init__(self, metrics, api_id: str, stage: str, worker_id: int = 0):
        self.metrics = metrics
        if metrics is None:
            self.slots = ()
            self.connect = -1
            self.errors = {}
            return
        labels = {"api": api_id, "stage": stage}
        slots = [-1] * WsCounter.WS_SLOTS
        slots[WsCounter.WS_MESSAGES_IN] = metrics.counter_series(
            "fastgate_websocket_messages_total", {**labels, "direction": "in"})
        slots[WsCounter.WS_MESSAGES_OUT] = metrics.counter_series(
            "fastgate_websocket_messages_total", {**labels, "direction": "out"})
        self.errors = {kind: metrics.counter_series("fastgate_websocket_errors_total",
                                                    {**labels, "kind": kind}) for kind in ERROR_KINDS}
        slots[WsCounter.WS_ERR_PROTOCOL] = self.errors["protocol"]
        slots[WsCounter.WS_ERR_TOO_BIG] = self.errors["too_big"]
        slots[WsCounter.WS_CONNECTIONS] = metrics.gauge_series("fastgate_websocket_connections", labels)
        slots[WsCounter.WS_WORKER_CONNECTIONS] = metrics.gauge_series(
            "fastgate_worker_websocket_connections", {**labels, "worker": str(worker_id)})
        self.slots = tuple(slots)
        self.connect = metrics.counter_series("fastgate_websocket_connect_total", labels)

    def error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.add(self.errors[kind], 1)

    def connected(self) -> None:
        if self.metrics is not None:
            self.metrics.add(self.connect, 1)


class StageEndpoint:
    """One stage of one WebSocket API, compiled (fastgate.compile.websocket)."""

    def __init__(self, runtime: "WebSocketRuntime", *, api_id: str, name: str, stage: str,
                 selection: tuple[str, ...], routes: dict[str, WsRoute], limits: dict,
                 credentials: dict[str, str], metrics: StageMetrics, variables: dict):
        self.runtime = runtime
        self.api_id = api_id
        self.name = name
        self.stage = stage
        self.selection = selection          # the JSON path $request.body.a.b names: ("a", "b")
        self.routes = routes
        self.limits = limits                # WebSocket(...) keywords: max_frame, max_message, ...
        self.credentials = credentials      # SigV4 access key id -> secret (@connections)
        self.metrics = metrics
        self.variables = variables
        self.scope = f"{api_id}/{stage}"     # @connections reach this stage's connections only
        self.access_log = None              # fastgate.phases.websocket.accesslog.WsAccessLog, or None

    def record(self, info, event_type: str, route_key, request_id: str, status: int, **kw) -> None:
        """The event's line in the stage's access log (accessLogSettings), if it has one."""
        if self.access_log is not None:
            try:
                self.access_log.write(info, event_type, route_key, request_id, status, **kw)
            except Exception as e:      # a log line never costs a connection
                log(f"websocket {self.api_id}/{self.stage}: access log: {e!r}")

    # --- called by the core (Integrations.start_websocket) --------------------------------

    def start(self, exchange, ctx, body: bytes) -> None:
        try:
            if ctx.route.route_key == "$connect":
                self.connect(exchange, ctx)
            else:
                self.manage(exchange, ctx, body)
        except Exception as e:       # a bug here must answer the client, never hang it
            log(f"websocket {self.api_id}/{self.stage}: {e!r}")
            ctx.keep_alive = False
            exchange.function_done(ctx, 500, [JSON], b'{"message": "Internal server error"}')

    # --- the upgrade: $connect ----------------------------------------------------------

    def refuse(self, exchange, ctx, status: int, body: bytes, headers=None) -> None:
        self.metrics.error("refused")
        ctx.keep_alive = False       # the client may have sent frames after its upgrade request
        exchange.function_done(ctx, status, headers or [JSON], body)

    def connect(self, exchange, ctx) -> None:
        key = ctx.header(b"sec-websocket-key")
        if ctx.method != b"GET" or ctx.upgrade_protocol is None or \
                ctx.upgrade_protocol.strip().lower() != b"websocket":
            # RFC 6455 section 4.2.2: a plain request on a WebSocket endpoint
            self.refuse(exchange, ctx, 426, b'{"message": "Upgrade Required"}',
                        [JSON, (b"Upgrade", b"websocket")])
            return
        if (ctx.header(b"sec-websocket-version") or b"").strip() != b"13":
            self.refuse(exchange, ctx, 426, b'{"message": "Unsupported WebSocket version"}',
                        [JSON, (b"Sec-WebSocket-Version", b"13")])
            return
        try:
            valid_key = key is not None and len(base64.b64decode(key.strip(), validate=True)) == 16
        except (binascii.Error, ValueError):
            valid_key = False
        if not valid_key:
            self.refuse(exchange, ctx, 400, b'{"message": "Bad Request"}')
            return
        runtime = self.runtime
        ua = ctx.header(b"user-agent")
        cid = connection_id_for(ctx.request_id, runtime.bus.tag, runtime.bus.pid)
        if cid in runtime.local.by_id:      # (a client's X-Request-Id used twice)
            cid = connection_id_for(ctx.request_id + os.urandom(8), runtime.bus.tag, runtime.bus.pid)
        info = ConnectionInfo(cid, self.api_id, self.stage, ctx.route_host.decode("latin-1"),
                              ctx.client_ip.decode("latin-1"),
                              ua.decode("latin-1") if ua is not None else None, ctx.request_time_ms)
        info.endpoint = self
        if ctx.auth is not None:
            info.authorizer = authorizer_of(ctx.auth, False)
        route = self.routes.get("$connect")
        if route is None:
            self.accept(exchange, ctx, info, key, None, ctx.request_id.decode("latin-1"))
            return
        request_id = new_request_id()
        headers = list(ctx.headers)
        names = {n.lower() for n, _ in headers}
        # what AWS's edge adds to the upgrade request's headers
        if b"x-forwarded-for" not in names:
            headers.append((b"X-Forwarded-For", ctx.forwarded_for))
        if b"x-forwarded-port" not in names:
            headers.append((b"X-Forwarded-Port", ctx.forwarded_port))
        if b"x-forwarded-proto" not in names:
            headers.append((b"X-Forwarded-Proto", ctx.forwarded_proto))
        event = connect_event(info, request_id, info.connected_at, headers, ctx.query)

        def done(result, error):
            if error is not None:
                log(f"websocket {self.api_id}/{self.stage} $connect: {error}")
                self.record(info, "CONNECT", "$connect", request_id, 502, error=str(error))
                self.refuse(exchange, ctx, 502, b'{"message": "Internal server error"}')
                return
            status = result_status(result)
            if not 200 <= status < 300:
                self.record(info, "CONNECT", "$connect", request_id, status)
                body = result_body(result)
                self.refuse(exchange, ctx, status,
                            (body.encode() if isinstance(body, str) else body) or b"", [])
                return
            protocol = None
            if isinstance(result, dict) and isinstance(result.get("headers"), dict):
                for k, v in result["headers"].items():
                    if k.lower() == "sec-websocket-protocol":
                        protocol = str(v).encode("latin-1")
            self.accept(exchange, ctx, info, key, protocol, request_id)

        route.integration.call(runtime, event, request_id, done, message=None,
                               headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in ctx.headers
                                        if n.lower() not in (b"host", b"content-length",
                                                             b"connection", b"upgrade")])

    def accept(self, exchange, ctx, info: ConnectionInfo, key: bytes, protocol, request_id: str) -> None:
        ws = exchange.websocket_accept(ctx, self.runtime, info.connection_id, accept_key(key),
                                       protocol, metrics=self.metrics.metrics,
                                       slots=self.metrics.slots, **self.limits)
        if ws is None:
            return      # the client left while $connect ran
        ws.info = info
        info.ws = ws
        self.runtime.local.by_id[info.connection_id] = info
        self.metrics.connected()
        self.record(info, "CONNECT", "$connect", request_id, 200)

    # --- messages -----------------------------------------------------------------------

    def select(self, text: bool, payload) -> WsRoute | None:
        """The route a message goes to: the route selection expression's value, else $default."""
        if text and self.selection:
            try:
                doc = orjson.loads(payload)
            except orjson.JSONDecodeError:
                doc = None
            for name in self.selection:
                if not isinstance(doc, dict):
                    doc = None
                    break
                doc = doc.get(name)
            if isinstance(doc, str):
                route = self.routes.get(doc)
                if route is not None and not doc.startswith("$"):
                    return route
        return self.routes.get("$default")

    def on_message(self, info: ConnectionInfo, text: bool, payload) -> None:
        ws = info.ws
        request_id = new_request_id()
        route = self.select(text, payload)
        if route is None:
            # no route for it and no $default: AWS answers this frame and keeps the connection
            self.metrics.error("route")
            self.record(info, "MESSAGE", None, request_id, 403, error="Forbidden")
            ws.send(orjson.dumps({"message": "Forbidden", "connectionId": info.connection_id,
                                  "requestId": request_id}).decode())
            return
        if info.inflight >= REFUSE_AT or not all(lim.take_for(b"")[0] for lim in route.limiters):
            self.metrics.error("throttled")
            self.record(info, "MESSAGE", route.key, request_id, 429, error="Too Many Requests")
            ws.send(orjson.dumps({"message": "Too Many Requests", "connectionId": info.connection_id,
                                  "requestId": request_id}).decode())
            return
        if route.models is not None and not route.models.valid(text, payload):
            # AWS's request validation: the "Bad request body" answer, the route not called
            self.metrics.error("invalid")
            self.record(info, "MESSAGE", route.key, request_id, 400, error="Invalid request body")
            ws.send(orjson.dumps({"message": "Invalid request body", "connectionId": info.connection_id,
                                  "requestId": request_id}).decode())
            return
        message_id = new_request_id()
        event = message_event(info, route.key, request_id, message_id, epoch_ms_now(), payload) \
            if route.integration.needs_event else None
        started = time.monotonic()
        if event is not None and route.integration.kind != "function":
            event["stageVariables"] = self.variables      # ($stageVariables in its templates)

        info.inflight += 1
        if info.inflight == HOLD_AT:
            ws.hold(True)

        def done(result, error):
            info.inflight -= 1
            if info.inflight == HOLD_AT // 2:
                ws.hold(False)
            latency = (time.monotonic() - started) * 1000
            if error is not None:
                log(f"websocket {self.api_id}/{self.stage} {route.key}: {error}")
                self.metrics.error("integration")
                self.record(info, "MESSAGE", route.key, request_id, 500, message_id=message_id,
                            latency_ms=latency, error="Internal server error")
                ws.send(orjson.dumps({"message": "Internal server error",
                                      "connectionId": info.connection_id,
                                      "requestId": request_id}).decode())
                return
            self.record(info, "MESSAGE", route.key, request_id, 200, message_id=message_id,
                        latency_ms=latency)
            if route.two_way:
                body = result_body(result)
                if body is not None:
                    ws.send(body)

        route.integration.call(self.runtime, event, request_id, done, message=payload,
                               headers=[("Content-Type", "application/json")] if text else
                               [("Content-Type", "application/octet-stream")])

    def on_disconnect(self, info: ConnectionInfo, code: int, reason: str) -> None:
        route = self.routes.get("$disconnect")
        request_id = new_request_id()
        self.record(info, "DISCONNECT", "$disconnect", request_id, 200)
        if route is None:
            return
        event = disconnect_event(info, request_id, epoch_ms_now(), code, reason)

        def done(result, error):
            if error is not None:
                log(f"websocket {self.api_id}/{self.stage} $disconnect: {error}")
                self.metrics.error("integration")

        route.integration.call(self.runtime, event, request_id, done, message="",
                               headers=[("Content-Type", "application/json")])

    # --- the @connections API -------------------------------------------------------------

    def manage(self, exchange, ctx, body: bytes) -> None:
        raw_path = ctx.url.split(b"?", 1)[0].decode("latin-1")
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in ctx.headers]
        refused = management.signature_error(ctx.method.decode(), raw_path, ctx.query.decode("latin-1"),
                                             headers, body, self.credentials)
        if refused is not None:
            self.answer(exchange, ctx, refused)
            return
        cid = unquote(ctx.path_params[b"connectionId"].decode("latin-1"))
        op = management.OPERATIONS[ctx.method.decode()]
        if op == OP_POST and len(body) > self.limits["max_message"]:
            self.answer(exchange, ctx, management.response(op, 413, b""))
            return
        local = self.runtime.local
        if cid in local.by_id:
            # PERF: this worker's own connection answers at once, no task (bench/ws_fanout.py)
            self.answer(exchange, ctx, management.response(op, *local.call(op, cid, body, self.scope)))
            return
        self.runtime.spawn(self._remote(exchange, ctx, op, cid, body))

    async def _remote(self, exchange, ctx, op, cid, body):
        try:
            status, out = await self.runtime.bus.call(op, cid, body, self.scope)
        except Exception as e:
            log(f"websocket @connections: {e!r}")
            status, out = 503, b""
        self.answer(exchange, ctx, management.response(op, status, out))

    def answer(self, exchange, ctx, answer) -> None:
        status, headers, body = answer
        if status == 410:
            self.metrics.error("gone")
        exchange.function_done(ctx, status, [(k.encode(), v.encode()) for k, v in headers], body)


class WebSocketRuntime:
    """One per worker: the handler of all its WebSocket connections (websocket.pxd), its
    connection table and the bus that reaches the others."""

    def __init__(self, services):
        reseed()                     # this process's own ids (the module was imported before fork)
        self.services = services
        self.local = LocalConnections()
        self.bus = ConnectionBus(self.local)
        self.endpoints: dict[tuple[str, str], StageEndpoint] = {}
        self.tasks: set = set()
        self.serving = False

    def functions(self):
        return self.services.functions

    def spawn(self, coro) -> None:
        task = asyncio.get_event_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def configure(self, endpoints: dict, redis_cfg, serve: bool) -> None:
        """A compiled config: its stages (connections keep theirs when a reload drops it)."""
        self.endpoints = endpoints
        if serve:
            self.bus.configure_redis(redis_cfg)
            if not self.serving:
                self.serving = True
                self.spawn(self.bus.serve())

    def endpoint_of(self, info: ConnectionInfo) -> StageEndpoint:
        return self.endpoints.get((info.api_id, info.stage)) or info.endpoint

    # --- the WebSocket handler protocol (fastgate/_core/websocket.pxd) ------------------

    def message(self, ws, text: bool, payload) -> None:
        info = ws.info
        try:
            self.endpoint_of(info).on_message(info, text, payload)
        except Exception as e:       # never let one message take the worker down
            log(f"websocket {info.api_id}/{info.stage}: message failed: {e!r}")

    def closed(self, ws, code: int, reason: str) -> None:
        info = ws.info
        if info is None:
            return
        self.local.by_id.pop(info.connection_id, None)
        try:
            self.endpoint_of(info).on_disconnect(info, code, reason)
        except Exception as e:
            log(f"websocket {info.api_id}/{info.stage}: $disconnect failed: {e!r}")

    def close_all(self, code: int, reason: str) -> int:
        """Start the close handshake on every connection (a draining worker's 1001)."""
        n = 0
        for info in list(self.local.by_id.values()):
            if info.ws is not None and info.ws.open:
                info.ws.close(code, reason)
                n += 1
        return n

    def count(self) -> int:
        return len(self.local.by_id)

    def close(self) -> None:
        self.bus.close()
