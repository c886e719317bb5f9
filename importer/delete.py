"""``delete``: permanently remove contacts by ``_user_id``.

Public entry point: :func:`delete_contacts` (``importer.delete_contacts``), with
:func:`delete_plan` to name the ids (a column of files, or a list).

``delete`` sends one ``DELETE /stream/contacts/{id}`` per distinct id (:mod:`importer.deleter`:
the sending, kept apart from the planning, report and rejects here), concurrently and paced
with the run's machinery (:class:`~importer.upload.RatePacer`,
:class:`~importer.upload.AdaptiveLimit`, :func:`~importer.upload.backoff_delay`); HTTP
meaning comes from :func:`~importer.client.interpret`. The 404 rule: the datasource is
verified with ``GET /stream`` before the first DELETE, so a 404 on a DELETE whose message
names a contact means "no such contact" (``already_absent``, not a failure); one whose message
names the project or datasource stops the run; a 404 that names neither is settled by asking
``GET /stream`` once more.
"""


from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from importer import __version__
from importer.check import DatasourceInfo, fetch_stream
from importer.client import ApiClient
from importer.config import Credentials
from importer.datasource import Timing
from importer.deleter import Deleter, Outcome, ProgressCallback
from importer.exceptions import (
    InputError,
    InternalError,
    UsageError,
)
from importer.mapping.casts import as_text
from importer.mapping.options import did_you_mean
from importer.records import RESERVED_SOURCE_COLUMNS, SOURCE_FILE, SOURCE_ROW, Reject
from importer.redaction import hidden
from importer.rejects import RejectsFormat, default_rejects_path, open_rejects
from importer.report import EXIT_ABORTED, EXIT_OK, EXIT_REJECTS, EXIT_RETRYABLE
from importer.sources import ReadOptions, SourceFile, iter_batches, resolve_inputs
from importer.storage import check_file
from importer.upload import (
    UploadSettings,
    UploadStats,
)

#: The column name of ids given with ``--ids`` (in their rejects file).
IDS_COLUMN = "_user_id"
IDS_SOURCE = "--ids"
DEFAULT_IDS_REJECTS = "instasent-delete.rejects.csv"


# ───────────────────────────── delete: the ids ─────────────────────────────


@dataclass(frozen=True, slots=True)
class DeletePlan:
    """The ids to delete, distinct and in input order, with where each came from.

    ``requested`` counts every id row read (blank and repeated ones too); ``local_rejects``
    are rows that cannot be sent: unreadable lines and blank ids.
    """

    ids: tuple[str, ...]
    origins: tuple[tuple[str, int], ...]  # (source file, source row) of each id's first row
    column: str
    requested: int
    duplicates: int = 0
    local_rejects: tuple[Reject, ...] = ()
    sources: tuple[SourceFile, ...] = ()  # () for --ids
    read: ReadOptions = ReadOptions()

    @property
    def described(self) -> str:
        if not self.sources:
            return "given with --ids"
        files = ", ".join(s.path for s in self.sources)
        return f"from column {self.column!r} of {files}"


def plan_from_ids(ids: Sequence[str]) -> DeletePlan:
    """Ids given on the command line (``--ids A,B,C``); blanks are ignored, repeats counted."""
    given = [i for i in ids if i.strip()]
    if not given:
        raise UsageError("--ids lists no id — give at least one, e.g. --ids C001,C002")
    distinct = list(dict.fromkeys(given))
    first = {v: n for n, v in reversed(list(enumerate(given, start=1)))}
    return DeletePlan(
        ids=tuple(distinct),
        origins=tuple((IDS_SOURCE, first[v]) for v in distinct),
        column=IDS_COLUMN,
        requested=len(given),
        duplicates=len(given) - len(distinct),
    )


