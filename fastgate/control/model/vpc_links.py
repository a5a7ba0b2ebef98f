"""VPC links. On AWS a REST API's VPC link names a Network Load Balancer; in fastgate it names
an upstream group of the config's `upstreams:`: the target ARN's load balancer name
(arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/net/NAME/ID) is the group's name.
An integration with connectionType VPC_LINK and connectionId (the link's id, or
${stageVariables.X}) is served by that group (fastgate/compile/apis.py). The status is
AVAILABLE when the group exists in the running config, else FAILED with the reason."""

from __future__ import annotations

import re

from fastgate.compile.upstreams import upstream_of
from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import ModelBase, _clone, _page
from fastgate.control.messages import aws_message
from fastgate.control.model.patching import patch_operations, refuse
from fastgate.control.model.tags import check_tags
from fastgate.control.names import new_id

ARN = re.compile(r"^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:\d*:.+$")
VPC_LINK_PATCH = {"replace": ("/name", "/description")}
VPC_LINK_OUT = ("id", "name", "description", "targetArns", "status", "statusMessage", "tags")
READY = "Your vpc link is ready for use"       # AWS's statusMessage of an AVAILABLE link


def vpc_link_status(link: dict, upstreams) -> tuple[str, str]:
    """(status, statusMessage) of a link against the config's upstream group names."""
    if upstreams is None:
        return "AVAILABLE", READY
    missing = [upstream_of(a) for a in link.get("targetArns") or () if upstream_of(a) not in upstreams]
    if missing:
        return "FAILED", (f"NLB target {', '.join(missing)} is not an upstream of the gateway's "
                          "config (upstreams:)")
    return "AVAILABLE", READY


class VpcLinks(ModelBase):
    # ---- VPC links

    def _vpc_link(self, link_id: str) -> dict:
        doc = self.state.extra.get("vpclink", {}).get("", {}).get(link_id)
        if doc is None:
            raise NotFound(aws_message("vpc_link_not_found"))
        return doc

    def _vpc_link_view(self, doc: dict, tags: bool = True) -> dict:
        out = {k: _clone(doc[k]) for k in VPC_LINK_OUT if k in doc}
        out["status"], out["statusMessage"] = vpc_link_status(doc, self.upstream_names())
        if tags:
            out.setdefault("tags", {})
        return out

    def create_vpc_link(self, p: dict) -> dict:
        name = p.get("name") or ""
        if not name:
            raise BadRequest(aws_message("vpc_link_name_empty"))
        arns = p.get("targetArns") or []
        for arn in arns:
            if not ARN.match(arn):
                raise BadRequest(aws_message("arn_malformed", arn=arn))
        if len(arns) != 1:
            raise BadRequest("A VPC link of a REST API has exactly one target (Network Load "
                             "Balancer) ARN")
        tags = check_tags(p.get("tags") or {})
        with self.change() as txn:
            links = self.state.extra.get("vpclink", {}).get("", {})
            link_id = new_id(6)
            while link_id in links:
                link_id = new_id(6)
            doc = {"id": link_id, "name": name, "targetArns": list(arns), "tags": tags}
            if p.get("description"):
                doc["description"] = p["description"]
            txn.put("vpclink", "", link_id, doc)
        # AWS answers PENDING while it provisions; fastgate's link serves after the reload
        # this change triggers, so the next GetVpcLink shows its real status
        out = {k: _clone(doc[k]) for k in ("id", "name", "description", "targetArns") if k in doc}
        out["status"] = "PENDING"
        return out

    def get_vpc_link(self, p: dict) -> dict:
        self.fresh()
        return self._vpc_link_view(self._vpc_link(p["vpcLinkId"]))

    def get_vpc_links(self, p: dict) -> dict:
        state = self.fresh()
        docs = sorted(state.extra.get("vpclink", {}).get("", {}).values(), key=lambda d: d["id"])
        return _page([self._vpc_link_view(d, tags=False) for d in docs], p)

    def update_vpc_link(self, p: dict) -> dict:
        with self.change() as txn:
            doc = _clone(self._vpc_link(p["vpcLinkId"]))
            for op in patch_operations(p, "UpdateVpcLink"):
                if op["op"] != "replace" or op.get("path") not in VPC_LINK_PATCH["replace"]:
                    raise refuse(op, VPC_LINK_PATCH)
                key, value = op["path"][1:], op.get("value")
                if key == "name" and not value:
                    raise BadRequest(aws_message("vpc_link_name_empty"))
                if value:
                    doc[key] = value
                else:
                    doc.pop(key, None)
            txn.put("vpclink", "", doc["id"], doc)
        return self._vpc_link_view(doc)

    def delete_vpc_link(self, p: dict) -> dict:
        with self.change() as txn:
            doc = self._vpc_link(p["vpcLinkId"])
            txn.delete("vpclink", "", doc["id"])
        return {}
