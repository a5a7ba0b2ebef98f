"""The admin process: the admin listener (/metrics, /healthz, /routes, and on every
other path the AWS-compatible control API of fastgate.control.api) and the active
upstream health checks.

It runs apart from the workers so that neither a scrape nor a slow health
check ever shares an event loop with requests. Health verdicts go into the
shared metrics table (fastgate_upstream_healthy); every worker copies them
into its targets a few times a second.
"""

from __future__ import annotations

import asyncio
import os
import signal

import orjson
import uvloop

from fastgate.compile.snapshot import integration_type
from fastgate.compile.upstreams import client_ssl_context, health_slot_for
from fastgate.compile.upstreams import host_header as host_header_of
from fastgate.observability.log import log, set_role

MAX_ADMIN_REQUEST = 16384   # bytes of request head the admin listener reads
# request bodies: each control operation has its own cap (fastgate.control.api, ControlAPI.admit)
ADMIN_PATH_BODY_MAX = 65536         # bytes: /metrics, /healthz, the dashboard take no body
CONNECTIONS_BODY_MAX = 1048576      # bytes of a PostToConnection body (the API's limit answers 413 too)
# Bodies read before their signature can be checked (SigV4 signs the body's hash, which
# AWS clients do not send in a header) share this many bytes over all connections; a body
# that does not fit waits for one that is being read, then gets 429.
UNVERIFIED_BODY_BUDGET = 32 * 1024 * 1024   # bytes
UNVERIFIED_WAIT_S = 10.0
BODY_READ_TIMEOUT_S = 60.0
# After refusing a request whose body is not read, keep reading (and dropping) it this long,
# so that the client reads the refusal instead of a reset (nginx's lingering close).
LINGER_S = 5.0
REASONS = {200: b"OK", 201: b"Created", 202: b"Accepted", 204: b"No Content", 400: b"Bad Request",
           401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
           409: b"Conflict", 411: b"Length Required", 413: b"Payload Too Large",
           410: b"Gone", 429: b"Too Many Requests", 500: b"Internal Server Error", 503: b"Service Unavailable"}
ADMIN_PATHS = (b"/metrics", b"/healthz", b"/health", b"/routes")


def api_routes(state) -> list[dict]:
    """Every deployed API stage and its routes, as /routes lists them."""
    out = []
    if state is None:
        return out
    for api_id, stages in sorted(state.stages.items()):
        api = state.apis.get(api_id, {})
        for name, stage in sorted(stages.items()):
            dep = state.deployments.get(api_id, {}).get(stage.get("deploymentId"), {})
            doc = dep.get("api", {})
            out.append({
                "api": api_id, "name": api.get("name"), "stage": name,
                "type": "HTTP" if api.get("protocolType") == "HTTP" else "REST",
                "deploymentId": stage.get("deploymentId"),
                "canary": stage.get("canarySettings"),
                "routes": [{"method": m, "path": res["path"],
                            "integration": (spec.get("methodIntegration") or {}).get("type")}
                           for res in doc.get("resources", ())
                           for m, spec in sorted((res.get("resourceMethods") or {}).items())]})
    return out


