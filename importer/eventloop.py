"""The event loop of a run: one that can gather its wake-ups while the run is paced.

A run held to the rate limit sends a request every few milliseconds and gets each answer back
at its own moment: left alone, the event loop sleeps and wakes ~120 times a second, and each
wake-up of an idle process costs more CPU (cold caches, a context switch) than the few
microseconds of work it finds. While the pacer is spacing requests out — and only then —
the loop's selector lets up to one pacing beat pass between two waits, so the answers that
came in meanwhile are handled in one wake-up. Timers are never held back (a wait ends at the
next timer), so requests still leave on their beat; an answer is read up to a beat late,
which at these rates only means a few more requests in flight.

Unpaced runs (no rate-limit headers, or a budget the run cannot exhaust) are not slowed at
all: the interval is zero unless the pacer says it is spacing requests.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from typing import Any

#: Wake-ups of a paced run are at least this far apart, in seconds; the pacer's beat
#: (``upload.PACING_BEAT``) is this same interval, so a paced run wakes about once a beat
#: to send that beat's requests and read the answers that came in since. Measured on the
#: rate-limited 1M-row run: 10 ms → 2.6 CPU-s on the event loop, 25 ms → 2.0, 50 ms → 1.8;
#: a 100 ms beat took the whole run from 4.84 to 4.53 µs per row. Wall time and 429s
#: unchanged.
PACED_INTERVAL = 0.1
#: The pacer asks for gathering when its requests are at least this far apart, in seconds
#: (at 200 requests/s or more, waiting out intervals could cost throughput).
PACED_SPACING = 0.005

_gather = 0.0  # the interval in force (0: none); set by the pacer through paced()


def paced(active: bool) -> None:
    """Tell the loop whether the run is being paced (called by the rate pacer)."""
    global _gather
    _gather = PACED_INTERVAL if active else 0.0


def is_paced() -> bool:
    return _gather > 0


class GatheringSelector(selectors.DefaultSelector):
    """The platform's selector, waiting out the rest of the interval before a blocking wait."""

    def __init__(self) -> None:
        super().__init__()
        self._woke = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        gather = _gather
        if gather and (timeout is None or timeout > 0):
            rest = gather - (time.monotonic() - self._woke)
            if rest > 0:
                time.sleep(rest if timeout is None else min(rest, timeout))
                if timeout is not None:
                    timeout = max(timeout - rest, 0.0)
        ready: list[tuple[Any, int]] = super().select(timeout)
        self._woke = time.monotonic()
        return ready


def new_event_loop() -> asyncio.AbstractEventLoop:
    return asyncio.SelectorEventLoop(GatheringSelector())


def run(coro: Any) -> Any:
    """``asyncio.run`` on a gathering loop; the run's pacing hint ends with it."""
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            return runner.run(coro)
    finally:
        paced(False)
