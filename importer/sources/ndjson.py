"""NDJSON: one object per line, row N = line N.

Columns are the keys of the first MiB, scalars read as text and nested values as JSON text; a
line that is not an object, or has a key with a value that is not a column, is a ``read``
reject.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import polars as pl

from importer.records import Reject, SourceBatch
from importer.remote import RemoteFile
from importer.sources import limits
from importer.sources.batches import (
    _REMEDIES,
    _empty_to_null,
    _Gathered,
    _raw_line,
    _with_provenance,
)
from importer.sources.encoding import _report_encoding, _resolve_encoding
from importer.sources.model import ReadOptions, SourceFile, _size
from importer.sources.textstream import _clean_text, _span_bytes, _span_end, _TextStream, _Window


def _inspect_ndjson(
    path: str, compression: str | None, options: ReadOptions, origin: RemoteFile | None = None
) -> SourceFile:
    choice = _resolve_encoding(path, compression, options.encoding, origin)
    encoding = choice.encoding
    with _TextStream(path, compression, encoding, origin) as stream:
        window = _Window(stream)
        window.fill_to(limits.NDJSON_SAMPLE_BYTES)
        sample = window.slice(0, limits.NDJSON_SAMPLE_BYTES)
        if not window.eof:
            sample = sample[: sample.rfind(b"\n") + 1]
    keys: dict[str, None] = {}
    for line in sample.split(b"\n"):
        try:
            value = orjson.loads(line) if line.strip() else None
        except orjson.JSONDecodeError:
            continue  # a bad line is a reject later, not a reason to refuse the file
        if isinstance(value, dict):
            keys.update(dict.fromkeys(value))
    return SourceFile(path=path, format="ndjson", columns=tuple(keys),
                      encoding=_report_encoding(encoding), encoding_reason=choice.reason,
                      delimiter=None,
                      compression=compression, total=_size(path, origin), total_unit="bytes",
                      origin=origin)


def _iter_ndjson(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    schema: dict[str, pl.DataType] = {name: pl.String() for name in source.columns}
    with _TextStream(source.path, source.compression, source.encoding or "utf-8",
                     source.origin) as stream:
        window = _Window(stream)
        span = min(_span_bytes(window, 0, options.batch_rows), limits.PARSE_SPAN_BYTES,
                   limits.BATCH_BYTES // 2, limits.MAX_RECORD_BYTES // 2)
        pos, line = 0, 0
        gathered = _Gathered(options.batch_rows)
        while not window.at_end(pos):
            end = _span_end(window, pos, span)
            if window.slice(end - 1, end) != b"\n" and not (end == window.end and window.eof):
                end, head = window.skip_line(pos)  # a line longer than limits.MAX_RECORD_BYTES
                line += 1
                text = head + "…".encode()
                problem = f"a line longer than {limits.MAX_RECORD_BYTES // 2**20} MiB"
                new_frames, new_rejects = [], [_ndjson_reject(text, line, source, "bad_json",
                                                              problem)]
            else:
                frame, new_rejects, lines = _ndjson_chunk(window.slice(pos, end), line, source,
                                                          schema)
                new_frames, line = [frame], line + lines
            size, pos = end - pos, end
            window.drop_before(pos)
            if gathered.add(new_frames, new_rejects, size):
                yield _ndjson_batch(*gathered.take(), source, stream.position)
        if gathered:
            yield _ndjson_batch(*gathered.take(), source, stream.position)


def _ndjson_batch(
    frames: list[pl.DataFrame], rejects: list[Reject], source: SourceFile, progress: int
) -> SourceBatch:
    if not frames:
        schema: dict[str, pl.DataType] = {name: pl.String() for name in source.columns}
        empty = pl.Series([], dtype=pl.Int64)
        frames = [_with_provenance(pl.DataFrame(schema=schema), source.path, empty)]
    return SourceBatch(source.path, pl.concat(frames), tuple(rejects), progress)


def _ndjson_chunk(
    chunk: bytes, line: int, source: SourceFile, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, list[Reject], int]:
    """One span of lines: polars when every line is a clean object with known keys."""
    lines = chunk.count(b"\n") + (0 if chunk.endswith(b"\n") else 1)
    frame = _ndjson_fast(chunk, lines, source.columns, schema)
    if frame is not None:
        numbers = pl.int_range(line + 1, line + 1 + lines, dtype=pl.Int64, eager=True)
        return _with_provenance(_empty_to_null(frame), source.path, numbers), [], lines
    good: list[bytes] = []
    numbers_kept: list[int] = []
    rejects: list[Reject] = []
    for offset, text in enumerate(chunk.split(b"\n")[:lines]):
        number = line + offset + 1
        reject = _ndjson_line_problem(text, number, source)
        if reject is not None:
            rejects.append(reject)
        elif text.strip():
            good.append(text)
            numbers_kept.append(number)
    frame, more = _ndjson_frame(good, numbers_kept, source, schema)
    rejects = sorted([*rejects, *more], key=lambda r: r.source_row)
    return frame, rejects, lines


def _ndjson_fast(
    chunk: bytes, lines: int, columns: tuple[str, ...], schema: dict[str, pl.DataType]
) -> pl.DataFrame | None:
    try:
        frame = pl.read_ndjson(chunk, schema=schema)
        # Inference sees every key in the span: a key not among the columns (with a value)
        # would otherwise be dropped silently.
        found = pl.scan_ndjson(chunk, infer_schema_length=None).collect_schema()
    except pl.exceptions.PolarsError:
        return None
    extra = [k for k, dtype in found.items() if k not in columns and dtype != pl.Null]
    if frame.height != lines or extra:
        return None  # blank lines or unknown keys: the line-by-line path numbers them right
    return frame


def _ndjson_line_problem(text: bytes, number: int, source: SourceFile) -> Reject | None:
    if not text.strip():
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return _ndjson_reject(text, number, source, "bad_json", f"not valid JSON ({exc})")
    if not isinstance(value, dict):
        kind = type(value).__name__
        problem = f"a JSON {kind}, not an object"
        return _ndjson_reject(text, number, source, "not_an_object", problem)
    extra = [k for k, v in value.items() if k not in source.columns and v is not None]
    if extra:
        names = ", ".join(repr(k) for k in extra)
        return _ndjson_reject(text, number, source, "unexpected_key",
                              f"key {names} is not among the file's columns")
    return None


def _ndjson_frame(
    good: list[bytes], numbers: list[int], source: SourceFile, schema: dict[str, pl.DataType]
) -> tuple[pl.DataFrame, list[Reject]]:
    """Parse the lines that passed together, so values read exactly as on the fast path."""
    try:
        frame = pl.read_ndjson(b"\n".join(good), schema=schema) if good else None
        if frame is None or frame.height == len(good):
            kept = numbers
            rejects: list[Reject] = []
        else:
            raise pl.exceptions.ComputeError("row count differs")
    except pl.exceptions.PolarsError:  # find the lines polars refuses (huge numbers, ...)
        parts: list[pl.DataFrame] = []
        kept, rejects = [], []
        for text, number in zip(good, numbers, strict=True):
            try:
                parts.append(pl.read_ndjson(text, schema=schema))
                kept.append(number)
            except pl.exceptions.PolarsError as exc:
                problem = f"a value polars cannot read ({str(exc).splitlines()[0]})"
                rejects.append(_ndjson_reject(text, number, source, "bad_json", problem))
        frame = pl.concat(parts) if parts else None
    if frame is None:
        frame = pl.DataFrame(schema=schema)
    frame = _empty_to_null(frame)
    return _with_provenance(frame, source.path, pl.Series(kept, dtype=pl.Int64)), rejects


def _ndjson_reject(text: bytes, number: int, source: SourceFile, code: str, problem: str) -> Reject:
    raw, cut = _raw_line(_clean_text(text.decode("utf-8", "surrogateescape").rstrip("\r\n")))
    return Reject(source_file=source.path, source_row=number, stage="read", code=code,
                  message=f"{source.path} line {number}: {problem} — {_REMEDIES[code]}{cut}",
                  raw_line=raw)
