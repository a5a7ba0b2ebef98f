"""WebSocket APIs end to end: AWS's sample chat application (simple-websockets-chat-app:
$connect stores the connection, `sendmessage` broadcasts to every stored connection through
@connections with boto3, $disconnect removes it) served by real gateways, driven by real
`websockets` clients and boto3; across two workers of one gateway and across two gateways
sharing Redis. Then what goes wrong: a refused $connect, an unknown route, a bad frame, an
oversize message, a vanished connection — each gets AWS's answer and no worker dies."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import textwrap

import boto3
import pytest
from botocore.config import Config as BotoConfig
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import wait_until

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from redis_server import RedisServer  # noqa: E402
from ws_frames import masked  # noqa: E402

KEY_ID, SECRET = "AKIAWEBSOCKETTEST01", "websocket-test-secret-key"
ENV = {"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY_ID, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}

CHAT = '''
import json, os, sqlite3
import boto3
from botocore.config import Config

DB = os.environ["CHAT_DB"]

def table():
    db = sqlite3.connect(DB, timeout=10, isolation_level=None)
    db.execute("CREATE TABLE IF NOT EXISTS conns (id TEXT PRIMARY KEY)")
    return db

def on_connect(event, context):
    if (event.get("queryStringParameters") or {}).get("name") == "intruder":
        return {"statusCode": 403, "body": "go away"}
    with open(os.environ["EVENTS"], "a") as f:
        f.write(json.dumps(event) + "\\n")
    table().execute("INSERT OR REPLACE INTO conns VALUES (?)", (event["requestContext"]["connectionId"],))
    return {"statusCode": 200}

def on_disconnect(event, context):
    with open(os.environ["EVENTS"], "a") as f:
        f.write(json.dumps(event) + "\\n")
    table().execute("DELETE FROM conns WHERE id = ?", (event["requestContext"]["connectionId"],))
    return {"statusCode": 200}

def send_message(event, context):
    ctx = event["requestContext"]
    with open(os.environ["GATEWAY_FILE"]) as f:     # the gateway this handler runs behind
        gateway = f.read()
    api = boto3.client("apigatewaymanagementapi", endpoint_url=gateway + "/" + ctx["stage"],
                       region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
    data = json.loads(event["body"])["data"]
    db = table()
    for (cid,) in db.execute("SELECT id FROM conns").fetchall():
        try:
            api.post_to_connection(ConnectionId=cid, Data=data.encode())
        except api.exceptions.GoneException:
            db.execute("DELETE FROM conns WHERE id = ?", (cid,))
    return {"statusCode": 200, "body": "Data sent."}

def echo(event, context):
    return {"statusCode": 200, "body": json.dumps({"echo": json.loads(event["body"]),
                                                  "routeKey": event["requestContext"]["routeKey"],
                                                  "connectionId": event["requestContext"]["connectionId"]})}

def boom(event, context):
    raise RuntimeError("boom")
'''


def config(src, db, events, gateway_file, redis_url: str | None = None) -> str:
    env = textwrap.indent(textwrap.dedent(f"""\
        environment:
          CHAT_DB: {db}
          EVENTS: {events}
          GATEWAY_FILE: {gateway_file}
          AWS_ACCESS_KEY_ID: {KEY_ID}
          AWS_SECRET_ACCESS_KEY: {SECRET}
        paths: [{src}]
        concurrency: 2
        timeout_ms: 10000
        """), "    ")
    fns = "".join(f"  {name}:\n    handler: chat:{name}\n{env}" for name in
                  ("on_connect", "on_disconnect", "send_message", "echo", "boom"))
    return f"""\
