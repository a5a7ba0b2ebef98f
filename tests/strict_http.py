"""Strict HTTP/1.1 on both sides of a gateway under test, with h11 (which refuses what
RFC 9112 refuses: duplicate or conflicting framing headers, bad chunking, junk where a
message must start):

- StrictClient reads a gateway's responses off a raw socket, one at a time, so a test
  can send any bytes it likes (pipelined, split, malformed) and still check that every
  answer is a well-formed response, whole or visibly cut short.
- RecordingUpstream is an upstream that parses every request it receives strictly and
  records it (method, target, headers, body), answering each with what it recorded. A
  request line that comes out of a body shows up as a request nobody sent; bytes that
  are not a request where one must start show up in `errors`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field

import h11


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]       # (lowercase name, value) in arrival order
    body: bytes = b""
    complete: bool = True                # False: the connection closed inside the body
    interim: list[int] = field(default_factory=list)   # 1xx statuses before it

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return ",".join(values) if values else None


class StrictClient:
    """Responses read off `sock` with h11, one per call to answer()."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""          # bytes read past the last response
        self.eof = False

    def answer(self, method: str = "GET") -> Answer | None:
        """The next response (h11.RemoteProtocolError if it is malformed); complete=False
        if the connection closed inside its body; None if it closed before a response
        began. socket.timeout if the gateway says nothing for the socket's timeout."""
        conn = h11.Connection(h11.CLIENT)
        # h11 needs the request to know the response's framing (HEAD); the bytes really
        # sent are the caller's own
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "h")]))
        conn.send(h11.EndOfMessage())
        received = bool(self.buf)
        if self.buf:
            conn.receive_data(self.buf)
            self.buf = b""
        if self.eof:
            conn.receive_data(b"")   # (b"" is how h11 hears of the end of the stream)
        answer, body, interim = None, [], []
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if self.eof and answer is not None:
                    answer.body, answer.complete = b"".join(body), False
                    return answer
                if self.eof and not received:
                    return None
                raise
            if event is h11.NEED_DATA:
                data = self.sock.recv(65536)
                received = received or bool(data)
                self.eof = not data
                conn.receive_data(data)
            elif isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                answer = Answer(event.status_code,
                                [(k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers],
                                interim=interim)
            elif isinstance(event, h11.Data):
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                answer.body = b"".join(body)
                self.buf = conn.trailing_data[0]
                return answer
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def closed(self) -> bool:
        """True once the gateway has closed the connection (nothing more to read)."""
        if self.buf:
            return False
        if not self.eof:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            self.buf, self.eof = data, not data
        return self.eof


@dataclass
class Recorded:
    conn_id: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes


class LoopbackServer:
    """A TCP server on a free loopback port in a thread, one more thread per connection
    running handle(sock, conn_id); stop() ends them all."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock = threading.Lock()
        self.connections = 0            # accepted so far; each one's id is its number
        self.open_ids: set[int] = set()   # ids of the connections still open
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with self.lock:
                self.connections += 1
                conn_id = self.connections
                self.open_ids.add(conn_id)
            threading.Thread(target=self.run, args=(conn, conn_id), daemon=True).start()

    def run(self, sock: socket.socket, conn_id: int) -> None:
        sock.settimeout(0.2)
        try:
            self.handle(sock, conn_id)
        except OSError:
            pass
        finally:
            sock.close()
            with self.lock:
                self.open_ids.discard(conn_id)

    def handle(self, sock: socket.socket, conn_id: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.stopped.set()
        self.sock.close()
        self.thread.join(5)



class RecordingUpstream(LoopbackServer):
    """A threaded upstream that records every request it receives whole, strictly parsed.
    Each is answered 200 with a JSON body {"seq", "method", "target", "body_size",
    "body_sha256"} and X-Fuzz-Id / X-Seq headers."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self.errors: list[str] = []       # bytes h11 refused: never acceptable from a gateway
        self.incomplete: list[str] = []   # connections closed inside a request
        super().__init__()

    def handle(self, sock: socket.socket, conn_id: int) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
        request, body = None, []
        try:
            while not self.stopped.is_set():
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    if conn.they_are_waiting_for_100_continue:
                        sock.sendall(conn.send(h11.InformationalResponse(status_code=100)))
                    try:
                        data = sock.recv(262144)
                    except socket.timeout:
                        continue
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request, body = event, []
                elif isinstance(event, h11.Data):
                    body.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.answer(sock, conn, conn_id, request, b"".join(body))
                    if conn.our_state is h11.MUST_CLOSE:
                        return
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as e:
            with self.lock:
                # refused at the end of the stream: the gateway gave up inside a request
                # (its client left); anything else is bytes that are no request
                (self.incomplete if conn.trailing_data[1] else self.errors).append(
                    f"connection {conn_id}: {e}")

    def answer(self, sock, conn, conn_id: int, request: h11.Request, body: bytes) -> None:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers]
        rec = Recorded(conn_id, request.method.decode(), request.target.decode("latin-1"), headers, body)
        with self.lock:
            self.requests.append(rec)
            seq = len(self.requests)
        out = json.dumps({"seq": seq, "method": rec.method, "target": rec.target,
                          "body_size": len(body),
                          "body_sha256": hashlib.sha256(body).hexdigest()}).encode()
        fuzz_id = dict(headers).get("x-fuzz-id", "-")
        sock.sendall(conn.send(h11.Response(status_code=200, headers=[
            ("Content-Type", "application/json"), ("Content-Length", str(len(out))),
            ("X-Fuzz-Id", fuzz_id), ("X-Seq", str(seq))])))
        if request.method != b"HEAD":
            sock.sendall(conn.send(h11.Data(data=out)))
        sock.sendall(conn.send(h11.EndOfMessage()))

    def mark(self) -> tuple[int, int]:
        """Where the records stand now: (requests, errors), for check_upstream's `since`."""
        with self.lock:
            return len(self.requests), len(self.errors)

    def recorded(self, fuzz_ids=None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests
                    if fuzz_ids is None or dict(r.headers).get("x-fuzz-id") in fuzz_ids]

