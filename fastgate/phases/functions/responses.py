"""Lambda proxy results turned into HTTP responses, by API Gateway's rules.

``parse_response_v1`` reads a REST API (payload 1.0) result, strictly: a JSON
object with only ``statusCode``, ``headers``, ``multiValueHeaders``, ``body``
and ``isBase64Encoded``; anything else is AWS's "Malformed Lambda proxy
response", a 502 ``{"message": "Internal server error"}``.

``parse_response_v2`` reads an HTTP API (payload 2.0) result: with a
``statusCode`` it is a structured response (``cookies`` become one Set-Cookie
each); without one the whole return value is the JSON body of a 200.

Both return ``(status, [(name, value)], body)`` with bytes names and values,
or raise :class:`ResponseError`.  AWS's service deserialises results with
Jackson, which turns scalars into strings where a string is expected
(``"statusCode": "200"``, a header value ``5`` or ``true``) but rejects
objects and arrays there; these parsers accept and reject the same.
"""

from __future__ import annotations

import base64
import binascii

import orjson

from fastgate.phases.functions.events import media_type_matches

__all__ = ["MALFORMED_BODY", "ResponseError", "parse_response_v1", "parse_response_v2",
           "parse_stream_head"]

MALFORMED_BODY = b'{"message": "Internal server error"}'

_V1_KEYS = frozenset(("statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"))


class ResponseError(ValueError):
    """A function's result that API Gateway would reject; the client gets a 502."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


def _scalar(value, where: str) -> str | None:
    """A JSON scalar as the string Jackson makes of it; None for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)       # Jackson prints any integer in full (BigInteger past 64 bits)
    if isinstance(value, float):
        return orjson.dumps(value).decode()
    raise ResponseError(f"{where} must be a string, not {type(value).__name__}")


def _status(value) -> int:
    if isinstance(value, bool):
        raise ResponseError("statusCode must be a number")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int):
        raise ResponseError(f"statusCode must be a number, got {value!r:.60}")
    if not 100 <= value <= 599:
        raise ResponseError(f"statusCode {value} is not an HTTP status")
    if value < 200:
        # a 1xx is never an answer (RFC 9110 section 15.2): the client would wait for one
        raise ResponseError(f"statusCode {value} is informational, not a final status")
    return value


def _flag(value) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ResponseError(f"isBase64Encoded must be a boolean, got {value!r:.60}")


def _body(value, encoded: bool) -> bytes:
    text = _scalar(value, "body")
    if text is None:
        return b""
    if not encoded:
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError("body is not valid base64 although isBase64Encoded is true") from None


def _header_map(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ResponseError(f"{where} must be an object")
    return value


def _name(name: str) -> bytes:
    if not name or any(c in name for c in "\r\n:\0 ") or not name.isascii():
        raise ResponseError(f"header name {name!r:.60} is not a token")
    return name.encode()


def _value(value: str) -> bytes:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ResponseError("header value contains a line break")
    return value.encode()


def parse_response_v1(result, *, accept: bytes | str | None = None,
                      binary_media_types: tuple[str, ...] | None = None
                      ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A payload 1.0 result as (status, headers, body).

    ``binary_media_types`` is None for an HTTP API, the REST API's list (empty
    too) for a REST API.  Headers from ``headers`` and ``multiValueHeaders``
    are merged; a name/value pair given in both appears once.  An HTTP API
    always decodes a base64 body; a REST API only when the request's Accept
    matches one of its binary media types, otherwise the base64 text itself is
    the body.  A REST API also reads a result without ``statusCode`` (only
    ``headers``, even ``{}``) as a 200, and answers ``Content-Type:
    application/json`` when the result sets none (AWS's recordings).
    """
    rest = binary_media_types is not None
    if not isinstance(result, dict):
        raise ResponseError(f"a proxy result must be a JSON object, not {type(result).__name__}")
    unknown = result.keys() - _V1_KEYS
    if unknown:
        raise ResponseError(f"unknown key(s) in proxy result: {', '.join(sorted(unknown))}")
    if "statusCode" in result:
        status = _status(result["statusCode"])
    elif rest:
        status = 200
    else:
        raise ResponseError("proxy result has no statusCode")

    multi = _header_map(result.get("multiValueHeaders"), "multiValueHeaders")
    headers: list[tuple[bytes, bytes]] = []
    seen: set[tuple[str, str]] = set()
    for name, values in multi.items():
        if values is None:
            continue
        if not isinstance(values, list):
            raise ResponseError(f"multiValueHeaders[{name!r}] must be an array")
        for v in values:
            text = _scalar(v, f"multiValueHeaders[{name!r}]")
            if text is not None:
                seen.add((name.lower(), text))
                headers.append((_name(name), _value(text)))
    for name, v in _header_map(result.get("headers"), "headers").items():
        text = _scalar(v, f"headers[{name!r}]")
        if text is not None and (name.lower(), text) not in seen:
            headers.append((_name(name), _value(text)))

    if rest and not any(name.lower() == b"content-type" for name, _ in headers):
        headers.insert(0, (b"Content-Type", b"application/json"))
    encoded = _flag(result.get("isBase64Encoded"))
    if encoded and rest:
        encoded = _accepts_binary(accept, binary_media_types)
    return status, headers, _body(result.get("body"), encoded)


def _accepts_binary(accept: bytes | str | None, binary_media_types) -> bool:
    # REST APIs look at the first media type of the request's Accept header.
    if not accept:
        return False
    if isinstance(accept, bytes):
        accept = accept.decode("latin-1")
    first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return media_type_matches(first, binary_media_types)


def parse_response_v2(result) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """An HTTP API result as (status, headers, body).

    A JSON object with ``statusCode`` is read as a response (``headers``,
    ``cookies``, ``body``, ``isBase64Encoded``; other keys are ignored).  Any
    other value — an object without ``statusCode``, a list, a string, a
    number, null — is the body: 200, ``content-type: application/json``, the
    value serialised as JSON.
    """
    if not isinstance(result, dict) or "statusCode" not in result:
        return 200, [(b"content-type", b"application/json")], orjson.dumps(result)
    status = _status(result["statusCode"])
    headers = []
    for name, v in _header_map(result.get("headers"), "headers").items():
        text = _scalar(v, f"headers[{name!r}]")
        if text is not None:
            headers.append((_name(name), _value(text)))
    cookies = result.get("cookies")
    if cookies is not None:
        if not isinstance(cookies, list):
            raise ResponseError("cookies must be an array")
        for cookie in cookies:
            text = _scalar(cookie, "cookies[]")
            if text is not None:
                headers.append((b"set-cookie", _value(text)))
    return status, headers, _body(result.get("body"), _flag(result.get("isBase64Encoded")))


def parse_stream_head(head) -> tuple[int, list[tuple[bytes, bytes]]]:
    """A streamed response's head (a generator handler's first value: ``statusCode``,
    ``headers``, ``cookies``, like Lambda's HttpResponseStream metadata prelude) as
    (status, headers), with 2.0's rules for headers and cookies whatever the payload
    format.  A head without ``statusCode`` is a 200."""
    if not isinstance(head, dict):
        raise ResponseError("a stream's head must be an object")
    status, headers, _ = parse_response_v2({"statusCode": head.get("statusCode", 200),
                                            "headers": head.get("headers"),
                                            "cookies": head.get("cookies")})
    return status, headers
