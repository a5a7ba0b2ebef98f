"""The function integration inside a gateway worker: request -> event -> handler -> response.

The core (fastgate/_core/integrations.pyx) calls ``FunctionRunner.start(conn, ctx, body)``
once a function route's request body is complete; the runner builds API Gateway's
event, runs the function (a warm local handler process, or Lambda's Invoke API),
applies AWS's response rules and hands the result back with
``conn.function_done(...)``. Nothing here runs per request on other routes.
"""

from __future__ import annotations

import asyncio
import os
from urllib.parse import unquote

from fastgate._core.fncall import event_v2, forwarded_values, response_v2
from fastgate.phases.functions.errors import FunctionError, error_response
from fastgate.phases.functions.events import (
    FunctionRequest, build_event_v1, build_event_v1_http, build_event_v2,
)
from fastgate.phases.functions.pool import FunctionPool, FunctionSpec, FunctionStream
from fastgate.phases.functions.responses import (
    ResponseError, parse_response_v1, parse_response_v2, parse_stream_head,
)
from fastgate.observability.log import log


def function_specs(config, base_dir: str) -> tuple[list[FunctionSpec], dict]:
    """(local FunctionSpecs, {name: RemoteFunctionConfig}) from a config's `functions:`."""
    specs, remotes = [], {}
    common = tuple(os.path.join(base_dir, p) for p in config.function_path)
    for name, fn in config.functions.items():
        if fn.remote is not None:
            remotes[name] = fn.remote
            continue
        specs.append(FunctionSpec(
            name=name, handler=fn.handler,
            paths=tuple(os.path.join(base_dir, p) for p in fn.paths) + common,
            environment=dict(fn.environment), memory_mb=fn.memory_mb, timeout_ms=fn.timeout_ms,
            concurrency=fn.concurrency, queue=fn.queue))
    return specs, remotes


def authorizer_of(auth, v2: bool, http_api: bool = False) -> dict | None:
    """An access check's result in the shape the payload format carries it:
    REST 1.0 a flat map (principalId, the Lambda context, Cognito's claims); 2.0
    {"jwt": {"claims", "scopes"}}, {"lambda": {...}} or {"iam": {...}}; an HTTP
    API's 1.0 {"claims", "scopes"} for a JWT, else 2.0's {"lambda"} / {"iam"}."""
    if auth is None:
        return None
    if http_api and not v2 and auth.claims is not None:
        return {"claims": auth.context.get("claims", auth.claims),
                "scopes": auth.context.get("scopes")}
    if v2 or http_api:
        if auth.claims is not None:
            return {"jwt": {"claims": auth.context.get("claims", auth.claims),
                            "scopes": auth.context.get("scopes")}}
        if auth.identity and not auth.context:
            return {"iam": dict(auth.identity)}
        return {"lambda": dict(auth.context)}
    out = dict(auth.context)
    if auth.principal_id is not None:
        out["principalId"] = auth.principal_id
    if auth.claims is not None:
        out["claims"] = auth.context.get("claims", auth.claims)
    return out


def http_api_events(ctx) -> bool:
    """Whether a function route gets an HTTP API's events (its 1.0 event, its authorizer
    shapes): routes of an HTTP API, and gateway.yaml's own routes, which are an HTTP API's
    routes (route keys, payload 2.0 by default). Failures follow ``ctx.api.rest`` alone:
    gateway.yaml's routes answer them as a REST API does (docs/config.md)."""
    return ctx.api is None or not ctx.api.rest


