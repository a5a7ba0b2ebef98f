"""FunctionPool with real handler processes: warm reuse, every failure, limits, reloads,
streamed results."""

import asyncio
import os

import pytest

from fastgate.phases.functions.errors import FunctionError
from fastgate.phases.functions.pool import FunctionPool, FunctionSpec, FunctionStream
from fastgate.phases.functions.loader import HandlerSpecError

from .conftest import HANDLERS, alive, run


def spec(name, handler=None, **kw):
    return FunctionSpec(name=name, handler=handler or f"basic:{name}", paths=(HANDLERS,), **kw)


async def failing(pool, name, event=None, **kw):
    with pytest.raises(FunctionError) as info:
        await pool.invoke(name, event or {}, **kw)
    return info.value


def with_pool(specs, body):
    async def main():
        pool = FunctionPool(specs)
        pids = []
        try:
            return await body(pool, pids)
        finally:
            await pool.close()
            for pid in pids:
                assert not alive(pid), f"handler process {pid} outlived the pool"
    return run(main())


def test_warm_process_is_reused_and_prints_stay_out_of_the_protocol():
    async def body(pool, pids):
        first = await pool.invoke("echo", {"n": 1})
        second = await pool.invoke("echo", {"n": 2})
        pids.append(first["pid"])
        assert first["event"] == {"n": 1} and second["event"] == {"n": 2}
        assert first["pid"] == second["pid"] and second["calls"] == 2
    with_pool([spec("echo")], body)


def test_context_and_lambda_environment():
    async def body(pool, pids):
        out = await pool.invoke("ctx", {}, request_id="req-1")
        assert out["aws_request_id"] == "req-1"
        assert out["function_name"] == "ctx" and out["function_version"] == "$LATEST"
        assert out["invoked_function_arn"] == "arn:aws:lambda:eu-west-1:210987654321:function:ctx"
        assert out["memory_limit_in_mb"] == "256"
        assert out["log_group_name"] == "/aws/lambda/ctx"
        assert out["log_stream_name"].split("/")[3].startswith("[$LATEST]")
        assert out["identity"] is None and out["client_context"] is None
        assert 0 < out["remaining"] <= 2000
        env = out["env"]
        assert env["AWS_LAMBDA_FUNCTION_NAME"] == "ctx"
        assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
        assert env["AWS_REGION"] == "eu-west-1" and env["_HANDLER"] == "basic:context_fields"
        assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == out["log_stream_name"]
        assert out["extra"] == "yes"
    with_pool([spec("ctx", "basic:context_fields", memory_mb=256, timeout_ms=2000,
                    region="eu-west-1", account_id="210987654321",
                    environment={"EXTRA": "yes"})], body)


def test_raise_keeps_the_process_warm():
    async def body(pool, pids):
        err = await failing(pool, "raises")
        assert err.kind == "raised" and err.error["errorType"] == "KeyError"
        assert "missing thing" in err.error["errorMessage"] and err.error["stackTrace"]
        assert len(pool.pids("raises")) == 1
        pids.extend(pool.pids("raises"))
        await failing(pool, "raises")
        assert pool.pids("raises") == pids
    with_pool([spec("raises")], body)


def test_hung_handler_is_killed_and_others_keep_flowing():
    async def body(pool, pids):
        await pool.invoke("echo", {})
        hung = asyncio.ensure_future(failing(pool, "sleeps", {"seconds": 60}))
        await asyncio.sleep(0.3)
        # while one function hangs, another answers
        assert (await pool.invoke("echo", {"x": 1}))["event"] == {"x": 1}
        err = await hung
        assert err.kind == "function_timeout"
        assert pool.stats()["sleeps"]["processes"] == 0
        out = await pool.invoke("sleeps", {"seconds": 0})
        pids.append(out["pid"])
    with_pool([spec("echo"), spec("sleeps", timeout_ms=1000)], body)


def test_integration_timeout_shorter_than_the_function_timeout_is_a_504_timeout():
    async def body(pool, pids):
        await pool.warm("sleeps")
        pids.extend(pool.pids("sleeps"))
        err = await failing(pool, "sleeps", {"seconds": 30}, timeout_ms=300)
        assert err.kind == "timeout"
        assert not pool.pids("sleeps")
    with_pool([spec("sleeps", timeout_ms=20000)], body)


