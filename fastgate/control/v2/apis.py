"""Apis: create (with quick create), get, update, delete, CORS, and OpenAPI import, reimport
and export."""

from __future__ import annotations

from fastgate.control.errors import BadRequest, NotFound
from fastgate.control.model.base import _clone, _now
from fastgate.control.v2.base import (KIND_API, PROTOCOLS, SERVICE_MARK, V2Base, fresh_id, is_lambda_arn,
                                      is_v2, page)
from fastgate.control.v2.document import DEFAULT_ROUTE, data_plane_document, v2_from_document
from fastgate.control.v2.websocket import check_api_key_selection, check_selection, is_websocket

# what GetApi returns: AWS's Api members
API_OUT = ("apiId", "name", "protocolType", "routeSelectionExpression", "apiKeySelectionExpression",
           "apiEndpoint", "createdDate", "description", "version", "corsConfiguration",
           "disableExecuteApiEndpoint", "disableSchemaValidation", "ipAddressType", "tags",
           "warnings", "importInfo", "apiGatewayManaged")
# HTTP APIs accept one route selection expression (AWS: "$request.method $request.path";
# the console writes it with braces)
HTTP_ROUTE_SELECTION = "$request.method $request.path"
HTTP_ROUTE_SELECTION_FORMS = (HTTP_ROUTE_SELECTION, "${request.method} ${request.path}")
API_KEY_SELECTION = "$request.header.x-api-key"
CORS_KEYS = ("allowCredentials", "allowHeaders", "allowMethods", "allowOrigins", "exposeHeaders",
             "maxAge")
ID_LENGTHS = {"route": 7, "integration": 7, "authorizer": 6, "model": 6}
EXPORT_VERSION = "1.0"


def check_cors(cors) -> dict:
    """A CORS configuration as AWS accepts it, checked by the compiler the data plane uses."""
    from fastgate.phases.cors import CorsConfig
    if not isinstance(cors, dict):
        raise BadRequest("Invalid CORS configuration")
    try:
        CorsConfig.from_api({"corsConfiguration": cors})
    except ValueError as e:
        raise BadRequest(f"Invalid CORS configuration: {e}") from None
    return {k: _clone(cors[k]) for k in CORS_KEYS if cors.get(k) is not None}


