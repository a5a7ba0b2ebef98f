"""No upstream answer crashes a worker: a raw TCP upstream replies with seeded, mangled
responses (bad framing, lies about lengths, garbage, early closes, 1xx storms); every client
request gets some answer or a closed connection, and the worker keeps serving."""

from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from conftest import Gateway, free_port

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\nraw",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx",
]
NOISE = [b"\r\n", b"\x00", b"Content-Length: 3\r\n", b"Content-Length: x\r\n",
         b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"zz\r\n", b"HTTP/1.1 ",
         b"X" * 3000, b"\n", b":", b"999999999999999999\r\n"]


def mangle(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randrange(4)):
        pos = rng.randrange(len(data) + 1)
        op = rng.randrange(3)
        if op == 0 and data:
            del data[pos:pos + rng.randrange(1, 6)]
        elif op == 1:
            data[pos:pos] = rng.choice(NOISE)
        else:
            data[pos:pos] = rng.choice(RESPONSES)
    return bytes(data)


class EvilUpstream:
    """Answers each request head it reads with one mangled response, then maybe closes."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn):
        conn.settimeout(2)
        try:
            buf = b""
            while not self.stopped:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\r\n\r\n" in buf:
                    _, buf = buf.split(b"\r\n\r\n", 1)
                    reply = mangle(self.rng, self.rng.choice(RESPONSES))
                    for i in range(0, len(reply), self.rng.randrange(1, 400)):
                        conn.sendall(reply[i:i + 400])
                    if self.rng.random() < 0.3:
                        return
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


@pytest.mark.parametrize("seed", range(4))
def test_mangled_upstream_responses_never_crash_a_worker(tmp_path, seed):
    evil = EvilUpstream(seed)
    g = Gateway(tmp_path, admin=False, config=f"""\
access_log: {{path: 'off'}}
upstreams:
  api:
    targets: [http://127.0.0.1:{evil.port}]
    first_byte_timeout_ms: 500
    retries: 0
routes:
  - path: /mock
    integration: {{type: mock, body: mocked}}
  - path: /{{proxy+}}
    integration: {{type: http, upstream: api}}
""")
    try:
        workers = g.workers()
        rng = random.Random(seed)
        for i in range(40):
            with socket.create_connection(("127.0.0.1", g.port), timeout=3) as s:
                s.settimeout(1.5)
                head = b"HEAD" if rng.random() < 0.2 else b"GET"
                s.sendall(b"%s /x%d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" % (head, i))
                got = b""
                try:
                    while len(got) < 100000:
                        c = s.recv(65536)
                        if not c:
                            break
                        got += c
                except OSError:
                    pass
                # whatever the upstream said, the client gets an HTTP answer or a clean close
                assert got == b"" or got.startswith(b"HTTP/1.1 "), got[:200]
        with socket.create_connection(("127.0.0.1", g.port), timeout=3) as s:
            s.sendall(b"GET /mock HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            data = b""
            while c := s.recv(65536):
                data += c
        assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"mocked")
        assert g.workers() == workers
    finally:
        g.p.proc.send_signal(15)
        out = g.p.proc.communicate(timeout=15)[0]
        evil.stop()
    assert "Traceback" not in out and "Exception ignored" not in out, out[-3000:]
