"""The ``instasent-import`` command: a thin click layer over the library.

A command body builds settings, calls the library and maps the outcome to an exit code.
Library errors (:class:`ImporterError`) become one clean message and their exit code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import click

from importer import __version__
from importer.config import DEFAULT_MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Credentials
from importer.exceptions import ImporterError, ReportNotWritten, StorageError, UsageError
from importer.network import Network
from importer.pipeline import Progress, RunOptions
from importer.redaction import hidden, redact
from importer.report import ImportReport, render
from importer.sandbox.settings import (
    DEFAULT_DATASOURCE,
    DEFAULT_PROJECT,
    DEFAULT_TOKEN,
    MAX_DELAY_MS,
    FaultSettings,
    SandboxSettings,
)
from importer.sources import ReadOptions
from importer.storage import check_file, reason
from importer.upload import UploadSettings

if TYPE_CHECKING:
    from importer.changed_run import ChangeOptions
    from importer.check import DatasourceInfo


class _Cli(click.Group):
    """Turns library exceptions into one line on stderr and the documented exit code.

    Every such line goes through :func:`redact` (a server's error text may echo the token).
    A file that cannot be written mid-run (disk full, permission) is one line too, naming the
    file and the command that resumes the run.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV] = list(args)  # for the --resume command a failed run prints
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StorageError as exc:
            text = f"cannot write {exc.path}: {exc.reason}"
            if exc.resumable and ctx.invoked_subcommand in ("run", "retry"):
                text += (" — the run stopped; free space or fix the permission, then resume: "
                         f"{_resume_command(ctx)}")
            click.echo(f"error: {redact(text)}", err=True)
            ctx.exit(exc.exit_code)
        except ImporterError as exc:
            click.echo(f"error: {redact(str(exc))}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a file the library did not expect to fail (say, stdout)
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"error: {redact(where + reason(exc))}", err=True)
            ctx.exit(1)


_ARGV = "instasent_import.argv"


def _resume_command(ctx: click.Context) -> str:
    """The command line that was run, with --resume (and without --restart)."""
    args = [a for a in ctx.meta.get(_ARGV, []) if a != "--restart"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["instasent-import", *args])


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="instasent-import")
def cli() -> None:
    """Load CSV, Parquet and NDJSON exports into an Instasent datasource.

    Credentials come from INSTASENT_PROJECT, INSTASENT_DATASOURCE, INSTASENT_TOKEN and
    INSTASENT_API_URL (default https://api.instasent.com/v1).
    """


def _parse_latency(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        low, _, high = value.partition(":")
        a, b = int(low), int(high or low)
    except ValueError:
        raise click.BadParameter("expected A or A:B in milliseconds, e.g. 40:60") from None
    if a < 0 or b < a or b > MAX_DELAY_MS:
        raise click.BadParameter(f"expected 0 <= A <= B <= {MAX_DELAY_MS} (10 minutes)")
    return a, b


def _parse_statuses(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        statuses = tuple(int(s) for s in value.split(",") if s.strip())
    except ValueError:
        raise click.BadParameter("expected a comma-separated list such as 500,502,503") from None
    if not statuses or any(not 500 <= s <= 599 for s in statuses):
        raise click.BadParameter("expected 5xx statuses such as 500,502,503")
    return statuses


_rate = click.FloatRange(0.0, 1.0)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    """``600``, ``90s``, ``10m`` or ``1h``, in seconds."""
    text = value.strip().lower()
    scale = _UNITS.get(text[-1:], 0.0)
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1.0)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected seconds, or a duration such as 90s, "
                                 "10m or 1h") from None
    if not 0 <= seconds <= 7 * 86400:
        raise click.BadParameter(f"{value!r}: expected between 0 and 7 days")
    return seconds


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8790, show_default=True, type=int, help="0 picks a free port.")
@click.option("--project", default=DEFAULT_PROJECT, show_default=True)
@click.option("--datasource", default=DEFAULT_DATASOURCE, show_default=True)
@click.option("--token", default=DEFAULT_TOKEN, show_default=True,
              help="Token the sandbox accepts.")
@click.option("--rate-limit", type=click.IntRange(min=1), default=None,
              help="Requests per minute per endpoint (fixed 60 s window). Default: unlimited.")
@click.option("--latency-ms", default="0", callback=_parse_latency,
              help="Latency per request, A or A:B ms (uniform).")
