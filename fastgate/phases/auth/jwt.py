"""JWT authorizers: HTTP APIs' JWT authorizer and REST APIs' Cognito user-pool authorizer.

A token is accepted when (in this order, the first failure answering):
  * it is a JWS whose header names an allowed asymmetric algorithm (never ``none``,
    never HMAC: a public key must not double as an HMAC secret) and a ``kid`` of
    the issuer's key set (fetched from the JWKS URL or the issuer's OpenID discovery
    document, or read from a file), the algorithm fitting that key's type;
  * its signature verifies (PyJWT), ``exp`` is present and not past, ``nbf`` and
    ``iat`` are not in the future (all with ``leeway_s``);
  * ``iss`` is the issuer (one of them: a Cognito authorizer may name several pools);
  * the audience matches: HTTP APIs check ``aud``, or ``client_id`` when there is no
    ``aud`` (AWS's documented rule); a Cognito authorizer checks ``token_use``: an ID
    token when the method has no scopes, an access token when it has;
  * with route scopes, ``scope`` (space-separated) or ``scp`` holds at least one.

Key sets are shared by every route of an issuer and survive reloads (see fastgate.phases.auth.caches).
An unknown ``kid`` refetches the set, at most once per ``refetch_interval_s`` (10 s) whatever
the kids, so a key rotation is seen within seconds and a flood of made-up kids costs the
issuer one fetch per interval; a kid still unknown after a refetch is refused from memory
for ``unknown_kid_ttl_s`` without asking again. Until the first fetch completes requests
wait for it, after that verification is synchronous.
https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html
https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-integrate-with-cognito.html
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time

import orjson

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

from fastgate.phases.auth import AuthRequest, AuthResult, Check, deny
from fastgate.phases.auth.http import HttpError

__all__ = ["KeySet", "JwtCheck", "DEFAULT_ALGORITHMS", "claim_strings", "token_from"]

DEFAULT_ALGORITHMS = ("RS256", "ES256")
_ASYMMETRIC = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384", "ES512", "ES256K"),
    "OKP": ("EdDSA",),
}
_EC_CURVE_ALG = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}
_PEM_CURVE_ALG = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512", "secp256k1": "ES256K"}


def _key_algorithms(jwk: dict) -> tuple[str, ...]:
    """The algorithms a JWK may verify: its own ``alg`` if it names one, else every
    algorithm of its key type (EC: of its curve).  HMAC ("oct") keys: none."""
    kty = jwk.get("kty")
    if kty not in _ASYMMETRIC:
        return ()
    if kty == "EC":
        family = (_EC_CURVE_ALG.get(jwk.get("crv")),)
    else:
        family = _ASYMMETRIC[kty]
    alg = jwk.get("alg")
    if alg:
        return (alg,) if alg in family else ()
    return tuple(a for a in family if a)


def _load_jwk(jwk: dict):
    kty = jwk["kty"]
    loader = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}[kty]
    return loader.from_jwk(jwk)


class KeySet:
    """An issuer's public keys by ``kid``, from a JWKS URL, from OpenID discovery, or
    from a file (a JWKS document, or one PEM public key that serves any kid)."""

    UNKNOWN_KIDS_MAX = 1024       # kids remembered as unknown; a flood of new ones recycles them

    def __init__(self, *, issuer: str, jwks_uri: str | None = None, jwks_file: str | None = None,
                 http_client=None, refetch_interval_s: float = 10.0,
                 unknown_kid_ttl_s: float = 60.0, clock=time.monotonic):
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.jwks_file = jwks_file
        self.http = http_client
        self.refetch_interval_s = refetch_interval_s
        self.unknown_kid_ttl_s = unknown_kid_ttl_s
        self.clock = clock
        self._unknown: dict = {}          # kid -> when a refetch did not bring it (negative cache)
        self.keys: dict = {}              # kid -> (public key, allowed algorithms)
        self.loaded = False
        self.fetches = 0                  # completed fetch attempts (tests and stats)
        self.error: str | None = None     # why the last fetch failed
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Future | None = None
        if jwks_file is not None:
            self._load_file()

    def _install(self, document) -> None:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("a JWKS document is an object with a 'keys' list")
        keys = {}
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            algs = _key_algorithms(jwk)
            if not algs:
                continue
            try:
                keys[jwk.get("kid")] = (_load_jwk(jwk), algs)
            except (ValueError, KeyError, TypeError, pyjwt.InvalidKeyError):
                continue     # one bad key must not take the issuer's others down
        self.keys = keys
        self.loaded = True
        self.error = None

    def _load_file(self) -> None:
        self._last_attempt = self.clock()
        self.fetches += 1
        with open(self.jwks_file, "rb") as f:
            data = f.read()
        if data.lstrip().startswith(b"-----BEGIN"):
            key = load_pem_public_key(data)
            if isinstance(key, rsa.RSAPublicKey):
                family = _ASYMMETRIC["RSA"]
            elif isinstance(key, ec.EllipticCurvePublicKey):
                family = (_PEM_CURVE_ALG.get(key.curve.name),)
            elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
                family = _ASYMMETRIC["OKP"]
            else:
                family = (None,)
            if family == (None,):
                raise ValueError(f"{self.jwks_file}: not an RSA, EC or EdDSA public key")
            self.keys = {None: (key, family)}
            self.loaded = True
            self.error = None
        else:
            self._install(json.loads(data))

    def lookup(self, kid):
        """(key, algorithms) for a kid, or None.  A token without kid may use a set's
        only key (a PEM file; a JWKS of one key without kid)."""
        entry = self.keys.get(kid)
        if entry is None and None in self.keys and len(self.keys) == 1:
            entry = self.keys[None]
        return entry

    @property
    def fetching(self) -> bool:
        return self._inflight is not None

    def may_refetch(self) -> bool:
        return self.clock() - self._last_attempt >= self.refetch_interval_s

    def known_unknown(self, kid) -> bool:
        """A refetch less than unknown_kid_ttl_s ago did not bring this kid: refuse it
        without asking the issuer again (another unknown kid may still refetch)."""
        since = self._unknown.get(kid)
        if since is None:
            return False
        if self.clock() - since < self.unknown_kid_ttl_s:
            return True
        del self._unknown[kid]
        return False

    def remember_unknown(self, kid) -> None:
        if len(self._unknown) >= self.UNKNOWN_KIDS_MAX:
            del self._unknown[next(iter(self._unknown))]     # the oldest
        self._unknown[kid] = self.clock()

    async def refresh(self) -> None:
        """Fetch the key set once; concurrent callers share the one fetch."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
            return
        loop = asyncio.get_running_loop()
        self._inflight = loop.create_future()
        self._last_attempt = self.clock()
        try:
            if self.jwks_file is not None:
                self._load_file()
            else:
                uri = self.jwks_uri
                if uri is None:
                    discovery = await self.http.get_json(
                        self.issuer.rstrip("/") + "/.well-known/openid-configuration")
                    uri = discovery.get("jwks_uri") if isinstance(discovery, dict) else None
                    if not isinstance(uri, str):
                        raise ValueError("the discovery document has no jwks_uri")
                self._install(await self.http.get_json(uri))
        except (HttpError, ValueError, OSError) as exc:
            self.error = str(exc)
        finally:
            self.fetches += 1
            fut, self._inflight = self._inflight, None
            fut.set_result(None)


