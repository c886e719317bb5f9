"""CSV, the hard case: a file in, batches of rows and ``read`` rejects out::

    file ─► gunzip/unzstd ─► transcode to UTF-8 (only if not UTF-8) ─► window of bytes
         ─► span of whole lines ─► fast path: if the span matches the strict CSV grammar with
            exactly the header's field count (polars' regex engine, linear time), polars
            parses it
         ─► a span that is not provably clean is halved until the damage is isolated, and the
            damaged part goes through the reference parser (Python's csv module, strict,
            record by record), which turns each malformed record into a ``read`` reject

The reference parser defines the semantics; the fast path only accepts spans on which it
provably agrees, so rows and row numbers do not depend on the batch size. Blank lines are
skipped but consume a row number (row N stays on physical line N+1 in a plain file). A record
that cannot be split is rejected as its first physical line, and reading resumes on the next
line: an unterminated quote costs one row, not the rest of the file. The grammar check runs
in one helper thread per file while polars parses (both release the GIL).

Where the parts live: the stream and window in :mod:`~importer.sources.textstream`, the
delimiter and header in :mod:`~importer.sources.csv_header`, the fast path in
:mod:`~importer.sources.csv_grammar`, the reference parser in
:mod:`~importer.sources.csv_reference`; this module drives them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from importer.exceptions import InputError
from importer.records import Reject, SourceBatch
from importer.sources import limits
from importer.sources.batches import (
    _REMEDIES,
    _empty_to_null,
    _Gathered,
    _raw_line,
    _shown,
    _with_provenance,
)
from importer.sources.csv_grammar import _compiles, _fast_parse, csv_grammar
from importer.sources.csv_header import _Header, _read_header
from importer.sources.csv_reference import _Record, _reference_records
from importer.sources.encoding import _decodes, _report_encoding
from importer.sources.model import ReadOptions, SourceFile
from importer.sources.textstream import (
    _SURROGATE,
    _clean_text,
    _is_utf8,
    _span_bytes,
    _span_end,
    _TextStream,
    _Window,
)


@dataclass(slots=True)
class _Cursor:
    pos: int  # byte offset of the next record
    row: int  # last data-row number used
    line: int  # physical lines consumed


@dataclass(frozen=True, slots=True)
class _CsvContext:
    path: str
    columns: tuple[str, ...]
    delimiter: str
    encoding: str
    row_column: str  # private name for the row number while parsing
    grammar: str | None  # regex of a clean span (csv_grammar); None: too wide to compile
    schema: dict[str, pl.DataType]
    checker: Executor  # one thread that checks the grammar while polars parses

    @property
    def width(self) -> int:
        return len(self.columns)


def _iter_csv(source: SourceFile, options: ReadOptions) -> Iterator[SourceBatch]:
    encoding = source.encoding or "utf-8"
    delimiter = source.delimiter or ","
    with (_TextStream(source.path, source.compression, encoding, source.origin) as stream,
          ThreadPoolExecutor(1, thread_name_prefix="instasent-import-csv") as checker):
        window = _Window(stream)
        header = _read_header(window, source.path, delimiter, encoding)
        if header is None:
            return
        if header.columns != source.columns:
            raise InputError(source.path, "the header changed since the file was inspected",
                             "do not modify input files during a run")
        ctx = _csv_context(source.path, header, delimiter, encoding, checker)
        cursor = _Cursor(header.end, 0, header.lines)
        # polars parses a few MiB at a time (cache-friendly, bounded memory); batches of
        # ``batch_rows`` are assembled from those spans.
        # A fast span stays well under MAX_RECORD_BYTES, so polars never accepts a record the
        # reference parser would refuse as too long.
        span = min(_span_bytes(window, header.end, options.batch_rows), limits.PARSE_SPAN_BYTES,
                   limits.BATCH_BYTES // 2, limits.MAX_RECORD_BYTES // 2)
        gathered = _Gathered(options.batch_rows)
        while not window.at_end(cursor.pos):
            start = cursor.pos
            new_frames, new_rejects = _read_span(window, ctx, cursor, span)
            window.drop_before(cursor.pos)
            if gathered.add(new_frames, new_rejects, cursor.pos - start):
                yield _csv_batch(*gathered.take(), ctx, stream.position)
        if gathered:
            yield _csv_batch(*gathered.take(), ctx, stream.position)


def _csv_batch(
    frames: list[pl.DataFrame], rejects: list[Reject], ctx: _CsvContext, progress: int
) -> SourceBatch:
    return SourceBatch(ctx.path, _csv_frame(frames, ctx), tuple(rejects), progress)


def _csv_context(
    path: str, header: _Header, delimiter: str, encoding: str, checker: Executor
) -> _CsvContext:
    schema: dict[str, pl.DataType] = {name: pl.String() for name in header.columns}
    grammar = csv_grammar(delimiter, len(header.columns))
    return _CsvContext(path, header.columns, delimiter, encoding,
                       _unused_name("__row", header.columns),
                       grammar if _compiles(grammar) else None, schema, checker)


def _unused_name(name: str, taken: Sequence[str]) -> str:
    while name in taken:
        name += "_"
    return name


def _read_span(
    window: _Window, ctx: _CsvContext, cursor: _Cursor, size: int
) -> tuple[list[pl.DataFrame], list[Reject]]:
    """Parse about ``size`` bytes from the cursor, fast where clean, by reference where not.

    A span that fails the fast path is halved: the clean half is parsed fast and the search
    goes on in the other, down to a few KiB for the reference parser. So one bad line in a
    2 GB file costs a few extra polars calls, not a slow pass over the file.
    """
    frames: list[pl.DataFrame] = []
    rejects: list[Reject] = []
    cut = _span_end(window, cursor.pos, size)
    end, pending, retried = cut, list[int](), False
    while cursor.pos < cut:
        final = end == window.end and window.eof
        parsed = _fast_parse(window.slice(cursor.pos, end), ctx, final, retried)
        if parsed is not None:
            frames.append(_number_fast(parsed[0], cursor, parsed[1], ctx))
            cursor.pos = end
            end = pending.pop() if pending else cut
            continue
        if not retried:  # most often the span ends inside a quoted field: cut earlier
            retried = True
            earlier = _quote_balanced_end(window, cursor.pos, end)
            if cursor.pos < earlier < end:
                cut = end = earlier
                continue
        middle = window.rfind(b"\n", cursor.pos, (cursor.pos + end) // 2) + 1
        if end - cursor.pos > limits.SLOW_SPAN_BYTES and middle > cursor.pos:
            pending.append(end)
            end = middle
            continue
        frame, bad = _slow_span(window, ctx, cursor, end)
        frames.append(frame)
        rejects.extend(bad)
        pending = [p for p in pending if p > cursor.pos]
        end = pending.pop() if pending else cut
    return frames, rejects


def _quote_balanced_end(window: _Window, start: int, end: int) -> int:
    """The last line end in the span preceded by an even number of quotes."""
    quotes = window.count(b'"', start, end)
    while quotes % 2:
        newline = window.rfind(b"\n", start, end - 1)
        if newline < 0:
            return start
        quotes -= window.count(b'"', newline + 1, end)
        end = newline + 1
    return end


def _number_fast(
    frame: pl.DataFrame, cursor: _Cursor, lines: int, ctx: _CsvContext
) -> pl.DataFrame:
    first = cursor.row + 1
    cursor.row += frame.height
    cursor.line += lines
    numbered = frame.with_columns(
        pl.int_range(first, first + frame.height, dtype=pl.Int64).alias(ctx.row_column)
    )
    if ctx.width == 1:  # a one-column blank line parses as one null: it is a blank line
        numbered = _empty_to_null(numbered.filter(numbered.to_series(0).is_not_null()))
    return numbered


def _slow_span(
    window: _Window, ctx: _CsvContext, cursor: _Cursor, stop: int
) -> tuple[pl.DataFrame, list[Reject]]:
    """The reference parser over [cursor, stop), continuing to the end of the last record."""
    rows: list[list[str]] = []
    numbers: list[int] = []
    rejects: list[Reject] = []
    # Most damaged spans hold no NUL and no undecodable byte: then no record needs the check.
    region = window.slice(cursor.pos, stop)
    suspect = b"\x00" in region or not _decodes(region, "utf-8")
    records = _reference_records(window, cursor.pos, cursor.line, ctx.delimiter, stop, ctx.width)
    for record in records:
        cursor.row += 1  # every record consumes its number, good, bad or blank
        cursor.pos = record.end
        cursor.line = record.line + record.lines - 1
        if record.fields == []:
            continue
        # (a record running past ``stop`` was not part of the region checked above)
        if record.fields is None or len(record.fields) != ctx.width or suspect or (
            record.end > stop
        ):
            reject = _record_reject(record, cursor.row, ctx)
            if reject is not None:
                rejects.append(reject)
                continue
        rows.append(record.fields)  # type: ignore[arg-type]  # not None: rejected above
        numbers.append(cursor.row)
    columns = zip(*rows, strict=True) if rows else ([] for _ in ctx.columns)
    series = [pl.Series(n, v, dtype=pl.String) for n, v in zip(ctx.columns, columns, strict=True)]
    frame = pl.DataFrame([*series, pl.Series(ctx.row_column, numbers, dtype=pl.Int64)])
    return _empty_to_null(frame), rejects


def _record_reject(record: _Record, row: int, ctx: _CsvContext) -> Reject | None:
    code, problem = record.code, record.problem
    if record.fields is not None:
        code, problem = _field_problem(record.fields, record.text, ctx)
    if code is None or problem is None:
        return None
    raw, cut = _raw_line(_clean_text(record.text.rstrip("\r\n")))
    where = f"{ctx.path} line {record.line} (data row {row})"
    remedy = _REMEDIES[code]
    if code == "bad_encoding" and not _is_utf8(ctx.encoding):
        remedy = f"the file is read as {ctx.encoding}: check --encoding, or re-export the file"
    return Reject(source_file=ctx.path, source_row=row, stage="read", code=code,
                  message=f"{where}: {problem} — {remedy}{cut}", raw_line=raw)


def _field_problem(
    fields: list[str], text: str, ctx: _CsvContext
) -> tuple[str | None, str | None]:
    if len(fields) != ctx.width:
        found = "1 field" if len(fields) == 1 else f"{len(fields)} fields"
        return "wrong_field_count", f"{found}, the header has {ctx.width}"
    if "\x00" not in text and not _SURROGATE.search(text):
        return None, None
    for name, value in zip(ctx.columns, fields, strict=True):
        if "\x00" in value:
            shown = _shown(_clean_text(value))
            return "nul_byte", f"a NUL byte in column {name!r}, value {shown!r}"
        if _SURROGATE.search(value):
            return "bad_encoding", _encoding_problem(name, value, ctx.encoding)
    return None, None


def _encoding_problem(name: str, value: str, encoding: str) -> str:
    shown = _shown(_clean_text(value))
    found = _SURROGATE.search(value)
    if _is_utf8(encoding) and found:
        # surrogateescape keeps an undecodable byte b as the code point U+DC00 + b
        byte = ord(found.group()) - 0xDC00
        return f"a byte that is not UTF-8 (0x{byte:02X}) in column {name!r}, value {shown!r}"
    valid = _report_encoding(encoding)
    return f"bytes that are not valid {valid} in column {name!r}, value {shown!r}"


def _csv_frame(frames: list[pl.DataFrame], ctx: _CsvContext) -> pl.DataFrame:
    schema = {**{name: pl.String() for name in ctx.columns}, ctx.row_column: pl.Int64()}
    parts = [f for f in frames if f.height] or [pl.DataFrame(schema=schema)]
    frame = pl.concat(parts, how="vertical") if len(parts) > 1 else parts[0]
    numbers = frame.get_column(ctx.row_column)
    return _with_provenance(frame.drop(ctx.row_column), ctx.path, numbers)
