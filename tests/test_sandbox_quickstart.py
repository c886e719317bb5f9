"""Instasent's quickstart, replayed step by step against a live sandbox over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from importer.sandbox.server import RunningSandbox

ADA = {
    "_user_id": "USER-123",
    "_first_name": "Ada",
    "_last_name": "Lovelace",
    "_email": "ada@example.com",
    "_phone_mobile": "+34600000000",
    "plan": "pro",
    "signup_source": "landing-a",
}
ORDER_987 = {
    "_user_id": "USER-123",
    "_event_id": "ORDER-987",
    "_event_type": "purchase",
    "_event_date": "2024-11-17T10:00:00.000Z",
    "_event_parameters": {"amount": 49.90, "currency": "EUR", "sku": "SKU-42"},
}
ORDER_988 = {
    "_user_id": "USER-456",
    "_event_id": "ORDER-988",
    "_event_type": "purchase",
    "_event_date": "2024-11-18T09:30:00.000Z",
    "_event_parameters": {"amount": 12.5, "currency": "EUR", "sku": "SKU-7"},
    "_user_data": {"_first_name": "Grace", "_last_name": "Hopper",
                   "_email": "grace@example.com"},
}


@pytest.fixture
def client(sandbox_server: RunningSandbox) -> Iterator[httpx.Client]:
    token = sandbox_server.settings.token
    with httpx.Client(base_url=sandbox_server.base_url,
                      headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        yield c


def test_quickstart(sandbox_server: RunningSandbox, client: httpx.Client) -> None:
    app = sandbox_server.app

    # 1. Verify the token: 200 with the four documented top-level keys.
    r = client.get("/stream")
    assert r.status_code == 200
    assert {"organization", "project", "datasource", "stream"} <= set(r.json())
    assert r.json()["datasource"]["id"] == sandbox_server.settings.datasource
    assert r.headers["x-request-id"]

    # 2. Create a contact: 202, one successful item echoing the id.
    r = client.post("/stream/contacts", json=[ADA])
    assert r.status_code == 202
    assert r.json() == {"entity": {"successful": 1, "failed": 0, "items": [
        {"status": "success", "_user_id": "USER-123"}]}}
    assert app.get_contact("USER-123") == ADA  # custom attributes kept as sent

    # 3. Record an event: 202, the item echoes both ids; stored with its parameters.
    r = client.post("/stream/events", json=[ORDER_987])
    assert r.status_code == 202
    assert r.json()["entity"]["items"] == [
        {"status": "success", "_user_id": "USER-123", "_event_id": "ORDER-987"}]
    assert app.events("USER-123") == [{
        "_event_id": "ORDER-987", "_user_id": "USER-123", "_event_type": "purchase",
        "_event_date": "2024-11-17T10:00:00.000Z",
        "_event_parameters": {"amount": 49.90, "currency": "EUR", "sku": "SKU-42"}}]

    # 4. An event carrying _user_data: Grace is upserted before her event.
    r = client.post("/stream/events", json=[ORDER_988])
    assert r.status_code == 202
    assert r.json()["entity"]["successful"] == 1
    grace = app.get_contact("USER-456")
    assert grace is not None and grace["_first_name"] == "Grace"
    assert [e["_event_id"] for e in app.events("USER-456")] == ["ORDER-988"]

    # Resending step 3 (the ambiguous-timeout case) is a duplicate success, nothing new.
    r = client.post("/stream/events", json=[ORDER_987])
    assert r.json()["entity"]["items"][0]["duplicate"] is True
    assert app.stats()["events"] == 2

    # 5. Delete the contact (percent-encoded path): gone, with its events; a second delete 404s.
    r = client.delete("/stream/contacts/USER%2D123")
    assert r.status_code == 200 and r.json() == {"deleted": True}
    assert app.get_contact("USER-123") is None
    assert client.delete("/stream/contacts/USER-123").status_code == 404

    stats = app.stats()
    assert (stats["contacts"], stats["events"]) == (1, 1)
    assert stats["duplicates_suppressed"] == 1
    assert stats["requests"]["POST /stream/events"] == {"202": 3}
    assert stats["requests"]["DELETE /stream/contacts/{_user_id}"] == {"200": 1, "404": 1}
    assert stats["items_received"] == 4 and stats["items_failed"] == 0


def test_hooks_over_http(sandbox_server: RunningSandbox, client: httpx.Client) -> None:
    client.post("/stream/contacts", json=[ADA])
    client.post("/stream/events", json=[ORDER_987])
    with httpx.Client(base_url=sandbox_server.root_url, timeout=10) as hooks:  # no token
        assert hooks.get("/__sandbox/contacts/USER-123").json()["_email"] == "ada@example.com"
        assert hooks.get("/__sandbox/contacts/NOPE").status_code == 404
        events = hooks.get("/__sandbox/events", params={"user_id": "USER-123"}).json()
        assert [e["_event_id"] for e in events["events"]] == ["ORDER-987"]
        stats = hooks.get("/__sandbox/stats").json()
        assert (stats["contacts"], stats["events"], stats["requests_total"]) == (1, 1, 2)
        assert hooks.post("/__sandbox/reset").json() == {"reset": True}
        assert hooks.get("/__sandbox/stats").json()["contacts"] == 0
        assert hooks.get("/__sandbox/nope").status_code == 404
