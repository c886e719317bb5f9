"""A run's side of ``--changed-only``: which items to skip, what to record, what to delete.

:class:`ChangeTracker` is what :mod:`importer.pipeline` talks to through three small hooks:
``keep`` (before chunking: drop the items the datasource already has), ``record`` (an
answered request: its acknowledged items) and ``close`` (fold the run's acknowledgements into
a new snapshot). The state itself lives in :mod:`importer.changes`.

``--delete-missing`` reads the input once more before anything is sent, for its keys only
(a ``_user_id``-only mapping, so rows rejected or filtered by the real mapping still count
as present), because its guards must refuse the run with nothing sent: any unreadable row,
or more deletions than ``--max-delete``. The deletions themselves go through ``delete``'s
machinery (:func:`importer.delete.adelete_contacts`: pacing, ``already_absent`` for
404s, their own rejects file), at the same time as the upserts (the API limits each endpoint
separately, and a deleted contact is by definition not in today's input).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from importer.changes import (
    AckLog,
    MaxDelete,
    StateKey,
    TargetState,
    acquire_lock,
    compact,
    drop_other_mappings,
    load_state,
    manifest_of,
)
from importer.config import DEFAULT_API_URL, Credentials
from importer.exceptions import ConfigError, ImporterError, UsageError
from importer.mapping import FieldSpec, MappingSpec, compile_mapping
from importer.remote import is_url, public
from importer.sources import ReadOptions, SourceFile, iter_batches
from importer.statelock import StateLock

if TYPE_CHECKING:
    from importer.check import DatasourceInfo
    from importer.delete import DeleteReport
    from importer.upload import UploadSettings

#: The rejects of ``--delete-missing``'s deletions, beside the first input.
DELETE_REJECTS_SUFFIX = ".delete-rejects.csv"

#: ``--max-delete``'s default: 5% of the contacts recorded for the datasource.
DEFAULT_MAX_DELETE = MaxDelete(None, 5.0)

ConfirmDelete = Callable[["DatasourceInfo", int], bool]


@dataclass(frozen=True, slots=True)
class ChangeOptions:
    full: bool = False  # send everything, and rebuild the state from what is acknowledged
    delete_missing: bool = False
    max_delete: MaxDelete = DEFAULT_MAX_DELETE


class NotConfirmed(ImporterError):
    """The user did not confirm ``--delete-missing``'s deletions: nothing sent (exit 1)."""


def state_credentials(env: Mapping[str, str] | None = None) -> Credentials:
    """Which datasource the state belongs to, without the token (dry runs, ``validate``)."""
    env = os.environ if env is None else env
    project, datasource = env.get("INSTASENT_PROJECT", ""), env.get("INSTASENT_DATASOURCE", "")
    if not project or not datasource:
        raise ConfigError("--changed-only needs INSTASENT_PROJECT and INSTASENT_DATASOURCE "
                          "(the state is kept per datasource), even without sending")
    return Credentials(env.get("INSTASENT_API_URL") or DEFAULT_API_URL, project, datasource, "")


@dataclass
class Removal:
    """``--delete-missing``: recorded contacts absent from today's input."""

    ids: list[str]
    recorded: int
    note: str = ""
    refused: str | None = None  # the guard that stops the run (exit 2), if one does


