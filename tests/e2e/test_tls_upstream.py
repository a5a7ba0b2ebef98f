"""An https upstream end to end: a self-signed certificate made at test time, the test
upstream in TLS mode, proxying with tls_verify off (bodies both ways, keep-alive reuse of
the TLS connection), the 502 a verifying gateway gives, and active health checks over TLS."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
import time
from pathlib import Path

import httpx
import pytest

from conftest import PYTHON, UPSTREAM, Gateway, Proc, free_port, wait_port, wait_until


def make_cert(directory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (CN and IP SAN); (cert path, key path)."""
    import datetime
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    cert, key = directory / "cert.pem", directory / "key.pem"
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    c = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(k.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(hours=1))
         .not_valid_after(now + datetime.timedelta(days=2))
         .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                        critical=False)
         .sign(k, hashes.SHA256()))
    cert.write_bytes(c.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(cert), str(key)


class TlsUpstream:
    """tests/upstream_server.py in TLS mode on a free loopback port."""

    def __init__(self, cert: str, key: str, name: str = "tls1"):
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.p = Proc([PYTHON, str(UPSTREAM), str(self.port), name, cert, key])
        wait_port(self.port, self.p.proc)

    def get(self, path: str) -> tuple[int, bytes]:
        """Straight to the upstream (not through the gateway), certificate unchecked."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=5, context=ctx)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stop(self):
        self.p.stop()


@pytest.fixture(scope="module")
def tls_up(tmp_path_factory):
    cert, key = make_cert(tmp_path_factory.mktemp("cert"))
    u = TlsUpstream(cert, key)
    yield u
    u.stop()


def config(url: str, health_check: str = "null", log: Path | None = None) -> str:
    access_log = "{path: 'off'}" if log is None else \
        f"{{path: '{log}', format: '$context.path $context.status $context.error.message'}}"
    return f"""\
        access_log: {access_log}
        upstreams:
          insecure:
            targets: [{url}]
            tls_verify: false
            health_check: {health_check}
          strict:
            targets: [{url}]
            retries: 0
            health_check: {health_check}
        routes:
          - path: /strict/{{proxy+}}
            strip_prefix: /strict
            integration: {{type: http, upstream: strict}}
          - path: /{{proxy+}}
            integration: {{type: http, upstream: insecure}}
        """


@pytest.fixture(scope="module")
def gw(tls_up, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    g = Gateway(tmp, config(tls_up.url, log=tmp / "access.log"))
    g.log = tmp / "access.log"
    yield g
    g.stop()


def test_the_upstream_really_speaks_tls(tls_up):
    # plain HTTP to it gets no HTTP response: what the gateway talks to below is TLS
    with socket.create_connection(("127.0.0.1", tls_up.port), timeout=5) as s:
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b""
    assert not data.startswith(b"HTTP/"), data
    assert tls_up.get("/name") == (200, b"tls1")


def test_tls_verify_false_proxies_get_and_post(gw, tls_up):
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        r = c.get("/echo/a?x=1", headers={"X-Probe": "p"})
        assert r.status_code == 200
        e = r.json()
        assert (e["method"], e["path"], e["query"]) == ("GET", "/echo/a", "x=1")
        hs = [(k.lower(), v) for k, v in e["headers"]]
        assert ("x-probe", "p") in hs
        assert ("host", f"127.0.0.1:{tls_up.port}") in hs
        assert ("x-forwarded-proto", "http") in hs   # the client side was plain HTTP
        assert r.headers["x-upstream"] == "tls1"

        body = bytes(range(256)) * 4096   # 1 MiB
        r = c.post("/echo/upload", content=body)
        e = r.json()
        assert (r.status_code, e["method"], e["body_size"]) == (200, "POST", len(body))
        assert e["body_sha256"] == hashlib.sha256(body).hexdigest()

        # a chunked upload and a large download cross TLS intact too
        r = c.post("/echo/chunked", content=iter([b"abc", b"x" * 100000, b"end"]))
        e = r.json()
        assert [v for k, v in e["headers"] if k.lower() == "transfer-encoding"] == ["chunked"]
        assert e["body_size"] == 100006
        r = c.get("/bytes/2000000")
        assert r.status_code == 200
        assert r.content == (bytes(range(256)) * 7813)[:2000000]


def test_tls_connection_to_the_upstream_is_reused(gw, tls_up):
    _, before = tls_up.get("/stats")
    with httpx.Client(base_url=gw.url, timeout=10) as c:
        peers = [c.get("/conn").text for _ in range(5)]
    # the gateway's side of the upstream connection (its port) is the same every time
    assert len(set(peers)) == 1 and peers[0].startswith("tls1:"), peers
    _, after = tls_up.get("/stats")
    before, after = json.loads(before), json.loads(after)
    # 5 proxied requests plus this test's own /stats; the proxied ones opened no new connection
    assert after["requests"] - before["requests"] == 6
    assert after["connections"] - before["connections"] <= 2   # the direct /stats connection


def test_tls_verify_true_rejects_a_self_signed_upstream(gw, tls_up):
    r = httpx.get(gw.url + "/strict/echo", timeout=10)
    assert r.status_code == 502
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"message": "Internal server error"}
    # why is for the log (AWS's body is the message alone)
    line = wait_until(lambda: next((x for x in gw.log.read_text().splitlines()
                                    if x.startswith("/strict/echo ")), None) if gw.log.exists() else None)
    prefix = f"/strict/echo 502 upstream 127.0.0.1:{tls_up.port}: connect failed: "
    assert line.startswith(prefix), line
    assert "CERTIFICATE_VERIFY_FAILED" in line, line
    # the same upstream is fine through the non-verifying group at the same moment
    assert httpx.get(gw.url + "/name", timeout=10).text == "tls1"


def metric(admin_port: int, name: str, **labels) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{admin_port}/metrics", timeout=5).text
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_active_health_check_over_tls(tls_up, tmp_path):
    g = Gateway(tmp_path, config(tls_up.url, "{path: /health, interval_ms: 200, timeout_ms: 200, "
                                             "healthy_threshold: 1, unhealthy_threshold: 2}"))
    try:
        def healthy(upstream):
            return metric(g.admin_port, "fastgate_upstream_healthy", upstream=upstream,
                          target=tls_up.url)
        assert healthy("insecure") == 1 and healthy("strict") == 1   # optimistic at start
        # the verifying checker fails the TLS handshake: proof that checks run and use TLS
        wait_until(lambda: healthy("strict") == 0, timeout=8)
        # workers copy the verdict every 0.5 s; until then the request itself fails verification
        r = wait_until(lambda: (lambda r: r.status_code == 503 and r)(
            httpx.get(g.url + "/strict/echo", timeout=10)), timeout=3)
        assert r.json() == {"message": "Service Unavailable"}
        # the non-verifying one stays healthy over several intervals
        _, s0 = tls_up.get("/stats")
        for _ in range(8):
            assert healthy("insecure") == 1
            time.sleep(0.1)
        _, s1 = tls_up.get("/stats")
        assert json.loads(s1)["requests"] - json.loads(s0)["requests"] >= 3   # probes arrived
        assert httpx.get(g.url + "/name", timeout=10).text == "tls1"
        # and it really reads the status over TLS: a failing /health takes the target out ...
        assert tls_up.get("/set-health/500")[0] == 200
        wait_until(lambda: healthy("insecure") == 0, timeout=8)
        wait_until(lambda: httpx.get(g.url + "/name", timeout=10).status_code == 503, timeout=3)
        # ... and a passing one brings it back
        assert tls_up.get("/set-health/200")[0] == 200
        wait_until(lambda: healthy("insecure") == 1, timeout=8)
        wait_until(lambda: httpx.get(g.url + "/name", timeout=10).text == "tls1", timeout=3)
        assert healthy("strict") == 0
    finally:
        tls_up.get("/set-health/200")
        g.stop()
