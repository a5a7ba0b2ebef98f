"""fastgate.phases.auth.sigv4 against botocore's own signer: every request botocore signs must verify,
and any change to a signed part must not."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from fastgate.phases.auth.sigv4 import MISMATCH, SigV4Error, verify

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
CREDS = {KEY: SECRET, "OTHERKEY": "othersecret"}


def sign(method="GET", url="http://127.0.0.1:9901/restapis", body=b"", headers=None,
         secret=SECRET, key=KEY, service="apigateway", region="us-east-1", presign=None):
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    creds = Credentials(key, secret)
    if presign:
        SigV4QueryAuth(creds, service, region, expires=presign).add_auth(req)
    else:
        SigV4Auth(creds, service, region).add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    hdrs = [(k, v if isinstance(v, str) else v.decode()) for k, v in prepared.headers.items()]
    if not any(k.lower() == "host" for k, _ in hdrs):
        hdrs.append(("Host", parts.netloc))   # what the HTTP client puts on the wire
    return prepared.method, parts.path, parts.query, hdrs, prepared.body or b""


def check(method, path, query, headers, body, **kw):
    return verify(method, path, query, headers, body, CREDS, **kw)


def error_of(*args, **kw) -> SigV4Error:
    with pytest.raises(SigV4Error) as e:
        check(*args, **kw)
    return e.value


SHAPES = [
    ("GET", "http://127.0.0.1:9901/restapis", b"", None),
    ("GET", "http://127.0.0.1:9901/restapis?limit=5&position=abc", b"", None),
    ("GET", "http://h/restapis/x/resources?embed=methods&embed=a&embed=A", b"", None),
    ("GET", "http://h/a?b=&c&d=%20e%2Bf", b"", None),
    ("POST", "http://h/restapis", b'{"name":"x"}', {"Content-Type": "application/json"}),
    ("PUT", "http://h/restapis/abc?mode=merge&failonwarnings=true", b"\x00\xffbinary", None),
    ("PATCH", "http://h/restapis/abc/stages/prod", b'{"patchOperations":[]}', None),
    ("DELETE", "http://h/domainnames/api.example.com/basepathmappings/%28none%29", b"", None),
    ("GET", "http://h/p%C3%A9ts/caf%C3%A9/%E2%9C%93", b"", None),
    ("GET", "http://h/a%2Fb/c%20d/e%25f/~tilde/!$&'()*+,;=:@", b"", None),
    ("GET", "http://h/a/./b/../c//d/", b"", None),
    ("GET", "http://h/", b"", {"X-Custom": "  spaced   out  value  ", "x-multi": "a"}),
    ("GET", "http://h:8080/x?k=%E2%9C%93&%E2%9C%93=v", b"", None),
]


@pytest.mark.parametrize("method,url,body,headers", SHAPES)
def test_botocore_signed_requests_verify(method, url, body, headers):
    p = check(*sign(method, url, body, headers), service="apigateway")
    assert p.access_key_id == KEY and p.region == "us-east-1" and p.service == "apigateway"
    assert "host" in p.signed_headers and not p.presigned


@pytest.mark.parametrize("method,url,body,headers", [s for s in SHAPES if not s[2]])
def test_presigned_urls_verify(method, url, body, headers):
    p = check(*sign(method, url, body, headers, presign=300))
    assert p.presigned and p.access_key_id == KEY


def test_other_key_and_region():
    p = check(*sign(key="OTHERKEY", secret="othersecret", region="eu-west-3"))
    assert (p.access_key_id, p.region) == ("OTHERKEY", "eu-west-3")


def test_wrong_secret():
    e = error_of(*sign(secret="not-the-secret"))
    assert e.code == "InvalidSignatureException" and e.status == 403
    assert e.reason.startswith(MISMATCH)


def test_unknown_key_id():
    e = error_of(*sign(key="AKIDUNKNOWN"))
    assert (e.code, e.reason) == ("UnrecognizedClientException",
                                  "The security token included in the request is invalid.")


def test_unsigned():
    e = error_of("GET", "/restapis", "", [("Host", "h")], b"")
    assert (e.code, e.reason) == ("MissingAuthenticationTokenException", "Missing Authentication Token")


def _swap(headers, name, value):
    return [(k, value if k.lower() == name else v) for k, v in headers]


def test_tampering_each_part_fails():
    method, path, query, headers, body = sign("POST", "http://h/restapis/abc?mode=merge&x=1",
                                              b'{"name":"x"}', {"X-Custom": "v"})
    check(method, path, query, headers, body)
    bad = [
        ("PUT", path, query, headers, body),
        (method, path + "x", query, headers, body),
        (method, path.upper(), query, headers, body),
        (method, path, query + "&y=2", headers, body),
        (method, path, "mode=merge&x=2", headers, body),
        (method, path, query, _swap(headers, "x-custom", "w"), body),
        (method, path, query, _swap(headers, "host", "evil.example"), body),
        (method, path, query, headers + [("X-Custom", "second")], body),
    ]
    for args in bad:
        assert error_of(*args).code == "InvalidSignatureException", args
    # the body is hashed into the canonical request
    assert error_of(method, path, query, headers, b'{"name":"y"}').reason.startswith(MISMATCH)
    # a flipped signature character
    auth = [v for k, v in headers if k == "Authorization"][0]
    flipped = auth[:-1] + ("0" if auth[-1] != "0" else "1")
    assert error_of(method, path, query, _swap(headers, "authorization", flipped), body).reason.startswith(MISMATCH)


def test_declared_payload_hash():
    import hashlib
    body = b'{"name":"x"}'
    declared = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    method, path, query, headers, _ = sign("POST", "http://h/restapis", body, declared)
    check(method, path, query, headers, body)
    e = error_of(method, path, query, headers, b'{"name":"y"}')
    assert "x-amz-content-sha256" in e.reason
    # UNSIGNED-PAYLOAD leaves a body unauthenticated: refused unless there is no body
    args = sign("POST", "http://h/restapis", b"", {"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    check(*args)
    assert "x-amz-content-sha256" in error_of(*args[:4], b"smuggled").reason


def test_the_head_is_checked_without_the_body():
    import hashlib
    from fastgate.phases.auth.sigv4 import check_head
    body = b'{"name":"x"}'
    method, path, query, headers, _ = sign("POST", "http://h/restapis", body)
    head = check_head(method, path, query, headers, CREDS)     # no body needed to get this far
    assert not head.declares_hash and head.verify(body).access_key_id == KEY
    assert SECRET not in repr(head)
    with pytest.raises(SigV4Error) as e:
        check_head(method, path, query, [h for h in headers if h[0].lower() != "authorization"], CREDS)
    assert e.value.code == "MissingAuthenticationTokenException"
    with pytest.raises(SigV4Error) as e:
        check_head(method, path, query, headers, {"OTHERKEY": "othersecret"})
    assert e.value.code == "UnrecognizedClientException"
    # a declared hash lets the signature be checked before the body, which must then match it
    declared = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    method, path, query, headers, _ = sign("POST", "http://h/restapis", body, declared)
    head = check_head(method, path, query, headers, CREDS)
    assert head.declares_hash and head.verify_declared().access_key_id == KEY
    with pytest.raises(SigV4Error):
        head.verify(b'{"name":"y"}')
    wrong = sign("POST", "http://h/restapis", body, declared, secret="wrong")
    with pytest.raises(SigV4Error) as e:
        check_head(*wrong[:4], CREDS).verify_declared()
    assert e.value.code == "InvalidSignatureException"


def test_unsigned_headers_may_change():
    method, path, query, headers, body = sign()
    check(method, path, query, headers + [("User-Agent", "changed"), ("X-Other", "1")], body)


def test_clock_skew():
    args = sign()
    now = time.time()
    check(*args, now=now + 14 * 60)
    e = error_of(*args, now=now + 16 * 60)
    assert e.code == "InvalidSignatureException" and e.reason.startswith("Signature expired: ")
    assert e.reason.endswith(" - 15 min.)")
    e = error_of(*args, now=now - 16 * 60)
    assert e.reason.startswith("Signature not yet current: ")


def test_presigned_expiry_and_tampering():
    method, path, query, headers, body = sign("GET", "http://h/restapis?limit=2", presign=60)
    now = time.time()
    check(method, path, query, headers, body, now=now + 50)
    assert error_of(method, path, query, headers, body, now=now + 120).reason.startswith("Signature expired")
    assert error_of(method, path, query.replace("limit=2", "limit=3"), headers, body).reason.startswith(MISMATCH)
    assert error_of(method, path, query.replace("X-Amz-Expires=60", "X-Amz-Expires=6000"),
                    headers, body).reason.startswith(MISMATCH)


def test_scope_checks():
    args = sign(service="execute-api", region="eu-west-1")
    check(*args, service="execute-api", region="eu-west-1")
    e = error_of(*args, service="apigateway")
    assert e.reason == "Credential should be scoped to correct service: 'apigateway'. "
    e = error_of(*args, region="us-east-1")
    assert e.reason == "Credential should be scoped to a valid region, not 'eu-west-1'. "


def test_credential_date_must_match_amz_date():
    method, path, query, headers, body = sign()
    auth = [v for k, v in headers if k == "Authorization"][0]
    date = [v for k, v in headers if k == "X-Amz-Date"][0]
    other = str(int(date[:8]) - 1) + date[8:]
    e = error_of(method, path, query, _swap(headers, "x-amz-date", other), body)
    assert e.reason.startswith("Date in Credential scope does not match")
    assert auth  # the Authorization header is untouched; only the date moved


@pytest.mark.parametrize("auth,needle", [
    ("AWS4-HMAC-SHA256 Signature=abc, SignedHeaders=host", "requires 'Credential' parameter"),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240101/us-east-1/apigateway/aws4_request",
     "requires 'Signature' parameter"),
    ("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/bad, SignedHeaders=host, Signature=ab", "Credential must have the form"),
    ("AWS3 whatever", "Unsupported authorization type"),
])
def test_malformed_authorization(auth, needle):
    e = error_of("GET", "/", "", [("Host", "h"), ("Authorization", auth), ("X-Amz-Date", "20240101T000000Z")], b"")
    assert e.code == "IncompleteSignatureException" and needle in e.reason


def test_host_must_be_signed():
    method, path, query, headers, body = sign()
    auth = [v for k, v in headers if k == "Authorization"][0]
    bad = auth.replace("SignedHeaders=host;", "SignedHeaders=")
    e = error_of(method, path, query, _swap(headers, "authorization", bad), body)
    assert "'Host'" in e.reason


segment = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(segment, min_size=1, max_size=4),
       st.lists(st.tuples(segment, st.text(max_size=8)), max_size=5),
       st.binary(max_size=64))
def test_arbitrary_paths_queries_bodies(segments, params, body):
    from urllib.parse import quote
    path = "/" + "/".join(quote(s, safe="-_.~") for s in segments)
    q = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in params)
    url = f"http://h{path}" + (f"?{q}" if q else "")
    check(*sign("POST", url, body))
