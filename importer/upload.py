"""Scheduling: post chunks concurrently, at the rate limit, with retries.

HTTP meaning lives in :func:`importer.client.interpret`; this module decides *when* to send.

- :class:`RatePacer` spreads requests over what is left of the server's window
  (``X-RateLimit-Remaining`` / ``X-RateLimit-Reset``), so a run holds the ceiling without
  bursting into 429s. A 429 pauses the whole endpoint until the reset (plus jitter).
- :class:`AdaptiveLimit` bounds requests in flight: it grows while responses are clean and
  shrinks on 429s and server faults (AIMD), under a cap; ``--concurrency`` pins it.
- :class:`Uploader` runs the workers in a task group: each finished chunk is handed to
  ``on_result`` as a :class:`ChunkResult` with one outcome per item, in the chunk's order; the
  first unexpected error in any worker cancels the others and ends :meth:`Uploader.run`
  (a dead worker must never leave the run waiting forever for the chunks it held).
- :class:`importer.outage.OutageMonitor` notices an API that answers nothing but connection
  errors and 5xx: the workers stop spending the rows' attempts, one probe at a time checks
  (with backoff) whether it is back, for up to ``outage_wait`` seconds; past that the run
  stops (resumable).

Clock, sleep and randomness are injected so tests never really wait.
"""

from __future__ import annotations

import asyncio
import collections
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from importer.chunking import Chunk, body_size
from importer.client import (
    ACCEPTED,
    ApiClient,
    BatchResponse,
    ItemOutcome,
    RateInfo,
    Verdict,
    interpret,
)
from importer.ordering import KeyGate
from importer.outage import OutageMonitor, OutageState, OutageTimeout

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

#: A 429 storm is not a reason to loop forever: after this many waits a chunk gives up
#: (its rows become retryable rejects).
MAX_RATE_LIMITED_WAITS = 50
#: How far behind its schedule the pacer may catch up with a short burst, in seconds.
CATCH_UP = 0.25
#: Paced requests leave on a shared beat of this many seconds: those whose slots fall within
#: one beat wake together (one timer turn of the event loop instead of one each; at 100
#: requests/s that is 10 requests per turn). The schedule itself is unchanged, so the window's
#: budget still bounds the total; a request leaves at most one beat after its slot.
PACING_BEAT = 0.1
#: The longest single wait a rate-limit header may impose (guards against clock skew).
MAX_RATE_WAIT = 65.0
#: Two answers of one window may give resets this far apart, in seconds: a reset read
#: against the server's ``Date`` (whole seconds) or given as seconds-from-now moves with the
#: moment each answer was read. Windows are a minute long; a later reset by more is a new one.
RESET_SLACK = 1.0
#: The most request-body bytes the uploader holds at once, queued or being sent (always at
#: least one chunk): what bounds a run's memory past the reader on wide rows (issue 15).
#: Each held chunk costs ~3x its body (its items, the joined body, the HTTP layer's copy).
HOLD_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class UploadSettings:
    concurrency: int | None = None  # None = adaptive between 1 and max_concurrency
    max_concurrency: int = 32
    initial_concurrency: int = 8
    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    rate_jitter: float = 0.25  # seconds of jitter added after a window reset
    # How long an outage (every recent request failed: no connection, or 5xx) is waited out,
    # probing, before the run stops (``--outage-wait``).
    outage_wait: float = 600.0


@dataclass(frozen=True, slots=True)
class ChunkResult:
    chunk: Chunk
    outcomes: tuple[ItemOutcome, ...]
    status: int | None
    attempts: int

    @property
    def all_accepted(self) -> bool:
        """Every item accepted, none a duplicate: nearly every answer of a run."""
        return self.outcomes.count(ACCEPTED) == len(self.outcomes)


@dataclass
class UploadStats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    splits: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    items_sent: int = 0
    warnings: list[str] = field(default_factory=list)  # each said once, in the report


