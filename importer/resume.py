"""What an interrupted run already did, and the decision to resume or restart.

A re-run of the same inputs with the same mapping after a crash could mean "continue" or
"send it all again" (say, the datasource was wiped): only the user knows, and a wrong guess
either silently skips rows or silently repeats hours of work. So the importer asks: without
``--resume`` or ``--restart`` it stops with exit code 2 and says what it found.

Rows done before are those the journal has as acknowledged for the run's last target, plus
the rows already in the run's rejects file (the file itself is their record).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from importer.exceptions import ImporterError, UsageError
from importer.journal import Journal, RunRecord
from importer.records import SOURCE_FILE, SOURCE_ROW
from importer.remote import is_url
from importer.sources import ReadOptions, iter_batches, resolve_inputs

ResumeMode = Literal["resume", "restart"]
_RETRYABLE = "_reject_retryable"


@dataclass(frozen=True, slots=True)
class Earlier:
    """Rows an earlier invocation of this run finished, per source file."""

    done: Mapping[str, pl.Series] = field(default_factory=dict)
    first_target_acked: Mapping[str, pl.Series] = field(default_factory=dict)
    rejects_path: str | None = None
    # Rows the rejects file held already, and how many of them are retryable: they are this
    # run's rejects too, so they count in its exit code.
    rejected: int = 0
    retryable: int = 0
    # The retryable ones, per source file: `retry` sends them later, so the resumed run must
    # hold back the later rows of their keys, as the first invocation did (ordering.py).
    retryable_rows: Mapping[str, pl.Series] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.done or self.first_target_acked or self.rejects_path)


def unfinished_message(record: RunRecord, acked: int) -> str:
    return (
        f"an unfinished run of these inputs with this mapping exists (run {record.run_id}, "
        f"started {record.started}, status {record.status}, {acked:,} rows acknowledged). "
        "Re-run with --resume to continue it (rows already acknowledged or rejected are "
        "skipped, rejects are appended to the same file), or --restart to start over"
    )


@dataclass(frozen=True, slots=True)
class EarlierRejects:
    rows: Mapping[str, pl.Series]  # per source file, the rows the rejects file holds
    count: int = 0
    retryable: int = 0
    retryable_rows: Mapping[str, pl.Series] = field(default_factory=dict)  # per source file


def rows_in_rejects(path: str) -> EarlierRejects:
    """The rows a rejects file holds (``_source_row`` per ``_source_file``), how many, and how
    many of them are retryable."""
    if not Path(path).exists():
        return EarlierRejects({})
    try:
        (source,) = resolve_inputs([path], ReadOptions())
        parts = [
            b.frame.select(
                SOURCE_FILE, SOURCE_ROW,
                pl.col(_RETRYABLE) if _RETRYABLE in b.frame.columns
                else pl.lit(None, pl.String).alias(_RETRYABLE),
            )
            for b in iter_batches(source, ReadOptions())
        ]
    except ImporterError:
        return EarlierRejects({})  # unreadable (a Parquet file cut short by a kill): redone
    if not parts:
        return EarlierRejects({})
    frame = pl.concat(parts, how="vertical_relaxed").drop_nulls([SOURCE_FILE, SOURCE_ROW])
    retryable = frame[_RETRYABLE].cast(pl.String).str.to_lowercase() == "true"
    rows = {
        str(key[0]): group[SOURCE_ROW]
        for key, group in frame.group_by(SOURCE_FILE, maintain_order=True)
    }
    again = frame.filter(retryable)
    retryable_rows = {
        str(key[0]): group[SOURCE_ROW]
        for key, group in again.group_by(SOURCE_FILE, maintain_order=True)
    }
    return EarlierRejects(rows, frame.height, int(retryable.sum()), retryable_rows)


def _merge(a: Mapping[str, pl.Series], b: Mapping[str, pl.Series]) -> dict[str, pl.Series]:
    out = dict(a)
    for name, rows in b.items():
        out[name] = pl.concat([out[name], rows]).unique() if name in out else rows
    return out


def _respeller(
    inputs: Sequence[str], earlier_cwd: str
) -> Callable[[Mapping[str, pl.Series]], dict[str, pl.Series]]:
    """Re-key per-file rows from an earlier invocation's spelling of a path to today's."""
    today = {os.path.realpath(p): p for p in inputs}

    def respell(rows: Mapping[str, pl.Series]) -> dict[str, pl.Series]:
        out: dict[str, pl.Series] = {}
        for name, series in rows.items():
            canonical = os.path.realpath(os.path.join(earlier_cwd, name))
            key = today.get(canonical, name)
            out[key] = pl.concat([out[key], series]).unique() if key in out else series
        return out

    return respell


def refuse_if_unfinished(
    journal: Journal,
    run_id: str,
    targets: tuple[str, ...],
    mode: ResumeMode | None,
    *,
    inputs: Sequence[str] = (),
    mapping_sha: str = "",
) -> None:
    """Before any network call: without a choice, an unfinished run stops everything; and
    ``--resume`` with nothing to resume stops too, saying what it found (starting over
    instead would re-send the whole file and truncate the rejects file)."""
    record = journal.get(run_id)
    unfinished = record is not None and record.status != "finished"
    if unfinished and mode is None:
        assert record is not None
        acked = sum(len(s) for s in journal.acked(run_id, targets[-1]).values())
        raise UsageError(unfinished_message(record, acked))
    if mode == "resume" and not unfinished:
        raise UsageError(nothing_to_resume(journal, record, inputs, mapping_sha))


def nothing_to_resume(
    journal: Journal, record: RunRecord | None, inputs: Sequence[str], mapping_sha: str
) -> str:
    """What ``--resume`` found instead of an unfinished run of these inputs."""
    again = "run without --resume to import them again"
    if record is not None:
        return (f"--resume: the last run of these inputs with this mapping finished at "
                f"{record.updated}; nothing to resume ({again})")
    wanted = list(inputs)
    for other in journal.runs():
        if other.status == "finished" or list(other.meta.get("inputs") or ()) != wanted:
            continue
        if other.meta.get("mapping_sha256") != mapping_sha:
            what = "the mapping changed"
        else:
            what = ("the input changed (its size or modification time differ)"
                    if not any(is_url(i) for i in wanted) else
                    "an input changed (its size or the object's version differ)")
        return (f"--resume: {what} since the unfinished run started {other.started} (run "
                f"{other.run_id}); resuming it would skip or repeat the wrong rows, so "
                f"nothing was sent — {again} from the start")
    return (f"--resume: no earlier run of these inputs with this mapping is recorded in "
            f"{journal.shown}; nothing to resume ({again}, or point --state-dir / "
            "INSTASENT_STATE_DIR at the directory the earlier run used)")


def prepare(
    journal: Journal,
    run_id: str,
    meta: Mapping[str, object],
    targets: tuple[str, ...],
    mode: ResumeMode | None,
    *,
    inputs: Sequence[str] = (),
    local: Callable[[str], str] = str,
) -> Earlier:
    """Start the run in the journal; return what an earlier invocation finished.

    ``inputs``: the sources as spelled now. An earlier invocation may have spelled a file
    another way (``./x.csv``, an absolute path): its rows are keyed by that spelling, so
    they are re-keyed to today's, or they would be sent again. ``local``: where the rejects
    file (a URL: a local copy of it) is read."""
    refuse_if_unfinished(journal, run_id, targets, mode)
    record = journal.get(run_id)
    unfinished = record is not None and record.status != "finished"
    if not (unfinished and mode == "resume"):
        journal.start(run_id, meta, resume=False)
        return Earlier()
    assert record is not None
    journal.start(run_id, meta, resume=True)
    rejects_path = str(record.meta.get("rejects_path") or "") or None
    respell = _respeller(inputs, str(record.meta.get("cwd") or os.getcwd()))
    done = respell(journal.acked(run_id, targets[-1]))
    rejected = rows_in_rejects(local(rejects_path)) if rejects_path else EarlierRejects({})
    done = _merge(done, respell(rejected.rows))
    first = respell(journal.acked(run_id, targets[0])) if len(targets) > 1 else {}
    return Earlier(done=done, first_target_acked=first, rejects_path=rejects_path,
                   rejected=rejected.count, retryable=rejected.retryable,
                   retryable_rows=respell(rejected.retryable_rows))