def claim_strings(claims: dict) -> dict[str, str]:
    """Claims as API Gateway hands them to mappings and integrations: every value a
    string; numbers and booleans in JSON spelling, arrays as "[a b c]"."""
    out = {}
    for name, value in claims.items():
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list):
            out[name] = "[" + " ".join(str(v) for v in value) + "]"
        elif isinstance(value, dict):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = str(value)
    return out


def token_from(value: bytes | None) -> str | None:
    """The token in an identity source's value; an optional "Bearer " prefix is dropped."""
    if value is None:
        return None
    text = value.decode("latin-1").strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    return text or None


def _token_scopes(claims: dict) -> list[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, str):
        return scp.split()
    if isinstance(scp, list):
        return [str(s) for s in scp]
    return []


_ALGORITHMS = get_default_algorithms()
_URLSAFE = str.maketrans("-_", "+/")


def _b64(segment: str) -> bytes:
    # strict base64url (RFC 7515 §2): no padding in the token, nothing outside the alphabet
    if "=" in segment or "+" in segment or "/" in segment:
        raise ValueError("not base64url")
    return base64.b64decode(segment.translate(_URLSAFE) + "=" * (-len(segment) % 4), validate=True)


class _Parsed:
    """A compact JWS split once: header, claims (unverified until _verify), signature."""

    __slots__ = ("header", "claims", "signing_input", "signature")

    def __init__(self, token: str):
        parts = token.split(".")
        if len(parts) != 3:
            raise ValueError("a JWS has three parts")
        self.header = orjson.loads(_b64(parts[0]))
        self.claims = orjson.loads(_b64(parts[1]))
        if not isinstance(self.header, dict) or not isinstance(self.claims, dict):
            raise ValueError("header and claims must be JSON objects")
        self.signing_input = (parts[0] + "." + parts[1]).encode("ascii")
        self.signature = _b64(parts[2])


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _time_problem(claims: dict, now: float, leeway: float) -> str | None:
    """RFC 7519 §4.1.4-6 with leeway: exp required and in the future, nbf and iat not ahead."""
    exp = claims.get("exp")
    if exp is None:
        return "the token does not have an exp claim"
    if not _number(exp):
        return "the token's exp is not a number"
    if exp <= now - leeway:
        return "the token has expired"
    for name in ("nbf", "iat"):
        value = claims.get(name)
        if value is not None:
            if not _number(value):
                return f"the token's {name} is not a number"
            if value > now + leeway:
                return "the token is not valid yet"
    return None


