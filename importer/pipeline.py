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
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from importer import mirror
from importer.check import fetch_stream
from importer.chunking import Target
from importer.client import ApiClient, auth_message
from importer.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Credentials
from importer.crash import stopped
from importer.exceptions import ImporterError, MappingProblem, OutputPathError, StorageError
from importer.journal import DEFAULT_STATE_DIR, Journal
from importer.mapping import (
    CompiledMapping,
    MappingSpec,
    load_and_compile,
)
from importer.mirror import Outputs
from importer.readahead import Reader
from importer.records import Reject
from importer.redaction import hidden, redact
from importer.remote import is_url, public
from importer.report import ImportReport
from importer.resume import Earlier, ResumeMode, prepare, refuse_if_unfinished
from importer.runstate import Progress as Progress
from importer.runstate import ProgressCallback as ProgressCallback
from importer.runstate import RunState, run_rejects_path
from importer.sources import ReadOptions, SourceFile, resolve_inputs
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
from importer.upload import Uploader, UploadSettings, UploadStats

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
    absolute path are one file), their sizes and times, and the mapping's hash. An object in
    storage: its URL (no query), size and version (ETag, generation) as inspected."""
    h = hashlib.sha256(spec.sha256.encode())
    for s in sources:
        if s.origin is not None:
            h.update(f"\0{s.origin.identity}".encode())
            continue
        st = Path(s.path).stat()
        h.update(f"\0{os.path.realpath(s.path)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _canonical_inputs(plan: Plan) -> tuple[str, ...]:
    return tuple(s.path if s.origin else os.path.realpath(s.path) for s in plan.sources)


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
    # State and rejects in a bucket: worked on in a local copy, uploaded as the run goes and
    # once more when it ends (importer/mirror.py).
    with mirror.outputs() as outputs:
        if is_url(state_dir):
            state_dir = outputs.state_dir(state_dir, write=not options.dry_run)
            outputs.start()  # the lock's heartbeat from now on
        return await _changes_and_import(plan, credentials, options, progress, transport,
                                         notice, confirm_delete, state_dir, outputs, started)


async def _changes_and_import(
    plan: Plan,
    credentials: Credentials,
    options: RunOptions,
    progress: ProgressCallback | None,
    transport: httpx.AsyncBaseTransport | None,
    notice: Callable[[str], None] | None,
    confirm_delete: ConfirmDelete | None,
    state_dir: str,
    outputs: Outputs,
    started: float,
) -> ImportReport:
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
                               tracker, removal, confirm_delete, started, outputs)
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
    outputs: Outputs,
) -> ImportReport:
    journal = None
    earlier = Earlier()
    deleting: asyncio.Future[Any] | None = None
    spec_warnings: tuple[MappingProblem, ...] = ()
    lock = None

    def unexpected(exc: Exception) -> ImporterError:
        """Anything but the importer's own errors: one line, the traceback in a log."""
        return stopped(exc, state_dir=state_dir, secrets=(credentials.token,),
                       run_id=plan.run_id, shown=outputs.shown)

    _check_outputs(plan, options)
    if not options.dry_run:
        check_dir(state_dir, "state directory")  # exit 2, before the lock file is made there
        # One run at a time over a journal, checked before anything is read from it.
        lock = StateLock(state_dir)
        try:
            lock.acquire()
            journal = _open_journal(state_dir, outputs.shown(state_dir))
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
    reader: Reader | None = None
    try:
        if journal is not None:
            refuse_if_unfinished(journal, plan.run_id, plan.targets, options.resume,
                                 inputs=_canonical_inputs(plan), mapping_sha=plan.spec.sha256)
        # The first batch is read while GET /stream is in flight (importer/readahead.py).
        reader = Reader(plan.sources[0], options.read, plan.compiled[0])
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
                              options.resume, inputs=tuple(s.path for s in plan.sources),
                              local=lambda path: outputs.local(path, fetch=True))
        run = RunState(plan, options, progress, earlier, journal, tracker, reader=reader)
        run.rejects_file = outputs.local(run.rejects_path)
        loop = asyncio.get_running_loop()

        def storage_failed(exc: StorageError) -> None:  # from the checkpoints' thread
            loop.call_soon_threadsafe(run.storage_failed, exc)

        outputs.on_failure = storage_failed
        outputs.start()
        if tracker is not None and removal is not None and removal.ids and not options.dry_run:
            from importer.changed_run import delete_rejects_path

            target = delete_rejects_path(plan.sources[0].path)
            deleting = asyncio.ensure_future(tracker.delete(
                removal, credentials, upload=options.upload, timeout=options.timeout,
                rejects_path=outputs.local(target), shown_as=target, transport=transport))
        try:
            if run.rejects_path != run_rejects_path(plan, options):  # a resumed run's own file
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
            outputs.stop()  # a finished journal goes to a bucket after the rejects (mirror.py)
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
        if reader is not None:
            with contextlib.suppress(Exception):  # an input's close: nothing to report
                await reader.aclose()
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
    check_file(run_rejects_path(plan, options), "rejects file")
    if options.dry_run_output:
        check_file(options.dry_run_output, "--dry-run-output file")


def _check_rejects(path: str, journal: Journal | None, run_id: str) -> None:
    try:
        check_file(path, "rejects file")
    except OutputPathError:
        if journal is not None:  # started by prepare(): still resumable once the path is fixed
            journal.finish(run_id, "aborted")
        raise


def _open_journal(state_dir: str, shown: str) -> Journal:
    check_dir(state_dir, "state directory")
    try:
        return Journal(state_dir, shown=shown)
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


def _journal_meta(plan: Plan, options: RunOptions) -> dict[str, Any]:
    return {
        "inputs": list(_canonical_inputs(plan)),
        "cwd": os.getcwd(),  # where the row keys' relative file names are rooted
        "mapping": str(Path(plan.spec.path).resolve()),
        "mapping_sha256": plan.spec.sha256,
        # absolute: a --resume from another directory must find the same file
        "rejects_path": _absolute(run_rejects_path(plan, options)),
        "targets": list(plan.targets),
    }


def _absolute(path: str) -> str:
    return public(path) if is_url(path) else os.path.abspath(path)


async def _send_all(run: RunState, client: ApiClient, options: RunOptions) -> UploadStats:
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


async def _dry_run(run: RunState, options: RunOptions) -> UploadStats:
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
