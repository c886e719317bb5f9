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
import dataclasses
import datetime as dt
import hashlib
import itertools
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from importer import __version__
from importer.chunking import Chunk, Chunker, Target
from importer.client import ApiClient, auth_message
from importer.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Credentials
from importer.datasource import fetch_stream
from importer.exceptions import MappingProblem
from importer.journal import DEFAULT_STATE_DIR, Journal
from importer.mapping import (
    CompiledMapping,
    MappedBatch,
    MappingSpec,
    compile_mapping,
    load_mapping,
)
from importer.reconcile import Reconciler
from importer.records import SOURCE_FILE, SOURCE_ROW, SourceBatch
from importer.rejects import RejectsWriter, default_rejects_path, open_rejects
from importer.report import ImportReport
from importer.resume import Earlier, ResumeMode, prepare, refuse_if_unfinished
from importer.sources import ReadOptions, SourceFile, iter_batches, resolve_inputs
from importer.speccheck import apply_specs, fetch_specs
from importer.upload import ChunkResult, Uploader, UploadSettings, UploadStats


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
    dry_run: bool = False
    dry_run_output: str | None = None  # NDJSON of what would be sent
    # The journal's directory; None: $INSTASENT_STATE_DIR, else .instasent-import/
    state_dir: str | None = None
    # Check the mapping against the datasource's spec endpoints before sending anything, and
    # enforce their per-row limits (maxLength → too_long rejects).
    specs: bool = False
    resume: ResumeMode | None = None  # what to do with an unfinished run of the same inputs


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
    spec = load_mapping(mapping)
    compiled = tuple(compile_mapping(spec, s.columns) for s in sources)
    return Plan(sources, spec, compiled, _fingerprint(sources, spec))


