"""Whose credentials sign (fastgate/phases/aws/credentials.py): botocore's chain, a role
mapped to a named profile, a failure cached briefly and never a request off the machine."""

from __future__ import annotations

import asyncio

import pytest

from fastgate.phases.aws.credentials import CredentialError, IdentityCache


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n"
                     "[writer]\naws_access_key_id = AKIDWRITER\naws_secret_access_key = s2\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    return creds


def cache(**kw) -> IdentityCache:
    opts = dict(profile=None, roles={}, assume_roles=False, sts_endpoint=lambda: "http://127.0.0.1:9",
                region=lambda: "us-east-1")
    opts.update(kw)
    return IdentityCache(**opts)


def test_profiles_and_mapped_roles(aws_files):
    role = "arn:aws:iam::123456789012:role/writer"

    async def main():
        ids = cache(roles={role: "writer"})
        assert (await ids.get(None)).access_key == "AKIDDEFAULT"
        assert (await ids.get(role)).access_key == "AKIDWRITER"
        # assume_roles off: any other role signs with the gateway's own
        assert (await ids.get("arn:aws:iam::123456789012:role/other")).access_key == "AKIDDEFAULT"
        assert (await cache(profile="writer").get(None)).access_key == "AKIDWRITER"
    asyncio.run(main())


def test_no_credentials_is_an_error_remembered_for_a_moment(aws_files):
    aws_files.write_text("")

    async def main():
        ids = cache()
        with pytest.raises(CredentialError, match="no credentials"):
            await ids.get(None)
        ident = ids.identity(None)
        calls = []
        ident._fetch = lambda: calls.append(1)
        with pytest.raises(CredentialError, match="no credentials"):
            await ids.get(None)       # answered from the failure, not asked again
        assert calls == []
        with pytest.raises(CredentialError, match="profile 'ghost'"):
            await cache(profile="ghost").get(None)
    asyncio.run(main())
