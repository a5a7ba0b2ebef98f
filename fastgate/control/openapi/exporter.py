"""Export: the API document written back as OpenAPI 3.0 or Swagger 2.0 with the
x-amazon-apigateway-* extensions (GetExport), so that import -> export -> import gives
the same model."""

from __future__ import annotations

import copy
import datetime
import json
import re
import time

from fastgate.control.names import MODEL_URL_RE
from fastgate.control.openapi.document import OpenAPIError, schemas_ref
from fastgate.control.openapi.fields import (
    ANY_METHOD,
    AUTHORIZER_FIELDS,
    INTEGRATION,
    is_aws_extension,
)


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class _Exporter:
    """One export: the API document in, the OpenAPI document out."""

    def __init__(self, api: dict, v3: bool, extensions: bool, stage: dict | None):
        self.api = api
        self.v3 = v3
        self.extensions = extensions
        self.stage = stage
        self.authorizers = {a["id"]: a for a in api.get("authorizers", [])}
        self.validators = {v["id"]: v for v in api.get("requestValidators", [])}
        self.models = {m["name"]: m for m in api.get("models", [])}
        self.schemes: dict[str, dict] = {}

    def model_ref(self, name: str) -> dict:
        if name not in self.models:
            raise OpenAPIError(f"models: model {name!r} is referenced but not defined")
        return {"$ref": schemas_ref(self.v3) + name.replace("~", "~0").replace("/", "~1")}

    def schema_from_aws(self, node):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$schema":
                    continue
                match = MODEL_URL_RE.match(value) if key == "$ref" and isinstance(value, str) else None
                out[key] = self.model_ref(match.group(1))["$ref"] if match else self.schema_from_aws(value)
            return out
        if isinstance(node, list):
            return [self.schema_from_aws(v) for v in node]
        return node

    def run(self) -> dict:
        api = self.api
        info = {"title": api.get("name", "")}
        if api.get("description"):
            info["description"] = api["description"]
        version = api.get("version")
        if version is None:
            # AWS writes the deployment's date when the API has no version.
            created = (self.stage or {}).get("createdDate", api.get("createdDate", time.time()))
            version = _iso(created) if isinstance(created, (int, float)) else str(created)
        info["version"] = version
        out: dict = {"openapi": "3.0.1"} if self.v3 else {"swagger": "2.0"}
        out["info"] = info
        base_path = None
        if self.stage and self.stage.get("stageName"):
            base_path = "/" + self.stage["stageName"]
        elif api.get("extensions", {}).get("basePath"):
            base_path = api["extensions"]["basePath"]
        if base_path and self.v3:
            out["servers"] = [{"url": "/{basePath}",
                               "variables": {"basePath": {"default": base_path}}}]
        elif base_path:
            out["basePath"] = base_path
        out["paths"] = self.paths()
        schemas = {}
        for name, model in self.models.items():
            if model.get("contentType", "application/json") != "application/json":
                raise OpenAPIError(f"models.{name}: only application/json models can be exported "
                                   f"(API Gateway's rule), not {model['contentType']}")
            try:
                schema = json.loads(model.get("schema") or "{}")
            except json.JSONDecodeError as exc:
                raise OpenAPIError(f"models.{name}.schema: not JSON: {exc.msg}") from None
            schemas[name] = self.schema_from_aws(schema)
        self.add_authorizer_schemes()
        if self.v3:
            components = {"schemas": schemas}
            if self.schemes:
                components["securitySchemes"] = self.schemes
            out["components"] = components
        else:
            if schemas:
                out["definitions"] = schemas
            if self.schemes:
                out["securityDefinitions"] = self.schemes
        self.root_extensions(out)
        return out

    def add_authorizer_schemes(self) -> None:
        for auth in self.api.get("authorizers", []):
            if not self.extensions:
                continue
            ext = {"type": auth["type"].lower()}
            for key in ("authorizerUri", "authorizerCredentials", "identitySource",
                        "identityValidationExpression", "authorizerResultTtlInSeconds",
                        *AUTHORIZER_FIELDS):
                if key in auth and key not in ext:
                    ext[key] = copy.deepcopy(auth[key])
            if auth["type"] == "JWT":
                scheme = {"type": "oauth2", "flows": {}} if self.v3 else {
                    "type": "oauth2", "flow": "implicit", "authorizationUrl": "", "scopes": {}}
            else:
                source = auth.get("identitySource", "")
                header = (source[len("method.request.header."):]
                          if re.match(r"^method\.request\.header\.[^,\s]+$", source) else None)
                scheme = {"type": "apiKey", "name": header or "Unused", "in": "header"}
            if "authType" in auth:
                scheme["x-amazon-apigateway-authtype"] = auth["authType"]
            scheme["x-amazon-apigateway-authorizer"] = ext
            self.schemes[auth["name"]] = scheme

    def paths(self) -> dict:
        paths: dict = {}
        for resource in self.api.get("resources", []):
            methods = resource.get("resourceMethods") or {}
            item: dict = {}
            for verb, method in methods.items():
                key = ANY_METHOD if verb == "ANY" else verb.lower()
                item[key] = self.operation(method, resource["path"])
            for key, value in (resource.get("extensions") or {}).items():
                if self.extensions or not is_aws_extension(key):
                    item[key] = copy.deepcopy(value)
            if item:
                paths["$default" if resource["path"] == "/$default" else resource["path"]] = item
        extensions = self.api.get("extensions", {})
        if "$default" in extensions:
            paths["$default"] = copy.deepcopy(extensions["$default"])
        for key, value in (extensions.get("paths") or {}).items():
            paths[key] = copy.deepcopy(value)
        return paths

    def string_schema(self) -> dict:
        return {"schema": {"type": "string"}} if self.v3 else {"type": "string"}

    def operation(self, method: dict, path: str) -> dict:
        op: dict = {}
        if "operationName" in method:
            op["operationId"] = method["operationName"]
        params = []
        for key, required in (method.get("requestParameters") or {}).items():
            match = re.match(r"^method\.request\.(path|querystring|header)\.(.+)$", key)
            if not match:
                continue
            loc = {"path": "path", "querystring": "query", "header": "header"}[match.group(1)]
            params.append({"name": match.group(2), "in": loc,
                           "required": True if loc == "path" else bool(required),
                           **self.string_schema()})
        models = method.get("requestModels") or {}
        if models and self.v3:
            op["requestBody"] = {"content": {ct: {"schema": self.model_ref(name)}
                                             for ct, name in models.items()},
                                 "required": True}
        elif models:
            first = next(iter(models.values()))
            op["consumes"] = [ct for ct, name in models.items() if name == first]
            params.append({"in": "body", "name": first, "required": True,
                           "schema": self.model_ref(first)})
        if params:
            op["parameters"] = params
        op["responses"] = self.responses(method, op)
        security = self.security(method)
        if security:
            op["security"] = security
        if self.extensions:
            if "requestValidatorId" in method:
                validator = self.validators.get(method["requestValidatorId"])
                if validator is None:
                    raise OpenAPIError(f"paths.{path}.{method['httpMethod']}: request validator "
                                       f"{method['requestValidatorId']!r} does not exist")
                op["x-amazon-apigateway-request-validator"] = validator["name"]
            if "methodIntegration" in method:
                op[INTEGRATION] = self.integration(method["methodIntegration"])
        for key, value in (method.get("extensions") or {}).items():
            if self.extensions or not is_aws_extension(key):
                op[key] = copy.deepcopy(value)
        return op

    def responses(self, method: dict, op: dict) -> dict:
        out = {}
        produces = []
        for status, mresp in (method.get("methodResponses") or {}).items():
            resp: dict = {"description": f"{status} response"}
            headers = {}
            for key, required in (mresp.get("responseParameters") or {}).items():
                if key.startswith("method.response.header."):
                    name = key[len("method.response.header."):]
                    headers[name] = ({"required": True} if self.v3 and required else {})
                    headers[name].update(self.string_schema())
            models = mresp.get("responseModels") or {}
            if self.v3 and models:
                resp["content"] = {ct: {"schema": self.model_ref(name)}
                                   for ct, name in models.items()}
            elif models:
                first = next(iter(models.values()))
                resp["schema"] = self.model_ref(first)
                produces.extend(ct for ct, name in models.items()
                                if name == first and ct not in produces)
            if headers:
                resp["headers"] = headers
            out[status] = resp
        if produces and not self.v3:
            op["produces"] = produces
        return out

    def security(self, method: dict) -> list:
        requirement: dict = {}
        atype = method.get("authorizationType", "NONE")
        if atype == "AWS_IAM":
            requirement["sigv4"] = []
            self.schemes.setdefault("sigv4", {"type": "apiKey", "name": "Authorization",
                                              "in": "header",
                                              "x-amazon-apigateway-authtype": "awsSigv4"})
        elif atype in ("CUSTOM", "COGNITO_USER_POOLS", "JWT") and "authorizerId" in method:
            auth = self.authorizers.get(method["authorizerId"])
            if auth is None:
                raise OpenAPIError(f"authorizer {method['authorizerId']!r} of a "
                                   f"{method['httpMethod']} method does not exist")
            requirement[auth["name"]] = list(method.get("authorizationScopes") or [])
        if method.get("apiKeyRequired"):
            requirement["api_key"] = []
            self.schemes.setdefault("api_key", {"type": "apiKey", "name": "x-api-key",
                                                "in": "header"})
        return [requirement] if requirement else []

    def integration(self, integ: dict) -> dict:
        out: dict = {"type": integ["type"].lower()}
        for key, value in integ.items():
            if key in ("type", "extensions", "integrationResponses"):
                continue
            if key == "passthroughBehavior":
                out[key] = value.lower()
            else:
                out[key] = copy.deepcopy(value)
        if integ.get("integrationResponses"):
            responses = {}
            for status, resp in integ["integrationResponses"].items():
                body = {k: copy.deepcopy(v) for k, v in resp.items() if k != "selectionPattern"}
                responses[resp.get("selectionPattern", "default")] = body
            out["responses"] = responses
        out.update(copy.deepcopy(integ.get("extensions") or {}))
        return out

    def root_extensions(self, out: dict) -> None:
        api = self.api
        if self.extensions:
            if "binaryMediaTypes" in api:
                out["x-amazon-apigateway-binary-media-types"] = list(api["binaryMediaTypes"])
            if "minimumCompressionSize" in api:
                out["x-amazon-apigateway-minimum-compression-size"] = api["minimumCompressionSize"]
            if api.get("apiKeySource", "HEADER") != "HEADER":
                out["x-amazon-apigateway-api-key-source"] = api["apiKeySource"]
            if api.get("policy"):
                out["x-amazon-apigateway-policy"] = json.loads(api["policy"])
            if api.get("gatewayResponses"):
                out["x-amazon-apigateway-gateway-responses"] = {
                    rtype: {k: copy.deepcopy(v) for k, v in resp.items()
                            if k in ("statusCode", "responseParameters", "responseTemplates")}
                    for rtype, resp in api["gatewayResponses"].items()}
            if api.get("requestValidators"):
                out["x-amazon-apigateway-request-validators"] = {
                    v["name"]: {"validateRequestBody": v.get("validateRequestBody", False),
                                "validateRequestParameters": v.get("validateRequestParameters",
                                                                   False)}
                    for v in api["requestValidators"]}
            endpoint = {}
            if api.get("endpointConfiguration", {}).get("vpcEndpointIds"):
                endpoint["vpcEndpointIds"] = list(api["endpointConfiguration"]["vpcEndpointIds"])
            if api.get("disableExecuteApiEndpoint"):
                endpoint["disableExecuteApiEndpoint"] = True
            if endpoint and self.v3:
                out.setdefault("servers", [{"url": "/"}])[0][
                    "x-amazon-apigateway-endpoint-configuration"] = endpoint
            elif endpoint:
                out["x-amazon-apigateway-endpoint-configuration"] = endpoint
        if api.get("tags"):
            out["tags"] = [{"name": k, "x-amazon-apigateway-tag-value": v}
                           for k, v in api["tags"].items()]
        for key, value in (api.get("extensions") or {}).items():
            if key.startswith("x-") and (self.extensions or not is_aws_extension(key)):
                out[key] = copy.deepcopy(value)


def export_openapi(api: dict, *, export_type: str = "oas30", extensions: bool = True,
                   stage: dict | None = None, documentation: bool = False,
                   documentation_version: str | None = None) -> dict:
    """Write the API document as OpenAPI 3.0 ("oas30") or Swagger 2.0 ("swagger").

    extensions=True is GetExport's `extensions=integrations,authorizers,apigateway`,
    documentation=True its `extensions=documentation`. With a stage (a Stage dict), the base
    path is the stage name, as in AWS's export.
    """
    if export_type not in ("oas30", "swagger"):
        raise OpenAPIError(f"exportType: {export_type!r} is not oas30 or swagger")
    out = _Exporter(api, export_type == "oas30", extensions, stage).run()
    if documentation:
        # GetExport's extensions=documentation: the parts (of the stage's documentation
        # version, when it names one) as x-amazon-apigateway-documentation
        from fastgate.control.openapi.documentation import EXTENSION, export_documentation
        docs = export_documentation(api, documentation_version)
        if docs is not None:
            out[EXTENSION] = docs
    return out