def plan_from_files(
    inputs: Sequence[str], column: str, read: ReadOptions = ReadOptions()
) -> DeletePlan:
    """Ids from ``column`` of the input files (any format the sources read).

    Ids are sent verbatim, as a run would send them as ``_user_id`` (a Parquet integer as its
    decimal text); a blank cell becomes a ``required_missing`` reject.
    """
    sources = tuple(resolve_inputs(inputs, read))
    for source in sources:
        if column not in source.columns:
            usable = [c for c in source.columns if c not in RESERVED_SOURCE_COLUMNS]
            raise InputError(
                source.path, f"has no column {column!r}{did_you_mean(column, usable)}",
                f"pass --column with one of: {', '.join(usable[:12])}")
    collector = _IdCollector(column)
    for source in sources:
        for batch in iter_batches(source, read):
            collector.add(batch.frame, batch.rejects)
    return DeletePlan(
        ids=tuple(collector.ids),
        origins=tuple(collector.origins),
        column=column,
        requested=collector.requested,
        duplicates=collector.duplicates,
        local_rejects=tuple(collector.rejects),
        sources=sources,
        read=read,
    )


class _IdCollector:
    def __init__(self, column: str) -> None:
        self.column = column
        self.ids: list[str] = []
        self.origins: list[tuple[str, int]] = []
        self.seen: set[str] = set()
        self.requested = 0
        self.duplicates = 0
        self.rejects: list[Reject] = []

    def add(self, frame: pl.DataFrame, unreadable: Sequence[Reject]) -> None:
        self.requested += frame.height + len(unreadable)
        self.rejects += unreadable
        text = as_text(pl.col(self.column), frame.schema[self.column])
        blank = text.is_null() | text.str.contains(r"^\s*$")
        picked = frame.select(SOURCE_FILE, SOURCE_ROW, text.alias("id"), blank.alias("blank"))
        blanks = picked["blank"]
        if blanks.any():
            self.rejects += _blank_rejects(frame.filter(blanks), self.column)
        for file, row, user_id in picked.filter(~blanks).select(
            SOURCE_FILE, SOURCE_ROW, "id"
        ).iter_rows():
            if user_id in self.seen:
                self.duplicates += 1
                continue
            self.seen.add(user_id)
            self.ids.append(user_id)
            self.origins.append((file, row))


def _blank_rejects(rows: pl.DataFrame, column: str) -> list[Reject]:
    keep = [c for c in rows.columns if c not in RESERVED_SOURCE_COLUMNS]
    return [
        Reject(
            source_file=rec[SOURCE_FILE],
            source_row=rec[SOURCE_ROW],
            stage="map",
            code="required_missing",
            field=column,
            message=f"column {column!r} is empty: there is no _user_id to delete — fill it "
                    "in, or drop the row",
            values={c: rec[c] for c in keep},
        )
        for rec in rows.iter_rows(named=True)
    ]


# ───────────────────────────── delete: report ─────────────────────────────


@dataclass(frozen=True, slots=True)
class DeleteReport:
    """``requested == deleted + already_absent + failed + duplicates + not_attempted``."""

    requested: int
    deleted: int
    already_absent: int
    failed: int
    retryable: int
    duplicates: int
    not_attempted: int
    requests: int
    retries: int
    rate_limited: int
    http_statuses: Mapping[str, int]
    failed_by_code: Mapping[str, int]
    duration_s: float
    datasource: str = ""
    rejects_path: str | None = None
    rerun: str | None = None  # the command that re-runs the failures
    aborted: str | None = None
    dry_run: bool = False

    @property
    def exit_code(self) -> int:
        """As for ``run``: 0 clean · 1 aborted · 3 permanent failures · 4 retryable left."""
        if self.aborted:
            return EXIT_ABORTED
        if self.retryable:
            return EXIT_RETRYABLE
        if self.failed:
            return EXIT_REJECTS
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["http_statuses"] = dict(self.http_statuses)
        data["failed_by_code"] = dict(self.failed_by_code)
        data.update(duration_s=round(self.duration_s, 3), exit_code=self.exit_code)
        return data


