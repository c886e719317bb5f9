"""``delete``'s sending: one DELETE per id, paced by the rate limit, concurrent, retried,
outages waited out (:mod:`importer.outage`); a 401 or a datasource 404 stops it.

:mod:`importer.delete` plans the ids, runs a :class:`Deleter` and writes the report and the
rejects file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import httpx

from importer.check import fetch_stream
from importer.client import ApiClient, Verdict, auth_message, interpret, parse_rate
from importer.datasource import Timing, not_found_message
from importer.exceptions import AuthError, FatalApiError, NotFoundError
from importer.outage import OutageMonitor, OutageTimeout
from importer.redaction import redact
from importer.upload import (
    MAX_RATE_LIMITED_WAITS,
    AdaptiveLimit,
    RatePacer,
    UploadSettings,
    UploadStats,
    backoff_delay,
)


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["deleted", "absent", "failed"]
    status: int | None
    attempts: int
    code: str = ""
    message: str = ""
    retryable: bool = False


def classify_404(message: str) -> str:
    """``contact`` (already absent), ``datasource`` (fatal) or ``unknown``."""
    low = message.lower()
    if "contact" in low:
        return "contact"
    if "datasource" in low or "project" in low:
        return "datasource"
    return "unknown"


ProgressCallback = Callable[[int, int], None]  # (ids answered, ids to send)


class Deleter:
    """Sends one DELETE per id: paced, concurrent, retried; stops on 401 / datasource 404."""

    def __init__(
        self,
        client: ApiClient,
        settings: UploadSettings,
        timing: Timing,
        timeout: float,
        progress: ProgressCallback | None,
    ) -> None:
        self._client = client
        self.settings = settings
        self._timing = timing
        self._timeout = timeout
        self._progress = progress
        self.limit = AdaptiveLimit(settings)
        self.pacer = RatePacer(clock=timing.clock, sleep=timing.sleep, rng=timing.rng,
                               jitter=settings.rate_jitter)
        self.stats = UploadStats()
        self.fatal: FatalApiError | None = None
        # An API that answers nothing but connection errors and 5xx is waited out (probing),
        # not turned into failed deletes: as for run, up to --outage-wait, then the stop.
        self.outage = OutageMonitor(wait=settings.outage_wait, clock=timing.clock,
                                    sleep=timing.sleep)
        self.outage_abort: str | None = None
        self._unknown_404: str | None = None  # how a 404 naming nothing was settled
        self._verify_lock = asyncio.Lock()
        self._answered = 0
        # ids the datasource no longer has (deleted or already absent), told as they come
        self.on_done: Callable[[Sequence[str]], None] | None = None

    async def run(self, ids: Sequence[str]) -> list[Outcome | None]:
        """One outcome per id, None for an id never answered (the run stopped)."""
        results: list[Outcome | None] = [None] * len(ids)
        positions = iter(range(len(ids)))  # shared: each index is taken by one worker

        async def worker() -> None:
            for i in positions:
                if self.stopped:
                    return
                outcome = results[i] = await self._one(ids[i])
                if self.on_done is not None and outcome is not None and outcome.kind != "failed":
                    self.on_done((ids[i],))
                self._answered += 1
                if self._progress is not None:
                    self._progress(self._answered, len(ids))

        await asyncio.gather(*(worker() for _ in range(min(self.limit.cap, len(ids)))))
        return results

    @property
    def stopped(self) -> bool:
        return self.fatal is not None or self.outage_abort is not None

    def _stop(self, exc: FatalApiError) -> None:
        if self.fatal is None:
            self.fatal = exc

    async def _one(self, user_id: str) -> Outcome | None:
        attempts = waits = 0
        while True:
            if self.stopped:
                return None
            try:
                probe = await self.outage.gate()
            except OutageTimeout as exc:
                if self.outage_abort is None:
                    self.outage_abort = (f"{exc}: the deletes stopped — run the same delete "
                                         "again once the API answers (ids already deleted "
                                         "count as already absent)")
                return None
            await self.limit.acquire()
            await self.pacer.acquire()
            attempts += 1
            self.stats.requests += 1
            try:
                response = await self._client.delete_contact(user_id)
            except asyncio.CancelledError:
                self.outage.abandon(probe)
                raise
            except httpx.TransportError as exc:
                self.pacer.failed()
                self.limit.release("fault")
                self.stats.statuses[type(exc).__name__] += 1
                if not self.outage.failed(probe):
                    attempts -= 1  # the API is down: not this id's attempt
                    continue
                if attempts >= self.settings.max_attempts:
                    return _gave_up(None, attempts, f"{type(exc).__name__} (no response)")
                await self._backoff(attempts)
                continue
            status = response.status_code
            self.stats.statuses[str(status)] += 1
            now = self._timing.clock()
            if 200 <= status < 300:
                self.outage.alive(probe)
                self.pacer.done(parse_rate(response.headers, now, self._client.server_clock))
                self.limit.release("ok")
                return Outcome("deleted", status, attempts)
            answer = interpret(status, response.headers, response.content, (user_id,), now=now,
                               server=self._client.server_clock)
            if answer.verdict is not Verdict.RETRY:
                self.outage.alive(probe)
            self.pacer.done(answer.rate)
            if answer.verdict is Verdict.RATE:
                self.pacer.rate_limited(answer.rate)
                self.limit.release("throttled")
                self.stats.rate_limited += 1
                attempts -= 1  # a 429 does not consume the attempt budget (API.md §6)
                waits += 1
                if waits > MAX_RATE_LIMITED_WAITS:
                    return _gave_up(429, attempts, "still rate limited (429)")
                continue
            if answer.verdict is Verdict.RETRY:
                self.limit.release("fault")
                if not self.outage.failed(probe):
                    attempts -= 1  # the API is down: not this id's attempt
                    continue
                if attempts >= self.settings.max_attempts:
                    return _gave_up(status, attempts, answer.message or f"HTTP {status}")
                if answer.rate.retry_after is not None:  # a 503 saying when to come back
                    self.pacer.pause(answer.rate.retry_after)
                await self._backoff(attempts)
                continue
            self.limit.release("ok")
            message = redact(answer.message, (self._client.credentials.token,))
            return await self._settle(answer.verdict, status, message, attempts)

    async def _settle(
        self, verdict: Verdict, status: int, message: str, attempts: int
    ) -> Outcome | None:
        creds = self._client.credentials
        if verdict is Verdict.AUTH:
            self._stop(AuthError(auth_message(401, creds), 401))
            return None
        if verdict is Verdict.NOT_FOUND:
            kind = classify_404(message)
            if kind == "unknown":
                kind = await self._settle_unknown_404()
            if kind == "datasource":
                self._stop(NotFoundError(not_found_message(creds), 404))
                return None
            return Outcome("absent", status, attempts)
        if verdict is Verdict.SPLIT:
            return Outcome("failed", status, attempts, "bad_request", f"HTTP {status}: "
                            f"{message or 'bad request'}")
        return Outcome("failed", status, attempts, f"http_{status}",
                        message or f"HTTP {status}")

    async def _settle_unknown_404(self) -> str:
        """A 404 naming neither contact nor datasource: ask ``GET /stream`` once per run."""
        async with self._verify_lock:
            if self._unknown_404 is None:
                try:
                    await fetch_stream(self._client, timeout=self._timeout,
                                       settings=self.settings, timing=self._timing)
                    self._unknown_404 = "contact"
                except FatalApiError as exc:
                    self._unknown_404 = "datasource"
                    self._stop(exc)
            return self._unknown_404

    async def _backoff(self, attempts: int) -> None:
        self.stats.retries += 1
        await self._timing.sleep(backoff_delay(self.settings, attempts, self._timing.rng))


def _gave_up(status: int | None, attempts: int, why: str) -> Outcome:
    return Outcome(
        "failed", status, attempts,
        "rate_limited" if status == 429 else "transport",
        f"gave up after {attempts} attempt(s): {why}", retryable=True,
    )
