"""One run's moving parts between the sources and the uploader, touched from the event loop.

:class:`RunState` produces a target's chunks (read → map → first ``_event_id`` only →
``--changed-only`` filter → chunk, in the run's reading thread one source batch ahead:
:mod:`importer.readahead`), accounts for every row read on the way, and takes each answer to
the journal, the ``--changed-only`` state, the rejects file and the reconciler. A write that
fails stops the run resumably. :mod:`importer.pipeline` plans the run and drives it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
from collections.abc import (
    AsyncGenerator,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from importer import __version__
from importer.chunking import Chunk, Chunker, Target
from importer.dedupe import Deduped, EventIds, dedupe
from importer.exceptions import StorageError
from importer.journal import Journal
from importer.mapping import (
    CompiledMapping,
    MappedBatch,
    MappedItems,
    MappingSpec,
)
from importer.ordering import user_ids_of
from importer.outage import OutageState
from importer.readahead import Reader
from importer.reconcile import Reconciler
from importer.records import SOURCE_FILE, SOURCE_ROW, Reject, RejectFrame, SourceBatch
from importer.rejects import (
    CsvLayout,
    RejectsWriter,
    csv_layout,
    default_rejects_path,
    open_rejects,
    render,
)
from importer.remote import is_url, join, public
from importer.resume import Earlier
from importer.sources import iter_batches
from importer.storage import (
    STORAGE_ERRORS,
    storage_error,
)
from importer.upload import ChunkResult, Uploader, UploadSettings

if TYPE_CHECKING:
    from importer.changed_run import ChangeTracker
    from importer.pipeline import Plan, RunOptions


@dataclass(frozen=True, slots=True)
class Progress:
    """Handed to the progress callback after every source batch and every answered chunk."""

    phase: str  # "contacts" or "events"
    unit: str  # "bytes" or "rows"
    done: int
    total: int
    rows_read: int
    accepted: int
    rejected: int
    # While the API is down: since when, how long so far, how long it is waited out.
    outage: OutageState | None = None


ProgressCallback = Callable[[Progress], None]


class RunState:
    """State of one run; all of it touched from the event loop's thread only."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        progress: ProgressCallback | None,
        earlier: Earlier = Earlier(),
        journal: Journal | None = None,
        changes: ChangeTracker | None = None,
        *,
        reader: Reader,
    ) -> None:
        self.plan = plan
        self.reader = reader  # the thread every batch is read and mapped in
        self.changes = changes
        self.options = options
        self.progress = progress
        self.earlier = earlier
        self.journal = journal
        # An explicit --rejects wins; a resumed run otherwise keeps appending to its own file.
        self.rejects_path = (
            options.rejects_path or earlier.rejects_path or run_rejects_path(plan, options)
        )
        self.rejects_file = self.rejects_path  # where it is written: a local copy of a URL
        self._writer: RejectsWriter | None = None
        self._schema: dict[str, Any] = {}
        # How the rejects file lays out the mapping's rejects, decided in the reading thread
        # from the first batch (as ``_schema`` is): they are rendered there (rejects.py).
        self._layout: CsvLayout | None = None
        self._layout_known = False
        self.reconciler = Reconciler(
            None, targets=plan.targets, max_rejects=options.max_rejects, on_limit=self._limit
        )
        self.uploader: Uploader | None = None
        self.aborted: str | None = None
        self.failure: StorageError | None = None  # a write failed: the run stops, resumable
        self._carried = [r for r in options.carried_rejects if not _done(earlier, r)]
        self._carried_done = len(options.carried_rejects) - len(self._carried)
        self._done_bytes = 0
        self._phase = ""
        self.event_ids = EventIds()  # the first occurrence of an _event_id is the one sent

    # -- rejects file: created on the first reject, so a clean run leaves none behind ---------
    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        first = self.plan.sources[0]
        self._writer = open_rejects(
            self.rejects_file,
            source_columns=self._source_columns(),
            fmt=first.format,
            delimiter=first.delimiter or ",",
            source_schema=self._schema,
            append=bool(self.earlier),
            meta={
                "run_id": self.plan.run_id,
                "mapping": str(Path(self.plan.spec.path).resolve()),
                "mapping_sha256": self.plan.spec.sha256,
                "inputs": [s.path for s in self.plan.sources],
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "tool": f"instasent-import {__version__}",
            },
        )
        self.reconciler.writer = self._writer

    def _source_columns(self) -> list[str]:
        columns: list[str] = []
        for s in self.plan.sources:
            columns += [c for c in s.columns if c not in columns]
        return columns

    def _rendered(self, batch: SourceBatch, rejects: RejectFrame) -> RejectFrame:
        """The mapping's rejects of ``batch``, rendered for the rejects file here in the reading
        thread where the file is CSV (the event loop then only appends them)."""
        if not self._layout_known:
            first = self.plan.sources[0]
            if first.format == "csv":
                self._layout = csv_layout(self._source_columns(), first.delimiter or ",",
                                          batch.frame.schema)
            self._layout_known = True
        return render(rejects, self._layout)

    def _limit(self) -> None:
        self.aborted = f"--max-rejects {self.options.max_rejects} reached"
        if self.uploader is not None:
            self.uploader.stop()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    # -- producing chunks --------------------------------------------------------------------
    def _produce(self, chunker: Chunker, first_pass: bool) -> Generator[_Produced, None, None]:
        """Runs in the reading thread: read, map and chunk one source batch at a time."""
        target = chunker.target
        two_targets = len(self.plan.targets) > 1
        upserts = target == "events" and _upserts_contacts(self.plan.spec)
        first = True
        for source, compiled in zip(self.plan.sources, self.plan.compiled, strict=True):
            batches = self.reader.first_input(source) if first_pass else None
            for read in batches or iter_batches(source, self.options.read):
                pieces = _ramp(read) if first else (read,)
                first = False
                for batch in (b for piece in pieces for b in _by_origin(piece)):
                    done = self.earlier.done.get(batch.source_file)
                    if target == "events" and done is not None and len(done):
                        self._seen_before(compiled, batch, done)
                    held = self._held_before(compiled, batch, target, upserts)
                    batch, skipped = _without(batch, done)
                    mapped = compiled.map_batch(batch)
                    if first_pass:
                        rendered = self._rendered(batch, mapped.rejects)
                        mapped = dataclasses.replace(mapped, rejects=rendered)
                    items = mapped.items[target]
                    rows, keys, bodies = items.source_rows, items.keys, items.bodies
                    if first_pass and two_targets:
                        acked = self.earlier.first_target_acked.get(batch.source_file)
                    else:
                        dropped = self.reconciler.dropped.get(batch.source_file)
                        acked = pl.Series(list(dropped), dtype=pl.Int64) if dropped else None
                    before = len(rows)
                    if acked is not None and len(acked) and rows:
                        keep = (~pl.Series(rows, dtype=pl.Int64).is_in(acked)).to_list()
                        rows = list(itertools.compress(rows, keep))
                        keys = list(itertools.compress(keys, keep))
                        bodies = list(itertools.compress(bodies, keep))
                    earlier_first = before - len(rows) if first_pass else 0
                    deduped = None
                    if target == "events":  # the first occurrence of an _event_id is sent
                        deduped = dedupe(self.event_ids, batch, rows, keys, bodies)
                        rows, keys, bodies = deduped.rows, deduped.keys, deduped.bodies
                    unchanged: Sequence[int] = ()
                    if self.changes is not None:  # before chunking: batches stay full
                        rows, keys, bodies, unchanged = self.changes.keep(target, rows, keys,
                                                                          bodies)
                    users = user_ids_of(bodies) if upserts else None
                    chunks = list(
                        chunker.add(batch.source_file, rows, keys, bodies, batch.frame, users)
                    )
                    yield _Produced(batch, mapped, chunks, skipped, earlier_first,
                                    deduped=deduped, unchanged=unchanged, held=held)
        yield _Produced(None, None, list(chunker.flush()))

    def _seen_before(
        self, compiled: CompiledMapping, batch: SourceBatch, done: pl.Series
    ) -> None:
        """A resumed run: the events an earlier invocation finished count as seen."""
        items = _items_of(compiled, batch, done, "events")
        if items is not None:
            self.event_ids.check(batch.source_file, items.source_rows, items.keys, items.bodies)

    def _held_before(
        self, compiled: CompiledMapping, batch: SourceBatch, target: str, upserts: bool
    ) -> dict[str, str]:
        """A resumed run: the ordering keys of this batch's rows that an earlier invocation
        left as retryable rejects (`retry` sends them later), each with where it failed."""
        again = self.earlier.retryable_rows.get(batch.source_file)
        if again is None or not len(again) or (target == "events" and not upserts):
            return {}
        items = _items_of(compiled, batch, again, target)
        if items is None:
            return {}
        keys = items.keys if target == "contacts" else user_ids_of(items.bodies)
        held: dict[str, str] = {}
        for row, key in zip(items.source_rows, keys, strict=True):
            if key:
                held.setdefault(key, f"{batch.source_file} row {row}")
        return held

    def _account(self, produced: _Produced, first_pass: bool) -> None:
        batch, mapped = produced.batch, produced.mapped
        if batch is None or mapped is None:
            return
        if produced.held and self.uploader is not None:  # before this batch's chunks go
            for key, where in produced.held.items():
                self.uploader.gate.blocked.setdefault(key, where)
        deduped = produced.deduped
        if first_pass and not self._schema:
            self._schema = dict(batch.frame.schema)
        try:
            if deduped is not None and deduped.rejects:
                self._ensure_writer()
            if first_pass:
                self._carry()
                if batch.rejects or mapped.rejects:
                    self._ensure_writer()
                self.reconciler.on_read(batch)
                self.reconciler.on_skipped(produced.skipped, produced.earlier_first)
                self.reconciler.on_mapped(mapped.rejects, len(mapped.filtered_rows))
            # (a dry run's second pass sends nothing and counted its rows in the first)
            if deduped is not None and (first_pass or not self.options.dry_run):
                self.reconciler.on_deduped(deduped.identical, deduped.rejects)
            if produced.unchanged:
                self._on_unchanged(batch.source_file, produced.unchanged)
        except StorageError as exc:
            self.storage_failed(exc)  # _stopping now: nothing more is read or sent
        self._done_bytes = max(self._done_bytes, batch.progress)
        self._report_progress()

    def _carry(self) -> None:
        """Account for the carried rejects once, after the first batch set the schema
        (or at the end of an input without batches)."""
        if not (self._carried or self._carried_done) or self.failure is not None:
            return
        carried, self._carried = self._carried, []
        done, self._carried_done = self._carried_done, 0
        try:
            if carried:
                self._ensure_writer()
            self.reconciler.on_read(SourceBatch(carried[0].source_file if carried else "",
                                                pl.DataFrame(), tuple(carried)))
            self.reconciler.on_skipped(done, 0)
        except StorageError as exc:
            self.storage_failed(exc)

    def _on_unchanged(self, source_file: str, rows: Sequence[int]) -> None:
        assert self.changes is not None
        first_also = 0
        if len(self.plan.targets) > 1:
            if self._phase == self.plan.targets[0]:
                self.changes.note_first_skipped(source_file, rows)
            else:
                first_also = self.changes.skipped_first(source_file, rows)
        self.reconciler.on_unchanged(self._phase, len(rows), first_also,
                                     dry_run=self.options.dry_run)

    def _unsent(self, chunks: Iterable[Chunk]) -> None:
        for chunk in chunks:
            self.reconciler.on_unsent(chunk)

    async def chunks(self, target: Target, first_pass: bool) -> AsyncGenerator[Chunk, None]:
        """Chunks of one target, with read/map outcomes reconciled on the way.

        On a stop, everything already read is still accounted for (its chunks as unsent) and
        nothing more is read.
        """
        self._phase = target
        self._done_bytes = 0
        chunker = Chunker(
            target,
            max_items=self.options.batch_size,
            max_bytes=self.options.max_batch_bytes,
            spread=_spread(self.options.upload),
        )
        produced = self._produce(chunker, first_pass)

        def ahead() -> asyncio.Future[Any]:
            return self.reader.run(next, produced, _END)

        pending = ahead()
        stopped = False
        try:
            while True:
                item = await pending
                if item is _END:
                    if first_pass:
                        self._carry()
                    break
                self._account(item, first_pass)
                chunks = item.chunks
                if self._stopping:
                    stopped = True
                    self._unsent(chunks)
                    break
                pending = ahead()
                for i, chunk in enumerate(chunks):
                    if self._stopping:
                        stopped = True
                        self._unsent(chunks[i:])
                        break
                    yield chunk
                if stopped:
                    item = await pending  # the batch read ahead was read: account for it
                    if item is not _END:
                        self._account(item, first_pass)
                        self._unsent(item.chunks)
                    break
            if stopped:
                self._unsent(chunker.flush())
        finally:
            if not pending.done():
                await asyncio.wait([pending])
            produced.close()

    @property
    def _stopping(self) -> bool:
        return self.aborted is not None or (
            self.uploader is not None and self.uploader.stopping
        )

    def on_result(self, result: ChunkResult) -> None:
        chunk = result.chunk
        if result.all_accepted:
            files, rows = chunk.files, chunk.rows
        else:
            ok = [o.ok for o in result.outcomes]
            files = tuple(itertools.compress(chunk.files, ok))
            rows = tuple(itertools.compress(chunk.rows, ok))
        if self.changes is not None and rows:  # recorded before the journal: see changes.py
            try:
                if result.all_accepted:
                    self.changes.record(chunk.target, chunk.keys, chunk.bodies)
                else:
                    self.changes.record(chunk.target, list(itertools.compress(chunk.keys, ok)),
                                        list(itertools.compress(chunk.bodies, ok)))
            except STORAGE_ERRORS as exc:
                self.storage_failed(storage_error(
                    getattr(exc, "filename", None) or "the --changed-only state", exc))
        # The journal first: what the API acknowledged stays acknowledged for --resume even
        # when the rejects file cannot be written any more.
        if self.journal is not None and rows:
            try:
                self.journal.record(self.plan.run_id, chunk.target, files, rows)
            except STORAGE_ERRORS as exc:
                self.storage_failed(storage_error(self.journal.path, exc))
        if self.failure is not None:
            return  # stopping: this answer's rejected rows are redone on --resume
        try:
            if not result.all_accepted:
                self._ensure_writer()
            self.reconciler.on_result(result)
        except StorageError as exc:
            self.storage_failed(exc)
            return
        self._report_progress()

    def storage_failed(self, exc: StorageError) -> None:
        """A file of the run cannot be written (disk full, permission): stop sending, as on
        --max-rejects, and let ``arun_import`` raise it once the requests in flight are in."""
        if self.failure is None:
            self.failure = exc
            self.aborted = str(exc)
        if self.uploader is not None:
            self.uploader.stop()

    def _report_progress(self) -> None:
        if self.progress is None:
            return
        t = self.reconciler.tally
        total = sum(s.total for s in self.plan.sources)
        unit = self.plan.sources[0].total_unit
        outage = self.uploader.outage.state() if self.uploader is not None else None
        self.progress(
            Progress(self._phase, unit, self._done_bytes, total, t.rows_read, t.accepted,
                     t.rejected, outage)
        )

    def on_outage(self, _state: OutageState | None) -> None:
        """The API went down or came back: the progress line says so at once."""
        self._report_progress()


