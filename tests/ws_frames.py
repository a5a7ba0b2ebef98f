"""Client WebSocket frames built by hand (RFC 6455 section 5.2), for the tests and
bench/bench_websocket.py: any opcode, fragment or mask, valid or not."""

import os


def masked(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    """One client frame: masked (as clients must), with the shortest length encoding."""
    mask = os.urandom(4) if mask is None else mask
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big") \
        if n < 65536 else bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
