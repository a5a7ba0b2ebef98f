"""A scripted fault upstream for the hardening tests: a raw TCP server in a thread whose
answer to `GET /fault/NAME` is the script NAME, each a fault an upstream really commits
(a reset mid-body, a truncated body, garbage, a hang, Content-Length with
Transfer-Encoding, a huge head, bad chunking). It reads each request head strictly
(h11) and notes, per connection, how many requests came and whether the gateway closed
it, so a test can tell that a connection left in an unknown state was never reused."""

from __future__ import annotations

import socket
import struct
import time

import h11

from strict_http import LoopbackServer

HANG = object()       # keep the connection open, answer nothing more, until the peer closes
RESET = object()      # close with an RST (SO_LINGER 0)
CLOSE = object()      # close with a FIN
PAUSE = object()      # 50 ms, so the pieces before it leave in their own segment


def head(*lines: str) -> bytes:
    return ("\r\n".join(("HTTP/1.1 200 OK",) + lines) + "\r\n\r\n").encode()


BIG = "x" * 4000
# name -> what the upstream does, in order; bytes are sent, the markers act.
SCRIPTS: dict[str, list] = {
    "ok": [head("Content-Length: 2") + b"ok"],
    "reset_before_head": [RESET],
    "close_before_head": [CLOSE],
    "reset_mid_body": [head("Content-Length: 100000") + b"a" * 1000, PAUSE, RESET],
    "truncated_length": [head("Content-Length: 1000") + b"a" * 500, PAUSE, CLOSE],
    "truncated_chunked": [head("Transfer-Encoding: chunked") + b"a\r\n0123456789\r\n", PAUSE, CLOSE],
    "garbage": [b"\x00\x01\x02 this is not HTTP\r\n\r\n", CLOSE],
    "garbage_then_hang": [b"HTTTP/1.1 200 OK\r\n\r\n", HANG],
    "hang": [HANG],
    "hang_mid_body": [head("Content-Length: 100") + b"a" * 10, HANG],
    "cl_and_te": [head("Content-Length: 3", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n"],
    "two_lengths": [head("Content-Length: 2", "Content-Length: 5") + b"hello"],
    "huge_headers": [head(*(f"X-Big-{i}: {BIG}" for i in range(64)), "Content-Length: 2") + b"ok"],
    "bad_chunk_size": [head("Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n"],
    "bad_chunk_later": [head("Transfer-Encoding: chunked") + b"5\r\nhello\r\n", PAUSE,
                        b"zz\r\nworld\r\n0\r\n\r\n"],
    "bad_status_line": [b"HTTP/1.1 abc OK\r\nContent-Length: 2\r\n\r\nok"],
}


class FaultUpstream(LoopbackServer):
    """Answers /fault/NAME by SCRIPTS[NAME]; anything else like /fault/ok."""

    def __init__(self):
        self.records: list[dict] = []   # per connection {"requests": [names], "closed_by_peer"}
        self.errors: list[str] = []     # request heads h11 refused
        super().__init__()

    def handle(self, conn: socket.socket, conn_id: int) -> None:
        record = {"requests": [], "closed_by_peer": False}
        with self.lock:
            self.records.append(record)
        h = h11.Connection(h11.SERVER)
        try:
            while not self.stopped.is_set():
                event = h.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = conn.recv(65536)
                    except socket.timeout:
                        continue
                    h.receive_data(data)
                    if not data:
                        record["closed_by_peer"] = True
                        return
                    continue
                if isinstance(event, h11.Request):
                    name = event.target.decode().rsplit("/", 1)[-1].split("?")[0]
                    record["requests"].append(name)
                elif isinstance(event, h11.EndOfMessage):
                    if not self.play(conn, SCRIPTS.get(record["requests"][-1], SCRIPTS["ok"]), record):
                        return
                    # answered with raw bytes: h11 cannot follow, so read the next head afresh
                    h = h11.Connection(h11.SERVER)
        except h11.RemoteProtocolError as e:
            with self.lock:
                self.errors.append(f"{type(e).__name__}: {e}")

    def play(self, conn: socket.socket, script: list, record: dict) -> bool:
        """Act out one script; False once the connection is done."""
        for step in script:
            if step is RESET:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            if step is CLOSE:
                return False
            if step is PAUSE:
                time.sleep(0.05)
            elif step is HANG:
                while not self.stopped.is_set():
                    try:
                        if not conn.recv(65536):
                            record["closed_by_peer"] = True
                            return False
                    except socket.timeout:
                        continue
                return False
            else:
                conn.sendall(step)
        return True

    def reused_after_a_fault(self) -> list[dict]:
        """Connections that got a request after one answered with a fault."""
        with self.lock:
            return [c for c in self.records if any(n != "ok" for n in c["requests"][:-1])]
