"""What the gateway must know of an AWS service to call it as API Gateway does, read from
botocore's models (the spec): its protocol, JSON target prefix, signing name and id; and
where it answers: the config's overrides, AWS_ENDPOINT_URL(_<SERVICE>), else AWS's own
endpoint for the region (botocore's endpoint data)."""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import botocore.loaders
import botocore.model
import botocore.regions

from fastgate.phases.aws import check_url

__all__ = ["Service", "service", "Endpoints", "default_region"]

# An integration URI names a service by its endpoint prefix (the host name's first label,
# "arn:aws:apigateway:us-east-1:states:action/StartExecution"); botocore names these otherwise.
_BOTOCORE_NAMES = {
    "states": "stepfunctions", "monitoring": "cloudwatch", "email": "ses",
    "runtime.sagemaker": "sagemaker-runtime", "runtime.lex": "lex-runtime",
    "elasticmapreduce": "emr", "streams.dynamodb": "dynamodbstreams",
    # StartSyncExecution answers at sync-states.REGION.amazonaws.com: REST APIs name that host
    "sync-states": "stepfunctions",
}

# API Gateway fills in X-Amz-Target for an action/ URI of these JSON services (LocalStack's
# AWS-validated tests); for other JSON services (EventBridge among them) the API maps the
# header itself, as on AWS.
AUTO_TARGET = frozenset(("dynamodb", "kinesis", "ssm", "stepfunctions"))

# Services API Gateway calls with the query protocol (Action=...), whatever botocore's model
# says today: SQS's model moved to JSON in 2023, and API Gateway's SQS integrations kept
# the query API that their templates (Action=SendMessage&MessageBody=...) are written for.
_QUERY_AS_APIGW = frozenset(("sqs",))

_LOADER = botocore.loaders.Loader()


class Service(NamedTuple):
    name: str                  # botocore's: "stepfunctions"
    prefix: str                # the host's first label, as integration URIs name it: "states"
                               # (or "sync-states"); AWS's endpoint is built from it
    endpoint_prefix: str       # the model's endpointPrefix: "states"
    protocol: str              # "query" | "json" | "rest-json" | "rest-xml" | "ec2"
    target_prefix: str | None  # JSON protocol: X-Amz-Target's "AWSStepFunctions"
    json_version: str | None   # JSON protocol: "1.0" -> application/x-amz-json-1.0
    signing_name: str          # SigV4's service: "states"
    service_id: str            # "SFN": AWS_ENDPOINT_URL_SFN
    model: botocore.model.ServiceModel

    @property
    def env_name(self) -> str:
        return "AWS_ENDPOINT_URL_" + self.service_id.upper().replace(" ", "_").replace("-", "_")

    @property
    def apigw_protocol(self) -> str:
        """The protocol API Gateway speaks to it for an action/ URI."""
        return "query" if self.name in _QUERY_AS_APIGW else self.protocol


@functools.lru_cache(maxsize=None)
def service(name: str) -> Service:
    """The service an integration URI (endpoint prefix) or botocore names; ValueError when
    botocore has no model of it."""
    bname = _BOTOCORE_NAMES.get(name, name)
    try:
        data = _LOADER.load_service_model(bname, "service-2")
    except Exception:   # botocore's UnknownServiceError / DataNotFoundError
        raise ValueError(f"AWS service {name!r} is unknown (no botocore model)") from None
    meta = data["metadata"]
    prefix = name if name in _BOTOCORE_NAMES or name == meta.get("endpointPrefix") \
        else meta.get("endpointPrefix", name)
    return Service(name=bname, prefix=prefix, endpoint_prefix=meta.get("endpointPrefix", name),
                   protocol=meta.get("protocol", "json"),
                   target_prefix=meta.get("targetPrefix"), json_version=meta.get("jsonVersion"),
                   signing_name=meta.get("signingName") or meta.get("endpointPrefix", name),
                   service_id=meta.get("serviceId", bname),
                   model=botocore.model.ServiceModel(data, service_name=bname))


@functools.lru_cache(maxsize=1)
def _resolver() -> botocore.regions.EndpointResolver:
    return botocore.regions.EndpointResolver(_LOADER.load_data("endpoints"))


def aws_endpoint(svc: Service, region: str) -> str:
    """AWS's own endpoint of the service in a region (https)."""
    try:
        found = _resolver().construct_endpoint(svc.prefix, region)
    except Exception:
        found = None
    host = (found or {}).get("hostname") or f"{svc.prefix}.{region}.amazonaws.com"
    return "https://" + host


def default_region(configured: str | None, environ=os.environ) -> str:
    """The config's region, else the environment's, else the profile's, else us-east-1."""
    if configured:
        return configured
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        if environ.get(var):
            return environ[var]
    try:
        import botocore.session
        region = botocore.session.Session().get_config_variable("region")
    except Exception:
        region = None
    return region or "us-east-1"


class Endpoints:
    """Where each service answers. The most specific setting wins: the config's
    ``aws.endpoints.<service>``, then ``AWS_ENDPOINT_URL_<SERVICE>``, then the config's
    ``aws.endpoint_url``, then ``AWS_ENDPOINT_URL``, then AWS's endpoint for the region
    (the environment variables are ignored with AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true,
    as the SDKs do)."""

    def __init__(self, endpoint_url: str | None = None, endpoints: dict | None = None,
                 environ=os.environ):
        self.endpoint_url = check_url(endpoint_url, "aws.endpoint_url") if endpoint_url else None
        self.endpoints = {k: check_url(v, f"aws.endpoints.{k}") for k, v in (endpoints or {}).items()}
        self.use_env = environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() != "true"
        self.environ = environ

    def url(self, svc: Service, region: str) -> str:
        for key in (svc.prefix, svc.endpoint_prefix, svc.name):
            if key in self.endpoints:
                return self.endpoints[key]
        if self.use_env and self.environ.get(svc.env_name):
            return self.environ[svc.env_name].rstrip("/")
        if self.endpoint_url:
            return self.endpoint_url
        if self.use_env and self.environ.get("AWS_ENDPOINT_URL"):
            return self.environ["AWS_ENDPOINT_URL"].rstrip("/")
        return aws_endpoint(svc, region)
