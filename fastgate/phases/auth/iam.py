"""AWS_IAM authorization: SigV4-signed requests checked against fastgate's credentials.

The signature itself is fastgate.phases.auth.sigv4's job (header and presigned forms, AWS's
messages).  This module adds what the data plane needs around it:

* credentials with their principal: ``access key id -> (secret, principal ARN)``,
  from YAML or from a CSV file (``fastgate serve --iam-credentials FILE``);
* replay protection, which AWS does not have: a signature accepted once is refused
  for as long as it could still verify (15 minutes of clock skew around its
  X-Amz-Date; a presigned URL until it expires), so a captured request cannot be
  sent again.  The cache is per gateway worker and bounded;
* AWS's answers: unsigned -> 403 MISSING_AUTHENTICATION_TOKEN, unknown key -> 403
  ACCESS_DENIED "The security token included in the request is invalid.", stale
  X-Amz-Date -> 403 EXPIRED_TOKEN "Signature expired: ...", any other mismatch ->
  403 INVALID_SIGNATURE with AWS's text;
* the caller's identity for ``$context.identity``.
"""

from __future__ import annotations

import calendar
import collections
import csv
import time
from typing import Mapping

from fastgate.phases.auth import sigv4
from fastgate.phases.auth import AuthRequest, AuthResult, Check, deny

__all__ = ["Credential", "IamCheck", "ReplayCache", "load_credentials_csv", "CredentialsError"]

REPLAY_CAPACITY = 100_000      # signatures remembered per worker (about 10 MiB)
_CSV_COLUMNS = ["access_key_id", "secret_access_key", "principal_arn"]


class CredentialsError(ValueError):
    """A credentials file that cannot be used; the message names file and line."""


class Credential:
    __slots__ = ("secret", "principal_arn", "account_id")

    def __init__(self, secret: str, principal_arn: str):
        self.secret = secret
        self.principal_arn = principal_arn
        parts = principal_arn.split(":")
        self.account_id = parts[4] if len(parts) > 5 and parts[0] == "arn" else None


def _valid_arn(arn: str) -> bool:
    parts = arn.split(":", 5)
    return len(parts) == 6 and parts[0] == "arn" and parts[2] in ("iam", "sts") and bool(parts[5])


def load_credentials_csv(path: str) -> dict[str, tuple[str, str]]:
    """``access_key_id,secret_access_key,principal_arn`` rows (that header first) as
    ``{access key id: (secret, principal ARN)}``."""
    out: dict[str, tuple[str, str]] = {}
    try:
        f = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise CredentialsError(f"{path}: {exc.strerror}") from None
    with f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None or [h.strip() for h in header] != _CSV_COLUMNS:
            raise CredentialsError(f"{path}:1: the header must be {','.join(_CSV_COLUMNS)}")
        for row in rows:
            line = rows.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 3:
                raise CredentialsError(f"{path}:{line}: expected 3 columns, found {len(row)}")
            key, secret, arn = (c.strip() for c in row)
            if not key or not secret:
                raise CredentialsError(f"{path}:{line}: empty access key id or secret")
            if not _valid_arn(arn):
                raise CredentialsError(f"{path}:{line}: {arn!r} is not an IAM principal ARN "
                                       "(arn:aws:iam::ACCOUNT:user/NAME)")
            if key in out:
                raise CredentialsError(f"{path}:{line}: access key id {key} appears twice")
            out[key] = (secret, arn)
    return out


class ReplayCache:
    """Signatures seen, each until the moment it would stop verifying anyway.

    Entries expire in insertion order only roughly (a presigned URL may outlive later
    header-signed requests), so expiry sweeps the oldest while they are due and the
    capacity bound evicts the oldest outright: past REPLAY_CAPACITY live signatures a
    very old one could be replayed, a trade for bounded memory."""

    def __init__(self, capacity: int = REPLAY_CAPACITY, clock=time.time):
        self.capacity = capacity
        self.clock = clock
        self._until: dict[str, float] = {}
        self._order: collections.deque[str] = collections.deque()

    def __len__(self) -> int:
        return len(self._until)

    def seen(self, signature: str, valid_until: float) -> bool:
        """True when ``signature`` was seen and is still live; otherwise remember it."""
        now = self.clock()
        order, until = self._order, self._until
        while order and until.get(order[0], 0.0) <= now:
            until.pop(order.popleft(), None)
        expiry = until.get(signature)
        if expiry is not None and expiry > now:
            return True
        while len(until) >= self.capacity:
            until.pop(order.popleft(), None)
        until[signature] = valid_until
        order.append(signature)
        return False


def _error_result(err: sigv4.SigV4Error) -> AuthResult:
    code = err.code
    if code == "MissingAuthenticationTokenException":
        return deny("MISSING_AUTHENTICATION_TOKEN", err.reason)
    if code == "UnrecognizedClientException":
        # AWS answers an unknown access key with AccessDeniedException
        return deny("ACCESS_DENIED", err.reason)
    if err.reason.startswith("Signature expired"):
        return deny("EXPIRED_TOKEN", err.reason)
    if code == "IncompleteSignatureException":
        return deny("INVALID_SIGNATURE", err.reason, error_code=code)
    return deny("INVALID_SIGNATURE", err.reason)


class IamCheck(Check):
    """AWS_IAM on one method: a valid, unreplayed SigV4 signature for service
    execute-api in the API's region, by a key of ``credentials``."""

    kind = "iam"
    needs_body = True        # the payload hash covers the body

    def __init__(self, credentials: Mapping[str, tuple[str, str]], replay: ReplayCache | None,
                 *, check_region: bool = True, clock=time.time):
        self.principals = {key: Credential(secret, arn) for key, (secret, arn) in credentials.items()}
        self.secrets = {key: c.secret for key, c in self.principals.items()}
        self.replay = replay
        self.check_region = check_region
        self.clock = clock

    def check(self, req: AuthRequest) -> AuthResult:
        headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in req.headers]
        now = self.clock()
        try:
            principal = sigv4.verify(
                req.method, req.path, req.query.decode("latin-1"), headers, req.body or b"",
                self.secrets, service="execute-api",
                region=req.region if self.check_region else None, now=now)
        except sigv4.SigV4Error as err:
            return _error_result(err)
        if self.replay is not None:
            signed_at = calendar.timegm(time.strptime(principal.amz_date, "%Y%m%dT%H%M%SZ"))
            if principal.presigned:
                expires = dict(sigv4.parse_query(req.query.decode("latin-1"))).get("X-Amz-Expires")
                valid_until = signed_at + int(expires)
            else:
                valid_until = signed_at + sigv4.MAX_SKEW_S
            if self.replay.seen(principal.signature, valid_until):
                return deny("INVALID_SIGNATURE", "Signature has already been used. "
                            "fastgate refuses replayed SigV4 requests; sign each request anew.")
        cred = self.principals[principal.access_key_id]
        return AuthResult(True, principal_id=cred.principal_arn, identity={
            "accessKey": principal.access_key_id,
            "accountId": cred.account_id,
            "caller": principal.access_key_id,
            "user": principal.access_key_id,
            "userArn": cred.principal_arn,
        })
