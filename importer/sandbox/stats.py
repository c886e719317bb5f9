"""Counters the sandbox keeps for tests and benchmarks (``GET /__sandbox/stats``).

``requests`` is keyed by endpoint (``"POST /stream/contacts"``; ``"other"`` for paths that
match none) then by status as a string, plus ``"dropped"`` for injected drops. A 429 is
counted under its endpoint *and* in ``rate_limited``. ``faults`` counts injected faults by
kind. Item counters cover batches that were processed (not 400s, not drop-befores);
``items_succeeded`` includes duplicates, ``duplicates_suppressed`` counts them.
"""

from __future__ import annotations

from typing import Any

FAULT_KINDS = ("fail", "drop_before", "drop_after", "slow", "down")


class Stats:
    """Mutable counters; the app guards every access with its lock."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, int]] = {}
        self.requests_total = 0
        self.rate_limited = 0
        self.faults = dict.fromkeys(FAULT_KINDS, 0)
        self.items_received = 0
        self.items_succeeded = 0
        self.duplicates_suppressed = 0
        self.contacts_deleted = 0

    def count(
        self,
        endpoint: str,
        status: int | str | None,
        *,
        rate_limited: bool = False,
        fault: str | None = None,
    ) -> None:
        """One request's outcome; ``status`` None records only a fault (e.g. slow)."""
        if fault is not None:
            self.faults[fault] += 1
        if status is None:
            return
        by_status = self.requests.get(endpoint)
        if by_status is None:
            by_status = self.requests[endpoint] = {}
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1
        self.requests_total += 1
        self.rate_limited += rate_limited

    def items(self, received: int, succeeded: int, duplicates: int) -> None:
        self.items_received += received
        self.items_succeeded += succeeded
        self.duplicates_suppressed += duplicates

    def usage(self) -> dict[str, int]:
        return {
            "requests": self.requests_total,
            "itemsReceived": self.items_received,
            "itemsSucceeded": self.items_succeeded,
        }

    def snapshot(self, contacts: int, events: int) -> dict[str, Any]:
        return {
            "contacts": contacts,
            "events": events,
            "items_received": self.items_received,
            "items_succeeded": self.items_succeeded,
            "items_failed": self.items_received - self.items_succeeded,
            "duplicates_suppressed": self.duplicates_suppressed,
            "contacts_deleted": self.contacts_deleted,
            "requests_total": self.requests_total,
            "requests": {name: dict(by) for name, by in self.requests.items()},
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "faults_injected": sum(self.faults.values()),
        }