class RatePacer:
    """Per-endpoint pacing from the rate-limit headers."""

    def __init__(self, *, clock: Clock, sleep: Sleep, rng: random.Random, jitter: float) -> None:
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._jitter = jitter
        self._remaining: int | None = None
        self._reset: float | None = None
        self._next_slot = 0.0
        self._blocked_until = 0.0
        self.inflight = 0

    async def acquire(self) -> None:
        """Wait for this endpoint's next slot; counts the request as in flight.

        The slot is reserved before the wait, so no lock is held across a sleep and each
        waiter costs one timer (handing a lock from waiter to waiter cost a turn of the event
        loop per request). A reserved request counts as in flight: a new window's budget is
        learnt net of it. A 429 during the wait gives the slot back.
        """
        while True:
            now = self._clock()
            if self._blocked_until > now:
                await self._sleep(min(self._blocked_until - now, MAX_RATE_WAIT))
                continue
            slot = self._reserve(now)
            if slot is None:
                continue  # the window is spent: _reserve blocked the endpoint until its reset
            self.inflight += 1
            if slot > now:
                await self._sleep(math.ceil(slot / PACING_BEAT) * PACING_BEAT - now)
                if self._blocked_until > self._clock():
                    self.inflight = max(self.inflight - 1, 0)
                    continue
            return

    def _reserve(self, now: float) -> float | None:
        """This request's start time; None when the window's budget is spent."""
        if self._remaining is None or self._reset is None or self._reset <= now:
            return now  # nothing known, or the window is over: go
        if self._remaining <= 0:
            self._blocked_until = now + min(self._reset - now, MAX_RATE_WAIT) + self._jit()
            return None
        # Timers fire late (a fraction of a millisecond, more on a busy machine): a slot
        # that starts late must not push the whole schedule back, or the run drifts below
        # the ceiling by that much on every request. Late slots are caught up, within
        # CATCH_UP seconds; the window's budget still bounds the total, so no 429 follows.
        slot = max(now - CATCH_UP, self._next_slot)
        start = max(slot, now)
        # What is left of the window, from this slot on, spread over the requests left.
        spacing = max(self._reset - start, 0.0) / self._remaining
        self._next_slot = slot + spacing
        self._remaining -= 1  # spent locally now; the server's count catches up later
        return start

    def _jit(self) -> float:
        return self._rng.uniform(0, self._jitter)

    def done(self, rate: RateInfo) -> None:
        """A response arrived: release its in-flight slot and learn from its headers."""
        self.inflight = max(self.inflight - 1, 0)
        if rate.remaining is None or rate.reset is None:
            return
        if self._reset is None or rate.reset > self._reset + RESET_SLACK:
            # A new window: what the server says, less what is in flight and not yet counted.
            self._reset = rate.reset
            self._remaining = rate.remaining - self.inflight
            self._next_slot = self._clock()  # a new schedule: nothing to catch up on
        elif rate.reset >= self._reset - RESET_SLACK:
            # Responses overtake each other, and other clients share the budget: the lowest
            # count is the safest truth.
            local = self._remaining if self._remaining is not None else rate.remaining
            self._remaining = min(local, rate.remaining)

    def failed(self) -> None:
        """A request ended without a response (transport error)."""
        self.inflight = max(self.inflight - 1, 0)

    def pause(self, seconds: float) -> None:
        """The server asked for a pause (``Retry-After`` on a 503): hold every request to
        this endpoint that long, within MAX_RATE_WAIT."""
        now = self._clock()
        wait = min(max(seconds, 0.0), MAX_RATE_WAIT) + self._jit()
        self._blocked_until = max(self._blocked_until, now + wait)

    def rate_limited(self, rate: RateInfo) -> None:
        """A 429: pause the whole endpoint until the window resets (Retry-After wins)."""
        now = self._clock()
        if rate.retry_after is not None:
            wait = rate.retry_after
        elif rate.reset is not None:
            wait = rate.reset - now
        else:
            wait = 1.0
        wait = min(max(wait, 0.0), MAX_RATE_WAIT) + self._jit()
        self._blocked_until = max(self._blocked_until, now + wait)
        # What the window holds after the pause is learnt from the next response's headers.
        self._remaining = self._reset = None


