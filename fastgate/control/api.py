"""The control API: Amazon API Gateway's REST management API (service `apigateway`,
version 2015-07-09) served by fastgate's admin listener.

botocore's service model for `apigateway` is the specification: the route table,
each operation's input members (URI labels, query string, headers, JSON body or
raw payload), required members, output shapes and success status codes are all
read from it at import time, so `boto3.client("apigateway", endpoint_url=...)`
and `aws apigateway ... --endpoint-url` work unchanged. Requests must be signed
with SigV4 by one of the admin credentials; errors are AWS's: a status, the
x-amzn-ErrorType header, and a JSON body {"message": ...}.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping, NamedTuple
from urllib.parse import unquote

import orjson

from fastgate.phases.auth import sigv4
from fastgate.control.errors import ApiError, BadRequest, ValidationError
from fastgate.control.input_checks import check_constraints, check_type, serialization_error
from fastgate.control.messages import NULL_CONSTRAINT, validation_errors
from fastgate.control.model import OPERATIONS, Model

SERVICE = "apigateway"
API_VERSION = "2015-07-09"
JSON = "application/json"

Response = tuple[int, list[tuple[str, str]], bytes]
# The largest request body an operation takes. A document (ImportRestApi, PutRestApi,
# ImportApiKeys, ImportDocumentationParts: a blob payload in the service model) may be large;
# every other operation takes a small JSON object (a mapping template is at most 300 KB).
DOCUMENT_BODY_MAX = 10 * 1024 * 1024    # bytes
JSON_BODY_MAX = 2 * 1024 * 1024         # bytes
# mutations that change no document of the state: no reload follows them
STATELESS_OPERATIONS = frozenset({"FlushStageCache"})


def load_service_model() -> dict:
    """botocore's apigateway service-2.json (a runtime dependency: it is the spec)."""
    import botocore.loaders
    return botocore.loaders.Loader().load_service_model(SERVICE, "service-2", API_VERSION)


class Route:
    """One operation's requestUri template, compiled."""

    def __init__(self, name: str, op: dict):
        self.name = name
        self.method = op["http"]["method"]
        self.status = op["http"].get("responseCode", 200)
        uri = op["http"]["requestUri"]
        path, _, query = uri.partition("?")
        # literal query pairs in the template (ImportRestApi is POST /restapis?mode=import)
        self.query = dict(p.partition("=")[::2] for p in query.split("&") if p)
        self.labels: list[str] = []
        pattern = ""
        for seg in path.strip("/").split("/") if path != "/" else []:
            m = re.fullmatch(r"\{([^}+]+)(\+?)\}", seg)
            if m:
                self.labels.append(m.group(1))
                pattern += "/(.+)" if m.group(2) else "/([^/]+)"
            else:
                pattern += "/" + re.escape(seg)
        self.regex = re.compile(pattern or "/")
        self.literal_segments = path.count("/") - len(self.labels)
        self.input = op.get("input", {}).get("shape")
        self.output = op.get("output", {}).get("shape")
        self.max_body = JSON_BODY_MAX     # DOCUMENT_BODY_MAX for a blob payload (ServiceSpec)

    def match(self, path: str, query: dict[str, list[str]]) -> dict[str, str] | None:
        m = self.regex.fullmatch(path)
        if m is None:
            return None
        for k, v in self.query.items():
            if v not in query.get(k, ()):
                return None
        return {label: unquote(value) for label, value in zip(self.labels, m.groups())}


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


