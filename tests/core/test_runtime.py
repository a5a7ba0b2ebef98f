"""fastgate/_core/runtime.pyx: a worker's runtime (the rest is in tests/e2e)."""

import re

from fastgate._core.router import Router
from fastgate._core.runtime import Worker
from fastgate._core.snapshot import Snapshot


def test_request_ids_are_version_4_uuids_unique_per_worker():
    w1 = Worker(Snapshot(router=Router(), routes=[]), None)
    w2 = Worker(Snapshot(router=Router(), routes=[]), None)
    ids = [w1.request_id() for _ in range(1000)] + [w2.request_id() for _ in range(1000)]
    assert len(set(ids)) == 2000
    uuid4 = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert all(uuid4.match(i) for i in ids)
    assert ids[0][:19] != ids[1000][:19]   # random per-process prefix
