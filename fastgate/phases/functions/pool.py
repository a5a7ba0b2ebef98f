"""Warm handler processes for function integrations, owned by one gateway worker.

Each gateway worker owns one :class:`FunctionPool` (docs/functions.md says
why: no broker hop, no shared state across forks).  Per function the pool
keeps up to ``concurrency`` handler processes, each a fresh interpreter
running ``python -m fastgate.phases.functions.runner`` that serves one call at a time
and stays warm between calls.  When all are busy a call waits in a bounded
queue; past the queue it is throttled, as Lambda throttles.

Calls travel in batches: the calls for a busy function that arrive while its
processes work are written to the next free process in one frame burst, and
the process answers each as it finishes (in order, one at a time).  A batch
is sent at the end of the event loop's iteration, so the calls of one burst
of client requests share one write and one wake-up of the handler process
(PERF: bench/wrk_functions.py; writing each call on its own woke the handler
per call and cost a context switch each way).  The pool learns when a call
starts from its predecessor's answer, so every deadline counts from no
earlier than the real start.  When a process dies or is killed mid-batch,
the call it was running fails and the calls behind it, which it never
started, go back to the front of the queue.

A call that raises leaves its process warm.  A call that runs past its
timeout, runs out of memory or kills its process loses the process (killed,
reaped, replaced on demand); the error is a :class:`FunctionError` and no
other call notices.

    pool = FunctionPool([FunctionSpec(name="pets", handler="app:handler", paths=("/srv/fn",))])
    result = await pool.invoke("pets", event, timeout_ms=29000, request_id=rid)
    pool.submit("pets", event, 29000, rid, done)   # the same without a task: done(result, error)
    ...
    await pool.close()
"""

from __future__ import annotations

import asyncio
import collections
import math
import os
import socket
import subprocess
import sys
import uuid
from typing import Annotated

import msgspec
import orjson
from msgspec import Meta

from fastgate._core.fncall import DEFAULT_ACCOUNT_ID
from fastgate.observability.log import log as _log
from fastgate.phases.functions.errors import FunctionError
from fastgate.phases.functions.loader import parse_handler

__all__ = ["FunctionPool", "FunctionSpec", "FunctionStream"]


