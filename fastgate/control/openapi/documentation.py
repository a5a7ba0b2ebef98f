"""x-amazon-apigateway-documentation: the documentation parts of an API (their locations and
properties), read on import (ImportRestApi, PutRestApi, ImportDocumentationParts) and written
on export (GetExport with extensions=documentation)."""

from __future__ import annotations

import datetime
import json

from fastgate.control.names import new_id

EXTENSION = "x-amazon-apigateway-documentation"
# DocumentationPartType, in the order AWS's enum error lists them
LOCATION_TYPES = ("RESPONSE_BODY", "RESPONSE", "METHOD", "MODEL", "AUTHORIZER", "RESPONSE_HEADER",
                  "RESOURCE", "PATH_PARAMETER", "REQUEST_BODY", "QUERY_PARAMETER", "API",
                  "REQUEST_HEADER")
# the location fields each type takes (AWS ignores the others)
LOCATION_FIELDS = {
    "API": (), "AUTHORIZER": ("name",), "MODEL": ("name",), "RESOURCE": ("path",),
    "METHOD": ("path", "method"), "PATH_PARAMETER": ("path", "method", "name"),
    "QUERY_PARAMETER": ("path", "method", "name"), "REQUEST_HEADER": ("path", "method", "name"),
    "REQUEST_BODY": ("path", "method"), "RESPONSE": ("path", "method", "statusCode"),
    "RESPONSE_HEADER": ("path", "method", "statusCode", "name"),
    "RESPONSE_BODY": ("path", "method", "statusCode"),
}
_NAMED = ("AUTHORIZER", "MODEL", "PATH_PARAMETER", "QUERY_PARAMETER", "REQUEST_HEADER",
          "RESPONSE_HEADER")


class LocationError(ValueError):
    """A location AWS refuses; `bad_type` when its type is not one of LOCATION_TYPES."""

    def __init__(self, message: str, bad_type: bool = False):
        super().__init__(message)
        self.bad_type = bad_type


def location_of(location) -> dict:
    """A DocumentationPartLocation as AWS keeps it: the fields its type takes, path "/"
    (the root resource, AWS's default) where the type has a path."""
    if not isinstance(location, dict) or location.get("type") not in LOCATION_TYPES:
        raise LocationError(f"invalid location type {(location or {}).get('type') if isinstance(location, dict) else location!r}",
                            bad_type=True)
    ltype = location["type"]
    out = {"type": ltype}
    for key in LOCATION_FIELDS[ltype]:
        if location.get(key) not in (None, ""):
            out[key] = str(location[key])
    if "path" in LOCATION_FIELDS[ltype]:
        out.setdefault("path", "/")
    if ltype in _NAMED and not out.get("name"):
        raise LocationError(f"a {ltype} documentation part needs a name")
    return out


def read_documentation(value, where: str, warnings: list[str]) -> list[dict]:
    """The documentation parts of an x-amazon-apigateway-documentation value; a part AWS would
    not take is left out with a warning."""
    if not isinstance(value, dict) or not isinstance(value.get("documentationParts"), list):
        raise ValueError(f"{where}: must be an object with a documentationParts list")
    parts: list[dict] = []
    for i, item in enumerate(value["documentationParts"]):
        at = f"{where}.documentationParts[{i}]"
        try:
            location = location_of((item or {}).get("location") if isinstance(item, dict) else None)
        except LocationError as e:
            warnings.append(f"{at}.location: {e}")
            continue
        properties = item.get("properties") or {}
        if not isinstance(properties, dict):
            warnings.append(f"{at}.properties: must be an object")
            continue
        existing = next((d for d in parts if d["location"] == location), None)
        if existing is None:
            existing = {"id": new_id(6), "location": location}
            parts.append(existing)
        existing["properties"] = json.dumps(properties)
    return parts


def export_documentation(api: dict, version: str | None) -> dict | None:
    """The x-amazon-apigateway-documentation of an export: the parts of the documentation
    version the stage names, else the API's current parts; None when there are none."""
    parts = api.get("documentationParts") or []
    out: dict = {}
    if version:
        found = next((v for v in api.get("documentationVersions") or () if v["version"] == version), None)
        if found is not None:
            parts = found.get("parts") or []
            out["version"] = version
            out["createdDate"] = datetime.datetime.fromtimestamp(
                found.get("createdDate", 0), datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if not parts:
        return None
    out["documentationParts"] = [{"location": dict(d["location"]),
                                  "properties": json.loads(d["properties"])} for d in parts]
    return out
