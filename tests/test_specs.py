"""``instasent-import specs`` and ``validate --specs``: what the datasource accepts, and a mapping
checked against it — statically (YAML lines) and per row (rejects before anything is sent).

The per-row rules are cross-checked against the sandbox itself: a row rejected locally is a row
the API would have refused, and a row let through is one it accepts.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from click.testing import CliRunner

from importer.cli import cli
from importer.config import Credentials
from importer.exceptions import MappingError
from importer.mapping import compile_mapping, parse_mapping
from importer.records import SourceBatch
from importer.sandbox.app import SandboxApp, create_app
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import SandboxSettings
from importer.sandbox.specs import ATTRIBUTE_SPECS, EVENT_PARAMETER_SPECS, EVENT_SPECS
from importer.sources import iter_batches, resolve_inputs
from importer.speccheck import (
    DatasourceSpecs,
    aload_specs,
    apply_specs,
    check_mapping,
)
from importer.validate import validate_files

TOKEN = "tok-SPECS-93d0-never-print-me"
ASGI_URL = "http://127.0.0.1/v1"


@pytest.fixture(scope="module")
def app() -> Iterator[SandboxApp]:
    sandbox = create_app(SandboxSettings())
    yield sandbox
    sandbox.close()


@pytest.fixture(scope="module")
def specs(app: SandboxApp) -> DatasourceSpecs:
    s = app.settings
    creds = Credentials(ASGI_URL, s.project, s.datasource, s.token)
    return asyncio.run(aload_specs(creds, transport=httpx.ASGITransport(app=app)))


@pytest.fixture
def box(make_sandbox: Callable[..., RunningSandbox]) -> RunningSandbox:
    return make_sandbox(token=TOKEN)


def _env(box: RunningSandbox, token: str = TOKEN) -> dict[str, str]:
    return {"INSTASENT_API_URL": box.api_url, "INSTASENT_PROJECT": box.settings.project,
            "INSTASENT_DATASOURCE": box.settings.datasource, "INSTASENT_TOKEN": token}


def _cli(box: RunningSandbox, *args: str, token: str = TOKEN) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=_env(box, token), catch_exceptions=False)
    assert TOKEN not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


# ---------------------------------------------------------------- reading the specs


def test_specs_table(box: RunningSandbox) -> None:
    code, out, err = _cli(box, "specs")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"contact attributes ({len(ATTRIBUTE_SPECS)})"
    assert "  _email_verified         bool     Email verified  (read-only)" in lines
    assert "  _tags                   string   Tags  (up to 20 values)" in lines
    assert f"event types ({len(EVENT_SPECS)})" in lines
    at = lines.index("  purchase  Purchase  [ecommerce]")
    assert lines[at + 1:at + 3] == ["      amount        number   required",
                                    "      currency      string   required, max 3 chars"]
    assert "      categories    string   max 64 chars, up to 10 values" in lines
    served = box.app.stats()["requests"]
    assert served["GET /stream/specs/event-parameters/{eventType}"] == {"200": len(EVENT_SPECS)}
    assert served["GET /stream/specs/attributes"] == {"200": 1}


def test_specs_json_is_the_datasource_content(box: RunningSandbox) -> None:
    code, out, _ = _cli(box, "specs", "--output", "json")
    assert code == 0
    data = json.loads(out)
    assert [a["uid"] for a in data["attributes"]] == [a["uid"] for a in ATTRIBUTE_SPECS]
    assert [e["uid"] for e in data["events"]] == [e["uid"] for e in EVENT_SPECS]
    for event in data["events"]:
        expected = EVENT_PARAMETER_SPECS[event["uid"]]
        assert [(p["parameter"], p["maxLength"] or 0, p["required"]) for p in event["parameters"]]\
            == [(p["parameter"], p["maxLength"], p["required"]) for p in expected]


def test_specs_failures_read_like_check(box: RunningSandbox) -> None:
    code, out, err = _cli(box, "specs", "--output", "json", token="nope")
    assert code == 1
    assert json.loads(out)["problem"] == "token"
    assert err.startswith("error: the API refused the token (401)")


# ---------------------------------------------------------------- the mapping against them


def _problems(yaml: str, specs: DatasourceSpecs, columns: tuple[str, ...] = ()) -> list[str]:
    spec = parse_mapping(yaml, path="m.yaml")
    compiled = [compile_mapping(spec, columns)] if columns else []
    return [p.render("m.yaml") for p in check_mapping(spec, specs, compiled=compiled)]


def test_reserved_attributes_the_datasource_does_not_define(specs: DatasourceSpecs) -> None:
    yaml = """\
