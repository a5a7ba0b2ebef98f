"""TestInvokeMethod: one method of an API, as it is now (deployed or not), run through the
real data-plane pipeline in the admin process.

The API is compiled by the data plane's own compiler into a snapshot of its own, with a
one-off stage (`test-invoke-stage`, as AWS names it in $context.stage) holding the call's
stageVariables, and served by a Worker of the admin's event loop on a loopback port for this
one request: mapping, validation, the integration (HTTP with its upstream TLS, MOCK, a
function of the config's `functions:`, an AWS service) and the response phase all run as
they do for a client. As in AWS's test invocations, authorization (authorizers, IAM, resource policy) and
API keys are skipped, and there is no throttling or cache.

The output is AWS's TestInvokeMethodResponse: status, body, headers, multiValueHeaders (the
method response's headers, without the connection's own: Date, Content-Length, Connection,
the request id), latency (ms) and log, AWS's execution log lines for the request.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
import uuid
from urllib.parse import parse_qsl, quote, unquote

TEST_STAGE = "test-invoke-stage"
TEST_DEPLOYMENT = "testinvoke"
TEST_TIMEOUT_S = 35          # above any integration timeout (29 s)
# headers of the connection, not of the method's response
_TRANSPORT = frozenset({"date", "content-length", "connection", "transfer-encoding", "keep-alive",
                        "x-amzn-requestid", "x-amz-apigw-id", "x-amzn-trace-id", "via"})


def _log_time() -> str:
    # AWS's execution log dates: "Wed Mar 06 10:11:12 UTC 2024"
    return datetime.datetime.now(datetime.timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")


def _java_map(items) -> str:
    """{a=1, b=2}: how AWS's execution log prints a map."""
    return "{" + ", ".join(f"{k}={v}" for k, v in items) + "}"


def test_api(api: dict, resource_id: str, http_method: str) -> dict:
    """The API as the test runs it: only the method under test, without authorization."""
    out = dict(api, policy=None)
    resources = []
    for r in api.get("resources", ()):
        r = dict(r)
        methods = r.get("resourceMethods") or {}
        if r["id"] == resource_id:
            method = dict(methods[http_method], authorizationType="NONE", apiKeyRequired=False)
            method.pop("authorizerId", None)
            method.pop("authorizationScopes", None)
            r["resourceMethods"] = {http_method: method}
        else:
            r.pop("resourceMethods", None)
        resources.append(r)
    out["resources"] = resources
    return out


def path_params(template: str, path: str) -> dict[str, str] | None:
    """The path parameters of `path` under a resource path template, or None if it does not
    match ({proxy+} takes the rest)."""
    pattern = ""
    names = []
    for seg in template.strip("/").split("/") if template != "/" else []:
        m = re.fullmatch(r"\{([^}+]+)(\+?)\}", seg)
        if m:
            names.append(m.group(1))
            pattern += "/(.+)" if m.group(2) else "/([^/]+)"
        else:
            pattern += "/" + re.escape(seg)
    m = re.fullmatch(pattern or "/", path)
    if m is None:
        return None
    return {n: unquote(v) for n, v in zip(names, m.groups())}


class _Response:
    """A response read with httptools from the test connection."""

    def __init__(self):
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.done = True