access_log: {{path: 'off'}}
{f'redis: {{url: "{redis_url}"}}' if redis_url else ''}
functions:
{fns}
websocket_apis:
  - name: chat
    id: chatapi
    stages: {{prod: {{}}}}
    routes:
      $connect: {{integration: {{type: function, function: on_connect}}}}
      $disconnect: {{integration: {{type: function, function: on_disconnect}}}}
      sendmessage: {{integration: {{type: function, function: send_message}}}}
      echo:
        integration: {{type: function, function: echo}}
        route_response_selection_expression: $default
      boom: {{integration: {{type: function, function: boom}}}}
    limits: {{max_message_bytes: 4096, max_frame_bytes: 1024}}
  - name: strict
    id: strictapi
    stages: {{dev: {{throttle: {{rate: 0.5, burst: 3}}}}}}
    routes:
      ping:
        integration: {{type: mock, body: pong}}
        route_response_selection_expression: $default
  - name: keyed
    id: keyedapi
    stages: {{live: {{}}}}
    routes:
      $connect: {{integration: {{type: mock}}, api_key_required: true}}
      $default:
        integration: {{type: mock, body: welcome}}
        route_response_selection_expression: $default
api_keys:
  - {{id: partner, name: partner, value: partner-key-0123456789abcdef}}
usage_plans:
  - {{id: gold, name: gold, api_stages: [{{api: keyedapi, stage: live}}], keys: [partner]}}
