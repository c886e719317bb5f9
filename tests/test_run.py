"""The main job end to end, against a live sandbox on 127.0.0.1 (uvicorn in a thread).

Each test checks the promise from the outside: what the sandbox finally holds, what the
rejects file holds, and that the report's accounting adds up.
"""

from __future__ import annotations

import asyncio
import csv
import random
import stat
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from importer.chunking import Chunk
from importer.client import ApiClient
from importer.config import Credentials
from importer.exceptions import AuthError, NotFoundError
from importer.pipeline import Progress, RunOptions, run_import
from importer.report import EXIT_ABORTED, EXIT_OK, EXIT_REJECTS, EXIT_RETRYABLE, ImportReport
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings
from importer.upload import ChunkResult, Uploader, UploadSettings

ORDERS_MAPPING = """\
version: 1
targets:
  - target: contacts
    fields:
      _user_id: customer_id
      _email: {column: email, type: email}
  - target: events
    fields:
      _event_id: {hash: [order_id, line_no]}
      _user_id: customer_id
      _event_type: {value: purchase}
      _event_date: {column: ordered_at, type: datetime, format: "%Y-%m-%d %H:%M:%S"}
      _event_parameters:
        amount: {column: amount, type: float}
        currency: currency
"""

CONTACTS_MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: customer_id
  _email: {column: email, type: email}
