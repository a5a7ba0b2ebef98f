"""No request smuggling through the gateway: an upstream sees each request's head before any
byte of its body, whatever path the request takes (a fresh connection, a pooled one, a TLS
one, a retry, an upgrade). Many concurrent uploads go through the gateway to an upstream that
parses strictly and records exactly what reaches it (tests/recording_upstream.py); each body
holds a complete request line, which the upstream would serve as a request of its own if body
bytes ever reached it ahead of their head."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conftest import Upstream, wait_until

SIZE = 1 << 20            # bytes per upload (as in the report)
UPLOADS = 40              # concurrent uploads per round
ROUNDS = 8                # rounds at most; the whole test is also bounded in time
TIME_BUDGET_S = 90
SMUGGLED = b"GET /hello?SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"


def body_of(i: int) -> bytes:
    # The report's payload: a request line at offset 65,536. Any body byte ahead of the head
    # makes the upstream parse the filler as a request line (an error) or serve SMUGGLED.
    body = bytearray(b"%07d " % i * (SIZE // 8))
    body[65536:65536 + len(SMUGGLED)] = SMUGGLED
    return bytes(body)


async def upload(port: int, path: str, body: bytes, expect: bool, chunked: bool):
    """One upload on a raw connection, written in 16 KiB pieces; (status, response body) or
    (None, what went wrong)."""
    import hashlib
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
                + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n")
                + ("Expect: 100-continue\r\n" if expect else "") + "\r\n").encode()
        writer.write(head)
        if expect:
            interim = await reader.readuntil(b"\r\n\r\n")
            if not interim.startswith(b"HTTP/1.1 100 "):
                return None, f"no 100 Continue: {interim[:100]!r}"
        for off in range(0, len(body), 16384):
            piece = body[off:off + 16384]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
            await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        resp_head = await reader.readuntil(b"\r\n\r\n")
        status = int(resp_head.split(b" ", 2)[1])
        length = 0
        for line in resp_head.split(b"\r\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        answer = await reader.readexactly(length)
        if status != 200:
            return status, answer
        got = json.loads(answer)
        want = {"target": path, "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}
        return status, (None if got == want else f"upstream got {got}, sent {want}")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        return None, repr(e)
    finally:
        writer.close()


async def one_round(port: int, rnd: int):
    bodies = [body_of(i) for i in range(UPLOADS)]
    jobs = []
    for i in range(UPLOADS):
        # half on fresh upstream connections (where the head waited for the connect), half on
        # pooled ones; half with Expect: 100-continue (the body follows the 100 at once,
        # while the gateway connects), half chunked
        pool = "fresh" if i % 2 == 0 else "pooled"
        jobs.append(asyncio.wait_for(upload(port, f"/{pool}/{rnd}/{i}", bodies[i],
                                            expect=(i // 2) % 2 == 0, chunked=(i // 4) % 2 == 0),
                                     timeout=60))
    return await asyncio.gather(*jobs, return_exceptions=True)


def run_rounds(g, rec) -> int:
    """Rounds of concurrent uploads until ROUNDS or the time budget; the number run."""
    started = time.monotonic()
    sent = set()
    for rnd in range(ROUNDS):
        results = asyncio.run(one_round(g.port, rnd))
        sent |= {f"/{'fresh' if i % 2 == 0 else 'pooled'}/{rnd}/{i}" for i in range(UPLOADS)}
        bad = [(i, r) for i, r in enumerate(results)
               if isinstance(r, BaseException) or r[0] != 200 or r[1] is not None]
        if not bad:     # each answer came from the upstream: its records are all there
            wait_until(lambda: len(rec.events("request")) >= len(sent), timeout=10)
        # every upload's request reached the upstream once, and nothing else did
        targets = [e["target"] for e in rec.events("request")]
        stray = [t for t in targets if t not in sent]
        errors = rec.events("error")
        assert not errors and not stray and not bad and sorted(targets) == sorted(sent), (
            f"round {rnd}: upstream parse errors {[(e['error'][:60], e['bytes'][:40]) for e in errors[:3]]}, "
            f"requests nobody sent {stray[:3]}, failed uploads {[(i, str(r)[:100]) for i, r in bad[:3]]}")
        if time.monotonic() - started > TIME_BUDGET_S:
            break
    return rnd + 1


CONFIG = """\
access_log: {{path: 'off'}}
upstreams:
  fresh:
    targets: [{url}]
    keepalive: 0             # a new upstream connection per request: the head waits for the connect
    retries: 0
    {tls}
  pooled:
    targets: [{url}]
    retries: 0
    {tls}
routes:
  - path: /fresh/{{proxy+}}
    integration: {{type: http, upstream: fresh}}
  - path: /pooled/{{proxy+}}
    integration: {{type: http, upstream: pooled}}
"""


def test_body_never_reaches_the_upstream_before_its_head(gateway, recording_upstream):
    rec = recording_upstream()
    g = gateway(CONFIG.format(url=rec.url, tls=""))
    assert run_rounds(g, rec) >= 1


def test_body_never_reaches_a_tls_upstream_before_its_head(gateway, recording_upstream, tmp_path):
    from test_tls_upstream import make_cert
    cert, key = make_cert(tmp_path)
    rec = recording_upstream("--cert", cert, "--key", key)
    g = gateway(CONFIG.format(url=rec.url, tls="tls_verify: false"))
    assert run_rounds(g, rec) >= 1


def test_a_retried_request_carries_its_whole_body(gateway, recording_upstream):
    # the first target closes each connection after reading a request head; the retry goes to
    # the second, which must get the head and then the whole body again, not the head alone
    bad = Upstream("bad")
    try:
        import httpx
        assert httpx.get(bad.url + "/set-reset/1", timeout=10).status_code == 200
        good = recording_upstream()
        g = gateway(f"""\
access_log: {{path: 'off'}}
upstreams:
  api:
    targets: [{bad.url}, {good.url}]
    retries: 1
    first_byte_timeout_ms: 3000
    passive: {{max_failures: 0}}
routes:
  - path: /{{proxy+}}
    integration: {{type: http, upstream: api}}
""")
        body = b"0123456789" * 1000
        with httpx.Client(timeout=15) as c:
            for i in range(4):      # round robin: half of them start on the bad target
                r = c.put(f"{g.url}/put/{i}", content=body)
                assert r.status_code == 200, (i, r.status_code, r.text)
                assert r.json()["body_len"] == len(body), (i, r.json())
        assert not good.events("error")
    finally:
        bad.stop()


def test_bytes_after_an_upgrade_request_wait_for_the_upgrade(gateway, recording_upstream):
    # a client that sends WebSocket frames right behind its upgrade request: nothing of them
    # reaches the upstream before (or, when the upstream declines the upgrade, after) the head
    import socket
    rec = recording_upstream()
    g = gateway(f"""\
access_log: {{path: 'off'}}
upstreams:
  api:
    targets: [{rec.url}]
    keepalive: 0
routes:
  - path: /{{proxy+}}
    integration: {{type: http, upstream: api}}
""")
    for i in range(10):
        with socket.create_connection(("127.0.0.1", g.port), timeout=10) as s:
            s.sendall(b"GET /ws/%d HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                      b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                      b"\x81\x05early" % i)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
    reqs = wait_until(lambda: (lambda r: r if len(r) == 10 else None)(rec.events("request")))
    assert [e["target"] for e in reqs] == [f"/ws/{i}" for i in range(10)]
    assert not rec.events("error")
