"""The command group: library errors become one line on stderr and their exit code."""

from __future__ import annotations

import shlex
from typing import Any

import click

from importer import __version__
from importer.exceptions import ImporterError, StorageError
from importer.redaction import redact
from importer.storage import reason


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
                fix = exc.remedy or "free space or fix the permission"
                text += f" — the run stopped; {fix}, then resume: {_resume_command(ctx)}"
            elif exc.remedy:
                text += f" — {exc.remedy}"
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
