"""``run`` and ``retry``: options over :func:`importer.run_import` and
:func:`importer.retry_rejects`."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from importer.cli._group import cli
from importer.cli._progress import _ProgressPrinter
from importer.cli._shared import (
    _NETWORK_OPTIONS,
    _ask,
    _contacts,
    _credentials,
    _hiding,
    _parse_duration,
    _read_options,
)
from importer.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Credentials
from importer.exceptions import ReportNotWritten, UsageError
from importer.network import Network
from importer.pipeline import RunOptions
from importer.redaction import redact
from importer.remote import is_url
from importer.report import ImportReport, render
from importer.sandbox.settings import SandboxSettings
from importer.upload import UploadSettings

if TYPE_CHECKING:
    from importer.changed_run import ChangeOptions

_RUN_OPTIONS = (
    click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), default=None,
                 help="Rejects file, or s3:// gs:// az:// URL (default: beside the input, "
                 "<name>.rejects.<ext>)."),
    click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
                 help="Write the report as JSON to this file (or s3:// gs:// az:// URL)."),
    click.option("--concurrency", type=click.IntRange(1, 256), default=None,
                 help="Pin requests in flight (default: adaptive up to 32)."),
    click.option("--max-attempts", type=click.IntRange(1, 50), default=5, show_default=True,
                 help="Attempts per batch on 5xx/timeouts before its rows become retryable "
                 "rejects."),
    click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True,
                 help="Seconds per request."),
    click.option("--outage-wait", default="10m", show_default=True, callback=_parse_duration,
                 help="When every request fails (no connection, or 5xx), pause and probe for "
                 "this long (600, 90s, 10m, 1h) before stopping the run (exit 1, resumable); "
                 "no row's attempts are spent meanwhile."),
    click.option("--max-rejects", type=click.IntRange(min=1), default=None,
                 help="Abort (exit 1) once this many rows are rejected."),
    click.option("--batch-size", type=click.IntRange(1, MAX_BATCH_ITEMS),
                 default=MAX_BATCH_ITEMS, show_default=True,
                 help="Items per request (the API takes at most 100)."),
    click.option("--max-batch-bytes", type=click.IntRange(min=1024),
                 default=DEFAULT_MAX_BATCH_BYTES, show_default=True),
    click.option("--delimiter", default=None, help="CSV delimiter (default: detected)."),
    click.option("--encoding", default=None, help="Input encoding (default: detected)."),
    click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Read the token from this file instead of INSTASENT_TOKEN."),
    *_NETWORK_OPTIONS,
    click.option("--quiet", "-q", is_flag=True, help="No progress output."),
    click.option("--output", type=click.Choice(["table", "json"]), default="table",
                 show_default=True, help="json: print the report as JSON on stdout."),
    click.option("--dry-run", is_flag=True, help="Read, map and chunk; send nothing."),
    click.option("--dry-run-output", type=click.Path(dir_okay=False), default=None,
                 help="With --dry-run: write what would be sent as NDJSON."),
    click.option("--sandbox", "use_sandbox", is_flag=True,
                 help="Rehearse against an in-process sandbox on a loopback port."),
    click.option("--state-dir", type=click.Path(file_okay=False), default=None,
                 help="Journal directory, or s3:// gs:// az:// prefix (default: "
                 "$INSTASENT_STATE_DIR or .instasent-import)."),
    click.option("--resume", "resume", flag_value="resume", default=None,
                 help="Continue an unfinished run of the same inputs and mapping."),
    click.option("--restart", "resume", flag_value="restart",
                 help="Start an unfinished run of the same inputs and mapping over."),
    click.option("--specs", is_flag=True,
                 help="Check the mapping against the datasource's specs first, and reject "
                 "values longer than their maxLength (too_long)."),
)


def _run_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options ``run`` and ``retry`` share."""
    for option in reversed(_RUN_OPTIONS):
        command = option(command)
    return command