_END = object()


@dataclass(frozen=True, slots=True)
class _Produced:
    """One source batch, read, mapped and chunked (or the last chunk of a pass)."""

    batch: SourceBatch | None
    mapped: MappedBatch | None
    chunks: list[Chunk]
    skipped: int = 0  # rows finished by an earlier invocation (resume)
    earlier_first: int = 0  # rows whose contact an earlier invocation had acknowledged
    deduped: Deduped | None = None  # events: later occurrences of an _event_id, not sent
    unchanged: Sequence[int] = ()  # rows whose item --changed-only did not send
    # resume: keys an earlier invocation left as retryable rejects -> where ("file row N")
    held: Mapping[str, str] = field(default_factory=dict)


def _spread(upload: UploadSettings) -> int:
    """How many chunks apart rows of one key are placed (importer.chunking): more than the
    uploader holds at once (twice its concurrency queued, its concurrency in flight), so the
    earlier chunk is usually answered when the later one is taken."""
    return 3 * max(upload.concurrency or upload.max_concurrency, 1)


def _upserts_contacts(spec: MappingSpec) -> bool:
    """Events that carry ``_user_data`` upsert a contact: they are ordered by ``_user_id``."""
    return any(
        f.name == "_user_data" for t in spec.targets if t.target == "events" for f in t.fields
    )


