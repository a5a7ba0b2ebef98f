"""The control API in a real `fastgate serve`: boto3 against the admin listener, state in
FASTGATE_DATA_DIR, and a mutation that makes the supervisor reload."""

from __future__ import annotations

import os
import time

import boto3
import httpx
import orjson
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Gateway
from tests.signed_head import read_answer, signed_head

KEY, SECRET = "AKIDE2E", "e2e-secret"
CONFIG = """\
access_log: {path: 'off'}
routes:
  - path: /hello
    integration: {type: mock, body: hello}
"""


class Log:
    """Reads a Gateway's combined output as it comes, without stopping it."""

    def __init__(self, g: Gateway):
        self.fd = g.p.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.text = ""

    def wait_for(self, needle: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in self.text:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                chunk = b""
            self.text += chunk.decode(errors="replace")
            if needle in self.text:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the log:\n{self.text}")
            time.sleep(0.05)
        return self.text


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTGATE_ADMIN_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("FASTGATE_ADMIN_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("FASTGATE_DATA_DIR", str(tmp_path / "data"))
    return tmp_path


def client(g: Gateway, secret: str = SECRET):
    return boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                        region_name="us-east-1", aws_access_key_id=KEY, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def test_boto3_against_fastgate_serve(env):
    g = Gateway(env, CONFIG)
    try:
        log = Log(g)
        admin = f"http://127.0.0.1:{g.admin_port}"
        assert httpx.get(f"{admin}/live").json() == {"status": "ok"}
        assert httpx.get(f"{admin}/ready").json()["status"] == "ok"
        assert "fastgate_" in httpx.get(f"{admin}/metrics").text      # the admin paths stay
        assert httpx.get(f"{admin}/restapis").status_code == 403     # unsigned
        with pytest.raises(ClientError) as e:
            client(g, secret="wrong").get_rest_apis()
        assert e.value.response["Error"]["Code"] == "InvalidSignatureException"

        c = client(g)
        api = c.create_rest_api(name="e2e")
        log.wait_for("config reloaded")      # the mutation made the supervisor reload
        assert c.get_rest_apis()["items"][0]["id"] == api["id"]
        assert httpx.get(f"{g.url}/hello").text == "hello"   # the data plane kept serving
        assert f"control API state in {env / 'data'}" in log.text
    finally:
        g.stop()
    assert (env / "data" / "fastgate.db").exists()

    g = Gateway(env, CONFIG)   # a restart on the same data dir comes back as it was
    try:
        assert client(g).get_rest_api(restApiId=api["id"])["name"] == "e2e"
    finally:
        g.stop()


def test_no_credentials_refuses(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTGATE_ADMIN_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("FASTGATE_ADMIN_SECRET_ACCESS_KEY", raising=False)
    monkeypatch.setenv("FASTGATE_DATA_DIR", str(tmp_path / "data"))
    g = Gateway(tmp_path, CONFIG)
    try:
        with pytest.raises(ClientError) as e:
            client(g).create_rest_api(name="x")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "FASTGATE_ADMIN_SECRET_ACCESS_KEY" in e.value.response["Error"]["Message"]
    finally:
        g.stop()


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, KiB, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    return out


def upload(port: int, head: bytes, size: int, deadline: float) -> tuple[int, dict, bytes]:
    """Send a head and up to `size` body bytes, stopping as soon as an answer is readable
    (as a client that watches its socket does); that answer."""
    import select
    import socket
    chunk = b"x" * (256 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        sent = 0
        while sent < size and time.monotonic() < deadline:
            if select.select([s], [], [], 0)[0]:
                break
            try:
                sent += s.send(chunk[:size - sent])
            except OSError:
                break
        return read_answer(s.makefile("rb"))


def test_unsigned_uploads_leave_the_admin_memory_bounded(env):
    """The issue: 40 concurrent unsigned 10 MB uploads took the admin from 43 MB to 587 MB
    RSS (561 MB stayed). Bodies are refused from their head now, and bodies read before
    their signature can be checked share a bounded budget."""
    from concurrent.futures import ThreadPoolExecutor
    g = Gateway(env, CONFIG)
    try:
        admin = f"http://127.0.0.1:{g.admin_port}"
        assert httpx.get(f"{admin}/restapis").status_code == 403      # opens the control API
        out = g.p.wait_output("control API state in")
        pid = int(out.split("fastgate-admin[", 1)[1].split("]", 1)[0])
        assert pid in g.p.children()
        client(g).create_rest_api(name="warm")       # the signed path has run once
        before = rss_kib(pid)["VmRSS"]
        size = 8 * 1024 * 1024
        unsigned = (b"PUT /restapis/abc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n" % size)
        # signed by the known access key (its id is no secret), with a wrong signature: the
        # body must be read before the signature can be checked
        forged = sigv4_head("PUT", "/restapis/abc", size, secret="not-the-secret")
        deadline = time.monotonic() + 120
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda head: upload(g.admin_port, head, size, deadline),
                                    [unsigned] * 40 + [forged] * 40))
        for status, headers, body in answers[:40]:
            assert (status, headers["x-amzn-errortype"]) == (403, "MissingAuthenticationTokenException")
            assert orjson.loads(body) == {"message": "Missing Authentication Token"}
        for status, headers, body in answers[40:]:
            # refused after its body, or while the budget of unverified bodies was full
            assert (status, headers["x-amzn-errortype"]) in (
                (403, "InvalidSignatureException"), (429, "TooManyRequestsException")), body
        assert any(status == 403 for status, _, _ in answers[40:])
        peak = rss_kib(pid)["VmHWM"]
        # 80 bodies of 8 MiB were 640 MiB; the budget lets 32 MiB of them be held at once
        assert peak - before < 160 * 1024, (before, peak)
        # an over-cap body is refused from its head too, AWS-shaped
        status, headers, body = upload(g.admin_port, sigv4_head("POST", "/restapis", 3 * size),
                                       3 * size, time.monotonic() + 30)
        assert (status, headers["x-amzn-errortype"]) == (413, "RequestTooLongException")
        assert "exceeds the limit" in orjson.loads(body)["message"]
        assert client(g).get_rest_apis()["items"][0]["name"] == "warm"   # still serving
    finally:
        g.stop()


def sigv4_head(method: str, path: str, length: int, secret: str = SECRET) -> bytes:
    return signed_head(method, path, length, KEY, secret)


def test_a_large_openapi_import_still_works(env):
    # ImportRestApi takes documents up to 10 MiB: a 3 MB one goes through boto3
    import json
    doc = {"openapi": "3.0.1", "info": {"title": "big", "version": "1", "description": "d" * 3_000_000},
           "paths": {"/pets": {"get": {"x-amazon-apigateway-integration": {
               "type": "mock", "requestTemplates": {"application/json": '{"statusCode": 200}'},
               "responses": {"default": {"statusCode": "200"}}}}}}}
    g = Gateway(env, CONFIG)
    try:
        api = client(g).import_rest_api(body=json.dumps(doc).encode())
        assert api["name"] == "big"
    finally:
        g.stop()