"""


def start(gateway_factory, tmp_path, *, workers=2, redis_url=None, host_id=None):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "chat.py").write_text(CHAT)
    db = tmp_path / "chat.sqlite"
    events = tmp_path / f"events-{host_id or 'one'}.jsonl"
    gateway_file = tmp_path / f"gateway-{host_id or 'one'}.url"
    env = dict(ENV)
    if host_id:
        env["FASTGATE_HOST_ID"] = host_id
    gw = gateway_factory(config(src, db, events, gateway_file, redis_url), workers=workers, env=env)
    gateway_file.write_text(gw.url)     # known once it started
    gw.events = events
    return gw


@pytest.fixture
def chat(gateway, tmp_path):
    return start(gateway, tmp_path)


def owner_pid(connection_id: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(connection_id)[2:5], "big")


def mgmt(gw, stage="prod", port=None):
    return boto3.client("apigatewaymanagementapi", endpoint_url=f"http://127.0.0.1:{port or gw.port}/{stage}",
                        region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
                        config=BotoConfig(retries={"max_attempts": 1}))


async def whoami(ws) -> str:
    await ws.send(json.dumps({"action": "echo", "n": 1}))
    return json.loads(await asyncio.wait_for(ws.recv(), 15))["connectionId"]


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_chat_across_two_workers(chat):
    async def scenario():
        clients, ids = [], []
        # connections spread over the workers (SO_REUSEPORT): connect until both have some
        for _ in range(30):
            ws = await connect(f"ws://127.0.0.1:{chat.port}/prod", open_timeout=15)
            clients.append(ws)
            ids.append(await whoami(ws))
            if len(clients) >= 4 and len({owner_pid(c) for c in ids}) >= 2:
                break
        assert len({owner_pid(c) for c in ids}) >= 2, "every connection landed on one worker"
        assert {owner_pid(c) for c in ids} <= set(chat.workers())
        await clients[0].send(json.dumps({"action": "sendmessage", "data": "hello, everyone"}))
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), 20) == "hello, everyone"
        # boto3 from the test, on the data-plane listener: reaches a connection on either worker
        api = mgmt(chat)
        for cid in ids:
            info = await asyncio.to_thread(api.get_connection, ConnectionId=cid)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            assert info["ConnectedAt"] <= info["LastActiveAt"]
        await asyncio.to_thread(api.post_to_connection, ConnectionId=ids[-1], Data=b"direct")
        assert await asyncio.wait_for(clients[-1].recv(), 10) == "direct"
        # DeleteConnection closes it; its $disconnect runs and it is gone (410)
        await asyncio.to_thread(api.delete_connection, ConnectionId=ids[1])
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(clients[1].recv(), 10)
        with pytest.raises(api.exceptions.GoneException):
            await asyncio.to_thread(api.post_to_connection, ConnectionId=ids[1], Data=b"x")
        for ws in clients:
            await ws.close()
        return ids
    ids = run(scenario())

    def events():
        with open(chat.events) as f:
            return [json.loads(line) for line in f]
    # every connection connected once and disconnected once, with AWS's events
    wait_until(lambda: sum(e["requestContext"]["eventType"] == "DISCONNECT" for e in events()) == len(ids),
               timeout=20)
    evs = events()
    connects = [e for e in evs if e["requestContext"]["eventType"] == "CONNECT"]
    assert sorted(e["requestContext"]["connectionId"] for e in connects) == sorted(ids)
    c = connects[0]
    assert set(c) == {"headers", "multiValueHeaders", "requestContext", "isBase64Encoded"}
    assert c["headers"]["Sec-WebSocket-Version"] == "13" and "Sec-WebSocket-Key" in c["headers"]
    assert c["headers"]["X-Forwarded-For"] == "127.0.0.1"
    rc = c["requestContext"]
    assert rc["routeKey"] == "$connect" and rc["messageDirection"] == "IN"
    assert rc["apiId"] == "chatapi" and rc["stage"] == "prod"
    assert rc["identity"]["sourceIp"] == "127.0.0.1"
    assert set(rc) == {"routeKey", "eventType", "extendedRequestId", "requestTime", "messageDirection",
                       "stage", "connectedAt", "requestTimeEpoch", "identity", "requestId",
                       "domainName", "connectionId", "apiId"}
    gone = [e for e in evs if e["requestContext"]["eventType"] == "DISCONNECT"
            and e["requestContext"]["connectionId"] == ids[0]][0]
    assert gone["headers"] == {"Host": "127.0.0.1", "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    assert gone["requestContext"]["disconnectStatusCode"] == 1000
    assert gone["requestContext"]["connectedAt"] == [
        e for e in connects if e["requestContext"]["connectionId"] == ids[0]][0]["requestContext"]["connectedAt"]
    assert len(set(chat.workers())) == 3    # two workers and the admin: none died


def test_message_event_two_way_and_query(chat):
    async def scenario():
        async with connect(f"ws://127.0.0.1:{chat.port}/prod?room=1&room=2&x=y", open_timeout=15) as ws:
            await ws.send(json.dumps({"action": "echo", "text": "hi"}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert answer["echo"] == {"action": "echo", "text": "hi"} and answer["routeKey"] == "echo"
            # a function that fails: AWS's error frame, and the connection stays
            await ws.send(json.dumps({"action": "boom"}))
            err = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert err["message"] == "Internal server error"
            assert set(err) == {"message", "connectionId", "requestId"}
            await ws.send(json.dumps({"action": "echo"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 15))["routeKey"] == "echo"
            return answer["connectionId"]
    cid = run(scenario())
    with open(chat.events) as f:
        c = [json.loads(line) for line in f if cid in line][0]
    assert c["queryStringParameters"] == {"room": "2", "x": "y"}
    assert c["multiValueQueryStringParameters"] == {"room": ["1", "2"], "x": ["y"]}


def test_refused_connect_and_plain_get(chat):
    async def scenario():
        with pytest.raises(InvalidStatus) as e:
            await connect(f"ws://127.0.0.1:{chat.port}/prod?name=intruder", open_timeout=15)
        assert e.value.response.status_code == 403
        assert e.value.response.body == b"go away"
    run(scenario())
    import httpx
    r = httpx.get(f"http://127.0.0.1:{chat.port}/prod")
    assert r.status_code == 426 and r.headers["upgrade"] == "websocket"
    # the {apiId}.execute-api host form: the API's stage answers, an unknown stage is 403
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    r = httpx.get(f"http://127.0.0.1:{chat.port}/nostage",
                  headers={**upgrade, "Host": "chatapi.execute-api.localhost"})
    assert r.status_code == 403
    with socket.create_connection(("127.0.0.1", chat.port), timeout=10) as s:
        s.sendall(b"GET /prod HTTP/1.1\r\nHost: chatapi.execute-api.localhost\r\n" +
                  "".join(f"{k}: {v}\r\n" for k, v in upgrade.items()).encode() + b"\r\n")
        assert s.recv(12) == b"HTTP/1.1 101"


def test_unknown_route_without_default_gets_forbidden_frame(chat):
    async def scenario():
        async with connect(f"ws://127.0.0.1:{chat.port}/dev", open_timeout=15) as ws:
            await ws.send(json.dumps({"action": "nothing-here"}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 15))
            assert frame["message"] == "Forbidden" and set(frame) == {"message", "connectionId", "requestId"}
            await ws.send("not json at all")
            assert json.loads(await asyncio.wait_for(ws.recv(), 15))["message"] == "Forbidden"
            await ws.send(json.dumps({"action": "ping"}))      # a two-way mock
            assert await asyncio.wait_for(ws.recv(), 15) == "pong"
    run(scenario())


def raw_upgrade(port: int, path: str) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    return s


def read_close(s: socket.socket) -> int:
    """The close code of the first close frame the server sends."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"closed without a close frame: {data!r}")
        data += chunk
        while len(data) >= 2:
            n = data[1] & 0x7F
            h = 2 if n < 126 else 4 if n == 126 else 10
            if n >= 126:
                n = int.from_bytes(data[2:h], "big")
            if len(data) < h + n:
                break
            op, payload, data = data[0] & 0x0F, data[h:h + n], data[h + n:]
            if op == 8:
                return int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize("frames, code", [
    (lambda: bytes([0x81, 0x02]) + b"hi", 1002),                       # unmasked client frame
    (lambda: masked(0x3, b"x"), 1002),                                  # reserved opcode
    (lambda: bytes([0xC1]) + masked(1, b"x")[1:], 1002),                # RSV1 without an extension
    (lambda: masked(0x0, b"x"), 1002),                                  # continuation of nothing
    (lambda: masked(0x1, b"\xff\xfe"), 1007),                           # text that is not UTF-8
    (lambda: masked(0x2, b"x" * 2000), 1009),                           # a frame past max_frame_bytes
    (lambda: b"".join(masked(0x2 if i == 0 else 0, b"y" * 1000, fin=i == 4) for i in range(5)), 1009),
])
def test_bad_frames_close_with_aws_codes(chat, frames, code):
    s = raw_upgrade(chat.port, "/prod")      # (the chat API's limits: 1 KB frames, 4 KB messages)
    s.sendall(frames())
    assert read_close(s) == code
    s.close()

    async def still_serving():
        async with connect(f"ws://127.0.0.1:{chat.port}/dev", open_timeout=15) as ws:
            await ws.send(json.dumps({"action": "ping"}))
            assert await asyncio.wait_for(ws.recv(), 15) == "pong"
    run(still_serving())
    assert len(set(chat.workers())) == 3


