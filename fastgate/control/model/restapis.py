"""RestApis: create, get, update, delete, import, put (merge/overwrite) and export."""

from __future__ import annotations

from fastgate.control import messages as msg
from fastgate.control.errors import BadRequest
from fastgate.control.model.base import (
    ModelBase,
    _bool_value,
    _clone,
    _now,
    _page,
    _patch_ops,
    _require_str,
    _unescape_pointer,
)
from fastgate.control.model.models import default_models
from fastgate.control.names import API_KEY_SOURCES, is_v2_api, new_id

REST_API_KEYS = ("name", "description", "version", "binaryMediaTypes", "minimumCompressionSize",
                 "apiKeySource", "endpointConfiguration", "policy", "tags",
                 "disableExecuteApiEndpoint")
# what GetRestApi returns: AWS's RestApi members (no resources, no fastgate extras)
REST_API_OUT = ("id", "name", "description", "createdDate", "version", "warnings",
                "binaryMediaTypes", "minimumCompressionSize", "apiKeySource",
                "endpointConfiguration", "policy", "tags", "disableExecuteApiEndpoint",
                "rootResourceId")
RESOURCE_OUT = ("id", "parentId", "pathPart", "path", "resourceMethods")


def root_resource(api: dict) -> dict:
    for r in api.get("resources", ()):
        if r.get("path") == "/":
            return r
    raise BadRequest("the API has no root resource")


def _ip_address_type(types) -> str:
    # AWS's default: dualstack for a private API (the only type it allows), else ipv4
    return "dualstack" if "PRIVATE" in (types or ()) else "ipv4"


def rest_api_view(api: dict, tags: bool = True) -> dict:
    """A RestApi as AWS returns it. GetRestApi, UpdateRestApi and PutRestApi always carry
    `tags` ({} when none), CreateRestApi, ImportRestApi and GetRestApis' items only when there are some
    (`tags=False`), as AWS's recordings show."""
    out = {k: _clone(api[k]) for k in REST_API_OUT if k in api}
    try:
        out["rootResourceId"] = root_resource(api)["id"]
    except BadRequest:
        pass
    config = out.get("endpointConfiguration")
    if config is not None and "ipAddressType" not in config:
        config["ipAddressType"] = _ip_address_type(config.get("types"))
    if tags:
        out.setdefault("tags", {})
    elif not out.get("tags"):
        out.pop("tags", None)
    return out


def check_rest_api_input(p: dict) -> None:
    """CreateRestApi's checks beyond the service model's, in AWS's order."""
    if p.get("description") == "":
        raise BadRequest(msg.DESCRIPTION_EMPTY)
    size = p.get("minimumCompressionSize")
    if size is not None and not 0 <= size <= 10485760:
        raise BadRequest(msg.COMPRESSION_SIZE)
    config = p.get("endpointConfiguration")
    if config is not None:
        types = config.get("types")
        if types is not None and len(types) == 0:
            raise BadRequest(msg.ENDPOINT_TYPES_BOTH_DISABLED)
        if types is not None and len(types) > 1:
            raise BadRequest(msg.ENDPOINT_TYPES_MULTIPLE)
        if "PRIVATE" in (types or ()) and config.get("ipAddressType") == "ipv4":
            raise BadRequest(msg.PRIVATE_NEEDS_DUALSTACK)


def resource_view(resource: dict, embed_methods: bool) -> dict:
    out = {k: _clone(resource[k]) for k in RESOURCE_OUT if k in resource}
    methods = out.get("resourceMethods")
    if methods is not None and not embed_methods:
        # without embed=methods AWS lists each method as an empty object
        out["resourceMethods"] = {m: {} for m in methods}
    if not out.get("resourceMethods"):
        out.pop("resourceMethods", None)
    return out


def _child_path(parent: dict, part: str) -> str:
    return ("" if parent["path"] == "/" else parent["path"]) + "/" + part


