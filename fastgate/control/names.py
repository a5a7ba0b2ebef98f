"""AWS's identifiers and names: the alphabets, enumerations and patterns that Amazon API
Gateway's REST management API accepts, shared by the model (fastgate/control/model/) and
the OpenAPI importer and exporter (fastgate/control/openapi/)."""

from __future__ import annotations

import re
import secrets
import string

# AWS's ids are lower-case letters and digits; its id lengths: restapi 10, root resource
# 10, other resources 6, authorizer 6, request validator 6, model 6.
ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(length: int) -> str:
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(length))


# Method.httpMethod, in the order AWS's error messages list them.
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "ANY")
INTEGRATION_TYPES = ("HTTP", "HTTP_PROXY", "MOCK", "AWS", "AWS_PROXY")
PASSTHROUGH_BEHAVIORS = ("WHEN_NO_MATCH", "WHEN_NO_TEMPLATES", "NEVER")
CONTENT_HANDLING = ("CONVERT_TO_TEXT", "CONVERT_TO_BINARY")
CONNECTION_TYPES = ("INTERNET", "VPC_LINK")
# RestApi.apiKeySource
API_KEY_SOURCES = ("HEADER", "AUTHORIZER")
# Method.authorizationType
AUTHORIZATION_TYPES = ("NONE", "AWS_IAM", "CUSTOM", "COGNITO_USER_POOLS", "JWT")
# Authorizer.type
AUTHORIZER_TYPES = ("TOKEN", "REQUEST", "COGNITO_USER_POOLS", "JWT")
# which authorizer types each method authorizationType may name
METHOD_AUTHORIZER_TYPES = {"CUSTOM": ("TOKEN", "REQUEST"),
                           "COGNITO_USER_POOLS": ("COGNITO_USER_POOLS",), "JWT": ("JWT",)}

# AWS's rule for a path part, quoted from its error message: "only allow a-zA-Z0-9._- and
# curly braces at the beginning and the end and an optional plus sign before the closing
# brace".
PATH_PART = re.compile(r"^(?:[A-Za-z0-9._-]+|\{[A-Za-z0-9._-]+\+?\})$")
STATUS_CODE = re.compile(r"^[1-5]\d\d$")
STAGE_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
# A stage variable as a stage defines it ...
VARIABLE_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
VARIABLE_VALUE = re.compile(r"^[A-Za-z0-9 \-._~:/?#&=,+%@]{0,2048}$")
# ... and as an integration URI refers to it: ${stageVariables.NAME}, whose name is checked
# for its characters only (the length is the stage's to bound).
STAGE_VARIABLE_REF = re.compile(r"\$\{stageVariables\.([^}]*)\}")
STAGE_VARIABLE_REF_NAME = re.compile(r"^[A-Za-z0-9_]+$")

DOMAIN_NAME = re.compile(r"^(?=.{1,253}$)(\*\.)?([A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
                         r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?$")
BASE_PATH = re.compile(r"^[A-Za-z0-9._\-$+]+(?:/[A-Za-z0-9._\-$+]+)*$")
NONE_BASE_PATH = "(none)"

# AWS's gateway response types: type -> (default status code, default message). None for
# DEFAULT_4XX/DEFAULT_5XX, which have no status of their own. Source: "Gateway response
# types for API Gateway" in the API Gateway developer guide.
GATEWAY_RESPONSE_DEFAULTS: dict[str, tuple[str | None, str | None]] = {
    "ACCESS_DENIED": ("403", "User is not authorized to access this resource"),
    "API_CONFIGURATION_ERROR": ("500", "Internal server error"),
    "AUTHORIZER_CONFIGURATION_ERROR": ("500", "Internal server error"),
    "AUTHORIZER_FAILURE": ("500", "Internal server error"),
    "BAD_REQUEST_PARAMETERS": ("400", "Missing required request parameters"),
    "BAD_REQUEST_BODY": ("400", "Invalid request body"),
    "DEFAULT_4XX": (None, None),
    "DEFAULT_5XX": (None, None),
    "EXPIRED_TOKEN": ("403", "The security token included in the request is expired"),
    "INTEGRATION_FAILURE": ("504", "Internal server error"),
    "INTEGRATION_TIMEOUT": ("504", "Endpoint request timed out"),
    "INVALID_API_KEY": ("403", "Forbidden"),
    "INVALID_SIGNATURE": ("403", "The request signature we calculated does not match the "
                                 "signature you provided. Check your AWS Secret Access Key and "
                                 "signing method. Consult the service documentation for details."),
    "MISSING_AUTHENTICATION_TOKEN": ("403", "Missing Authentication Token"),
    "QUOTA_EXCEEDED": ("429", "Limit Exceeded"),
    "REQUEST_TOO_LARGE": ("413", "Request Too Long"),
    "RESOURCE_NOT_FOUND": ("404", "Not Found"),
    "THROTTLED": ("429", "Too Many Requests"),
    "UNAUTHORIZED": ("401", "Unauthorized"),
    "UNSUPPORTED_MEDIA_TYPE": ("415", "Unsupported Media Type"),
    "WAF_FILTERED": ("403", "Forbidden"),
}

# A model as a schema's $ref names it: AWS's model URL.
MODEL_URL = "https://apigateway.amazonaws.com/restapis/{api_id}/models/"
MODEL_URL_RE = re.compile(r"^https://apigateway\.amazonaws\.com/restapis/[^/]+/models/(.+)$")
