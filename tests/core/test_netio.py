"""fastgate/_core/netio.pyx: plain TCP streams on fastgate's own edge-triggered epoll set,
driven through real loopback sockets with asyncio's transport semantics."""

import asyncio
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest
import uvloop

from fastgate._core.netio import Listener, Poller, connect_name, connect_tcp

BIG = 32 << 20    # bytes: more than a loopback connection's kernel buffers hold (tcp_wmem + tcp_rmem)


class Recorder(asyncio.Protocol):
    """Records every callback; keep_open is what eof_received answers."""

    def __init__(self, keep_open=False, echo=False, fail_on=None):
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.keep_open = keep_open
        self.echo = echo
        self.fail_on = fail_on
        self.lost = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")

    def data_received(self, data):
        assert type(data) is bytes
        if self.fail_on is not None and self.fail_on in data:
            raise RuntimeError("protocol bug")
        self.data += data
        if self.echo:
            self.transport.write(data)

    def eof_received(self):
        self.events.append("eof")
        return self.keep_open

    def pause_writing(self):
        self.events.append("pause")

    def resume_writing(self):
        self.events.append("resume")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc


@pytest.fixture
def loop():
    loop = uvloop.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def served(loop):
    """A Listener on a free loopback port; yields (poller, port, protocols accepted)."""
    poller = Poller(loop)
    accepted = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)

    def factory():
        p = Recorder()
        accepted.append(p)
        return p
    listener = Listener(poller, sock, factory)
    yield poller, sock.getsockname()[1], accepted, listener
    listener.close()
    loop.run_until_complete(asyncio.sleep(0))
    poller.close()


def run_until(loop, cond, timeout=5.0):
    async def wait():
        deadline = loop.time() + timeout
        while not cond():
            assert loop.time() < deadline, "timed out"
            await asyncio.sleep(0.005)
    loop.run_until_complete(wait())


