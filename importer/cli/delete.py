"""``delete``: options over :func:`importer.plan_delete` and :func:`importer.delete_contacts`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from importer.cli._group import cli
from importer.cli._progress import _DeleteProgress
from importer.cli._shared import (
    _api_options,
    _ask,
    _contacts,
    _credentials,
    _json_failure,
    _parse_duration,
    _read_options,
)
from importer.exceptions import ImporterError
from importer.network import Network
from importer.storage import check_file
from importer.upload import UploadSettings


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
@click.option("--outage-wait", default="10m", show_default=True, callback=_parse_duration,
              help="When every request fails (no connection, or 5xx), pause and probe for "
              "this long (600, 90s, 10m, 1h) before stopping (exit 1); no id's attempts are "
              "spent meanwhile.")
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
    outage_wait: float,
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
        upload=UploadSettings(concurrency=concurrency, max_attempts=max_attempts,
                              outage_wait=outage_wait),
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
