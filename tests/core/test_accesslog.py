"""fastgate._core.accesslog: formats, escaping, variables, flushing, reopen, nothing lost."""
import asyncio
import calendar
import json
import os
import re
import subprocess
import sys
import time

import pytest

from fastgate._core import accesslog
from fastgate._core.accesslog import AccessLog
from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import RequestContext, Route

# 25/Nov/2026:09:29:35 +0000
T0_MS = calendar.timegm((2026, 11, 25, 9, 29, 35)) * 1000 + 250


def test_compiled_module_is_loaded():
    assert accesslog.__file__.endswith(".so"), accesslog.__file__


def make_ctx(**kw):
    ctx = RequestContext()
    now = monotonic_s()
    ctx.method = b"GET"
    ctx.path = b"/pets/42"
    ctx.query = b"a=1"
    ctx.source_ip = b"192.0.2.7"
    ctx.request_id = b"req-1"
    ctx.headers = [(b"Host", b"API.example.com:8080"), (b"User-Agent", b"curl/8.5.0")]
    ctx.route_host = b"api.example.com"
    ctx.http_minor = 1
    ctx.status = 200
    ctx.response_length = 17
    ctx.request_time_ms = T0_MS
    ctx.start = now - 0.0124
    ctx.end = now
    ctx.integration_start = now - 0.0100
    ctx.integration_end = now - 0.0013
    ctx.route = Route(route_key="GET /pets/{id}")
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def lines_of(log_path, fmt, contexts):
    log = AccessLog(str(log_path), fmt)
    for ctx in contexts:
        log.log(ctx)
    log.close()
    return log_path.read_bytes().split(b"\n")[:-1]


def test_clf(tmp_path):
    (line,) = lines_of(tmp_path / "a.log", "clf", [make_ctx()])
    assert line == (b'192.0.2.7 - - [25/Nov/2026:09:29:35 +0000] "GET /pets/42 HTTP/1.1" 200 17 req-1')


def test_json_has_every_variable(tmp_path):
    (line,) = lines_of(tmp_path / "a.log", "json", [make_ctx()])
    assert json.loads(line) == {
        "requestId": "req-1", "sourceIp": "192.0.2.7", "userAgent": "curl/8.5.0",
        "httpMethod": "GET", "path": "/pets/42", "routeKey": "GET /pets/{id}",
        "protocol": "HTTP/1.1", "status": "200", "responseLength": "17",
        "requestTime": "25/Nov/2026:09:29:35 +0000", "requestTimeEpoch": str(T0_MS),
        "integrationLatency": "9", "responseLatency": "12", "domainName": "api.example.com",
        "errorResponseType": "-", "errorMessage": "-", "cacheStatus": "-",
    }


def test_missing_values_render_dash(tmp_path):
    ctx = RequestContext()  # nothing filled: no route, no status, no integration, no headers
    (line,) = lines_of(tmp_path / "a.log", "json", [ctx])
    d = json.loads(line)
    for key in ("requestId", "sourceIp", "userAgent", "routeKey", "status", "requestTime",
                "requestTimeEpoch", "integrationLatency", "responseLatency", "domainName",
                "errorResponseType", "errorMessage"):
        assert d[key] == "-", key
    assert d["protocol"] == "HTTP/1.0"
    assert d["responseLength"] == "0"


def test_template_variables_and_unsupported_names(tmp_path):
    fmt = ("$context.requestId|$context.httpMethod|$context.status|$context.integrationLatency|"
           "$context.responseLatency|$context.error.responseType|$context.error.message|"
           "$context.accountId|$context.identity.userAgent.")
    ctx = make_ctx(error_type="THROTTLED", error_message="Too Many Requests", status=429)
    log = AccessLog(str(tmp_path / "a.log"), fmt)
    assert log.unsupported == ["accountId"]
    log.log(ctx)
    log.close()
    assert (tmp_path / "a.log").read_bytes() == (
        b"req-1|GET|429|9|12|THROTTLED|Too Many Requests|-|curl/8.5.0.\n")


def test_bad_format_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        AccessLog(str(tmp_path / "a.log"), "combined")


def test_bad_path_is_an_error_at_construction(tmp_path):
    with pytest.raises(OSError):
        AccessLog(str(tmp_path / "missing-dir" / "a.log"), "clf")


NASTY_UA = b'evil"agent\\ \n\r\t\x01\x7f caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 bad:\xff\xc3(\xed\xa0\x80'


def test_json_escaping_yields_valid_json(tmp_path):
    ctx = make_ctx(headers=[(b"user-agent", NASTY_UA)], path=b'/a"b\\c')
    (line,) = lines_of(tmp_path / "a.log", "json", [ctx])
    assert b"\n" not in line
    d = json.loads(line.decode("utf-8"))  # strict: the line must be valid UTF-8
    # valid UTF-8 passes through; invalid bytes read as Latin-1
    assert d["userAgent"] == ('evil"agent\\ \n\r\t\x01\x7f café € \U0001F600 bad:\xff\xc3(\xed\xa0\x80')
    assert d["path"] == '/a"b\\c'