def test_fragmented_message_is_reassembled_and_ping_answered(chat):
    s = raw_upgrade(chat.port, "/dev")
    body = json.dumps({"action": "ping", "pad": "z" * 2500}).encode()
    parts = [body[i:i + 900] for i in range(0, len(body), 900)]
    s.sendall(masked(9, b"are you there"))
    s.sendall(b"".join(masked(1 if i == 0 else 0, p, fin=i == len(parts) - 1) for i, p in enumerate(parts)))
    got = b""
    while b"pong" not in got:
        chunk = s.recv(65536)
        assert chunk
        got += chunk
    assert got.startswith(bytes([0x8A, 13]) + b"are you there")     # the pong first
    s.close()


def test_vanished_connection_is_gone(chat):
    async def scenario():
        ws = await connect(f"ws://127.0.0.1:{chat.port}/prod", open_timeout=15)
        cid = await whoami(ws)
        ws.transport.abort()     # no close frame: the client just vanishes
        return cid
    cid = run(scenario())
    api = mgmt(chat)

    def gone():
        try:
            api.post_to_connection(ConnectionId=cid, Data=b"anyone?")
        except api.exceptions.GoneException as e:
            assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 410
            return True
        return False
    wait_until(gone, timeout=15)
    with pytest.raises(api.exceptions.GoneException):
        api.get_connection(ConnectionId="AAAAAAAAAAAAAAA=")

    def disconnect():
        with open(chat.events) as f:
            return [json.loads(line) for line in f if cid in line and "DISCONNECT" in line]
    d = wait_until(disconnect, timeout=15)[0]["requestContext"]
    assert d["disconnectStatusCode"] == 1006 and d["routeKey"] == "$disconnect"


