"""The CSV fast path: polars parses a span once a linear-time regex has proved it strict CSV
with the header's field count."""

from __future__ import annotations

import codecs
from typing import TYPE_CHECKING

import polars as pl

if TYPE_CHECKING:
    from importer.sources.csv_read import _CsvContext


def _fast_parse(
    chunk: bytes, ctx: _CsvContext, final: bool, suspect: bool = False
) -> tuple[pl.DataFrame, int] | None:
    """Parse a span with polars, or None when it cannot be proved clean.

    polars is lenient (it pads short rows with nulls and reads ``"a"b""`` as ``ab``), so the
    span must first match the strict CSV grammar with exactly the header's field count
    (a finite-automaton regex, linear time). Returns the frame and the number of physical
    lines. A ``suspect`` span (part of one that failed) is checked before polars sees it:
    polars' attempt at a damaged span (a line of half a million fields after an unterminated
    quote) can cost hundreds of MB.
    """
    if not chunk.endswith(b"\n"):
        if not final:
            return None
        chunk += b"\n"
    if b"\x00" in chunk or ctx.grammar is None:
        return None
    if chunk.startswith(codecs.BOM_UTF8):
        # polars drops a BOM at the start of what it parses; here that is the first character
        # of a cell (the file's own BOM is gone by now): the reference parser keeps it.
        return None
    # Both release the GIL: the check runs on a second core while polars parses.
    check = ctx.checker.submit(_check_span, chunk, ctx.grammar)
    # Far more delimiters than the header's width allows (quoted ones aside) is damage: the
    # same check first, so polars never sees it.
    expected = (chunk.count(b"\n") + 1) * max(ctx.width - 1, 1)
    crowded = chunk.count(ctx.delimiter.encode()) > 4 * expected
    if (suspect or crowded) and not check.result()[0]:
        return None
    # polars reads an unquoted empty cell as null but a quoted "" as "": null_values unifies
    # them (it costs, so only when "" occurs). One column: a blank line reads as null and a
    # quoted "" as "", which must stay apart until blank lines are dropped.
    nulls = [""] if ctx.width > 1 and b'""' in chunk else None
    try:
        frame: pl.DataFrame | None = pl.read_csv(
            chunk, has_header=False, separator=ctx.delimiter, schema=ctx.schema, quote_char='"',
            null_values=nulls, truncate_ragged_lines=False)
    except pl.exceptions.PolarsError:  # e.g. invalid UTF-8
        frame = None
    strict, lines = check.result()
    return (frame, lines) if frame is not None and strict else None


def _check_span(chunk: bytes, grammar: str) -> tuple[bool, int]:
    """(the span is strict CSV with the right field count, its physical lines).

    polars' regex engine (Rust ``regex``: finite automata, linear time, no backtracking) on
    the span as one string. It used to be RE2 through pyarrow.compute, which made every CSV
    run import pyarrow and numpy: ~0.15 CPU-s of start-up, for a check ~10% faster than this
    one. Text that is not UTF-8 cannot be proved clean (polars could not parse it either).
    """
    lines = chunk.count(b"\n")
    try:
        text = pl.Series([chunk], dtype=pl.Binary).cast(pl.String)
    except pl.exceptions.PolarsError:  # not UTF-8
        return False, lines
    return bool(text.str.contains(grammar).item()), lines


def csv_grammar(delimiter: str, width: int) -> str:
    """A regex matching whole lines of strict CSV with exactly ``width`` fields.

    Quoted fields may hold anything with quotes doubled; unquoted ones no quote, delimiter or
    line break; a record ends with LF or CRLF.
    """
    d = delimiter if delimiter.isalnum() else "\\t" if delimiter == "\t" else "\\" + delimiter
    field = f'(?:"(?:[^"]|"")*"|[^"{d}\\r\\n]*)'
    record = field + (f"(?:{d}{field}){{{width - 1}}}" if width > 1 else "") + "\\r?\\n"
    return f"^(?:{record})*$"


def _compiles(pattern: str) -> bool:
    """False for a grammar over the regex size limit (a file of thousands of columns): such a
    file has no fast path, rather than a failed compilation per span."""
    try:
        pl.Series([""]).str.contains(pattern)
    except pl.exceptions.PolarsError:
        return False
    return True