class AdaptiveLimit:
    """Bounds requests in flight; additive increase, multiplicative decrease.

    A release hands its slot to the longest waiter, if the limit allows, and wakes only that
    one (a condition variable's notify-all woke every waiting worker on every response, each
    to find the limit still reached: a turn of the event loop per waiter per request).
    """

    def __init__(self, settings: UploadSettings) -> None:
        pinned = settings.concurrency
        self.pinned = pinned is not None
        self.cap = pinned if pinned is not None else settings.max_concurrency
        self.limit = float(pinned if pinned is not None else settings.initial_concurrency)
        self.active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.active < int(self.limit) and not self._waiters:
            self.active += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # a release counted us in (``active``) before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.active -= 1  # granted and cancelled at once: give the slot back
                self._grant()
            else:
                self._waiters.remove(waiter)
            raise

    def release(self, signal: str) -> None:
        """``signal``: "ok", "fault" (5xx/transport) or "throttled" (429)."""
        self.active -= 1
        if not self.pinned:
            if signal == "ok":
                self.limit = min(self.cap, self.limit + 1.0 / max(self.limit, 1.0))
            elif signal == "throttled":
                self.limit = max(1.0, self.limit / 2)
            else:
                self.limit = max(1.0, self.limit * 0.9)
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.active < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.active += 1
                waiter.set_result(None)


class _Handoff:
    """Chunks from the producer to the workers, topped up in bulk, bounded by count and bytes.

    The producer waits while ``high`` chunks are queued and is woken once the workers have
    taken the backlog down to ``low``: one producer turn per ``high - low`` chunks. (An
    ``asyncio.Queue`` that is always full woke it for every chunk taken: a turn of the event
    loop per request.) ``close`` lets the workers finish what is queued, then stop.

    It also waits while the chunks the uploader holds — queued, or taken by a worker and not
    yet ``done`` — carry ``budget`` bytes of request bodies or more (always letting one
    through), and is woken once they are down to half of it. Narrow rows never come near it
    (100 items of 200 bytes are 20 KB); 100 items of 1,000 columns are 1.6 MB each, and with
    the API as the bottleneck the 64 chunks the count allows took a run from 319 to 657 MB
    (issue 15, bench/results/wide.md).
    """

    def __init__(self, *, high: int, low: int, budget: int = HOLD_BYTES) -> None:
        self._items: collections.deque[Chunk] = collections.deque()
        self._high = high
        self._low = low
        self._budget = budget
        self._held = 0  # chunks queued or being sent
        self._bytes = 0  # their request bodies' bytes
        self._space: asyncio.Future[None] | None = None  # the producer, waiting for room
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def put(self, item: Chunk, size: int = 0) -> None:
        """Queue ``item``, whose request body is ``size`` bytes (see :meth:`done`)."""
        while len(self._items) >= self._high or (self._held and self._bytes >= self._budget):
            self._space = asyncio.get_running_loop().create_future()
            await self._space
        self._items.append(item)
        self._held += 1
        self._bytes += size
        self._wake_one()

    async def get(self) -> Chunk | None:
        """The next chunk; None once closed and drained. Give it back with :meth:`done`."""
        while not self._items:
            if self._closed:
                return None
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            await waiter
        item = self._items.popleft()
        if self._space is not None:
            self._make_room()
        return item

    def done(self, size: int = 0) -> None:
        """A chunk taken with :meth:`get` is settled: its ``size`` bytes are not held any more."""
        self._held -= 1
        self._bytes -= size
        if self._space is not None:
            self._make_room()

    def _make_room(self) -> None:
        space = self._space
        if space is None or len(self._items) > self._low:
            return
        if self._held and self._bytes > self._budget // 2:
            return
        self._space = None
        if not space.done():
            space.set_result(None)

    def close(self) -> None:
        self._closed = True
        while self._waiting:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _size(chunk: Chunk) -> int:
    """The chunk's request body in bytes (joined where the chunk was made: no copy here)."""
    return len(chunk.joined) if chunk.joined is not None else body_size(chunk.bodies)


class FatalResponse(Exception):
    """Internal: a 401/404 answered a batch; carries the response."""

    def __init__(self, response: BatchResponse) -> None:
        self.response = response
        super().__init__(response.message)


