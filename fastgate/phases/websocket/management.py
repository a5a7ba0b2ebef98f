"""The @connections API as botocore's apigatewaymanagementapi speaks it, for the data-plane
listener (endpoint.py) and the admin listener (fastgate/process/admin.py): the operation a
request names, its SigV4 check (service execute-api), and AWS's answers."""

from __future__ import annotations

import re
from urllib.parse import unquote

import orjson

from fastgate.phases.auth import sigv4
from fastgate.phases.websocket.connections import OP_DELETE, OP_GET, OP_POST

JSON = ("Content-Type", "application/json")
ERRORS = {
    400: ("BadRequestException", "Invalid request"),
    403: ("ForbiddenException", "Forbidden"),
    410: ("GoneException", None),      # AWS's GoneException carries no message
    413: ("PayloadTooLargeException", "Message too long"),
    429: ("LimitExceededException", "The WebSocket client side buffer is full"),
    500: ("InternalServerErrorException", "Internal server error"),
    503: ("ServiceUnavailableException", "The connection could not be reached"),
}
OPERATIONS = {"POST": OP_POST, "GET": OP_GET, "DELETE": OP_DELETE}
# /{stage}/@connections/{id}, or /@connections/{id} (a custom domain's mapping, $default)
CALL_PATH = re.compile(r"^(?:/([^/]+))?/@connections/([^/]+)$")


def parse_call(method: str, raw_path: str) -> tuple[int, str | None, str] | None:
    """(operation, stage or None, connection id) of an @connections request, else None."""
    m = CALL_PATH.match(raw_path)
    if m is None or method not in OPERATIONS:
        return None
    return OPERATIONS[method], (unquote(m.group(1)) if m.group(1) else None), unquote(m.group(2))


def signature_error(method: str, raw_path: str, query: str, headers: list[tuple[str, str]],
                    body: bytes, credentials: dict[str, str]):
    """None when the request is signed by one of `credentials` for execute-api, else AWS's
    403 (status, headers, body)."""
    try:
        sigv4.verify(method, raw_path, query, headers, body, credentials, service="execute-api")
    except sigv4.SigV4Error as e:
        return 403, [JSON, ("x-amzn-ErrorType", e.code)], orjson.dumps({"message": e.reason})
    return None


def response(op: int, status: int, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """AWS's answer to a call whose result is (status, body) (connections.py)."""
    if status in ERRORS:
        code, message = ERRORS[status]
        return status, [JSON, ("x-amzn-ErrorType", code)], orjson.dumps({"message": message})
    if op == OP_GET:
        return 200, [JSON], body
    if op == OP_DELETE:
        return 204, [], b""
    return 200, [], b""
