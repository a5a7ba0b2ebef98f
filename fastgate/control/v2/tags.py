"""Tags on apigatewayv2 resources, by ARN: APIs, stages, domain names and VPC links
(`arn:aws:apigateway:REGION::/apis/ID`, `.../apis/ID/stages/NAME`, `.../domainnames/NAME`,
`.../vpclinks/ID`). Tags are kept on the resource's own document, so Get* shows them too."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import _clone
from fastgate.control.v2.base import KIND_API, V2Base
from fastgate.control.v2.vpclinks import KIND_VPC_LINK

_ARN = re.compile(r"^arn:aws[a-z-]*:apigateway:[a-z0-9-]*::(/.+)$")
MAX_TAGS = 50       # AWS's quota per resource


class Tags(V2Base):
    def _tagged(self, arn: str):
        """(kind, scope, id, document) of the resource an ARN names."""
        m = _ARN.match(arn or "")
        if m is None:
            raise BadRequest(f"Invalid resource ARN {arn}")
        parts = m.group(1).strip("/").split("/")
        if len(parts) == 2 and parts[0] == "apis":
            return KIND_API, "", parts[1], self._api2(parts[1])
        if len(parts) == 4 and parts[0] == "apis" and parts[2] == "stages":
            self._api2(parts[1])
            return "stage", parts[1], parts[3], self._stage2(parts[1], parts[3])
        if len(parts) == 2 and parts[0] == "domainnames":
            domain = self.state.domains.get(parts[1].lower())
            if domain is None:
                raise NotFound(f"Invalid domain name identifier specified {parts[1]}")
            return "domain", "", domain["domainName"], domain
        if len(parts) == 2 and parts[0] == "vpclinks":
            link = (self.state.extra.get(KIND_VPC_LINK) or {}).get("", {}).get(parts[1])
            if link is None:
                raise NotFound(f"Invalid VpcLink identifier specified {parts[1]}")
            return KIND_VPC_LINK, "", parts[1], link
        raise NotFound(f"Invalid resource ARN {arn}: not a taggable resource")

    def get_tags(self, p: dict) -> dict:
        self.fresh()
        return {"tags": _clone(self._tagged(p["resource-arn"])[3].get("tags") or {})}

    def tag_resource(self, p: dict) -> dict:
        tags = p.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise BadRequest("Tags must be a map of strings")
        with self.change() as txn:
            kind, scope, id, doc = self._tagged(p["resource-arn"])
            doc = _clone(doc)
            doc.setdefault("tags", {}).update(tags)
            if len(doc["tags"]) > MAX_TAGS:
                raise BadRequest(f"A resource can have at most {MAX_TAGS} tags")
            txn.put(kind, scope, id, doc)
        return {}

    def untag_resource(self, p: dict) -> dict:
        with self.change() as txn:
            kind, scope, id, doc = self._tagged(p["resource-arn"])
            doc = _clone(doc)
            for key in p.get("tagKeys") or ():
                (doc.get("tags") or {}).pop(key, None)
            txn.put(kind, scope, id, doc)
        return {}
