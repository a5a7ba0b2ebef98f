"""HTTP APIs' first-class AWS integrations (``integrationSubtype``), as AWS defines each one
(the developer guide's "Integration subtype reference"): the parameters it takes, which are
required, and the service operation they become.

AWS's create-time check of a subtype's parameters is fastgate.phases.aws.checks.check_subtype.

Each parameter's value is a mapping expression: ``$request.body`` (the whole body),
``$request.body.name`` (a JSONPath into it: a string as it is, anything else as JSON),
``$request.header.name``, ``$request.querystring.name``, ``$request.path.name``,
``$context.name``, ``$stageVariables.name``, static text, or text mixing them
(``${request.path.id}-order``). The values become the operation's input, each converted
to the member's type in botocore's model (numbers, booleans, JSON lists and maps, blobs),
serialized in the service's protocol by botocore's serializer, signed and sent; the
service's answer (status, body, Content-Type) goes back to the client as it is.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from fastgate.phases.aws.checks import SUBTYPES, VARIABLE, check_subtype
from fastgate.phases.aws.credentials import ROLE_ARN
from fastgate.phases.aws.runner import Runner

__all__ = ["SubtypeIntegration", "Expression"]

# --- mapping expressions -----------------------------------------------------------

class Expression:
    """One compiled parameter value: literal text and variables, rendered per request."""

    def __init__(self, source: str):
        self.parts: list = []      # str literals and ("kind", arg) variables
        pos = 0
        for m in VARIABLE.finditer(source):
            if m.start() > pos:
                self.parts.append(source[pos:m.start()])
            name = m.group(1) if m.group(1) is not None else m.group(2)
            kind, _, arg = name.partition(".")
            if kind == "request":
                kind, _, arg = arg.partition(".")
                if name.startswith("request.body"):
                    kind, arg = "body", name[len("request.body"):]
            self.parts.append((kind, arg))
            pos = m.end()
        if pos < len(source):
            self.parts.append(source[pos:])
        self.needs_body = any(isinstance(p, tuple) and p[0] == "body" for p in self.parts)

    def render(self, req: dict) -> str | None:
        """The value for one request; None when it is only variables and none has a value
        (the parameter is then left out)."""
        out, found = [], False
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                found = True
                continue
            value = _lookup(req, *part)
            if value is not None:
                out.append(value)
                found = True
        return "".join(out) if found else None


def _lookup(req: dict, kind: str, arg: str) -> str | None:
    if kind == "body":
        if not arg:
            return req["body"]
        doc = req.get("json")
        if doc is None:
            try:
                doc = req["json"] = json.loads(req["body"]) if req["body"] else None
            except ValueError:
                return None
        from fastgate.phases.vtl import jsonpath
        try:
            found = jsonpath(doc, "$" + arg)
        except ValueError:
            return None
        if found is None:
            return None
        return found if isinstance(found, str) else json.dumps(found, separators=(",", ":"))
    if kind == "header":
        return req["headers"].get(arg.lower())
    if kind == "querystring":
        return req["query"].get(arg)
    if kind == "path":
        return req["path"].get(arg)
    if kind == "context":
        value = req["context"]
        for piece in arg.split("."):
            value = value.get(piece) if isinstance(value, dict) else None
        return None if value is None else str(value)
    if kind == "stageVariables":
        return req["stage"].get(arg)
    return None


def _request_view(ctx, body: bytes) -> dict:
    """What expressions read, from the request as the payload 1.0 event has it."""
    event = ctx.snapshot.hooks.mapping_event(ctx, body)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    query = {k: v[-1] for k, v in (event.get("multiValueQueryStringParameters") or {}).items() if v}
    return {"body": body.decode("utf-8", "replace"), "headers": headers, "query": query,
            "path": {k: unquote(v) for k, v in (event.get("pathParameters") or {}).items()},
            "context": event.get("requestContext") or {}, "stage": event.get("stageVariables") or {}}


# --- the operation's input -------------------------------------------------------------

def _typed(value: str, shape):
    """A rendered value as the member's type in botocore's model."""
    kind = shape.type_name
    if kind in ("integer", "long"):
        try:
            return int(value)
        except ValueError:
            return value
    if kind == "boolean":
        return value.strip().lower() == "true"
    if kind == "blob":
        return value.encode()
    if kind in ("list", "map", "structure"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if kind == "list" and not isinstance(parsed, list):
            # a list given as text: "All" or "a,b"
            return [_typed(v.strip(), shape.member) for v in value.split(",") if v.strip()]
        return parsed if parsed is not None else value
    return value


def _members(values: dict, shape) -> dict:
    """The parameters as the shape's members, typed: AWS names them in PascalCase
    (StateMachineArn), some models in camelCase (Step Functions' stateMachineArn)."""
    names = {name.lower(): name for name in shape.members}
    out = {}
    for key, value in values.items():
        name = names.get(key.lower())
        if name is not None:
            out[name] = _typed(value, shape.members[name])
    return out


class SubtypeIntegration(Runner):
    """One compiled integration subtype of one HTTP API stage."""

    def __init__(self, subtype: str, params: dict, credentials: str | None, where: str,
                 services, timeout_s: float, region: str | None = None):
        problem = check_subtype(subtype, params)
        if problem is not None:
            raise ValueError(problem)
        super().__init__(services, timeout_s, f"{where} ({subtype})")
        from fastgate.phases.aws.services import service
        name, operation, _, _ = SUBTYPES[subtype]
        self.subtype = subtype
        self.service = service(name)
        self.operation = self.service.model.operation_model(operation)
        self.params = {k: Expression(v) for k, v in params.items()}
        if credentials and not ROLE_ARN.match(credentials):
            raise ValueError(f"credentials {credentials!r} is not an IAM role ARN")
        self.role_arn = credentials or None
        self.region = region
        from botocore.serialize import create_serializer
        self.serializer = create_serializer(self.service.protocol, include_validation=False)

    def operation_input(self, req: dict) -> tuple[dict, str | None]:
        """(the operation's input, the Region parameter) for one request."""
        values = {}
        for key, expr in self.params.items():
            value = expr.render(req)
            if value is not None and value != "":
                values[key] = value
        region = values.pop("Region", None)
        shape = self.operation.input_shape
        if self.subtype == "EventBridge-PutEvents":
            # one event: the subtype's parameters are the members of PutEvents' one entry
            return {"Entries": [_members(values, shape.members["Entries"].member)]}, region
        return _members(values, shape), region

    async def call(self, ctx, body: bytes):
        clients = self.clients
        params, region = self.operation_input(_request_view(ctx, body))
        region = region or self.region or clients.region
        request = self.serializer.serialize_to_request(params, self.operation)
        endpoint = clients.endpoint(self.service, region)
        host_prefix = (self.operation.endpoint or {}).get("hostPrefix")
        if host_prefix and endpoint == _aws_default(self.service, region):
            # StartSyncExecution answers at sync-states.REGION.amazonaws.com on AWS
            scheme, _, rest = endpoint.partition("://")
            endpoint = f"{scheme}://{host_prefix}{rest}"
        from urllib.parse import urlencode
        query = urlencode(request["query_string"], doseq=True) if request["query_string"] else ""
        url = endpoint + request["url_path"] + ("?" + query if query else "")
        data = request["body"]
        if isinstance(data, str):
            data = data.encode()
        headers = [(k, v) for k, v in request["headers"].items()]
        resp = await clients.send(self.service, region, request["method"], url, headers,
                                  data or b"", self.role_arn)
        ctx.upstream_status = resp.status
        out_headers = [(n, v) for n, v in resp.headers if n.lower() == b"content-type"]
        return resp.status, out_headers or [(b"Content-Type", b"application/json")], resp.body


def _aws_default(svc, region: str) -> str:
    from fastgate.phases.aws.services import aws_endpoint
    return aws_endpoint(svc, region)
