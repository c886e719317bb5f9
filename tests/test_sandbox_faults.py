"""Rate limit, latency and injected faults: seeded, with an injected clock and sleep.

The drop faults are checked against a real uvicorn server, because only a real socket can
show what a client sees when the connection closes without a response.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from importer.sandbox.app import SandboxApp
from importer.sandbox.asgi import ConnectionDropped
from importer.sandbox.ratelimit import FixedWindowLimiter
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings

MakeClient = Callable[..., tuple[httpx.AsyncClient, SandboxApp]]
HOOKS = "http://127.0.0.1/__sandbox"
T0 = 1_700_000_000.5


class FakeTime:
    """An injectable clock and sleep: sleeping advances the clock, nothing really waits."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def one_contact(i: int = 0) -> list[dict[str, Any]]:
    return [{"_user_id": f"U{i}"}]


# --- rate limit ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fixed_window_headers_429_and_reset(make_asgi_client: MakeClient) -> None:
    fake = FakeTime()
    client, app = make_asgi_client(rate_limit=3, clock=fake.clock, sleep=fake.sleep)
    reset = math.ceil(T0 + 60)
    remaining = []
    for i in range(3):
        r = await client.post("/stream/contacts", json=one_contact(i))
        assert r.status_code == 202
        assert r.headers["x-ratelimit-limit"] == "3"
        assert r.headers["x-ratelimit-reset"] == str(reset)
        remaining.append(int(r.headers["x-ratelimit-remaining"]))
        fake.now += 1
    assert remaining == [2, 1, 0]

    refused = await client.post("/stream/contacts", json=one_contact(9))
    assert refused.status_code == 429
    assert refused.content == b""
    assert (refused.headers["x-ratelimit-remaining"], refused.headers["x-ratelimit-reset"]) == (
        "0", str(reset))
    assert app.get_contact("U9") is None

    # Per endpoint: events and GET /stream have their own budget.
    assert (await client.get("/stream")).headers["x-ratelimit-remaining"] == "2"

    fake.now = reset  # waiting until X-RateLimit-Reset is enough
    r = await client.post("/stream/contacts", json=one_contact(9))
    assert r.status_code == 202
    assert r.headers["x-ratelimit-remaining"] == "2"
    assert int(r.headers["x-ratelimit-reset"]) == math.ceil(reset + 60)

    stats = app.stats()
    assert stats["rate_limited"] == 1
    assert stats["requests"]["POST /stream/contacts"] == {"202": 4, "429": 1}


@pytest.mark.anyio
async def test_refused_requests_do_not_consume_the_budget(make_asgi_client: MakeClient) -> None:
    fake = FakeTime()
    client, _app = make_asgi_client(rate_limit=1, clock=fake.clock, sleep=fake.sleep)
    assert (await client.get("/stream")).status_code == 200
    for _ in range(5):  # a client hammering during the window
        assert (await client.get("/stream")).status_code == 429
    fake.now += 60
    assert (await client.get("/stream")).status_code == 200


