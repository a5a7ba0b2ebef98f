"""Custom domain names, API mappings and routing rules through apigatewayv2.

A domain name is one document whichever service made it (apigateway's DomainName shape,
store kind "domain"), and an API mapping is a base path mapping (store kind "mapping", keyed
by its base path, `(none)` for the empty key): a domain may map REST and HTTP APIs at once,
and each service shows them in its own shape. Routing rules (store kind "routingrule",
scoped by domain) are AWS's way to choose an API stage by base path and headers before (or
instead of) the mappings, as the domain's routingMode says (fastgate/phases/routing_rules.py
on the data plane).
"""

from __future__ import annotations

import hashlib
import re

from fastgate.control.errors import BadRequest, Conflict, NotFound
from fastgate.control.model.base import _clone
from fastgate.control.names import BASE_PATH, DOMAIN_NAME, NONE_BASE_PATH
from fastgate.control.v2.base import V2Base, fresh_id, page

ROUTING_MODES = ("API_MAPPING_ONLY", "ROUTING_RULE_ONLY", "ROUTING_RULE_THEN_API_MAPPING")
REGION = "us-east-1"         # fastgate has no regions; ARNs name AWS's default one
MAX_PRIORITY = 1_000_000
_HEADER = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def domain_arn(name: str) -> str:
    return f"arn:aws:apigateway:{REGION}::/domainnames/{name}"


def mapping_id(domain: str, mapping: dict) -> str:
    """A mapping's apiMappingId; base path mappings made through apigateway before they had
    one get an id derived from their domain and base path."""
    if mapping.get("apiMappingId"):
        return mapping["apiMappingId"]
    digest = hashlib.sha256(f"{domain}\0{mapping['basePath']}".encode()).hexdigest()
    return "".join("abcdefghijklmnopqrstuvwxyz0123456789"[int(digest[i:i + 2], 16) % 36]
                   for i in range(0, 12, 2))


def mapping_view(domain: str, mapping: dict) -> dict:
    out = {"apiId": mapping.get("restApiId"), "apiMappingId": mapping_id(domain, mapping),
           "apiMappingKey": "" if mapping["basePath"] == NONE_BASE_PATH else mapping["basePath"]}
    if mapping.get("stage"):
        out["stage"] = mapping["stage"]
    return out


def _mapping_key(key) -> str:
    if key in (None, "", "/", NONE_BASE_PATH):
        return NONE_BASE_PATH
    key = key.strip("/")
    if not BASE_PATH.match(key):
        raise BadRequest(f"Invalid API mapping key '{key}': use letters, digits and ._-$+, "
                         "segments separated by '/'")
    return key


def _check_conditions(conditions) -> list:
    if not isinstance(conditions, list) or len(conditions) > 3:
        raise BadRequest("Conditions: a list of at most 3 conditions")
    base_paths = headers = 0
    for c in conditions:
        if not isinstance(c, dict) or len(c) != 1:
            raise BadRequest("Each condition has exactly one of matchBasePaths, matchHeaders")
        if "matchBasePaths" in c:
            base_paths += 1
            paths = (c["matchBasePaths"] or {}).get("anyOf")
            if not isinstance(paths, list) or len(paths) != 1:
                raise BadRequest("matchBasePaths.anyOf takes exactly one base path")
            for bp in paths:
                _mapping_key(bp)
        elif "matchHeaders" in c:
            headers += 1
            values = (c["matchHeaders"] or {}).get("anyOf")
            if not isinstance(values, list) or len(values) != 1:
                raise BadRequest("matchHeaders.anyOf takes exactly one header and value glob")
            for hv in values:
                if not _HEADER.match(hv.get("header") or "") or not hv.get("valueGlob"):
                    raise BadRequest("matchHeaders: header must be a header name and valueGlob "
                                     "a value or glob (* for any run of characters)")
        else:
            raise BadRequest(f"Unknown condition {next(iter(c))}")
    if base_paths > 1 or headers > 2:
        raise BadRequest("A routing rule has at most one matchBasePaths and two matchHeaders "
                         "conditions")
    return _clone(conditions)