_CHANGED_OPTIONS = (
    click.option("--changed-only", is_flag=True,
                 help="Send only items new or changed since what this datasource last "
                 "acknowledged for this mapping (state in --state-dir)."),
    click.option("--full", is_flag=True,
                 help="With --changed-only: send everything and rebuild the state."),
    click.option("--delete-missing", is_flag=True,
                 help="With --changed-only: delete recorded contacts absent from today's "
                 "input (guarded by --max-delete; asks unless --yes)."),
    click.option("--max-delete", default=None, metavar="N|P%",
                 help="Refuse --delete-missing beyond this many deletions, a count or a "
                 "percentage of the recorded contacts.  [default: 5%]"),
    click.option("--yes", "-y", is_flag=True,
                 help="Delete without asking (--delete-missing in scripts)."),
)


def _changed_options(command: Callable[..., None]) -> Callable[..., None]:
    """``run``'s --changed-only family (not ``retry``'s: a rejects file is not an export)."""
    for option in reversed(_CHANGED_OPTIONS):
        command = option(command)
    return command


def _change_options(kw: dict[str, Any]) -> ChangeOptions | None:
    """--changed-only and its companions, checked together (exit 2, nothing sent)."""
    if not kw["changed_only"]:
        given = [f for f, on in (("--full", kw["full"]), ("--delete-missing",
                 kw["delete_missing"]), ("--max-delete", kw["max_delete"] is not None)) if on]
        if given:
            raise UsageError(f"{', '.join(given)} only make(s) sense with --changed-only")
        return None
    from importer.changed_run import ChangeOptions
    from importer.changes import MaxDelete

    if kw["max_delete"] is not None and not kw["delete_missing"]:
        raise UsageError("--max-delete limits --delete-missing: add --delete-missing or drop it")
    limit = MaxDelete.parse(kw["max_delete"]) if kw["max_delete"] is not None else None
    return ChangeOptions(full=kw["full"], delete_missing=kw["delete_missing"],
                         **({"max_delete": limit} if limit is not None else {}))


@dataclass(frozen=True, slots=True)
class _RunArgs:
    """What the shared options say, resolved once."""

    options: RunOptions
    report_path: str | None
    output: str
    quiet: bool
    token_file: Path | None
    use_sandbox: bool
    network: Network


def _run_args(kw: dict[str, Any]) -> _RunArgs:
    resume = kw["resume"]
    options = RunOptions(
        read=_read_options(kw["delimiter"], kw["encoding"]),
        upload=UploadSettings(concurrency=kw["concurrency"], max_attempts=kw["max_attempts"],
                              outage_wait=kw["outage_wait"]),
        batch_size=kw["batch_size"],
        max_batch_bytes=kw["max_batch_bytes"],
        timeout=kw["timeout"],
        max_rejects=kw["max_rejects"],
        rejects_path=kw["rejects_path"],
        dry_run=kw["dry_run"],
        dry_run_output=kw["dry_run_output"],
        state_dir=kw["state_dir"],
        resume="resume" if resume == "resume" else "restart" if resume == "restart" else None,
        specs=kw["specs"],
    )
    return _RunArgs(options, kw["report_path"], kw["output"], kw["quiet"], kw["token_file"],
                    kw["use_sandbox"], Network(kw["proxy"], kw["ca_bundle"]))


def _run_credentials(args: _RunArgs) -> Credentials | None:
    """The token file's credentials; None lets the library choose (a dry run needs no token)."""
    if args.options.dry_run and not args.options.specs:
        return None
    return _credentials(args.token_file, args.network)


def _import(files: Sequence[str], mapping: str, args: _RunArgs, *, yes: bool = False) -> None:
    """Run the import the options describe, print the report, exit with its code."""
    from importer.run import run_import

    printer = _ProgressPrinter(quiet=args.quiet)
    changes = args.options.changes
    confirm = None
    if changes is not None and changes.delete_missing and not (yes or args.options.dry_run):
        confirm = _ask("absent from today's input, recorded by --changed-only")
    with contextlib.ExitStack() as stack:
        if args.use_sandbox:
            from importer.sandbox.server import running_sandbox

            box = stack.enter_context(running_sandbox(SandboxSettings()))
            credentials: Credentials | None = _hiding(Credentials(
                box.api_url, box.settings.project, box.settings.datasource, box.settings.token))
            if not args.quiet:
                click.echo(f"rehearsing against an in-process sandbox at {box.api_url}", err=True)
        else:
            credentials = _run_credentials(args)
        try:
            report = _reported(lambda: run_import(
                files, mapping, credentials, args.options, report_path=args.report_path,
                progress=printer, notice=lambda line: click.echo(line, err=True),
                confirm_delete=confirm), args)
        finally:
            printer.close()
    if report.dry_run and report.deletion is not None and args.output != "json":
        ids = list(report.deletion.get("ids", ()))
        click.echo(f"would delete {_contacts(len(ids))} absent from today's input "
                   "(--delete-missing):", err=True)
        for user_id in ids:
            click.echo(user_id)
    sys.exit(report.exit_code)


