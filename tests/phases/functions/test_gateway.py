"""fastgate/phases/functions/gateway.py: an access check's result in each payload format's shape."""

from fastgate.phases.auth import AuthResult
from fastgate.phases.functions.gateway import authorizer_of


def test_jwt_claims_by_api_type_and_payload_format():
    auth = AuthResult(True, claims={"sub": "u1"}, context={"claims": {"sub": "u1"}, "scopes": ["read"]})
    assert authorizer_of(auth, v2=True) == {"jwt": {"claims": {"sub": "u1"}, "scopes": ["read"]}}
    # an HTTP API with payload format 1.0: claims and scopes at the top, as in AWS's sample
    assert authorizer_of(auth, v2=False, http_api=True) == {"claims": {"sub": "u1"}, "scopes": ["read"]}
    # a REST API (Cognito): a flat map with the claims
    assert authorizer_of(auth, v2=False)["claims"] == {"sub": "u1"}


def test_lambda_and_iam_authorizers_on_an_http_api_with_payload_1_0():
    lam = AuthResult(True, principal_id="p", context={"tenant": "acme"})
    assert authorizer_of(lam, v2=False, http_api=True) == {"lambda": {"tenant": "acme"}}
    assert authorizer_of(lam, v2=False) == {"tenant": "acme", "principalId": "p"}
    iam = AuthResult(True, identity={"accessKey": "AKIA", "userArn": "arn:aws:iam::1:user/u"})
    assert authorizer_of(iam, v2=False, http_api=True) == {"iam": iam.identity}
    assert authorizer_of(None, v2=False, http_api=True) is None   # the event builder fills the default
