"""One ``_event_id``, one event: the first occurrence in the input is the one sent.

The API stores an event once per ``_event_id`` and answers a resend as a success (API.md §3).
Two rows of one input with the same id were therefore accepted whichever copy arrived first:
with different content, which one was stored depended on the network. Now:

- the first occurrence (in file order, across every file of the run) is sent;
- a later occurrence with the *same* content (the same payload, byte for byte as it would be
  sent) is not sent and counted as ``duplicates_in_input``;
- a later occurrence with *different* content becomes a ``duplicate_event_id`` reject
  (stage ``map``) naming the file and row it conflicts with.

A resumed run registers the rows an earlier invocation finished first, so the ids it sent
count as seen.

Memory: per event one row of five columns — the id's 128-bit digest (two 64-bit hashes with
different seeds), a 64-bit digest of the payload, the file's index and the row number:
36 bytes, 36 MB per million events, however long the ids. Per batch the work is vectorised
(polars): a batch is checked against itself with a window, then against what was seen with
one membership test over the seen digests' first halves: linear in the events seen so far
(~6 ns per seen event per batch of 25,000 here), so ~0.25 µs per event per million seen,
in the reading thread.
A 128-bit id digest makes a false match (two different ids taken for one) a ~1e-20 event at
a billion events; the 64-bit payload digest can call two different payloads of one id equal
with probability 2**-64 per repeated id.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from importer.records import SOURCE_FILE, SOURCE_ROW, Reject, SourceBatch

_SEED_A = 0x5EED_0001
_SEED_B = 0x5EED_0002
_SCHEMA = {"a": pl.UInt64, "b": pl.UInt64, "p": pl.UInt64, "f": pl.UInt32, "r": pl.Int64}
#: Seen parts are merged into one frame once there are this many (one scan per batch).
_MERGE_PARTS = 8


@dataclass(frozen=True, slots=True)
class Conflict:
    """A later row whose ``_event_id`` was already sent with different content."""

    index: int  # position among the batch's items
    row: int
    event_id: str
    earlier_file: str
    earlier_row: int


@dataclass(frozen=True, slots=True)
class Verdict:
    keep: Sequence[bool] | None  # None: keep every item (the common case)
    identical: Sequence[int]  # rows repeating an earlier row exactly: not sent
    conflicts: Sequence[Conflict]


NOTHING = Verdict(None, (), ())


class EventIds:
    """The run's event ids and payload digests; :meth:`check` one batch at a time, in order."""

    def __init__(self) -> None:
        self._files: dict[str, int] = {}
        self._names: list[str] = []
        self._parts: list[pl.DataFrame] = []
        self.seen = 0

    def check(
        self, source_file: str, rows: Sequence[int], keys: Sequence[str], bodies: Sequence[bytes]
    ) -> Verdict:
        """What to do with each item of one batch; remembers the first occurrences."""
        if not keys:
            return NOTHING
        file_index = self._files.setdefault(source_file, len(self._files))
        if file_index == len(self._names):
            self._names.append(source_file)
        ids = pl.Series(keys, dtype=pl.String)
        batch = pl.DataFrame({
            "a": ids.hash(_SEED_A),
            "b": ids.hash(_SEED_B),
            "p": pl.Series(bodies, dtype=pl.Binary).hash(_SEED_A),
            "f": pl.Series([file_index], dtype=pl.UInt32).new_from_index(0, len(keys)),
            "r": pl.Series(rows, dtype=pl.Int64),
        })
        ident = ["a", "b"]
        batch = batch.with_columns(
            first=pl.struct(ident).is_first_distinct(),
            ep=pl.col("p").first().over(ident),
            ef=pl.col("f").first().over(ident),
            er=pl.col("r").first().over(ident),
        )
        seen = self._seen()
        if seen is not None:
            # One pass over the seen ids' first halves (a u64 membership test: ~3x faster
            # than a join on both halves), then the few candidates matched on both.
            wanted = batch.filter("first")["a"].implode()
            earlier = seen.filter(pl.col("a").is_in(wanted))
            if earlier.height:
                batch = batch.join(
                    earlier.rename({"p": "sp", "f": "sf", "r": "sr"}),
                    on=ident, how="left", maintain_order="left",
                ).with_columns(
                    first=pl.col("first") & pl.col("sp").is_null(),
                    ep=pl.coalesce("sp", "ep"),
                    ef=pl.coalesce("sf", "ef"),
                    er=pl.coalesce("sr", "er"),
                )
        fresh = batch.filter("first")
        self._remember(fresh.select(list(_SCHEMA)))
        if fresh.height == batch.height:
            return NOTHING
        later = batch.with_row_index("i").filter(~pl.col("first"))
        same = later.filter(pl.col("p") == pl.col("ep"))
        other = later.filter(pl.col("p") != pl.col("ep"))
        conflicts = [
            Conflict(i, r, keys[i], self._names[f], er)
            for i, r, f, er in other.select("i", "r", "ef", "er").iter_rows()
        ]
        return Verdict(batch["first"].to_list(), same["r"].to_list(), conflicts)

    def _seen(self) -> pl.DataFrame | None:
        if not self._parts:
            return None
        if len(self._parts) > 1 and len(self._parts) >= _MERGE_PARTS:
            self._parts = [pl.concat(self._parts, rechunk=True)]
        return self._parts[0] if len(self._parts) == 1 else pl.concat(self._parts, rechunk=False)

    def _remember(self, fresh: pl.DataFrame) -> None:
        if fresh.height:
            self._parts.append(fresh)
            self.seen += fresh.height


def conflict_message(conflict: Conflict) -> str:
    return (
        f"_event_id {conflict.event_id!r} was already used by row {conflict.earlier_row} of "
        f"{conflict.earlier_file} with different content; that first occurrence is the one "
        "sent. Give each event its own id (e.g. hash: [order_id, line_no]) or remove this row"
    )


@dataclass(frozen=True, slots=True)
class Deduped:
    """One batch's event items without the later occurrences of an id."""

    rows: Sequence[int]
    keys: Sequence[str]
    bodies: Sequence[bytes]
    identical: int = 0  # rows repeating an earlier event exactly: not sent
    rejects: tuple[Reject, ...] = ()  # rows reusing an earlier event's id with other content


def dedupe(
    ids: EventIds,
    batch: SourceBatch,
    rows: Sequence[int],
    keys: Sequence[str],
    bodies: Sequence[bytes],
) -> Deduped:
    """``batch``'s event items, first occurrences only; the others counted or rejected."""
    verdict = ids.check(batch.source_file, rows, keys, bodies)
    if verdict.keep is None:
        return Deduped(rows, keys, bodies)
    keep = verdict.keep
    wanted = [c.row for c in verdict.conflicts]
    values: dict[int, dict[str, object]] = {}
    if wanted:
        hits = batch.frame.filter(pl.col(SOURCE_ROW).is_in(wanted))
        for rec in hits.drop(SOURCE_FILE).iter_rows(named=True):
            values[rec.pop(SOURCE_ROW)] = rec
    rejects = tuple(
        Reject(
            source_file=batch.source_file,
            source_row=c.row,
            stage="map",
            code="duplicate_event_id",
            message=conflict_message(c),
            field="_event_id",
            values=values.get(c.row, {}),
        )
        for c in verdict.conflicts
    )
    return Deduped(
        list(itertools.compress(rows, keep)),
        list(itertools.compress(keys, keep)),
        list(itertools.compress(bodies, keep)),
        len(verdict.identical),
        rejects,
    )
