"""The CSV reference parser: Python's csv module, strict, record by record, over the window.

It defines what a record is; the fast path (:mod:`importer.sources.csv_grammar`) only takes
spans on which it provably agrees with this parser.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass

from importer.sources import limits
from importer.sources.textstream import _RecordTooLong, _Window


@dataclass(slots=True)
class _Record:
    fields: list[str] | None  # None: the line could not be split into fields
    start: int
    end: int
    line: int  # physical line (1-based) where the record starts
    lines: int  # physical lines it spans
    text: str  # the raw text, line ends included
    problem: str | None = None
    code: str | None = None


class _LineFeeder:
    """Hands csv.reader one physical line at a time and remembers where it got to.

    Lines before ``stop`` are split in one go (the reference parser is the slow path, it
    need not be slower than that); past ``stop`` they come from the window one by one. The
    lines of a record that failed can be given back, all but its first.
    """

    def __init__(self, window: _Window, pos: int, line: int, stop: int | None) -> None:
        self.window = window
        self.pos = pos
        self.line = line
        self.record_start = pos
        self.taken: list[bytes] = []
        region = window.slice(pos, stop) if stop is not None and stop > pos else b""
        self._ahead = [raw + b"\n" for raw in region.split(b"\n")[:-1]]  # complete lines
        self._ahead.reverse()  # the next line is popped from the end

    def __iter__(self) -> _LineFeeder:
        return self

    def __next__(self) -> str:
        limit = self.record_start + limits.MAX_RECORD_BYTES
        if self._ahead:
            raw = self._ahead[-1]
            if self.pos + len(raw) - 1 >= limit:  # the same rule as _Window.line_end
                raise _RecordTooLong
            self._ahead.pop()
        else:
            end = self.window.line_end(self.pos, limit)
            if end is None:
                raise StopIteration
            raw = self.window.slice(self.pos, end)
        self.pos += len(raw)
        self.line += 1
        self.taken.append(raw)
        return raw.decode("utf-8", "surrogateescape")

    def begin(self) -> None:
        self.record_start = self.pos
        self.taken = []

    def text(self) -> str:
        return b"".join(self.taken).decode("utf-8", "surrogateescape")

    def give_back_all_but_first(self, first_line: int) -> None:
        """Rewind to just after the current record's first line."""
        self._ahead.extend(reversed(self.taken[1:]))
        self.pos = self.record_start + len(self.taken[0])
        self.line = first_line
        self.taken = self.taken[:1]

    def skip_first_line(self, first_line: int) -> bytes:
        """Skip the current record's first line, however long; returns its (head of) text."""
        self._ahead.clear()  # the window takes over from here
        self.pos, raw = self.window.skip_line(self.record_start)
        self.line = first_line
        return raw + "…".encode()


def _reference_records(
    window: _Window, pos: int, line: int, delimiter: str, stop: int | None, width: int | None
) -> Iterator[_Record]:
    """Records from ``pos`` (a record boundary) until one would start at or after ``stop``.

    Python's csv module in strict mode defines what a record is. A record it cannot split,
    or one spanning several lines with the wrong field count (an unterminated quote that
    swallowed the next lines), is reported as its first line alone, and reading resumes on
    the line after it.
    """
    csv.field_size_limit(max(csv.field_size_limit(), limits.MAX_RECORD_BYTES))
    feeder = _LineFeeder(window, pos, line, stop)
    reader = csv.reader(feeder, delimiter=delimiter, strict=True)
    while stop is None or feeder.pos < stop:
        start, first = feeder.pos, feeder.line + 1
        feeder.begin()
        code = "unterminated_quote"
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            problem = f"a quoted field is not closed ({exc})"
            if "end of data" not in str(exc) and feeder.line == first:
                code, problem = "malformed_csv", f"cannot be split into fields ({exc})"
        except _RecordTooLong:
            size = limits.MAX_RECORD_BYTES // 2**20
            problem = f"a record longer than {size} MiB (a quote not closed?)"
        else:
            spans = feeder.line - first + 1
            if not (width is not None and spans > 1 and fields and len(fields) != width):
                yield _Record(fields, start, feeder.pos, first, spans, feeder.text())
                continue
            problem = (f"a quoted field runs over {spans} lines and leaves {len(fields)} fields, "
                       f"the header has {width}")
        if feeder.taken:
            feeder.give_back_all_but_first(first)
            text = feeder.text()
        else:  # the first line alone is too long
            text = feeder.skip_first_line(first).decode("utf-8", "surrogateescape")
        yield _Record(None, start, feeder.pos, first, 1, text, problem, code)
        reader = csv.reader(feeder, delimiter=delimiter, strict=True)
