"""An API outage, noticed and waited out instead of turned into rejects.

When every recent request ends in a connection error, a timeout or a 5xx, the API is down:
sending on would spend each row's attempts in seconds and turn the rest of the file into
retryable rejects. Instead the workers wait, one probe at a time checks (with backoff) whether
the API is back, and sending resumes when it is; a run waits up to ``outage_wait`` seconds
(``--outage-wait``), then stops, resumable. Failures while the API is known to be down do not
count as the rows' attempts: a row's attempts are spent only on a live API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: This many requests in a row ending in a connection error, a timeout or a 5xx, with no
#: answer between them, mean the API is down (not one flaky request): at 10% random 5xx a
#: false alarm is a 1-in-100,000 event per request, and costs a probe.
OUTAGE_STREAK = 5
#: Probes during an outage start this far apart and double, up to the cap.
PROBE_FIRST = 0.5
PROBE_CAP = 30.0
#: How often a worker held back by an outage looks again (so it follows a probe's success).
OUTAGE_POLL = 0.2


class OutageTimeout(Exception):
    """Internal: an outage lasted longer than ``outage_wait``."""


@dataclass(frozen=True, slots=True)
class OutageState:
    """What the progress line shows while the API is down."""

    since: float  # clock time the outage was noticed
    waited: float  # seconds so far
    wait: float  # seconds it is waited out before the run stops
    probes: int  # failed probes so far


class OutageMonitor:
    """Counts consecutive failures of every request; past :data:`OUTAGE_STREAK` the API is
    down: requests wait at :meth:`gate`, which lets one probe through at a time, with
    backoff, until one gets an answer. Failures while down are not the rows' fault and do not
    count as their attempts (a row's attempts are spent only on a live API)."""

    def __init__(self, *, wait: float, clock: Clock, sleep: Sleep,
                 on_change: Callable[[OutageState | None], None] | None = None) -> None:
        self.wait = wait
        self._clock = clock
        self._sleep = sleep
        self._on_change = on_change
        self.streak = 0
        self.down_since: float | None = None
        self._probing = False
        self._delay = PROBE_FIRST
        self._next_probe = 0.0
        self.probes = 0
        self.outages = 0

    @property
    def down(self) -> bool:
        return self.down_since is not None

    async def gate(self) -> bool:
        """Before a request: wait while the API is down. True when this request is the
        probe; raises OutageTimeout once the outage outlasts ``wait``."""
        while self.down_since is not None:
            now = self._clock()
            left = self.down_since + self.wait - now
            if left <= 0:
                raise OutageTimeout(self.describe())
            if not self._probing and now >= self._next_probe:
                self._probing = True
                return True
            await self._sleep(max(min(OUTAGE_POLL, self._next_probe - now, left), 0.01))
        return False

    def alive(self, probe: bool) -> None:
        """A request got an answer (any but a 5xx): the API is up."""
        self.streak = 0
        if probe:
            self._probing = False
        if self.down_since is not None:
            self.down_since = None
            self._probing = False
            self._delay = PROBE_FIRST
            self._changed()

    def failed(self, probe: bool) -> bool:
        """A request ended in a connection error, a timeout or a 5xx. True when it counts as
        an attempt (the API was not known to be down)."""
        self.streak += 1
        now = self._clock()
        if self.down_since is None:
            if self.streak < OUTAGE_STREAK:
                return True
            self.down_since = now
            self.outages += 1
            self._delay = PROBE_FIRST
            self._next_probe = now + self._delay
            self.probes = 0
            self._changed()
            return False
        if probe:
            self._probing = False
            self.probes += 1
            self._delay = min(self._delay * 2, PROBE_CAP)
            self._next_probe = now + self._delay
            self._changed()
        return False

    def abandon(self, probe: bool) -> None:
        """The probe ended without an outcome (cancelled): let another one through."""
        if probe:
            self._probing = False

    def state(self) -> OutageState | None:
        if self.down_since is None:
            return None
        return OutageState(self.down_since, self._clock() - self.down_since, self.wait,
                           self.probes)

    def describe(self) -> str:
        waited = self._clock() - (self.down_since or self._clock())
        return (f"the API answered every request with a connection error or a 5xx for "
                f"{waited:,.0f} s (--outage-wait {self.wait:g} s)")

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.state())
