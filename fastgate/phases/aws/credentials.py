"""The credentials an AWS integration signs with: botocore's credential chain (environment,
shared config and credentials files, profiles, SSO, container and instance roles), a role
named by an integration's ``credentials`` assumed through STS AssumeRole (or mapped to a
named profile by the config), cached until shortly before they expire.

botocore resolves and refreshes credentials with blocking calls (files, STS over its own
HTTP client), so every resolution runs in the loop's thread pool, one at a time per
identity; requests meanwhile use the credentials still valid, or wait for the first ones.
"""

from __future__ import annotations

import asyncio
import re
import time

import botocore.session
from botocore.credentials import ReadOnlyCredentials

__all__ = ["CredentialError", "Identity", "IdentityCache", "ROLE_ARN"]

ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
# An integration whose credentials are arn:aws:iam::*:user/* passes the caller's own identity
# on AWS (AWS_IAM methods only); the gateway cannot sign as the caller without its secret.
CALLER = re.compile(r"^arn:aws[a-z-]*:iam::\*:user/\*$")
REFRESH_AHEAD_S = 300     # renew this long before expiry (botocore's advisory window: 15 min)
MIN_LEFT_S = 30           # below this, a request waits for the renewal rather than use them
SESSION_DURATION_S = 3600
RETRY_AFTER_S = 1.0       # a failed resolution answers requests for this long before the next try


class CredentialError(Exception):
    """No credentials could be had (the cause is for the execution log, never the client)."""


class Identity:
    """One identity's credentials: a profile's chain, or a role assumed with another's."""

    def __init__(self, fetch, label: str):
        self._fetch = fetch                   # blocking () -> (ReadOnlyCredentials, expiry epoch s | None)
        self.label = label
        self.creds: ReadOnlyCredentials | None = None
        self.expires: float | None = None
        self._pending: asyncio.Future | None = None
        self._failure: tuple[float, str] | None = None   # (monotonic s, cause) of the last failure

    def _fresh(self, margin: float) -> bool:
        return self.creds is not None and (self.expires is None or self.expires - time.time() > margin)

    async def get(self) -> ReadOnlyCredentials:
        if self._fresh(REFRESH_AHEAD_S):
            return self.creds
        pending = self._pending
        if pending is None:
            if self._failure is not None and time.monotonic() - self._failure[0] < RETRY_AFTER_S:
                # a broken chain or an unreachable STS is not asked again per request
                raise CredentialError(self._failure[1])
            pending = self._pending = asyncio.get_running_loop().run_in_executor(None, self._fetch)
            pending.add_done_callback(self._landed)
        if self._fresh(MIN_LEFT_S):
            return self.creds                 # still good: the renewal lands meanwhile
        try:
            creds, _ = await asyncio.shield(pending)
        except CredentialError:
            raise
        except Exception as e:
            raise CredentialError(f"{self.label}: {e}") from None
        return creds

    def _landed(self, fut: asyncio.Future) -> None:
        self._pending = None
        if fut.cancelled():
            return
        err = fut.exception()
        if err is None:
            self.creds, self.expires = fut.result()
            self._failure = None
        else:
            self._failure = (time.monotonic(), str(err) if isinstance(err, CredentialError)
                             else f"{self.label}: {err}")


def _frozen(creds) -> tuple[ReadOnlyCredentials, float | None]:
    frozen = creds.get_frozen_credentials()
    expiry = getattr(creds, "_expiry_time", None)
    return frozen, expiry.timestamp() if expiry is not None else None


class IdentityCache:
    """Per worker: the gateway's own identity (a profile or the default chain), a named
    profile per mapped role, an assumed session per other role ARN."""

    def __init__(self, *, profile: str | None, roles: dict, assume_roles: bool,
                 sts_endpoint, region):
        self.profile = profile
        self.roles = dict(roles)
        self.assume_roles = assume_roles
        self.sts_endpoint = sts_endpoint      # () -> the STS endpoint URL (fastgate's endpoint rules)
        self.region = region                  # () -> the gateway's region
        self.identities: dict[str, Identity] = {}

    def identity(self, role_arn: str | None) -> Identity:
        key = role_arn or ""
        ident = self.identities.get(key)
        if ident is None:
            ident = self.identities[key] = self._make(role_arn)
        return ident

    async def get(self, role_arn: str | None) -> ReadOnlyCredentials:
        return await self.identity(role_arn).get()

    def _make(self, role_arn: str | None) -> Identity:
        if role_arn and role_arn in self.roles:
            name = self.roles[role_arn]
            return Identity(lambda: self._profile_creds(name), f"profile {name!r} (for {role_arn})")
        if role_arn and self.assume_roles and ROLE_ARN.match(role_arn):
            return Identity(lambda: self._assume(role_arn), f"AssumeRole {role_arn}")
        label = f"profile {self.profile!r}" if self.profile else "the default credential chain"
        return Identity(lambda: self._profile_creds(self.profile), label)

    @staticmethod
    def _profile_creds(profile: str | None):
        try:
            session = botocore.session.Session(profile=profile)
            creds = session.get_credentials()
        except Exception as e:     # ProfileNotFound, a broken config file...
            raise CredentialError(f"profile {profile!r}: {e}") from None
        if creds is None:
            raise CredentialError(f"no credentials in {'profile ' + repr(profile) if profile else 'the default chain'} "
                                  "(environment, shared credentials and config files, instance role)")
        return _frozen(creds)

    def _assume(self, role_arn: str):
        source, _ = self._profile_creds(self.profile)
        session = botocore.session.Session()
        try:
            sts = session.create_client(
                "sts", region_name=self.region(), endpoint_url=self.sts_endpoint(),
                aws_access_key_id=source.access_key, aws_secret_access_key=source.secret_key,
                aws_session_token=source.token)
            out = sts.assume_role(RoleArn=role_arn, RoleSessionName="fastgate-apigateway",
                                  DurationSeconds=SESSION_DURATION_S)["Credentials"]
        except Exception as e:
            raise CredentialError(f"AssumeRole {role_arn}: {e}") from None
        expiry = out["Expiration"]
        return (ReadOnlyCredentials(out["AccessKeyId"], out["SecretAccessKey"], out.get("SessionToken")),
                expiry.timestamp() if hasattr(expiry, "timestamp") else None)
