"""AWS's own message texts for the management API, in one table.

Every text here is one Amazon API Gateway answers, copied from its recorded answers
(LocalStack's AWS-validated snapshot files, tests/aws/services/apigateway/*.snapshot.json
in localstack/localstack) or from AWS's documentation; ``{name}`` fields are filled with
``str.format``. The model (fastgate/control/model/), the control API's input checks and the
OpenAPI importer (fastgate/control/openapi/) raise with these rather than spelling AWS's
wording in place, so a text AWS changes is changed here once: by name (``INVALID_API_ID``),
or by key through ``aws_message("resource_not_found")`` (MESSAGES, below). Messages that are
fastgate's own (a file it cannot read, a limit of its own) stay where they are raised.

Oddities kept on purpose, because AWS has them: the two spaces in "Invalid patch path  '...'",
"Resources cannot be cyclical." with its full stop, "Invalid Vpc Link identifier", the
trailing space of "... no method setting for this method ".
"""

from __future__ import annotations

from fastgate._core.fncall import DEFAULT_ACCOUNT_ID

# The account AWS names in "Invalid API identifier specified {account}:{id}": fastgate has
# none of its own, so the one its Lambda events carry (AWS's placeholder account).
ACCOUNT_ID = DEFAULT_ACCOUNT_ID

# ---- identifiers that name nothing (404 NotFoundException unless said otherwise)
INVALID_API_ID = "Invalid API identifier specified {account}:{api_id}"
# a call on something inside an API (a resource, method, integration...) whose API does not
# exist names the resource, not the API
INVALID_RESOURCE_ID = "Invalid Resource identifier specified"
INVALID_METHOD_ID = "Invalid Method identifier specified"
INVALID_INTEGRATION_ID = "Invalid Integration identifier specified"
INVALID_RESPONSE_STATUS = "Invalid Response status code specified"
INVALID_VALIDATOR_ID = "Invalid Request Validator identifier specified"   # 400 from PutMethod
INVALID_REST_API_ID_400 = "Invalid REST API identifier specified"        # CreateRequestValidator
INVALID_MODEL_NAME = "Invalid model name specified: {name}"
INVALID_MODEL_ID = "Invalid model identifier specified: {name}"          # 400 from PutMethod
INVALID_PARAMETER_NAME = "Invalid parameter name specified"
CONTENT_TYPE_NOT_FOUND = "Content-Type specified was not found"
GATEWAY_RESPONSE_NOT_DEFINED = "Gateway response type not defined on api"
INVALID_DEPLOYMENT_ID = "Invalid Deployment identifier specified"
INVALID_STAGE_ID = "Invalid Stage identifier specified"
INVALID_DOMAIN_NAME_ID = "Invalid domain name identifier specified"

# ---- conflicts (409 ConflictException)
METHOD_EXISTS = "Method already exists for this resource"
RESPONSE_EXISTS = "Response already exists for this resource"
SIBLING_SAME_NAME = "Another resource with the same parent already has this name: {part}"
STAGE_EXISTS = "Stage already exists"

# ---- resources
PATH_PART_INVALID = ("Resource's path part only allow a-zA-Z0-9._- and curly braces at the beginning "
                     "and the end and an optional plus sign before the closing brace.")
GREEDY_CHILD = "Cannot create a child of a resource with a greedy path variable: {part}"
VARIABLE_SIBLING = "A sibling ({part}) of this resource already has a variable path part -- only one is allowed"
ROOT_DELETE = "Cannot delete root resource"

