"""The Lambda context object a handler receives as its second argument.

Built in the handler process for each call, with the attributes of the AWS
Python runtime's context (awslambdaric): ``memory_limit_in_mb`` is a string
there, and so it is here.
"""

from __future__ import annotations

import os
import sys
import time
import uuid

__all__ = ["LambdaContext", "FunctionInfo", "lambda_environment"]


class FunctionInfo:
    """The per-function facts every context of one handler process shares."""

    __slots__ = ("name", "version", "memory_mb", "region", "account_id",
                 "log_group_name", "log_stream_name", "invoked_function_arn")

    def __init__(self, name: str, *, memory_mb: int, region: str, account_id: str,
                 version: str = "$LATEST"):
        self.name = name
        self.version = version
        self.memory_mb = memory_mb
        self.region = region
        self.account_id = account_id
        self.log_group_name = f"/aws/lambda/{name}"
        # One stream per execution environment, named like Lambda's.
        self.log_stream_name = "%s/[%s]%s" % (time.strftime("%Y/%m/%d", time.gmtime()),
                                              version, uuid.uuid4().hex)
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{name}"


class LambdaContext:
    """One invocation's context: who is running, and how long it has left."""

    __slots__ = ("aws_request_id", "function_name", "function_version",
                 "invoked_function_arn", "memory_limit_in_mb", "log_group_name",
                 "log_stream_name", "identity", "client_context", "tenant_id",
                 "_deadline_ms")

    def __init__(self, info: FunctionInfo, request_id: str, deadline_ms: int,
                 client_context=None, identity=None):
        self.aws_request_id = request_id
        self.function_name = info.name
        self.function_version = info.version
        self.invoked_function_arn = info.invoked_function_arn
        self.memory_limit_in_mb = str(info.memory_mb)
        self.log_group_name = info.log_group_name
        self.log_stream_name = info.log_stream_name
        self.identity = identity
        self.client_context = client_context
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def log(self, msg: str) -> None:
        # Lambda's context.log writes to the function's log (here: stderr).
        os.write(2, msg.encode() if isinstance(msg, str) else bytes(msg))

    def __repr__(self) -> str:
        return (f"LambdaContext(aws_request_id={self.aws_request_id!r}, "
                f"function_name={self.function_name!r}, "
                f"remaining_ms={self.get_remaining_time_in_millis()})")


def lambda_environment(info: FunctionInfo, handler: str, timeout_ms: int) -> dict[str, str]:
    """The reserved environment variables Lambda sets for a function; libraries
    such as aws-lambda-powertools read them."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": info.name,
        "AWS_LAMBDA_FUNCTION_VERSION": info.version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(info.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(max(1, timeout_ms // 1000)),
        "AWS_LAMBDA_LOG_GROUP_NAME": info.log_group_name,
        "AWS_LAMBDA_LOG_STREAM_NAME": info.log_stream_name,
        "AWS_REGION": info.region,
        "AWS_DEFAULT_REGION": info.region,
        "AWS_EXECUTION_ENV": "AWS_Lambda_python%d.%d" % sys.version_info[:2],
        "_HANDLER": handler,
    }
