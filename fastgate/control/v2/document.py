"""An apigatewayv2 API <-> the API document the data plane and the OpenAPI code read.

fastgate/compile/apis.py serves API documents in the REST management shapes (resources
with methods and their methodIntegration, authorizers, models), with `protocolType` HTTP
for an HTTP API: that is how imported HTTP APIs are served (docs/openapi.md). An
apigatewayv2 API keeps AWS's v2 shapes instead (routes, integrations, authorizers by id);
`data_plane_document` writes it in the document shape when it is deployed or exported, and
`v2_from_document` reads an imported document back into routes and integrations, so both
kinds of HTTP API reach the same compiler, importer and exporter.

    route "GET /pets/{id}"      resource "/pets/{id}", resourceMethods["GET"]
    route "ANY /{proxy+}"       resource "/{proxy+}", resourceMethods["ANY"]
    route "$default"            resource "/$default", resourceMethods["ANY"]
    route.target                "integrations/ID": that integration as methodIntegration
    corsConfiguration           extensions["x-amazon-apigateway-cors"]
"""

from __future__ import annotations

import re

from fastgate.control.model.base import _clone

DEFAULT_ROUTE = "$default"
DEFAULT_PATH = "/$default"
PATH_PARAM = re.compile(r"\{([^}+]+)\+?\}")

# Integration (v2) member -> methodIntegration key, where the names differ
_INTEGRATION_KEYS = {"integrationType": "type", "integrationUri": "uri",
                     "integrationMethod": "httpMethod", "credentialsArn": "credentials"}
_INTEGRATION_SAME = ("connectionType", "connectionId", "payloadFormatVersion", "timeoutInMillis",
                     "requestParameters", "responseParameters", "tlsConfig", "integrationSubtype",
                     "description", "passthroughBehavior", "requestTemplates",
                     "templateSelectionExpression", "contentHandlingStrategy")
_AUTHORIZER_KEYS = {"authorizerId": "id", "authorizerType": "type",
                    "authorizerCredentialsArn": "authorizerCredentials"}
_AUTHORIZER_SAME = ("name", "jwtConfiguration", "authorizerUri", "authorizerResultTtlInSeconds",
                    "authorizerPayloadFormatVersion", "enableSimpleResponses",
                    "identityValidationExpression")
_ROUTE_SAME = ("authorizationType", "authorizerId", "authorizationScopes", "apiKeyRequired",
               "operationName")


def split_route_key(route_key: str) -> tuple[str, str]:
    """(METHOD, path) of a route key; ("ANY", "/$default") for $default."""
    if route_key == DEFAULT_ROUTE:
        return "ANY", DEFAULT_PATH
    method, _, path = route_key.partition(" ")
    return method, path


def route_key_of(method: str, path: str) -> str:
    return DEFAULT_ROUTE if path == DEFAULT_PATH else f"{method} {path}"


def target_integration(route: dict) -> str | None:
    """The integration id a route's target names ("integrations/abc1234"), or None."""
    target = route.get("target") or ""
    return target[len("integrations/"):] if target.startswith("integrations/") else None


def method_integration(integ: dict, vpc_links: dict) -> dict:
    out = {dst: _clone(integ[src]) for src, dst in _INTEGRATION_KEYS.items() if integ.get(src) is not None}
    out.update({k: _clone(integ[k]) for k in _INTEGRATION_SAME if integ.get(k) is not None})
    if integ.get("connectionType") == "VPC_LINK":
        link = vpc_links.get(integ.get("connectionId") or "")
        if link is not None:
            # the upstream group the link names, frozen with the deployment
            out["upstreamGroup"] = link["name"]
    return out


