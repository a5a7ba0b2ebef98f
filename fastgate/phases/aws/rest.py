"""A REST API's ``type: AWS`` integration, as API Gateway sends it.

The URI names the service and how it is called:

* ``arn:aws:apigateway:{region}:{service}:action/{Action}``: the service's endpoint root,
  ``Action={Action}`` in the query string (the query protocol's own parameter), the mapped
  query parameters after it; for DynamoDB, Kinesis, SSM and Step Functions API Gateway also
  sets ``X-Amz-Target`` (``DynamoDB_20120810.PutItem``), other JSON services (EventBridge) map
  it themselves, as on AWS;
* ``arn:aws:apigateway:{region}:{service}:path/{path}``: ``/{path}`` on the endpoint, its
  ``{name}`` segments filled from ``integration.request.path.name`` (else the method's path
  parameter of that name): ``s3:path/{bucket}/{key}``, ``sqs:path/{account}/{queue}``.

The request: ``httpMethod``; headers API Gateway always sends (``Accept: application/json``,
``User-Agent: AmazonAPIGateway_{apiId}``, the client's Content-Type) under the mapped
``integration.request.header.*``; the mapped query string; the body the request template
renders (passthroughBehavior as for http integrations), signed with SigV4 for the service
and region, with ``credentials`` (a role ARN: assumed, or mapped to a profile) or the
gateway's own. The answer goes through the integration responses: ``selectionPattern``
matched against the service's status code, or, for Lambda
(``lambda:path/2015-03-31/functions/{arn}/invocations``), against the function error's
``errorMessage``; the response template renders the body.
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple
from urllib.parse import quote

import orjson

from fastgate.phases.aws.checks import AWS_URI
from fastgate.phases.aws.credentials import CALLER, ROLE_ARN
from fastgate.phases.aws.runner import Runner
from fastgate.phases.aws.services import AUTO_TARGET, service
from fastgate.phases.vtl import HttpMapping

__all__ = ["AwsUri", "parse_uri", "AwsIntegration"]

_LAMBDA_PATH = re.compile(r"^2015-03-31/functions/(.+)/invocations$")
# headers an AWS integration may not map (API Gateway fails such a request with a 500,
# "... header already present"): the signature's and the hop's own
_RESERVED = frozenset(("authorization", "connection", "expect", "proxy-authenticate", "te",
                       "content-length", "transfer-encoding", "host", "x-amz-date",
                       "x-amz-security-token", "x-amzn-trace-id", "x-amzn-apigateway-api-id"))
_NO_BODY = (b"GET", b"HEAD", b"OPTIONS")


class AwsUri(NamedTuple):
    partition: str
    region: str
    service: str          # the endpoint prefix: "sqs", "states", "s3"
    kind: str             # "action" | "path"
    rest: str             # the action ("SendMessage") or the path ("123456789012/queue")

    @property
    def lambda_function(self) -> str | None:
        """The function ARN (or name) of a Lambda invocation URI."""
        if self.service != "lambda" or self.kind != "path":
            return None
        m = _LAMBDA_PATH.match(self.rest)
        return m.group(1) if m else None


def parse_uri(uri: str) -> AwsUri:
    m = AWS_URI.match(uri or "")
    if m is None:
        raise ValueError(f"AWS integration uri {uri!r} is not arn:aws:apigateway:REGION:SERVICE:"
                         "action/ACTION or ...:path/PATH")
    return AwsUri(*m.groups())


class AwsMapping(HttpMapping):
    """HttpMapping's templates and integration responses, with what AWS integrations add:
    Lambda's errorMessage selection and each response's contentHandling."""

    def __init__(self, integ: dict, where: str, warn):
        super().__init__(integ, where, warn)
        self.handling = {int(r.get("statusCode", 200)): r.get("contentHandling")
                         for r in (integ.get("integrationResponses") or {}).values()}
        self.request_handling = integ.get("contentHandling")

    def convert_request(self, body: bytes, binary: bool) -> bytes:
        """The integration's contentHandling on the request payload."""
        if self.request_handling == "CONVERT_TO_TEXT" and binary:
            return base64.b64encode(body)
        if self.request_handling == "CONVERT_TO_BINARY" and not binary:
            try:
                return base64.b64decode(body, validate=True)
            except ValueError:
                return body
        return body

    def respond(self, event: dict, headers: list, body: bytes, accept: str | None, selection: str):
        """(status, [(name, value)], body) for the client, or a gateway response type."""
        chosen = self.choose(selection)
        if chosen is None:
            return "DEFAULT_5XX"    # "No match for output mapping and no default output mapping"
        handling = self.handling.get(chosen[0])
        if handling == "CONVERT_TO_TEXT":
            body = base64.b64encode(body)
        elif handling == "CONVERT_TO_BINARY":
            try:
                body = base64.b64decode(body, validate=True)
            except ValueError:
                return "DEFAULT_5XX"
        return self.map_response(chosen, event, headers, body, accept)


