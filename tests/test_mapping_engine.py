"""compile_mapping against a header, and map_batch: partition, targets, serialisation."""

from __future__ import annotations

import datetime as dt
import textwrap
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from importer.exceptions import MappingError
from importer.mapping import MappedBatch, compile_mapping, parse_mapping
from importer.records import SourceBatch


def frame(**columns: list[Any] | pl.Series) -> pl.DataFrame:
    data = pl.DataFrame(dict(columns))
    return data.with_columns(
        pl.lit("in.csv").alias("_source_file"),
        pl.int_range(1, data.height + 1, dtype=pl.Int64).alias("_source_row"),
    )


def map_frame(mapping: str, data: pl.DataFrame) -> MappedBatch:
    spec = parse_mapping(textwrap.dedent(mapping))
    return compile_mapping(spec, data.columns).map_batch(SourceBatch("in.csv", data))


def bodies(mapped: MappedBatch, target: str = "contacts") -> list[dict[str, Any]]:
    return [orjson.loads(b) for b in mapped.items[target].bodies]


CONTACTS = """\
target: contacts
fields:
  _user_id: id
  _email: {column: email, type: email}
"""

ORDERS = """\
defaults: {timezone: UTC}
skip_if:
  - {column: status, in: [test, void]}
targets:
  - target: events
    fields:
      _event_id: {hash: [order, line]}
      _user_id: customer
      _event_type: {value: purchase}
      _event_date: {column: at, type: datetime}
      _event_parameters:
        amount: {column: amount, type: float}
        sku: sku
  - target: contacts
    fields:
      _user_id: customer
      _email: {column: email, type: email}
"""


# ---------------------------------------------------------------- compile


def test_unknown_column_with_did_you_mean_and_the_yaml_line() -> None:
    spec = parse_mapping(CONTACTS + "  name: {template: '{first} {lst}'}\n")
    with pytest.raises(MappingError) as info:
        compile_mapping(spec, ["id", "emial", "first", "last"], source="crm.csv")
    problems = {p.line: p.message for p in info.value.problems}
    assert "column 'email' is not in the header of crm.csv (did you mean 'emial'?)" in problems[4]
    assert "column 'lst' is not in the header of crm.csv (did you mean 'last'?)" in problems[5]


def test_importer_columns_cannot_be_mapped() -> None:
    text = CONTACTS + "  a: _source_row\n  b: _reject_code\n  c: _raw_line\n"
    spec = parse_mapping(text)
    columns = ["id", "email", "_source_row", "_source_file", "_reject_code", "_raw_line"]
    with pytest.raises(MappingError) as info:
        compile_mapping(spec, columns)
    assert len([p for p in info.value.problems if "added by the importer" in p.message]) == 3


def test_skip_if_and_hash_columns_are_checked_too() -> None:
    spec = parse_mapping(ORDERS)
    with pytest.raises(MappingError) as info:
        compile_mapping(spec, ["order", "customer", "at", "amount", "sku", "email"])
    messages = " | ".join(p.message for p in info.value.problems)
    assert "'status' is not in the header" in messages
    assert "'line' is not in the header" in messages


def test_all_other_columns_pass_through_rules() -> None:
    spec = parse_mapping(
        CONTACTS + "  city: town\ncustom_attributes: {all_other_columns: true, exclude: [secret, "
        "nope]}\n"
    )
    columns = ["id", "email", "town", "plan", "secret", "city", "_source_row", "_reject_code",
               "_tier"]
    compiled = compile_mapping(spec, columns)
    warnings = " | ".join(w.message for w in compiled.warnings)
    assert "exclude lists 'nope'" in warnings
    assert "'city' is not passed through by all_other_columns: a field already has that name" in (
        warnings
    )
    assert "'_tier' starts with '_'" in warnings
    data = frame(id=["1"], email=[None], town=["Bilbao"], plan=["pro"], secret=["x"],
                 city=["ignored"], _reject_code=["old"], _tier=["gold"])
    mapped = compiled.map_batch(SourceBatch("in.csv", data))
    assert bodies(mapped) == [{"_user_id": "1", "city": "Bilbao", "plan": "pro", "_tier": "gold"}]


def test_system_managed_column_cannot_pass_through() -> None:
    spec = parse_mapping(CONTACTS + "custom_attributes: all_other_columns\n")
    with pytest.raises(MappingError, match="add it to `exclude:`"):
        compile_mapping(spec, ["id", "email", "_email_verified"])


