"""load_mapping / parse_mapping: the structure, Instasent's rules, lines, every problem at once."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from importer.exceptions import MappingError, MappingProblem
from importer.mapping import load_mapping, parse_mapping
from importer.mapping.spec import (
    ColumnSource,
    HashSource,
    NestedSpec,
    TemplateSource,
    ValueSource,
)

MINIMAL = """\
target: contacts
fields:
  _user_id: id
"""


def problems_of(text: str) -> list[MappingProblem]:
    with pytest.raises(MappingError) as info:
        parse_mapping(textwrap.dedent(text), path="m.yaml")
    return list(info.value.problems)


def only(problems: list[MappingProblem], needle: str) -> MappingProblem:
    found = [p for p in problems if needle in p.message]
    assert len(found) == 1, f"{needle!r} not exactly once in {[p.message for p in problems]}"
    return found[0]


def fields_yaml(body: str, target: str = "contacts") -> str:
    return f"target: {target}\nfields:\n" + textwrap.indent(textwrap.dedent(body), "  ")


# ---------------------------------------------------------------- happy paths


def test_minimal_mapping_and_file_hash(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(MINIMAL.encode())
    spec = load_mapping(path)
    assert spec.path == str(path)
    assert spec.sha256 == hashlib.sha256(MINIMAL.encode()).hexdigest()
    (target,) = spec.targets
    assert target.target == "contacts"
    (field,) = target.leaves()
    assert field.name == "_user_id" and field.required
    assert field.source == ColumnSource("id", 3)


def test_targets_are_ordered_contacts_first() -> None:
    spec = parse_mapping(
        """\
targets:
  - target: events
    fields:
      _user_id: c
      _event_id: {hash: [a, b]}
      _event_type: {value: purchase}
      _event_date: {column: d, type: datetime}
      _event_parameters:
        amount: {column: a, type: float}
  - target: contacts
    fields:
      _user_id: c
"""
    )
    assert [t.target for t in spec.targets] == ["contacts", "events"]
    events = spec.targets[1]
    event_id = next(f for f in events.leaves() if f.name == "_event_id")
    assert isinstance(event_id.source, HashSource) and event_id.source.columns == ("a", "b")
    nested = next(f for f in events.fields if isinstance(f, NestedSpec))
    assert [f.name for f in nested.fields] == ["amount"]


def test_scalars_keep_their_text_no_yaml_1_1_surprises() -> None:
    """NO (Norway), yes, 0123 and 1:20 stay text; only true/false/null are special."""
    spec = parse_mapping(
        fields_yaml(
            """\
            _user_id: id
            country: {value: NO}
            zip: {value: 0123}
            clock: {value: 1:20}
            ok: {column: b, type: bool, true_values: [yes, on], false_values: [no, off]}
            """
        )
    )
    fields = {f.name: f for f in spec.targets[0].leaves()}
    assert fields["country"].source == ValueSource("NO")
    assert fields["zip"].source == ValueSource("0123")
    assert fields["clock"].source == ValueSource("1:20")
    assert fields["ok"].true_values == ("yes", "on")
    assert fields["ok"].false_values == ("no", "off")


def test_template_parts_and_defaults_block() -> None:
    spec = parse_mapping(
        """\
target: contacts
defaults: {phone_region: es, timezone: Europe/Madrid, decimal: ",", thousands: "."}
fields:
  _user_id: id
  name: {template: "{first} {{x}} {last name}"}
  p: {column: p, type: phone}
  amount: {column: a, type: float}
  seen: {column: s, type: datetime}
"""
    )
    fields = {f.name: f for f in spec.targets[0].leaves()}
    source = fields["name"].source
    assert isinstance(source, TemplateSource)
    assert source.columns == ("first", "last name")
    assert fields["p"].phone_region == "ES"
    assert (fields["amount"].decimal, fields["amount"].thousands) == (",", ".")
    assert fields["seen"].timezone == "Europe/Madrid"


# ---------------------------------------------------------------- YAML-level problems


def test_yaml_syntax_error_names_the_line() -> None:
    (problem,) = problems_of("target: contacts\nfields:\n  _user_id: [unclosed\n  x: y\n")
    assert "YAML syntax error" in problem.message
    assert problem.line >= 3


def test_empty_file() -> None:
    (problem,) = problems_of("# nothing here\n")
    assert "empty" in problem.message


def test_duplicate_key_is_an_error_with_both_lines() -> None:
    problem = only(problems_of(MINIMAL + "  _user_id: other\n"), "duplicate key")
    assert problem.line == 4 and "first at line 3" in problem.message


def test_python_tags_are_refused() -> None:
    problem = only(problems_of(MINIMAL + "  x: !!python/object:os.system {}\n"), "YAML tag")
    assert problem.line == 4


def test_alias_bomb_is_stopped() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 7):
        prev = "a" if i == 1 else f"l{i - 1}"
        bomb += f"l{i}: &l{i} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
    problem = only(problems_of(bomb), "expands to more than")
    assert problem.line == 1


def test_version_must_be_1() -> None:
    problem = only(problems_of("version: 2\n" + MINIMAL), "version 2")
    assert problem.line == 1


# ---------------------------------------------------------------- structure problems


def test_unknown_keys_with_did_you_mean_and_lines() -> None:
    problems = problems_of(
        """\