class JwtCheck(Check):
    """One method's JWT or Cognito authorizer.  ``keysets`` maps issuer -> KeySet
    (shared); the rest is this method's configuration."""

    kind = "jwt"

    def __init__(self, *, keysets: dict[str, KeySet], audience=(), scopes=(),
                 algorithms=DEFAULT_ALGORITHMS, leeway_s: float = 0.0,
                 header: str = "authorization", cognito: bool = False, http_api: bool = True,
                 clock=time.time):
        for alg in algorithms:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"algorithm {alg!r} is not allowed for JWT authorizers "
                                 "(only asymmetric signatures)")
        self.keysets = keysets
        self.audience = tuple(audience)
        self.scopes = tuple(scopes)
        self.algorithms = frozenset(algorithms)
        self.leeway_s = leeway_s
        self.header = header.lower().encode("latin-1")
        self.cognito = cognito
        self.http_api = http_api
        self.clock = clock

    # -- answers -------------------------------------------------------------------

    def _invalid(self, description: str) -> AuthResult:
        # HTTP APIs explain a refused token in www-authenticate (AWS's format: space-separated
        # parameters, the route's scopes first); REST APIs answer a bare 401.
        headers = ()
        if self.http_api:
            value = (f'Bearer scope="{" ".join(self.scopes)}" error="invalid_token" '
                     f'error_description="{description}"')
            headers = ((b"www-authenticate", value.encode("latin-1", "replace")),)
        return deny("UNAUTHORIZED", "Unauthorized", headers=headers)

    def _insufficient_scope(self) -> AuthResult:
        if not self.http_api:
            return deny("UNAUTHORIZED", "Unauthorized")
        value = (f'Bearer scope="{" ".join(self.scopes)}" error="insufficient_scope" '
                 f'error_description="expected scopes: [{" ".join(self.scopes)}]"')
        return deny("ACCESS_DENIED", "Forbidden", headers=((b"www-authenticate", value.encode()),))

    # -- the check -----------------------------------------------------------------

    def check(self, req: AuthRequest):
        value = None
        for name, v in req.headers:
            if name.lower() == self.header:
                value = v
                break
        token = token_from(value)
        if token is None:
            # no credentials at all: 401 without an error description (RFC 6750 §3.1)
            return deny("UNAUTHORIZED", "Unauthorized")
        try:
            parsed = _Parsed(token)
        except (ValueError, binascii.Error):
            return self._invalid("the token is malformed")
        alg = parsed.header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            return self._invalid(f"the token's algorithm {alg!r} is not allowed")
        issuer = parsed.claims.get("iss")
        keyset = self.keysets.get(issuer) if isinstance(issuer, str) else None
        if keyset is None:
            return self._invalid("the token does not have a valid issuer")
        kid = parsed.header.get("kid")
        entry = keyset.lookup(kid) if keyset.loaded else None
        if entry is None:
            # wait for a fetch in flight, or start one if the interval allows and a recent
            # refetch did not already miss this kid
            if keyset.fetching or keyset.may_refetch() and not (
                    keyset.loaded and keyset.known_unknown(kid)):
                return self._after_refresh(keyset, parsed, alg, kid)
            if not keyset.loaded:
                return deny("AUTHORIZER_CONFIGURATION_ERROR", None)
            return self._invalid("the token's kid is not in the issuer's key set")
        return self._verify(parsed, alg, entry)

    async def _after_refresh(self, keyset: KeySet, parsed, alg: str, kid) -> AuthResult:
        await keyset.refresh()
        if not keyset.loaded:
            # the issuer's keys could not be fetched: API Gateway's "failing to connect
            # to the authorizer"
            return deny("AUTHORIZER_CONFIGURATION_ERROR", None)
        entry = keyset.lookup(kid)
        if entry is None:
            keyset.remember_unknown(kid)
            return self._invalid("the token's kid is not in the issuer's key set")
        return self._verify(parsed, alg, entry)

    def _verify(self, parsed, alg: str, entry) -> AuthResult:
        key, key_algs = entry
        if alg not in key_algs:
            # e.g. HS256 or RS256 against an EC key: key confusion
            return self._invalid(f"the token's algorithm {alg} does not fit its key")
        # PERF: the signature is checked with PyJWT's algorithm objects on the token parsed
        # once, not with jwt.decode, which re-parses and re-validates every segment
        # character by character (bench/bench_auth.py::test_jwt_cached_key: 130 -> 38 µs for RS256).
        try:
            valid = _ALGORITHMS[alg].verify(parsed.signing_input, key, parsed.signature)
        except (ValueError, TypeError):
            valid = False
        if not valid:
            return self._invalid("the token's signature is invalid")
        claims = parsed.claims
        problem = _time_problem(claims, self.clock(), self.leeway_s)
        if problem:
            return self._invalid(problem)
        if self.cognito:
            want = "access" if self.scopes else "id"
            if claims.get("token_use") != want:
                return self._invalid(f"the token is not an {want} token")
        if self.audience and not self._audience_ok(claims):
            return self._invalid("the token does not have a valid audience")
        scopes = _token_scopes(claims)
        if self.scopes and not any(s in scopes for s in self.scopes):
            return self._insufficient_scope()
        strings = claim_strings(claims)
        return AuthResult(True, principal_id=strings.get("sub"), claims=claims,
                          context={"claims": strings, "scopes": scopes or None})

    def _audience_ok(self, claims: dict) -> bool:
        # AWS: aud when present, client_id only without aud
        if "aud" in claims:
            aud = claims["aud"]
            values = aud if isinstance(aud, list) else [aud]
        else:
            values = [claims.get("client_id")]
        return any(v in self.audience for v in values if isinstance(v, str))