def peer(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    return s


def connected(loop, served):
    """A client socket to the fixture's listener and the protocol it was accepted with."""
    _, port, accepted, _ = served
    c = peer(port)
    run_until(loop, lambda: accepted)
    return c, accepted[0]


async def recv_all(loop, s, n):
    out = bytearray()
    while len(out) < n:
        chunk = await loop.sock_recv(s, 65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def recv_to_eof(loop, s):
    out = bytearray()
    while True:
        chunk = await loop.sock_recv(s, 65536)
        if not chunk:
            return bytes(out)
        out += chunk


def test_accept_echo_extra_info_and_close(loop, served):
    c, p = connected(loop, served)
    t = p.transport
    assert type(t).__name__ == "Stream"
    assert t.get_extra_info("peername") == c.getsockname()
    assert t.get_extra_info("sockname") == ("127.0.0.1", served[1])
    assert t.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert t.get_extra_info("ssl_object") is None
    p.echo = True
    loop.run_until_complete(loop.sock_sendall(c, b"hello"))
    assert loop.run_until_complete(recv_all(loop, c, 5)) == b"hello"
    t.close()
    assert t.is_closing()
    assert p.events == ["made"]          # connection_lost comes on a later loop iteration
    assert loop.run_until_complete(recv_to_eof(loop, c)) == b""
    run_until(loop, lambda: "lost" in p.events)
    assert p.events == ["made", "lost"] and p.lost is None
    t.write(b"after close")             # dropped, as on a closed asyncio transport
    c.close()


def test_a_full_peer_pauses_writing_and_every_byte_arrives_in_order(loop, served):
    c, p = connected(loop, served)
    payload = os.urandom(BIG)     # more than both kernel buffers hold: the rest waits in ours
    for i in range(0, len(payload), 1 << 20):
        p.transport.write(payload[i:i + (1 << 20)])
    assert "pause" in p.events and p.transport.get_write_buffer_size() > 0
    got = loop.run_until_complete(recv_all(loop, c, len(payload)))
    assert got == payload
    run_until(loop, lambda: "resume" in p.events)
    assert p.transport.get_write_buffer_size() == 0
    c.close()


def test_close_sends_what_is_buffered_before_the_fin(loop, served):
    c, p = connected(loop, served)
    payload = os.urandom(BIG)
    p.transport.write(payload)
    assert p.transport.get_write_buffer_size() > 0
    p.transport.close()
    assert p.transport.is_closing() and "lost" not in p.events
    assert loop.run_until_complete(recv_to_eof(loop, c)) == payload
    run_until(loop, lambda: "lost" in p.events)
    c.close()


def test_abort_drops_the_buffer_and_closes_at_once(loop, served):
    c, p = connected(loop, served)
    p.transport.write(os.urandom(BIG))
    assert p.transport.get_write_buffer_size() > 0
    p.transport.abort()
    run_until(loop, lambda: "lost" in p.events)
    got = loop.run_until_complete(recv_to_eof(loop, c))
    assert len(got) < BIG
    c.close()


def test_input_that_came_while_paused_is_read_on_resume(loop, served):
    # edge-triggered: no new edge announces what arrived during the pause
    c, p = connected(loop, served)
    p.transport.pause_reading()
    assert not p.transport.is_reading()
    payload = os.urandom(600_000)      # more than one read's buffer
    loop.run_until_complete(loop.sock_sendall(c, payload))
    loop.run_until_complete(asyncio.sleep(0.1))
    assert len(p.data) == 0
    p.transport.resume_reading()
    run_until(loop, lambda: len(p.data) == len(payload))
    assert bytes(p.data) == payload
    c.close()


def test_pausing_inside_data_received_holds_the_rest(loop, served):
    c, p = connected(loop, served)
    p.data_received_orig = p.data_received

    def pause_after_first(data):
        p.data_received_orig(data)
        p.transport.pause_reading()
    p.data_received = pause_after_first
    loop.run_until_complete(loop.sock_sendall(c, b"one"))
    run_until(loop, lambda: p.data == b"one")
    loop.run_until_complete(loop.sock_sendall(c, b"two"))
    loop.run_until_complete(asyncio.sleep(0.1))
    assert p.data == b"one"
    p.data_received = p.data_received_orig
    p.transport.resume_reading()
    run_until(loop, lambda: p.data == b"onetwo")
    c.close()


def test_a_fast_peer_is_read_in_bursts_and_the_loop_runs_between(loop, served):
    """A peer with megabytes waiting is not read to its end in one callback: what the loop
    has due meanwhile (another socket, a connection_lost) runs between the bursts."""
    c, p = connected(loop, served)
    # room for all of it in the kernel before the first read (SO_RCVBUFFORCE: root, above rmem_max)
    p.transport.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), 16 << 20)
    p.transport.pause_reading()
    total = 0
    try:
        while total < 4 << 20:
            total += c.send(b"x" * 65536)
    except BlockingIOError:
        pass
    assert total >= 2 << 20, "the kernel took too little for the test"
    loop.run_until_complete(asyncio.sleep(0.1))     # loopback delivers it all
    seen, between = p.data_received, []

    def first_read(data):
        if not p.data:
            loop.call_soon(lambda: between.append(len(p.data)))
        seen(data)
    p.data_received = first_read
    p.transport.resume_reading()
    run_until(loop, lambda: len(p.data) == total)
    assert 0 < between[0] < total
    c.close()


@pytest.mark.parametrize("keep_open", [False, True])
def test_half_close_from_the_peer(loop, served, keep_open):
    c, p = connected(loop, served)
    p.keep_open = keep_open
    loop.run_until_complete(loop.sock_sendall(c, b"last words"))
    c.shutdown(socket.SHUT_WR)
    run_until(loop, lambda: "eof" in p.events)
    assert p.data == b"last words"
    if keep_open:
        # still open for writing: the answer reaches the half-closed peer
        assert not p.transport.is_closing()
        p.transport.write(b"answer")
        p.transport.write_eof()
        assert loop.run_until_complete(recv_to_eof(loop, c)) == b"answer"
        p.transport.close()
    else:
        assert loop.run_until_complete(recv_to_eof(loop, c)) == b""
    run_until(loop, lambda: "lost" in p.events)
    c.close()


