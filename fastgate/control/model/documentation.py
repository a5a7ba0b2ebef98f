"""Documentation parts and versions of a REST API. Parts live in the API document's
"documentationParts"; a version is a frozen copy of them ("documentationVersions"), which a
stage names (documentationVersion) and GetExport with extensions=documentation writes as
x-amazon-apigateway-documentation."""

from __future__ import annotations

import json

from fastgate.control.errors import BadRequest, Conflict, NotFound, ValidationError
from fastgate.control.model.base import ModelBase, _clone, _now, _page
from fastgate.control.messages import aws_message, validation_errors
from fastgate.control.model.patching import patch_operations, refuse
from fastgate.control.names import new_id
from fastgate.control.openapi.documentation import (
    EXTENSION,
    LOCATION_TYPES,
    LocationError,
    location_of,
    read_documentation,
)

PART_PATCH = {"replace": ("/properties",)}
VERSION_PATCH = {"replace": ("/description",)}


def check_location(location, where: str) -> dict:
    try:
        return location_of(location)
    except LocationError as e:
        if e.bad_type:
            raise ValidationError(validation_errors([aws_message(
                "validation_enum", where=where, choices=", ".join(LOCATION_TYPES),
                value=location.get("type") if isinstance(location, dict) else None)])) from None
        raise BadRequest(f"Invalid location: {e}") from None


