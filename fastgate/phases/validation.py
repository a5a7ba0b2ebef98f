"""Request validation: API Gateway's request validators, compiled once per method.

A REST API method names a request validator (``requestValidatorId``) that turns on one or
both checks:

* ``validateRequestParameters``: every *required* request parameter
  (``method.request.{querystring,header,path}.NAME: true``) is present and not blank.
* ``validateRequestBody``: the body matches the JSON Schema model that ``requestModels``
  names for the request's Content-Type.

The control plane calls ``compile_validator(api, method, warn=...)`` once per method; the
VALIDATE phase calls ``Validator.check(...)`` once per request. A failure is data, not an
exception: ``(error_type, body)`` with AWS's gateway response type and JSON body, so the
API's customised gateway responses apply.

Schemas are compiled with jsonschema-rs (Rust): draft 4 unless the model's ``$schema`` says
otherwise (draft 6, 7, 2019-09, 2020-12, OpenAPI 3.1's dialect). PERF: a 4-field body
parses (orjson) and validates in about 4 µs; the pure-Python ``jsonschema`` package takes
about 90 µs for the same check (measured on this project's 2-core machine).
"""

from __future__ import annotations

import json
import re
from typing import Callable, NamedTuple

import jsonschema_rs
import orjson

BAD_PARAMETERS = "BAD_REQUEST_PARAMETERS"
BAD_BODY = "BAD_REQUEST_BODY"

_DRAFT4 = "http://json-schema.org/draft-04/schema#"
# OpenAPI 3.1's dialect is 2020-12 plus annotation-only keywords (discriminator, xml,
# example), so a 2020-12 validator checks exactly what it requires.
_OAS31_DIALECTS = ("https://spec.openapis.org/oas/3.1/dialect/base",
                   "https://spec.openapis.org/oas/3.1/dialect/2024-10-25")
_DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"
# How one model refers to another: AWS's model URL (any API id: an exported and re-imported
# API keeps the old id in its refs).
_MODEL_URL = re.compile(r"^https://apigateway\.amazonaws\.com/restapis/[^/]+/models/([^/#]+)(#.*)?$")
_PARAM_KEY = re.compile(r"^method\.request\.(header|path|querystring)\.(.+)$")
_MAX_ERRORS = 10          # field errors listed in a BAD_REQUEST_BODY answer
_WHITESPACE = b" \t\r\n"


class Failure(NamedTuple):
    """Why a request failed validation: unpacks as ``error_type, body``."""
    error_type: str       # BAD_REQUEST_PARAMETERS or BAD_REQUEST_BODY (gateway response types)
    body: bytes           # AWS's JSON body plus fastgate's "errors" list (see docs/validation.md)

    @property
    def message(self) -> str:
        """AWS's message alone ($context.error.message)."""
        return orjson.loads(self.body)["message"]


def _failure(error_type: str, message: str, errors: list | None = None) -> Failure:
    doc: dict = {"message": message}
    if errors:
        doc["errors"] = errors
    return Failure(error_type, orjson.dumps(doc))


class Validator:
    """One method's compiled request validator. Immutable; shared by every request."""

    __slots__ = ("needs_body", "_headers", "_query", "_path", "_names", "_models")

    def __init__(self, *, headers=(), query=(), path=(), names=(), models=None):
        # Required parameters in AWS's order (see _required_parameters), as
        # (kind, lookup name, name as reported): kind 0 header, 1 path, 2 querystring.
        self._names: tuple = tuple(names)
        self._headers = frozenset(headers)    # lowercase header names that must be present
        self._query = frozenset(query)        # query parameter names (case-sensitive)
        self._path = frozenset(path)
        # media type (lowercase, no parameters) or "$default" -> jsonschema_rs validator
        self._models: dict | None = models
        # Only body validation needs the protocol to buffer the body before VALIDATE.
        self.needs_body: bool = bool(models)

    def check(self, query: bytes, headers: list, path_params: dict | None,
              content_type: bytes | None, body: bytes | None) -> Failure | None:
        """None when the request passes; else the Failure to answer with.

        Parameters are checked first: AWS reports missing parameters even when the body
        is also invalid."""
        if self._names:
            missing = self._missing(query, headers, path_params)
            if missing:
                return _failure(BAD_PARAMETERS,
                                "Missing required request parameters: [" + ", ".join(missing) + "]")
        if self._models is not None:
            return self._check_body(content_type, body)
        return None

    def _missing(self, query: bytes, headers: list, path_params: dict | None) -> list[str]:
        present: set = set()
        if self._headers:
            for name, value in headers:
                lname = name.lower()
                if lname in self._headers and value.strip(_WHITESPACE):
                    present.add((0, lname))
        if self._path and path_params:
            for name in self._path:
                if (path_params.get(name) or b"").strip(_WHITESPACE):
                    present.add((1, name))
        if self._query and query:
            for pair in query.split(b"&"):
                name, _, value = pair.partition(b"=")
                if name in self._query and value.strip(_WHITESPACE):
                    present.add((2, name))
        return [shown for kind, key, shown in self._names if (kind, key) not in present]

    def _check_body(self, content_type: bytes | None, body: bytes | None) -> Failure | None:
        # AWS: a request without Content-Type is taken as application/json; a media type
        # with no model of its own uses the "$default" model; none of either: no check.
        media = b"application/json"
        if content_type:
            media = content_type.split(b";", 1)[0].strip(_WHITESPACE).lower() or media
        validator = self._models.get(media.decode("latin-1"))
        if validator is None:
            validator = self._models.get("$default")
            if validator is None:
                return None
        # An empty body is checked as {} (what AWS does: a model with required
        # properties refuses it, an empty model accepts it).
        try:
            instance = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            instance = _strict_json(body)
            if instance is _NOT_JSON:
                return _failure(BAD_BODY, "Invalid request body",
                                [{"path": "", "message": "the body is not valid JSON"}])
        if validator.is_valid(instance):
            return None
        errors = []
        for error in validator.iter_errors(instance):
            errors.append({"path": _pointer(error.instance_path), "message": error.message})
            if len(errors) == _MAX_ERRORS:
                break
        return _failure(BAD_BODY, "Invalid request body", errors)