def test_pass_through_keeps_native_types() -> None:
    spec = parse_mapping(CONTACTS + "custom_attributes: all_other_columns\n")
    data = frame(
        id=["1"], email=["a@b.es"], n=[3], f=[2.5], ok=[True], day=[dt.date(2024, 1, 2)],
        at=pl.Series([dt.datetime(2024, 1, 2, 3, 4, 5)]).dt.replace_time_zone("Europe/Madrid"),
        tags=[["a", "b"]], blank=["  "], nan=[float("nan")],
    )
    mapped = compile_mapping(spec, data.columns).map_batch(SourceBatch("in.parquet", data))
    assert bodies(mapped) == [{
        "_user_id": "1", "_email": "a@b.es", "n": 3, "f": 2.5, "ok": "1", "day": "2024-01-02",
        "at": "2024-01-02T02:04:05.000Z", "tags": ["a", "b"],
    }]


# ---------------------------------------------------------------- map_batch


def orders_frame() -> pl.DataFrame:
    return frame(
        order=["A1", "A1", "A2", "A3", "A4", "A5"],
        line=["1", "2", "1", "1", "1", "1"],
        customer=["C1", "C1", "C2", None, "C4", "C5"],
        at=["2024-11-17T10:00:00Z", "2024-11-17T10:00:00Z", "yesterday", "2024-11-17T10:00:00Z",
            "2024-11-17T10:00:00Z", "2024-11-17T10:00:00Z"],
        amount=["49.90", "10", "5", "5", "x", "1"],
        sku=["S1", None, "S3", "S4", "S5", "S6"],
        email=["a@b.es", "a@b.es", "bad@", "d@b.es", "e@b.es", "f@b.es"],
        status=["ok", "ok", "ok", "ok", "ok", "test"],
    )


def test_a_row_failing_one_target_is_sent_for_none() -> None:
    mapped = map_frame(ORDERS, orders_frame())
    assert mapped.filtered_rows == [6]
    assert mapped.items["contacts"].source_rows == [1, 2]
    assert mapped.items["events"].source_rows == [1, 2]
    assert list(mapped.items) == ["contacts", "events"]
    by_row = {r.source_row: r for r in mapped.rejects}
    assert sorted(by_row) == [3, 4, 5]
    # row 3 fails in both targets: the code and field are the first in mapping order
    # (contacts first), the message lists every problem
    assert (by_row[3].code, by_row[3].field) == ("invalid_email", "_email")
    assert "'bad@'" in by_row[3].message and "'yesterday'" in by_row[3].message
    assert by_row[4].code == "required_missing" and by_row[4].message.count("_user_id") == 1
    assert (by_row[5].code, by_row[5].field) == ("invalid_number", "_event_parameters.amount")
    assert by_row[5].stage == "map" and by_row[5].source_file == "in.csv"


def test_items_bytes_keys_and_nested_objects() -> None:
    mapped = map_frame(ORDERS, orders_frame())
    events = mapped.items["events"]
    assert events.keys == [orjson.loads(b)["_event_id"] for b in events.bodies]
    assert len(set(events.keys)) == 2 and all(len(k) == 32 for k in events.keys)
    first, second = events.bodies
    assert first == (
        b'{"_event_id":"' + events.keys[0].encode() + b'","_user_id":"C1",'
        b'"_event_type":"purchase","_event_date":"2024-11-17T10:00:00.000Z",'
        b'"_event_parameters":{"amount":49.90,"sku":"S1"}}'
    )
    assert b'"_event_parameters":{"amount":10}' in second
    assert mapped.items["contacts"].keys == ["C1", "C1"]


def test_empty_nested_object_is_left_out() -> None:
    data = orders_frame().with_columns(pl.lit(None, pl.String).alias("sku"),
                                       pl.lit(None, pl.String).alias("amount"))
    for body in bodies(map_frame(ORDERS, data), "events"):
        assert "_event_parameters" not in body


def test_skip_if_kinds_and_filtered_rows_are_not_rejected() -> None:
    mapping = CONTACTS + textwrap.dedent(
        """\
        skip_if:
          - {column: email, empty: true}
          - {column: kind, equals: test}
          - {column: kind, in: [demo, internal]}
        """
    )
    data = frame(
        id=[None, "2", "3", "4", "5"],
        email=["   ", "x@y.es", "bad", "bad", "ok@y.es"],
        kind=["real", " test ", "demo", "real", None],
    )
    mapped = map_frame(mapping, data)
    assert mapped.filtered_rows == [1, 2, 3]
    assert [r.source_row for r in mapped.rejects] == [4]
    assert mapped.items["contacts"].source_rows == [5]


