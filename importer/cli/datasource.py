"""``check`` and ``specs``: options over :func:`importer.check_datasource` and
:func:`importer.load_specs`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from importer.cli._group import cli
from importer.cli._shared import _api_options, _credentials, _json_failure
from importer.config import Credentials
from importer.exceptions import ImporterError
from importer.network import Network


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