def test_a_deadline_check_that_comes_early_keeps_the_integration_deadline():
    """uvloop's timers count whole milliseconds and may fire a moment early: the check then
    found the integration deadline not yet due and re-armed only for the function's own
    timeout (20 s here), so a 300 ms route answered after 20 s, or took a late result
    (seen as a 200 past a route's timeout in a loaded full test run)."""
    async def body(pool, pids):
        await pool.warm("sleeps")
        pids.extend(pool.pids("sleeps"))
        call = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 30}, timeout_ms=300))
        await asyncio.sleep(0.05)          # the call runs
        pool._timer.cancel()                # what a timer that fires early does: it is
        pool._check_deadlines()             # spent, and the check finds nothing due yet
        with pytest.raises(FunctionError) as info:
            await asyncio.wait_for(call, 5)
        assert info.value.kind == "timeout"
    with_pool([spec("sleeps", timeout_ms=20000)], body)


@pytest.mark.parametrize("name,kind,memory_mb", [
    ("exits", "crashed", 64), ("sys_exit", "crashed", 64), ("allocates", "memory", 64),
    ("unserialisable", "malformed", 64), ("too_large", "malformed", 256),
])
def test_failures_and_the_next_call_works(name, kind, memory_mb):
    async def body(pool, pids):
        err = await failing(pool, name)
        assert err.kind == kind, err
        # the same function's next call gets a working process
        pool.configure([spec(name, "basic:echo", memory_mb=memory_mb)])
        out = await pool.invoke(name, {"after": True})
        assert out["event"] == {"after": True}
        pids.append(out["pid"])
    with_pool([spec(name, memory_mb=memory_mb)], body)


def test_memory_limit_leaves_the_next_call_a_fresh_process():
    async def body(pool, pids):
        await pool.warm("allocates")
        first = pool.pids("allocates")
        pids.extend(first)
        assert (await failing(pool, "allocates")).kind == "memory"
        assert (await failing(pool, "allocates")).kind == "memory"
        assert all(not alive(p) for p in first)
    with_pool([spec("allocates", memory_mb=64)], body)


def test_import_error_is_a_function_error():
    async def body(pool, pids):
        err = await failing(pool, "broken")
        assert err.kind == "raised" and err.error["errorType"] == "Runtime.ImportModuleError"
        assert pool.stats()["broken"]["processes"] == 0
    with_pool([spec("broken", "broken_import:handler")], body)


def test_bad_handler_name_fails_at_config_time():
    with pytest.raises(HandlerSpecError):
        FunctionSpec(name="x", handler="not a handler")


def test_unknown_function_is_a_service_error():
    async def body(pool, pids):
        assert (await failing(pool, "nope")).kind == "service"
    with_pool([], body)


def test_concurrency_queue_and_throttle():
    async def body(pool, pids):
        first = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 0.5}))
        await asyncio.sleep(0.3)       # the only process is busy now
        queued = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 0}))
        await asyncio.sleep(0.05)
        assert pool.stats()["sleeps"]["queued"] == 1
        err = await failing(pool, "sleeps", {"seconds": 0})
        assert err.kind == "throttled"
        a, b = await first, await queued
        assert a["pid"] == b["pid"]      # the queued call got the freed warm process
        pids.append(a["pid"])
    with_pool([spec("sleeps", concurrency=1, queue=1, timeout_ms=5000)], body)


def test_queued_call_times_out_at_the_integration_deadline():
    async def body(pool, pids):
        busy = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 1}))
        await asyncio.sleep(0.3)
        err = await failing(pool, "sleeps", {"seconds": 0}, timeout_ms=200)
        assert err.kind == "timeout"
        assert pool.stats()["sleeps"]["queued"] == 0
        pids.append((await busy)["pid"])
    with_pool([spec("sleeps", concurrency=1, queue=4, timeout_ms=5000)], body)


def test_parallel_calls_use_up_to_concurrency_processes():
    async def body(pool, pids):
        outs = await asyncio.gather(*[pool.invoke("sleeps", {"seconds": 0.3}) for _ in range(4)])
        distinct = {o["pid"] for o in outs}
        pids.extend(distinct)
        assert len(distinct) == 2
    with_pool([spec("sleeps", concurrency=2, timeout_ms=5000)], body)