class HealthChecker:
    """Active checks for one target: GET path every interval, thresholds both ways."""

    def __init__(self, metrics, slot: int, upstream: str, target, check, tls_verify: bool = True):
        self.metrics = metrics
        self.slot = slot
        self.upstream = upstream
        self.target = target            # config target (url, host, port)
        self.check = check
        self.tls_verify = tls_verify
        self.successes = 0
        self.failures = 0

    async def probe(self) -> tuple[bool, str]:
        t = self.target.parsed()   # the config target holds only its URL
        host, port, scheme = t.host, t.port, t.scheme
        ssl_ctx = client_ssl_context(self.tls_verify) if scheme == "https" else None
        timeout = self.check.timeout_ms / 1000
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ssl_ctx), timeout)
        except (OSError, asyncio.TimeoutError) as e:
            return False, f"connect: {e or 'timeout'}"
        try:
            host_header = self.check.host or host_header_of(t)
            writer.write(f"GET {self.check.path} HTTP/1.1\r\nHost: {host_header}\r\n"
                         f"User-Agent: fastgate-health-check\r\nConnection: close\r\n\r\n".encode())
            line = await asyncio.wait_for(reader.readline(), timeout)
            parts = line.split()
            if len(parts) < 2 or not parts[1].isdigit():
                return False, f"bad status line {line[:60]!r}"
            status = int(parts[1])
            if status in self.check.expected_status:
                return True, str(status)
            return False, f"status {status}"
        except (OSError, asyncio.TimeoutError) as e:
            return False, f"read: {e or 'timeout'}"
        finally:
            writer.close()

    async def run(self) -> None:
        interval = self.check.interval_ms / 1000
        while True:
            try:
                ok, why = await self.probe()
            except Exception as e:  # a checker that dies would leave its verdict frozen
                ok, why = False, f"check failed: {e!r}"
            healthy = self.metrics.get(self.slot) != 0
            if ok:
                self.successes += 1
                self.failures = 0
                if not healthy and self.successes >= self.check.healthy_threshold:
                    self.metrics.set(self.slot, 1)
                    log(f"upstream {self.upstream} target {self.target.url} is healthy again")
            else:
                self.failures += 1
                self.successes = 0
                if healthy and self.failures >= self.check.unhealthy_threshold:
                    self.metrics.set(self.slot, 0)
                    log(f"upstream {self.upstream} target {self.target.url} is unhealthy: {why}")
            await asyncio.sleep(interval)


