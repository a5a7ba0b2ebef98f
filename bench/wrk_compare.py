#!/usr/bin/env python3
"""wrk comparison: fastgate against nginx, both proxying to the same nginx upstream.

Everything measured is started here, on loopback ports picked free at run
time, and stopped by PID at the end (also on Ctrl-C or SIGTERM):

  CPU 0: wrk (1 thread) and the upstream (nginx, 1 worker, `return 200 "hello"`)
  CPU 1: the proxy under test, nginx (1 worker) or fastgate (supervisor + 1 worker)

Scenarios (see SCENARIOS below):
  keepalive  64 keep-alive connections, 5-byte response, no access log
  logged     the same with an access log to a file and two request header transforms
  latency    1 connection; reports the p50 the proxy adds over hitting the upstream directly
  keyed      an API key in a usage plan with a throttle, and a stage throttle, on every request
  observed   fastgate against itself: metrics on (default labels) and tracing at 1% vs both
             off; the ratios are observed/bare (the issue's budget: <= 5% cost)

Runs are interleaved (nginx, fastgate, nginx, fastgate, ...) for --rounds
rounds after a warm-up of each proxy. A proxy's CPU cost is the utime+stime of
its whole process tree (/proc/PID/stat of the root and every descendant),
read just before and just after each wrk run, divided by the requests wrk
completed in that run.

Usage:  .venv/bin/python bench/wrk_compare.py [--rounds 3] [--duration 10]
            [--connections 64] [--scenario keepalive,logged,latency] [--json]
Stdlib only. Needs nginx (Debian: nginx-light), wrk and taskset on PATH.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK_TCK = os.sysconf("SC_CLK_TCK")          # /proc/PID/stat time unit, ticks per s
UPSTREAM_BODY = b"hello"                     # 5 bytes, what the upstream answers on /
HEADER_ONE = ("X-Bench-One", "one")          # the two request header transforms of "logged"
HEADER_TWO = ("X-Bench-Two", "two")
START_TIMEOUT = 20.0                         # s for a server to answer its first request
STOP_TIMEOUT = 5.0                           # s between SIGTERM and SIGKILL
BUSY_FRACTION = 0.05                         # other work above this share of one CPU marks a run "busy"
LOG_SETTLE = 5.0                             # s to wait for a buffered access log to flush after a run
WRK_GRACE = 30.0                             # s a wrk run may overrun --duration before it is killed

SCENARIOS = {
    # name: (connections or None for --connections, access log and transforms, what it reports)
    "keepalive": dict(connections=None, logged=False,
                      about="keep-alive connections, 5-byte response, no access log"),
    "logged": dict(connections=None, logged=True,
                   about="as keepalive plus an access log file and two request header transforms"),
    "latency": dict(connections=1, logged=False,
                    about="1 connection: p50 added over hitting the upstream directly"),
    "keyed": dict(connections=None, logged=False, keyed=True,
                  about="fastgate: an API method requiring an API key (usage plan with a throttle) "
                        "and a stage throttle on every request; nginx: plain proxying"),
    "observed": dict(connections=None, logged=False, observed=True,
                     about="fastgate with metrics on (default labels) and tracing at 1% (ratio sampler, "
                           "spans POSTed to the upstream nginx as the OTLP collector) against fastgate "
                           "with both off; no nginx proxy"),
}
OBSERVED_KINDS = ("fg-bare", "fg-obs")   # the two fastgates of "observed": both off, both on
API_KEY = "BenchKeyValue0123456789abcdefXYZ"    # sent by wrk in every request of "keyed"

# ---------------------------------------------------------------------------
# nginx configs. Both nginx servers run 1 worker with logging to the temp dir
# only. keepalive_requests is raised everywhere so that no side of the
# comparison pays for reconnecting every 1,000 requests (nginx's default);
# fastgate's `serve` configs raise theirs too (serve_head); `fastgate proxy` keeps its
# default of 10,000 (about one reconnect per connection per run at these rates).
# ---------------------------------------------------------------------------
NGINX_COMMON = """\
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16384; }}
"""
NGINX_TEMP_PATHS = """\
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
"""

UPSTREAM_CONF = NGINX_COMMON + """\
http {{
{temp_paths}
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            return 200 "hello";
        }}
        # Lets the benchmark check that a proxy really applied the two header transforms.
        location = /echo-bench-headers {{
            return 200 "$http_x_bench_one|$http_x_bench_two";
        }}
        # The OTLP collector of "observed": accepts every batch of spans (an empty
        # ExportTraceServiceResponse) and keeps none.
        location = /v1/traces {{
            client_max_body_size 64m;
            default_type application/json;
            return 200 "{{}}";
        }}
    }}
}}
"""

# Idle upstream connections kept by each proxy: fastgate's default pool size, given to nginx
# too. A pool smaller than the requests in flight makes either proxy open and close upstream
# connections on every burst (at 1,000 client connections nginx with keepalive 64 spent ~2x
# the CPU per request of a pool that fits).
UPSTREAM_KEEPALIVE = 1024

PROXY_CONF = NGINX_COMMON + """\
http {{
{temp_paths}
    {access_log}
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    upstream backend {{
        server 127.0.0.1:{upstream_port};
        keepalive {upstream_keepalive};
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{extra_headers}        }}
    }}
}}
"""

# wrk prints its usual report (kept for the log) and then, from this script, one
# JSON line with exact percentiles (µs) and error counts.
WRK_LUA = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d," ..
    "\\"err_connect\\":%d,\\"err_read\\":%d,\\"err_write\\":%d,\\"err_timeout\\":%d," ..
    "\\"non_2xx_3xx\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d," ..
    "\\"p999_us\\":%d,\\"max_us\\":%d,\\"mean_us\\":%.1f}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr if ARGS_JSON else sys.stdout, flush=True)


ARGS_JSON = False


# ---------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] ppid, ..."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(b")") + 2:].split()


def descendants(root: int) -> list[int]:
    """root and every live descendant, by scanning /proc for parent links."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system, all threads) of root and its descendants.

    cutime/cstime are included so a worker that died and was reaped during a
    run still counts."""
    ticks = 0
    for pid in descendants(root):
        f = _stat_fields(pid)
        if f is not None:  # utime, stime, cutime, cstime are stat fields 14-17
            ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def steal_s() -> float:
    """All CPUs' steal time so far (s): a VM's CPU time taken by the hypervisor."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def busy_s() -> float:
    """Non-idle CPU time of all CPUs so far (s), from /proc/stat (idle and iowait excluded)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK   # user..steal minus idle, iowait
    except (OSError, ValueError):
        return 0.0


def wait_quiet(max_wait: float, window: float = 2.0) -> float:
    """Wait, at most max_wait s, for a window in which the machine is idle (our own
    servers idle too): less than BUSY_FRACTION of one CPU busy. Returns the s waited."""
    start = time.monotonic()
    while True:
        b0 = busy_s()
        time.sleep(window)
        if busy_s() - b0 < BUSY_FRACTION * window or time.monotonic() - start >= max_wait:
            return time.monotonic() - start


def _children_cpu_s() -> float:
    """CPU of this script's reaped children (wrk, once it has exited)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def tree_rss_kib(root: int) -> int:
    total = 0
    for pid in descendants(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Server:
    """One process tree we started: its command, logs, port and a stop that acts by PID."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: str, cpu: int | None):
        self.name, self.argv, self.port, self.workdir = name, argv, port, workdir
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv   # taskset execs: same PID
        self.out_path = os.path.join(workdir, f"{name}.out")
        self.out = open(self.out_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = self.proc.pid
        LIVE.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, path: str = "/", timeout: float = START_TIMEOUT) -> None:
        """Wait until GET path answers 200, or raise with the server's output."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                status, _, _ = http_get(self.port, path, headers={"x-api-key": API_KEY})
                if status == 200:
                    return
                last = f"status {status}"
            except OSError as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s ({last}):\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        try:
            with open(self.out_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    | " + ln for ln in lines[-n:])

    def stop(self) -> None:
        """SIGTERM the root, then SIGKILL whatever of its tree (as seen before) remains."""
        if self in LIVE:
            LIVE.remove(self)
        tree = [(p, _starttime(p)) for p in descendants(self.pid)] if self.alive() else []
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        for pid, started in tree:
            if started is not None and _starttime(pid) == started:   # same process, not a reused PID
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.alive():
            self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)
        self.out.close()


def _starttime(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[19]) if f is not None else None


LIVE: list[Server] = []


def stop_all() -> None:
    for server in list(reversed(LIVE)):
        try:
            server.stop()
        except Exception as e:   # keep stopping the others
            print(f"stopping {server.name} (pid {server.pid}): {e}", file=sys.stderr)


def http_get(port: int, path: str = "/", timeout: float = 2.0, headers=None) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# the servers
# ---------------------------------------------------------------------------
def start_nginx(name: str, conf_text: str, port: int, root: str, cpu: int) -> Server:
    workdir = os.path.join(root, name)
    os.makedirs(workdir, exist_ok=True)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(conf_text)
    # -e: error log before the config is read (else nginx opens /var/log/nginx/error.log).
    srv = Server(name, [NGINX, "-p", workdir, "-e", os.path.join(workdir, "error.log"), "-c", conf],
                 port, workdir, cpu)
    srv.wait_ready()
    return srv


def upstream_conf(port: int, workdir: str) -> str:
    return UPSTREAM_CONF.format(dir=workdir, port=port,
                                temp_paths=NGINX_TEMP_PATHS.format(dir=workdir))


def nginx_proxy_conf(port: int, upstream_port: int, workdir: str, logged: bool) -> str:
    extra = ""
    access_log = "access_log off;"
    if logged:
        access_log = f"access_log {workdir}/access.log;"   # nginx's "combined" format
        extra = "".join(f"            proxy_set_header {k} {v};\n" for k, v in (HEADER_ONE, HEADER_TWO))
    return PROXY_CONF.format(dir=workdir, port=port, upstream_port=upstream_port,
                             upstream_keepalive=UPSTREAM_KEEPALIVE,
                             temp_paths=NGINX_TEMP_PATHS.format(dir=workdir),
                             access_log=access_log, extra_headers=extra)


def serve_head(port: int) -> str:
    """The part every `fastgate serve` config here shares: one worker, no admin
    listener, keepalive_requests as nginx's."""
    return f"""\
# generated by bench/wrk_compare.py
workers: 1
listeners:
  - address: 127.0.0.1:{port}
admin:
  listen: "off"
limits:
  keepalive_requests: 1000000
"""


def upstream_routes(upstream_port: int) -> str:
    """The upstream group and the first route every proxying config here starts with."""
    return f"""\
upstreams:
  bench:
    targets:
      - url: http://127.0.0.1:{upstream_port}
    keepalive: {UPSTREAM_KEEPALIVE}
routes:
  - path: /{{proxy+}}
    integration: {{type: http, upstream: bench}}
"""


def fastgate_serve_yaml(port: int, upstream_port: int, access_log: str) -> str:
    """`fastgate serve` config for "logged": what `fastgate proxy` builds (fastgate.compile.config.
    proxy_config) plus an access log to a file and the two request headers nginx sets
    with proxy_set_header. Upstream keepalive as nginx's; keepalive_requests as nginx's."""
    headers = f"{{{HEADER_ONE[0]}: {HEADER_ONE[1]}, {HEADER_TWO[0]}: {HEADER_TWO[1]}}}"
    return serve_head(port) + f"""\
access_log:
  path: {access_log}
  format: clf
{upstream_routes(upstream_port)}    request_headers:
      set: {headers}
  - path: /
    integration: {{type: http, upstream: bench}}
    request_headers:
      set: {headers}
"""


def fastgate_keyed_yaml(port: int, workdir: str, upstream_port: int) -> str:
    """`fastgate serve` config for "keyed": a REST API at the root whose GET / needs an API
    key of a usage plan (throttle) and whose stage has a throttle too; limits far above the
    rate, so every request takes from both buckets and passes."""
    doc = {"swagger": "2.0", "info": {"title": "bench", "version": "1"},
           "securityDefinitions": {"api_key": {"type": "apiKey", "name": "x-api-key", "in": "header"}},
           "paths": {"/": {"get": {"security": [{"api_key": []}], "x-amazon-apigateway-integration": {
               "type": "http_proxy", "httpMethod": "GET", "uri": f"http://127.0.0.1:{upstream_port}/"}}}}}
    with open(os.path.join(workdir, "api.json"), "w") as f:
        json.dump(doc, f)
    return serve_head(port) + f"""\
access_log:
  path: null
apis:
  - openapi: api.json
    id: bench
    stages:
      $default: {{throttle: {{rate: 10000000, burst: 10000000}}}}
api_keys:
  - {{id: benchkey, name: benchkey, value: {API_KEY}}}
usage_plans:
  - id: plan
    name: plan
    api_stages: [{{api: bench, stage: $default}}]
    throttle: {{rate_limit: 10000000, burst_limit: 10000000}}
    keys: [benchkey]
"""


def fastgate_observed_yaml(port: int, upstream_port: int, observed: bool) -> str:
    """`fastgate serve` config for "observed": what `fastgate proxy` builds, with the
    request metrics off (fg-bare) or on with their default labels plus tracing at 1%
    exported to the upstream nginx, which answers the OTLP POSTs 200 (fg-obs)."""
    tracing = (f"tracing: {{sampler: ratio, ratio: 0.01, "
               f"endpoint: 'http://127.0.0.1:{upstream_port}/v1/traces'}}" if observed else "")
    return serve_head(port) + f"""\
access_log:
  path: null
metrics: {{enabled: {'true' if observed else 'false'}}}
{tracing}
{upstream_routes(upstream_port)}  - path: /
    integration: {{type: http, upstream: bench}}
"""


def start_proxy(kind: str, logged: bool, upstream_port: int, root: str, args,
                keyed: bool = False) -> tuple[Server, str | None]:
    """Start the proxy under test on CPU 1; returns it and its access log path (if logged)."""
    port = free_port()
    workdir = os.path.join(root, f"{kind}{'-logged' if logged else ''}-{port}")
    os.makedirs(workdir, exist_ok=True)
    access_log = os.path.join(workdir, "access.log") if logged else None
    if kind == "nginx":
        srv = start_nginx(os.path.basename(workdir), nginx_proxy_conf(port, upstream_port, workdir, logged),
                          port, root, args.proxy_cpu)
        return srv, access_log
    if kind in OBSERVED_KINDS:
        conf = os.path.join(workdir, "fastgate.yaml")
        with open(conf, "w") as f:
            f.write(fastgate_observed_yaml(port, upstream_port, kind == "fg-obs"))
        argv = [args.fastgate, "serve", "-c", conf, "--no-watch"]
    elif keyed:
        conf = os.path.join(workdir, "fastgate.yaml")
        with open(conf, "w") as f:
            f.write(fastgate_keyed_yaml(port, workdir, upstream_port))
        argv = [args.fastgate, "serve", "-c", conf, "--no-watch"]
    elif logged:
        conf = os.path.join(workdir, "fastgate.yaml")
        with open(conf, "w") as f:
            f.write(fastgate_serve_yaml(port, upstream_port, access_log))
        argv = [args.fastgate, "serve", "-c", conf]
    else:
        argv = [args.fastgate, "proxy", "--listen", f"127.0.0.1:{port}",
                "--upstream", f"http://127.0.0.1:{upstream_port}", "--workers", "1", "--control", "off"]
    srv = Server(os.path.basename(workdir), argv, port, workdir, args.proxy_cpu)
    try:
        srv.wait_ready()
    except Exception:
        srv.stop()
        raise
    return srv, access_log


def check_proxy(srv: Server, logged: bool) -> list[str]:
    """Problems with what the proxy answers (empty when it proxies correctly)."""
    try:
        return _check_proxy(srv, logged)
    except OSError as e:
        return [f"check request failed: {e!r}"]


def _check_proxy(srv: Server, logged: bool) -> list[str]:
    problems = []
    status, _, body = http_get(srv.port, "/", headers={"x-api-key": API_KEY})
    if status != 200 or body != UPSTREAM_BODY:
        problems.append(f"GET / -> {status} {body[:80]!r}, expected 200 {UPSTREAM_BODY!r}")
    if logged:
        status, _, body = http_get(srv.port, "/echo-bench-headers")
        want = f"{HEADER_ONE[1]}|{HEADER_TWO[1]}".encode()
        if body != want:
            problems.append(f"header transforms not applied: upstream saw {body[:80]!r}, expected {want!r}")
    return problems


# ---------------------------------------------------------------------------
# wrk
# ---------------------------------------------------------------------------
def run_wrk(port: int, connections: int, duration: int, lua: str, cpu: int) -> dict:
    argv = ["taskset", "-c", str(cpu), WRK, "-t1", f"-c{connections}", f"-d{duration}s",
            "--latency", "-s", lua, f"http://127.0.0.1:{port}/"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=duration + WRK_GRACE)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    text = out.decode(errors="replace")
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            res = json.loads(line[len("WRKJSON "):])
            res["rps"] = res["requests"] / (res["duration_us"] / 1e6) if res["duration_us"] else 0.0
            res["errors"] = res["err_connect"] + res["err_read"] + res["err_write"] + res["err_timeout"]
            return res
    raise RuntimeError(f"wrk exited {proc.returncode} without a result:\n{text}")


def measure(srv: Server, upstream: Server, connections: int, duration: int, lua: str, args,
            access_log: str | None = None) -> dict:
    """One wrk run against srv, with srv's process-tree CPU, access-log growth, and
    how busy the machine was with anything but this benchmark (other_busy_s)."""
    log_before = os.path.getsize(access_log) if access_log and os.path.exists(access_log) else 0
    trees = [srv] if srv is upstream else [srv, upstream]
    cpu0, up0, steal0, busy0 = tree_cpu_s(srv.pid), tree_cpu_s(upstream.pid), steal_s(), busy_s()
    wrk0 = _children_cpu_s()
    res = run_wrk(srv.port, connections, duration, lua, args.load_cpu)
    if access_log:
        settle_log(access_log)   # a buffered log's last write belongs to this run's CPU
    cpu1, up1, steal1, busy1 = tree_cpu_s(srv.pid), tree_cpu_s(upstream.pid), steal_s(), busy_s()
    ours = (cpu1 - cpu0) + (up1 - up0 if len(trees) == 2 else 0) + (_children_cpu_s() - wrk0)
    res["steal_s"] = round(steal1 - steal0, 2)   # time the hypervisor ran someone else (VMs)
    # Busy CPU time on all CPUs not spent in wrk, the upstream or the proxy: other
    # processes (a compile, a test run) and kernel threads such as ksoftirqd.
    res["other_busy_s"] = round(max(0.0, (busy1 - busy0) - ours), 2)
    res["cpu_s"] = round(cpu1 - cpu0, 3)
    res["cpu_us_per_req"] = (cpu1 - cpu0) * 1e6 / res["requests"] if res["requests"] else None
    res["alive_after"] = srv.alive()
    res["rss_kib"] = tree_rss_kib(srv.pid) if srv.alive() else None
    if access_log:
        res["log_lines"] = count_lines(access_log, log_before)
    return res


def settle_log(path: str, timeout: float = LOG_SETTLE, quiet: float = 1.5) -> None:
    """Wait until path has not grown for `quiet` s (fastgate flushes its buffered log
    once a second), at most timeout s."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        try:
            now = os.path.getsize(path)
        except OSError:
            now = 0
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.1)


def count_lines(path: str, offset: int) -> int:
    n = 0
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(1 << 20):
                n += chunk.count(b"\n")
    except OSError:
        return 0
    return n


# ---------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------
def check_run(sc: str, rnd: int, kind: str, r: dict, srv: Server, alog: str | None, conns: int,
              notes: list[str]) -> None:
    """Add to notes whatever was wrong in run r."""
    if not r["alive_after"]:
        notes.append(f"{sc} r{rnd}: {kind} died during the run (exit {srv.proc.returncode}):\n" + srv.tail())
        log(notes[-1])
    if r["errors"] or r["non_2xx_3xx"]:
        notes.append(f"{sc} r{rnd}: {kind}: socket errors {r['errors']} (connect {r['err_connect']}, "
                     f"read {r['err_read']}, write {r['err_write']}, timeout {r['err_timeout']}), "
                     f"non-2xx/3xx {r['non_2xx_3xx']} of {r['requests']:,}")
    if alog and r.get("log_lines") is not None and r["requests"]:
        # wrk counts only completed responses; a gap of more than the
        # connections in flight at the end means lost log lines.
        if abs(r["log_lines"] - r["requests"]) > conns:
            notes.append(f"{sc} r{rnd}: {kind}: {r['log_lines']:,} access-log lines "
                         f"for {r['requests']:,} requests")


def fmt_us(us: float | None) -> str:
    if us is None:
        return "-"
    return f"{us / 1000:.2f}ms" if us >= 1000 else f"{us:.0f}us"


def fmt_run(scenario: str, rnd: int, kind: str, r: dict) -> str:
    s = (f"  {scenario:9} r{rnd} {kind:8} {r['rps']:>10,.0f} req/s  "
         f"cpu {r['cpu_us_per_req'] or 0:6.2f} us/req ({r['cpu_s']:.2f}s)  "
         f"p50 {fmt_us(r['p50_us']):>8}  p99 {fmt_us(r['p99_us']):>8}  p99.9 {fmt_us(r['p999_us']):>8}")
    if r["errors"] or r["non_2xx_3xx"]:
        s += (f"  ERRORS connect {r['err_connect']} read {r['err_read']} write {r['err_write']} "
              f"timeout {r['err_timeout']} non-2xx {r['non_2xx_3xx']}")
    if "log_lines" in r:
        s += f"  log {r['log_lines']:,} lines"
    if r.get("steal_s", 0) >= 0.1:
        s += f"  steal {r['steal_s']:.1f}s"
    if r.get("other_busy_s", 0) >= 0.05 * r["duration_us"] / 1e6:
        s += f"  BUSY: others used {r['other_busy_s']:.1f} CPU-s"
    if not r["alive_after"]:
        s += "  DIED"
    return s


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return a / b if a is not None and b else None


def summarize(runs: list[dict], scenarios: list[str]) -> dict:
    out = {}
    for sc in scenarios:
        per = {}
        for kind in ("nginx", "fastgate", "direct") + OBSERVED_KINDS:
            rs = [r for r in runs if r["scenario"] == sc and r["server"] == kind and r.get("ok")]
            quiet = [r for r in rs if not r["busy"]]
            busy_used = 0 if quiet else len(rs)   # only busy runs: use them, but say so
            rs = quiet or rs
            if not rs:
                continue
            per[kind] = dict(
                runs=len(rs), busy_runs_used=busy_used,
                rps=median(r["rps"] for r in rs),
                cpu_us_per_req=median(r["cpu_us_per_req"] for r in rs),
                p50_us=median(r["p50_us"] for r in rs),
                p99_us=median(r["p99_us"] for r in rs),
                p999_us=median(r["p999_us"] for r in rs),
                errors=sum(r["errors"] for r in rs),
                non_2xx_3xx=sum(r["non_2xx_3xx"] for r in rs),
            )
        s = dict(per)
        if "nginx" in per and "fastgate" in per:
            s["rps_ratio"] = ratio(per["fastgate"]["rps"], per["nginx"]["rps"])
            s["cpu_ratio"] = ratio(per["fastgate"]["cpu_us_per_req"], per["nginx"]["cpu_us_per_req"])
            s["p50_ratio"] = ratio(per["fastgate"]["p50_us"], per["nginx"]["p50_us"])
            s["p99_ratio"] = ratio(per["fastgate"]["p99_us"], per["nginx"]["p99_us"])
        if all(k in per for k in OBSERVED_KINDS):
            obs, bare = per["fg-obs"], per["fg-bare"]
            s["obs_rps_ratio"] = ratio(obs["rps"], bare["rps"])
            s["obs_cpu_ratio"] = ratio(obs["cpu_us_per_req"], bare["cpu_us_per_req"])
            s["obs_p99_ratio"] = ratio(obs["p99_us"], bare["p99_us"])
        if "direct" in per:
            for kind in ("nginx", "fastgate"):
                if kind in per:
                    per[kind]["added_p50_us"] = per[kind]["p50_us"] - per["direct"]["p50_us"]
        out[sc] = s
    return out


def print_summary(summary: dict, args) -> None:
    log("")
    log(f"summary (median of {args.rounds} rounds, runs during other work left out; ratios are fastgate/nginx)")
    for sc, s in summary.items():
        if not s:
            continue
        log(f"  {sc}: {SCENARIOS[sc]['about']}")
        for kind in ("nginx", "fastgate", "direct") + OBSERVED_KINDS:
            if kind not in s:
                continue
            k = s[kind]
            line = (f"    {kind:8} {k['rps']:>10,.0f} req/s  cpu {k['cpu_us_per_req'] or 0:6.2f} us/req  "
                    f"p50 {fmt_us(k['p50_us']):>8}  p99 {fmt_us(k['p99_us']):>8}")
            if "added_p50_us" in k:
                line += f"  added p50 {fmt_us(k['added_p50_us'])}"
            if k["errors"] or k["non_2xx_3xx"]:
                line += f"  errors {k['errors']} non-2xx {k['non_2xx_3xx']}"
            if k["busy_runs_used"]:
                line += f"  (from {k['busy_runs_used']} BUSY runs only)"
            log(line)
        if "rps_ratio" in s:
            f = lambda v: f"{v:.2f}" if v is not None else "-"   # noqa: E731
            log(f"    fastgate/nginx: req/s x{f(s['rps_ratio'])}  cpu/req x{f(s['cpu_ratio'])}  "
                f"p50 x{f(s['p50_ratio'])}  p99 x{f(s['p99_ratio'])}")
        if "obs_rps_ratio" in s:
            f = lambda v: f"{v:.3f}" if v is not None else "-"   # noqa: E731
            log(f"    observed/bare: req/s x{f(s['obs_rps_ratio'])}  cpu/req x{f(s['obs_cpu_ratio'])}  "
                f"p99 x{f(s['obs_p99_ratio'])}")


def machine_info() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def version(argv):
        try:
            p = subprocess.run(argv, capture_output=True, timeout=10)
            return (p.stdout + p.stderr).decode(errors="replace").strip().splitlines()[0]
        except Exception as e:
            return f"unknown ({e})"

    fg_version = version([sys.executable, "-c", "import fastgate; print(getattr(fastgate, '__version__', '?'))"])
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                                capture_output=True, timeout=10).stdout.decode().strip()
    except Exception:
        commit = "?"
    try:   # uncommitted changes in fastgate/ mean the commit alone does not name the build
        dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "fastgate"],
                                    capture_output=True, timeout=10).stdout.strip())
    except Exception:
        dirty = None
    stale = []   # compiled modules older than their source: the run measures an older build
    for pyx in sorted(glob.glob(os.path.join(REPO, "fastgate", "_core", "*.pyx"))):
        sos = glob.glob(pyx[:-4] + ".*.so")
        if not sos or max(os.path.getmtime(so) for so in sos) < os.path.getmtime(pyx):
            stale.append(os.path.basename(pyx)[:-4])
    try:
        with open("/proc/loadavg") as f:
            loadavg = " ".join(f.read().split()[:3])
    except OSError:
        loadavg = "?"
    return dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                loadavg_at_start=loadavg,
                nproc=os.cpu_count(), cpu_model=model, kernel=platform.release(),
                python=platform.python_version(), nginx=version([NGINX, "-v"]), wrk=version([WRK, "-v"]),
                fastgate=fg_version, fastgate_commit=commit, fastgate_dirty=dirty,
                fastgate_stale_modules=stale)


def main(argv=None) -> int:
    global ARGS_JSON, NGINX, WRK
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved nginx/fastgate rounds (default 3)")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--warmup", type=int, default=3,
                   help="seconds of warm-up per proxy and scenario, 0 for none (default 3)")
    p.add_argument("--connections", type=int, default=64, help="connections for keepalive/logged (default 64)")
    p.add_argument("--scenario", default="keepalive,logged,latency",
                   help="comma-separated subset of: " + ", ".join(SCENARIOS))
    p.add_argument("--servers", default="nginx,fastgate", help="proxies to measure (default nginx,fastgate)")
    p.add_argument("--fastgate", default=os.path.join(REPO, ".venv", "bin", "fastgate"), help="fastgate executable")
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx", help="nginx executable")
    p.add_argument("--wrk", default=shutil.which("wrk") or "wrk", help="wrk executable")
    p.add_argument("--load-cpu", type=int, default=0, help="CPU for wrk and the upstream (default 0)")
    p.add_argument("--proxy-cpu", type=int, default=1, help="CPU for the proxy under test (default 1)")
    p.add_argument("--busy-retries", type=int, default=2,
                   help="repeat a run up to this many times when other processes used more than "
                        f"{BUSY_FRACTION:.0%}% of a CPU during it (default 2); the summary skips busy runs")
    p.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                   help="before starting and before repeating a busy run, wait up to S s for other "
                        "work on the machine to stop (default 0: no waiting)")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout (progress on stderr)")
    args = p.parse_args(argv)
    ARGS_JSON, NGINX, WRK = args.json, args.nginx, args.wrk
    scenarios = [s for s in args.scenario.split(",") if s]
    kinds = [k for k in args.servers.split(",") if k]
    for s in scenarios:
        if s not in SCENARIOS:
            p.error(f"unknown scenario {s!r}; choose from {', '.join(SCENARIOS)}")
    for k in kinds:
        if k not in ("nginx", "fastgate"):
            p.error(f"unknown server {k!r}")
    for tool in (NGINX, WRK, "taskset"):
        if not shutil.which(tool):
            p.error(f"{tool} not found (Debian: apt-get install nginx-light wrk util-linux)")
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds and --duration must be positive")

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_sigterm)

    root = tempfile.mkdtemp(prefix="fastgate-wrk-")
    lua = os.path.join(root, "report.lua")
    with open(lua, "w") as f:
        f.write(WRK_LUA)
    keyed_lua = os.path.join(root, "report-keyed.lua")
    with open(keyed_lua, "w") as f:
        f.write(f'wrk.headers["x-api-key"] = "{API_KEY}"\n' + WRK_LUA)
    meta = machine_info()
    meta.update(rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup,
                connections=args.connections, scenarios=scenarios, servers=kinds,
                command=" ".join([os.path.relpath(sys.argv[0], REPO)] + (argv or sys.argv[1:])),
                load_cpu=args.load_cpu, proxy_cpu=args.proxy_cpu)
    runs: list[dict] = []
    notes: list[str] = []
    log(f"{meta['date']}  {meta['nproc']} CPUs ({meta['cpu_model']})  {meta['nginx']}  {meta['wrk']}  "
        f"fastgate {meta['fastgate']} @ {meta['fastgate_commit']}")
    if meta["fastgate_dirty"] or meta["fastgate_stale_modules"]:
        log(f"note: fastgate/ has uncommitted changes: {meta['fastgate_dirty']}; compiled modules older "
            f"than their .pyx: {', '.join(meta['fastgate_stale_modules']) or 'none'}")
    log(f"wrk and upstream on CPU {args.load_cpu}, proxies on CPU {args.proxy_cpu}; "
        f"load average {meta['loadavg_at_start']}; temp dir {root}")
    interrupted = False
    try:
        if args.wait_quiet:
            waited = wait_quiet(args.wait_quiet)
            log(f"waited {waited:.0f}s for a quiet machine")
        up_port = free_port()
        up_dir = os.path.join(root, "upstream")
        os.makedirs(up_dir)
        upstream = start_nginx("upstream", upstream_conf(up_port, up_dir), up_port, root, args.load_cpu)
        for sc in scenarios:
            spec = SCENARIOS[sc]
            conns = spec["connections"] or args.connections
            logged = spec["logged"]
            keyed = spec.get("keyed", False)
            sc_lua = keyed_lua if keyed else lua
            log(f"\n[{sc}] {conns} connection(s), {args.duration:g}s per run: {spec['about']}")
            proxies: dict[str, tuple[Server, str | None]] = {}
            for kind in (OBSERVED_KINDS if spec.get("observed") else kinds):
                try:
                    srv, alog = start_proxy(kind, logged, up_port, root, args, keyed)
                except Exception as e:
                    msg = f"{sc}: {kind} did not start: {e}"
                    notes.append(msg)
                    log("  " + msg)
                    continue
                problems = check_proxy(srv, logged)
                if problems:
                    for prob in problems:
                        notes.append(f"{sc}: {kind}: {prob}")
                        log(f"  {kind}: {prob}")
                proxies[kind] = (srv, alog)
                if args.warmup > 0:
                    try:
                        run_wrk(srv.port, conns, args.warmup, sc_lua, args.load_cpu)
                    except RuntimeError as e:
                        notes.append(f"{sc}: {kind} warm-up: {e}")
                        log("  " + notes[-1])
            if sc == "latency" and args.warmup > 0:   # the baseline the proxies' added latency is measured against
                run_wrk(up_port, conns, args.warmup, sc_lua, args.load_cpu)
            for rnd in range(1, args.rounds + 1):
                order = list(proxies) + (["direct"] if sc == "latency" else [])
                for kind in order:
                    if kind == "direct":
                        srv, alog = upstream, None
                    else:
                        srv, alog = proxies[kind]
                    if not srv.alive():   # it died in an earlier run: note it, restart once per run
                        notes.append(f"{sc} r{rnd}: {kind} was dead (exit {srv.proc.returncode}); restarting\n"
                                     + srv.tail())
                        log("  " + notes[-1])
                        srv.stop()
                        try:
                            proxies[kind] = srv, alog = start_proxy(kind, logged, up_port, root, args)
                        except Exception as e:
                            notes.append(f"{sc} r{rnd}: {kind} restart failed: {e}")
                            log("  " + notes[-1])
                            continue
                    for attempt in range(args.busy_retries + 1):
                        try:
                            r = measure(srv, upstream, conns, args.duration, sc_lua, args, alog)
                        except RuntimeError as e:
                            notes.append(f"{sc} r{rnd} {kind}: {e}")
                            log("  " + notes[-1])
                            break
                        r.update(scenario=sc, round=rnd, server=kind, connections=conns, ok=True,
                                 busy=r["other_busy_s"] > BUSY_FRACTION * args.duration)
                        runs.append(r)
                        log(fmt_run(sc, rnd, kind, r))
                        check_run(sc, rnd, kind, r, srv, alog, conns, notes)
                        if not r["busy"] or not r["alive_after"]:
                            break
                        if attempt < args.busy_retries:
                            log("    other work was running on this machine; repeating the run")
                            waited = wait_quiet(args.wait_quiet) if args.wait_quiet else time.sleep(2)
                            if waited and waited > 2.5:
                                log(f"    (waited {waited:.0f}s for the machine to go quiet)")
            for kind, (srv, _) in proxies.items():
                if srv.alive():
                    for prob in check_proxy(srv, logged):
                        notes.append(f"{sc}: {kind} after the runs: {prob}")
                srv.stop()
    except KeyboardInterrupt:
        interrupted = True
        log("\ninterrupted; stopping servers")
    finally:
        stop_all()
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    summary = summarize(runs, scenarios)
    if runs:
        print_summary(summary, args)
    if notes:
        log("\nnotes:")
        for n in notes:
            log("  - " + n)
    if args.json:
        json.dump(dict(meta=meta, runs=runs, summary=summary, notes=notes, interrupted=interrupted),
                  sys.stdout, indent=2)
        print()
    return 130 if interrupted else 0


NGINX = "nginx"
WRK = "wrk"

if __name__ == "__main__":
    sys.exit(main())
