"""The client every AWS integration of a worker sends through: where each service answers
(services.Endpoints), the credentials it signs with (credentials.IdentityCache), SigV4 by
botocore's signer, and one keep-alive pool per endpoint (transport.HttpPool).

One per worker process (fastgate.phases.access.Services.aws), kept across reloads while the
config's ``aws:`` section is unchanged, so connections and credentials stay warm.
"""

from __future__ import annotations

import asyncio

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest

from fastgate.phases.aws.credentials import CredentialError, IdentityCache
from fastgate.phases.aws.services import Endpoints, Service, default_region, service
from fastgate.phases.aws.transport import HttpPool, Response, TransportError

__all__ = ["AwsClients", "CredentialError", "TransportError", "Response"]

# headers botocore's request carries that never go on the wire from here
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "host"))


class AwsClients:
    """Send a request to an AWS service, signed, through a pooled connection."""

    def __init__(self, cfg=None):
        self.cfg = cfg
        self._region = None
        self.endpoints = Endpoints(cfg.endpoint_url if cfg is not None else None,
                                   cfg.endpoints if cfg is not None else None)
        self.identities = IdentityCache(
            profile=cfg.profile if cfg is not None else None,
            roles=cfg.roles if cfg is not None else {},
            assume_roles=cfg.assume_roles if cfg is not None else True,
            sts_endpoint=lambda: self.endpoints.url(service("sts"), self.region),
            region=lambda: self.region)
        self.keepalive = cfg.keepalive if cfg is not None else 64
        self.connect_timeout_s = (cfg.connect_timeout_ms if cfg is not None else 5000) / 1000
        self.tls_verify = cfg.tls_verify if cfg is not None else True
        self.pools: dict[str, HttpPool] = {}
        self.closed = False

    @property
    def region(self) -> str:
        """The gateway's region (aws.region, else the environment's or profile's), read on
        first use: a gateway without AWS integrations never loads botocore's session."""
        if self._region is None:
            self._region = default_region(self.cfg.region if self.cfg is not None else None)
        return self._region

    def endpoint(self, svc: Service, region: str) -> str:
        return self.endpoints.url(svc, region)

    def pool(self, origin: str) -> HttpPool:
        p = self.pools.get(origin)
        if p is None:
            p = self.pools[origin] = HttpPool(origin, keepalive=0 if self.closed else self.keepalive,
                                              connect_timeout_s=self.connect_timeout_s,
                                              tls_verify=self.tls_verify)
        return p

    async def send(self, svc: Service, region: str, method: str, url: str, headers: list,
                   body: bytes, role_arn: str | None) -> Response:
        """Sign and send one request to `url` (the endpoint's origin, a path and a query,
        as the service reads them); the answer, whatever its status. CredentialError when
        no credentials could be had, TransportError when the endpoint could not be reached."""
        creds = await self.identities.get(role_arn)
        scheme, rest = url.split("://", 1)
        host, _, target = rest.partition("/")
        # the Host line sent is the one signed (botocore would drop a default port from it)
        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers, Host=host))
        signer = S3SigV4Auth if svc.name == "s3" else SigV4Auth
        signer(creds, svc.signing_name, region).add_auth(request)
        lines = [f"{method} /{target} HTTP/1.1", f"Host: {host}"]
        for name, value in request.headers.items():
            if name.lower() not in _FRAMING:
                lines.append(f"{name}: {value}")
        if body or method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return await self.pool(f"{scheme}://{host}").request(head + body, head_only=method == "HEAD")

    def close(self) -> None:
        """Idle connections closed; ones in flight close when their exchange ends."""
        self.closed = True
        for p in self.pools.values():
            p.keepalive = 0
            p.close()


async def bounded(coro, timeout_s: float):
    """The coroutine's result within the integration's timeout (asyncio.TimeoutError)."""
    return await asyncio.wait_for(coro, timeout_s)