class ServiceSpec:
    """The parts of the service model the control API uses, indexed once."""

    def __init__(self, model: dict):
        self.shapes = model["shapes"]
        self.operations = model["operations"]
        self.routes = [Route(name, op) for name, op in model["operations"].items()]
        for r in self.routes:
            shape = self.shapes.get(r.input) or {}
            payload = shape.get("payload")
            if payload and self.shapes[shape["members"][payload]["shape"]]["type"] == "blob":
                r.max_body = DOCUMENT_BODY_MAX
        # templates with literal query pairs first, then the most literal segments
        self.routes.sort(key=lambda r: (-len(r.query), -r.literal_segments))

    def route(self, method: str, path: str, query: dict[str, list[str]]):
        """(route, labels) of the operation; (None, None) if no template matches at all;
        (None, {}) if templates match the path but not the method."""
        path_matched = False
        for r in self.routes:
            labels = r.match(path, query)
            if labels is None:
                continue
            if r.method == method:
                return r, labels
            path_matched = True
        return None, ({} if path_matched else None)

    # ---- input

    def decode_input(self, route: Route, labels: dict, query: dict[str, list[str]],
                     headers: list[tuple[str, str]], body: bytes) -> dict:
        if route.input is None:
            return {}
        shape = self.shapes[route.input]
        members = shape.get("members", {})
        params: dict = {}
        bound_query = set(route.query)
        payload = shape.get("payload")
        body_doc = None
        for name, m in members.items():
            loc, loc_name = m.get("location"), m.get("locationName", name)
            target = self.shapes[m["shape"]]
            if loc == "uri":
                if loc_name in labels:
                    params[name] = labels[loc_name]
            elif loc == "querystring":
                if target["type"] == "map":
                    continue            # filled below from the unbound pairs
                bound_query.add(loc_name)
                if loc_name in query:
                    params[name] = self._coerce(target, query[loc_name], loc_name)
            elif loc == "header":
                values = [v for k, v in headers if k.lower() == loc_name.lower()]
                if values:
                    params[name] = self._coerce(target, values, loc_name)
            elif name == payload and target["type"] == "blob":
                params[name] = body
            else:
                if body_doc is None:
                    body_doc = self._body_json(body)
                key = loc_name if loc_name in body_doc else name
                if key in body_doc and body_doc[key] is not None:
                    check_type(self.shapes, m["shape"], body_doc[key])
                    params[name] = self._check_type(target, body_doc[key], name)
        for name, m in members.items():
            if m.get("location") == "querystring" and self.shapes[m["shape"]]["type"] == "map":
                params[name] = {k: v[0] for k, v in query.items() if k not in bound_query}
        for name in shape.get("required", ()):
            if params.get(name) in (None, ""):
                message = validation_errors([NULL_CONSTRAINT.format(
                    where=f"{_lower_first(route.name)}Input.{name}")])
                # a missing member fails the service's validation; an empty one is let
                # through to the operation, which refuses it as a bad request
                raise ValidationError(message) if params.get(name) is None else BadRequest(message)
        check_constraints(self.shapes, route.name, route.input, params)
        return params

    @staticmethod
    def _body_json(body: bytes) -> dict:
        if not body.strip():
            return {}
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"Could not parse request body into json: {e}") from None
        if not isinstance(doc, dict):
            raise BadRequest("Could not parse request body into json: expected an object")
        return doc

    def _coerce(self, target: dict, values: list[str], name: str):
        kind = target["type"]
        if kind == "list":
            return list(values)
        value = values[0]
        if kind == "boolean":
            if value.lower() not in ("true", "false"):
                raise BadRequest(f"Invalid value '{value}' for {name}: expected true or false")
            return value.lower() == "true"
        if kind in ("integer", "long"):
            try:
                return int(value)
            except ValueError:
                raise BadRequest(f"Invalid value '{value}' for {name}: expected an integer") from None
        return value

    def _check_type(self, target: dict, value, name: str):
        kind = target["type"]
        ok = {"string": str, "boolean": bool, "integer": int, "long": int, "double": (int, float),
              "float": (int, float), "list": list, "map": dict, "structure": dict,
              "timestamp": (int, float, str), "blob": str}.get(kind)
        if ok is not None and (not isinstance(value, ok) or
                               (kind in ("integer", "long") and isinstance(value, bool))):
            raise serialization_error(value, kind)
        if kind == "double" and not isinstance(value, bool):
            return float(value)
        return value

    # ---- output

    def shape_value(self, shape_name: str, value):
        """value reduced to what the shape declares, with members renamed to their
        locationName (GetRestApis returns its list under "item")."""
        shape = self.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            if not isinstance(value, dict):
                return None
            out = {}
            for name, m in shape.get("members", {}).items():
                if m.get("location") or name not in value or value[name] is None:
                    continue
                v = self.shape_value(m["shape"], value[name])
                if v is not None:
                    out[m.get("locationName", name)] = v
            return out
        if kind == "list":
            return [self.shape_value(shape["member"]["shape"], v) for v in value or ()]
        if kind == "map":
            return {k: self.shape_value(shape["value"]["shape"], v) for k, v in (value or {}).items()}
        if kind == "blob" and isinstance(value, bytes):
            return base64.b64encode(value).decode()
        return value

    def encode_output(self, route: Route, result: dict) -> tuple[list[tuple[str, str]], bytes]:
        if route.output is None:
            return [], b""
        shape = self.shapes[route.output]
        headers = []
        for name, m in shape.get("members", {}).items():
            if m.get("location") == "header" and result.get(name) is not None:
                headers.append((m.get("locationName", name), str(result[name])))
        payload = shape.get("payload")
        if payload:
            target = self.shapes[shape["members"][payload]["shape"]]
            value = result.get(payload)
            if target["type"] == "blob":
                if not any(k.lower() == "content-type" for k, _ in headers):
                    headers.append(("Content-Type", "application/octet-stream"))
                return headers, value or b""
            return [("Content-Type", JSON)] + headers, orjson.dumps(
                self.shape_value(shape["members"][payload]["shape"], value))
        return [("Content-Type", JSON)] + headers, orjson.dumps(self.shape_value(route.output, result))


