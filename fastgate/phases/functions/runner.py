"""A handler process: ``python -m fastgate.phases.functions.runner --fd N --handler mod:fn ...``.

Started by FunctionPool as a fresh interpreter (never forked from the
gateway's uvloop process), it imports one handler and then answers calls on
the socket it inherited as fd N, one at a time and in order, for as long as
it lives, so every call after the first is warm.  Calls come in batches (the
pool writes several at once); each answer is sent as soon as its call ends,
before the next call starts, so the pool always knows which calls ran.

Frames both ways are a 4-byte big-endian length and an orjson document:

    runner -> pool   {"ready": true, "pid": P}  |  {"ready": false, "error": E}
    pool -> runner   {"request_id": "...", "timeout_ms": T, "expires_ms": M | 0, "event": ...}
                     (M: the integration deadline, CLOCK_MONOTONIC ms; 0: none)
    runner -> pool   {"result": R}  |  {"kind": "raised"|"memory"|"malformed", "error": E}
                     |  {"kind": "skipped"}: expires_ms (the integration deadline) passed
                        before the call's turn came; the handler was not run
                     |  a stream: {"stream": HEAD}, then b"\\0" + chunk bytes per chunk,
                        then {"end": true} or an error frame as above

E is Lambda's error object {"errorType", "errorMessage", "stackTrace"}.  After
a "memory" answer the runner exits: a process that ran out of memory is not
reused (Lambda resets the environment too).  The handler's stdout goes to
stderr, which is the gateway's log, as a function's prints go to CloudWatch.
"""

from __future__ import annotations

import argparse
import ctypes
import decimal
import os
import resource
import signal
import socket
import sys
import time
import traceback
import types

import orjson

from fastgate.phases.functions.context import FunctionInfo, LambdaContext, lambda_environment
from fastgate.phases.functions.loader import load_handler

MAX_RESPONSE_BYTES = 6 * 1024 * 1024   # Lambda's synchronous response payload limit
_PR_SET_PDEATHSIG = 1
_RECV_BYTES = 256 * 1024   # read size: most frames arrive in one recv


