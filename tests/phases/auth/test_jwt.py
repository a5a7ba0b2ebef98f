"""JWT and Cognito authorizers against tokens made by PyJWT and a JWKS served by a local
issuer over a real socket: valid tokens, key rotation, and every attack we know of."""

from __future__ import annotations

import base64
import json
import time

import jwt as pyjwt
import pytest

from fastgate.phases.auth import AuthResult
from fastgate.phases.auth.http import HttpClient
from fastgate.phases.auth.jwt import JwtCheck, KeySet

from .conftest import SigningKey, outcome, request


def bearer(token: str):
    return [(b"Host", b"api.example.com"), (b"Authorization", b"Bearer " + token.encode())]


def make_check(issuer, *, jwks_uri=None, interval=300.0, **kw) -> JwtCheck:
    ks = KeySet(issuer=issuer.url, jwks_uri=jwks_uri, http_client=HttpClient(timeout_s=2),
                refetch_interval_s=interval)
    kw.setdefault("audience", ("my-client",))
    return JwtCheck(keysets={issuer.url: ks}, **kw)


def www_authenticate(result: AuthResult) -> str | None:
    for name, value in result.headers:
        if name == b"www-authenticate":
            return value.decode()
    return None


def test_valid_rs256_through_discovery_then_synchronous(issuer, rsa_key):
    issuer.keys = [rsa_key]
    check = make_check(issuer, scopes=("pets/read",))
    token = rsa_key.token(issuer.claims(scope="openid pets/read", email="a@example.com", n=5))
    first = check.check(request(headers=bearer(token)))
    assert not isinstance(first, AuthResult)      # the first request waits for the keys
    result = outcome(check, request(headers=bearer(token)))
    assert result.allowed and result.principal_id == "user-1"
    assert result.claims["email"] == "a@example.com"
    # what $context.authorizer.claims.X reads: strings, as API Gateway passes them
    assert result.context["claims"]["n"] == "5"
    assert result.context["scopes"] == ["openid", "pets/read"]
    assert issuer.hits == {"/.well-known/openid-configuration": 1, "/keys": 1}
    # now the keys are cached: the answer is synchronous and no fetch happens
    again = check.check(request(headers=bearer(token)))
    assert isinstance(again, AuthResult) and again.allowed
    assert issuer.hits["/keys"] == 1
    first.close()


def test_es256_from_jwks_uri(issuer, ec_key):
    issuer.keys = [ec_key]
    check = make_check(issuer, jwks_uri=issuer.url + "/keys")
    assert outcome(check, request(headers=bearer(ec_key.token(issuer.claims())))).allowed
    assert "/.well-known/openid-configuration" not in issuer.hits


def test_token_without_bearer_prefix(issuer, rsa_key):
    issuer.keys = [rsa_key]
    check = make_check(issuer)
    token = rsa_key.token(issuer.claims())
    assert outcome(check, request(headers=[(b"authorization", token.encode())])).allowed


def test_missing_header_is_401_without_error_description(issuer, rsa_key):
    issuer.keys = [rsa_key]
    result = outcome(make_check(issuer), request(headers=[(b"Host", b"x")]))
    assert (result.allowed, result.error_type, result.message) == (False, "UNAUTHORIZED", "Unauthorized")
    assert www_authenticate(result) is None
    assert issuer.hits == {}            # no token, no fetch


