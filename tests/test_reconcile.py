"""The reconciler's tallies partition the rows, whatever the API answers (property tests)."""

from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.chunking import Chunk
from importer.client import ItemOutcome
from importer.exceptions import InternalError
from importer.reconcile import Reconciler
from importer.records import Reject, SourceBatch
from importer.upload import ChunkResult

OK = ItemOutcome(ok=True)
DUP = ItemOutcome(ok=True, duplicate=True)
BAD = ItemOutcome(ok=False, code="invalid_format", field="_email", message="bad")
GONE = ItemOutcome(ok=False, code="transport", message="gave up", retryable=True)

FATES = st.sampled_from(["ok", "dup", "bad", "gone", "unsent"])


def _frame(rows: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"email": [f"u{r}@x.es" for r in rows], "_source_file": "f.csv",
                         "_source_row": rows}, schema_overrides={"_source_row": pl.Int64})


def _chunk(target: str, rows: list[int], frame: pl.DataFrame) -> Chunk:
    return Chunk(target, ("f.csv",) * len(rows), tuple(rows),  # type: ignore[arg-type]
                 tuple(f"k{r}" for r in rows), tuple(b"{}" for _ in rows), (frame,))


def _settle(rec: Reconciler, target: str, fates: dict[int, str], frame: pl.DataFrame) -> None:
    rows = sorted(fates)
    for start in range(0, len(rows), 7):
        part = rows[start:start + 7]
        unsent = [r for r in part if fates[r] == "unsent"]
        sent = [r for r in part if fates[r] != "unsent"]
        if unsent:
            rec.on_unsent(_chunk(target, unsent, frame))
        if sent:
            table = {"ok": OK, "dup": DUP, "bad": BAD, "gone": GONE}
            rec.on_result(ChunkResult(_chunk(target, sent, frame),
                                      tuple(table[fates[r]] for r in sent), 202, 1))


@settings(max_examples=200, deadline=None)
@given(
    map_fates=st.lists(st.sampled_from(["send", "reject", "filter"]), min_size=1, max_size=60),
    first=st.lists(FATES, min_size=60, max_size=60),
    second=st.lists(FATES, min_size=60, max_size=60),
    two_targets=st.booleans(),
)
def test_every_row_lands_in_exactly_one_bucket(
    map_fates: list[str], first: list[str], second: list[str], two_targets: bool
) -> None:
    rows = list(range(1, len(map_fates) + 1))
    frame = _frame(rows)
    targets = ("contacts", "events") if two_targets else ("events",)
    rec = Reconciler(None, targets=targets)
    rec.on_read(SourceBatch("f.csv", frame))
    map_rejects = [Reject("f.csv", r, "map", "invalid_email", "x") for r, f in zip(
        rows, map_fates, strict=True) if f == "reject"]
    rec.on_mapped(map_rejects, sum(1 for f in map_fates if f == "filter"))
    sent = [r for r, f in zip(rows, map_fates, strict=True) if f == "send"]
    fates = {r: first[i] for i, r in enumerate(sent)}
    _settle(rec, targets[0], fates, frame)
    expected_accepted = 0
    if two_targets:
        # Rows whose contact failed are never sent as events (the pipeline skips them).
        alive = [r for r in sent if fates[r] in ("ok", "dup")]
        assert set(rec.dropped.get("f.csv", set())) == {r for r in sent
                                                        if fates[r] in ("bad", "gone")}
        events = {r: second[i] for i, r in enumerate(alive)}
        _settle(rec, "events", events, frame)
        expected_accepted = sum(1 for f in events.values() if f in ("ok", "dup"))
    else:
        expected_accepted = sum(1 for f in fates.values() if f in ("ok", "dup"))
    tally = rec.finish()
    assert tally.balanced()
    assert tally.accepted == expected_accepted
    assert tally.filtered == map_fates.count("filter")
    assert tally.rejected + tally.accepted + tally.filtered + tally.not_attempted == len(rows)


def test_api_rejects_carry_the_original_row() -> None:
    frame = _frame([1, 2, 3])
    seen: list[Reject] = []

    class Writer:
        def write(self, rejects: list[Reject]) -> None:
            seen.extend(rejects)

    rec = Reconciler(Writer(), targets=("contacts",))  # type: ignore[arg-type]
    rec.on_read(SourceBatch("f.csv", frame))
    rec.on_result(ChunkResult(_chunk("contacts", [1, 2, 3], frame), (OK, BAD, GONE), 202, 2))
    assert [(r.source_row, r.stage, r.values["email"]) for r in seen] == [
        (2, "api", "u2@x.es"), (3, "transport", "u3@x.es")]
    assert seen[1].retryable and seen[0].http_status == 202 and seen[0].attempts == 2
    assert rec.finish().retryable == 1


def test_a_broken_invariant_fails_loudly() -> None:
    rec = Reconciler(None, targets=("contacts",))
    rec.on_read(SourceBatch("f.csv", _frame([1, 2])))
    rec.on_mapped([], 1)  # one row filtered, the other never accounted for
    with pytest.raises(InternalError, match="accounting invariant"):
        rec.finish()
