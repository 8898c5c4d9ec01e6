"""One epoll for every socket's read readiness (gameserver/readiness.py)."""

import socket

import pytest
import trio
import trio.testing

from gameserver import readiness

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="epoll is Linux's")


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


async def test_a_parked_reader_wakes_when_data_arrives_and_not_before():
    ready = readiness.current()
    assert readiness.current() is ready
    a, b = pair()
    ready.register(a)
    await ready.wait_readable(a)  # the first wait returns: the socket might hold data already
    got = []

    async def reader():
        await ready.wait_readable(a)
        got.append(a.recv(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # parked: nothing to read
        b.send(b"hello")
    assert got == [b"hello"]
    ready.unregister(a)
    a.close()
    b.close()


async def test_data_that_arrives_while_nobody_waits_is_remembered():
    ready = readiness.current()
    a, b = pair()
    ready.register(a)
    await ready.wait_readable(a)
    b.send(b"x")
    await trio.testing.wait_all_tasks_blocked()  # the driver sees the edge with no reader parked
    with trio.fail_after(1):
        await ready.wait_readable(a)  # returns at once
    assert a.recv(10) == b"x"
    ready.unregister(a)
    a.close()
    b.close()


async def test_unregistering_wakes_a_parked_reader_and_cancel_works():
    ready = readiness.current()
    a, b = pair()
    ready.register(a)
    await ready.wait_readable(a)
    woke = []

    async def reader():
        await ready.wait_readable(a)
        woke.append(True)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        ready.unregister(a)
    assert woke == [True]
    c, d = pair()
    ready.register(c)
    await ready.wait_readable(c)
    with trio.move_on_after(0.05) as scope:
        await ready.wait_readable(c)
    assert scope.cancelled_caught
    d.send(b"later")  # a cancelled wait leaves nothing behind: the next one works
    with trio.fail_after(1):
        await ready.wait_readable(c)
    assert c.recv(10) == b"later"
    for s in (a, b, c, d):
        s.close()
