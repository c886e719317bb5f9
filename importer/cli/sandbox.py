"""``sandbox``: serve the local Ingest API (importer/sandbox/)."""

from __future__ import annotations

import click

from importer.cli._group import cli
from importer.sandbox.settings import (
    DEFAULT_DATASOURCE,
    DEFAULT_PROJECT,
    DEFAULT_TOKEN,
    MAX_DELAY_MS,
    FaultSettings,
    SandboxSettings,
)


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
