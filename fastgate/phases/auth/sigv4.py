"""Server-side AWS Signature Version 4 verification, in plain Python.

`verify` checks a request signed the way AWS clients sign them (`check_head` does the
part that needs no body, so a server can refuse before it reads one):
either an `Authorization: AWS4-HMAC-SHA256 ...` header or a presigned URL
(`X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=...&X-Amz-Signature=...`).
It rebuilds the canonical request exactly as AWS specifies it for every service
but S3, derives the signing key from the secret, and compares signatures in
constant time. It knows nothing of the control API, so the AWS_IAM authorizer
of the data plane can reuse it (adding replay protection there).

Spec: https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
Errors carry AWS's own messages and error types, so botocore and the AWS CLI
show users what AWS would show them.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW_S = 15 * 60            # AWS accepts X-Amz-Date up to 15 minutes off its clock
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600   # the longest X-Amz-Expires AWS allows (7 days)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

MISMATCH = ("The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. "
            "Consult the service documentation for details.")

_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")


class SigV4Error(Exception):
    """A request that fails authentication: AWS's message, and its error type (the
    x-amzn-ErrorType header). AWS answers every one of them with 403."""

    status = 403

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Principal:
    """Who signed a request, and the scope they signed it for."""
    access_key_id: str
    date: str                   # YYYYMMDD of the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    amz_date: str               # the request's X-Amz-Date, YYYYMMDDTHHMMSSZ
    signature: str              # hex; a replay cache can key on it
    presigned: bool


def _incomplete(msg: str) -> SigV4Error:
    return SigV4Error(msg, "IncompleteSignatureException")


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def canonical_uri(raw_path: str) -> str:
    """The path as sent (still percent-encoded), dot segments and empty segments removed,
    then percent-encoded once more: every service but S3 double-encodes."""
    segments = []
    for seg in raw_path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if segments:
                segments.pop()
            continue
        segments.append(seg)
    path = "/" + "/".join(segments)
    if raw_path.endswith("/") and segments:
        path += "/"
    return quote(path, safe="/~")


def _uri_encode(s: str) -> str:
    return quote(s, safe="-_.~")


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Query pairs, percent-decoded. A '+' stays a '+': AWS signers encode spaces as %20."""
    pairs = []
    if raw_query:
        for part in raw_query.split("&"):
            if not part:
                continue
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    # sorted by encoded key, then by encoded value for repeated keys
    encoded = sorted((_uri_encode(k), _uri_encode(v)) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _trimall(value: str) -> str:
    return " ".join(value.split())


def canonical_request(method: str, raw_path: str, query_pairs: Iterable[tuple[str, str]],
                      headers: list[tuple[str, str]], signed_headers: tuple[str, ...],
                      payload_hash: str) -> str:
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name.lower(), []).append(_trimall(value))
    lines = [f"{name}:{','.join(values.get(name, ()))}\n" for name in signed_headers]
    return "\n".join([method.upper(), canonical_uri(raw_path), canonical_query(query_pairs),
                      "".join(lines), ";".join(signed_headers), payload_hash])


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])


def _parse_authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"Unsupported authorization type: {algorithm or value!r}. "
                          f"Only {ALGORITHM} is supported.")
    params = {}
    # AWS accepts the components separated by commas, with or without spaces
    for item in rest.split(","):
        key, sep, val = item.strip().partition("=")
        if sep:
            params[key.strip()] = val.strip()
    missing = [f"Authorization header requires '{p}' parameter."
               for p in ("Credential", "Signature", "SignedHeaders") if p not in params]
    if missing:
        raise _incomplete(" ".join(missing) + f" Authorization={value}")
    return params


def _epoch(amz_date: str) -> int:
    return calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))


