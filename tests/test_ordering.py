"""Rows that share a ``_user_id`` reach the API in file order (issue 15, item 2).

What is checked is what the sandbox finally stores: for every contact, the file's rows applied
in order (an upsert merges; empty cells are omitted, so a later non-empty value wins).
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.chunking import Chunk, Chunker
from importer.client import ItemOutcome
from importer.config import Credentials
from importer.ordering import HELD_BACK, KeyGate
from importer.pipeline import Progress, RunOptions, arun_import, run_import
from importer.report import EXIT_OK, EXIT_RETRYABLE
from importer.sandbox.app import create_app
from importer.sandbox.server import RunningSandbox
from importer.sandbox.settings import FaultSettings
from importer.sources import ReadOptions
from importer.upload import UploadSettings
from tests.conftest import ASGI_API_URL, sandbox_settings
from tests.test_run import creds, read_rejects

MAPPING = """\
version: 1
target: contacts
fields:
  _user_id: id
  version: version
  city: city
"""

EVENTS_MAPPING = """\
version: 1
target: events
fields:
  _event_id: order_id
  _user_id: id
  _event_type: {value: purchase}
  _event_parameters:
    amount: {value: "9.5", type: float}
    currency: {value: EUR}
  _user_data:
    version: version
    city: city
"""

Row = tuple[str, str, str]  # id, version, city


def write(path: Path, rows: list[Row], *, order_id: bool = False) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["id", "version", "city", *(["order_id"] if order_id else [])])
        for i, row in enumerate(rows):
            out.writerow([*row, *([f"O{i}"] if order_id else [])])


def applied_in_order(rows: list[Row]) -> dict[str, dict[str, str]]:
    """The file's rows applied one after the other, as upserts with empty cells omitted."""
    state: dict[str, dict[str, str]] = {}
    for user, version, city in rows:
        stored = state.setdefault(user, {"_user_id": user})
        stored.update({k: v for k, v in (("version", version), ("city", city)) if v})
    return state


def stale(box: RunningSandbox, rows: list[Row]) -> list[str]:
    want = applied_in_order(rows)
    return [u for u, contact in want.items() if box.app.get_contact(u) != contact]


def repeated_rows(rng: random.Random, n_keys: int) -> list[Row]:
    """``U0..Un`` at version 1, then again at 2 (far apart), each second copy followed at
    once by a third (adjacent), then a shuffled fourth round."""
    rows: list[Row] = [(f"U{i}", "1", f"city{i}") for i in range(n_keys)]
    for i in range(n_keys):
        rows.append((f"U{i}", "2", ""))
        rows.append((f"U{i}", "3", f"town{i}"))
    last = [(f"U{i}", "4", "") for i in range(n_keys)]
    rng.shuffle(last)
    return rows + last


FAULTS = FaultSettings(fail_rate=0.1, drop_after_rate=0.05)
# Enough attempts that a 10% fault rate never exhausts them: every row must land.
PATIENT = UploadSettings(concurrency=32, backoff_base=0.005, backoff_cap=0.02,
                         max_attempts=15, rate_jitter=0.01)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(5))
def test_repeated_ids_end_at_their_last_row_under_latency_and_faults(
    run: int, tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    rows = repeated_rows(random.Random(run), 300)
    data = tmp_path / "c.csv"
    write(data, rows)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    box = make_sandbox(latency_ms=(40, 60), faults=FAULTS, seed=run)
    # Small source batches (a different size each run): a key's rows fall in different
    # batches, so it is the gate and the parking that order them, not one request.
    read = ReadOptions(batch_rows=40 + 17 * run)
    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=PATIENT, batch_size=20, read=read))
    assert report.exit_code == EXIT_OK, report
    assert report.accepted == len(rows)
    assert box.app.stats()["faults_injected"] > 0
    assert stale(box, rows) == []


