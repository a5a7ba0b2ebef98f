"""TLS on the listeners: server SSLContexts, a certificate per custom domain chosen
by SNI, and mutual TLS with a truststore per domain.

Two lifetimes meet here:

  * a listener's SSLContext is fixed when the worker calls create_server: it holds
    the listener's own certificate (the default) and an SNI callback;
  * the custom domains' contexts belong to the snapshot (``Snapshot.tls``, a
    TLSState built by fastgate.compile.snapshot from the API state's DomainName documents).
    The SNI callback reads the worker's *current* snapshot, so a reload that adds or
    changes a domain certificate takes effect on the next handshake, no restart.

Mutual TLS. Python's ssl module cannot change a connection's verify mode from the
SNI callback (``SSLObject.context = ...`` swaps certificate and trust store, not
the mode fixed when the connection was created), so a listener requests a client
certificate (CERT_OPTIONAL) whenever any domain of the current snapshot has a
truststore. A presented certificate is verified against the truststore of the
domain SNI chose: one that does not chain to it fails the handshake. A request for
a domain that requires mutual TLS over a connection without a certificate verified
*for that domain* (no certificate, SNI naming another domain, a session resumed
from another domain) is answered 403 Forbidden, as Amazon API Gateway answers it.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["ClientCert", "DomainTLS", "ListenerTLS", "TLSError", "TLSState",
           "build_tls_state", "check_key_pair", "client_cert_of", "listener_tls_for",
           "server_context", "CLIENT_CERT_HEADER_PREFIX"]

ALPN = ["http/1.1"]                       # the only protocol the listeners speak
MIN_VERSION = ssl.TLSVersion.TLSv1_2      # AWS's TLS_1_2 security policy floor
CLIENT_CERT_HEADER_PREFIX = b"x-client-cert-"   # gateway-owned: incoming ones are dropped


class TLSError(ValueError):
    """A certificate, key or truststore that cannot be used; ``field`` names which."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# --- checking PEMs -----------------------------------------------------------------

def _certs(pem: bytes, field: str, what: str) -> list:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise TLSError(field, f"{what} is not a PEM certificate: {e}") from None
    if not certs:
        raise TLSError(field, f"{what} holds no PEM certificate")
    return certs


def check_key_pair(cert_pem: bytes, key_pem: bytes, cert_what: str = "the certificate",
                   key_what: str = "the key") -> x509.Certificate:
    """The leaf certificate of ``cert_pem`` (leaf first, then its chain); TLSError
    naming "certificate" or "key" when one does not parse or they do not belong together."""
    leaf = _certs(cert_pem, "certificate", cert_what)[0]
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise TLSError("key", f"{key_what} is not an unencrypted PEM private key: {e}") from None
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(der, spki) != leaf.public_key().public_bytes(der, spki):
        raise TLSError("key", f"{key_what} does not match {cert_what}")
    return leaf


