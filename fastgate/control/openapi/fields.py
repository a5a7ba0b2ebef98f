"""Checks on single fields that every part of the importer makes, and the names of the
x-amazon-apigateway-* extensions that more than one part reads or writes."""

from __future__ import annotations

from fastgate.control.names import STATUS_CODE
from fastgate.control.openapi.document import OpenAPIError

ANY_METHOD = "x-amazon-apigateway-any-method"
INTEGRATION = "x-amazon-apigateway-integration"
# x-amazon-apigateway-authorizer properties copied to the Authorizer unchanged.
AUTHORIZER_FIELDS = (
    "authorizerUri", "authorizerCredentials", "identityValidationExpression",
    "authorizerPayloadFormatVersion", "enableSimpleResponses", "jwtConfiguration",
    "providerARNs")


def is_aws_extension(key: str) -> bool:
    return key.lower().startswith("x-amazon-apigateway-")


class Note(str):
    """A warning that is fastgate's own (something it keeps but does not act on), not one
    AWS would raise: listed with the warnings, but failonwarnings does not fail on it."""


# What AWS reads and fastgate keeps without acting on: fastgate's notes, never a reason for
# failonwarnings to refuse a document AWS takes. An extension AWS does not know either
# stays a warning.
_KNOWN_NOT_IMPLEMENTED = frozenset(("x-amazon-apigateway-documentation", "integration type aws",
                                    "connectionType VPC_LINK"))


def not_implemented(name: str, where: str) -> str:
    """The warning for an extension or value fastgate keeps but does not act on (a Note
    when AWS itself would read it)."""
    text = f"{name} at {where}: not implemented, kept for export"
    return Note(text) if name in _KNOWN_NOT_IMPLEMENTED else text


def enum_value(value, allowed: tuple, where: str) -> str:
    """One of AWS's upper-case enumeration values, written in any case."""
    if not isinstance(value, str) or value.upper() not in allowed:
        raise OpenAPIError(f"{where}: {value!r} is not one of "
                           f"{', '.join(a.lower() for a in allowed)}")
    return value.upper()


def string_map(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise OpenAPIError(f"{where}: must be an object of strings")
    out = {}
    for key, item in value.items():
        if not isinstance(item, str):
            raise OpenAPIError(f"{where}.{key}: must be a string")
        out[str(key)] = item
    return out


def status_code(value, where: str) -> str:
    status = str(value)
    if not STATUS_CODE.match(status):
        raise OpenAPIError(f"{where}: {value!r} is not an HTTP status code")
    return status