# ---- integrations and responses
INVALID_STATUS_CODE = "Invalid status code specified. Must be a 3-digit code from 100 to 599"
INVALID_AUTHORIZATION_TYPE = "Invalid authorization type specified. Valid options are {allowed}"
INVALID_INTEGRATION_TYPE = "Invalid integration type specified. Valid options are {allowed}"
INTEGRATION_URI_EMPTY = "Enumeration value for Integration uri must be non-empty"
INTEGRATION_METHOD_EMPTY = "Enumeration value for HttpMethod must be non-empty"
INTEGRATION_TIMEOUT = "Timeout should be between 50 ms and 29000 ms"
INVALID_PASSTHROUGH = "Invalid passthrough behavior specified. Valid options are {allowed}"
INTEGRATION_HTTP_URI = "Invalid HTTP endpoint specified for URI"
INVALID_ARN = "Invalid ARN specified in the request"
INTEGRATION_ARN_PATH_OR_ACTION = "AWS ARN for integration must contain path or action"
AWS_PROXY_TARGETS = ("Integrations of type 'AWS_PROXY' currently only supports Lambda function and "
                     "Firehose stream invocations.")

# ---- deployments and stages
NO_METHODS = "The REST API doesn't contain any methods"
NO_INTEGRATION = "No integration defined for method"
STAGE_NAME_INVALID = "Stage name only allows a-zA-Z0-9_-"
NO_CANARY = "Promotion not available. Canary does not exist."
# (no space after "specified.": AWS's text)
CANARY_NEEDS_STAGE = ("Invalid deployment content specified.Non null and non empty stageName must be "
                      "provided for canary deployment. Provided value is {value}")
CANARY_STAGE_MISSING = ("Invalid deployment content specified.Stage {stage} must already be created "
                        "before making a canary release deployment")
CANARY_DEPLOYMENT_MISSING = "Deployment id does not exist"
PATCH_ADD_INVALID = "Invalid add operation with path: {path}"
STAGE_COPY_INVALID = ("Invalid copy operation with path: {path} and from {src}. Valid copy:path are "
                      "[/deploymentId, /variables] and valid copy:from are "
                      "[/canarySettings/deploymentId, /canarySettings/stageVariableOverrides]")
DEPLOYMENT_IN_USE = "Active stages pointing to this deployment must be moved or deleted"

# ---- RestApi
DESCRIPTION_EMPTY = "Description cannot be an empty string"
COMPRESSION_SIZE = "Invalid minimum compression size, must be between 0 and 10485760"
ENDPOINT_TYPES_BOTH_DISABLED = "REGIONAL Configuration and EDGE Configuration cannot be both DISABLED."
ENDPOINT_TYPES_MULTIPLE = "Cannot create an api with multiple Endpoint Types."
ENDPOINT_TYPES_INVALID = "Invalid EndpointTypes specified. Valid options are REGIONAL,EDGE,PRIVATE"
PRIVATE_NEEDS_DUALSTACK = "Only dualstack ipAddressType is supported for Private APIs."
IP_ADDRESS_TYPE_INVALID = "ipAddressType must be either ipv4 or dualstack."
INVALID_OPENAPI = "Invalid OpenAPI input."
IMPORT_WARNING_REQUEST_PARAMETER = (
    "Invalid format for 'requestParameters'. Expected type string for property '{name}' of "
    "resource '{resource}' and method '{method}' but got '{value}'")

# ---- authorizers
INVALID_AUTHORIZER_ID = "Invalid Authorizer identifier specified"
# (the text names CUSTOM or COGNITO_USER_POOLS whatever the type asked for: AWS's recording)
METHOD_NEEDS_AUTHORIZER = ("Invalid authorizer ID specified. Setting the authorization type to CUSTOM "
                           "or COGNITO_USER_POOLS requires a valid authorizer.")
AUTHORIZER_NAME_EXISTS = "Authorizer with name {name} already exists for this RestApi"
# CreateAuthorizer on an API that does not exist: a 409, not a 404 (AWS's recording)
CONCURRENT_MODIFICATION = "Unable to complete operation due to concurrent modification. Please try again later."

# ---- methods
INVALID_HTTP_METHOD = "Invalid HttpMethod specified. Valid options are GET,PUT,POST,DELETE,PATCH,OPTIONS,HEAD,ANY"
PARAMETER_NAMES_UNIQUE = "Parameter names must be unique across querystring, header and path"
INVALID_CONTENT_TYPE = "Validation Result: warnings : [], errors : [Invalid content type specified: {content_type}]"
INVALID_MAPPING_EXPRESSION = ("Invalid mapping expression specified: Validation Result: warnings : [], "
                              "errors : [Invalid mapping expression specified: {value}]")