def _fmt(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def verify(method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes,
           credentials: Mapping[str, str], *, service: str | None = None,
           region: str | None = None, now: float | None = None) -> Principal:
    """Check a SigV4-signed request; the Principal on success, SigV4Error otherwise.

    path and query are exactly as received (percent-encoded, no '?'); headers are every
    (name, value) of the request in order; credentials maps access key id -> secret.
    service/region, when given, must be the ones in the credential scope.
    """
    return check_head(method, path, query, headers, credentials, service=service,
                      region=region, now=now).verify(body)


@dataclass(frozen=True)
class SignedHead:
    """A request whose head passed every check but the signature's: signed by a known
    access key, for the right scope, within the clock skew. The signature covers the
    body's hash, so it is checked with the body (verify), or before the body when the
    client declared the hash in a signed x-amz-content-sha256 (verify_declared)."""
    method: str
    path: str
    pairs: list
    headers: list
    principal: Principal
    secret: str = field(repr=False)
    declared: str | None = None     # x-amz-content-sha256 as sent

    @property
    def declares_hash(self) -> bool:
        """The payload hash is in the head (64 hex digits): the signature can be checked
        before the body is read."""
        d = self.declared
        return d is not None and len(d) == 64 and all(c in "0123456789abcdef" for c in d)

    def verify_declared(self) -> Principal:
        """The signature over the declared payload hash, before the body; verify(body)
        must still follow (it checks the body against the hash)."""
        self._check_signature(self.declared)
        return self.principal

    def verify(self, body: bytes) -> Principal:
        body_hash = hashlib.sha256(body).hexdigest()
        if self.declared is not None:
            payload_hash = self.declared
            # UNSIGNED-PAYLOAD signs no body: accept it only where there is none to protect
            if payload_hash != body_hash and not (payload_hash == UNSIGNED_PAYLOAD and not body):
                raise SigV4Error("The provided 'x-amz-content-sha256' header does not match what "
                                 "was computed.", "InvalidSignatureException")
        else:
            payload_hash = body_hash
        self._check_signature(payload_hash)
        return self.principal

    def _check_signature(self, payload_hash: str) -> None:
        p = self.principal
        creq = canonical_request(self.method, self.path, self.pairs, self.headers,
                                 p.signed_headers, payload_hash)
        scope = f"{p.date}/{p.region}/{p.service}/aws4_request"
        sts = string_to_sign(p.amz_date, scope, creq)
        expected = hmac.new(signing_key(self.secret, p.date, p.region, p.service), sts.encode(),
                            hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected.encode(), p.signature.encode()):
            # AWS appends what it computed; neither string holds a secret
            raise SigV4Error(f"{MISMATCH}\n\nThe Canonical String for this request should have been\n"
                             f"'{creq}'\n\nThe String-to-Sign should have been\n'{sts}'\n",
                             "InvalidSignatureException")


def check_head(method: str, path: str, query: str, headers: list[tuple[str, str]],
               credentials: Mapping[str, str], *, service: str | None = None,
               region: str | None = None, now: float | None = None) -> SignedHead:
    """Everything verify() checks that needs no body: the Authorization header or presigned
    query is present and well formed, the access key is known, the scope and date are
    right. A server calls it before reading a body, so unsigned or foreign requests cost
    it no memory; SigV4Error as verify() raises it."""
    now = time.time() if now is None else now
    pairs = parse_query(query)
    auth_header = [v for n, v in headers if n.lower() == "authorization"]
    query_keys = {k for k, _ in pairs}
    presigned = not auth_header and "X-Amz-Algorithm" in query_keys
    if auth_header:
        params = _parse_authorization(auth_header[0])
        credential, signature = params["Credential"], params["Signature"]
        signed = params["SignedHeaders"]
        dates = [v for n, v in headers if n.lower() == "x-amz-date"]
        amz_date = dates[0].strip() if dates else ""
        if not amz_date:
            raise _incomplete("Authorization header requires existence of either a 'X-Amz-Date' "
                              f"or a 'Date' header. Authorization={auth_header[0]}")
        expires = None
    elif presigned:
        q = dict(pairs)
        if q["X-Amz-Algorithm"] != ALGORITHM:
            raise _incomplete(f"Unsupported algorithm: {q['X-Amz-Algorithm']!r}. "
                              f"Only {ALGORITHM} is supported.")
        missing = [p for p in ("X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders",
                               "X-Amz-Date") if p not in q]
        if missing:
            raise _incomplete(" ".join(f"AWS query-string parameters must include '{p}'."
                                       for p in missing) + " Re-examine the query-string parameters.")
        credential, signature = q["X-Amz-Credential"], q["X-Amz-Signature"]
        signed, amz_date = q["X-Amz-SignedHeaders"], q["X-Amz-Date"]
        expires_s = q.get("X-Amz-Expires", "")
        if not expires_s.isdigit() or not 1 <= int(expires_s) <= MAX_PRESIGN_EXPIRES_S:
            raise _incomplete("X-Amz-Expires must be a whole number of seconds between 1 and "
                              f"{MAX_PRESIGN_EXPIRES_S}.")
        expires = int(expires_s)
        pairs = [(k, v) for k, v in pairs if k != "X-Amz-Signature"]
    else:
        raise SigV4Error("Missing Authentication Token", "MissingAuthenticationTokenException")

    scope_parts = credential.split("/")
    if len(scope_parts) != 5 or scope_parts[4] != "aws4_request" or not scope_parts[0]:
        raise _incomplete("Credential must have the form <access key id>/<YYYYMMDD>/<region>/"
                          f"<service>/aws4_request. Credential={credential}")
    key_id, date, scope_region, scope_service, _ = scope_parts
    if not _AMZ_DATE.match(amz_date):
        raise _incomplete(f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'. "
                          "See http://en.wikipedia.org/wiki/ISO_8601")
    if date != amz_date[:8]:
        raise SigV4Error("Date in Credential scope does not match YYYYMMDD from ISO-8601 version "
                         f"of date from HTTP: '{date}' != '{amz_date[:8]}', from '{amz_date}'.",
                         "InvalidSignatureException")
    if service is not None and scope_service != service:
        raise SigV4Error(f"Credential should be scoped to correct service: '{service}'. ",
                         "InvalidSignatureException")
    if not scope_region or (region is not None and scope_region != region):
        raise SigV4Error(f"Credential should be scoped to a valid region, not '{scope_region}'. ",
                         "InvalidSignatureException")
    signed_headers = tuple(signed.split(";"))
    if list(signed_headers) != sorted(set(signed_headers)) or any(
            h != h.lower() or not h for h in signed_headers):
        raise _incomplete(f"Signed headers must be lowercase, sorted and unique: '{signed}'.")
    if "host" not in signed_headers and ":authority" not in signed_headers:
        raise _incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")

    request_time = _epoch(amz_date)
    if expires is None:
        if request_time < now - MAX_SKEW_S:
            raise SigV4Error(f"Signature expired: {amz_date} is now earlier than "
                             f"{_fmt(now - MAX_SKEW_S)} ({_fmt(now)} - 15 min.)",
                             "InvalidSignatureException")
        if request_time > now + MAX_SKEW_S:
            raise SigV4Error(f"Signature not yet current: {amz_date} is still later than "
                             f"{_fmt(now + MAX_SKEW_S)} ({_fmt(now)} + 15 min.)",
                             "InvalidSignatureException")
    else:
        if request_time > now + MAX_SKEW_S:
            raise SigV4Error(f"Signature not yet current: {amz_date} is still later than "
                             f"{_fmt(now + MAX_SKEW_S)} ({_fmt(now)} + 15 min.)",
                             "InvalidSignatureException")
        if now > request_time + expires:
            raise SigV4Error(f"Signature expired: {amz_date} is now earlier than "
                             f"{_fmt(now - expires)} ({_fmt(now)} - {expires} sec.)",
                             "InvalidSignatureException")

    secret = credentials.get(key_id)
    if secret is None:
        raise SigV4Error("The security token included in the request is invalid.",
                         "UnrecognizedClientException")

    declared = [v.strip() for n, v in headers if n.lower() == "x-amz-content-sha256"]
    return SignedHead(method, path, pairs, headers,
                      Principal(key_id, date, scope_region, scope_service, signed_headers,
                                amz_date, signature, presigned),
                      secret, declared[0] if declared else None)