taget: contacts
fields:
  _user_id: {colum: id}
"""
    )
    assert only(problems, "'taget'").line == 1
    assert "did you mean 'target'" in only(problems, "'taget'").message
    colum = only(problems, "'colum'")
    assert colum.line == 3 and "did you mean 'column'" in colum.message


def test_target_or_targets_exactly_one() -> None:
    only(problems_of("fields:\n  _user_id: id\n"), "exactly one of the two")
    text = MINIMAL + "targets:\n  - target: events\n"
    only(problems_of(text), "exactly one of the two")


def test_unknown_target_and_duplicate_target() -> None:
    problems = problems_of(
        """\
targets:
  - target: contact
    fields: {_user_id: id}
  - target: events
    fields: {_user_id: u, _event_id: e, _event_type: t, _event_date: {column: d, type: datetime}}
  - target: events
    fields: {_user_id: u, _event_id: e, _event_type: t, _event_date: {column: d, type: datetime}}
"""
    )
    assert "did you mean 'contacts'" in only(problems, "unknown target").message
    assert only(problems, "listed twice").line == 6


def test_fields_beside_targets_is_refused() -> None:
    text = "fields: {a: b}\ntargets:\n  - target: contacts\n    fields: {_user_id: id}\n"
    assert only(problems_of(text), "inside each target entry").line == 1


def test_field_source_count() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            a: {type: int}
            b: {column: x, value: y}
            """
        )
    )
    assert only(problems, "needs a source").line == 4
    assert only(problems, "keep exactly one source").line == 5


def test_unknown_type_and_transform() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            a: {column: a, type: strng}
            b: {column: b, transform: [strip, lowercase]}
            c: {column: c, transform: [map]}
            d: {column: d, transform: [{defualt: x}]}
            """
        )
    )
    assert "did you mean 'string'" in only(problems, "unknown type 'strng'").message
    assert "did you mean 'lower'" in only(problems, "'lowercase'").message
    assert only(problems, "transform map needs a value").line == 6
    assert "did you mean 'default'" in only(problems, "'defualt'").message


def test_map_and_default_transform_values() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            a: {column: a, transform: [{map: []}]}
            b: {column: b, transform: [{map: {x: [1]}}]}
            c: {column: c, transform: [{default: [1, 2]}]}
            """
        )
    )
    only(problems, "map: needs a lookup table")
    only(problems, "must map to a single value")
    only(problems, "default: needs a single value")


def test_options_must_fit_the_type() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            a: {column: a, type: int, format: "%d"}
            b: {column: b, phone_region: ES}
            c: {column: c, type: date, separator: ";"}
            """
        )
    )
    assert only(problems, "`format` applies only to type date or datetime").line == 4
    only(problems, "`phone_region` applies only to type phone (this field is type string)")
    only(problems, "`separator` applies only to type list")


def test_option_values_are_checked() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            a: {column: a, type: datetime, timezone: Europe/Madird}
            b: {column: b, type: phone, phone_region: SP}
            c: {column: c, type: date, format: dd/mm/yyyy}
            d: {column: d, type: date, format: "%Y-%d"}
            e: {column: e, type: float, decimal: ";"}
            f: {column: f, type: float, decimal: ",", thousands: ","}
            g: {column: g, type: bool, true_values: [Si, yes], false_values: [si]}
            h: {column: h, type: list, separator: ""}
            """
        )
    )
    assert "did you mean 'Europe/Madrid'" in only(problems, "unknown timezone").message
    only(problems, "phone_region 'SP' is not a region code")
    assert "did you mean '%d/%m/%Y'" in only(problems, "has no %-directives").message
    only(problems, "format '%Y-%d' has no day: name the day with %d")
    only(problems, 'decimal must be "." or ","')
    only(problems, "differ from the decimal mark")
    only(problems, "si is both a true and a false word")
    only(problems, "separator must not be empty")