class MethodInvoker:
    """Runs TestInvokeMethod calls on the admin's event loop; `invoke` is called from the
    control API's thread and waits for the loop. Functions run in the authorizer invoker's
    FunctionRunner (one per admin process, from the config's `functions:`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, authorizers):
        self.loop = loop
        self.authorizers = authorizers      # fastgate.control.authorizer_invoke.AuthorizerInvoker

    def invoke(self, api: dict, resource: dict, http_method: str, extra: dict, p: dict) -> dict:
        fut = asyncio.run_coroutine_threadsafe(
            self._invoke(api, resource, http_method, extra, p), self.loop)
        return fut.result(TEST_TIMEOUT_S)

    def _snapshot(self, api: dict, resource: dict, http_method: str, extra: dict, p: dict, warn,
                  services):
        from fastgate.compile.config.load import LoadedConfig
        from fastgate.compile.snapshot import build_snapshot
        from fastgate.control.state import State
        loaded = self.authorizers.loaded
        api = test_api(api, resource["id"], http_method)
        state = State(apis={api["id"]: api}, extra=extra)
        state.deployments[api["id"]] = {TEST_DEPLOYMENT: {"id": TEST_DEPLOYMENT, "api": api}}
        state.stages[api["id"]] = {TEST_STAGE: {"stageName": TEST_STAGE,
                                                "deploymentId": TEST_DEPLOYMENT,
                                                "variables": dict(p.get("stageVariables") or {})}}
        test_loaded = LoadedConfig(loaded.config, loaded.source, state)
        return build_snapshot(test_loaded, None, open_logs=False, warn=warn, services=services)

    async def _invoke(self, api: dict, resource: dict, http_method: str, extra: dict, p: dict) -> dict:
        from fastgate._core.client import protocol_factory
        from fastgate._core.runtime import Worker
        from fastgate.phases.access import Services
        if self.authorizers.functions is None:
            self.authorizers._configure_functions()
        request_id = str(uuid.uuid4())
        warnings: list[str] = []
        # the invocation's own services: AWS integrations' pools and credentials live and
        # die with it (closed below), the functions are the admin's
        services = Services(functions=self.authorizers.functions)
        snapshot = self._snapshot(api, resource, http_method, extra, p, warnings.append, services)
        worker = Worker(snapshot, self.loop)
        worker.functions = self.authorizers.functions
        server = await self.loop.create_server(protocol_factory(worker, 0), host="127.0.0.1", port=0)
        worker.start()
        try:
            port = server.sockets[0].getsockname()[1]
            return await self._exchange(port, api, resource, http_method, p, request_id, warnings)
        finally:
            server.close()
            worker.drain()
            worker.close_all()
            services.close()

    async def _exchange(self, port: int, api: dict, resource: dict, http_method: str, p: dict,
                        request_id: str, warnings: list[str]) -> dict:
        import httptools
        given = p.get("pathWithQueryString") or resource["path"]
        path, _, query = given.partition("?")
        if not path.startswith("/"):
            path = "/" + path
        params = path_params(resource["path"], path)
        # AWS runs the resource named whatever the path says; a path that is not the resource's
        # is served as the resource's own path (its parameters then read as written: {petId})
        wire_path = path if params is not None else quote(resource["path"], safe="/")
        body = (p.get("body") or "").encode()
        headers = [(k, v) for k, v in (p.get("headers") or {}).items()]
        for k, values in (p.get("multiValueHeaders") or {}).items():
            headers += [(k, v) for v in values if (k, v) not in headers]
        head = [f"{http_method if http_method != 'ANY' else 'GET'} /{TEST_STAGE}{wire_path}"
                f"{'?' + query if query else ''} HTTP/1.1",
                f"Host: {api['id']}.execute-api.localhost", f"Content-Length: {len(body)}",
                "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers if k.lower() not in ("host", "content-length",
                                                                         "connection", "transfer-encoding")]
        log = [f"Execution log for request {request_id}"]

        def line(text: str) -> None:
            log.append(f"{_log_time()} : {text}")
        line(f"Starting execution for request: {request_id}")
        line(f"HTTP Method: {http_method}, Resource Path: {path}")
        line(f"Method request path: {_java_map((params or {}).items())}")
        line(f"Method request query string: {_java_map(parse_qsl(query, keep_blank_values=True))}")
        line(f"Method request headers: {_java_map(headers)}")
        line(f"Method request body before transformations: {body.decode(errors='replace')}")
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        resp = _Response()
        parser = httptools.HttpResponseParser(resp)
        try:
            writer.write("\r\n".join(head).encode("latin-1") + b"\r\n\r\n" + body)
            await writer.drain()
            while not resp.done:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                parser.feed_data(chunk)
        finally:
            writer.close()
        latency = int((time.monotonic() - started) * 1000)
        status = parser.get_status_code()
        out_headers: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for k, v in resp.headers:
            if k.lower() in _TRANSPORT:
                continue
            out_headers[k] = v
            multi.setdefault(k, []).append(v)
        text = bytes(resp.body).decode(errors="replace")
        # what the compiler could not serve for this method (a bad URI, a missing stage
        # variable, an unknown function) is AWS's configuration error
        reason = next((w for w in warnings if w.endswith("it answers 500 Internal server error")), None)
        if status >= 500 and reason is not None:
            detail = reason.rsplit("; it answers", 1)[0].split(f" {resource['path']}: ", 1)[-1]
            line(f"Execution failed due to configuration error: {detail}")
        else:
            line(f"Method response body after transformations: {text}")
            line(f"Method response headers: {_java_map(out_headers.items())}")
            line("Successfully completed execution")
        line(f"Method completed with status: {status}")
        return {"status": status, "body": text, "headers": out_headers,
                "multiValueHeaders": multi, "latency": latency, "log": "\n".join(log) + "\n"}
