"""From the command line's paths, globs and directories to inspected :class:`SourceFile`s, and
the entry points that stream any of them."""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
from collections.abc import Iterable, Iterator, Sequence

from importer import remote
from importer.exceptions import ImporterError, InputChanged, InputError
from importer.records import SourceBatch
from importer.remote import RemoteFile
from importer.sources import limits
from importer.sources.csv_header import NotDelimitedText, _inspect_csv
from importer.sources.csv_read import _iter_csv
from importer.sources.model import Format, ReadOptions, SourceFile
from importer.sources.ndjson import _inspect_ndjson, _iter_ndjson
from importer.sources.parquet import _inspect_parquet, _iter_parquet

_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".jsonl": "ndjson", ".ndjson": "ndjson",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip


_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}


SUPPORTED = (".csv .tsv .txt (delimited text) .jsonl .ndjson .parquet (text files also as .gz "
             "or .zst)")


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
            found = _expand_url(pattern) if remote.is_url(pattern) else _expand(pattern)
        except InputError as exc:
            errors.append(exc)
            continue
        kept = len(sources)
        skipped = 0
        paths = [f.shown if isinstance(f, RemoteFile) else f for f in found]
        for item, path in zip(found, paths, strict=True):
            origin = item if isinstance(item, RemoteFile) else None
            key = path if origin else os.path.realpath(path)
            if key in seen:  # the same file twice in one run would import it twice
                continue
            seen.add(key)
            try:
                sources.append(inspect_file(path, options, origin=origin))
            except NotDelimitedText as exc:
                if path == remote.public(pattern):  # named explicitly: say why it is unread
                    errors.append(exc)
                skipped += 1  # (else a notes.txt beside the exports: not data, skipped)
            except InputError as exc:
                errors.append(exc)
        if skipped and skipped == len(paths) and len(sources) == kept:
            what = ("the directory holds no supported file" if os.path.isdir(pattern) else
                    "the pattern matches no supported file")
            errors.append(InputError(remote.public(pattern), what, f"point at the export files "
                                     f"(supported: {SUPPORTED})"))
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


#: A recursive pattern lists at most this many directories (a mount of the whole disk, or a
#: tree of links, is a mistake to report, not to walk for an hour).
MAX_GLOB_DIRS = 20_000


def _expand(pattern: str) -> list[str]:
    if glob.has_magic(pattern):
        found = [p for p in sorted(set(_glob(pattern))) if os.path.isfile(p)]
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


def _expand_url(pattern: str) -> list[RemoteFile]:
    """A URL's objects, filtered as a local directory's or glob's files are."""
    shown = remote.public(pattern)
    try:
        objects = remote.expand(pattern)
    except ImporterError:
        raise
    except Exception as exc:  # the storage client's own errors (OSError, botocore, aiohttp)
        what, remedy = remote.problem(exc)
        raise InputError(shown, what, remedy) from None
    if len(objects) == 1 and objects[0].url == pattern:
        return objects  # named explicitly: inspect_file says if its type is unsupported
    files = [o for o in objects if _wanted(o.shown)]
    if not files:
        what = "the pattern" if "*" in shown or "?" in shown or "[" in shown else "the prefix"
        raise InputError(shown, f"{what} matches no supported file",
                         f"check the URL (supported: {SUPPORTED})")
    return files


def _glob(pattern: str) -> Iterator[str]:
    """``glob.glob(pattern, recursive=True)``, but ``**`` enters each directory once.

    glob follows symbolic links to directories, so a link back up the tree (``d/a/up -> ..``)
    made it walk forever; here a directory is identified by (device, inode), visited once,
    and the walk stops with an InputError past :data:`MAX_GLOB_DIRS` directories.
    """
    head, parts = _glob_root(pattern)
    visited: set[tuple[int, int]] = set()

    def walk(base: str, rest: list[str]) -> Iterator[str]:
        if not rest:
            yield base
            return
        part, more = rest[0], rest[1:]
        if part == "**":
            for directory in _directories_once(base, visited, pattern):
                if not more:  # a trailing ** matches the files in every directory too
                    yield from (os.path.join(directory, n) for n in _listdir(directory or ".")
                                if not n.startswith("."))
                yield from walk(directory, more)
            return
        if not glob.has_magic(part):
            path = os.path.join(base, part)
            if os.path.lexists(path):
                yield from walk(path, more)
            return
        for name in _listdir(base or os.curdir):
            hidden = name.startswith(".") and not part.startswith(".")
            if not hidden and fnmatch.fnmatchcase(name, part):
                path = os.path.join(base, name)
                if not more or os.path.isdir(path):
                    yield from walk(path, more)

    yield from walk(head, parts)


