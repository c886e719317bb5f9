"""Compile a mapping against a file's header, then map batches: items, rejects, filtered rows.

A batch goes through vectorised passes, each materialised because polars evaluates a shared
sub-expression again at every use inside one ``with_columns``:

1. *prepare*: each field's source, blank cells as null, transforms, trimming;
2. *lookups*: phone numbers and JSON cells resolved once per distinct value;
3. *members*: each field as its JSON object member text ``"name":value`` (``""`` when the
   input is present but invalid);
4. one ``select``: the first error code of the row, and each target's key and body, built by
   string concatenation into the exact bytes sent to the API.

Rows with an error code become one ``map`` reject each (messages are built for those rows
only); skipped rows are only counted.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
import polars as pl

from importer.exceptions import MappingError, MappingProblem
from importer.mapping import phone
from importer.mapping.casts import (
    ERROR_CODES,
    PLAIN_TRANSFORMS,
    apply_transforms,
    as_text,
    json_lookup,
    native_json,
    needs_escaping,
    needs_text,
    normalise_text,
    source_expr,
    typed,
)
from importer.mapping.header import (
    INTERNAL_PREFIX,
    HeaderCheck,
    attribute_name,
    column_references,
    is_reserved,
    respelled,
)
from importer.mapping.limits import (
    LeafValue,
    Limits,
    RowCheck,
    event_type_check,
    leaf_checks,
    unmapped_checks,
)
from importer.mapping.messages import REMEDY, describe_source, expectation, problem_text
from importer.mapping.spec import (
    ColumnSource,
    FieldSpec,
    MappingSpec,
    NestedSpec,
    SkipRule,
    TargetName,
    TargetSpec,
    ValueSource,
)
from importer.records import (
    RAW_LINE,
    REJECT_SCHEMA,
    SOURCE_FILE,
    SOURCE_ROW,
    RejectFrame,
    SourceBatch,
)

_KEY_FIELD: dict[str, str] = {"contacts": "_user_id", "events": "_event_id"}
_NO_REJECTS = RejectFrame(pl.DataFrame(schema=REJECT_SCHEMA))

@dataclass(frozen=True, slots=True)
class MappedItems:
    """One target's valid items from one batch, in source order."""

    target: TargetName
    source_rows: Sequence[int]
    keys: Sequence[str]
    bodies: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class MappedBatch:
    source_file: str
    items: Mapping[str, MappedItems]
    rejects: RejectFrame
    filtered_rows: Sequence[int]


@dataclass(frozen=True, slots=True)
class _Leaf:
    """A field with its position (for internal column names) and dotted name."""

    index: int
    field: FieldSpec
    path: str
    lead: str = ""  # "," when the member follows another in a flat body (see _flat_body)

    @property
    def prefix(self) -> str:
        """What comes before the value in its member text: ``,"name":`` or ``"name":``."""
        return self.lead + _key(self.field.name)

    def col(self, kind: str) -> str:
        return f"{INTERNAL_PREFIX}{kind}{self.index}"


# ---------------------------------------------------------------- compile


def compile_mapping(
    spec: MappingSpec,
    columns: Sequence[str],
    *,
    source: str | None = None,
    limits: Limits | None = None,
) -> CompiledMapping:
    """Bind ``spec`` to a file's header; raise :class:`MappingError` on unknown columns.

    A column named in the mapping that is in the header only with stray spaces or a no-break
    space around its name (``"email "``) is matched, with a warning; the source column keeps
    its name. ``limits`` (from the datasource's specs, see :mod:`importer.speccheck`) add
    per-row checks.
    """
    checker = HeaderCheck(columns, source)
    spec = respelled(spec, checker.resolve(column_references(spec)))
    pass_through: dict[str, tuple[str, ...]] = {
        t.target: checker.pass_through(t) for t in spec.targets
    }
    checker.references(column_references(spec))
    if any(p.severity == "error" for p in checker.problems):
        raise MappingError(spec.path, sorted(checker.problems, key=lambda p: p.line))
    warnings = (*spec.warnings, *checker.problems)
    return CompiledMapping(spec, tuple(columns), pass_through, warnings, limits)


def with_limits(compiled: CompiledMapping, limits: Limits | None) -> CompiledMapping:
    """The same compiled mapping, enforcing ``limits`` (None: none) on every row."""
    return CompiledMapping(compiled.spec, compiled.columns, compiled.pass_through_columns,
                           compiled.warnings, limits)