def test_template_escapes_as_json(tmp_path):
    ctx = make_ctx(headers=[(b"user-agent", b'say "hi"\n')])
    (line,) = lines_of(tmp_path / "a.log", '{"ua":"$context.identity.userAgent"}', [ctx])
    assert json.loads(line) == {"ua": 'say "hi"\n'}


def test_clf_escaping_keeps_one_line(tmp_path):
    ctx = make_ctx(path=b'/x" 200 1 forged\n1.1.1.1 - - [x] "GET /\xff')
    (line,) = lines_of(tmp_path / "a.log", "clf", [ctx])
    assert line == (b'192.0.2.7 - - [25/Nov/2026:09:29:35 +0000] '
                    b'"GET /x\\" 200 1 forged\\x0a1.1.1.1 - - [x] \\"GET /\\xff HTTP/1.1" 200 17 req-1')


def test_request_time_follows_the_second(tmp_path):
    ctxs = [make_ctx(request_time_ms=T0_MS), make_ctx(request_time_ms=T0_MS + 700),
            make_ctx(request_time_ms=T0_MS + 800), make_ctx(request_time_ms=T0_MS - 86400_000 * 300)]
    lines = lines_of(tmp_path / "a.log", "$context.requestTime", ctxs)
    assert lines == [b"25/Nov/2026:09:29:35 +0000", b"25/Nov/2026:09:29:35 +0000",
                     b"25/Nov/2026:09:29:36 +0000", b"29/Jan/2026:09:29:35 +0000"]


def test_latencies_are_rounded_milliseconds(tmp_path):
    ctx = make_ctx(start=100.0, end=100.0024, integration_start=100.001, integration_end=100.0026)
    (line,) = lines_of(tmp_path / "a.log", "$context.responseLatency $context.integrationLatency", [ctx])
    assert line == b"2 2"
    ctx = make_ctx(start=100.0, end=160.5, integration_start=0.0)
    (line,) = lines_of(tmp_path / "b.log", "$context.responseLatency $context.integrationLatency", [ctx])
    assert line == b"60500 -"


def test_nothing_reaches_disk_before_flush_and_close_flushes(tmp_path):
    path = tmp_path / "a.log"
    log = AccessLog(str(path), "clf")
    log.log(make_ctx())
    time.sleep(0.05)
    assert path.read_bytes() == b""  # buffered in memory, not written by log()
    assert log.buffered_bytes > 0
    log.close()
    assert path.read_bytes().count(b"\n") == 1
    log.log(make_ctx())  # after close: ignored, not an error
    log.close()


def test_many_lines_none_lost(tmp_path):
    path = tmp_path / "a.log"
    log = AccessLog(str(path), "$context.requestId $context.status")
    n = 100_000
    ctx = make_ctx()
    for i in range(n):
        ctx.request_id = b"%d" % i
        log.log(ctx)
        if i % 30_000 == 0:
            log.flush()
    assert log.buffered_bytes < 65536 + 64  # log() flushes by itself past 64 KiB
    log.close()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    assert lines[:-1] == [b"%d 200" % i for i in range(n)]
    assert log.dropped_lines == 0 and log.write_errors == 0 and log.pending_bytes == 0


def test_reopen_after_rename(tmp_path):
    path = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    log = AccessLog(str(path), "$context.requestId")
    log.log(make_ctx(request_id=b"before-1"))
    log.flush()
    log.log(make_ctx(request_id=b"before-2"))  # still buffered at rename time
    os.rename(path, rotated)  # logrotate
    log.reopen()  # SIGUSR1
    log.log(make_ctx(request_id=b"after"))
    log.close()
    assert rotated.read_bytes() == b"before-1\nbefore-2\n"
    assert path.read_bytes() == b"after\n"


def test_start_timer_flushes_every_interval(tmp_path):
    path = tmp_path / "a.log"

    async def main():
        log = AccessLog(str(path), "$context.requestId")
        log.start_timer(asyncio.get_running_loop(), 0.05)
        log.log(make_ctx())
        for _ in range(100):
            await asyncio.sleep(0.02)
            if path.read_bytes():
                break
        content = path.read_bytes()
        log.close()
        return content

    assert asyncio.run(main()) == b"req-1\n"


def test_stdout_pipe_lines_stay_whole():
    # Two processes writing lines longer than 1/3 of PIPE_BUF to one pipe:
    # each write is cut at line ends so no line is interleaved with another.
    script = (
        "import sys\n"
        "from fastgate._core.accesslog import AccessLog\n"
        "from fastgate._core.pipeline import RequestContext\n"
        "log = AccessLog('-', '$context.requestId')\n"
        "ctx = RequestContext()\n"
        "for i in range(3000):\n"
        "    ctx.request_id = (sys.argv[1] * 1500 + '-%d' % i).encode()\n"
        "    log.log(ctx)\n"
        "log.close()\n"
    )
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(accesslog.__file__)) + "/..")
    r, w = os.pipe()
    procs = [subprocess.Popen([sys.executable, "-c", script, tag], stdout=w, env=env) for tag in "ab"]
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read()
    for p in procs:
        assert p.wait(timeout=60) == 0
    lines = out.split(b"\n")[:-1]
    assert len(lines) == 6000
    pattern = re.compile(rb"(a{1500}|b{1500})-\d+\Z")
    assert all(pattern.match(line) for line in lines)
