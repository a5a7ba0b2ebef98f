"""AWS's own message texts for the operations of fastgate/control/model/, by key, as AWS
answers them (recorded against AWS: LocalStack's AWS-validated snapshots). One table, read
through aws_message(), so every text is in one place and can be checked against a recording.

Oddities kept on purpose, because AWS has them: the two spaces in "Invalid patch path  '...'",
"Resources cannot be cyclical." with its full stop, "Invalid Vpc Link identifier".
"""

from __future__ import annotations

MESSAGES: dict[str, str] = {
    # patch operations
    "patch_op_unsupported": "Invalid patch path  '{path}' specified for op '{op}'. "
                            "Please choose supported operations",
    "patch_path_not_one_of": "Invalid patch path  '{path}' specified for op '{op}'. "
                             "Must be one of: [{choices}]",
    "patch_path_invalid": "Invalid patch path {path}",
    "patch_parameter_missing": "Invalid parameter name specified",
    "patch_content_type_missing": "Content-Type specified was not found",
    "patch_null_or_empty": "Invalid null or empty value in {what}",
    # resources
    "resource_not_found": "Invalid Resource identifier specified",
    "resource_cyclical": "Resources cannot be cyclical.",
    "resource_root_path_part": "Root resource cannot update its pathPart.",
    "resource_root_parent": "Root resource cannot update its parentId.",
    "resource_sibling_exists": "Another resource with the same parent already has this name: {part}",
    # methods, integrations, responses
    "method_not_found": "Invalid Method identifier specified",
    "integration_not_found": "Invalid Integration identifier specified",
    "response_status_not_found": "Invalid Response status code specified",
    # models
    "model_not_found": "Invalid model name specified: {name}",
    "model_exists": "Model name already exists for this REST API",
    "model_name_empty": "Model name must be non-empty",
    "model_schema_empty": "Model schema must have at least 1 property or array items defined",
    # not recorded against AWS: the form AWS's other "Validation Result" messages take
    "model_schema_invalid": "Invalid model specified: Validation Result: warnings : [], "
                            "errors : [Invalid model schema specified]",
    "model_in_use": "Cannot delete model '{name}', is referenced in method request: {where}",
    "model_in_model": "Cannot delete model '{name}', is referenced in model: {other}",  # not recorded
    "model_identifier": "Invalid model identifier specified: {name}",
    # request validators
    "validator_not_found": "Invalid Request Validator identifier specified",
    "validator_name_blank": "Request Validator name cannot be blank",
    "rest_api_identifier": "Invalid REST API identifier specified",
    # documentation
    "doc_part_not_found": "Invalid Documentation part identifier specified",
    "doc_part_exists": "Documentation part already exists for this API",
    "doc_version_not_found": "Invalid Documentation version specified",
    "doc_version_exists": "Documentation version already exists",
    "doc_import_bad_file": "Unable to build importer with provided input.",
    # gateway responses
    "gateway_response_not_defined": "Gateway response type not defined on api",
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
    "stage_not_found": "Invalid Stage identifier specified",
    # validation errors (ValidationException)
    "validation_enum": "Value '{value}' at '{where}' failed to satisfy constraint: "
                       "Member must satisfy enum value set: [{choices}]",
    "validation_pattern": "Value '{value}' at '{where}' failed to satisfy constraint: "
                          "Member must satisfy regular expression pattern: {pattern}",
}


def aws_message(key: str, **fields) -> str:
    """AWS's message `key`, with its {fields} filled in."""
    return MESSAGES[key].format(**fields)


def validation_errors(errors: list[str]) -> str:
    """AWS's ValidationException text for one or more constraint violations."""
    n = len(errors)
    return f"{n} validation error{'s' if n > 1 else ''} detected: " + "; ".join(errors)