@click.option("--fail-rate", type=_rate, default=0.0, help="Share of requests answered with a 5xx.")
@click.option("--fail-statuses", default="500,502,503", callback=_parse_statuses,
              show_default=True)
@click.option("--drop-before-rate", type=_rate, default=0.0,
              help="Share of requests whose connection is closed before processing.")
@click.option("--drop-after-rate", type=_rate, default=0.0,
              help="Share of requests processed and stored, then dropped without a response.")
@click.option("--slow-rate", type=_rate, default=0.0,
              help="Share of requests delayed by --slow-ms.")
@click.option("--slow-ms", type=click.IntRange(0, MAX_DELAY_MS), default=0,
              help="Delay of a slow answer, ms (at most 10 minutes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every fault draw.")
@click.option("--require-known-user", is_flag=True,
              help="Reject events whose _user_id is not a stored contact.")
@click.option("--response-shape", type=click.Choice(["docs", "activepieces"]), default="docs",
              show_default=True, help="Success envelope of batched writes.")
@click.option("--db", "db_path", type=click.Path(dir_okay=False), default=None,
              help="Persist to this SQLite file (default: in memory).")
def sandbox(
    host: str,
    port: int,
    project: str,
    datasource: str,
    token: str,
    rate_limit: int | None,
    latency_ms: tuple[int, int],
    fail_rate: float,
    fail_statuses: tuple[int, ...],
    drop_before_rate: float,
    drop_after_rate: float,
    slow_rate: float,
    slow_ms: int,
    seed: int,
    require_known_user: bool,
    response_shape: str,
    db_path: str | None,
) -> None:
    """Serve a local Instasent Ingest API for rehearsals, tests and benchmarks."""
    from importer.sandbox.server import serve

    settings = SandboxSettings(
        project=project,
        datasource=datasource,
        token=token,
        rate_limit=rate_limit,
        latency_ms=latency_ms,
        faults=FaultSettings(
            fail_rate=fail_rate,
            fail_statuses=fail_statuses,
            drop_before_rate=drop_before_rate,
            drop_after_rate=drop_after_rate,
            slow_rate=slow_rate,
            slow_ms=slow_ms,
        ),
        seed=seed,
        require_known_user=require_known_user,
        response_shape="activepieces" if response_shape == "activepieces" else "docs",
        db_path=db_path,
    )
    serve(settings, host=host, port=port)


_warned_token_files: set[str] = set()


def _credentials(token_file: Path | None, network: Network | None = None) -> Credentials:
    """``Credentials.resolve``, warning (once) about a token file others can read."""
    if token_file is not None and str(token_file) not in _warned_token_files:
        try:
            mode = token_file.stat().st_mode
        except OSError:
            mode = 0  # unreadable: Credentials.resolve says so
        if mode & 0o077:
            _warned_token_files.add(str(token_file))
            click.echo(
                f"warning: the token file {token_file} can be read by others than its owner "
                f"(mode {stat.S_IMODE(mode):04o}): whoever reads it can write to the "
                f"datasource — chmod 600 {shlex.quote(str(token_file))}",
                err=True,
            )
    return _hiding(Credentials.resolve(token_file=token_file,
                                       network=network if network is not None else Network()))


def _hiding(credentials: Credentials) -> Credentials:
    """Mask the token from everything this command prints, its error line included."""
    ctx = click.get_current_context().find_root()
    ctx.with_resource(hidden(credentials.token))
    return credentials