def test_rejects_carry_the_original_columns_only() -> None:
    data = frame(id=["1"], email=["bad"], _reject_code=["old"], _reject_message=["old"])
    (reject,) = map_frame(CONTACTS, data).rejects
    assert dict(reject.values) == {"id": "1", "email": "bad"}


def test_a_rejects_file_reimports_to_the_same_rejects() -> None:
    """Rejects carry the source columns verbatim, so mapping them again gives the same."""
    first = map_frame(ORDERS, orders_frame())
    rows = [dict(r.values) for r in first.rejects]
    again = frame(**{k: [row[k] for row in rows] for k in rows[0]}).with_columns(
        pl.Series("_source_row", [r.source_row for r in first.rejects]),
        pl.lit("map").alias("_reject_stage"),
        pl.Series("_reject_code", [r.code for r in first.rejects]),
    )
    second = map_frame(ORDERS, again)
    assert [(r.source_row, r.code, r.field, r.message) for r in second.rejects] == [
        (r.source_row, r.code, r.field, r.message) for r in first.rejects
    ]


def test_empty_batch() -> None:
    data = frame(id=pl.Series([], dtype=pl.String), email=pl.Series([], dtype=pl.String))
    mapped = map_frame(CONTACTS, data)
    assert mapped.items["contacts"].bodies == [] and len(mapped.rejects) == 0


# ---------------------------------------------------------------- properties

CELL = st.one_of(
    st.none(),
    st.sampled_from(["", "  ", "a@b.es", "bad@", "X@Y.COM", "test", "12", "1,5", "ñ"]),
    st.text(max_size=8),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(CELL, CELL, CELL, CELL), min_size=0, max_size=30))
@example([("\x1f", None, None, None)])  # str.strip() calls it blank; Unicode does not
def test_every_row_is_valid_rejected_or_filtered_exactly_once(rows: list[tuple[Any, ...]]) -> None:
    mapping = """\
skip_if: [{column: kind, equals: test}]
targets:
  - target: contacts
    fields:
      _user_id: id
      _email: {column: email, type: email}
      score: {column: score, type: float, decimal: ","}
  - target: events
    fields:
      _user_id: id
      _event_id: {hash: [id, kind]}
      _event_type: {value: signup}
      _event_parameters:
        n: {column: score, type: int}
"""
    data = frame(
        id=pl.Series([r[0] for r in rows], dtype=pl.String),
        email=pl.Series([r[1] for r in rows], dtype=pl.String),
        score=pl.Series([r[2] for r in rows], dtype=pl.String),
        kind=pl.Series([r[3] for r in rows], dtype=pl.String),
    )
    mapped = map_frame(mapping, data)
    valid = list(mapped.items["contacts"].source_rows)
    assert list(mapped.items["events"].source_rows) == valid
    rejected = [r.source_row for r in mapped.rejects]
    filtered = list(mapped.filtered_rows)
    everything = valid + rejected + filtered
    assert sorted(everything) == list(range(1, len(rows) + 1))  # each row exactly once
    for reject in mapped.rejects:
        original = rows[reject.source_row - 1]
        # a failed conversion keeps the row's original values, verbatim
        assert dict(reject.values) == dict(zip(["id", "email", "score", "kind"], original,
                                               strict=True))
        assert reject.code in {"required_missing", "invalid_email", "invalid_number"}
    for body in mapped.items["contacts"].bodies:
        # not blank, in the engine's sense (Unicode White_Space; a lone "\x1f" is an id)
        assert set(orjson.loads(body)["_user_id"]) - UNICODE_WHITE_SPACE


# Unicode's White_Space property (what "blank" means; Python's str.isspace also counts the
# \x1c-\x1f separators, which are not blank)
UNICODE_WHITE_SPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=20))
def test_any_text_survives_the_json_round_trip(texts: list[str]) -> None:
    data = frame(id=[f"u{i}" for i in range(len(texts))], note=texts)
    mapped = map_frame("target: contacts\nfields:\n  _user_id: id\n  note: note\n", data)
    by_row = dict(zip(mapped.items["contacts"].source_rows,
                      mapped.items["contacts"].bodies, strict=True))
    for row, text in enumerate(texts, start=1):
        body = orjson.loads(by_row[row])
        if all(c in UNICODE_WHITE_SPACE for c in text):
            assert "note" not in body  # blank: left out
        else:
            assert body["note"] == text


