"""fastgate/_core/clock.pyx: inside a batch of socket events (netio.Poller.ready) the
event clock answers the batch's time; outside one it reads the clock."""

import asyncio
import socket
import time

import uvloop

from fastgate._core.clock import event_time_s, monotonic_s
from fastgate._core.netio import Listener, Poller


class Stamps(asyncio.Protocol):
    def __init__(self):
        self.stamps = []

    def connection_made(self, transport):
        pass

    def data_received(self, data):
        first = event_time_s()
        time.sleep(0.002)                   # work within the batch moves no request's clock
        self.stamps.append((first, event_time_s(), monotonic_s()))


def test_the_event_clock_is_the_batchs_inside_one_and_the_clock_outside():
    a = event_time_s()
    time.sleep(0.002)
    assert event_time_s() - a >= 0.002      # no batch: every read is a fresh one

    loop = uvloop.new_event_loop()
    poller = Poller(loop)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    protocols = []
    listener = Listener(poller, srv, lambda: protocols.append(Stamps()) or protocols[-1])
    c = socket.create_connection(srv.getsockname())
    c.sendall(b"one")

    async def wait():
        while not (protocols and protocols[0].stamps):
            await asyncio.sleep(0.005)
    before = monotonic_s()
    loop.run_until_complete(asyncio.wait_for(wait(), 5))
    ((first, second, now),) = protocols[0].stamps
    assert first == second                  # the batch's time, read once
    assert before <= first <= now - 0.002
    late = event_time_s()
    assert late >= now                      # the batch is over: the clock again
    c.close()
    listener.close()
    loop.run_until_complete(asyncio.sleep(0))
    poller.close()
    loop.close()
