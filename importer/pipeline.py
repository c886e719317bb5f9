"""The main job: files → mapping → chunks → upload → reconcile → report.

Everything that can make a run unusable (paths, headers, the mapping, credentials) is checked
before the first request; the credential check (``GET /stream``) comes before the first POST.
When one mapping feeds contacts *and* events, the files are read twice: every contact batch is
acknowledged before the first event is sent (API.md §7), and memory stays flat.

Reading and mapping run in a worker thread, one source batch ahead of the uploader, so the
event loop keeps posting while the next rows are prepared.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import polars as pl

from importer import __version__
from importer.check import fetch_stream
from importer.chunking import Chunk, Chunker, Target
from importer.client import ApiClient, auth_message
from importer.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Credentials
from importer.crash import stopped
from importer.dedupe import Deduped, EventIds, dedupe
from importer.exceptions import ImporterError, MappingProblem, OutputPathError, StorageError
from importer.journal import DEFAULT_STATE_DIR, Journal
from importer.mapping import (
    CompiledMapping,
    MappedBatch,
    MappingSpec,
    load_and_compile,
)
from importer.ordering import user_ids_of
from importer.outage import OutageState
from importer.reconcile import Reconciler
from importer.records import SOURCE_FILE, SOURCE_ROW, Reject, SourceBatch
from importer.redaction import hidden, redact
from importer.rejects import RejectsWriter, default_rejects_path, open_rejects
from importer.report import ImportReport
from importer.resume import Earlier, ResumeMode, prepare, refuse_if_unfinished
from importer.sources import ReadOptions, SourceFile, iter_batches, resolve_inputs
from importer.speccheck import apply_specs, fetch_specs
from importer.statelock import StateLock
from importer.storage import (
    STORAGE_ERRORS,
    check_dir,
    check_file,
    open_private,
    reason,
    storage_error,
)
from importer.upload import ChunkResult, Uploader, UploadSettings, UploadStats

if TYPE_CHECKING:  # --changed-only's modules load numpy: only runs that use it import them
    from importer.changed_run import ChangeOptions, ChangeTracker, ConfirmDelete, Removal


@dataclass(frozen=True, slots=True)
class RunOptions:
    # 25k-row source batches: a batch, the one read ahead and their serialised items are what
    # a run holds in memory; 100k-row batches cost ~250 MB more for ~5% less CPU.
    read: ReadOptions = ReadOptions(batch_rows=25_000)
    upload: UploadSettings = UploadSettings()
    batch_size: int = MAX_BATCH_ITEMS
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    timeout: float = 30.0
    max_rejects: int | None = None
    rejects_path: str | None = None
    # Where a fresh run's rejects go when ``rejects_path`` is not given (``retry``: the next
    # ``.retryN`` name); an unfinished run keeps the file it began either way.
    fresh_rejects_path: str | None = None
    dry_run: bool = False
    dry_run_output: str | None = None  # NDJSON of what would be sent
    # The journal's directory; None: $INSTASENT_STATE_DIR, else .instasent-import/
    state_dir: str | None = None
    # Check the mapping against the datasource's spec endpoints before sending anything, and
    # enforce their per-row limits (maxLength → too_long rejects).
    specs: bool = False
    resume: ResumeMode | None = None  # what to do with an unfinished run of the same inputs
    # Rows met before the run that could not be read (``retry`` of a damaged rejects file):
    # they are part of the run's input, written to its rejects file as ``read`` rejects.
    carried_rejects: tuple[Reject, ...] = ()
    # --changed-only (importer/changed_run.py); None: send everything, read and write no state
    changes: ChangeOptions | None = None


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


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run will do, fully validated, before any network call."""

    sources: tuple[SourceFile, ...]
    spec: MappingSpec
    compiled: tuple[CompiledMapping, ...]  # one per source (headers may differ)
    run_id: str = ""  # fingerprint of the inputs (path, size, mtime) and the mapping's hash

    @property
    def targets(self) -> tuple[Target, ...]:
        return self.compiled[0].targets if self.compiled else ()


