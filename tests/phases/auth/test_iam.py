"""AWS_IAM: requests signed by botocore's own signers (header and presigned), and
tampered, stale, replayed and unknown-key ones; the credentials CSV."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fastgate.phases.auth.iam import CredentialsError, IamCheck, ReplayCache, load_credentials_csv

from .conftest import request

KEY, SECRET = "AKIAFASTGATE0001", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
ARN = "arn:aws:iam::111122223333:user/alice"
CREDS = {KEY: (SECRET, ARN)}


def signed(method="GET", url="http://127.0.0.1:8080/prod/pets/1?limit=2", body=b"",
           headers=None, key=KEY, secret=SECRET, region="us-east-1", presign=None):
    """An AuthRequest of what botocore puts on the wire."""
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    creds = Credentials(key, secret)
    if presign:
        SigV4QueryAuth(creds, "execute-api", region, expires=presign).add_auth(req)
    else:
        SigV4Auth(creds, "execute-api", region).add_auth(req)
    p = req.prepare()
    parts = urlsplit(p.url)
    hdrs = [(k.encode(), (v if isinstance(v, bytes) else v.encode())) for k, v in p.headers.items()]
    if not any(k.lower() == b"host" for k, _ in hdrs):
        hdrs.append((b"Host", parts.netloc.encode()))
    return request(method=p.method, path=parts.path, stage_path=parts.path[len("/prod"):],
                   query=parts.query.encode(), headers=hdrs, body=p.body or b"")


def fresh_check(**kw):
    return IamCheck(CREDS, ReplayCache(), **kw)


def test_valid_header_signature_and_identity():
    result = fresh_check().check(signed("POST", body=b'{"name":"rex"}',
                                        headers={"Content-Type": "application/json"}))
    assert result.allowed and result.principal_id == ARN
    assert result.identity == {"accessKey": KEY, "accountId": "111122223333", "caller": KEY,
                               "user": KEY, "userArn": ARN}


def test_valid_presigned():
    assert fresh_check().check(signed(presign=300)).allowed


def test_body_is_needed():
    assert IamCheck.needs_body


@pytest.mark.parametrize("tamper", ["body", "path", "query", "header", "method"])
def test_tampered(tamper):
    req = signed("PUT", body=b"original", headers={"X-Custom": "a"})
    if tamper == "body":
        req.body = b"changed"
    elif tamper == "path":
        req.path = "/prod/pets/2"
    elif tamper == "query":
        req.query = b"limit=3"
    elif tamper == "header":
        # x-custom is not signed by botocore, Host is
        req.headers = [(n, b"evil.example" if n.lower() == b"host" else v) for n, v in req.headers]
    else:
        req.method = "DELETE"
    result = fresh_check().check(req)
    assert not result.allowed and result.error_type == "INVALID_SIGNATURE"
    if tamper == "body":
        assert "x-amz-content-sha256" in result.message or "signature we calculated" in result.message
    else:
        assert result.message.startswith("The request signature we calculated does not match")


def test_tampered_presigned_query():
    req = signed(presign=300)
    req.query = req.query.replace(b"limit=2", b"limit=9")
    assert fresh_check().check(req).error_type == "INVALID_SIGNATURE"


def test_stale_and_future_dates():
    req = signed()
    stale = IamCheck(CREDS, ReplayCache(), clock=lambda: time.time() + 16 * 60).check(req)
    assert (stale.error_type, stale.message.split(":")[0]) == ("EXPIRED_TOKEN", "Signature expired")
    early = IamCheck(CREDS, ReplayCache(), clock=lambda: time.time() - 16 * 60).check(signed())
    assert early.error_type == "INVALID_SIGNATURE" and "not yet current" in early.message
    expired_url = IamCheck(CREDS, ReplayCache(), clock=lambda: time.time() + 120).check(
        signed(presign=60))
    assert expired_url.error_type == "EXPIRED_TOKEN"


def test_replayed():
    check = fresh_check()
    req = signed()
    assert check.check(req).allowed
    again = check.check(req)
    assert (again.allowed, again.error_type) == (False, "INVALID_SIGNATURE")
    assert "already been used" in again.message
    url = signed(presign=300)
    assert check.check(url).allowed and not check.check(url).allowed
    # a refused request is not remembered: the same request stays refusable for its real fault
    bad = signed(secret="wrong")
    assert check.check(bad).message.startswith("The request signature")
    assert check.check(bad).message.startswith("The request signature")


def test_replay_cache_expiry_and_bound():
    now = [1000.0]
    cache = ReplayCache(capacity=3, clock=lambda: now[0])
    assert not cache.seen("a", 1010) and cache.seen("a", 1010)
    now[0] = 1011
    assert not cache.seen("a", 1020)            # expired entries can be seen anew
    for sig in "bcd":
        cache.seen(sig, 2000)
    assert len(cache) == 3 and not cache.seen("a", 2000)   # the oldest was evicted


def test_unknown_key_and_unsigned():
    unknown = fresh_check().check(signed(key="AKIAUNKNOWN"))
    assert (unknown.error_type, unknown.message) == (
        "ACCESS_DENIED", "The security token included in the request is invalid.")
    unsigned = fresh_check().check(request(headers=[(b"Host", b"h")]))
    assert (unsigned.error_type, unsigned.message) == ("MISSING_AUTHENTICATION_TOKEN",
                                                       "Missing Authentication Token")


def test_wrong_region_or_service():
    result = fresh_check().check(signed(region="eu-west-1"))
    assert result.error_type == "INVALID_SIGNATURE" and "region" in result.message
    assert IamCheck(CREDS, None, check_region=False).check(signed(region="eu-west-1")).allowed


def test_credentials_csv(tmp_path):
    good = tmp_path / "creds.csv"
    good.write_text("access_key_id,secret_access_key,principal_arn\n"
                    f"{KEY},{SECRET},{ARN}\n\n"
                    "AKIA2,s2,arn:aws:iam::444455556666:role/svc\n")
    creds = load_credentials_csv(str(good))
    assert creds == {KEY: (SECRET, ARN), "AKIA2": ("s2", "arn:aws:iam::444455556666:role/svc")}
    cases = {
        "key,secret,arn\n": ":1: the header",
        "access_key_id,secret_access_key,principal_arn\nA,B\n": ":2: expected 3 columns",
        "access_key_id,secret_access_key,principal_arn\nA,B,alice\n": ":2: 'alice' is not",
        "access_key_id,secret_access_key,principal_arn\nA,B,arn:aws:iam::1:user/x\n"
        "A,C,arn:aws:iam::1:user/y\n": ":3: access key id A appears twice",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(CredentialsError, match=message):
            load_credentials_csv(str(bad))
    with pytest.raises(CredentialsError, match="missing.csv"):
        load_credentials_csv(str(tmp_path / "missing.csv"))
