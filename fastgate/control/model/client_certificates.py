"""Client certificates: GenerateClientCertificate makes a real RSA key pair and a self-signed
certificate (valid 365 days, as AWS's). A stage whose clientCertificateId names one presents it
to the HTTPS backends of its HTTP integrations (mutual TLS towards the backend, built in
fastgate/compile/upstreams.py); the backend trusts it by the PEM this API returns. The private
key never leaves the store."""

from __future__ import annotations

import datetime

from fastgate.control.errors import NotFound
from fastgate.control.model.base import ModelBase, _clone, _now, _page
from fastgate.control.messages import aws_message
from fastgate.control.model.patching import patch_operations, refuse
from fastgate.control.model.tags import check_tags
from fastgate.control.names import new_id

CERT_VALID_DAYS = 365
CERT_PATCH = {"replace": ("/description",)}
CERT_OUT = ("clientCertificateId", "description", "pemEncodedCertificate", "createdDate",
            "expirationDate", "tags")


def generate_certificate(cert_id: str) -> tuple[str, str, int]:
    """(certificate PEM, private key PEM, expiry epoch seconds): RSA 2048, self-signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    expires = now + datetime.timedelta(days=CERT_VALID_DAYS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ApiGateway {cert_id}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(expires)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem, key_pem, int(expires.timestamp())


def certificate_view(doc: dict) -> dict:
    return {k: _clone(doc[k]) for k in CERT_OUT if k in doc}


class ClientCertificates(ModelBase):
    # ---- client certificates

    def _certificate(self, cert_id: str) -> dict:
        doc = self.state.extra.get("clientcertificate", {}).get("", {}).get(cert_id)
        if doc is None:
            raise NotFound(aws_message("client_certificate_not_found"))
        return doc

    def generate_client_certificate(self, p: dict) -> dict:
        tags = check_tags(p.get("tags") or {})
        with self.change() as txn:
            existing = self.state.extra.get("clientcertificate", {}).get("", {})
            cert_id = new_id(6)
            while cert_id in existing:
                cert_id = new_id(6)
            cert_pem, key_pem, expires = generate_certificate(cert_id)
            doc = {"clientCertificateId": cert_id, "pemEncodedCertificate": cert_pem,
                   "createdDate": _now(), "expirationDate": expires, "tags": tags,
                   "_privateKey": key_pem}
            if p.get("description"):
                doc["description"] = p["description"]
            txn.put("clientcertificate", "", cert_id, doc)
        return certificate_view(doc)

    def get_client_certificate(self, p: dict) -> dict:
        self.fresh()
        return certificate_view(self._certificate(p["clientCertificateId"]))

    def get_client_certificates(self, p: dict) -> dict:
        state = self.fresh()
        docs = sorted(state.extra.get("clientcertificate", {}).get("", {}).values(),
                      key=lambda d: (d.get("createdDate", 0), d["clientCertificateId"]))
        return _page([certificate_view(d) for d in docs], p)

    def update_client_certificate(self, p: dict) -> dict:
        with self.change() as txn:
            doc = _clone(self._certificate(p["clientCertificateId"]))
            for op in patch_operations(p, "UpdateClientCertificate"):
                if op["op"] != "replace" or op.get("path") not in CERT_PATCH["replace"]:
                    raise refuse(op, CERT_PATCH)
                if op.get("value"):
                    doc["description"] = op["value"]
                else:
                    doc.pop("description", None)
            txn.put("clientcertificate", "", doc["clientCertificateId"], doc)
        return certificate_view(doc)

    def delete_client_certificate(self, p: dict) -> dict:
        with self.change() as txn:
            doc = self._certificate(p["clientCertificateId"])
            txn.delete("clientcertificate", "", doc["clientCertificateId"])
        return {}
