"""The mapping check: load a mapping and bind it to every input's header, every problem at once.

``load_mapping`` alone stops at the mapping's own problems (types, formats, options); a
column missing from a header would only show up on the next attempt. Here a mapping that does
not load is still checked against each header, so one run of ``validate`` (or ``run``) lists
unknown columns together with type and format problems.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from importer.exceptions import MappingError, MappingProblem
from importer.mapping.engine import CompiledMapping, compile_mapping
from importer.mapping.header import header_problems
from importer.mapping.load import MappingLoadError, load_mapping
from importer.mapping.spec import MappingSpec

#: (the file's path or None, its header)
Header = tuple[str | None, Sequence[str]]


def load_and_compile(
    mapping: str | Path, headers: Sequence[Header]
) -> tuple[MappingSpec, list[CompiledMapping]]:
    """Load ``mapping`` and compile it for each header; raise one :class:`MappingError` with
    every problem (the mapping's own and each header's, without repeats)."""
    try:
        spec = load_mapping(mapping)
    except MappingLoadError as exc:
        problems = list(exc.problems)
        for source, columns in headers:
            problems.extend(header_problems(exc.references, columns, source))
        raise _every(exc.path, problems) from None
    compiled: list[CompiledMapping] = []
    problems = []
    for source, columns in headers:
        try:
            compiled.append(compile_mapping(spec, columns, source=source))
        except MappingError as exc:
            problems.extend(exc.problems)
    if problems:
        raise _every(spec.path, problems)
    return spec, compiled


def _every(path: str, problems: Sequence[MappingProblem]) -> MappingError:
    unique = list(dict.fromkeys(problems))
    return MappingError(path, sorted(unique, key=lambda p: p.line))