target: contacts
fields:
  _user_id: id
  _fist_name: first
  _tags: {column: tags, type: list}
  _first_name: {column: name, type: list}
  _birthdate: born
  loyalty_tier: tier
"""
    assert _problems(yaml, specs) == [
        "m.yaml:4: error: _fist_name: '_fist_name' is not a reserved attribute of datasource "
        "'sandbox-datasource' (did you mean '_first_name'?); name custom attributes without a "
        "leading '_' (see `instasent-import specs`)",
        "m.yaml:6: error: _first_name: '_first_name' holds one value in datasource "
        "'sandbox-datasource', but the mapping sends a list (type: list); use type: string",
        "m.yaml:7: warning: _birthdate: '_birthdate' is a date attribute, sent as given text; add "
        "`type: date` so bad values are caught before sending",
    ]


def test_passed_through_columns_are_checked_too(specs: DatasourceSpecs) -> None:
    yaml = "target: contacts\nfields:\n  _user_id: id\ncustom_attributes: all_other_columns\n"
    problems = _problems(yaml, specs, columns=("id", "_country", "_shoe_size", "plan"))
    assert [p for p in problems if ": error: " in p] == [
        "m.yaml:4: error: _shoe_size: '_shoe_size' is not a reserved attribute of datasource "
        "'sandbox-datasource' (did you mean '_phone_mobile'?); name custom attributes without a "
        "leading '_' (see `instasent-import specs`)"]


EVENTS_HEAD = """\
target: events
fields:
  _event_id: id
  _user_id: user
"""


def test_event_types_the_datasource_does_not_know(specs: DatasourceSpecs) -> None:
    problems = _problems(EVENTS_HEAD + "  _event_type: {value: purchse}\n", specs)
    assert problems[0] == (
        "m.yaml:5: error: _event_type 'purchse' is not an event type of datasource "
        "'sandbox-datasource' (did you mean 'purchase'?); it has: purchase, refund, "
        "cart_abandoned, product_view, page_view, signup")


def test_required_parameters_lists_and_constants(specs: DatasourceSpecs) -> None:
    yaml = EVENTS_HEAD + """\
  _event_date: {column: at, type: datetime}
  _event_type: {value: purchase}
  _event_parameters:
    amount: total
    sku: {column: skus, type: list}
    coupon: {value: WELCOME-2024-A-VERY-LONG-COUPON-CODE-THAT-GOES-ON-AND-ON-AND-ON-FOREVER}
    gift_wrap: wrap
"""
    assert _problems(yaml, specs) == [
        "m.yaml:7: error: event type 'purchase' requires parameter 'currency', which the "
        "mapping does not fill; map it under _event_parameters",
        "m.yaml:8: warning: _event_parameters.amount: event type 'purchase' expects a number; "
        "add `type: float` (or int) so bad values are caught before sending",
        "m.yaml:9: error: _event_parameters.sku: event type 'purchase' takes one value for "
        "'sku', but the mapping sends a list (type: list); use type: string",
        "m.yaml:10: error: _event_parameters.coupon: the constant 'WELCOME-2024-A-VERY-LONG-"
        "COUPON-CODE-THAT-GOES-ON-AND-ON-AND-ON-FOREVER' has 71 characters; event type "
        "'purchase' allows at most 64",
        "m.yaml:11: warning: _event_parameters.gift_wrap is not a parameter of event type "
        "'purchase' in datasource 'sandbox-datasource'; it is sent as is",
    ]


def test_event_types_from_a_column_warn_per_type(specs: DatasourceSpecs) -> None:
    yaml = EVENTS_HEAD + """\
  _event_date: {column: at, type: datetime}
  _event_type: type
  _event_parameters:
    amount: {column: amount, type: float}
    currency: currency
"""
    assert _problems(yaml, specs) == [
        "m.yaml:7: warning: rows of event type 'product_view' will be rejected "
        "(required_missing): its required parameter 'sku' is not mapped under "
        "_event_parameters",
        "m.yaml:7: warning: rows of event type 'page_view' will be rejected (required_missing): "
        "its required parameter 'url' is not mapped under _event_parameters",
    ]


def test_user_data_is_checked_as_contact_attributes(specs: DatasourceSpecs) -> None:
    yaml = EVENTS_HEAD + """\
  _event_type: {value: signup}
  _user_data:
    _emial: email