def api_summary(api: dict) -> dict:
    """Deployment.apiSummary: path -> method -> {authorizationType, apiKeyRequired}."""
    summary: dict[str, dict] = {}
    for r in api.get("resources", ()):
        for m, method in (r.get("resourceMethods") or {}).items():
            summary.setdefault(r["path"], {})[m] = {
                "authorizationType": method.get("authorizationType", "NONE"),
                "apiKeyRequired": bool(method.get("apiKeyRequired", False))}
    return summary


def _new_stage(name: str, deployment_id: str, p: dict, variables: dict) -> dict:
    """A Stage as CreateStage (or CreateDeployment with a new stageName) makes it."""
    now = _now()
    stage = {"stageName": name, "deploymentId": deployment_id,
             "cacheClusterEnabled": bool(p.get("cacheClusterEnabled") or False),
             "cacheClusterStatus": "NOT_AVAILABLE", "methodSettings": {},
             "tracingEnabled": bool(p.get("tracingEnabled") or False),
             "createdDate": now, "lastUpdatedDate": now}
    if variables:
        stage["variables"] = variables
    return stage


def new_api_document(p: dict) -> dict:
    api = {"id": new_id(10), "createdDate": _now()}
    for k in REST_API_KEYS:
        if p.get(k) is not None:
            api[k] = _clone(p[k])
    api.setdefault("apiKeySource", "HEADER")
    # EDGE is AWS's default (its recordings; import says the same)
    config = api.setdefault("endpointConfiguration", {})
    if not config.get("types"):
        config["types"] = ["EDGE"]
    config.setdefault("ipAddressType", _ip_address_type(config["types"]))
    api.setdefault("disableExecuteApiEndpoint", False)
    api["protocolType"] = "REST"
    api["resources"] = [{"id": new_id(10), "path": "/"}]
    return api