def _error(exc: BaseException, error_type: str | None = None) -> dict:
    return {
        "errorType": error_type or type(exc).__name__,
        "errorMessage": str(exc),
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def _log_error(request_id: str, exc: BaseException) -> None:
    # The same shape as the Python runtime's "[ERROR]" log line plus the traceback.
    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(f"[ERROR] {request_id} {type(exc).__name__}: {exc}\n{text}")
    sys.stderr.flush()


def _default(value):
    # Lambda's runtime serialises Decimal (DynamoDB numbers) as a number.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


class Channel:
    """Blocking length-prefixed frames over the inherited socket."""

    def __init__(self, fd: int):
        self.sock = socket.socket(fileno=fd)
        self.buffer = bytearray()
        # recv_into one preallocated chunk: recv(256 KiB) mmaps and unmaps that much per call
        self.chunk = memoryview(bytearray(_RECV_BYTES))

    def send(self, payload: bytes) -> None:
        self.sock.sendall(len(payload).to_bytes(4, "big") + payload)

    def receive(self) -> bytes | None:
        """The next frame; None once the gateway has closed its end (time to go)."""
        # PERF: buffered: one recv for a whole small frame instead of one for the
        # length and one for the payload (bench/wrk_functions.py).
        buffer = self.buffer
        while True:
            if len(buffer) >= 4:
                end = 4 + int.from_bytes(buffer[:4], "big")
                if len(buffer) >= end:
                    frame = bytes(buffer[4:end])
                    del buffer[:end]
                    return frame
            got = self.sock.recv_into(self.chunk)
            if not got:
                return None
            buffer += self.chunk[:got]


def _die_with_parent(parent_pid: int) -> None:
    # If the gateway worker dies (even by SIGKILL) its handler processes must
    # not outlive it; a hung handler would never notice the closed socket.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        # the worker died before prctl(): no signal will come. (An orphan's parent is
        # not always pid 1: a subreaper, such as a container's init, adopts it.)
        os._exit(1)


def _limit_memory(memory_mb: int) -> None:
    # RLIMIT_AS caps the address space: the interpreter's own footprint now,
    # plus what the function is configured to use (its imports included, as
    # on Lambda).  Past it, allocations fail with MemoryError.
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    base = pages * os.sysconf("SC_PAGE_SIZE")
    limit = base + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _out_of_memory(channel: Channel, exc: MemoryError) -> int:
    exc.__traceback__ = None    # frees what the handler held, so the answer can be built
    channel.send(orjson.dumps({"kind": "memory", "error": _error(exc, "Runtime.OutOfMemory")}))
    return 1


def _streams(result) -> bool:
    """A generator, or any other iterator the handler returned, is a streamed response."""
    return isinstance(result, types.GeneratorType) or (
        hasattr(result, "__next__") and not isinstance(result, (str, bytes, bytearray, dict, list)))


def _stream(channel: Channel, chunks, request_id: str) -> None:
    """Send a streamed response: the head frame, a frame per chunk as it is yielded, the end.

    The first yielded value, when it is a dict, is the head ({statusCode,
    headers, cookies}, the metadata prelude of Lambda's HttpResponseStream);
    otherwise the head is a 200 with ``application/octet-stream``, as for a
    Lambda stream without a prelude.  Chunks are bytes or str (UTF-8).  A
    handler that raises before its first value fails like any call; after it,
    the end frame carries the error.  sendall blocks while the gateway is not
    reading (a slow client): that is the stream's flow control.
    """
    try:
        first = next(chunks, None)
    except MemoryError:
        raise
    except Exception as exc:
        _log_error(request_id, exc)
        channel.send(orjson.dumps({"kind": "raised", "error": _error(exc)}))
        return
    head = {"statusCode": 200, "headers": {"Content-Type": "application/octet-stream"}}
    if isinstance(first, dict):
        head, first = first, None
    try:
        channel.send(orjson.dumps({"stream": head}, default=_default))
    except TypeError as exc:
        _log_error(request_id, exc)
        channel.send(orjson.dumps({"kind": "malformed", "error": _error(exc, "Runtime.MarshalError")}))
        return
    try:
        if first is not None:
            _send_chunk(channel, first)
        for chunk in chunks:
            _send_chunk(channel, chunk)
    except MemoryError:
        raise
    except Exception as exc:
        _log_error(request_id, exc)
        kind = "malformed" if isinstance(exc, _ChunkTypeError) else "raised"
        channel.send(orjson.dumps({"kind": kind, "error": _error(exc)}))
        return
    channel.send(b'{"end":true}')


class _ChunkTypeError(TypeError):
    pass


def _send_chunk(channel: Channel, chunk) -> None:
    if isinstance(chunk, str):
        chunk = chunk.encode()
    elif not isinstance(chunk, (bytes, bytearray, memoryview)):
        raise _ChunkTypeError(f"a streamed chunk must be bytes or str, not {type(chunk).__name__}")
    if chunk:
        # \0 marks a raw chunk: JSON frames start with "{"
        channel.send(b"\0" + bytes(chunk))


def serve(channel: Channel, handler, info: FunctionInfo) -> int:
    while True:
        frame = channel.receive()
        if frame is None:
            return 0
        call = orjson.loads(frame)
        request_id = call["request_id"]
        expires_ms = call["expires_ms"]
        if expires_ms and time.monotonic() * 1000 >= expires_ms:
            channel.send(b'{"kind":"skipped"}')     # its client has had its 504 already
            continue
        # the function's clock starts now, not when the pool sent the batch
        context = LambdaContext(info, request_id, int(time.time() * 1000) + call["timeout_ms"])
        try:
            result = handler(call["event"], context)
        except MemoryError as exc:
            return _out_of_memory(channel, exc)
        except Exception as exc:
            _log_error(request_id, exc)
            channel.send(orjson.dumps({"kind": "raised", "error": _error(exc)}))
            continue
        if _streams(result):
            try:
                _stream(channel, result, request_id)
            except MemoryError as exc:
                return _out_of_memory(channel, exc)
            continue
        try:
            payload = orjson.dumps({"result": result}, default=_default)
        except MemoryError as exc:
            return _out_of_memory(channel, exc)
        except TypeError as exc:   # Lambda's Runtime.MarshalError
            _log_error(request_id, exc)
            channel.send(orjson.dumps({"kind": "malformed", "error": _error(exc, "Runtime.MarshalError")}))
            continue
        if len(payload) > MAX_RESPONSE_BYTES + 12:   # 12: the {"result":} wrapper
            message = (f"Response payload size ({len(payload) - 12} bytes) exceeded maximum "
                       f"allowed payload size ({MAX_RESPONSE_BYTES} bytes).")
            sys.stderr.write(f"[ERROR] {request_id} {message}\n")
            channel.send(orjson.dumps({"kind": "malformed", "error": {
                "errorType": "Function.ResponseSizeTooLarge", "errorMessage": message,
                "stackTrace": []}}))
            continue
        channel.send(payload)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastgate.phases.functions.runner")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--path", action="append", default=[])
    parser.add_argument("--name", required=True)
    parser.add_argument("--memory-mb", type=int, required=True)
    parser.add_argument("--timeout-ms", type=int, required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--account-id", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)   # the gateway worker
    args = parser.parse_args(argv)

    _die_with_parent(args.parent_pid)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = Channel(args.fd)
    info = FunctionInfo(args.name, memory_mb=args.memory_mb, region=args.region,
                        account_id=args.account_id)
    os.environ.update(lambda_environment(info, args.handler, args.timeout_ms))
    try:
        _limit_memory(args.memory_mb)
        handler = load_handler(args.handler, args.path)
    except Exception as exc:
        _log_error("INIT", exc)
        channel.send(orjson.dumps({"ready": False, "error": _error(exc, "Runtime.ImportModuleError")}))
        return 1
    channel.send(orjson.dumps({"ready": True, "pid": os.getpid()}))
    return serve(channel, handler, info)


if __name__ == "__main__":
    sys.exit(main())
