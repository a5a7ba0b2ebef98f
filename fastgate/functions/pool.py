"""Warm handler processes for function integrations, owned by one gateway worker.

Each gateway worker owns one :class:`FunctionPool` (docs/functions.md says
why: no broker hop, no shared state across forks).  Per function the pool
keeps up to ``concurrency`` handler processes, each a fresh interpreter
running ``python -m fastgate.functions.runner`` that serves one call at a time
and stays warm between calls.  When all are busy a call waits in a bounded
queue; past the queue it is throttled, as Lambda throttles.

A call that raises leaves its process warm.  A call that runs past its
timeout, runs out of memory or kills its process loses the process (killed,
reaped, replaced on demand); the error is a :class:`FunctionError` and no
other call notices.

    pool = FunctionPool([FunctionSpec(name="pets", handler="app:handler", paths=("/srv/fn",))])
    result = await pool.invoke("pets", event, timeout_ms=29000, request_id=rid)
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
import time
import uuid
from typing import Annotated

import msgspec
import orjson
from msgspec import Meta

from fastgate.functions.errors import FunctionError
from fastgate.functions.events import DEFAULT_ACCOUNT_ID
from fastgate.functions.loader import parse_handler

__all__ = ["FunctionPool", "FunctionSpec", "FunctionStream"]


def log(msg: str) -> None:
    print(f"fastgate[{os.getpid()}]: functions: {msg}", file=sys.stderr, flush=True)


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


class _Channel(asyncio.Protocol):
    """The pool's end of one handler process's socket: one frame out, one in."""

    def __init__(self):
        self.transport = None
        self.buffer = bytearray()
        self.frames: collections.deque[bytes] = collections.deque()   # arrived, not yet taken
        self.waiter: asyncio.Future | None = None
        self.sink = None        # a streamed response's frame callback: frame, or None at EOF
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            end = 4 + int.from_bytes(buffer[:4], "big")
            if len(buffer) < end:
                break
            frame = bytes(buffer[4:end])
            del buffer[:end]
            if self.sink is not None:
                self.sink(frame)
            else:
                self.frames.append(frame)
        if self.frames:
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(self.frames.popleft())

    def connection_lost(self, exc):
        self.closed = True
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(EOFError("handler process closed its socket"))
        if self.sink is not None:
            self.sink(None)

    def expect(self, loop) -> asyncio.Future:
        """The future of the next frame (EOFError when the process is gone)."""
        self.waiter = loop.create_future()
        if self.frames:
            self.waiter.set_result(self.frames.popleft())
            self.waiter, waiter = None, self.waiter
            return waiter
        if self.closed:
            self.waiter.set_exception(EOFError("handler process closed its socket"))
        return self.waiter

    def stream_to(self, sink) -> None:
        """Hand every frame from now on (those already here first) to ``sink``."""
        self.sink = sink
        while self.frames and self.sink is sink:
            sink(self.frames.popleft())
        if self.closed and self.sink is sink:
            sink(None)

    def send(self, payload: bytes) -> None:
        # PERF: one writev for length and payload (bench/wrk_functions.py): two writes
        # woke the handler process for the 4-byte length alone, a context switch more
        # per call on a busy CPU.
        self.transport.writelines((len(payload).to_bytes(4, "big"), payload))


class _Process:
    __slots__ = ("proc", "channel", "generation", "pending")

    def __init__(self, proc, channel, generation):
        self.proc = proc
        self.channel = channel
        self.generation = generation
        self.pending = None      # the reply future of a call whose caller went away

    @property
    def pid(self) -> int:
        return self.proc.pid


class _Function:
    __slots__ = ("spec", "generation", "idle", "live", "waiters", "retired")

    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.generation = 0
        self.idle: list[_Process] = []
        self.live = 0                # processes alive or being started
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.retired = False


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


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
        self._done = False
        self._timeout_ms = fn.spec.timeout_ms
        self._timer = asyncio.get_running_loop().call_at(deadline, self._expired)

    def start(self, on_chunk, on_end) -> None:
        self._on_chunk, self._on_end = on_chunk, on_end
        self._process.channel.stream_to(self._frame)

    def pause(self, paused: bool) -> None:
        transport = self._process.channel.transport
        if not self._done and transport is not None and not transport.is_closing():
            if paused:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def cancel(self) -> None:
        """The client is gone: stop the handler (its process is killed, not reused).
        ``on_end`` is not called: there is nobody left to tell."""
        self._on_end = None
        self._finish(False, None)

    def _frame(self, frame: bytes | None) -> None:
        if self._done:
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
        channel = self._process.channel
        channel.sink = None
        if healthy and channel.transport is not None and not channel.transport.is_closing():
            channel.transport.resume_reading()
        self._pool._release(self._fn, self._process, healthy)
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
        self.configure(specs)

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
        return {name: {"processes": fn.live, "idle": len(fn.idle), "queued": len(fn.waiters)}
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
        fn = self._functions.get(function_name)
        if fn is None or self._closed:
            raise FunctionError("service", f"Function not found: {function_name}")
        loop = asyncio.get_running_loop()
        integration_deadline = math.inf if timeout_ms is None else loop.time() + timeout_ms / 1000
        request_id = request_id or str(uuid.uuid4())
        event_json = orjson.dumps(event)    # before taking a process: a bad event costs none
        process = await self._acquire(fn, integration_deadline)
        healthy = False
        try:
            spec = fn.spec
            function_deadline = loop.time() + spec.timeout_ms / 1000
            deadline_ms = int(time.time() * 1000) + spec.timeout_ms
            process.channel.send(b'{"request_id":%s,"deadline_ms":%d,"event":%s}' % (
                orjson.dumps(request_id), deadline_ms, event_json))
            reply_future = process.channel.expect(loop)
            timer = loop.call_at(min(function_deadline, integration_deadline), _expire, reply_future)
            try:
                frame = await reply_future
            except TimeoutError:
                own = function_deadline <= integration_deadline
                log(f"{function_name} {request_id}: "
                    + (f"Task timed out after {spec.timeout_ms / 1000:.2f} seconds" if own
                       else "integration timeout") + f"; killing process {process.pid}")
                raise FunctionError("function_timeout" if own else "timeout",
                                    f"no result within {spec.timeout_ms if own else timeout_ms} ms") from None
            except EOFError:
                code = await self._exit_code(process)
                log(f"{function_name} {request_id}: process {process.pid} exited ({code}) during the call")
                raise FunctionError("crashed", f"handler process exited with status {code}") from None
            except asyncio.CancelledError:
                # The caller is gone but the handler still runs: wait for its
                # reply off to the side so it is not read as the next call's.
                timer.cancel()
                if reply_future.cancelled():
                    healthy = None
                    stale = process.channel.expect(loop)
                    stale_timer = loop.call_at(function_deadline, _expire, stale)
                    self._drain(fn, process, stale, stale_timer)
                raise
            finally:
                timer.cancel()
            reply = orjson.loads(frame)
            if "result" in reply:
                healthy = True
                return reply["result"]
            if "stream" in reply:
                # the process stays this call's until the stream ends (FunctionStream releases it)
                healthy = None
                return FunctionStream(self, fn, process, reply["stream"], function_deadline,
                                      f"{function_name} {request_id}")
            kind, error = reply["kind"], reply["error"]
            healthy = kind != "memory"      # a process out of memory exits by itself
            raise FunctionError(kind, f"{error['errorType']}: {error['errorMessage']}", error)
        finally:
            if healthy is not None:
                self._release(fn, process, healthy)

    def _drain(self, fn: _Function, process: _Process, reply_future, timer) -> None:
        async def wait():
            try:
                reply = orjson.loads(await reply_future)
                healthy = "result" in reply or reply.get("kind") == "raised"
            except (TimeoutError, EOFError):
                healthy = False
            timer.cancel()
            self._release(fn, process, healthy)
        self._track(asyncio.get_running_loop().create_task(wait()))

    async def _acquire(self, fn: _Function, deadline: float) -> _Process:
        while fn.idle:
            process = fn.idle.pop()      # LIFO: the most recently used process is the warmest
            if not process.channel.closed:
                return process
            self._forget(fn, process)
        if fn.live < fn.spec.concurrency:
            fn.live += 1
            return await self._start(fn, deadline)
        if len(fn.waiters) >= fn.spec.queue:
            raise FunctionError("throttled", f"{fn.spec.concurrency} processes busy, "
                                             f"{len(fn.waiters)} calls queued")
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        fn.waiters.append(waiter)
        timer = loop.call_at(deadline, _expire, waiter) if deadline != math.inf else None
        try:
            granted = await waiter
        except TimeoutError:
            raise FunctionError("timeout", "queued past the integration timeout") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._give_back(fn, waiter.result())
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if waiter.cancelled() or waiter.exception() is not None:   # not granted: leave the queue
                try:
                    fn.waiters.remove(waiter)
                except ValueError:
                    pass
        if granted is None:      # a free slot rather than a process: start one
            return await self._start(fn, deadline)
        return granted

    def _give_back(self, fn: _Function, granted) -> None:
        if granted is None:
            fn.live -= 1
            self._wake(fn)
        else:
            self._release(fn, granted, True)

    def _release(self, fn: _Function, process: _Process, healthy: bool) -> None:
        if (healthy and not fn.retired and not self._closed and not process.channel.closed
                and process.generation == fn.generation):
            while fn.waiters:
                waiter = fn.waiters.popleft()
                if not waiter.done():
                    waiter.set_result(process)
                    return
            fn.idle.append(process)
            return
        self._forget(fn, process)

    def _forget(self, fn: _Function, process: _Process) -> None:
        fn.live -= 1
        self._kill(process)
        self._wake(fn)

    def _wake(self, fn: _Function) -> None:
        """Hand free process slots to queued calls."""
        while fn.waiters and fn.live < fn.spec.concurrency and not fn.retired:
            waiter = fn.waiters.popleft()
            if not waiter.done():
                fn.live += 1
                waiter.set_result(None)

    def _drop_idle(self, fn: _Function) -> None:
        idle, fn.idle = fn.idle, []
        for process in idle:
            self._forget(fn, process)

    # --- processes ------------------------------------------------------------

    async def _start(self, fn: _Function, deadline: float) -> _Process:
        """A new handler process for ``fn`` (its slot already counted in fn.live)."""
        spec = fn.spec
        generation = fn.generation
        loop = asyncio.get_running_loop()
        process = proc = None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                argv = [self.python, "-m", "fastgate.functions.runner",
                        "--fd", str(theirs.fileno()), "--handler", spec.handler,
                        "--name", spec.name, "--memory-mb", str(spec.memory_mb),
                        "--timeout-ms", str(spec.timeout_ms), "--region", spec.region,
                        "--account-id", spec.account_id, "--parent-pid", str(os.getpid())]
                for path in spec.paths:
                    argv += ["--path", path]
                env = dict(os.environ)
                env.update(spec.environment)
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env)
            finally:
                theirs.close()
            _, channel = await loop.create_unix_connection(_Channel, sock=ours)
            process = _Process(proc, channel, generation)
            self._processes.add(process)
            ready_future = channel.expect(loop)
            timer = loop.call_at(deadline, _expire, ready_future) if deadline != math.inf else None
            try:
                ready = orjson.loads(await ready_future)
            finally:
                if timer is not None:
                    timer.cancel()
        except TimeoutError:
            self._abandon(fn, process)
            raise FunctionError("timeout", "the handler did not load within the integration timeout") from None
        except EOFError:
            code = await self._exit_code(process)
            self._abandon(fn, process)
            raise FunctionError("crashed", f"handler process exited with status {code} while loading") from None
        except BaseException:
            if process is None:
                ours.close()
                if proc is not None and proc.returncode is None:
                    proc.kill()
                    self._track(loop.create_task(proc.wait()))
            self._abandon(fn, process)
            raise
        if not ready["ready"]:
            self._abandon(fn, process)
            error = ready["error"]
            raise FunctionError("raised", f"{error['errorType']}: {error['errorMessage']}", error)
        return process

    def _abandon(self, fn: _Function, process: _Process | None) -> None:
        fn.live -= 1
        if process is not None:
            self._kill(process)
        self._wake(fn)

    def _kill(self, process: _Process) -> None:
        self._processes.discard(process)
        if process.channel.transport is not None:
            process.channel.transport.close()
        if process.proc.returncode is None:
            try:
                process.proc.kill()
            except ProcessLookupError:
                pass
        self._track(asyncio.get_running_loop().create_task(process.proc.wait()))

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
        started = []
        for _ in range(count):
            if fn.live >= fn.spec.concurrency:
                break
            fn.live += 1
            started.append(await self._start(fn, math.inf))
        for process in started:
            self._release(fn, process, True)

    async def close(self) -> None:
        """Kill every handler process and wait until all are reaped."""
        self._closed = True
        for fn in self._functions.values():
            fn.retired = True
            self._drop_idle(fn)
            for waiter in fn.waiters:
                if not waiter.done():
                    waiter.set_exception(FunctionError("service", "the function pool closed"))
            fn.waiters.clear()
        for process in list(self._processes):     # busy ones too: their calls fail as crashed
            self._kill(process)
        while self._reaping:
            await asyncio.gather(*list(self._reaping), return_exceptions=True)
