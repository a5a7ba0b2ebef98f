"""Tags on every taggable resource, by ARN (TagResource, UntagResource, GetTags). A resource's
tags live on its own document, so its Get* output shows them too.

Taggable ARNs, as AWS writes them (region any, account empty):
arn:aws:apigateway:REGION::/restapis/ID, /restapis/ID/stages/NAME, /apikeys/ID,
/usageplans/ID, /domainnames/NAME, /clientcertificates/ID, /vpclinks/ID."""

from __future__ import annotations

import re

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import ModelBase, _clone

TAG_ARN = re.compile(r"^arn:aws[a-z-]*:apigateway:[a-z0-9-]*:\d*:/(.+)$")
TAGS_MAX = 50                       # AWS's limit of tags per resource
TAG_KEY_MAX, TAG_VALUE_MAX = 128, 256


def check_tags(tags) -> dict:
    """AWS's rules for a tag map: string keys of 1-128 characters not starting with aws:,
    string values up to 256 characters."""
    if not isinstance(tags, dict):
        raise BadRequest("tags must be a map of strings")
    for key, value in tags.items():
        if not 1 <= len(key) <= TAG_KEY_MAX or key.lower().startswith("aws:"):
            raise BadRequest(f"Invalid tag key: {key}")
        if not isinstance(value, str) or len(value) > TAG_VALUE_MAX:
            raise BadRequest(f"Invalid tag value for key: {key}")
    return dict(tags)


class Tags(ModelBase):
    # ---- tags

    def _tagged(self, arn: str) -> tuple[str, str, str, dict]:
        """(kind, scope, id, document) of the resource an ARN names."""
        m = TAG_ARN.match(arn or "")
        if m is None:
            raise BadRequest(f"Invalid ARN specified in the request: {arn}")
        parts = m.group(1).split("/")
        extra = self.state.extra
        found = None
        if len(parts) == 2 and parts[0] == "restapis":
            found = ("restapi", "", parts[1], self.state.apis.get(parts[1]))
        elif len(parts) == 4 and parts[0] == "restapis" and parts[2] == "stages":
            found = ("stage", parts[1], parts[3], self.state.stages.get(parts[1], {}).get(parts[3]))
        elif len(parts) == 2 and parts[0] == "domainnames":
            name = parts[1].split("+")[0].lower()
            found = ("domain", "", name, self.state.domains.get(name))
        elif len(parts) == 2:
            kind = {"apikeys": "apikey", "usageplans": "usageplan",
                    "clientcertificates": "clientcertificate", "vpclinks": "vpclink"}.get(parts[0])
            if kind is not None:
                found = (kind, "", parts[1], extra.get(kind, {}).get("", {}).get(parts[1]))
        if found is None:
            raise BadRequest(f"Invalid ARN specified in the request: {arn}")
        if found[3] is None:
            raise NotFound("Invalid resource identifier specified")
        return found

    def get_tags(self, p: dict) -> dict:
        self.fresh()
        return {"tags": _clone(self._tagged(p["resourceArn"])[3].get("tags") or {})}

    def tag_resource(self, p: dict) -> dict:
        new = check_tags(p.get("tags") or {})
        with self.change() as txn:
            kind, scope, id, doc = self._tagged(p["resourceArn"])
            doc = _clone(doc)
            tags = {**(doc.get("tags") or {}), **new}
            if len(tags) > TAGS_MAX:
                raise BadRequest(f"The number of tags on a resource cannot exceed {TAGS_MAX}")
            doc["tags"] = tags
            txn.put(kind, scope, id, doc)
        return {}

    def untag_resource(self, p: dict) -> dict:
        with self.change() as txn:
            kind, scope, id, doc = self._tagged(p["resourceArn"])
            doc = _clone(doc)
            tags = doc.get("tags") or {}
            for key in p.get("tagKeys") or ():
                tags.pop(key, None)
            doc["tags"] = tags
            txn.put(kind, scope, id, doc)
        return {}