class ChangeTracker:
    """The changed-only state of every target of one run (one lock for the datasource)."""

    def __init__(
        self,
        root: str | Path,
        credentials: Credentials,
        spec: MappingSpec,
        targets: Sequence[str],
        options: ChangeOptions,
        *,
        write: bool,
        run_id: str = "",
    ) -> None:
        self.options = options
        self.write = write
        keys = {t: StateKey(credentials.api_url, credentials.project, credentials.datasource,
                            t, spec.sha256, Path(spec.path).stem) for t in targets}
        self._lock: StateLock | None = None
        if write:
            scope = next(iter(keys.values())).scope_dir(root)
            self._lock = acquire_lock(
                scope, f"datasource {credentials.project}/{credentials.datasource}")
        try:
            self.states: dict[str, TargetState] = {
                t: load_state(root, k, full=options.full, write=write,
                              track_seen=options.delete_missing and t == "contacts")
                for t, k in keys.items()
            }
            if write:
                for state in self.states.values():
                    # named by start time: logs fold in name order, which must be write order
                    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
                    name = f"acks-{stamp}-{run_id or 'run'}-{os.getpid()}.log"
                    state.log = AckLog(state.directory / name)
        except BaseException:
            self._unlock()
            raise
        # Two targets: rows whose contact was skipped, so their skipped event makes the row
        # "unchanged" (rather than "accepted": its contact went out).
        self.first_skipped: dict[str, list[np.ndarray[Any, Any]]] = {}
        self._sorted: dict[str, bool] = {}
        self.deletion: DeleteReport | None = None

    # -- messages ------------------------------------------------------------------------------
    def notices(self) -> list[str]:
        """The line said at the start of the run, per target."""
        out = []
        for target, s in self.states.items():
            if s.status == "mapping_changed":
                out.append(f"{target}: mapping changed since the last run: sending everything")
            elif s.status == "first":
                out.append(f"{target}: no changed-only state for this datasource and mapping "
                           "yet: sending everything and recording it")
            elif s.status == "full":
                out.append(f"{target}: --full: sending everything and rebuilding the state")
        return out

    def summary(self) -> dict[str, Any]:
        return {t: {"status": s.status, "recorded_before": s.recorded, "unchanged": s.unchanged,
                    "compared_sent": s.sent} for t, s in self.states.items()}

    # -- the hooks -----------------------------------------------------------------------------
    def keep(
        self, target: str, rows: Sequence[int], keys: Sequence[str], bodies: Sequence[bytes]
    ) -> tuple[Sequence[int], Sequence[str], Sequence[bytes], Sequence[int]]:
        """Items to send, and the source rows of those skipped as unchanged."""
        keep = self.states[target].compare(keys, bodies)
        if keep.all():
            return rows, keys, bodies, ()
        flags = keep.tolist()
        skipped = list(itertools.compress(rows, (not f for f in flags)))
        return (list(itertools.compress(rows, flags)), list(itertools.compress(keys, flags)),
                list(itertools.compress(bodies, flags)), skipped)

    def note_first_skipped(self, source_file: str, rows: Sequence[int]) -> None:
        if rows:
            self.first_skipped.setdefault(source_file, []).append(np.asarray(rows, np.int64))

    def skipped_first(self, source_file: str, rows: Sequence[int]) -> int:
        """How many of ``rows`` had their contact skipped as unchanged too (asked in the last
        pass only, once the first is over: each file's rows are joined and sorted once)."""
        parts = self.first_skipped.get(source_file)
        if not parts or not rows:
            return 0
        if len(parts) > 1:
            parts[:] = [np.sort(np.concatenate(parts))]
        elif not self._sorted.get(source_file):
            parts[0] = np.sort(parts[0])
        self._sorted[source_file] = True
        skipped = parts[0]
        wanted = np.asarray(rows, np.int64)
        at = np.minimum(np.searchsorted(skipped, wanted), len(skipped) - 1)
        return int((skipped[at] == wanted).sum())

    def record(self, target: str, keys: Sequence[str], bodies: Sequence[bytes]) -> None:
        """Acknowledged items; written before the journal hears of them (see changes.py)."""
        log = self.states[target].log
        if log is not None:
            log.append(keys, bodies)

    # -- --delete-missing ------------------------------------------------------------------------
    def find_removals(
        self, spec: MappingSpec, sources: Sequence[SourceFile], read: ReadOptions
    ) -> Removal:
        """Read every input row's ``_user_id``; refuse (UsageError, exit 2) on the guards."""
        removal = self.scan_removals(spec, sources, read)
        if removal.refused:
            raise UsageError(removal.refused)
        return removal

    def scan_removals(
        self, spec: MappingSpec, sources: Sequence[SourceFile], read: ReadOptions
    ) -> Removal:
        """Recorded contacts no input row names; ``refused`` says which guard would stop."""
        state = self.states.get("contacts")
        if state is None:
            raise UsageError("--delete-missing deletes contacts: the mapping has no contacts "
                             "target")
        if state.status in ("first", "mapping_changed"):
            return Removal([], 0, "--delete-missing: no contacts were recorded with this "
                           "mapping yet, so nothing is deleted this time")
        keys_only = key_mapping(spec)
        unreadable, first = 0, ""
        for source in sources:
            compiled = compile_mapping(keys_only, source.columns)
            for batch in iter_batches(source, read):
                if batch.rejects and not first:
                    r = batch.rejects[0]
                    first = f" (first: {r.source_file} row {r.source_row}: {r.message})"
                unreadable += len(batch.rejects)
                state.mark_seen(compiled.map_batch(batch).items["contacts"].keys)
        ids = state.missing_keys()
        removal = Removal(ids, state.recorded)
        limit = self.options.max_delete.limit(state.recorded)
        if unreadable:
            removal.refused = (
                f"--delete-missing refused: {unreadable:,} row(s) of the input could not be "
                f"read{first}. A contact on such a row would look absent and be deleted — fix "
                "the file (or run without --delete-missing); nothing was sent")
        elif len(ids) > limit:
            share = 100 * len(ids) / max(state.recorded, 1)
            removal.refused = (
                f"--delete-missing refused: {len(ids):,} of the {state.recorded:,} recorded "
                f"contacts ({share:.1f}%) are absent from today's input, over --max-delete "
                f"{self.options.max_delete.describe()} (= {limit:,}). Is the export complete? "
                "If these deletions are meant, raise --max-delete (a count or a percentage); "
                "nothing was sent")
        return removal

    def preview(self, target: str, keys: Sequence[str], bodies: Sequence[bytes]) -> None:
        """``validate --changed-only``: compare without sending (counts in :meth:`summary`)."""
        self.states[target].compare(keys, bodies)

    async def delete(
        self,
        removal: Removal,
        credentials: Credentials,
        *,
        upload: UploadSettings,
        timeout: float,
        rejects_path: str,
        transport: httpx.AsyncBaseTransport | None,
        shown_as: str | None = None,
    ) -> DeleteReport:
        """Delete ``removal.ids`` as ``delete`` does; forget each deleted (or absent) one.

        ``shown_as``: the rejects file's name in the report when ``rejects_path`` is a local
        copy of it (an object in a bucket, uploaded by :mod:`importer.mirror`)."""
        from importer.delete import DeleteOptions, DeletePlan, adelete_contacts

        plan = DeletePlan(
            ids=tuple(removal.ids),
            origins=tuple(("changed-only state", i) for i in range(1, len(removal.ids) + 1)),
            column="_user_id",
            requested=len(removal.ids),
        )
        log = self.states["contacts"].log

        def forget(ids: Sequence[str]) -> None:
            if log is not None:
                log.append(ids, None)

        report = await adelete_contacts(
            plan, credentials, DeleteOptions(upload=upload, timeout=timeout,
                                             rejects_path=rejects_path),
            transport=transport, on_done=forget,
        )
        if shown_as is not None and report.rejects_path is not None:
            report = dataclasses.replace(
                report, rejects_path=shown_as,
                rerun=report.rerun and report.rerun.replace(report.rejects_path, shown_as))
        self.deletion = report
        return report

    # -- the end ---------------------------------------------------------------------------------
    def close(self, *, complete: bool) -> None:
        """Fold this run's acknowledgements into a new snapshot, then release the lock.

        ``complete``: the run went through its whole input, so ``--full`` may replace the
        state and a new mapping's state may replace the old mapping's.
        """
        try:
            for state in self.states.values():
                if state.log is None:
                    continue
                state.log.close()
                rebuild = complete and state.status == "full"
                if not state.log.items and not rebuild:
                    # nothing acknowledged: leave the state as it was (a run refused before
                    # sending must not turn a first run into an empty "recorded" state)
                    state.log.path.unlink(missing_ok=True)
                    continue
                compact(state.directory, manifest_of(state.key), rebuild=rebuild,
                        keep_keys=state.key.target == "contacts")
                if complete and state.status == "mapping_changed":
                    drop_other_mappings(state.directory)
        finally:
            self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def key_mapping(spec: MappingSpec) -> MappingSpec:
    """The mapping reduced to the contacts' ``_user_id``: no row filter, nothing else."""
    contacts = next(t for t in spec.targets if t.target == "contacts")
    key = next(f for f in contacts.fields if isinstance(f, FieldSpec) and f.name == "_user_id")
    target = dataclasses.replace(contacts, fields=(key,), pass_through=None)
    return dataclasses.replace(spec, skip_if=(), targets=(target,))


def delete_rejects_path(first_input: str) -> str:
    """Beside the first input (in its bucket for a URL, without its query string)."""
    if is_url(first_input):
        base, _, name = public(first_input).rpartition("/")
        return f"{base}/{name.split('.')[0] or 'instasent'}{DELETE_REJECTS_SUFFIX}"
    path = Path(first_input)
    name = path.name.split(".")[0] or "instasent"
    return str(path.with_name(name + DELETE_REJECTS_SUFFIX))
