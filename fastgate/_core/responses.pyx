# cython: language_level=3
"""The one table of gateway responses; responses.pxd is the map of this file."""

from http import HTTPStatus

from fastgate._core.pipeline cimport GatewayResponse


# Every error the gateway answers itself, by type, with Amazon API Gateway's default status
# and message. Snapshot.responses starts from this table; an API's customisations
# (PutGatewayResponse, x-amazon-apigateway-gateway-responses) override entries per API; the
# control API's GetGatewayResponse(s) and OpenAPI export read their defaults from it too.
GATEWAY_RESPONSES = {
    # type: (status, message, x-amzn-ErrorType). AWS's own types first (the ones
    # GetGatewayResponses lists, with the default status AWS documents for each), then the
    # gateway's protocol-level ones (answered before any API is known, so only the
    # gateway-wide table applies to them).
    "ACCESS_DENIED": (403, "Forbidden", "AccessDeniedException"),
    "API_CONFIGURATION_ERROR": (500, "Internal server error", "InternalServerErrorException"),
    # AWS answers a failed Lambda authorizer with {"message": null}
    "AUTHORIZER_CONFIGURATION_ERROR": (500, None, "AuthorizerConfigurationException"),
    "AUTHORIZER_FAILURE": (500, "Internal server error", "InternalServerErrorException"),
    "BAD_REQUEST_PARAMETERS": (400, "Bad Request", "BadRequestException"),
    "BAD_REQUEST_BODY": (400, "Invalid request body", "BadRequestException"),
    # no status of their own in AWS's documentation: these are the statuses of types that
    # fall back to them (GetGatewayResponse shows no statusCode for these two)
    "DEFAULT_4XX": (400, "Bad Request", "BadRequestException"),
    "DEFAULT_5XX": (500, "Internal server error", "InternalServerErrorException"),
    "EXPIRED_TOKEN": (403, "Signature expired", "InvalidSignatureException"),
    # AWS documents 504 as this type's default status (GetGatewayResponse says "504"), while
    # what its clients see for a failed HTTP call or Lambda function is 502: the integration
    # answers that status explicitly (respond_error's status), a customised one wins
    "INTEGRATION_FAILURE": (504, "Internal server error", "InternalServerErrorException"),
    "INTEGRATION_TIMEOUT": (504, "Endpoint request timed out", "InternalServerErrorException"),
    "INVALID_API_KEY": (403, "Forbidden", "ForbiddenException"),
    "INVALID_SIGNATURE": (403, "The request signature we calculated does not match the signature you provided.",
                          "InvalidSignatureException"),
    "MISSING_AUTHENTICATION_TOKEN": (403, "Missing Authentication Token", "MissingAuthenticationTokenException"),
    "QUOTA_EXCEEDED": (429, "Limit Exceeded", "LimitExceededException"),
    "REQUEST_TOO_LARGE": (413, "Request Too Long", "RequestTooLongException"),
    "RESOURCE_NOT_FOUND": (404, "Not Found", "NotFoundException"),
    "THROTTLED": (429, "Too Many Requests", "TooManyRequestsException"),
    "UNAUTHORIZED": (401, "Unauthorized", "UnauthorizedException"),
    "UNSUPPORTED_MEDIA_TYPE": (415, "Unsupported Media Type", "UnsupportedMediaTypeException"),
    "WAF_FILTERED": (403, "Forbidden", "ForbiddenException"),
    # fastgate's own (protocol errors, before routing; HTTP API routing; upstream groups)
    "BAD_REQUEST": (400, "Bad Request", "BadRequestException"),
    "MISSING_HOST": (400, "Bad Request", "BadRequestException"),
    "BAD_FRAMING": (400, "Bad Request", "BadRequestException"),
    "NOT_FOUND": (404, "Not Found", "NotFoundException"),
    "DOMAIN_NOT_MAPPED": (403, "Forbidden", "ForbiddenException"),
    # a mutual TLS domain without a client certificate verified for it (AWS answers 403 too)
    "CLIENT_CERT_REQUIRED": (403, "Forbidden", "ForbiddenException"),
    "METHOD_NOT_ALLOWED": (405, "Method Not Allowed", "MethodNotAllowedException"),
    "REQUEST_TIMEOUT": (408, "Request Timeout", "RequestTimeoutException"),
    "URI_TOO_LONG": (414, "Request-URI Too Long", "RequestUriTooLongException"),
    "HEADERS_TOO_LARGE": (431, "Request Header Fields Too Large", "RequestHeaderFieldsTooLargeException"),
    "NO_HEALTHY_UPSTREAM": (503, "Service Unavailable", "ServiceUnavailableException"),
}

# AWS's gateway response types (botocore's GatewayResponseType): the ones an API may
# customise and GetGatewayResponses lists; the rest are fastgate's own.
AWS_TYPES = frozenset(t for t in GATEWAY_RESPONSES if t not in (
    "BAD_REQUEST", "MISSING_HOST", "BAD_FRAMING", "NOT_FOUND", "DOMAIN_NOT_MAPPED",
    "CLIENT_CERT_REQUIRED", "METHOD_NOT_ALLOWED", "REQUEST_TIMEOUT", "URI_TOO_LONG",
    "HEADERS_TOO_LARGE", "NO_HEALTHY_UPSTREAM"))

# Answered before the request could be trusted: the connection closes after the answer
PROTOCOL_ERRORS = frozenset(["BAD_REQUEST", "MISSING_HOST", "BAD_FRAMING", "REQUEST_TIMEOUT",
                             "URI_TOO_LONG", "HEADERS_TOO_LARGE", "METHOD_NOT_ALLOWED"])


def default_gateway_responses():
    """type -> GatewayResponse with AWS's defaults: the table an API starts from."""
    return {t: GatewayResponse(t, v[0], v[1], v[2].encode()) for t, v in GATEWAY_RESPONSES.items()}


cdef dict STATUS_LINES = {}
for _s in HTTPStatus:
    STATUS_LINES[_s.value] = b"HTTP/1.1 %d %s\r\n" % (_s.value, _s.phrase.encode())


cdef bytes status_line(int status, bytes reason):
    cdef bytes line
    if reason is None or not reason:
        line = STATUS_LINES.get(status)
        if line is not None:
            return line
        return b"HTTP/1.1 %d Unknown\r\n" % status
    return b"HTTP/1.1 %d %s\r\n" % (status, reason)