def lambda_selection(body: bytes) -> str:
    """What a Lambda integration's selectionPattern is matched against: the errorMessage of
    the function's answer, "" when it has none (LocalStack's AWS-validated reading: any
    object with an errorMessage, the function error header or not)."""
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return ""
    if isinstance(doc, dict) and isinstance(doc.get("errorMessage"), str):
        return doc["errorMessage"]
    return ""


class AwsIntegration(Runner):
    """One compiled ``type: AWS`` integration of one API stage."""

    def __init__(self, api: dict, method: dict, integ: dict, uri: str, credentials: str | None,
                 where: str, warn, services, timeout_s: float, functions=()):
        self.uri = parse_uri(uri)
        self.service = service(self.uri.service)       # ValueError: no botocore model
        super().__init__(services, timeout_s, f"{where} ({self.uri.service} {self.uri.kind}/"
                                              f"{self.uri.rest.split('/', 1)[0]})")
        self.http_method = (integ.get("httpMethod") or "").upper()
        if not self.http_method:
            raise ValueError("an AWS integration needs its httpMethod")
        self.api_id = api.get("id", "")
        self.role_arn = None
        if credentials:
            if CALLER.match(credentials):
                warn(f"{where}: credentials {credentials} (the caller's identity) cannot be passed "
                     "on; the gateway's own credentials sign")
            elif ROLE_ARN.match(credentials):
                self.role_arn = credentials
            else:
                raise ValueError(f"credentials {credentials!r} is not an IAM role ARN")
        self.mapping = AwsMapping(integ, where, warn)
        self.binary_types = tuple(api.get("binaryMediaTypes") or ())
        # the request's path, query and headers: the REST mapping of an http (non-proxy)
        # integration, over the service path as if it were the URI's
        path, _, static_query = (self.uri.rest if self.uri.kind == "path" else "").partition("?")
        from fastgate.phases.mapping import compile_request_mapping
        mapping = compile_request_mapping(
            {"protocolType": "REST"}, method, dict(integ, type="HTTP", uri="aws://service/" + path))
        from fastgate._core.headers import PathRewrite
        self.path = PathRewrite(mapping.path) if mapping.path else None
        self.query_map = mapping.query
        self.header_map = mapping.headers
        for op in (mapping.headers.ops if mapping.headers is not None else ()):
            if op[1].lower() in _RESERVED:
                raise ValueError(f"requestParameters integration.request.header.{op[1]}: API Gateway "
                                 "sets this header itself")
        if self.uri.kind == "action":
            action, _, extra = self.uri.rest.partition("&")
            self.static_query = "Action=" + quote(action, safe="") + ("&" + extra if extra else "")
        else:
            self.static_query = static_query
        self.target = None
        self.form_when_empty = self.uri.kind == "action" and self.service.apigw_protocol in ("query", "ec2")
        self.json_type = None
        if self.uri.kind == "action" and self.service.apigw_protocol == "json":
            self.json_type = f"application/x-amz-json-{self.service.json_version or '1.0'}"
        self.maps_content_type = any(op[1].lower() == "content-type"
                                     for op in (mapping.headers.ops if mapping.headers is not None else ()))
        if self.uri.kind == "action" and self.service.name in AUTO_TARGET and self.service.target_prefix:
            self.target = f"{self.service.target_prefix}.{self.uri.rest.partition('&')[0]}"
        fn = self.uri.lambda_function
        self.local_function = None
        if fn is not None:
            from fastgate.phases.functions.loader import lambda_function_name
            name = lambda_function_name(fn)
            if name in functions:
                self.local_function = name    # a function this gateway runs: no Lambda call

    def is_binary(self, content_type: bytes | None) -> bool:
        if not self.binary_types or content_type is None:
            return False
        from fastgate.phases.functions.events import media_type_matches
        media = content_type.decode("latin-1").split(";", 1)[0].strip().lower()
        return media_type_matches(media, self.binary_types)

    def request_headers(self, ctx, body: bytes) -> list:
        """API Gateway's defaults, then the mapped headers over them."""
        headers = {"accept": ("Accept", "application/json"),
                   "user-agent": ("User-Agent", f"AmazonAPIGateway_{self.api_id}")}
        ctype = ctx.header(b"content-type")
        if ctype is not None and ctx.method not in _NO_BODY:
            headers["content-type"] = ("Content-Type", ctype.decode("latin-1"))
        if self.form_when_empty and not body:
            # an action of a query-protocol service with every parameter in the query
            # string: AWS reads them whatever the Content-Type; services that pick the
            # protocol by it (moto, LocalStack, SQS's JSON API) need the query's own
            headers["content-type"] = ("Content-Type", "application/x-www-form-urlencoded")
        if self.header_map is not None:
            for name, value in self.header_map.apply([], ctx):
                n = name.decode("latin-1")
                headers[n.lower()] = (n, value.decode("latin-1"))
        if self.target is not None and "x-amz-target" not in headers:
            headers["x-amz-target"] = ("X-Amz-Target", self.target)
        if self.json_type is not None and not self.maps_content_type:
            # the JSON protocol's own type: AWS's services take it whatever the client sent,
            # and compatible ones (moto, LocalStack) choose the protocol by it
            headers["content-type"] = ("Content-Type", self.json_type)
        return list(headers.values())

    async def call(self, ctx, body: bytes):
        event = ctx.snapshot.hooks.mapping_event(ctx, body)
        ctype = ctx.header(b"content-type")
        out = self.mapping.request(event, body, ctype.decode("latin-1") if ctype is not None else None)
        if isinstance(out, str):
            return out                   # 415 for a Content-Type the templates refuse
        out = self.mapping.convert_request(out, self.is_binary(ctype))
        accept = ctx.header(b"accept")
        accept = accept.decode("latin-1") if accept is not None else None
        if self.local_function is not None:
            status, headers, answer = await self.call_function(ctx, out)
        else:
            status, headers, answer = await self.call_service(ctx, out)
        ctx.upstream_status = status
        selection = lambda_selection(answer) if self.uri.lambda_function \
            else str(status)
        return self.mapping.respond(event, headers, answer, accept, selection)

    async def call_service(self, ctx, body: bytes):
        clients = self.clients
        path = self.path.apply(ctx).decode("latin-1") if self.path is not None else "/"
        query = self.static_query
        if self.query_map is not None:
            mapped = self.query_map.apply(ctx).decode("latin-1")
            if mapped:
                query = f"{query}&{mapped}" if query else mapped
        url = clients.endpoint(self.service, self.uri.region) + path + ("?" + query if query else "")
        if self.http_method in ("GET", "HEAD", "OPTIONS"):
            body = b""
        resp = await clients.send(self.service, self.uri.region, self.http_method, url,
                                  self.request_headers(ctx, body), body, self.role_arn)
        return resp.status, resp.headers, resp.body

    async def call_function(self, ctx, payload: bytes):
        """A function this gateway runs (functions:), invoked as Lambda's Invoke would:
        the payload as its event, its result (or its error object) as the answer."""
        from fastgate.phases.functions.errors import FunctionError
        runner = self.services.functions
        if runner is None:
            raise RuntimeError("no function runner in this worker")
        try:
            event = orjson.loads(payload) if payload.strip() else {}
        except orjson.JSONDecodeError:
            # Lambda refuses a payload that is not JSON (InvalidRequestContentException)
            return 400, [], orjson.dumps({"Type": "User", "message": "Could not parse request body into json"})
        try:
            result = await runner.invoke(self.local_function, event,
                                         timeout_ms=int(self.timeout_s * 1000),
                                         request_id=ctx.request_id.decode("latin-1"))
        except FunctionError as err:
            if err.kind == "timeout":
                raise TimeoutError(err.detail) from None
            if err.kind in ("throttled", "service"):
                return 500, [], orjson.dumps({"message": err.detail})
            error = err.error or {"errorMessage": err.detail, "errorType": err.kind}
            return 200, [(b"X-Amz-Function-Error", b"Unhandled"),
                         (b"Content-Type", b"application/json")], orjson.dumps(error)
        return 200, [(b"Content-Type", b"application/json")], orjson.dumps(result)
