"""The control API in a real `fastgate serve`: boto3 against the admin listener, state in
FASTGATE_DATA_DIR, and a mutation that makes the supervisor reload."""

from __future__ import annotations

import os
import time

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import Gateway

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
