"""``retry``: feed a rejects file back through the mapping that produced it.

The rejects file may have been through a spreadsheet: re-saved as ``;``-separated cp1252 with
a BOM, columns reordered, ``_reject_*`` columns deleted. The sources read it like any other
export, and the mapping finds its own columns by name and ignores the importer's.

Rows keep their original ``_source_file`` and ``_source_row`` through any number of re-runs,
so a row can always be traced back to the export it came from.

The selected rows are written once to a file in the state directory named after their
content, so re-running the same retry is the same run (and can be resumed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from importer import mirror
from importer.config import Credentials
from importer.exceptions import ImporterError, InputError, UsageError
from importer.journal import DEFAULT_STATE_DIR
from importer.pipeline import ProgressCallback, RunOptions
from importer.records import SOURCE_FILE, Reject
from importer.rejects import meta_path
from importer.remote import filesystem, is_url, join, public
from importer.report import ImportReport
from importer.sources import ReadOptions, iter_batches, resolve_inputs

_TRUE = frozenset({"true", "1", "yes", "verdadero", "wahr", "vrai"})


@dataclass(frozen=True, slots=True)
class RetryPlan:
    input_path: str  # the selected rows, in the state directory
    mapping: str
    rows_total: int
    rows_selected: int
    output_rejects: str
    warnings: tuple[str, ...]
    # Lines of the rejects file that cannot be read (a record cut short by a full disk or a
    # kill): the run writes them to its rejects file as ``read`` rejects, as ``run`` would.
    unreadable: tuple[Reject, ...] = ()


def _recorded_mapping(rejects: str) -> tuple[str | None, str | None]:
    sidecar = meta_path(rejects)
    if not sidecar.exists():
        return None, None
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    return meta.get("mapping"), meta.get("mapping_sha256")


def next_rejects_path(rejects: str) -> str:
    """``crm.rejects.csv`` → ``crm.rejects.retry1.csv`` (the first name not taken; in the
    same bucket prefix for a URL)."""
    if is_url(rejects):
        folder, name = public(rejects).rsplit("/", 1)
        fs, key = filesystem(rejects)
        fs.invalidate_cache(key.rsplit("/", 1)[0])  # (listings are cached per process)
        taken = fs.exists
    else:
        folder, name = str(Path(rejects).parent), Path(rejects).name
        taken = os.path.exists
    path = Path(name)
    stem, suffix = path.stem, path.suffix or ".csv"
    base = stem.split(".retry")[0]
    n = 1
    while taken(candidate := join(folder, f"{base}.retry{n}{suffix}")):
        n += 1
    return candidate


def _selected(frame: pl.DataFrame, include_all: bool) -> pl.DataFrame:
    if include_all or "_reject_retryable" not in frame.columns:
        return frame
    flag = pl.col("_reject_retryable").cast(pl.String).str.strip_chars().str.to_lowercase()
    return frame.filter(flag.is_in(list(_TRUE)))


def _serialise(frame: pl.DataFrame, fmt: str, delimiter: str | None) -> bytes:
    """The selected rows in the rejects file's own format (Parquet keeps nested types) and,
    for CSV, its own delimiter: the run's rejects file takes the delimiter of its input, so a
    file a spreadsheet saved with ``;`` gets its failures back with ``;``. (Its encoding is
    not copied: rejects files are UTF-8 with a BOM, which every spreadsheet reads, and their
    messages may hold characters a code page cannot.)"""
    buffer = io.BytesIO()
    if fmt == "parquet":
        frame.write_parquet(buffer)
    elif fmt == "ndjson":
        frame.write_ndjson(buffer)
    else:
        frame.write_csv(buffer, separator=delimiter or ",")
    return buffer.getvalue()


def plan_retry(
    rejects: str,
    *,
    include_all: bool,
    mapping: str | None,
    state_dir: str,
    read: ReadOptions = ReadOptions(),
    output_rejects: str | None = None,
    copy: str | None = None,
) -> RetryPlan:
    """Select the rows to retry and find the mapping; raises UsageError before any I/O out.
    ``copy``: a local copy of ``rejects`` (a URL) and its sidecar, read instead."""
    warnings: list[str] = []
    local = copy or rejects
    recorded, recorded_sha = _recorded_mapping(local)
    chosen = mapping or recorded
    if not chosen:
        raise UsageError(
            f"{rejects}: no mapping is recorded beside it ({meta_path(rejects).name} is "
            "missing) — pass --mapping"
        )
    if mapping is None and recorded_sha and Path(chosen).exists():
        now = hashlib.sha256(Path(chosen).read_bytes()).hexdigest()
        if now != recorded_sha:
            warnings.append(
                f"the mapping {chosen} changed since these rows were rejected; using it as it "
                "is now (pass --mapping to choose another)"
            )
    (source,) = resolve_inputs([local], read)
    parts: list[pl.DataFrame] = []
    unreadable: list[Reject] = []
    for batch in iter_batches(source, read):
        parts.append(batch.frame)
        unreadable += batch.rejects
    frame = pl.concat(parts, how="diagonal_relaxed") if parts else pl.DataFrame()
    if unreadable and not frame.width:
        # Not one readable row: nothing to import, and nothing to carry the lines with.
        shown = "\n".join(f"  {r.message}" for r in unreadable[:5])
        raise UsageError(
            f"{rejects}: {len(unreadable)} line(s) cannot be read and no row can, so nothing "
            f"was retried:\n{shown}"
        )
    if unreadable:
        warnings.append(
            f"{len(unreadable)} line(s) of {rejects} cannot be read (first: line "
            f"{unreadable[0].source_row} of its data); they go to the new rejects file as "
            "'read' rejects with the text of the line"
        )
    if "_reject_retryable" not in frame.columns and not include_all and frame.height:
        warnings.append("the _reject_retryable column is gone: retrying every row")
    chosen_rows = _selected(frame, include_all) if frame.height else frame
    if chosen_rows.height and SOURCE_FILE in chosen_rows.columns:
        # Rows keep the export they came from, not the rejects file's name.
        chosen_rows = chosen_rows.with_columns(
            pl.col(SOURCE_FILE).fill_null(pl.lit(public(rejects) if copy else source.path)),
        )
    data = _serialise(chosen_rows, source.format, source.delimiter)
    digest = hashlib.sha256(data).hexdigest()[:16]
    target = Path(state_dir) / f"retry-{digest}.{source.format}"
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not target.exists():
        # (its name is its content: a fixed time keeps the run's fingerprint the same when
        # the file comes back from a bucket's state directory, for --resume)
        # Written aside and renamed: a retry killed here, or one started alongside, never
        # finds a half-written file under the final name (its name is its content).
        part = target.with_name(f"{target.name}.{os.getpid()}.part")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.utime(part, ns=(0, 0))
            os.replace(part, target)
        except OSError as exc:
            part.unlink(missing_ok=True)
            raise ImporterError(
                f"{target}: cannot write the rows to retry ({exc.strerror or exc}); nothing "
                "was sent — free some space or fix the state directory, then run it again"
            ) from None
    return RetryPlan(
        input_path=str(target),
        mapping=chosen,
        rows_total=frame.height,
        rows_selected=chosen_rows.height,
        output_rejects=output_rejects or next_rejects_path(rejects),
        warnings=tuple(warnings),
        unreadable=tuple(unreadable),
    )



@dataclass(frozen=True, slots=True)
class RetryReport:
    """What ``retry`` did: the rows it chose and, unless there were none, the run's report."""

    rejects: str  # the rejects file that was re-run
    mapping: str
    rows_total: int
    rows_selected: int
    output_rejects: str  # where this retry's own failures go (``<name>.retryN.<ext>``)
    warnings: tuple[str, ...]
    report: ImportReport | None  # None: no row to retry, nothing was run

    @property
    def exit_code(self) -> int:
        """The run's exit code; 0 when there was nothing to retry."""
        return self.report.exit_code if self.report is not None else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rejects": self.rejects, "mapping": self.mapping, "rows_total": self.rows_total,
            "rows_selected": self.rows_selected, "output_rejects": self.output_rejects,
            "warnings": list(self.warnings),
            "report": self.report.to_dict() if self.report is not None else None,
            "exit_code": self.exit_code,
        }


