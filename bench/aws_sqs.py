#!/usr/bin/env python3
"""A message sent to SQS through a fastgate AWS integration against boto3 calling SQS itself.

The gateway's route is the REST API pattern AWS documents (``sqs:path/{account}/{queue}``,
a request template making ``Action=SendMessage&MessageBody=...``, an integration response
template): the client POSTs JSON to the gateway over a kept-alive connection, the gateway
maps, signs (SigV4, botocore's signer) and sends it on through its pool. boto3's
``send_message`` is the baseline: the SDK call an application would make instead.

Two SQS endpoints, each a process of its own on a loopback port:

* ``moto``: moto's server (tests/moto_server.py), real SQS semantics, slow (Werkzeug,
  a connection per request): both sides wait mostly for it;
* ``constant``: a tiny asyncio server answering every request with SendMessage's JSON,
  keeping connections alive: what is left is the client side's own cost (the gateway's
  mapping, signing and two hops, or boto3's serialization, signing and parsing).

For each, N sequential requests then a bounded concurrent run (threads, each its own client);
latency percentiles, requests/s, and the gateway's CPU per request (utime+stime of its
process tree). Every request is checked (200 and the mapped body, or a MessageId).

Usage:  .venv/bin/python bench/aws_sqs.py [--requests 500] [--threads 8] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
import wrk_compare as wc  # noqa: E402
from conftest import free_port, wait_port  # noqa: E402  (the e2e tests' own helpers)
PY = os.path.join(REPO, ".venv", "bin", "python")
FASTGATE = os.path.join(REPO, ".venv", "bin", "fastgate")
ACCOUNT = "123456789012"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}

CONSTANT = b'{"MD5OfMessageBody":"3858f62230ac3c915f300c664312c63f","MessageId":"' \
           b'00000000-0000-0000-0000-000000000000"}'


def serve_constant(port: int) -> None:
    """The constant endpoint: every request answered 200 with SendMessage's JSON, kept alive."""
    import asyncio

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(CONSTANT), CONSTANT))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        async with server:
            await server.serve_forever()
    asyncio.run(main())


class Gateway:
    def __init__(self, workdir: str, endpoint: str):
        self.port = free_port()
        import yaml
        doc = {"swagger": "2.0", "info": {"title": "bench", "version": "1"}, "paths": {"/orders": {"post": {
            "responses": {"200": {"description": "ok"}},
            "x-amazon-apigateway-integration": {
                "type": "aws", "httpMethod": "POST",
                "uri": f"arn:aws:apigateway:us-east-1:sqs:path/{ACCOUNT}/bench",
                "requestParameters": {"integration.request.header.Content-Type":
                                      "'application/x-www-form-urlencoded'"},
                "requestTemplates": {"application/json":
                                     "Action=SendMessage&MessageBody=$util.urlEncode($input.body)"},
                "passthroughBehavior": "never",
                "responses": {"default": {"statusCode": "200", "responseTemplates": {
                    "application/json": '{"queued": true}'}}}}}}}}
        with open(os.path.join(workdir, "api.yaml"), "w") as f:
            yaml.safe_dump(doc, f)
        config = os.path.join(workdir, f"gw-{self.port}.yaml")
        with open(config, "w") as f:
            f.write(f"workers: 1\nlisteners: [{{address: 127.0.0.1:{self.port}}}]\n"
                    f"admin: {{listen: 'off'}}\naccess_log: {{path: 'off'}}\n"
                    f"aws: {{region: us-east-1, endpoint_url: '{endpoint}'}}\n"
                    f"apis: [{{openapi: api.yaml, stages: {{prod: {{}}}}}}]\n")
        self.proc = subprocess.Popen([FASTGATE, "serve", "-c", config], cwd=workdir,
                                     env={**os.environ, **ENV}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc)
        time.sleep(1.0)     # the worker forks after the supervisor binds
        self.url = f"http://127.0.0.1:{self.port}/prod/orders"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def gateway_call():
    import httpx
    client = httpx.Client(timeout=30)

    def call(url, i):
        r = client.post(url, json={"order": i})
        assert r.status_code == 200 and r.json() == {"queued": True}, r.text
    return call