class Uploader:
    """Posts chunks; reports each outcome to ``on_result`` and unsent chunks to ``on_unsent``."""

    def __init__(
        self,
        client: ApiClient,
        settings: UploadSettings,
        *,
        on_result: Callable[[ChunkResult], None],
        on_unsent: Callable[[Chunk], None],
        clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        on_outage: Callable[[OutageState | None], None] | None = None,
    ) -> None:
        self._client = client
        self.settings = settings
        self._on_result = on_result
        self._on_unsent = on_unsent
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pacers: dict[str, RatePacer] = {}
        self.limit = AdaptiveLimit(settings)
        self.stats = UploadStats()
        self.fatal: BatchResponse | None = None
        self.stop_requested = False
        # Rows sharing a key reach the API in file order (importer.ordering).
        self.gate = KeyGate()
        self.outage = OutageMonitor(wait=settings.outage_wait, clock=clock, sleep=sleep,
                                    on_change=on_outage)
        self.outage_abort: str | None = None  # why the run stopped: an outage outlasted

    def _pacer(self, target: str) -> RatePacer:
        pacer = self._pacers.get(target)
        if pacer is None:
            pacer = RatePacer(
                clock=self._clock,
                sleep=self._sleep,
                rng=self._rng,
                jitter=self.settings.rate_jitter,
            )
            self._pacers[target] = pacer
        return pacer

    def stop(self) -> None:
        """Stop taking new chunks (``--max-rejects`` reached); in-flight ones finish."""
        self.stop_requested = True

    @property
    def stopping(self) -> bool:
        return self.stop_requested or self.fatal is not None or self.outage_abort is not None

    async def run(self, chunks: AsyncIterator[Chunk]) -> None:
        """Send every chunk; returns when all are answered or the run stopped.

        After a stop, every chunk that was not sent is handed to ``on_unsent``. An unexpected
        error in a worker (say, the rejects file cannot be written) cancels the others and
        the producer, and is raised (in an ExceptionGroup): the run ends instead of waiting
        for a worker that is gone.
        """
        handoff = _Handoff(high=self.limit.cap * 2, low=self.limit.cap)
        async with asyncio.TaskGroup() as workers:
            for _ in range(self.limit.cap):
                workers.create_task(self._worker(handoff))
            try:
                async for chunk in chunks:
                    if self.stopping:
                        self._on_unsent(chunk)
                    else:
                        self.gate.register(chunk)
                        await handoff.put(chunk, _size(chunk))
                    del chunk  # not held while the next one is made (see _worker)
            finally:
                handoff.close()

    async def _worker(self, handoff: _Handoff) -> None:
        while (chunk := await handoff.get()) is not None:
            try:
                await self.gate.wait(chunk)
                if self.stopping:
                    self._on_unsent(chunk)
                    continue
                await self._deliver(chunk)
            finally:
                self.gate.settle(chunk)
                handoff.done(_size(chunk))
                # An idle worker must not keep its last chunk alive while it waits for the
                # next: 32 idle workers held 32 chunks (~100 MB of 1,000-column items).
                del chunk

    async def _deliver(self, chunk: Chunk) -> None:
        """Send one chunk until it has an answer for every item (splitting on a 400)."""
        sendable = self.gate.hold_back(chunk, self._held)
        if sendable is None:
            return
        chunk = sendable
        try:
            result = await self._send(chunk)
        except FatalResponse as exc:
            if self.fatal is None:
                self.fatal = exc.response
            self._on_unsent(chunk)
            return
        except OutageTimeout as exc:
            if self.outage_abort is None:
                self.outage_abort = str(exc)
            self._on_unsent(chunk)
            return
        if result is not None:
            if not result.all_accepted:  # (nearly every answer: nothing to learn from it)
                self.gate.observe(chunk, result.outcomes)
            self._on_result(result)
            return
        # A whole-batch refusal: halve until the offending items stand alone.
        self.stats.splits += 1
        for half in chunk.split():
            if self.stopping:
                self._on_unsent(half)
            else:
                await self._deliver(half)

    def _held(self, chunk: Chunk, outcomes: tuple[ItemOutcome, ...]) -> None:
        self._on_result(ChunkResult(chunk, outcomes, None, 0))

    async def _send(self, chunk: Chunk) -> ChunkResult | None:
        """One chunk's attempts. None means "split it"; raises FatalResponse on 401/404."""
        pacer = self._pacer(chunk.target)
        attempts = 0
        waits = 0
        body = chunk.body
        while True:
            probe = await self.outage.gate()
            await self.limit.acquire()
            await pacer.acquire()
            attempts += 1
            self.stats.requests += 1
            try:
                response = await self._client.post_items(chunk.target, body)
            except asyncio.CancelledError:
                self.outage.abandon(probe)
                raise
            except httpx.TransportError as exc:
                pacer.failed()
                self.limit.release("fault")
                self.stats.statuses[type(exc).__name__] += 1
                outcome = f"{type(exc).__name__} (no response)"
                if not self.outage.failed(probe):
                    attempts -= 1  # the API is down: not this row's attempt
                    continue
                if attempts >= self.settings.max_attempts:
                    return self._give_up(chunk, None, attempts, outcome)
                await self._backoff(attempts)
                continue
            answer = interpret(
                response.status_code,
                response.headers,
                response.content,
                chunk.keys,
                now=self._clock(),
                server=self._client.server_clock,
            )
            self.stats.statuses[str(response.status_code)] += 1
            if answer.verdict is not Verdict.RETRY:
                self.outage.alive(probe)
            if answer.rate.problem and answer.rate.problem not in self.stats.warnings:
                self.stats.warnings.append(answer.rate.problem)
            if answer.verdict is Verdict.RATE:
                pacer.done(answer.rate)
                pacer.rate_limited(answer.rate)
                self.limit.release("throttled")
                self.stats.rate_limited += 1
                attempts -= 1  # a 429 does not consume the attempt budget
                waits += 1
                if waits > MAX_RATE_LIMITED_WAITS:
                    return self._give_up(chunk, 429, attempts, "still rate limited (429)")
                continue
            pacer.done(answer.rate)
            if answer.verdict is Verdict.RETRY:
                self.limit.release("fault")
                if not self.outage.failed(probe):
                    attempts -= 1  # the API is down: not this row's attempt
                    continue
                if attempts >= self.settings.max_attempts:
                    return self._give_up(chunk, answer.status, attempts, answer.message)
                if answer.rate.retry_after is not None:  # a 503 saying when to come back
                    pacer.pause(answer.rate.retry_after)
                await self._backoff(attempts)
                continue
            self.limit.release("ok")
            return self._settle(chunk, answer, attempts)

    def _settle(self, chunk: Chunk, answer: BatchResponse, attempts: int) -> ChunkResult | None:
        if answer.verdict in (Verdict.AUTH, Verdict.NOT_FOUND):
            raise FatalResponse(answer)
        if answer.verdict is Verdict.SPLIT:
            if len(chunk) > 1:
                return None
            refused = ItemOutcome(ok=False, code="bad_request", message=answer.message)
            return ChunkResult(chunk, (refused,), answer.status, attempts)
        if answer.verdict is Verdict.FAILED:
            failed = ItemOutcome(ok=False, code=f"http_{answer.status}", message=answer.message)
            return ChunkResult(chunk, (failed,) * len(chunk), answer.status, attempts)
        self.stats.items_sent += len(chunk)
        return ChunkResult(chunk, answer.items, answer.status, attempts)

    def _give_up(
        self, chunk: Chunk, status: int | None, attempts: int, why: str
    ) -> ChunkResult:
        outcome = ItemOutcome(
            ok=False,
            code="rate_limited" if status == 429 else "transport",
            message=f"gave up after {attempts} attempt(s): {why}",
            retryable=True,
        )
        return ChunkResult(chunk, (outcome,) * len(chunk), status, attempts)

    async def _backoff(self, attempts: int) -> None:
        self.stats.retries += 1
        await self._sleep(backoff_delay(self.settings, attempts, self._rng))


def backoff_delay(settings: UploadSettings, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter, after the ``attempts``-th failed attempt.

    Shared with the other request loops (``delete``, the spec and stream reads), so every
    request the tool retries backs off the same way.
    """
    ceiling = min(settings.backoff_cap, settings.backoff_base * 2 ** (attempts - 1))
    return rng.uniform(0, ceiling)
