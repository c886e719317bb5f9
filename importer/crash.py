"""An unexpected error during a run: one line for the user, the traceback in a log file.

A bug, or a failure nobody planned for (the rejects file cannot be written, a value that will
not cast), must end the run at once — never leave it waiting on a worker that died — and
leave it resumable: the journal has every acknowledged batch, rows in flight are sent again
by ``--resume``. The user sees one line naming the log; the log (mode 0600, in the state
directory, beside the journal) has the traceback, with the token taken out.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from importer import __version__
from importer.exceptions import ImporterError, InternalError


class RunCrashed(InternalError):
    """The run stopped on an unexpected error; ``log`` holds its traceback."""

    def __init__(self, message: str, log: Path | None) -> None:
        self.log = log
        super().__init__(message)


def first_error(exc: BaseException) -> BaseException:
    """The first error of a (nested) exception group: the one that stopped the run."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def write_log(state_dir: str | Path, exc: BaseException, *, secrets: tuple[str, ...],
              run_id: str) -> Path:
    """Write the traceback to ``<state_dir>/crash-<time>-<pid>.log`` (mode 0600)."""
    now = dt.datetime.now(dt.UTC)
    folder = Path(state_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f"crash-{now:%Y%m%dT%H%M%SZ}-{os.getpid()}.log"
    text = "".join([
        f"instasent-import {__version__} · {now.isoformat(timespec='seconds')} · "
        f"pid {os.getpid()} · run {run_id}\n",
        f"command: {' '.join(sys.argv)}\n\n",
        *traceback.format_exception(exc),
    ])
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[token]")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def stopped(exc: BaseException, *, state_dir: str | Path, secrets: tuple[str, ...],
            run_id: str, shown: Callable[[Path], str] = str) -> ImporterError:
    """What to raise for an error that ended a run: an error of the importer's own as it is;
    anything else as :class:`RunCrashed`, its traceback logged. ``shown``: how the message
    names the log (a state directory in a bucket: its URL, where it is uploaded)."""
    error = first_error(exc)
    if isinstance(error, ImporterError):
        return error
    try:
        written = write_log(state_dir, exc, secrets=secrets, run_id=run_id)
        log: Path | None = written
        where = f"the traceback is in {shown(written)}"
    except OSError as why:  # the disk that failed the run may fail the log too
        log = None
        where = f"no log could be written ({why.strerror or why})"
    detail = (str(error).splitlines() or [""])[0][:300]
    for secret in secrets:
        if secret:
            detail = detail.replace(secret, "[token]")
    name = type(error).__name__
    return RunCrashed(
        f"the run stopped on an unexpected error ({name}{': ' + detail if detail else ''}); "
        f"{where}. Rows acknowledged so far are journaled: once the cause is fixed, re-run "
        "the same command with --resume",
        log,
    )
