"""The single writer: outcomes back to source rows, rejects to disk, the report's tallies.

Every row read ends in exactly one bucket, each tallied where it happens:

    rows_read == accepted + rejected + filtered + unchanged + not_attempted + skipped_done
                 + duplicates_in_input

(``duplicates_in_input``: event rows repeating an earlier row's event exactly; not sent.)

(``skipped_done``: rows a resumed run found already acknowledged or already rejected;
``unchanged``: rows ``--changed-only`` did not send because the datasource has them.)

``finish`` checks that equation; a mismatch is a bug and fails the run loudly
(:class:`InternalError`), because the promise of the tool is that no row goes missing.

With contacts *and* events from one file, a row is accepted once both of its items are; a row
whose contact failed is rejected once and its event is never sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from importer.chunking import Chunk
from importer.exceptions import InternalError
from importer.ordering import HELD_BACK
from importer.records import (
    SOURCE_FILE,
    SOURCE_ROW,
    Reject,
    RejectFrame,
    RejectStage,
    SourceBatch,
)
from importer.rejects import RejectsWriter
from importer.upload import ChunkResult

# held_back: a row not sent because an earlier row of its key failed one of these
_TRANSPORT_CODES = frozenset({"transport", "rate_limited", HELD_BACK})
RowKey = tuple[str, int]


@dataclass
class Tally:
    rows_read: int = 0
    accepted: int = 0
    rejected: int = 0
    filtered: int = 0
    not_attempted: int = 0
    skipped_done: int = 0
    unchanged: int = 0
    retryable: int = 0
    duplicates: int = 0  # accepted, and the API said it already had the event
    duplicates_in_input: int = 0  # repeated an earlier event of the input exactly: not sent
    by_stage: Counter[str] = field(default_factory=Counter)
    by_code: Counter[str] = field(default_factory=Counter)

    def balanced(self) -> bool:
        return self.rows_read == self.accounted

    @property
    def accounted(self) -> int:
        return (
            self.accepted + self.rejected + self.filtered + self.not_attempted + self.skipped_done
            + self.duplicates_in_input + self.unchanged
        )


def _values_of(
    frames: Iterable[pl.DataFrame], wanted: list[RowKey]
) -> dict[RowKey, dict[str, Any]]:
    """Original source columns of a few rows, looked up in the frames they came from."""
    found: dict[RowKey, dict[str, Any]] = {}
    files = {f for f, _ in wanted}
    rows = [r for _, r in wanted]
    for frame in frames:
        hits = frame.filter(
            pl.col(SOURCE_FILE).is_in(list(files)) & pl.col(SOURCE_ROW).is_in(rows)
        )
        for rec in hits.iter_rows(named=True):
            key = (rec.pop(SOURCE_FILE), rec.pop(SOURCE_ROW))
            found.setdefault(key, rec)
    return found


class Reconciler:
    """Receives every event of a run, in the event loop's thread only."""

    def __init__(
        self,
        writer: RejectsWriter | None,
        *,
        targets: tuple[str, ...],
        max_rejects: int | None = None,
        on_limit: Callable[[], None] | None = None,
    ) -> None:
        self.writer = writer
        self.tally = Tally()
        self.final_target = targets[-1]
        self.two_targets = len(targets) > 1
        self.max_rejects = max_rejects
        self._on_limit = on_limit
        self.limit_reached = False
        # Rows whose contact was accepted and whose event is still to come (two-target runs).
        self.pending = 0
        # Rows rejected in the contacts phase, per file: their events must not be sent.
        self.dropped: dict[str, set[int]] = {}

    # -- reading and mapping ------------------------------------------------------------
    def on_read(self, batch: SourceBatch) -> None:
        self.tally.rows_read += batch.rows_read
        self._reject(batch.rejects)

    def on_mapped(self, rejects: Iterable[Reject] | RejectFrame, filtered: int) -> None:
        self.tally.filtered += filtered
        self._reject(rejects)

    def on_skipped(self, done: int, first_target_done: int) -> None:
        """A resumed run met rows finished before (``done``), and rows whose first target
        was acknowledged before (``first_target_done``: they await their event)."""
        self.tally.rows_read += done  # read again, and skipped: they are still input rows
        self.tally.skipped_done += done
        self.pending += first_target_done

    def on_deduped(self, identical: int, rejects: Iterable[Reject]) -> None:
        """Later occurrences of an ``_event_id``: exact repeats are counted, the others are
        rejected; neither is sent. In a two-target run their contact was acknowledged (they
        were pending) and the event is what is left."""
        rejects = list(rejects)
        self.tally.duplicates_in_input += identical
        if self.two_targets:
            self.pending -= identical + len(rejects)
        self._reject(rejects)

    def on_unchanged(
        self, target: str, n: int, first_skipped: int = 0, *, dry_run: bool = False
    ) -> None:
        """``n`` items of ``target`` not sent by ``--changed-only`` (the datasource has them).

        With two targets, a row is ``unchanged`` only when neither of its items is sent: a
        skipped contact leaves the row waiting for its event; a skipped event ends the row as
        unchanged when its contact was skipped too (``first_skipped`` of the ``n``), else as
        accepted (its contact went out and was acknowledged; a dry run counted it already).
        """
        if not n:
            return
        if target != self.final_target:
            self.pending += n
            return
        if not self.two_targets:
            self.tally.unchanged += n
            return
        self.tally.unchanged += first_skipped
        self.pending -= first_skipped
        if not dry_run:
            self.tally.accepted += n - first_skipped
            self.pending -= n - first_skipped

    # -- the API's answers ----------------------------------------------------------------
    def on_result(self, result: ChunkResult) -> None:
        chunk = result.chunk
        final = chunk.target == self.final_target
        if result.all_accepted:
            n = len(result.outcomes)
            if final:
                self.tally.accepted += n
                if self.two_targets:
                    self.pending -= n
            else:
                self.pending += n
            return
        failed: list[tuple[int, Any]] = []
        for i, outcome in enumerate(result.outcomes):
            if outcome.ok:
                if outcome.duplicate:
                    self.tally.duplicates += 1
                if final:
                    self.tally.accepted += 1
                else:
                    self.pending += 1
            else:
                failed.append((i, outcome))
        if final and self.two_targets:
            self.pending -= len(result.outcomes)
        if failed:
            self._reject(self._api_rejects(chunk, result, failed))

    def on_unsent(self, chunk: Chunk) -> None:
        self.tally.not_attempted += len(chunk)
        if chunk.target == self.final_target and self.two_targets:
            self.pending -= len(chunk)

    def _api_rejects(
        self, chunk: Chunk, result: ChunkResult, failed: list[tuple[int, Any]]
    ) -> list[Reject]:
        keys = [(chunk.files[i], chunk.rows[i]) for i, _ in failed]
        values = _values_of(chunk.frames, keys)
        rejects = []
        for (i, outcome), key in zip(failed, keys, strict=True):
            if chunk.target != self.final_target:
                self.dropped.setdefault(key[0], set()).add(key[1])
            stage: RejectStage = "transport" if outcome.code in _TRANSPORT_CODES else "api"
            rejects.append(
                Reject(
                    source_file=key[0],
                    source_row=key[1],
                    stage=stage,
                    code=outcome.code,
                    message=f"{chunk.target[:-1]} {chunk.keys[i]!r}: {outcome.message}",
                    field=outcome.field,
                    http_status=result.status,
                    attempts=result.attempts,
                    retryable=outcome.retryable,
                    values=values.get(key, {}),
                )
            )
        return rejects

    def _within_limit(
        self, rejects: list[Reject] | RejectFrame
    ) -> list[Reject] | RejectFrame:
        """At most ``max_rejects`` rows reach the rejects file: past it the run stops, and
        rows that would have been rejected count as not attempted (a resumed run
        processes them again; they are not in the rejects file, nor acknowledged)."""
        if self.max_rejects is None:
            return rejects
        room = max(self.max_rejects - self.tally.rejected, 0)
        over = len(rejects) - room
        if over <= 0:
            return rejects
        self.tally.not_attempted += over
        self._stop()
        if isinstance(rejects, RejectFrame):
            return RejectFrame(rejects.frame.head(room))
        return rejects[:room]

    def _reject(self, rejects: Iterable[Reject] | RejectFrame) -> None:
        if not isinstance(rejects, RejectFrame):
            rejects = list(rejects)
        rejects = self._within_limit(rejects)
        if isinstance(rejects, RejectFrame):
            if not rejects:
                return
            self.tally.by_stage.update(rejects.counts("_reject_stage"))
            self.tally.by_code.update(rejects.counts("_reject_code"))
            self.tally.retryable += int(rejects.frame["_reject_retryable"].sum())
            self._rejected(len(rejects), rejects)
            return
        batch = rejects
        if not batch:
            return
        for r in batch:
            self.tally.by_stage[r.stage] += 1
            self.tally.by_code[r.code] += 1
            if r.retryable:
                self.tally.retryable += 1
        self._rejected(len(batch), batch)

    def _rejected(self, n: int, rejects: list[Reject] | RejectFrame) -> None:
        self.tally.rejected += n
        if self.writer is not None:
            self.writer.write(rejects)
        self._check_limit()

    def _check_limit(self) -> None:
        if self.max_rejects is not None and self.tally.rejected >= self.max_rejects:
            self._stop()

    def _stop(self) -> None:
        if not self.limit_reached:
            self.limit_reached = True
            if self._on_limit is not None:
                self._on_limit()

    # -- the end ---------------------------------------------------------------------------
    def finish(self) -> Tally:
        """Count rows stuck between phases, then check the accounting invariant."""
        if self.pending:
            self.tally.not_attempted += self.pending
            self.pending = 0
        if not self.tally.balanced():
            t = self.tally
            raise InternalError(
                "accounting invariant broken (a bug — please report it): "
                f"rows_read={t.rows_read} but accepted={t.accepted} + rejected={t.rejected} "
                f"+ filtered={t.filtered} + not_attempted={t.not_attempted} "
                f"+ skipped_done={t.skipped_done} + unchanged={t.unchanged} "
                f"+ duplicates_in_input={t.duplicates_in_input} = {t.accounted}"
            )
        return self.tally
