"""Where a WebSocket API's connections live, and how an @connections call reaches one.

A connection id says where its connection is: 11 bytes, URL-safe base64 (16 characters,
as AWS's ids): the host's tag (2 bytes), the worker's pid (3 bytes), 6 bytes of a hash of
the upgrade request's id. A
call (PostToConnection, GetConnection, DeleteConnection) made on any worker, or on the
admin listener, goes:

- to this worker's own table when the pid is ours;
- to another worker (or a retiring one after a binary upgrade) of the same host over its
  bus socket, a Unix socket in the abstract namespace named by tag and pid;
- to another host through Redis pub/sub (config `redis:`): each process listens on its
  channel `{prefix}:ws:{tag}.{pid}`; a PUBLISH that nobody receives means that process
  is gone, and so is the connection (410).

One binary frame both ways (4-byte big-endian length first):
    call   b"Q" rid:u32 op:u8 len:u8 "cid[ api/stage]" data   (Redis: reply channel after rid)
    answer b"R" rid:u32 status:u16 body
The answers: 200/204 done, 410 gone, 413 too large, 429 the client's buffer is full; a
GetConnection's body is its JSON.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import os
import socket
import struct

import orjson

from fastgate.observability.log import log

OP_POST, OP_GET, OP_DELETE = 1, 2, 3
CALL_TIMEOUT_S = 5.0
WRITE_BUFFER_LIMIT = 4 * 1024 * 1024     # bytes a client may leave unread before posts get 429
_U32 = struct.Struct(">I")
_HEAD = struct.Struct(">cIBB")           # b"Q", rid, op, cid_len
_ANSWER = struct.Struct(">cIH")          # b"R", rid, status


@functools.lru_cache(maxsize=1)
def host_tag() -> bytes:
    """Two bytes naming this host: FASTGATE_HOST_ID (hosts sharing one kernel, containers,
    tests standing in for two hosts), else the machine's hostname."""
    ident = os.environ.get("FASTGATE_HOST_ID") or socket.gethostname()
    return hashlib.sha1(ident.encode()).digest()[:2]


def connection_id_for(request_id: bytes, tag: bytes | None = None, pid: int | None = None) -> str:
    """The id of the connection an upgrade request makes, known before it is made: $connect's
    authorizer sees it too, as on AWS. Its last 6 bytes come from the request id, unique in
    the worker (a random prefix and a counter)."""
    tag = host_tag() if tag is None else tag
    pid = os.getpid() if pid is None else pid
    return base64.urlsafe_b64encode(tag + pid.to_bytes(3, "big") +
                                    hashlib.sha1(request_id).digest()[:6]).decode()


def owner_of(connection_id: str) -> tuple[bytes, int] | None:
    """(host tag, pid) a connection id names, or None when it is not one of ours."""
    if len(connection_id) != 16:
        return None
    try:
        raw = base64.urlsafe_b64decode(connection_id.encode())
    except (ValueError, TypeError):
        return None
    if len(raw) != 11:
        return None
    return raw[:2], int.from_bytes(raw[2:5], "big")


def bus_address(tag: bytes, pid: int) -> str:
    return f"\0fastgate-ws-{tag.hex()}-{pid}"


def iso8601(epoch_ms: int) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.timezone.utc) \
        .isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LocalConnections:
    """This worker's connections, by id: what a call does to one of them."""

    def __init__(self):
        self.by_id: dict = {}        # connection id -> events.ConnectionInfo

    def call(self, op: int, cid: str, data: bytes, scope: str = "") -> tuple[int, bytes]:
        """scope: "api/stage" (either may be empty: any) the call came through; a connection
        of another API or stage is not there for it (410)."""
        info = self.by_id.get(cid)
        ws = info.ws if info is not None else None
        if ws is None or not ws.open:
            return 410, b""
        if scope:
            api, _, stage = scope.partition("/")
            if (api and api != info.api_id) or (stage and stage != info.stage):
                return 410, b""
        if op == OP_POST:
            if len(data) > ws.max_message:
                return 413, b""
            if ws.write_buffer_size() > WRITE_BUFFER_LIMIT:
                return 429, b""
            try:
                ws.send(data.decode("utf-8"))      # text when it is text (as AWS sends posts)
            except UnicodeDecodeError:
                ws.send(data)
            return 200, b""
        if op == OP_GET:
            return 200, orjson.dumps({
                "connectedAt": iso8601(ws.connected_ms),
                "identity": {"sourceIp": info.source_ip, "userAgent": info.user_agent},
                "lastActiveAt": iso8601(ws.last_active_ms),
            })
        ws.close(1000, "")
        return 204, b""


