"""Parquet: pyarrow ``iter_batches``, types kept (nested, time zones) except dictionary
columns, which become plain strings."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import polars as pl

from importer.exceptions import InputError
from importer.records import SourceBatch
from importer.sources import limits
from importer.sources.batches import _empty_to_null, _with_provenance
from importer.sources.model import ReadOptions, SourceFile, _check_names

if TYPE_CHECKING:
    import pyarrow.parquet as pq


def _open_parquet(path: str) -> pq.ParquetFile:
    import pyarrow.parquet as pq  # only Parquet inputs need pyarrow (start-up cost)

    try:
        return pq.ParquetFile(path)
    except PermissionError:
        raise InputError(path, "permission denied", "make the file readable by this user") from None
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError with a low-level message
        raise InputError(path, f"is not a readable Parquet file ({exc})",
                         "check that it really is Parquet, or re-export it") from None


def _inspect_parquet(path: str) -> SourceFile:
    handle = _open_parquet(path)
    columns = tuple(handle.schema_arrow.names)
    _check_names(path, columns)
    return SourceFile(path=path, format="parquet", columns=columns, encoding=None, delimiter=None,
                      compression=None, total=handle.metadata.num_rows, total_unit="rows")


def _iter_parquet(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    import pyarrow as pa

    handle = _open_parquet(source.path)
    done = 0
    try:
        for batch in handle.iter_batches(batch_size=_batch_rows(handle, options.batch_rows)):
            frame = pl.DataFrame(pl.from_arrow(batch))
            frame = _empty_to_null(_plain_strings(frame))
            numbers = pl.int_range(done + 1, done + 1 + frame.height, dtype=pl.Int64, eager=True)
            done += frame.height
            yield SourceBatch(source.path, _with_provenance(frame, source.path, numbers), (), done)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(source.path, f"is damaged after row {done} ({exc})",
                         "re-export the file") from None
    finally:
        handle.close()


def _plain_strings(frame: pl.DataFrame) -> pl.DataFrame:
    """Dictionary-encoded columns become plain strings, as the mapping expects text."""
    categorical = [i for i, t in enumerate(frame.dtypes) if isinstance(t, pl.Categorical | pl.Enum)]
    return frame.with_columns(pl.nth(i).cast(pl.String) for i in categorical)


def _batch_rows(handle: pq.ParquetFile, batch_rows: int) -> int:
    """Rows per batch: ``batch_rows``, fewer when that many rows exceed
    :data:`limits.BATCH_BYTES` of uncompressed data (the row groups' own sizes tell)."""
    meta = handle.metadata
    rows = int(meta.num_rows)
    size = sum(int(meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups))
    if not rows or not size:
        return batch_rows
    return max(1, min(batch_rows, limits.BATCH_BYTES * rows // size))