# ---------------------------------------------------------------- map


class CompiledMapping:
    """A mapping bound to one file's header; :meth:`map_batch` does the per-row work."""

    def __init__(
        self,
        spec: MappingSpec,
        columns: tuple[str, ...],
        pass_through: Mapping[str, tuple[str, ...]],
        warnings: Sequence[MappingProblem],
        limits: Limits | None = None,
    ) -> None:
        self.spec = spec
        self.limits = limits
        self.columns = columns
        self.targets: tuple[TargetName, ...] = tuple(t.target for t in spec.targets)
        self.warnings: tuple[MappingProblem, ...] = tuple(warnings)
        self._pass_through = dict(pass_through)
        self._leaves: dict[str, list[_Leaf]] = {}
        self._target_of: dict[int, str] = {}
        self._flat = {t.target: _flat_body(t) for t in spec.targets}
        index = 0
        for target in spec.targets:
            leaves = self._leaves.setdefault(target.target, [])
            for position, item in enumerate(target.fields):
                nested = isinstance(item, NestedSpec)
                lead = "," if self._flat[target.target] and position and not nested else ""
                for field in item.fields if isinstance(item, NestedSpec) else (item,):
                    path = f"{item.name}.{field.name}" if nested else item.name
                    leaves.append(_Leaf(index, field, path, lead))
                    self._target_of[index] = target.target
                    index += 1

    @property
    def leaves(self) -> list[_Leaf]:
        return [leaf for t in self.targets for leaf in self._leaves[t]]

    @property
    def pass_through(self) -> dict[str, tuple[str, ...]]:
        """Per target, the attribute names ``all_other_columns`` sends: each column's own
        name, without stray spaces (:func:`attribute_name`)."""
        return {t: tuple(map(attribute_name, c)) for t, c in self._pass_through.items()}

    @property
    def pass_through_columns(self) -> dict[str, tuple[str, ...]]:
        """Per target, the header columns ``all_other_columns`` sends."""
        return dict(self._pass_through)

    def map_batch(self, batch: SourceBatch) -> MappedBatch:
        frame, filtered = _apply_skip(batch.frame, self.spec.skip_if)
        schema = frame.schema
        plain = _plain_columns(frame, self._text_columns(schema))
        work = _evaluate(frame, self.leaves, plain)
        checks = self._checks(work.schema, schema)
        codes = [_leaf_error(leaf, checks) for leaf in self.leaves]
        codes += [c.code for c in checks.get(None, [])]
        outputs = [pl.col(SOURCE_ROW), pl.coalesce(codes).alias(_CODE)]
        for target in self.spec.targets:
            work, groups = _pass_through_groups(
                work, target.target, self._pass_through[target.target], schema,
                self.spec.send_nulls, plain, self._flat[target.target])
            outputs += self._outputs(target, schema, plain, groups)
        done = work.select(outputs)
        failed = done[_CODE].is_not_null()
        good = done.filter(~failed)
        rows = good[SOURCE_ROW].to_list()
        items: dict[str, MappedItems] = {
            t: MappedItems(t, rows, good[_col("key", t)].to_list(),
                           good[_col("body", t)].to_list())
            for t in self.targets
        }
        rejects = self._rejects(work.filter(failed), schema, batch.source_file, checks)
        return MappedBatch(batch.source_file, items, rejects, filtered)

    # -- the datasource's limits (--specs)

    def _checks(self, work: pl.Schema, schema: pl.Schema) -> dict[int | None, list[RowCheck]]:
        """Per leaf index, the limit checks on it; under None, rows failing no field."""
        limits = self.limits
        if limits is None:
            return {}
        out: dict[int | None, list[RowCheck]] = {}
        for target in self.targets:
            leaves = self._leaves[target]
            values = {leaf.index: _leaf_value(leaf, work, schema) for leaf in leaves}
            kind = next((leaf for leaf in leaves if leaf.path == "_event_type"), None)
            event_type = None
            if target == "events" and kind is not None:
                event_type = as_text(values[kind.index].prepared, values[kind.index].dtype)
                found = event_type_check(limits, values[kind.index])
                if found is not None:
                    out.setdefault(kind.index, []).append(found)
            for leaf in leaves:
                more = leaf_checks(limits, target, values[leaf.index], event_type)
                if more:
                    out.setdefault(leaf.index, []).extend(more)
            mapped = {leaf.path for leaf in leaves}
            out.setdefault(None, []).extend(unmapped_checks(limits, target, mapped, event_type))
        return out

    # -- valid rows

    def _text_columns(self, schema: pl.Schema) -> list[str]:
        """String columns sent as JSON strings as they are (after safe transforms): checked
        per batch for characters to escape."""
        out: dict[str, None] = {}
        for leaf in self.leaves:
            column = _verbatim_column(leaf.field)
            if leaf.field.type == "string" and column and schema.get(column) == pl.String:
                out[column] = None
        for columns in self._pass_through.values():
            out.update((c, None) for c in columns if schema.get(c) == pl.String)
        return list(out)

    def _outputs(
        self, target: TargetSpec, schema: pl.Schema, plain: frozenset[str] = frozenset(),
        groups: Sequence[str] | None = None,
    ) -> list[pl.Expr]:
        leaves = {leaf.path: leaf for leaf in self._leaves[target.target]}
        values = {path: pl.col(leaf.col("v")) for path, leaf in leaves.items()}
        body = _body(target, values, self._pass_through[target.target], schema,
                     self.spec.send_nulls, plain, flat=self._flat[target.target],
                     groups=groups)
        key = pl.col(leaves[_KEY_FIELD[target.target]].col("p")).cast(pl.String)
        return [key.alias(_col("key", target.target)),
                body.cast(pl.Binary).alias(_col("body", target.target))]

    # -- rejected rows

    def _rejects(
        self,
        bad: pl.DataFrame,
        schema: pl.Schema,
        source_file: str,
        checks: Mapping[int | None, list[RowCheck]],
    ) -> RejectFrame:
        if bad.height == 0:
            return _NO_REJECTS
        leaves = self.leaves
        bad = bad.with_columns([_leaf_error(leaf, checks).alias(leaf.col("e"))
                                for leaf in leaves])
        rows = checks.get(None, [])
        message = pl.concat_str(
            [_leaf_message(leaf, schema, checks, bad.schema) for leaf in _distinct(leaves)]
            + [c.message for c in rows],
            separator="; ",
            ignore_nulls=True,
        )
        first_field = pl.coalesce(
            [pl.when(pl.col(leaf.col("e")).is_not_null()).then(pl.lit(leaf.path))
             for leaf in leaves]
            + [pl.when(c.code.is_not_null()).then(pl.lit(c.path)) for c in rows]
        )
        originals = [c for c in schema.names() if not is_reserved(c)]
        details = bad.select(
            *originals,
            pl.lit(source_file, pl.String).alias(SOURCE_FILE),
            pl.col(SOURCE_ROW).cast(pl.Int64),
            pl.lit("map", pl.String).alias("_reject_stage"),
            pl.coalesce([pl.col(leaf.col("e")) for leaf in leaves] + [c.code for c in rows])
            .alias("_reject_code"),
            first_field.alias("_reject_field"),
            pl.concat_str([message, pl.lit(" — " + REMEDY)]).alias("_reject_message"),
            pl.lit(None, pl.Int64).alias("_reject_http_status"),
            pl.lit(0, pl.Int64).alias("_reject_attempts"),
            pl.lit(False).alias("_reject_retryable"),
            pl.lit(None, pl.String).alias(RAW_LINE),
        )
        return RejectFrame(details)