def function_request(ctx, body: bytes) -> FunctionRequest:
    """The request as events.py needs it, from the protocol's RequestContext
    (also the source of mapping templates' $input and $context: fastgate/phases/vtl.py)."""
    route = ctx.route
    api = ctx.api
    http_api = http_api_events(ctx)
    headers = list(ctx.upstream_headers if ctx.upstream_headers is not None else ctx.headers)
    if not any(name.lower() == b"host" for name, _ in headers):
        headers.insert(0, (b"Host", ctx.host))
    params = None
    if ctx.path_params:
        # REST APIs keep the escapes ("%2B", "%20"), HTTP APIs decode them
        decode = http_api or route.payload_v2
        params = {k.decode("latin-1"): unquote(v.decode("latin-1")) if decode else v.decode("latin-1")
                  for k, v in ctx.path_params.items()}
    ua = ctx.header(b"user-agent")
    return FunctionRequest(
        method=ctx.method.decode("latin-1"),
        raw_path=ctx.stage_path if ctx.stage_path is not None else ctx.path,
        raw_query=ctx.query, headers=headers, body=body,
        source_ip=ctx.source_ip.decode("latin-1"),
        user_agent=ua.decode("latin-1") if ua is not None else None,
        request_id=ctx.request_id.decode("latin-1"), request_time_ms=ctx.request_time_ms,
        protocol="HTTP/1.%d" % ctx.http_minor,
        domain_name=ctx.route_host.decode("latin-1"),
        api_id=api.api_id if api is not None else "fastgate",
        stage=api.stage if api is not None else "$default",
        # a gateway.yaml route's resource is its path, as on an HTTP API route
        resource_path=route.resource_path or (route.route_key.partition(" ")[2] if api is None else None),
        route_key=route.route_key, path_parameters=params,
        stage_variables=dict(api.variables) if api is not None and api.variables else None,
        binary_media_types=route.binary_media_types,
        authorizer=authorizer_of(ctx.auth, route.payload_v2, http_api=http_api),
        identity=dict(ctx.auth.identity) if ctx.auth is not None and ctx.auth.identity else None,
        forwarded=forwarded_values(ctx),
        deployment_id=api.deployment_id if api is not None and api.rest else None,
        context_path=context_path(ctx) if api is not None and api.rest else None)


def context_path(ctx) -> str | None:
    """A REST event's requestContext.path: the path as the client asked for it
    ("/prod//x" keeps its slashes, where ``path`` is "/x"; AWS's recordings), after
    leading slashes collapse ("//prod/x" is "/prod/x"). None when the request did not
    name the stage first (a custom domain's base path, the /restapis/... form): the
    builder then writes "/{stage}" + the path."""
    prefix = b"/" + ctx.api.stage_b
    path = ctx.path
    if path == prefix or path.startswith(prefix + b"/"):
        return path.decode("utf-8", "replace")
    return None


