"""Config upstreams -> the core's UpstreamGroups: targets, balancing, keep-alive pools,
TLS towards upstreams, and the metrics slots of their health and connection gauges."""

from __future__ import annotations

import re
import ssl

from fastgate._core.upstream import Balance, HashOn, UpstreamGroup

BALANCES = {"round_robin": Balance.BALANCE_ROUND_ROBIN, "least_conn": Balance.BALANCE_LEAST_CONN,
            "hash": Balance.BALANCE_HASH}


HASH_ON = {"client_ip": HashOn.HASH_CLIENT_IP, "header": HashOn.HASH_HEADER,
           "cookie": HashOn.HASH_COOKIE}


LB_NAME = re.compile(r"loadbalancer/(?:net|app)/([^/]+)(?:/|$)")


def upstream_of(arn: str) -> str:
    """The upstream group a VPC link's target ARN names: the load balancer's name
    (arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/net/NAME/ID), else the ARN's
    last segment."""
    m = LB_NAME.search(arn)
    return m.group(1) if m else re.split(r"[:/]", arn)[-1]


def health_slot_for(metrics, upstream_name: str, target) -> int:
    return metrics.gauge_series("fastgate_upstream_healthy",
                                {"upstream": upstream_name, "target": target.url})


def health_slots(config, metrics) -> list[int]:
    """Slots of every actively checked target (the supervisor marks them healthy at start)."""
    return [health_slot_for(metrics, name, t)
            for name, up in config.upstreams.items() if up.health_check is not None
            for t in up.targets]


def client_ssl_context(verify: bool, client_cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """TLS towards an upstream (proxying and health checks alike); client_cert: (certificate
    PEM, private key PEM) the gateway presents when the upstream asks (mutual TLS)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert is not None:
        _load_client_cert(ctx, *client_cert)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # the ssl module loads a certificate chain from files only: a private directory that
    # lives as long as the load
    import os
    import tempfile
    with tempfile.TemporaryDirectory(prefix="fastgate-cc-") as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        for path, text in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        ctx.load_cert_chain(cert_path, key_path)


def host_header(t) -> str:
    """Host for a parsed target URL: the port only when it is not the scheme's default."""
    default = 443 if t.scheme == "https" else 80
    return t.label if t.port != default else t.label.rsplit(":", 1)[0]


def build_group(name: str, up, metrics, worker_id: int,
                client_cert: tuple[str, str] | None = None,
                server_name: str | None = None) -> UpstreamGroup:
    kind, hash_name = up.hash_key()
    passive = up.passive
    group = UpstreamGroup(name, BALANCES[up.balance], HASH_ON[kind], hash_name or "",
                          passive.max_failures, passive.eject_ms / 1000)
    for tc in up.targets:
        t = tc.parsed()
        ssl_ctx = client_ssl_context(up.tls_verify, client_cert) if t.scheme == "https" else None
        # server_name: an HTTP API's tlsConfig.serverNameToVerify, the name sent in SNI and
        # checked against the backend's certificate instead of the URL's host
        target = group.add_target(tc.url, t.scheme, t.host, t.port, tc.weight, up.keepalive, ssl_ctx,
                                  server_name)
        if metrics is not None:
            target.metrics = metrics
            target.conn_slot = metrics.gauge_series("fastgate_upstream_connections",
                                                    {"upstream": name, "target": tc.url})
            target.own_conn_slot = metrics.gauge_series(
                "fastgate_worker_upstream_connections",
                {"upstream": name, "target": tc.url, "worker": str(worker_id)})
            if up.health_check is not None:
                target.health_slot = health_slot_for(metrics, name, tc)
    return group
