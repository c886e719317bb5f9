"""The rejects file: every row that did not make it, streamed to disk as it is found.

Same format as the input (CSV → CSV, Parquet → Parquet, NDJSON → NDJSON): the original
source columns verbatim, then ``_source_file``, ``_source_row``, the ``_reject_*`` columns and
``_raw_line`` (the text of a line the CSV reader could not split). The mapping ignores all of
those, so a fixed rejects file re-imports with the same mapping.

It holds personal data, so the file and its ``.meta.json`` sidecar are created mode 0600.
CSV rejects are UTF-8 *with* a BOM: the rejects file's main reader is an analyst opening it in
a spreadsheet, and Excel decodes a BOM-less CSV as the local code page, mangling "Muñoz".

Records are written whole: each batch is encoded in memory and appended with ``os.write``;
if the disk fills up (or a limit or permission stops the write) halfway, the file is cut back
to its last complete record and a :class:`~importer.exceptions.StorageError` naming the file
is raised — a half record (say, inside a multi-line quoted field) would make the whole file
unreadable for ``retry``. The importer's own columns (``_reject_message`` …) go through
:func:`importer.redaction.redact`: a server's error text may echo the request's token.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import orjson
import polars as pl

from importer.exceptions import StorageError
from importer.records import (
    RAW_LINE,
    REJECT_COLUMNS,
    REJECT_SCHEMA,
    RESERVED_SOURCE_COLUMNS,
    Reject,
    RejectFrame,
)
from importer.redaction import redact, redact_expr
from importer.storage import STORAGE_ERRORS, storage_error

if TYPE_CHECKING:
    import pyarrow.parquet as pq

RejectsFormat = Literal["csv", "parquet", "ndjson"]
_PRIVATE = 0o600


def meta_path(path: str | Path) -> Path:
    """Where the sidecar of a rejects file lives."""
    return Path(f"{path}.meta.json")


def default_rejects_path(first_input: str, fmt: RejectsFormat) -> Path:
    """``exports/crm.csv.gz`` → ``exports/crm.rejects.csv`` (rejects are never compressed)."""
    path = Path(first_input)
    name = path.name
    for suffix in (".gz", ".zst"):
        name = name.removesuffix(suffix)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return path.with_name(f"{stem}.rejects.{fmt}")


def _open_private(path: Path, *, append: bool) -> int:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, _PRIVATE)
    # O_CREAT's mode does not apply to a file that already existed (say, 0644 from elsewhere).
    os.fchmod(fd, _PRIVATE)
    return fd


def write_meta(path: str | Path, meta: Mapping[str, Any]) -> None:
    """Write the sidecar ``<rejects>.meta.json`` (mode 0600)."""
    text = json.dumps(dict(meta), indent=2, sort_keys=True, default=str) + "\n"
    try:
        fd = _open_private(meta_path(path), append=False)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise storage_error(meta_path(path), exc) from None


def drop_partial_line(path: Path) -> None:
    """A run killed mid-write can leave half a line; cut it so appended lines stay whole."""
    with path.open("rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def drop_partial_record(path: Path, chunk: int = 1 << 20) -> None:
    """A CSV record can span lines (a quoted field with newlines), so a run killed inside
    one can leave a file that ends with a whole *line* but half a *record*. A newline ends a
    record only where the quotes before it are balanced (the writer doubles the quotes
    inside a field): cut after the last such newline, so that appended records are not
    swallowed by an open quote."""
    end = offset = 0
    inside = False
    with path.open("rb+") as fh:
        while block := fh.read(chunk):
            if not inside and b'"' not in block:  # the common block: no quoted field at all
                last = block.rfind(b"\n")
                end = offset + last + 1 if last >= 0 else end
                offset += len(block)
                continue
            for mark in _QUOTE_OR_NEWLINE.finditer(block):
                if mark.group() == b'"':
                    inside = not inside
                elif not inside:
                    end = offset + mark.end()
            offset += len(block)
        if end < offset:
            fh.truncate(end)


_QUOTE_OR_NEWLINE = re.compile(rb'["\n]')


def _read_parquet_or_none(path: Path) -> pl.DataFrame | None:
    """A Parquet file is only readable once closed; a killed run's file is started afresh
    (its rows were never journaled as done, so they are processed again)."""
    try:
        return pl.read_parquet(path)
    except Exception:  # polars raises several types for a truncated file
        return None


def _reject_fields(r: Reject) -> list[Any]:
    return [
        r.source_file,
        r.source_row,
        r.stage,
        r.code,
        r.field,
        redact(r.message),
        r.http_status,
        r.attempts,
        r.retryable,
        r.raw_line,
    ]


def _cell(value: Any) -> str:
    """One value as CSV text, where the source columns are not all text (a text-only source's
    rejects are written by polars, see :class:`CsvLayout`)."""
    if type(value) is str:
        return value
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _conform(column: pl.Series, dtype: pl.DataType) -> pl.Series:
    """An earlier rejects file's column, as this run writes it. Files written before the
    reject columns had one schema hold them as text ("3", "true"): read those back too."""
    if column.dtype == dtype:
        return column
    if dtype == pl.Boolean and column.dtype == pl.String:
        text = column.str.strip_chars().str.to_lowercase()
        return text.replace_strict({"true": True, "false": False}, default=None,
                                   return_dtype=pl.Boolean)
    return column.cast(dtype, strict=False)


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """The columns, their types and the delimiter of a CSV rejects file whose source columns
    are all text: rendering a frame of rejects with it is pure, so the reading thread renders
    the mapping stage's rejects and the event loop only appends the bytes (~4 ms of polars
    calls a 2 MiB batch otherwise held up every answer in flight; bench/results/transport.md).
    """

    columns: tuple[str, ...]
    schema: tuple[tuple[str, pl.DataType], ...]
    delimiter: str

    def render(self, frame: pl.DataFrame) -> bytes:
        """Rejects as they come (source columns + reject columns, any order)."""
        return self.text(_aligned(frame, dict(self.schema), self.columns))

    def text(self, aligned: pl.DataFrame) -> bytes:
        """Rejects already in the file's columns and types.

        polars' CSV writer quotes as the csv module's QUOTE_MINIMAL does, and moreover
        keeps an empty text cell ("") apart from a missing one (null: nothing between the
        separators), as the CSV reader reads them — so a rejects file re-imports as it was.
        """
        text = aligned.write_csv(
            include_header=False,
            separator=self.delimiter,
            line_terminator="\r\n",
            quote_style="necessary",
            null_value="",
        )
        return text.encode("utf-8")


def csv_layout(
    source_columns: Sequence[str], delimiter: str, source_schema: Mapping[str, pl.DataType]
) -> CsvLayout | None:
    """The layout a CSV rejects file with these sources gets; None where a source column is
    not known to hold text (those rows are written one by one)."""
    kept = [c for c in source_columns if c not in RESERVED_SOURCE_COLUMNS]
    if not all(source_schema.get(c) == pl.String for c in kept):
        return None
    schema = _file_schema(kept, source_schema)
    return CsvLayout((*kept, *REJECT_COLUMNS, RAW_LINE), tuple(schema.items()), delimiter)


def _file_schema(
    source_columns: Sequence[str], source_schema: Mapping[str, pl.DataType]
) -> dict[str, pl.DataType]:
    """Every column's type in a rejects file: the source's (text where it is not known),
    then :data:`REJECT_SCHEMA`."""
    schema: dict[str, Any] = {c: source_schema.get(c, pl.String) for c in source_columns}
    schema.update(REJECT_SCHEMA)
    return schema


@dataclass(frozen=True, slots=True)
class RenderedRejects(RejectFrame):
    """A :class:`RejectFrame` with its rows already rendered for a CSV rejects file laid out
    as ``layout`` (a file laid out otherwise renders the frame itself)."""

    layout: CsvLayout
    text: bytes


def render(rejects: RejectFrame, layout: CsvLayout | None) -> RejectFrame:
    """``rejects`` rendered ahead for a file laid out as ``layout`` (as is without one)."""
    if layout is None or not rejects:
        return rejects
    return RenderedRejects(rejects.frame, layout, layout.render(rejects.frame))


def _aligned(frame: pl.DataFrame, schema: Mapping[str, pl.DataType],
             columns: Sequence[str]) -> pl.DataFrame:
    """A frame of rejects (source columns + reject columns, any order) in the file's column
    order and types, its messages redacted.

    (cast as the object path builds its frame: leniently, for inputs of mixed formats; the
    reject columns to their one schema whatever the stage, or a Parquet file would get a column
    typed one way by the map stage and another by the API stage)
    """
    if "_reject_message" in frame.columns:
        frame = frame.with_columns(redact_expr("_reject_message"))
    return frame.select(
        pl.col(c).cast(schema[c], strict=False) if c in frame.columns
        else pl.lit(None, schema[c]).alias(c)
        for c in columns
    )  # fmt: skip


class RejectsWriter:
    """Streams rejects to one file; a context manager. ``count`` is how many were written."""

    def __init__(
        self,
        path: str | Path,
        *,
        source_columns: Sequence[str],
        fmt: RejectsFormat = "csv",
        delimiter: str = ",",
        source_schema: Mapping[str, pl.DataType] | None = None,
        meta: Mapping[str, Any] | None = None,
        append: bool = False,
    ) -> None:
        self.path = Path(path)
        self.fmt = fmt
        self.count = 0
        self._source_columns = [c for c in source_columns if c not in RESERVED_SOURCE_COLUMNS]
        self._columns = [*self._source_columns, *REJECT_COLUMNS, RAW_LINE]
        schema = dict(source_schema or {})
        self._types = _file_schema(self._source_columns, schema)  # every column's type
        # CSV, every source column known to hold text (its values are str or None): rejects
        # are written a frame at a time by polars; otherwise a row at a time.
        self.layout = (csv_layout(source_columns, delimiter, schema)
                       if fmt == "csv" else None)
        self._closed = False
        self._delimiter = delimiter
        self._size = 0  # bytes of complete records: where a failed write is cut back to
        try:
            self._open(append, meta)
        except OSError as exc:
            raise storage_error(self.path, exc) from None

    def _open(self, append: bool, meta: Mapping[str, Any] | None) -> None:
        resume = append and self.path.exists() and self.path.stat().st_size > 0
        if resume and self.fmt == "csv":
            drop_partial_record(self.path)
        elif resume and self.fmt == "ndjson":
            drop_partial_line(self.path)
        self._fd = _open_private(self.path, append=append)
        self._size = os.fstat(self._fd).st_size
        if self.fmt == "parquet":
            self._parquet: pq.ParquetWriter | None = None
            self._earlier = _read_parquet_or_none(self.path) if resume else None
        elif self.fmt == "csv":
            # Rows are formatted into memory and appended whole (see the module docstring).
            # Plain "utf-8" and the BOM written by hand: the "utf-8-sig" codec's encoder is
            # Python code, called for every row, and was most of the cost of writing rejects.
            self._buffer = io.StringIO()
            self._csv = csv.writer(self._buffer, delimiter=self._delimiter, lineterminator="\r\n")
            if not resume:
                self._csv.writerow(self._columns)
                self._append(("\ufeff" + self._take()).encode("utf-8"))
        if meta is not None:
            write_meta(self.path, meta)

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def _append(self, data: bytes) -> None:
        """Append whole records; on a failure, cut the file back to the last complete one."""
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            with contextlib.suppress(OSError):  # truncating frees space: it works on a full disk
                os.ftruncate(self._fd, self._size)
            raise storage_error(self.path, exc) from None
        self._size += len(data)

    def write(self, rejects: Iterable[Reject] | RejectFrame) -> None:
        try:
            self._write(rejects)
        except StorageError:
            raise
        except STORAGE_ERRORS as exc:  # the Parquet writer's own writes
            raise storage_error(self.path, exc) from None

    def _write(self, rejects: Iterable[Reject] | RejectFrame) -> None:
        if isinstance(rejects, RenderedRejects) and rejects.layout == self.layout:
            self._append(rejects.text)
            self.count += len(rejects)
            return
        if isinstance(rejects, RejectFrame):
            self._write_frame(rejects.frame)
            return
        batch = list(rejects)
        if not batch:
            return
        if self.fmt == "csv":
            if self.layout is not None:
                self._append(self.layout.text(self._frame(batch)))
            else:
                columns = self._source_columns
                rows = ([*map(_cell, map(r.values.get, columns)),
                         *map(_cell, _reject_fields(r))] for r in batch)
                self._csv.writerows(rows)
                self._append(self._take().encode("utf-8"))
        elif self.fmt == "ndjson":
            out = io.BytesIO()
            for r in batch:
                row = {c: r.values.get(c) for c in self._source_columns}
                row.update(zip((*REJECT_COLUMNS, RAW_LINE), _reject_fields(r), strict=True))
                out.write(orjson.dumps(row, default=str))
                out.write(b"\n")
            self._append(out.getvalue())
        else:
            self._write_parquet(self._frame(batch))
        self.count += len(batch)

    def _write_frame(self, frame: pl.DataFrame) -> None:
        """Rejects that come as a frame (source columns + reject columns, any order)."""
        if frame.height == 0:
            return
        if self.fmt == "ndjson" or (self.fmt == "csv" and self.layout is None):
            self._write(list(RejectFrame(frame)))  # values as Python objects, like any reject
            return
        if self.layout is not None:
            self._append(self.layout.render(frame))
        else:
            self._write_parquet(_aligned(frame, self._types, self._columns))
        self.count += frame.height

    def _write_parquet(self, frame: pl.DataFrame) -> None:
        table = frame.to_arrow()
        if self._parquet is None:
            # Parquet cannot be appended to: a resumed run rewrites the earlier rejects first,
            # then streams on, one row group per write.
            os.ftruncate(self._fd, 0)
            self._bin = os.fdopen(self._fd, "wb")
            import pyarrow.parquet as pq  # only Parquet rejects need pyarrow (start-up cost)

            self._parquet = pq.ParquetWriter(self._bin, table.schema)
            if self._earlier is not None and self._earlier.height:
                earlier = self._earlier.select(
                    _conform(self._earlier[c], t) if c in self._earlier.columns
                    else pl.lit(None, t).alias(c)
                    for c, t in frame.schema.items()
                )
                self._parquet.write_table(earlier.to_arrow())
        self._parquet.write_table(table)

    def _frame(self, batch: list[Reject]) -> pl.DataFrame:
        data: dict[str, list[Any]] = {
            c: [r.values.get(c) for r in batch] for c in self._source_columns
        }
        fields = [_reject_fields(r) for r in batch]
        for i, name in enumerate((*REJECT_COLUMNS, RAW_LINE)):
            data[name] = [f[i] for f in fields]
        return pl.DataFrame(data, schema=self._types, strict=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        except STORAGE_ERRORS as exc:
            raise storage_error(self.path, exc) from None

    def _close(self) -> None:
        if self.fmt != "parquet":
            os.close(self._fd)
        else:
            if self._parquet is None:  # nothing written this time: still leave a valid file
                self._write_parquet(self._frame([]))
            assert self._parquet is not None
            self._parquet.close()
            self._bin.close()

    def __enter__(self) -> RejectsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: Create (or, with ``append``, continue) a rejects file and its sidecar.
open_rejects = RejectsWriter