def read_pem(path: str, field: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSError(field, f"cannot read {path}: {e.strerror or e}") from None


# --- contexts ----------------------------------------------------------------------

def server_context(cert_pem: bytes, key_pem: bytes, *, truststore_pem: bytes | None = None,
                   mtls_required: bool = True) -> ssl.SSLContext:
    """A server context with modern defaults: TLS 1.2+, ALPN http/1.1, no compression,
    no renegotiation. ``cert_pem``: leaf then chain. With ``truststore_pem``, client
    certificates are verified against it. TLSError when the PEMs are unusable."""
    check_key_pair(cert_pem, key_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MIN_VERSION
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(ALPN)
    # load_cert_chain reads files only: the PEMs pass through a private temporary file,
    # removed as soon as OpenSSL has read it
    fd, path = tempfile.mkstemp(prefix="fastgate-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem.rstrip(b"\n") + b"\n" + cert_pem)
        ctx.load_cert_chain(path)
    except ssl.SSLError as e:
        raise TLSError("certificate", f"OpenSSL refused the certificate and key: {e}") from None
    finally:
        os.unlink(path)
    if truststore_pem is not None:
        _certs(truststore_pem, "truststore", "the truststore")
        try:
            ctx.load_verify_locations(cadata=truststore_pem.decode("ascii", "replace"))
        except ssl.SSLError as e:
            raise TLSError("truststore", f"OpenSSL refused the truststore: {e}") from None
        # The handshake's verify mode is the listener's (see the module docstring); this
        # one decides whether getpeercert() decodes the certificate after the switch.
        ctx.verify_mode = ssl.CERT_REQUIRED if mtls_required else ssl.CERT_OPTIONAL
    return ctx


class DomainTLS:
    """One custom domain's certificate context and its mutual TLS settings."""

    __slots__ = ("name", "context", "truststore", "trusted_subjects", "mtls_required")

    def __init__(self, name: str, context: ssl.SSLContext, truststore: bytes | None,
                 mtls_required: bool):
        self.name = name                  # as configured: "api.example.com" | "*.example.com"
        self.context = context
        self.truststore = truststore      # PEM, or None: no client certificates
        self.mtls_required = mtls_required and truststore is not None
        # subjects of the truststore's certificates, in getpeercert()'s form: a resumed
        # session's client certificate is accepted only if one of them issued it
        self.trusted_subjects = frozenset(
            _name_tuple(c.subject) for c in _certs(truststore, "truststore", "the truststore")
        ) if truststore is not None else frozenset()


class TLSState:
    """The custom domains' TLS of one snapshot: SNI name -> DomainTLS, and which hosts
    demand a client certificate (read by the hot path as ``mtls_hosts``)."""

    def __init__(self, domains: list[DomainTLS]):
        self.exact: dict[str, DomainTLS] = {}
        self.wildcard: dict[str, DomainTLS] = {}    # ".example.com" -> the "*.example.com" domain
        for d in domains:
            if d.name.startswith("*."):
                self.wildcard[d.name[1:].lower()] = d
            else:
                self.exact[d.name.lower()] = d
        # lowercase host (or "*.suffix") -> the domain name a client certificate must have
        # been verified for; the protocol answers 403 when a request's Host is one of these
        # and the connection's certificate was not verified for that domain
        self.mtls_hosts: dict[bytes, bytes] = {
            d.name.lower().encode(): d.name.lower().encode() for d in domains if d.mtls_required}
        self.client_certs = any(d.truststore is not None for d in domains)

    def lookup(self, server_name: str) -> DomainTLS | None:
        """The domain for an SNI name: an exact name first, then a one-level wildcard
        ("*.example.com" covers "a.example.com", not "a.b.example.com", as certificates do)."""
        name = server_name.lower().rstrip(".")
        d = self.exact.get(name)
        if d is None:
            dot = name.find(".")
            if dot > 0:
                d = self.wildcard.get(name[dot:])
        return d

    def __bool__(self) -> bool:
        return bool(self.exact or self.wildcard)


def truststore_path(uri: str) -> Path:
    """The file a DomainName's mutualTlsAuthentication.truststoreUri names (a path or a
    file:// URI); ValueError for any other scheme."""
    if uri.startswith("file://"):
        path = Path(unquote(urlsplit(uri).path))
    elif "://" in uri:
        raise ValueError(f"truststoreUri '{uri}' must be a file path or a file:// URI "
                         "(fastgate does not fetch trust stores from S3)")
    else:
        path = Path(uri)
    return path


def build_tls_state(state, warn: Callable[[str], None] | None = None) -> TLSState | None:
    """The TLSState of an API state's DomainName documents (fastgate.control.model keeps the PEMs
    as _certificateBody, _certificatePrivateKey, _certificateChain; the truststore as
    mutualTlsAuthentication.truststoreUri, a file path or file:// URI). A domain whose
    PEMs cannot be used is left out with a warning: one bad document must not stop a
    reload. None when no domain has a certificate."""
    domains = []
    for name, doc in sorted((getattr(state, "domains", None) or {}).items()):
        body, key = doc.get("_certificateBody"), doc.get("_certificatePrivateKey")
        if not body or not key:
            continue
        chain = doc.get("_certificateChain") or ""
        cert_pem = body.encode().rstrip(b"\n") + b"\n" + chain.encode()
        truststore = None
        uri = (doc.get("mutualTlsAuthentication") or {}).get("truststoreUri")
        try:
            if uri:
                truststore = read_pem(str(truststore_path(uri)), "truststore")
            required = doc.get("_mtlsRequired", True)
            ctx = server_context(cert_pem, key.encode(), truststore_pem=truststore,
                                 mtls_required=required)
            domains.append(DomainTLS(doc.get("domainName", name), ctx, truststore, required))
        except Exception as e:   # TLSError, or ValueError from truststore_path
            if warn is not None:
                warn(f"domain {name}: {e}; its certificate is not served")
    return TLSState(domains) if domains else None


# --- listeners -----------------------------------------------------------------------

class ListenerTLS:
    """A TLS listener's context: its own certificate by default, a custom domain's when
    the client's SNI names one in the current snapshot."""

    def __init__(self, context: ssl.SSLContext, current: Callable[[], TLSState | None]):
        self.context = context
        self.current = current            # () -> the current snapshot's TLSState or None
        context.sni_callback = self._sni
        self.refresh()

    def _sni(self, sslobj, server_name, _context):
        state = self.current()
        if state is not None and server_name:
            domain = state.lookup(server_name)
            if domain is not None:
                sslobj.context = domain.context
                # client_cert_of() reads it: which truststore verified the certificate
                sslobj.fastgate_domain = domain
        return None

    def refresh(self) -> None:
        """Request client certificates on new connections iff a domain of the current
        snapshot has a truststore; call after every snapshot swap."""
        state = self.current()
        self.context.verify_mode = (ssl.CERT_OPTIONAL if state is not None and state.client_certs
                                    else ssl.CERT_NONE)


def listener_tls_for(loaded, sockname, current: Callable[[], TLSState | None]) -> ListenerTLS | None:
    """The ListenerTLS of the configured listener bound at ``sockname`` (the supervisor
    hands workers bare sockets), or None for a plain-HTTP listener. An exact address
    match wins over a port match (interface and host-name listeners)."""
    host, port = sockname[0], sockname[1]
    by_port = None
    for lc in loaded.config.listeners:
        la = lc.listen_address()
        if la.port != port:
            continue
        if la.host == host:
            by_port = lc
            break
        by_port = by_port or lc
    if by_port is None or by_port.tls is None:
        return None
    base = config_dir(loaded)
    cert = read_pem(os.path.join(base, by_port.tls.certificate), "certificate")
    key = read_pem(os.path.join(base, by_port.tls.key), "key")
    return ListenerTLS(server_context(cert, key), current)


def config_dir(loaded) -> str:
    """Relative certificate paths are read from the config file's directory."""
    filename = loaded.source.filename
    return os.path.dirname(os.path.abspath(filename)) if os.path.exists(filename) else os.getcwd()


# --- the client certificate of a connection ----------------------------------------------

class ClientCert(NamedTuple):
    """A verified client certificate, read once per connection; bytes as the templates
    ($context.identity.clientCert.*) and the upstream headers use them."""
    domain: bytes            # the domain whose truststore verified it (lowercase name)
    subject_dn: bytes        # RFC 4514: "CN=client,O=Example Corp"
    issuer_dn: bytes
    serial_number: bytes     # lowercase hex pairs with colons, as AWS writes it: "0a:1b:..."
    not_before: bytes        # "May 28 12:30:02 2019 GMT", as AWS (and OpenSSL) write it
    not_after: bytes
    pem: bytes               # $context.identity.clientCert.clientCertPem
    headers: bytes           # the X-Client-Cert-* lines sent upstream, CRLF-terminated


_SHORT = {"commonName": "CN", "countryName": "C", "localityName": "L",
          "stateOrProvinceName": "ST", "organizationName": "O", "organizationalUnitName": "OU",
          "streetAddress": "STREET", "domainComponent": "DC", "userId": "UID"}
_OID_SHORT = {"CN": "commonName", "C": "countryName", "L": "localityName",
              "ST": "stateOrProvinceName", "O": "organizationName",
              "OU": "organizationalUnitName", "STREET": "streetAddress", "DC": "domainComponent",
              "UID": "userId", "1.2.840.113549.1.9.1": "emailAddress"}


def _name_tuple(name: x509.Name) -> tuple:
    """A cryptography Name in getpeercert()'s form: ((("commonName", "ca"),), ...)."""
    out = []
    for rdn in name.rdns:
        out.append(tuple((_OID_SHORT.get(a.rfc4514_attribute_name, a.rfc4514_attribute_name),
                          a.value) for a in rdn))
    return tuple(out)


def _escape_dn_value(v: str) -> str:
    # RFC 4514 section 2.4
    v = "".join("\\" + c if c in ',+"\\<>;=' else c for c in v)
    if v[:1] in ("#", " "):
        v = "\\" + v
    if v.endswith(" "):
        v = v[:-1] + "\\ "
    return v


def dn_string(rdns) -> str:
    """getpeercert()'s subject/issuer as an RFC 4514 string (last RDN first)."""
    return ",".join("+".join(f"{_SHORT.get(k, k)}={_escape_dn_value(v)}" for k, v in rdn)
                    for rdn in reversed(rdns))


def _header_value(s: str) -> bytes:
    # a certificate's text cannot break the request head: control characters dropped
    return "".join(c for c in s if c >= " " and c != "\x7f").encode("utf-8")


def client_cert_of(sslobj) -> ClientCert | None:
    """The connection's client certificate as a ClientCert, if one was verified by the
    truststore of the domain SNI chose; else None. Called once per connection."""
    domain = getattr(sslobj, "fastgate_domain", None)
    if domain is None or domain.truststore is None:
        return None
    info = sslobj.getpeercert()
    if not info:
        return None
    if sslobj.session_reused and info.get("issuer") not in domain.trusted_subjects:
        # the session was verified when it was made, perhaps for another domain's truststore
        return None
    serial = info.get("serialNumber", "").lower()
    if len(serial) % 2:
        serial = "0" + serial
    serial = ":".join(serial[i:i + 2] for i in range(0, len(serial), 2))
    fields = (_header_value(dn_string(info.get("subject", ()))),
              _header_value(dn_string(info.get("issuer", ()))),
              serial.encode(), _header_value(info.get("notBefore", "")),
              _header_value(info.get("notAfter", "")))
    names = (b"X-Client-Cert-Subject-DN", b"X-Client-Cert-Issuer-DN", b"X-Client-Cert-Serial-Number",
             b"X-Client-Cert-Not-Before", b"X-Client-Cert-Not-After")
    head = b"".join(n + b": " + v + b"\r\n" for n, v in zip(names, fields))
    pem = ssl.DER_cert_to_PEM_cert(sslobj.getpeercert(True)).encode()
    return ClientCert(domain.name.lower().encode(), *fields, pem, head)
