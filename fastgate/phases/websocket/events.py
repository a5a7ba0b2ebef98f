"""The events API Gateway sends a WebSocket route's Lambda proxy (AWS_PROXY) integration,
key for key as AWS sends them (AWS's samples: tests/data/events/websocket-*.json):

- CONNECT: headers and multiValueHeaders of the upgrade request (with the X-Forwarded-*
  AWS adds), the query string only when there is one, isBase64Encoded;
- MESSAGE: body and isBase64Encoded (a binary message is base64), no headers;
- DISCONNECT: AWS's four odd headers (Host, x-api-key, X-Forwarded-For, x-restapi, the
  last three empty), disconnectStatusCode and disconnectReason.

requestContext: routeKey, eventType, extendedRequestId, requestTime, messageDirection
"IN", stage, connectedAt, requestTimeEpoch, identity {userAgent, sourceIp}, requestId,
domainName, connectionId, apiId; messageId on messages; the authorizer's context (and
principalId) on every event once $connect's authorizer allowed the connection.
"""

from __future__ import annotations

import base64
import random
import time

from fastgate._core.fncall import format_request_time, query_pairs

_rand = random.Random()


def new_request_id() -> str:
    """An id shaped as AWS's WebSocket request and message ids ("R1knPH17NjMFftw=")."""
    return base64.b64encode(_rand.getrandbits(88).to_bytes(11, "big")).decode()


def epoch_ms_now() -> int:
    return time.time_ns() // 1_000_000


def reseed() -> None:
    """After fork: each worker draws its own ids."""
    _rand.seed()


class ConnectionInfo:
    """What a connection's events carry, fixed at $connect."""

    __slots__ = ("connection_id", "api_id", "stage", "domain_name", "source_ip", "user_agent",
                 "connected_at", "authorizer", "endpoint", "ws", "api_key_id", "inflight")

    def __init__(self, connection_id: str, api_id: str, stage: str, domain_name: str,
                 source_ip: str, user_agent: str | None, connected_at: int):
        self.connection_id = connection_id
        self.api_id = api_id
        self.stage = stage
        self.domain_name = domain_name
        self.source_ip = source_ip
        self.user_agent = user_agent
        self.connected_at = connected_at    # epoch ms
        self.authorizer = None              # the authorizer's context, or None
        self.endpoint = None                # the StageEndpoint the connection came through
        self.ws = None                      # fastgate._core.websocket.WebSocket once accepted
        self.api_key_id = None
        self.inflight = 0                   # its messages whose route has not answered yet

    def identity(self) -> dict:
        out = {}
        if self.user_agent is not None:
            out["userAgent"] = self.user_agent
        out["sourceIp"] = self.source_ip
        return out


def _context(info: ConnectionInfo, route_key: str, event_type: str, request_id: str,
             now_ms: int, extra: dict | None = None) -> dict:
    ctx = {"routeKey": route_key}
    if extra:
        ctx.update(extra)
    ctx.update({
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": format_request_time(now_ms),
        "messageDirection": "IN",
        "stage": info.stage,
        "connectedAt": info.connected_at,
        "requestTimeEpoch": now_ms,
        "identity": info.identity(),
        "requestId": request_id,
        "domainName": info.domain_name,
        "connectionId": info.connection_id,
        "apiId": info.api_id,
    })
    if info.authorizer is not None:
        ctx["authorizer"] = info.authorizer
    return ctx


def connect_event(info: ConnectionInfo, request_id: str, now_ms: int,
                  headers: list[tuple[bytes, bytes]], raw_query: bytes) -> dict:
    """The $connect event: the upgrade request's headers, keyed by the first spelling the
    client used, the last value in `headers`."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    spelling: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1")
        key = spelling.setdefault(name.lower(), name)
        value = raw_value.decode("latin-1")
        single[key] = value
        multi.setdefault(key, []).append(value)
    event = {"headers": single, "multiValueHeaders": multi}
    if raw_query:
        query: dict[str, str] = {}
        multi_query: dict[str, list[str]] = {}
        for k, v in query_pairs(raw_query):
            query[k] = v
            multi_query.setdefault(k, []).append(v)
        if query:
            event["queryStringParameters"] = query
            event["multiValueQueryStringParameters"] = multi_query
    event["requestContext"] = _context(info, "$connect", "CONNECT", request_id, now_ms)
    event["isBase64Encoded"] = False
    return event


def message_event(info: ConnectionInfo, route_key: str, request_id: str, message_id: str,
                  now_ms: int, payload) -> dict:
    """A message's event: text as it came, binary base64 (isBase64Encoded)."""
    if isinstance(payload, str):
        body, encoded = payload, False
    else:
        body, encoded = base64.b64encode(payload).decode(), True
    return {
        "requestContext": _context(info, route_key, "MESSAGE", request_id, now_ms,
                                   {"messageId": message_id}),
        "body": body,
        "isBase64Encoded": encoded,
    }


def disconnect_event(info: ConnectionInfo, request_id: str, now_ms: int, code: int,
                     reason: str) -> dict:
    """The $disconnect event. AWS sends these four headers, three of them empty, whatever
    the upgrade request had."""
    headers = {"Host": info.domain_name, "x-api-key": "", "X-Forwarded-For": "", "x-restapi": ""}
    return {
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "requestContext": _context(info, "$disconnect", "DISCONNECT", request_id, now_ms, {
            "disconnectStatusCode": code, "disconnectReason": reason}),
        "isBase64Encoded": False,
    }
