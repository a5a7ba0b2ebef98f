"""The fastgate command end to end: check, proxy (and its flags), serve with
the packaged default config, --workers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time

import httpx

from conftest import ROOT, Proc, free_port, listening_table, socket_inodes, wait_port, wait_until

FASTGATE = str(ROOT / ".venv" / "bin" / "fastgate")


def run(*args, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run([FASTGATE, *args], capture_output=True, text=True, timeout=timeout)



def listening_ports(pids: list[int]) -> set[int]:
    """TCP ports in LISTEN state whose socket any of these processes holds."""
    inodes = set().union(*(socket_inodes(pid) for pid in pids))
    return {port for port, inode, _ in listening_table() if inode in inodes}


class Proxy:
    def __init__(self, *args, control: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [FASTGATE, "proxy", "--listen", f"127.0.0.1:{self.port}", *args]
        if control is not None:
            argv += ["--control", control]
        self.p = Proc(argv)
        wait_port(self.port, self.p.proc)

    def children(self) -> list[int]:
        return self.p.children()


def test_check_prints_the_route_table(tmp_path, upstream):
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"""\
listeners:
  - address: 127.0.0.1:{free_port()}
upstreams:
  api:
    targets: [{upstream.url}]
routes:
  - path: /pets/{{id}}
    method: GET
    integration: {{type: http, upstream: api}}
  - path: /health
    method: GET
    integration: {{type: mock, status: 204}}
  - path: /echo
    integration: {{type: echo}}
""")
    r = run("check", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{cfg}: OK, 3 routes, 1 upstreams"
    rows = {tuple(line.split(None, 3)) for line in lines[2:]}
    assert lines[1].split() == ["HOST", "METHOD", "PATH", "INTEGRATION"]
    assert rows == {("*", "GET", "/pets/{id}", "http -> api"), ("*", "GET", "/health", "mock 204"),
                    ("*", "ANY", "/echo", "echo")}


def test_check_reports_file_line_column_and_field(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("""\
listeners:
  - address: 127.0.0.1:8080
