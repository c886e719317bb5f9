"""Every status code and response shape of API.md §2-§4, in-process over httpx.ASGITransport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from importer.sandbox.app import SandboxApp

pytestmark = pytest.mark.anyio

HOOKS = "http://127.0.0.1/__sandbox"
TOKEN = "sandbox-token"
MakeClient = Callable[..., tuple[httpx.AsyncClient, SandboxApp]]


def contact(user_id: str = "U1", **attributes: Any) -> dict[str, Any]:
    return {"_user_id": user_id, **attributes}


def event(event_id: str = "E1", user_id: str = "U1", **fields: Any) -> dict[str, Any]:
    item = {"_user_id": user_id, "_event_id": event_id, "_event_type": "page_view",
            "_event_parameters": {"url": "https://example.com/"}}
    item.update(fields)
    return item


# --- 401 / 404 / 405 ---------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Basic c2FuZGJveA==", "Bearer", "Bearer   ",
                                           "Bearer wrong-token", "sandbox-token"])
async def test_bad_credentials_are_401_without_the_token(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi_app),
                               base_url=asgi_client.base_url, headers=headers)
    async with client:
        r = await client.get("/stream")
    assert r.status_code == 401
    text = r.json()["message"]
    assert TOKEN not in text and "wrong-token" not in text
    assert "x-ratelimit-limit" not in r.headers


async def test_bearer_scheme_is_case_insensitive(asgi_client: httpx.AsyncClient) -> None:
    r = await asgi_client.get("/stream", headers={"Authorization": f"bearer {TOKEN}"})
    assert r.status_code == 200


@pytest.mark.parametrize("path", [
    "/v1/project/other/datasource/sandbox-datasource/stream",
    "/v1/project/sandbox-project/datasource/other/stream/contacts",
    "/v1/project/sandbox-project/datasource/sandbox-datasource/stream/nope",
    "/v1/project/sandbox-project/datasource/sandbox-datasource/stream/specs/nope",
    "/v1/project/sandbox-project/datasource/sandbox-datasource",
    "/v2/anything",
])
async def test_unknown_ids_and_paths_are_404(asgi_client: httpx.AsyncClient, path: str) -> None:
    r = await asgi_client.get(f"http://127.0.0.1{path}")
    assert r.status_code == 404
    assert r.json()["message"]


async def test_wrong_token_and_wrong_project_is_401_not_404(
    asgi_client: httpx.AsyncClient,
) -> None:
    r = await asgi_client.get("http://127.0.0.1/v1/project/x/datasource/y/stream",
                              headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/stream/contacts", "POST"),
    ("PUT", "/stream/events", "POST"),
    ("POST", "/stream", "GET"),
    ("GET", "/stream/contacts/U1", "DELETE"),
])
async def test_wrong_method_is_405_with_allow(
    asgi_client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    r = await asgi_client.request(method, path)
    assert r.status_code == 405
    assert r.headers["allow"] == allowed


# --- 400: the whole batch refused --------------------------------------------------------


@pytest.mark.parametrize(("body", "fragment"), [
    (b"[{\"_user_id\": ", "Malformed JSON"),
    (b"{\"_user_id\": \"U1\"}", "Body should be an array"),
    (b"\"U1\"", "Body should be an array"),
    (b"[]", "not be empty"),
    (b"[{\"_user_id\": \"U1\"}, 7]", "position 1 should be an object"),
])
@pytest.mark.parametrize("endpoint", ["/stream/contacts", "/stream/events"])
async def test_malformed_batches_are_400(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp, endpoint: str, body: bytes,
    fragment: str,
) -> None:
    r = await asgi_client.post(endpoint, content=body,
                               headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert fragment in r.json()["message"]
    assert asgi_app.stats()["items_received"] == 0


async def test_more_than_100_items_is_400_and_100_is_fine(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/contacts", json=[contact(f"U{i}") for i in range(101)])
    assert r.status_code == 400
    assert "101" in r.json()["message"]
    assert asgi_app.stats()["contacts"] == 0
    r = await asgi_client.post("/stream/contacts", json=[contact(f"U{i}") for i in range(100)])
    assert r.status_code == 202
    assert r.json()["entity"]["successful"] == 100


async def test_body_over_the_safety_cap_is_413(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    from importer.sandbox.asgi import MAX_BODY_BYTES

    r = await asgi_client.post("/stream/contacts", content=b" " * (MAX_BODY_BYTES + 1),
                               headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert asgi_app.stats()["requests"] == {"POST /stream/contacts": {"413": 1}}


def test_invalid_settings_are_refused_all_at_once() -> None:
    from importer.sandbox.app import create_app
    from importer.sandbox.settings import FaultSettings, SandboxSettings

    bad = SandboxSettings(latency_ms=(50, 10), rate_limit=0,
                          faults=FaultSettings(fail_rate=1.5, fail_statuses=(404,)))
    with pytest.raises(ValueError) as caught:
        create_app(bad)
    for fragment in ("latency_ms", "rate_limit", "fail_rate", "fail_statuses"):
        assert fragment in str(caught.value)


async def test_body_without_json_content_type_is_400(asgi_client: httpx.AsyncClient) -> None:
    r = await asgi_client.post("/stream/contacts", content=b'[{"_user_id": "U1"}]',
                               headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    assert "Content-Type" in r.json()["message"]


# --- 202 / 422: per-item outcomes in request order ---------------------------------------


async def test_partial_batch_is_202_with_items_in_request_order(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/contacts", json=[
        contact("U1"), contact("U2", _email="nope"), contact("U3"), {"_first_name": "Anon"}])
    assert r.status_code == 202
    entity = r.json()["entity"]
    assert (entity["successful"], entity["failed"]) == (2, 2)
    assert [i["status"] for i in entity["items"]] == ["success", "error", "success", "error"]
    assert [i["_user_id"] for i in entity["items"]] == ["U1", "U2", "U3", None]
    assert list(entity["items"][1]["errors"]) == ["_email"]
    assert entity["items"][3]["errors"] == {"_user_id": ["This value is required"]}
    assert asgi_app.stats()["contacts"] == 2


async def test_all_items_failing_is_422_with_the_same_shape(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/events", json=[event("E1", _event_type="nope"),
                                                       event("E2", _event_date="yesterday")])
    assert r.status_code == 422
    entity = r.json()["entity"]
    assert (entity["successful"], entity["failed"]) == (0, 2)
    assert entity["items"][0] == {"status": "error", "_user_id": "U1", "_event_id": "E1",
                                  "errors": {"_event_type": [entity["items"][0]["errors"]
                                                             ["_event_type"][0]]}}
    assert "_event_date" in entity["items"][1]["errors"]
    assert asgi_app.stats()["events"] == 0


async def test_request_ids_are_present_and_unique(asgi_client: httpx.AsyncClient) -> None:
    responses = [await asgi_client.get("/stream"), await asgi_client.get("/nope"),
                 await asgi_client.post("/stream/contacts", json=[contact()])]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(ids) and len(set(ids)) == 3


# --- contacts: upsert and delete ---------------------------------------------------------


async def test_contacts_upsert_merges_and_null_clears(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    await asgi_client.post("/stream/contacts", json=[contact("U1", _first_name="Ada", plan="pro")])
    await asgi_client.post("/stream/contacts", json=[contact("U1", _last_name="Lovelace",
                                                             plan=None)])
    assert asgi_app.get_contact("U1") == {"_user_id": "U1", "_first_name": "Ada",
                                          "_last_name": "Lovelace"}
    assert asgi_app.stats()["contacts"] == 1


async def test_integer_user_id_is_stored_as_its_string(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/contacts", json=[{"_user_id": 42}])
    assert r.json()["entity"]["items"][0]["_user_id"] == "42"
    assert asgi_app.get_contact("42") is not None


async def test_delete_percent_encoded_id(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    await asgi_client.post("/stream/contacts", json=[contact("a/b c")])
    r = await asgi_client.delete("/stream/contacts/a%2Fb%20c")
    assert (r.status_code, r.json()) == (200, {"deleted": True})
    assert asgi_app.get_contact("a/b c") is None
    r = await asgi_client.delete("/stream/contacts/a%2Fb%20c")
    assert r.status_code == 404
    assert "Contact not found" in r.json()["message"]
    assert asgi_app.stats()["contacts_deleted"] == 1


# --- events: dedupe, _user_data, require-known-user, dry run -----------------------------


async def test_event_resend_and_in_batch_duplicate_store_nothing_new(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/events", json=[event("E1"), event("E1"), event("E2")])
    items = r.json()["entity"]["items"]
    assert [i.get("duplicate", False) for i in items] == [False, True, False]
    assert all(i["status"] == "success" for i in items)
    # A resend with other content is still the same event: the first one stays as it was.
    other = event("E2", _event_type="purchase",
                  _event_parameters={"amount": 1, "currency": "EUR"})
    r = await asgi_client.post("/stream/events", json=[other])
    assert r.json()["entity"]["items"][0]["duplicate"] is True
    assert [e["_event_type"] for e in asgi_app.events()] == ["page_view", "page_view"]
    assert asgi_app.stats()["duplicates_suppressed"] == 2


async def test_invalid_user_data_skips_the_event_and_the_upsert(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/events", json=[
        event("E1", _user_data={"_email": "not-an-email", "_first_name": "Ada"}),
        event("E2", _user_data={"_user_id": "SOMEONE-ELSE"}),
    ])
    assert r.status_code == 422
    items = r.json()["entity"]["items"]
    assert list(items[0]["errors"]) == ["_user_data._email"]
    assert list(items[1]["errors"]) == ["_user_data._user_id"]
    assert items[0]["_event_id"] == "E1"
    assert asgi_app.stats()["events"] == 0 and asgi_app.get_contact("U1") is None


async def test_user_data_is_upserted_before_its_event(
    make_asgi_client: MakeClient,
) -> None:
    client, app = make_asgi_client(require_known_user=True)
    r = await client.post("/stream/events", json=[
        event("E1", user_id="NEW", _user_data={"_first_name": "Grace"}),
        event("E2", user_id="STRANGER"),
    ])
    items = r.json()["entity"]["items"]
    assert items[0]["status"] == "success"
    assert items[1]["errors"] == {"_user_id": [items[1]["errors"]["_user_id"][0]]}
    assert "Unknown contact" in items[1]["errors"]["_user_id"][0]
    assert app.get_contact("NEW") == {"_user_id": "NEW", "_first_name": "Grace"}
    await client.post("/stream/contacts", json=[contact("STRANGER")])
    r = await client.post("/stream/events", json=[event("E2", user_id="STRANGER")])
    assert r.json()["entity"]["successful"] == 1


async def test_without_require_known_user_unknown_users_are_fine(
    asgi_client: httpx.AsyncClient,
) -> None:
    r = await asgi_client.post("/stream/events", json=[event("E1", user_id="NOBODY")])
    assert r.json()["entity"]["successful"] == 1


async def test_event_date_absent_is_now_from_the_clock(make_asgi_client: MakeClient) -> None:
    client, app = make_asgi_client(clock=lambda: 1731837600.25)  # 2024-11-17T10:00:00.250Z
    item = event("E1")
    await client.post("/stream/events", json=[item, event("E2", _event_date=None)])
    assert [e["_event_date"] for e in app.events()] == ["2024-11-17T10:00:00.250Z"] * 2


async def test_dry_run_validates_without_storing(
    asgi_client: httpx.AsyncClient, asgi_app: SandboxApp
) -> None:
    r = await asgi_client.post("/stream/contacts?_dryRun", json=[contact("U1"),
                                                                 contact("U2", _email="x")])
    assert [i["status"] for i in r.json()["entity"]["items"]] == ["success", "error"]
    r = await asgi_client.post("/stream/events?_dryRun=1", json=[event("E1"), event("E1")])
    assert [i.get("duplicate", False) for i in r.json()["entity"]["items"]] == [False, True]
    r = await asgi_client.post("/stream/contacts?_sync", json=[contact("U9")])
    assert r.status_code == 202
    assert (asgi_app.stats()["contacts"], asgi_app.stats()["events"]) == (1, 0)


# --- specs --------------------------------------------------------------------------------


async def test_spec_endpoints(asgi_client: httpx.AsyncClient) -> None:
    attributes = (await asgi_client.get("/stream/specs/attributes")).json()["specs"]
    keys = {"uid", "displayLabel", "description", "dataType", "multivalue", "readOnly",
            "requiredInWebhook", "important", "visible", "custom"}
    assert all(set(a) == keys for a in attributes)
    by_uid = {a["uid"]: a for a in attributes}
    assert {"_user_id", "_first_name", "_last_name", "_email", "_phone_mobile"} <= set(by_uid)
    assert by_uid["_email_verified"]["readOnly"] and by_uid["_phone_mobile_verified"]["readOnly"]
    assert by_uid["_birthdate"]["dataType"] == "date"

    events = (await asgi_client.get("/stream/specs/events")).json()["specs"]
    assert {"purchase", "cart_abandoned", "page_view"} <= {e["uid"] for e in events}
    assert all({"uid", "name", "description", "category"} <= set(e) for e in events)

    params = (await asgi_client.get("/stream/specs/event-parameters/purchase")).json()["specs"]
    by_name = {p["parameter"]: p for p in params}
    assert by_name["amount"]["required"] and by_name["currency"]["maxLength"] == 3
    assert all({"parameter", "title", "dataType", "maxLength", "required", "multiValue"}
               <= set(p) for p in params)
    r = await asgi_client.get("/stream/specs/event-parameters/nope")
    assert r.status_code == 404


# --- the activepieces envelope -----------------------------------------------------------


async def test_activepieces_shape(make_asgi_client: MakeClient) -> None:
    client, _app = make_asgi_client(response_shape="activepieces")
    items = [contact("U1"), contact("U2", _phone_mobile="600"), contact("U3")]
    r = await client.post("/stream/contacts", json=items)
    assert r.status_code == 202
    body = r.json()
    assert body["success"] is True
    assert (body["entitiesSuccess"], body["entitiesFailed"]) == (2, 1)
    assert (body["projectId"], body["datasourceId"]) == ("sandbox-project", "sandbox-datasource")
    assert body["streamId"] == "sandbox-datasource"
    assert body["accepted"] == [{"position": 0, "item": items[0]},
                                {"position": 2, "item": items[2]}]
    assert [(e["position"], e["_user_id"], list(e["errors"])) for e in body["errors"]] == [
        (1, "U2", ["_phone_mobile"])]

    r = await client.post("/stream/events", json=[event("E1"), event("E1"), event("E2", _x=1)])
    body = r.json()
    assert [a.get("duplicate", False) for a in body["accepted"]] == [False, True]
    assert body["errors"][0]["position"] == 2 and body["errors"][0]["_event_id"] == "E2"

    r = await client.post("/stream/contacts", json=[{"_email": "x"}])
    assert r.status_code == 422
    assert r.json()["success"] is False and r.json()["entitiesSuccess"] == 0


# --- GET /stream and the hooks in-process --------------------------------------------------


async def test_stream_metadata_reflects_the_store(asgi_client: httpx.AsyncClient) -> None:
    await asgi_client.post("/stream/contacts", json=[contact("U1"), contact("U2")])
    body = (await asgi_client.get("/stream")).json()
    assert body["project"]["id"] == "sandbox-project"
    assert (body["stream"]["contacts"], body["stream"]["events"]) == (2, 0)


async def test_hooks_need_no_token_and_are_not_counted(asgi_client: httpx.AsyncClient) -> None:
    r = await asgi_client.get(f"{HOOKS}/stats", headers={"Authorization": ""})
    assert r.status_code == 200
    r = await asgi_client.get(f"{HOOKS}/stats")
    assert r.json()["requests_total"] == 0