def test_events_user_data_is_applied_in_file_order(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    rows = repeated_rows(random.Random(9), 150)
    data = tmp_path / "e.csv"
    write(data, rows, order_id=True)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(EVENTS_MAPPING)
    box = make_sandbox(latency_ms=(5, 15), faults=FAULTS, seed=4)
    report = run_import([str(data)], mapping, creds(box),
                        RunOptions(upload=PATIENT, batch_size=10))
    assert report.exit_code == EXIT_OK, report
    assert stale(box, rows) == []
    assert box.app.stats()["events"] == len(rows)


def test_a_row_behind_a_retryable_failure_is_held_back_for_retry(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """Row 1 (U0 v1) never gets through; U0 v2 must not be stored before it, or `retry`
    would later store v1 over it. Both end as retryable rejects, in file order."""
    data = tmp_path / "c.csv"
    write(data, [("U0", "1", "a"), *[(f"X{i}", "1", "") for i in range(9)], ("U0", "2", "b")])
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    box = make_sandbox()

    def faults(p: Progress) -> None:
        # on after the credential check (the first progress call comes before any POST),
        # off once the first chunk has given up
        box.app.set_faults(FaultSettings(fail_rate=0.0 if p.rejected else 1.0))

    report = run_import(
        [str(data)], mapping, creds(box),
        # source batches of 5 rows: the two U0 rows are in different requests
        RunOptions(upload=UploadSettings(concurrency=1, max_attempts=2, backoff_base=0.001),
                   batch_size=5, read=ReadOptions(batch_rows=5)),
        progress=faults,
    )
    assert report.exit_code == EXIT_RETRYABLE
    rejects = read_rejects(report.rejects_path)
    u0 = [(r["_source_row"], r["_reject_code"]) for r in rejects if r["id"] == "U0"]
    assert u0 == [("1", "transport"), ("11", HELD_BACK)]
    assert all(r["_reject_retryable"] == "true" for r in rejects)
    assert box.app.get_contact("U0") is None


# -- the gate on its own ------------------------------------------------------------------


def chunk(*keys: str, target: str = "contacts") -> Chunk:
    n = len(keys)
    return Chunk(target, ("f",) * n, tuple(range(n)), keys, (b"{}",) * n)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_chunk_waits_only_for_earlier_chunks_sharing_a_key() -> None:
    gate = KeyGate()
    a, b, c = chunk("U1", "U2"), chunk("U3"), chunk("U2", "U4")
    for x in (a, b, c):
        gate.register(x)
    await asyncio.wait_for(gate.wait(a), 1)
    await asyncio.wait_for(gate.wait(b), 1)  # no shared key: no wait
    waiting = asyncio.ensure_future(gate.wait(c))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.settle(b)
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.settle(a)
    await asyncio.wait_for(waiting, 1)
    gate.settle(c)
    assert not gate._tickets
    # a later chunk with the same keys does not wait for settled ones
    d = chunk("U2")
    gate.register(d)
    await asyncio.wait_for(gate.wait(d), 1)


@pytest.mark.anyio
async def test_the_gate_holds_back_keys_after_a_retryable_failure() -> None:
    gate = KeyGate()
    first, later = chunk("U1", "U2"), chunk("U3", "U1")
    gate.observe(first, (ItemOutcome(ok=False, retryable=True), ItemOutcome(ok=True)))
    held: list[tuple[Chunk, tuple[ItemOutcome, ...]]] = []
    rest = gate.hold_back(later, lambda c, o: held.append((c, o)))
    assert rest is not None and rest.keys == ("U3",)
    assert held[0][0].keys == ("U1",) and held[0][1][0].code == HELD_BACK
    assert "f row 0" in held[0][1][0].message


def test_a_chunk_does_not_end_inside_a_run_of_one_key() -> None:
    chunker = Chunker("contacts", max_items=4)
    keys = ["A", "B", "B", "C", "C", "C", "D", "E", "E", "E", "E", "E", "F"]
    out = list(chunker.add("f", range(len(keys)), keys, [b"{}"] * len(keys)))
    out += list(chunker.flush())
    assert [c.keys for c in out] == [
        ("A", "B", "B"), ("C", "C", "C", "D"), ("E", "E", "E", "E"), ("E", "F"),
    ]
    assert [r for c in out for r in c.rows] == list(range(len(keys)))


# -- property: the sandbox equals the file applied in order -------------------------------


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, 25), st.sampled_from(["", "1", "2", "3"]),
                  st.sampled_from(["", "x", "y"])),
        min_size=1, max_size=150,
    ),
    st.integers(1, 32),
    st.integers(1, 30),
    st.integers(5, 200),
    st.integers(0, 2**16),
)
def test_property_the_sandbox_holds_the_file_applied_in_order(
    tmp_path_factory: pytest.TempPathFactory,
    raw: list[tuple[int, str, str]],
    concurrency: int,
    batch_size: int,
    read_rows: int,
    seed: int,
) -> None:
    rows = [(f"U{k}", v, c) for k, v, c in raw]
    folder = tmp_path_factory.mktemp("prop")
    data = folder / "c.csv"
    write(data, rows)
    mapping = folder / "m.yaml"
    mapping.write_text(MAPPING)
    rng = random.Random(seed)
    low = rng.randint(0, 3)
    app = create_app(sandbox_settings(
        latency_ms=(low, low + rng.randint(0, 6)), seed=seed,
        faults=FaultSettings(fail_rate=0.05, drop_after_rate=0.05),
    ))
    upload = UploadSettings(concurrency=concurrency, backoff_base=0.001, backoff_cap=0.005,
                            max_attempts=20, rate_jitter=0.0)
    s = app.settings
    credentials = Credentials(ASGI_API_URL, s.project, s.datasource, s.token)
    try:
        report = asyncio.run(arun_import(
            [str(data)], mapping, credentials,
            RunOptions(upload=upload, batch_size=batch_size,
                       read=ReadOptions(batch_rows=read_rows)),
            transport=httpx.ASGITransport(app=app),
        ))
        assert report.exit_code == EXIT_OK
        want = applied_in_order(rows)
        assert {u: app.get_contact(u) for u in want} == want
    finally:
        app.close()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 40), max_size=400),
    st.lists(st.integers(1, 60), min_size=1, max_size=10),
    st.integers(1, 12),
    st.integers(0, 6),
)
def test_property_spread_chunks_keep_every_row_once_and_each_key_in_order(
    keys: list[int], cuts: list[int], max_items: int, spread: int
) -> None:
    chunker = Chunker("contacts", max_items=max_items, spread=spread)
    out: list[Chunk] = []
    start, c = 0, 0
    while start < len(keys):  # source batches of varying size
        stop = min(len(keys), start + cuts[c % len(cuts)])
        rows = list(range(start, stop))
        out += chunker.add("f", rows, [f"K{keys[r]}" for r in rows], [b"{}"] * len(rows))
        start, c = stop, c + 1
    out += chunker.flush()
    sent = [r for chunk in out for r in chunk.rows]
    assert sorted(sent) == list(range(len(keys)))
    assert all(0 < len(chunk) <= max_items for chunk in out)
    for key in set(keys):
        assert [r for r in sent if keys[r] == key] == [i for i, k in enumerate(keys) if k == key]
    assert all(chunk.keys == tuple(f"K{keys[r]}" for r in chunk.rows) for chunk in out)
    assert chunker.parked_max <= max(spread * max_items + 1, 1)