def _glob_root(pattern: str) -> tuple[str, list[str]]:
    """The leading part without wildcards, and the components after it."""
    drive, rest = os.path.splitdrive(pattern)
    absolute = rest.startswith(os.sep)
    parts = [p for p in rest.split(os.sep) if p]
    head = drive + (os.sep if absolute else "")
    while parts and not glob.has_magic(parts[0]) and len(parts) > 1:
        head = os.path.join(head, parts.pop(0)) if head else parts.pop(0)
    return head, parts


def _directories_once(base: str, visited: set[tuple[int, int]], pattern: str) -> Iterator[str]:
    """``base`` and every directory under it (links followed), each (dev, inode) once."""
    stack = [base]
    while stack:
        directory = stack.pop()
        try:
            info = os.stat(directory or os.curdir)
        except OSError:
            continue
        key = (info.st_dev, info.st_ino)
        if key in visited:
            continue
        visited.add(key)
        if len(visited) > MAX_GLOB_DIRS:
            raise InputError(pattern, f"the pattern walks more than {MAX_GLOB_DIRS:,} "
                                      "directories", "narrow it down to the export's folder")
        yield directory
        children = [os.path.join(directory, n) for n in _listdir(directory or os.curdir)
                    if not n.startswith(".")]
        stack.extend(sorted((c for c in children if os.path.isdir(c)), reverse=True))


def _listdir(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


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


def inspect_file(
    path: str, options: ReadOptions = ReadOptions(), *, origin: RemoteFile | None = None
) -> SourceFile:
    """Open one file and read just enough of it to describe it.

    ``path`` may be a URL (``origin`` is then looked up), or ``origin`` the object listed
    and ``path`` its URL as shown. An object that changes while it is inspected is an
    InputError: nothing has been sent."""
    if origin is None and remote.is_url(path):
        objects = _expand_url(path)
        if len(objects) != 1:
            raise InputError(remote.public(path), f"names {len(objects)} objects",
                             "pass it to resolve_inputs, which lists them")
        origin = objects[0]
        path = origin.shown
    # (a sample and a header are read: blocks of READ_BLOCK, not the 8 MiB of streaming)
    sampled = dataclasses.replace(origin, block=limits.READ_BLOCK) if origin else None
    try:
        source = _inspect(path, options, sampled)
    except InputChanged as exc:
        raise InputError(path, "the object changed while it was being inspected",
                         "run again once the export is complete; nothing was sent") from exc
    return dataclasses.replace(source, origin=origin)


def _inspect(path: str, options: ReadOptions, origin: RemoteFile | None) -> SourceFile:
    kind = _classify(path)
    if kind is None:
        ext = "".join(_suffixes(path)) or "(no extension)"
        raise InputError(path, f"unsupported file type {ext}",
                         f"export it as CSV, Parquet or NDJSON (supported: {SUPPORTED})")
    fmt, compression = kind
    if origin is None:  # (an object's failures are named when it is opened below)
        _check_readable(path)
    if fmt == "parquet":
        return _inspect_parquet(path, origin)
    if fmt == "ndjson":
        return _inspect_ndjson(path, compression, options, origin)
    return _inspect_csv(path, compression, options, must_sniff=_is_txt(path), origin=origin)


def _is_txt(path: str) -> bool:
    name = os.path.basename(path).lower()
    for suffix in _COMPRESSIONS:
        name = name.removesuffix(suffix)
    return name.endswith(".txt")


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