_NOT_JSON = object()


def _reject_constant(name):
    raise ValueError(name)


def _strict_json(body: bytes):
    """What orjson refused may still be JSON: integers beyond 64 bits. NaN and
    Infinity are not JSON, so they stay refused."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _NOT_JSON


def _pointer(path) -> str:
    """RFC 6901 JSON Pointer of an instance path: ["items", 0, "a/b"] -> "/items/0/a~1b"."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


# --- compile time -------------------------------------------------------------------

def compile_validator(api: dict, method: dict, *, warn: Callable[[str], None]) -> Validator | None:
    """The method's request validator, or None when it has none or nothing to check.

    ``api`` is the RestApi document (fastgate.control.openapi / the control API's model): its
    ``requestValidators`` and ``models``. Raises ValueError when a model the validator
    needs cannot be compiled (bad schema, unknown model, a $ref to anything but another
    model): a method must not run unvalidated because its model is broken. Settings that
    AWS accepts but that check nothing are reported through ``warn``."""
    vid = method.get("requestValidatorId")
    if not vid:
        return None
    found = [v for v in api.get("requestValidators") or () if v.get("id") == vid]
    if not found:
        raise ValueError(f"request validator {vid!r} does not exist in the API")
    settings = found[0]
    kwargs: dict = {}
    if settings.get("validateRequestParameters"):
        kwargs.update(_required_parameters(method.get("requestParameters") or {}, warn))
    if settings.get("validateRequestBody"):
        models = method.get("requestModels") or {}
        if models:
            compiler = _ModelCompiler(api)
            kwargs["models"] = {("$default" if ctype == "$default" else ctype.lower()):
                                compiler.validator(name) for ctype, name in models.items()}
        else:
            warn(f"request validator {settings.get('name', vid)!r} validates the body, but the "
                 "method has no request model; the body is not checked")
    if not kwargs.get("names") and not kwargs.get("models"):
        return None
    return Validator(**kwargs)


def _required_parameters(params: dict, warn) -> dict:
    # AWS lists missing parameters sorted by their full key, so headers come first, then
    # path, then query string, each by name (LocalStack reproduces the same order).
    kinds = {"header": 0, "path": 1, "querystring": 2}
    names, sets = [], ([], [], [])
    for key in sorted(params):
        if not params[key]:
            continue
        m = _PARAM_KEY.match(key)
        if m is None:
            warn(f"requestParameters {key!r} is not method.request.{{header,path,querystring}}."
                 "NAME; it is not validated")
            continue
        kind, name = kinds[m.group(1)], m.group(2)
        lookup = name.lower().encode() if kind == 0 else name.encode()
        names.append((kind, lookup, name))
        sets[kind].append(lookup)
    return dict(names=names, headers=sets[0], path=sets[1], query=sets[2])


class _ModelCompiler:
    """Compiles the API's models into validators; other models are found through
    their AWS model URLs (never fetched: anything else is a compile error)."""

    def __init__(self, api: dict):
        self.schemas: dict[str, dict] = {}
        self.errors: dict[str, str] = {}
        for model in api.get("models") or ():
            name = model.get("name")
            try:
                schema = model.get("schema") or "{}"
                schema = json.loads(schema) if isinstance(schema, str) else schema
                if not isinstance(schema, (dict, bool)):
                    raise ValueError("a schema must be a JSON object")
            except ValueError as e:
                self.errors[name] = f"model {name!r}: the schema is not valid JSON ({e})"
                continue
            self.schemas[name] = _with_dialect(schema)

    def _retrieve(self, uri: str):
        m = _MODEL_URL.match(uri)
        if m is None:
            raise ValueError(f"{uri!r} is not another model of this API "
                             "(https://apigateway.amazonaws.com/restapis/ID/models/NAME)")
        name = m.group(1)
        if name not in self.schemas:
            raise ValueError(self.errors.get(name, f"model {name!r} does not exist"))
        return self.schemas[name]

    def validator(self, name: str):
        if name not in self.schemas:
            raise ValueError(self.errors.get(name, f"request model {name!r} does not exist"))
        schema = self.schemas[name]
        try:
            cls = jsonschema_rs.validator_cls_for(schema) if isinstance(schema, dict) \
                else jsonschema_rs.Draft4Validator
            return cls(schema, retriever=self._retrieve)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as e:
            first = str(e).strip().splitlines()[0]
            raise ValueError(f"model {name!r} cannot be compiled: {first}") from None


def model_validators(models: dict, names) -> dict:
    """{name: JSON schema (a dict, or its JSON text)} -> {name: validator} for `names`, as
    API Gateway checks a body against a model (Draft 4 unless the schema says); a model may
    $ref another by its AWS model URL. Raises ValueError."""
    compiler = _ModelCompiler({"models": [{"name": n, "schema": s} for n, s in models.items()]})
    return {name: compiler.validator(name) for name in names}


def _with_dialect(schema):
    """Draft 4 unless the schema names its own dialect (API Gateway's default); OpenAPI
    3.1's dialect URI becomes 2020-12, which jsonschema-rs knows."""
    if not isinstance(schema, dict):
        return schema
    dialect = schema.get("$schema")
    if dialect is None:
        return {"$schema": _DRAFT4, **schema}
    if dialect in _OAS31_DIALECTS:
        return {**schema, "$schema": _DRAFT2020}
    return schema
