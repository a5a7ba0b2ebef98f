"""Custom domain names (certificates, mutual TLS) and base path mappings."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import (
    ModelBase,
    _bad_patch,
    _clone,
    _copy_known,
    _now,
    _page,
    _patch_ops,
    _require_str,
)
from fastgate.control.names import BASE_PATH, DOMAIN_NAME, NONE_BASE_PATH, new_id


def _load_pem_certs(data: bytes, what: str) -> list:
    from cryptography import x509
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise BadRequest(f"{what} is not a valid PEM certificate: {e}") from None
    if not certs:
        raise BadRequest(f"{what} holds no PEM certificate")
    return certs


def check_certificate(body: str, key: str, chain: str | None) -> None:
    """The certificate and private key must parse and belong together."""
    from cryptography.hazmat.primitives import serialization
    cert = _load_pem_certs(body.encode(), "certificateBody")[0]
    try:
        private = serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError) as e:
        raise BadRequest(f"certificatePrivateKey is not a valid unencrypted PEM private key: {e}") from None
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if private.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise BadRequest("The certificate private key does not match the certificate body.")
    if chain:
        _load_pem_certs(chain.encode(), "certificateChain")


def check_truststore(uri: str) -> None:
    from fastgate.compile.tls import truststore_path
    try:
        path = truststore_path(uri)
    except ValueError as e:
        raise BadRequest(str(e)) from None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadRequest(f"truststoreUri '{uri}' cannot be read: {e.strerror or e}") from None
    _load_pem_certs(data, f"The trust store at '{uri}'")


class Domains(ModelBase):
    # ---- domain names and base path mappings

    _DOMAIN_IN = ("certificateName", "certificateArn", "regionalCertificateName",
                  "regionalCertificateArn", "endpointConfiguration", "tags", "securityPolicy",
                  "policy", "ownershipVerificationCertificateArn", "routingMode")

    @staticmethod
    def _domain_view(domain: dict) -> dict:
        # the PEMs stay on the server: AWS never returns a certificate or key either
        return {k: _clone(v) for k, v in domain.items() if not k.startswith("_")}

    def create_domain_name(self, p: dict) -> dict:
        name = _require_str(p, "domainName", "domainName").lower()
        if not DOMAIN_NAME.match(name):
            raise BadRequest(f"Invalid domain name: '{p['domainName']}'")
        body, key, chain = (p.get("certificateBody"), p.get("certificatePrivateKey"),
                            p.get("certificateChain"))
        if body or key:
            if not (body and key):
                raise BadRequest("certificateBody and certificatePrivateKey must be given together")
            check_certificate(body, key, chain)
        mtls = p.get("mutualTlsAuthentication")
        if mtls and mtls.get("truststoreUri"):
            check_truststore(mtls["truststoreUri"])
        with self.change() as txn:
            if name in self.state.domains:
                raise Conflict("The domain name you provided already exists.")
            domain = {"domainName": name, "domainNameStatus": "AVAILABLE",
                      "regionalDomainName": name, "securityPolicy": "TLS_1_2",
                      "endpointConfiguration": {"types": ["REGIONAL"]}}
            domain.update(_copy_known(p, self._DOMAIN_IN))
            if body:
                domain["certificateUploadDate"] = _now()
                domain["_certificateBody"] = body
                domain["_certificatePrivateKey"] = key
                if chain:
                    domain["_certificateChain"] = chain
            if mtls and mtls.get("truststoreUri"):
                domain["mutualTlsAuthentication"] = {"truststoreUri": mtls["truststoreUri"],
                                                     "truststoreWarnings": []}
                if mtls.get("truststoreVersion"):
                    domain["mutualTlsAuthentication"]["truststoreVersion"] = mtls["truststoreVersion"]
            txn.put("domain", "", name, domain)
        return self._domain_view(domain)

    def get_domain_name(self, p: dict) -> dict:
        self.fresh()
        return self._domain_view(self._domain(p["domainName"].lower()))

    def get_domain_names(self, p: dict) -> dict:
        state = self.fresh()
        return _page([self._domain_view(d) for _, d in sorted(state.domains.items())], p)

    def delete_domain_name(self, p: dict) -> dict:
        name = p["domainName"].lower()
        with self.change() as txn:
            self._domain(name)
            txn.delete("domain", "", name)
            for base in self.state.mappings.get(name, {}):
                txn.delete("mapping", name, base)
        return {}

    def _check_mapping_target(self, api_id: str, stage: str | None) -> None:
        if api_id not in self.state.apis:
            raise BadRequest("Invalid REST API identifier specified")
        if stage and stage not in self.state.stages.get(api_id, {}):
            raise BadRequest("Invalid stage identifier specified")

    def create_base_path_mapping(self, p: dict) -> dict:
        name = p["domainName"].lower()
        base = p.get("basePath") or ""
        if base in ("", NONE_BASE_PATH):
            base = NONE_BASE_PATH
        elif not BASE_PATH.match(base):
            raise BadRequest(f"Invalid base path '{base}': use letters, digits and ._-$+, "
                             "segments separated by '/'")
        with self.change() as txn:
            self._domain(name)
            self._check_mapping_target(_require_str(p, "restApiId", "restApiId"), p.get("stage"))
            if base in self.state.mappings.get(name, {}):
                raise Conflict("Base path already exists for this domain name")
            # apiMappingId: the id apigatewayv2 shows this mapping by (one domain, both services)
            mapping = {"basePath": base, "restApiId": p["restApiId"], "apiMappingId": new_id(6)}
            if p.get("stage"):
                mapping["stage"] = p["stage"]
            txn.put("mapping", name, base, mapping)
        return dict(mapping)

    def _mapping(self, domain: str, base: str) -> dict:
        self._domain(domain)
        mapping = self.state.mappings.get(domain, {}).get(base or NONE_BASE_PATH)
        if mapping is None:
            raise NotFound("Invalid base path mapping identifier specified")
        return mapping

    def get_base_path_mapping(self, p: dict) -> dict:
        self.fresh()
        return dict(self._mapping(p["domainName"].lower(), p["basePath"]))

    def get_base_path_mappings(self, p: dict) -> dict:
        self.fresh()
        name = p["domainName"].lower()
        self._domain(name)
        return _page([dict(m) for _, m in sorted(self.state.mappings.get(name, {}).items())], p)

    def update_base_path_mapping(self, p: dict) -> dict:
        name = p["domainName"].lower()
        with self.change() as txn:
            old = self._mapping(name, p["basePath"])
            mapping = dict(old)
            for op in _patch_ops(p):
                field_name = op["path"][1:]
                if op["op"] != "replace" or field_name not in ("basePath", "restApiId", "stage"):
                    raise _bad_patch(op)
                value = op.get("value") or ""
                if field_name == "basePath":
                    value = value or NONE_BASE_PATH
                    if value != NONE_BASE_PATH and not BASE_PATH.match(value):
                        raise BadRequest(f"Invalid base path '{value}'")
                if value:
                    mapping[field_name] = value
                else:
                    mapping.pop(field_name, None)
            self._check_mapping_target(mapping.get("restApiId", ""), mapping.get("stage"))
            if mapping["basePath"] != old["basePath"]:
                if mapping["basePath"] in self.state.mappings.get(name, {}):
                    raise Conflict("Base path already exists for this domain name")
                txn.delete("mapping", name, old["basePath"])
            txn.put("mapping", name, mapping["basePath"], mapping)
        return dict(mapping)

    def delete_base_path_mapping(self, p: dict) -> dict:
        name = p["domainName"].lower()
        with self.change() as txn:
            mapping = self._mapping(name, p["basePath"])
            txn.delete("mapping", name, mapping["basePath"])
        return {}