def data_plane_document(api: dict, vpc_links: dict | None = None) -> dict:
    """The API as the data plane, the exporter and /routes read it (see the module doc)."""
    vpc_links = vpc_links or {}
    doc = {k: _clone(api[k]) for k in ("id", "name", "description", "version", "createdDate",
                                       "disableExecuteApiEndpoint", "tags") if k in api}
    doc["protocolType"] = api.get("protocolType", "HTTP")
    integrations = api.get("integrations") or {}
    resources: dict[str, dict] = {}
    for route in sorted((api.get("routes") or {}).values(), key=lambda r: r["routeKey"]):
        method, path = split_route_key(route["routeKey"])
        res = resources.setdefault(path, {"id": route["routeId"], "path": path,
                                          "resourceMethods": {}})
        spec = {"httpMethod": method}
        spec.update({k: _clone(route[k]) for k in _ROUTE_SAME if route.get(k) is not None})
        spec["routeId"] = route["routeId"]
        params = {f"method.request.path.{name}": True for name in PATH_PARAM.findall(path)}
        if params:
            spec["requestParameters"] = params
        integ = integrations.get(target_integration(route) or "")
        if integ is not None:
            spec["methodIntegration"] = method_integration(integ, vpc_links)
        res["resourceMethods"][method] = spec
    doc["resources"] = [{"id": "root", "path": "/"}] * ("/" not in resources) + \
        [resources[p] for p in sorted(resources)]
    doc["authorizers"] = []
    for auth in sorted((api.get("authorizers") or {}).values(), key=lambda a: a["name"]):
        out = {dst: _clone(auth[src]) for src, dst in _AUTHORIZER_KEYS.items() if auth.get(src) is not None}
        out.update({k: _clone(auth[k]) for k in _AUTHORIZER_SAME if auth.get(k) is not None})
        if auth.get("identitySource"):
            # the document's form: one comma-separated string, as in the OpenAPI extension
            out["identitySource"] = ", ".join(auth["identitySource"])
        doc["authorizers"].append(out)
    doc["models"] = [{"id": m["modelId"], **{k: m[k] for k in ("name", "contentType", "schema",
                                                                  "description") if k in m}}
                     for m in sorted((api.get("models") or {}).values(), key=lambda m: m["name"])]
    doc["extensions"] = {}
    if api.get("corsConfiguration"):
        doc["extensions"]["x-amazon-apigateway-cors"] = _clone(api["corsConfiguration"])
    return doc


def v2_from_document(doc: dict, new_id) -> dict:
    """An imported API document as apigatewayv2 members: name, description, version,
    corsConfiguration, and routes, integrations (one per route), authorizers and models by
    id. new_id(kind) makes an id unique within the API."""
    out: dict = {k: doc[k] for k in ("name", "description", "version") if doc.get(k) is not None}
    cors = (doc.get("extensions") or {}).get("x-amazon-apigateway-cors")
    if cors:
        out["corsConfiguration"] = _clone(cors)
    if doc.get("disableExecuteApiEndpoint"):
        out["disableExecuteApiEndpoint"] = True
    out["authorizers"] = {}
    auth_ids = {}
    for a in doc.get("authorizers") or ():
        auth = {"authorizerId": new_id("authorizer"), "name": a["name"],
                "authorizerType": a.get("type", "REQUEST")}
        for src, dst in _AUTHORIZER_KEYS.items():
            if dst in a and src not in ("authorizerId", "authorizerType"):
                auth[src] = _clone(a[dst])
        auth.update({k: _clone(a[k]) for k in _AUTHORIZER_SAME if a.get(k) is not None and k != "name"})
        if a.get("identitySource"):
            auth["identitySource"] = [s.strip() for s in a["identitySource"].split(",") if s.strip()]
        auth_ids[a["id"]] = auth["authorizerId"]
        out["authorizers"][auth["authorizerId"]] = auth
    out["routes"], out["integrations"] = {}, {}
    for res in doc.get("resources") or ():
        for method, spec in sorted((res.get("resourceMethods") or {}).items()):
            route = {"routeId": new_id("route"), "routeKey": route_key_of(method, res["path"]),
                     "apiKeyRequired": bool(spec.get("apiKeyRequired", False)),
                     "authorizationType": spec.get("authorizationType") or "NONE"}
            if spec.get("authorizerId") in auth_ids:
                route["authorizerId"] = auth_ids[spec["authorizerId"]]
            for k in ("authorizationScopes", "operationName"):
                if spec.get(k):
                    route[k] = _clone(spec[k])
            mi = spec.get("methodIntegration")
            if mi:
                integ = {"integrationId": new_id("integration")}
                for src, dst in _INTEGRATION_KEYS.items():
                    if mi.get(dst) is not None:
                        integ[src] = _clone(mi[dst])
                integ.update({k: _clone(mi[k]) for k in _INTEGRATION_SAME if mi.get(k) is not None})
                out["integrations"][integ["integrationId"]] = integ
                route["target"] = f"integrations/{integ['integrationId']}"
            out["routes"][route["routeId"]] = route
    out["models"] = {}
    for m in doc.get("models") or ():
        model = {"modelId": new_id("model"), "name": m["name"],
                 "contentType": m.get("contentType", "application/json")}
        if m.get("schema") is not None:
            model["schema"] = m["schema"]
        if m.get("description"):
            model["description"] = m["description"]
        out["models"][model["modelId"]] = model
    return out