# ---- stages
ACCESS_LOG_PATH = ("Invalid accessLogSettings path. Must be one of : "
                   "[/accessLogSettings/destinationArn, /accessLogSettings/format]")
ACCESS_LOG_EMPTY = "Access Log value must not be empty"
# (remove of an access log member, or of a method's settings, "*/*", that are not there)
METHOD_SETTING_REMOVE_NOTHING = ("Cannot remove method setting {setting} because there is no "
                                 "method setting for this method ")

# ---- API keys
INVALID_API_KEY_ID = "Invalid API Key identifier specified"
API_KEY_NAME_TOO_LONG = "Invalid API Key name, can be at most 1024 characters."
API_KEY_VALUE_TOO_SHORT = "API Key value should be at least 20 characters"
API_KEY_VALUE_TOO_LONG = "API Key value exceeds maximum size of 128 characters"
API_KEY_DESCRIPTION = "Invalid API Key description specified."
# UpdateApiKey's paths per op, as AWS lists them in PATCH_PATH_FOR_OP
API_KEY_PATCH_PATHS = {"replace": ("/description", "/enabled", "/name", "/customerId"),
                       "add": ("/stages",), "remove": ("/stages",)}

# ---- usage plans
INVALID_USAGE_PLAN_ID = "Invalid Usage Plan ID specified"
INVALID_API_STAGE = "Invalid API Stage specified"                       # 400: no apiId:stage value
API_STAGE_NOT_IN_PLAN = "Invalid API Stage {{api: {api_id}, stage: {stage}}} specified for usageplan {plan_id}"
# CreateUsagePlan with an API stage that does not exist: AWS leaves its placeholders unfilled
# (as users of the AWS CLI and CloudFormation report it)
API_STAGE_UNKNOWN_ON_CREATE = "Invalid API Stage {api: %s, stage: %s} specified for usageplan %s"
# UpdateUsagePlan's remove paths, as AWS lists them ("apidId" is AWS's spelling)
USAGE_PLAN_REMOVE_PATHS = ("/apiStages", "/quota", "/throttle", "/productCode",
                           "/apiStages/<apidId:stageName>/throttle/<resourcePath>/<httpMethod>",
                           "/apiStages/<apidId:stageName>/throttle")

# ---- stages: UpdateStage on a path it does not have (AWS's list as it prints it, with the
# commas it leaves out between some of the throttling and caching paths)
STAGE_PATCH_PATH = (
    "Invalid method setting path: {path}. Must be one of: [/deploymentId, /description, "
    "/cacheClusterEnabled, /cacheClusterSize, /clientCertificateId, /accessLogSettings, "
    "/accessLogSettings/destinationArn, /accessLogSettings/format, "
    "/{{resourcePath}}/{{httpMethod}}/metrics/enabled, /{{resourcePath}}/{{httpMethod}}/logging/dataTrace, "
    "/{{resourcePath}}/{{httpMethod}}/logging/loglevel, "
    "/{{resourcePath}}/{{httpMethod}}/throttling/burstLimit/{{resourcePath}}/{{httpMethod}}/throttling/"
    "rateLimit/{{resourcePath}}/{{httpMethod}}/caching/ttlInSeconds, "
    "/{{resourcePath}}/{{httpMethod}}/caching/enabled, /{{resourcePath}}/{{httpMethod}}/caching/dataEncrypted, "
    "/{{resourcePath}}/{{httpMethod}}/caching/requireAuthorizationForCacheControl, "
    "/{{resourcePath}}/{{httpMethod}}/caching/unauthorizedCacheControlHeaderStrategy, "
    "/*/*/metrics/enabled, /*/*/logging/dataTrace, /*/*/logging/loglevel, "
    "/*/*/throttling/burstLimit /*/*/throttling/rateLimit /*/*/caching/ttlInSeconds, "
    "/*/*/caching/enabled, /*/*/caching/dataEncrypted, /*/*/caching/requireAuthorizationForCacheControl, "
    "/*/*/caching/unauthorizedCacheControlHeaderStrategy, /variables/{{variable_name}}, /tracingEnabled]")

