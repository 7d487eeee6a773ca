"""The hub's keep-alive wheel (vachat.pings.Pinger), tick by tick: who is pinged when, who is
closed. (Through the real server: test_protocol's test_shared_pings_….)"""

import pytest

from vachat.pings import Pinger


class FakeSocket:
    def __init__(self) -> None:
        self.closing = False
        self.pings = 0
        self.proto = self

    def write_ping(self, data: bytes) -> None:
        self.pings += 1


@pytest.mark.gen_test
async def test_sockets_are_spread_over_the_interval_and_a_silent_one_is_closed_after_the_timeout():
    closed = []
    pinger = Pinger(25, 3, closed.append)  # 25 slots of 1 s; checked 3 ticks after the ping
    assert (pinger.slot_count, pinger.tick, pinger.timeout_ticks) == (25, 1.0, 3)
    try:
        early = FakeSocket()
        pinger.add(early)
        for _ in range(10):
            pinger._tick()
        late, answering = FakeSocket(), FakeSocket()
        pinger.add(late)
        pinger.add(answering)
        for _ in range(15):  # one interval after it was added, `early` gets its first ping
            pinger._tick()
        assert (early.pings, late.pings) == (1, 0)
        for _ in range(2):
            pinger._tick()
        assert closed == []  # two ticks after its ping: still within the timeout
        pinger._tick()
        assert closed == [early]  # the third: closed
        for _ in range(7):
            pinger._tick()
        assert (late.pings, answering.pings) == (1, 1)  # 25 ticks after they were added
        Pinger.pong(answering)
        for _ in range(3):
            pinger._tick()
        assert closed == [early, late]
        pinger.remove(early)
        pinger.remove(late)
        assert len(pinger) == 1
        for _ in range(25):
            pinger._tick()
        assert answering.pings == 2 and early.pings == 1  # removed sockets are never pinged again
    finally:
        pinger.stop()


@pytest.mark.gen_test
async def test_short_intervals_tick_once_per_interval_and_a_zero_timeout_never_closes():
    closed = []
    pinger = Pinger(0.2, 0, closed.append)
    assert (pinger.slot_count, pinger.tick, pinger.timeout_ticks) == (1, 0.2, 0)
    socket = FakeSocket()
    pinger.add(socket)
    try:
        for _ in range(5):
            pinger._tick()
        assert socket.pings == 5 and closed == []
        pinger.remove(socket)
        assert len(pinger) == 0 and pinger._timer is None  # the timer stops with the last socket
    finally:
        pinger.stop()