def refused(check, token) -> str:
    result = outcome(check, request(headers=bearer(token)))
    assert not result.allowed and result.error_type == "UNAUTHORIZED", result
    header = www_authenticate(result)
    assert header.startswith('Bearer scope="') and 'error="invalid_token"' in header
    return header


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_attacks(issuer, rsa_key, ec_key):
    issuer.keys = [rsa_key, ec_key]
    check = make_check(issuer)
    claims = issuer.claims()
    # warm the key set so every case below is judged on the token alone
    assert outcome(check, request(headers=bearer(rsa_key.token(claims)))).allowed

    # alg none: an unsigned token naming a real kid
    unsigned = b64({"alg": "none", "kid": "rsa-1", "typ": "JWT"}) + "." + b64(claims) + "."
    assert "algorithm 'none'" in refused(check, unsigned)
    # key confusion: HS256 "signed" with the RSA public key's PEM as the HMAC secret
    confused = (b64({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}) + "." + b64(claims))
    import hashlib
    import hmac
    sig = hmac.new(rsa_key.public_pem(), confused.encode(), hashlib.sha256).digest()
    confused += "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    assert "not allowed" in refused(check, confused)
    # an allowed algorithm against the wrong key type (RS256 header, EC kid)
    wrong_type = rsa_key.token(claims, headers={"kid": "ec-1"})
    assert "does not fit its key" in refused(check, wrong_type)
    # a signature by a key the issuer never published, under a published kid
    forged = SigningKey("rsa-1", "RS256").token(claims)
    assert "signature is invalid" in refused(check, forged)
    # tampered payload
    head, _, sig = rsa_key.token(claims).split(".")
    assert "signature is invalid" in refused(
        check, f"{head}.{b64(dict(claims, sub='admin'))}.{sig}")
    now = int(time.time())
    assert "expired" in refused(check, rsa_key.token(issuer.claims(exp=now - 10)))
    assert "exp claim" in refused(check, rsa_key.token(issuer.claims(exp=None)))
    assert "not valid yet" in refused(check, rsa_key.token(issuer.claims(nbf=now + 120)))
    assert "not valid yet" in refused(check, rsa_key.token(issuer.claims(iat=now + 120)))
    assert refused(check, rsa_key.token(issuer.claims(aud="someone-else"))).endswith(
        'error_description="the token does not have a valid audience"')
    assert "valid issuer" in refused(check, rsa_key.token(issuer.claims(iss="https://evil.example")))
    assert "malformed" in refused(check, "not.a.jwt")
    assert "malformed" in refused(check, "abc")


def test_leeway_accepts_small_skew(issuer, rsa_key):
    issuer.keys = [rsa_key]
    now = int(time.time())
    token = rsa_key.token(issuer.claims(exp=now - 5))
    assert not outcome(make_check(issuer), request(headers=bearer(token))).allowed
    assert outcome(make_check(issuer, leeway_s=30), request(headers=bearer(token))).allowed


def test_hmac_and_none_cannot_be_configured(issuer):
    for alg in ("HS256", "none"):
        with pytest.raises(ValueError):
            make_check(issuer, algorithms=("RS256", alg))


def test_disallowed_algorithm(issuer, ec_key):
    issuer.keys = [ec_key]
    check = make_check(issuer, algorithms=("RS256",))
    assert "not allowed" in refused(check, ec_key.token(issuer.claims()))


def test_audience_rules(issuer, rsa_key):
    issuer.keys = [rsa_key]
    check = make_check(issuer, audience=("app-1", "app-2"))
    ok = lambda **c: outcome(check, request(headers=bearer(rsa_key.token(issuer.claims(**c))))).allowed
    assert ok(aud=["other", "app-2"])
    # client_id counts only without aud (AWS: "When both are present, aud is evaluated")
    assert ok(aud=None, client_id="app-1")
    assert not ok(aud="other", client_id="app-1")
    assert not ok(aud=None, client_id=None)


def test_scopes(issuer, rsa_key):
    issuer.keys = [rsa_key]
    check = make_check(issuer, scopes=("pets/write", "admin"))
    assert outcome(check, request(headers=bearer(rsa_key.token(issuer.claims(scp=["admin"]))))).allowed
    result = outcome(check, request(headers=bearer(rsa_key.token(issuer.claims(scope="pets/read")))))
    assert (result.error_type, result.message) == ("ACCESS_DENIED", "Forbidden")
    assert 'error="insufficient_scope"' in www_authenticate(result)
    assert 'scope="pets/write admin"' in www_authenticate(result)