class Apis(V2Base):
    # ---- views

    def api_view(self, api: dict) -> dict:
        out = {k: _clone(api[k]) for k in API_OUT if api.get(k) is not None}
        out["apiEndpoint"] = self.endpoint_base.format(api_id=api["id"])
        if is_websocket(api):       # AWS: wss://{apiId}.execute-api.{region}.amazonaws.com
            out["apiEndpoint"] = "ws" + out["apiEndpoint"][len("http"):]
        return out

    def _new_child_id(self, api: dict, kind: str) -> str:
        taken = set(api.get(kind + "s") or ())
        return fresh_id(taken, ID_LENGTHS[kind])

    # ---- CreateApi, quick create

    def create_api(self, p: dict) -> dict:
        protocol = p.get("protocolType")
        if protocol not in PROTOCOLS:
            raise BadRequest(f"Invalid protocol specified. Must be one of [HTTP, WEBSOCKET]")
        name = p.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("Name must not be blank")
        quick = p.get("target") is not None
        ws = protocol == "WEBSOCKET"
        if ws and (quick or p.get("corsConfiguration") is not None):
            raise BadRequest("Target, RouteKey, CredentialsArn and CorsConfiguration are supported "
                             "only for HTTP APIs")
        if not quick and (p.get("routeKey") is not None or p.get("credentialsArn") is not None):
            raise BadRequest("RouteKey and CredentialsArn are only supported with Target (quick create)")
        with self.change() as txn:
            api = {"service": SERVICE_MARK, "id": fresh_id(self.state.apis, 10), "name": name,
                   "protocolType": protocol, "createdDate": _now(),
                   "routeSelectionExpression": self._route_selection(p.get("routeSelectionExpression"), ws),
                   "apiKeySelectionExpression": check_api_key_selection(p.get("apiKeySelectionExpression"))
                   if ws else p.get("apiKeySelectionExpression") or API_KEY_SELECTION,
                   "disableExecuteApiEndpoint": bool(p.get("disableExecuteApiEndpoint", False)),
                   "ipAddressType": p.get("ipAddressType") or "ipv4",
                   "routes": {}, "integrations": {}, "authorizers": {}, "models": {}}
            api["apiId"] = api["id"]
            for k in ("description", "version", "tags"):
                if p.get(k) is not None:
                    api[k] = _clone(p[k])
            if p.get("corsConfiguration") is not None:
                api["corsConfiguration"] = check_cors(p["corsConfiguration"])
            if quick:
                self._quick_create(txn, api, p)
            else:
                self._save_api2(txn, api, redeploy=False)
        return self.api_view(api)

    @staticmethod
    def _route_selection(expr, websocket: bool = False) -> str:
        if websocket:
            return check_selection(expr)
        if expr is None or expr in HTTP_ROUTE_SELECTION_FORMS:
            return HTTP_ROUTE_SELECTION
        raise BadRequest(f"Unsupported route selection expression for HTTP Api: {expr}. Only "
                         f"{HTTP_ROUTE_SELECTION} is supported.")

    def _quick_integration(self, target: str, credentials) -> dict:
        if target.startswith(("http://", "https://")):
            integ = {"integrationType": "HTTP_PROXY", "integrationMethod": "ANY",
                     "integrationUri": target, "payloadFormatVersion": "1.0"}
        elif is_lambda_arn(target):
            integ = {"integrationType": "AWS_PROXY", "integrationMethod": "POST",
                     "integrationUri": target, "payloadFormatVersion": "2.0"}
        else:
            raise BadRequest(f"Invalid target: {target}. The target must be an HTTP(S) URL or a "
                             "Lambda function ARN.")
        integ.update(connectionType="INTERNET", timeoutInMillis=30000, apiGatewayManaged=True)
        if credentials:
            integ["credentialsArn"] = credentials
        return integ

    def _quick_create(self, txn, api: dict, p: dict) -> None:
        """AWS's quick create: an integration with the target, a route (`$default` unless
        routeKey says) to it, and a `$default` stage that deploys every change."""
        from fastgate.control.v2.routes import check_route_key
        route_key = check_route_key(p.get("routeKey") or DEFAULT_ROUTE)
        integ = self._quick_integration(p["target"], p.get("credentialsArn"))
        integ["integrationId"] = self._new_child_id(api, "integration")
        api["integrations"][integ["integrationId"]] = integ
        route = {"routeId": self._new_child_id(api, "route"), "routeKey": route_key,
                 "target": f"integrations/{integ['integrationId']}", "authorizationType": "NONE",
                 "apiKeyRequired": False, "apiGatewayManaged": True}
        api["routes"][route["routeId"]] = route
        api["quickCreate"] = {"routeId": route["routeId"], "integrationId": integ["integrationId"]}
        self._save_api2(txn, api, redeploy=False)
        now = _now()
        stage = {"stageName": "$default", "autoDeploy": True, "apiGatewayManaged": True,
                 "createdDate": now, "lastUpdatedDate": now, "defaultRouteSettings":
                 {"detailedMetricsEnabled": False}, "routeSettings": {}, "stageVariables": {},
                 "tags": {}}
        self._deploy(txn, api, stage, description=None, auto=True)

    # ---- Get, GetApis, Update, Delete

    def get_api(self, p: dict) -> dict:
        self.fresh()
        return self.api_view(self._api2(p["apiId"]))

    def get_apis(self, p: dict) -> dict:
        state = self.fresh()
        apis = sorted((a for a in state.apis.values() if is_v2(a)),
                      key=lambda a: (a.get("createdDate", 0), a["id"]))
        return page([self.api_view(a) for a in apis], p)

    def update_api(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            if p.get("name") is not None:
                if not p["name"]:
                    raise BadRequest("Name must not be blank")
                api["name"] = p["name"]
            ws = is_websocket(api)
            if ws and any(p.get(k) is not None for k in ("target", "routeKey", "credentialsArn",
                                                          "corsConfiguration")):
                raise BadRequest("Target, RouteKey, CredentialsArn and CorsConfiguration are "
                                 "supported only for HTTP APIs")
            if ws and p.get("apiKeySelectionExpression") is not None:
                check_api_key_selection(p["apiKeySelectionExpression"])
            for k in ("description", "version", "apiKeySelectionExpression", "ipAddressType"):
                if p.get(k) is not None:
                    api[k] = p[k]
            for k in ("disableExecuteApiEndpoint", "disableSchemaValidation"):
                if p.get(k) is not None:
                    api[k] = bool(p[k])
            if p.get("routeSelectionExpression") is not None:
                api["routeSelectionExpression"] = self._route_selection(p["routeSelectionExpression"], ws)
            if p.get("corsConfiguration") is not None:
                api["corsConfiguration"] = check_cors(p["corsConfiguration"])
            if any(p.get(k) is not None for k in ("target", "routeKey", "credentialsArn")):
                self._update_quick_create(api, p)
            self._save_api2(txn, api)
        return self.api_view(api)

    def _update_quick_create(self, api: dict, p: dict) -> None:
        """UpdateApi's target/routeKey/credentialsArn change the route and integration that
        quick create made (AWS: only for an API made by quick create)."""
        from fastgate.control.v2.routes import check_route_key
        quick = api.get("quickCreate") or {}
        route = api["routes"].get(quick.get("routeId", ""))
        integ = api["integrations"].get(quick.get("integrationId", ""))
        if route is None or integ is None:
            raise BadRequest("Target, RouteKey and CredentialsArn can be updated only for an API "
                             "created with quick create")
        if p.get("routeKey") is not None:
            key = check_route_key(p["routeKey"])
            if any(r["routeKey"] == key and r is not route for r in api["routes"].values()):
                raise BadRequest(f"Route with key {key} already exists for this API")
            route["routeKey"] = key
        if p.get("target") is not None:
            fresh = self._quick_integration(p["target"], p.get("credentialsArn") or integ.get("credentialsArn"))
            fresh["integrationId"] = integ["integrationId"]
            api["integrations"][integ["integrationId"]] = fresh
        elif p.get("credentialsArn") is not None:
            integ["credentialsArn"] = p["credentialsArn"]

    def delete_api(self, p: dict) -> dict:
        api_id = p["apiId"]
        with self.change() as txn:
            self._api2(api_id)
            for domain, mappings in self.state.mappings.items():
                for base, m in mappings.items():
                    if m.get("restApiId") == api_id:
                        raise BadRequest(f"Cannot delete this API: API mapping '{base}' of domain "
                                         f"name '{domain}' refers to it. Delete the API mapping first.")
            txn.delete(KIND_API, "", api_id)
            for dep_id in self.state.deployments.get(api_id, {}):
                txn.delete("deployment", api_id, dep_id)
            for name in self.state.stages.get(api_id, {}):
                txn.delete("stage", api_id, name)
        return {}

    def delete_cors_configuration(self, p: dict) -> dict:
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            if api.pop("corsConfiguration", None) is None:
                raise NotFound("Invalid CORS configuration: the API has none")
            self._save_api2(txn, api)
        return {}

    # ---- OpenAPI

    def _import_document(self, p: dict, api_id: str):
        from fastgate.control import openapi
        body = p.get("body")
        if not isinstance(body, str) or not body.strip():
            raise BadRequest("The request body must hold an OpenAPI definition")
        basepath = p.get("basepath") or "ignore"
        if basepath not in ("ignore", "prepend", "split"):
            raise BadRequest(f"Invalid basepath '{basepath}': use ignore, prepend or split")
        try:
            doc = openapi.load_document(body.encode(), "<request body>")
            return openapi.import_openapi(doc, base_path=basepath, api_id=api_id,
                                          protocol_type="HTTP",
                                          fail_on_warnings=bool(p.get("failOnWarnings")))
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None

    def _members_from(self, api: dict, imported: dict) -> None:
        taken: dict[str, set] = {k: set() for k in ID_LENGTHS}

        def new_id(kind: str) -> str:
            i = fresh_id(taken[kind], ID_LENGTHS[kind])
            taken[kind].add(i)
            return i
        members = v2_from_document(imported, new_id)
        for k in ("description", "version", "corsConfiguration"):
            api.pop(k, None)
        api.update(members)
        if api.get("corsConfiguration"):
            api["corsConfiguration"] = check_cors(api["corsConfiguration"])
        api.pop("quickCreate", None)

    def import_api(self, p: dict) -> dict:
        with self.change() as txn:
            api_id = fresh_id(self.state.apis, 10)
            imported, warnings = self._import_document(p, api_id)
            api = {"service": SERVICE_MARK, "id": api_id, "apiId": api_id, "protocolType": "HTTP",
                   "createdDate": _now(), "routeSelectionExpression": HTTP_ROUTE_SELECTION,
                   "apiKeySelectionExpression": API_KEY_SELECTION,
                   "disableExecuteApiEndpoint": False, "ipAddressType": "ipv4"}
            self._members_from(api, imported)
            if warnings:
                api["warnings"] = list(warnings)
            self._save_api2(txn, api, redeploy=False)
        return self.api_view(api)

    def reimport_api(self, p: dict) -> dict:
        """ReimportApi overwrites the API's definition (AWS: "the API definition is
        overwritten"); its id, creation date, stages and deployments stay."""
        with self.change() as txn:
            api = self._edit_api2(p["apiId"])
            if is_websocket(api):
                raise BadRequest("ReimportApi is supported only for HTTP APIs")
            imported, warnings = self._import_document(p, api["id"])
            self._members_from(api, imported)
            api.pop("warnings", None)
            if warnings:
                api["warnings"] = list(warnings)
            self._save_api2(txn, api)
        return self.api_view(api)

    def export_api(self, p: dict) -> dict:
        from fastgate.control import openapi
        self.fresh()
        api = self._api2(p["apiId"])
        if is_websocket(api):
            raise BadRequest("Exporting is supported only for HTTP APIs")
        if p["specification"] != "OAS30":
            raise BadRequest(f"Invalid specification '{p['specification']}': only OAS30 is supported")
        output = p["outputType"]
        if output not in ("JSON", "YAML"):
            raise BadRequest(f"Invalid outputType '{output}': use JSON or YAML")
        version = p.get("exportVersion") or EXPORT_VERSION
        if version != EXPORT_VERSION:
            raise BadRequest(f"Invalid exportVersion '{version}': only {EXPORT_VERSION} is supported")
        stage = None
        if p.get("stageName"):
            stage = self._stage2(api["id"], p["stageName"])
            if not stage.get("deploymentId"):
                raise BadRequest(f"Stage {p['stageName']} has no deployment to export")
            doc = self._deployment2(api["id"], stage["deploymentId"])["api"]
        else:
            doc = data_plane_document(api, (self.state.extra.get("vpclink") or {}).get("", {}))
        include = p.get("includeExtensions")
        try:
            out = openapi.export_openapi(doc, export_type="oas30",
                                         extensions=include is None or bool(include),
                                         stage={"stageName": stage["stageName"]} if stage else None)
        except openapi.OpenAPIError as e:
            raise BadRequest(str(e)) from None
        if include is None or include:
            out["x-amazon-apigateway-importexport-version"] = EXPORT_VERSION
        if output == "YAML":
            import yaml
            return {"body": yaml.safe_dump(out, sort_keys=False).encode()}
        import orjson
        return {"body": orjson.dumps(out, option=orjson.OPT_INDENT_2)}