def log(msg: str) -> None:
    _log(f"functions: {msg}")


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One local function.  Fields marked (process) start new handler processes
    when a reload changes them; the others apply to the next call."""

    name: str
    handler: str                                        # (process) "module:callable"
    paths: tuple[str, ...] = ()                         # (process) searched before site-packages
    environment: dict[str, str] = {}                    # (process) extra environment variables
    memory_mb: Annotated[int, Meta(ge=16)] = 128        # (process) RLIMIT_AS above the interpreter
    region: str = "us-east-1"                           # (process) for the ARN and AWS_REGION
    account_id: str = DEFAULT_ACCOUNT_ID                # (process) for the ARN
    concurrency: Annotated[int, Meta(ge=1)] = 4         # handler processes at most
    timeout_ms: Annotated[int, Meta(ge=1)] = 3000       # the function's own timeout (Lambda's default 3 s)
    queue: Annotated[int, Meta(ge=0)] = 64              # calls waiting for a busy function

    def __post_init__(self):
        parse_handler(self.handler)     # a bad name fails at config time, not per call

    def process_key(self) -> tuple:
        return (self.handler, self.paths, tuple(sorted(self.environment.items())),
                self.memory_mb, self.region, self.account_id)


MAX_BATCH = 64               # calls written to one handler process at once
MAX_BATCH_BYTES = 1 << 20    # and their frames' size (1 MiB; a batch holds at least one call)
_RECV_BYTES = 256 * 1024     # read size: a batch's answers arrive in one recv


class _Call:
    """One invocation, from submit() until ``done(result, error)`` is called."""

    __slots__ = ("frame", "done", "request_id", "expires", "abandoned")

    def __init__(self, frame: bytes, done, request_id: str, expires: float):
        self.frame = frame            # length-prefixed, ready to write
        self.done = done              # done(result, None) or done(None, FunctionError)
        self.request_id = request_id
        self.expires = expires        # the integration deadline (loop time; inf: none)
        self.abandoned = False        # answered (a timeout) or its caller went away: drop the reply

    def finish(self, result, error) -> None:
        if not self.abandoned:
            self.abandoned = True
            self.done(result, error)


class _Process:
    """One handler process and the pool's end of its socket (non-blocking, read by
    a loop reader, written directly: one write per batch)."""

    __slots__ = ("proc", "sock", "fd", "generation", "fn", "pool", "buffer", "inflight",
                 "outbox", "outbox_bytes", "pending_write", "head_start", "sink", "ready",
                 "closed", "reading")

    def __init__(self, pool, fn, generation):
        self.pool = pool
        self.fn = fn
        self.generation = generation
        self.proc = None
        self.sock = None
        self.fd = -1
        self.buffer = bytearray()
        self.inflight: collections.deque[_Call] = collections.deque()   # sent or to send, in order
        self.outbox: list[bytes] = []     # frames of the batch being assembled (written at flush)
        self.outbox_bytes = 0
        self.pending_write = b""          # what a full socket buffer did not take yet
        self.head_start = 0.0             # loop time inflight[0] started (at the latest)
        self.sink = None                  # a stream's frame callback while it owns the process
        self.ready = None                 # the "ready" frame's future while starting
        self.closed = False
        self.reading = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def attach(self, sock) -> None:
        if self.closed:          # killed while it was being spawned
            sock.close()
            return
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.read(True)

    def read(self, on: bool) -> None:
        """Watch the socket (or stop: a paused stream holds its handler back)."""
        if on != self.reading and not self.closed:
            self.reading = on
            loop = self.pool._loop
            if on:
                loop.add_reader(self.fd, self.readable)
            else:
                loop.remove_reader(self.fd)

    def readable(self) -> None:
        """Take every frame the socket holds (also called before a deadline is judged,
        so an answer already sent is never mistaken for a hang)."""
        if self.closed or self.sock is None:
            return
        buffer = self.buffer
        while True:
            try:
                data = self.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                data = b""
            if not data:
                self._frames()
                if not self.closed:
                    self.pool._lost(self)
                return
            buffer += data
            if len(data) < _RECV_BYTES:
                break
        self._frames()

    def _frames(self) -> None:
        buffer = self.buffer
        while len(buffer) >= 4 and not self.closed:
            end = 4 + int.from_bytes(buffer[:4], "big")
            if len(buffer) < end:
                break
            frame = bytes(buffer[4:end])
            del buffer[:end]
            if self.sink is not None:
                self.sink(frame)
            elif self.ready is not None:
                ready, self.ready = self.ready, None
                if not ready.done():
                    ready.set_result(frame)
            else:
                self.pool._answer(self, frame)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.pending_write:
            try:
                sent = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                return        # the reader sees the end and fails the calls
            if sent == len(data):
                return
            data = data[sent:]
            self.pool._loop.add_writer(self.fd, self._writable)
        self.pending_write += data

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self.pending_write)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(self.pending_write)
        self.pending_write = self.pending_write[sent:]
        if not self.pending_write:
            self.pool._loop.remove_writer(self.fd)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.sock is not None:
            loop = self.pool._loop
            if self.reading:
                loop.remove_reader(self.fd)
            if self.pending_write:
                loop.remove_writer(self.fd)
            self.sock.close()
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(EOFError("handler process closed its socket"))


class _Function:
    __slots__ = ("spec", "generation", "idle", "live", "waiting", "retired", "assembling", "streams")

    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.generation = 0
        self.idle: list[_Process] = []
        self.live = 0                # processes alive or being started
        self.waiting: collections.deque[_Call] = collections.deque()   # queued for a free process
        self.retired = False
        self.assembling: _Process | None = None   # a batch not yet written: more calls may join
        self.streams = False         # the handler has streamed: one call per batch from then on


class FunctionStream:
    """A streamed result (a generator handler): its head, then chunks as the handler yields them.

    ``invoke`` returns one instead of a result when the handler streams.  The
    handler process stays with this call until the stream ends: ``start``
    delivers each chunk (bytes) to ``on_chunk`` and then calls ``on_end`` once,
    with None when the handler finished or a FunctionError when it raised,
    crashed or ran past the function's timeout (which covers the whole
    stream).  ``pause`` stops reading the process's socket, so a slow client
    holds the handler back (its writes block) instead of filling memory.
    ``cancel`` (the client went away) kills the process.
    """

    def __init__(self, pool, fn, process, head, deadline: float, what: str):
        self.head = head            # {"statusCode", "headers", "cookies"}, as the handler yielded it
        self.name = what           # "function request-id", for logs
        self._pool, self._fn, self._process = pool, fn, process
        self._on_chunk = self._on_end = None
        self._early: list = []      # frames that came before start()
        self._done = False
        self._timeout_ms = fn.spec.timeout_ms
        self._timer = pool._loop.call_at(deadline, self._expired)
        process.sink = self._frame

    def start(self, on_chunk, on_end) -> None:
        self._on_chunk, self._on_end = on_chunk, on_end
        early, self._early = self._early, None
        for frame in early:
            self._frame(frame)

    def pause(self, paused: bool) -> None:
        if not self._done:
            self._process.read(not paused)

    def cancel(self) -> None:
        """The client is gone: stop the handler (its process is killed, not reused).
        ``on_end`` is not called: there is nobody left to tell."""
        self._on_end = None
        self._finish(False, None)

    def _frame(self, frame: bytes | None) -> None:
        if self._done:
            return
        if self._early is not None:
            self._early.append(frame)
            return
        if frame is None:
            self._finish(False, FunctionError("crashed", "handler process exited mid-stream"))
        elif frame[:1] == b"\0":
            self._on_chunk(frame[1:])
        else:
            end = orjson.loads(frame)
            if end.get("end"):
                self._finish(True, None)
            else:
                error = end["error"]
                self._finish(end["kind"] != "memory",
                             FunctionError(end["kind"], f"{error['errorType']}: {error['errorMessage']}", error))

    def _expired(self) -> None:
        log(f"{self.name}: Task timed out after {self._timeout_ms / 1000:.2f} seconds mid-stream; "
            f"killing process {self._process.pid}")
        self._finish(False, FunctionError("function_timeout", f"stream not finished within {self._timeout_ms} ms"))

    def _finish(self, healthy: bool, error) -> None:
        if self._done:
            return
        self._done = True
        self._timer.cancel()
        self._pool._stream_done(self._fn, self._process, healthy)
        if self._on_end is not None:
            self._on_end(error)


class FunctionPool:
    """Handler processes for a set of functions, in the calling event loop."""

    def __init__(self, specs=(), *, python: str = sys.executable):
        self.python = python
        self._functions: dict[str, _Function] = {}
        self._reaping: set[asyncio.Task] = set()
        self._processes: set[_Process] = set()     # every live handler process, idle or busy
        self._closed = False
        self._event_loop = None
        self._assembled: list[_Process] = []     # processes with a batch to write at _flush
        self._flush_soon = False
        self._timer = None                       # the pool's one deadline timer
        self._timer_when = math.inf
        self.configure(specs)

    @property
    def _loop(self):
        # the loop of the first call (the pool may be built before the worker's loop runs)
        if self._event_loop is None:
            self._event_loop = asyncio.get_running_loop()
        return self._event_loop

    # --- configuration -------------------------------------------------------

    def configure(self, specs) -> None:
        """Apply a new set of functions (a reload).  Unchanged functions keep
        their warm processes; a changed handler, path, memory or environment
        retires the old processes (idle ones now, busy ones when their call
        ends); removed functions finish their calls and go."""
        new = {}
        for spec in specs:
            if spec.name in new:
                raise ValueError(f"function {spec.name!r} is defined twice")
            new[spec.name] = spec
        for name, fn in list(self._functions.items()):
            spec = new.get(name)
            if spec is None:
                fn.retired = True
                self._drop_idle(fn)
                del self._functions[name]
                waiting, fn.waiting = fn.waiting, collections.deque()
                for call in waiting:
                    call.finish(None, FunctionError("service", f"Function not found: {name}"))
                continue
            if spec.process_key() != fn.spec.process_key():
                fn.generation += 1
                self._drop_idle(fn)
            fn.spec = spec
            self._wake(fn)
        for name, spec in new.items():
            if name not in self._functions:
                self._functions[name] = _Function(spec)

    def function_names(self) -> list[str]:
        return list(self._functions)

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: {"processes": fn.live, "idle": len(fn.idle), "queued": len(fn.waiting)}
                for name, fn in self._functions.items()}

    def pids(self, function_name: str) -> list[int]:
        """The idle processes' ids (tests use them to check warm reuse)."""
        return [p.pid for p in self._functions[function_name].idle]

    # --- calls ----------------------------------------------------------------

    async def invoke(self, function_name: str, event, *, timeout_ms: int | None = None,
                     request_id: str | None = None):
        """Run the function's handler on ``event`` and return its result.

        ``timeout_ms`` is the integration timeout: it covers queueing, a cold
        start and the call, and running out of it is a "timeout" (504).  The
        function's own ``timeout_ms`` counts from when the handler starts;
        running out of that is a "function_timeout" (502), as on Lambda.
        Raises :class:`FunctionError`.
        """
        future = self._loop.create_future()

        def done(result, error):
            if not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(error)

        call = self.submit(function_name, event, timeout_ms, request_id, done)
        try:
            return await future
        except asyncio.CancelledError:
            # the caller is gone: its reply, when it comes, is dropped (a stream is cancelled)
            call.abandoned = True
            fn = self._functions.get(function_name)
            if fn is not None and call in fn.waiting:
                fn.waiting.remove(call)
            raise

    def submit(self, function_name: str, event, timeout_ms: int | None, request_id: str | None,
               done) -> _Call:
        """Start a call; ``done(result, None)`` or ``done(None, FunctionError)`` is called
        once, later (never from inside submit), as invoke() describes."""
        loop = self._loop
        fn = self._functions.get(function_name)
        request_id = request_id or str(uuid.uuid4())
        expires = math.inf if timeout_ms is None else loop.time() + timeout_ms / 1000
        try:
            if fn is None or self._closed:
                raise FunctionError("service", f"Function not found: {function_name}")
            # the runner starts the function's clock itself and skips a call whose
            # integration deadline passed before it got to it
            frame = b'{"request_id":%s,"timeout_ms":%d,"expires_ms":%d,"event":%s}' % (
                orjson.dumps(request_id), fn.spec.timeout_ms,
                # the loop's clock is CLOCK_MONOTONIC, one clock for every process (and
                # immune to wall-clock steps): the runner skips exactly what we time out
                0 if timeout_ms is None else int(expires * 1000),
                orjson.dumps(event))
        except (FunctionError, TypeError) as error:
            if not isinstance(error, FunctionError):
                error = FunctionError("service", f"event is not JSON: {error}")
            call = _Call(b"", done, request_id, expires)
            loop.call_soon(call.finish, None, error)
            return call
        call = _Call(len(frame).to_bytes(4, "big") + frame, done, request_id, expires)
        self._place(fn, call)
        return call

    def _place(self, fn: _Function, call: _Call) -> None:
        while fn.idle:
            process = fn.idle.pop()      # LIFO: the most recently used process is the warmest
            if not process.closed:
                self._batch(fn, process, [call])
                return
            self._forget(fn, process)
        assembling = fn.assembling
        if fn.live < fn.spec.concurrency:
            fn.live += 1
            self._spawn(fn, call)
        elif (assembling is not None and len(assembling.inflight) < MAX_BATCH
              and assembling.outbox_bytes + len(call.frame) <= MAX_BATCH_BYTES
              and not fn.streams and not assembling.closed):
            self._batch(fn, assembling, (call,))
        elif len(fn.waiting) >= fn.spec.queue:
            call.abandoned = True
            self._loop.call_soon(call.done, None, FunctionError(
                "throttled", f"{fn.spec.concurrency} processes busy, {len(fn.waiting)} calls queued"))
        else:
            fn.waiting.append(call)
            self._arm(call.expires)

    def _batch(self, fn: _Function, process: _Process, calls) -> None:
        """Give an idle process its next calls; they are written at the loop's next turn."""
        for call in calls:
            process.inflight.append(call)
            process.outbox.append(call.frame)
            process.outbox_bytes += len(call.frame)
            self._arm(call.expires)
        if fn.assembling is process:
            return          # joined a batch already due to be written
        fn.assembling = process
        self._assembled.append(process)
        if not self._flush_soon:
            self._flush_soon = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        assembled, self._assembled = self._assembled, []
        for process in assembled:
            process.fn.assembling = None
            if process.outbox:
                frames, process.outbox = process.outbox, []
                process.outbox_bytes = 0
                process.head_start = now = self._loop.time()
                self._arm(now + process.fn.spec.timeout_ms / 1000)
                process.write(b"".join(frames))

    def _answer(self, process: _Process, frame: bytes) -> None:
        """An answer to the call at the head of ``process``'s batch."""
        fn = process.fn
        if not process.inflight:
            log(f"{fn.spec.name}: process {process.pid} answered a call it was not given; killing it")
            self._fail(fn, process, None)
            return
        call = process.inflight.popleft()
        started = process.head_start
        process.head_start = now = self._loop.time()     # the next call starts no earlier
        reply = orjson.loads(frame)
        if "result" in reply:
            call.finish(reply["result"], None)
        elif "stream" in reply:
            fn.streams = True
            # the process stays this call's until the stream ends (FunctionStream gives it back)
            stream = FunctionStream(self, fn, process, reply["stream"],
                                    started + fn.spec.timeout_ms / 1000,
                                    f"{fn.spec.name} {call.request_id}")
            if call.abandoned:
                stream.cancel()
            else:
                call.finish(stream, None)
            return
        elif reply.get("kind") == "skipped":
            call.finish(None, FunctionError("timeout", "queued past the integration timeout"))
        else:
            kind, error = reply["kind"], reply["error"]
            call.finish(None, FunctionError(kind, f"{error['errorType']}: {error['errorMessage']}", error))
            if kind == "memory":      # a process out of memory exits by itself, after this answer
                self._fail(fn, process, None)
                return
        if process.inflight:
            self._arm(now + fn.spec.timeout_ms / 1000)
        else:
            self._release(fn, process)

    def _stream_done(self, fn: _Function, process: _Process, healthy: bool) -> None:
        process.sink = None
        if not healthy:
            self._fail(fn, process, None)
            return
        process.read(True)
        process.head_start = self._loop.time()
        if process.inflight:
            self._arm(process.head_start + fn.spec.timeout_ms / 1000)
            process._frames()       # answers that came behind the stream's end
        else:
            self._release(fn, process)

    def _release(self, fn: _Function, process: _Process) -> None:
        """``process`` finished its batch: the next batch, or the idle list, or retirement."""
        if fn.retired or self._closed or process.closed or process.generation != fn.generation:
            self._forget(fn, process)
            return
        waiting = fn.waiting
        if waiting:
            # share the queue among the busy processes: a slow call holds back only its batch
            take = 1 if fn.streams else min(MAX_BATCH, -(-len(waiting) // max(fn.live, 1)))
            batch, size = [], 0
            while waiting and len(batch) < take and (
                    not batch or size + len(waiting[0].frame) <= MAX_BATCH_BYTES):
                call = waiting.popleft()
                if not call.abandoned:
                    batch.append(call)
                    size += len(call.frame)
            if batch:
                self._batch(fn, process, batch)
                return
        fn.idle.append(process)

    def _fail(self, fn: _Function, process: _Process, error) -> None:
        """``process`` is gone or must go: its running call gets ``error`` (None: it has
        its answer already), the calls behind it -- never started, the runner takes
        them in order -- return to the front of the queue."""
        calls = process.inflight
        process.inflight = collections.deque()
        process.outbox = []
        process.outbox_bytes = 0
        if error is not None and calls:
            calls.popleft().finish(None, error)
        for call in reversed(calls):
            if not call.abandoned:
                fn.waiting.appendleft(call)
        self._forget(fn, process)

    def _lost(self, process: _Process) -> None:
        """The process closed its socket (it exited, or was killed)."""
        fn = process.fn
        if process.sink is not None:
            sink, process.sink = process.sink, None
            sink(None)       # the stream fails; it hands the process back as unhealthy
            return
        if process.ready is not None:
            process.close()  # a start in progress: _start reports it
            return
        if process in fn.idle:
            fn.idle.remove(process)
        head = process.inflight.popleft() if process.inflight else None
        self._fail(fn, process, None)
        if head is not None and not head.abandoned:
            async def report():
                code = await self._exit_code(process)
                log(f"{fn.spec.name} {head.request_id}: process {process.pid} exited ({code}) during the call")
                head.finish(None, FunctionError("crashed", f"handler process exited with status {code}"))
            self._track(self._loop.create_task(report()))

    # --- deadlines: one timer per pool ----------------------------------------------

    def _arm(self, when: float) -> None:
        if when < self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = when
            self._timer = self._loop.call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        """Time out what is due (queued calls, running calls, starts), then re-arm at the
        next deadline.  Under load this runs about once per function timeout."""
        self._timer = None
        self._timer_when = math.inf
        now = self._loop.time()
        soonest = math.inf
        for fn in self._functions.values():
            for call in [c for c in fn.waiting if c.expires <= now]:
                fn.waiting.remove(call)
                call.finish(None, FunctionError("timeout", "queued past the integration timeout"))
            for call in fn.waiting:
                soonest = min(soonest, call.expires)
        for process in list(self._processes):
            if process.ready is not None:       # starting: only the integration deadline
                head = process.inflight[0] if process.inflight else None
                if head is not None and not process.ready.done():
                    if head.expires <= now:
                        process.ready.set_exception(TimeoutError())
                    else:
                        soonest = min(soonest, head.expires)
                continue
            if process.sink is not None or not process.inflight:
                continue                    # a stream keeps its own timer
            process.readable()              # answers already sent are not hangs
            if process.closed or process.sink is not None or not process.inflight:
                continue
            fn = process.fn
            spec = fn.spec
            head = process.inflight[0]
            function_deadline = process.head_start + spec.timeout_ms / 1000
            if function_deadline <= now or head.expires <= now:
                own = function_deadline <= head.expires
                log(f"{spec.name} {head.request_id}: "
                    + (f"Task timed out after {spec.timeout_ms / 1000:.2f} seconds" if own
                       else "integration timeout") + f"; killing process {process.pid}")
                self._fail(fn, process, FunctionError(
                    "function_timeout" if own else "timeout",
                    f"no result within {spec.timeout_ms} ms" if own else "no result within the integration timeout"))
                continue
            # both deadlines: a timer may fire a moment early (uvloop counts whole ms), and
            # re-arming for the function's alone let the integration deadline pass unseen
            soonest = min(soonest, function_deadline, head.expires)
            for call in process.inflight:
                if call is not head and not call.abandoned:
                    if call.expires <= now:   # not started: the runner will skip it
                        call.finish(None, FunctionError("timeout", "queued past the integration timeout"))
                    else:
                        soonest = min(soonest, call.expires)
        if soonest < math.inf:
            self._arm(soonest)

    def _forget(self, fn: _Function, process: _Process) -> None:
        if fn.assembling is process:
            fn.assembling = None
        fn.live -= 1
        self._kill(process)
        self._wake(fn)

    def _wake(self, fn: _Function) -> None:
        """Start processes for queued calls while there are free slots."""
        waiting = fn.waiting
        while waiting and fn.live < fn.spec.concurrency and not fn.retired and not self._closed:
            call = waiting.popleft()
            if not call.abandoned:
                fn.live += 1
                self._spawn(fn, call)

    def _drop_idle(self, fn: _Function) -> None:
        idle, fn.idle = fn.idle, []
        for process in idle:
            self._forget(fn, process)

    # --- processes ------------------------------------------------------------

    def _spawn(self, fn: _Function, call: _Call | None) -> _Process:
        """A new process for ``fn`` (its slot already counted in fn.live), starting with ``call``."""
        process = _Process(self, fn, fn.generation)
        process.ready = self._loop.create_future()
        if call is not None:
            process.inflight.append(call)
            self._arm(call.expires)
        self._processes.add(process)
        self._track(self._loop.create_task(self._start(fn, process)))
        return process

    async def _start(self, fn: _Function, process: _Process) -> None:
        spec = fn.spec
        loop = self._loop
        proc = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                argv = [self.python, "-m", "fastgate.phases.functions.runner",
                        "--fd", str(theirs.fileno()), "--handler", spec.handler,
                        "--name", spec.name, "--memory-mb", str(spec.memory_mb),
                        "--timeout-ms", str(spec.timeout_ms), "--region", spec.region,
                        "--account-id", spec.account_id, "--parent-pid", str(os.getpid())]
                for path in spec.paths:
                    argv += ["--path", path]
                env = dict(os.environ)
                env.update(spec.environment)
                proc = process.proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env)
            finally:
                theirs.close()
            process.attach(ours)
            ours = None
            ready = orjson.loads(await process.ready)
        except TimeoutError:
            self._start_failed(fn, process, ours, FunctionError(
                "timeout", "the handler did not load within the integration timeout"))
            return
        except EOFError:
            code = await self._exit_code(process)
            self._start_failed(fn, process, ours, FunctionError(
                "crashed", f"handler process exited with status {code} while loading"))
            return
        except BaseException as exc:
            self._start_failed(fn, process, ours, FunctionError("service", f"cannot start: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        if not ready["ready"]:
            error = ready["error"]
            self._start_failed(fn, process, None, FunctionError(
                "raised", f"{error['errorType']}: {error['errorMessage']}", error))
            return
        process.ready = None
        calls = [call for call in process.inflight if not call.abandoned]
        process.inflight = collections.deque()
        if calls:
            self._batch(fn, process, calls)
        else:
            self._release(fn, process)

    def _start_failed(self, fn: _Function, process: _Process, sock, error: FunctionError) -> None:
        """The process did not come up: its first call gets the error, the queue tries again."""
        if sock is not None:
            sock.close()
        process.ready = None
        calls, process.inflight = process.inflight, collections.deque()
        for call in calls:
            call.finish(None, error)
        if process.proc is None:
            process.closed = True
            self._processes.discard(process)
            fn.live -= 1
            self._wake(fn)
        else:
            self._forget(fn, process)

    def _kill(self, process: _Process) -> None:
        self._processes.discard(process)
        process.close()
        proc = process.proc
        if proc is None:
            return
        if proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        self._track(self._loop.create_task(proc.wait()))

    def _track(self, task: asyncio.Task) -> None:
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _exit_code(self, process: _Process) -> int | None:
        try:
            return await asyncio.wait_for(process.proc.wait(), 1.0)
        except TimeoutError:
            return None

    async def warm(self, function_name: str, count: int = 1) -> None:
        """Start ``count`` processes ahead of the first calls (at most concurrency)."""
        fn = self._functions[function_name]
        starts = []
        for _ in range(count):
            if fn.live >= fn.spec.concurrency:
                break
            fn.live += 1
            starts.append(self._spawn(fn, None))
        while any(p.ready is not None for p in starts):
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        """Kill every handler process and wait until all are reaped."""
        self._closed = True
        for fn in self._functions.values():
            fn.retired = True
            self._drop_idle(fn)
        for process in list(self._processes):     # busy ones too: their calls fail as crashed
            calls, process.inflight = process.inflight, collections.deque()
            if process.sink is not None:
                sink, process.sink = process.sink, None
                sink(None)
            self._kill(process)
            for call in calls:
                call.finish(None, FunctionError("crashed", "the function pool closed"))
        for fn in self._functions.values():
            waiting, fn.waiting = fn.waiting, collections.deque()
            for call in waiting:
                call.finish(None, FunctionError("service", "the function pool closed"))
        if self._timer is not None:
            self._timer.cancel()
        while self._reaping:
            await asyncio.gather(*list(self._reaping), return_exceptions=True)