def retry_rejects(
    rejects: str,
    credentials: Credentials | None = None,
    options: RunOptions = RunOptions(),
    *,
    mapping: str | None = None,
    include_all: bool = False,
    report_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
) -> RetryReport:
    """Re-run the rows of a rejects file with the mapping recorded beside it (or ``mapping``).

    Retryable rows only (transport failures), every row with ``include_all``. What fails
    again goes to a new rejects file (``options.rejects_path``, default
    ``<name>.retryN.<ext>``). ``notice`` hears the warnings (a changed mapping, unreadable
    lines) before anything is sent; they are in the result's ``warnings`` too. Raises like
    :func:`importer.run_import`; a file with no row to retry returns ``report=None``.
    """
    state_dir = options.state_dir or os.environ.get("INSTASENT_STATE_DIR") or DEFAULT_STATE_DIR
    with mirror.outputs() as outputs:  # the state and rejects in a bucket, for the whole retry
        copy = None
        if is_url(rejects):
            copy = outputs.local(rejects, fetch=True)
            if not Path(copy).exists():
                raise InputError(public(rejects), "no such object",
                                 "check the URL and the account it is read with")
        if is_url(state_dir):
            state_dir = outputs.state_dir(state_dir, write=not options.dry_run)
            outputs.start()
        options = dataclasses.replace(options, state_dir=state_dir)
        return _retry(rejects, credentials, options, mapping=mapping, include_all=include_all,
                      report_path=report_path, progress=progress, notice=notice, copy=copy)


def _retry(
    rejects: str,
    credentials: Credentials | None,
    options: RunOptions,
    *,
    mapping: str | None,
    include_all: bool,
    report_path: str | Path | None,
    progress: ProgressCallback | None,
    notice: Callable[[str], None] | None,
    copy: str | None,
) -> RetryReport:
    from importer.run import arun_import

    assert options.state_dir is not None
    plan = plan_retry(rejects, include_all=include_all, mapping=mapping,
                      state_dir=options.state_dir, read=options.read,
                      output_rejects=options.rejects_path, copy=copy)
    for warning in plan.warnings:
        if notice is not None:
            notice(f"warning: {warning}")
    report = None
    if (plan.rows_selected or plan.unreadable) and notice is not None:
        notice(f"retrying {plan.rows_selected} of {plan.rows_total} rows from {rejects} with "
               f"{plan.mapping}")
    if plan.rows_selected or plan.unreadable:
        # A fresh retry writes the next .retryN file; a killed one, resumed or restarted,
        # goes on with the file it began (the pipeline finds it in the journal).
        run_options = dataclasses.replace(options, fresh_rejects_path=plan.output_rejects,
                                          carried_rejects=plan.unreadable)
        report = asyncio.run(arun_import(
            [plan.input_path], plan.mapping, credentials, run_options,
            report_path=report_path, progress=progress, notice=notice))
    return RetryReport(rejects=rejects, mapping=plan.mapping, rows_total=plan.rows_total,
                       rows_selected=plan.rows_selected, output_rejects=plan.output_rejects,
                       warnings=plan.warnings, report=report)
