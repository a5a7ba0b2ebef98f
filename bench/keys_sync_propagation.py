#!/usr/bin/env python3
"""How long an API key change made on one host takes to reach another (docs/api-keys.md).

Starts one redis-server and two fastgate gateways (1 worker each, own data dirs, the
same `apis:` and `redis:`) on free loopback ports, makes a key in a usage plan through
host A's control API with boto3, then toggles the key's `enabled` on A `--changes`
times and polls host B with httpx every 10 ms until B answers accordingly (200 / 403).
Prints the median, 90th percentile and worst delay. Everything started here is stopped
by PID at the end.

    .venv/bin/python bench/keys_sync_propagation.py [--changes 20] [--interval-ms 500]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

import boto3  # noqa: E402
import httpx  # noqa: E402
from conftest import Gateway, wait_until  # noqa: E402
from redis_server import RedisServer  # noqa: E402
from test_api_keys import api_doc  # noqa: E402

KEY, SECRET = "AKIAFASTGATEBENCH01", "keys-sync-bench-secret"
API_ID = "benchapi"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--interval-ms", type=int, default=500, help="redis.key_sync_interval_ms")
    args = ap.parse_args()
    redis = RedisServer().start()
    gateways = []
    try:
        for _ in range(2):
            d = Path(tempfile.mkdtemp(prefix="fastgate-bench-"))
            (d / "api.json").write_bytes(api_doc())
            gateways.append(Gateway(d, f"""\
                access_log: {{path: 'off'}}
                data_dir: {d / 'state'}
                redis: {{url: "{redis.url}", key_sync_interval_ms: {args.interval_ms}}}
                apis:
                  - openapi: api.json
                    id: {API_ID}
                    stages: {{prod: {{}}}}
                """, env={"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}))
        a, b = gateways
        c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{a.admin_port}",
                         region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        key = c.create_api_key(name="bench", enabled=True)
        plan = c.create_usage_plan(name="bench", apiStages=[{"apiId": API_ID, "stage": "prod"}])
        c.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
        url = f"{b.url}/prod/paid"

        def status() -> int:
            return httpx.get(url, headers={"x-api-key": key["value"]}, timeout=5).status_code
        wait_until(lambda: status() == 200, timeout=15)
        delays = []
        for i in range(args.changes):
            enabled = i % 2 == 1
            c.update_api_key(apiKey=key["id"], patchOperations=[
                {"op": "replace", "path": "/enabled", "value": str(enabled).lower()}])
            t0 = time.monotonic()
            wait_until(lambda: status() == (200 if enabled else 403), timeout=15, step=0.01)
            delays.append(time.monotonic() - t0)
            time.sleep(0.3)
        delays.sort()
        p90 = delays[min(len(delays) - 1, int(len(delays) * 0.9))]
        print(f"{len(delays)} changes: median {statistics.median(delays) * 1000:.0f} ms, "
              f"p90 {p90 * 1000:.0f} ms, worst {delays[-1] * 1000:.0f} ms")
    finally:
        for g in gateways:
            g.stop()
        redis.stop()


if __name__ == "__main__":
    main()
