"""Latency through two gateways sharing one Redis, side by side in one run: a miss (the
upstream answers 1 KiB), a Redis hit (the other host cached it), a local hit.

    .venv/bin/python bench/cache_redis_latency.py [N]

Starts its own redis-server, upstream and two gateways on free loopback ports, sends
3 * N requests (N keys, default 300) and stops everything by PID.
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]
from redis_server import RedisServer  # noqa: E402
from conftest import Gateway, Upstream  # noqa: E402


def doc(port):
    return {"swagger": "2.0", "info": {"title": "lat", "version": "1"}, "paths": {"/p": {"get": {
        "parameters": [{"name": "k", "in": "query", "type": "string"}],
        "x-amazon-apigateway-integration": {
            "type": "http_proxy", "httpMethod": "GET", "uri": f"http://127.0.0.1:{port}/bytes/1024",
            "cacheKeyParameters": ["method.request.querystring.k"]}}}}}


def timed(client, url, expect):
    t = time.perf_counter()
    got = client.get(url).headers["x-cache"]
    took = time.perf_counter() - t
    assert got == expect, (url, got)
    return took


def main(n):
    tmp = Path(tempfile.mkdtemp())
    redis, up, gateways = RedisServer().start(), Upstream(), []
    try:
        for name in "ab":
            (tmp / name).mkdir()
            (tmp / name / "api.json").write_text(json.dumps(doc(up.port)))
            gateways.append(Gateway(tmp / name, f"""\
                access_log: {{path: 'off'}}
                redis: {{url: "{redis.url}", timeout_ms: 200}}
                apis: [{{openapi: api.json, id: lat, stages: {{prod: {{cache_ttl_s: 300}}}}}}]
                """))
        a, b = gateways
        res = {"miss (A, upstream)": [], "redis_hit (B)": [], "hit (B, local)": []}
        with httpx.Client(timeout=5) as ca, httpx.Client(timeout=5) as cb:
            for i in range(20):     # warm-up: connections, pools, code paths
                ca.get(f"{a.url}/prod/p?k=w{i}")
                time.sleep(0.005)
                cb.get(f"{b.url}/prod/p?k=w{i}")
            for i in range(n):
                path = f"/prod/p?k={i}"
                res["miss (A, upstream)"].append(timed(ca, a.url + path, "Miss"))
                time.sleep(0.005)   # A writes to Redis in a task after answering
                res["redis_hit (B)"].append(timed(cb, b.url + path, "Hit"))
                res["hit (B, local)"].append(timed(cb, b.url + path, "Hit"))
        base = statistics.median(res["hit (B, local)"])
        for name, v in res.items():
            v.sort()
            print(f"{name:20} median {statistics.median(v) * 1e6:7.0f} us  "
                  f"p90 {v[int(len(v) * .9)] * 1e6:7.0f} us  x{statistics.median(v) / base:.2f} of a local hit")
    finally:
        for g in gateways:
            g.stop()
        up.stop()
        redis.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
