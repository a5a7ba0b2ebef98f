"""One import: an OpenAPI document in, the API document and the warnings out.

The parts run in a fixed order, each on its own concern: the RestApi's fields from the
root (restapi.py), models (models.py), security schemes and authorizers (security.py),
request validators (validators.py), then the resources (resources.py) and their methods
(methods.py, which builds integrations with integrations.py). PutRestApi's merge and
overwrite of an existing API are in merge.py."""

from __future__ import annotations

import time

from fastgate.control.names import new_id
from fastgate.control.openapi.document import Document, OpenAPIError
from fastgate.control.openapi.fields import INTEGRATION, Note
from fastgate.control.openapi.merge import merge, overwrite, with_defaults
from fastgate.control.openapi.methods import Methods
from fastgate.control.openapi.models import Models
from fastgate.control.openapi.resources import path_prefix, read_paths
from fastgate.control.openapi.restapi import read_root
from fastgate.control.openapi.security import Security
from fastgate.control.openapi.validators import RequestValidators


def import_openapi(doc: dict, *, base_path: str = "ignore", api_id: str | None = None,
                   protocol_type: str | None = None, fail_on_warnings: bool = False,
                   existing: dict | None = None, mode: str = "overwrite"
                   ) -> tuple[dict, list[str]]:
    """Build the API document from an OpenAPI document; return it with the warnings.

    base_path is ImportRestApi's `basepath` (ignore | prepend | split); the part that
    split removes is kept in api["extensions"]["basePath"]. With `existing`, mode "merge"
    follows PutRestApi's merge (imported methods replace the same method, everything else
    stays) and "overwrite" replaces the definition but keeps the API's id, createdDate,
    endpoint configuration, tags and the ids of resources whose paths survive.
    """
    if not isinstance(doc, dict):
        raise OpenAPIError("<root>: an OpenAPI document is an object")
    if mode not in ("merge", "overwrite"):
        raise OpenAPIError(f"mode: {mode!r} is not merge or overwrite")
    if existing is not None:
        api_id = existing["id"]
    api_id = api_id or new_id(10)
    api, warnings = _import(Document(doc), base_path, protocol_type, api_id)
    aws_warnings = [w for w in warnings if not isinstance(w, Note)]
    if fail_on_warnings and aws_warnings:
        raise OpenAPIError("import failed on warnings (failonwarnings=true):\n  "
                           + "\n  ".join(aws_warnings))
    if existing is None:
        api = with_defaults(api, api_id, int(time.time()))   # whole seconds, as every date
    elif mode == "merge":
        api = merge(existing, api)
    else:
        api = overwrite(existing, api)
    if api.get("protocolType", "REST") == "REST":
        _rest_integration_defaults(api)
    return api, warnings


def _rest_integration_defaults(api: dict) -> None:
    """What AWS shows on a REST API's imported integrations, as PutIntegration makes them
    (its recordings of ImportRestApi): the resource's id as cacheNamespace, no httpMethod
    or uri on a MOCK integration. Run on the final resource ids (PutRestApi keeps the ids
    of paths that survive)."""
    for resource in api.get("resources", ()):
        for method in (resource.get("resourceMethods") or {}).values():
            integ = method.get("methodIntegration")
            if integ is None:
                continue
            integ.setdefault("cacheNamespace", resource["id"])
            if integ.get("type") == "MOCK":
                integ.pop("httpMethod", None)
                integ.pop("uri", None)


def detect_protocol(doc: dict) -> str:
    """HTTP when the document uses an HTTP API's extensions, else REST."""
    components = doc.get("components") if isinstance(doc.get("components"), dict) else {}
    if "x-amazon-apigateway-integrations" in components:
        return "HTTP"
    if "x-amazon-apigateway-cors" in doc or "x-amazon-apigateway-importexport-version" in doc:
        return "HTTP"
    for item in (doc.get("paths") or {}).values() if isinstance(doc.get("paths"), dict) else ():
        if not isinstance(item, dict):
            continue
        for op in item.values():
            integ = op.get(INTEGRATION) if isinstance(op, dict) else None
            if isinstance(integ, dict) and "payloadFormatVersion" in integ:
                return "HTTP"
    return "REST"


def _import(document: Document, base_path_mode: str, protocol_type: str | None,
            api_id: str) -> tuple[dict, list[str]]:
    """The API document (without the fields with_defaults adds) and the warnings."""
    doc = document.root
    protocol = protocol_type.upper() if protocol_type else detect_protocol(doc)
    if protocol not in ("REST", "HTTP"):
        raise OpenAPIError(f"protocolType: {protocol_type!r} is not REST or HTTP")
    info = doc.get("info")
    if not isinstance(info, dict):
        raise OpenAPIError("info: required, and must be an object")
    if not isinstance(info.get("title"), str) or not info["title"].strip():
        raise OpenAPIError("info.title: required (it becomes the API's name)")
    if "paths" not in doc:
        raise OpenAPIError("paths: required")
    if not isinstance(doc["paths"], dict):
        raise OpenAPIError("paths: must be an object")

    warnings: list[str] = []
    api: dict = {"name": info["title"]}
    if isinstance(info.get("description"), str):
        api["description"] = info["description"]
    if info.get("version") is not None:
        api["version"] = str(info["version"])
    api["protocolType"] = protocol
    extensions: dict = {}
    read_root(document, api, extensions, warnings)
    models = Models(document, api_id)
    models.load()
    security = Security(document, warnings)
    security.load()
    validators = RequestValidators()
    validators.load(doc)

    prefix, removed = path_prefix(document, base_path_mode)
    if removed:
        extensions["basePath"] = removed
    methods = Methods(document, protocol == "REST", models, security, validators, warnings)
    api["resources"] = read_paths(document, prefix, methods, extensions)
    api["authorizers"] = list(security.authorizers.values())
    api["requestValidators"] = list(validators.by_name.values())
    api["models"] = list(models.by_name.values())
    api["extensions"] = extensions
    return api, warnings