def _items_of(
    compiled: CompiledMapping, batch: SourceBatch, rows: pl.Series, target: str
) -> MappedItems | None:
    """``target``'s items of the batch's rows numbered ``rows`` (None: no such row here)."""
    frame = batch.frame.filter(pl.col(SOURCE_ROW).is_in(rows.implode()))
    if not frame.height:
        return None
    return compiled.map_batch(SourceBatch(batch.source_file, frame)).items.get(target)


def _done(earlier: Earlier, reject: Reject) -> bool:
    """Finished by an earlier invocation (a resumed retry: already in its rejects file)."""
    done = earlier.done.get(reject.source_file)
    return done is not None and bool(done.is_in([reject.source_row]).any())


#: The first batch read in a pass is mapped in growing pieces — this many rows, then twice as
#: many, and so on — so the first requests leave while the rest of it is mapped: a whole first
#: batch (2 MiB of CSV, ~18,000 rows) took ~0.15 s to map before anything was sent, 1.5% of
#: an unthrottled 1M-row run (bench/results/transport.md).
RAMP_ROWS = 500


def _ramp(batch: SourceBatch) -> Iterator[SourceBatch]:
    """``batch`` as consecutive slices of RAMP_ROWS, 2 × RAMP_ROWS, ... rows (the read's
    rejects with the first; ``progress`` in proportion), the last slice ending the batch."""
    frame, start, size = batch.frame, 0, RAMP_ROWS
    while frame.height - start > size:
        yield SourceBatch(batch.source_file, frame.slice(start, size),
                          batch.rejects if start == 0 else (),
                          batch.progress * (start + size) // frame.height)
        start += size
        size *= 2
    yield SourceBatch(batch.source_file, frame.slice(start), () if start else batch.rejects,
                      batch.progress)


def _by_origin(batch: SourceBatch) -> list[SourceBatch]:
    """Split a batch whose rows come from several original files (a re-imported rejects
    file): row numbers are unique only within one original file."""
    origins = batch.frame[SOURCE_FILE]
    if origins.n_unique() <= 1 and (batch.frame.height == 0 or origins[0] == batch.source_file):
        return [batch]
    parts = batch.frame.partition_by(SOURCE_FILE, maintain_order=True)
    out = []
    for i, part in enumerate(parts):
        rejects = batch.rejects if i == 0 else ()
        out.append(SourceBatch(str(part[SOURCE_FILE][0]), part, rejects, batch.progress))
    return out or [batch]


def _without(batch: SourceBatch, done: pl.Series | None) -> tuple[SourceBatch, int]:
    """Drop the rows an earlier invocation finished; returns the batch and how many."""
    if done is None or not len(done):
        return batch, 0
    frame = batch.frame.filter(~pl.col(SOURCE_ROW).is_in(done.implode()))
    finished = set(done.filter(done.is_in([r.source_row for r in batch.rejects])).to_list())
    rejects = tuple(r for r in batch.rejects if r.source_row not in finished)
    skipped = batch.rows_read - frame.height - len(rejects)
    return SourceBatch(batch.source_file, frame, rejects, batch.progress), skipped


def run_rejects_path(plan: Plan, options: RunOptions) -> str:
    """``--rejects``, else the caller's choice for a fresh run, else beside the first input
    (in its bucket, for an input read from one)."""
    first = plan.sources[0]
    if options.rejects_path or options.fresh_rejects_path:
        return options.rejects_path or options.fresh_rejects_path or ""
    if is_url(first.path):
        folder, name = public(first.path).rsplit("/", 1)
        return join(folder, default_rejects_path(name, first.format).name)
    return str(default_rejects_path(first.path, first.format))