def test_reload_keeps_unchanged_processes_and_replaces_changed_ones():
    async def body(pool, pids):
        a = (await pool.invoke("echo", {}))["pid"]
        b = (await pool.invoke("other", {}))["pid"]
        pids.extend([a, b])
        pool.configure([spec("echo", timeout_ms=9000), spec("other", "basic:echo", memory_mb=200)])
        assert (await pool.invoke("echo", {}))["pid"] == a       # timeout is not a process setting
        c = (await pool.invoke("other", {}))["pid"]
        pids.append(c)
        assert c != b
        await asyncio.sleep(0.1)
        assert not alive(b)
        pool.configure([spec("other", "basic:echo", memory_mb=200)])
        assert (await failing(pool, "echo")).kind == "service"
        await asyncio.sleep(0.1)
        assert not alive(a)
    with_pool([spec("echo"), spec("other", "basic:echo")], body)


def test_reload_while_a_call_runs_finishes_the_call_then_retires_the_process():
    async def body(pool, pids):
        running = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 0.4}))
        await asyncio.sleep(0.2)
        pool.configure([spec("sleeps", memory_mb=100, timeout_ms=5000)])
        out = await running
        pids.append(out["pid"])
        assert out["slept"] == 0.4
        new = await pool.invoke("sleeps", {"seconds": 0})
        pids.append(new["pid"])
        assert new["pid"] != out["pid"]
    with_pool([spec("sleeps", timeout_ms=5000)], body)


def test_cancelled_call_does_not_leak_its_reply_into_the_next_call():
    async def body(pool, pids):
        call = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 0.3}))
        await asyncio.sleep(0.15)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        out = await pool.invoke("sleeps", {"seconds": 0})
        assert out["slept"] == 0           # its own answer, not the cancelled call's
        pids.append(out["pid"])
        assert pool.stats()["sleeps"]["processes"] == 1   # the same process, kept warm
    with_pool([spec("sleeps", concurrency=1, timeout_ms=5000)], body)


def test_close_kills_busy_processes():
    async def body(pool, pids):
        await pool.warm("sleeps")
        pids.extend(pool.pids("sleeps"))
        call = asyncio.ensure_future(pool.invoke("sleeps", {"seconds": 60}))
        await asyncio.sleep(0.2)
        await pool.close()
        err = await asyncio.wait_for(call, 5)
    with pytest.raises(FunctionError) as info:
        with_pool([spec("sleeps", timeout_ms=60000)], body)
    assert info.value.kind == "crashed"


def test_duplicate_function_names_are_rejected():
    with pytest.raises(ValueError):
        FunctionPool([spec("echo"), spec("echo")])


# --- streamed results (generator handlers) ----------------------------------------------


async def drain(stream):
    """Every chunk of a FunctionStream and how it ended."""
    done = asyncio.get_running_loop().create_future()
    chunks = []
    stream.start(chunks.append, done.set_result)
    return chunks, await asyncio.wait_for(done, 10)


def test_a_generator_streams_its_head_then_chunks_and_keeps_its_process():
    async def body(pool, pids):
        s = await pool.invoke("stream", {"chunks": 3})
        assert isinstance(s, FunctionStream)
        assert s.head == {"statusCode": 206, "headers": {"X-Pid": s.head["headers"]["X-Pid"]},
                          "cookies": ["s=1"]}
        chunks, end = await drain(s)
        assert chunks == [b"0", b"1", b"2"] and end is None
        pid = int(s.head["headers"]["X-Pid"])
        pids.append(pid)
        assert pool.stats()["stream"] == {"processes": 1, "idle": 1, "queued": 0}
        s = await pool.invoke("stream", {"chunks": 1, "raise": True})
        chunks, end = await drain(s)
        assert chunks == [b"0"] and end.kind == "raised" and "after the chunks" in str(end)
        s = await pool.invoke("stream", {"chunks": 0, "bad_chunk": True})
        chunks, end = await drain(s)
        assert chunks == [] and end.kind == "malformed"
        # raised and malformed keep the process warm, as for ordinary calls
        assert int((await pool.invoke("stream", {"chunks": 0})).head["headers"]["X-Pid"]) == pid
    with_pool([spec("stream", concurrency=1)], body)


def test_a_paused_stream_blocks_the_handler_and_cancel_kills_it():
    async def body(pool, pids):
        s = await pool.invoke("stream_forever", {})
        got = []
        s.start(got.append, lambda err: None)
        s.pause(True)
        await asyncio.sleep(0.3)
        held = len(got)
        await asyncio.sleep(0.5)
        assert len(got) == held          # not read while paused: the handler's writes block
        s.pause(False)
        await asyncio.sleep(0.3)
        assert len(got) > held
        s.cancel()
        await asyncio.sleep(0.1)
        assert pool.stats()["stream_forever"]["processes"] == 0
    with_pool([spec("stream_forever", concurrency=1)], body)


