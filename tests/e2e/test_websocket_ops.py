"""WebSocket APIs in operation: the @connections API on the admin listener, the idle timeout
and the longest duration (1001), a reload and a binary upgrade that keep connections open,
SIGTERM's drain ending them with 1001, the metrics, an HTTP_PROXY route."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import boto3
import httpx
import pytest
from botocore.config import Config as BotoConfig
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from conftest import wait_until

KEY_ID, SECRET = "AKIAWEBSOCKETTEST02", "websocket-ops-secret-key"
ENV = {"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY_ID, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}

HANDLERS = '''
import json, os

def record(event, context):
    with open(os.environ["EVENTS"], "a") as f:
        f.write(json.dumps(event) + "\\n")
    return {"statusCode": 200}

def authorize(event, context):
    with open(os.environ["EVENTS"] + ".auth", "a") as f:
        f.write(json.dumps(event) + "\\n")
    allow = (event.get("queryStringParameters") or {}).get("token") == "letmein"
    return {"principalId": "alice", "context": {"team": "blue"}, "policyDocument": {
        "Version": "2012-10-17", "Statement": [{"Action": "execute-api:Invoke",
        "Effect": "Allow" if allow else "Deny", "Resource": event["methodArn"]}]}}
'''


def config(tmp_path, upstream_url: str, idle_ms: int = 600000, duration_ms: int = 7200000,
           drain_ms: int = 30000, reply: str = "pong") -> str:
    (tmp_path / "ops.py").write_text(HANDLERS)
    return f"""\
access_log: {{path: 'off'}}
limits: {{drain_timeout_ms: {drain_ms}}}
functions:
  record:
    handler: ops:record
    paths: [{tmp_path}]
    environment: {{EVENTS: {tmp_path / 'events.jsonl'}}}
  authorize:
    handler: ops:authorize
    paths: [{tmp_path}]
    environment: {{EVENTS: {tmp_path / 'events.jsonl'}}}
websocket_apis:
  - name: ops
    id: opsapi
    stages: {{v1: {{}}}}
    routes:
      $connect: {{integration: {{type: function, function: record}}}}
      $disconnect: {{integration: {{type: function, function: record}}}}
      ping:
        integration: {{type: mock, body: {reply}}}
        route_response_selection_expression: $default
      echo:
        integration: {{type: http_proxy, url: "{upstream_url}/echo/ws"}}
        route_response_selection_expression: $default
      mapped:
        integration:
          type: http
          url: "{upstream_url}/echo/mapped"
          request_template: '{{"who": "$context.connectionId", "data": $input.json("$.data")}}'
          response_template: '{{"upstream_saw": $input.json("$.body_size"), "path": "$input.path("$.path")"}}'
        route_response_selection_expression: $default
    limits: {{idle_timeout_ms: {idle_ms}, max_duration_ms: {duration_ms}}}
  - name: authed
    id: authedapi
    stages: {{v2: {{variables: {{color: green}}}}}}
    routes:
      $connect:
        integration: {{type: function, function: record}}
        auth: {{lambda: {{function: authorize, type: REQUEST, ttl_s: 0,
                          identity_source: [route.request.querystring.token]}}}}
      ping:
        integration: {{type: mock, body: pong}}
        route_response_selection_expression: $default
