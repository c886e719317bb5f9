"""The sandbox plays an outage (``go_down`` / the faults hook's ``down_s``), bounded."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from importer.sandbox.app import SandboxApp

HOOK = "http://127.0.0.1/__sandbox/faults"


@pytest.mark.anyio
async def test_down_for_n_seconds_then_up_again(
    make_asgi_client: Callable[..., tuple[httpx.AsyncClient, SandboxApp]],
) -> None:
    now = [1000.0]
    client, app = make_asgi_client(clock=lambda: now[0])
    assert (await client.get("/stream")).status_code == 200
    answer = await client.post(HOOK, json={"down_s": 20, "down_status": 503})
    assert answer.status_code == 200
    assert (await client.get("/stream")).status_code == 503
    assert (await client.post("/stream/contacts", json=[{"_user_id": "U1"}])).status_code == 503
    assert app.get_contact("U1") is None
    now[0] += 19.9
    assert (await client.get("/stream")).status_code == 503
    now[0] += 0.2
    assert (await client.get("/stream")).status_code == 200
    assert app.stats()["faults"]["down"] == 3


@pytest.mark.anyio
@pytest.mark.parametrize("body", [{"down_s": 1e12}, {"down_s": -1}, {"down_s": "x"},
                                  {"down_s": 5, "down_status": 404}])
async def test_an_outage_out_of_bounds_is_refused(
    make_asgi_client: Callable[..., tuple[httpx.AsyncClient, SandboxApp]],
    body: dict[str, object],
) -> None:
    client, app = make_asgi_client()
    answer = await client.post(HOOK, json=body)
    assert answer.status_code == 400
    assert app.down_for == 0
