"""``run``: the public entry points of an import, :func:`run_import` and :func:`arun_import`.

They add to the pipeline (importer/pipeline.py) what every caller needs and the CLI used to do
itself: credentials from the environment when none are given (none at all for a dry run that
does not read the specs), and the report written as JSON to ``report_path``, private like the
rejects file. They print nothing: progress goes to ``progress``, the one-line notices of
``changed_only`` to ``notice``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from importer.config import Credentials
from importer.exceptions import ReportNotWritten, StorageError
from importer.pipeline import ProgressCallback, RunOptions
from importer.pipeline import arun_import as _pipeline_run
from importer.report import ImportReport
from importer.storage import check_file, write_private

if TYPE_CHECKING:
    from importer.changed_run import ConfirmDelete


def run_credentials(options: RunOptions, credentials: Credentials | None = None) -> Credentials:
    """The credentials a run uses: those given, else the ``INSTASENT_*`` environment.

    A dry run that does not read the specs sends nothing and needs no token: with
    ``changes`` it needs only the project and datasource the state belongs to.
    """
    if credentials is not None:
        return credentials
    if options.dry_run and not options.specs:
        if options.changes is not None:
            from importer.changed_run import state_credentials

            return state_credentials()
        return Credentials("http://127.0.0.1", "dry-run", "dry-run", "")
    return Credentials.resolve()


def write_report(path: str | Path, data: Mapping[str, Any]) -> None:
    """The report as JSON, created mode 0600: it names files and carries messages about rows.

    Raises :class:`~importer.exceptions.StorageError` when it cannot be written.
    """
    write_private(str(path), (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())


def save_report(report: ImportReport, report_path: str | Path | None) -> ImportReport:
    """Write ``report`` to ``report_path`` (if any); a failure carries the report along."""
    if report_path:
        try:
            write_report(report_path, report.to_dict())
        except StorageError as exc:
            raise ReportNotWritten(exc.path, exc.reason, report) from None
    return report


async def arun_import(
    inputs: Sequence[str],
    mapping: str | Path,
    credentials: Credentials | None = None,
    options: RunOptions = RunOptions(),
    *,
    report_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
    confirm_delete: ConfirmDelete | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ImportReport:
    """Import ``inputs`` (paths, globs, directories) with the mapping YAML ``mapping``.

    Returns the :class:`~importer.report.ImportReport`; its ``exit_code`` is what the CLI
    returns (0 all accepted, 1 aborted, 3 permanent rejects, 4 retryable rows left). Raises
    :class:`~importer.exceptions.UsageError` (exit 2, nothing sent) for unusable inputs,
    mapping, options or output paths, :class:`~importer.exceptions.FatalApiError` when the
    credential check fails (nothing sent), :class:`~importer.exceptions.StorageError` when a
    file of the run cannot be written mid-run (resumable with ``resume="resume"``), and
    :class:`~importer.exceptions.ReportNotWritten` (with the report) when only the report
    file failed.
    """
    if report_path:
        check_file(str(report_path), "report")  # exit 2 now rather than a lost report later
    report = await _pipeline_run(inputs, mapping, run_credentials(options, credentials),
                                 options, progress=progress, transport=transport,
                                 notice=notice, confirm_delete=confirm_delete)
    return save_report(report, report_path)


def run_import(
    inputs: Sequence[str],
    mapping: str | Path,
    credentials: Credentials | None = None,
    options: RunOptions = RunOptions(),
    *,
    report_path: str | Path | None = None,
    progress: ProgressCallback | None = None,
    notice: Callable[[str], None] | None = None,
    confirm_delete: ConfirmDelete | None = None,
) -> ImportReport:
    """Synchronous :func:`arun_import` (runs its own event loop)."""
    return asyncio.run(arun_import(inputs, mapping, credentials, options,
                                   report_path=report_path, progress=progress, notice=notice,
                                   confirm_delete=confirm_delete))
