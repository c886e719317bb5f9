"""Load a mapping file: YAML with line numbers → shape check → meaning check → MappingSpec.

Every problem is collected with its YAML line and reported at once in one
:class:`MappingError`; warnings ride along on the spec.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from importer.exceptions import MappingError, MappingProblem
from importer.mapping import _yaml
from importer.mapping._yaml import Path as Path_
from importer.mapping.options import Options, check_options, did_you_mean, empty_options
from importer.mapping.rules import check_target
from importer.mapping.shapes import (
    CustomShape,
    DefaultsShape,
    FieldShape,
    MappingShape,
    SkipShape,
    TargetShape,
)
from importer.mapping.spec import (
    ALL_OTHER_COLUMNS,
    FIELD_TYPES,
    ID_FIELDS,
    NESTED_KEYS,
    SIMPLE_TRANSFORMS,
    TARGETS,
    TRANSFORMS,
    CoalesceSource,
    ColumnSource,
    FieldSpec,
    HashSource,
    MappingSpec,
    NestedSpec,
    PassThrough,
    SkipRule,
    Source,
    TargetName,
    TargetSpec,
    TemplateSource,
    Transform,
    ValueSource,
    source_references,
)

M = TypeVar("M", bound=BaseModel)

#: What a key takes, for keys whose value may have several shapes.
_EXPECTED = {
    "transform": "a transform name, or a list of names and {map: …} / {default: …}",
    "hash": "a column name or a list of column names",
    "coalesce": "a column name or a list of column names",
    "value": "a single value",
    "format": "a strftime format or a list of them",
    "custom_attributes": "all_other_columns, a list of columns, or "
    "{all_other_columns: true, exclude: [columns]}",
    "skip_if": "a list of rules such as {column: status, equals: deleted}",
}


def load_mapping(path: str | Path) -> MappingSpec:
    """Parse and check a mapping file; raise :class:`MappingError` listing every problem."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MappingError(
            name, [MappingProblem(f"cannot read the mapping file: {exc.strerror}")]
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MappingError(
            name, [MappingProblem(f"not UTF-8 text ({exc.reason}); save it as UTF-8")]
        ) from None
    return parse_mapping(text, path=name, sha256=hashlib.sha256(raw).hexdigest())


def parse_mapping(text: str, *, path: str = "<mapping>", sha256: str = "") -> MappingSpec:
    """:func:`load_mapping` on text already in memory (``sha256`` defaults to the text's)."""
    sha = sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest()
    doc = _yaml.read_yaml(text)
    checker = _Checker(doc)
    spec = None
    if doc.value is not None:  # a duplicate key is a problem, yet the rest can be checked
        spec = checker.mapping(doc.value, path, sha)
    problems = [*doc.problems, *checker.problems]
    if any(p.severity == "error" for p in problems) or spec is None:
        raise MappingLoadError(path, sorted(problems, key=lambda p: p.line), checker.refs)
    return spec


class MappingLoadError(MappingError):
    """A mapping that did not load, with the columns it names and their lines, so that a
    check against a file's header can report unknown columns in the same pass
    (:func:`importer.mapping.check.load_and_compile`)."""

    def __init__(
        self, path: str, problems: Sequence[MappingProblem], references: Sequence[tuple[str, int]]
    ) -> None:
        super().__init__(path, problems)
        self.references = tuple(references)