class FunctionRunner:
    """One per gateway worker: its local handler pool and remote clients."""

    def __init__(self, loop):
        self.loop = loop
        self.pool = FunctionPool(())
        self.remotes: dict = {}           # name -> LambdaInvokeClient
        self.remote_configs: dict = {}
        self.tasks: set = set()
        self.streams: dict = {}           # client protocol -> FunctionStream being relayed

    def configure(self, config, base_dir: str) -> None:
        """Apply a (re)loaded config: unchanged functions keep their warm processes."""
        specs, remotes = function_specs(config, base_dir)
        self.pool.configure(specs)
        if remotes != self.remote_configs:
            from fastgate.phases.functions.remote import LambdaInvokeClient
            self.remotes = {name: LambdaInvokeClient(r.endpoint, region=r.region,
                                                     access_key=r.access_key_id,
                                                     secret_key=r.secret_access_key)
                            for name, r in remotes.items()}
            self.remote_names = {name: r.function_name or name for name, r in remotes.items()}
            self.remote_configs = remotes

    async def invoke(self, name: str, event, *, timeout_ms=None, request_id=None):
        """Run function `name` (local or remote) on an event; FunctionError on failure."""
        if name in self.remotes:
            return await self.remotes[name].invoke(self.remote_names[name], event,
                                                   timeout_ms=timeout_ms, request_id=request_id)
        return await self.pool.invoke(name, event, timeout_ms=timeout_ms, request_id=request_id)

    def start(self, conn, ctx, body: bytes) -> None:
        route = ctx.route
        if route.function_name in self.remotes:
            task = self.loop.create_task(self.run(conn, ctx, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            return
        # PERF: a local function is a callback chain, no task or future per request
        # (bench/wrk_functions.py): the pool calls back with the result.
        try:
            event, request_id = self.event_of(ctx, body)
            self.pool.submit(route.function_name, event, int(route.first_byte_timeout * 1000),
                             request_id, lambda result, error: self.answer(conn, ctx, result, error))
        except Exception as err:
            self.answer(conn, ctx, None, err)

    def request_of(self, ctx, body: bytes) -> FunctionRequest:
        return function_request(ctx, body)

    def event_of(self, ctx, body: bytes) -> tuple[dict, str]:
        """(API Gateway's event for the route's payload format, the request id)."""
        if ctx.route.payload_v2:
            event = event_v2(ctx, body)     # compiled, for all but the rare shapes
            if event is not None:
                return event, event["requestContext"]["requestId"]
        req = self.request_of(ctx, body)
        if ctx.route.payload_v2:
            return build_event_v2(req), req.request_id
        if http_api_events(ctx):
            return build_event_v1_http(req), req.request_id
        return build_event_v1(req), req.request_id

    async def run(self, conn, ctx, body: bytes) -> None:
        """A remote function's call (Lambda's Invoke API)."""
        try:
            event, request_id = self.event_of(ctx, body)
            result = await self.invoke(ctx.route.function_name, event,
                                       timeout_ms=int(ctx.route.first_byte_timeout * 1000),
                                       request_id=request_id)
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.answer(conn, ctx, None, err)
            return
        self.answer(conn, ctx, result, None)

    def answer(self, conn, ctx, result, error) -> None:
        """The function's result (or its failure) to the client, by AWS's response rules."""
        route = ctx.route
        http_api = ctx.api is not None and not ctx.api.rest
        try:
            if error is not None:
                raise error
            if isinstance(result, FunctionStream):
                self.relay(conn, ctx, result)
                return
            if route.payload_v2:
                parsed = response_v2(result)    # compiled, for the usual result shape
                status, headers, out = parsed if parsed is not None else parse_response_v2(result)
            elif http_api_events(ctx):
                # HTTP APIs (and gateway.yaml's routes) read 1.0 results as strictly as
                # REST APIs, but have no binaryMediaTypes: a base64 body is always decoded.
                status, headers, out = parse_response_v1(result)
            else:
                accept = ctx.header(b"accept")
                status, headers, out = parse_response_v1(
                    result, accept=accept.decode("latin-1") if accept else None,
                    binary_media_types=tuple(route.binary_media_types))
        except (FunctionError, ResponseError) as err:
            status, out, kind = error_response(err, http_api=http_api)
            log(f"function {route.function_name}: {err} (request {ctx.request_id.decode()})")
            conn.function_done(ctx, status, [], out, kind, str(err))
            return
        except Exception as err:   # a bug here must answer the client, never hang it
            log(f"function {route.function_name}: gateway error {err!r}")
            status, out, kind = error_response(FunctionError("service", repr(err)), http_api=http_api)
            conn.function_done(ctx, status, [], out, kind, repr(err))
            return
        conn.function_done(ctx, status, headers, out)

    def relay(self, conn, ctx, stream: FunctionStream) -> None:
        """Relay a generator handler's stream to the client chunk by chunk, as it comes."""
        name = stream.name
        try:
            status, headers = parse_stream_head(stream.head)
        except ResponseError as err:
            stream.cancel()
            http_api = ctx.api is not None and not ctx.api.rest
            status, out, kind = error_response(err, http_api=http_api)
            log(f"function {name}: {err}")
            conn.function_done(ctx, status, [], out, kind, str(err))
            return
        if not conn.function_stream_head(ctx, status, headers):
            stream.cancel()          # nobody to send it to
            return
        self.streams[conn] = stream

        def on_chunk(data: bytes) -> None:
            if not conn.function_stream_chunk(ctx, data):
                self.streams.pop(conn, None)
                stream.cancel()      # the client went away: stop the handler

        def on_end(error) -> None:
            self.streams.pop(conn, None)
            if error is None:
                conn.function_stream_end(ctx)
            else:
                log(f"function {name}: stream ended early: {error}")
                conn.function_stream_end(ctx, "INTEGRATION_FAILURE", str(error))

        stream.start(on_chunk, on_end)

    def flow(self, conn, paused: bool) -> None:
        """The client's write buffer filled (or drained): hold (or release) the handler."""
        stream = self.streams.get(conn)
        if stream is not None:
            stream.pause(paused)

    def client_gone(self, conn) -> None:
        """The client closed mid-stream: its handler process is stopped."""
        stream = self.streams.pop(conn, None)
        if stream is not None:
            stream.cancel()

    async def close(self) -> None:
        await self.pool.close()