# ---- patch operations
PATCH_PATH = "Invalid patch path {path}"
PATCH_OP_ONLY_REPLACE = "Invalid patch operation specified. Must be one of: [replace]"
PATCH_OP_ADD_REMOVE_REPLACE = "Invalid patch operation specified. Must be 'add'|'remove'|'replace'"
# (two spaces after "path": AWS's text)
PATCH_PATH_FOR_OP = "Invalid patch path  '{path}' specified for op '{op}'. Must be one of: [{choices}]"
PATCH_PATH_UNSUPPORTED_OP = "Invalid patch path  '{path}' specified for op '{op}'. Please choose supported operations"

# ---- the service's own input validation (ValidationException, 400)
VALIDATION_ERRORS = "{count} validation error{s} detected: {errors}"
ENUM_CONSTRAINT = ("Value '{value}' at '{where}' failed to satisfy constraint: Member must satisfy "
                   "enum value set: [{choices}]")
LIST_ENUM_CONSTRAINT = ("Value '[{value}]' at '{where}' failed to satisfy constraint: Member must "
                        "satisfy constraint: [Member must satisfy enum value set: [{choices}]]")
PATTERN_CONSTRAINT = ("Value '{value}' at '{where}' failed to satisfy constraint: Member must "
                      "satisfy regular expression pattern: {pattern}")
NULL_CONSTRAINT = "Value null at '{where}' failed to satisfy constraint: Member must not be null"
# SerializationException: a JSON value of the wrong type, named by the Java class AWS read it as
SERIALIZATION = "class {java_class} can not be converted to an {target}"
JAVA_CLASSES = {bool: "java.lang.Boolean", int: "com.amazon.coral.value.json.numbers.TruncatingBigNumber",
                float: "com.amazon.coral.value.json.numbers.TruncatingBigNumber",
                str: "java.lang.String", list: "java.util.ArrayList", dict: "java.util.LinkedHashMap"}

# Enumerations as AWS's validation messages list them (their order is AWS's, not the
# service model's).
ENUM_ORDER = {
    "Op": ("add", "remove", "move", "test", "replace", "copy"),
    "EndpointType": ("PRIVATE", "EDGE", "REGIONAL"),
    "IntegrationType": ("HTTP", "MOCK", "AWS_PROXY", "HTTP_PROXY", "AWS"),
    "DocumentationPartType": (
        "RESPONSE_BODY", "RESPONSE", "METHOD", "MODEL", "AUTHORIZER", "RESPONSE_HEADER", "RESOURCE",
        "PATH_PARAMETER", "REQUEST_BODY", "QUERY_PARAMETER", "API", "REQUEST_HEADER"),
    "IpAddressType": ("ipv4", "dualstack"),
    "GatewayResponseType": (
        "REQUEST_TOO_LARGE", "RESOURCE_NOT_FOUND", "AUTHORIZER_CONFIGURATION_ERROR",
        "MISSING_AUTHENTICATION_TOKEN", "BAD_REQUEST_BODY", "INVALID_SIGNATURE", "INVALID_API_KEY",
        "BAD_REQUEST_PARAMETERS", "AUTHORIZER_FAILURE", "UNAUTHORIZED", "INTEGRATION_TIMEOUT",
        "ACCESS_DENIED", "DEFAULT_4XX", "DEFAULT_5XX", "WAF_FILTERED", "QUOTA_EXCEEDED", "THROTTLED",
        "API_CONFIGURATION_ERROR", "UNSUPPORTED_MEDIA_TYPE", "INTEGRATION_FAILURE", "EXPIRED_TOKEN"),
}
# Patterns AWS checks that the service model does not carry: member -> pattern as AWS prints it.
PATTERNS = {"statusCode": r"[1-5]\d\d"}