def test_template_problems() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            a: {template: "{first"}
            b: {template: "no columns"}
            c: {template: "{x:>10}"}
            """
        )
    )
    only(problems, "is malformed")
    only(problems, "references no column; use value:")
    only(problems, "only plain {column} references")


def test_constant_must_convert_to_its_type() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: id
            n: {value: abc, type: int}
            d: {value: "2024-02-30", type: date}
            ok: {value: true, type: bool}
            """
        )
    )
    assert only(problems, "'abc' is not a whole number").line == 4
    only(problems, "'2024-02-30' is not an ISO 8601 date")
    assert len(problems) == 2


def test_skip_if_rules() -> None:
    problems = problems_of(
        MINIMAL
        + """\
skip_if:
  - {column: s, equals: x, empty: true}
  - {column: s}
  - {column: s, in: []}
  - {column: s, empty: false}
"""
    )
    assert len([p for p in problems if "exactly one of empty" in p.message]) == 2
    only(problems, "needs at least one value")
    only(problems, "would skip nothing")


def test_custom_attributes_forms() -> None:
    spec = parse_mapping(MINIMAL + "custom_attributes: [city, plan]\n")
    assert [f.name for f in spec.targets[0].fields] == ["_user_id", "city", "plan"]
    spec = parse_mapping(MINIMAL + "custom_attributes: {all_other_columns: true, exclude: [x]}\n")
    assert spec.targets[0].pass_through is not None
    assert spec.targets[0].pass_through.exclude == ("x",)
    problems = problems_of(MINIMAL + "custom_attributes: all_other_column\n")
    assert "did you mean 'all_other_columns'" in only(problems, "is not understood").message
    problems = problems_of(MINIMAL + "  city: c\ncustom_attributes: [city]\n")
    only(problems, "'city' is also a field")


# ---------------------------------------------------------------- Instasent's rules


def test_contacts_rules() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            name: n
            _email_verified: {column: v, type: bool}
            _gendr: g
            _email: e
            _event_date: {column: d, type: datetime}
            _event_parameters: {a: b}
            """
        )
    )
    only(problems, "contacts need `_user_id`")
    assert only(problems, "_email_verified is managed by Instasent").severity == "error"
    unknown = only(problems, "_gendr starts with '_'")
    assert unknown.severity == "warning" and unknown.line == 5
    hint = only(problems, "add `type: email`")
    assert hint.severity == "warning"
    only(problems, "_event_date belongs to events")
    only(problems, "_event_parameters belongs to events")


def test_user_id_must_be_text() -> None:
    problems = problems_of(fields_yaml("_user_id: {column: id, type: int}\n"))
    only(problems, "_user_id is an id and is sent as text")


def test_events_need_a_stable_id() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: u
            _event_type: {value: purchase}
            _event_date: {column: d, type: datetime}
            """,
            "events",
        )
    )
    assert "re-runs would otherwise duplicate events" in only(problems, "`_event_id`").message
    for source in ('{value: "1"}', '{template: "x-{a}"}', "{coalesce: [a, b]}"):
        text = fields_yaml(
            f"""\
            _user_id: u
            _event_id: {source}
            _event_type: {{value: purchase}}
            _event_date: {{column: d, type: datetime}}
            """,
            "events",
        )
        problem = only(problems_of(text), "_event_id must come from column: or hash:")
        assert problem.line == 4


def test_event_rules() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: u
            _event_id: e
            _event_type: {column: t, type: int}
            _event_date: d
            amount: a
            _event_origin: o
            _user_data:
              _email_verified: v
              _nick: n
            custom_attributes: x
            """,
            "events",
        )
        + "custom_attributes: all_other_columns\n"
    )
    only(problems, "_event_type is an id and is sent as text")
    assert only(problems, "_event_date must have `type: datetime`").line == 6
    only(problems, "put 'amount' under _event_parameters")
    assert only(problems, "_event_origin is not an event key").severity == "warning"
    only(problems, "_email_verified is managed by Instasent")
    assert only(problems, "_nick starts with '_'").severity == "warning"
    only(problems, "custom_attributes applies to contacts")


def test_missing_event_date_is_a_warning_only() -> None:
    spec = parse_mapping(
        fields_yaml("_user_id: u\n_event_id: e\n_event_type: {value: page_view}\n", "events")
    )
    (warning,) = spec.warnings
    assert "no _event_date" in warning.message and warning.severity == "warning"


def test_nested_maps_are_checked() -> None:
    problems = problems_of(
        fields_yaml(
            """\
            _user_id: u
            _event_id: e
            _event_type: {value: purchase}
            _event_date: {column: d, type: datetime}
            _event_parameters: amount
            _user_data:
              _event_parameters: {a: b}
            """,
            "events",
        )
    )
    only(problems, "_event_parameters must be a mapping of fields")
    only(problems, "cannot be nested inside another object")


# ---------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once_sorted_by_line() -> None:
    text = """\
