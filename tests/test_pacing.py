"""Rate pacing and adaptive concurrency, on a fake clock (nothing really sleeps), and a run
paced by a sandbox whose clock is off."""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from importer.client import RateInfo
from importer.pipeline import RunOptions, arun_import
from importer.sandbox.server import RunningSandbox
from importer.upload import PACING_BEAT, AdaptiveLimit, RatePacer, UploadSettings
from tests.test_run import CONTACTS_MAPPING, creds


class FakeTime:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _pacer(t: FakeTime) -> RatePacer:
    return RatePacer(clock=t.clock, sleep=t.sleep, rng=random.Random(1), jitter=0.0)


def test_requests_are_spread_over_what_is_left_of_the_window() -> None:
    t = FakeTime()
    pacer = _pacer(t)

    async def go() -> list[float]:
        await pacer.acquire()
        pacer.done(RateInfo(limit=600, remaining=10, reset=t.now + 10))
        starts = []
        for _ in range(10):
            await pacer.acquire()
            starts.append(t.now)
            pacer.done(RateInfo())  # answered, headers unchanged
        return starts

    starts = asyncio.run(go())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 10 requests left for 10 s: about one a second, never a burst.
    assert all(0.9 <= g <= 1.2 for g in gaps), gaps
    assert starts[-1] - starts[0] <= 10.0


def test_no_budget_left_waits_for_the_reset() -> None:
    t = FakeTime()
    pacer = _pacer(t)
    reset = t.now + 7

    async def go() -> None:
        await pacer.acquire()
        pacer.done(RateInfo(limit=5, remaining=0, reset=reset))
        await pacer.acquire()

    asyncio.run(go())
    assert t.now >= reset


def test_a_429_pauses_the_endpoint_and_retry_after_wins() -> None:
    t = FakeTime()
    pacer = _pacer(t)
    start = t.now

    async def go() -> None:
        await pacer.acquire()
        pacer.done(RateInfo(remaining=0, reset=start + 30, retry_after=2.0))
        pacer.rate_limited(RateInfo(remaining=0, reset=start + 30, retry_after=2.0))
        await pacer.acquire()

    asyncio.run(go())
    assert 2.0 <= t.now - start < 30


def test_unknown_limits_do_not_slow_anything_down() -> None:
    t = FakeTime()
    pacer = _pacer(t)

    async def go() -> None:
        for _ in range(100):
            await pacer.acquire()
            pacer.done(RateInfo())

    asyncio.run(go())
    assert t.slept == []


def test_adaptive_limit_grows_on_success_and_halves_on_429() -> None:
    limit = AdaptiveLimit(UploadSettings(initial_concurrency=4, max_concurrency=16))

    async def go() -> None:
        for _ in range(200):
            await limit.acquire()
            limit.release("ok")
        assert limit.limit == 16
        await limit.acquire()
        limit.release("throttled")
        assert limit.limit == 8
        await limit.acquire()
        limit.release("fault")
        assert 7 <= limit.limit < 8

    asyncio.run(go())


def test_pinned_concurrency_does_not_move() -> None:
    limit = AdaptiveLimit(UploadSettings(concurrency=3))

    async def go() -> None:
        await limit.acquire()
        limit.release("throttled")
        for _ in range(50):
            await limit.acquire()
            limit.release("ok")

    asyncio.run(go())
    assert limit.limit == 3


def test_late_timers_do_not_drift_the_schedule_below_the_ceiling() -> None:
    """Every sleep overshoots by 2 ms (a busy loop). In a window with budget to spare (the
    last window of a run), 50 requests at 10/s must take 5 s, not 5 s plus 50 overshoots."""
    t = FakeTime()

    async def late_sleep(seconds: float) -> None:
        t.now += seconds + 0.002

    pacer = RatePacer(clock=t.clock, sleep=late_sleep, rng=random.Random(1), jitter=0.0)

    async def go() -> float:
        await pacer.acquire()
        pacer.done(RateInfo(limit=101, remaining=100, reset=t.now + 10))
        start = t.now
        for _ in range(50):
            await pacer.acquire()
            pacer.done(RateInfo())
        return t.now - start

    assert asyncio.run(go()) <= 4.9 + 0.01


def _real_pacer(limit: int, remaining: int, window: float) -> RatePacer:
    """A pacer on the real clock that has just learnt a window's budget."""
    pacer = RatePacer(clock=time.time, sleep=asyncio.sleep, rng=random.Random(1), jitter=0.0)
    pacer.done(RateInfo(limit=limit, remaining=remaining, reset=time.time() + window))
    return pacer


async def _start(pacer: RatePacer, starts: list[float]) -> None:
    await pacer.acquire()
    starts.append(time.time())


def test_concurrent_waiters_reserve_their_own_slots() -> None:
    """Real clock, small window: 10 requests of budget over 0.5 s for 10 waiters at once —
    their slots are 50 ms apart: they leave spread over the window, those whose slots share a
    pacing beat together, never in a burst."""

    async def spread() -> list[float]:
        pacer = _real_pacer(10, 10, 0.5)
        starts: list[float] = []
        await asyncio.gather(*(_start(pacer, starts) for _ in range(10)))
        assert pacer.inflight == 10  # each counted once, from its reservation
        return sorted(starts)

    starts = asyncio.run(spread())
    together = [sum(1 for s in starts if abs(s - t) < 0.01) for t in starts]
    assert max(together) <= math.ceil(PACING_BEAT / 0.05), starts
    assert 0.35 <= starts[-1] - starts[0] <= 0.55, starts


