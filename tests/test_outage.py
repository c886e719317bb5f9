"""The outage monitor on a fake clock: when the API counts as down, what a failure costs, how
probes are spaced, and when the wait is over."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from importer.outage import OUTAGE_STREAK, PROBE_CAP, PROBE_FIRST, OutageMonitor, OutageTimeout


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def _monitor(t: FakeTime, wait: float = 60.0) -> OutageMonitor:
    return OutageMonitor(wait=wait, clock=t.clock, sleep=t.sleep)


def test_failures_count_as_attempts_until_the_streak_says_the_api_is_down() -> None:
    m = _monitor(FakeTime())
    counted = [m.failed(probe=False) for _ in range(OUTAGE_STREAK + 3)]
    assert counted == [True] * (OUTAGE_STREAK - 1) + [False] * 4
    assert m.down


def test_an_answer_between_failures_breaks_the_streak() -> None:
    m = _monitor(FakeTime())
    for _ in range(10):
        for _ in range(OUTAGE_STREAK - 1):
            assert m.failed(probe=False)
        m.alive(probe=False)
    assert not m.down


def test_one_probe_at_a_time_with_doubling_spacing_then_up_again() -> None:
    t = FakeTime()
    m = _monitor(t, wait=600)
    for _ in range(OUTAGE_STREAK):
        m.failed(probe=False)
    starts = []

    async def probes(n: int) -> None:
        for _ in range(n):
            assert await m.gate() is True
            starts.append(t.now)
            m.failed(probe=True)

    asyncio.run(probes(8))
    gaps = [round(b - a, 1) for a, b in itertools.pairwise(starts)]
    expected = [min(PROBE_FIRST * 2 ** (i + 1), PROBE_CAP) for i in range(len(gaps))]
    assert all(g >= e for g, e in zip(gaps, expected, strict=True)), (gaps, expected)
    assert gaps[-1] <= PROBE_CAP + 0.5
    m.alive(probe=True)
    assert not m.down
    assert asyncio.run(m.gate()) is False  # up: requests go at once


def test_past_the_wait_the_gate_raises() -> None:
    t = FakeTime()
    m = _monitor(t, wait=5)
    for _ in range(OUTAGE_STREAK):
        m.failed(probe=False)

    async def keep_probing() -> None:
        while True:
            await m.gate()
            m.failed(probe=True)

    with pytest.raises(OutageTimeout, match="--outage-wait 5 s"):
        asyncio.run(keep_probing())
    assert 5 <= t.now <= 6
