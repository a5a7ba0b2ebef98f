"""fastgate._core.websocket (RFC 6455 framing in C) against wsproto (sans-IO, pure Python):
reading client frames into whole messages, the work a WebSocket API does per message before
its route runs. Why the framing is compiled rather than wsproto: this comparison.

Each round feeds 100 masked text frames (a 64-byte JSON message each, as a chat client
sends) in one read; time / 100 is the cost per message (`python bench/bench_websocket.py`
prints ns per message, best of 30 runs). A second input is one 96 KB message in three
32 KB frames (AWS's frame limit), reassembled.
Run: .venv/bin/python -m pytest -q -p no:cacheprovider bench/bench_websocket.py --benchmark-only
"""
import os
import sys
import timeit

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage, BytesMessage

from fastgate._core.runtime import Downstream
from fastgate._core.websocket import WebSocket

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from ws_frames import masked  # noqa: E402

N = 100
MESSAGE = b'{"action": "sendmessage", "data": "hello, everyone in the room!!"}'


BIG = os.urandom(96 * 1024)
INPUTS = {
    "chat": b"".join(masked(1, MESSAGE) for _ in range(N)),
    "96k_in_3_frames": b"".join(masked(2 if i == 0 else 0, BIG[i * 32768:(i + 1) * 32768], i == 2)
                                for i in range(3)),
}
MESSAGES = {"chat": N, "96k_in_3_frames": 1}


class Count:
    def __init__(self):
        self.n = 0

    def message(self, ws, text, payload):
        self.n += 1

    def closed(self, ws, code, reason):
        pass


def fastgate_reader():
    handler = Count()
    # a Downstream with no transport: what the session sends goes nowhere
    ws = WebSocket(Downstream(), handler, "bench", max_frame=1 << 20, max_message=1 << 20)
    return lambda data: ws.receive(data), handler


def wsproto_reader():
    conn = WSConnection(ConnectionType.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    for ev in conn.events():
        if isinstance(ev, Request):
            from wsproto.events import AcceptConnection
            conn.send(AcceptConnection())
    counter = Count()

    def feed(data):
        conn.receive_data(data)
        for ev in conn.events():
            if isinstance(ev, (TextMessage, BytesMessage)) and ev.message_finished:
                counter.n += 1
    return feed, counter


READERS = {"fastgate": fastgate_reader, "wsproto": wsproto_reader}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_read_messages(benchmark, reader, name):
    feed, counter = READERS[reader]()
    data = INPUTS[name]
    benchmark.extra_info["ns_per_message"] = None
    benchmark(feed, data)
    assert counter.n % MESSAGES[name] == 0 and counter.n > 0


if __name__ == "__main__":
    for name, data in INPUTS.items():
        for reader, make in READERS.items():
            feed, counter = make()
            best = min(timeit.repeat(lambda: feed(data), number=20, repeat=30)) / 20
            print(f"{name:16} {reader:9} {best / MESSAGES[name] * 1e9:10.0f} ns per message")