"""
    assert [p for p in _problems(yaml, specs) if ": error: " in p] == [
        "m.yaml:7: error: _user_data._emial: '_emial' is not a reserved attribute of datasource "
        "'sandbox-datasource' (did you mean '_email'?); name custom attributes without a "
        "leading '_' (see `instasent-import specs`)"]


def test_apply_specs_refuses_errors_and_returns_warnings(specs: DatasourceSpecs) -> None:
    bad = parse_mapping(EVENTS_HEAD + "  _event_type: {value: nope}\n", path="m.yaml")
    with pytest.raises(MappingError) as caught:
        apply_specs(bad, [compile_mapping(bad, ("id", "user"))], specs)
    assert caught.value.exit_code == 2
    assert str(caught.value).splitlines()[0] == "m.yaml: 1 problem in the mapping"
    good = parse_mapping(EVENTS_HEAD + "  _event_type: {value: signup}\n", path="m.yaml")
    compiled, warnings = apply_specs(good, [compile_mapping(good, ("id", "user"))], specs)
    assert compiled[0].limits is not None and compiled[0].limits.event_types is not None
    assert [w.severity for w in warnings] == []


# ---------------------------------------------------------------- per row, cross-checked


MIXED = """\
id,user,type,amount,currency,sku,url,cats
E1,U1,purchase,10,EUR,,,
E2,U1,purchase,10,EURO,,,
E3,U1,purchase,,EUR,,,
E4,U1,product_view,,,,,
E5,U1,page_view,,,,http://x,
E6,U1,purchse,1,EUR,,,
E7,U1,purchase,10,EUR,S1,,"a,b,c,d,e,f,g,h,i,j,k"
E8,U1,purchase,10,EUR,S1,,"a,b,c,d,e,f,g,h,i,j"
E9,U1,purchase,10,EUR,,,"ok,{long}"
E10,U1,refund,5,USD,,,
E11,U1,product_view,,,SKU-{sku},,
E12,U1,signup,,,,,
""".format(long="x" * 65, sku="9" * 61)

MIXED_MAPPING = """\
target: events
fields:
  _event_id: id
  _user_id: user
  _event_type: type
  _event_date: {value: "2024-11-17T10:00:00Z", type: datetime}
  _event_parameters:
    amount: {column: amount, type: float}
    currency: currency
    sku: sku
    url: url
    categories: {column: cats, type: list}
