"""AWS's identifiers and names: the alphabets, enumerations and patterns that Amazon API
Gateway's REST management API accepts, shared by the model (fastgate/control/model/) and
the OpenAPI importer and exporter (fastgate/control/openapi/)."""

from __future__ import annotations

import re
import secrets
import string

from fastgate._core.responses import AWS_TYPES as AWS_GATEWAY_RESPONSE_TYPES, GATEWAY_RESPONSES

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

# AWS's gateway response types and the default statusCode GetGatewayResponse shows for each
# (None for DEFAULT_4XX/DEFAULT_5XX, which AWS documents without one): read from the one table
# of gateway responses, fastgate/_core/responses.pyx, that the data plane answers from too.
GATEWAY_RESPONSE_STATUS: dict[str, str | None] = {
    t: None if t in ("DEFAULT_4XX", "DEFAULT_5XX") else str(v[0])
    for t, v in GATEWAY_RESPONSES.items() if t in AWS_GATEWAY_RESPONSE_TYPES}

# A model as a schema's $ref names it: AWS's model URL.
MODEL_URL = "https://apigateway.amazonaws.com/restapis/{api_id}/models/"
MODEL_URL_RE = re.compile(r"^https://apigateway\.amazonaws\.com/restapis/[^/]+/models/(.+)$")

# An apigatewayv2 API document in State.apis carries "service": V2_SERVICE; a REST API's
# does not. Each service sees only its own APIs (AWS keeps them apart too).
V2_SERVICE = "apigatewayv2"


def is_v2_api(api: dict) -> bool:
    return api.get("service") == V2_SERVICE
