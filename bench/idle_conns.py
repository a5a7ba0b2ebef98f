#!/usr/bin/env python3
"""Memory per idle keep-alive connection: RSS growth of a fastgate worker holding 10,000 of them.

Starts an nginx upstream and `fastgate proxy --workers 1 --control off` on free
loopback ports, warms the proxy up with a few requests, records the worker's
RSS, then opens --connections client connections (RLIMIT_NOFILE raised first;
fastgate inherits it), each sending one GET and reading the full 200 response
and then staying open and idle. After --settle seconds it records the RSS
again and reports the growth (target: at most --limit-mb, 100 MB) and the
growth per connection. It then holds the connections --hold seconds more,
reports how many the server closed, and checks that a sample still serves a
second request. Everything is bounded by --timeout and stopped by PID.

`--target nginx` measures an nginx proxy (1 worker, the wrk_compare config)
the same way, as a reference.

Usage:  .venv/bin/python bench/idle_conns.py [--connections 10000] [--json]
Exit status 1 when the growth exceeds --limit-mb or connections failed.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wrk_compare as wc  # noqa: E402  (shares the process handling and nginx configs)

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle_conns\r\n\r\n"
CONNECT_CONCURRENCY = 256     # connections being opened at once
IO_TIMEOUT = 10.0             # s for one connect + request + response


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def raise_nofile(need: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def one_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Send REQUEST and read one whole response; returns its status."""
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
        elif name.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked response; this client reads Content-Length bodies only")
    if length:
        await reader.readexactly(length)
    return status


async def open_idle(port: int, n: int, errors: list[str]) -> list[tuple]:
    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)
    conns: list[tuple] = []

    async def one() -> None:
        async with sem:
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                errors.append(f"connect: {e!r}")
                return
            try:
                status = await asyncio.wait_for(one_request(reader, writer), IO_TIMEOUT)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, RuntimeError, ValueError) as e:
                errors.append(f"request: {e!r}")
                writer.close()
                return
            if status != 200:
                errors.append(f"status {status}")
            conns.append((reader, writer))

    await asyncio.gather(*(one() for _ in range(n)))
    return conns


async def measure(srv: wc.Server, args) -> dict:
    tree = wc.descendants(srv.pid)
    errors: list[str] = []
    # Warm-up: first requests load code paths and open upstream connections;
    # they belong to the baseline, not to the cost of idle connections.
    warm = await open_idle(srv.port, 32, errors)
    for _ in range(5):
        await asyncio.gather(*(one_request(r, w) for r, w in warm))
    for _, w in warm:
        w.close()
    await asyncio.sleep(args.settle)
    before = {pid: rss_kib(pid) for pid in tree}

    t0 = time.monotonic()
    conns = await open_idle(srv.port, args.connections, errors)
    open_s = time.monotonic() - t0
    await asyncio.sleep(args.settle)
    tree = wc.descendants(srv.pid)
    after = {pid: rss_kib(pid) for pid in tree}
    fds = {pid: fd_count(pid) for pid in tree}
    worker = max(tree, key=lambda p: fds[p])       # the process holding the connections
    growth_kib = after[worker] - before.get(worker, 0)

    await asyncio.sleep(args.hold)
    closed = sum(1 for r, _ in conns if r.at_eof())
    sample = random.sample([c for c in conns if not c[0].at_eof()], min(100, len(conns) - closed))
    second = await asyncio.gather(*(asyncio.wait_for(one_request(r, w), IO_TIMEOUT) for r, w in sample),
                                  return_exceptions=True)
    second_ok = sum(1 for s in second if s == 200)
    for _, w in conns:
        w.close()
    return dict(
        target=args.target, connections=args.connections, established=len(conns), errors=len(errors),
        error_examples=sorted(set(errors))[:5], open_s=round(open_s, 2),
        worker_pid=worker, worker_is_root=worker == srv.pid, processes=len(tree),
        worker_rss_before_kib=before.get(worker, 0), worker_rss_after_kib=after[worker],
        worker_growth_kib=growth_kib, growth_per_conn_kib=round(growth_kib / max(1, len(conns)), 2),
        tree_growth_kib=sum(after.values()) - sum(before.get(p, 0) for p in after),
        closed_by_server_after_hold=closed, hold_s=args.hold,
        second_request_ok=f"{second_ok}/{len(sample)}", limit_mb=args.limit_mb,
        within_limit=growth_kib <= args.limit_mb * 1024,
    )


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--target", choices=("fastgate", "nginx"), default="fastgate")
    p.add_argument("--fastgate", default=os.path.join(wc.REPO, ".venv", "bin", "fastgate"))
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--settle", type=float, default=2.0, help="s to wait before each RSS reading (default 2)")
    p.add_argument("--hold", type=float, default=5.0, help="s to keep the connections idle afterwards (default 5)")
    p.add_argument("--limit-mb", type=float, default=100.0, help="allowed worker RSS growth (default 100)")
    p.add_argument("--timeout", type=float, default=180.0, help="s for the whole measurement (default 180)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    wc.NGINX = args.nginx
    wc.ARGS_JSON = args.json
    nofile = raise_nofile(args.connections + 1024)
    if nofile < args.connections + 100:
        p.error(f"RLIMIT_NOFILE is {nofile}; {args.connections} connections need more (raise the hard limit)")
    signal.signal(signal.SIGTERM, _interrupt)

    root = tempfile.mkdtemp(prefix="fastgate-idle-")
    result: dict = {}
    try:
        up_port = wc.free_port()
        up_dir = os.path.join(root, "upstream")
        os.makedirs(up_dir)
        wc.start_nginx("upstream", wc.upstream_conf(up_port, up_dir), up_port, root, None)
        # The proxy's CPU does not matter here; pinning is left to the OS.
        ns = argparse.Namespace(fastgate=args.fastgate, proxy_cpu=None)
        srv, _ = wc.start_proxy(args.target, False, up_port, root, ns)
        result = asyncio.run(asyncio.wait_for(measure(srv, args), args.timeout))
        result["alive_after"] = srv.alive()
        if not srv.alive():
            result["server_output"] = srv.tail()
    except KeyboardInterrupt:
        wc.log("interrupted")
        result = dict(interrupted=True)
    except Exception as e:
        result = dict(failed=f"{type(e).__name__}: {e}")
    finally:
        wc.stop_all()
        shutil.rmtree(root, ignore_errors=True)

    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    elif "failed" in result or "interrupted" in result:
        print(result)
    else:
        r = result
        print(f"{r['target']}: {r['established']:,}/{r['connections']:,} idle keep-alive connections "
              f"in {r['open_s']}s ({r['errors']} errors{': ' + '; '.join(r['error_examples']) if r['errors'] else ''})")
        print(f"  worker pid {r['worker_pid']} ({r['processes']} processes in the tree): RSS "
              f"{r['worker_rss_before_kib'] / 1024:.1f} MB -> {r['worker_rss_after_kib'] / 1024:.1f} MB, "
              f"+{r['worker_growth_kib'] / 1024:.1f} MB = {r['growth_per_conn_kib']:.2f} KiB/connection "
              f"(limit {r['limit_mb']:g} MB: {'ok' if r['within_limit'] else 'EXCEEDED'})")
        print(f"  whole tree +{r['tree_growth_kib'] / 1024:.1f} MB; after {r['hold_s']:g}s idle, "
              f"{r['closed_by_server_after_hold']:,} closed by the server; second request on a sample: "
              f"{r['second_request_ok']} ok; server alive: {r['alive_after']}")
    ok = result.get("within_limit") and not result.get("errors") and result.get("alive_after")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