def render_delete(report: DeleteReport) -> str:
    """The table on stderr after ``delete``."""
    rows = [
        ("ids requested", report.requested),
        ("  deleted", report.deleted),
        ("  already absent", report.already_absent),
        ("  failed", report.failed),
        ("  duplicates (sent once)", report.duplicates),
        ("  not attempted", report.not_attempted),
    ]
    lines = [f"{name:<26}{n:>10,}" for name, n in rows]
    for code, n in sorted(report.failed_by_code.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"{'    ' + code:<26}{n:>10,}")
    lines += [
        f"{'requests':<26}{report.requests:>10,}",
        f"{'  retries':<26}{report.retries:>10,}",
        f"{'  429 (rate limited)':<26}{report.rate_limited:>10,}",
        f"{'http statuses':<26}"
        + (", ".join(f"{k}: {v}" for k, v in sorted(report.http_statuses.items())) or "none"),
        f"{'duration':<26}{report.duration_s:>9.2f}s",
    ]
    if report.dry_run:
        lines.append("dry run: nothing was deleted")
    if report.rejects_path:
        lines.append(f"rejects file: {report.rejects_path}")
    if report.rerun:
        lines.append(f"re-run the failures: {report.rerun}")
    if report.aborted:
        lines.append(f"ABORTED: {report.aborted}")
    return "\n".join(lines)


# ───────────────────────────── delete: the job ─────────────────────────────


Confirm = Callable[[DatasourceInfo, int], bool]


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    upload: UploadSettings = UploadSettings()
    timeout: float = 30.0
    rejects_path: str | None = None  # default: beside the first input (<name>.rejects.<ext>)
    dry_run: bool = False


async def adelete_contacts(
    plan: DeletePlan,
    credentials: Credentials,
    options: DeleteOptions = DeleteOptions(),
    *,
    confirm: Confirm | None = None,
    on_verified: Callable[[DatasourceInfo], None] | None = None,
    progress: ProgressCallback | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    timing: Timing | None = None,
    on_done: Callable[[Sequence[str]], None] | None = None,
) -> DeleteReport:
    """Verify the datasource (``GET /stream``; raises FatalApiError, nothing deleted), ask
    ``confirm(info, count)`` when given, then delete every id of ``plan``.

    A 401 or a datasource 404 *during* the deletes does not raise: the report says
    ``aborted`` and counts the ids never answered as ``not_attempted``. ``on_done`` hears
    each id the datasource no longer has (deleted or already absent) as its answer comes.
    """
    timing = timing or Timing()
    started = time.monotonic()
    settings = options.upload
    if not options.dry_run:  # failures are written at the end: check the path first
        check_file(_rejects_target(plan, options.rejects_path), "rejects file")
    client = ApiClient(
        credentials, timeout=options.timeout,
        max_connections=max(settings.concurrency or settings.max_concurrency, 1),
        transport=transport,
    )
    try:
        info = await fetch_stream(client, timeout=options.timeout, settings=settings,
                                  timing=timing)
        if on_verified is not None:
            on_verified(info)
        tally = _DeleteTally(plan)
        stats, fatal = UploadStats(), None
        if options.dry_run:
            tally.unsent(len(plan.ids))
        elif plan.ids and confirm is not None and not confirm(info, len(plan.ids)):
            tally.unsent(len(plan.ids))
            return tally.report(stats, started, info, None,
                                aborted="not confirmed: nothing was deleted")
        else:
            deleter = Deleter(client, settings, timing, options.timeout, progress)
            deleter.on_done = on_done
            tally.outcomes(await deleter.run(plan.ids))
            stats, fatal = deleter.stats, deleter.fatal or deleter.outage_abort
    finally:
        await client.aclose()
    with hidden(credentials.token):  # a server's message in a reject may quote the token
        rejects_path = _write_rejects(plan, tally.rejects, options.rejects_path, credentials)
    return tally.report(stats, started, info, rejects_path,
                        aborted=str(fatal) if fatal is not None else None,
                        dry_run=options.dry_run)


def delete_contacts(
    plan: DeletePlan,
    credentials: Credentials | None = None,
    options: DeleteOptions = DeleteOptions(),
    *,
    confirm: Confirm | None = None,
    on_verified: Callable[[DatasourceInfo], None] | None = None,
    progress: ProgressCallback | None = None,
    report_path: str | Path | None = None,
) -> DeleteReport:
    """Permanently delete the contacts of ``plan`` (see :func:`plan_delete`).

    ``credentials`` default to the ``INSTASENT_*`` environment. The datasource is verified
    first (``GET /stream``: raises :class:`~importer.exceptions.FatalApiError`, nothing
    deleted); ``confirm(info, count)`` is asked before the first DELETE when given (no:
    ``aborted``, exit 1, nothing deleted); ``progress(done, total)`` hears the answers.
    Returns the :class:`DeleteReport` (``exit_code`` 0 done, 1 aborted, 3 permanent
    failures, 4 retryable failures left; failures are in its ``rejects_path``), also written
    as JSON to ``report_path`` (with the ids, for a dry run).
    """
    if report_path:
        check_file(str(report_path), "report")
    report = asyncio.run(adelete_contacts(plan, credentials or Credentials.resolve(), options,
                                          confirm=confirm, on_verified=on_verified,
                                          progress=progress))
    if report_path:
        from importer.run import write_report

        write_report(report_path, delete_report_data(report, plan))
    return report


