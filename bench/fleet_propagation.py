#!/usr/bin/env python3
"""A fleet on one PostgreSQL (docs/fleet.md): how long a change made through one host's
control API takes to be served by the others, and what a reload costs a host serving
1,000 APIs.

Starts one PostgreSQL (tests/postgres_server.py: initdb + pg_ctl in a temp dir) and
fastgate gateways (1 worker each, own data dirs, the same `state:`) on free loopback
ports; everything started here is stopped by PID at the end.

propagation: hosts A, B, C. An API whose /paid needs a key, and a key in a usage plan of
  its stage, made through A with boto3; then `--changes` times: toggle the key's `enabled`
  on A and poll B and C (one keep-alive connection each, every 2 ms) until each answers
  accordingly (200 / 403). The delay is from UpdateApiKey's answer to the first request
  served with the change, per host; p50 / p99 / worst over all changes and hosts.

reload: `--apis` APIs (an OpenAPI document of `--paths` mock paths each, deployed to a
  stage) written into the database, then host B started on them; `--reloads` times: change
  one stage's variable through the store and time until B serves it. Also timed in this
  process on the same state: reading it from PostgreSQL into the local copy (the admin
  process's part), loading the copy (the supervisor's and each worker's) and compiling the
  snapshot (the supervisor's check, then each worker's build).

    .venv/bin/python bench/fleet_propagation.py [--part propagation|reload|all]
        [--changes 100] [--apis 1000] [--paths 5] [--reloads 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]

import boto3  # noqa: E402
import httpx  # noqa: E402
from conftest import free_port, wait_port, wait_until  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402
from test_api_keys import api_doc  # noqa: E402

KEY, SECRET = "AKIAFASTGATEBENCH02", "fleet-bench-secret"
ENV = {"FASTGATE_ADMIN_ACCESS_KEY_ID": KEY, "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET}
POLL_S = 0.002
DEADLINE_S = 30


class Host:
    """fastgate serve on the fleet's database: 1 worker, its own data dir, its output in a
    file (its banner lists every API stage: 1,000 of them fill a pipe nobody reads)."""

    def __init__(self, url: str, name: str):
        d = Path(tempfile.mkdtemp(prefix=f"fastgate-bench-{name}-"))
        self.dir = d
        self.copy = d / "state" / "state-copy.json"     # what its admin process writes
        self.port, self.admin_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = d / "gateway.yaml"
        config.write_text(textwrap.dedent(f"""\
            workers: 1
            listeners: [{{address: 127.0.0.1:{self.port}}}]
            admin: {{listen: 127.0.0.1:{self.admin_port}}}
            access_log: {{path: 'off'}}
            data_dir: {d / 'state'}
            state: {{url: "{url}"}}
            """))
        self.log = d / "output.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "-c",
                                          str(config)], stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **ENV}, start_new_session=True)
        try:
            wait_port(self.port, self.proc, 300)
            wait_port(self.admin_port, self.proc, 60)
        except BaseException:
            self.stop()
            raise

    def children(self) -> int:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return len(f.read().split())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def host(url: str, name: str) -> Host:
    return Host(url, name)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def summary(ms: list[float]) -> str:
    return (f"p50 {statistics.median(ms):.0f} ms, p99 {pct(ms, 99):.0f} ms, "
            f"worst {max(ms):.0f} ms (n={len(ms)})")


def propagation(pg: PostgresServer, changes: int) -> None:
    url = pg.new_database()
    hosts = [host(url, n) for n in "abc"]
    try:
        a, b, c = hosts
        ca = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{a.admin_port}",
                          region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET)
        api_id = ca.import_rest_api(body=api_doc())["id"]
        ca.create_deployment(restApiId=api_id, stageName="prod")
        key = ca.create_api_key(name="bench", enabled=True)
        plan = ca.create_usage_plan(name="bench", apiStages=[{"apiId": api_id, "stage": "prod"}])
        ca.create_usage_plan_key(usagePlanId=plan["id"], keyId=key["id"], keyType="API_KEY")
        clients = {gw: httpx.Client(base_url=gw.url, timeout=5, headers={"x-api-key": key["value"]})
                   for gw in (b, c)}
        for gw, cl in clients.items():
            wait_until(lambda: cl.get("/prod/paid").status_code == 200, timeout=DEADLINE_S)
        delays: dict[str, list[float]] = {"B": [], "C": []}
        for i in range(changes):
            enabled = i % 2 == 1
            want = 200 if enabled else 403
            ca.update_api_key(apiKey=key["id"], patchOperations=[
                {"op": "replace", "path": "/enabled", "value": str(enabled).lower()}])
            t0 = time.monotonic()
            pending = {"B": clients[b], "C": clients[c]}
            while pending:
                assert time.monotonic() - t0 < DEADLINE_S, f"change {i} not served in time"
                for name, cl in list(pending.items()):
                    if cl.get("/prod/paid").status_code == want:
                        delays[name].append((time.monotonic() - t0) * 1000)
                        del pending[name]
                time.sleep(POLL_S)
            time.sleep(0.05)
        both = delays["B"] + delays["C"]
        print(f"propagation, {changes} changes made on A (UpdateApiKey), 3 hosts, 1 worker each:")
        for name, ms in delays.items():
            print(f"  served on {name}: {summary(ms)}")
        print(f"  both hosts: {summary(both)}")
    finally:
        for gw in hosts:
            gw.stop()


def openapi_doc(i: int, paths: int) -> bytes:
    integ = {"type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
             "responses": {"default": {"statusCode": "200", "responseTemplates": {
                 "application/json": '{"api": %d, "v": "$stageVariables.v"}' % i}}}}
    return json.dumps({
        "swagger": "2.0", "info": {"title": f"api-{i}", "version": "1"},
        "paths": {f"/r{j}/{{id}}": {"get": {
            "parameters": [{"name": "id", "in": "path", "required": True, "type": "string"}],
            "x-amazon-apigateway-integration": integ}} for j in range(paths)}}).encode()


def reload_cost(pg: PostgresServer, apis: int, paths: int, reloads: int) -> None:
    from fastgate.compile.config import empty_config
    from fastgate.compile.snapshot import build_snapshot
    from fastgate.control.fleet import fetch_copy
    from fastgate.control.local_copy import LocalCopy
    from fastgate.control.model import Model
    from fastgate.control.store_pg import PgStore
    url = pg.new_database()
    work = Path(tempfile.mkdtemp(prefix="fastgate-bench-reload-"))
    model = Model(PgStore(url, work / "writer"))
    t0 = time.monotonic()
    ids = []
    for i in range(apis):
        api_id = model.import_rest_api({"body": openapi_doc(i, paths)})["id"]
        model.create_deployment({"restApiId": api_id, "stageName": "prod", "variables": {"v": "0"}})
        ids.append(api_id)
    print(f"reload: {apis} APIs of {paths} paths each written in {time.monotonic() - t0:.1f} s")

    copy = LocalCopy(work / "probe")
    fetch_ms, load_ms, build_ms = [], [], []
    for _ in range(5):
        t = time.perf_counter()
        fetch_copy(url, copy)
        fetch_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        state, _ = copy.load()
        load_ms.append((time.perf_counter() - t) * 1000)
        loaded = empty_config()
        loaded.state = state
        t = time.perf_counter()
        snapshot = build_snapshot(loaded, None, open_logs=False)
        build_ms.append((time.perf_counter() - t) * 1000)
    size = copy.path.stat().st_size
    print(f"  the copy: {size / 1e6:.1f} MB, {sum(1 for _ in state.entities())} entities, "
          f"{len(snapshot.routes) if hasattr(snapshot, 'routes') else '?'} routes")
    print(f"  read from PostgreSQL and write the copy (admin): {summary(fetch_ms)}")
    print(f"  load the copy (supervisor, admin and each worker): {summary(load_ms)}")
    print(f"  compile the snapshot (supervisor's check, each worker's build): {summary(build_ms)}")

    t0 = time.monotonic()
    b = host(url, "b")
    try:
        probe = httpx.Client(base_url=b.url, timeout=120, headers={"Host": f"{ids[-1]}.execute-api.localhost"})
        wait_until(lambda: probe.get("/prod/r0/x").status_code == 200, timeout=120)
        print(f"  host B started on them, serving in {time.monotonic() - t0:.1f} s")
        # meanwhile, traffic to another API: how long a request waits while B reloads
        stop = threading.Event()
        waits: list[float] = []

        def traffic():
            with httpx.Client(base_url=b.url, timeout=120,
                              headers={"Host": f"{ids[0]}.execute-api.localhost"}) as cl:
                while not stop.is_set():
                    t = time.monotonic()
                    cl.get("/prod/r1/x")
                    waits.append((time.monotonic() - t) * 1000)
                    time.sleep(0.01)
        background = threading.Thread(target=traffic, daemon=True)
        background.start()
        delays, copied = [], []
        for n in range(1, reloads + 1):
            target = ids[n % len(ids)]
            cl = httpx.Client(base_url=b.url, timeout=120, headers={"Host": f"{target}.execute-api.localhost"})
            before = b.copy.stat().st_mtime_ns
            model.update_stage({"restApiId": target, "stageName": "prod", "patchOperations": [
                {"op": "replace", "path": "/variables/v", "value": str(n)}]})
            t0 = time.monotonic()
            # the admin's part ends when it renames the new copy in (then SIGHUPs the supervisor)
            while b.copy.stat().st_mtime_ns == before:
                assert time.monotonic() - t0 < 120, "the copy was not rewritten in time"
                time.sleep(POLL_S)
            copied.append((time.monotonic() - t0) * 1000)
            while cl.get("/prod/r0/x").json().get("v") != str(n):
                assert time.monotonic() - t0 < 120, "change not served in time"
                time.sleep(POLL_S)
            delays.append((time.monotonic() - t0) * 1000)
            cl.close()
            time.sleep(0.2)
        stop.set()
        background.join(120)
        print(f"  a change served on B with {apis} APIs (UpdateStage to served): {summary(delays)}")
        print(f"    of which B's admin process: NOTIFY, read, copy written: {summary(copied)}")
        rest = [d - c for d, c in zip(delays, copied)]
        print(f"    and B's supervisor (load, check) and worker (load, build, swap): {summary(rest)}")
        print(f"  requests to another API on B meanwhile: {summary(waits)} "
              "(the worker builds its snapshot on its event loop)")
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("propagation", "reload", "all"), default="all")
    ap.add_argument("--changes", type=int, default=100)
    ap.add_argument("--apis", type=int, default=1000)
    ap.add_argument("--paths", type=int, default=5)
    ap.add_argument("--reloads", type=int, default=10)
    args = ap.parse_args()
    pg = PostgresServer().start()
    try:
        if args.part in ("propagation", "all"):
            propagation(pg, args.changes)
        if args.part in ("reload", "all"):
            reload_cost(pg, args.apis, args.paths, args.reloads)
    finally:
        pg.close()


if __name__ == "__main__":
    main()
