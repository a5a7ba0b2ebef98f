#!/usr/bin/env python3
"""Instructions per proxied keep-alive request in a fastgate worker, counted by callgrind.

Wall-clock and CPU-time figures on this kind of machine swing by ±30% between runs; an
instruction count does not: the same build, requests and environment give the same count
whatever else the machine is doing. Use it to compare two builds of the hot path (an A/B
whose difference is smaller than wrk's noise), not to compare with nginx.

    .venv/bin/python bench/ir_per_request.py [--requests 1000] [REPO]

REPO is a checkout with a built .venv (default: this one). It starts nginx as the upstream
(`return 200 "hello"`) and `fastgate proxy --workers 1` under `valgrind --tool=callgrind
--trace-children=yes`, sends 300 requests on one keep-alive connection to warm up, zeroes
every callgrind run's counters, sends --requests more, dumps, and prints the worker's
user-space instructions per request (the kernel's part is not counted). Everything started
here is stopped by PID at the end. Needs nginx and valgrind on PATH.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 300                 # requests before counting: imports and first-use paths
START_TIMEOUT = 120.0        # s for the gateway to answer under valgrind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(sock: socket.socket, f) -> None:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\n\r\n")
    f.readline()
    length = 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    f.read(length)


def connect(port: int) -> socket.socket:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=60)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("repo", nargs="?", default=REPO, help="checkout with a built .venv")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--keep", metavar="DIR", help="copy the worker's callgrind dump here (for callgrind_annotate)")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="fastgate-ir-")
    up_port, gw_port = free_port(), free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(f"worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n"
                "events { worker_connections 1024; }\n"
                f"http {{ access_log off; server {{ listen 127.0.0.1:{up_port}; "
                'keepalive_requests 1000000; location / { return 200 "hello"; } } }\n')
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(tmp, "nginx.conf"), "-p", tmp],
                             stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--trace-children=yes", "--dump-instr=no",
         f"--callgrind-out-file={tmp}/cg.%p",
         os.path.join(args.repo, ".venv", "bin", "python"),
         os.path.join(args.repo, ".venv", "bin", "fastgate"), "proxy",
         "--listen", f"127.0.0.1:{gw_port}", "--upstream", f"http://127.0.0.1:{up_port}",
         "--workers", "1", "--control", "off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # string hashing decides dict probing: a fixed seed makes the count repeatable
        env=dict(os.environ, PYTHONHASHSEED="0"))
    try:
        sock = connect(gw_port)
        f = sock.makefile("rb")
        for _ in range(WARMUP):
            request(sock, f)
        # every callgrind run of the tree (supervisor, worker): zeroed, then dumped; the
        # worker is the one that served the requests, so the largest count
        subprocess.run(["callgrind_control", "--zero"], stdout=subprocess.DEVNULL, timeout=60)
        for _ in range(args.requests):
            request(sock, f)
        subprocess.run(["callgrind_control", "--dump"], stdout=subprocess.DEVNULL, timeout=60)
        time.sleep(1)
        sock.close()
        counts = []
        for dump in glob.glob(os.path.join(tmp, "cg.*.*")):
            with open(dump) as d:
                counts += [(int(line.split()[1]), dump) for line in d if line.startswith("totals:")]
        total, worker_dump = max(counts)
        if args.keep:
            shutil.copy(worker_dump, os.path.join(args.keep, "callgrind.worker"))
        print(f"{args.repo}: {total / args.requests:,.0f} instructions per request "
              f"(worker user space, {args.requests} requests)")
    finally:
        gateway.send_signal(signal.SIGTERM)
        nginx.send_signal(signal.SIGQUIT)
        for proc in (gateway, nginx):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