class _Peer(asyncio.Protocol):
    """One bus connection to another worker of this host: calls out, answers back."""

    def __init__(self, bus: "ConnectionBus", key):
        self.bus = bus
        self.key = key
        self.transport = None
        self.buffer = bytearray()
        self.waiting: dict[int, asyncio.Future] = {}

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        while len(self.buffer) >= 4:
            n = _U32.unpack_from(self.buffer)[0]
            if len(self.buffer) < 4 + n:
                return
            frame = bytes(self.buffer[4:4 + n])
            del self.buffer[:4 + n]
            self.bus.frame(frame, self)

    def send(self, frame: bytes):
        self.transport.write(_U32.pack(len(frame)) + frame)

    def connection_lost(self, exc):
        if self.bus.peers.get(self.key) is self:
            del self.bus.peers[self.key]
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_result((410, b""))     # its worker is gone, and so are its connections


class ConnectionBus:
    """How this process reaches any connection (see the module's docstring). A worker
    serves its own (`local`); the admin process only calls."""

    def __init__(self, local: LocalConnections | None = None):
        self.local = local
        self.tag = host_tag()
        self.pid = os.getpid()
        self.server = None
        self.peers: dict = {}
        self.rid = 0
        self.redis = None            # RedisBridge, when the config names a Redis

    async def serve(self) -> None:
        """Listen for calls from the other processes of this host."""
        if self.local is None or self.server is not None:
            return
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(bus_address(self.tag, self.pid))
        self.server = await loop.create_unix_server(lambda: _Peer(self, None), sock=sock)

    def configure_redis(self, cfg) -> None:
        if cfg is None:
            if self.redis is not None:
                self.redis.close()
            self.redis = None
        elif self.redis is None or self.redis.cfg != cfg:
            if self.redis is not None:
                self.redis.close()
            self.redis = RedisBridge(self, cfg)

    def next_rid(self) -> int:
        self.rid = (self.rid + 1) & 0xFFFFFFFF
        return self.rid

    async def call(self, op: int, cid: str, data: bytes = b"", scope: str = "") -> tuple[int, bytes]:
        """(status, body) of one @connections call, wherever the connection is (scope: see
        LocalConnections.call)."""
        owner = owner_of(cid)
        if owner is None:
            return 410, b""
        tag, pid = owner
        if tag == self.tag and pid == self.pid and self.local is not None:
            return self.local.call(op, cid, data, scope)
        target = (cid + " " + scope if scope else cid).encode()[:255]
        frame = _HEAD.pack(b"Q", 0, op, len(target)) + target + data
        if tag == self.tag:
            answer = await self.call_peer(pid, frame)
            if answer is not None:
                return answer
            if self.redis is None:
                return 410, b""      # no such worker on this host (nor a Redis to ask)
        if self.redis is None:
            return 410, b""
        return await self.redis.call(tag, pid, frame)

    async def call_peer(self, pid: int, frame: bytes) -> tuple[int, bytes] | None:
        """A call to a worker of this host; None when there is no such worker."""
        peer = self.peers.get(pid)
        if peer is None:
            loop = asyncio.get_running_loop()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                # (uvloop refuses an abstract address as path=: the socket is connected here)
                await loop.sock_connect(sock, bus_address(self.tag, pid))
                _, peer = await loop.create_unix_connection(lambda: _Peer(self, pid), sock=sock)
            except OSError:
                sock.close()
                return None
            other = self.peers.get(pid)
            if other is not None:       # another call connected meanwhile: one connection each
                peer.transport.close()
                peer = other
            self.peers[pid] = peer
        rid = self.next_rid()
        fut = asyncio.get_running_loop().create_future()
        peer.waiting[rid] = fut
        peer.send(frame[:1] + _U32.pack(rid) + frame[5:])
        try:
            return await asyncio.wait_for(fut, CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            return 410, b""
        finally:
            peer.waiting.pop(rid, None)

    def frame(self, frame: bytes, peer: _Peer) -> None:
        """A frame from a bus peer: a call to answer, or the answer to one of ours."""
        if frame[:1] == b"R":
            _, rid, status = _ANSWER.unpack_from(frame)
            fut = peer.waiting.get(rid)
            if fut is not None and not fut.done():
                fut.set_result((status, frame[_ANSWER.size:]))
            return
        status, body = self.answer(frame)
        _, rid, _, _ = _HEAD.unpack_from(frame)
        peer.send(_ANSWER.pack(b"R", rid, status) + body)

    def answer(self, frame: bytes) -> tuple[int, bytes]:
        """Run a call frame (b"Q"...) on this worker's connections."""
        try:
            _, _, op, n = _HEAD.unpack_from(frame)
            cid, _, scope = frame[_HEAD.size:_HEAD.size + n].decode().partition(" ")
            data = frame[_HEAD.size + n:]
        except (struct.error, UnicodeDecodeError):
            return 400, b""
        if self.local is None:
            return 410, b""
        try:
            return self.local.call(op, cid, data, scope)
        except Exception as e:     # a bug here must answer, never take the bus down
            log(f"websocket: @connections call failed: {e!r}")
            return 500, b""

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for peer in list(self.peers.values()):
            if peer.transport is not None:
                peer.transport.close()
        if self.redis is not None:
            self.redis.close()
            self.redis = None


class RedisBridge:
    """@connections calls between hosts, through Redis pub/sub."""

    def __init__(self, bus: ConnectionBus, cfg):
        import redis.asyncio as aioredis
        self.bus = bus
        self.cfg = cfg
        self.channel = f"{cfg.prefix}:ws:{bus.tag.hex()}.{bus.pid}"
        self.redis = aioredis.Redis.from_url(cfg.url, socket_connect_timeout=2)
        self.waiting: dict[int, asyncio.Future] = {}
        self.ready = asyncio.get_event_loop().create_future()
        self.task = asyncio.get_event_loop().create_task(self.listen())

    async def listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                if not self.ready.done():
                    self.ready.set_result(True)
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        await self.received(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log(f"websocket: Redis pub/sub {self.cfg.url}: {e!r}; retrying")
                await asyncio.sleep(1.0)

    async def received(self, data: bytes) -> None:
        if data[:1] == b"R":
            _, rid, status = _ANSWER.unpack_from(data)
            fut = self.waiting.get(rid)
            if fut is not None and not fut.done():
                fut.set_result((status, data[_ANSWER.size:]))
            return
        # b"Q" rid reply_len:u16 reply call...
        rid = _U32.unpack_from(data, 1)[0]
        n = struct.unpack_from(">H", data, 5)[0]
        reply = data[7:7 + n].decode()
        status, body = self.bus.answer(b"Q" + _U32.pack(rid) + data[7 + n:])
        try:
            await self.redis.publish(reply, _ANSWER.pack(b"R", rid, status) + body)
        except Exception as e:
            log(f"websocket: Redis publish: {e!r}")

    async def call(self, tag: bytes, pid: int, frame: bytes) -> tuple[int, bytes]:
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            return 503, b""
        rid = self.bus.next_rid()
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        reply = self.channel.encode()
        msg = b"Q" + _U32.pack(rid) + struct.pack(">H", len(reply)) + reply + frame[5:]
        try:
            receivers = await self.redis.publish(f"{self.cfg.prefix}:ws:{tag.hex()}.{pid}", msg)
            if not receivers:
                return 410, b""      # no process listens there: its connections are gone
            return await asyncio.wait_for(fut, CALL_TIMEOUT_S)
        except asyncio.TimeoutError:
            return 410, b""
        except Exception as e:
            log(f"websocket: Redis call: {e!r}")
            return 503, b""
        finally:
            self.waiting.pop(rid, None)

    def close(self) -> None:
        self.task.cancel()
