"""Outputs kept in object storage (``--state-dir``, ``--rejects`` as ``s3://``, ``gs://``,
``az://`` URLs), for a job whose container is thrown away after each run.

The code that writes the journal, the ``--changed-only`` state, crash logs and the rejects
file keeps working on local files: :class:`Outputs` gives it a private working copy (a
temporary directory, mode 0700) — the state prefix pulled when the run starts, the rejects
object when a run is resumed — and uploads what changed as whole objects (a PUT is atomic:
a reader sees the old object or the new one, never half of it), every
:func:`checkpoint_seconds` from a thread (the event loop never waits on storage) and once
more at the end.

What the bucket holds is always a state that ``--resume`` continues, whenever the process
is killed:

- ``journal.sqlite`` is a consistent snapshot (SQLite's backup API reads one transaction's
  view while the run goes on writing). It lags the run by up to a checkpoint: rows
  acknowledged since are sent again by ``--resume``, which is safe (contacts upsert, events
  carry ``_event_id``).
- the rejects file is the records written so far, cut at the last whole record (a Parquet
  file is only valid once closed: it is uploaded at the end only). Rejected rows are not in
  the journal — the rejects file is their record — so a row is redone on ``--resume`` exactly
  when it is in neither: one the bucket's rejects file misses is rejected again and appended
  once; one it holds is skipped. Neither lost nor duplicated, whichever object is newer.
- each sync first takes the journal's snapshot, then copies and uploads the rejects, the
  ``--changed-only`` files (acknowledgement logs and snapshots, then the manifests that point
  at them), then the journal snapshot, and last deletes what the run removed. Everything the
  snapshot records was written before it was taken, so the copies made after it hold it:
  the bucket's journal never marks a row done whose acknowledgement the bucket's state
  lacks. Checkpoints stop before the run marks its journal finished (:meth:`Outputs.stop`):
  a finished journal (acknowledgements dropped) is uploaded by the last sync only, after
  the whole rejects file (a Parquet one included).

One run at a time over a state prefix: a ``lock`` object created only if absent (a
conditional PUT), holding pid, host and start time, its heartbeat renewed at every
checkpoint (in ``lock.beat``). A lock is stale — taken over — when its holder is on this
host and no longer alive, or its heartbeat is older than :data:`STALE_SECONDS` (a container
killed elsewhere). Two processes taking the same stale lock over at the same moment could
both believe they hold it; the loser finds out at its next heartbeat and stops (exit 1).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from importer import remote
from importer.exceptions import OutputPathError, StorageError
from importer.rejects import drop_partial_line, drop_partial_record, meta_path
from importer.statelock import StateBusy
from importer.storage import storage_error

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

#: Seconds between checkpoints (``INSTASENT_CHECKPOINT_SECONDS``): what a ``kill -9`` makes
#: ``--resume`` send again, against one PUT of the journal per checkpoint.
CHECKPOINT_SECONDS = 10.0
#: A lock whose heartbeat is older than this is taken over (its holder died elsewhere).
STALE_SECONDS = 300.0
#: Checkpoints failing in a row that stop the run (exit 1, resumable).
FAILED_CHECKPOINTS = 3
LOCK = "lock"
JOURNAL = "journal.sqlite"
MANIFEST = "state.json"
# the journal's companions (it is uploaded as a snapshot), temporary files, the local flock
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".tmp", ".part")


def checkpoint_seconds() -> float:
    text = os.environ.get("INSTASENT_CHECKPOINT_SECONDS", "")
    try:
        return max(float(text), 0.1) if text else CHECKPOINT_SECONDS
    except ValueError:
        return CHECKPOINT_SECONDS


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _signature(*paths: Path) -> tuple[int, ...]:
    out: list[int] = []
    for path in paths:
        try:
            st = path.stat()
            out += [st.st_size, st.st_mtime_ns]
        except FileNotFoundError:
            out += [-1, -1]
    return tuple(out)


class LockLost(StorageError):
    """Another process took the state's lock over while this run held it."""


