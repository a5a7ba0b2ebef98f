"""fastgate._core.execlog: levels per stage, the JSON line, no secrets, rate limit."""
import json
import os

import pytest

from fastgate._core import execlog
from fastgate._core.execlog import ExecutionLog, parse_level
from fastgate._core.metrics import SharedMetrics, level_of
from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import ApiStage, RequestContext, Route
from fastgate.phases.auth import AuthResult

API = ApiStage(api_id="a1b2c3d4e5", stage="prod")
OTHER = ApiStage(api_id="zzzzzzzzzz", stage="dev")
SECRETS = (b"Bearer eyJhbGciOiJIUzI1NiJ9.secret", b"session=s3cr3t", b"KEYVALUE1234567890abcdef",
           b"IQoJb3JpZ2luX2VjEHMaCXVz-sts-token", b"qs-t0ken-value")


def test_compiled_module_is_loaded():
    assert execlog.__file__.endswith(".so"), execlog.__file__


def make_ctx(api=API, status=200, **kw):
    ctx = RequestContext()
    now = monotonic_s()
    ctx.api = api
    ctx.route = Route(route_key="GET /pets/{id}", resource_path="/pets/{id}", api=api)
    ctx.method, ctx.path, ctx.query = b"GET", b"/pets/42", b"limit=5&access_token=" + SECRETS[4] + b"&flag"
    ctx.headers = [(b"Host", b"api.example.com"), (b"Authorization", SECRETS[0]), (b"Cookie", SECRETS[1]),
                   (b"x-api-key", SECRETS[2]), (b"X-Amz-Security-Token", SECRETS[3])]
    ctx.request_id = b"req-1"
    ctx.request_time_ms = 1764062975250
    ctx.status = status
    ctx.start, ctx.end = now - 0.0125, now
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def lines(path):
    with open(path, "rb") as f:
        return [json.loads(line) for line in f.read().splitlines()]


def test_info_logs_every_request_error_only_failures_off_nothing(tmp_path):
    path = str(tmp_path / "exec.log")
    log = ExecutionLog(path, {("a1b2c3d4e5", "prod"): "INFO", ("zzzzzzzzzz", "dev"): "ERROR"})
    assert log.log(make_ctx(API, 200))
    assert log.log(make_ctx(API, 404))
    assert not log.log(make_ctx(OTHER, 200))
    assert log.log(make_ctx(OTHER, 502))
    assert not log.log(make_ctx(ApiStage(api_id="unknown", stage="x"), 500))
    assert not log.log(make_ctx(None, 500))          # outside any stage: default OFF
    log.close()
    got = lines(path)
    assert [(l["api"], l["status"], l["level"]) for l in got] == [
        ("a1b2c3d4e5", 200, "INFO"), ("a1b2c3d4e5", 404, "INFO"), ("zzzzzzzzzz", 502, "ERROR")]


def test_line_fields(tmp_path):
    path = str(tmp_path / "exec.log")
    log = ExecutionLog(path, {("a1b2c3d4e5", "prod"): "INFO"})
    ctx = make_ctx(api_key_id=b"k1d", auth=AuthResult(True, principal_id="user-7", context={"t": "x"}),
                   attempts=2)
    ctx.integration_start, ctx.integration_end = ctx.start + 0.001, ctx.start + 0.0084
    log.log(ctx, 201)
    log.log(make_ctx(status=429, error_type="THROTTLED", error_message="Too Many Requests"),
            0, level_of("gateway"))
    log.log(make_ctx(status=429, error_type="QUOTA_EXCEEDED"))
    log.close()
    one, throttled, quota = lines(path)
    assert one["requestId"] == "req-1" and one["time"] == 1764062975250
    assert (one["api"], one["stage"], one["routeKey"], one["resourcePath"]) == \
        ("a1b2c3d4e5", "prod", "GET /pets/{id}", "/pets/{id}")
    assert (one["method"], one["path"]) == ("GET", "/pets/42")
    assert one["queryParams"] == ["limit", "access_token", "flag"]
    assert one["requestHeaders"] == ["Host", "Authorization", "Cookie", "x-api-key", "X-Amz-Security-Token"]
    assert one["apiKeyId"] == "k1d"
    assert one["authorizer"] == {"allowed": True, "principalId": "user-7"}
    assert one["integration"] == {"target": None, "status": 201, "latencyMs": 7.4, "attempts": 2}
    assert one["throttle"] is None and one["throttleLevel"] is None
    assert one["latencyMs"] == 12.5 and one["status"] == 200
    assert one["transforms"] == [] and one["errorType"] is None
    assert (throttled["throttle"], throttled["throttleLevel"]) == ("THROTTLED", "gateway")
    assert throttled["integration"] is None and throttled["errorMessage"] == "Too Many Requests"
    assert (quota["throttle"], quota["throttleLevel"]) == ("QUOTA_EXCEEDED", "quota")


def test_never_a_secret(tmp_path):
    path = str(tmp_path / "exec.log")
    log = ExecutionLog(path, {("a1b2c3d4e5", "prod"): "INFO"})
    log.log(make_ctx(auth=AuthResult(True, principal_id="p", claims={"sub": SECRETS[0].decode()},
                                     context={"token": SECRETS[3].decode()})))
    log.close()
    data = open(path, "rb").read()
    assert data.count(b"\n") == 1
    for secret in SECRETS:
        assert secret not in data


def test_rate_limit_drops_and_counts_without_blocking(tmp_path):
    path = str(tmp_path / "exec.log")
    m = SharedMetrics.create(8)
    log = ExecutionLog(path, {("a1b2c3d4e5", "prod"): "INFO"}, rate_per_s=0.001, burst=5, metrics=m)
    written = sum(log.log(make_ctx()) for _ in range(50))
    log.close()
    assert written == 5 and log.dropped == 45 and log.written == 5
    assert len(lines(path)) == 5
    assert "fastgate_execution_log_dropped_total 45" in m.render().decode()


def test_escaping_keeps_lines_valid_json(tmp_path):
    path = str(tmp_path / "exec.log")
    log = ExecutionLog(path, default_level="INFO")
    log.log(make_ctx(None, path=b'/a"b\\c\n\xff', query=b"we\"ird=1&\x01=2", error_type=None))
    log.close()
    (one,) = lines(path)
    assert one["path"] == '/a"b\\c\n\u00ff' and one["queryParams"] == ['we"ird', "\x01"]
    assert one["api"] is None


def test_levels_are_validated():
    assert parse_level("info") == 2 and parse_level("OFF") == 0
    with pytest.raises(ValueError):
        parse_level("DEBUG")
    with pytest.raises(ValueError):
        ExecutionLog("-", rate_per_s=0)
    log = ExecutionLog(os.devnull)
    assert not log.enabled
    log.set_level("a", "b", "ERROR")
    assert log.enabled
    log.close()