class Domains(V2Base):
    # ---- domain names

    @staticmethod
    def domain_view(domain: dict) -> dict:
        name = domain["domainName"]
        config = {"apiGatewayDomainName": domain.get("regionalDomainName", name),
                  "domainNameStatus": domain.get("domainNameStatus", "AVAILABLE"),
                  "endpointType": (domain.get("endpointConfiguration") or {}).get("types", ["REGIONAL"])[0],
                  "securityPolicy": domain.get("securityPolicy", "TLS_1_2"),
                  "ipAddressType": "ipv4"}
        for src, dst in (("regionalCertificateArn", "certificateArn"), ("certificateArn", "certificateArn"),
                         ("regionalCertificateName", "certificateName"),
                         ("certificateName", "certificateName"),
                         ("certificateUploadDate", "certificateUploadDate"),
                         ("ownershipVerificationCertificateArn", "ownershipVerificationCertificateArn")):
            if domain.get(src) is not None and dst not in config:
                config[dst] = domain[src]
        out = {"domainName": name, "domainNameArn": domain_arn(name),
               "apiMappingSelectionExpression": "$request.basepath",
               "domainNameConfigurations": [config],
               "routingMode": domain.get("routingMode", "API_MAPPING_ONLY"),
               "tags": _clone(domain.get("tags") or {})}
        if domain.get("mutualTlsAuthentication"):
            out["mutualTlsAuthentication"] = _clone(domain["mutualTlsAuthentication"])
        return out

    @staticmethod
    def _apply_domain_input(domain: dict, p: dict) -> None:
        configs = p.get("domainNameConfigurations")
        if configs is not None:
            if not isinstance(configs, list) or len(configs) > 1:
                raise BadRequest("DomainNameConfigurations takes one configuration")
            for cfg in configs:
                etype = cfg.get("endpointType", "REGIONAL")
                if etype not in ("REGIONAL", "EDGE"):
                    raise BadRequest(f"Invalid endpoint type {etype}")
                domain["endpointConfiguration"] = {"types": [etype]}
                for src, dst in (("certificateArn", "regionalCertificateArn"),
                                 ("certificateName", "regionalCertificateName"),
                                 ("securityPolicy", "securityPolicy"),
                                 ("ownershipVerificationCertificateArn",
                                  "ownershipVerificationCertificateArn")):
                    if cfg.get(src) is not None:
                        domain[dst] = cfg[src]
                if domain.get("securityPolicy") not in ("TLS_1_0", "TLS_1_2"):
                    raise BadRequest(f"Invalid security policy {domain.get('securityPolicy')}")
        mtls = p.get("mutualTlsAuthentication")
        if mtls is not None:
            from fastgate.control.model.domains import check_truststore
            if mtls.get("truststoreUri"):
                check_truststore(mtls["truststoreUri"])
                domain["mutualTlsAuthentication"] = {"truststoreUri": mtls["truststoreUri"],
                                                     "truststoreWarnings": []}
                if mtls.get("truststoreVersion"):
                    domain["mutualTlsAuthentication"]["truststoreVersion"] = mtls["truststoreVersion"]
            else:
                domain.pop("mutualTlsAuthentication", None)
        if p.get("routingMode") is not None:
            if p["routingMode"] not in ROUTING_MODES:
                raise BadRequest(f"Invalid routing mode {p['routingMode']}")
            domain["routingMode"] = p["routingMode"]

    def create_domain_name(self, p: dict) -> dict:
        name = p["domainName"].lower()
        if not DOMAIN_NAME.match(name):
            raise BadRequest(f"Invalid domain name: '{p['domainName']}'")
        with self.change() as txn:
            if name in self.state.domains:
                raise Conflict("The domain name you provided already exists.")
            domain = {"domainName": name, "domainNameStatus": "AVAILABLE", "regionalDomainName": name,
                      "securityPolicy": "TLS_1_2", "endpointConfiguration": {"types": ["REGIONAL"]},
                      "routingMode": "API_MAPPING_ONLY"}
            if p.get("tags") is not None:
                domain["tags"] = dict(p["tags"])
            self._apply_domain_input(domain, p)
            txn.put("domain", "", name, domain)
        return self.domain_view(domain)

    def _domain2(self, name: str) -> dict:
        domain = self.state.domains.get(name.lower())
        if domain is None:
            raise NotFound(f"Invalid domain name identifier specified {name}")
        return domain

    def get_domain_name(self, p: dict) -> dict:
        self.fresh()
        return self.domain_view(self._domain2(p["domainName"]))

    def get_domain_names(self, p: dict) -> dict:
        state = self.fresh()
        return page([self.domain_view(d) for _, d in sorted(state.domains.items())], p)

    def update_domain_name(self, p: dict) -> dict:
        with self.change() as txn:
            domain = _clone(self._domain2(p["domainName"]))
            self._apply_domain_input(domain, p)
            txn.put("domain", "", domain["domainName"], domain)
        return self.domain_view(domain)

    def delete_domain_name(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            txn.delete("domain", "", name)
            for base in self.state.mappings.get(name, {}):
                txn.delete("mapping", name, base)
            for rule_id in (self.state.extra.get("routingrule") or {}).get(name, {}):
                txn.delete("routingrule", name, rule_id)
        return {}

    # ---- API mappings (= base path mappings)

    def _check_target(self, api_id: str, stage: str) -> None:
        if api_id not in self.state.apis:
            raise BadRequest(f"Invalid API identifier specified {api_id}")
        if stage not in self.state.stages.get(api_id, {}):
            raise BadRequest(f"Invalid stage identifier specified {stage}")

    def _find_mapping(self, domain: str, mapping_id_: str) -> dict:
        for m in self.state.mappings.get(domain, {}).values():
            if mapping_id(domain, m) == mapping_id_:
                return m
        raise NotFound(f"Invalid API mapping identifier specified {mapping_id_}")

    def create_api_mapping(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            self._check_target(p["apiId"], p["stage"])
            key = _mapping_key(p.get("apiMappingKey"))
            if key in self.state.mappings.get(name, {}):
                raise Conflict(f"ApiMapping with key '{p.get('apiMappingKey') or ''}' already "
                               f"exists for domain name {name}")
            taken = {mapping_id(name, m) for m in self.state.mappings.get(name, {}).values()}
            mapping = {"basePath": key, "restApiId": p["apiId"], "stage": p["stage"],
                       "apiMappingId": fresh_id(taken, 6)}
            txn.put("mapping", name, key, mapping)
        return mapping_view(name, mapping)

    def get_api_mapping(self, p: dict) -> dict:
        self.fresh()
        name = self._domain2(p["domainName"])["domainName"]
        return mapping_view(name, self._find_mapping(name, p["apiMappingId"]))

    def get_api_mappings(self, p: dict) -> dict:
        self.fresh()
        name = self._domain2(p["domainName"])["domainName"]
        return page([mapping_view(name, m) for _, m in sorted(self.state.mappings.get(name, {}).items())], p)

    def update_api_mapping(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            old = self._find_mapping(name, p["apiMappingId"])
            mapping = dict(old, apiMappingId=mapping_id(name, old), restApiId=p["apiId"])
            if p.get("stage") is not None:
                mapping["stage"] = p["stage"]
            if p.get("apiMappingKey") is not None:
                mapping["basePath"] = _mapping_key(p["apiMappingKey"])
            self._check_target(mapping["restApiId"], mapping.get("stage") or "")
            if mapping["basePath"] != old["basePath"]:
                if mapping["basePath"] in self.state.mappings.get(name, {}):
                    raise Conflict(f"ApiMapping with key '{p['apiMappingKey']}' already exists for "
                                   f"domain name {name}")
                txn.delete("mapping", name, old["basePath"])
            txn.put("mapping", name, mapping["basePath"], mapping)
        return mapping_view(name, mapping)

    def delete_api_mapping(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            mapping = self._find_mapping(name, p["apiMappingId"])
            txn.delete("mapping", name, mapping["basePath"])
        return {}

    # ---- routing rules

    def _rules(self, domain: str) -> dict:
        return (self.state.extra.get("routingrule") or {}).get(domain, {})

    def _rule_input(self, domain: str, p: dict, rule_id: str) -> dict:
        priority = p.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool) or not 1 <= priority <= MAX_PRIORITY:
            raise BadRequest(f"Priority must be between 1 and {MAX_PRIORITY}")
        for other in self._rules(domain).values():
            if other["priority"] == priority and other["routingRuleId"] != rule_id:
                raise Conflict(f"A routing rule with priority {priority} already exists for "
                               f"domain name {domain}")
        actions = p.get("actions")
        if not isinstance(actions, list) or len(actions) != 1 or "invokeApi" not in actions[0]:
            raise BadRequest("Actions takes exactly one invokeApi action")
        invoke = actions[0]["invokeApi"]
        self._check_target(invoke.get("apiId") or "", invoke.get("stage") or "")
        rule = {"routingRuleId": rule_id,
                "routingRuleArn": f"{domain_arn(domain)}/routingrules/{rule_id}",
                "priority": priority, "conditions": _check_conditions(p.get("conditions")),
                "actions": [{"invokeApi": {"apiId": invoke["apiId"], "stage": invoke["stage"],
                                           "stripBasePath": bool(invoke.get("stripBasePath", False))}}]}
        return rule

    def create_routing_rule(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            rule = self._rule_input(name, p, fresh_id(self._rules(name), 6))
            txn.put("routingrule", name, rule["routingRuleId"], rule)
        return _clone(rule)

    def _rule(self, name: str, rule_id: str) -> dict:
        rule = self._rules(name).get(rule_id)
        if rule is None:
            raise NotFound(f"Invalid routing rule identifier specified {rule_id}")
        return rule

    def get_routing_rule(self, p: dict) -> dict:
        self.fresh()
        name = self._domain2(p["domainName"])["domainName"]
        return _clone(self._rule(name, p["routingRuleId"]))

    def list_routing_rules(self, p: dict) -> dict:
        self.fresh()
        name = self._domain2(p["domainName"])["domainName"]
        rules = sorted(self._rules(name).values(), key=lambda r: r["priority"])
        out = page([_clone(r) for r in rules],
                   {"maxResults": p.get("maxResults"), "nextToken": p.get("nextToken")})
        return {"routingRules": out["items"], **({"nextToken": out["nextToken"]}
                                                 if "nextToken" in out else {})}

    def put_routing_rule(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            self._rule(name, p["routingRuleId"])
            rule = self._rule_input(name, p, p["routingRuleId"])
            txn.put("routingrule", name, rule["routingRuleId"], rule)
        return _clone(rule)

    def delete_routing_rule(self, p: dict) -> dict:
        with self.change() as txn:
            name = self._domain2(p["domainName"])["domainName"]
            self._rule(name, p["routingRuleId"])
            txn.delete("routingrule", name, p["routingRuleId"])
        return {}