def validation_errors(errors: list[str]) -> str:
    """AWS's ValidationException text for one or more constraint failures."""
    return VALIDATION_ERRORS.format(count=len(errors), s="" if len(errors) == 1 else "s",
                                    errors="; ".join(errors))


def invalid_api(api_id: str) -> str:
    return INVALID_API_ID.format(account=ACCOUNT_ID, api_id=api_id)


# The same table by key, for the operations that name their texts so (every text above
# appears once: the keys that share one point at it).
MESSAGES: dict[str, str] = {
    # patch operations
    "patch_op_unsupported": PATCH_PATH_UNSUPPORTED_OP,
    "patch_path_not_one_of": PATCH_PATH_FOR_OP,
    "patch_path_invalid": PATCH_PATH,
    "patch_parameter_missing": INVALID_PARAMETER_NAME,
    "patch_content_type_missing": CONTENT_TYPE_NOT_FOUND,
    "patch_null_or_empty": "Invalid null or empty value in {what}",
    # resources
    "resource_not_found": INVALID_RESOURCE_ID,
    "resource_cyclical": "Resources cannot be cyclical.",
    "resource_root_path_part": "Root resource cannot update its pathPart.",
    "resource_root_parent": "Root resource cannot update its parentId.",
    "resource_sibling_exists": SIBLING_SAME_NAME,
    # methods, integrations, responses
    "method_not_found": INVALID_METHOD_ID,
    "integration_not_found": INVALID_INTEGRATION_ID,
    "response_status_not_found": INVALID_RESPONSE_STATUS,
    # models
    "model_not_found": INVALID_MODEL_NAME,
    "model_exists": "Model name already exists for this REST API",
    "model_name_empty": "Model name must be non-empty",
    "model_schema_empty": "Model schema must have at least 1 property or array items defined",
    # not recorded against AWS: the form AWS's other "Validation Result" messages take
    "model_schema_invalid": "Invalid model specified: Validation Result: warnings : [], "
                            "errors : [Invalid model schema specified]",
    "model_in_use": "Cannot delete model '{name}', is referenced in method request: {where}",
    "model_in_model": "Cannot delete model '{name}', is referenced in model: {other}",  # not recorded
    "model_identifier": INVALID_MODEL_ID,
    # request validators
    "validator_not_found": INVALID_VALIDATOR_ID,
    "validator_name_blank": "Request Validator name cannot be blank",
    "rest_api_identifier": INVALID_REST_API_ID_400,
    # documentation
    "doc_part_not_found": "Invalid Documentation part identifier specified",
    "doc_part_exists": "Documentation part already exists for this API",
    "doc_version_not_found": "Invalid Documentation version specified",
    "doc_version_exists": "Documentation version already exists",
    "doc_import_bad_file": "Unable to build importer with provided input.",
    # gateway responses
    "gateway_response_not_defined": GATEWAY_RESPONSE_NOT_DEFINED,
    # VPC links
    "vpc_link_not_found": "Invalid Vpc Link identifier specified",
    "vpc_link_name_empty": "Name cannot be empty",
    "arn_malformed": "Invalid ARN. ARN is not well formed {arn}",
    # client certificates
    "client_certificate_not_found": "Invalid Client Certificate identifier specified",
    # tags
    "tags_resource_arn": "Invalid resource ARN specified: {arn}",
    # domain name access associations
    "dnaa_not_found": "Invalid domain name access association identifier specified",
    # SDKs
    "sdk_type_not_found": "Invalid SDK type specified: {type}",
    # stages
    "stage_not_found": INVALID_STAGE_ID,
    # API keys and usage plans
    "api_key_not_found": INVALID_API_KEY_ID,
    "usage_plan_not_found": INVALID_USAGE_PLAN_ID,
    # validation errors (ValidationException)
    "validation_enum": ENUM_CONSTRAINT,
    "validation_pattern": PATTERN_CONSTRAINT,
}


def aws_message(key: str, **fields) -> str:
    """AWS's message `key`, with its {fields} filled in."""
    return MESSAGES[key].format(**fields)
