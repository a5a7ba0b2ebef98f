"""TLS on fastgate's listeners, end to end: a trustme CA and certificates made in the
test, a listener with a default certificate, custom domains with their own chosen by
SNI (exact and wildcard), mutual TLS with a truststore, and a domain created through
the control API (boto3) served with its certificate after the reload."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl

import boto3
import httpx
import pytest
import trustme
from botocore.config import Config
from cryptography import x509

from conftest import Gateway, read_response, wait_until

KEY, SECRET = "AKIDE2ETLS", "e2e-tls-secret"


def api_doc(upstream_port: int) -> dict:
    """Everything to the upstream's /echo, with the client certificate's subject mapped
    to a header the AWS way (requestParameters from context.identity.clientCert.*)."""
    return {
        "openapi": "3.0.1",
        "info": {"title": "TlsApi", "version": "1.0"},
        "paths": {"/{proxy+}": {"x-amazon-apigateway-any-method": {
            "parameters": [{"name": "proxy", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "x-amazon-apigateway-integration": {
                "type": "http_proxy", "httpMethod": "ANY",
                "uri": f"http://127.0.0.1:{upstream_port}/echo/{{proxy}}",
                "requestParameters": {
                    "integration.request.path.proxy": "method.request.path.proxy",
                    "integration.request.header.X-Mapped-Subject":
                        "context.identity.clientCert.subjectDN",
                    "integration.request.header.X-Mapped-Not-After":
                        "context.identity.clientCert.validity.notAfter",
                }}}}},
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """The server CA with a certificate per name, and a client CA with a client
    certificate; another CA's client certificate that no truststore holds."""
    d = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, rogue_ca = trustme.CA(), trustme.CA(), trustme.CA()
    for name, hosts in (("default", ["default.test"]), ("one", ["one.test"]),
                        ("two", ["*.two.test"]), ("mtls", ["mtls.test"])):
        cert = server_ca.issue_cert(*hosts)
        cert.private_key_pem.write_to_path(str(d / f"{name}.key"))
        # the leaf then its chain, in one file
        (d / f"{name}.pem").write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    server_ca.cert_pem.write_to_path(str(d / "server-ca.pem"))
    # one SAN identity each: cryptography 51 refuses the empty SAN list of a CN-only trustme cert
    good = client_ca.issue_cert("alice@example.com", common_name="alice", organization_name="Example Corp")
    bad = rogue_ca.issue_cert("mallory@example.com", common_name="mallory")
    for name, cert in (("alice", good), ("mallory", bad)):
        cert.private_key_and_cert_chain_pem.write_to_path(str(d / f"{name}-client.pem"))
    return d


@pytest.fixture(scope="module")
def tls_gateway(pki, up):
    (pki / "api.json").write_text(json.dumps(api_doc(up.port)))
    g = Gateway(pki, f"""\
        access_log: {{path: off}}
        apis:
          - openapi: api.json
            id: tlsapi01
            stages: {{prod: {{}}}}
        routes:
          - path: /{{proxy+}}
            integration: {{type: http, url: "http://127.0.0.1:{up.port}"}}
        domains:
          - name: one.test
            certificate: one.pem
            key: one.key
            mappings: [{{api: tlsapi01, stage: prod}}]
          - name: "*.two.test"
            certificate: two.pem
            key: two.key
            mappings: [{{api: tlsapi01, stage: prod}}]
          - name: mtls.test
            certificate: mtls.pem
            key: mtls.key
            truststore: client-ca.pem
            mappings: [{{api: tlsapi01, stage: prod}}]
        """, listener="tls: {certificate: default.pem, key: default.key}")
    yield g
    g.stop()


