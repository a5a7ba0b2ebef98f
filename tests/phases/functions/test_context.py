import time

from fastgate.phases.functions.context import FunctionInfo, LambdaContext, lambda_environment


def test_context_attributes_and_remaining_time():
    info = FunctionInfo("pets", memory_mb=512, region="ap-south-1", account_id="111122223333")
    deadline = int(time.time() * 1000) + 1500
    ctx = LambdaContext(info, "req-9", deadline)
    assert ctx.aws_request_id == "req-9" and ctx.function_name == "pets"
    assert ctx.invoked_function_arn == "arn:aws:lambda:ap-south-1:111122223333:function:pets"
    assert ctx.memory_limit_in_mb == "512"          # a string, as in AWS's Python runtime
    assert ctx.log_group_name == "/aws/lambda/pets"
    assert 1000 < ctx.get_remaining_time_in_millis() <= 1500
    assert LambdaContext(info, "r", deadline - 10_000).get_remaining_time_in_millis() == 0


def test_lambda_environment():
    info = FunctionInfo("pets", memory_mb=128, region="eu-west-1", account_id="111122223333")
    env = lambda_environment(info, "app:handler", 2500)
    assert env["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "2"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == info.log_stream_name
    assert env["_HANDLER"] == "app:handler" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
