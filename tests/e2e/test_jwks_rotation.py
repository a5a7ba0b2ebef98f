"""A JWT route through a real fastgate while its issuer rotates keys: a token signed with
the new key is accepted as soon as the refetch interval allows (10 s by default; short
here through refetch_interval_s), a made-up kid that a refetch missed is refused from
memory, and a flood of new made-up kids costs the issuer at most one key fetch per interval. The issuer is a local OpenID server; tokens are signed by PyJWT."""

from __future__ import annotations

import time

import httpx
import pytest

from conftest import Gateway, wait_until
from tests.phases.auth.conftest import Issuer, SigningKey

INTERVAL_S = 0.5


@pytest.fixture
def issuer():
    iss = Issuer()
    yield iss
    iss.close()


def test_rotation_and_made_up_kids_through_the_gateway(tmp_path, issuer):
    old, new = SigningKey("old", "RS256"), SigningKey("new", "RS256")
    issuer.keys = [old]
    g = Gateway(tmp_path, f"""\
        access_log: {{path: 'off'}}
        routes:
          - path: /pets
            auth:
              jwt: {{issuer: "{issuer.url}", audience: [my-client], jwks_uri: "{issuer.url}/keys",
                     refetch_interval_s: {INTERVAL_S}}}
            integration: {{type: mock, body: pets}}
        """)
    try:
        with httpx.Client(base_url=g.url, timeout=10) as c:
            def status(key: SigningKey) -> int:
                token = key.token(issuer.claims())
                return c.get("/pets", headers={"Authorization": f"Bearer {token}"}).status_code

            assert status(old) == 200
            assert issuer.hits["/keys"] == 1
            issuer.keys = [new]            # rotated
            rotated = time.monotonic()
            wait_until(lambda: status(new) == 200, timeout=10, step=0.1)
            # accepted once the interval allowed a refetch (and not much later: one more
            # interval at most on a busy machine, not the old five minutes)
            assert time.monotonic() - rotated < 10
            assert status(old) == 401      # the retired key no longer verifies
            # one made-up kid, again and again for several intervals: the refetch it caused
            # did not bring it, so it is refused from memory (for 60 s), never fetched again
            ghost, before = SigningKey("ghost", "ES256"), issuer.hits["/keys"]
            until, sent = time.monotonic() + 4 * INTERVAL_S, 0
            while time.monotonic() < until or sent < 10:
                assert status(ghost) == 401
                sent += 1
            assert issuer.hits["/keys"] - before == 1
            # made-up kids, each new: at most one fetch per interval, whatever the kids
            before, start = issuer.hits["/keys"], time.monotonic()
            for i in range(60):
                assert status(SigningKey(f"ghost-{i}", "ES256")) == 401
            elapsed = time.monotonic() - start
            assert issuer.hits["/keys"] - before <= elapsed / INTERVAL_S + 1
    finally:
        g.stop()