"""

EXPECTED_CODES = {2: "too_long", 3: "required_missing", 4: "required_missing",
                  6: "unknown_event_type", 7: "too_many_values", 9: "too_long",
                  11: "too_long"}


def _files(tmp_path: Path, data: str, mapping: str) -> tuple[Path, Path]:
    (tmp_path / "ev.csv").write_text(data, encoding="utf-8")
    (tmp_path / "m.yaml").write_text(mapping, encoding="utf-8")
    return tmp_path / "ev.csv", tmp_path / "m.yaml"


def _sandbox_verdicts(app: SandboxApp, target: str, bodies: list[bytes]) -> list[bool]:
    """What the API says of each payload, sent as is (no local limits) with ``?_dryRun``."""
    s = app.settings

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
            return await client.post(
                f"{ASGI_URL}/project/{s.project}/datasource/{s.datasource}/stream/{target}"
                "?_dryRun", content=b"[" + b",".join(bodies) + b"]",
                headers={"Authorization": f"Bearer {s.token}",
                         "Content-Type": "application/json"})

    items = orjson.loads(asyncio.run(post()).content)["entity"]["items"]
    return [item["status"] == "success" for item in items]


def _batch(path: Path) -> SourceBatch:
    (source,) = resolve_inputs([str(path)])
    (batch,) = list(iter_batches(source))
    return batch


def test_rows_over_the_limits_are_rejected_locally_exactly_as_the_api_would(
    tmp_path: Path, specs: DatasourceSpecs, app: SandboxApp
) -> None:
    data, mapping = _files(tmp_path, MIXED, MIXED_MAPPING)
    report = validate_files([str(data)], mapping, specs=specs, top=50)
    got = {p.source_row: p.code for p in report.problems}
    assert got == EXPECTED_CODES
    assert report.specs_source == "datasource 'sandbox-datasource'"
    by_row = {p.source_row: p for p in report.problems}
    assert by_row[2].field == "_event_parameters.currency"
    assert by_row[2].message.startswith(
        "_event_parameters.currency: 'EURO' from column 'currency' is too long: it has 4 "
        "characters and event type 'purchase' allows at most 3 — fix the value")
    assert by_row[4].message.startswith(
        "_event_parameters.sku is required by event type 'product_view' but column 'sku' is "
        "empty")
    # without the limits every row is sent; the sandbox refuses exactly the ones rejected above
    spec = parse_mapping(MIXED_MAPPING)
    batch = _batch(data)
    plain = compile_mapping(spec, batch.frame.columns).map_batch(batch)
    assert not plain.rejects
    items = plain.items["events"]
    accepted = _sandbox_verdicts(app, "events", list(items.bodies))
    refused = {row for row, ok in zip(items.source_rows, accepted, strict=True) if not ok}
    assert refused == set(EXPECTED_CODES)


def test_multi_value_attribute_caps(tmp_path: Path, specs: DatasourceSpecs,
                                    app: SandboxApp) -> None:
    tags = [",".join(f"t{i}" for i in range(n)) for n in (20, 21, 1)]
    data = "id,tags\n" + "".join(f'C{i},"{t}"\n' for i, t in enumerate(tags, start=1))
    yaml = "target: contacts\nfields:\n  _user_id: id\n  _tags: {column: tags, type: list}\n"
    path, mapping = _files(tmp_path, data, yaml)
    report = validate_files([str(path)], mapping, specs=specs)
    assert [(p.source_row, p.code) for p in report.problems] == [(2, "too_many_values")]
    assert report.problems[0].message.startswith(
        "_tags: column 'tags' gives 21 values and attribute '_tags' allows at most 20")
    batch = _batch(path)
    plain = compile_mapping(parse_mapping(yaml), batch.frame.columns).map_batch(batch)
    assert _sandbox_verdicts(app, "contacts", list(plain.items["contacts"].bodies)) == [
        True, False, True]


def test_limits_apply_only_under_specs(tmp_path: Path, specs: DatasourceSpecs) -> None:
    data, mapping = _files(tmp_path, MIXED, MIXED_MAPPING)
    assert validate_files([str(data)], mapping).rejected == 0
    assert validate_files([str(data)], mapping, specs=specs).rejected == len(EXPECTED_CODES)


# ---------------------------------------------------------------- validate --specs


def test_validate_specs_cli(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, MIXED, MIXED_MAPPING)
    code, out, _ = _cli(box, "validate", str(data), "--mapping", str(mapping), "--specs")
    assert code == 3
    lines = out.splitlines()
    assert "specs     checked against datasource 'sandbox-datasource'" in lines
    assert f"  {'too_long':<22}{3:>10}" in lines
    assert f"  {'required_missing':<22}{2:>10}" in lines
    assert f"would reject  {len(EXPECTED_CODES):>10}" in lines
    assert box.app.stats()["requests"]["GET /stream/specs/events"] == {"200": 1}
    assert box.app.stats()["items_received"] == 0  # nothing was sent


def test_validate_specs_mapping_errors_are_exit_2(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, MIXED, MIXED_MAPPING.replace("  _event_type: type",
                                                                  "  _event_type: {value: buy}"))
    code, _, err = _cli(box, "validate", str(data), "--mapping", str(mapping), "--specs")
    assert code == 2
    assert err.splitlines()[1] == (
        f"{mapping}:5: error: _event_type 'buy' is not an event type of datasource "
        "'sandbox-datasource'; it has: purchase, refund, cart_abandoned, product_view, "
        "page_view, signup")
    code, out, _ = _cli(box, "validate", str(data), "--mapping", str(mapping), "--specs",
                        "--output", "json")
    assert code == 2
    assert json.loads(out)["problems"][0]["line"] == 5


def test_validate_specs_needs_working_credentials(tmp_path: Path, box: RunningSandbox) -> None:
    data, mapping = _files(tmp_path, MIXED, MIXED_MAPPING)
    code, out, _err = _cli(box, "validate", str(data), "--mapping", str(mapping), "--specs",
                          "--output", "json", token="wrong")
    assert code == 1
    assert json.loads(out)["error"].startswith("the API refused the token (401)")
    code, out, _ = _cli(box, "validate", str(data), "--mapping", str(mapping), "--output",
                        "json", token="wrong")
    assert code == 0 and json.loads(out)["specs"] is None  # without --specs: no network
