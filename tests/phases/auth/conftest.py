"""Shared pieces of the authorizer tests: a local OpenID issuer on a real socket, keys
made with cryptography, tokens made with PyJWT, and AuthRequest/run helpers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt as pyjwt
import pytest
import uvloop
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from fastgate.phases.auth import AuthRequest, AuthResult


def run(coro):
    return uvloop.run(coro)


def outcome(check, req) -> AuthResult:
    """check.check(req), awaited on a fresh loop when it is asynchronous."""
    result = check.check(req)
    if isinstance(result, AuthResult):
        return result

    async def wait():
        return await result
    return run(wait())


def request(**kw) -> AuthRequest:
    kw.setdefault("method", "GET")
    kw.setdefault("path", "/prod/pets/1")
    kw.setdefault("stage_path", "/pets/1")
    kw.setdefault("stage", "prod")
    kw.setdefault("api_id", "abc123")
    kw.setdefault("resource_path", "/pets/{id}")
    kw.setdefault("route_key", "GET /pets/{id}")
    return AuthRequest(**kw)


class SigningKey:
    """A private key with its kid, its JWK and the algorithm it signs with."""

    def __init__(self, kid: str, alg: str):
        self.kid, self.alg = kid, alg
        if alg.startswith("RS"):
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update(kid=kid, use="sig")

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def token(self, claims: dict, *, headers: dict | None = None, **over) -> str:
        hdr = {"kid": self.kid}
        hdr.update(headers or {})
        return pyjwt.encode(claims, self.private, algorithm=self.alg, headers=hdr)


class Issuer:
    """An OpenID issuer on 127.0.0.1: discovery document and JWKS, with the keys it
    publishes changeable (rotation) and every request counted."""

    def __init__(self):
        self.keys: list[SigningKey] = []
        self.hits: dict[str, int] = {}
        self.fail = False
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                issuer.hits[self.path] = issuer.hits.get(self.path, 0) + 1
                if issuer.fail:
                    self.send_error(503)
                    return
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/keys"}
                elif self.path == "/keys" or self.path.endswith("/.well-known/jwks.json"):
                    # the second form: a Cognito user pool's keys, {issuer}/{poolId}/.well-known/jwks.json
                    body = {"keys": [k.jwk for k in issuer.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def claims(self, **over) -> dict:
        now = int(time.time())
        claims = {"iss": self.url, "sub": "user-1", "aud": "my-client", "iat": now,
                  "exp": now + 300}
        claims.update(over)
        return {k: v for k, v in claims.items() if v is not None}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def issuer():
    iss = Issuer()
    yield iss
    iss.close()


@pytest.fixture(scope="session")
def rsa_key():
    return SigningKey("rsa-1", "RS256")


@pytest.fixture(scope="session")
def ec_key():
    return SigningKey("ec-1", "ES256")
