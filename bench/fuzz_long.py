#!/usr/bin/env python3
"""The long run of the hardening suite's request fuzzer (tests/request_fuzz.py), and of the
concurrent-upload smuggling check, against one running gateway.

Starts a RecordingUpstream (tests/strict_http.py: strict h11, records every request) and
`fastgate serve` with a pooled and a keepalive-0 upstream group in front of it, then runs
--batches hypothesis batches of --examples drawn exchanges each (a batch stops at its first
failure, shrinks it and reports it; the next batch draws afresh), then --upload-rounds rounds
of --uploads concurrent uploads of --upload-size bytes with a request line hidden at 64 KiB
(half with Expect: 100-continue) on new upstream connections, as issue 11 reported them.
Reports examples and requests run, what the upstream recorded, each distinct failure, worker
restarts and exceptions in the gateway's log.

Usage:  .venv/bin/python bench/fuzz_long.py [--batches 10] [--examples 300] [--workers 2] [--json]
Exit status 1 when anything failed.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "e2e")]
# the test suite's own process handling: a gateway on free loopback ports, stopped by PID
from conftest import Gateway  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as hypothesis_seed  # noqa: E402
from request_fuzz import check_exchange, concurrent_uploads, exchanges, gateway_config  # noqa: E402
from strict_http import RecordingUpstream  # noqa: E402


def first_line(e: BaseException) -> str:
    """The failure in one line; the shrunk example hypothesis attached goes to stderr."""
    text = str(e).splitlines()[0] if str(e) else ""
    for note in getattr(e, "__notes__", ()):
        print(f"  {note}", file=sys.stderr)
    return f"{type(e).__name__}: {text[:240]}"


def run_batch(port: int, rec: RecordingUpstream, n: int, batch_seed: int, counts: dict,
              shrink: bool, pipelining: bool) -> list[str]:
    """n drawn exchanges; the first line of each distinct (shrunk) failure."""
    phases = list(Phase) if shrink else [Phase.generate]

    @hypothesis_seed(batch_seed)
    @settings(max_examples=n, deadline=None, database=None, print_blob=False, phases=phases,
              suppress_health_check=list(HealthCheck))
    @given(ex=exchanges())
    def batch(ex):
        ex["pipelined"] = ex["pipelined"] and pipelining
        counts["examples"] += 1
        counts["requests"] += len(ex["requests"])
        check_exchange(port, rec, ex)
    try:
        batch()
    except BaseExceptionGroup as group:   # hypothesis found several distinct failures
        return [first_line(e) for e in group.exceptions]
    except Exception as e:   # noqa: BLE001 -- reported, and the next batch goes on
        return [first_line(e)]
    return []


def upload_rounds(port: int, rec: RecordingUpstream, rounds: int, uploads: int, size: int) -> dict:
    failed, bad_rounds = [], 0
    for r in range(rounds):
        found = concurrent_uploads(port, rec, f"long{r}-", uploads, size)
        bad_rounds += bool(found)
        failed += found
        print(f"upload round {r + 1}/{rounds}: {len(found)} failures", file=sys.stderr, flush=True)
    return {"rounds": rounds, "uploads": rounds * uploads, "failed_rounds": bad_rounds,
            "failures": len(failed), "first_failures": failed[:3]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--examples", type=int, default=300, help="examples per batch")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--upload-rounds", type=int, default=10)
    ap.add_argument("--uploads", type=int, default=40)
    ap.add_argument("--upload-size", type=int, default=1 << 20)
    ap.add_argument("--no-shrink", action="store_true",
                    help="report failing examples as drawn (shrinking one costs minutes)")
    ap.add_argument("--no-pipelining", action="store_true",
                    help="send each exchange's requests one by one (to look past a known "
                         "pipelining bug)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # stop the gateway on the way out

    rec = RecordingUpstream()
    g = Gateway(Path(tempfile.mkdtemp(prefix="fuzz_long-")), workers=args.workers, admin=False, config=gateway_config(rec.url))
    workers = g.workers()
    counts = {"examples": 0, "requests": 0}
    failures: list[str] = []
    failed_batches = 0
    t0 = time.monotonic()
    try:
        for b in range(args.batches):
            found = run_batch(g.port, rec, args.examples, args.seed + b, counts, not args.no_shrink,
                              not args.no_pipelining)
            print(f"batch {b + 1}/{args.batches} (seed {args.seed + b}): "
                  f"{'; '.join(found) or 'ok'}", file=sys.stderr, flush=True)
            failed_batches += bool(found)
            failures += found
        fuzz_s = time.monotonic() - t0
        t1 = time.monotonic()
        uploads = upload_rounds(g.port, rec, args.upload_rounds, args.uploads, args.upload_size)
        upload_s = time.monotonic() - t1
        restarted = g.workers() != workers
    finally:
        g.p.proc.send_signal(15)
        log = g.p.proc.communicate(timeout=30)[0]
        rec.stop()
    report = {
        "seed": args.seed, "workers": args.workers, "pipelining": not args.no_pipelining,
        "batches": args.batches, "failed_batches": failed_batches,
        "distinct_failures": sorted(set(failures)),
        "examples": counts["examples"], "requests": counts["requests"], "fuzz_s": round(fuzz_s, 1),
        "upstream_recorded": len(rec.requests), "upstream_errors": len(rec.errors),
        "upstream_incomplete": len(rec.incomplete),
        "uploads": uploads, "upload_s": round(upload_s, 1),
        "worker_restarted": restarted,
        "tracebacks": log.count("Traceback") + log.count("Exception ignored"),
    }
    print(json.dumps(report, indent=None if args.json else 2))
    bad = failures or uploads["failures"] or restarted or report["tracebacks"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
