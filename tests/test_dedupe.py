"""One ``_event_id``, one event: the first occurrence is sent (issue 15, item 3); and
``--max-rejects N`` caps the rejects file (item "resources").

What is checked is what the sandbox stores, the rejects file's rows and messages, and the
report's accounting.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from importer.config import Credentials
from importer.dedupe import EventIds
from importer.pipeline import Progress, RunOptions, run_import
from importer.report import EXIT_ABORTED, EXIT_REJECTS, ImportReport
from importer.sandbox.server import RunningSandbox
from importer.sources import ReadOptions
from importer.upload import UploadSettings
from importer.validate import validate_files
from tests.test_run import CONTACTS_MAPPING, creds, read_rejects

EVENTS = """\
version: 1
target: events
fields:
  _event_id: order_id
  _user_id: customer_id
  _event_type: {value: purchase}
  _event_parameters:
    amount: {column: amount, type: float}
    currency: {value: EUR}
"""

BOTH = """\
version: 1
targets:
  - target: contacts
    fields:
      _user_id: customer_id
  - target: events
    fields:
      _event_id: order_id
      _user_id: customer_id
      _event_type: {value: purchase}
      _event_parameters:
        amount: {column: amount, type: float}
        currency: {value: EUR}
"""

FAST = UploadSettings(concurrency=32, backoff_base=0.005, backoff_cap=0.02, max_attempts=12)


def write(path: Path, rows: list[tuple[str, str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["order_id", "customer_id", "amount"])
        out.writerows(rows)


def balanced(report: ImportReport) -> bool:
    return report.rows_read == (
        report.accepted + report.rejected + report.filtered + report.not_attempted
        + report.skipped_done + report.duplicates_in_input
    )


def orders_with_repeats(n: int) -> tuple[list[tuple[str, str, str]], set[int], set[int]]:
    """``n`` orders, then each again: even ones identical, odd ones with another amount.
    Returns the rows and the (1-based) row numbers of the identical and conflicting copies."""
    rows = [(f"O{i}", f"C{i % 50}", f"{i}.50") for i in range(n)]
    identical, conflicting = set(), set()
    for i in range(n):
        rows.append((f"O{i}", f"C{i % 50}", f"{i}.50" if i % 2 == 0 else f"{i}.99"))
        (identical if i % 2 == 0 else conflicting).add(n + i + 1)
    return rows, identical, conflicting


def test_the_first_occurrence_of_an_event_id_is_the_one_stored(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    rows, identical, conflicting = orders_with_repeats(400)
    data = tmp_path / "orders.csv"
    write(data, rows)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(EVENTS)
    box = make_sandbox(latency_ms=(5, 20))
    options = RunOptions(upload=FAST, batch_size=20, rejects_path=str(tmp_path / "r.csv"))
    report = run_import([str(data)], mapping, creds(box), options)

    assert balanced(report)
    assert report.exit_code == EXIT_REJECTS
    assert report.duplicates_in_input == len(identical)
    assert report.rejected == len(conflicting)
    assert report.rejected_by_code == {"duplicate_event_id": len(conflicting)}
    assert report.accepted == 400
    stored = {e["_event_id"]: e["_event_parameters"]["amount"] for e in box.app.events()}
    assert stored == {f"O{i}": i + 0.5 for i in range(400)}
    rejects = read_rejects(report.rejects_path)
    assert {int(r["_source_row"]) for r in rejects} == conflicting
    first = next(r for r in rejects if r["order_id"] == "O1")
    assert first["_reject_stage"] == "map" and first["_reject_field"] == "_event_id"
    assert first["amount"] == "1.99"
    assert f"row 2 of {data}" in first["_reject_message"]


def test_two_targets_a_repeated_event_row_is_counted_once(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    rows, identical, conflicting = orders_with_repeats(60)
    data = tmp_path / "orders.csv"
    write(data, rows)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(BOTH)
    box = make_sandbox()
    report = run_import([str(data)], mapping, creds(box), RunOptions(upload=FAST, batch_size=7))
    assert balanced(report)
    assert (report.accepted, report.duplicates_in_input, report.rejected) == (
        60, len(identical), len(conflicting))
    assert box.app.stats()["events"] == 60


def test_a_resumed_run_counts_the_ids_sent_before_as_seen(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """Rows 1-50 are sent, then the token is revoked. On --resume, row 900 reuses row 1's id
    with another amount (a reject naming row 1) and row 950 repeats row 2 exactly."""
    rows = [(f"O{i}", "C1", f"{i}.5") for i in range(1, 1001)]
    rows[899] = ("O1", "C1", "7.25")
    rows[949] = rows[1]
    data = tmp_path / "orders.csv"
    write(data, rows)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(EVENTS)
    first_box = make_sandbox()

    def revoke(p: Progress) -> None:
        if p.accepted:
            first_box.app.revoke_token()

    one = UploadSettings(concurrency=1)
    # source batches of 50 rows: the run stops long before it reads row 900
    small = ReadOptions(batch_rows=50)
    first = run_import([str(data)], mapping, creds(first_box),
                       RunOptions(upload=one, batch_size=50, read=small), progress=revoke)
    assert first.exit_code == EXIT_ABORTED and first.accepted == 50
    assert first.rejected == first.duplicates_in_input == 0

    second_box = make_sandbox()
    s = second_box.settings
    again = Credentials(second_box.api_url, s.project, s.datasource, s.token)
    report = run_import([str(data)], mapping, again,
                        RunOptions(upload=one, batch_size=50, read=small, resume="resume"))
    assert balanced(report)
    assert report.skipped_done == 50 and report.duplicates_in_input == 1
    assert report.rejected_by_code == {"duplicate_event_id": 1}
    (reject,) = read_rejects(report.rejects_path)
    assert reject["_source_row"] == "900" and f"row 1 of {data}" in reject["_reject_message"]
    assert {e["_event_id"] for e in second_box.app.events()} == {
        f"O{i}" for i in range(51, 1001) if i not in (900, 950)}


def test_validate_reports_repeated_and_conflicting_event_ids(tmp_path: Path) -> None:
    rows, identical, conflicting = orders_with_repeats(30)
    data = tmp_path / "orders.csv"
    write(data, rows)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(EVENTS)
    report = validate_files([str(data)], mapping, read=ReadOptions(batch_rows=7))
    assert report.duplicates_in_input == len(identical)
    assert report.rejects_by_code == {"duplicate_event_id": len(conflicting)}
    assert report.valid == 30
    assert report.rows_read == report.valid + report.rejected + report.duplicates_in_input
    assert report.to_dict()["duplicates_in_input"] == len(identical)


def test_event_ids_are_compared_across_batches_and_files() -> None:
    ids = EventIds()
    v = ids.check("a.csv", [1, 2, 3, 4], ["A", "B", "A", "C"], [b"1", b"2", b"1", b"x"])
    assert v.keep == [True, True, False, True] and v.identical == [3] and not v.conflicts
    v = ids.check("b.csv", [1, 2, 3, 4], ["C", "D", "B", "D"], [b"x", b"d", b"zz", b"d2"])
    assert v.keep == [False, True, False, False] and v.identical == [1]
    assert [(c.row, c.event_id, c.earlier_file, c.earlier_row) for c in v.conflicts] == [
        (3, "B", "a.csv", 2), (4, "D", "b.csv", 2)]
    assert ids.seen == 4


# -- --max-rejects -----------------------------------------------------------------------


def test_max_rejects_writes_at_most_n_map_rejects(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """The issue's case: every row bad, N = 100, source batches of 1,000 rows: it wrote the
    batch that crossed N and the one read ahead (~2,000)."""
    data = tmp_path / "c.csv"
    data.write_text("customer_id,email\n" + "".join(f"U{i},bad\n" for i in range(5000)))
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CONTACTS_MAPPING)
    box = make_sandbox()
    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(max_rejects=100, read=ReadOptions(batch_rows=1000)))
    assert report.exit_code == EXIT_ABORTED
    assert len(read_rejects(report.rejects_path)) == report.rejected == 100
    assert balanced(report)


def test_max_rejects_caps_api_rejects_from_requests_in_flight(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """Every event is refused by the API (no amount): 16 requests in flight answer after the
    limit; at most N rows reach the rejects file, the others are not attempted."""
    data = tmp_path / "orders.csv"
    write(data, [(f"O{i}", "C1", "") for i in range(5000)])
    mapping = tmp_path / "m.yaml"
    mapping.write_text(EVENTS.replace("amount: {column: amount, type: float}",
                                      "amount: amount"))
    box = make_sandbox(latency_ms=(5, 10))
    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(max_rejects=150, upload=UploadSettings(concurrency=16)))
    assert report.exit_code == EXIT_ABORTED
    assert report.rejected_by_stage == {"api": 150}
    assert len(read_rejects(report.rejects_path)) == 150
    assert balanced(report)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2)), max_size=200),
    st.lists(st.integers(1, 50), min_size=1, max_size=8),
)
def test_property_event_ids_agree_with_a_plain_first_occurrence_rule(
    events: list[tuple[int, int]], cuts: list[int]
) -> None:
    """Batches of any size, two files: every later row is identical or a conflict with the
    first row of its id, exactly as a dict of first occurrences says."""
    ids = EventIds()
    first: dict[str, tuple[str, int, bytes]] = {}
    start, c = 0, 0
    while start < len(events):
        stop = min(len(events), start + cuts[c % len(cuts)])
        name = "a.csv" if c % 2 == 0 else "b.csv"
        rows = list(range(start + 1, stop + 1))
        keys = [f"E{events[r - 1][0]}" for r in rows]
        bodies = [b"%d" % events[r - 1][1] for r in rows]
        verdict = ids.check(name, rows, keys, bodies)
        want_keep, want_same, want_conflicts = [], [], []
        for r, k, b in zip(rows, keys, bodies, strict=True):
            if k not in first:
                first[k] = (name, r, b)
                want_keep.append(True)
                continue
            want_keep.append(False)
            if first[k][2] == b:
                want_same.append(r)
            else:
                want_conflicts.append((r, k, first[k][0], first[k][1]))
        got_keep = verdict.keep if verdict.keep is not None else [True] * len(rows)
        assert list(got_keep) == want_keep
        assert list(verdict.identical) == want_same
        assert [(x.row, x.event_id, x.earlier_file, x.earlier_row)
                for x in verdict.conflicts] == want_conflicts
        start, c = stop, c + 1