class _Lock:
    """The ``lock`` object of a state prefix (see the module docstring).

    The lock object is only ever created (if absent) or deleted, never rewritten: the
    heartbeat goes to a second object, ``lock.beat``, so that renewing it cannot overwrite
    the lock of a process that has just taken it over."""

    def __init__(self, fs: AbstractFileSystem, path: str, url: str) -> None:
        self.fs, self.path, self.url = fs, path, url
        self.beat_path = f"{path}.beat"
        self.record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _now(),
            "heartbeat": time.time(),
            "command": " ".join(["instasent-import", *map(remote.public, sys.argv[1:])]),
            "id": secrets.token_hex(8),
        }
        self.held = False
        self.lost: LockLost | None = None  # another process took it over

    def acquire(self) -> None:
        for _ in range(3):
            try:
                with self.fs.open(self.path, "xb") as fh:
                    fh.write(json.dumps(self.record).encode())
                self.held = True
                return
            except FileExistsError:
                holder = self.read()
                if holder is not None and not _stale(holder):
                    raise StateBusy(_busy_message(self.url, holder), holder) from None
                with contextlib.suppress(FileNotFoundError):  # stale or unreadable: take it
                    self.fs.rm_file(self.path)
        raise StateBusy(f"the state {self.url} is being locked and unlocked by other "
                        "processes: run again once they are done")

    def read(self) -> dict[str, Any] | None:
        """The holder's record with its last heartbeat; {} if none, None if unreadable."""
        holder = _json(self.fs, self.path)
        beat = _json(self.fs, self.beat_path)
        if holder and beat and beat.get("id") == holder.get("id"):
            holder["heartbeat"] = beat.get("heartbeat")
        return holder

    def beat(self) -> None:
        """Renew the heartbeat, unless another process took the lock over."""
        holder = self.read()
        if not holder or holder.get("id") != self.record["id"]:
            self.held = False
            who = _who(holder) if holder else "nobody (it was deleted)"
            self.lost = LockLost(
                self.url, f"its lock is now held by {who}", resumable=False,
                remedy="this run stopped saving its state there; make sure one job at a time "
                "uses this state, then run again")
            raise self.lost
        beat = {"id": self.record["id"], "heartbeat": time.time()}
        self.fs.pipe_file(self.beat_path, json.dumps(beat).encode())

    def release(self) -> None:
        if self.held:
            self.held = False
            holder = self.read()
            if holder and holder.get("id") == self.record["id"]:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm_file(self.beat_path)
                self.fs.rm_file(self.path)


def _json(fs: AbstractFileSystem, path: str) -> dict[str, Any] | None:
    try:
        found = json.loads(fs.cat_file(path))
    except FileNotFoundError:
        return {}
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale(holder: dict[str, Any]) -> bool:
    beat = holder.get("heartbeat")
    if not isinstance(beat, int | float) or time.time() - beat > STALE_SECONDS:
        return True
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and (
        not _alive(pid))


def _who(holder: dict[str, Any]) -> str:
    beat = holder.get("heartbeat")
    ago = f", last heartbeat {time.time() - beat:.0f}s ago" if isinstance(beat, int | float) else ""
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', 'an unknown host')}, started "
            f"{holder.get('started', '?')}{ago}")


def _busy_message(url: str, holder: dict[str, Any]) -> str:
    command = f": {holder['command']}" if holder.get("command") else ""
    return (
        f"another instasent-import is running over the state {url} ({_who(holder)}{command}). "
        "Two runs over one journal would send rows twice: wait for it to end, then run again. "
        f"If that process is gone, its lock is taken over once its heartbeat is "
        f"{STALE_SECONDS / 60:.0f} minutes old; to clear it sooner, make sure no run uses "
        f"this state, then delete {remote.join(url, LOCK)}"
    )


@dataclass
class _State:
    """A state prefix and its local working copy."""

    url: str
    fs: AbstractFileSystem
    root: str  # the prefix inside the filesystem
    local: Path
    scratch: Path
    lock: _Lock | None = None
    sent: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> as uploaded
    remote: set[str] = field(default_factory=set)  # names known to be in the bucket
    journal_saved: bool = False  # a journal of this run is in the bucket (--resume works)

    def pull(self) -> None:
        self.fs.invalidate_cache(self.root)  # (listings are cached per process)
        for key, info in sorted(self.fs.find(self.root, detail=True).items()):
            name = key[len(self.root):].lstrip("/")
            if not name or name in (LOCK, f"{LOCK}.beat") or info.get("type") == "directory":
                continue
            target = self.local / name
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            remote.get_file(remote.join(self.url, name), target)
            self.remote.add(name)
            self.sent[name] = _signature(target)
        self.sent[JOURNAL] = self._journal_signature()

    def _journal_signature(self) -> tuple[int, ...]:
        path = self.local / JOURNAL
        return _signature(path, path.with_name(JOURNAL + "-wal"))

    def _names(self) -> list[str]:
        names = []
        for path in self.local.rglob("*"):
            name = path.relative_to(self.local).as_posix()
            if (path.is_file() and name != JOURNAL and path.name != LOCK
                    and not path.name.endswith(_SKIP_SUFFIXES)):
                names.append(name)
        return sorted(names, key=lambda n: (n.endswith(MANIFEST), n))  # manifests last

    def snapshot(self) -> tuple[Path, tuple[int, ...]] | None:
        """The journal as it is now, if it changed since it was last uploaded."""
        signature = self._journal_signature()
        if not (self.local / JOURNAL).exists() or signature == self.sent.get(JOURNAL):
            return None
        copy = self.scratch / JOURNAL
        _backup(self.local / JOURNAL, copy)
        return copy, signature

    def push(self, journal: tuple[Path, tuple[int, ...]] | None) -> None:
        """Upload the files that changed, then ``journal`` (a :meth:`snapshot` taken before
        them), then delete what is gone."""
        names = self._names()
        for name in names:
            source = self.local / name
            now = _signature(source)
            if now != self.sent.get(name):
                self._upload(source, name)
                self.sent[name] = now
        if journal is not None:
            self._upload(journal[0], JOURNAL, copy=False)
            self.sent[JOURNAL] = journal[1]
            self.journal_saved = True
        for gone in sorted(self.remote - set(names) - {JOURNAL}):
            try:
                self.fs.rm_file(f"{self.root}/{gone}")
            except FileNotFoundError:
                pass
            except Exception as exc:
                raise _failure(remote.join(self.url, gone), exc, self.journal_saved) from None
            self.remote.discard(gone)

    def _upload(self, source: Path, name: str, *, copy: bool = True) -> None:
        url = remote.join(self.url, name)
        try:
            if copy:  # a file appended to meanwhile (an acknowledgement log): a stable copy
                staged = self.scratch / "upload"
                _private_copy(source, staged)
                source = staged
            self.fs.put_file(str(source), f"{self.root}/{name}")
        except Exception as exc:
            raise _failure(url, exc, self.journal_saved) from None
        self.remote.add(name)


