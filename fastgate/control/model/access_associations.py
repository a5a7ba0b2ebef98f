"""Domain name access associations: which VPC endpoint may reach a private custom domain name.
fastgate stores and shows them as AWS does (it has no VPC endpoints to enforce them on)."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import ModelBase, _clone, _page
from fastgate.control.messages import aws_message
from fastgate.control.model.tags import check_tags

DOMAIN_ARN = re.compile(r"^(arn:aws[a-z-]*:apigateway:[a-z0-9-]*:\d*):/domainnames/([^/+]+)(?:\+([^/]+))?$")
VPCE_ID = re.compile(r"^vpce-[0-9a-z]+$")
SOURCE_TYPES = ("VPCE",)
ASSOCIATION_OUT = ("domainNameAccessAssociationArn", "domainNameArn", "accessAssociationSourceType",
                   "accessAssociationSource", "tags")


class AccessAssociations(ModelBase):
    # ---- domain name access associations

    def _associations(self) -> dict:
        return self.state.extra.get("dnaa", {}).get("", {})

    def create_domain_name_access_association(self, p: dict) -> dict:
        m = DOMAIN_ARN.match(p.get("domainNameArn") or "")
        if m is None:
            raise BadRequest(aws_message("arn_malformed", arn=p.get("domainNameArn")))
        if p.get("accessAssociationSourceType") not in SOURCE_TYPES:
            raise BadRequest(f"Invalid access association source type: "
                             f"{p.get('accessAssociationSourceType')}")
        source = p.get("accessAssociationSource") or ""
        if not VPCE_ID.match(source):
            raise BadRequest(f"Invalid VPC endpoint identifier: {source}")
        tags = check_tags(p.get("tags") or {})
        with self.change() as txn:
            self._domain(m.group(2).lower())
            ident = m.group(2) + (f"+{m.group(3)}" if m.group(3) else "")
            arn = f"{m.group(1)}:/domainnameaccessassociations/domainname/{ident}/vpcesource/{source}"
            if arn in self._associations():
                raise BadRequest("The domain name access association already exists")
            doc = {"domainNameAccessAssociationArn": arn, "domainNameArn": p["domainNameArn"],
                   "accessAssociationSourceType": "VPCE", "accessAssociationSource": source,
                   "tags": tags}
            txn.put("dnaa", "", arn, doc)
        return _clone(doc)

    def get_domain_name_access_associations(self, p: dict) -> dict:
        self.fresh()
        if p.get("resourceOwner") == "OTHER_ACCOUNTS":
            return {"items": []}        # one account: nobody else's associations
        docs = sorted(self._associations().values(), key=lambda d: d["domainNameAccessAssociationArn"])
        return _page([{k: _clone(d[k]) for k in ASSOCIATION_OUT if k in d} for d in docs], p)

    def delete_domain_name_access_association(self, p: dict) -> dict:
        arn = p["domainNameAccessAssociationArn"]
        with self.change() as txn:
            if arn not in self._associations():
                raise NotFound(aws_message("dnaa_not_found"))
            txn.delete("dnaa", "", arn)
        return {}

    def reject_domain_name_access_association(self, p: dict) -> dict:
        arn = p["domainNameAccessAssociationArn"]
        with self.change() as txn:
            doc = self._associations().get(arn)
            if doc is None or doc.get("domainNameArn") != p.get("domainNameArn"):
                raise NotFound(aws_message("dnaa_not_found"))
            txn.delete("dnaa", "", arn)
        return {}
