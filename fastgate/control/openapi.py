"""OpenAPI 2.0 / 3.0 / 3.1 import and export, in Amazon API Gateway's own shapes.

`import_openapi` turns an OpenAPI (or Swagger) document with the
`x-amazon-apigateway-*` extensions into "the API document": one JSON-serialisable dict
in the camelCase shapes of API Gateway's REST management API (RestApi, Resource, Method,
Integration, Authorizer, RequestValidator, Model, GatewayResponse), plus a few fastgate
keys (`protocolType`, `extensions`, HTTP API integration fields). `export_openapi` writes
such a document back as OpenAPI with the extensions, so that
import -> export -> import gives the same model.

What each extension maps to, and where fastgate departs from AWS, is in docs/openapi.md.
"""

import copy
import datetime
import json
import re
import secrets
import string
import time

import yaml

__all__ = ["OpenAPIError", "load_document", "import_openapi", "export_openapi"]


class OpenAPIError(ValueError):
    """A document fastgate cannot import or export; the message names the location."""


# ---------------------------------------------------------------------------------------
# Loading


class _Loader(yaml.SafeLoader):
    """YAML loader that keeps scalars the way a JSON reader would see them.

    YAML 1.1 turns `version: 2016-09-12T23:19:28Z` into a datetime and `200:` response
    keys into ints; neither survives JSON and OpenAPI means strings in both places.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    mapping = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            key = json.dumps(key) if isinstance(key, bool) or key is None else str(key)
        if key in mapping:
            mark = key_node.start_mark
            raise OpenAPIError(
                f"{mark.name}:{mark.line + 1}:{mark.column + 1}: duplicate key {key!r}")
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_object_no_duplicates(pairs):
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise OpenAPIError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def load_document(data: bytes | str, filename: str = "<openapi>") -> dict:
    """Parse JSON or YAML text into a dict; OpenAPIError with file and line on bad syntax."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise OpenAPIError(f"{filename}: not UTF-8 text (byte {exc.start})") from None
    if data.lstrip().startswith("{"):
        try:
            doc = json.loads(data, object_pairs_hook=_json_object_no_duplicates)
        except json.JSONDecodeError as exc:
            raise OpenAPIError(
                f"{filename}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
        except OpenAPIError as exc:
            raise OpenAPIError(f"{filename}: invalid JSON: {exc}") from None
    else:
        try:
            doc = yaml.load(data, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
            raise OpenAPIError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
        except yaml.YAMLError as exc:
            raise OpenAPIError(f"{filename}: invalid YAML: {exc}") from None
        except OpenAPIError as exc:
            raise OpenAPIError(f"invalid YAML: {exc}".replace("<unicode string>", filename)) from None
    if not isinstance(doc, dict):
        raise OpenAPIError(
            f"{filename}: an OpenAPI document is a JSON/YAML object, not {type(doc).__name__}")
    return doc


# ---------------------------------------------------------------------------------------
# Shared tables

_ID_ALPHABET = string.ascii_lowercase + string.digits
# AWS's id lengths: restapi 10, root resource 10, other resources 6, authorizer 6,
# request validator 6, model 6.
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")
_ANY = "x-amazon-apigateway-any-method"
_INTEGRATION = "x-amazon-apigateway-integration"
_MODEL_REF_BASE = "https://apigateway.amazonaws.com/restapis/{api_id}/models/"
_MODEL_REF_RE = re.compile(r"^https://apigateway\.amazonaws\.com/restapis/[^/]+/models/(.+)$")
_DRAFT4 = "http://json-schema.org/draft-04/schema#"
# AWS's rule for a path part, quoted from its error message: "only allow a-zA-Z0-9._- and
# curly braces at the beginning and the end and an optional plus sign before the closing
# brace".
_PATH_PART_RE = re.compile(r"^(?:[A-Za-z0-9._-]+|\{[A-Za-z0-9._-]+\+?\})$")
_STAGE_VAR_RE = re.compile(r"\$\{stageVariables\.([^}]*)\}")
_STAGE_VAR_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_GATEWAY_RESPONSE_TYPES = frozenset((
    "DEFAULT_4XX", "DEFAULT_5XX", "RESOURCE_NOT_FOUND", "UNAUTHORIZED", "INVALID_API_KEY",
    "ACCESS_DENIED", "AUTHORIZER_FAILURE", "AUTHORIZER_CONFIGURATION_ERROR",
    "INVALID_SIGNATURE", "EXPIRED_TOKEN", "MISSING_AUTHENTICATION_TOKEN",
    "INTEGRATION_FAILURE", "INTEGRATION_TIMEOUT", "API_CONFIGURATION_ERROR",
    "UNSUPPORTED_MEDIA_TYPE", "BAD_REQUEST_PARAMETERS", "BAD_REQUEST_BODY",
    "REQUEST_TOO_LARGE", "THROTTLED", "QUOTA_EXCEEDED", "WAF_FILTERED"))
_INTEGRATION_TYPES = ("HTTP", "HTTP_PROXY", "MOCK", "AWS", "AWS_PROXY")
_PASSTHROUGH = ("WHEN_NO_MATCH", "WHEN_NO_TEMPLATES", "NEVER")
_CONTENT_HANDLING = ("CONVERT_TO_TEXT", "CONVERT_TO_BINARY")
_CONNECTION_TYPES = ("INTERNET", "VPC_LINK")
# x-amazon-apigateway-integration properties copied to the Integration unchanged.
_INTEGRATION_PLAIN = (
    "uri", "connectionId", "credentials", "cacheNamespace", "integrationSubtype",
    "payloadFormatVersion", "responseTransferMode", "integrationTarget")
_INTEGRATION_MAPS = ("requestParameters", "requestTemplates")
# Extensions understood at the document's root; the rest of x-amazon-apigateway-* warn.
_ROOT_EXTENSIONS_KEPT = ("x-amazon-apigateway-cors", "x-amazon-apigateway-importexport-version")
_AUTHORIZER_TYPES = {"token": "TOKEN", "request": "REQUEST",
                     "cognito_user_pools": "COGNITO_USER_POOLS", "jwt": "JWT"}
_AUTHORIZER_FIELDS = (
    "authorizerUri", "authorizerCredentials", "identityValidationExpression",
    "authorizerPayloadFormatVersion", "enableSimpleResponses", "jwtConfiguration",
    "providerARNs")
_PARAM_LOCATIONS = {"path": "path", "query": "querystring", "header": "header"}


def _new_id(length: int) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def _is_aws_extension(key: str) -> bool:
    return key.lower().startswith("x-amazon-apigateway-")


def _not_implemented(name: str, where: str) -> str:
    return f"{name} at {where}: not implemented, kept for export"


# ---------------------------------------------------------------------------------------
# Import


class _Importer:
    """One import run: the source document, the warnings so far, and the model built."""

    def __init__(self, doc: dict, base_path: str, protocol_type: str | None, api_id: str):
        self.doc = doc
        self.base_path_mode = base_path
        self.api_id = api_id
        self.warnings: list[str] = []
        if "swagger" in doc:
            if str(doc["swagger"]) != "2.0":
                raise OpenAPIError(f"swagger: version {doc['swagger']!r} is not 2.0")
            self.v3 = False
        elif "openapi" in doc:
            if not re.match(r"^3\.[01](\.\d+)?$", str(doc["openapi"])):
                raise OpenAPIError(f"openapi: version {doc['openapi']!r} is not 3.0 or 3.1")
            self.v3 = True
        else:
            raise OpenAPIError(
                "<root>: not an OpenAPI document (neither a 'swagger' nor an 'openapi' field)")
        self.protocol = protocol_type.upper() if protocol_type else self._detect_protocol()
        if self.protocol not in ("REST", "HTTP"):
            raise OpenAPIError(f"protocolType: {protocol_type!r} is not REST or HTTP")
        self.models: dict[str, dict] = {}        # name -> Model
        self.authorizers: dict[str, dict] = {}   # security scheme name -> Authorizer
        self.validators: dict[str, dict] = {}    # name -> RequestValidator
        self.schemes: dict[str, dict] = {}       # name -> resolved security scheme

    # -- references ---------------------------------------------------------------------

    def resolve(self, node, where: str, seen: tuple = ()):
        """Follow a local `$ref` (JSON pointer into this document) to what it names."""
        if not (isinstance(node, dict) and "$ref" in node):
            return node
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/"):
            raise OpenAPIError(f"{where}.$ref: {ref!r} is not a local reference ('#/...'); "
                               "external references are not supported")
        if ref in seen:
            raise OpenAPIError(f"{where}.$ref: {ref!r} refers to itself")
        target = self.doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                raise OpenAPIError(f"{where}.$ref: {ref!r} does not resolve")
        return self.resolve(target, where, seen + (ref,))

    def _schema_model_name(self, schema, where: str) -> str | None:
        """The model a `{"$ref": "#/definitions/X"}` schema names, or None for inline ones."""
        if isinstance(schema, dict) and "$ref" in schema:
            ref = schema["$ref"]
            self.resolve(schema, where)
            prefix = "#/components/schemas/" if self.v3 else "#/definitions/"
            if isinstance(ref, str) and ref.startswith(prefix):
                return ref[len(prefix):].replace("~1", "/").replace("~0", "~")
        return None

    # -- top level ----------------------------------------------------------------------

    def _detect_protocol(self) -> str:
        doc = self.doc
        components = doc.get("components") if isinstance(doc.get("components"), dict) else {}
        if "x-amazon-apigateway-integrations" in components:
            return "HTTP"
        if "x-amazon-apigateway-cors" in doc or "x-amazon-apigateway-importexport-version" in doc:
            return "HTTP"
        for item in (doc.get("paths") or {}).values() if isinstance(doc.get("paths"), dict) else ():
            if not isinstance(item, dict):
                continue
            for op in item.values():
                integ = op.get(_INTEGRATION) if isinstance(op, dict) else None
                if isinstance(integ, dict) and "payloadFormatVersion" in integ:
                    return "HTTP"
        return "REST"

    def run(self) -> dict:
        doc = self.doc
        info = doc.get("info")
        if not isinstance(info, dict):
            raise OpenAPIError("info: required, and must be an object")
        if not isinstance(info.get("title"), str) or not info["title"].strip():
            raise OpenAPIError("info.title: required (it becomes the API's name)")
        if "paths" not in doc:
            raise OpenAPIError("paths: required")
        if not isinstance(doc["paths"], dict):
            raise OpenAPIError("paths: must be an object")

        api: dict = {"name": info["title"]}
        if isinstance(info.get("description"), str):
            api["description"] = info["description"]
        if info.get("version") is not None:
            api["version"] = str(info["version"])
        api["protocolType"] = self.protocol
        extensions: dict = {}
        self._root_extensions(api, extensions)
        self._models()
        self._security_schemes()
        self._request_validators()
        default_validator = doc.get("x-amazon-apigateway-request-validator")
        if default_validator is not None:
            self._validator_id(default_validator, "x-amazon-apigateway-request-validator")

        prefix, removed = self._base_path()
        if removed:
            extensions["basePath"] = removed
        api["resources"] = self._resources(prefix, default_validator, extensions)
        api["authorizers"] = list(self.authorizers.values())
        api["requestValidators"] = list(self.validators.values())
        api["models"] = list(self.models.values())
        api["extensions"] = extensions
        return api

    def _root_extensions(self, api: dict, extensions: dict) -> None:
        doc = self.doc
        for key, value in doc.items():
            if not key.startswith("x-"):
                continue
            where = key
            if key == "x-amazon-apigateway-binary-media-types":
                if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise OpenAPIError(f"{where}: must be a list of media types")
                api["binaryMediaTypes"] = list(value)
            elif key == "x-amazon-apigateway-minimum-compression-size":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 10485760:
                    raise OpenAPIError(f"{where}: must be an integer from 0 to 10485760")
                api["minimumCompressionSize"] = value
            elif key == "x-amazon-apigateway-api-key-source":
                if not isinstance(value, str) or value.upper() not in ("HEADER", "AUTHORIZER"):
                    raise OpenAPIError(f"{where}: must be HEADER or AUTHORIZER, not {value!r}")
                api["apiKeySource"] = value.upper()
            elif key == "x-amazon-apigateway-policy":
                api["policy"] = self._policy(value, where)
            elif key == "x-amazon-apigateway-gateway-responses":
                api["gatewayResponses"] = self._gateway_responses(value, where)
            elif key == "x-amazon-apigateway-endpoint-configuration":
                self._endpoint_configuration(api, value, where)
            elif key in ("x-amazon-apigateway-request-validators",
                         "x-amazon-apigateway-request-validator"):
                pass  # read by _request_validators / run
            elif key in _ROOT_EXTENSIONS_KEPT or not _is_aws_extension(key):
                extensions[key] = copy.deepcopy(value)
            else:
                self.warnings.append(_not_implemented(key, "<root>"))
                extensions[key] = copy.deepcopy(value)
        if self.v3:
            for i, server in enumerate(doc.get("servers") or ()):
                if isinstance(server, dict) and "x-amazon-apigateway-endpoint-configuration" in server:
                    self._endpoint_configuration(
                        api, server["x-amazon-apigateway-endpoint-configuration"],
                        f"servers.{i}.x-amazon-apigateway-endpoint-configuration")
        tags = {}
        for i, tag in enumerate(doc.get("tags") or ()):
            if isinstance(tag, dict) and "x-amazon-apigateway-tag-value" in tag:
                if not isinstance(tag.get("name"), str):
                    raise OpenAPIError(f"tags.{i}.name: required with x-amazon-apigateway-tag-value")
                tags[tag["name"]] = str(tag["x-amazon-apigateway-tag-value"])
        if tags:
            api["tags"] = tags

    def _policy(self, value, where: str) -> str:
        # AWS stores the resource policy as a JSON string; the document carries an object.
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise OpenAPIError(f"{where}: not a JSON policy: {exc.msg}") from None
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an IAM policy object")
        return json.dumps(value, separators=(",", ":"))

    def _endpoint_configuration(self, api: dict, value, where: str) -> None:
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an object")
        for key, item in value.items():
            if key == "vpcEndpointIds":
                if not (isinstance(item, list) and all(isinstance(v, str) for v in item)):
                    raise OpenAPIError(f"{where}.vpcEndpointIds: must be a list of strings")
                api.setdefault("endpointConfiguration", {})["vpcEndpointIds"] = list(item)
            elif key == "disableExecuteApiEndpoint":
                if not isinstance(item, bool):
                    raise OpenAPIError(f"{where}.disableExecuteApiEndpoint: must be true or false")
                api["disableExecuteApiEndpoint"] = item
            else:
                raise OpenAPIError(f"{where}.{key}: unknown property")

    def _gateway_responses(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an object")
        responses = {}
        for rtype, body in value.items():
            at = f"{where}.{rtype}"
            if rtype not in _GATEWAY_RESPONSE_TYPES:
                raise OpenAPIError(f"{at}: unknown gateway response type")
            if not isinstance(body, dict):
                raise OpenAPIError(f"{at}: must be an object")
            response = {"responseType": rtype}
            for key, item in body.items():
                if key == "statusCode":
                    response["statusCode"] = self._status_code(item, f"{at}.statusCode")
                elif key in ("responseParameters", "responseTemplates"):
                    response[key] = self._string_map(item, f"{at}.{key}")
                else:
                    raise OpenAPIError(f"{at}.{key}: unknown property")
            response["defaultResponse"] = False
            responses[rtype] = response
        return responses

    def _component(self, v3_name: str, v2_name: str) -> tuple[dict, str]:
        """A components.* map of OpenAPI 3 or its top-level Swagger 2 twin, and its location."""
        if self.v3:
            components = self.doc.get("components") or {}
            if not isinstance(components, dict):
                raise OpenAPIError("components: must be an object")
            found, where = components.get(v3_name) or {}, f"components.{v3_name}"
        else:
            found, where = self.doc.get(v2_name) or {}, v2_name
        if not isinstance(found, dict):
            raise OpenAPIError(f"{where}: must be an object")
        return found, where

    def _models(self) -> None:
        schemas, where = self._component("schemas", "definitions")
        for name, schema in schemas.items():
            self._add_model(name, schema, f"{where}.{name}")

    def _add_model(self, name: str, schema, where: str) -> None:
        if not re.match(r"^[A-Za-z0-9]+$", name):
            raise OpenAPIError(f"{where}: model name {name!r} must be alphanumeric "
                               "(API Gateway's rule for model names)")
        if not isinstance(schema, dict):
            raise OpenAPIError(f"{where}: a schema must be an object")
        stored = self._schema_for_aws(schema, where)
        stored = {"$schema": _DRAFT4, "title": name, **stored}
        model = {"id": _new_id(6), "name": name, "contentType": "application/json",
                 "schema": json.dumps(stored)}
        if isinstance(schema.get("description"), str):
            model["description"] = schema["description"]
        self.models[name] = model

    def _schema_for_aws(self, node, where: str):
        """Copy a schema, turning `$ref`s to local models into AWS's model URLs."""
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    name = self._schema_model_name(node, where)
                    if name is None or "/" in name:
                        raise OpenAPIError(f"{where}.$ref: {value!r} must name a schema in "
                                           f"{'components.schemas' if self.v3 else 'definitions'}")
                    out[key] = _MODEL_REF_BASE.format(api_id=self.api_id) + name
                else:
                    out[key] = self._schema_for_aws(value, f"{where}.{key}")
            return out
        if isinstance(node, list):
            return [self._schema_for_aws(v, f"{where}.{i}") for i, v in enumerate(node)]
        return node

    def _inline_model(self, schema, base_name: str, where: str) -> str:
        """Name a model for an inline schema, as API Gateway's importer creates one."""
        name = re.sub(r"[^A-Za-z0-9]", "", base_name) or "Model"
        candidate, n = name, 1
        while candidate in self.models:
            n += 1
            candidate = f"{name}{n}"
        self._add_model(candidate, schema, where)
        return candidate

    def _security_schemes(self) -> None:
        schemes, where = self._component("securitySchemes", "securityDefinitions")
        for name, scheme in schemes.items():
            at = f"{where}.{name}"
            scheme = self.resolve(scheme, at)
            if not isinstance(scheme, dict):
                raise OpenAPIError(f"{at}: must be an object")
            self.schemes[name] = scheme
            for key in scheme:
                if _is_aws_extension(key) and key not in (
                        "x-amazon-apigateway-authorizer", "x-amazon-apigateway-authtype"):
                    self.warnings.append(_not_implemented(key, at) + " (dropped: security "
                                         "schemes are rebuilt from the authorizers)")
            if "x-amazon-apigateway-authorizer" in scheme:
                self.authorizers[name] = self._authorizer(name, scheme, at)

    def _authorizer(self, name: str, scheme: dict, where: str) -> dict:
        ext = scheme["x-amazon-apigateway-authorizer"]
        at = f"{where}.x-amazon-apigateway-authorizer"
        if not isinstance(ext, dict):
            raise OpenAPIError(f"{at}: must be an object")
        atype = ext.get("type")
        if not isinstance(atype, str) or atype.lower() not in _AUTHORIZER_TYPES:
            raise OpenAPIError(f"{at}.type: must be one of token, request, cognito_user_pools, "
                               f"jwt, not {atype!r}")
        atype = _AUTHORIZER_TYPES[atype.lower()]
        auth = {"id": _new_id(6), "name": name, "type": atype}
        if "x-amazon-apigateway-authtype" in scheme:
            auth["authType"] = str(scheme["x-amazon-apigateway-authtype"])
        for key, value in ext.items():
            if key == "type":
                continue
            if key == "authorizerResultTtlInSeconds":
                try:
                    ttl = int(value)
                except (TypeError, ValueError):
                    raise OpenAPIError(f"{at}.{key}: must be an integer") from None
                if not 0 <= ttl <= 3600:
                    raise OpenAPIError(f"{at}.{key}: must be from 0 to 3600 seconds")
                auth[key] = ttl
            elif key == "identitySource":
                if isinstance(value, list):
                    value = ", ".join(str(v) for v in value)
                auth[key] = str(value)
            elif key in _AUTHORIZER_FIELDS:
                auth[key] = copy.deepcopy(value)
            else:
                raise OpenAPIError(f"{at}.{key}: unknown property")
        if atype in ("TOKEN", "REQUEST") and "authorizerUri" not in auth:
            raise OpenAPIError(f"{at}.authorizerUri: required for a {atype.lower()} authorizer")
        if atype == "COGNITO_USER_POOLS" and not auth.get("providerARNs"):
            raise OpenAPIError(f"{at}.providerARNs: required for a cognito_user_pools authorizer")
        if atype == "JWT":
            jwt = auth.setdefault("jwtConfiguration", {})
            if not isinstance(jwt, dict):
                raise OpenAPIError(f"{at}.jwtConfiguration: must be an object")
            url = scheme.get("openIdConnectUrl")
            if "issuer" not in jwt and isinstance(url, str):
                # AWS finds the issuer from the scheme's openIdConnectUrl.
                jwt["issuer"] = url.removesuffix("/.well-known/openid-configuration")
            if "issuer" not in jwt:
                raise OpenAPIError(f"{at}.jwtConfiguration.issuer: required for a jwt authorizer")
        if "identitySource" not in auth and atype in ("TOKEN", "COGNITO_USER_POOLS"):
            # AWS takes a token authorizer's identity source from the scheme's header name.
            header = scheme.get("name") if scheme.get("in", "header") == "header" else None
            auth["identitySource"] = f"method.request.header.{header or 'Authorization'}"
        return auth

    def _request_validators(self) -> None:
        where = "x-amazon-apigateway-request-validators"
        value = self.doc.get(where)
        if value is None:
            return
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an object")
        for name, rules in value.items():
            at = f"{where}.{name}"
            if not isinstance(rules, dict):
                raise OpenAPIError(f"{at}: must be an object")
            validator = {"id": _new_id(6), "name": name,
                         "validateRequestBody": False, "validateRequestParameters": False}
            for key, item in rules.items():
                if key not in ("validateRequestBody", "validateRequestParameters"):
                    raise OpenAPIError(f"{at}.{key}: unknown property")
                if not isinstance(item, bool):
                    raise OpenAPIError(f"{at}.{key}: must be true or false")
                validator[key] = item
            self.validators[name] = validator

    def _validator_id(self, name, where: str) -> str:
        if not isinstance(name, str) or name not in self.validators:
            raise OpenAPIError(f"{where}: request validator {name!r} is not defined in "
                               "x-amazon-apigateway-request-validators")
        return self.validators[name]["id"]

    # -- base path ----------------------------------------------------------------------

    def _declared_base_path(self) -> str:
        if not self.v3:
            base = self.doc.get("basePath") or "/"
            if not isinstance(base, str):
                raise OpenAPIError("basePath: must be a string")
            return base
        servers = self.doc.get("servers") or []
        if not isinstance(servers, list):
            raise OpenAPIError("servers: must be a list")
        for server in servers:
            variables = server.get("variables") if isinstance(server, dict) else None
            if isinstance(variables, dict) and "basePath" in variables:
                default = variables["basePath"].get("default") if isinstance(
                    variables["basePath"], dict) else None
                return str(default or "/")
        if servers and isinstance(servers[0], dict) and isinstance(servers[0].get("url"), str):
            url = servers[0]["url"]
            for var, spec in (servers[0].get("variables") or {}).items():
                if isinstance(spec, dict) and "default" in spec:
                    url = url.replace("{" + var + "}", str(spec["default"]))
            match = re.match(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/]*(/.*)?$", url)
            return (match.group(1) or "/") if match else url
        return "/"

    def _base_path(self) -> tuple[list[str], str]:
        """Path parts to put before every path, and the base path that split removed."""
        mode = self.base_path_mode
        if mode not in ("ignore", "prepend", "split"):
            raise OpenAPIError(f"basepath: {mode!r} is not ignore, prepend or split")
        parts = [p for p in self._declared_base_path().split("/") if p]
        if mode == "ignore" or not parts:
            return [], ""
        if mode == "prepend":
            return parts, ""
        return parts[1:], "/" + parts[0]

    # -- resources and methods ----------------------------------------------------------

    def _resources(self, prefix: list[str], default_validator, extensions: dict) -> list[dict]:
        root = {"id": _new_id(10), "path": "/"}
        by_path = {"/": root}
        order = [root]
        source_of: dict[str, str] = {}

        def resource_for(parts: list[str], where: str) -> dict:
            node, path = root, ""
            for i, part in enumerate(parts):
                if not _PATH_PART_RE.match(part):
                    raise OpenAPIError(
                        f"{where}: path part {part!r} may only use a-zA-Z0-9._- with curly "
                        "braces around a parameter name and an optional + before the closing brace")
                if part.endswith("+}") and i != len(parts) - 1:
                    raise OpenAPIError(
                        f"{where}: greedy path parameter {part} must be the last path part")
                path = f"{path}/{part}"
                child = by_path.get(path)
                if child is None:
                    if part.startswith("{"):
                        for sibling in order:
                            if (sibling.get("parentId") == node["id"]
                                    and sibling["pathPart"].startswith("{")):
                                raise OpenAPIError(
                                    f"{where}: path part {part} conflicts with sibling "
                                    f"{sibling['pathPart']} at {sibling['path']}: only one "
                                    "variable path part is allowed at one level")
                    child = {"id": _new_id(6), "parentId": node["id"], "pathPart": part,
                             "path": path}
                    by_path[path] = child
                    order.append(child)
                node = child
            return node

        for raw_path, item in self.doc["paths"].items():
            where = f"paths.{raw_path}"
            if raw_path == "$default":
                if self.protocol != "HTTP":
                    raise OpenAPIError(f"{where}: the $default route exists only in HTTP APIs")
                # the catch-all route: a resource "/$default" the compiler routes after all others
                if "/$default" not in by_path:
                    res = {"id": _new_id(6), "parentId": root["id"], "pathPart": "$default",
                           "path": "/$default"}
                    by_path["/$default"] = res
                    order.append(res)
                item = self.resolve(item, where)
                if not isinstance(item, dict):
                    raise OpenAPIError(f"{where}: a path item must be an object")
                self._path_item(by_path["/$default"], item, where, [], default_validator)
                continue
            if raw_path.startswith("x-"):
                extensions.setdefault("paths", {})[raw_path] = copy.deepcopy(item)
                continue
            if not isinstance(raw_path, str) or not raw_path.startswith("/"):
                raise OpenAPIError(f"{where}: a path must start with '/'")
            inner = raw_path.strip("/")
            parts = inner.split("/") if inner else []
            if any(not p for p in parts):
                raise OpenAPIError(f"{where}: empty path part")
            full = prefix + parts
            key = "/" + "/".join(full)
            if key in source_of:
                raise OpenAPIError(f"{where}: duplicates paths.{source_of[key]} "
                                   f"(both are resource {key})")
            source_of[key] = raw_path
            item = self.resolve(item, where)
            if not isinstance(item, dict):
                raise OpenAPIError(f"{where}: a path item must be an object")
            resource = resource_for(full, where)
            self._path_item(resource, item, where, parts, default_validator)
        return order

    def _path_item(self, resource: dict, item: dict, where: str, parts: list[str],
                   default_validator) -> None:
        shared_params = item.get("parameters") or []
        methods = {}
        for key, value in item.items():
            at = f"{where}.{key}"
            if key in _HTTP_METHODS or key == _ANY:
                verb = "ANY" if key == _ANY else key.upper()
                op = self.resolve(value, at)
                if not isinstance(op, dict):
                    raise OpenAPIError(f"{at}: an operation must be an object")
                methods[verb] = self._method(verb, op, at, parts, shared_params, default_validator)
            elif key in ("parameters", "summary", "description", "servers", "$ref"):
                continue
            elif key.startswith("x-"):
                if _is_aws_extension(key):
                    self.warnings.append(_not_implemented(key, where))
                resource.setdefault("extensions", {})[key] = copy.deepcopy(value)
            elif key == "trace":
                raise OpenAPIError(f"{at}: API Gateway has no TRACE method")
            else:
                raise OpenAPIError(f"{at}: {key!r} is not an HTTP method or path item field")
        if methods:
            existing = resource.setdefault("resourceMethods", {})
            existing.update(methods)

    def _method(self, verb: str, op: dict, where: str, parts: list[str], shared_params,
                default_validator) -> dict:
        method: dict = {"httpMethod": verb, "authorizationType": "NONE", "apiKeyRequired": False}
        if isinstance(op.get("operationId"), str):
            method["operationName"] = op["operationId"]
        params = self._request_parameters(op, shared_params, parts, where)
        if params:
            method["requestParameters"] = params
        models = self._request_models(op, verb, where)
        if models:
            method["requestModels"] = models
        self._security(method, op, where)
        validator = op.get("x-amazon-apigateway-request-validator", default_validator)
        if validator is not None:
            at = (f"{where}.x-amazon-apigateway-request-validator"
                  if "x-amazon-apigateway-request-validator" in op
                  else "x-amazon-apigateway-request-validator")
            method["requestValidatorId"] = self._validator_id(validator, at)
        responses = self._method_responses(op, verb, where)
        if responses:
            method["methodResponses"] = responses
        for key, value in op.items():
            at = f"{where}.{key}"
            if key == _INTEGRATION:
                method["methodIntegration"] = self._integration(value, at, method)
            elif key == "x-amazon-apigateway-auth":
                self._auth(method, value, at)
            elif key == "x-amazon-apigateway-request-validator":
                continue
            elif key.startswith("x-"):
                if _is_aws_extension(key):
                    self.warnings.append(_not_implemented(key, where))
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
                param = self.resolve(param, at)
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
        if self.v3:
            body = op.get("requestBody")
            if body is None:
                return models
            at = f"{where}.requestBody"
            body = self.resolve(body, at)
            content = body.get("content") if isinstance(body, dict) else None
            if not isinstance(content, dict):
                raise OpenAPIError(f"{at}.content: required")
            for ctype, media in content.items():
                schema = media.get("schema") if isinstance(media, dict) else None
                if schema is not None:
                    models[ctype] = self._model_for(schema, f"{op.get('operationId') or verb + self._path_name(where)}Input",
                                                    f"{at}.content.{ctype}.schema")
            return models
        for i, param in enumerate(op.get("parameters") or ()):
            at = f"{where}.parameters.{i}"
            param = self.resolve(param, at)
            if isinstance(param, dict) and param.get("in") == "body" and "schema" in param:
                consumes = op.get("consumes") or self.doc.get("consumes") or ["application/json"]
                name = self._model_for(param["schema"], f"{op.get('operationId') or verb + self._path_name(where)}Input",
                                       f"{at}.schema")
                for ctype in consumes:
                    models[ctype] = name
        return models

    @staticmethod
    def _path_name(where: str) -> str:
        path = where.split(".", 1)[1].rsplit(".", 1)[0]
        return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", path))

    def _model_for(self, schema, base_name: str, where: str) -> str:
        name = self._schema_model_name(schema, where)
        if name is not None:
            if name not in self.models:
                raise OpenAPIError(f"{where}.$ref: model {name!r} is not defined")
            return name
        if not isinstance(schema, dict):
            raise OpenAPIError(f"{where}: a schema must be an object")
        return self._inline_model(schema, base_name, where)

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
            response = self.resolve(response, at)
            if not isinstance(response, dict):
                raise OpenAPIError(f"{at}: must be an object")
            mresp: dict = {"statusCode": self._status_code(status, at)}
            headers = response.get("headers") or {}
            if headers:
                mresp["responseParameters"] = {
                    f"method.response.header.{name}": bool(
                        self.v3 and isinstance(spec, dict)
                        and self.resolve(spec, f"{at}.headers.{name}").get("required", False))
                    for name, spec in headers.items()}
            base = f"{op.get('operationId') or verb + self._path_name(where)}{status}Response"
            models = {}
            if self.v3:
                for ctype, media in (response.get("content") or {}).items():
                    schema = media.get("schema") if isinstance(media, dict) else None
                    if schema is not None:
                        models[ctype] = self._model_for(schema, base, f"{at}.content.{ctype}.schema")
            elif "schema" in response:
                name = self._model_for(response["schema"], base, f"{at}.schema")
                for ctype in op.get("produces") or self.doc.get("produces") or ["application/json"]:
                    models[ctype] = name
            if models:
                mresp["responseModels"] = models
            out[mresp["statusCode"]] = mresp
        return out

    def _security(self, method: dict, op: dict, where: str) -> None:
        if "security" in op:
            requirements, at = op["security"], f"{where}.security"
        else:
            requirements, at = self.doc.get("security"), "security"
        if not requirements:
            return
        if not isinstance(requirements, list):
            raise OpenAPIError(f"{at}: must be a list")
        for i, requirement in enumerate(requirements):
            if not isinstance(requirement, dict):
                raise OpenAPIError(f"{at}.{i}: must be an object")
            for name, scopes in requirement.items():
                self._apply_scheme(method, name, scopes, f"{at}.{i}.{name}")

    def _apply_scheme(self, method: dict, name: str, scopes, where: str) -> None:
        scheme = self.schemes.get(name)
        if scheme is None:
            raise OpenAPIError(f"{where}: security scheme {name!r} is not defined")
        if name in self.authorizers:
            auth = self.authorizers[name]
            method["authorizationType"] = {"TOKEN": "CUSTOM", "REQUEST": "CUSTOM"}.get(
                auth["type"], auth["type"])
            method["authorizerId"] = auth["id"]
            if scopes and auth["type"] in ("COGNITO_USER_POOLS", "JWT"):
                method["authorizationScopes"] = [str(s) for s in scopes]
            return
        authtype = str(scheme.get("x-amazon-apigateway-authtype", "")).lower()
        if authtype == "awssigv4":
            method["authorizationType"] = "AWS_IAM"
        elif (scheme.get("type") == "apiKey" and scheme.get("in") == "header"
              and str(scheme.get("name", "")).lower() == "x-api-key"):
            method["apiKeyRequired"] = True
        else:
            self.warnings.append(
                f"security scheme {name!r} at {where}: no API Gateway authorizer, IAM or "
                "x-api-key mapping; not enforced")

    def _auth(self, method: dict, value, where: str) -> None:
        atype = value.get("type") if isinstance(value, dict) else None
        if not isinstance(atype, str) or atype.upper() not in ("NONE", "AWS_IAM"):
            raise OpenAPIError(f"{where}.type: must be NONE or AWS_IAM")
        method["authorizationType"] = atype.upper()

    # -- integrations -------------------------------------------------------------------

    def _integration(self, value, where: str, method: dict) -> dict:
        value = self.resolve(value, where)
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an object")
        if "type" not in value:
            raise OpenAPIError(f"{where}.type: required")
        itype = str(value["type"]).upper()
        if itype not in _INTEGRATION_TYPES:
            raise OpenAPIError(f"{where}.type: {value['type']!r} is not one of "
                               "http, http_proxy, mock, aws, aws_proxy")
        integ: dict = {"type": itype}
        rest = self.protocol == "REST"
        for key, item in value.items():
            at = f"{where}.{key}"
            if key == "type":
                continue
            if key == "httpMethod":
                if not isinstance(item, str) or item.upper() not in (
                        "ANY", *(m.upper() for m in _HTTP_METHODS)):
                    raise OpenAPIError(f"{at}: {item!r} is not an HTTP method")
                integ[key] = item.upper()
            elif key in _INTEGRATION_PLAIN:
                if not isinstance(item, str):
                    raise OpenAPIError(f"{at}: must be a string")
                integ[key] = item
            elif key == "connectionType":
                integ[key] = self._enum(item, _CONNECTION_TYPES, at)
                if integ[key] == "VPC_LINK":
                    self.warnings.append(_not_implemented("connectionType VPC_LINK", where))
            elif key == "passthroughBehavior":
                integ[key] = self._enum(item, _PASSTHROUGH, at)
            elif key == "contentHandling":
                integ[key] = self._enum(item, _CONTENT_HANDLING, at)
            elif key == "timeoutInMillis":
                if not isinstance(item, int) or isinstance(item, bool) or item < 50:
                    raise OpenAPIError(f"{at}: must be an integer of at least 50")
                integ[key] = item
            elif key == "cacheKeyParameters":
                if not (isinstance(item, list) and all(isinstance(v, str) for v in item)):
                    raise OpenAPIError(f"{at}: must be a list of strings")
                integ[key] = list(item)
            elif key in _INTEGRATION_MAPS:
                integ[key] = self._string_map(item, at)
            elif key == "responses":
                integ["integrationResponses"] = self._integration_responses(item, at)
            elif key == "responseParameters":
                # HTTP APIs: {"200": {"overwrite:header.x": "..."}} keyed by status code.
                if not isinstance(item, dict):
                    raise OpenAPIError(f"{at}: must be an object")
                integ[key] = {str(k): self._string_map(v, f"{at}.{k}") for k, v in item.items()}
            elif key == "tlsConfig":
                if not isinstance(item, dict):
                    raise OpenAPIError(f"{at}: must be an object")
                for tls_key in item:
                    if tls_key not in ("insecureSkipVerification", "serverNameToVerify"):
                        raise OpenAPIError(f"{at}.{tls_key}: unknown property")
                integ[key] = dict(item)
            else:
                if _is_aws_extension(key) or not key.startswith("x-"):
                    self.warnings.append(_not_implemented(f"{_INTEGRATION}.{key}",
                                                          where.rsplit(".", 1)[0]))
                integ.setdefault("extensions", {})[key] = copy.deepcopy(item)

        if itype != "MOCK" and "uri" not in integ:
            raise OpenAPIError(f"{where}.uri: required for a {itype.lower()} integration")
        if itype != "MOCK" and rest and "httpMethod" not in integ:
            raise OpenAPIError(f"{where}.httpMethod: required for a {itype.lower()} integration")
        if "uri" in integ:
            self._check_uri(integ["uri"], itype, f"{where}.uri")
        if itype == "AWS":
            self.warnings.append(_not_implemented("integration type aws", where.rsplit(".", 1)[0]))
        self._check_mappings(integ, method, where)
        # The defaults API Gateway fills in and GetIntegration returns.
        if rest:
            integ.setdefault("passthroughBehavior", "WHEN_NO_MATCH")
            integ.setdefault("timeoutInMillis", 29000)
            integ.setdefault("cacheKeyParameters", [])
        else:
            integ.setdefault("timeoutInMillis", 30000)
            if "payloadFormatVersion" not in integ:
                if itype == "AWS_PROXY":
                    raise OpenAPIError(f"{where}.payloadFormatVersion: required for an HTTP "
                                       "API's aws_proxy integration (1.0 or 2.0)")
                integ["payloadFormatVersion"] = "1.0"
            elif integ["payloadFormatVersion"] not in ("1.0", "2.0"):
                raise OpenAPIError(f"{where}.payloadFormatVersion: must be 1.0 or 2.0")
        if itype != "MOCK":
            integ.setdefault("connectionType", "INTERNET")
        return integ

    def _check_uri(self, uri: str, itype: str, where: str) -> None:
        for match in _STAGE_VAR_RE.finditer(uri):
            if not _STAGE_VAR_NAME_RE.match(match.group(1)):
                raise OpenAPIError(f"{where}: stage variable name {match.group(1)!r} may only "
                                   "use A-Za-z0-9_")
        if "${stageVariables." in _STAGE_VAR_RE.sub("", uri):
            raise OpenAPIError(f"{where}: unclosed ${{stageVariables.…}} reference")
        if itype in ("HTTP", "HTTP_PROXY") and not re.match(
                r"^(https?://|\$\{stageVariables\.)", uri, re.IGNORECASE):
            raise OpenAPIError(f"{where}: an {itype.lower()} integration needs an http:// or "
                               f"https:// URL, not {uri!r}")

    def _check_mappings(self, integ: dict, method: dict, where: str) -> None:
        if self.protocol != "REST":
            return
        declared = method.get("requestParameters", {})
        for target, source in integ.get("requestParameters", {}).items():
            at = f"{where}.requestParameters.{target}"
            if not re.match(r"^integration\.request\.(path|querystring|header|multivaluequerystring"
                            r"|multivalueheader)\.[^.\s]+$", target):
                raise OpenAPIError(f"{at}: target must be integration.request."
                                   "{path|querystring|header}.NAME")
            if source.startswith("method.request.") and not source.startswith(
                    "method.request.body") and source not in declared:
                # API Gateway refuses a mapping from a parameter the method does not declare.
                raise OpenAPIError(f"{at}: {source} is not a request parameter of the method "
                                   "(declare it in parameters)")
        for status, response in integ.get("integrationResponses", {}).items():
            for target in response.get("responseParameters", {}):
                if not target.startswith("method.response.header."):
                    raise OpenAPIError(f"{where}.responses: responseParameters target {target!r}"
                                       " must be method.response.header.NAME")

    def _integration_responses(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an object")
        out: dict = {}
        for pattern, body in value.items():
            at = f"{where}.{pattern}"
            if not isinstance(body, dict):
                raise OpenAPIError(f"{at}: must be an object")
            if "statusCode" not in body:
                raise OpenAPIError(f"{at}.statusCode: required")
            status = self._status_code(body["statusCode"], f"{at}.statusCode")
            if status in out:
                raise OpenAPIError(f"{at}: status code {status} is already used by another "
                                   "response of this integration")
            response = {"statusCode": status}
            if pattern != "default":
                response["selectionPattern"] = pattern
            for key, item in body.items():
                if key == "statusCode":
                    continue
                if key in ("responseParameters", "responseTemplates"):
                    response[key] = self._string_map(item, f"{at}.{key}")
                elif key == "contentHandling":
                    response[key] = self._enum(item, _CONTENT_HANDLING, f"{at}.{key}")
                else:
                    raise OpenAPIError(f"{at}.{key}: unknown property")
            out[status] = response
        return out

    # -- small validators ---------------------------------------------------------------

    @staticmethod
    def _enum(value, allowed: tuple, where: str) -> str:
        if not isinstance(value, str) or value.upper() not in allowed:
            raise OpenAPIError(f"{where}: {value!r} is not one of "
                               f"{', '.join(a.lower() for a in allowed)}")
        return value.upper()

    @staticmethod
    def _string_map(value, where: str) -> dict:
        if not isinstance(value, dict):
            raise OpenAPIError(f"{where}: must be an object of strings")
        out = {}
        for key, item in value.items():
            if not isinstance(item, str):
                raise OpenAPIError(f"{where}.{key}: must be a string")
            out[str(key)] = item
        return out

    @staticmethod
    def _status_code(value, where: str) -> str:
        status = str(value)
        if not re.match(r"^[1-5]\d\d$", status):
            raise OpenAPIError(f"{where}: {value!r} is not an HTTP status code")
        return status


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
    api_id = api_id or _new_id(10)
    importer = _Importer(doc, base_path, protocol_type, api_id)
    api = importer.run()
    warnings = importer.warnings
    if fail_on_warnings and warnings:
        raise OpenAPIError("import failed on warnings (failonwarnings=true):\n  "
                           + "\n  ".join(warnings))
    if existing is None:
        api = _with_defaults(api, api_id, time.time())
    elif mode == "merge":
        api = _merge(existing, api)
    else:
        api = _overwrite(existing, api)
    return api, warnings


def _with_defaults(api: dict, api_id: str, created: float) -> dict:
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


def _overwrite(existing: dict, new: dict) -> dict:
    new = _adopt_ids(existing, new)
    # PutRestApi leaves the endpoint configuration and tags alone.
    if "endpointConfiguration" in existing and "endpointConfiguration" not in new:
        new["endpointConfiguration"] = copy.deepcopy(existing["endpointConfiguration"])
    if "tags" in existing and "tags" not in new:
        new["tags"] = copy.deepcopy(existing["tags"])
    return _with_defaults(new, existing["id"], existing.get("createdDate", time.time()))


def _merge_named(old: list[dict], new: list[dict]) -> list[dict]:
    by_name = {item["name"]: i for i, item in enumerate(old)}
    out = copy.deepcopy(old)
    for item in new:
        if item["name"] in by_name:
            out[by_name[item["name"]]] = item
        else:
            out.append(item)
    return out


def _merge(existing: dict, new: dict) -> dict:
    new = _adopt_ids(existing, new)

    merged = copy.deepcopy(existing)
    for key in ("name", "description", "version", "binaryMediaTypes", "minimumCompressionSize",
                "apiKeySource", "policy", "disableExecuteApiEndpoint", "protocolType"):
        if key in new:
            merged[key] = new[key]
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
    return merged


# ---------------------------------------------------------------------------------------
# Export


def _iso(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class _Exporter:
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
        prefix = "#/components/schemas/" if self.v3 else "#/definitions/"
        return {"$ref": prefix + name.replace("~", "~0").replace("/", "~1")}

    def schema_from_aws(self, node):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "$schema":
                    continue
                match = _MODEL_REF_RE.match(value) if key == "$ref" and isinstance(value, str) else None
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
                        *_AUTHORIZER_FIELDS):
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
                key = _ANY if verb == "ANY" else verb.lower()
                item[key] = self.operation(method, resource["path"])
            for key, value in (resource.get("extensions") or {}).items():
                if self.extensions or not _is_aws_extension(key):
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
                op[_INTEGRATION] = self.integration(method["methodIntegration"])
        for key, value in (method.get("extensions") or {}).items():
            if self.extensions or not _is_aws_extension(key):
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
            if key.startswith("x-") and (self.extensions or not _is_aws_extension(key)):
                out[key] = copy.deepcopy(value)


def export_openapi(api: dict, *, export_type: str = "oas30", extensions: bool = True,
                   stage: dict | None = None) -> dict:
    """Write the API document as OpenAPI 3.0 ("oas30") or Swagger 2.0 ("swagger").

    extensions=True is GetExport's `extensions=integrations,authorizers,apigateway`. With a
    stage (a Stage dict), the base path is the stage name, as in AWS's export.
    """
    if export_type not in ("oas30", "swagger"):
        raise OpenAPIError(f"exportType: {export_type!r} is not oas30 or swagger")
    return _Exporter(api, export_type == "oas30", extensions, stage).run()
