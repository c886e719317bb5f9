"""The run's event loop gathers wake-ups only while the pacer spaces requests out."""

from __future__ import annotations

import asyncio
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from importer import eventloop
from importer.eventloop import GatheringSelector


@pytest.fixture
def pair() -> Iterator[tuple[GatheringSelector, socket.socket]]:
    left, right = socket.socketpair()
    sel = GatheringSelector()
    sel.register(left, selectors.EVENT_READ)
    try:
        yield sel, right
    finally:
        eventloop.paced(False)
        sel.close()
        left.close()
        right.close()


def test_while_paced_a_wait_starts_an_interval_after_the_last_wake_up(
    pair: tuple[GatheringSelector, socket.socket],
) -> None:
    sel, peer = pair
    eventloop.paced(True)
    sel.select(0)  # a wake-up
    peer.send(b"x")  # ready at once, yet handled with whatever else comes in the interval
    start = time.monotonic()
    ready = sel.select(1.0)
    waited = time.monotonic() - start
    assert len(ready) == 1
    assert eventloop.PACED_INTERVAL * 0.8 <= waited < 0.5


def test_unpaced_and_non_blocking_waits_are_never_held(
    pair: tuple[GatheringSelector, socket.socket],
) -> None:
    sel, peer = pair
    sel.select(0)
    peer.send(b"x")
    start = time.monotonic()
    assert len(sel.select(1.0)) == 1  # not paced: at once
    eventloop.paced(True)
    assert len(sel.select(0)) == 1  # a poll (the loop has work queued): at once too
    assert time.monotonic() - start < eventloop.PACED_INTERVAL * 0.8


def test_a_timeout_shorter_than_the_interval_is_kept(
    pair: tuple[GatheringSelector, socket.socket],
) -> None:
    sel, _ = pair
    eventloop.paced(True)
    sel.select(0)
    start = time.monotonic()
    assert sel.select(eventloop.PACED_INTERVAL / 4) == []
    assert time.monotonic() - start < eventloop.PACED_INTERVAL * 0.9


def test_run_leaves_the_loop_unpaced_and_returns_the_result() -> None:
    async def paced_work() -> int:
        eventloop.paced(True)
        await asyncio.sleep(0.001)
        return 7

    assert eventloop.run(paced_work()) == 7
    sel = GatheringSelector()  # a later loop of the same process: not held back
    try:
        sel.select(0)
        start = time.monotonic()
        sel.select(0.001)
        assert time.monotonic() - start < eventloop.PACED_INTERVAL * 0.8
    finally:
        sel.close()
