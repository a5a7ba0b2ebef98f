"""Where a service answers (fastgate/phases/aws/services.py): the most specific setting wins."""

from __future__ import annotations

import pytest

from fastgate.phases.aws.services import Endpoints, service


def test_endpoint_precedence():
    sqs, sfn = service("sqs"), service("states")
    env = {"AWS_ENDPOINT_URL_SQS": "http://env-sqs:1", "AWS_ENDPOINT_URL": "http://env-all:2"}
    assert Endpoints(None, {}, {}).url(sqs, "eu-west-1") == "https://sqs.eu-west-1.amazonaws.com"
    assert Endpoints(None, {}, env).url(sqs, "eu-west-1") == "http://env-sqs:1"
    assert Endpoints(None, {}, env).url(sfn, "eu-west-1") == "http://env-all:2"
    assert Endpoints("http://cfg-all:3/", {}, env).url(sqs, "eu-west-1") == "http://env-sqs:1"
    assert Endpoints("http://cfg-all:3/", {}, env).url(sfn, "eu-west-1") == "http://cfg-all:3"
    assert Endpoints("http://cfg-all:3", {"sqs": "http://cfg-sqs:4"}, env).url(sqs, "x") == "http://cfg-sqs:4"
    # Step Functions by any of its names: the URI's, the model's endpoint prefix, botocore's
    for key in ("states", "stepfunctions"):
        assert Endpoints(None, {key: "http://sfn:5"}, {}).url(sfn, "x") == "http://sfn:5"
    assert Endpoints(None, {}, {"AWS_ENDPOINT_URL_SFN": "http://sfn:6"}).url(sfn, "x") == "http://sfn:6"
    ignored = dict(env, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS="true")
    assert Endpoints(None, {}, ignored).url(sqs, "eu-west-1") == "https://sqs.eu-west-1.amazonaws.com"


def test_services_as_integration_uris_name_them():
    sync = service("sync-states")
    assert (sync.name, sync.signing_name, sync.target_prefix) == ("stepfunctions", "states", "AWSStepFunctions")
    assert Endpoints(None, {}, {}).url(sync, "us-east-2") == "https://sync-states.us-east-2.amazonaws.com"
    assert service("sqs").apigw_protocol == "query"       # as API Gateway calls it, whatever the model
    assert service("dynamodb").apigw_protocol == "json"
    with pytest.raises(ValueError, match="'nope' is unknown"):
        service("nope")


def test_bad_endpoint_urls_are_refused():
    with pytest.raises(ValueError, match="endpoints.sqs"):
        Endpoints(None, {"sqs": "ftp://x"}, {})