def plan_import(
    inputs: Sequence[str], mapping: str | Path, read: ReadOptions = ReadOptions()
) -> Plan:
    """Resolve files, load and compile the mapping; raises UsageError subclasses (exit 2)."""
    sources = tuple(resolve_inputs(inputs, read))
    # Every problem at once: the mapping's own and each file header's, in one report.
    spec, compiled = load_and_compile(mapping, [(s.path, s.columns) for s in sources])
    return Plan(sources, spec, tuple(compiled), _fingerprint(sources, spec))


def _fingerprint(sources: Sequence[SourceFile], spec: MappingSpec) -> str:
    """The run's identity: its inputs (canonical paths: ``./x.csv``, ``x.csv`` and the
    absolute path are one file), their sizes and times, and the mapping's hash."""
    h = hashlib.sha256(spec.sha256.encode())
    for s in sources:
        st = Path(s.path).stat()
        h.update(f"\0{os.path.realpath(s.path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _canonical_inputs(plan: Plan) -> tuple[str, ...]:
    return tuple(os.path.realpath(s.path) for s in plan.sources)


def _reuse_rejects(journal: Journal, run_id: str, options: RunOptions) -> RunOptions:
    """An unfinished run keeps its rejects file, resumed (appended to) or restarted
    (started over) — unless ``--rejects`` says otherwise. A ``retry`` killed and resumed must
    go on writing the ``.retryN`` file it began, not start ``.retryN+1`` and strand it."""
    if options.rejects_path is not None:
        return options
    record = journal.get(run_id)
    if record is None or record.status == "finished":
        return options
    earlier = record.meta.get("rejects_path")
    if not earlier:
        return options
    return dataclasses.replace(options, rejects_path=str(earlier))


class _Run:
    """State of one run; all of it touched from the event loop's thread only."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        progress: ProgressCallback | None,
        earlier: Earlier = Earlier(),
        journal: Journal | None = None,
        changes: ChangeTracker | None = None,
    ) -> None:
        self.plan = plan
        self.changes = changes
        self.options = options
        self.progress = progress
        self.earlier = earlier
        self.journal = journal
        # An explicit --rejects wins; a resumed run otherwise keeps appending to its own file.
        self.rejects_path = (
            options.rejects_path or earlier.rejects_path or _rejects_path(plan, options)
        )
        self._writer: RejectsWriter | None = None
        self._schema: dict[str, Any] = {}
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
        columns: list[str] = []
        for s in self.plan.sources:
            columns += [c for c in s.columns if c not in columns]
        self._writer = open_rejects(
            self.rejects_path,
            source_columns=columns,
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

    def _limit(self) -> None:
        self.aborted = f"--max-rejects {self.options.max_rejects} reached"
        if self.uploader is not None:
            self.uploader.stop()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    # -- producing chunks --------------------------------------------------------------------
    def _produce(self, chunker: Chunker, first_pass: bool) -> Generator[_Produced, None, None]:
        """Runs in a worker thread: read, map and chunk one source batch at a time."""
        target = chunker.target
        two_targets = len(self.plan.targets) > 1
        upserts = target == "events" and _upserts_contacts(self.plan.spec)
        for source, compiled in zip(self.plan.sources, self.plan.compiled, strict=True):
            for whole in iter_batches(source, self.options.read):
                for batch in _by_origin(whole):
                    done = self.earlier.done.get(batch.source_file)
                    if target == "events" and done is not None and len(done):
                        self._seen_before(compiled, batch, done)
                    batch, skipped = _without(batch, done)
                    mapped = compiled.map_batch(batch)
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
                                    deduped=deduped, unchanged=unchanged)
        yield _Produced(None, None, list(chunker.flush()))

    def _seen_before(
        self, compiled: CompiledMapping, batch: SourceBatch, done: pl.Series
    ) -> None:
        """A resumed run: the events an earlier invocation finished count as seen."""
        frame = batch.frame.filter(pl.col(SOURCE_ROW).is_in(done.implode()))
        if not frame.height:
            return
        items = compiled.map_batch(SourceBatch(batch.source_file, frame)).items.get("events")
        if items is not None:
            self.event_ids.check(batch.source_file, items.source_rows, items.keys, items.bodies)

    def _account(self, produced: _Produced, first_pass: bool) -> None:
        batch, mapped = produced.batch, produced.mapped
        if batch is None or mapped is None:
            return
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
            self._storage_failed(exc)  # _stopping now: nothing more is read or sent
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
            self._storage_failed(exc)

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
            return asyncio.ensure_future(asyncio.to_thread(next, produced, _END))

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
                self._storage_failed(storage_error(
                    getattr(exc, "filename", None) or "the --changed-only state", exc))
        # The journal first: what the API acknowledged stays acknowledged for --resume even
        # when the rejects file cannot be written any more.
        if self.journal is not None and rows:
            try:
                self.journal.record(self.plan.run_id, chunk.target, files, rows)
            except STORAGE_ERRORS as exc:
                self._storage_failed(storage_error(self.journal.path, exc))
        if self.failure is not None:
            return  # stopping: this answer's rejected rows are redone on --resume
        try:
            if not result.all_accepted:
                self._ensure_writer()
            self.reconciler.on_result(result)
        except StorageError as exc:
            self._storage_failed(exc)
            return
        self._report_progress()

    def _storage_failed(self, exc: StorageError) -> None:
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


def _done(earlier: Earlier, reject: Reject) -> bool:
    """Finished by an earlier invocation (a resumed retry: already in its rejects file)."""
    done = earlier.done.get(reject.source_file)
    return done is not None and bool(done.is_in([reject.source_row]).any())


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


async def arun_import(
    inputs: Sequence[str],
    mapping: str | Path,
    credentials: Credentials,
    options: RunOptions = RunOptions(),
    *,
    progress: ProgressCallback | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    notice: Callable[[str], None] | None = None,
    confirm_delete: ConfirmDelete | None = None,
) -> ImportReport:
    """Import ``inputs`` with ``mapping``; returns the report (see ``ImportReport.exit_code``).

    Raises UsageError (nothing sent) for unusable inputs, mapping or output paths,
    FatalApiError when the credential check fails (nothing sent), and StorageError when a
    file of the run cannot be written mid-run (resumable). A 401/404 *during* the run does
    not raise: the report says ``aborted`` and counts the rows never sent as
    ``not_attempted``.

    ``--changed-only`` (``options.changes``): ``notice`` hears the one line said at the start
    (mapping changed, first run, ``--full``); ``confirm_delete(info, count)`` is asked before
    anything is sent when ``--delete-missing`` found contacts to delete (raises NotConfirmed
    when it says no). Another run holding the state raises StateLocked (nothing sent).
    """
    # The token is masked from every message, report field and rejects cell of the run.
    with hidden(credentials.token):
        report = await _arun_import(inputs, mapping, credentials, options, progress=progress,
                                    transport=transport, notice=notice,
                                    confirm_delete=confirm_delete)
        if report.aborted:
            report = dataclasses.replace(report, aborted=redact(report.aborted))
        return report


async def _arun_import(
    inputs: Sequence[str],
    mapping: str | Path,
    credentials: Credentials,
    options: RunOptions,
    *,
    progress: ProgressCallback | None,
    transport: httpx.AsyncBaseTransport | None,
    notice: Callable[[str], None] | None,
    confirm_delete: ConfirmDelete | None,
) -> ImportReport:
    """The run with its ``--changed-only`` state around it (read before, saved after)."""
    plan = plan_import(inputs, mapping, options.read)
    started = time.monotonic()
    state_dir = options.state_dir or os.environ.get("INSTASENT_STATE_DIR") or DEFAULT_STATE_DIR
    tracker: ChangeTracker | None = None
    removal: Removal | None = None
    complete = False
    if options.changes is not None:
        from importer.changed_run import ChangeTracker

        tracker = ChangeTracker(state_dir, credentials, plan.spec, plan.targets, options.changes,
                                write=not options.dry_run, run_id=plan.run_id)
    try:
        if tracker is not None and options.changes is not None:
            for line in tracker.notices():
                if notice is not None:
                    notice(line)
            if options.changes.delete_missing:
                removal = tracker.find_removals(plan.spec, plan.sources, options.read)
                if removal.note and notice is not None:
                    notice(removal.note)
        report = await _import(plan, credentials, options, progress, transport, state_dir,
                               tracker, removal, confirm_delete, started)
        complete = report.aborted is None
        return report
    finally:
        if tracker is not None:
            tracker.close(complete=complete)


async def _import(
    plan: Plan,
    credentials: Credentials,
    options: RunOptions,
    progress: ProgressCallback | None,
    transport: httpx.AsyncBaseTransport | None,
    state_dir: str,
    tracker: ChangeTracker | None,
    removal: Removal | None,
    confirm_delete: ConfirmDelete | None,
    started: float,
) -> ImportReport:
    journal = None
    earlier = Earlier()
    deleting: asyncio.Future[Any] | None = None
    spec_warnings: tuple[MappingProblem, ...] = ()
    lock = None

    def unexpected(exc: Exception) -> ImporterError:
        """Anything but the importer's own errors: one line, the traceback in a log."""
        return stopped(exc, state_dir=state_dir, secrets=(credentials.token,),
                       run_id=plan.run_id)

    _check_outputs(plan, options)
    if not options.dry_run:
        check_dir(state_dir, "state directory")  # exit 2, before the lock file is made there
        # One run at a time over a journal, checked before anything is read from it.
        lock = StateLock(state_dir)
        try:
            lock.acquire()
            journal = _open_journal(state_dir)
            options = _reuse_rejects(journal, plan.run_id, options)
        except Exception as exc:
            lock.release()
            raise unexpected(exc) from None
    client = ApiClient(
        credentials,
        timeout=options.timeout,
        max_connections=max(options.upload.concurrency or options.upload.max_concurrency, 1),
        transport=transport,
    )
    ended = False  # the body below ran to its end (else an error is on its way out)
    try:
        if journal is not None:
            refuse_if_unfinished(journal, plan.run_id, plan.targets, options.resume,
                                 inputs=_canonical_inputs(plan), mapping_sha=plan.spec.sha256)
        if not options.dry_run:
            # GET /stream: 401/404 stop here, nothing sent; connection failures say which.
            info = await fetch_stream(client, timeout=options.timeout, settings=options.upload)
            if removal is not None and removal.ids and confirm_delete is not None and (
                not confirm_delete(info, len(removal.ids))
            ):
                from importer.changed_run import NotConfirmed

                raise NotConfirmed("not confirmed: nothing was sent or deleted")
        if options.specs:
            found = await fetch_specs(client, settings=options.upload, timeout=options.timeout)
            compiled, spec_warnings = apply_specs(plan.spec, plan.compiled, found)
            plan = dataclasses.replace(plan, compiled=compiled)
        if journal is not None:
            earlier = prepare(journal, plan.run_id, _journal_meta(plan, options), plan.targets,
                              options.resume, inputs=tuple(s.path for s in plan.sources))
        run = _Run(plan, options, progress, earlier, journal, tracker)
        if tracker is not None and removal is not None and removal.ids and not options.dry_run:
            from importer.changed_run import delete_rejects_path

            deleting = asyncio.ensure_future(tracker.delete(
                removal, credentials, upload=options.upload, timeout=options.timeout,
                rejects_path=delete_rejects_path(plan.sources[0].path), transport=transport))
        try:
            if run.rejects_path != _rejects_path(plan, options):  # a resumed run's own file
                _check_rejects(run.rejects_path, journal, plan.run_id)
            stats = await _send_all(run, client, options)
            if deleting is not None:
                await deleting
            run.close()
        except STORAGE_ERRORS as exc:
            with contextlib.suppress(Exception):  # already failing: keep the first error
                run.close()
            raise _storage_failure(exc, journal) from None
        except Exception:
            # The first unexpected error ends the run (exit 1, one line, the traceback in a
            # log); what was acknowledged is journaled, so --resume continues from there.
            with contextlib.suppress(Exception):
                run.close()
            if journal is not None:
                with contextlib.suppress(Exception):
                    journal.finish(plan.run_id, "aborted")
            raise
        finally:
            if deleting is not None and not deleting.done():
                deleting.cancel()
        if run.failure is not None:
            raise run.failure
        tally = run.reconciler.finish()
        if journal is not None:
            journal.finish(plan.run_id, "aborted" if run.aborted else "finished")
        ended = True
    except StorageError:
        _abort_journal(journal, plan.run_id)
        raise
    except STORAGE_ERRORS as exc:
        _abort_journal(journal, plan.run_id)
        raise _storage_failure(exc, journal) from None
    except Exception as exc:
        raise unexpected(exc) from None
    finally:
        await client.aclose()
        try:
            if journal is not None:
                journal.close()
        except Exception as exc:
            if ended:  # (else the error on its way out says more)
                if isinstance(exc, STORAGE_ERRORS):
                    raise _storage_failure(exc, journal) from None
                raise unexpected(exc) from None
        finally:
            if lock is not None:
                lock.release()
    return ImportReport(
        rows_read=tally.rows_read,
        accepted=tally.accepted,
        rejected=tally.rejected,
        filtered=tally.filtered,
        not_attempted=tally.not_attempted,
        retryable_rejects=tally.retryable,
        duplicates=tally.duplicates,
        duplicates_in_input=tally.duplicates_in_input,
        rejected_by_stage=dict(tally.by_stage),
        rejected_by_code=dict(tally.by_code),
        requests=stats.requests,
        retries=stats.retries,
        rate_limited=stats.rate_limited,
        splits=stats.splits,
        http_statuses=dict(stats.statuses),
        items_sent=stats.items_sent,
        duration_s=time.monotonic() - started,
        rejects_path=(
            run.rejects_path if run.reconciler.writer is not None or earlier.rejected else None
        ),
        aborted=run.aborted,
        dry_run=options.dry_run,
        skipped_done=tally.skipped_done,
        rejected_before=earlier.rejected,
        retryable_before=earlier.retryable,
        resumed=bool(earlier),
        run_id=plan.run_id,
        inputs=tuple(s.path for s in plan.sources),
        read_as=tuple(s.describe() for s in plan.sources),
        targets=plan.targets,
        warnings=tuple(
            w.render(str(plan.spec.path))
            for w in (*(plan.compiled[0].warnings if plan.compiled else ()), *spec_warnings)
        ) + tuple(stats.warnings),
        unchanged=tally.unchanged,
        changed_only=tracker.summary() if tracker is not None else None,
        deletion=_deletion(tracker, removal, options.dry_run),
    )


def _check_outputs(plan: Plan, options: RunOptions) -> None:
    """Every file the run will write can be written: exit 2 before anything is sent."""
    check_file(_rejects_path(plan, options), "rejects file")
    if options.dry_run_output:
        check_file(options.dry_run_output, "--dry-run-output file")


def _check_rejects(path: str, journal: Journal | None, run_id: str) -> None:
    try:
        check_file(path, "rejects file")
    except OutputPathError:
        if journal is not None:  # started by prepare(): still resumable once the path is fixed
            journal.finish(run_id, "aborted")
        raise


def _open_journal(state_dir: str) -> Journal:
    check_dir(state_dir, "state directory")
    try:
        return Journal(state_dir)
    except STORAGE_ERRORS as exc:
        raise OutputPathError(
            str(Path(state_dir) / "journal.sqlite"), "journal", reason(exc)
        ) from None


def _abort_journal(journal: Journal | None, run_id: str) -> None:
    """Best effort (the disk may be full): a record left "running" resumes as well."""
    if journal is not None:
        with contextlib.suppress(*STORAGE_ERRORS):
            journal.finish(run_id, "aborted")


def _storage_failure(exc: BaseException, journal: Journal | None) -> StorageError:
    """An OSError or SQLite error that escaped a writer: name the file it was about."""
    if isinstance(exc, OSError) and exc.filename:
        return storage_error(exc.filename, exc)
    if isinstance(exc, sqlite3.Error) and journal is not None:
        return storage_error(journal.path, exc)
    return storage_error("a file of the run", exc)


def _deletion(
    tracker: ChangeTracker | None, removal: Removal | None, dry_run: bool
) -> dict[str, Any] | None:
    if removal is None:
        return None
    if dry_run:
        return {"ids": list(removal.ids), "recorded": removal.recorded}
    if tracker is not None and tracker.deletion is not None:
        return tracker.deletion.to_dict()
    return {"deleted": 0, "already_absent": 0, "failed": 0, "exit_code": 0}


def _rejects_path(plan: Plan, options: RunOptions) -> str:
    """``--rejects``, else the caller's choice for a fresh run, else beside the first input."""
    first = plan.sources[0]
    return (options.rejects_path or options.fresh_rejects_path
            or str(default_rejects_path(first.path, first.format)))


def _journal_meta(plan: Plan, options: RunOptions) -> dict[str, Any]:
    return {
        "inputs": list(_canonical_inputs(plan)),
        "cwd": os.getcwd(),  # where the row keys' relative file names are rooted
        "mapping": str(Path(plan.spec.path).resolve()),
        "mapping_sha256": plan.spec.sha256,
        # absolute: a --resume from another directory must find the same file
        "rejects_path": os.path.abspath(_rejects_path(plan, options)),
        "targets": list(plan.targets),
    }


async def _send_all(run: _Run, client: ApiClient, options: RunOptions) -> UploadStats:
    if options.dry_run:
        return await _dry_run(run, options)
    uploader = Uploader(
        client, options.upload, on_result=run.on_result, on_unsent=run.reconciler.on_unsent,
        on_outage=run.on_outage,
    )
    run.uploader = uploader
    for i, target in enumerate(run.plan.targets):
        if run._stopping:
            break
        # (closed here, not by the garbage collector: an error in a worker must still wait
        # for the batch being read and close the reader before the run ends)
        async with contextlib.aclosing(run.chunks(target, first_pass=i == 0)) as chunks:
            await uploader.run(chunks)
    if uploader.fatal is not None and run.aborted is None:
        status = uploader.fatal.status or 0
        run.aborted = auth_message(status, client.credentials)
    if uploader.outage_abort is not None and run.aborted is None:
        run.aborted = (f"{uploader.outage_abort}; the rows not sent are counted as not "
                       "attempted — re-run the same command with --resume once the API is "
                       "back")
    return uploader.stats


async def _dry_run(run: _Run, options: RunOptions) -> UploadStats:
    path = options.dry_run_output
    # The payloads hold personal data: created 0600 like the rejects file.
    out = os.fdopen(_private(path), "wb") if path else None
    try:
        for i, target in enumerate(run.plan.targets):
            async for chunk in run.chunks(target, first_pass=i == 0):
                if out is not None:
                    try:
                        out.writelines(
                            b'{"target":"%s","item":%s}\n' % (target.encode(), body)
                            for body in chunk.bodies
                        )
                    except OSError as exc:  # a dry run has nothing to resume
                        raise storage_error(str(path), exc, resumable=False) from None
                # Nothing is sent, so nothing is accepted: the rows are "not attempted"
                # (counted once, in the first target's pass).
                if i == 0:
                    run.reconciler.on_unsent(chunk)
    finally:
        if out is not None:
            with contextlib.suppress(OSError):
                out.close()
    return UploadStats()


def _private(path: str) -> int:
    try:
        return open_private(path)
    except OSError as exc:
        raise storage_error(path, exc, resumable=False) from None


def run_import(
    inputs: Sequence[str],
    mapping: str | Path,
    credentials: Credentials,
    options: RunOptions = RunOptions(),
    *,
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
    confirm_delete: ConfirmDelete | None = None,
) -> ImportReport:
    """Synchronous :func:`arun_import`. The public entry point is :func:`importer.run_import`
    (importer/run.py: credentials from the environment, the report file)."""
    return asyncio.run(arun_import(inputs, mapping, credentials, options, progress=progress,
                                   notice=notice, confirm_delete=confirm_delete))