def _apply_skip(frame: pl.DataFrame, rules: Sequence[SkipRule]) -> tuple[pl.DataFrame, list[int]]:
    if not rules:
        return frame, []
    schema = frame.schema
    tests = []
    for rule in rules:
        text = as_text(pl.col(rule.column), schema[rule.column]).str.strip_chars()
        if rule.kind == "empty":
            tests.append(text.is_null() | (text == ""))
        else:
            tests.append(text.is_in(list(rule.values)).fill_null(False))
    skip = frame.select(pl.any_horizontal(tests).alias("skip")).to_series()
    filtered = frame.filter(skip)[SOURCE_ROW].to_list()
    return frame.filter(~skip), filtered


# ---------------------------------------------------------------- evaluation


def _col(kind: str, key: object) -> str:
    return f"{INTERNAL_PREFIX}{kind}{key}"


_CODE = _col("code", "")


def _needs_lookup(leaf: _Leaf, schema: pl.Schema) -> bool:
    """Phone numbers and JSON text cells are resolved per distinct value, in Python."""
    kind = leaf.field.type
    if kind == "phone":
        return True
    return kind == "json" and _prepared(leaf, schema)[1] == pl.String


def _prepared(leaf: _Leaf, schema: pl.Schema) -> tuple[pl.Expr, pl.DataType]:
    """The field's input after blanks→null and transforms, and its dtype."""
    field = leaf.field
    expr = source_expr(field.source, schema)
    dtype = _source_dtype(field, schema)
    if needs_text(field, dtype):
        expr, dtype = apply_transforms(as_text(expr, dtype), field.transforms), pl.String()
    if dtype == pl.String:
        expr = normalise_text(field, expr)
    return expr, dtype


