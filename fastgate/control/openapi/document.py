"""The OpenAPI document an import reads: its version, its local `$ref`s, its components;
and the error every part of the importer and exporter raises."""

from __future__ import annotations

import re


class OpenAPIError(ValueError):
    """A document fastgate cannot import or export; the message names the location."""


def schemas_ref(v3: bool) -> str:
    """How a `$ref` to a named schema begins in OpenAPI 3 (True) or Swagger 2 (False)."""
    return "#/components/schemas/" if v3 else "#/definitions/"


class Document:
    """A Swagger 2.0 or OpenAPI 3.0/3.1 document, as parsed JSON/YAML (`root`)."""

    def __init__(self, root: dict):
        self.root = root
        if "swagger" in root:
            if str(root["swagger"]) != "2.0":
                raise OpenAPIError(f"swagger: version {root['swagger']!r} is not 2.0")
            self.v3 = False
        elif "openapi" in root:
            if not re.match(r"^3\.[01](\.\d+)?$", str(root["openapi"])):
                raise OpenAPIError(f"openapi: version {root['openapi']!r} is not 3.0 or 3.1")
            self.v3 = True
        else:
            raise OpenAPIError(
                "<root>: not an OpenAPI document (neither a 'swagger' nor an 'openapi' field)")

    def resolve(self, node, where: str, seen: tuple = ()):
        """Follow a local `$ref` (JSON pointer into this document) to what it names."""
        if not (isinstance(node, dict) and "$ref" in node):
            return node
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise OpenAPIError(f"{where}.$ref: {ref!r} is not a local reference ('#/...'); "
                               "external references are not supported")
        if ref in seen:
            raise OpenAPIError(f"{where}.$ref: {ref!r} refers to itself")
        target = self.root
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise OpenAPIError(f"{where}.$ref: {ref!r} does not resolve")
        return self.resolve(target, where, seen + (ref,))

    def component(self, v3_name: str, v2_name: str) -> tuple[dict, str]:
        """A components.* map of OpenAPI 3 or its top-level Swagger 2 twin, and its location."""
        if self.v3:
            components = self.root.get("components") or {}
            if not isinstance(components, dict):
                raise OpenAPIError("components: must be an object")
            found, where = components.get(v3_name) or {}, f"components.{v3_name}"
        else:
            found, where = self.root.get(v2_name) or {}, v2_name
        if not isinstance(found, dict):
            raise OpenAPIError(f"{where}: must be an object")
        return found, where