upstreams:
  api:
    targets: [http://127.0.0.1:9000]
routes:
  - path: /a
    integration: {type: mock}
  - path: /b
    integration:
      type: http
      upstream: billing
""")
    r = run("check", "-c", str(cfg))
    assert r.returncode != 0
    assert r.stdout == ""
    assert re.search(rf"^fastgate: {re.escape(str(cfg))}:12:7: routes\[1\]\.integration\.upstream: "
                     r"unknown upstream 'billing' \(defined: api\)$", r.stderr, re.M), r.stderr
    cfg.write_text("listeners:\n  - adress: 127.0.0.1:8080\n")
    r = run("check", "-c", str(cfg))
    assert r.returncode != 0
    assert f"{cfg}:2:5: listeners[0].adress: unknown field 'adress'" in r.stderr, r.stderr


def test_proxy_round_robins_over_upstreams(make_upstream):
    a, b = make_upstream("a"), make_upstream("b")
    px = Proxy("--upstream", a.url, "--upstream", b.url, "--workers", "1", control="off")
    try:
        with httpx.Client(timeout=5) as c:
            names = [c.get(px.url + "/name").text for _ in range(10)]
            root = c.get(px.url + "/")   # the ANY / route
        assert names == ["a", "b"] * 5
        assert (root.status_code, root.text) == (200, "hello")
    finally:
        assert px.p.stop() == 0


def test_proxy_control_off_has_no_admin_listener(upstream):
    px = Proxy("--upstream", upstream.url, "--workers", "1", control="off")
    try:
        assert httpx.get(px.url + "/name", timeout=5).text == "up1"
        pids = [px.p.pid] + px.children()
        assert listening_ports(pids) == {px.port}
    finally:
        px.p.stop()


def test_proxy_control_moves_the_admin_listener(upstream):
    admin = free_port()
    px = Proxy("--upstream", upstream.url, "--workers", "1", control=f"127.0.0.1:{admin}")
    try:
        assert httpx.get(px.url + "/name", timeout=5).text == "up1"
        wait_port(admin, px.p.proc)
        r = httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5)
        assert r.status_code == 200
        assert 'fastgate_requests_total{route="ANY /{proxy+}"' in r.text
        assert listening_ports([px.p.pid] + px.children()) == {px.port, admin}
    finally:
        px.p.stop()


def test_proxy_access_log(tmp_path, upstream):
    log = tmp_path / "access.log"
    px = Proxy("--upstream", upstream.url, "--workers", "1", "--access-log", str(log), control="off")
    try:
        for path in ("/name", "/status/404"):
            httpx.get(px.url + path, timeout=5)
        wait_until(lambda: log.exists() and log.read_text().count("\n") == 2)
        lines = log.read_text().splitlines()
        assert '"GET /name HTTP/1.1" 200 3 ' in lines[0]
        assert '"GET /status/404 HTTP/1.1" 404 10 ' in lines[1]
    finally:
        px.p.stop()


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_serve_without_config_runs_the_packaged_default(tmp_path):
    default = ROOT / "fastgate" / "default.yaml"
    if port_free(8080) and port_free(9901):
        port, argv = 8080, [FASTGATE, "serve"]
    else:   # same file, free ports
        port, admin = free_port(), free_port()
        text = default.read_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}") \
                                  .replace("127.0.0.1:9901", f"127.0.0.1:{admin}")
        cfg = tmp_path / "default.yaml"
        cfg.write_text(text)
        argv = [FASTGATE, "serve", "-c", str(cfg)]
    p = Proc(argv)
    try:
        wait_port(port, p.proc)
        base = f"http://127.0.0.1:{port}"
        r = httpx.get(base + "/health", timeout=5)
        assert (r.status_code, r.headers["content-type"], r.json()) == (200, "application/json",
                                                                         {"status": "ok"})
        r = httpx.post(base + "/echo/anything?x=1", content=b"hi", timeout=5)
        doc = r.json()
        assert (doc["method"], doc["path"], doc["query"], doc["body"]) == ("POST", "/echo/anything", "x=1", "hi")
        assert doc["headers"]["x-gateway-request-id"] == r.headers["x-request-id"]
        assert httpx.get(base + "/echo", timeout=5).json()["path"] == "/echo"
        assert httpx.get(base + "/nope", timeout=5).status_code == 404
    finally:
        assert p.stop() == 0


def test_workers_flag(upstream):
    px = Proxy("--upstream", upstream.url, "--workers", "3", control="off")
    try:
        # three workers and no admin process (no admin listener, no health checks)
        kids = wait_until(lambda: k if len(k := px.children()) == 3 else None)
        assert len(kids) == 3
        time.sleep(0.3)
        assert len(px.children()) == 3
        assert httpx.get(px.url + "/name", timeout=5).text == "up1"
    finally:
        px.p.stop()


def test_proxy_max_body_size(upstream):
    px = Proxy("--upstream", upstream.url, "--workers", "1", "--max-body-size", "1k", control="off")
    try:
        with httpx.Client(timeout=10) as c:
            r = c.post(px.url + "/echo", content=b"x" * 1024)
            assert (r.status_code, r.json()["body_size"]) == (200, 1024)
            r = c.post(px.url + "/echo", content=b"x" * 1025)
            assert (r.status_code, r.json()) == (413, {"message": "Request Too Long"})
            r = c.post(px.url + "/echo", content=iter([b"x" * 1000, b"x" * 1000]))   # chunked
            assert (r.status_code, r.json()) == (413, {"message": "Request Too Long"})
    finally:
        px.p.stop()


def test_proxy_rejects_a_bad_max_body_size():
    r = run("proxy", "--listen", f"127.0.0.1:{free_port()}", "--upstream", "http://127.0.0.1:9",
            "--control", "off", "--max-body-size", "10mb")
    assert r.returncode == 2
    assert r.stderr.startswith("fastgate: fastgate proxy: --max-body-size: '10mb' is not a size"), r.stderr


def test_build_sh_serve_moves_its_ports(tmp_path):
    """What the README says: `./build.sh serve --listen HOST:PORT --control HOST:PORT` serves the
    packaged default config on other ports (build.sh hands its arguments to `fastgate serve`)."""
    port, admin = free_port(), free_port()
    while admin == port:
        admin = free_port()
    p = Proc([str(ROOT / "build.sh"), "serve", "--listen", f"127.0.0.1:{port}",
              "--control", f"127.0.0.1:{admin}"], env={**os.environ, "FASTGATE_DATA_DIR": str(tmp_path)})
    try:
        # build.sh builds first (nothing to compile when the suite runs)
        out = p.wait_output(f"admin: http://127.0.0.1:{admin}/metrics", timeout=120)
        assert f"listening on http://127.0.0.1:{port}" in out
        wait_port(port, p.proc)
        r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        assert (r.status_code, r.json()) == (200, {"status": "ok"})
        wait_port(admin, p.proc)
        assert httpx.get(f"http://127.0.0.1:{admin}/metrics", timeout=5).status_code == 200
        assert listening_ports([p.pid] + p.children()) == {port, admin}
    finally:
        assert p.stop() == 0


def test_proxy_rejects_a_bad_upstream_url():
    r = run("proxy", "--listen", f"127.0.0.1:{free_port()}", "--upstream", "ftp://x", "--control", "off")
    assert r.returncode == 2
    assert "--upstream" in r.stderr and "ftp://x" in r.stderr, r.stderr


def test_serve_on_a_port_in_use_says_so(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"listeners: [{{address: 127.0.0.1:{port}}}]\nadmin: {{listen: 'off'}}\n"
                   "routes:\n  - path: /h\n    integration: {type: echo}\n")
    try:
        r = run("serve", "-c", str(cfg))
    finally:
        busy.close()
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_second_gateway_on_a_reuseport_port_is_refused(tmp_path):
    """SO_REUSEPORT would let a second fastgate of the same user join the first one's
    group and take half its connections: it must fail as on any port in use."""
    port = free_port()
    cfg = tmp_path / "g.yaml"
    cfg.write_text(f"workers: 2\nlisteners: [{{address: 127.0.0.1:{port}}}]\nadmin: {{listen: 'off'}}\n"
                   "routes:\n  - path: /h\n    integration: {type: echo}\n")
    first = Proc([FASTGATE, "serve", "-c", str(cfg), "--no-watch"])
    try:
        wait_port(port, first.proc)
        r = run("serve", "-c", str(cfg), "--no-watch")
        assert r.returncode == 1, r.stderr
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr
    finally:
        assert first.stop() == 0
