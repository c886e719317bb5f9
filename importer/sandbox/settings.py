"""Settings of the local sandbox server (frozen; the CLI and tests build them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

DEFAULT_PROJECT = "sandbox-project"
DEFAULT_DATASOURCE = "sandbox-datasource"
DEFAULT_TOKEN = "sandbox-token"

ResponseShape = Literal["docs", "activepieces"]

#: The longest delay a setting may ask for (latency, slow answers): ten minutes already
#: outlasts any client timeout worth rehearsing; more only ties up the server.
MAX_DELAY_MS = 600_000


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Injected faults; every probability is in [0, 1] and drawn from a seeded RNG."""

    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (500, 502, 503)
    drop_before_rate: float = 0.0
    drop_after_rate: float = 0.0
    slow_rate: float = 0.0
    slow_ms: int = 0


@dataclass(frozen=True, slots=True)
class SandboxSettings:
    project: str = DEFAULT_PROJECT
    datasource: str = DEFAULT_DATASOURCE
    token: str = field(default=DEFAULT_TOKEN, repr=False)
    rate_limit: int | None = None  # requests per 60 s window per (datasource, endpoint)
    # The window's length. 60 s is the API's; tests shorten it to cross a 429 window quickly.
    rate_window_s: float = 60.0
    latency_ms: tuple[int, int] = (0, 0)  # uniform in [a, b]
    faults: FaultSettings = FaultSettings()
    seed: int = 0
    require_known_user: bool = False
    response_shape: ResponseShape = "docs"
    db_path: str | None = None  # SQLite file; None keeps everything in memory
    # Served over uvicorn (importer/sandbox/guard.py): connections open at once (more are
    # closed as they arrive) and seconds a client may take to send a request's headers.
    max_connections: int = 1000
    header_timeout_s: float = 10.0
