"""Seeded fault injection: the same seed and the same request sequence give the same faults.

Every request that passes authentication and the rate limit draws exactly four numbers
from one ``random.Random(seed)``, whichever faults are enabled, so turning one fault on
does not reshuffle the others and a failing test replays exactly. The order of outcomes:
``drop_before`` (connection closed, nothing processed) wins over ``fail`` (a 5xx, nothing
processed); ``slow`` adds ``slow_ms`` on top of the latency of a request that goes on;
``drop_after`` (processed and stored, then the connection closed) is drawn last.
With concurrent clients the draw order is the arrival order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields, replace
from typing import Any

from importer.sandbox.settings import MAX_DELAY_MS, FaultSettings

_RATES = ("fail_rate", "drop_before_rate", "drop_after_rate", "slow_rate")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What happens to one request."""

    drop_before: bool = False
    fail_status: int | None = None
    slow_seconds: float = 0.0
    drop_after: bool = False


NO_FAULTS = FaultPlan()


class FaultInjector:
    def __init__(self, settings: FaultSettings, seed: int) -> None:
        self.settings = settings
        self._random = random.Random(seed)

    def reseed(self, seed: int) -> None:
        self._random.seed(seed)

    def draw(self) -> FaultPlan:
        s = self.settings
        roll = self._random.random
        before, fail, slow, after = roll(), roll(), roll(), roll()
        if before < s.drop_before_rate:
            return FaultPlan(drop_before=True)
        if fail < s.fail_rate:
            # Re-using the draw keeps four draws per request; it is uniform over the statuses.
            index = int(fail / s.fail_rate * len(s.fail_statuses)) % len(s.fail_statuses)
            return FaultPlan(fail_status=s.fail_statuses[index])
        slow_seconds = s.slow_ms / 1000 if slow < s.slow_rate else 0.0
        if not slow_seconds and after >= s.drop_after_rate:
            return NO_FAULTS
        return FaultPlan(slow_seconds=slow_seconds, drop_after=after < s.drop_after_rate)


def fault_problems(settings: FaultSettings) -> list[str]:
    """Every problem of a :class:`FaultSettings`, each with the value and what is allowed."""
    problems = [
        f"{name}={getattr(settings, name)!r}: expected a probability between 0 and 1"
        for name in _RATES
        if not 0.0 <= getattr(settings, name) <= 1.0
    ]
    statuses = settings.fail_statuses
    if not statuses or any(not 500 <= s <= 599 for s in statuses):
        problems.append(f"fail_statuses={list(statuses)!r}: expected 5xx statuses, e.g. [500, 503]")
    if not 0 <= settings.slow_ms <= MAX_DELAY_MS:
        problems.append(f"slow_ms={settings.slow_ms!r}: expected milliseconds between 0 and "
                        f"{MAX_DELAY_MS} (10 minutes)")
    return problems


#: The longest outage the sandbox plays (an hour): longer is a mistake, not a rehearsal.
MAX_DOWN_S = 3600.0


def down_problems(seconds: object, status: object) -> list[str]:
    """What is wrong with an outage request (``go_down`` / the faults hook)."""
    problems = []
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not (
        0 <= seconds <= MAX_DOWN_S
    ):
        problems.append(f"down_s={seconds!r}: expected seconds between 0 and {MAX_DOWN_S:g}")
    if status is not None and (type(status) is not int or not 500 <= status <= 599):
        problems.append(f"down_status={status!r}: expected a 5xx status or null (connections "
                        "closed)")
    return problems


def update_faults(current: FaultSettings, changes: dict[str, Any]) -> FaultSettings:
    """``current`` with the given fields replaced; raises ValueError naming every problem."""
    known = {f.name for f in fields(FaultSettings)}
    unknown = sorted(set(changes) - known)
    problems = [f"unknown field {name!r}: expected one of {sorted(known)}" for name in unknown]
    typed: dict[str, Any] = {}
    for name, value in changes.items():
        if name == "fail_statuses" and isinstance(value, list):
            typed[name] = tuple(value)
        elif name in known:
            typed[name] = value
    problems += _type_problems(typed)
    if problems:
        raise ValueError("; ".join(problems))
    updated = replace(current, **typed)
    problems = fault_problems(updated)
    if problems:
        raise ValueError("; ".join(problems))
    return updated


def _type_problems(values: dict[str, Any]) -> list[str]:
    problems = []
    for name, value in values.items():
        if name in _RATES and (isinstance(value, bool) or not isinstance(value, int | float)):
            problems.append(f"{name}={value!r}: expected a number")
        elif name == "slow_ms" and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"slow_ms={value!r}: expected an integer")
        elif name == "fail_statuses" and not (
            isinstance(value, tuple) and all(type(s) is int for s in value)
        ):
            problems.append(f"fail_statuses={value!r}: expected a list of integers")
    return problems
