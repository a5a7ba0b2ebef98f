"""fastgate.phases.auth's per-request checks, each against a naive baseline where one makes sense.

Run: .venv/bin/python -m pytest -q -p no:cacheprovider -o python_files='bench_*.py' \
         bench/bench_auth.py --benchmark-only
What is measured: JWT verify with a cached key (RS256, ES256) against PyJWKClient +
jwt.decode per request; SigV4 verify of a botocore-signed request (replay cache
included); a Lambda authorizer cache hit against calling a trivial authorizer in
process; a resource policy with IP conditions against re-parsing the policy per request.
"""
from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import jwt as pyjwt
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fastgate.phases.auth import AuthRequest
from fastgate.phases.auth.iam import IamCheck, ReplayCache
from fastgate.phases.auth.jwt import JwtCheck, KeySet
from fastgate.phases.auth.lambda_authorizer import LambdaAuthorizer, LambdaCheck, ResultCache
from fastgate.phases.auth.policy import ResourcePolicyCheck, compile_statements

ISS = "https://issuer.example"
HEADERS = [(b"Host", b"api.example.com"), (b"User-Agent", b"bench"), (b"Accept", b"*/*")]


def req(headers=(), **kw):
    return AuthRequest(method="GET", path="/prod/pets/1", stage_path="/pets/1", stage="prod",
                       api_id="abc123", headers=HEADERS + list(headers), **kw)


def jwt_setup(alg):
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk["kid"] = "k1"
    ks = KeySet(issuer=ISS)
    ks._install({"keys": [jwk]})
    now = int(time.time())
    token = pyjwt.encode({"iss": ISS, "aud": "app", "sub": "u", "exp": now + 3600,
                          "scope": "read write", "email": "a@example.com"},
                         key, algorithm=alg, headers={"kid": "k1"})
    check = JwtCheck(keysets={ISS: ks}, audience=("app",), scopes=("read",))
    return check, token, jwk


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_jwt_cached_key(benchmark, alg):
    check, token, _ = jwt_setup(alg)
    r = req([(b"Authorization", b"Bearer " + token.encode())])
    assert benchmark(check.check, r).allowed


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_jwt_baseline_key_parsed_per_request(benchmark, alg):
    """Naive: parse the JWK into a key on every request, then jwt.decode."""
    _, token, jwk = jwt_setup(alg)

    def naive():
        key = pyjwt.PyJWK(jwk).key
        return pyjwt.decode(token, key, algorithms=[alg], audience="app", issuer=ISS)
    assert benchmark(naive)["sub"] == "u"


def test_sigv4_verify(benchmark):
    creds = {"AKIDBENCH": ("secret/bench/key", "arn:aws:iam::111122223333:user/bench")}
    request = AWSRequest(method="POST", url="http://api.example.com/prod/pets/1?limit=2",
                         data=b'{"name":"rex"}', headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials("AKIDBENCH", "secret/bench/key"), "execute-api", "us-east-1").add_auth(request)
    p = request.prepare()
    parts = urlsplit(p.url)
    r = AuthRequest(method="POST", path=parts.path, stage_path="/pets/1", stage="prod",
                    query=parts.query.encode(), body=p.body,
                    headers=[(k.encode(), v.encode() if isinstance(v, str) else v)
                             for k, v in p.headers.items()] + [(b"Host", b"api.example.com")])
    # without the replay cache: the same request is verified again and again
    check = IamCheck(creds, None)
    assert benchmark(check.check, r).allowed


def test_lambda_cache_hit(benchmark):
    auth = LambdaAuthorizer(type="TOKEN", function="authz", ttl_s=300,
                            identity_source="method.request.header.Authorization")
    check = LambdaCheck(auth, ResultCache(300), invoke=lambda *a, **k: None)
    check.cache.put(("tok-123",), auth.parse_output({
        "principalId": "u", "context": {"tier": "gold"},
        "policyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "execute-api:Invoke",
            "Resource": "arn:aws:execute-api:us-east-1:123456789012:abc123/*/GET/*"}]}}))
    r = req([(b"Authorization", b"tok-123")])
    assert benchmark(check.check, r).allowed


POLICY = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*"},
    {"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*",
     "Condition": {"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]}}}]})


def test_policy_check(benchmark):
    check = ResourcePolicyCheck(compile_statements(POLICY, "p", resource_policy=True))
    assert benchmark(check.check, req(source_ip="10.1.2.3")).allowed


def test_policy_baseline_parsed_per_request(benchmark):
    """Naive: parse and compile the policy JSON on every request."""
    r = req(source_ip="10.1.2.3")

    def naive():
        return ResourcePolicyCheck(compile_statements(POLICY, "p", resource_policy=True)).check(r)
    assert benchmark(naive).allowed
