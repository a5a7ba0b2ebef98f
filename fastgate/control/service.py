"""What every AWS rest-json management service fastgate serves shares: an operation's
route (its requestUri template), the service model indexed once (ServiceSpec: input
decoding, output shaping), the query parser and AWS's error and JSON responses. The
`apigateway` service (fastgate/control/api.py) and the `apigatewayv2` service
(fastgate/control/v2/api.py) are each a ServiceSpec over botocore's model plus handlers."""

from __future__ import annotations

import base64
import re
import time
import uuid
from typing import NamedTuple
from urllib.parse import unquote

import orjson

from fastgate.control.errors import BadRequest, ValidationError
from fastgate.control.input_checks import check_constraints, check_type, serialization_error
from fastgate.control.messages import NULL_CONSTRAINT, validation_errors
from fastgate.phases.auth import sigv4

JSON = "application/json"

Response = tuple[int, list[tuple[str, str]], bytes]
# The largest request body an operation takes. A document (ImportRestApi, PutRestApi,
# ImportApiKeys, ImportDocumentationParts: a blob payload in the service model; ImportApi and
# ReimportApi) may be large; every other operation takes a small JSON object (a mapping
# template is at most 300 KB).
DOCUMENT_BODY_MAX = 10 * 1024 * 1024    # bytes
JSON_BODY_MAX = 2 * 1024 * 1024         # bytes


def load_model(service: str, version: str) -> dict:
    """botocore's service-2.json of a service (a runtime dependency: it is the spec)."""
    import botocore.loaders
    return botocore.loaders.Loader().load_service_model(service, "service-2", version)


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
    """The parts of the service model the control API uses, indexed once.

    wire_names: members are keyed by their JSON name (locationName) in the params handed to
    an operation and in the dict it returns, not by the model's member name. apigatewayv2
    names its members in PascalCase ("ApiId") and sends them in camelCase ("apiId"); the
    apigateway model names them as it sends them (but for GetRestApis' "item").

    aws_checks: the checks AWS's front end makes before an operation runs, as recorded for
    the apigateway service (fastgate/control/input_checks.py: SerializationException for a
    wrong JSON type anywhere in the input, ValidationException for enumerations, patterns
    and a missing required member)."""

    def __init__(self, model: dict, *, wire_names: bool = False, document_operations=(),
                 aws_checks: bool = False):
        self.wire_names = wire_names
        self.aws_checks = aws_checks
        self.shapes = model["shapes"]
        self.operations = model["operations"]
        self.routes = [Route(name, op) for name, op in model["operations"].items()]
        for r in self.routes:
            shape = self.shapes.get(r.input) or {}
            payload = shape.get("payload")
            if payload and self.shapes[shape["members"][payload]["shape"]]["type"] == "blob" \
                    or r.name in document_operations:
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
        for member, m in members.items():
            loc, loc_name = m.get("location"), m.get("locationName", member)
            name = loc_name if self.wire_names else member
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
            elif member == payload and target["type"] == "blob":
                params[name] = body
            else:
                if body_doc is None:
                    body_doc = self._body_json(body)
                key = loc_name if loc_name in body_doc else name
                if key in body_doc and body_doc[key] is not None:
                    if self.aws_checks:
                        check_type(self.shapes, m["shape"], body_doc[key])
                    params[name] = self._check_type(target, body_doc[key], name)
        for member, m in members.items():
            if m.get("location") == "querystring" and self.shapes[m["shape"]]["type"] == "map":
                name = m.get("locationName", member) if self.wire_names else member
                params[name] = {k: v[0] for k, v in query.items() if k not in bound_query}
        for member in shape.get("required", ()):
            name = members[member].get("locationName", member) if self.wire_names else member
            if params.get(name) in (None, ""):
                message = validation_errors([NULL_CONSTRAINT.format(
                    where=f"{_lower_first(route.name)}Input.{_lower_first(member)}")])
                # a missing member fails the service's validation; an empty one is let
                # through to the operation, which refuses it as a bad request
                if self.aws_checks and params.get(name) is None:
                    raise ValidationError(message)
                raise BadRequest(message)
        if self.aws_checks:
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
            if self.aws_checks:
                raise serialization_error(value, kind)
            raise BadRequest(f"Invalid value for {name}: expected {kind}")
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
            for member, m in shape.get("members", {}).items():
                name = m.get("locationName", member) if self.wire_names else member
                if m.get("location") or name not in value or value[name] is None:
                    continue
                v = self.shape_value(m["shape"], value[name])
                if v is not None:
                    out[m.get("locationName", member)] = v
            return out
        if kind == "list":
            return [self.shape_value(shape["member"]["shape"], v) for v in value or ()]
        if kind == "map":
            return {k: self.shape_value(shape["value"]["shape"], v) for k, v in (value or {}).items()}
        if kind == "blob" and isinstance(value, bytes):
            return base64.b64encode(value).decode()
        if kind == "timestamp" and shape.get("timestampFormat") == "iso8601" \
                and isinstance(value, (int, float)):
            # apigatewayv2's dates are ISO 8601 on the wire ("2024-05-01T09:30:00Z")
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
        return value

    def encode_output(self, route: Route, result: dict) -> tuple[list[tuple[str, str]], bytes]:
        if route.output is None:
            return [], b""
        shape = self.shapes[route.output]
        headers = []
        for member, m in shape.get("members", {}).items():
            name = m.get("locationName", member) if self.wire_names else member
            if m.get("location") == "header" and result.get(name) is not None:
                headers.append((m.get("locationName", member), str(result[name])))
        payload = shape.get("payload")
        if payload:
            target = self.shapes[shape["members"][payload]["shape"]]
            value = result.get(shape["members"][payload].get("locationName", payload)
                               if self.wire_names else payload)
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


def error_response(status: int, code: str, message: str | None,
                   retry_after: str | None = None) -> Response:
    headers = [("Content-Type", JSON), ("x-amzn-ErrorType", code),
               ("x-amzn-RequestId", str(uuid.uuid4()))]
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    return status, headers, orjson.dumps({"message": message})


def json_response(status: int, doc) -> Response:
    return status, [("Content-Type", JSON)], orjson.dumps(doc)


class Admission(NamedTuple):
    """A request's head passed ControlAPI.admit: its body may be read, up to max_body bytes.
    verified: the signature is already checked (over a declared x-amz-content-sha256), so the
    body is from the key's holder; otherwise it is checked once the body is read."""
    max_body: int
    verified: bool


class Service:
    """One management service served on the admin listener: its spec, and the handler of each
    operation it serves (name -> callable(params) -> output dict)."""

    def __init__(self, name: str, spec: ServiceSpec, handlers: dict, stateless=frozenset(),
                 version: str = ""):
        self.name = name
        self.spec = spec
        self.handlers = handlers
        self.stateless = stateless      # mutations that change no document: no reload follows
        self.version = version

    def register(self, operation: str, handler) -> None:
        if operation not in self.spec.operations:
            raise KeyError(f"{operation} is not an {self.name} operation")
        self.handlers[operation] = handler
