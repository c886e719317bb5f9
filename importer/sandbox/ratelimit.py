"""A fixed 60-second window per endpoint, as API.md §5 describes Instasent's limiter.

The sandbox serves one datasource, so "per (datasource, endpoint)" is per endpoint here.
Decisions [ours]:

- A window opens with the first request after the previous one ended and lasts 60 s
  (not aligned to the minute), like the classic fixed-window limiters.
- Only admitted requests count. A request answered 429 does not consume the budget nor
  extend the window, so a client that waits until ``X-RateLimit-Reset`` always gets in.
- ``X-RateLimit-Reset`` is the Unix time in whole seconds, rounded *up*, when the window
  ends: a client sleeping until then never arrives early.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    limit: int
    remaining: int
    reset: int  # Unix seconds

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
            (b"x-ratelimit-reset", str(self.reset).encode()),
        ]


class FixedWindowLimiter:
    """``limit`` requests per endpoint per window; the clock is the caller's (injectable)."""

    def __init__(self, limit: int, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._windows: dict[str, tuple[float, int]] = {}

    def admit(self, endpoint: str, now: float) -> Decision:
        start, used = self._windows.get(endpoint, (-math.inf, 0))
        if now >= start + self.window:
            start, used = now, 0
        reset = math.ceil(start + self.window)
        if used >= self.limit:
            return Decision(False, self.limit, 0, reset)
        used += 1
        self._windows[endpoint] = (start, used)
        return Decision(True, self.limit, self.limit - used, reset)

    def clear(self) -> None:
        self._windows.clear()
