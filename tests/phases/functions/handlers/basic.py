"""Handlers for the pool tests, imported from this directory as a function path."""

import os
import sys
import time

CALLS = 0


def echo(event, context):
    global CALLS
    CALLS += 1
    print("a print goes to the log, not to the gateway's socket")
    return {"event": event, "pid": os.getpid(), "calls": CALLS}


def context_fields(event, context):
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "identity": context.identity,
        "client_context": context.client_context,
        "remaining": context.get_remaining_time_in_millis(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("AWS_") or k == "_HANDLER"},
        "extra": os.environ.get("EXTRA"),
    }


def raises(event, context):
    raise KeyError("missing thing")


def sleeps(event, context):
    time.sleep(event.get("seconds", 60))
    return {"slept": event.get("seconds", 60), "pid": os.getpid()}


def exits(event, context):
    os._exit(7)


def records(event, context):
    """Appends the call's id to a file first, so a test can count which calls ran."""
    with open(event["log"], "a") as f:
        f.write(f"{event['id']}\n")
    if event.get("exit"):
        os._exit(9)
    if event.get("raise"):
        raise RuntimeError("as asked")
    time.sleep(event.get("seconds", 0))
    return {"id": event["id"], "pid": os.getpid()}


def sys_exit(event, context):
    sys.exit(3)


def allocates(event, context):
    hoard = []
    while True:
        hoard.append(bytearray(16 * 1024 * 1024))


def unserialisable(event, context):
    return {"when": {1, 2, 3}}


def too_large(event, context):
    return {"statusCode": 200, "body": "x" * (6 * 1024 * 1024 + 1)}


def stream(event, context):
    """A generator handler: the head, then event["chunks"] chunks of event["size"] bytes."""
    yield {"statusCode": 206, "headers": {"X-Pid": str(os.getpid())}, "cookies": ["s=1"]}
    for i in range(event.get("chunks", 3)):
        yield ("%d" % i).encode() * event.get("size", 1)
    if event.get("raise"):
        raise ValueError("after the chunks")
    if event.get("bad_chunk"):
        yield 42


def stream_forever(event, context):
    yield {"statusCode": 200}
    while True:
        yield b"x" * 65536
