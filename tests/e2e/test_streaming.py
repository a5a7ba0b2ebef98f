"""Bodies are streamed, not buffered: a 2 GiB upload and a 2 GiB download pass
through the gateway intact while the worker's resident memory stays flat."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time

import pytest

from conftest import ROOT, Gateway, Proc, free_port, read_response, wait_port, wait_until

SIZE = 2 * 1024 ** 3          # bytes each way
BLOCK = 1024 * 1024
RSS_SLACK_KB = 64 * 1024      # allowed growth over the worker's RSS before the transfer
TIME_LIMIT_S = 60
FASTGATE = str(ROOT / ".venv" / "bin" / "fastgate")


@pytest.fixture(scope="module")
def gw(up, tmp_path_factory):
    g = Gateway(tmp_path_factory.mktemp("stream"), admin=False, config=f"""\
access_log: {{path: 'off'}}
limits:
  max_body_bytes: unlimited
upstreams:
  api:
    targets: [{up.url}]
routes:
  - path: /{{proxy+}}
    integration: {{type: http, upstream: api}}
""")
    yield g
    g.stop()


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssWatch:
    """Samples a process's VmRSS every 50 ms in a thread; peak() is the highest seen."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start_kb = rss_kb(pid)
        self.max_kb = self.start_kb
        self.samples = 0
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop_ev.wait(0.05):
            self.max_kb = max(self.max_kb, rss_kb(self.pid))
            self.samples += 1

    def stop(self):
        self.stop_ev.set()
        self.t.join(5)


def worker_pid(g: Gateway) -> int:
    (pid,) = g.workers()
    return pid


def warm_up(port: int):
    """One small exchange each way, so the baseline RSS includes the code paths' first use."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET /bytes/100000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        f = s.makefile("rb")
        assert read_response(f).status == 200 and read_response(f).status == 200


def test_2gib_upload_streams_with_flat_memory(gw):
    warm_up(gw.port)
    upload_with_flat_memory(gw.port, worker_pid(gw))


def test_proxy_streams_a_2gib_upload_by_default(up):
    """`fastgate proxy` is a plain reverse proxy: without --max-body-size no body is too large
    (a gateway's 10 MiB default would answer this 413), and the body streams through."""
    port = free_port()
    p = Proc([FASTGATE, "proxy", "--listen", f"127.0.0.1:{port}", "--upstream", up.url,
              "--workers", "1", "--control", "off"])
    try:
        wait_port(port, p.proc)
        warm_up(port)
        upload_with_flat_memory(port, wait_until(lambda: p.children())[0])
    finally:
        p.stop()


def upload_with_flat_memory(port: int, pid: int):
    """PUT SIZE bytes to /echo through the gateway at port; the upstream must see them all, in
    time, while the worker pid's RSS stays within RSS_SLACK_KB of where it started."""
    watch = RssWatch(pid)
    digest = hashlib.sha256()
    block = bytearray(BLOCK)
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"PUT /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % SIZE)
            for i in range(SIZE // BLOCK):
                # generated on the fly: every block differs, so a dropped or repeated one shows
                block[:8] = i.to_bytes(8, "big")
                digest.update(block)
                s.sendall(block)
                assert time.monotonic() - t0 < TIME_LIMIT_S, f"only {i} MiB sent in time"
            r = read_response(s.makefile("rb"))
    finally:
        watch.stop()
    assert r.status == 200
    e = json.loads(r.body)
    assert (e["method"], e["body_size"], e["body_sha256"]) == ("PUT", SIZE, digest.hexdigest())
    assert watch.samples > 5
    assert watch.max_kb - watch.start_kb < RSS_SLACK_KB, (watch.start_kb, watch.max_kb)


def test_2gib_download_streams_with_flat_memory(gw):
    warm_up(gw.port)
    watch = RssWatch(worker_pid(gw))
    ref = bytes(range(256)) * (BLOCK // 256 + 1)   # the upstream's /bytes pattern
    got = 0
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as s:
            s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: a\r\n\r\n" % SIZE)
            f = s.makefile("rb", buffering=BLOCK)
            head = f.readline()
            assert head.startswith(b"HTTP/1.1 200 "), head
            headers = {}
            while (line := f.readline()) != b"\r\n":
                k, v = line.decode().split(":", 1)
                headers[k.lower()] = v.strip()
            assert headers["content-length"] == str(SIZE)
            buf = bytearray(BLOCK)
            while got < SIZE:
                n = f.readinto(memoryview(buf)[:min(BLOCK, SIZE - got)])
                assert n, f"closed after {got} bytes"
                o = got % 256
                assert buf[:n] == ref[o:o + n], f"wrong bytes at offset {got}"
                got += n
                if got % (64 * BLOCK) < n:
                    assert time.monotonic() - t0 < TIME_LIMIT_S, f"only {got} bytes in time"
    finally:
        watch.stop()
    assert got == SIZE
    assert watch.samples > 5
    assert watch.max_kb - watch.start_kb < RSS_SLACK_KB, (watch.start_kb, watch.max_kb)
