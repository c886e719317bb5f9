"""``validate``: options over :func:`importer.validate_files`."""

from __future__ import annotations

import json
import sys

import click

from importer.cli._group import cli
from importer.cli._shared import _read_options
from importer.exceptions import ImporterError
from importer.storage import check_file


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