class _Checker:
    """Walks the plain document, collecting problems with their lines."""

    def __init__(self, doc: _yaml.YamlDoc) -> None:
        self.doc = doc
        self.problems: list[MappingProblem] = []
        #: every column named by a source or rule, with its line, valid field or not
        self.refs: list[tuple[str, int]] = []

    # -- reporting

    def error(self, message: str, path: Path_) -> None:
        self.problems.append(MappingProblem(message, self.doc.line(path)))

    def warn(self, message: str, path: Path_) -> None:
        self.problems.append(MappingProblem(message, self.doc.line(path), "warning"))

    def shape(self, model: type[M], data: Any, path: Path_, what: str) -> M | None:
        if not isinstance(data, dict):
            self.error(f"{what} must be a mapping of keys, not {_kind(data)}", path)
            return None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            allowed = [f.alias or n for n, f in model.model_fields.items()]
            reported: set[str] = set()
            for err in exc.errors():
                key = str(err["loc"][0]) if err["loc"] else ""
                if key not in reported:  # a union reports one error per alternative
                    reported.add(key)
                    self._shape_error(err, path, what, allowed, data.get(key))
            bad = reported
        # carry on without the faulty keys, so that the problems in the rest are found too
        rest = {k: v for k, v in data.items() if k not in bad}
        if len(rest) == len(data):
            return None
        try:
            return model.model_validate(rest)
        except ValidationError:
            return None

    def _shape_error(
        self, err: Any, path: Path_, what: str, allowed: list[str], given: Any
    ) -> None:
        loc = tuple(err["loc"])
        where = (*path, *loc)
        key = str(loc[0]) if loc else ""
        if key in _EXPECTED and err["type"] not in ("extra_forbidden", "missing"):
            self.error(f"{what}: {key}: expected {_EXPECTED[key]} (got {given!r})", (*path, key))
        elif err["type"] == "extra_forbidden":
            self.error(
                f"unknown key {key!r} in {what}{did_you_mean(key, allowed)}; "
                f"allowed: {', '.join(allowed)}",
                where,
            )
        elif err["type"] == "missing":
            self.error(f"{what} needs the key {key!r}", path)
        else:
            dotted = ".".join(str(p) for p in loc)
            got = err.get("input")
            self.error(f"{what}: {dotted}: {err['msg']} (got {got!r})", where)

    # -- top level

    def mapping(self, data: Any, path: str, sha256: str) -> MappingSpec | None:
        top = self.shape(MappingShape, data, (), "the mapping")
        if top is None:
            return None
        if top.version != 1:
            self.error(f"version {top.version} is not supported; this importer reads version 1",
                       ("version",))
        defaults = self.defaults(top.defaults)
        targets = self.targets(top, defaults)
        skip = self.skip_rules(top.skip_if)
        if not targets:
            return None
        ordered = tuple(sorted(targets, key=lambda t: TARGETS.index(t.target)))
        warnings = tuple(p for p in self.problems if p.severity == "warning")
        return MappingSpec(path, sha256, ordered, skip, top.send_nulls, warnings)

    def defaults(self, data: dict[str, Any] | None) -> DefaultsShape:
        if data is None:
            return DefaultsShape()
        found = self.shape(DefaultsShape, data, ("defaults",), "defaults")
        if found is not None:
            empty = Options()
            empty_options(found, empty, "defaults")
            for message, key in empty.problems:
                self.error(message, ("defaults", key) if key else ("defaults",))
        return found or DefaultsShape()

    def targets(self, top: MappingShape, defaults: DefaultsShape) -> list[TargetSpec]:
        if (top.target is None) == (top.targets is None):
            self.error(
                "say what the file feeds: `target: contacts` (or events), or `targets:` with "
                "one entry per target — exactly one of the two",
                (),
            )
            if top.fields:  # still report what is wrong in the fields themselves
                self.field_map(top.fields, ("fields",), defaults, "unknown")
            return []
        if top.target is not None:
            entry = TargetShape(
                target=top.target, fields=top.fields, custom_attributes=top.custom_attributes
            )
            one = self.target(entry, (), defaults)
            return [one] if one else []
        for key in ("fields", "custom_attributes"):
            if getattr(top, key) is not None:
                self.error(f"with `targets:`, put `{key}:` inside each target entry", (key,))
        return self.target_list(top.targets or [], defaults)

    def target_list(self, entries: list[Any], defaults: DefaultsShape) -> list[TargetSpec]:
        if not entries:
            self.error("`targets:` is empty; list at least one target", ("targets",))
        out: list[TargetSpec] = []
        seen: set[str] = set()
        for index, data in enumerate(entries):
            path = ("targets", index)
            entry = self.shape(TargetShape, data, path, f"targets entry {index + 1}")
            if entry is None:
                continue
            if entry.target in seen:
                self.error(f"target {entry.target!r} is listed twice; merge the entries", path)
                continue
            seen.add(entry.target)
            one = self.target(entry, path, defaults)
            if one:
                out.append(one)
        return out

    def target(
        self, entry: TargetShape, path: Path_, defaults: DefaultsShape
    ) -> TargetSpec | None:
        if entry.target not in TARGETS:
            self.error(
                f"unknown target {entry.target!r}{did_you_mean(entry.target, TARGETS)}; "
                "use contacts or events",
                (*path, "target"),
            )
            if entry.fields:
                self.field_map(entry.fields, (*path, "fields"), defaults, "unknown")
            return None
        name: TargetName = "contacts" if entry.target == "contacts" else "events"
        fields_path = (*path, "fields")
        if not entry.fields:
            self.error(f"the {name} target has no `fields:`; map at least the ids", path)
            return None
        fields = self.field_map(entry.fields, fields_path, defaults, name)
        extra, pass_through = self.custom(entry.custom_attributes, path, name, fields)
        spec = TargetSpec(name, self.doc.line((*path, "target")), (*fields, *extra), pass_through)
        check_target(self, spec, fields_path, declared=set(entry.fields))
        return spec

    # -- fields

    def field_map(
        self, data: dict[str, Any], path: Path_, defaults: DefaultsShape, target: str
    ) -> list[FieldSpec | NestedSpec]:
        out: list[FieldSpec | NestedSpec] = []
        for name, value in data.items():
            where = (*path, name)
            if not name.strip():
                self.error("a field name is empty", where)
                continue
            if name in NESTED_KEYS:
                if target == "events" and path[-1] == "fields":
                    nested = self.nested(name, value, where, defaults)
                    if nested:
                        out.append(nested)
                elif target == "contacts":
                    self.error(f"{name} belongs to events, not contacts", where)
                elif target != "unknown":
                    self.error(f"{name} cannot be nested inside another object", where)
                continue
            field = self.field(name, value, where, defaults)
            if field:
                out.append(field)
        return out

    def nested(
        self, name: str, value: Any, path: Path_, defaults: DefaultsShape
    ) -> NestedSpec | None:
        if not isinstance(value, dict) or not value:
            self.error(
                f"{name} must be a mapping of fields (name: {{column: ...}}), "
                f"not {_kind(value)}",
                path,
            )
            return None
        fields = [
            f
            for f in self.field_map(value, path, defaults, "nested")
            if isinstance(f, FieldSpec)
        ]
        return NestedSpec(name, self.doc.line(path), tuple(fields))

    def field(
        self, name: str, value: Any, path: Path_, defaults: DefaultsShape
    ) -> FieldSpec | None:
        what = f"field {name!r}"
        if isinstance(value, str):  # shorthand: `_first_name: first_name`
            value = {"column": value}
            self.doc.lines.setdefault((*path, "column"), self.doc.line(path))
        shape = self.shape(FieldShape, value, path, what)
        if shape is None:
            return None
        source = self.source(shape, path, what)
        if source is not None:
            self.refs.extend(source_references(source, self.doc.line(path)))
        kind = next((t for t in FIELD_TYPES if t == shape.type), None)
        if kind is None:
            self.error(
                f"{what}: unknown type {shape.type!r}{did_you_mean(shape.type, FIELD_TYPES)}; "
                f"types: {', '.join(FIELD_TYPES)}",
                (*path, "type"),
            )
            return None
        transforms = self.transforms(shape.transform, (*path, "transform"), what)
        options = check_options(shape, defaults, what)
        for message, key in options.problems:
            self.error(message, (*path, key) if key else path)
        if source is None or transforms is None or options.problems:
            return None
        field = FieldSpec(
            name=name,
            line=self.doc.line(path),
            source=source,
            type=kind,
            required=shape.required or name in ID_FIELDS,
            transforms=transforms,
            **options.values,
        )
        if isinstance(source, ValueSource):
            self.constant(field, path, what)
        return field

    def source(self, shape: FieldShape, path: Path_, what: str) -> Source | None:
        given = [k for k in ("column", "value", "template", "hash", "coalesce")
                 if k in shape.model_fields_set and getattr(shape, k) is not None]
        if len(given) != 1:
            if given:
                keys = ", ".join(f"{k}:" for k in given)
                self.error(f"{what} has {keys}; keep exactly one source", path)
            else:
                self.error(
                    f"{what} needs a source: one of column:, value:, template:, hash:, coalesce:",
                    path,
                )
            return None
        kind = given[0]
        line = self.doc.line((*path, kind))
        if kind == "column":
            return ColumnSource(str(shape.column), line)
        if kind == "value":
            return ValueSource(shape.value if shape.value is not None else "")
        if kind == "template":
            return self.template(str(shape.template), (*path, "template"), what)
        cols = getattr(shape, kind)
        listed: list[str] = [cols] if isinstance(cols, str) else list(cols)
        if not listed or any(not c for c in listed):
            self.error(f"{what}: {kind}: list one or more column names", (*path, kind))
            return None
        lines = tuple(
            self.doc.line((*path, kind, i)) if not isinstance(cols, str) else line
            for i in range(len(listed))
        )
        if kind == "hash":
            return HashSource(tuple(listed), lines)
        return CoalesceSource(tuple(listed), lines)

    def template(self, text: str, path: Path_, what: str) -> TemplateSource | None:
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            self.error(f"{what}: template {text!r} is malformed ({exc}); "
                       "write {column} for a column and {{ }} for literal braces", path)
            return None
        parts: list[tuple[str, str | None]] = []
        for literal, column, spec, conversion in parsed:
            if column is not None and (spec or conversion or not column.strip()):
                self.error(f"{what}: template {text!r}: only plain {{column}} references "
                           "are allowed (no formats, conversions or empty braces)", path)
                return None
            parts.append((literal, column))
        if not any(c is not None for _, c in parts):
            self.error(f"{what}: template {text!r} references no column; use value: instead",
                       path)
            return None
        return TemplateSource(text, tuple(parts), self.doc.line(path))

    def transforms(self, data: Any, path: Path_, what: str) -> tuple[Transform, ...] | None:
        if data is None:
            return ()
        items = data if isinstance(data, list) else [data]
        out: list[Transform] = []
        ok = True
        for index, item in enumerate(items):
            where = (*path, index) if isinstance(data, list) else path
            found = self.transform(item, where, what)
            ok = ok and found is not None
            if found is not None:
                out.append(found)
        return tuple(out) if ok else None

    def transform(self, item: Any, path: Path_, what: str) -> Transform | None:
        if isinstance(item, str):
            if item in SIMPLE_TRANSFORMS:
                return Transform(item)
            hint = did_you_mean(item, TRANSFORMS)
            if item in ("map", "default"):
                self.error(f"{what}: transform {item} needs a value, e.g. "
                           f"`- {item}: ...`", path)
            else:
                self.error(f"{what}: unknown transform {item!r}{hint}; transforms: "
                           f"{', '.join(TRANSFORMS)}", path)
            return None
        if isinstance(item, dict) and len(item) == 1:
            (key, arg), = item.items()
            if key == "map":
                return self.map_transform(arg, path, what)
            if key == "default":
                if isinstance(arg, dict | list) or arg is None:
                    self.error(f"{what}: default: needs a single value", path)
                    return None
                return Transform("default", default=_text(arg))
            self.error(f"{what}: unknown transform {key!r}{did_you_mean(key, TRANSFORMS)}", path)
            return None
        self.error(f"{what}: a transform is a name (strip, lower, …) or one of "
                   "`map: {{from: to}}` / `default: value`", path)
        return None

    def map_transform(self, table: Any, path: Path_, what: str) -> Transform | None:
        if not isinstance(table, dict) or not table:
            self.error(f"{what}: map: needs a lookup table such as {{M: male, F: female}}", path)
            return None
        pairs: list[tuple[str, str | None]] = []
        for key, value in table.items():
            if isinstance(value, dict | list):
                self.error(f"{what}: map: {key!r} must map to a single value", path)
                return None
            pairs.append((key, None if value is None else _text(value)))
        return Transform("map", table=tuple(pairs))

    def constant(self, field: FieldSpec, path: Path_, what: str) -> None:
        from importer.mapping.engine import check_constant

        problem = check_constant(field)
        if problem:
            self.error(f"{what}: value: {problem}", (*path, "value"))

    # -- custom attributes

    def custom(
        self,
        data: Any,
        path: Path_,
        target: str,
        fields: Sequence[FieldSpec | NestedSpec],
    ) -> tuple[list[FieldSpec], PassThrough | None]:
        where = (*path, "custom_attributes")
        if data is None:
            return [], None
        if target != "contacts":
            self.error("custom_attributes applies to contacts; for events put extra columns "
                       "under _event_parameters", where)
            return [], None
        if isinstance(data, str):
            if data != ALL_OTHER_COLUMNS:
                self.error(f"custom_attributes: {data!r} is not understood"
                           f"{did_you_mean(data, [ALL_OTHER_COLUMNS])}; write "
                           "all_other_columns or a list of column names", where)
                return [], None
            return [], PassThrough(self.doc.line(where))
        if isinstance(data, dict):
            shape = self.shape(CustomShape, data, where, "custom_attributes")
            if shape is None or not shape.all_other_columns:
                return [], None
            return [], PassThrough(self.doc.line(where), tuple(shape.exclude))
        return self.listed_custom(data, where, fields), None

    def listed_custom(
        self, data: list[str], path: Path_, fields: Sequence[FieldSpec | NestedSpec]
    ) -> list[FieldSpec]:
        taken = {f.name for f in fields}
        out: list[FieldSpec] = []
        for index, column in enumerate(data):
            where = (*path, index)
            if column in taken:
                self.error(f"custom attribute {column!r} is also a field; keep one", where)
                continue
            taken.add(column)
            line = self.doc.line(where)
            self.refs.append((column, line))
            out.append(FieldSpec(name=column, line=line, source=ColumnSource(column, line)))
        return out

    # -- skip_if

    def skip_rules(self, data: Any) -> tuple[SkipRule, ...]:
        if data is None:
            return ()
        items = data if isinstance(data, list) else [data]
        rules: list[SkipRule] = []
        for index, item in enumerate(items):
            path = ("skip_if", index) if isinstance(data, list) else ("skip_if",)
            shape = self.shape(SkipShape, item, path, "a skip_if rule")
            if shape is None:
                continue
            self.refs.append((shape.column, self.doc.line(path)))
            rule = self.skip_rule(shape, path)
            if rule:
                rules.append(rule)
        return tuple(rules)

    def skip_rule(self, shape: SkipShape, path: Path_) -> SkipRule | None:
        tests = [k for k, v in (("empty", shape.empty), ("equals", shape.equals),
                                ("in", shape.in_)) if v is not None]
        line = self.doc.line(path)
        if len(tests) != 1:
            self.error("a skip_if rule needs exactly one of empty: true, equals: VALUE, "
                       "in: [VALUES]", path)
            return None
        if tests == ["empty"]:
            if not shape.empty:
                self.error("skip_if `empty: false` would skip nothing; remove the rule", path)
                return None
            return SkipRule(shape.column, line, "empty")
        if tests == ["equals"]:
            return SkipRule(shape.column, line, "equals", (str(shape.equals),))
        if not shape.in_:
            self.error("skip_if `in:` needs at least one value", path)
            return None
        return SkipRule(shape.column, line, "in", tuple(shape.in_))



def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _kind(value: Any) -> str:
    names: Mapping[type, str] = {
        list: "a list", dict: "a mapping", str: "text", bool: "a boolean"
    }
    return "nothing" if value is None else names.get(type(value), type(value).__name__)