def test_unknown_kid_refetches_once_per_interval(issuer, rsa_key):
    old, new = rsa_key, SigningKey("rsa-2", "RS256")
    issuer.keys = [old]
    check = make_check(issuer, jwks_uri=issuer.url + "/keys", interval=3600)
    assert outcome(check, request(headers=bearer(old.token(issuer.claims())))).allowed
    assert issuer.hits["/keys"] == 1
    # rotation: the issuer publishes a new key, a token signed with it arrives...
    issuer.keys = [old, new]
    token = new.token(issuer.claims())
    # ...but the first fetch was less than refetch_interval_s ago: refused without a fetch
    assert "kid is not in" in refused(check, token)
    assert issuer.hits["/keys"] == 1


def test_key_rotation_refetch(issuer, rsa_key):
    old, new = rsa_key, SigningKey("rsa-2", "RS256")
    issuer.keys = [old]
    check = make_check(issuer, jwks_uri=issuer.url + "/keys", interval=0.2)
    assert outcome(check, request(headers=bearer(old.token(issuer.claims())))).allowed
    issuer.keys = [new]         # the old key is retired
    time.sleep(0.25)
    token = new.token(issuer.claims())
    assert outcome(check, request(headers=bearer(token))).allowed
    assert issuer.hits["/keys"] == 2
    # a token with a kid nobody published: one refetch per interval, then refusals
    time.sleep(0.25)
    ghost = SigningKey("ghost", "RS256").token(issuer.claims())
    assert "kid is not in" in refused(check, ghost)
    assert "kid is not in" in refused(check, ghost)
    assert issuer.hits["/keys"] == 3
    # the retired key no longer verifies
    assert "kid is not in" in refused(check, old.token(issuer.claims()))


