"""One run at a time over a state directory: a lock held by the running process.

Two runs over the same journal (two cron entries firing at once, or ``--resume`` typed while
the first still runs) would send the same rows twice and interleave their rejects. The lock
is ``flock`` on ``<state dir>/lock``: taken and checked in one atomic call, held for the whole
run, and released by the kernel when the process ends, however it ends (``kill -9``
included), so a crashed run never leaves a stale lock behind. The file records who holds it
(pid, host, start time, command) for the refusal message.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from importer.exceptions import UsageError

LOCK_NAME = "lock"


class StateBusy(UsageError):
    """Another process holds the state directory's lock; nothing was sent (exit 2).
    ``holder``: what that process recorded (pid, host, started, command; may be empty)."""

    def __init__(self, message: str, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


def _holder(fd: int) -> dict[str, object]:
    """Who holds the lock, as it wrote (it writes just after taking it: wait a moment)."""
    for _ in range(20):
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        try:
            found = json.loads(data)
        except ValueError:
            found = None
        if isinstance(found, dict):
            return found
        time.sleep(0.01)
    return {}


class StateLock:
    """``with StateLock(state_dir):`` — raises :class:`StateBusy` if another process has it."""

    def __init__(self, state_dir: str | Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateBusy(_busy_message(self.dir, holder), holder) from None
        except BaseException:
            os.close(fd)
            raise
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join(["instasent-import", *sys.argv[1:]]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it now
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> StateLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _busy_message(state_dir: Path, holder: dict[str, object]) -> str:
    pid = holder.get("pid", "unknown")
    host = holder.get("host", "unknown host")
    since = f", started {holder['started']}" if holder.get("started") else ""
    command = f": {holder['command']}" if holder.get("command") else ""
    return (
        f"another instasent-import is running over the state directory {state_dir} (pid {pid} "
        f"on {host}{since}{command}). Two runs over one journal would send rows twice: wait "
        "for it to end, then run again; an unrelated import can use another --state-dir"
    )