def parse_query(query: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in sigv4.parse_query(query):
        out.setdefault(k, []).append(v)
    return out


def error_response(status: int, code: str, message: str | None) -> Response:
    return status, [("Content-Type", JSON), ("x-amzn-ErrorType", code),
                    ("x-amzn-RequestId", str(uuid.uuid4()))], orjson.dumps({"message": message})


def json_response(status: int, doc) -> Response:
    return status, [("Content-Type", JSON)], orjson.dumps(doc)


NO_CREDENTIALS = ("fastgate's control API has no admin credentials configured: set "
                  "FASTGATE_ADMIN_ACCESS_KEY_ID and FASTGATE_ADMIN_SECRET_ACCESS_KEY (or the "
                  "admin credentials in the config) to use it.")


class Admission(NamedTuple):
    """A request's head passed ControlAPI.admit: its body may be read, up to max_body bytes.
    verified: the signature is already checked (over a declared x-amz-content-sha256), so the
    body is from the key's holder; otherwise it is checked once the body is read."""
    max_body: int
    verified: bool


class ControlAPI:
    """handle() serves one request of the management API; on_change() is called after
    every committed mutation."""

    def __init__(self, store, credentials: Mapping[str, str], on_change: Callable[[], None],
                 *, service_model: dict | None = None):
        self.model = Model(store)
        self.credentials = dict(credentials)
        self.on_change = on_change
        self.spec = ServiceSpec(service_model or load_service_model())
        # operation name -> (callable(params) -> output dict); the access-control work
        # adds its operations (API keys, usage plans) with register()
        self.handlers: dict[str, Callable[[dict], dict]] = {
            name: getattr(self.model, method) for name, method in OPERATIONS.items()}
        # one thread: the model's operations run one at a time, off the event loop
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastgate-control")

    def register(self, operation: str, handler: Callable[[dict], dict]) -> None:
        if operation not in self.spec.operations:
            raise KeyError(f"{operation} is not an apigateway operation")
        self.handlers[operation] = handler

    def admit(self, method: str, path: str, query: str,
              headers: list[tuple[str, str]]) -> Admission | Response:
        """What the head alone decides, before a byte of the body is read: AWS's refusal
        (no credentials, not signed, unknown access key, wrong scope, date off by more than
        15 minutes; the signature too when the head declares the body's hash), or how much
        body the operation may take. The admin listener reads no body it refuses here."""
        method = method.upper()
        if path in ("/ready", "/live") or path == "/openapi.json" and method == "GET":
            return Admission(0, False)      # unauthenticated, and they take no body
        if not self.credentials:
            return error_response(403, "AccessDeniedException", NO_CREDENTIALS)
        try:
            head = sigv4.check_head(method, path, query, headers, self.credentials, service=SERVICE)
            verified = head.declares_hash
            if verified:
                head.verify_declared()
        except sigv4.SigV4Error as e:
            return error_response(e.status, e.code, e.reason)
        route, _ = self.spec.route(method, path, parse_query(query))
        return Admission(route.max_body if route is not None else JSON_BODY_MAX, verified)

    async def handle(self, method: str, path: str, query: str, headers: list[tuple[str, str]],
                     body: bytes) -> Response:
        method = method.upper()
        if path in ("/ready", "/live"):
            if method != "GET":
                return error_response(405, "MethodNotAllowedException", "Method Not Allowed")
            return json_response(200, self.health(path))
        if path == "/openapi.json" and method == "GET":
            return json_response(200, self.openapi())
        if not self.credentials:
            return error_response(403, "AccessDeniedException", NO_CREDENTIALS)
        try:
            sigv4.verify(method, path, query, headers, body, self.credentials, service=SERVICE)
        except sigv4.SigV4Error as e:
            return error_response(e.status, e.code, e.reason)
        q = parse_query(query)
        route, labels = self.spec.route(method, path, q)
        if route is None:
            # what AWS answers for a path or method it has no operation for
            return error_response(404, "UnknownOperationException", None)
        handler = self.handlers.get(route.name)
        if handler is None:
            return error_response(404, "UnknownOperationException",
                                  f"fastgate does not support the {route.name} operation")
        try:
            params = self.spec.decode_input(route, labels, q, headers, body)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, handler, params)
        except ApiError as e:
            return error_response(e.status, e.code, e.message)
        out_headers, out_body = self.spec.encode_output(route, result)
        if method != "GET" and route.name not in STATELESS_OPERATIONS:
            try:
                self.on_change()
            except Exception:   # a failed reload notice must not turn a committed change into an error
                pass
        return route.status, out_headers, out_body

    def health(self, path: str) -> dict:
        if path == "/live":
            return {"status": "ok"}
        try:
            version = self.model.store.version()
        except Exception as e:   # the store is gone or locked beyond the busy timeout
            return {"status": "unavailable", "reason": str(e)}
        return {"status": "ok", "stateVersion": version}

    def openapi(self) -> dict:
        return control_openapi(self.spec, sorted(self.handlers))


