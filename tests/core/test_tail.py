"""fastgate._core.tail: the shared-memory ring of recent requests across forked writers."""
import os

import pytest

from fastgate._core import tail
from fastgate._core.clock import monotonic_s
from fastgate._core.pipeline import ApiStage, RequestContext, Route
from fastgate._core.tail import TailRing
from tests.core.test_metrics import _fork   # fork, run, os._exit with its outcome


def test_compiled_module_is_loaded():
    assert tail.__file__.endswith(".so"), tail.__file__


def test_capacity_must_be_a_power_of_two():
    for bad in (0, 1, 3, 1000, 1 << 21):
        with pytest.raises(ValueError):
            TailRing.create(bad)
    with pytest.raises(TypeError):
        TailRing()


def test_record_copies_the_context_fields():
    ring = TailRing.create(8)
    ctx = RequestContext()
    now = monotonic_s()
    ctx.method = b"POST"
    ctx.path = b"/prod/pets/42"
    ctx.request_id = b"0f8fad5b-d9cb-469f-a165-70867728950e"
    ctx.source_ip = b"10.9.8.7"
    ctx.client_ip = b"192.0.2.7"   # the client a trusted proxy named wins over the TCP peer
    ctx.status = 502
    ctx.error_type = "INTEGRATION_FAILURE"
    ctx.request_length = 11
    ctx.response_length = 36
    ctx.request_time_ms = 1_790_000_000_123
    ctx.start = now - 0.0125
    ctx.end = now
    ctx.integration_start = now - 0.010
    ctx.integration_end = now - 0.002
    ctx.route = Route(route_key="POST /pets/{id}")
    ctx.api = ApiStage(api_id="a1b2c3d4e5", stage="prod")
    ring.record_ctx(ctx, 3, b"key-id-1")
    seq, entries, lost = ring.read_since(0)
    assert (seq, lost) == (1, 0)
    (e,) = entries
    assert e == {
        "seq": 0, "time_ms": 1_790_000_000_123, "worker": 3, "method": "POST", "status": 502,
        "latency_us": 12500, "integration_us": 8000, "bytes_in": 11, "bytes_out": 36,
        "request_id": "0f8fad5b-d9cb-469f-a165-70867728950e", "route": "POST /pets/{id}",
        "path": "/prod/pets/42", "api": "a1b2c3d4e5", "stage": "prod", "key_id": "key-id-1",
        "error_type": "INTEGRATION_FAILURE", "source_ip": "192.0.2.7"}


def test_record_of_an_unrouted_request_without_integration():
    ring = TailRing.create(8)
    ctx = RequestContext()    # nothing filled: no route, no API, no key, no integration
    ctx.source_ip = b"::1"
    ctx.status = 404
    ring.record_ctx(ctx)
    (e,) = ring.read_since(0)[1]
    assert (e["route"], e["api"], e["stage"], e["key_id"], e["error_type"]) == ("", "", "", "", "")
    assert e["integration_us"] is None
    assert e["source_ip"] == "::1"    # no client_ip: the TCP peer


def test_fields_are_truncated_to_their_width():
    ring = TailRing.create(4)
    ring.write(request_id=b"r" * 100, route="GET /" + "é" * 100, path=b"/" + b"p" * 300,
               stage=b"s" * 40, key_id=b"k" * 50, error="E" * 40, ip=b"1" * 60, method=b"PROPFIND-LONG")
    (e,) = ring.read_since(0)[1]
    assert e["request_id"] == "r" * 36
    assert len(e["path"]) == 128 and len(e["stage"]) == 32 and len(e["key_id"]) == 32
    assert e["error_type"] == "E" * 32 and len(e["source_ip"]) == 46 and e["method"] == "PROPFIND"
    # 96 bytes of UTF-8: "GET /" + 45 "é" (90 bytes) + the first byte of the 46th, replaced
    assert e["route"] == "GET /" + "é" * 45 + "\ufffd"


