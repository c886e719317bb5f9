"""Progress on stderr: a bar on a terminal, a log line every ~10 s otherwise (cron logs)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from importer.cli._shared import _duration
from importer.pipeline import Progress


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