def delete_report_data(report: DeleteReport, plan: DeletePlan) -> dict[str, Any]:
    """The report as JSON data; a dry run lists the ids it would delete."""
    data = report.to_dict()
    if report.dry_run:
        data["ids"] = list(plan.ids)
    return data


class _DeleteTally:
    def __init__(self, plan: DeletePlan) -> None:
        self.plan = plan
        self.counts: Counter[str] = Counter()
        self.by_code: Counter[str] = Counter()
        self.retryable = 0
        self.rejects: list[Reject] = list(plan.local_rejects)
        for reject in plan.local_rejects:
            self.by_code[reject.code] += 1
        self.counts["failed"] = len(plan.local_rejects)

    def unsent(self, n: int) -> None:
        self.counts["not_attempted"] += n

    def outcomes(self, outcomes: Sequence[Outcome | None]) -> None:
        for i, outcome in enumerate(outcomes):
            if outcome is None:
                self.counts["not_attempted"] += 1
                continue
            self.counts[outcome.kind] += 1
            if outcome.kind == "failed":
                self.by_code[outcome.code] += 1
                self.retryable += outcome.retryable
                self.rejects.append(self._reject(i, outcome))

    def _reject(self, i: int, outcome: Outcome) -> Reject:
        user_id = self.plan.ids[i]
        file, row = self.plan.origins[i]
        remedy = ("run the same delete on the rejects file later" if outcome.retryable else
                  "check the id, then run the same delete on the rejects file")
        return Reject(
            source_file=file,
            source_row=row,
            stage="transport" if outcome.code in ("transport", "rate_limited") else "api",
            code=outcome.code,
            field=self.plan.column,
            message=f"delete contact {user_id!r}: {outcome.message} — {remedy}",
            http_status=outcome.status,
            attempts=outcome.attempts,
            retryable=outcome.retryable,
            values={self.plan.column: user_id},  # the full row is looked up when written
        )

    def report(
        self,
        stats: UploadStats,
        started: float,
        info: DatasourceInfo,
        rejects_path: str | None,
        *,
        aborted: str | None = None,
        dry_run: bool = False,
    ) -> DeleteReport:
        c = self.counts
        report = DeleteReport(
            requested=self.plan.requested,
            deleted=c["deleted"],
            already_absent=c["absent"],
            failed=c["failed"],
            retryable=self.retryable,
            duplicates=self.plan.duplicates,
            not_attempted=c["not_attempted"],
            requests=stats.requests,
            retries=stats.retries,
            rate_limited=stats.rate_limited,
            http_statuses=dict(stats.statuses),
            failed_by_code=dict(self.by_code),
            duration_s=time.monotonic() - started,
            datasource=info.datasource,
            rejects_path=rejects_path,
            rerun=_rerun_command(self.plan, rejects_path),
            aborted=aborted,
            dry_run=dry_run,
        )
        accounted = (report.deleted + report.already_absent + report.failed
                     + report.duplicates + report.not_attempted)
        if accounted != report.requested:
            raise InternalError(
                "delete accounting broken (a bug — please report it): requested="
                f"{report.requested} but deleted + already_absent + failed + duplicates + "
                f"not_attempted = {accounted}")
        return report


def _rerun_command(plan: DeletePlan, rejects_path: str | None) -> str | None:
    if rejects_path is None:
        return None
    return f"instasent-import delete {rejects_path} --column {plan.column}"


# ───────────────────────────── delete: rejects file ─────────────────────────────


