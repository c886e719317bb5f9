"""The sandbox: a raw ASGI app that behaves like the Instasent Ingest API (API.md §1-§5).

It serves the API's own layout, ``/v1/project/{project}/datasource/{datasource}/stream...``,
so ``INSTASENT_API_URL=http://127.0.0.1:8790/v1`` is the only difference between a rehearsal
and production. No framework: dispatch on the path, orjson, validation tables built once.

Order of checks for a request outside ``/__sandbox`` (decisions ours where API.md is silent):

1. latency (``latency_ms``), drawn from its own seeded RNG, for every API request;
2. not ``/v1/project/P/datasource/D/stream[/...]`` → 404;
3. ``Authorization`` missing, not ``Bearer <token>``, or the wrong token → 401 (checked
   before the path's ids, so a wrong token never learns whether an id exists);
4. right token, other project or datasource → 404; unknown path below ``/stream`` → 404;
   a known path with another method → 405 with ``Allow``;
5. rate limit (``ratelimit.py``): over the ceiling → 429 with an empty body. From here on
   every response carries ``X-RateLimit-*`` (429, 5xx, 400/413/422, 2xx, and the 404 of an
   unknown contact or event type); the refusals above carry none, as they name no
   (datasource, endpoint) budget. Without ``rate_limit`` the sandbox is unlimited and sends
   no such headers;
6. faults (``faults.py``): drop-before, a 5xx, slow; drop-after once the request is done
   (before all of these, during an outage (``go_down``) every API request fails at once);
7. the endpoint. ``POST`` bodies must be ``Content-Type: application/json`` (API.md §1),
   else 400; over 16 MiB → 413. ``?_dryRun`` validates and stores nothing; ``?_sync`` is
   accepted and changes nothing (the sandbox is always synchronous).

Every response carries ``X-Request-Id`` and a ``Date`` from the sandbox's clock. Python
callers (tests, benchmarks, the demo) use ``stats()``, ``set_faults()``, ``reset()``,
``get_contact()`` and ``events()``; the same are served over HTTP under ``/__sandbox``
(``hooks.py``). Thread-safe: one lock guards the
store, counters and draws, because uvicorn runs the app on its own thread.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qs

import orjson

from importer.sandbox import routes
from importer.sandbox.asgi import (
    BodyTooLarge,
    ClientGone,
    Receive,
    Scope,
    Send,
    drop_connection,
    lifespan,
    read_body,
    request_headers,
    send_response,
    split_path,
)
from importer.sandbox.batches import EventBatch, parse_batch, process_contacts
from importer.sandbox.faults import (
    NO_FAULTS,
    FaultInjector,
    FaultPlan,
    down_problems,
    fault_problems,
)
from importer.sandbox.hooks import Hooks
from importer.sandbox.ratelimit import FixedWindowLimiter
from importer.sandbox.responses import Response, batch_response, json_response, message
from importer.sandbox.routes import Endpoint
from importer.sandbox.settings import MAX_DELAY_MS, FaultSettings, SandboxSettings
from importer.sandbox.specs import ATTRIBUTE_SPECS, EVENT_PARAMETER_SPECS, EVENT_SPECS
from importer.sandbox.stats import Stats
from importer.sandbox.store import Record, Store, open_store
from importer.sandbox.validation import now_event_date

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def _too_large() -> Response:
    return message(413, "Body too large: send at most 100 items per request")


def settings_problems(settings: SandboxSettings) -> list[str]:
    """Every problem of a :class:`SandboxSettings`, each naming the value and the rule."""
    problems = fault_problems(settings.faults)
    low, high = settings.latency_ms
    if not 0 <= low <= high <= MAX_DELAY_MS:
        problems.append(f"latency_ms={settings.latency_ms!r}: expected 0 <= A <= B <= "
                        f"{MAX_DELAY_MS} (10 minutes)")
    if not 1 <= settings.max_connections <= 100_000:
        problems.append(f"max_connections={settings.max_connections!r}: expected 1 to 100000")
    if not 0 < settings.header_timeout_s <= 600:
        problems.append(f"header_timeout_s={settings.header_timeout_s!r}: expected seconds "
                        "in (0, 600]")
    if settings.rate_limit is not None and settings.rate_limit < 1:
        problems.append(f"rate_limit={settings.rate_limit!r}: expected None or >= 1")
    if not 0 < settings.rate_window_s <= 86_400:
        problems.append(f"rate_window_s={settings.rate_window_s!r}: expected seconds in "
                        "(0, 86400]")
    if settings.response_shape not in ("docs", "activepieces"):
        problems.append(f"response_shape={settings.response_shape!r}: expected "
                        "'docs' or 'activepieces'")
    return problems


class SandboxApp:
    """The ASGI callable, plus Python access to its state for tests and benchmarks."""

    def __init__(self, settings: SandboxSettings, clock: Clock, sleep: Sleep) -> None:
        problems = settings_problems(settings)
        if problems:
            raise ValueError("invalid sandbox settings: " + "; ".join(problems))
        self.settings = settings
        self._clock = clock
        self._date_made: tuple[int, bytes] = (-1, b"")
        self._sleep = sleep
        self.store: Store = open_store(settings.db_path)
        self._lock = threading.Lock()
        self._limiter = (
            FixedWindowLimiter(settings.rate_limit, settings.rate_window_s)
            if settings.rate_limit
            else None
        )
        self._faults = FaultInjector(settings.faults, settings.seed)
        # An outage (go_down): until then every API request fails without being processed.
        self._down_until = 0.0
        self._down_status: int | None = None
        self._latency = random.Random(f"latency:{settings.seed}")
        self._stats = Stats()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()
        self._token = settings.token.encode()
        self._identity = (settings.project, settings.datasource)
        self._spec_bodies = {
            routes.SPEC_ATTRIBUTES: orjson.dumps({"specs": ATTRIBUTE_SPECS}),
            routes.SPEC_EVENTS: orjson.dumps({"specs": EVENT_SPECS}),
        }
        self._hooks = Hooks(self)

    # --- Python interface -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters since start or the last reset (``GET /__sandbox/stats`` serves the same)."""
        with self._lock:
            contacts, events = self.store.counts()
            return self._stats.snapshot(contacts, events)

    @property
    def faults(self) -> FaultSettings:
        return self._faults.settings

    def set_faults(self, faults: FaultSettings, seed: int | None = None) -> None:
        """Change the fault settings while running; ``seed`` also restarts the fault draws."""
        problems = fault_problems(faults)
        if problems:
            raise ValueError("invalid sandbox faults: " + "; ".join(problems))
        with self._lock:
            self._faults.settings = faults
            if seed is not None:
                self._faults.reseed(seed)
            self.settings = replace(self.settings, faults=faults)

    def go_down(self, seconds: float, status: int | None = None) -> None:
        """An outage from now on for ``seconds``: every API request (hooks aside) has its
        connection closed unprocessed, or with ``status`` (a 5xx) gets that answer instead.
        Requests during the outage draw no faults. ``seconds`` 0 ends an outage."""
        problems = down_problems(seconds, status)
        if problems:
            raise ValueError("invalid outage: " + "; ".join(problems))
        with self._lock:
            self._down_until = self._clock() + seconds if seconds else 0.0
            self._down_status = status

    @property
    def down_for(self) -> float:
        """Seconds left of the current outage (0: up)."""
        return max(self._down_until - self._clock(), 0.0)

    def revoke_token(self) -> None:
        """From now on the token is refused with 401, as after a revocation in the dashboard."""
        with self._lock:
            self._token = os.urandom(16).hex().encode()

    def reset(self) -> None:
        """Forget contacts, events, counters and rate windows; restart the seeded draws.

        The current fault settings are kept (change them with :meth:`set_faults`).
        """
        with self._lock:
            self.store.clear()
            self._stats = Stats()
            if self._limiter is not None:
                self._limiter.clear()
            self._faults.reseed(self.settings.seed)
            self._latency.seed(f"latency:{self.settings.seed}")

    def get_contact(self, user_id: str) -> Record | None:
        with self._lock:
            return self.store.get_contact(user_id)

    def events(self, user_id: str | None = None) -> list[Record]:
        """Stored events in arrival order, all or one contact's."""
        with self._lock:
            return self.store.events(user_id)

    def close(self) -> None:
        with self._lock:
            self.store.close()

    # --- ASGI -----------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = f"{self._id_prefix}-{next(self._ids):06d}".encode()
        segments = split_path(scope)
        response: Response | None
        try:
            if segments and segments[0] == "__sandbox":
                response = await self._hooks.handle(scope, receive, segments[1:])
            else:
                low, high = self.settings.latency_ms
                if high:
                    await self._sleep(self._latency.uniform(low, high) / 1000)
                response = await self._api(scope, receive, send, segments)
        except ClientGone:
            return  # nobody is left to answer
        except BodyTooLarge:  # a hook's body, or a drop-before's
            response = _too_large()
        if response is not None:
            await send_response(send, response, request_id, self._date())

    def _date(self) -> bytes:
        """The ``Date`` header, from the sandbox's own clock (the one its rate-limit windows
        and ``X-RateLimit-Reset`` use: a test that sets the clock apart from the importer's
        sees a server whose clock is off), cut to the second; made once a second."""
        second = math.floor(self._clock())
        if self._date_made[0] != second:
            self._date_made = (second, formatdate(second, usegmt=True).encode())
        return self._date_made[1]

    async def _api(
        self, scope: Scope, receive: Receive, send: Send, segments: list[str]
    ) -> Response | None:
        """The response to an API request, or None when the connection was dropped."""
        if self._down_until and self._clock() < self._down_until:
            return await self._down(receive, send, segments)
        found = self._front_door(scope, segments)
        if isinstance(found, Response):
            self._count(routes.endpoint_name(segments), found.status)
            return found
        endpoint, argument = found
        with self._lock:
            limiter = self._limiter
            decision = limiter.admit(endpoint.bucket, self._clock()) if limiter else None
            admitted = decision is None or decision.admitted
            plan = self._faults.draw() if admitted else NO_FAULTS
        if not admitted:
            self._count(endpoint.name, 429, rate_limited=True)
            response: Response | None = Response(429)
        else:
            response = await self._run(scope, receive, send, endpoint, argument, plan)
        if response is not None and decision is not None:
            response.headers.extend(decision.headers())
        return response

    async def _run(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: Endpoint,
        argument: str | None,
        plan: FaultPlan,
    ) -> Response | None:
        if plan.drop_before:
            await read_body(receive)  # so the client sees a clean close, not a reset mid-upload
            await self._drop(receive, send, endpoint, "drop_before")
            return None
        if plan.fail_status is not None:
            self._count(endpoint.name, plan.fail_status, fault="fail")
            return message(plan.fail_status, f"Injected fault: HTTP {plan.fail_status}")
        if plan.slow_seconds:
            self._count(endpoint.name, None, fault="slow")
            await self._sleep(plan.slow_seconds)
        try:
            body = await read_body(receive) if endpoint.method == "POST" else b""
        except BodyTooLarge:
            self._count(endpoint.name, 413)
            return _too_large()
        handler: Callable[[Scope, bytes, Any], Response] = getattr(self, endpoint.handler)
        response = handler(scope, body, argument)
        if plan.drop_after:
            await self._drop(receive, send, endpoint, "drop_after")
            return None
        self._count(endpoint.name, response.status)
        return response

    def _front_door(self, scope: Scope, segments: list[str]) -> Response | tuple[Endpoint, Any]:
        """Path shape, token, ids, endpoint and method: the refusals before any budget."""
        if not routes.is_ingest_path(segments):
            return message(404, "Not found: Ingest paths are /v1/project/P/datasource/D/stream…")
        refused = self._authenticate(request_headers(scope)[0])
        if refused is not None:
            return refused
        if (segments[2], segments[4]) != self._identity:
            return message(404, "Project or datasource not found, or the token is not allowed "
                                "on it: check INSTASENT_PROJECT and INSTASENT_DATASOURCE")
        found = routes.resolve(segments[6:])
        if found is None:
            return message(404, "Not found: no such path below /stream")
        method = found[0].method
        if scope["method"] != method:
            refused = message(405, f"Method not allowed: use {method}")
            refused.headers.append((b"allow", method.encode()))
            return refused
        return found

    def _authenticate(self, authorization: bytes | None) -> Response | None:
        if authorization is None:
            return message(401, "Missing Authorization header: send 'Authorization: Bearer "
                                "<token>' with the datasource token (INSTASENT_TOKEN)")
        scheme, _, credential = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not credential.strip():
            return message(401, "Malformed Authorization header: expected 'Bearer <token>'")
        if hmac.compare_digest(credential.strip(), self._token):
            return None
        return message(401, "Invalid or revoked token: copy the datasource token again "
                            "from the dashboard into INSTASENT_TOKEN")

    def _count(
        self, endpoint: str, status: int | str | None, *, rate_limited: bool = False,
        fault: str | None = None,
    ) -> None:
        with self._lock:
            self._stats.count(endpoint, status, rate_limited=rate_limited, fault=fault)

    async def _down(self, receive: Receive, send: Send, segments: list[str]) -> Response | None:
        name = routes.endpoint_name(segments)
        status = self._down_status
        if status is not None:
            self._count(name, status, fault="down")
            return message(status, f"Injected outage: HTTP {status}")
        await read_body(receive)
        self._count(name, "dropped", fault="down")
        await drop_connection(receive, send)
        return None

    async def _drop(self, receive: Receive, send: Send, endpoint: Endpoint, fault: str) -> None:
        self._count(endpoint.name, "dropped", fault=fault)
        await drop_connection(receive, send)

    # --- endpoints (named by routes.Endpoint.handler) -------------------------------------

    def get_stream(self, _scope: Scope, _body: bytes, _arg: None) -> Response:
        project, datasource = self._identity
        with self._lock:
            contacts, events = self.store.counts()
            usage = self._stats.usage()
        limit = self.settings.rate_limit
        return json_response(200, {
            "organization": {"id": "sandbox-organization", "name": "Instasent sandbox"},
            "project": {"id": project, "uid": project, "name": project},
            "datasource": {"id": datasource, "uid": datasource, "name": datasource,
                           "type": "api"},
            "stream": {"id": datasource, "contacts": contacts, "events": events,
                       "usage": usage,
                       "rateLimit": {"limit": limit, "windowSeconds": self.settings.rate_window_s}
                       if limit else None},
        })

    def spec_attributes(self, _scope: Scope, _body: bytes, _arg: None) -> Response:
        return Response(200, self._spec_bodies[routes.SPEC_ATTRIBUTES])

    def spec_events(self, _scope: Scope, _body: bytes, _arg: None) -> Response:
        return Response(200, self._spec_bodies[routes.SPEC_EVENTS])

    def spec_parameters(self, _scope: Scope, _body: bytes, event_type: str) -> Response:
        specs = EVENT_PARAMETER_SPECS.get(event_type)
        if specs is None:
            return message(404, f"Unknown event type {event_type!r}: "
                                "list them with GET /stream/specs/events")
        return json_response(200, {"specs": specs})

    def delete_contact(self, scope: Scope, _body: bytes, user_id: str) -> Response:
        with self._lock:
            if _dry_run(scope):
                found = self.store.has_contact(user_id)
            else:
                found = self.store.delete_contact(user_id)
                self._stats.contacts_deleted += found
        if not found:
            return message(404, f"Contact not found: no contact with _user_id {user_id!r} "
                                "in this datasource")
        return json_response(200, {"deleted": True})

    def post_contacts(self, scope: Scope, body: bytes, _arg: None) -> Response:
        items = parse_batch(request_headers(scope)[1], body)
        if isinstance(items, Response):
            return items
        with self._lock, self.store.transaction():
            outcomes, successful = process_contacts(self.store, items, dry=_dry_run(scope))
            self._stats.items(len(items), successful, 0)
        return batch_response(self.settings.response_shape, items, outcomes, successful,
                              self._identity)

    def post_events(self, scope: Scope, body: bytes, _arg: None) -> Response:
        items = parse_batch(request_headers(scope)[1], body)
        if isinstance(items, Response):
            return items
        with self._lock, self.store.transaction():
            batch = EventBatch(self.store, now_event_date(self._clock()),
                               self.settings.require_known_user, _dry_run(scope))
            for item in items:
                batch.process(item)
            self._stats.items(len(items), batch.successful, batch.duplicates)
        return batch_response(self.settings.response_shape, items, batch.outcomes,
                              batch.successful, self._identity)


def _dry_run(scope: Scope) -> bool:
    query: bytes = scope.get("query_string") or b""
    return b"_dryRun" in query and "_dryRun" in parse_qs(
        query.decode("latin-1"), keep_blank_values=True
    )


def create_app(
    settings: SandboxSettings,
    *,
    clock: Clock = time.time,
    sleep: Sleep = asyncio.sleep,
) -> SandboxApp:
    """A new sandbox with its own store; ``clock``/``sleep`` are injectable for tests."""
    return SandboxApp(settings, clock, sleep)