class RestApis(ModelBase):
    # ---- rest APIs

    def create_rest_api(self, p: dict) -> dict:
        name = _require_str(p, "name", "name")
        check_rest_api_input(p)
        with self.change() as txn:
            if p.get("cloneFrom"):
                src = _clone(self._api(p["cloneFrom"]))
                api = new_api_document({**{k: src.get(k) for k in REST_API_KEYS}, **p})
                api["resources"] = src.get("resources", api["resources"])
                for k in ("authorizers", "requestValidators", "models", "gatewayResponses",
                          "extensions", "protocolType"):
                    if k in src:
                        api[k] = src[k]
            else:
                api = new_api_document(p)
                api["models"] = default_models()
            api["name"] = name
            while api["id"] in self.state.apis:
                api["id"] = new_id(10)
            self._save_api(txn, api)
        return rest_api_view(api, tags=False)

    def get_rest_api(self, p: dict) -> dict:
        self.fresh()
        return rest_api_view(self._api(p["restApiId"]))

    def get_rest_apis(self, p: dict) -> dict:
        state = self.fresh()
        apis = sorted((a for a in state.apis.values() if not is_v2_api(a)),
                      key=lambda a: (a.get("createdDate", 0), a["id"]))
        # GetRestApis' items show tags only when there are some (AWS's recordings)
        return _page([rest_api_view(a, tags=False) for a in apis], p)

    def delete_rest_api(self, p: dict) -> dict:
        api_id = p["restApiId"]
        with self.change() as txn:
            self._api(api_id)
            for domain, mappings in self.state.mappings.items():
                for base, m in mappings.items():
                    if m.get("restApiId") == api_id:
                        raise BadRequest(f"Cannot delete this API: base path mapping "
                                         f"'{base}' of domain name '{domain}' refers to it. "
                                         "Delete the base path mapping first.")
            txn.delete("restapi", "", api_id)
            for dep_id in self.state.deployments.get(api_id, {}):
                txn.delete("deployment", api_id, dep_id)
            for name in self.state.stages.get(api_id, {}):
                txn.delete("stage", api_id, name)
        return {}

    def update_rest_api(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api(p["restApiId"])
            for op in _patch_ops(p):
                _patch_rest_api(api, op)
            self._save_api(txn, api)
        return rest_api_view(api)

    def import_rest_api(self, p: dict) -> dict:
        from fastgate.control import openapi
        params = p.get("parameters") or {}
        doc = self._load_openapi(p)
        try:
            # ImportRestApi makes a REST API whatever the document looks like (a
            # payloadFormatVersion in it is read, as AWS reads it, not taken as an HTTP API's)
            api, warnings = openapi.import_openapi(
                doc, base_path=params.get("basepath", "ignore"), protocol_type="REST",
                fail_on_warnings=bool(p.get("failOnWarnings")))
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None
        with self.change() as txn:
            while api.get("id") in self.state.apis or not api.get("id"):
                api["id"] = new_id(10)
            api.setdefault("createdDate", _now())
            self._save_api(txn, api)
        out = rest_api_view(api, tags=False)
        if warnings:
            out["warnings"] = list(warnings)
        return out

    def put_rest_api(self, p: dict) -> dict:
        from fastgate.control import openapi
        params = p.get("parameters") or {}
        mode = p.get("mode") or "merge"    # AWS's default for PutRestApi is merge
        if mode not in ("merge", "overwrite"):
            raise BadRequest(f"Invalid mode '{mode}': must be merge or overwrite")
        doc = self._load_openapi(p)
        with self.change() as txn:
            existing = self._api(p["restApiId"])
            try:
                api, warnings = openapi.import_openapi(
                    doc, base_path=params.get("basepath", "ignore"), api_id=existing["id"],
                    protocol_type="REST", fail_on_warnings=bool(p.get("failOnWarnings")), existing=_clone(existing),
                    mode=mode)
            except openapi.OpenAPIError as e:
                raise BadRequest(str(e)) from None
            api["id"] = existing["id"]
            api["createdDate"] = existing.get("createdDate", _now())
            self._save_api(txn, api)
        out = rest_api_view(api)
        if warnings:
            out["warnings"] = list(warnings)
        return out

    @staticmethod
    def _load_openapi(p: dict):
        from fastgate.control import openapi
        body = p.get("body") or b""
        if not body.strip():
            raise BadRequest("The request body must hold an OpenAPI definition")
        try:
            doc = openapi.load_document(body, "<request body>")
        except openapi.OpenAPIError as e:
            # AWS's text, then what exactly is wrong
            raise BadRequest(f"{msg.INVALID_OPENAPI} {e}") from None
        if not isinstance(doc, dict) or not ("swagger" in doc or "openapi" in doc):
            raise BadRequest(f"{msg.INVALID_OPENAPI} The document is neither Swagger 2.0 nor "
                             "OpenAPI 3 (no swagger or openapi field).")
        return doc

    def get_export(self, p: dict) -> dict:
        from fastgate.control import openapi
        self.fresh()
        api_id, stage_name = p["restApiId"], p["stageName"]
        self._api(api_id)
        stage = self._stage(api_id, stage_name)
        export_type = p["exportType"]
        if export_type not in ("oas30", "swagger"):
            raise BadRequest(f"Invalid export type '{export_type}': fastgate exports oas30 and swagger")
        params = p.get("parameters") or {}
        # extensions: a comma list of integrations, authorizers, apigateway (the
        # x-amazon-apigateway-* extensions) and documentation (the documentation parts)
        names = {e.strip() for e in params.get("extensions", "").split(",") if e.strip()}
        extensions = names - {"documentation"}
        accepts = (p.get("accepts") or "application/json").lower()
        if accepts not in ("application/json", "application/yaml", "*/*"):
            raise BadRequest(f"Invalid Accept '{accepts}': use application/json or application/yaml")
        dep = self._deployment(api_id, stage["deploymentId"])
        try:
            # documentation is not deployed: the API's own (versions, current parts)
            api_docs = {k: v for k, v in self._api(api_id).items()
                        if k in ("documentationParts", "documentationVersions")}
            doc = openapi.export_openapi({**dep["api"], **api_docs}, export_type=export_type,
                                         extensions=bool(extensions), stage=stage,
                                         documentation="documentation" in names,
                                         documentation_version=stage.get("documentationVersion"))
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None
        ext = "json"
        if accepts == "application/yaml":
            import yaml
            body = yaml.safe_dump(doc, sort_keys=False).encode()
            ext = "yaml"
        else:
            import orjson
            body = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            accepts = "application/json"
        return {"contentType": accepts, "body": body,
                "contentDisposition": f'attachment; filename="{export_type}_{dep["api"]["id"]}_'
                                      f'{stage_name}.{ext}"'}


_REST_API_FIELDS = ("name", "description", "version", "policy", "apiKeySource")


def _patch_rest_api(api: dict, op: dict) -> None:
    """One UpdateRestApi patch operation, as AWS applies it and with AWS's messages."""
    path, value, kind = op["path"], op.get("value"), op["op"]
    top = path[1:]
    if top in _REST_API_FIELDS and kind == "replace":
        if top == "name" and not value:
            raise BadRequest("name must not be blank")
        if top == "apiKeySource" and value not in API_KEY_SOURCES:
            raise BadRequest(f"Invalid API key source '{value}'")
        api[top] = value
    elif top in ("description", "version", "policy") and kind == "remove":
        api.pop(top, None)
    elif top == "minimumCompressionSize":
        if kind != "replace":
            raise BadRequest(msg.PATCH_OP_ONLY_REPLACE)
        if value in (None, ""):
            api.pop(top, None)
        elif not str(value).isdigit() or int(value) > 10485760:
            raise BadRequest(msg.COMPRESSION_SIZE)
        else:
            api[top] = int(value)
    elif top == "disableExecuteApiEndpoint" and kind == "replace":
        api[top] = _bool_value(value, path)
    elif path.startswith("/binaryMediaTypes/") and kind in ("add", "replace", "remove"):
        # "/binaryMediaTypes/image~1png"; AWS reads "-" as a media type too (its recordings)
        media = _unescape_pointer(path[len("/binaryMediaTypes/"):])
        types = api.setdefault("binaryMediaTypes", [])
        if media in types and kind != "add":
            types.remove(media)
        if kind == "add" and media not in types:
            types.append(media)
        elif kind == "replace" and value and value not in types:
            types.append(value)
        if not types:
            del api["binaryMediaTypes"]
    elif top == "endpointConfiguration/ipAddressType":
        if kind != "replace":
            raise BadRequest(msg.PATCH_OP_ONLY_REPLACE)
        if value not in ("ipv4", "dualstack"):
            raise BadRequest(msg.IP_ADDRESS_TYPE_INVALID)
        config = api.setdefault("endpointConfiguration", {"types": ["EDGE"]})
        if value == "ipv4" and "PRIVATE" in config.get("types", ()):
            raise BadRequest(msg.PRIVATE_NEEDS_DUALSTACK)
        config["ipAddressType"] = value
    elif top == "endpointConfiguration/types/0":
        if kind != "replace":
            # AWS's text lists remove although it refuses it
            raise BadRequest(msg.PATCH_OP_ADD_REMOVE_REPLACE)
        if value not in ("REGIONAL", "EDGE", "PRIVATE"):
            raise BadRequest(msg.ENDPOINT_TYPES_INVALID)
        config = api.setdefault("endpointConfiguration", {})
        config["types"] = [value]
        if value == "PRIVATE":
            config["ipAddressType"] = "dualstack"     # what a private API allows
        else:
            config.setdefault("ipAddressType", "ipv4")
    else:
        raise BadRequest(msg.PATCH_PATH.format(path=path))