def _verbatim_column(field: FieldSpec) -> str | None:
    """The column a field sends as it is (or through transforms that add no character JSON
    escapes), if any: when its batch holds nothing to escape, the field needs no escaping."""
    source = field.source
    if isinstance(source, ColumnSource) and all(
        t.name in PLAIN_TRANSFORMS for t in field.transforms
    ):
        return source.column
    return None


def _plain_columns(frame: pl.DataFrame, columns: Sequence[str]) -> frozenset[str]:
    """Of ``columns``, those whose values in this batch need no JSON escaping."""
    if not columns or frame.height == 0:
        return frozenset()
    found: dict[str, bool] = {}
    for start in range(0, len(columns), PASS_THROUGH_GROUP):  # see PASS_THROUGH_GROUP
        check = needs_escaping(columns[start : start + PASS_THROUGH_GROUP])
        found.update(frame.select(check).row(0, named=True))
    return frozenset(c for c in columns if not found[c])


def _evaluate(
    frame: pl.DataFrame, leaves: Sequence[_Leaf], plain: frozenset[str] = frozenset()
) -> pl.DataFrame:
    """Add, per field: ``p`` its prepared input, ``x`` a per-value lookup (phone, JSON) and
    ``v`` its JSON member text (``"name":value``) — or "" when the input is present but
    cannot be converted.

    Polars evaluates a sub-expression again at each use inside one ``with_columns`` (common
    sub-expression elimination is off in eager mode and did not pay off in lazy mode), so each
    step is materialised once and later steps read columns.
    """
    schema = frame.schema
    work = frame.with_columns([_prepared(leaf, schema)[0].alias(leaf.col("p"))
                               for leaf in leaves])
    lookups = [leaf for leaf in leaves if _needs_lookup(leaf, schema)]
    if lookups:
        work = work.with_columns([_lookup(work[leaf.col("p")], leaf) for leaf in lookups])
    return work.with_columns([_value(leaf, work.schema, plain).alias(leaf.col("v"))
                              for leaf in leaves])


def _lookup(column: pl.Series, leaf: _Leaf) -> pl.Series:
    if leaf.field.type == "phone":
        return phone.normalize(column, leaf.field.phone_region).rename(leaf.col("x"))
    table = json_lookup(column.drop_nulls().unique().to_list())
    resolved = column.replace_strict(
        list(table), list(table.values()), default=None, return_dtype=pl.String
    )
    return resolved.rename(leaf.col("x"))


def _source_dtype(field: FieldSpec, schema: pl.Schema) -> pl.DataType:
    if isinstance(field.source, ColumnSource):
        dtype = schema[field.source.column]
        return dtype if isinstance(dtype, pl.DataType) else dtype()
    return pl.String()


def _value(leaf: _Leaf, schema: pl.Schema, plain: frozenset[str] = frozenset()) -> pl.Expr:
    """The field as a JSON object member, ``"name":value``."""
    prepared = pl.col(leaf.col("p"))
    lookup = pl.col(leaf.col("x")) if leaf.col("x") in schema else pl.lit(None, pl.String)
    value = typed(leaf.field, prepared, schema[leaf.col("p")], lookup, leaf.prefix,
                  plain=_verbatim_column(leaf.field) in plain)
    if leaf.field.type not in ERROR_CODES:
        return value
    # "" marks "present but invalid": it never reaches a payload (the row is rejected)
    return pl.when(prepared.is_not_null()).then(value.fill_null(pl.lit("")))


def _leaf_value(leaf: _Leaf, work: pl.Schema, schema: pl.Schema) -> LeafValue:
    dtype = work[leaf.col("p")]
    return LeafValue(
        field=leaf.field,
        path=leaf.path,
        prepared=pl.col(leaf.col("p")),
        dtype=dtype if isinstance(dtype, pl.DataType) else dtype(),
        member=pl.col(leaf.col("v")),
        key=leaf.prefix,
        schema=schema,
    )


