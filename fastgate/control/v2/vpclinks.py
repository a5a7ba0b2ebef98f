"""VPC links: in fastgate a VPC link names an upstream group of the config (`upstreams:`);
an HTTP_PROXY integration with connectionType VPC_LINK and the link's id as connectionId
sends its requests to that group's targets (its balancing, health checks and pools)."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, Conflict
from fastgate.control.model.base import _clone, _now
from fastgate.control.v2.base import KIND_API, V2Base, fresh_id, is_v2, page

KIND_VPC_LINK = "vpclink"
VPC_LINK_IN = ("name", "securityGroupIds", "subnetIds", "tags")


class VpcLinks(V2Base):
    def _links(self) -> dict:
        return (self.state.extra.get(KIND_VPC_LINK) or {}).get("", {})

    def _link(self, link_id: str) -> dict:
        link = self._links().get(link_id)
        if link is None:
            from fastgate.control.errors import NotFound
            raise NotFound(f"Invalid VpcLink identifier specified {link_id}")
        return link

    def vpc_link_view(self, link: dict) -> dict:
        out = {k: _clone(link[k]) for k in ("vpcLinkId", "name", "createdDate", "securityGroupIds",
                                            "subnetIds", "tags") if link.get(k) is not None}
        out.setdefault("securityGroupIds", [])
        out.setdefault("tags", {})
        out["vpcLinkVersion"] = "V2"
        # AVAILABLE while the upstream group it names is in the running config
        if link["name"] in self.upstream_names():
            out["vpcLinkStatus"] = "AVAILABLE"
            out["vpcLinkStatusMessage"] = f"VPC link is ready to route traffic to upstream {link['name']}"
        else:
            out["vpcLinkStatus"] = "FAILED"
            out["vpcLinkStatusMessage"] = (f"No upstream group named {link['name']!r} in the "
                                           "config's upstreams: this VPC link routes nowhere")
        return out

    def create_vpc_link(self, p: dict) -> dict:
        if not p.get("name"):
            raise BadRequest("Name must not be blank")
        if not isinstance(p.get("subnetIds"), list):
            raise BadRequest("SubnetIds is required")
        with self.change() as txn:
            link = {k: _clone(p[k]) for k in VPC_LINK_IN if p.get(k) is not None}
            link["vpcLinkId"] = fresh_id(self._links(), 6)
            link["createdDate"] = _now()
            txn.put(KIND_VPC_LINK, "", link["vpcLinkId"], link)
        return self.vpc_link_view(link)

    def get_vpc_link(self, p: dict) -> dict:
        self.fresh()
        return self.vpc_link_view(self._link(p["vpcLinkId"]))

    def get_vpc_links(self, p: dict) -> dict:
        self.fresh()
        links = sorted(self._links().values(), key=lambda l: (l.get("createdDate", 0), l["vpcLinkId"]))
        return page([self.vpc_link_view(l) for l in links], p)

    def update_vpc_link(self, p: dict) -> dict:
        with self.change() as txn:
            link = _clone(self._link(p["vpcLinkId"]))
            if p.get("name") is not None:
                if not p["name"]:
                    raise BadRequest("Name must not be blank")
                link["name"] = p["name"]
            txn.put(KIND_VPC_LINK, "", link["vpcLinkId"], link)
        return self.vpc_link_view(link)

    def delete_vpc_link(self, p: dict) -> dict:
        with self.change() as txn:
            self._link(p["vpcLinkId"])
            for api in self.state.apis.values():
                if not is_v2(api):
                    continue
                for integ in (api.get("integrations") or {}).values():
                    if integ.get("connectionType") == "VPC_LINK" and integ.get("connectionId") == p["vpcLinkId"]:
                        raise Conflict(f"VPC link {p['vpcLinkId']} is used by integration "
                                       f"{integ['integrationId']} of API {api['id']}")
            txn.delete(KIND_VPC_LINK, "", p["vpcLinkId"])
        return {}


__all__ = ["VpcLinks", "KIND_VPC_LINK", "KIND_API"]
