"""The run journal: which rows the API has acknowledged, so an interrupted run can resume.

One SQLite file in the state directory (default ``.instasent-import/journal.sqlite``), in WAL
mode: acknowledged batches are committed as their answers arrive, a few at a time (at most
:data:`FLUSH_ROWS` rows or :data:`FLUSH_SECONDS` late), so a ``kill -9`` loses at most those
and the batches in flight — which are safe to send again (contacts upsert, events carry
stable ids). Rows rejected are not journaled here: the rejects file itself is their record,
read back on resume.

A run is identified by the fingerprint of its inputs and the hash of its mapping
(:attr:`importer.pipeline.Plan.run_id`). Row numbers are stored as packed int64 arrays, one
record per acknowledged batch.
"""

from __future__ import annotations

import array
import datetime as dt
import json
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from importer.records import SOURCE_ROW

DEFAULT_STATE_DIR = ".instasent-import"

#: Acknowledgements are committed in groups, when this many rows are waiting or the oldest
#: has waited this long: about a second of a run at the rate limit (a transaction per 100-row
#: batch was ~0.25 CPU-s per million rows, one per 1,000 rows still ~0.1).
#: A ``kill -9`` loses the uncommitted ones; their rows are sent again on ``--resume``,
#: which is safe (contacts upsert, events carry stable ids).
FLUSH_ROWS = 10_000
FLUSH_SECONDS = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    status   TEXT NOT NULL,           -- running | finished | aborted
    started  TEXT NOT NULL,
    updated  TEXT NOT NULL,
    meta     TEXT NOT NULL            -- JSON: inputs, mapping, rejects path, options
);
CREATE TABLE IF NOT EXISTS acked (
    run_id   TEXT NOT NULL,
    target   TEXT NOT NULL,
    file     TEXT NOT NULL,
    rows     BLOB NOT NULL            -- int64 row numbers, native byte order
);
CREATE INDEX IF NOT EXISTS acked_run ON acked (run_id, target);
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    status: str
    started: str
    updated: str
    meta: Mapping[str, Any]


class Journal:
    """One state directory's journal. Not thread-safe: the reconciler is its only writer."""

    def __init__(self, state_dir: str | Path = DEFAULT_STATE_DIR, *,
                 shown: str | None = None) -> None:
        self.dir = Path(state_dir)
        self.shown = shown or str(self.dir)  # as messages name it (a bucket's URL)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.dir / "journal.sqlite"
        fresh = not self.path.exists()
        if fresh:  # created private: it names files and rows of personal data
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed batch survives the process being killed.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._pending: defaultdict[tuple[str, str, str], array.array[int]] = defaultdict(
            lambda: array.array("q")
        )
        self._pending_rows = 0
        self._pending_since: float | None = None

    def close(self) -> None:
        self.flush()
        self._db.close()

    # -- runs ----------------------------------------------------------------------------------
    def get(self, run_id: str) -> RunRecord | None:
        row = self._db.execute(
            "SELECT run_id, status, started, updated, meta FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        return RunRecord(row[0], row[1], row[2], row[3], json.loads(row[4]))

    def runs(self) -> list[RunRecord]:
        """Every run recorded, most recently updated first."""
        rows = self._db.execute(
            "SELECT run_id, status, started, updated, meta FROM runs ORDER BY updated DESC"
        ).fetchall()
        return [RunRecord(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

    def start(self, run_id: str, meta: Mapping[str, Any], *, resume: bool) -> None:
        """Begin (or, with ``resume``, continue) a run. A fresh start forgets earlier acks."""
        now = _now()
        with self._tx():
            if not resume:
                self._db.execute("DELETE FROM acked WHERE run_id = ?", (run_id,))
                self._db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
                self._db.execute(
                    "INSERT INTO runs VALUES (?, 'running', ?, ?, ?)",
                    (run_id, now, now, json.dumps(dict(meta), default=str)),
                )
            else:
                self._db.execute(
                    "UPDATE runs SET status = 'running', updated = ? WHERE run_id = ?",
                    (now, run_id),
                )

    def finish(self, run_id: str, status: str) -> None:
        """Close a run. A finished run has nothing left to resume, so its acknowledgements
        are dropped (a nightly 1M-row import would otherwise add ~10 MB a night to the state
        directory, forever); an aborted run keeps them for ``--resume``."""
        self.flush()
        with self._tx():
            self._db.execute(
                "UPDATE runs SET status = ?, updated = ? WHERE run_id = ?",
                (status, _now(), run_id),
            )
            if status == "finished":
                self._db.execute("DELETE FROM acked WHERE run_id = ?", (run_id,))

    # -- acknowledgements ----------------------------------------------------------------------
    def record(
        self, run_id: str, target: str, files: Sequence[str], rows: Sequence[int]
    ) -> None:
        """Note one answered batch's acknowledged rows; committed in groups (see FLUSH_ROWS)."""
        if not rows:
            return
        if files[0] == files[-1] and files.count(files[0]) == len(files):
            self._pending[(run_id, target, files[0])].extend(rows)
        else:
            for f, r in zip(files, rows, strict=True):
                self._pending[(run_id, target, f)].append(r)
        self._pending_rows += len(rows)
        now = time.monotonic()
        if self._pending_since is None:
            self._pending_since = now
        if self._pending_rows >= FLUSH_ROWS or now - self._pending_since >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Commit the acknowledgements noted so far, in one transaction."""
        if not self._pending:
            return
        entries = [(run_id, target, f, rows.tobytes())
                   for (run_id, target, f), rows in self._pending.items()]
        self._pending.clear()
        self._pending_rows = 0
        self._pending_since = None
        with self._tx():
            self._db.executemany("INSERT INTO acked VALUES (?, ?, ?, ?)", entries)

    def acked(self, run_id: str, target: str) -> dict[str, pl.Series]:
        """Rows acknowledged so far for ``target``, per source file (Int64, unique).

        A Series rather than a set: 8 bytes a row, and batches filter on it vectorised.
        """
        import pyarrow as pa  # only a resumed run reads acks back (start-up cost)

        self.flush()
        blobs: dict[str, list[bytes]] = defaultdict(list)
        for f, blob in self._db.execute(
            "SELECT file, rows FROM acked WHERE run_id = ? AND target = ?", (run_id, target)
        ):
            blobs[f].append(blob)
        out = {}
        for f, parts in blobs.items():
            data = b"".join(parts)
            arrow = pa.Array.from_buffers(pa.int64(), len(data) // 8, [None, pa.py_buffer(data)])
            series = pl.Series(SOURCE_ROW, arrow)
            out[f] = series.unique()
        return out

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
