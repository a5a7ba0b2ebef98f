"""The real-world-shaped OpenAPI documents of tests/data/openapi and helpers to read
what the importer makes of them."""

import copy
import json
import pathlib

from fastgate.control.openapi import import_openapi, load_document

DATA = pathlib.Path(__file__).resolve().parents[2] / "data" / "openapi"


FIXTURES = sorted(p.name for p in DATA.iterdir())


def load(name: str) -> dict:
    return load_document((DATA / name).read_bytes(), name)


def imported(name: str, **kwargs) -> dict:
    api, _ = import_openapi(load(name), **kwargs)
    return api


def normalised(api: dict) -> dict:
    """The API document with generated ids and dates replaced by stable names."""
    api = copy.deepcopy(api)
    names = {api.pop("id"): "API"}
    api.pop("createdDate")
    api.pop("rootResourceId")
    for kind, prefix, key in (("resources", "R", "path"), ("authorizers", "A", "name"),
                              ("requestValidators", "V", "name"), ("models", "M", "name")):
        for item in api[kind]:
            names[item["id"]] = f"<{prefix}:{item[key]}>"
    for part in api.get("documentationParts") or ():
        part.pop("id")          # made anew by every import
    for res in api["resources"]:
        for m in (res.get("resourceMethods") or {}).values():
            # the resource id an import names it by, or the id an exported document carried
            # (AWS exports it, and an import keeps what the document says)
            if "cacheNamespace" in (m.get("methodIntegration") or {}):
                m["methodIntegration"]["cacheNamespace"] = "<cacheNamespace>"
    text = json.dumps(api, sort_keys=True)
    for old, new in names.items():
        text = text.replace(old, new)
    return json.loads(text)


def resource(api: dict, path: str) -> dict:
    return next(r for r in api["resources"] if r["path"] == path)


def method(api: dict, path: str, verb: str) -> dict:
    return resource(api, path)["resourceMethods"][verb]


def source_version(name: str) -> str:
    return "swagger" if "swagger" in load(name) else "oas30"