def test_read_since_returns_only_new_entries_in_order():
    ring = TailRing.create(16)
    for i in range(5):
        ring.write(status=200 + i)
    seq, entries, lost = ring.read_since(0)
    assert seq == 5 and lost == 0 and [e["status"] for e in entries] == [200, 201, 202, 203, 204]
    assert ring.read_since(seq) == (5, [], 0)
    ring.write(status=299)
    seq2, entries, lost = ring.read_since(seq)
    assert seq2 == 6 and [e["seq"] for e in entries] == [5] and entries[0]["status"] == 299
    # a seq from the future (another ring, a restarted gateway) starts over at the head
    assert ring.read_since(1000) == (6, [], 0)


def test_overrun_is_counted_and_the_newest_entries_kept():
    ring = TailRing.create(8)
    for i in range(30):
        ring.write(status=100 + i)
    seq, entries, lost = ring.read_since(0)
    assert seq == 30
    assert lost == 22                      # 30 written, only the last 8 still in the ring
    assert [e["status"] for e in entries] == [100 + i for i in range(22, 30)]
    assert [e["seq"] for e in entries] == list(range(22, 30))


def _write_many(ring, writer, n):
    # every field derives from (writer, i): a torn copy (fields of two entries) shows
    for i in range(n):
        ring.write(worker_id=writer, status=100 + i % 500, latency_us=writer * 10_000_000 + i,
                   request_id=f"{writer}-{i}".encode(), path=f"/w{writer}/{i}".encode(),
                   route=f"GET /w{writer}/{i}" + "x" * (i % 60), bytes_in=i, bytes_out=writer)


def _check_whole(e):
    w, i = e["worker"], e["bytes_in"]
    assert e["bytes_out"] == w
    assert e["latency_us"] == w * 10_000_000 + i
    assert e["status"] == 100 + i % 500
    assert e["request_id"] == f"{w}-{i}"
    assert e["path"] == f"/w{w}/{i}"
    assert e["route"] == f"GET /w{w}/{i}" + "x" * (i % 60)
    return w, i


@pytest.mark.parametrize("capacity", [4096, 64])
def test_forked_writers_and_a_concurrent_reader(capacity):
    """Four processes write through one ring while this one reads: every entry read is
    whole, tickets come in order, each writer's entries in its own order, and every
    ticket is either read or counted lost (with a 64-slot ring, many are overrun)."""
    writers, per_writer = 4, 5000
    ring = TailRing.create(capacity)
    pids = [_fork(lambda w=w: _write_many(ring, w, per_writer)) for w in range(writers)]
    seq, seen, lost_total, last_i = 0, 0, 0, {}
    running = set(pids)
    try:
        while True:
            for pid in list(running):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    running.discard(pid)
                    assert os.waitstatus_to_exitcode(status) == 0
            finished = not running     # read once more after the last writer ended
            new_seq, entries, lost = ring.read_since(seq)
            seqs = [e["seq"] for e in entries]
            assert seqs == sorted(seqs) and all(seq <= s < new_seq for s in seqs)
            assert len(entries) + lost == new_seq - seq, "every ticket is read or counted lost"
            for e in entries:
                w, i = _check_whole(e)
                assert i > last_i.get(w, -1), "a writer's entries out of order"
                last_i[w] = i
            seen += len(entries)
            lost_total += lost
            seq = new_seq
            if finished:
                break
    finally:
        for pid in running:
            os.waitpid(pid, 0)
    assert ring.head == writers * per_writer
    assert seen + lost_total == writers * per_writer
    if capacity >= writers * per_writer // 4:
        # the reader keeps up with a big ring: at most the rare busy/dropped slot is lost
        assert seen >= writers * per_writer * 0.9
    assert seen > 0


def test_install_is_inherited_by_forked_children():
    ring = TailRing.create(8)
    tail.install(ring)
    try:
        assert tail.installed() is ring
        pid = _fork(lambda: tail.installed().write(status=418))
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert [e["status"] for e in ring.read_since(0)[1]] == [418]
    finally:
        tail.install(None)
    assert tail.installed() is None