def client_context(pki, cert: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "server-ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(pki / f"{cert}-client.pem"))
    return ctx


def peer_names(port: int, ctx: ssl.SSLContext, server_name: str | None) -> list[str]:
    """DNS names in the SAN of the certificate the gateway presents for server_name
    (ctx decides whether it is verified too)."""
    if server_name is None:
        ctx.check_hostname = False
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            assert s.version() in ("TLSv1.2", "TLSv1.3")
            assert s.selected_alpn_protocol() == "http/1.1"
            cert = x509.load_der_x509_certificate(s.getpeercert(binary_form=True))
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def unverified() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https(g: Gateway, pki, host: str, path: str, *, cert: str | None = None,
          method: str = "GET", content: bytes | None = None) -> httpx.Response:
    """A request to host over TLS with SNI = host, whatever 127.0.0.1 resolves to."""
    with httpx.Client(verify=client_context(pki, cert), timeout=10) as c:
        return c.request(method, f"https://127.0.0.1:{g.port}{path}", content=content,
                         headers={"Host": host}, extensions={"sni_hostname": host})


def seen(resp: httpx.Response) -> dict:
    """What the upstream's /echo says it received; headers by lowercase name."""
    data = resp.json()
    data["h"] = {k.lower(): v for k, v in data["headers"]}
    return data


def test_sni_picks_each_domains_certificate(tls_gateway, pki):
    port = tls_gateway.port
    assert peer_names(port, client_context(pki), "one.test") == ["one.test"]
    assert peer_names(port, client_context(pki), "a.two.test") == ["*.two.test"]
    assert peer_names(port, client_context(pki), "mtls.test") == ["mtls.test"]
    # a name no domain has, and no SNI at all: the listener's own certificate
    assert peer_names(port, unverified(), "unknown.test") == ["default.test"]
    assert peer_names(port, client_context(pki), None) == ["default.test"]
    # the wildcard covers one level, as certificates do
    assert peer_names(port, unverified(), "a.b.two.test") == ["default.test"]


def test_https_through_a_domain_with_forwarded_proto(tls_gateway, pki):
    r = https(tls_gateway, pki, "one.test", "/hello?x=1")
    assert r.status_code == 200
    got = seen(r)
    assert got["path"] == "/echo/hello"
    assert got["h"]["x-forwarded-proto"] == "https"
    assert got["h"]["x-forwarded-host"] == "one.test"
    # no certificate on this connection: no certificate headers, the mapped ones empty
    assert not any(k.startswith("x-client-cert-") for k in got["h"])
    assert got["h"].get("x-mapped-subject", "") == ""
    # the default certificate's listener serves the top-level routes too
    r = https(tls_gateway, pki, "default.test", "/echo/top")
    assert seen(r)["h"]["x-forwarded-proto"] == "https"


def test_mtls_accepts_a_trusted_client_certificate(tls_gateway, pki):
    r = https(tls_gateway, pki, "mtls.test", "/who", cert="alice",
              content=b"x", method="POST")
    assert r.status_code == 200, r.text
    h = seen(r)["h"]
    alice = x509.load_pem_x509_certificate((pki / "alice-client.pem").read_bytes())
    assert h["x-client-cert-subject-dn"] == alice.subject.rfc4514_string()
    assert h["x-client-cert-subject-dn"].startswith("CN=alice,")
    assert h["x-client-cert-issuer-dn"] == alice.issuer.rfc4514_string()
    assert h["x-client-cert-not-before"] == alice.not_valid_before_utc.strftime("%b %e %H:%M:%S %Y GMT")
    assert h["x-client-cert-not-after"] == alice.not_valid_after_utc.strftime("%b %e %H:%M:%S %Y GMT")
    assert h["x-client-cert-serial-number"] == ":".join(
        f"{b:02x}" for b in alice.serial_number.to_bytes((alice.serial_number.bit_length() + 7) // 8, "big"))
    # $context.identity.clientCert.* through an AWS requestParameters mapping
    assert h["x-mapped-subject"] == h["x-client-cert-subject-dn"]
    assert h["x-mapped-not-after"] == h["x-client-cert-not-after"]


def test_client_certificate_headers_cannot_be_forged(tls_gateway, pki):
    with httpx.Client(verify=client_context(pki), timeout=10) as c:
        r = c.get(f"https://127.0.0.1:{tls_gateway.port}/echo/x",
                  headers={"Host": "one.test", "X-Client-Cert-Subject-DN": "CN=admin",
                           "x-client-cert-issuer-dn": "CN=root"},
                  extensions={"sni_hostname": "one.test"})
    assert not any(k.startswith("x-client-cert-") for k in seen(r)["h"])


def test_mtls_without_a_certificate_is_forbidden(tls_gateway, pki):
    # AWS answers 403 Forbidden when no trusted certificate was presented
    r = https(tls_gateway, pki, "mtls.test", "/who")
    assert r.status_code == 403
    assert r.json() == {"message": "Forbidden"}
    # a certificate verified for another name does not open this one (SNI one.test,
    # Host mtls.test): the certificate must have been checked by mtls.test's truststore
    with httpx.Client(verify=client_context(pki), timeout=10) as c:
        r = c.get(f"https://127.0.0.1:{tls_gateway.port}/who",
                  headers={"Host": "mtls.test"}, extensions={"sni_hostname": "one.test"})
    assert r.status_code == 403


def test_mtls_refuses_a_certificate_from_another_ca(tls_gateway, pki):
    # the certificate does not chain to the truststore: the handshake fails (TLS 1.3
    # reports it on the first read, after the client's side of the handshake is done)
    with pytest.raises((ssl.SSLError, httpx.ConnectError, httpx.ReadError,
                        httpx.RemoteProtocolError)):
        https(tls_gateway, pki, "mtls.test", "/who", cert="mallory")


def test_keepalive_and_large_bodies_over_tls(tls_gateway, pki):
    body = os.urandom(1 << 20)
    ctx = client_context(pki)
    # the listener's own name: top-level routes, the path passed as it is
    with socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="default.test") as s:
            f = s.makefile("rb")
            s.sendall(b"POST /echo/up HTTP/1.1\r\nHost: default.test\r\nContent-Length: %d\r\n\r\n"
                      % len(body) + body)
            r1 = read_response(f)
            assert r1.status == 200
            got = json.loads(r1.body)
            assert got["body_size"] == len(body)
            assert got["body_sha256"] == hashlib.sha256(body).hexdigest()
            s.sendall(b"GET /bytes/1048576 HTTP/1.1\r\nHost: default.test\r\n\r\n")
            r2 = read_response(f)     # the same TLS connection: keep-alive works
            assert r2.status == 200 and len(r2.body) == 1 << 20


def test_control_api_domain_is_served_with_its_certificate(tmp_path, pki, monkeypatch):
    monkeypatch.setenv("FASTGATE_ADMIN_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("FASTGATE_ADMIN_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("FASTGATE_DATA_DIR", str(tmp_path / "data"))
    for f in ("default.pem", "default.key"):
        (tmp_path / f).write_bytes((pki / f).read_bytes())
    g = Gateway(tmp_path, """\
        access_log: {path: off}
        routes:
          - path: /hello
            integration: {type: mock, body: hello}
        """, listener="tls: {certificate: default.pem, key: default.key}")
    try:
        assert peer_names(g.port, unverified(), "api.ctl.test") == ["default.test"]
        # an intermediate CA, so certificateChain is exercised too
        root = trustme.CA()
        cert = root.create_child_ca().issue_cert("api.ctl.test")
        leaf, *chain = [b.bytes().decode() for b in cert.cert_chain_pems]
        assert chain
        c = boto3.client("apigateway", endpoint_url=f"http://127.0.0.1:{g.admin_port}",
                         region_name="us-east-1", aws_access_key_id=KEY,
                         aws_secret_access_key=SECRET, config=Config(retries={"max_attempts": 1}))
        c.create_domain_name(domainName="api.ctl.test", certificateName="ctl",
                             certificateBody=leaf,
                             certificatePrivateKey=cert.private_key_pem.bytes().decode(),
                             certificateChain="".join(chain))
        # the supervisor reloads after the mutation; the workers' SNI then finds the domain
        wait_until(lambda: peer_names(g.port, unverified(), "api.ctl.test") == ["api.ctl.test"],
                   timeout=15, step=0.2)
        ctx = ssl.create_default_context()
        root.configure_trust(ctx)      # verifies only with the chain the gateway sends
        assert peer_names(g.port, ctx, "api.ctl.test") == ["api.ctl.test"]
        with httpx.Client(verify=ctx, timeout=10) as hc:
            r = hc.get(f"https://127.0.0.1:{g.port}/hello", headers={"Host": "api.ctl.test"},
                       extensions={"sni_hostname": "api.ctl.test"})
        assert r.status_code == 200 and r.text == "hello"
    finally:
        g.stop()
