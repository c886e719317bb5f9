"""One exception root, grouped by what the caller should do.

    ImporterError                  root; ``exit_code`` is what the CLI returns
    ├── UsageError (2)             stop before any network call: fix the input and re-run
    │   ├── ConfigError            credentials, options, environment
    │   ├── InputError             a file is unreadable, unsupported or has a broken header
    │   ├── OutputPathError        a file or directory the run must write is not writable
    │   ├── MappingError           the mapping YAML is invalid (carries every problem)
    │   ├── StateBusy              another run holds the state directory (statelock.py)
    │   └── StateLocked            another run holds the --changed-only state (changes.py)
    ├── FatalApiError (1)          the API refused the run as a whole; resumable after the fix
    │   ├── AuthError              401: token missing, malformed or revoked
    │   ├── NotFoundError          404: unknown project/datasource, or token not allowed there
    │   ├── ConnectionProblem      no HTTP answer at all: DNS, refused, timeout, TLS, proxy
    │   └── UnexpectedResponse     an answer the Ingest API does not give (datasource.py)
    ├── StorageError (1)           writing a file failed mid-run (disk full, permissions):
    │   │                          the run stopped, resumable with ``--resume`` after the fix
    │   └── ReportNotWritten       only the report file failed; carries the ``report``
    ├── InputChanged (1)           an input object in storage changed while the run read it:
    │                              start the run again (without --resume)
    ├── NotConfirmed (1)           ``confirm_delete`` said no: nothing sent (changed_run.py)
    └── InternalError (1)          a bug, e.g. the accounting invariant does not hold
        └── RunCrashed             an unexpected error stopped a run; the crash log is named,
                                   the journal kept, ``--resume`` continues (crash.py)

The classes defined in other modules are importable from :mod:`importer` too
(``from importer import StateBusy``).

Bad *rows* are never exceptions: they flow as :class:`importer.records.Reject` records.
Messages never contain the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ImporterError(Exception):
    """Root of every error the importer raises on purpose."""

    exit_code: int = 1


class UsageError(ImporterError):
    """The run cannot start; nothing has been sent."""

    exit_code = 2


class ConfigError(UsageError):
    """Credentials, options or environment are wrong."""


class InputError(UsageError):
    """An input file cannot be used at all (as opposed to a bad row inside it)."""

    def __init__(self, path: str, problem: str, remedy: str = "") -> None:
        self.path = path
        self.problem = problem
        self.remedy = remedy
        text = f"{path}: {problem}"
        if remedy:
            text += f" — {remedy}"
        super().__init__(text)


class OutputPathError(UsageError):
    """A file or directory the run would write cannot be written; checked before sending."""

    def __init__(self, path: str, what: str, problem: str) -> None:
        self.path = path
        super().__init__(
            f"cannot write the {what} {path}: {problem} — choose another path or fix the "
            "directory; nothing was sent"
        )


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """One problem found in a mapping file; ``line`` is 1-based in the YAML (0 = unknown)."""

    message: str
    line: int = 0
    severity: str = "error"  # "error" stops the run, "warning" is reported only

    def render(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        return f"{where}: {self.severity}: {self.message}"


class MappingError(UsageError):
    """The mapping file is invalid; ``problems`` lists every error found, not just the first."""

    def __init__(self, path: str, problems: Sequence[MappingProblem]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = [p.render(path) for p in self.problems]
        count = sum(1 for p in self.problems if p.severity == "error")
        head = f"{path}: {count} problem{'s' if count != 1 else ''} in the mapping"
        super().__init__("\n".join([head, *lines]))


class FatalApiError(ImporterError):
    """The API refused the whole run; stop at once and keep state so it can be resumed."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class AuthError(FatalApiError):
    """401: the token is missing, malformed or revoked."""


class NotFoundError(FatalApiError):
    """404: the project or datasource id is wrong, or the token is not allowed on it."""


class StorageError(ImporterError):
    """Writing a file failed while the run was under way (disk full, permission changed).

    The run stops at once; what was acknowledged is in the journal, so ``--resume`` continues
    it once the disk or the permission is fixed. ``resumable`` is False for a write after the
    run (the report), where there is nothing left to resume.
    """

    exit_code = 1

    def __init__(self, path: str, reason: str, *, resumable: bool = True,
                 remedy: str | None = None) -> None:
        self.path = path
        self.reason = reason
        self.resumable = resumable
        self.remedy = remedy  # what to fix (default: free space or fix the permission)
        text = f"cannot write {path}: {reason}"
        if resumable:
            text += (f" — the run stopped; {remedy or 'free space or fix the permission'}, "
                     "then re-run with --resume")
        elif remedy:
            text += f" — {remedy}"
        super().__init__(text)


class InputChanged(ImporterError):
    """An input object (S3, GCS, Azure, https) is no longer the version the run inspected:
    its ETag or generation changed while it was being read (an export still being written,
    or replaced). The run stops; the journal is kept.

    ``--resume`` would refuse (the run's identity includes the object's version), so the
    message says to start again: rows already sent are upserts by ``_user_id`` or events
    with stable ids, safe to send again.
    """

    exit_code = 1

    def __init__(self, path: str, inspected: str, found: str) -> None:
        self.path = path
        super().__init__(
            f"{path}: the object changed while it was being read (version {inspected} when "
            f"the run started, {found or 'another'} now) — the run stopped. The rows sent "
            "from it so far are safe to send again (contacts are upserted by _user_id, "
            "events carry stable ids): once the export is complete, run the same command "
            "again, without --resume (a resume would refuse a changed input)")


class InternalError(ImporterError):
    """A bug in the importer (for instance the accounting invariant does not hold)."""

    exit_code = 1


class ReportNotWritten(StorageError):
    """The run finished but its report file could not be written; ``report`` is the report."""

    def __init__(self, path: str, reason: str, report: object) -> None:
        super().__init__(path, reason, resumable=False)
        self.report = report
