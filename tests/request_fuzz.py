"""A request fuzzer with an oracle: hypothesis draws a connection's worth of valid HTTP/1.1
requests (methods, paths, queries, headers, bodies framed by Content-Length or chunked,
Expect: 100-continue, request lines hidden inside bodies), optionally ending in a
malformed one, and how to send them (pipelined or one by one, split at random points).
`check_exchange` sends them through a gateway to a RecordingUpstream (tests/strict_http.py)
and holds the gateway to:

- an answer for every request, each a response h11 accepts, in order;
- every valid request reaching the upstream exactly once, with the same method, target,
  end-to-end headers and body bytes; a malformed one answered 4xx and reaching nobody;
- no request at the upstream that the client did not send (no request line ever comes
  out of a body), and no bytes there that are not a request.

Used by tests/e2e/test_fuzz_recorded.py (short) and bench/fuzz_long.py (long).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import socket
import threading
import time
from dataclasses import dataclass, field

from hypothesis import strategies as st

from strict_http import RecordingUpstream, StrictClient

def gateway_config(upstream_url: str) -> str:
    """The routes the fuzzer sends to: /p/... over pooled upstream connections, /f/... over
    a new one each time (keepalive 0), both to the RecordingUpstream at upstream_url."""
    return f"""\
access_log: {{path: 'off'}}
upstreams:
  pooled: {{targets: ['{upstream_url}']}}
  fresh: {{targets: ['{upstream_url}'], keepalive: 0}}
routes:
  - path: /p/{{proxy+}}
    integration: {{type: http, upstream: pooled}}
  - path: /f/{{proxy+}}
    integration: {{type: http, upstream: fresh}}