def _reported(call: Callable[[], ImportReport], args: _RunArgs) -> ImportReport:
    """Run ``call`` and show its report; a report file that failed is shown, then raised."""
    try:
        report = call()
    except ReportNotWritten as exc:
        assert isinstance(exc.report, ImportReport)
        _show_report(exc.report, output=args.output, quiet=args.quiet, failed=True)
        raise
    _show_report(report, output=args.output, quiet=args.quiet)
    return report


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--mapping", "-m", required=True, type=click.Path(dir_okay=False),
              help="The column-mapping YAML.")
@_run_options
@_changed_options
def run(files: tuple[str, ...], mapping: str, **kw: Any) -> None:
    """Import FILES (CSV, Parquet, NDJSON; globs and directories too) with a mapping.

    --changed-only sends only what changed since the datasource last acknowledged it (and
    --delete-missing mirrors deletions). Exit codes: 0 all accepted · 1 aborted · 2 bad
    input/mapping/config, nothing sent · 3 permanent rejects written · 4 retryable failures
    left (run `instasent-import retry`).
    """
    args = _run_args(kw)
    options = dataclasses.replace(args.options, changes=_change_options(kw))
    _import(files, mapping, dataclasses.replace(args, options=options), yes=kw["yes"])


def _existing_or_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """A local rejects file must exist (click's wording); a bucket's is checked when read."""
    if is_url(value):
        return value
    return str(click.Path(exists=True, dir_okay=False).convert(value, _param, _ctx))


@cli.command()
@click.argument("rejects", callback=_existing_or_url)
@click.option("--mapping", "-m", type=click.Path(dir_okay=False), default=None,
              help="Override the mapping recorded beside the rejects file.")
@click.option("--all", "include_all", is_flag=True,
              help="Retry every row, permanent rejects included (after you fixed them).")
@_run_options
def retry(rejects: str, mapping: str | None, include_all: bool, **kw: Any) -> None:
    """Re-run a rejects file with the mapping recorded beside it.

    Retryable rows only (transport failures), unless --all. What fails again goes to a new
    rejects file (<name>.retryN.<ext>). Exit codes as for `run`.
    """
    from importer.retry import retry_rejects

    args = _run_args(kw)

    def notice(line: str) -> None:
        if line.startswith("warning:") or not args.quiet:
            click.echo(line, err=True)

    printer = _ProgressPrinter(quiet=args.quiet)
    try:
        result = retry_rejects(rejects, _run_credentials(args), args.options, mapping=mapping,
                               include_all=include_all, report_path=args.report_path,
                               progress=printer, notice=notice)
    except ReportNotWritten as exc:
        assert isinstance(exc.report, ImportReport)
        _show_report(exc.report, output=args.output, quiet=args.quiet, failed=True)
        raise
    finally:
        printer.close()
    if result.report is None:
        hint = "" if include_all else " (--all also retries the permanent rejects)"
        click.echo(f"{rejects}: no rows to retry among {result.rows_total}{hint}", err=True)
    else:
        _show_report(result.report, output=args.output, quiet=args.quiet)
    sys.exit(result.exit_code)


def _show_report(report: ImportReport, *, output: str, quiet: bool,
                 failed: bool = False) -> None:
    """The report: JSON on stdout with --output json, the table on stderr, its warnings."""
    if output == "json":
        click.echo(json.dumps(report.to_dict(), indent=2))
    if not quiet or report.exit_code or failed:
        click.echo(render(report), err=True)
    for warning in report.warnings:
        click.echo(f"warning: {redact(warning)}", err=True)
