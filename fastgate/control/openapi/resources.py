"""Resources: the tree of path parts that the document's paths make, under the base path
ImportRestApi's `basepath` mode keeps (ignore | prepend | split)."""

from __future__ import annotations

import copy
import re

from fastgate.control.names import PATH_PART, new_id
from fastgate.control.openapi.document import Document, OpenAPIError
from fastgate.control.openapi.methods import Methods


class ResourceTree:
    """The resources of one import, parents before children, the root first."""

    def __init__(self):
        self.root = {"id": new_id(10), "path": "/"}
        self.by_path = {"/": self.root}
        self.order = [self.root]

    def resource_for(self, parts: list[str], where: str) -> dict:
        """The resource of a path, made with its missing ancestors."""
        node, path = self.root, ""
        for i, part in enumerate(parts):
            if not PATH_PART.match(part):
                raise OpenAPIError(
                    f"{where}: path part {part!r} may only use a-zA-Z0-9._- with curly "
                    "braces around a parameter name and an optional + before the closing brace")
            if part.endswith("+}") and i != len(parts) - 1:
                raise OpenAPIError(
                    f"{where}: greedy path parameter {part} must be the last path part")
            path = f"{path}/{part}"
            child = self.by_path.get(path)
            if child is None:
                if part.startswith("{"):
                    for sibling in self.order:
                        if (sibling.get("parentId") == node["id"]
                                and sibling["pathPart"].startswith("{")):
                            raise OpenAPIError(
                                f"{where}: path part {part} conflicts with sibling "
                                f"{sibling['pathPart']} at {sibling['path']}: only one "
                                "variable path part is allowed at one level")
                child = {"id": new_id(6), "parentId": node["id"], "pathPart": part,
                         "path": path}
                self.by_path[path] = child
                self.order.append(child)
            node = child
        return node

    def default_route(self) -> dict:
        """An HTTP API's catch-all route: a resource "/$default" the compiler routes after
        all others."""
        if "/$default" not in self.by_path:
            res = {"id": new_id(6), "parentId": self.root["id"], "pathPart": "$default",
                   "path": "/$default"}
            self.by_path["/$default"] = res
            self.order.append(res)
        return self.by_path["/$default"]


def read_paths(document: Document, prefix: list[str], methods: Methods,
               extensions: dict) -> list[dict]:
    """The resources (with their methods) of the document's paths, each under `prefix`;
    x-* keys of `paths` go to extensions["paths"]."""
    tree = ResourceTree()
    source_of: dict[str, str] = {}
    for raw_path, item in document.root["paths"].items():
        where = f"paths.{raw_path}"
        if raw_path == "$default":
            if methods.rest:
                raise OpenAPIError(f"{where}: the $default route exists only in HTTP APIs")
            resource = tree.default_route()
            item = document.resolve(item, where)
            if not isinstance(item, dict):
                raise OpenAPIError(f"{where}: a path item must be an object")
            methods.add_path_item(resource, item, where, [])
            continue
        if raw_path.startswith("x-"):
            extensions.setdefault("paths", {})[raw_path] = copy.deepcopy(item)
            continue
        if not isinstance(raw_path, str) or not raw_path.startswith("/"):
            raise OpenAPIError(f"{where}: a path must start with '/'")
        inner = raw_path.strip("/")
        parts = inner.split("/") if inner else []
        if any(not p for p in parts):
            raise OpenAPIError(f"{where}: empty path part")
        full = prefix + parts
        key = "/" + "/".join(full)
        if key in source_of:
            raise OpenAPIError(f"{where}: duplicates paths.{source_of[key]} "
                               f"(both are resource {key})")
        source_of[key] = raw_path
        item = document.resolve(item, where)
        if not isinstance(item, dict):
            raise OpenAPIError(f"{where}: a path item must be an object")
        resource = tree.resource_for(full, where)
        methods.add_path_item(resource, item, where, parts)
    return tree.order


def path_prefix(document: Document, mode: str) -> tuple[list[str], str]:
    """Path parts to put before every path, and the base path that split removed."""
    if mode not in ("ignore", "prepend", "split"):
        raise OpenAPIError(f"basepath: {mode!r} is not ignore, prepend or split")
    parts = [p for p in _declared_base_path(document).split("/") if p]
    if mode == "ignore" or not parts:
        return [], ""
    if mode == "prepend":
        return parts, ""
    return parts[1:], "/" + parts[0]


def _declared_base_path(document: Document) -> str:
    """Swagger 2's basePath; in OpenAPI 3, a server's basePath variable, else the path of
    the first server's URL."""
    if not document.v3:
        base = document.root.get("basePath") or "/"
        if not isinstance(base, str):
            raise OpenAPIError("basePath: must be a string")
        return base
    servers = document.root.get("servers") or []
    if not isinstance(servers, list):
        raise OpenAPIError("servers: must be a list")
    for server in servers:
        variables = server.get("variables") if isinstance(server, dict) else None
        if isinstance(variables, dict) and "basePath" in variables:
            default = variables["basePath"].get("default") if isinstance(
                variables["basePath"], dict) else None
            return str(default or "/")
    if servers and isinstance(servers[0], dict) and isinstance(servers[0].get("url"), str):
        url = servers[0]["url"]
        for var, spec in (servers[0].get("variables") or {}).items():
            if isinstance(spec, dict) and "default" in spec:
                url = url.replace("{" + var + "}", str(spec["default"]))
        match = re.match(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/]*(/.*)?$", url)
        return (match.group(1) or "/") if match else url
    return "/"