target: contacts
fields:
  _user_id: {colum: id}
  a: {column: a, type: strng}
  b: {column: b, transform: nope}
  c: {column: c, type: date, format: "dd-mm-yyyy"}
  _email_verified: v
send_nulls: perhaps
"""
    problems = problems_of(text)
    errors = [p for p in problems if p.severity == "error"]
    assert len(errors) >= 6
    assert [p.line for p in problems] == sorted(p.line for p in problems)
    with pytest.raises(MappingError) as info:
        parse_mapping(text, path="m.yaml")
    rendered = str(info.value)
    assert rendered.startswith(f"m.yaml: {len(errors)} problems in the mapping")
    assert "m.yaml:3: error: unknown key 'colum'" in rendered
    assert info.value.exit_code == 2


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match="cannot read the mapping file"):
        load_mapping(tmp_path / "missing.yaml")
    path = tmp_path / "latin1.yaml"
    path.write_bytes("target: contacts\nfields:\n  _user_id: n\u00famero\n".encode("latin-1"))
    with pytest.raises(MappingError, match="not UTF-8"):
        load_mapping(path)


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        ("- a\n- b\n", "the mapping must be a mapping of keys, not a list", 1),
        ("target: contacts\nfields: [a, b]\n", "fields: Input should be a valid dictionary", 2),
        ("targets: []\n", "`targets:` is empty", 1),
        ("targets:\n  - fields: {_user_id: id}\n", "targets entry 1 needs the key 'target'", 2),
        ("target: contacts\n", "the contacts target has no `fields:`", 1),
        ("target: contacts\nfields:\n  _user_id: id\n  ' ': x\n", "a field name is empty", 4),
        ("target: contacts\nfields:\n  _user_id: id\n  ? [a]\n  : b\n", "a plain name", 4),
        ("base: &b {column: x}\ntarget: contacts\nfields:\n  _user_id:\n    <<: *b\n",
         "merge keys (<<) are not supported", 5),
        ("target: contacts\nfields:\n  _user_id: id\n  a: {column: a, transform: [[x]]}\n",
         "transform: expected a transform name, or a list", 4),
        ("target: contacts\nfields:\n  _user_id: id\n  a: {hash: {x: y}}\n",
         "hash: expected a column name or a list of column names (got {'x': 'y'})", 4),
        ("target: contacts\nfields:\n  _user_id: id\ncustom_attributes: true\n",
         "custom_attributes: expected all_other_columns", 4),
        ("target: contacts\nfields:\n  _user_id: id\n  a: {column: a, required: maybe}\n",
         "required: Input should be a valid boolean", 4),
    ],
)
def test_structure_messages(text: str, needle: str, line: int) -> None:
    assert only(problems_of(text), needle).line == line


def test_internal_column_names_are_refused_in_the_header() -> None:
    from importer.mapping import compile_mapping

    spec = parse_mapping(MINIMAL)
    with pytest.raises(MappingError, match="reserved for the importer's own work"):
        compile_mapping(spec, ["id", "__instasent_map__p0"])


def test_an_option_without_a_value_is_an_error_not_the_default() -> None:
    """Issue 15: ``decimal: ,`` inside braces reads as null, and ``decimal:`` is empty; both
    silently meant "." (1,5 read as 15)."""
    problems = problems_of(
        "target: contacts\n"
        "defaults:\n"
        "  thousands:\n"
        "fields:\n"
        "  _user_id: id\n"
        "  a: {column: a, type: float, decimal: ,}\n"
        "  b:\n"
        "    column: b\n"
        "    type: float\n"
        "    decimal:\n"
        "  c: {column: c, type: datetime, format: }\n"
    )
    assert only(problems, "field 'a': `decimal:` has no value").line == 6
    assert only(problems, "field 'b': `decimal:` has no value").line == 10
    assert only(problems, "field 'c': `format:` has no value").line == 11
    assert only(problems, "defaults: `thousands:` has no value").line == 3
    block = problems_of("target: contacts\nfields:\n  _user_id: id\n  a:\n    column: a\n"
                        "    decimal: ,\n")
    assert 'must be quoted: decimal: ","' in only(block, "YAML syntax error").message