"""


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def disconnects(tmp_path) -> list[dict]:
    path = tmp_path / "events.jsonl"
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line)["requestContext"] for line in f]


def disconnect_codes(tmp_path) -> list[int]:
    return [d["disconnectStatusCode"] for d in disconnects(tmp_path) if d["eventType"] == "DISCONNECT"]


async def ping(ws, expect="pong"):
    await ws.send(json.dumps({"action": "ping"}))
    assert await asyncio.wait_for(ws.recv(), 15) == expect


def admin_api(gw):
    return boto3.client("apigatewaymanagementapi", endpoint_url=f"http://127.0.0.1:{gw.admin_port}/v1",
                        region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=BotoConfig(retries={"max_attempts": 1}))


def test_http_proxy_route_and_metrics(gateway, tmp_path, upstream):
    gw = gateway(config(tmp_path, upstream.url), workers=1, env=ENV)

    async def scenario():
        async with connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15) as ws:
            await ws.send(json.dumps({"action": "echo", "n": 7}))
            seen = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert seen["method"] == "POST" and seen["path"] == "/echo/ws"
            body = json.dumps({"action": "echo", "n": 7}).encode()
            headers = {k.lower(): v for k, v in seen["headers"]}
            assert headers["content-length"] == str(len(body))
            # HTTP (not proxy): the request and response templates
            await ws.send(json.dumps({"action": "mapped", "data": {"x": [1, 2]}}))
            mapped = json.loads(await asyncio.wait_for(ws.recv(), 15))
            sent = '{"who": "%s", "data": {"x":[1,2]}}'
            assert mapped["path"] == "/echo/mapped"
            assert mapped["upstream_saw"] in {len(sent % cid) for cid in
                                              [d["connectionId"] for d in disconnects(tmp_path)
                                               if d["eventType"] == "CONNECT"]}
            await ping(ws)
            metrics = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics").text
            labels = 'api="opsapi",stage="v1"'
            assert f"fastgate_websocket_connections{{{labels}}} 1" in metrics
            assert f"fastgate_websocket_connect_total{{{labels}}} 1" in metrics
            assert 'fastgate_websocket_messages_total{api="opsapi",direction="in",stage="v1"} 3' in metrics
            assert 'fastgate_websocket_messages_total{api="opsapi",direction="out",stage="v1"} 3' in metrics
            # the dashboard: open connections and message rates per API stage
            dash = f"http://127.0.0.1:{gw.admin_port}/dashboard/api/summary"
            await ping(ws)

            def rows(messages_in: int):     # (the summary may use a reading up to 1.5 s old)
                out = [r for r in httpx.get(dash).json()["websockets"] if r["api"] == "opsapi"]
                return out if [(r["api"], r["stage"], r["connections"], r["messages_in"])
                               for r in out] == [("opsapi", "v1", 1, messages_in)] else None
            await asyncio.to_thread(wait_until, lambda: rows(4))
            await ping(ws)
            after = await asyncio.to_thread(wait_until, lambda: rows(5))
            assert after[0]["in_per_s"] > 0 and after[0]["out_per_s"] > 0
            await ws.send(json.dumps({"action": "nowhere"}))      # no $default: Forbidden
            await asyncio.wait_for(ws.recv(), 15)
        metrics = httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics").text
        assert 'fastgate_websocket_errors_total{api="opsapi",kind="route",stage="v1"} 1' in metrics
        wait_until(lambda: f"fastgate_websocket_connections{{{labels}}} 0" in
                   httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics").text)
    run(scenario())


def test_connections_api_on_the_admin_listener(gateway, tmp_path, upstream):
    gw = gateway(config(tmp_path, upstream.url), workers=2, env=ENV)
    api = admin_api(gw)

    def connected() -> list[str]:
        return [d["connectionId"] for d in disconnects(tmp_path) if d["eventType"] == "CONNECT"]

    async def scenario():
        clients = []
        for _ in range(4):
            clients.append(await connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15))
            await ping(clients[-1])
        ids = wait_until(lambda: connected() if len(connected()) == len(clients) else None)
        # connect order = id order (each $connect ran before the next client connected)
        pids = {int.from_bytes(__import__("base64").urlsafe_b64decode(c)[2:5], "big") for c in ids}
        for cid, ws in zip(ids, clients):
            info = await asyncio.to_thread(api.get_connection, ConnectionId=cid)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            await asyncio.to_thread(api.post_to_connection, ConnectionId=cid, Data=("to " + cid).encode())
            assert await asyncio.wait_for(ws.recv(), 15) == "to " + cid
        await asyncio.to_thread(api.delete_connection, ConnectionId=ids[0])
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(clients[0].recv(), 15)
        assert clients[0].close_code == 1000
        with pytest.raises(api.exceptions.GoneException):
            await asyncio.to_thread(api.post_to_connection, ConnectionId=ids[0], Data=b"x")
        for ws in clients[1:]:
            await ws.close()
        return pids
    pids = run(scenario())
    assert pids <= set(gw.workers())
    # unsigned: 403, and the admin listener still serves
    r = httpx.post(f"http://127.0.0.1:{gw.admin_port}/v1/@connections/AAAAAAAAAAAAAAA=", content=b"x")
    assert r.status_code == 403 and r.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


def test_idle_timeout_and_longest_duration_close_with_1001(gateway, tmp_path, upstream):
    gw = gateway(config(tmp_path, upstream.url, idle_ms=400, duration_ms=1500), workers=1, env=ENV)

    async def scenario():
        idle = await connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15, ping_interval=None)
        busy = await connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15, ping_interval=None)
        t0 = time.monotonic()
        with pytest.raises(ConnectionClosed):
            while True:     # the busy one keeps talking; it still ends at max_duration
                await ping(busy)
                await asyncio.sleep(0.1)
        assert time.monotonic() - t0 >= 1.2
        assert busy.close_code == 1001
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(idle.recv(), 15)
        assert idle.close_code == 1001 and idle.close_reason == "Going away"
    run(scenario())
    codes = wait_until(lambda: disconnect_codes(tmp_path) if len(disconnect_codes(tmp_path)) == 2 else None)
    assert codes == [1001, 1001]


def test_reload_keeps_connections_and_uses_new_routes(gateway, tmp_path, upstream):
    gw = gateway(config(tmp_path, upstream.url), workers=1, env=ENV)

    async def scenario():
        async with connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15) as ws:
            await ping(ws)
            text = gw.config_path.read_text().replace("body: pong", "body: pong-2")
            gw.config_path.write_text(text)
            os.kill(gw.pid, signal.SIGHUP)
            for _ in range(100):
                await ws.send(json.dumps({"action": "ping"}))
                if await asyncio.wait_for(ws.recv(), 15) == "pong-2":
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the reloaded route never answered")
    run(scenario())


def test_sigterm_drains_then_closes_with_1001(gateway, tmp_path, upstream):
    gw = gateway(config(tmp_path, upstream.url, drain_ms=1500), workers=1, env=ENV)

    async def scenario():
        ws = await connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15)
        await ping(ws)
        t0 = time.monotonic()
        os.kill(gw.pid, signal.SIGTERM)
        await asyncio.sleep(0.5)
        await ping(ws)          # still served during the drain
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 15)
        assert ws.close_code == 1001
        assert time.monotonic() - t0 >= 1.2
    run(scenario())
    assert gw.p.proc.wait(15) == 0


def test_binary_upgrade_keeps_websocket_connections(tmp_path, upstream, monkeypatch):
    from conftest import free_port
    from test_reload import Served
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    port, admin = free_port(), free_port()
    text = (f"workers: 1\nlisteners: [{{address: '127.0.0.1:{port}'}}]\n"
            f"admin: {{listen: '127.0.0.1:{admin}'}}\n"
            "routes: [{path: /v, integration: {type: mock, body: v}}]\n"
            + config(tmp_path, upstream.url, drain_ms=6000))
    g = Served(tmp_path, text, port, args=("--no-watch",))
    api = boto3.client("apigatewaymanagementapi", endpoint_url=f"http://127.0.0.1:{port}/v1",
                       region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                       config=BotoConfig(retries={"max_attempts": 1}))
    try:
        old_pid = g.pid()

        async def scenario():
            old = await connect(f"ws://127.0.0.1:{port}/v1", open_timeout=15)
            await ping(old)
            cid = wait_until(lambda: [d["connectionId"] for d in disconnects(tmp_path)
                                      if d["eventType"] == "CONNECT"])[0]
            os.kill(old_pid, signal.SIGUSR2)
            await asyncio.to_thread(wait_until, lambda: g.pid() not in (0, old_pid), 30)
            # the new process serves new connections; the old one keeps its own open, and a
            # post made through the new process still reaches it (same host, the bus)
            async with connect(f"ws://127.0.0.1:{port}/v1", open_timeout=15) as new:
                await ping(new)
            await ping(old)
            await asyncio.to_thread(api.post_to_connection, ConnectionId=cid, Data=b"still here")
            assert await asyncio.wait_for(old.recv(), 15) == "still here"
            # until the old process's drain ends: then 1001
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(old.recv(), 30)
            assert old.close_code == 1001
        run(scenario())
    finally:
        g.stop()


def test_lambda_authorizer_on_connect(gateway, tmp_path, upstream):
    gw = gateway(config(tmp_path, upstream.url), workers=1, env=ENV)
    from websockets.exceptions import InvalidStatus

    async def scenario():
        for query, status in (("", 401), ("?token=wrong", 403)):
            with pytest.raises(InvalidStatus) as e:
                await connect(f"ws://127.0.0.1:{gw.port}/v2{query}", open_timeout=15)
            assert e.value.response.status_code == status
        async with connect(f"ws://127.0.0.1:{gw.port}/v2?token=letmein", open_timeout=15) as ws:
            await ping(ws)
    run(scenario())
    with open(tmp_path / "events.jsonl.auth") as f:
        auth = [json.loads(line) for line in f]
    assert len(auth) == 2          # no identity source: 401 without a call
    ev = auth[-1]
    assert ev["type"] == "REQUEST"
    assert ev["methodArn"].endswith(":authedapi/v2/$connect")
    assert ev["queryStringParameters"] == {"token": "letmein"}
    assert ev["stageVariables"] == {"color": "green"}
    assert ev["requestContext"]["routeKey"] == "$connect" and ev["requestContext"]["eventType"] == "CONNECT"
    # $connect's own event: the same connection id, and the authorizer's context
    connect_ev = [d for d in disconnects(tmp_path) if d["eventType"] == "CONNECT"][-1]
    assert connect_ev["connectionId"] == ev["requestContext"]["connectionId"]
    assert connect_ev["authorizer"]["principalId"] == "alice"
    assert connect_ev["authorizer"]["team"] == "blue"


def test_a_flood_of_messages_is_bounded(gateway, tmp_path, upstream):
    """1,000 messages in one write, each for an HTTP_PROXY route: the gateway holds at most
    256 of them in its routes (the rest answer "Too Many Requests") and stops reading the
    client meanwhile; every message gets an answer and the worker stays up."""
    gw = gateway(config(tmp_path, upstream.url), workers=1, env=ENV)
    import socket
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from ws_frames import masked

    s = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    s.sendall(b"GET /v1 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101")
    s.sendall(b"".join(masked(1, json.dumps({"action": "echo", "i": i}).encode()) for i in range(1000)))
    data, answers = b"", []
    while len(answers) < 1000:
        chunk = s.recv(65536)
        assert chunk, f"closed after {len(answers)} answers"
        data += chunk
        while len(data) >= 2:
            n = data[1] & 0x7F
            h = 2 if n < 126 else 4
            if n == 126:
                if len(data) < 4:
                    break
                n = int.from_bytes(data[2:4], "big")
            if len(data) < h + n:
                break
            answers.append(json.loads(data[h:h + n]))
            data = data[h + n:]
    s.close()
    refused = [a for a in answers if a.get("message") == "Too Many Requests"]
    echoed = [a for a in answers if a.get("path") == "/echo/ws"]
    assert refused and echoed and len(refused) + len(echoed) == 1000
    assert len(gw.workers()) == 2 and gw.p.proc.poll() is None


def test_a_killed_workers_connections_leave_the_gauge(gateway, tmp_path, upstream):
    """fastgate_websocket_connections sums over workers in shared memory: a worker killed with
    its connections open must not leave them counted for ever."""
    gw = gateway(config(tmp_path, upstream.url), workers=1, env=ENV)
    gauge = 'fastgate_websocket_connections{api="opsapi",stage="v1"}'

    def value() -> float:
        for line in httpx.get(f"http://127.0.0.1:{gw.admin_port}/metrics", timeout=5).text.splitlines():
            if line.startswith(gauge + " "):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError("no " + gauge)

    async def scenario():
        clients = [await connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15) for _ in range(3)]
        for ws in clients:
            await ping(ws)
        assert value() == 3
        worker = max(wait_until(lambda: c if len(c := gw.workers()) == 2 else None))
        os.kill(worker, signal.SIGKILL)
        for ws in clients:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 15)
        await asyncio.to_thread(wait_until, lambda: worker not in gw.workers() and len(gw.workers()) == 2)
        await asyncio.to_thread(wait_until, lambda: value() == 0)
        async with connect(f"ws://127.0.0.1:{gw.port}/v1", open_timeout=15) as ws:   # the new worker counts its own
            await ping(ws)
            assert value() == 1
    run(scenario())