def test_a_429_while_others_wait_on_their_slots_holds_them_all_back() -> None:
    async def paused() -> tuple[float, list[float]]:
        pacer = _real_pacer(100, 10, 1.0)
        starts: list[float] = []
        tasks = [asyncio.create_task(_start(pacer, starts)) for _ in range(5)]
        await asyncio.sleep(0.05)  # the first has gone, the others wait on their slots
        pause_end = time.time() + 0.3
        pacer.rate_limited(RateInfo(retry_after=0.3))
        await asyncio.gather(*tasks)
        return pause_end, starts

    pause_end, starts = asyncio.run(paused())
    assert len(starts) == 5
    early = [s for s in starts if s < pause_end - 0.01]
    assert len(early) == 1, starts  # only the one sent before the 429


def test_the_limit_bounds_concurrent_holders_and_a_cancelled_waiter_leaks_no_slot() -> None:
    limit = AdaptiveLimit(UploadSettings(concurrency=3))
    holding: list[int] = []
    peak = 0
    order: list[int] = []

    async def hold(i: int) -> None:
        nonlocal peak
        await limit.acquire()
        order.append(i)
        holding.append(i)
        peak = max(peak, len(holding))
        await asyncio.sleep(0.001 * (i % 3))
        holding.remove(i)
        limit.release("ok")

    async def go() -> None:
        tasks = [asyncio.create_task(hold(i)) for i in range(12)]
        await asyncio.sleep(0)  # three hold a slot, nine wait in line
        tasks[5].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 1
        # every slot came back: a fresh caller gets one at once
        await asyncio.wait_for(limit.acquire(), 1)
        limit.release("ok")

    asyncio.run(go())
    assert peak == 3
    assert limit.active == 0
    assert sorted(order) == [i for i in range(12) if i != 5]
    assert order[:3] == [0, 1, 2]  # the first three in, the rest served in arrival order
    assert order[3:] == [i for i in range(3, 12) if i != 5]


def test_the_handoff_tops_up_in_bulk_and_drains_on_close() -> None:
    """The producer sleeps until the workers have taken the backlog down to ``low``: a few
    turns for many chunks, not one per chunk; after close, queued chunks are still handed
    out, in order, then every worker gets None."""
    from importer.upload import _Handoff

    async def go() -> tuple[int, list[int], list[None]]:
        handoff = _Handoff(high=8, low=4)
        waits = 0

        async def produce() -> None:
            nonlocal waits
            for i in range(40):
                waits += len(handoff._items) >= 8  # this put will wait for room
                await handoff.put(i)  # type: ignore[arg-type]
            handoff.close()

        got: list[int] = []
        ends: list[None] = []

        async def work() -> None:
            while (item := await handoff.get()) is not None:
                got.append(item)  # type: ignore[arg-type]
                await asyncio.sleep(0)
            ends.append(None)

        await asyncio.gather(produce(), *(work() for _ in range(3)))
        return waits, got, ends

    waits, got, ends = asyncio.run(go())
    assert sorted(got) == list(range(40)) and got == sorted(got)
    assert ends == [None] * 3
    assert 0 < waits <= (40 - 8) // (8 - 4) + 1


def test_a_reset_that_moves_by_under_a_second_is_the_same_window() -> None:
    """A reset read against the server's Date, or given as seconds from now, moves by up to
    a second between answers of one window: a stale, higher count in such an answer must not
    be taken as a fresh window's budget (that would burst into 429s)."""
    t = FakeTime()
    pacer = _pacer(t)
    reset = t.now + 30
    seen = []

    async def go() -> None:
        await pacer.acquire()
        pacer.done(RateInfo(limit=600, remaining=10, reset=reset))
        for _ in range(5):
            await pacer.acquire()
            pacer.done(RateInfo(limit=600, remaining=40, reset=reset + 0.6))  # late, stale
        seen.append(pacer._remaining)
        await pacer.acquire()
        pacer.done(RateInfo(limit=600, remaining=500, reset=reset + 60))  # the next window
        seen.append(pacer._remaining)

    asyncio.run(go())
    assert seen == [5, 500]  # 10 less the 5 sent, never the stale 40; then the new budget


@pytest.mark.parametrize("skew", [3600.0, -3600.0, 0.0])
def test_a_run_against_a_server_whose_clock_is_an_hour_off_paces_by_its_windows(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox], skew: float
) -> None:
    """The sandbox's clock (its windows, X-RateLimit-Reset and Date) an hour ahead of ours,
    or behind: read as sent, the reset would be an hour away (the budget spread over an hour)
    or long past (every window overrun). Read against the server's clock, 40 requests at 15
    per 1 s window go as fast as with the clocks agreeing (0), with no 429."""
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\n" + "".join(f"U{i},u{i}@x.es\n" for i in range(400)),
                    encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    box = make_sandbox(rate_limit=15, rate_window_s=1.0, clock=lambda: time.time() + skew)
    upload = UploadSettings(backoff_base=0.01, backoff_cap=0.05, rate_jitter=0.01,
                            initial_concurrency=4)
    options = RunOptions(upload=upload, batch_size=10, rejects_path=str(tmp_path / "r.csv"))
    started = time.monotonic()
    report = asyncio.run(asyncio.wait_for(
        arun_import([str(data)], mapping, creds(box), options), timeout=60))
    took = time.monotonic() - started
    assert (report.accepted, report.requests, report.rate_limited) == (400, 40, 0)
    assert took < 15, took  # with the clocks agreeing: 5-7 s on a loaded 2-core VM
