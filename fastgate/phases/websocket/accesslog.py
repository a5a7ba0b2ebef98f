"""A WebSocket API stage's access log (its accessLogSettings): one line per event, as AWS
logs a WebSocket API: the upgrade ($connect: CONNECT), each message (MESSAGE) and the end
(DISCONNECT), in the stage's format of `$context` variables.

The variables AWS documents for WebSocket APIs' logs that fastgate knows: requestId,
extendedRequestId, eventType, routeKey, connectionId, messageId, messageDirection, status,
requestTime, requestTimeEpoch, connectedAt, identity.sourceIp, identity.userAgent,
domainName, stage, apiId, integrationLatency, error.message; any other renders "-" (as the
HTTP access log does). Values are escaped as JSON string contents, so a JSON-shaped format
stays valid JSON. The lines go through the stage's fastgate._core.accesslog.AccessLog (its
buffer and writer thread), which the snapshot flushes, reopens and closes.
"""

from __future__ import annotations

import re
import time

import orjson

_VAR = re.compile(r"\$context\.([A-Za-z][A-Za-z0-9_.]*[A-Za-z0-9_])|\$\{context\.([A-Za-z0-9_.]+)\}")


def _escape(value) -> bytes:
    if value is None or value == "":
        return b"-"
    return orjson.dumps(str(value))[1:-1]


def _request_time(epoch_ms: int) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch_ms / 1000))


class WsAccessLog:
    __slots__ = ("log", "parts")

    def __init__(self, log, fmt: str):
        """log: the AccessLog its lines go to; fmt: the stage's format."""
        self.log = log
        parts, pos = [], 0
        for m in _VAR.finditer(fmt):
            parts.append(fmt[pos:m.start()].encode())
            parts.append(m.group(1) or m.group(2))
            pos = m.end()
        parts.append(fmt[pos:].encode())
        self.parts = tuple(parts)

    def write(self, info, event_type: str, route_key: str | None, request_id: str, status: int,
              *, message_id: str | None = None, started_ms: int | None = None,
              latency_ms: float | None = None, error: str | None = None) -> None:
        """One event of a connection (info: its ConnectionInfo)."""
        now_ms = started_ms if started_ms is not None else int(time.time() * 1000)
        values = {
            "requestId": request_id, "extendedRequestId": request_id, "eventType": event_type,
            "routeKey": route_key, "connectionId": info.connection_id, "messageId": message_id,
            "messageDirection": "IN", "status": status, "requestTime": _request_time(now_ms),
            "requestTimeEpoch": now_ms, "connectedAt": info.connected_at,
            "identity.sourceIp": info.source_ip, "identity.userAgent": info.user_agent,
            "domainName": info.domain_name, "stage": info.stage, "apiId": info.api_id,
            "integrationLatency": None if latency_ms is None else int(round(latency_ms)),
            "error.message": error,
        }
        out = []
        for i, part in enumerate(self.parts):
            out.append(part if i % 2 == 0 else _escape(values.get(part)))
        self.log.write_line(b"".join(out))
