"""What several commands share: credentials, read options, the API options decorator,
the delete question."""

from __future__ import annotations

import dataclasses
import json
import shlex
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from importer.config import Credentials
from importer.exceptions import ImporterError
from importer.network import Network
from importer.pipeline import RunOptions
from importer.redaction import hidden
from importer.sources import ReadOptions

if TYPE_CHECKING:
    from importer.check import DatasourceInfo


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