def test_write_eof_waits_for_the_buffer(loop, served):
    c, p = connected(loop, served)
    payload = os.urandom(BIG)
    p.transport.write(payload)
    p.transport.write_eof()
    assert p.transport.get_write_buffer_size() > 0
    assert p.transport.can_write_eof()
    assert loop.run_until_complete(recv_to_eof(loop, c)) == payload
    loop.run_until_complete(loop.sock_sendall(c, b"still reading"))
    run_until(loop, lambda: p.data == b"still reading")
    p.transport.close()
    c.close()


def epoll_targets():
    """The descriptors every epoll set of this process watches (/proc/self/fdinfo)."""
    targets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventpoll]":
                continue
            with open(f"/proc/self/fdinfo/{fd}") as f:
                targets |= {int(line.split()[1]) for line in f if line.startswith("tfd:")}
        except OSError:
            pass
    return targets


def test_a_closed_socket_leaves_the_epoll_set_while_a_forked_child_holds_a_copy(loop, served):
    """A child between fork and exec (the functions pool spawning a process) holds a copy of
    every descriptor: close(2) alone would leave the socket in the set, and its next event
    would name a freed Stream."""
    c, p = connected(loop, served)
    fd = p.transport.get_extra_info("socket").fileno()
    assert fd in epoll_targets()
    pid = os.fork()
    if pid == 0:                        # the child: hold the copies a while, then go
        time.sleep(5)
        os._exit(0)
    try:
        p.transport.abort()
        assert fd not in epoll_targets()
        c.sendall(b"after the close")   # an event on the socket the child still holds
        loop.run_until_complete(asyncio.sleep(0.05))
        assert p.events == ["made", "lost"]
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        c.close()


def test_a_reset_reaches_connection_lost_as_the_error(loop, served):
    c, p = connected(loop, served)
    loop.run_until_complete(loop.sock_sendall(c, b"x"))
    run_until(loop, lambda: p.data == b"x")
    p.transport.write(b"unread")          # unread at the peer: its close sends RST
    loop.run_until_complete(asyncio.sleep(0.05))
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
    run_until(loop, lambda: "lost" in p.events)
    assert isinstance(p.lost, ConnectionResetError)


def test_a_failing_protocol_is_reported_and_its_connection_closed(loop, served):
    poller, port, accepted, _ = served
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    c = peer(port)
    run_until(loop, lambda: accepted)
    p = accepted[0]
    p.fail_on = b"boom"
    loop.run_until_complete(loop.sock_sendall(c, b"boom"))
    run_until(loop, lambda: "lost" in p.events)
    assert isinstance(p.lost, RuntimeError)
    assert reported and isinstance(reported[0]["exception"], RuntimeError)
    assert loop.run_until_complete(recv_to_eof(loop, c)) == b""
    c.close()


def test_a_closed_listener_accepts_no_more(loop, served):
    poller, port, accepted, listener = served
    assert listener.is_serving() and listener.sockets
    listener.close()
    assert not listener.is_serving() and listener.sockets == ()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_connect_tcp(loop):
    poller = Poller(loop)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.setblocking(False)
    port = srv.getsockname()[1]
    p = Recorder()
    transport, protocol = loop.run_until_complete(connect_tcp(poller, p, socket.AF_INET, ("127.0.0.1", port)))
    assert protocol is p and p.transport is transport and p.events == ["made"]
    s, _ = loop.run_until_complete(loop.sock_accept(srv))
    transport.write(b"GET / HTTP/1.1\r\n\r\n")
    assert loop.run_until_complete(recv_all(loop, s, 18)) == b"GET / HTTP/1.1\r\n\r\n"
    loop.run_until_complete(loop.sock_sendall(s, b"HTTP/1.1 200 OK\r\n"))
    run_until(loop, lambda: p.data == b"HTTP/1.1 200 OK\r\n")
    s.close()
    run_until(loop, lambda: "lost" in p.events)
    assert p.events == ["made", "eof", "lost"]
    srv.close()
    poller.close()