def check_properties(properties) -> str:
    if not isinstance(properties, str):
        raise BadRequest("Documentation part properties must be a JSON string")
    try:
        doc = json.loads(properties)
    except ValueError:
        raise BadRequest("Documentation part properties must be valid JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("Documentation part properties must be a JSON object")
    return properties


class Documentation(ModelBase):
    # ---- documentation parts

    def _part(self, api_id: str, part_id: str) -> tuple[dict, dict]:
        api = self.state.apis.get(api_id)
        for d in (api or {}).get("documentationParts") or ():
            if d["id"] == part_id:
                return api, d
        raise NotFound(aws_message("doc_part_not_found"))

    def create_documentation_part(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            location = check_location(p.get("location"), "createDocumentationPartInput.location.type")
            properties = check_properties(p.get("properties"))
            parts = api.setdefault("documentationParts", [])
            if any(d["location"] == location for d in parts):
                raise Conflict(aws_message("doc_part_exists"))
            part = {"id": new_id(6), "location": location, "properties": properties}
            parts.append(part)
            self._save_api(txn, api)
        return _clone(part)

    def get_documentation_part(self, p: dict) -> dict:
        self.fresh()
        return _clone(self._part(p["restApiId"], p["documentationPartId"])[1])

    def get_documentation_parts(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        parts = api.get("documentationParts") or []
        if p.get("type"):
            parts = [d for d in parts if d["location"]["type"] == p["type"]]
        if p.get("nameQuery"):
            parts = [d for d in parts if p["nameQuery"] in d["location"].get("name", "")]
        if p.get("path"):
            parts = [d for d in parts if d["location"].get("path") == p["path"]]
        return _page([_clone(d) for d in parts], p)

    def update_documentation_part(self, p: dict) -> dict:
        with self.change() as txn:
            api = _clone(self._part(p["restApiId"], p["documentationPartId"])[0])
            part = next(d for d in api["documentationParts"] if d["id"] == p["documentationPartId"])
            for op in patch_operations(p, "UpdateDocumentationPart"):
                if op["op"] != "replace" or op.get("path") not in PART_PATCH["replace"]:
                    raise refuse(op, PART_PATCH)
                part["properties"] = check_properties(op.get("value"))
            self._save_api(txn, api)
        return _clone(part)

    def delete_documentation_part(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            parts = api.get("documentationParts") or []
            if not any(d["id"] == p["documentationPartId"] for d in parts):
                raise NotFound(aws_message("doc_part_not_found"))
            api["documentationParts"] = [d for d in parts if d["id"] != p["documentationPartId"]]
            self._save_api(txn, api)
        return {}

    def import_documentation_parts(self, p: dict) -> dict:
        """ImportDocumentationParts: the x-amazon-apigateway-documentation of an OpenAPI
        document; mode=merge (AWS's default) adds and replaces by location, overwrite replaces
        every part."""
        from fastgate.control import openapi
        mode = p.get("mode") or "merge"
        if mode not in ("merge", "overwrite"):
            raise BadRequest(f"Invalid mode '{mode}': must be merge or overwrite")
        try:
            doc = openapi.load_document(p.get("body") or b"", "<request body>")
        except openapi.OpenAPIError:
            raise BadRequest(aws_message("doc_import_bad_file")) from None
        if not isinstance(doc, dict):
            raise BadRequest(aws_message("doc_import_bad_file"))
        warnings: list[str] = []
        try:
            imported = read_documentation(doc.get(EXTENSION), EXTENSION, warnings)
        except ValueError:
            raise BadRequest(aws_message("doc_import_bad_file")) from None
        if warnings and p.get("failOnWarnings"):
            raise BadRequest("\n".join(warnings))
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            parts = [] if mode == "overwrite" else api.setdefault("documentationParts", [])
            ids = []
            for part in imported:
                existing = next((d for d in parts if d["location"] == part["location"]), None)
                if existing is None:
                    existing = part
                    parts.append(existing)
                existing["properties"] = part["properties"]
                ids.append(existing["id"])
            api["documentationParts"] = parts
            self._save_api(txn, api)
        out = {"ids": ids}
        if warnings:
            out["warnings"] = warnings
        return out

    # ---- documentation versions

    def _doc_version(self, api: dict, version: str) -> dict:
        for v in api.get("documentationVersions") or ():
            if v["version"] == version:
                return v
        raise NotFound(aws_message("doc_version_not_found"))

    @staticmethod
    def _version_view(v: dict) -> dict:
        return {k: _clone(v[k]) for k in ("version", "createdDate", "description") if k in v}

    def create_documentation_version(self, p: dict) -> dict:
        version = p.get("documentationVersion") or ""
        if not version:
            raise BadRequest("Documentation version must be non-empty")
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            versions = api.setdefault("documentationVersions", [])
            if any(v["version"] == version for v in versions):
                raise Conflict(aws_message("doc_version_exists"))
            entry = {"version": version, "createdDate": _now(),
                     "parts": _clone(api.get("documentationParts") or [])}
            if p.get("description"):
                entry["description"] = p["description"]
            if p.get("stageName"):
                stage = _clone(self._stage(api["id"], p["stageName"]))
                stage["documentationVersion"] = version
                txn.put("stage", api["id"], stage["stageName"], stage)
            versions.append(entry)
            self._save_api(txn, api)
        return self._version_view(entry)

    def get_documentation_version(self, p: dict) -> dict:
        self.fresh()
        return self._version_view(self._doc_version(self._api(p["restApiId"]), p["documentationVersion"]))

    def get_documentation_versions(self, p: dict) -> dict:
        self.fresh()
        api = self._api(p["restApiId"])
        return _page([self._version_view(v) for v in api.get("documentationVersions") or ()], p)

    def update_documentation_version(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            entry = self._doc_version(api, p["documentationVersion"])
            for op in patch_operations(p, "UpdateDocumentationVersion"):
                if op["op"] != "replace" or op.get("path") not in VERSION_PATCH["replace"]:
                    raise refuse(op, VERSION_PATCH)
                if op.get("value"):
                    entry["description"] = op["value"]
                else:
                    entry.pop("description", None)
            self._save_api(txn, api)
        return self._version_view(entry)

    def delete_documentation_version(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            self._doc_version(api, p["documentationVersion"])
            api["documentationVersions"] = [v for v in api["documentationVersions"]
                                            if v["version"] != p["documentationVersion"]]
            self._save_api(txn, api)
        return {}