def _rejects_target(plan: DeletePlan, path: str | None) -> str:
    if path:
        return path
    if plan.sources:
        first = plan.sources[0]
        return str(default_rejects_path(first.path, first.format))
    return DEFAULT_IDS_REJECTS


def _write_rejects(
    plan: DeletePlan, rejects: list[Reject], path: str | None, credentials: Credentials
) -> str | None:
    """The run's rejects format: the source row verbatim, then the ``_reject_*`` columns."""
    if not rejects:
        return None
    target = _rejects_target(plan, path)
    if plan.sources:
        first = plan.sources[0]
        fmt: RejectsFormat = first.format
        columns: list[str] = []
        for s in plan.sources:
            columns += [c for c in s.columns if c not in columns]
        delimiter = first.delimiter or ","
        rejects = _with_source_values(plan, rejects)
    else:
        fmt, columns, delimiter = "csv", [IDS_COLUMN], ","
    meta = {
        "command": "delete",
        "column": plan.column,
        "inputs": [s.path for s in plan.sources] or [IDS_SOURCE],
        "datasource": f"{credentials.project}/{credentials.datasource}",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tool": f"instasent-import {__version__} delete",
    }
    with open_rejects(target, source_columns=columns, fmt=fmt, delimiter=delimiter,
                      meta=meta) as writer:
        writer.write(sorted(rejects, key=lambda r: (r.source_file, r.source_row)))
    return target


def _with_source_values(plan: DeletePlan, rejects: list[Reject]) -> list[Reject]:
    """Fill API failures with their whole source row, read again (only rows that failed are
    kept, so a million-id delete never holds its file in memory)."""
    wanted: dict[str, set[int]] = {}
    for r in rejects:
        if r.stage in ("api", "transport"):
            wanted.setdefault(r.source_file, set()).add(r.source_row)
    if not wanted:
        return rejects
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for source in plan.sources:
        for batch in iter_batches(source, plan.read):
            frame = batch.frame
            hits = frame.filter(pl.any_horizontal(
                (pl.col(SOURCE_FILE) == f) & pl.col(SOURCE_ROW).is_in(sorted(rows))
                for f, rows in wanted.items()
            ))
            for rec in hits.iter_rows(named=True):
                key = (rec.pop(SOURCE_FILE), rec.pop(SOURCE_ROW))
                found.setdefault(key, {k: v for k, v in rec.items()
                                       if k not in RESERVED_SOURCE_COLUMNS})
    return [
        _replace_values(r, found.get((r.source_file, r.source_row)))
        if r.stage in ("api", "transport") else r
        for r in rejects
    ]


def _replace_values(reject: Reject, values: dict[str, Any] | None) -> Reject:
    if values is None:
        return reject
    return Reject(
        source_file=reject.source_file, source_row=reject.source_row, stage=reject.stage,
        code=reject.code, message=reject.message, field=reject.field,
        http_status=reject.http_status, attempts=reject.attempts, retryable=reject.retryable,
        values=values, raw_line=reject.raw_line,
    )


def plan_delete(
    files: Sequence[str] = (),
    *,
    column: str | None = None,
    ids: Sequence[str] = (),
    read: ReadOptions = ReadOptions(),
) -> DeletePlan:
    """The ids to delete: the ``column`` of ``files`` (any input the importer reads), or
    ``ids`` (each may be comma-separated). Raises UsageError (exit 2) before any network use.
    """
    return read_ids_file_or_list(files, column, ids, read)


def read_ids_file_or_list(
    files: Sequence[str], column: str | None, ids: Sequence[str], read: ReadOptions
) -> DeletePlan:
    """The CLI's two ways to name ids; every usage problem is a UsageError (exit 2)."""
    if files and ids:
        raise UsageError("give ids either in FILE (with --column) or with --ids, not both")
    if ids:
        if column:
            raise UsageError("--column applies to FILE; --ids takes the ids themselves")
        return plan_from_ids([part.strip() for group in ids for part in group.split(",")])
    if not files:
        raise UsageError("name the contacts to delete: `delete FILE --column COLUMN` or "
                         "`delete --ids ID1,ID2`")
    if not column:
        raise UsageError(f"--column is required with FILE: the column of {files[0]} that "
                         "holds the _user_id values")
    return plan_from_files(files, column, read)
