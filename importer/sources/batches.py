"""What every format does to the rows it yields: provenance columns, empty cells as null,
spans gathered into batches, and the remedies named by ``read`` rejects."""

from __future__ import annotations

import polars as pl

from importer.records import SOURCE_FILE, SOURCE_ROW, Reject
from importer.sources import limits


class _Gathered:
    """Parsed spans (frames and reject rows) gathered until a batch is due: ``batch_rows``
    rows, or :data:`limits.BATCH_BYTES` bytes of input, whichever comes first.

    The byte bound is what keeps memory flat on wide files: 25,000 rows of 300 columns are
    ~75 MB of text and several times that once parsed and mapped, 25,000 rows of 3 are 3 MB.
    """

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows
        self.frames: list[pl.DataFrame] = []
        self.rejects: list[Reject] = []
        self.rows = 0  # rows (good or rejected) since the last batch
        self.bytes = 0  # input bytes behind them

    def add(self, frames: list[pl.DataFrame], rejects: list[Reject], size: int) -> bool:
        """Take a span of ``size`` input bytes; True when a batch is due."""
        self.frames += frames
        self.rejects += rejects
        self.rows += sum(f.height for f in frames) + len(rejects)
        self.bytes += size
        return self.rows >= self.batch_rows or self.bytes >= limits.BATCH_BYTES

    def take(self) -> tuple[list[pl.DataFrame], list[Reject]]:
        out = (self.frames, self.rejects)
        self.frames, self.rejects, self.rows, self.bytes = [], [], 0, 0
        return out

    def __bool__(self) -> bool:
        return self.rows > 0


def _with_provenance(frame: pl.DataFrame, path: str, numbers: pl.Series) -> pl.DataFrame:
    """Append ``_source_file`` and ``_source_row``, keeping values the file already has.

    Columns are taken by position: pl.col("*") or pl.col("^a$") would not mean a column
    named so, and a CRM header may well hold such names.
    """
    generated = pl.lit(numbers.cast(pl.Int64))
    if SOURCE_ROW not in frame.columns and SOURCE_FILE not in frame.columns:
        # (appended by name-free expressions: no per-column work on a 20,000-column frame)
        return frame.with_columns(pl.lit(path, dtype=pl.String).alias(SOURCE_FILE),
                                  generated.alias(SOURCE_ROW))
    data = [pl.nth(i) for i, c in enumerate(frame.columns) if c not in (SOURCE_FILE, SOURCE_ROW)]
    row = generated
    if SOURCE_ROW in frame.columns:  # a re-imported rejects file points at the original export
        row = pl.coalesce(pl.col(SOURCE_ROW).cast(pl.Int64, strict=False), generated)
    name = pl.lit(path, dtype=pl.String)
    if SOURCE_FILE in frame.columns:
        name = pl.coalesce(pl.col(SOURCE_FILE).cast(pl.String), name)
    return frame.select(*data, name.alias(SOURCE_FILE), row.alias(SOURCE_ROW))


def _empty_to_null(frame: pl.DataFrame) -> pl.DataFrame:
    """Empty strings become null, as empty CSV cells do.

    Columns are picked by type (never by name: see :func:`_with_provenance`), in one
    expression: one per column made a 20,000-column batch cost a second of planning.
    """
    return frame.with_columns(pl.col(pl.String).replace("", None))


_REMEDIES = {
    "wrong_field_count": "look for a missing or extra delimiter, or an unquoted one inside a "
                         "value; fix the line in the rejects file and re-run it",
    "unterminated_quote": "this line alone was set aside and reading resumed on the next "
                          "line; close the quote and re-run the rejects file",
    "malformed_csv": "fix the quoting of this line and re-run the rejects file",
    "nul_byte": "remove the NUL byte and re-run the rejects file",
    "bad_encoding": "the file mixes encodings: re-export it in one encoding, or try "
                    "--encoding=cp1252",
    "bad_json": "fix the JSON on this line and re-run the rejects file",
    "not_an_object": "each line must be one JSON object {...}",
    "unexpected_key": "every key must appear in the first lines of the file (they define the "
                      "columns); move such a line up, or convert the file to CSV/Parquet",
}  # fmt: skip


def _raw_line(text: str) -> tuple[str, str]:
    """(the text for ``_raw_line``, a note for the message when it had to be cut)."""
    limit = limits.MAX_RAW_LINE_CHARS
    if len(text) <= limit:
        return text, ""
    cut = len(text) - limit
    marker = f"…[{cut:,} more characters not kept]"
    return text[:limit] + marker, (f" (the line is {len(text):,} characters long: _raw_line "
                                   f"keeps the first {limit:,}; fix it in the original file)")


def _shown(value: str) -> str:
    """A value quoted in a message, cut to a readable length."""
    limit = limits.MAX_SHOWN_VALUE_CHARS
    return value if len(value) <= limit else value[:limit] + f"…[{len(value) - limit:,} more]"
