"""An upstream that records exactly what reaches it, for tests that look for smuggled
requests and for connections a gateway holds. Run as its own process:

    python tests/recording_upstream.py PORT LOG [--body-timeout-ms MS] [--cert CERT --key KEY]

Each connection's bytes go through h11, a strict HTTP/1.1 parser independent of the code
under test, and every event is appended to LOG as one JSON line:

  {"conn": N, "event": "open"}
  {"conn": N, "event": "request", "method": M, "target": T, "headers": [[k, v]...],
   "body_len": N, "body_sha256": HEX}
  {"conn": N, "event": "error", "error": MSG, "bytes": first 200 unparsed bytes (latin-1)}
  {"conn": N, "event": "close"}

A request line found in what should have been a body, or body bytes arriving before a
request head, shows up as a request the client never sent or as an error. Each request is
answered 200 with a JSON body {"target", "body_len", "body_sha256"}, so a client can check
that its own request is the one that arrived.

--body-timeout-ms: close the connection when a request body stalls that long (as gunicorn,
nginx's client_body_timeout, most servers do), a server giving up on a slow client.
"""

import argparse
import asyncio
import hashlib
import itertools
import json
import ssl

import h11

READ = 256 * 1024


class Recorder:
    def __init__(self, path):
        self.f = open(path, "a", buffering=1)
        self.ids = itertools.count(1)

    def write(self, **event):
        self.f.write(json.dumps(event) + "\n")


async def handle(reader, writer, rec: Recorder, body_timeout_s):
    cid = next(rec.ids)
    rec.write(conn=cid, event="open")
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    req, body_len, digest = None, 0, None
    try:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                rec.write(conn=cid, event="error", error=str(e) or type(e).__name__,
                          bytes=bytes(conn.trailing_data[0][:200]).decode("latin-1"))
                return
            if event is h11.NEED_DATA:
                timeout = body_timeout_s if req is not None else None
                try:
                    data = await asyncio.wait_for(reader.read(READ), timeout)
                except asyncio.TimeoutError:
                    rec.write(conn=cid, event="error", error="body timeout", bytes="")
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Request):
                req, body_len, digest = event, 0, hashlib.sha256()
            elif isinstance(event, h11.Data):
                body_len += len(event.data)
                digest.update(event.data)
            elif isinstance(event, h11.EndOfMessage):
                target = req.target.decode("latin-1")
                rec.write(conn=cid, event="request", method=req.method.decode(), target=target,
                          headers=[[k.decode("latin-1"), v.decode("latin-1")]
                                   for k, v in req.headers.raw_items()],
                          body_len=body_len, body_sha256=digest.hexdigest())
                body = json.dumps({"target": target, "body_len": body_len,
                                   "body_sha256": digest.hexdigest()}).encode()
                writer.write(conn.send(h11.Response(status_code=200, headers=[
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body)))])))
                writer.write(conn.send(h11.Data(data=body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                req = None
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
    except (ConnectionError, h11.LocalProtocolError):
        pass
    finally:
        rec.write(conn=cid, event="close")
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("log")
    ap.add_argument("--body-timeout-ms", type=int, default=0)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    args = ap.parse_args()
    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    rec = Recorder(args.log)
    timeout = args.body_timeout_ms / 1000 if args.body_timeout_ms else None
    server = await asyncio.start_server(lambda r, w: handle(r, w, rec, timeout),
                                        "127.0.0.1", args.port, ssl=ctx, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
