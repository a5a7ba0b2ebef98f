"""Methods: what an OpenAPI operation becomes in API Gateway — its request parameters,
request and response models, method responses, authorization, request validator and
integration."""

from __future__ import annotations

import copy
import re

from fastgate.control.names import HTTP_METHODS
from fastgate.control.openapi.document import Document, OpenAPIError
from fastgate.control.openapi.fields import (
    ANY_METHOD,
    INTEGRATION,
    is_aws_extension,
    not_implemented,
    status_code,
)
from fastgate.control.openapi.integrations import integration
from fastgate.control.openapi.models import Models
from fastgate.control.openapi.security import Security, auth_extension
from fastgate.control.openapi.validators import EXTENSION as VALIDATOR_EXTENSION
from fastgate.control.openapi.validators import RequestValidators

# A path item's operations (x-amazon-apigateway-any-method is API Gateway's ANY).
OPERATION_KEYS = tuple(m.lower() for m in HTTP_METHODS if m != "ANY")
# parameter `in` -> the location in API Gateway's method.request.LOCATION.NAME
_PARAM_LOCATIONS = {"path": "path", "query": "querystring", "header": "header"}


class Methods:
    """Makes the Methods of one import's path items."""

    def __init__(self, document: Document, rest: bool, models: Models, security: Security,
                 validators: RequestValidators, warnings: list[str]):
        self.document = document
        self.rest = rest            # a REST API, else an HTTP API
        self.models = models
        self.security = security
        self.validators = validators
        self.warnings = warnings

    def add_path_item(self, resource: dict, item: dict, where: str, parts: list[str]) -> None:
        """The methods of a path item's operations, on its resource; `parts` are the path's
        parts as the document writes them (without the base path)."""
        shared_params = item.get("parameters") or []
        methods = {}
        for key, value in item.items():
            at = f"{where}.{key}"
            if key in OPERATION_KEYS or key == ANY_METHOD:
                verb = "ANY" if key == ANY_METHOD else key.upper()
                op = self.document.resolve(value, at)
                if not isinstance(op, dict):
                    raise OpenAPIError(f"{at}: an operation must be an object")
                methods[verb] = self._method(verb, op, at, parts, shared_params, resource.get("path", "/"))
            elif key in ("parameters", "summary", "description", "servers", "$ref"):
                continue
            elif key.startswith("x-"):
                if is_aws_extension(key):
                    self.warnings.append(not_implemented(key, where))
                resource.setdefault("extensions", {})[key] = copy.deepcopy(value)
            elif key == "trace":
                raise OpenAPIError(f"{at}: API Gateway has no TRACE method")
            else:
                raise OpenAPIError(f"{at}: {key!r} is not an HTTP method or path item field")
        if methods:
            existing = resource.setdefault("resourceMethods", {})
            existing.update(methods)

    def _method(self, verb: str, op: dict, where: str, parts: list[str], shared_params,
                resource_path: str = "/") -> dict:
        method: dict = {"httpMethod": verb, "authorizationType": "NONE", "apiKeyRequired": False}
        if isinstance(op.get("operationId"), str):
            method["operationName"] = op["operationId"]
        params = self._request_parameters(op, shared_params, parts, where)
        if params:
            method["requestParameters"] = params
        models = self._request_models(op, verb, where)
        if models:
            method["requestModels"] = models
        self.security.apply(method, op, where)
        validator_id = self.validators.for_operation(op, where)
        if validator_id is not None:
            method["requestValidatorId"] = validator_id
        responses = self._method_responses(op, verb, where)
        if responses:
            method["methodResponses"] = responses
        for key, value in op.items():
            at = f"{where}.{key}"
            if key == INTEGRATION:
                method["methodIntegration"] = integration(
                    self.document.resolve(value, at), at, method, self.rest, self.warnings,
                    resource_path)
            elif key == "x-amazon-apigateway-auth":
                auth_extension(method, value, at)
            elif key == VALIDATOR_EXTENSION:
                continue
            elif key.startswith("x-"):
                if is_aws_extension(key):
                    self.warnings.append(not_implemented(key, where))
                method.setdefault("extensions", {})[key] = copy.deepcopy(value)
        return method

    def _request_parameters(self, op: dict, shared_params, parts: list[str], where: str) -> dict:
        found: dict[tuple, dict] = {}
        for source, plist in (("parameters", shared_params), ("parameters", op.get("parameters"))):
            if plist is None:
                continue
            if not isinstance(plist, list):
                raise OpenAPIError(f"{where}.{source}: must be a list")
            for i, param in enumerate(plist):
                at = f"{where}.parameters.{i}"
                param = self.document.resolve(param, at)
                if not isinstance(param, dict) or "in" not in param or "name" not in param:
                    raise OpenAPIError(f"{at}: a parameter needs 'name' and 'in'")
                found[(param["in"], param["name"])] = param  # operation overrides path item
        params = {}
        # Path parameters come from the path template itself, declared or not.
        for part in parts:
            if part.startswith("{"):
                params[f"method.request.path.{part.strip('{}').rstrip('+')}"] = True
        for (loc, name), param in found.items():
            if loc in ("body", "formData"):
                continue  # bodies become requestModels
            if loc not in _PARAM_LOCATIONS:
                self.warnings.append(
                    f"{loc} parameter {name!r} at {where}: API Gateway has no {loc} "
                    "request parameters; not imported")
                continue
            key = f"method.request.{_PARAM_LOCATIONS[loc]}.{name}"
            if loc == "path":
                if key not in params:
                    raise OpenAPIError(f"{where}.parameters: path parameter {name!r} is not "
                                       "in the path")
                continue
            params[key] = bool(param.get("required", False))
        return params

    def _request_models(self, op: dict, verb: str, where: str) -> dict:
        models = {}
        if self.document.v3:
            body = op.get("requestBody")
            if body is None:
                return models
            at = f"{where}.requestBody"
            body = self.document.resolve(body, at)
            content = body.get("content") if isinstance(body, dict) else None
            if not isinstance(content, dict):
                raise OpenAPIError(f"{at}.content: required")
            for ctype, media in content.items():
                schema = media.get("schema") if isinstance(media, dict) else None
                if schema is not None:
                    models[ctype] = self.models.for_schema(
                        schema, f"{self._name(op, verb, where)}Input",
                        f"{at}.content.{ctype}.schema")
            return models
        for i, param in enumerate(op.get("parameters") or ()):
            at = f"{where}.parameters.{i}"
            param = self.document.resolve(param, at)
            if isinstance(param, dict) and param.get("in") == "body" and "schema" in param:
                consumes = (op.get("consumes") or self.document.root.get("consumes")
                            or ["application/json"])
                name = self.models.for_schema(
                    param["schema"], f"{self._name(op, verb, where)}Input", f"{at}.schema")
                for ctype in consumes:
                    models[ctype] = name
        return models

    @staticmethod
    def _name(op: dict, verb: str, where: str):
        """What an operation's inline models are named after: its operationId, else its
        verb and path ("GET" + "PetsPetId")."""
        path = where.split(".", 1)[1].rsplit(".", 1)[0]
        return op.get("operationId") or verb + "".join(
            p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", path))

    def _method_responses(self, op: dict, verb: str, where: str) -> dict:
        responses = op.get("responses")
        if responses is None:
            return {}
        if not isinstance(responses, dict):
            raise OpenAPIError(f"{where}.responses: must be an object")
        out = {}
        for status, response in responses.items():
            at = f"{where}.responses.{status}"
            if status.startswith("x-"):
                continue
            if status == "default":
                self.warnings.append(f"responses.default at {where}: API Gateway method "
                                     "responses need a status code; not imported")
                continue
            response = self.document.resolve(response, at)
            if not isinstance(response, dict):
                raise OpenAPIError(f"{at}: must be an object")
            mresp: dict = {"statusCode": status_code(status, at)}
            headers = response.get("headers") or {}
            if headers:
                mresp["responseParameters"] = {
                    f"method.response.header.{name}": bool(
                        self.document.v3 and isinstance(spec, dict)
                        and self.document.resolve(spec, f"{at}.headers.{name}").get("required",
                                                                                    False))
                    for name, spec in headers.items()}
            base = f"{self._name(op, verb, where)}{status}Response"
            models = {}
            if self.document.v3:
                for ctype, media in (response.get("content") or {}).items():
                    schema = media.get("schema") if isinstance(media, dict) else None
                    if schema is not None:
                        models[ctype] = self.models.for_schema(schema, base,
                                                               f"{at}.content.{ctype}.schema")
            elif "schema" in response:
                name = self.models.for_schema(response["schema"], base, f"{at}.schema")
                produces = (op.get("produces") or self.document.root.get("produces")
                            or ["application/json"])
                for ctype in produces:
                    models[ctype] = name
            if models:
                mresp["responseModels"] = models
            out[mresp["statusCode"]] = mresp
        return out