def test_connections_api_needs_a_signature(chat):
    import httpx
    r = httpx.post(f"http://127.0.0.1:{chat.port}/prod/@connections/AAAAAAAAAAAAAAA=", content=b"x")
    assert r.status_code == 403
    bad = boto3.client("apigatewaymanagementapi", endpoint_url=f"http://127.0.0.1:{chat.port}/prod",
                       region_name="us-east-1", aws_access_key_id=KEY_ID, aws_secret_access_key="wrong",
                       config=BotoConfig(retries={"max_attempts": 1}))
    from botocore.exceptions import ClientError
    with pytest.raises(ClientError) as e:
        bad.post_to_connection(ConnectionId="AAAAAAAAAAAAAAA=", Data=b"x")
    # AWS's answer to a bad signature on execute-api: 403 InvalidSignatureException
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_chat_across_two_gateways_sharing_redis(gateway, tmp_path):
    with RedisServer() as r:
        a = start(gateway, tmp_path, workers=1, redis_url=r.url, host_id="host-a")
        b = start(gateway, tmp_path, workers=1, redis_url=r.url, host_id="host-b")

        async def scenario():
            wa = await connect(f"ws://127.0.0.1:{a.port}/prod", open_timeout=15)
            wb = await connect(f"ws://127.0.0.1:{b.port}/prod", open_timeout=15)
            ida, idb = await whoami(wa), await whoami(wb)
            # a message on gateway A reaches the client on gateway B (Redis pub/sub)
            await wa.send(json.dumps({"action": "sendmessage", "data": "across hosts"}))
            assert await asyncio.wait_for(wa.recv(), 20) == "across hosts"
            assert await asyncio.wait_for(wb.recv(), 20) == "across hosts"
            api_a = mgmt(a)
            info = await asyncio.to_thread(api_a.get_connection, ConnectionId=idb)
            assert info["Identity"]["SourceIp"] == "127.0.0.1"
            await wb.close()
            await wa.close()
            return idb, api_a
        idb, api_a = run(scenario())
        wait_until(lambda: _gone(api_a, idb), timeout=15)


def _gone(api, cid) -> bool:
    try:
        api.get_connection(ConnectionId=cid)
    except api.exceptions.GoneException:
        return True
    return False


def test_api_key_on_connect(chat):
    async def scenario():
        for headers in ({}, {"x-api-key": "not-a-key"}):
            with pytest.raises(InvalidStatus) as e:
                await connect(f"ws://127.0.0.1:{chat.port}/live", additional_headers=headers,
                              open_timeout=15)
            assert e.value.response.status_code == 403
            assert json.loads(e.value.response.body) == {"message": "Forbidden"}
        async with connect(f"ws://127.0.0.1:{chat.port}/live", open_timeout=15,
                           additional_headers={"x-api-key": "partner-key-0123456789abcdef"}) as ws:
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 15) == "welcome"
    run(scenario())


def test_messages_are_throttled_per_route_and_posts_stay_in_their_api(chat):
    async def scenario():
        async with connect(f"ws://127.0.0.1:{chat.port}/dev", open_timeout=15) as ws:
            answers = []
            for _ in range(6):
                await ws.send(json.dumps({"action": "ping"}))
                answers.append(await asyncio.wait_for(ws.recv(), 15))
            assert answers[:3] == ["pong"] * 3       # the burst
            throttled = [json.loads(a) for a in answers[3:] if a != "pong"]
            assert throttled and all(t["message"] == "Too Many Requests" for t in throttled)
            await ws.send(json.dumps({"action": "nothing-here"}))     # the connection stays
            assert json.loads(await asyncio.wait_for(ws.recv(), 15))["message"] == "Forbidden"
        async with connect(f"ws://127.0.0.1:{chat.port}/prod", open_timeout=15) as ws:
            cid = await whoami(ws)
            # the strict API's @connections endpoint does not reach the chat API's connection
            with pytest.raises(mgmt(chat, stage="dev").exceptions.GoneException):
                await asyncio.to_thread(mgmt(chat, stage="dev").post_to_connection,
                                        ConnectionId=cid, Data=b"x")
            await asyncio.to_thread(mgmt(chat).post_to_connection, ConnectionId=cid, Data=b"mine")
            assert await asyncio.wait_for(ws.recv(), 10) == "mine"
    run(scenario())