class _ProgressPrinter:
    """tqdm on a terminal; otherwise a log line every ~10 s so cron logs stay readable."""

    def __init__(self, *, quiet: bool, interval: float = 10.0) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self._bar: Any = None
        self._phase = ""
        self._last = self._started = time.monotonic()
        self._outage_shown = False
        self._outage_probes = -1

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        if self.tty:
            self._update_bar(p)
            return
        probes = p.outage.probes if p.outage is not None else -1
        if (p.outage is not None) != self._outage_shown or probes != self._outage_probes:
            self._outage_probes = probes
            self._outage_line(p)
            return
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            rate = p.rows_read / max(now - self._started, 1e-9)
            click.echo(
                f"[{p.phase}] read {p.rows_read:,} rows ({rate:,.0f}/s) · "
                f"accepted {p.accepted:,} · "
                f"rejected {p.rejected:,} · {p.done / max(p.total, 1):.0%} of input",
                err=True,
            )

    def _outage_line(self, p: Progress) -> None:
        """An outage starting, probed again or over: said at once, not at the next tick."""
        state = p.outage
        if state is None:
            if self._outage_shown:
                self._outage_shown = False
                click.echo(f"[{p.phase}] the API answers again: sending resumed", err=True)
            return
        self._outage_shown = True
        click.echo(
            f"[{p.phase}] the API is down (connection errors or 5xx on every request) for "
            f"{_duration(state.waited)}: sending paused, probing (probe {state.probes + 1}); "
            f"the run stops after --outage-wait {_duration(state.wait)}",
            err=True,
        )

    def _update_bar(self, p: Progress) -> None:
        from tqdm import tqdm

        if self._bar is None or p.phase != self._phase:
            self.close()
            self._phase = p.phase
            self._bar = tqdm(
                total=p.total, unit="B" if p.unit == "bytes" else " rows",
                unit_scale=True, desc=p.phase, file=sys.stderr, leave=False,
            )
        self._bar.n = p.done
        elapsed = max(time.monotonic() - self._started, 1e-9)
        outage = {} if p.outage is None else {
            "API_DOWN": f"{_duration(p.outage.waited)} of {_duration(p.outage.wait)}"}
        self._bar.set_postfix(rows=p.rows_read, rows_s=f"{p.rows_read / elapsed:,.0f}",
                              ok=p.accepted, rejected=p.rejected, **outage, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _read_options(delimiter: str | None, encoding: str | None) -> ReadOptions:
    if delimiter == "\\t":
        delimiter = "\t"
    return dataclasses.replace(RunOptions().read, delimiter=delimiter, encoding=encoding)


#: How requests reach the API (importer.network): every command that talks to it has them.
_NETWORK_OPTIONS = (
    click.option("--proxy", default=None, metavar="URL",
                 help="HTTP(S) proxy for the API, e.g. http://proxy:3128 (default: "
                 "HTTPS_PROXY / ALL_PROXY, minus NO_PROXY; never for a loopback API)."),
    click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False,
                                                path_type=Path),
                 default=None, metavar="FILE",
                 help="Trust these CA certificates (PEM) instead of the system's."),
)

_RUN_OPTIONS = (
    click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), default=None,
                 help="Rejects file (default: beside the input, <name>.rejects.<ext>)."),
    click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
                 help="Write the report as JSON to this file."),
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
                 help="Journal directory (default: $INSTASENT_STATE_DIR or .instasent-import)."),
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


@cli.command()
@click.argument("rejects", type=click.Path(exists=True, dir_okay=False))
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


@cli.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--mapping", "-m", required=True, type=click.Path(dir_okay=False),
              help="The column-mapping YAML.")
@click.option("--sample", type=click.IntRange(min=0), default=0, show_default=True,
              help="Print the first N payloads of each target exactly as they would be sent.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many problem rows to list.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), default=None,
              help="Write the rows that would be rejected to this rejects file.")
@click.option("--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="json: print the summary as JSON on stdout.")
@click.option("--delimiter", default=None, help="CSV delimiter (default: detected).")
@click.option("--encoding", default=None, help="Input encoding (default: detected).")
@click.option("--specs", "use_specs", is_flag=True,
              help="Also check the mapping against the datasource's spec endpoints (reads "
                   "them with the INSTASENT_* credentials; rows over its limits would reject).")
@click.option("--changed-only", is_flag=True,
              help="Also say how many items `run --changed-only` would send, skip as unchanged "
                   "and (--delete-missing) delete, from the recorded state; no network.")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="State directory (default: $INSTASENT_STATE_DIR or .instasent-import).")
def validate(
    files: tuple[str, ...],
    mapping: str,
    sample: int,
    top: int,
    rejects_path: str | None,
    output: str,
    delimiter: str | None,
    encoding: str | None,
    use_specs: bool,
    changed_only: bool,
    state_dir: str | None,
) -> None:
    """Map and check FILES locally with a mapping; nothing is sent.

    Prints rows read, valid, filtered and would-reject counts by code, the first problem
    rows with their file and row, and --sample payloads. With --specs the only network
    use is reading the datasource's specs. Exit codes: 0 clean · 1 specs unreadable ·
    2 bad mapping or input · 3 rows would be rejected.
    """
    from importer.exceptions import MappingError
    from importer.validate import render_text, validate_files

    try:
        if rejects_path:
            check_file(rejects_path, "rejects file")  # before the specs are read
        found = None
        if use_specs:
            from importer.speccheck import load_specs

            found = load_specs()
        report = validate_files(
            files, mapping, read=_read_options(delimiter, encoding), sample=sample, top=top,
            rejects_path=rejects_path, specs=found, changed_only=changed_only,
            state_dir=state_dir,
        )
    except ImporterError as exc:
        if output != "json":
            raise
        problems = exc.problems if isinstance(exc, MappingError) else ()
        click.echo(json.dumps({
            "error": str(exc).splitlines()[0],
            "problems": [{"line": p.line, "severity": p.severity, "message": p.message}
                         for p in problems],
            "exit_code": exc.exit_code,
        }, indent=2, ensure_ascii=False))
        sys.exit(exc.exit_code)
    if output == "json":
        click.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(report))
    sys.exit(report.exit_code)

