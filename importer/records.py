"""The records that flow between pipeline stages: frozen, small, typed.

A bad row is data (:class:`Reject`), never an exception, so one malformed line in a
2 GB export costs one reject, not the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import polars as pl

RejectStage = Literal["read", "map", "api", "transport"]

#: Columns every source batch carries besides the file's own.
SOURCE_FILE = "_source_file"
SOURCE_ROW = "_source_row"

#: Columns appended to every rejects file, in this order (DESIGN.md).
REJECT_COLUMNS: tuple[str, ...] = (
    SOURCE_FILE,
    SOURCE_ROW,
    "_reject_stage",
    "_reject_code",
    "_reject_field",
    "_reject_message",
    "_reject_http_status",
    "_reject_attempts",
    "_reject_retryable",
)

#: Columns the importer adds; the mapping ignores them so a rejects file re-imports as is.
#: ``_raw_line`` holds the text of a line the CSV reader could not split into fields.
RESERVED_SOURCE_COLUMNS: frozenset[str] = frozenset((*REJECT_COLUMNS, "_raw_line"))


@dataclass(frozen=True, slots=True)
class Reject:
    """One source row that did not make it, and why.

    ``values`` are the row's original source columns verbatim (strings for CSV); a row the
    reader could not split carries its text in ``raw_line`` instead.
    """

    source_file: str
    source_row: int
    stage: RejectStage
    code: str
    message: str
    field: str | None = None
    http_status: int | None = None
    attempts: int = 0
    retryable: bool = False
    # (dataclasses.field spelled out: the attribute ``field`` above shadows the name here)
    values: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    raw_line: str | None = None


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """A slice of one input file.

    ``frame`` holds the file's columns plus ``_source_file`` and ``_source_row`` (1-based
    data-row number, stable across runs and batch sizes). ``rejects`` are the rows of this
    slice the reader could not parse. ``rows_read == frame.height + len(rejects)``.
    ``progress`` is how far into the file this batch ends, in the unit of the file's total
    (bytes for CSV, rows otherwise).
    """

    source_file: str
    frame: pl.DataFrame
    rejects: tuple[Reject, ...] = ()
    progress: int = 0

    @property
    def rows_read(self) -> int:
        return self.frame.height + len(self.rejects)
