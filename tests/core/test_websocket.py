"""fastgate._core.websocket: client frames, however the reads split them and however the
client fragments its messages, come out as the messages that were sent (the messages
themselves are the oracle); limits and protocol errors end the connection once, with the
code the handler hears. The frames the gateway sends are checked end to end
(tests/e2e/test_websocket_api.py), since they need a socket."""

from __future__ import annotations

import os
import sys

from hypothesis import given, settings, strategies as st

from fastgate._core.runtime import Downstream
from fastgate._core.websocket import WebSocket

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from ws_frames import masked  # noqa: E402


class Handler:
    def __init__(self):
        self.messages = []
        self.closes = []

    def message(self, ws, text, payload):
        self.messages.append(payload)

    def closed(self, ws, code, reason):
        self.closes.append((code, reason))


def session(**limits):
    h = Handler()
    return WebSocket(Downstream(), h, "test", **limits), h


messages = st.lists(st.one_of(st.text(max_size=300), st.binary(max_size=300)), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_messages_survive_any_fragmentation_and_any_split_reads(sent, data):
    stream = b""
    for msg in sent:
        raw = msg.encode() if isinstance(msg, str) else msg
        opcode = 1 if isinstance(msg, str) else 2
        cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=3)))
        parts = [raw[a:b] for a, b in zip([0] + cuts, cuts + [len(raw)])]
        for i, part in enumerate(parts):
            stream += masked(opcode if i == 0 else 0, part, fin=i == len(parts) - 1)
            if data.draw(st.booleans()):
                stream += masked(9, b"ping")          # control frames may come between fragments
    ws, h = session(max_frame=1 << 16, max_message=1 << 16)
    splits = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    for a, b in zip([0] + splits, splits + [len(stream)]):
        ws.receive(stream[a:b])
    assert h.messages == sent
    assert h.closes == []


def test_a_frame_past_the_limit_is_refused_from_its_head():
    ws, h = session(max_frame=1024, max_message=4096)
    # only the head of a 2,000-byte frame: refused before its payload arrives
    ws.receive(masked(2, b"x" * 2000)[:8])
    assert ws.close_code == 1009 and h.messages == []


def test_a_message_past_the_limit_across_frames():
    ws, h = session(max_frame=1024, max_message=2048)
    ws.receive(masked(2, b"a" * 1024, fin=False) + masked(0, b"b" * 1024, fin=False))
    assert ws.close_code == 0
    ws.receive(masked(0, b"c", fin=True))
    assert ws.close_code == 1009 and h.messages == []


def test_protocol_errors():
    cases = [
        (bytes([0x81, 0x02]) + b"hi", 1002),                 # unmasked
        (masked(3, b""), 1002),                               # reserved opcode
        (bytes([0xC1]) + masked(1, b"x")[1:], 1002),          # RSV1
        (masked(0, b"x"), 1002),                              # continuation of nothing
        (masked(1, b"a", fin=False) + masked(1, b"b"), 1002),  # a new message inside one
        (masked(9, b"x" * 126), 1002),                        # long control frame
        (masked(9, b"x", fin=False), 1002),                   # fragmented control frame
        (masked(8, b"\x03"), 1002),                           # close payload of one byte
        (masked(8, (999).to_bytes(2, "big")), 1002),          # invalid close code
        (masked(1, b"\xc3\x28"), 1007),                       # not UTF-8
        (masked(8, (1000).to_bytes(2, "big") + b"\xff"), 1007),  # close reason not UTF-8
    ]
    for frame, code in cases:
        ws, h = session()
        ws.receive(frame + masked(1, b"after"))
        assert ws.close_code == code, frame
        assert h.messages == []          # nothing after the failure is read


def test_the_clients_close_code_and_reason():
    ws, h = session()
    ws.receive(masked(1, b"bye") + masked(8, (4001).to_bytes(2, "big") + "done ✓".encode()))
    assert h.messages == ["bye"]
    assert (ws.close_code, ws.close_reason) == (4001, "done ✓")
    ws, h = session()
    ws.receive(masked(8, b""))
    assert (ws.close_code, ws.close_reason) == (1005, "Client-side close frame status not set")