def test_the_function_timeout_covers_the_whole_stream():
    async def body(pool, pids):
        s = await pool.invoke("stream_forever", {})
        chunks, end = await drain(s)
        assert chunks and end.kind == "function_timeout"
        assert pool.stats()["stream_forever"]["processes"] == 0
    with_pool([spec("stream_forever", concurrency=1, timeout_ms=400)], body)


# --- batches: the calls that arrive together for a busy function share one write ---------

def _records(tmp_path, **kw):
    log = tmp_path / "calls.log"
    log.touch()

    def event(i, **extra):
        return {"log": str(log), "id": i, **extra}

    def ran():
        return log.read_text().split()
    return spec("records", **kw), event, ran


def test_a_batch_behind_a_hung_call_runs_elsewhere_once(tmp_path):
    fn, event, ran = _records(tmp_path, concurrency=1, timeout_ms=500)

    async def body(pool, pids):
        await pool.warm("records")
        [first_pid] = pool.pids("records")
        pids.append(first_pid)
        # one loop turn: the warm process takes all three in one batch
        calls = [asyncio.ensure_future(pool.invoke("records", event(i, seconds=60 if i == "1" else 0)))
                 for i in "123"]
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(done[0], FunctionError) and done[0].kind == "function_timeout"
        assert [d["id"] for d in done[1:]] == ["2", "3"]
        assert {d["pid"] for d in done[1:]} != {first_pid}     # a fresh process ran them
        pids.extend(d["pid"] for d in done[1:])
        assert sorted(ran()) == ["1", "2", "3"]                 # each ran once
        assert not alive(first_pid)
    with_pool([fn], body)


def test_a_crash_mid_batch_fails_one_call_and_the_rest_run_once(tmp_path):
    fn, event, ran = _records(tmp_path, concurrency=1, timeout_ms=5000)

    async def body(pool, pids):
        await pool.warm("records")
        calls = [asyncio.ensure_future(pool.invoke("records", event("1"))),
                 asyncio.ensure_future(pool.invoke("records", event("2", exit=True))),
                 asyncio.ensure_future(pool.invoke("records", event("3"))),
                 asyncio.ensure_future(pool.invoke("records", event("4", **{"raise": True}))),
                 asyncio.ensure_future(pool.invoke("records", event("5")))]
        done = await asyncio.gather(*calls, return_exceptions=True)
        assert done[0]["id"] == "1"
        assert isinstance(done[1], FunctionError) and done[1].kind == "crashed"
        assert done[2]["id"] == "3" and done[4]["id"] == "5"
        assert isinstance(done[3], FunctionError) and done[3].kind == "raised"
        assert done[2]["pid"] == done[4]["pid"] != done[0]["pid"]   # a raise keeps the process
        pids.append(done[4]["pid"])
        assert sorted(ran()) == ["1", "2", "3", "4", "5"]
    with_pool([fn], body)


def test_a_call_past_its_integration_deadline_in_a_batch_is_answered_and_never_run(tmp_path):
    fn, event, ran = _records(tmp_path, concurrency=1, timeout_ms=5000)

    async def body(pool, pids):
        await pool.warm("records")
        slow = asyncio.ensure_future(pool.invoke("records", event("1", seconds=0.6)))
        late = asyncio.ensure_future(pool.invoke("records", event("2"), timeout_ms=200))
        with pytest.raises(FunctionError) as info:
            await asyncio.wait_for(late, 0.45)        # at its deadline, not after the slow call
        assert info.value.kind == "timeout"
        out = await slow
        after = await pool.invoke("records", event("3"))
        assert after["pid"] == out["pid"]             # the process stayed warm
        pids.append(out["pid"])
        assert ran() == ["1", "3"]                    # the runner skipped the expired call
    with_pool([fn], body)


def test_large_events_in_one_turn_each_get_their_own_answer():
    # 3 x 700 KB: more than a batch's byte cap and than the socket buffer (partial writes)
    async def body(pool, pids):
        await pool.warm("echo")
        events = [{"i": i, "pad": str(i) * 700_000} for i in range(3)]
        outs = await asyncio.gather(*[pool.invoke("echo", e) for e in events])
        assert [o["event"] for o in outs] == events
        pids.extend({o["pid"] for o in outs})
    with_pool([spec("echo", concurrency=1)], body)
