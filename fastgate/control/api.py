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
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

from fastgate.phases.auth import sigv4
from fastgate.control.errors import ApiError
from fastgate.control.model import OPERATIONS, Model
from fastgate.control.service import (
    DOCUMENT_BODY_MAX,
    JSON,
    JSON_BODY_MAX,
    Admission,
    Response,
    Service,
    ServiceSpec,
    error_response,
    json_response,
    load_model,
    parse_query,
)
from fastgate.control.v2.api import v2_service

SERVICE = "apigateway"
API_VERSION = "2015-07-09"
# mutations that change no document of the state: no reload follows them
STATELESS_OPERATIONS = frozenset({"FlushStageCache"})

__all__ = ["ControlAPI", "Admission", "DOCUMENT_BODY_MAX", "JSON_BODY_MAX", "error_response",
           "load_service_model"]


def load_service_model() -> dict:
    """botocore's apigateway service-2.json (a runtime dependency: it is the spec)."""
    return load_model(SERVICE, API_VERSION)


NO_CREDENTIALS = ("fastgate's control API has no admin credentials configured: set "
                  "FASTGATE_ADMIN_ACCESS_KEY_ID and FASTGATE_ADMIN_SECRET_ACCESS_KEY (or the "
                  "admin credentials in the config) to use it.")


class ControlAPI:
    """handle() serves one request of the management API; on_change() is called after
    every committed mutation."""

    def __init__(self, store, credentials: Mapping[str, str], on_change: Callable[[], None],
                 *, service_model: dict | None = None):
        self.model = Model(store)
        self.credentials = dict(credentials)
        self.on_change = on_change
        # operation name -> (callable(params) -> output dict); the admin process adds the
        # operations it serves itself (FlushStageCache) with register()
        self.rest = Service(SERVICE, ServiceSpec(service_model or load_service_model(),
                                                 aws_checks=True),
                            {name: getattr(self.model, method) for name, method in OPERATIONS.items()},
                            STATELESS_OPERATIONS)
        self.spec, self.handlers = self.rest.spec, self.rest.handlers
        # apigatewayv2 (HTTP APIs), over the same store and State as the REST model
        self.v2 = v2_service(self.model)
        # one thread: the model's operations run one at a time, off the event loop
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastgate-control")

    def register(self, operation: str, handler: Callable[[dict], dict]) -> None:
        self.rest.register(operation, handler)

    def service_for(self, path: str) -> Service:
        """The service a path belongs to: every apigatewayv2 requestUri starts with /v2/,
        no apigateway one does."""
        return self.v2 if path == "/v2" or path.startswith("/v2/") else self.rest

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
        route, _ = self.service_for(path).spec.route(method, path, parse_query(query))
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
        service = self.service_for(path)
        route, labels = service.spec.route(method, path, q)
        if route is None:
            # what AWS answers for a path or method it has no operation for
            return error_response(404, "UnknownOperationException", None)
        handler = service.handlers.get(route.name)
        if handler is None:
            return error_response(404, "UnknownOperationException",
                                  f"fastgate does not support the {route.name} operation")
        try:
            params = service.spec.decode_input(route, labels, q, headers, body)
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self.executor, handler, params)
        except ApiError as e:
            return error_response(e.status, e.code, e.message, e.retry_after)
        out_headers, out_body = service.spec.encode_output(route, result)
        if method != "GET" and route.name not in service.stateless:
            try:
                self.on_change()
            except Exception:   # a failed reload notice must not turn a committed change into an error
                pass
        return route.status, out_headers, out_body

    def health(self, path: str) -> dict:
        if path == "/live":
            return {"status": "ok"}
        store = self.model.store
        try:
            version = store.version()
        except Exception as e:   # the store is gone or locked beyond the busy timeout
            return {"status": "unavailable", "reason": str(e)}
        if hasattr(store, "available") and not store.available():
            # a fleet host without its database: it serves and answers reads, refuses changes
            return {"status": "ok", "stateVersion": store.seen_version, "writable": False,
                    "reason": store.error}
        return {"status": "ok", "stateVersion": version}

    def openapi(self) -> dict:
        doc = control_openapi(self.rest.spec, sorted(self.rest.handlers))
        v2 = control_openapi(self.v2.spec, sorted(self.v2.handlers), schema_prefix="V2")
        doc["paths"].update(v2["paths"])
        doc["components"]["schemas"].update(v2["components"]["schemas"])
        doc["info"]["description"] = (f"{SERVICE} {API_VERSION} and apigatewayv2 "
                                      f"{self.v2.version} (paths under /v2/)")
        return doc


def control_openapi(spec: ServiceSpec, operations: list[str], schema_prefix: str = "") -> dict:
    """An OpenAPI 3.0 description of the operations served, derived from the service model
    (schemas named schema_prefix + shape name: both services have a "Stage")."""
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {}

    def schema(shape_name: str) -> dict:
        shape = spec.shapes[shape_name]
        kind = shape["type"]
        if kind == "structure":
            name = schema_prefix + shape_name
            if name not in schemas:
                schemas[name] = {}     # placeholder: shapes may refer to themselves
                props = {m.get("locationName", n): schema(m["shape"])
                         for n, m in shape.get("members", {}).items() if not m.get("location")}
                schemas[name] = {"type": "object", "properties": props}
            return {"$ref": f"#/components/schemas/{name}"}
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
