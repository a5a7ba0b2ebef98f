#!/usr/bin/env python3
"""WebSocket API benchmarks (issue 15), one fastgate worker unless --workers says otherwise:

  idle       RSS growth of the worker holding --connections (10,000) idle WebSocket
             connections of a WebSocket API (target: at most 100 MB)
  roundtrip  messages/s and latency of a message through a two-way `$default` route to a
             local function that echoes it, against a plain `websockets` echo server that
             calls the same handler in-process (the added p50 is fastgate's cost)
  fanout     PostToConnection to each of --connections connections (requests SigV4-signed
             beforehand, sent over 32 keep-alive connections): time until every client has
             its message

The clients are raw asyncio sockets speaking just enough RFC 6455 (pre-masked frames), so
the client's own cost stays small next to the server's. Everything is bounded by --timeout
and stopped by PID.

Usage:  .venv/bin/python bench/websocket.py idle|roundtrip|fanout [--connections N] [--json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import idle_conns  # noqa: E402  (RSS, descriptors, RLIMIT_NOFILE)
import wrk_compare as wc  # noqa: E402  (processes started and stopped by PID)

KEY_ID, SECRET = "AKIABENCHWEBSOCKET01", "bench-websocket-secret"
UPGRADE = (b"GET /bench HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
CONCURRENCY = 256
HANDLER = '''
def echo(event, context):
    return {"statusCode": 200, "body": event["body"]}

def whoami(event, context):
    return {"statusCode": 200, "body": event["requestContext"]["connectionId"]}
'''


def masked_text(payload: bytes) -> bytes:
    """A client text frame with a zero mask (legal: the key is the client's choice)."""
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


async def read_frame(reader) -> bytes:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await reader.readexactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await reader.readexactly(8), "big")
    return await reader.readexactly(n)


async def open_ws(port: int, path: bytes = b"/bench"):
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    writer.write(UPGRADE.replace(b"/bench", path))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head[:200])
    return reader, writer


async def open_many(port: int, n: int, path: bytes) -> list:
    sem = asyncio.Semaphore(CONCURRENCY)
    out, errors = [], []

    async def one():
        async with sem:
            try:
                out.append(await asyncio.wait_for(open_ws(port, path), 20))
            except Exception as e:
                errors.append(repr(e))
    await asyncio.gather(*(one() for _ in range(n)))
    if errors:
        raise RuntimeError(f"{len(errors)} connections failed: {errors[:3]}")
    return out


def config(port: int, workdir: str, workers: int) -> str:
    with open(os.path.join(workdir, "benchws.py"), "w") as f:
        f.write(HANDLER)
    return f"""\
workers: {workers}
listeners: [{{address: '127.0.0.1:{port}'}}]
admin: {{listen: "off"}}
access_log: {{path: "off"}}
routes: [{{path: /, integration: {{type: mock, body: ok}}}}]
functions:
  echo: {{handler: benchws:echo, paths: [{workdir}], concurrency: 1}}
  whoami: {{handler: benchws:whoami, paths: [{workdir}], concurrency: 1, queue: 100000}}
websocket_apis:
  - name: bench
    stages: {{bench: {{}}, idle: {{}}}}
    routes:
      $default:
        integration: {{type: function, function: echo}}
        route_response_selection_expression: $default
      whoami:
        integration: {{type: function, function: whoami}}
        route_response_selection_expression: $default
"""


def start_fastgate(args, root: str) -> wc.Server:
    port = wc.free_port()
    path = os.path.join(root, "fastgate.yaml")
    with open(path, "w") as f:
        f.write(config(port, root, args.workers))
    env_backup = dict(os.environ)
    os.environ.update(FASTGATE_ADMIN_ACCESS_KEY_ID=KEY_ID, FASTGATE_ADMIN_SECRET_ACCESS_KEY=SECRET)
    try:
        srv = wc.Server("fastgate", [args.fastgate, "serve", "-c", path, "--no-watch"], port, root, None)
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    srv.wait_ready()
    return srv


def worker_of(srv: wc.Server) -> int:
    tree = wc.descendants(srv.pid)
    return max(tree, key=idle_conns.fd_count)


async def bench_idle(srv, args) -> dict:
    warm = await open_many(srv.port, 32, b"/idle")
    for _, w in warm:
        w.close()
    await asyncio.sleep(args.settle)
    tree = wc.descendants(srv.pid)
    before = {p: idle_conns.rss_kib(p) for p in tree}
    t0 = time.monotonic()
    conns = await open_many(srv.port, args.connections, b"/idle")
    open_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    worker = worker_of(srv)
    after = idle_conns.rss_kib(worker)
    growth = after - before.get(worker, after)
    # a sample still answers (a ping: the gateway's pong)
    for r, w in conns[:50]:
        w.write(bytes([0x89, 0x80]) + b"\0\0\0\0")
        await asyncio.wait_for(read_frame(r), 10)
    for _, w in conns:
        w.close()
    return dict(connections=len(conns), open_s=round(open_s, 2), worker_rss_before_kib=before.get(worker),
                worker_rss_after_kib=after, growth_kib=growth,
                growth_per_conn_kib=round(growth / len(conns), 2), limit_mb=100,
                within_limit=growth <= 100 * 1024)


