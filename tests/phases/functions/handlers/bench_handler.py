"""The trivial function of bench/bench_functions.py: a constant response."""

RESPONSE = {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello"}


def constant(event, context):
    return RESPONSE