def boto3_call(endpoint: str):
    import boto3
    from botocore.config import Config
    sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing",
                       config=Config(retries={"max_attempts": 1}))
    queue = f"{endpoint}/{ACCOUNT}/bench"

    def call(_url, i):
        out = sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"order": i}))
        assert out["MessageId"]
    return call


def sequential(call, url, n: int) -> dict:
    for i in range(min(20, n)):      # warm: connections, credentials, caches
        call(url, i)
    lat = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        call(url, i)
        lat.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - start
    lat.sort()
    return {"requests": n, "req_per_s": round(n / wall, 1), "p50_ms": round(lat[n // 2], 2),
            "p90_ms": round(lat[int(n * 0.9)], 2), "p99_ms": round(lat[min(n - 1, int(n * 0.99))], 2),
            "mean_ms": round(statistics.fmean(lat), 2)}


def concurrent(make_call, url, threads: int, seconds: float) -> dict:
    counts = [0] * threads
    errors = []
    stop = time.monotonic() + seconds

    def worker(k):
        call = make_call()
        i = 0
        try:
            while time.monotonic() < stop and i < 100000:
                call(url, i)
                i += 1
        except Exception as e:     # counted, never hidden
            errors.append(repr(e))
        counts[k] = i
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - start
    return {"threads": threads, "requests": sum(counts), "req_per_s": round(sum(counts) / wall, 1),
            "errors": len(errors), "first_error": errors[0] if errors else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--targets", default="constant,moto")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--serve-constant", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_constant:
        serve_constant(args.serve_constant)
        return
    os.environ.update(ENV)
    results = {}
    procs = []
    with tempfile.TemporaryDirectory() as work:
        try:
            for target in args.targets.split(","):
                port = free_port()
                cmd = [PY, os.path.join(REPO, "tests", "moto_server.py"), str(port)] if target == "moto" \
                    else [PY, os.path.abspath(__file__), "--serve-constant", str(port)]
                p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs.append(p)
                wait_port(port, p)
                endpoint = f"http://127.0.0.1:{port}"
                if target == "moto":
                    import boto3
                    boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1").create_queue(
                        QueueName="bench")
                gw = Gateway(work, endpoint)
                procs.append(gw.proc)
                try:
                    out = {}
                    cpu0 = wc.tree_cpu_s(gw.proc.pid)
                    out["gateway"] = sequential(gateway_call(), gw.url, args.requests)
                    out["gateway"]["cpu_us_per_request"] = round(
                        (wc.tree_cpu_s(gw.proc.pid) - cpu0) / (args.requests + min(20, args.requests)) * 1e6)
                    out["boto3"] = sequential(boto3_call(endpoint), None, args.requests)
                    out["gateway_concurrent"] = concurrent(gateway_call, gw.url, args.threads, args.seconds)
                    out["boto3_concurrent"] = concurrent(lambda: boto3_call(endpoint), None,
                                                         args.threads, args.seconds)
                finally:
                    gw.stop()
                results[target] = out
                print(f"{target}: {json.dumps(out)}", file=sys.stderr)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    p.wait(10)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'target':9} {'client':9} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
          f"{'conc req/s':>10} {'gw CPU µs/req':>13}")
    for target, out in results.items():
        for side in ("gateway", "boto3"):
            s, c = out[side], out[f"{side}_concurrent"]
            print(f"{target:9} {side:9} {s['req_per_s']:8} {s['p50_ms']:7} {s['p90_ms']:7} {s['p99_ms']:7} "
                  f"{c['req_per_s']:10} {s.get('cpu_us_per_request', ''):>13}")


if __name__ == "__main__":
    main()
