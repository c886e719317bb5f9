"""Binding a mapping to a file's header: the columns it names checked (unknown, reserved,
found only once stray spaces are trimmed), and the columns ``all_other_columns`` sends.

Split from :mod:`importer.mapping.engine`, which compiles with it and maps batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from importer.exceptions import MappingProblem
from importer.mapping.options import did_you_mean
from importer.mapping.spec import (
    CONTACT_RESERVED,
    SYSTEM_MANAGED,
    CoalesceSource,
    ColumnSource,
    FieldSpec,
    HashSource,
    MappingSpec,
    NestedSpec,
    Source,
    TargetSpec,
    TemplateSource,
    source_references,
)
from importer.records import RESERVED_SOURCE_COLUMNS

#: The engine's internal column names start so; a source column may not.
INTERNAL_PREFIX = "__instasent_map__"


def is_reserved(column: str) -> bool:
    return column in RESERVED_SOURCE_COLUMNS or column.startswith("_reject_")


def header_problems(
    references: Sequence[tuple[str, int]], columns: Sequence[str], source: str | None = None
) -> list[MappingProblem]:
    """The column problems of a mapping that could not be loaded, against one header: so a
    mapping check reports unknown columns together with type and format problems."""
    checker = HeaderCheck(columns, source)
    checker.references(references, renamed=checker.resolve(references))
    return checker.problems


# what surrounds a header name by accident: spaces, tabs, no-break spaces (str.strip's
# whitespace), and the zero-width characters spreadsheets leave behind
_STRAY = "\ufeff\u200b"


def attribute_name(column: str) -> str:
    """The name a column is sent under by ``all_other_columns``: without stray spaces."""
    return column.strip().strip(_STRAY).strip()


class HeaderCheck:
    """The columns a mapping names, checked against one header: problems collected, names
    with stray spaces resolved, the columns ``all_other_columns`` sends."""


    def __init__(self, columns: Sequence[str], source: str | None) -> None:
        self.columns = list(columns)
        self.available = [c for c in columns if not is_reserved(c)]
        self.where = f" of {source}" if source else ""
        self.problems: list[MappingProblem] = []
        self._trimmed: dict[str, list[str]] = {}
        for column in self.available:
            self._trimmed.setdefault(attribute_name(column), []).append(column)
        for column in columns:
            if column.startswith(INTERNAL_PREFIX):
                self.error(f"column {column!r} uses a name reserved for the importer's own "
                           "work; rename it in the file", 0)

    def error(self, message: str, line: int) -> None:
        self.problems.append(MappingProblem(message, line))

    def warn(self, message: str, line: int) -> None:
        self.problems.append(MappingProblem(message, line, "warning"))

    def resolve(self, references: Sequence[tuple[str, int]]) -> dict[str, str]:
        """Mapping names that are header names only once stray spaces are trimmed."""
        renamed: dict[str, str] = {}
        for column, line in references:
            if column in self.columns or column in renamed or is_reserved(column):
                continue
            found = self._trimmed.get(attribute_name(column), [])
            if len(found) == 1:
                renamed[column] = found[0]
                self.warn(f"column {column!r} is {found[0]!r} in the header{self.where} "
                          "(stray spaces or a no-break space around the name); matched", line)
            elif len(found) > 1:
                self.error(f"column {column!r} matches several header columns{self.where} "
                           f"once spaces are trimmed ({', '.join(map(repr, found))}); rename "
                           "them in the file", line)
                renamed[column] = found[0]  # reported once, not again as missing
        return renamed

    def references(
        self, references: Sequence[tuple[str, int]], renamed: Mapping[str, str] | None = None
    ) -> None:
        for column, line in references:
            if renamed is None or column not in renamed:
                self.check(column, line)

    def check(self, column: str, line: int) -> None:
        if is_reserved(column):
            self.error(f"column {column!r} is added by the importer (source position or reject "
                       "details) and cannot be mapped; map a column of the export instead", line)
        elif column not in self.columns:
            hint = did_you_mean(column, self.available)
            self.error(f"column {column!r} is not in the header{self.where}{hint}; the header "
                       f"has: {_short_list(self.available)}", line)

    def pass_through(self, target: TargetSpec) -> tuple[str, ...]:
        spec = target.pass_through
        if spec is None:
            return ()
        used = {c for f in target.leaves() for c in f.columns}
        names = {f.name for f in target.leaves()}
        exclude = {attribute_name(name) for name in spec.exclude}
        for name in spec.exclude:
            if attribute_name(name) not in self._trimmed:
                self.warn(f"custom_attributes exclude lists {name!r}, which is not in the "
                          f"header{self.where}{did_you_mean(name, self.available)}", spec.line)
        out: list[str] = []
        sent: dict[str, str] = {}
        trimmed: list[str] = []
        for column in self.available:
            name = attribute_name(column)
            if column in used or name in exclude:
                continue
            if name in names:
                self.warn(f"column {column!r} is not passed through by all_other_columns: a "
                          "field already has that name", spec.line)
                continue
            if not name:
                self.error(f"column {column!r} has a blank name and cannot be sent by "
                           "all_other_columns; add it to `exclude:` or name it", spec.line)
                continue
            if name in sent:
                self.error(f"columns {sent[name]!r} and {column!r} would both be sent as "
                           f"attribute {name!r}; add one to `exclude:`", spec.line)
                continue
            if not self._pass_through_name_ok(name, spec.line):
                continue
            sent[name] = column
            if name != column:
                trimmed.append(column)
            out.append(column)
        if trimmed:
            shown = ", ".join(f"{c!r} as {attribute_name(c)!r}" for c in trimmed[:10])
            more = f" and {len(trimmed) - 10} more" if len(trimmed) > 10 else ""
            self.warn(f"all_other_columns sends {shown}{more}: stray spaces or no-break spaces "
                      f"around header names{self.where} are left out of attribute names",
                      spec.line)
        return tuple(out)

    def _pass_through_name_ok(self, column: str, line: int) -> bool:
        if column in SYSTEM_MANAGED:
            self.error(f"column {column!r} would be sent by all_other_columns, but Instasent "
                       "manages it; add it to `exclude:`", line)
            return False
        if column.startswith("_") and column not in CONTACT_RESERVED:
            self.warn(f"column {column!r} starts with '_' and would be sent as a reserved "
                      "attribute Instasent may not define; exclude or rename it", line)
        return True


def column_references(spec: MappingSpec) -> list[tuple[str, int]]:
    refs: list[tuple[str, int]] = [(rule.column, rule.line) for rule in spec.skip_if]
    for target in spec.targets:
        for field in target.leaves():
            refs.extend(source_references(field.source, field.line))
    return refs


def respelled(spec: MappingSpec, renamed: Mapping[str, str]) -> MappingSpec:
    """``spec`` reading the header's own spelling of the columns in ``renamed``."""
    if not renamed:
        return spec

    def name(column: str) -> str:
        return renamed.get(column, column)

    def source(src: Source) -> Source:
        if isinstance(src, ColumnSource):
            return dataclasses.replace(src, column=name(src.column))
        if isinstance(src, TemplateSource):
            parts = tuple((text, None if c is None else name(c)) for text, c in src.parts)
            return dataclasses.replace(src, parts=parts)
        if isinstance(src, HashSource | CoalesceSource):
            return dataclasses.replace(src, columns=tuple(map(name, src.columns)))
        return src

    def field(f: FieldSpec) -> FieldSpec:
        return dataclasses.replace(f, source=source(f.source))

    def item(i: FieldSpec | NestedSpec) -> FieldSpec | NestedSpec:
        if isinstance(i, NestedSpec):
            return dataclasses.replace(i, fields=tuple(map(field, i.fields)))
        return field(i)

    targets = tuple(dataclasses.replace(t, fields=tuple(map(item, t.fields)))
                    for t in spec.targets)
    skip = tuple(dataclasses.replace(r, column=name(r.column)) for r in spec.skip_if)
    return dataclasses.replace(spec, targets=targets, skip_if=skip)


def _short_list(columns: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(columns[:limit])
    return shown + (f", … ({len(columns)} in all)" if len(columns) > limit else "")