def _fingerprint(sources: Sequence[SourceFile], spec: MappingSpec) -> str:
    h = hashlib.sha256(spec.sha256.encode())
    for s in sources:
        st = Path(s.path).stat()
        h.update(f"\0{s.path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


class _Run:
    """State of one run; all of it touched from the event loop's thread only."""

    def __init__(
        self,
        plan: Plan,
        options: RunOptions,
        progress: ProgressCallback | None,
        earlier: Earlier = Earlier(),
        journal: Journal | None = None,
    ) -> None:
        self.plan = plan
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
        self._done_bytes = 0
        self._phase = ""

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
        for source, compiled in zip(self.plan.sources, self.plan.compiled, strict=True):
            for whole in iter_batches(source, self.options.read):
                for batch in _by_origin(whole):
                    batch, skipped = _without(batch, self.earlier.done.get(batch.source_file))
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
                    chunks = list(chunker.add(batch.source_file, rows, keys, bodies, batch.frame))
                    yield _Produced(batch, mapped, chunks, skipped, earlier_first)
        yield _Produced(None, None, list(chunker.flush()))

    def _account(self, produced: _Produced, first_pass: bool) -> None:
        batch, mapped = produced.batch, produced.mapped
        if batch is None or mapped is None:
            return
        if first_pass:
            if not self._schema:
                self._schema = dict(batch.frame.schema)
            if batch.rejects or mapped.rejects:
                self._ensure_writer()
            self.reconciler.on_read(batch)
            self.reconciler.on_skipped(produced.skipped, produced.earlier_first)
            self.reconciler.on_mapped(mapped.rejects, len(mapped.filtered_rows))
        self._done_bytes = max(self._done_bytes, batch.progress)
        self._report_progress()

    def _unsent(self, chunks: Iterable[Chunk]) -> None:
        for chunk in chunks:
            self.reconciler.on_unsent(chunk)

    async def chunks(self, target: Target, first_pass: bool) -> AsyncIterator[Chunk]:
        """Chunks of one target, with read/map outcomes reconciled on the way.

        On a stop, everything already read is still accounted for (its chunks as unsent) and
        nothing more is read.
        """
        self._phase = target
        self._done_bytes = 0
        chunker = Chunker(
            target, max_items=self.options.batch_size, max_bytes=self.options.max_batch_bytes
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
            self._ensure_writer()
            ok = [o.ok for o in result.outcomes]
            files = tuple(itertools.compress(chunk.files, ok))
            rows = tuple(itertools.compress(chunk.rows, ok))
        if self.journal is not None and rows:
            self.journal.record(self.plan.run_id, chunk.target, files, rows)
        self.reconciler.on_result(result)
        self._report_progress()

    def _report_progress(self) -> None:
        if self.progress is None:
            return
        t = self.reconciler.tally
        total = sum(s.total for s in self.plan.sources)
        unit = self.plan.sources[0].total_unit
        self.progress(
            Progress(self._phase, unit, self._done_bytes, total, t.rows_read, t.accepted,
                     t.rejected)
        )


_END = object()


@dataclass(frozen=True, slots=True)
class _Produced:
    """One source batch, read, mapped and chunked (or the last chunk of a pass)."""

    batch: SourceBatch | None
    mapped: MappedBatch | None
    chunks: list[Chunk]
    skipped: int = 0  # rows finished by an earlier invocation (resume)
    earlier_first: int = 0  # rows whose contact an earlier invocation had acknowledged


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
) -> ImportReport:
    """Import ``inputs`` with ``mapping``; returns the report (see ``ImportReport.exit_code``).

    Raises UsageError (nothing sent) for unusable inputs or mapping, and FatalApiError when
    the credential check fails (nothing sent). A 401/404 *during* the run does not raise: the
    report says ``aborted`` and counts the rows never sent as ``not_attempted``.
    """
    plan = plan_import(inputs, mapping, options.read)
    started = time.monotonic()
    journal = None
    earlier = Earlier()
    spec_warnings: tuple[MappingProblem, ...] = ()
    if not options.dry_run:
        journal = Journal(
            options.state_dir or os.environ.get("INSTASENT_STATE_DIR") or DEFAULT_STATE_DIR
        )
    client = ApiClient(
        credentials,
        timeout=options.timeout,
        max_connections=max(options.upload.concurrency or options.upload.max_concurrency, 1),
        transport=transport,
    )
    try:
        if journal is not None:
            refuse_if_unfinished(journal, plan.run_id, plan.targets, options.resume)
        if not options.dry_run:
            # GET /stream: 401/404 stop here, nothing sent; connection failures say which.
            await fetch_stream(client, timeout=options.timeout, settings=options.upload)
        if options.specs:
            found = await fetch_specs(client, settings=options.upload, timeout=options.timeout)
            compiled, spec_warnings = apply_specs(plan.spec, plan.compiled, found)
            plan = dataclasses.replace(plan, compiled=compiled)
        if journal is not None:
            earlier = prepare(journal, plan.run_id, _journal_meta(plan, options), plan.targets,
                              options.resume)
        run = _Run(plan, options, progress, earlier, journal)
        try:
            stats = await _send_all(run, client, options)
        finally:
            run.close()
        tally = run.reconciler.finish()
        if journal is not None:
            journal.finish(plan.run_id, "aborted" if run.aborted else "finished")
    finally:
        await client.aclose()
        if journal is not None:
            journal.close()
    return ImportReport(
        rows_read=tally.rows_read,
        accepted=tally.accepted,
        rejected=tally.rejected,
        filtered=tally.filtered,
        not_attempted=tally.not_attempted,
        retryable_rejects=tally.retryable,
        duplicates=tally.duplicates,
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
    )


def _rejects_path(plan: Plan, options: RunOptions) -> str:
    """``--rejects``, else beside the first input."""
    first = plan.sources[0]
    return options.rejects_path or str(default_rejects_path(first.path, first.format))


def _journal_meta(plan: Plan, options: RunOptions) -> dict[str, Any]:
    return {
        "inputs": [s.path for s in plan.sources],
        "mapping": str(Path(plan.spec.path).resolve()),
        "mapping_sha256": plan.spec.sha256,
        "rejects_path": _rejects_path(plan, options),
        "targets": list(plan.targets),
    }


async def _send_all(run: _Run, client: ApiClient, options: RunOptions) -> UploadStats:
    if options.dry_run:
        return await _dry_run(run, options)
    uploader = Uploader(
        client, options.upload, on_result=run.on_result, on_unsent=run.reconciler.on_unsent
    )
    run.uploader = uploader
    for i, target in enumerate(run.plan.targets):
        if run._stopping:
            break
        await uploader.run(run.chunks(target, first_pass=i == 0))
    if uploader.fatal is not None and run.aborted is None:
        status = uploader.fatal.status or 0
        run.aborted = auth_message(status, client.credentials)
    return uploader.stats


async def _dry_run(run: _Run, options: RunOptions) -> UploadStats:
    out = open(options.dry_run_output, "wb") if options.dry_run_output else None  # noqa: SIM115
    try:
        for i, target in enumerate(run.plan.targets):
            async for chunk in run.chunks(target, first_pass=i == 0):
                if out is not None:
                    out.writelines(
                        b'{"target":"%s","item":%s}\n' % (target.encode(), body)
                        for body in chunk.bodies
                    )
                # Nothing is sent, so nothing is accepted: the rows are "not attempted"
                # (counted once, in the first target's pass).
                if i == 0:
                    run.reconciler.on_unsent(chunk)
    finally:
        if out is not None:
            out.close()
    return UploadStats()


def run_import(
    inputs: Sequence[str],
    mapping: str | Path,
    credentials: Credentials,
    options: RunOptions = RunOptions(),
    *,
    progress: ProgressCallback | None = None,
) -> ImportReport:
    """Synchronous :func:`arun_import`."""
    return asyncio.run(arun_import(inputs, mapping, credentials, options, progress=progress))