def _leaf_error(leaf: _Leaf, checks: Mapping[int | None, list[RowCheck]]) -> pl.Expr:
    """The field's own error code first, then the datasource's limits on it."""
    extra = checks.get(leaf.index)
    if not extra:
        return _error(leaf)
    return pl.coalesce([_error(leaf), *(c.code for c in extra)])


def _leaf_message(
    leaf: _Leaf, schema: pl.Schema, checks: Mapping[int | None, list[RowCheck]],
    work: pl.Schema,
) -> pl.Expr:
    """The sentence for the code :func:`_leaf_error` picked (null when the field is fine)."""
    prepared = as_text(pl.col(leaf.col("p")), work[leaf.col("p")])
    own = problem_text(leaf.field, leaf.path, _error(leaf), schema, prepared)
    extra = checks.get(leaf.index)
    if not extra:
        return own
    return pl.coalesce([own, *(c.message for c in extra)])


def _error(leaf: _Leaf) -> pl.Expr:
    """The field's error code (null when fine), read from its ``v`` column."""
    value = pl.col(leaf.col("v"))
    code = ERROR_CODES.get(leaf.field.type)
    error: pl.Expr = pl.lit(None, pl.String)
    if code is not None:
        error = pl.when(value == "").then(pl.lit(code))
    if leaf.field.required:
        error = pl.coalesce([error, pl.when(value.is_null()).then(pl.lit("required_missing"))])
    return error


# ---------------------------------------------------------------- serialisation


def _flat_body(target: TargetSpec) -> bool:
    """Whether the target's items can be built by one concatenation.

    Its first member must be in every item sent: a plain field that is required (the
    ``_user_id``/``_event_id`` mappings usually start with). Every later member then carries
    its own leading comma, baked into its member text, and a missing one drops out with its
    comma; otherwise members are joined by a separator, and the braces added by a second
    pass over the whole text (~0.1 CPU-s more per million rows).
    """
    first = target.fields[0] if target.fields else None
    return isinstance(first, FieldSpec) and first.required


def _body(
    target: TargetSpec,
    members: Mapping[str, pl.Expr],
    pass_through: Sequence[str],
    schema: pl.Schema,
    send_nulls: bool,
    plain: frozenset[str] = frozenset(),
    *,
    flat: bool = False,
    groups: Sequence[str] | None = None,
) -> pl.Expr:
    """The item's JSON object from its members; members that are null are left out.

    ``flat``: members after the first carry their leading comma (see :func:`_flat_body`).
    ``groups``: columns holding the pass-through members already joined, group by group
    (:func:`_pass_through_groups`), in place of one member per column.
    """
    pieces: list[pl.Expr] = []
    for position, item in enumerate(target.fields):
        lead = "," if flat and position else ""
        if isinstance(item, NestedSpec):
            inner = [_member(f.name, members[f"{item.name}.{f.name}"], send_nulls)
                     for f in item.fields]
            pieces.append(_object_member(item.name, inner, lead))
        else:
            pieces.append(_member(item.name, members[item.name], send_nulls, lead))
    if groups is not None:
        pieces += [pl.col(g) for g in groups]
    else:
        pieces += _pass_through_members(pass_through, schema, send_nulls, plain, flat)
    if flat:
        return pl.concat_str([pl.lit("{"), *pieces, pl.lit("}")], ignore_nulls=True)
    members_text = pl.concat_str(pieces, separator=",", ignore_nulls=True)
    return pl.concat_str([pl.lit("{"), members_text, pl.lit("}")])


#: Pass-through columns joined per expression on wide frames: one expression over 20,000
#: columns made polars plan and evaluate a tree of ~300,000 nodes at once (~450 MB for a
#: batch of 37 rows); groups of this many are materialised one after the other instead.
PASS_THROUGH_GROUP = 500


def _pass_through_members(
    columns: Sequence[str], schema: pl.Schema, send_nulls: bool, plain: frozenset[str],
    flat: bool,
) -> list[pl.Expr]:
    """One ``"name":value`` member per pass-through column (``flat``: with its comma)."""
    columns = tuple(columns)
    return _members(columns, tuple(schema[c] for c in columns), send_nulls,
                    frozenset(c for c in columns if c in plain), flat)