def test_spread_places_a_repeated_key_spread_chunks_after_its_last_one() -> None:
    """Small source batches: a key that went out recently is parked, then placed ``spread``
    chunks after its last chunk."""
    chunker = Chunker("contacts", max_items=2, spread=3)
    out: list[Chunk] = []
    row = 0
    for batch in (["A", "B"], ["C", "A"], ["D", "E", "F", "G", "H", "I"]):
        out += chunker.add("f", range(row, row + len(batch)), batch, [b"{}"] * len(batch))
        row += len(batch)
    out += chunker.flush()
    # A went out in chunk 0; its second row waits until chunk 3
    assert [c.keys for c in out] == [
        ("A", "B"), ("C", "D"), ("E", "F"), ("G", "A"), ("H", "I")]


def test_a_batch_that_repeats_keys_goes_out_with_each_keys_rows_together() -> None:
    chunker = Chunker("contacts", max_items=3, spread=2)
    keys = ["A", "B", "A", "C", "B", "A"]
    out = list(chunker.add("f", range(6), keys, [b"{}"] * 6)) + list(chunker.flush())
    assert [c.keys for c in out] == [("A", "A", "A"), ("B", "B", "C")]
    assert [c.rows for c in out] == [(0, 2, 5), (1, 4, 3)]


def test_a_resumed_run_holds_back_the_rows_behind_an_earlier_invocations_failure(
    tmp_path: Path, make_sandbox: Callable[..., RunningSandbox]
) -> None:
    """As above, but the run stops after row 1 failed (``--max-rejects``) and is resumed: the
    resumed invocation must hold U0 v2 back too, or `retry` would store v1 over it."""
    data = tmp_path / "c.csv"
    write(data, [("U0", "1", "a"), *[(f"X{i}", "1", "") for i in range(9)], ("U0", "2", "b")])
    mapping = tmp_path / "m.yaml"
    mapping.write_text(MAPPING)
    box = make_sandbox()
    upload = UploadSettings(concurrency=1, max_attempts=2, backoff_base=0.001)
    options = RunOptions(upload=upload, batch_size=5, read=ReadOptions(batch_rows=5),
                         state_dir=str(tmp_path / "state"))

    def faults(p: Progress) -> None:
        box.app.set_faults(FaultSettings(fail_rate=0.0 if p.rejected else 1.0))

    first = run_import([str(data)], mapping, creds(box),
                       dataclasses.replace(options, max_rejects=1), progress=faults)
    assert first.aborted is not None and "--max-rejects" in first.aborted
    assert box.app.get_contact("U0") is None
    box.app.set_faults(FaultSettings())

    resumed = run_import([str(data)], mapping, creds(box),
                         dataclasses.replace(options, resume="resume"))
    assert resumed.resumed and resumed.exit_code == EXIT_RETRYABLE
    rejects = read_rejects(resumed.rejects_path)
    u0 = [(r["_source_row"], r["_reject_code"]) for r in rejects if r["id"] == "U0"]
    assert u0 == [("1", "transport"), ("11", HELD_BACK)]
    assert box.app.get_contact("U0") is None
    assert all(box.app.get_contact(f"X{i}") is not None for i in range(9))
