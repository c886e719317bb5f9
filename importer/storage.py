"""The files a run writes: checked before anything is sent, created private, failures named.

- :func:`check_file` / :func:`check_dir`: a path the run *will* write (rejects file, report,
  ``--dry-run-output``, the state directory) is probed before the first request, so a typo
  or a read-only mount is exit 2 with nothing sent rather than a crash halfway. The probe
  writes (a file created and removed, or an existing file opened for appending without
  writing): ``os.access`` says yes to root whatever the mode and knows nothing of full disks
  or read-only mounts.
- :func:`write_private`: whole-file outputs that hold personal data or ids (report,
  ``--dry-run-output``) are created mode 0600.
- :func:`storage_error`: an ``OSError`` (or SQLite's "disk is full") met while writing becomes
  a :class:`~importer.exceptions.StorageError` that names the path, so the CLI prints one line
  and the ``--resume`` command instead of a traceback.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

from importer import remote
from importer.exceptions import OutputPathError, StorageError

PRIVATE = 0o600
PRIVATE_DIR = 0o700

#: The errors a full disk, a quota, a file-size limit or a permission flip produce.
STORAGE_ERRORS: tuple[type[Exception], ...] = (OSError, sqlite3.OperationalError)


def reason(exc: BaseException) -> str:
    """``No space left on device`` rather than ``[Errno 28] No space left on device: 'x'``."""
    if isinstance(exc, OSError):
        if exc.strerror:
            return exc.strerror
        if exc.errno:
            return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def storage_error(path: str | Path, exc: BaseException, *, resumable: bool = True) -> StorageError:
    return StorageError(str(path), reason(exc), resumable=resumable)


def _problem(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "its directory does not exist"
    if exc.errno == errno.ENOTDIR:
        return "a part of the path is a file, not a directory"
    if exc.errno == errno.EISDIR:
        return "it is a directory"
    return reason(exc)


def check_file(path: str | Path, what: str) -> None:
    """Raise :class:`OutputPathError` (exit 2) unless ``path`` can be created or appended to
    (an object-store URL: an object can be written beside it)."""
    if remote.is_url(str(path)):
        remote.probe(str(path), what)
        return
    target = Path(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise OutputPathError(str(path), what, _problem(exc)) from None
    try:
        if st is not None:
            if stat.S_ISDIR(st.st_mode):
                raise OutputPathError(str(path), what, "it is a directory")
            # O_APPEND without a write: tells EACCES/EROFS apart without touching the content.
            os.close(os.open(target, os.O_WRONLY | os.O_APPEND))
            return
        parent = target.parent
        if not parent.is_dir():
            problem = "its directory does not exist" if not parent.exists() else (
                f"{parent} is not a directory")
            raise OutputPathError(str(path), what, problem)
        _probe(parent)
    except OSError as exc:
        raise OutputPathError(str(path), what, _problem(exc)) from None


def check_dir(path: str | Path, what: str) -> None:
    """Create ``path`` (mode 0700) if needed and check a file can be created in it."""
    if remote.is_url(str(path)):
        remote.probe(str(path), what, prefix=True)
        return
    try:
        Path(path).mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _probe(Path(path))
    except OSError as exc:
        raise OutputPathError(str(path), what, _problem(exc)) from None


def _probe(directory: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".instasent-import-probe-", dir=directory)
    os.close(fd)
    os.unlink(name)


def open_private(path: str | Path) -> int:
    """A new (or truncated) file only its owner can read: personal data and ids."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
    # O_CREAT's mode does not apply to a file that already existed (say, 0644 from elsewhere).
    os.fchmod(fd, PRIVATE)
    return fd


def write_private(path: str | Path, data: bytes, *, resumable: bool = False) -> None:
    """Write a whole file mode 0600 (or one object, written whole); a failure is a
    :class:`StorageError` naming the path."""
    if remote.is_url(str(path)):
        try:
            remote.put_bytes(str(path), data)
        except Exception as exc:
            raise remote.storage_failure(str(path), exc, resumable=resumable) from None
        return
    try:
        fd = open_private(path)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    except OSError as exc:
        raise storage_error(path, exc, resumable=resumable) from None
