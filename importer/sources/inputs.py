"""From the command line's paths, globs and directories to inspected :class:`SourceFile`s, and
the entry points that stream any of them."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Sequence

from importer.exceptions import InputError
from importer.records import SourceBatch
from importer.sources.csv_header import _inspect_csv
from importer.sources.csv_read import _iter_csv
from importer.sources.model import Format, ReadOptions, SourceFile
from importer.sources.ndjson import _inspect_ndjson, _iter_ndjson
from importer.sources.parquet import _inspect_parquet, _iter_parquet

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "csv", ".jsonl": "ndjson", ".ndjson": "ndjson",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip


_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


SUPPORTED = ".csv .tsv .jsonl .ndjson .parquet (text files also as .gz or .zst)"


def resolve_inputs(
    patterns: Sequence[str], options: ReadOptions = ReadOptions()
) -> list[SourceFile]:
    """Expand paths, globs and directories, and inspect each file (header or schema only).

    Raises one :class:`InputError` naming every unusable input, before a row is read.
    """
    seen: set[str] = set()
    sources: list[SourceFile] = []
    errors: list[InputError] = []
    for pattern in patterns:
        try:
            paths = _expand(pattern)
        except InputError as exc:
            errors.append(exc)
            continue
        for path in paths:
            key = os.path.realpath(path)
            if key in seen:  # the same file twice in one run would import it twice
                continue
            seen.add(key)
            try:
                sources.append(inspect_file(path, options))
            except InputError as exc:
                errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        first, *others = errors
        listing = "\n".join(str(e) for e in others)
        raise InputError(first.path, f"{first.problem} — {first.remedy}\n{listing}")
    return sources


def iter_batches(source: SourceFile, options: ReadOptions = ReadOptions()) -> Iterator[SourceBatch]:
    """Stream one file as batches of about ``options.batch_rows`` rows."""
    if options.batch_rows < 1:
        raise ValueError("batch_rows must be at least 1")
    if source.format == "parquet":
        return _iter_parquet(source, options)
    if source.format == "ndjson":
        return _iter_ndjson(source, options)
    return _iter_csv(source, options)


def iter_all(
    sources: Iterable[SourceFile], options: ReadOptions = ReadOptions()
) -> Iterator[SourceBatch]:
    """The batches of several files, one file after the other."""
    for source in sources:
        yield from iter_batches(source, options)


def _expand(pattern: str) -> list[str]:
    if glob.has_magic(pattern):
        found = [p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p)]
        files = [p for p in found if _wanted(p)]
        if not files:
            raise InputError(pattern, "the pattern matches no supported file",
                             f"check the pattern (supported: {SUPPORTED})")
        return files
    if os.path.isdir(pattern):
        try:
            names = sorted(os.listdir(pattern))
        except OSError as exc:
            raise InputError(pattern, f"cannot list the directory: {exc.strerror}",
                             "make it readable by this user") from None
        files = [os.path.join(pattern, n) for n in names]
        files = [p for p in files if os.path.isfile(p) and _wanted(p)]
        if not files:
            raise InputError(pattern, "the directory holds no supported file",
                             f"point at the export files (supported: {SUPPORTED})")
        return files
    if not os.path.exists(pattern):
        raise InputError(pattern, "no such file or directory", "check the path")
    return [pattern]


def _wanted(path: str) -> bool:
    """Supported, not hidden, and not one of our own rejects files (re-importing is explicit)."""
    name = os.path.basename(path)
    return _classify(path) is not None and not name.startswith(".") and ".rejects." not in name


def _classify(path: str) -> tuple[Format, str | None] | None:
    stem, ext = os.path.splitext(os.path.basename(path).lower())
    compression = _COMPRESSIONS.get(ext)
    if compression:
        ext = os.path.splitext(stem)[1]
    fmt = _EXTENSIONS.get(ext)
    if fmt is None or (fmt == "parquet" and compression):
        return None
    return fmt, compression


def inspect_file(path: str, options: ReadOptions = ReadOptions()) -> SourceFile:
    """Open one file and read just enough of it to describe it."""
    kind = _classify(path)
    if kind is None:
        ext = "".join(_suffixes(path)) or "(no extension)"
        raise InputError(path, f"unsupported file type {ext}",
                         f"export it as CSV, Parquet or NDJSON (supported: {SUPPORTED})")
    fmt, compression = kind
    _check_readable(path)
    if fmt == "parquet":
        return _inspect_parquet(path)
    if fmt == "ndjson":
        return _inspect_ndjson(path, compression, options)
    return _inspect_csv(path, compression, options)


def _suffixes(path: str) -> list[str]:
    name = os.path.basename(path)
    return ["." + part for part in name.split(".")[1:]][-2:]


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        raise InputError(path, "permission denied",
                         "make the file readable by this user (chmod/chown)") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror}", "check the path") from None
