"""AWS service integrations, as API Gateway runs them (docs/aws-integrations.md).

* ``rest.py``: a REST API's ``type: AWS`` integration (``...:{service}:action/{Action}`` and
  ``...:{service}:path/{path}`` URIs) and Lambda non-proxy (``lambda:path/2015-03-31/
  functions/{arn}/invocations``), with mapping templates and integration responses;
* ``subtypes.py``: HTTP APIs' first-class integrations (``integrationSubtype``), their
  parameters checked as AWS checks them at create and import time;
* ``client.py``: the per-worker client every one of them sends through: endpoints
  (``services.py``), credentials (``credentials.py``), SigV4 (botocore's signer) and
  keep-alive pools (``transport.py``).

A route with one of these carries a runner (``Route.runner``, INTEGRATION_PYTHON); the core
calls ``runner.start(exchange, ctx, body)`` once the body is whole, and the runner answers
through ``exchange.integration_done(ctx, result, detail, status)``.
"""

from urllib.parse import urlsplit


def check_url(url: str, where: str) -> str:
    """An endpoint URL of the config, without its trailing slash (ValueError naming it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{where}: {url!r} is not an http(s) URL")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{where}: {url!r} has a bad port") from None
    return url.rstrip("/")


def check_config(cfg) -> None:
    """The config's `aws:` section as far as it can be checked without botocore."""
    if cfg is None:
        return
    if cfg.endpoint_url:
        check_url(cfg.endpoint_url, "endpoint_url")
    for name, url in cfg.endpoints.items():
        check_url(url, f"endpoints.{name}")
