"""``make demo``: the whole promise in one minute.

Starts a sandbox on a loopback port, then runs the real CLI — the same commands a user types —
on the files in ``sample_data/``: contacts from a CSV, purchase events from Parquet, and an
orders export feeding contacts *and* events. Some rows are bad on purpose, so the report shows
rejects and where the rejects file is.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from importer.sandbox.server import running_sandbox
from importer.sandbox.settings import SandboxSettings

ROOT = Path(__file__).resolve().parent.parent
STEPS: tuple[tuple[str, ...], ...] = (
    ("check",),
    ("run", "sample_data/contacts.csv", "--mapping", "mappings/contacts.yaml"),
    ("run", "sample_data/events.parquet", "--mapping", "mappings/events.yaml"),
    ("run", "sample_data/orders.csv", "--mapping", "mappings/orders.yaml"),
)


def _available(step: tuple[str, ...]) -> bool:
    return all((ROOT / a).exists() for a in step if "/" in a)


def _show_rejects(path: Path, lines: int = 3) -> None:
    """The first rejected rows, as a newcomer would open the file."""
    if path.suffix != ".csv" or not path.exists():
        return
    with path.open(encoding="utf-8-sig") as fh:
        head = [next(fh, "").rstrip() for _ in range(lines + 1)]
    print("  " + "\n  ".join(h for h in head if h) + "\n  …", flush=True)


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="instasent-demo-"))
    # A little latency and a rate limit make the sandbox behave like the real thing.
    settings = SandboxSettings(rate_limit=6000, latency_ms=(5, 15))
    with running_sandbox(settings) as box:
        env = {**os.environ, **box.env()}
        print(f"sandbox listening at {box.api_url} (INSTASENT_* variables exported for it)\n")
        for step in STEPS:
            if not _available(step):
                continue
            args = list(step)
            if step[0] == "run":
                name = Path(step[1]).stem
                args += ["--rejects", str(out / f"{name}.rejects{Path(step[1]).suffix}")]
            print(f"$ instasent-import {shlex.join(args)}", flush=True)
            code = subprocess.call(
                [sys.executable, "-m", "importer", *args], env=env, cwd=ROOT
            )
            print(f"(exit code {code})", flush=True)
            if step[0] == "run" and code == 3:
                _show_rejects(Path(args[-1]))
            print(flush=True)
        stats = box.app.stats()
    print(f"the sandbox now holds {stats['contacts']} contacts and {stats['events']} events")
    print(f"rejects files: {out}  (fix a row, then `instasent-import retry FILE --all`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