def test_connect_tcp_refused_and_cancelled(loop):
    poller = Poller(loop)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()                        # nothing listens there now
    p = Recorder()
    with pytest.raises(ConnectionRefusedError):
        loop.run_until_complete(connect_tcp(poller, p, socket.AF_INET, ("127.0.0.1", port)))
    assert p.events == []
    fds = len(os.listdir("/proc/self/fd"))
    fut = connect_tcp(poller, p, socket.AF_INET, ("127.0.0.1", port))
    fut.cancel()                        # as a connect timeout does: the socket goes with it
    loop.run_until_complete(asyncio.sleep(0.05))
    assert p.events == [] and len(os.listdir("/proc/self/fd")) == fds
    poller.close()


def test_a_connect_cancelled_as_it_completes_leaves_no_connection_open(loop):
    """The client left (Proxy.drop cancels the connect) and, in the same batch of events, the
    connect completed: the cancel's callback comes too late to close the socket, so the
    completion must, or the upstream keeps a connection nobody owns."""
    poller = Poller(loop)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    p = Recorder()
    fut = connect_tcp(poller, p, socket.AF_INET, ("127.0.0.1", srv.getsockname()[1]))
    s, _ = srv.accept()                 # the handshake is done: the connect's event is ready
    fut.cancel()                        # its done callbacks wait for the next loop iteration...
    poller.ready()                      # ...but this batch of events comes first
    loop.run_until_complete(asyncio.sleep(0.05))
    s.settimeout(5)
    assert s.recv(1) == b""             # the gateway's side is closed
    assert p.events == []               # and the protocol never heard of it
    s.close()
    srv.close()
    poller.close()


def test_ipv6_listener_and_connect(loop):
    poller = Poller(loop)
    srv = socket.socket(socket.AF_INET6)
    try:
        srv.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 here")
    srv.listen(4)
    accepted = []
    listener = Listener(poller, srv, lambda: accepted.append(Recorder()) or accepted[-1])
    p = Recorder()
    transport, _ = loop.run_until_complete(connect_tcp(poller, p, socket.AF_INET6, srv.getsockname()))
    assert transport.get_extra_info("peername")[:2] == srv.getsockname()[:2]
    run_until(loop, lambda: accepted)
    assert accepted[0].transport.get_extra_info("peername") == transport.get_extra_info("sockname")
    transport.write(b"six")
    run_until(loop, lambda: accepted[0].data == b"six")
    transport.close()
    listener.close()
    run_until(loop, lambda: "lost" in p.events and "lost" in accepted[0].events)
    poller.close()


def test_out_of_descriptors_pauses_accepting_then_resumes(loop, served):
    # accept failing with EMFILE leaves the connection in the backlog: the listener stays
    # readable, and a loop that kept asking would spin. It rests 100 ms at a time instead.
    _, port, accepted, _ = served
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    clients = subprocess.Popen(
        [sys.executable, "-c", f"import socket, sys, time\n"
         f"s = [socket.create_connection(('127.0.0.1', {port})) for _ in range(5)]\n"
         "print('connected', flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE, text=True)

    async def scenario():
        # one run of the loop: uvloop opens descriptors when a run starts
        lowest_free = os.dup(0)          # a new descriptor takes the lowest free number:
        os.close(lowest_free)            # with the limit there, none can be made
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            assert clients.stdout.readline() == "connected\n"   # all five wait in the backlog
            await asyncio.sleep(0.35)
            assert accepted == []
            assert "accept failed: Too many open files" in reported
            # paused, not spinning: a handful of tries in 350 ms, not thousands
            assert reported.count("accept failed: Too many open files") <= 5
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for _ in range(500):
            if len(accepted) == 5:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(accepted)} of 5 accepted")
    try:
        loop.run_until_complete(scenario())
    finally:
        clients.kill()
        clients.wait()


def test_connect_name_resolves_then_tries_each_address(loop):
    poller = Poller(loop)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))      # only IPv4: a ::1 that "localhost" may name first refuses
    srv.listen(4)
    port = srv.getsockname()[1]
    p = Recorder()
    transport, _ = loop.run_until_complete(connect_name(poller, p, "localhost", port))
    assert transport.get_extra_info("peername") == ("127.0.0.1", port)
    transport.close()
    srv.close()
    run_until(loop, lambda: "lost" in p.events)
    with pytest.raises(ConnectionRefusedError):     # nothing listens on any of its addresses
        loop.run_until_complete(connect_name(poller, Recorder(), "localhost", port))
    poller.close()
