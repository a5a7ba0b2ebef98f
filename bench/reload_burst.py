#!/usr/bin/env python3
"""A burst of control-API changes on one embedded host: what it costs the gateway, and how
long until the last change is served.

Writes `--apis` APIs (an OpenAPI document of `--paths` mock paths each, deployed to stage
prod) into a data dir's SQLite store, starts `fastgate serve` on it (`--workers`, its output
in a file) and waits until it serves them. Then, while a client sends a request to another
API every 10 ms, makes `--changes` UpdateStage calls through the control API with boto3,
back to back or `--gap-ms` apart (each sets one API's stage variable `v`), and polls the
last one's API until every worker answers with the last value. Reported: how long the calls
took; from the last call's answer until it is served everywhere; the CPU (utime + stime
from /proc) of the gateway's processes (supervisor, admin, workers) and of its workers
alone, from the first call until then, each also as a count of single changes (one change
made alone, the median of three after a first that warms up, measured the same way); and
the background requests' latency.

    .venv/bin/python bench/reload_burst.py [--apis 300] [--paths 5] [--changes 20] [--workers 2]
        [--gap-ms 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]

import boto3  # noqa: E402
import httpx  # noqa: E402
from botocore.config import Config  # noqa: E402
from conftest import free_port, listening_sockets, socket_inodes, wait_every_worker, wait_port  # noqa: E402
from fleet_propagation import openapi_doc  # noqa: E402

KEY, SECRET = "AKIAFASTGATEBENCH03", "reload-burst-secret"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds."""
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def processes(pid: int, port: int) -> tuple[list[int], list[int]]:
    """(the gateway's processes, its workers: those holding a socket listening on `port`)."""
    children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    listening = set(listening_sockets(port))
    return [pid, *children], [c for c in children if socket_inodes(c) & listening]


def ms(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--apis", type=int, default=300)
    ap.add_argument("--paths", type=int, default=5)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gap-ms", type=float, default=0.0, help="pause between two changes")
    args = ap.parse_args()

    from fastgate.control.model import Model
    from fastgate.control.store import Store
    work = Path(tempfile.mkdtemp(prefix="fastgate-bench-burst-"))
    store = Store.in_dir(work / "state")
    model = Model(store)
    ids = []
    for i in range(args.apis):
        api_id = model.import_rest_api({"body": openapi_doc(i, args.paths)})["id"]
        model.create_deployment({"restApiId": api_id, "stageName": "prod", "variables": {"v": "0"}})
        ids.append(api_id)
    store.close()

    port, admin_port = free_port(), free_port()
    config = work / "gateway.yaml"
    config.write_text(f"workers: {args.workers}\nlisteners: [{{address: '127.0.0.1:{port}'}}]\n"
                      f"admin: {{listen: '127.0.0.1:{admin_port}'}}\naccess_log: {{path: 'off'}}\n"
                      f"data_dir: {work / 'state'}\n")
    out = open(work / "out.txt", "w")
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "fastgate"), "serve", "-c", str(config)],
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "FASTGATE_ADMIN_ACCESS_KEY_ID": KEY,
                                 "FASTGATE_ADMIN_SECRET_ACCESS_KEY": SECRET})
    url = f"http://127.0.0.1:{port}"
    try:
        fresh = httpx.Client(base_url=url, timeout=60, headers={"Connection": "close"})
        gateway = SimpleNamespace(n_workers=args.workers)

        def served(api_id: str, v: str) -> None:
            """Until every worker answers the API with stage variable v."""
            wait_every_worker(
                gateway, lambda: fresh.get("/prod/r0/x", headers={"Host": f"{api_id}.execute-api.localhost"}),
                ok=lambda r: r.status_code == 200 and r.json().get("v") == v, timeout=120, step=0.002)
        wait_port(port, proc, timeout=120)
        served(ids[-1], "0")
        c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{admin_port}",
                         region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                         config=Config(retries={"max_attempts": 1}))

        def change(api_id: str, v: str) -> None:
            c.update_stage(restApiId=api_id, stageName="prod", patchOperations=[
                {"op": "replace", "path": "/variables/v", "value": v}])

        # one change alone, three times after a first that warms up (lazy imports on the
        # first reload): the median's CPU and time to be served everywhere
        everyone, workers = processes(proc.pid, port)
        assert len(workers) == args.workers, workers

        def cpu() -> tuple[float, float]:
            return cpu_s(everyone), cpu_s(workers)
        singles = []
        for n in range(4):
            time.sleep(1)               # what came before is over
            cpu0, t0 = cpu(), time.monotonic()
            change(ids[-1], f"single-{n}")
            served(ids[-1], f"single-{n}")
            cpu1 = cpu()
            singles.append((cpu1[0] - cpu0[0], cpu1[1] - cpu0[1], time.monotonic() - t0))
        single_all = statistics.median(c for c, _, _ in singles[1:])
        single_workers = statistics.median(c for _, c, _ in singles[1:])
        single_s = statistics.median(s for _, _, s in singles[1:])
        time.sleep(1)

        stop = threading.Event()
        waits: list[float] = []

        def traffic():
            with httpx.Client(base_url=url, timeout=60,
                              headers={"Host": f"{ids[0]}.execute-api.localhost"}) as cl:
                while not stop.is_set():
                    t = time.monotonic()
                    cl.get("/prod/r1/x")
                    waits.append(time.monotonic() - t)
                    time.sleep(0.01)
        background = threading.Thread(target=traffic, daemon=True)
        background.start()
        time.sleep(0.5)
        cpu0, t0 = cpu(), time.monotonic()
        for n in range(1, args.changes + 1):
            change(ids[-1 - n % 2], str(n))     # the last two APIs, in turn
            time.sleep(args.gap_ms / 1000)
        t_calls = time.monotonic()
        served(ids[-1 - args.changes % 2], str(args.changes))
        t_served = time.monotonic()
        cpu1 = cpu()
        burst_all, burst_workers = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
        time.sleep(0.5)
        stop.set()
        background.join(60)
        print(f"{args.apis} APIs x {args.paths} paths, {args.workers} workers, "
              f"{args.gap_ms:g} ms between changes")
        print(f"  one change alone (median of 3): served everywhere in {single_s * 1000:.0f} ms, "
              f"CPU: gateway {single_all:.2f} s, of which workers {single_workers:.2f} s")
        print(f"  {args.changes} changes: the calls took {(t_calls - t0):.2f} s; the last "
              f"served everywhere {(t_served - t_calls) * 1000:.0f} ms after its answer")
        print(f"  CPU for the burst: gateway {burst_all:.2f} s = {burst_all / single_all:.1f} single "
              f"changes' worth; workers {burst_workers:.2f} s = "
              f"{burst_workers / single_workers:.1f} single changes' worth")
        print(f"  requests to another API meanwhile ({len(waits)}): p50 {ms(waits, 50):.1f} ms, "
              f"p99 {ms(waits, 99):.1f} ms, max {max(waits) * 1000:.1f} ms, "
              f"mean {statistics.mean(waits) * 1000:.1f} ms")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        out.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