def _failure(url: str, exc: BaseException, resumable: bool) -> StorageError:
    """An upload that failed: ``--resume`` is offered only when the bucket holds a journal of
    this run to resume from."""
    if resumable:
        return remote.storage_failure(url, exc)
    fix = remote.problem(exc)[1]
    return remote.storage_failure(url, exc, resumable=False, remedy=(
        f"{fix}; no journal of this run reached the bucket, so run the same command again "
        "without --resume once fixed (rows already sent are sent again, which is safe)"))


def _private_copy(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target``, created mode 0600 (personal data, like the original)."""
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    shutil.copyfile(source, target)


def _backup(source: Path, target: Path) -> None:
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # empty, private
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


@dataclass
class _Copy:
    """A file of the run (the rejects file or its sidecar) written locally for ``url``."""

    url: str
    local: Path
    sent: tuple[int, ...] = ()


class Outputs:
    """The run's outputs that live in object storage; with none, every method does nothing.

    ``with Outputs() as outputs:`` — :meth:`state_dir` and :meth:`local` give the local
    paths to work on, :meth:`start` starts the checkpoints, leaving the block uploads what
    changed (an error already on its way out is kept over a failed upload), releases the
    lock and removes the working copy.
    """

    def __init__(self) -> None:
        self._scratch: Path | None = None
        self._state: _State | None = None
        self._files: dict[str, _Copy] = {}
        self._guard = threading.Lock()  # one sync at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_failure: Callable[[StorageError], object] | None = None

    @property
    def scratch(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="instasent-import-"))  # mode 0700
        return self._scratch

    def state_dir(self, url: str, *, write: bool = True) -> str:
        """The working copy of the state prefix ``url``, pulled from the bucket; locked
        (and pushed back) when the run will ``write`` it. Raises StateBusy, OutputPathError."""
        fs, root = remote.filesystem(url)
        shown = remote.public(url)
        if write:
            remote.probe(url, "state directory", prefix=True)
        local = self.scratch / "state"
        local.mkdir(mode=0o700)
        state = _State(shown, fs, root.rstrip("/"), local, self.scratch)
        if write:
            state.lock = _Lock(fs, f"{state.root}/{LOCK}", shown)
            state.lock.acquire()
        try:
            state.pull()
        except Exception as exc:  # never pushed back: a half-pulled copy would overwrite it
            if state.lock is not None:
                with contextlib.suppress(Exception):
                    state.lock.release()
            what, remedy = remote.problem(exc)
            raise OutputPathError(shown, "state directory", f"cannot read it: {what} — "
                                  f"{remedy}") from None
        if write:
            self._state = state
        return str(local)

    def shown(self, path: str | Path) -> str:
        """A path of the working copy as the URL it stands for (for messages)."""
        if self._state is not None and Path(path).is_relative_to(self._state.local):
            inside = Path(path).relative_to(self._state.local).as_posix()
            return self._state.url if inside == "." else remote.join(self._state.url, inside)
        return str(path)

    def local(self, path: str, *, fetch: bool = False) -> str:
        """Where the run writes ``path``: itself when local; for a URL, a private copy
        (holding the object and its sidecar as they are when ``fetch``: a resumed run appends
        to them), uploaded at checkpoints and at the end."""
        if not remote.is_url(path):
            return path
        copy = self._files.get(path)
        if copy is None:
            folder = self.scratch / f"out{len(self._files)}"
            folder.mkdir(mode=0o700)
            copy = _Copy(path, folder / path.rstrip("/").rsplit("/", 1)[-1])
            self._files[path] = copy
            sidecar = f"{path}.meta.json"
            self._files[sidecar] = _Copy(sidecar, meta_path(copy.local))
        if fetch and not copy.local.exists():
            try:
                for one in (copy, self._files[f"{path}.meta.json"]):
                    if remote.get_file(one.url, one.local):
                        one.sent = _signature(one.local)
            except Exception as exc:
                raise remote.storage_failure(path, exc, resumable=True) from None
        return str(copy.local)

    # -- checkpoints ---------------------------------------------------------------------------
    def start(self) -> None:
        """Checkpoints from now on, every :func:`checkpoint_seconds`, in a thread."""
        if self._thread is None and (self._state is not None or self._files):
            self._thread = threading.Thread(target=self._checkpoints, daemon=True,
                                            name="instasent-import-checkpoints")
            self._thread.start()

    def _checkpoints(self) -> None:
        every = checkpoint_seconds()
        failed, took = 0, 0.0
        # (a sync that takes long — a large rejects file — is followed by a longer pause:
        # uploads take at most a third of the time)
        while not self._stop.wait(max(every, 2 * took)):
            began = time.monotonic()
            try:
                self.sync(final=False)
                failed, took = 0, time.monotonic() - began
            except StorageError as exc:
                # A hiccup is tried again next time; a lost lock (another process owns the
                # state now) or a bucket that keeps refusing (expired credentials) stops the
                # run rather than send for hours what --resume would send again.
                failed += 1
                if isinstance(exc, LockLost) or failed >= FAILED_CHECKPOINTS:
                    if self.on_failure is not None:
                        self.on_failure(exc)
                    return
            except Exception:  # (a local copy failed) tried again, and raised at the end
                continue

    def sync(self, *, final: bool) -> None:
        """Upload what changed: rejects, the state's files, its journal (see module doc)."""
        with self._guard:
            state = self._state
            if state is not None and state.lock is not None:
                if state.lock.lost is not None:
                    raise state.lock.lost  # the state is another process's now: hands off
                try:
                    state.lock.beat()
                except LockLost:
                    raise
                except Exception as exc:
                    raise _failure(remote.join(state.url, LOCK), exc, state.journal_saved) from None
            journal = state.snapshot() if state is not None else None  # first: see above
            for copy in list(self._files.values()):  # (a copy: registered meanwhile)
                self._push_file(copy, final=final)
            if state is not None:
                state.push(journal)

    def _push_file(self, copy: _Copy, *, final: bool) -> None:
        now = _signature(copy.local)
        if now == copy.sent or not copy.local.exists():
            return
        suffix = copy.local.suffix
        if suffix == ".parquet" and not final:
            return  # valid only once closed
        staged = self.scratch / "upload"
        _private_copy(copy.local, staged)
        if suffix == ".csv":
            drop_partial_record(staged)
        elif suffix == ".ndjson":
            drop_partial_line(staged)
        elif suffix == ".json" and not final:
            try:  # the sidecar, caught while being written: next time
                json.loads(staged.read_bytes())
            except ValueError:
                return
        try:
            remote.put_file(staged, copy.url)
        except Exception as exc:
            state = self._state
            raise _failure(copy.url, exc, state is None or state.journal_saved) from None
        copy.sent = now

    def stop(self) -> None:
        """No more checkpoints (waits for one under way): before the journal says the run
        finished, which only the last sync may upload, after every rejects file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def close(self, *, push: bool = True) -> None:
        """Stop the checkpoints, upload what changed (``push``), release the lock, clean up."""
        self.stop()
        try:
            if push:
                self.sync(final=True)
        except StorageError:
            raise
        except Exception as exc:  # the local copy (a full temporary disk)
            raise storage_error(self.scratch, exc) from None
        finally:
            if self._state is not None and self._state.lock is not None:
                with contextlib.suppress(Exception):  # a lock left behind goes stale: safe
                    self._state.lock.release()
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        failing = exc is not None
        try:
            self.close()
        except Exception:
            if not failing:  # an error already on its way out says more
                raise


_current: ContextVar[Outputs | None] = ContextVar("instasent_import_outputs", default=None)


@contextlib.contextmanager
def outputs() -> Iterator[Outputs]:
    """The :class:`Outputs` of the command under way: the one an enclosing call opened
    (``retry`` holds the state and runs the import inside), else a new one, closed at the
    end — so that one sync orders all of a run's uploads."""
    found = _current.get()
    if found is not None:
        yield found
        return
    with Outputs() as made:
        token = _current.set(made)
        try:
            yield made
        finally:
            _current.reset(token)
