"""fastgate.compile.tls: server contexts, SNI selection against the current TLSState, mutual TLS
and the ClientCert read from a connection, DomainName documents -> TLSState, and the
config checks of listener and domain certificates. Handshakes run in memory (MemoryBIO
pairs) between real OpenSSL contexts; tests/e2e/test_tls_listener.py does it over sockets."""

from __future__ import annotations

import ssl
import textwrap
import warnings

import pytest
import trustme
from cryptography import x509

from fastgate.control.state import State, config_state
from fastgate.compile.config import ConfigError, load_config
from fastgate.compile.tls import (
    DomainTLS, ListenerTLS, TLSError, TLSState, build_tls_state, check_key_pair, client_cert_of,
    dn_string, server_context,
)
from fastgate._core.headers import Template
from fastgate._core.pipeline import RequestContext


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def client_ca():
    return trustme.CA()


def pems(cert) -> tuple[bytes, bytes]:
    """(leaf + chain PEM, key PEM) of a trustme LeafCert."""
    return b"".join(b.bytes() for b in cert.cert_chain_pems), cert.private_key_pem.bytes()


def context_for(ca, *names, truststore: bytes | None = None, required: bool = True):
    cert, key = pems(ca.issue_cert(*names))
    return server_context(cert, key, truststore_pem=truststore, mtls_required=required)


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_name: str | None):
    """Run a TLS handshake in memory; (server SSLObject, client SSLObject). Raises the
    SSLError of whichever side fails."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for side, obj in (("c", client), ("s", server)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done["c"] and done["s"]:
            # TLS 1.3: the server's verdict on the client certificate reaches the client late
            client.write(b"x")
            s_in.write(c_out.read())
            server.read(1)
            return server, client
    raise AssertionError("handshake did not finish")


def peer_dns(client: ssl.SSLObject) -> list[str]:
    cert = x509.load_der_x509_certificate(client.getpeercert(binary_form=True))
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def client_ctx(ca, cert=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if cert is not None:
        cert.configure_cert(ctx)
    return ctx


# --- contexts ------------------------------------------------------------------------

def test_server_context_defaults(ca):
    ctx = context_for(ca, "a.test")
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.verify_mode == ssl.CERT_NONE
    old = client_ctx(ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")   # so the client really offers TLS 1.1
    with pytest.raises(ssl.SSLError) as e:
        handshake(ctx, old, "a.test")
    assert "UNSUPPORTED_PROTOCOL" in str(e.value) or "PROTOCOL_VERSION" in str(e.value), e.value
    c = client_ctx(ca)
    c.set_alpn_protocols(["h2", "http/1.1"])
    server, client = handshake(ctx, c, "a.test")
    assert client.selected_alpn_protocol() == "http/1.1"
    assert server.compression() is None


def test_server_context_sends_the_chain(ca):
    child = ca.create_child_ca()
    cert, key = pems(child.issue_cert("chain.test"))
    _, client = handshake(server_context(cert, key), client_ctx(ca), "chain.test")
    assert peer_dns(client) == ["chain.test"]     # verified to the root: the intermediate was sent


def test_key_pair_errors_name_the_field(ca):
    a_cert, a_key = pems(ca.issue_cert("a.test"))
    _, b_key = pems(ca.issue_cert("b.test"))
    with pytest.raises(TLSError) as e:
        check_key_pair(a_cert, b_key)
    assert e.value.field == "key" and "does not match" in str(e.value)
    with pytest.raises(TLSError) as e:
        check_key_pair(b"not a pem", a_key)
    assert e.value.field == "certificate"
    with pytest.raises(TLSError) as e:
        check_key_pair(a_cert, a_cert)
    assert e.value.field == "key"
    with pytest.raises(TLSError) as e:
        server_context(a_cert, a_key, truststore_pem=b"junk")
    assert e.value.field == "truststore"


# --- SNI -------------------------------------------------------------------------------

def test_lookup_exact_then_one_level_wildcard(ca):
    exact = DomainTLS("api.example.com", context_for(ca, "api.example.com"), None, False)
    wild = DomainTLS("*.example.com", context_for(ca, "*.example.com"), None, False)
    state = TLSState([exact, wild])
    assert state.lookup("api.example.com") is exact
    assert state.lookup("API.Example.COM.") is exact
    assert state.lookup("www.example.com") is wild
    assert state.lookup("a.b.example.com") is None
    assert state.lookup("example.com") is None
    assert state.mtls_hosts == {}


def test_listener_switches_to_the_domain_of_the_current_state(ca):
    current = {"state": None}
    listener = ListenerTLS(context_for(ca, "default.test"), lambda: current["state"])
    _, client = handshake(listener.context, client_ctx(ca), "default.test")
    assert peer_dns(client) == ["default.test"]
    # a reload publishes a state with the domain: the next handshake uses it, same listener
    current["state"] = TLSState([DomainTLS("one.test", context_for(ca, "one.test"), None, False)])
    _, client = handshake(listener.context, client_ctx(ca), "one.test")
    assert peer_dns(client) == ["one.test"]
    nocheck = client_ctx(ca)
    nocheck.check_hostname = False
    _, client = handshake(listener.context, nocheck, "other.test")
    assert peer_dns(client) == ["default.test"]
    _, client = handshake(listener.context, nocheck, None)
    assert peer_dns(client) == ["default.test"]


# --- mutual TLS ----------------------------------------------------------------------

def mtls_listener(ca, client_ca, required=True):
    trust = client_ca.cert_pem.bytes()
    dom = DomainTLS("m.test", context_for(ca, "m.test", truststore=trust, required=required),
                    trust, required)
    plain = DomainTLS("p.test", context_for(ca, "p.test"), None, False)
    state = TLSState([dom, plain])
    return ListenerTLS(context_for(ca, "default.test"), lambda: state), state


def test_client_certificates_are_requested_only_with_a_truststore(ca, client_ca):
    listener, state = mtls_listener(ca, client_ca)
    assert listener.context.verify_mode == ssl.CERT_OPTIONAL
    assert state.mtls_hosts == {b"m.test": b"m.test"}
    plain = ListenerTLS(context_for(ca, "default.test"), lambda: TLSState([]))
    assert plain.context.verify_mode == ssl.CERT_NONE
    _, optional = mtls_listener(ca, client_ca, required=False)
    assert optional.mtls_hosts == {}      # verified when sent, never demanded


def test_client_cert_of_a_trusted_certificate(ca, client_ca):
    listener, _ = mtls_listener(ca, client_ca)
    # one SAN identity: cryptography 51 refuses the empty SAN list of a CN-only trustme cert
    alice = client_ca.issue_cert("alice@example.com", common_name="alice", organization_name="Example, Inc.")
    server, _ = handshake(listener.context, client_ctx(ca, alice), "m.test")
    cert = client_cert_of(server)
    oracle = x509.load_pem_x509_certificate(alice.cert_chain_pems[0].bytes())
    assert cert.domain == b"m.test"
    assert cert.subject_dn == oracle.subject.rfc4514_string().encode()
    assert b"O=Example\\, Inc." in cert.subject_dn      # RFC 4514 escaping
    assert cert.issuer_dn == oracle.issuer.rfc4514_string().encode()
    assert cert.serial_number == ":".join(
        f"{b:02x}" for b in oracle.serial_number.to_bytes(
            (oracle.serial_number.bit_length() + 7) // 8, "big")).encode()
    assert cert.not_after == oracle.not_valid_after_utc.strftime("%b %e %H:%M:%S %Y GMT").encode()
    assert cert.pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert cert.headers.startswith(b"X-Client-Cert-Subject-DN: " + cert.subject_dn + b"\r\n")
    assert cert.headers.count(b"\r\n") == 5


def test_no_certificate_or_another_ca(ca, client_ca):
    listener, _ = mtls_listener(ca, client_ca)
    server, _ = handshake(listener.context, client_ctx(ca), "m.test")
    assert client_cert_of(server) is None                 # the protocol answers 403
    rogue = trustme.CA().issue_cert("mallory@example.com", common_name="mallory")
    with pytest.raises(ssl.SSLError):
        handshake(listener.context, client_ctx(ca, rogue), "m.test")
    # a domain without a truststore never yields a certificate
    server, _ = handshake(listener.context, client_ctx(ca), "p.test")
    assert client_cert_of(server) is None


def test_dn_string_orders_and_escapes():
    rdns = ((("countryName", "US"),), (("organizationName", "A+B"),),
            (("commonName", " lead"), ("userId", "u1")))
    assert dn_string(rdns) == "CN=\\ lead+UID=u1,O=A\\+B,C=US"


def test_client_cert_template_variables():
    ctx = RequestContext()
    t = Template("$context.identity.clientCert.subjectDN|"
                 "${context.identity.clientCert.validity.notBefore}|"
                 "$context.identity.clientCert.serialNumber")
    assert t.render(ctx) == b"||"
    from fastgate.compile.tls import ClientCert
    ctx.client_cert = ClientCert(b"m.test", b"CN=a", b"CN=ca", b"0a:ff", b"Jan  1 00:00:00 2030 GMT",
                                 b"Jan  1 00:00:00 2031 GMT", b"PEM", b"")
    assert t.render(ctx) == b"CN=a|Jan  1 00:00:00 2030 GMT|0a:ff"
    assert Template("$context.identity.clientCert.issuerDN").render(ctx) == b"CN=ca"
    assert Template("$context.identity.clientCert.validity.notAfter").render(ctx) == \
        b"Jan  1 00:00:00 2031 GMT"


# --- DomainName documents -> TLSState ------------------------------------------------------

def test_build_tls_state_from_domain_documents(ca, client_ca, tmp_path):
    cert, key = pems(ca.issue_cert("a.test"))
    (tmp_path / "trust.pem").write_bytes(client_ca.cert_pem.bytes())
    state = State()
    state.domains["a.test"] = {"domainName": "a.test", "_certificateBody": cert.decode(),
                               "_certificatePrivateKey": key.decode(),
                               "mutualTlsAuthentication": {"truststoreUri": f"file://{tmp_path}/trust.pem"}}
    state.domains["bad.test"] = {"domainName": "bad.test", "_certificateBody": cert.decode(),
                                 "_certificatePrivateKey": pems(ca.issue_cert("x"))[1].decode()}
    state.domains["none.test"] = {"domainName": "none.test"}
    warnings = []
    tls = build_tls_state(state, warnings.append)
    assert tls.lookup("a.test").truststore == client_ca.cert_pem.bytes()
    assert tls.lookup("bad.test") is None and tls.lookup("none.test") is None
    assert len(warnings) == 1 and "bad.test" in warnings[0] and "does not match" in warnings[0]
    assert tls.mtls_hosts == {b"a.test": b"a.test"}
    assert build_tls_state(State()) is None


# --- config -------------------------------------------------------------------------------

def write(tmp_path, text: str):
    p = tmp_path / "gw.yaml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(p)


@pytest.fixture
def files(tmp_path, ca, client_ca):
    for name in ("a", "b"):
        cert, key = pems(ca.issue_cert(f"{name}.test"))
        (tmp_path / f"{name}.pem").write_bytes(cert)
        (tmp_path / f"{name}.key").write_bytes(key)
    (tmp_path / "trust.pem").write_bytes(client_ca.cert_pem.bytes())
    (tmp_path / "api.json").write_text('{"openapi": "3.0.1", "info": {"title": "t", "version": "1"}, "paths": {}}')
    return tmp_path


def config_error(path) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return e.value


def test_listener_tls_loads_relative_to_the_config(files):
    loaded = load_config(write(files, """
        listeners:
          - address: 127.0.0.1:8443
            tls: {certificate: a.pem, key: a.key}
        """))
    assert loaded.config.listeners[0].tls.certificate == "a.pem"


def test_listener_key_that_does_not_match(files):
    e = config_error(write(files, """
        listeners:
          - address: 127.0.0.1:8443
            tls:
              certificate: a.pem
              key: b.key
        """))
    assert e.path == ("listeners", 0, "tls", "key") and e.line == 5
    assert "key b.key does not match certificate a.pem" in e.message


def test_listener_missing_file(files):
    e = config_error(write(files, """
        listeners:
          - address: 127.0.0.1:8443
            tls: {certificate: nope.pem, key: a.key}
        """))
    assert e.path == ("listeners", 0, "tls", "certificate") and e.line == 3
    assert "cannot read" in e.message and "nope.pem" in e.message


DOMAIN = """
    listeners:
      - address: 127.0.0.1:8443
    apis:
      - openapi: api.json
        id: api1
        stages: {{prod: {{}}}}
    domains:
      - name: a.test
        mappings: [{{api: api1, stage: prod}}]
        {extra}
    """


def test_domain_certificate_errors(files):
    e = config_error(write(files, DOMAIN.format(extra="certificate: a.pem")))
    assert e.path == ("domains", 0, "key") and "go together" in e.message
    e = config_error(write(files, DOMAIN.format(extra="truststore: trust.pem")))
    assert e.path == ("domains", 0, "truststore") and e.line == 10
    e = config_error(write(files, DOMAIN.format(
        extra="certificate: a.pem\n        key: a.key\n        truststore: a.key")))
    assert e.path == ("domains", 0, "truststore") and e.line == 12
    assert "not a PEM certificate" in e.message


def test_domain_certificates_reach_the_state(files):
    loaded = load_config(write(files, DOMAIN.format(
        extra="certificate: a.pem\n        key: a.key\n        truststore: trust.pem\n"
              "        mtls_required: false")))
    state = config_state(loaded)
    doc = state.domains["a.test"]
    assert doc["_certificateBody"] == (files / "a.pem").read_text()
    assert doc["mutualTlsAuthentication"]["truststoreUri"] == str(files / "trust.pem")
    tls = build_tls_state(state)
    assert tls.lookup("a.test").truststore is not None and tls.mtls_hosts == {}