@pytest.mark.anyio
async def test_specs_share_one_budget_and_errors_carry_headers(
    make_asgi_client: MakeClient,
) -> None:
    fake = FakeTime()
    client, _app = make_asgi_client(rate_limit=2, clock=fake.clock, sleep=fake.sleep)
    assert (await client.get("/stream/specs/attributes")).status_code == 200
    r = await client.get("/stream/specs/event-parameters/nope")  # admitted, then a 404
    assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (404, "0")
    assert (await client.get("/stream/specs/events")).status_code == 429
    r = await client.post("/stream/events", content=b"[", headers={"content-type":
                                                                   "application/json"})
    assert (r.status_code, r.headers["x-ratelimit-remaining"]) == (400, "1")
    # No (datasource, endpoint) budget to report on 401 or an unknown path.
    r = await client.get("/stream", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "x-ratelimit-limit" not in r.headers


@pytest.mark.anyio
async def test_no_rate_limit_headers_when_unlimited(asgi_client: httpx.AsyncClient) -> None:
    r = await asgi_client.get("/stream")
    assert not [h for h in r.headers if h.startswith("x-ratelimit")]


@given(st.lists(st.floats(min_value=0, max_value=400, allow_nan=False), max_size=60),
       st.integers(min_value=1, max_value=5))
def test_limiter_never_admits_more_than_the_limit_per_window(
    offsets: list[float], limit: int
) -> None:
    limiter = FixedWindowLimiter(limit)
    admitted_per_reset: dict[int, int] = {}
    for offset in sorted(offsets):
        decision = limiter.admit("contacts", T0 + offset)
        assert decision.reset > T0 + offset  # the reset is always in the future
        if decision.admitted:
            admitted_per_reset[decision.reset] = admitted_per_reset.get(decision.reset, 0) + 1
            assert decision.remaining == limit - admitted_per_reset[decision.reset]
        else:
            assert admitted_per_reset[decision.reset] == limit
    assert all(n <= limit for n in admitted_per_reset.values())


# --- latency and slow ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_latency_is_uniform_in_range_and_seeded(make_asgi_client: MakeClient) -> None:
    runs = []
    for _ in range(2):
        fake = FakeTime()
        client, _app = make_asgi_client(latency_ms=(40, 60), seed=7, clock=fake.clock,
                                        sleep=fake.sleep)
        for _ in range(20):
            await client.get("/stream")
        await client.get(f"{HOOKS}/stats")  # hooks are never delayed
        runs.append(fake.sleeps)
    assert len(runs[0]) == 20
    assert all(0.040 <= s <= 0.060 for s in runs[0])
    assert len(set(runs[0])) > 10
    assert runs[0] == runs[1]


@pytest.mark.anyio
async def test_slow_requests_add_slow_ms(make_asgi_client: MakeClient) -> None:
    fake = FakeTime()
    client, app = make_asgi_client(faults=FaultSettings(slow_rate=1.0, slow_ms=2500),
                                   clock=fake.clock, sleep=fake.sleep)
    r = await client.post("/stream/contacts", json=one_contact())
    assert r.status_code == 202
    assert fake.sleeps == [2.5]
    assert app.stats()["faults"]["slow"] == 1


# --- 5xx faults ---------------------------------------------------------------------------


async def statuses(client: httpx.AsyncClient, count: int) -> list[int]:
    return [(await client.post("/stream/contacts", json=one_contact(i))).status_code
            for i in range(count)]


@pytest.mark.anyio
async def test_fail_rate_is_seeded_and_stores_nothing(make_asgi_client: MakeClient) -> None:
    faults = FaultSettings(fail_rate=0.5, fail_statuses=(500, 502, 503))
    client_a, app_a = make_asgi_client(faults=faults, seed=11)
    client_b, _ = make_asgi_client(faults=faults, seed=11)
    client_c, _ = make_asgi_client(faults=faults, seed=12)
    a, b, c = [await statuses(x, 40) for x in (client_a, client_b, client_c)]
    assert a == b and a != c
    failed = [s for s in a if s != 202]
    assert 8 <= len(failed) <= 32 and set(failed) <= {500, 502, 503}
    stats = app_a.stats()
    assert stats["faults"]["fail"] == len(failed) == stats["faults_injected"]
    assert stats["contacts"] == a.count(202)


@pytest.mark.anyio
async def test_every_fail_status_is_drawn(make_asgi_client: MakeClient) -> None:
    client, _app = make_asgi_client(faults=FaultSettings(fail_rate=1.0), rate_limit=1000)
    seen = await statuses(client, 60)
    assert set(seen) == {500, 502, 503}
    r = await client.get("/stream")
    assert r.json()["message"].startswith("Injected fault")
    assert r.headers["x-ratelimit-remaining"] == "999"  # 5xx answers carry the headers too


@pytest.mark.anyio
async def test_faults_change_while_running(make_asgi_client: MakeClient) -> None:
    client, app = make_asgi_client()
    assert await statuses(client, 2) == [202, 202]
    r = await client.post(f"{HOOKS}/faults", json={"fail_rate": 1, "fail_statuses": [503]})
    assert r.status_code == 200 and r.json()["faults"]["fail_statuses"] == [503]
    assert await statuses(client, 2) == [503, 503]
    assert app.faults.fail_rate == 1

    for bad, fragment in [({"fail_rate": 2}, "fail_rate=2"), ({"oops": 1}, "unknown field"),
                          ({"fail_statuses": [404]}, "5xx"), ({"slow_ms": "1"}, "integer"),
                          ([1], "object"), ({"seed": "x"}, "seed")]:
        r = await client.post(f"{HOOKS}/faults", json=bad)
        assert r.status_code == 400 and fragment in r.json()["message"], bad
    assert (await client.get(f"{HOOKS}/faults")).json()["faults"]["fail_rate"] == 1

    app.set_faults(FaultSettings())
    assert await statuses(client, 1) == [202]
    with pytest.raises(ValueError, match="drop_after_rate"):
        app.set_faults(FaultSettings(drop_after_rate=-0.1))


@pytest.mark.anyio
async def test_reset_restarts_the_seeded_sequence(make_asgi_client: MakeClient) -> None:
    client, app = make_asgi_client(faults=FaultSettings(fail_rate=0.5), seed=5)
    first = await statuses(client, 20)
    await client.post(f"{HOOKS}/reset")
    assert app.stats()["requests_total"] == 0
    assert await statuses(client, 20) == first


@pytest.mark.anyio
async def test_drop_in_process_raises_a_transport_error(make_asgi_client: MakeClient) -> None:
    client, app = make_asgi_client(faults=FaultSettings(drop_after_rate=1.0))
    with pytest.raises(httpx.TransportError) as caught:
        await client.post("/stream/contacts", json=one_contact())
    assert isinstance(caught.value, ConnectionDropped)
    assert app.get_contact("U0") is not None  # processed and stored before the drop


# --- drops over real HTTP -----------------------------------------------------------------


def post_outcomes(box: RunningSandbox, count: int, body: Callable[[int], Any]) -> list[str]:
    """``"202"``-like statuses, or the transport error's class name, for ``count`` posts."""
    outcomes = []
    headers = {"Authorization": f"Bearer {box.settings.token}"}
    with httpx.Client(base_url=box.base_url, headers=headers, timeout=5) as client:
        for i in range(count):
            try:
                outcomes.append(str(client.post("/stream/events", json=body(i)).status_code))
            except httpx.TransportError as exc:
                outcomes.append(type(exc).__name__)
    return outcomes


def purchase(i: int) -> list[dict[str, Any]]:
    return [{"_user_id": "U1", "_event_id": f"ORDER-{i}", "_event_type": "purchase",
             "_event_parameters": {"amount": 10, "currency": "EUR"}}]


def test_drop_before_closes_without_processing(make_sandbox: Callable[..., RunningSandbox]) -> None:
    box = make_sandbox(faults=FaultSettings(drop_before_rate=1.0))
    assert post_outcomes(box, 3, purchase) == ["RemoteProtocolError"] * 3
    stats = box.app.stats()
    assert (stats["events"], stats["items_received"]) == (0, 0)
    assert stats["faults"]["drop_before"] == 3
    assert stats["requests"]["POST /stream/events"] == {"dropped": 3}


def test_drop_after_stores_then_closes_so_a_resend_is_a_duplicate(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    box = make_sandbox(faults=FaultSettings(drop_after_rate=1.0))
    assert post_outcomes(box, 2, purchase) == ["RemoteProtocolError"] * 2
    assert [e["_event_id"] for e in box.app.events()] == ["ORDER-0", "ORDER-1"]
    box.app.set_faults(FaultSettings())
    assert post_outcomes(box, 1, purchase) == ["202"]
    stats = box.app.stats()
    assert (stats["events"], stats["duplicates_suppressed"]) == (2, 1)


def test_seeded_drops_are_reproducible_over_http(
    make_sandbox: Callable[..., RunningSandbox],
) -> None:
    faults = FaultSettings(drop_before_rate=0.3, drop_after_rate=0.3)
    runs = [post_outcomes(make_sandbox(faults=faults, seed=3), 16, purchase) for _ in range(2)]
    assert runs[0] == runs[1]
    assert {"202", "RemoteProtocolError"} == set(runs[0])
