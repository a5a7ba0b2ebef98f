"""What the core calls for a route whose integration is Python (INTEGRATION_PYTHON): start
the call once the body is whole, bound it by the integration's timeout, and answer the
client through the Exchange, failures as API Gateway answers them with their cause in the
gateway's log and the execution log (ctx.error_message), never in the response."""

from __future__ import annotations

import asyncio

from fastgate.observability.log import log
from fastgate.phases.aws.credentials import CredentialError
from fastgate.phases.aws.transport import TransportError

__all__ = ["Runner"]

_TASKS: set = set()      # running calls, so none is collected mid-way

# failure -> (REST gateway response type, status), (HTTP API status, message) as AWS answers:
# an unreachable endpoint or missing credentials are a 500 "Internal server error" on AWS, a
# timeout API Gateway's 504; HTTP APIs answer 500 "Internal Server Error" and 503.
_TIMEOUT = (("INTEGRATION_TIMEOUT", 504), (503, b'{"message":"Service Unavailable"}'))
_CREDENTIALS = (("API_CONFIGURATION_ERROR", 500), (500, b'{"message":"Internal Server Error"}'))
_UNREACHABLE = (("INTEGRATION_FAILURE", 500), (500, b'{"message":"Internal Server Error"}'))
_BUG = (("DEFAULT_5XX", 500), (500, b'{"message":"Internal Server Error"}'))


class Runner:
    """The shared part of the AWS runners: subclasses implement ``call(ctx, body)``, which
    returns (status, [(name, value)], body) or a gateway response type (a mapping's refusal)."""

    def __init__(self, services, timeout_s: float, label: str):
        self.services = services          # the worker's fastgate.phases.access.Services (.aws, .functions)
        self.timeout_s = timeout_s
        self.label = label

    @property
    def clients(self):
        return self.services.aws

    def start(self, conn, ctx, body: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self.run(conn, ctx, body))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)

    async def run(self, conn, ctx, body: bytes) -> None:
        try:
            result = await asyncio.wait_for(self.call(ctx, body), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            self.fail(conn, ctx, _TIMEOUT, f"no answer within {self.timeout_s * 1000:.0f} ms "
                                           "(the integration's timeoutInMillis)")
        except CredentialError as e:
            self.fail(conn, ctx, _CREDENTIALS, f"credentials: {e}")
        except TransportError as e:
            self.fail(conn, ctx, _UNREACHABLE, str(e))
        except Exception as e:    # a bug here must answer the client, never hang it
            self.fail(conn, ctx, _BUG, f"gateway error {e!r}")
        else:
            if isinstance(result, str):
                conn.integration_done(ctx, result, ctx.error_message)
            else:
                conn.integration_done(ctx, result)

    def fail(self, conn, ctx, how, cause: str) -> None:
        detail = f"{self.label}: {cause}"
        log(f"aws integration {detail} (request {ctx.request_id.decode('latin-1')})")
        (rest_type, rest_status), (http_status, http_body) = how
        if ctx.api is not None and not ctx.api.rest:
            conn.function_done(ctx, http_status, [], http_body, rest_type, detail)
        else:
            conn.integration_done(ctx, rest_type, detail, rest_status)

    async def call(self, ctx, body: bytes):
        raise NotImplementedError