"""

FAST = UploadSettings(backoff_base=0.01, backoff_cap=0.05, max_attempts=12, rate_jitter=0.01)


def write_orders(path: Path, n: int, *, seed: int = 7) -> dict[str, set[tuple[str, str]]]:
    """An orders export: ~5% bad emails, ~3% bad dates. Returns the expected outcomes."""
    rng = random.Random(seed)
    expected: dict[str, set[tuple[str, str]]] = {"valid": set(), "invalid_email": set(),
                                                 "invalid_date": set()}
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "line_no", "customer_id", "email", "ordered_at", "amount",
                      "currency"])
        for i in range(n):
            customer = f"C{i % (n // 3 + 1):05d}"
            email = f"{customer.lower()}@example.com"
            date = f"2024-11-{1 + i % 28:02d} 10:{i % 60:02d}:00"
            kind = "valid"
            roll = rng.random()
            if roll < 0.05:
                email, kind = "not-an-email", "invalid_email"
            elif roll < 0.08:
                date, kind = "31/02/2024", "invalid_date"
            order = f"O{i // 2:06d}"
            line = str(i % 2 + 1)
            out.writerow([order, line, customer, email, date, f"{rng.randint(100, 99999) / 100}",
                          "EUR"])
            expected[kind].add((order, line))
    return expected


def creds(
    box: RunningSandbox, *, token: str | None = None, project: str | None = None
) -> Credentials:
    s = box.settings
    return Credentials(box.api_url, project or s.project, s.datasource,
                       token if token is not None else s.token)


def read_rejects(path: str | None) -> list[dict[str, str]]:
    assert path is not None
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def assert_balanced(report: ImportReport) -> None:
    assert report.rows_read == (
        report.accepted + report.rejected + report.filtered + report.not_attempted
    )


def test_end_to_end_with_faults_every_valid_row_lands_exactly_once(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    data = tmp_path / "orders.csv"
    expected = write_orders(data, 2000)
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_MAPPING)
    # 8 requests per 1 s window: the importer's opening burst (it knows no limit before the
    # first answer) overruns it, so the run crosses 429s and must wait for the reset.
    box = make_sandbox(
        faults=FaultSettings(fail_rate=0.1, drop_after_rate=0.02), seed=11,
        rate_limit=8, rate_window_s=1.0, require_known_user=True,
    )
    rejects = tmp_path / "orders.rejects.csv"
    upload = UploadSettings(backoff_base=0.01, backoff_cap=0.05, max_attempts=12,
                            rate_jitter=0.01, initial_concurrency=12)
    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=upload, rejects_path=str(rejects)))

    assert_balanced(report)
    n_valid = len(expected["valid"])
    assert report.accepted == n_valid
    assert report.rejected == 2000 - n_valid
    assert report.exit_code == EXIT_REJECTS
    assert report.rate_limited > 0, "the test is meant to cross a 429 window"
    assert report.retries > 0
    stats = box.app.stats()
    # Events: exactly one per distinct valid _event_id, however many resends the faults forced.
    assert stats["events"] == n_valid
    valid_customers = {r for r in _valid_customers(data)}
    assert stats["contacts"] == len(valid_customers)
    assert stats["faults_injected"] > 0
    rows = read_rejects(report.rejects_path)
    got = {(r["order_id"], r["line_no"]): r["_reject_code"] for r in rows}
    want = {k: "invalid_email" for k in expected["invalid_email"]}
    want |= {k: "invalid_date" for k in expected["invalid_date"]}
    assert got == want
    assert all(r["_reject_stage"] == "map" for r in rows)
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600


def _valid_customers(path: Path) -> set[str]:
    with path.open(encoding="utf-8") as fh:
        return {
            r["customer_id"] for r in csv.DictReader(fh)
            if r["email"] != "not-an-email" and not r["ordered_at"].startswith("31/02")
        }


def test_running_the_same_events_twice_creates_no_duplicates(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "orders.csv"
    expected = write_orders(data, 400)
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_MAPPING)
    options = RunOptions(upload=FAST, rejects_path=str(tmp_path / "r.csv"))
    first = run_import([str(data)], mapping, creds(sandbox_server), options)
    second = run_import([str(data)], mapping, creds(sandbox_server), options)
    stats = sandbox_server.app.stats()
    assert stats["events"] == len(expected["valid"]) == first.accepted == second.accepted
    assert second.duplicates == len(expected["valid"])  # every event answered "duplicate"
    assert stats["duplicates_suppressed"] >= len(expected["valid"])


def test_contacts_are_acknowledged_before_the_first_event(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    # require_known_user refuses an event whose contact is not stored yet: with concurrency
    # and latency, any overlap of the two phases would show up as rejects.
    box = make_sandbox(require_known_user=True, latency_ms=(1, 5))
    data = tmp_path / "orders.csv"
    expected = write_orders(data, 1000)
    mapping = tmp_path / "orders.yaml"
    mapping.write_text(ORDERS_MAPPING)
    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=UploadSettings(concurrency=16),
                                   rejects_path=str(tmp_path / "r.csv")))
    assert report.accepted == len(expected["valid"])
    assert "api" not in report.rejected_by_stage


def test_clean_run_exits_0_and_leaves_no_rejects_file(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\n" + "".join(f"U{i},u{i}@x.es\n" for i in range(250)))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    report = run_import([str(data)], mapping, creds(sandbox_server), RunOptions(upload=FAST))
    assert report.exit_code == EXIT_OK
    assert (report.accepted, report.requests, report.rejects_path) == (250, 3, None)
    assert not (tmp_path / "c.rejects.csv").exists()
    assert report.mean_batch_fill == pytest.approx(250 / 3)
    assert sandbox_server.app.stats()["contacts"] == 250


def test_api_item_errors_become_rejects_with_the_source_row(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    # A custom "_x" attribute passes the local mapping but the API refuses unknown reserved
    # attributes (API.md §3): the row must come back with its original columns.
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email,nick\nU1,a@x.es,ok\nU2,b@x.es,bad\nU3,c@x.es,ok\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING + "  _nickname:\n    column: nick\n")
    report = run_import([str(data)], mapping, creds(sandbox_server), RunOptions(upload=FAST))
    assert_balanced(report)
    assert report.accepted == 0 and report.rejected == 3
    rows = read_rejects(report.rejects_path)
    assert [r["customer_id"] for r in rows] == ["U1", "U2", "U3"]
    assert {r["_reject_stage"] for r in rows} == {"api"}
    assert {r["_reject_field"] for r in rows} == {"_nickname"}
    assert {r["_reject_http_status"] for r in rows} == {"422"}
    assert [r["_source_row"] for r in rows] == ["1", "2", "3"]


def test_a_whole_batch_400_loses_no_good_row(sandbox_server: RunningSandbox) -> None:
    """One item the API refuses as a whole batch (not an object): only it is rejected."""
    bodies = [orjson.dumps({"_user_id": f"U{i}"}) for i in range(100)]
    bodies[37] = b'"not an object"'
    chunk = Chunk("contacts", ("f.csv",) * 100, tuple(range(1, 101)),
                  tuple(f"U{i}" for i in range(100)), tuple(bodies))
    results: list[ChunkResult] = []

    async def go() -> Uploader:
        client = ApiClient(creds(sandbox_server))
        uploader = Uploader(client, FAST, on_result=results.append,
                            on_unsent=lambda c: pytest.fail("nothing may be left unsent"))

        async def one() -> object:
            yield chunk

        await uploader.run(one())  # type: ignore[arg-type]
        await client.aclose()
        return uploader

    uploader = asyncio.run(go())
    outcomes = {row: o for r in results for row, o in zip(r.chunk.rows, r.outcomes, strict=True)}
    assert len(outcomes) == 100
    bad = [row for row, o in outcomes.items() if not o.ok]
    assert bad == [38]
    assert outcomes[38].code == "bad_request"
    assert uploader.stats.splits >= 6  # log2(100) halvings down to the one item
    assert sandbox_server.app.stats()["contacts"] == 99


def test_401_and_404_at_start_stop_before_anything_is_sent(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\nU1,a@x.es\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    with pytest.raises(AuthError, match="401"):
        run_import([str(data)], mapping, creds(sandbox_server, token="wrong"))
    with pytest.raises(NotFoundError, match="INSTASENT_PROJECT"):
        run_import([str(data)], mapping, creds(sandbox_server, project="nope"))
    assert sandbox_server.app.stats()["items_received"] == 0


def test_401_mid_run_stops_and_accounts_for_every_row(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    box = make_sandbox(latency_ms=(2, 4))
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\n" + "".join(f"U{i},u{i}@x.es\n" for i in range(5000)))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)

    def revoke_after_some(p: Progress) -> None:
        if p.accepted >= 500:
            box.app.revoke_token()

    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=UploadSettings(concurrency=4)),
                        progress=revoke_after_some)
    assert_balanced(report)
    assert report.exit_code == EXIT_ABORTED
    assert report.aborted is not None and "401" in report.aborted
    assert report.not_attempted > 0
    assert 500 <= report.accepted < 5000
    # Whatever was accepted is really there, and nothing else.
    assert box.app.stats()["contacts"] == report.accepted


def test_transport_failures_that_never_heal_become_retryable_rejects(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    box = make_sandbox()
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\nU1,a@x.es\nU2,b@x.es\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)

    def break_the_server(_: Progress) -> None:  # after the credential check, before any POST
        box.app.set_faults(FaultSettings(fail_rate=1.0))

    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=UploadSettings(max_attempts=3, backoff_base=0.01)),
                        progress=break_the_server)
    assert report.exit_code == EXIT_RETRYABLE
    rows = read_rejects(report.rejects_path)
    assert {r["_reject_retryable"] for r in rows} == {"true"}
    assert {r["_reject_stage"] for r in rows} == {"transport"}
    assert {r["_reject_attempts"] for r in rows} == {"3"}


def test_max_rejects_aborts_with_everything_accounted(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\n" + "".join(f"U{i},bad\n" for i in range(300)))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    report = run_import([str(data)], mapping, creds(sandbox_server),
                        RunOptions(max_rejects=10, read=_small_batches()))
    assert report.exit_code == EXIT_ABORTED
    assert report.aborted is not None and "--max-rejects" in report.aborted
    assert_balanced(report)


def _small_batches():  # type: ignore[no-untyped-def]
    from importer.sources import ReadOptions

    return ReadOptions(batch_rows=50)


def test_dry_run_sends_nothing_and_writes_what_would_be_sent(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\nU1,a@x.es\nU2,bad\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    out = tmp_path / "would-send.ndjson"
    report = run_import([str(data)], mapping, creds(sandbox_server, token="unused"),
                        RunOptions(dry_run=True, dry_run_output=str(out)))
    assert_balanced(report)
    assert (report.not_attempted, report.rejected, report.requests) == (1, 1, 0)
    lines = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert lines == [{"target": "contacts", "item": {"_user_id": "U1", "_email": "a@x.es"}}]
    assert sandbox_server.app.stats()["requests_total"] == 0


SPEC_MAPPING = """\
version: 1
target: events
fields:
  _event_id: order_id
  _user_id: customer_id
  _event_type: {value: purchase}
  _event_parameters:
    amount: {column: amount, type: float}
    currency: currency
"""


def test_specs_turn_max_length_into_row_rejects_before_sending(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    data = tmp_path / "orders.csv"
    data.write_text("order_id,customer_id,amount,currency\nO1,C1,10.5,EUR\nO2,C2,3,EUROS\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(SPEC_MAPPING)
    report = run_import([str(data)], mapping, creds(sandbox_server),
                        RunOptions(specs=True, upload=FAST))
    assert_balanced(report)
    assert report.accepted == 1
    assert report.rejected_by_stage == {"map": 1}  # caught locally: the API never saw it
    assert report.rejected_by_code == {"too_long": 1}
    assert sandbox_server.app.stats()["items_received"] == 1


def test_specs_refuse_an_unknown_event_type_before_sending(
    tmp_path: Path, sandbox_server: RunningSandbox
) -> None:
    from importer.exceptions import MappingError

    data = tmp_path / "orders.csv"
    data.write_text("order_id,customer_id,amount,currency\nO1,C1,10.5,EUR\n")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(SPEC_MAPPING.replace("value: purchase", "value: purchace"))
    with pytest.raises(MappingError, match="purchace"):
        run_import([str(data)], mapping, creds(sandbox_server), RunOptions(specs=True))
    assert sandbox_server.app.stats()["items_received"] == 0
