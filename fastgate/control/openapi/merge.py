"""PutRestApi over an existing API: "overwrite" replaces the definition, "merge" adds to
it; both keep the ids the existing API has for the same names and paths. And the fields
and key order GetRestApi returns, which every imported API gets."""

from __future__ import annotations

import copy
import time


def with_defaults(api: dict, api_id: str, created: float) -> dict:
    """Order the keys as GetRestApi does and fill the fields AWS always returns."""
    out = {"id": api_id, "name": api["name"]}
    for key in ("description", "version"):
        if key in api:
            out[key] = api[key]
    out["createdDate"] = created
    for key in ("binaryMediaTypes", "minimumCompressionSize"):
        if key in api:
            out[key] = api[key]
    out["apiKeySource"] = api.get("apiKeySource", "HEADER")
    endpoint = {"types": ["EDGE"]}  # AWS's importer default
    endpoint.update(api.get("endpointConfiguration", {}))
    out["endpointConfiguration"] = endpoint
    for key in ("policy", "tags"):
        if key in api:
            out[key] = api[key]
    out["disableExecuteApiEndpoint"] = api.get("disableExecuteApiEndpoint", False)
    out["rootResourceId"] = api["resources"][0]["id"]
    out["protocolType"] = api["protocolType"]
    out["resources"] = api["resources"]
    out["authorizers"] = api["authorizers"]
    out["requestValidators"] = api["requestValidators"]
    out["models"] = api["models"]
    out["gatewayResponses"] = api.get("gatewayResponses", {})
    out["extensions"] = api["extensions"]
    for key in ("documentationParts", "documentationVersions"):
        if key in api:
            out[key] = api[key]
    return out


def _reuse_ids(old: list[dict], new: list[dict], key: str) -> dict[str, str]:
    """Give items of `new` the id of the `old` item with the same `key`; new id -> kept id."""
    old_ids = {item[key]: item["id"] for item in old}
    remap = {}
    for item in new:
        if item[key] in old_ids and item["id"] != old_ids[item[key]]:
            remap[item["id"]] = old_ids[item[key]]
            item["id"] = old_ids[item[key]]
    return remap


def _remap_method_ids(resources: list[dict], authorizers: dict, validators: dict) -> None:
    for resource in resources:
        for method in resource.get("resourceMethods", {}).values():
            if method.get("authorizerId") in authorizers:
                method["authorizerId"] = authorizers[method["authorizerId"]]
            if method.get("requestValidatorId") in validators:
                method["requestValidatorId"] = validators[method["requestValidatorId"]]


def _adopt_resource_ids(old_resources: list[dict], new_resources: list[dict]) -> None:
    old_ids = {r["path"]: r["id"] for r in old_resources}
    remap = {}
    for resource in new_resources:
        if resource["path"] in old_ids:
            remap[resource["id"]] = old_ids[resource["path"]]
            resource["id"] = old_ids[resource["path"]]
    for resource in new_resources:
        if resource.get("parentId") in remap:
            resource["parentId"] = remap[resource["parentId"]]


def _adopt_ids(existing: dict, new: dict) -> dict:
    """A copy of `new` that keeps the ids `existing` has for the same names and paths."""
    new = copy.deepcopy(new)
    auth_map = _reuse_ids(existing.get("authorizers", []), new["authorizers"], "name")
    val_map = _reuse_ids(existing.get("requestValidators", []), new["requestValidators"], "name")
    _reuse_ids(existing.get("models", []), new["models"], "name")
    _remap_method_ids(new["resources"], auth_map, val_map)
    _adopt_resource_ids(existing.get("resources", []), new["resources"])
    return new


def overwrite(existing: dict, new: dict) -> dict:
    """PutRestApi mode=overwrite: `new`'s definition on `existing`'s identity."""
    new = _adopt_ids(existing, new)
    # PutRestApi leaves the endpoint configuration and tags alone.
    if "endpointConfiguration" in existing and "endpointConfiguration" not in new:
        new["endpointConfiguration"] = copy.deepcopy(existing["endpointConfiguration"])
    if "tags" in existing and "tags" not in new:
        new["tags"] = copy.deepcopy(existing["tags"])
    # documentation versions are not part of a definition: they stay
    if "documentationVersions" in existing:
        new["documentationVersions"] = copy.deepcopy(existing["documentationVersions"])
    return with_defaults(new, existing["id"], existing.get("createdDate", int(time.time())))


def _merge_named(old: list[dict], new: list[dict]) -> list[dict]:
    by_name = {item["name"]: i for i, item in enumerate(old)}
    out = copy.deepcopy(old)
    for item in new:
        if item["name"] in by_name:
            out[by_name[item["name"]]] = item
        else:
            out.append(item)
    return out


def merge(existing: dict, new: dict) -> dict:
    """PutRestApi mode=merge: `new`'s methods, authorizers, validators, models and gateway
    responses replace those of the same name; the rest of `existing` stays."""
    new = _adopt_ids(existing, new)
    merged = copy.deepcopy(existing)
    for key in ("name", "description", "version", "minimumCompressionSize",
                "apiKeySource", "policy", "disableExecuteApiEndpoint", "protocolType"):
        if key in new:
            merged[key] = new[key]
    if "binaryMediaTypes" in new:
        # merged, not replaced: AWS's recording keeps the old types first, then the new ones
        types = merged.setdefault("binaryMediaTypes", [])
        types.extend(t for t in new["binaryMediaTypes"] if t not in types)
    if "tags" in new:
        merged.setdefault("tags", {}).update(new["tags"])
    resources = merged.setdefault("resources", [])
    by_path = {r["path"]: r for r in resources}
    for resource in new["resources"]:
        old = by_path.get(resource["path"])
        if old is None:
            resources.append(resource)
            by_path[resource["path"]] = resource
            continue
        if "resourceMethods" in resource:
            # A method the import defines replaces the existing one; the others stay.
            old.setdefault("resourceMethods", {}).update(resource["resourceMethods"])
        if "extensions" in resource:
            old.setdefault("extensions", {}).update(resource["extensions"])
    merged["authorizers"] = _merge_named(existing.get("authorizers", []), new["authorizers"])
    merged["requestValidators"] = _merge_named(existing.get("requestValidators", []),
                                               new["requestValidators"])
    merged["models"] = _merge_named(existing.get("models", []), new["models"])
    merged.setdefault("gatewayResponses", {}).update(new.get("gatewayResponses", {}))
    merged.setdefault("extensions", {}).update(new["extensions"])
    parts = merged.setdefault("documentationParts", [])
    for part in new.get("documentationParts") or ():
        old = next((d for d in parts if d["location"] == part["location"]), None)
        if old is None:
            parts.append(part)
        else:
            old["properties"] = part["properties"]
    return merged