# ───────────────────────────── the datasource: check, delete, specs ─────────────────────────


_API_OPTIONS = (
    click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                 default=None, help="Read the token from this file instead of INSTASENT_TOKEN."),
    click.option("--timeout", type=click.FloatRange(0.1, 600), default=30.0, show_default=True,
                 help="Seconds per request."),
    click.option("--output", type=click.Choice(["table", "json"]), default="table",
                 show_default=True, help="json: machine-readable output on stdout."),
    *_NETWORK_OPTIONS,
)


def _api_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options ``check``, ``delete`` and ``specs`` share."""
    for option in reversed(_API_OPTIONS):
        command = option(command)
    return command


def _json_failure(exc: ImporterError) -> None:
    """``--output json``: the failure as JSON on stdout too (the message still goes to stderr)."""
    from importer.datasource import problem_kind

    click.echo(json.dumps({"ok": False, "problem": problem_kind(exc), "message": str(exc),
                           "exit_code": exc.exit_code}, indent=2, ensure_ascii=False))


@cli.command()
@_api_options
def check(token_file: Path | None, timeout: float, output: str, proxy: str | None,
          ca_bundle: Path | None) -> None:
    """Check the token and ids: who they belong to, or exactly what is wrong.

    Calls GET /stream and prints the organization, project, datasource and recent usage.
    Also says which proxy the requests go through and where the trusted CA certificates
    come from. Run it first. Exit codes: 0 the token works · 1 refused or unreachable (the
    message says which: token, project/datasource ids, DNS, connection refused, timeout, TLS,
    proxy, unexpected answer) · 2 settings missing.
    """
    from importer.check import check_datasource, render_info

    _fetch_and_show(lambda c: check_datasource(c, timeout=timeout), render_info,
                    output=output, token_file=token_file, network=Network(proxy, ca_bundle))


class _DeleteProgress:
    """A bar on a terminal; otherwise a log line every ~10 s."""

    def __init__(self, *, quiet: bool, interval: float = 10.0) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self._last = time.monotonic()
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit=" ids", desc="deleting", file=sys.stderr,
                                 leave=False)
            self._bar.n = done
            self._bar.refresh()
        elif time.monotonic() - self._last >= self.interval:
            self._last = time.monotonic()
            click.echo(f"[delete] {done:,} of {total:,} ids answered", err=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _contacts(count: int) -> str:
    return f"{count:,} contact{'s' if count != 1 else ''}"


def _ask(described: str) -> Callable[[DatasourceInfo, int], bool]:
    """The question before a delete: which datasource, how many, no way back."""

    def confirm(info: DatasourceInfo, count: int) -> bool:
        click.echo(
            f"About to PERMANENTLY delete {_contacts(count)} (ids {described})\n"
            f"  {'datasource':<14}{info.datasource}\n"
            f"  {'project':<14}{info.project}\n"
            f"  {'organization':<14}{info.organization}\n"
            f"  {'API':<14}{info.api_url}\n"
            "Deleted contacts cannot be recovered.", err=True)
        try:
            return click.confirm(f"Delete {_contacts(count)}?", default=False, err=True)
        except click.Abort:
            click.echo("\nno answer: pass --yes to delete without the question", err=True)
            return False

    return confirm


@cli.command()
@click.argument("files", nargs=-1)
@click.option("--column", "-c", default=None,
              help="The column of FILES that holds each contact's _user_id.")
@click.option("--ids", multiple=True,
              help="Comma-separated ids instead of a file (repeatable).")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking (scripts).")
@click.option("--dry-run", is_flag=True,
              help="List the ids that would be deleted (stdout); delete nothing.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), default=None,
              help="Rejects file (default: beside the input, <name>.rejects.<ext>; with --ids "
                   "./instasent-delete.rejects.csv).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Write the report as JSON to this file.")
@click.option("--concurrency", type=click.IntRange(1, 256), default=None,
              help="Pin requests in flight (default: adaptive up to 32).")
@click.option("--max-attempts", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Attempts per id on 5xx/timeouts before it becomes a retryable reject.")
@click.option("--delimiter", default=None, help="CSV delimiter (default: detected).")
@click.option("--encoding", default=None, help="Input encoding (default: detected).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
@_api_options
def delete(
    files: tuple[str, ...],
    column: str | None,
    ids: tuple[str, ...],
    yes: bool,
    dry_run: bool,
    rejects_path: str | None,
    report_path: str | None,
    concurrency: int | None,
    max_attempts: int,
    delimiter: str | None,
    encoding: str | None,
    quiet: bool,
    token_file: Path | None,
    timeout: float,
    output: str,
    proxy: str | None,
    ca_bundle: Path | None,
) -> None:
    """Permanently delete contacts by _user_id: `delete FILES --column C` or `--ids A,B`.

    FILES are any input the importer reads (CSV, Parquet, NDJSON). Each distinct id is one
    DELETE /stream/contacts/{id}, paced by the rate limit like `run`. Shows the datasource
    and the count, and asks first unless --yes. An id the datasource does not have counts as
    already absent, not as a failure; failures go to a rejects file (re-run it with the same
    --column). Exit codes as for `run`: 0 done · 1 aborted or not confirmed · 2 usage ·
    3 permanent failures · 4 retryable failures left.
    """
    from importer.delete import (
        DeleteOptions,
        delete_contacts,
        delete_report_data,
        plan_delete,
        render_delete,
    )

    plan = plan_delete(files, column=column, ids=ids, read=_read_options(delimiter, encoding))
    if report_path:
        check_file(report_path, "report")  # before the token is read
    credentials = _credentials(token_file, Network(proxy, ca_bundle))
    options = DeleteOptions(
        upload=UploadSettings(concurrency=concurrency, max_attempts=max_attempts),
        timeout=timeout, rejects_path=rejects_path, dry_run=dry_run,
    )
    progress = _DeleteProgress(quiet=quiet)
    try:
        report = delete_contacts(
            plan, credentials, options,
            confirm=None if yes or dry_run else _ask(plan.described), progress=progress,
            report_path=report_path,
        )
    except ImporterError as exc:  # the datasource check failed: nothing was deleted
        if output == "json":
            _json_failure(exc)
        raise
    finally:
        progress.close()
    if output == "json":
        click.echo(json.dumps(delete_report_data(report, plan), indent=2, ensure_ascii=False))
    elif dry_run:
        click.echo(f"would delete {_contacts(len(plan.ids))} from datasource "
                   f"{report.datasource} (ids {plan.described}):", err=True)
        for user_id in plan.ids:
            click.echo(user_id)
    if not quiet or report.exit_code:
        click.echo(render_delete(report), err=True)
    sys.exit(report.exit_code)


@cli.command()
@_api_options
def specs(token_file: Path | None, timeout: float, output: str, proxy: str | None,
          ca_bundle: Path | None) -> None:
    """Print what the datasource accepts: contact attributes, event types and parameters.

    Reads GET /stream/specs/attributes, /stream/specs/events and each event type's
    /stream/specs/event-parameters/{type}. `validate --specs` checks a mapping against them.
    Exit codes as for `check`.
    """
    from importer.speccheck import load_specs, render_specs

    _fetch_and_show(lambda c: load_specs(c, timeout=timeout), render_specs,
                    output=output, token_file=token_file, network=Network(proxy, ca_bundle))


class _Shown(Protocol):
    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError


_T = TypeVar("_T", bound=_Shown)


def _fetch_and_show(
    fetch: Callable[[Credentials], _T],
    render: Callable[[_T], str],
    *,
    output: str,
    token_file: Path | None,
    network: Network,
) -> None:
    """``check`` and ``specs``: one read of the API, shown as a table or as JSON."""
    try:
        result = fetch(_credentials(token_file, network))
    except ImporterError as exc:
        if output == "json":
            _json_failure(exc)
        raise
    if output == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        click.echo(render(result))


def main() -> None:
    cli(prog_name="instasent-import")


if __name__ == "__main__":  # pragma: no cover
    main()
