"""The records that flow between pipeline stages: frozen, small, typed.

A bad row is data (:class:`Reject`), never an exception, so one malformed line in a
2 GB export costs one reject, not the run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
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

#: The text of a line the CSV reader could not split into fields (last column of a rejects file).
RAW_LINE = "_raw_line"

#: Columns the importer adds; the mapping ignores them so a rejects file re-imports as is.
RESERVED_SOURCE_COLUMNS: frozenset[str] = frozenset((*REJECT_COLUMNS, RAW_LINE))


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
class RejectFrame:
    """Many rejects of one stage as one frame: the original source columns, then
    :data:`REJECT_COLUMNS` and ``_raw_line``.

    The mapping stage finds its rejects vectorised and they go to the rejects file the same
    way, without a Python object per row; iterating yields :class:`Reject` objects for the
    few consumers that want them one at a time.
    """

    frame: pl.DataFrame

    def __len__(self) -> int:
        return self.frame.height

    def __bool__(self) -> bool:
        return self.frame.height > 0

    def __iter__(self) -> Iterator[Reject]:
        details = (*REJECT_COLUMNS, RAW_LINE)
        for row in self.frame.iter_rows(named=True):
            fields = {name: row.pop(name) for name in details}
            yield Reject(
                source_file=fields[SOURCE_FILE],
                source_row=fields[SOURCE_ROW],
                stage=fields["_reject_stage"],
                code=fields["_reject_code"],
                message=fields["_reject_message"],
                field=fields["_reject_field"],
                http_status=fields["_reject_http_status"],
                attempts=fields["_reject_attempts"],
                retryable=fields["_reject_retryable"],
                values=row,
                raw_line=fields[RAW_LINE],
            )

    def counts(self, column: str) -> dict[str, int]:
        """How many rejects per value of ``column`` (``_reject_code``, ``_reject_stage``)."""
        counted = self.frame[column].value_counts()
        return dict(zip(counted[column].to_list(), counted["count"].to_list(), strict=True))


#: The details of a reject, as frame columns: :data:`REJECT_COLUMNS`, then the raw line.
REJECT_SCHEMA: dict[str, pl.DataType] = {
    SOURCE_FILE: pl.String(),
    SOURCE_ROW: pl.Int64(),
    "_reject_stage": pl.String(),
    "_reject_code": pl.String(),
    "_reject_field": pl.String(),
    "_reject_message": pl.String(),
    "_reject_http_status": pl.Int64(),
    "_reject_attempts": pl.Int64(),
    "_reject_retryable": pl.Boolean(),
    RAW_LINE: pl.String(),
}


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