async def run_clients(port: int, clients: int, messages: int, payload: bytes) -> tuple[float, list]:
    frame = masked_text(payload)
    conns = await open_many(port, clients, b"/bench")
    lat: list[float] = []

    async def client(r, w):
        for _ in range(messages):
            t = time.perf_counter()
            w.write(frame)
            got = await read_frame(r)
            lat.append(time.perf_counter() - t)
            if got != payload:
                raise RuntimeError(f"echoed {got[:60]!r}")
    t0 = time.perf_counter()
    await asyncio.gather(*(client(r, w) for r, w in conns))
    elapsed = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return elapsed, lat


BASELINE = '''
import asyncio, json, sys, time
sys.path.insert(0, sys.argv[2])
from benchws import echo
from websockets.asyncio.server import serve

async def handler(ws):
    async for msg in ws:
        # the same work as the gateway's route: an event, the handler, its body back
        event = {"requestContext": {"routeKey": "$default", "eventType": "MESSAGE",
                 "connectionId": "x", "requestTimeEpoch": int(time.time() * 1000)},
                 "body": msg, "isBase64Encoded": False}
        await ws.send(echo(event, None)["body"])

async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), compression=None):
        await asyncio.Future()
asyncio.run(main())
'''


def summary(elapsed: float, lat: list) -> dict:
    lat.sort()
    return dict(messages=len(lat), msgs_per_s=round(len(lat) / elapsed),
                p50_us=round(lat[len(lat) // 2] * 1e6), p99_us=round(lat[int(len(lat) * 0.99)] * 1e6))


async def bench_roundtrip(srv, args, root: str) -> dict:
    payload = json.dumps({"action": "none", "data": "x" * 64}).encode()
    await run_clients(srv.port, 4, 20, payload)                          # warm the handlers
    fg = summary(*await run_clients(srv.port, args.clients, args.messages, payload))
    port = wc.free_port()
    path = os.path.join(root, "baseline.py")
    with open(path, "w") as f:
        f.write(BASELINE)
    base = subprocess.Popen([sys.executable, path, str(port), root], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
                break
            except OSError:
                await asyncio.sleep(0.1)
        await run_clients(port, 4, 20, payload)
        bl = summary(*await run_clients(port, args.clients, args.messages, payload))
    finally:
        base.terminate()
        base.wait(10)
    return dict(clients=args.clients, fastgate=fg, websockets_baseline=bl,
                added_p50_us=fg["p50_us"] - bl["p50_us"],
                throughput_ratio=round(fg["msgs_per_s"] / bl["msgs_per_s"], 2))


def signed_post(port: int, cid: str, data: bytes) -> bytes:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from urllib.parse import quote
    url = f"http://127.0.0.1:{port}/bench/@connections/{quote(cid, safe='')}"
    req = AWSRequest(method="POST", url=url, data=data)
    SigV4Auth(Credentials(KEY_ID, SECRET), "execute-api", "us-east-1").add_auth(req)
    path = url.split(str(port), 1)[1]
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {len(data)}"]
    head += [f"{k}: {v}" for k, v in req.headers.items() if k.lower() != "host"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def bench_fanout(srv, args) -> dict:
    conns = await open_many(srv.port, args.connections, b"/bench")
    ids = []
    for r, w in conns:                      # each learns its id through the whoami route
        w.write(masked_text(b'{"action": "whoami"}'))
    for r, w in conns:
        ids.append((await asyncio.wait_for(read_frame(r), 30)).decode())
    posts = [signed_post(srv.port, cid, b"fan-out") for cid in ids]
    senders = [await asyncio.open_connection("127.0.0.1", srv.port) for _ in range(32)]
    got = 0
    done = asyncio.get_running_loop().create_future()

    async def receive(r):
        nonlocal got
        await read_frame(r)
        got += 1
        if got == len(conns) and not done.done():
            done.set_result(None)

    async def send(i, r, w):
        for k in range(i, len(posts), len(senders)):
            w.write(posts[k])
            head = await r.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head[:200])
    readers = [asyncio.ensure_future(receive(r)) for r, _ in conns]
    t0 = time.perf_counter()
    await asyncio.gather(*(send(i, r, w) for i, (r, w) in enumerate(senders)))
    posted = time.perf_counter() - t0
    await asyncio.wait_for(done, 120)
    delivered = time.perf_counter() - t0
    for t in readers:
        t.cancel()
    for _, w in conns + senders:
        w.close()
    return dict(connections=len(conns), workers=args.workers, all_posted_s=round(posted, 3),
                all_delivered_s=round(delivered, 3), posts_per_s=round(len(conns) / delivered))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("idle", "roundtrip", "fanout"))
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--clients", type=int, default=50, help="roundtrip: concurrent clients")
    p.add_argument("--messages", type=int, default=200, help="roundtrip: messages per client")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--fastgate", default=os.path.join(wc.REPO, ".venv", "bin", "fastgate"))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    idle_conns.raise_nofile(args.connections * 2 + 1024)
    root = tempfile.mkdtemp(prefix="fastgate-ws-bench-")
    try:
        srv = start_fastgate(args, root)
        coro = {"idle": lambda: bench_idle(srv, args), "roundtrip": lambda: bench_roundtrip(srv, args, root),
                "fanout": lambda: bench_fanout(srv, args)}[args.what]()
        result = asyncio.run(asyncio.wait_for(coro, args.timeout))
        result["server_alive"] = srv.alive()
    finally:
        wc.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, indent=None if not args.json else 2))
    return 0 if result.get("within_limit", True) and result["server_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