@functools.lru_cache(maxsize=256)
def _members(
    columns: tuple[str, ...], dtypes: tuple[pl.DataType, ...], send_nulls: bool,
    plain: frozenset[str], flat: bool,
) -> list[pl.Expr]:
    """:func:`_pass_through_members`, built once per file rather than once per batch: the
    expressions of 20,000 columns took ~1.2 s to build for every batch (of 37 rows)."""
    lead = "," if flat else ""
    members: list[pl.Expr] = []
    for column, dtype in zip(columns, dtypes, strict=True):
        name = attribute_name(column)
        value = native_json(pl.col(column), dtype, lead + _key(name), plain=column in plain)
        members.append(_member(name, value, send_nulls, lead))
    return members


def _pass_through_groups(
    work: pl.DataFrame, target: str, columns: Sequence[str], schema: pl.Schema,
    send_nulls: bool, plain: frozenset[str], flat: bool,
) -> tuple[pl.DataFrame, list[str] | None]:
    """On a wide frame, the pass-through members joined in groups of
    :data:`PASS_THROUGH_GROUP` columns, one ``with_columns`` each: ``work`` with those
    columns, and their names (None: few enough columns to join in the body's expression).
    A group with no member is null (flat: ""), so it adds no separator."""
    if len(columns) <= PASS_THROUGH_GROUP:
        return work, None
    names: list[str] = []
    for start in range(0, len(columns), PASS_THROUGH_GROUP):
        group = tuple(columns[start : start + PASS_THROUGH_GROUP])
        name = _col(f"pt{start}", target)
        joined = _joined_members(group, tuple(schema[c] for c in group), send_nulls,
                                 frozenset(c for c in group if c in plain), flat)
        work = work.with_columns(joined.alias(name))
        names.append(name)
    return work, names


@functools.lru_cache(maxsize=256)
def _joined_members(
    columns: tuple[str, ...], dtypes: tuple[pl.DataType, ...], send_nulls: bool,
    plain: frozenset[str], flat: bool,
) -> pl.Expr:
    """A group's members joined, built once per file (as :func:`_members`): the joined
    expressions of 20,000 columns hold ~12 MB, their members as a list ~36 MB."""
    members = _members.__wrapped__(columns, dtypes, send_nulls, plain, flat)
    if flat:
        return pl.concat_str(members, ignore_nulls=True)
    text = pl.concat_str(members, separator=",", ignore_nulls=True)
    return pl.when(text != "").then(text)


def _key(name: str) -> str:
    return orjson.dumps(name).decode("utf-8") + ":"


def _member(name: str, member: pl.Expr, send_nulls: bool, lead: str = "") -> pl.Expr:
    return member.fill_null(pl.lit(lead + _key(name) + "null")) if send_nulls else member


def _object_member(name: str, members: list[pl.Expr], lead: str = "") -> pl.Expr:
    inner = pl.concat_str(members, separator=",", ignore_nulls=True)
    # an object whose members are all empty is left out, like any other empty value
    return pl.when(inner != "").then(pl.concat_str([pl.lit(lead + _key(name) + "{"), inner,
                                                    pl.lit("}")]))


def _distinct(leaves: Sequence[_Leaf]) -> list[_Leaf]:
    """Leaves minus repeats: contacts and events often map ``_user_id`` from the same column,
    and one empty cell should be reported once."""
    seen: set[tuple[object, ...]] = set()
    out: list[_Leaf] = []
    for leaf in leaves:
        f = leaf.field
        key = (leaf.path, describe_source(f), expectation(f), f.transforms, f.required)
        if key not in seen:
            seen.add(key)
            out.append(leaf)
    return out



# ---------------------------------------------------------------- constants (load time)


def check_constant(field: FieldSpec) -> str | None:
    """Why a ``value:`` constant cannot be converted to its field's type (None when fine)."""
    if not isinstance(field.source, ValueSource):
        return None
    value = field.source.value
    text = ("true" if value else "false") if isinstance(value, bool) else value
    leaf = _Leaf(0, dataclasses.replace(field, source=ColumnSource("value", field.line)), "value")
    work = _evaluate(pl.DataFrame({"value": [text]}, schema={"value": pl.String}), [leaf])
    converted = work[leaf.col("v")].item()
    return None if converted else f"{text!r} {expectation(field)}"