@settings(max_examples=80, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=2,
                   min_value=-10**9, max_value=10**9))
def test_money_keeps_its_digits(amount: Any) -> None:
    text = f"{amount:.2f}"
    data = frame(id=["1"], amount=[text])
    mapped = map_frame(
        "target: contacts\nfields:\n  _user_id: id\n  amount: {column: amount, type: float}\n",
        data,
    )
    (body,) = mapped.items["contacts"].bodies
    sent = body.split(b'"amount":')[1].rstrip(b"}")
    assert sent.decode() == text  # the source's own digits: 49.90 stays 49.90
    assert orjson.loads(body)["amount"] == float(text)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), min_size=1,
                max_size=12),
       st.booleans())
def test_texts_passed_through_or_transformed_survive_the_json_round_trip(
    cells: list[tuple[str, str]], plain_only: bool
) -> None:
    """Columns whose batch holds no character to escape skip the escaping pass: whichever
    path a batch takes, every body reads back to the text sent."""
    if plain_only:  # a batch with nothing to escape
        cells = [(a.replace('"', "'").replace("\\", "/"), b.replace('"', "'"))
                 for a, b in cells]
        cells = [("".join(c for c in a if c >= " "), "".join(c for c in b if c >= " "))
                 for a, b in cells]
    data = frame(id=[f"u{i}" for i in range(len(cells))], note=[a for a, _ in cells],
                 extra=[b for _, b in cells])
    mapped = map_frame("target: contacts\nfields:\n  _user_id: id\n"
                       "  note: {column: note, transform: strip}\n"
                       "custom_attributes: all_other_columns\n", data)
    by_row = dict(zip(mapped.items["contacts"].source_rows,
                      mapped.items["contacts"].bodies, strict=True))
    assert len(by_row) == len(cells)
    for row, (note, extra) in enumerate(cells, start=1):
        body = orjson.loads(by_row[row])
        wanted_note = pl.Series([note]).str.strip_chars()[0]  # the transform, as polars does it
        if wanted_note and not all(c in UNICODE_WHITE_SPACE for c in wanted_note):
            assert body["note"] == wanted_note
        if extra and not all(c in UNICODE_WHITE_SPACE for c in extra):
            assert body["extra"] == extra


_EVENT_ITEMS = {
    "_event_id": "_event_id: {hash: [order, line]}",
    "_user_id": "_user_id: customer",
    "_event_type": "_event_type: {value: purchase}",
    "_event_date": "_event_date: {column: at, type: datetime}",
    "_event_parameters": "_event_parameters:\n        amount: {column: amount, type: float}\n"
                         "        sku: sku",
    "_user_data": "_user_data:\n        _first_name: note",
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.permutations(list(_EVENT_ITEMS)), st.booleans(),
       st.lists(st.tuples(st.sampled_from([None, "S1", 'q"uote']),
                          st.sampled_from([None, "10", "2.50"]),
                          st.sampled_from([None, "2024-11-17T10:00:00Z"]),
                          st.sampled_from([None, "", "x"])), min_size=1, max_size=6))
def test_items_are_the_same_objects_whatever_the_field_order(
    order: list[str], send_nulls: bool, rows: list[tuple[str | None, ...]]
) -> None:
    """A mapping whose first field is required builds items in one pass, each later member
    bringing its own comma; any other order takes the two-pass way. Both give the members in
    mapping order, nulls left out (or sent as null), for every row."""
    def mapping(names: list[str]) -> str:
        head = "defaults: {timezone: UTC}\n" + ("send_nulls: true\n" if send_nulls else "")
        lines = "\n".join(f"      {_EVENT_ITEMS[n]}" for n in names)
        return head + f"targets:\n  - target: events\n    fields:\n{lines}\n"

    data = frame(order=[f"A{i}" for i in range(len(rows))], line=["1"] * len(rows),
                 customer=["C1"] * len(rows), sku=[r[0] for r in rows],
                 amount=[r[1] for r in rows], at=[r[2] for r in rows], note=[r[3] for r in rows])
    reference = bodies(map_frame(mapping(list(_EVENT_ITEMS)), data), "events")
    reordered = bodies(map_frame(mapping(order), data), "events")
    assert len(reordered) == len(reference) == len(rows)
    for got, want in zip(reordered, reference, strict=True):
        assert got == want
        assert list(got) == [name for name in order if name in want]