def control_openapi(spec: ServiceSpec, operations: list[str]) -> dict:
    """An OpenAPI 3.0 description of the operations served, derived from the service model."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {}

    def schema(shape_name: str) -> dict:
        shape = spec.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            if shape_name not in schemas:
                schemas[shape_name] = {}     # placeholder: shapes may refer to themselves
                props = {m.get("locationName", n): schema(m["shape"])
                         for n, m in shape.get("members", {}).items() if not m.get("location")}
                schemas[shape_name] = {"type": "object", "properties": props}
            return {"$ref": f"#/components/schemas/{shape_name}"}
        if kind == "list":
            return {"type": "array", "items": schema(shape["member"]["shape"])}
        if kind == "map":
            return {"type": "object", "additionalProperties": schema(shape["value"]["shape"])}
        if "enum" in shape:
            return {"type": "string", "enum": list(shape["enum"])}
        return {"string": {"type": "string"}, "boolean": {"type": "boolean"},
                "integer": {"type": "integer"}, "long": {"type": "integer"},
                "double": {"type": "number"}, "float": {"type": "number"},
                "timestamp": {"type": "number", "description": "epoch seconds"},
                "blob": {"type": "string", "format": "binary"}}.get(kind, {})

    for name in operations:
        op = spec.operations[name]
        uri = op["http"]["requestUri"]
        path = uri.split("?")[0]
        entry: dict = {"operationId": name, "parameters": [], "responses": {}}
        if "?" in uri:
            entry["description"] = f"Requires the query string {uri.split('?', 1)[1]}."
        in_shape = spec.shapes.get(op.get("input", {}).get("shape", ""), {})
        body_props = {}
        for member, m in in_shape.get("members", {}).items():
            loc = m.get("location")
            where = {"uri": "path", "querystring": "query", "header": "header"}.get(loc)
            if where:
                entry["parameters"].append({"name": m.get("locationName", member), "in": where,
                                            "required": where == "path" or member in in_shape.get("required", ()),
                                            "schema": schema(m["shape"])})
            elif member == in_shape.get("payload"):
                entry["requestBody"] = {"required": True, "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
            else:
                body_props[m.get("locationName", member)] = schema(m["shape"])
        if body_props:
            entry["requestBody"] = {"content": {JSON: {"schema": {"type": "object", "properties": body_props}}}}
        status = str(op["http"].get("responseCode", 200))
        out = op.get("output", {}).get("shape")
        entry["responses"][status] = {"description": "success"}
        if out:
            entry["responses"][status]["content"] = {JSON: {"schema": schema(out)}}
        entry["responses"]["default"] = {"description": "AWS error: x-amzn-ErrorType header and {\"message\": ...}"}
        paths.setdefault(path, {})[op["http"]["method"].lower()] = entry
    return {"openapi": "3.0.3",
            "info": {"title": "fastgate control API (Amazon API Gateway management API subset)",
                     "version": API_VERSION},
            "components": {"schemas": schemas,
                           "securitySchemes": {"sigv4": {"type": "apiKey", "name": "Authorization",
                                                         "in": "header", "x-amazon-apigateway-authtype": "awsSigv4"}}},
            "security": [{"sigv4": []}],
            "paths": paths}