"""


# what a smuggler hides in a body: if it ever parses as a request, the upstream records it
SMUGGLE = b"GET /SMUGGLED HTTP/1.1\r\nHost: smuggled\r\nContent-Length: 0\r\n\r\n"
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_ids = itertools.count(1)


@dataclass
class FuzzRequest:
    method: str
    target: str
    headers: list[tuple[str, str]]       # end-to-end headers, sent and expected in order
    body: bytes = b""
    framing: str = "none"                # "none" | "length" | "chunked"
    chunks: list[int] = field(default_factory=list)   # chunk sizes, summing to len(body)
    expect: bool = False                 # Expect: 100-continue
    poison: bytes | None = None          # malformed: sent as is; must get a 4xx, reach nobody
    fid: str = ""

    def __repr__(self) -> str:
        if self.poison is not None:
            return f"<malformed {self.poison[:70]!r}...>"
        return (f"<{self.fid} {self.method} {self.target} headers={self.headers} "
                f"body={len(self.body)}B {self.framing}{self.chunks or ''}"
                f"{' expect-100' if self.expect else ''}>")

    def _repr_pretty_(self, printer, cycle) -> None:
        printer.text(repr(self))   # hypothesis's printer would spell out a 200 kB body

    def upstream_target(self) -> str:
        """The target the upstream must see: as sent (an empty query may go)."""
        return self.target[:-1] if self.target.endswith("?") else self.target

    def wire(self) -> bytes:
        if self.poison is not None:
            return self.poison
        lines = [f"{self.method} {self.target} HTTP/1.1", "Host: fuzz.test", f"X-Fuzz-Id: {self.fid}"]
        lines += [f"{k}: {v}" for k, v in self.headers]
        if self.expect:
            lines.append("Expect: 100-continue")
        if self.framing == "length":
            lines.append(f"Content-Length: {len(self.body)}")
        elif self.framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self.framing != "chunked":
            return head + self.body
        out, pos = [head], 0
        for size in self.chunks:
            out.append(b"%x\r\n%s\r\n" % (size, self.body[pos:pos + size]))
            pos += size
        out.append(b"0\r\n\r\n")
        return b"".join(out)


# Malformed requests fastgate refuses with 400, each hiding a request after its framing
POISONS = [
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    b"POST /f/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /f/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    b"POST /p/x HTTP/1.1\nHost: a\nContent-Length: 3\n\nabc",
    b"POST /p/x HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\nContent-Length: 3\r\n\r\nabc",
    b"POST /f/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    b"POST /p/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
]

SEGMENT = st.text("abcxyzABC0189-_~", min_size=1, max_size=8)
QUERY = st.text("abcxyz0189=&-_%20", max_size=12).map(lambda q: q.replace("%", "%25").replace("%2520", "%20"))
HEADER_NAME = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8).map(lambda s: f"X-F-{s}")
# field values as RFC 9110 allows them, without the leading or trailing blanks parsers strip
HEADER_VALUE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40) | \
    st.from_regex(r"\A[!-~]([ !-~]{0,30}[!-~])?\Z")


@st.composite
def bodies(draw) -> bytes:
    small = draw(st.binary(max_size=300))
    if draw(st.booleans()):
        return small
    # a larger body with a request line hidden in it, often at a 64 KiB boundary where a
    # proxy's reads split it
    size = draw(st.sampled_from([4096, 65536, 65536 + 17, 200_000]))
    at = draw(st.sampled_from([0, 1, size // 2, 65536 - 3, 65536])) % size
    filler = (bytes(range(256)) * (size // 256 + 1))[:size]
    return filler[:at] + SMUGGLE + small + filler[at:]


@st.composite
def requests(draw) -> FuzzRequest:
    method = draw(st.sampled_from(("GET", "HEAD", "OPTIONS") + BODY_METHODS))
    route = draw(st.sampled_from(["/p/", "/f/"]))   # pooled / fresh upstream connections
    path = route + "/".join(draw(st.lists(SEGMENT, min_size=1, max_size=4)))
    if draw(st.booleans()):
        path += "?" + draw(QUERY)
    headers = draw(st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=4))
    req = FuzzRequest(method, path, headers)
    if method in BODY_METHODS:
        req.body = draw(bodies())
        req.framing = draw(st.sampled_from(["length", "chunked"]))
        req.expect = bool(req.body) and draw(st.booleans())
        if req.framing == "chunked":
            cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(req.body) - 1)), max_size=5))))
            edges = [0] + [c for c in cuts if c < len(req.body)] + [len(req.body)]
            req.chunks = [b - a for a, b in zip(edges, edges[1:]) if b > a]
    return req


@st.composite
def exchanges(draw) -> dict:
    """One connection: its requests and how they are sent."""
    reqs = draw(st.lists(requests(), min_size=1, max_size=4))
    if draw(st.integers(0, 4)) == 0:
        reqs.append(FuzzRequest("POST", "", [], poison=draw(st.sampled_from(POISONS)) + SMUGGLE))
    return {"requests": reqs,
            "pipelined": draw(st.booleans()),
            "splits": draw(st.lists(st.integers(1, 70_000), max_size=6)),
            "pause_s": draw(st.sampled_from([0, 0, 0.001, 0.005]))}


def send_split(sock: socket.socket, data: bytes, splits: list[int], pause_s: float) -> None:
    cuts = sorted({c for c in splits if c < len(data)})
    for a, b in zip([0] + cuts, cuts + [len(data)]):
        sock.sendall(data[a:b])
        if pause_s and b < len(data):
            time.sleep(pause_s)


def check_answer(req: FuzzRequest, answer) -> None:
    assert answer is not None, f"{req!r}: the connection closed without an answer"
    assert answer.complete, f"{req!r}: the answer ended short: {answer.status}, {len(answer.body)} bytes"
    if req.poison is not None:
        assert 400 <= answer.status < 500, f"{req!r} answered {answer.status}"
        return
    assert answer.status == 200, f"{req!r} answered {answer.status}: {answer.body[:200]!r}"
    assert answer.header("x-fuzz-id") == req.fid, \
        f"{req!r} got the answer to {answer.header('x-fuzz-id')!r}"
    if req.method != "HEAD":
        got = json.loads(answer.body)
        assert (got["method"], got["target"], got["body_size"], got["body_sha256"]) == \
            (req.method, req.upstream_target(), len(req.body), hashlib.sha256(req.body).hexdigest()), \
            f"{req!r}: the upstream saw {got}"


def upload(port: int, fid: str, size: int, expect: bool, timeout_s: float = 30) -> None:
    """One upload of `size` bytes with a request line hidden at 64 KiB, the head and body
    sent at once (with Expect: 100-continue or not) to the keepalive-0 route, so the body
    arrives while the gateway is still connecting upstream; asserts a strict, right answer."""
    body = (bytes(range(256)) * 256)[:65536] + SMUGGLE
    body += b"z" * max(0, size - len(body))
    req = FuzzRequest("POST", f"/f/upload/{fid}", [], body, "length", expect=expect, fid=fid)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        data = req.wire()
        head_end = data.index(b"\r\n\r\n") + 4
        sock.sendall(data[:head_end])
        sock.sendall(data[head_end:])
        check_answer(req, StrictClient(sock).answer("POST"))


def concurrent_uploads(port: int, upstream: RecordingUpstream, prefix: str, count: int,
                       size: int) -> list[str]:
    """`count` uploads at once (half with Expect: 100-continue): what went wrong with them,
    on either side of the gateway."""
    mark = upstream.mark()
    failed: list[str] = []

    def one(i: int) -> None:
        try:
            upload(port, f"{prefix}{i}", size, i % 2 == 0)
        except Exception as e:   # collected: one thread's failure must not hide the others'
            failed.append(f"{type(e).__name__}: {str(e)[:300]}")
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        check_upstream(upstream, mark)
    except AssertionError as e:
        failed.append(f"upstream: {str(e)[:300]}")
    got = upstream.recorded({f"{prefix}{i}" for i in range(count)})
    if len(got) != count or any(len(r.body) != max(size, 65536 + len(SMUGGLE)) for r in got):
        failed.append(f"upstream: {len(got)} of {count} uploads arrived whole")
    return failed


def check_exchange(port: int, upstream: RecordingUpstream, ex: dict, timeout_s: float = 15) -> None:
    """Send one drawn exchange through the gateway on `port`; assert the invariants above."""
    reqs = ex["requests"]
    for req in reqs:
        req.fid = f"f{next(_ids)}"
    mark = upstream.mark()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        client = StrictClient(sock)
        if ex["pipelined"]:
            send_split(sock, b"".join(r.wire() for r in reqs), ex["splits"], ex["pause_s"])
            for req in reqs:
                check_answer(req, client.answer(req.method))
        else:
            for req in reqs:
                send_split(sock, req.wire(), ex["splits"], ex["pause_s"])
                check_answer(req, client.answer(req.method))
        if reqs[-1].poison is not None:
            assert client.closed(), "the connection stayed open after a malformed request"
    # every answer came from the upstream after it recorded: the record is complete now
    fids = {r.fid for r in reqs if r.poison is None}
    seen = upstream.recorded(fids)
    assert sorted(dict(r.headers)["x-fuzz-id"] for r in seen) == sorted(fids), \
        f"the upstream saw {[(r.method, r.target, dict(r.headers)['x-fuzz-id']) for r in seen]} for {reqs}"
    by_id = {dict(r.headers)["x-fuzz-id"]: r for r in seen}
    for req in reqs:
        if req.poison is not None:
            continue
        got = by_id[req.fid]
        assert (got.method, got.target, got.body) == (req.method, req.upstream_target(), req.body), \
            f"{req!r}: the upstream saw {got.method} {got.target} with {len(got.body)} body bytes"
        assert [(k, v) for k, v in got.headers if k.startswith("x-f-")] == \
            [(k.lower(), v) for k, v in req.headers], f"{req!r}: the upstream saw headers {got.headers}"
    check_upstream(upstream, mark)


def check_upstream(upstream: RecordingUpstream, since: tuple[int, int] = (0, 0)) -> None:
    """Nothing reached the upstream that no client sent, and nothing that is no request
    (since `since`, an earlier upstream.mark())."""
    assert upstream.errors[since[1]:] == [], upstream.errors[since[1]:]
    strays = [(r.method, r.target) for r in upstream.requests[since[0]:]
              if "x-fuzz-id" not in dict(r.headers)]
    assert strays == [], f"requests no client sent (smuggled): {strays}"
