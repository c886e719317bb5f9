"""Parquet through pyarrow, a window of rows of a row group at a time (memory bounded by
bytes whatever the row group's size or width); types kept (nested, time zones) except
dictionary columns, which become plain strings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import polars as pl

from importer.exceptions import InputError
from importer.records import SourceBatch
from importer.remote import ReadFailed, RemoteFile, scrub
from importer.sources import limits
from importer.sources.batches import _with_provenance
from importer.sources.model import ReadOptions, SourceFile, _check_names

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq


_COLUMN_BUFFER = 64 * 1024


def _open_parquet(path: str, origin: RemoteFile | None = None) -> pq.ParquetFile:
    """An object in storage is read by ranges (footer, then column chunks) through a small
    block cache, never downloaded whole."""
    import pyarrow.parquet as pq  # only Parquet inputs need pyarrow (start-up cost)

    source = origin.open(ranges=True) if origin else path
    try:
        # No pre-buffering: it holds every column chunk of a row group at once (580 MB for
        # one of 500 rows by 20,000 columns); a small read buffer per column instead.
        return pq.ParquetFile(source, pre_buffer=False, buffer_size=_COLUMN_BUFFER)
    except PermissionError:
        raise InputError(path, "permission denied", "make the file readable by this user") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError with a low-level message
        if origin is not None and "range requests" in str(exc):
            raise InputError(path, "the web server does not serve byte ranges, which reading "
                                   "Parquet needs (its footer is at the end)",
                             "serve it from a bucket or a server that supports ranges, or "
                             "download it and pass the local file") from None
        if isinstance(exc, ReadFailed):
            raise InputError(path, f"cannot be read: {exc.what}", exc.remedy) from None
        raise InputError(path, f"is not a readable Parquet file ({scrub(str(exc))})",
                         "check that it really is Parquet, or re-export it") from None


def _inspect_parquet(path: str, origin: RemoteFile | None = None) -> SourceFile:
    handle = _open_parquet(path, origin)
    columns = tuple(handle.schema_arrow.names)
    _check_names(path, columns)
    return SourceFile(path=path, format="parquet", columns=columns, encoding=None, delimiter=None,
                      compression=None, total=handle.metadata.num_rows, total_unit="rows",
                      origin=origin)


def _iter_parquet(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    import pyarrow as pa

    handle = _open_parquet(source.path, source.origin)
    done = 0
    rows = _batch_rows(handle, options.batch_rows)
    try:
        for part in _parts(handle, rows):
            # (empty cells are null already: done once per part, in Arrow, one cheap call per
            # column; the batches are slices, so the per-column cost is not paid per batch)
            for start in range(0, part.num_rows, rows):
                frame = pl.DataFrame(pl.from_arrow(part.slice(start, rows)))
                frame = _plain_strings(frame)
                numbers = pl.int_range(done + 1, done + 1 + frame.height, dtype=pl.Int64,
                                       eager=True)
                done += frame.height
                yield SourceBatch(source.path, _with_provenance(frame, source.path, numbers), (),
                                  done)
    except ReadFailed as exc:  # the storage service failed, not the data
        raise InputError(source.path, f"cannot be read after row {done}: {exc.what}",
                         exc.remedy) from None
    except (OSError, pa.ArrowException) as exc:
        raise InputError(source.path, f"is damaged after row {done} ({exc})",
                         "re-export the file") from None
    finally:
        handle.close()


def _arrow_empty_to_null(part: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """Empty strings become null in every string column (as :func:`_empty_to_null` does)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind, schema = type(part), part.schema
    columns = part.columns
    del part  # each original column is freed as soon as it is replaced
    for i, column in enumerate(columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            columns[i] = pc.if_else(pc.equal(column, ""), pa.scalar(None, column.type), column)
    return kind.from_arrays(columns, schema=schema)


def _parts(handle: pq.ParquetFile, rows: int) -> Iterator[pa.Table | pa.RecordBatch]:
    """The file in pieces of bounded size (see :data:`limits.PARQUET_WINDOW_BYTES`), each a
    whole number of batches of ``rows`` rows."""
    meta = handle.metadata
    names = handle.schema_arrow.names
    for group in range(meta.num_row_groups):
        count = int(meta.row_group(group).num_rows)
        if not count:  # (an empty table is written as one row group of no rows)
            continue
        window = _window_rows(int(meta.row_group(group).total_byte_size), count, rows)
        if window < count and len(names) <= limits.PARQUET_COLUMN_SLICE:
            # few columns: streamed page by page (pyarrow holds a decoded page of each)
            for batch in handle.iter_batches(batch_size=rows, row_groups=[group]):
                yield _arrow_empty_to_null(batch)
            continue
        for start in range(0, count, window):
            yield _read_window(handle, group, start, window)


def _window_rows(size: int, count: int, rows: int) -> int:
    """Rows of a row group of ``size`` bytes (uncompressed) and ``count`` rows read at once:
    all of them, or whole batches of ``rows`` worth about :data:`limits.PARQUET_WINDOW_BYTES`."""
    if size <= limits.PARQUET_WINDOW_BYTES:
        return count
    return max(rows, limits.PARQUET_WINDOW_BYTES * count // size // rows * rows)


def _read_window(handle: pq.ParquetFile, group: int, start: int, length: int) -> pa.Table:
    """Rows ``start`` to ``start + length`` of a row group, read a slice of columns at a time.

    pyarrow decodes no less than a whole page, and a narrow column's page is often its whole
    row group: each slice is decoded whole, then cut to the window and copied (a slice would
    keep the decoded slice alive), so only one slice of the row group is decoded at a time.
    A row group is decoded once per window: the price of bounding memory by bytes.
    """
    import pyarrow as pa

    names = handle.schema_arrow.names
    columns: list[pa.ChunkedArray] = []
    width = limits.PARQUET_COLUMN_SLICE
    for first in range(0, len(names), width):
        piece = handle.read_row_group(group, columns=names[first : first + width])
        if length < piece.num_rows:
            piece = piece.take(pa.array(range(start, min(start + length, piece.num_rows))))
        columns += _arrow_empty_to_null(piece).columns
    return pa.Table.from_arrays(columns, schema=handle.schema_arrow)


def _plain_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Dictionary-encoded columns become plain strings, as the mapping expects text (and an
    empty one null, as in any other string column)."""
    categorical = [i for i, t in enumerate(frame.dtypes) if isinstance(t, pl.Categorical | pl.Enum)]
    return frame.with_columns(
        pl.when(pl.nth(i).cast(pl.String) != "").then(pl.nth(i).cast(pl.String))
        for i in categorical)


def _batch_rows(handle: pq.ParquetFile, batch_rows: int) -> int:
    """Rows per batch: ``batch_rows``, fewer when that many rows exceed 4 x
    :data:`limits.BATCH_BYTES` of uncompressed data (the row groups' own sizes tell)."""
    meta = handle.metadata
    rows = int(meta.num_rows)
    size = sum(int(meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups))
    if not rows or not size:
        return batch_rows
    # (4 x the text budget: arrow → polars costs ~15 µs per column per batch whatever the
    # rows, so 20,000 columns in batches of 19 rows took a minute for 3,000 rows)
    return max(1, min(batch_rows, 4 * limits.BATCH_BYTES * rows // size))