class ByteBudget:
    """Bytes that requests may hold at once; take() waits (bounded) until its share fits."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0
        self.freed = asyncio.Event()

    async def take(self, n: int, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.used + n > self.total:
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.freed.clear()
            try:
                await asyncio.wait_for(self.freed.wait(), left)
            except asyncio.TimeoutError:
                return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n
        self.freed.set()


class Admin:
    def __init__(self, sock, loader, metrics, since: tuple[float, int] | None = None):
        self.sock = sock
        self.loader = loader
        self.metrics = metrics
        self.since = since          # (epoch s, tail ticket) at this process's start
        self.loaded = None
        self.checks: list[asyncio.Task] = []
        self.control = None         # the control API, opened by its first request
        self.control_error = None   # why it could not be opened
        self.dashboard = None       # fastgate.observability.dashboard.Dashboard, on the admin listener
        self.key_sync = None        # fastgate.control.keys_sync.KeySync while the config has `redis:`
        self.key_sync_config = None
        self.fleet_sync = None      # fastgate.control.fleet.FleetSync while the config has `state:`
        self.fleet_sync_config = None
        self.cache_flusher = None   # fastgate.phases.cache_redis.CacheFlusher when the config names a Redis
        self.loop = None
        self.unverified = ByteBudget(UNVERIFIED_BODY_BUDGET)
        self.connections = None     # fastgate.phases.websocket.connections.ConnectionBus, on first use

    def start_checks(self) -> None:
        for task in self.checks:
            task.cancel()
        self.checks = []
        config = self.loaded.config
        for name, upstream in config.upstreams.items():
            if upstream.health_check is None:
                continue
            for target in upstream.targets:
                slot = health_slot_for(self.metrics, name, target)
                checker = HealthChecker(self.metrics, slot, name, target, upstream.health_check,
                                        upstream.tls_verify)
                self.checks.append(asyncio.ensure_future(checker.run()))

    def reload(self) -> None:
        try:
            self.loaded = self.loader()
        except Exception as e:
            log(f"reload failed: {e}")
            return
        if self.control is not None:
            self.control.model.usage_redis = self.redis_config()
        self.start_checks()
        if self.control is not None:
            self.control.model.authorizer_invoker.configure(self.loaded)
            self.configure_v2()
        self.start_key_sync()
        self.start_fleet_sync()
        self.configure_cache_flusher()
        if self.connections is not None:
            self.connections.configure_redis(self.loaded.config.redis)

    def served_stages(self) -> set[tuple[str, str]]:
        state = self.loaded.state if self.loaded is not None else None
        if state is None:
            return set()
        return {(api_id, name) for api_id, stages in state.stages.items() for name in stages}

    def start_key_sync(self) -> None:
        """With `redis:`, keys and usage plans are shared with the other hosts of that Redis
        (fastgate.control.keys_sync); (re)started when the redis section changes."""
        cfg = self.loaded.config.redis
        if cfg is not None and self.loaded.config.state is not None:
            # the fleet's PostgreSQL holds keys and plans for every host already
            cfg = None
        if cfg == self.key_sync_config:
            return
        if self.key_sync is not None:
            asyncio.ensure_future(self.key_sync.stop())
            self.key_sync = None
        self.key_sync_config = cfg
        if cfg is None:
            return
        if self.control is None and self.control_error is None:
            self.start_control()
        if self.control is None:
            log(f"key sync off: the control API's state is unavailable: {self.control_error}")
            return
        from fastgate.control.keys_sync import KeySync
        self.key_sync = KeySync(self.control.model, self.control.executor, url=cfg.url,
                                prefix=cfg.prefix, interval_ms=cfg.key_sync_interval_ms,
                                on_change=self.request_reload, log=log)
        self.key_sync.start(asyncio.get_event_loop())

    def start_fleet_sync(self) -> None:
        """With `state:`, keep this host's local copy of the fleet's state current
        (fastgate.control.fleet.FleetSync): LISTEN/NOTIFY and a poll; each change read
        there is handed to the supervisor as a reload, as a local control API change is."""
        cfg = self.loaded.config.state
        if cfg == self.fleet_sync_config:
            return
        if self.fleet_sync is not None:
            self.loop.create_task(self.fleet_sync.stop())
            self.fleet_sync = None
        self.fleet_sync_config = cfg
        if cfg is None:
            return
        from fastgate.control.fleet import FleetSync
        from fastgate.control.local_copy import LocalCopy
        data_dir = os.environ.get("FASTGATE_DATA_DIR") or self.default_data_dir()
        self.fleet_sync = FleetSync(cfg.url, LocalCopy(data_dir),
                                    poll_interval_ms=cfg.poll_interval_ms,
                                    on_change=self.request_reload, log=log)
        self.fleet_sync.start(self.loop)

    @staticmethod
    def default_data_dir():
        from fastgate.control.store import default_data_dir
        return default_data_dir()

    def configure_cache_flusher(self) -> None:
        """FlushStageCache reaches every host through Redis (config `redis:`)."""
        cfg = self.loaded.config.redis
        old = self.cache_flusher
        if old is not None and old.cfg == cfg:
            return
        self.cache_flusher = None
        if old is not None:
            self.loop.create_task(old.close())
        if cfg is not None:
            from fastgate.phases.cache_redis import CacheFlusher
            self.cache_flusher = CacheFlusher(cfg, self.flush_local_cache)
            self.cache_flusher.start(self.loop)

    @staticmethod
    def flush_local_cache(prefix: bytes) -> int:
        from fastgate.compile.shared import shared_cache
        cache = shared_cache()
        return cache.flush(prefix) if cache is not None else 0

    def flush_stage_cache(self, params: dict) -> dict:
        """FlushStageCache (in the control API's thread): this host's shared cache now,
        then Redis and, through it, every other host's."""
        from fastgate._core.cache import namespace_prefix
        from fastgate.control.errors import ServiceUnavailable
        api_id, stage = params["restApiId"], params["stageName"]
        if (api_id, stage) not in self.served_stages():
            self.control.model.get_stage(params)    # AWS's NotFoundException when it does not exist
        prefix = namespace_prefix(f"{api_id}/{stage}/")
        self.flush_local_cache(prefix)
        flusher = self.cache_flusher
        if flusher is not None:
            try:
                asyncio.run_coroutine_threadsafe(flusher.flush(prefix), self.loop).result()
            except Exception as e:
                raise ServiceUnavailable(f"the stage cache in Redis was not flushed: {e}") from None
        return {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
                    return
                lines = head.split(b"\r\n")
                parts = lines[0].split()
                if len(parts) != 3:
                    await self.send(writer, 400, {"message": "Bad Request"}, close=True)
                    return
                method, raw_target = parts[0], parts[1]
                target, _, query = raw_target.partition(b"?")
                headers = []
                for line in lines[1:]:
                    if line:
                        name, sep, value = line.partition(b":")
                        if not sep:
                            await self.send(writer, 400, {"message": "Malformed header line"}, close=True)
                            return
                        headers.append((name.strip().decode("latin-1"), value.strip().decode("latin-1")))
                close = any(k.lower() == "connection" and v.lower() == "close" for k, v in headers)
                length, error = body_length(headers)
                if error is not None:
                    # the body cannot be delimited: the connection cannot carry another request
                    await self.send(writer, error[0], {"message": error[1]}, close=True)
                    return
                if b"/@connections/" in target:
                    if not await self.serve_connections(reader, writer, method, target, query,
                                                        headers, length, close):
                        return
                    if close:
                        return
                    continue
                dashboard = self.dashboard is not None and (
                    target == b"/dashboard" or target.startswith(b"/dashboard/"))
                if not dashboard and target not in ADMIN_PATHS:
                    if not await self.serve_control(reader, writer, method, target, query, headers,
                                                    length, close):
                        return
                elif length > ADMIN_PATH_BODY_MAX:
                    await self.refuse(reader, writer, length, 413, "PayloadTooLargeException",
                                      f"{target.decode('latin-1')} takes no request body")
                    return
                else:
                    await read_body(reader, length)        # nobody reads it: dropped
                    if dashboard:
                        if not await self.dashboard.serve(reader, writer, method, target, query,
                                                          headers, close):
                            return
                    else:
                        await self.serve_admin(writer, method, target, close)
                if close:
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def refuse(self, reader, writer, length: int, status: int, code: str,
                     message: str | None, response=None) -> None:
        """Answer a request whose body is not read, AWS-shaped, then read and drop what
        the client still sends (at most `length` bytes, for LINGER_S) so that the answer
        is not destroyed by a reset, and let the caller close the connection."""
        from fastgate.control.api import error_response
        if response is None:
            response = error_response(status, code, message)
        await self.send_control_response(writer, response, True, False)
        if length <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LINGER_S
        try:
            if writer.can_write_eof():
                writer.write_eof()          # the answer is whole: the client may stop sending
            while length > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                chunk = await asyncio.wait_for(reader.read(min(length, 65536)), left)
                if not chunk:
                    break
                length -= len(chunk)
        except (asyncio.TimeoutError, ConnectionError, OSError):
            pass

    async def serve_admin(self, writer, method: bytes, target: bytes, close: bool) -> None:
        if method not in (b"GET", b"HEAD"):
            await self.send(writer, 405, {"message": "Method Not Allowed"}, close)
        elif target == b"/metrics":
            await self.send_raw(writer, 200, b"text/plain; version=0.0.4; charset=utf-8",
                                self.metrics.render(), close, method == b"HEAD")
        elif target in (b"/healthz", b"/health"):
            await self.send(writer, 200, {"status": "ok"}, close)
        else:
            await self.send(writer, 200, {"routes": [
                {"method": r.method, "host": r.host, "path": r.path,
                 "integration": integration_type(r.integration)} for r in self.loaded.config.routes],
                "apis": api_routes(self.loaded.state)}, close)

    async def serve_control(self, reader, writer, method, target, query, headers, length: int,
                            close: bool) -> bool:
        """One control API call. The head is checked before the body is read (a refused
        request's body is never held), the body is capped per operation, and bodies whose
        signature needs them share UNVERIFIED_BODY_BUDGET. False: the connection must close."""
        if self.control is None and self.control_error is None:
            self.start_control()
        if self.control is None:
            await self.refuse(reader, writer, length, 503, "ServiceUnavailableException",
                              f"the control API is unavailable: {self.control_error}")
            return False
        from fastgate.control.api import Admission
        m, path, q = method.decode("latin-1"), target.decode("latin-1"), query.decode("latin-1")
        gate = self.control.admit(m, path, q, headers)
        if not isinstance(gate, Admission):
            if length == 0:     # nothing unread: the connection can carry the next request
                await self.send_control_response(writer, gate, close, method == b"HEAD")
                return True
            await self.refuse(reader, writer, length, 0, "", None, response=gate)
            return False
        if length > gate.max_body:
            await self.refuse(reader, writer, length, 413, "RequestTooLongException",
                              f"Request body of {length} bytes exceeds the limit of "
                              f"{gate.max_body} bytes for this operation")
            return False
        if gate.verified or length == 0:
            body = await read_body(reader, length)
        else:
            if not await self.unverified.take(length, UNVERIFIED_WAIT_S):
                await self.refuse(reader, writer, length, 429, "TooManyRequestsException",
                                  "Too Many Requests")
                return False
            try:
                body = await read_body(reader, length)
            finally:
                self.unverified.give(length)
        try:
            response = await self.control.handle(m, path, q, headers, body)
        except Exception as e:   # a bug in one call must not take the listener down
            log(f"control API error on {m} {path}: {e!r}")
            response = 500, [("Content-Type", "application/json"), (
                "x-amzn-ErrorType", "InternalFailure")], orjson.dumps({"message": "Internal server error"})
        del body                # not held while a slow client reads the answer
        await self.send_control_response(writer, response, close, method == b"HEAD")
        return True

    async def serve_connections(self, reader, writer, method, target, query, headers, length: int,
                                close: bool) -> bool:
        """A WebSocket API's @connections call (docs/websocket.md), signed for execute-api by
        the admin credentials or an iam_credentials key; the connection is found wherever it
        lives (this host's workers, or other hosts through Redis). False: close the connection."""
        from fastgate.compile.snapshot import iam_credentials_of
        from fastgate.compile.websocket import admin_credentials
        from fastgate.phases.websocket import management
        from fastgate.phases.websocket.connections import ConnectionBus
        m, path = method.decode("latin-1"), target.decode("latin-1")
        call = management.parse_call(m, path)
        if call is None:
            return await self.serve_control(reader, writer, method, target, query, headers,
                                            length, close)
        if length > CONNECTIONS_BODY_MAX:
            await self.refuse(reader, writer, length, 413, "PayloadTooLargeException", "Message too long")
            return False
        body = await read_body(reader, length)
        credentials = admin_credentials(self.loaded.config)
        credentials.update({k: v[0] for k, v in iam_credentials_of(self.loaded).items()})
        answer = management.signature_error(m, path, query.decode("latin-1"), headers, body, credentials)
        if answer is None:
            if self.connections is None:
                self.connections = ConnectionBus()
                self.connections.configure_redis(self.loaded.config.redis)
            op, stage, cid = call
            try:
                # the admin listener names no API: any API's connection of that stage
                answer = management.response(op, *await self.connections.call(
                    op, cid, body, f"/{stage}" if stage else ""))
            except Exception as e:    # a bug in one call must not take the listener down
                log(f"@connections error on {m} {path}: {e!r}")
                answer = management.response(op, 500, b"")
        await self.send_control_response(writer, answer, close, False)
        return True

    async def send_control_response(self, writer, response, close: bool, head: bool) -> None:
        status, out_headers, out_body = response
        ctype = b"application/json"
        extra = []
        for k, v in out_headers:
            if k.lower() == "content-type":
                ctype = v.encode("latin-1")
            else:
                extra.append((k.encode("latin-1"), v.encode("latin-1")))
        await self.send_raw(writer, status, ctype, out_body, close, head, extra)

    async def send(self, writer, status: int, doc, close: bool) -> None:
        await self.send_raw(writer, status, b"application/json", orjson.dumps(doc), close, False)

    async def send_raw(self, writer, status, ctype: bytes, body: bytes, close: bool, head: bool,
                       extra: list[tuple[bytes, bytes]] = ()) -> None:
        reason = REASONS.get(status, b"Unknown")
        lines = b"".join(b"%s: %s\r\n" % kv for kv in extra)
        # (a 204 has no body and so no Content-Length: RFC 9110 section 8.6)
        framing = b"" if status == 204 else b"Content-Type: %s\r\nContent-Length: %d\r\n" % (ctype, len(body))
        writer.write(b"HTTP/1.1 %d %s\r\n%s%s%s\r\n" % (
            status, reason, framing, lines, b"Connection: close\r\n" if close else b""))
        if not head:
            writer.write(body)
        await writer.drain()

    def start_control(self) -> None:
        """Open the state store and the control API. On the first request, not at start-up:
        a gateway whose control API is never called creates no data directory."""
        from fastgate.control.api import ControlAPI
        from fastgate.control.store import Store
        data_dir = os.environ.get("FASTGATE_DATA_DIR") or self.default_data_dir()
        key_id = os.environ.get("FASTGATE_ADMIN_ACCESS_KEY_ID", "")
        secret = os.environ.get("FASTGATE_ADMIN_SECRET_ACCESS_KEY", "")
        credentials = {key_id: secret} if key_id and secret else {}
        fleet = self.loaded.config.state
        try:
            if fleet is None:
                store, on_change = Store.in_dir(data_dir), self.request_reload
            else:
                from fastgate.control.store_pg import PgStore
                # a commit's NOTIFY reaches this host's FleetSync too, which reloads once
                # the local copy has it: a reload here would only re-read the old copy
                store, on_change = PgStore(fleet.url, data_dir), lambda: None
            self.control = ControlAPI(store, credentials, on_change)
            self.control.model.usage_redis = self.redis_config()
        except Exception as e:
            self.control_error = str(e)
            log(f"control API unavailable: {e}")
            return
        self.control.model.served_stages = self.served_stages
        self.configure_v2()
        from fastgate.control.authorizer_invoke import AuthorizerInvoker
        self.control.model.authorizer_invoker = AuthorizerInvoker(asyncio.get_event_loop())
        self.control.model.authorizer_invoker.configure(self.loaded)
        from fastgate.control.method_invoke import MethodInvoker
        self.control.model.method_invoker = MethodInvoker(asyncio.get_event_loop(),
                                                          self.control.model.authorizer_invoker)
        self.control.model.upstream_names = lambda: set(self.loaded.config.upstreams)
        self.control.model.account_throttle = self.account_throttle
        self.control.register("FlushStageCache", self.flush_stage_cache)
        if not credentials:
            log("control API: no admin credentials (FASTGATE_ADMIN_ACCESS_KEY_ID / "
                "FASTGATE_ADMIN_SECRET_ACCESS_KEY): every call is refused")
        if fleet is None:
            log(f"control API state in {data_dir}")
        else:
            from fastgate.compile.config.values import redact_url
            log(f"control API state in {redact_url(fleet.url)} (this host's copy in {data_dir})")

    def account_throttle(self):
        """The config's gateway-wide throttle as the Account's throttleSettings, or None."""
        t = self.loaded.config.throttle if self.loaded is not None else None
        if t is None:
            return None
        return {"rateLimit": float(t.rate), "burstLimit": int(t.burst)}

    def configure_v2(self) -> None:
        """What apigatewayv2 shows of the running config: the data plane's address in
        Api.apiEndpoint, and the upstream groups a VPC link may name."""
        v2 = self.control.v2.model
        v2.upstream_names = lambda: set(self.loaded.config.upstreams) if self.loaded is not None else set()
        if self.loaded is None:
            return
        listener = self.loaded.config.listeners[0]
        port = listener.port
        if listener.address is not None:
            port = listener.address.rpartition(":")[2]
        scheme = "https" if getattr(listener, "tls", None) is not None else "http"
        v2.endpoint_base = f"{scheme}://{{api_id}}.execute-api.localhost:{port}"

    def request_reload(self) -> None:
        # the supervisor is this process's parent; it reloads (and tells every child) on SIGHUP
        os.kill(os.getppid(), signal.SIGHUP)

    def run(self) -> int:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self.loaded = self.loader()
        server = None
        if self.sock is not None:   # without a listener it only runs the health checks
            server = loop.run_until_complete(asyncio.start_server(
                self.handle, sock=self.sock, limit=MAX_ADMIN_REQUEST))
            from fastgate.observability.dashboard import Dashboard
            self.dashboard = Dashboard(self, since=self.since)
            self.dashboard.start()
        self.start_checks()
        self.start_key_sync()
        self.start_fleet_sync()
        self.configure_cache_flusher()
        flusher = self.start_usage_flusher()
        stop = loop.create_future()
        from fastgate.process.signals import Coalesced, add_loop_signal_handlers
        add_loop_signal_handlers(loop, {
            signal.SIGTERM: lambda: stop.done() or stop.set_result(None),
            signal.SIGINT: lambda: None, signal.SIGHUP: Coalesced(loop, self.reload),
            signal.SIGUSR1: lambda: None})
        loop.run_until_complete(stop)
        if server is not None:
            server.close()
        for task in self.checks:
            task.cancel()
        if self.key_sync is not None:
            loop.run_until_complete(self.key_sync.stop())
        if self.fleet_sync is not None:
            loop.run_until_complete(self.fleet_sync.stop())
        if self.control is not None and self.control.model.authorizer_invoker is not None:
            loop.run_until_complete(self.control.model.authorizer_invoker.close())
        if flusher is not None:
            flusher.stop()      # one last flush of the API keys' usage
        return 0

    def redis_config(self):
        """The current config's `redis:` (usage is pushed there and read back from it)."""
        return self.loaded.config.redis if self.loaded is not None else None

    def start_usage_flusher(self):
        """API key usage counted by the workers goes to SQLite every second, from here."""
        from fastgate.compile.shared import shared_usage
        rec = shared_usage()
        if rec is None:
            return None
        from fastgate.control.usage_flusher import UsageFlusher
        flusher = UsageFlusher(rec, os.environ.get("FASTGATE_DATA_DIR") or self.default_data_dir(),
                               log=log, redis_config=self.redis_config)
        flusher.start()
        return flusher


def body_length(headers) -> tuple[int, tuple[int, str] | None]:
    """The request body's length from its head, or the error that answers it."""
    lengths = [v for k, v in headers if k.lower() == "content-length"]
    if any(k.lower() == "transfer-encoding" for k, _ in headers):
        return 0, (411, "Chunked request bodies are not supported: send a Content-Length")
    if not lengths:
        return 0, None
    if len(set(lengths)) != 1 or not lengths[0].isdigit():
        return 0, (400, "Invalid Content-Length")
    return int(lengths[0]), None


async def read_body(reader, length: int) -> bytes:
    if length == 0:
        return b""
    try:
        return await asyncio.wait_for(reader.readexactly(length), BODY_READ_TIMEOUT_S)
    except (asyncio.IncompleteReadError, asyncio.TimeoutError):
        raise ConnectionError("request body cut short") from None


def run_admin(sock, loader, metrics, since: tuple[float, int] | None = None) -> int:
    """`since`: (epoch s, tail ticket) when the supervisor started this process (Dashboard)."""
    set_role("fastgate-admin")
    return Admin(sock, loader, metrics, since).run()