class Clock:
    """A monotonic clock the test moves: intervals pass without sleeping."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def default_check(issuer, clock: Clock) -> JwtCheck:
    """A check with the default refetch interval, as a route without refetch_interval_s."""
    ks = KeySet(issuer=issuer.url, jwks_uri=issuer.url + "/keys",
                http_client=HttpClient(timeout_s=2), clock=clock)
    return JwtCheck(keysets={issuer.url: ks}, audience=("my-client",))


def test_a_rotated_key_is_accepted_within_10_s_by_default(issuer, rsa_key):
    clock = Clock()
    old, new = rsa_key, SigningKey("rsa-2", "RS256")
    issuer.keys = [old]
    check = default_check(issuer, clock)
    assert outcome(check, request(headers=bearer(old.token(issuer.claims())))).allowed
    issuer.keys = [new]          # rotated: the old key retired, tokens signed with the new one
    token = new.token(issuer.claims())
    clock.now += 1
    assert "kid is not in" in refused(check, token)      # the keys were fetched 1 s ago
    assert issuer.hits["/keys"] == 1
    clock.now += 9
    assert outcome(check, request(headers=bearer(token))).allowed
    assert issuer.hits["/keys"] == 2


def test_made_up_kids_cost_one_fetch_per_interval_and_a_missed_kid_is_remembered(issuer, rsa_key):
    clock = Clock()
    issuer.keys = [rsa_key]
    check = default_check(issuer, clock)
    assert outcome(check, request(headers=bearer(rsa_key.token(issuer.claims())))).allowed
    ghosts = [SigningKey(f"ghost-{i}", "ES256") for i in range(3)]
    clock.now += 10
    for i in range(30):          # a flood of kids: one refetch, whatever the kids
        assert "kid is not in" in refused(check, ghosts[i % 3].token(issuer.claims()))
    assert issuer.hits["/keys"] == 2
    clock.now += 10
    # ghost-0 was missed by a refetch 10 s ago: refused from memory, no fetch...
    assert "kid is not in" in refused(check, ghosts[0].token(issuer.claims()))
    assert issuer.hits["/keys"] == 2
    # ...while a kid nobody asked for yet refetches, and brings a key published meanwhile
    late = SigningKey("late", "RS256")
    issuer.keys = [rsa_key, late]
    assert outcome(check, request(headers=bearer(late.token(issuer.claims())))).allowed
    assert issuer.hits["/keys"] == 3
    clock.now += 60               # the memory of a missed kid lasts 60 s
    assert "kid is not in" in refused(check, ghosts[0].token(issuer.claims()))
    assert issuer.hits["/keys"] == 4
    # the memory is bounded: a flood of distinct kids recycles it
    ks = check.keysets[issuer.url]
    for i in range(KeySet.UNKNOWN_KIDS_MAX + 10):
        ks.remember_unknown(f"k{i}")
    assert len(ks._unknown) == KeySet.UNKNOWN_KIDS_MAX and ks.known_unknown("k1033")


def test_unreachable_issuer_is_a_configuration_error(issuer, rsa_key):
    issuer.fail = True
    check = make_check(issuer, jwks_uri=issuer.url + "/keys", interval=3600)
    token = rsa_key.token(issuer.claims())
    result = outcome(check, request(headers=bearer(token)))
    assert (result.allowed, result.error_type) == (False, "AUTHORIZER_CONFIGURATION_ERROR")
    # no hammering: within the interval the failure answers without another fetch
    assert check.check(request(headers=bearer(token))).error_type == "AUTHORIZER_CONFIGURATION_ERROR"
    assert issuer.hits["/keys"] == 1


def test_concurrent_first_requests_share_one_fetch(issuer, rsa_key):
    import asyncio
    from .conftest import run
    issuer.keys = [rsa_key]
    check = make_check(issuer, jwks_uri=issuer.url + "/keys")
    token = rsa_key.token(issuer.claims())

    async def many():
        pending = [check.check(request(headers=bearer(token))) for _ in range(20)]
        return await asyncio.gather(*pending)
    assert all(r.allowed for r in run(many()))
    assert issuer.hits["/keys"] == 1


def test_keys_from_files(tmp_path, rsa_key, ec_key):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [rsa_key.jwk, {"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}))
    pem = tmp_path / "key.pem"
    pem.write_bytes(ec_key.public_pem())
    iss = "https://issuer.example"
    now = int(time.time())
    claims = {"iss": iss, "aud": "a", "exp": now + 60, "sub": "s"}
    for path, key in ((jwks, rsa_key), (pem, ec_key)):
        check = JwtCheck(keysets={iss: KeySet(issuer=iss, jwks_file=str(path))}, audience=("a",))
        result = check.check(request(headers=bearer(key.token(claims))))
        assert isinstance(result, AuthResult) and result.allowed
    # the oct key in the file was skipped: an HS256 token under its kid is refused
    check = JwtCheck(keysets={iss: KeySet(issuer=iss, jwks_file=str(jwks))}, audience=("a",),
                     algorithms=("RS256",))
    hs = pyjwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": "h"})
    assert not check.check(request(headers=bearer(hs))).allowed


def test_cognito_token_use(issuer, rsa_key):
    issuer.keys = [rsa_key]
    ks = KeySet(issuer=issuer.url, jwks_uri=issuer.url + "/keys", http_client=HttpClient())
    id_check = JwtCheck(keysets={issuer.url: ks}, cognito=True, http_api=False)
    scoped = JwtCheck(keysets={issuer.url: ks}, cognito=True, http_api=False, scopes=("pets/read",))
    id_token = rsa_key.token(issuer.claims(token_use="id", aud="client-1", email="a@b.c"))
    access = rsa_key.token(issuer.claims(aud=None, token_use="access", client_id="client-1",
                                         scope="pets/read"))
    assert outcome(id_check, request(headers=bearer(id_token))).allowed
    assert outcome(scoped, request(headers=bearer(access))).allowed
    # REST's Cognito authorizer: an ID token without method scopes, an access token with
    for check, token in ((id_check, access), (scoped, id_token)):
        result = outcome(check, request(headers=bearer(token)))
        assert (result.error_type, result.message) == ("UNAUTHORIZED", "Unauthorized")
        assert result.headers == []      # REST APIs send no www-authenticate
    no_scope = rsa_key.token(issuer.claims(aud=None, token_use="access", scope="other"))
    assert outcome(scoped, request(headers=bearer(no_scope))).error_type == "UNAUTHORIZED"
