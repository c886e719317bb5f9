"""Every type, transform and source of the mapping language, through map_batch."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import orjson
import polars as pl
import pytest

from importer.mapping import compile_mapping, parse_mapping
from importer.records import SourceBatch

MISSING = "<missing>"


class Rejected:
    def __init__(self, code: str, message: str, values: dict[str, Any]) -> None:
        self.code = code
        self.message = message
        self.values = values

    def __eq__(self, other: object) -> bool:
        return other == f"!{self.code}"

    def __repr__(self) -> str:
        return f"!{self.code}"


def frame(**columns: pl.Series | list[Any]) -> pl.DataFrame:
    data = pl.DataFrame({k: v for k, v in columns.items()})
    n = data.height
    return data.with_columns(
        pl.lit("t.csv").alias("_source_file"),
        pl.int_range(1, n + 1, dtype=pl.Int64).alias("_source_row"),
    )


def run_field(
    field: dict[str, Any] | str,
    values: list[Any] | pl.Series,
    *,
    dtype: Any = None,
    raw: bool = False,
    **top: Any,
) -> list[Any]:
    """Map one field ``x`` over ``values`` (column ``c``); per row: the value sent (parsed or
    raw JSON text), MISSING when left out, or ``"!code"`` when rejected."""
    doc = {"target": "contacts", "fields": {"_user_id": "id", "x": field}, **top}
    spec = parse_mapping(json.dumps(doc))
    series = values if isinstance(values, pl.Series) else pl.Series("c", values, dtype=dtype)
    data = frame(id=[f"u{i}" for i in range(len(series))], c=series.rename("c"))
    mapped = compile_mapping(spec, data.columns).map_batch(SourceBatch("t.csv", data))
    out: list[Any] = [None] * data.height
    items = mapped.items["contacts"]
    for row, body in zip(items.source_rows, items.bodies, strict=True):
        out[row - 1] = _raw_member(body) if raw else orjson.loads(body).get("x", MISSING)
    for reject in mapped.rejects:
        out[reject.source_row - 1] = Rejected(reject.code, reject.message, dict(reject.values))
    return out


def _raw_member(body: bytes) -> str:
    """The exact JSON text of member "x", the last member of the object."""
    head, found, tail = body.partition(b',"x":')
    assert head.startswith(b'{"_user_id":')
    return tail[:-1].decode() if found else MISSING


# ---------------------------------------------------------------- string and blanks


def test_string_is_verbatim_and_blank_is_left_out() -> None:
    values = ["  Ana ", "O'Brien \"Jr\" \\ x", "línea\nnueva\ttab\x01", "😀 ñ", "", "   ", None]
    assert run_field("c", values) == [
        "  Ana ", "O'Brien \"Jr\" \\ x", "línea\nnueva\ttab\x01", "😀 ñ", MISSING, MISSING, MISSING,
    ]


def test_non_ascii_stays_utf8_in_the_bytes() -> None:
    assert run_field("c", ["Muñoz"], raw=True) == ['"Muñoz"']


def test_string_from_native_columns() -> None:
    assert run_field("c", [12, None], dtype=pl.Int64) == ["12", MISSING]


def test_send_nulls_sends_empty_values_as_null() -> None:
    assert run_field("c", ["a", "", None], send_nulls=True) == ["a", None, None]
    assert run_field("c", ["", None], send_nulls=True, raw=True) == ["null", "null"]


# ---------------------------------------------------------------- numbers


def test_int() -> None:
    values = ["42", " +7 ", "-3", "12.0", "12.00", "1.5", "abc", "99999999999999999999", ""]
    assert run_field({"column": "c", "type": "int"}, values) == [
        42, 7, -3, 12, 12, "!invalid_number", "!invalid_number", "!invalid_number", MISSING,
    ]


def test_int_with_thousands_and_decimal_comma() -> None:
    field = {"column": "c", "type": "int", "decimal": ",", "thousands": "."}
    assert run_field(field, ["1.234", "12,0", "1.23", "1234"]) == [
        1234, 12, "!invalid_number", 1234,
    ]


def test_int_from_native_numbers() -> None:
    assert run_field({"column": "c", "type": "int"}, [3, None], dtype=pl.Int32) == [3, MISSING]
    floats = run_field({"column": "c", "type": "int"}, [3.0, 3.5, float("nan")], dtype=pl.Float64)
    assert floats == [3, "!invalid_number", "!invalid_number"]


def test_float_keeps_the_source_digits() -> None:
    """49.90 is sent as 49.90, never as a binary-float approximation."""
    field = {"column": "c", "type": "float"}
    values = ["49.90", "0.1", "+5", ".5", "5.", "007.50", "-0.5e3", "1E-7"]
    assert run_field(field, values, raw=True) == [
        "49.90", "0.1", "5", "0.5", "5", "7.50", "-0.5e3", "1E-7",
    ]


def test_float_rejects() -> None:
    field = {"column": "c", "type": "float"}
    values = ["1e999", "nan", "inf", "12,5", "1.2.3", "", "€5"]
    assert run_field(field, values) == [
        "!invalid_number", "!invalid_number", "!invalid_number", "!invalid_number",
        "!invalid_number", MISSING, "!invalid_number",
    ]


def test_float_european() -> None:
    field = {"column": "c", "type": "float", "decimal": ",", "thousands": "."}
    assert run_field(field, ["1.234,56", "49,90", "-0,5", "1234"], raw=True) == [
        "1234.56", "49.90", "-0.5", "1234",
    ]
    assert run_field(field, ["12.34"]) == ["!invalid_number"]


def test_float_from_native_columns() -> None:
    field = {"column": "c", "type": "float"}
    assert run_field(field, [49.9, 0.1 + 0.2], dtype=pl.Float64, raw=True) == [
        "49.9", "0.30000000000000004",
    ]
    assert run_field(field, [float("inf")], dtype=pl.Float64) == ["!invalid_number"]
    money = pl.Series("c", [decimal.Decimal("49.90"), None], dtype=pl.Decimal(10, 2))
    assert run_field(field, money, raw=True) == ["49.90", MISSING]
    assert run_field(field, [49.9], dtype=pl.Float32, raw=True) == ["49.9"]


# ---------------------------------------------------------------- bool


def test_bool_default_words() -> None:
    values = ["true", "YES", " y ", "1", "false", "No", "0", "maybe", ""]
    assert run_field({"column": "c", "type": "bool"}, values) == [
        "1", "1", "1", "1", "0", "0", "0", "!invalid_bool", MISSING,
    ]


def test_bool_custom_words() -> None:
    field = {"column": "c", "type": "bool", "true_values": ["sí", "si"], "false_values": ["no"]}
    assert run_field(field, ["Sí", "SI", "no", "yes"]) == ["1", "1", "0", "!invalid_bool"]


def test_bool_native() -> None:
    field = {"column": "c", "type": "bool"}
    assert run_field(field, [True, False, None], dtype=pl.Boolean) == ["1", "0", MISSING]
    assert run_field(field, [1, 0, 2], dtype=pl.Int64) == ["1", "0", "!invalid_bool"]


# ---------------------------------------------------------------- dates and times


def test_date_iso_and_formats() -> None:
    assert run_field({"column": "c", "type": "date"}, ["2024-02-29", "2023-02-29", "x"]) == [
        "2024-02-29", "!invalid_date", "!invalid_date",
    ]
    field = {"column": "c", "type": "date", "format": ["%d/%m/%Y", "%Y%m%d"]}
    assert run_field(field, ["31/12/1990", "19900101", "31/02/1990", " 1/2/2000 "]) == [
        "1990-12-31", "1990-01-01", "!invalid_date", "2000-02-01",
    ]


def test_a_date_is_the_day_written_whatever_the_default_timezone() -> None:
    """``defaults: timezone`` (for the datetimes of a file) must not move a date: midnight in
    Madrid is the day before in UTC, and a birthdate is not an instant."""
    madrid = {"defaults": {"timezone": "Europe/Madrid"}}
    plain = {"column": "c", "type": "date", "format": ["%d/%m/%Y", "%Y-%m-%d"]}
    assert run_field(plain, ["19/07/1995", "1968-12-03", "31/02/1990"], **madrid) == [
        "1995-07-19", "1968-12-03", "!invalid_date",
    ]
    assert run_field({"column": "c", "type": "date"}, ["1995-07-19", "1995-7-19"],
                     **madrid) == ["1995-07-19", "1995-07-19"]
    # a wall-clock time is taken as written; a UTC time (Z) is seen in Madrid first
    timed = {"column": "c", "type": "date",
             "format": ["%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%SZ"]}
    assert run_field(timed, ["2024-01-01 00:30", "2024-01-01T23:30:00Z"], **madrid) == [
        "2024-01-01", "2024-01-02",
    ]


def test_date_native() -> None:
    field = {"column": "c", "type": "date"}
    days = pl.Series("c", [dt.date(2024, 1, 2), None])
    assert run_field(field, days) == ["2024-01-02", MISSING]
    moments = pl.Series("c", [dt.datetime(2024, 1, 1, 23, 30)]).dt.replace_time_zone("UTC")
    madrid = {**field, "timezone": "Europe/Madrid"}
    with pytest.raises(Exception, match="timezone"):  # timezone is a datetime option
        run_field(madrid, moments)
    assert run_field(field, moments) == ["2024-01-01"]


def test_datetime_iso_shapes_to_utc_millis() -> None:
    field = {"column": "c", "type": "datetime", "timezone": "Europe/Madrid"}
    values = [
        "2024-11-17T10:00:00Z",
        "2024-11-17T10:00:00.123456+02:00",
        "2024-11-17 10:00:00",  # naive: Madrid (UTC+1 in November)
        "2024-07-01T10:00",  # naive, summer: UTC+2
        "2024-11-17",
        "17/11/2024",
    ]
    assert run_field(field, values) == [
        "2024-11-17T10:00:00.000Z",
        "2024-11-17T08:00:00.123Z",
        "2024-11-17T09:00:00.000Z",
        "2024-07-01T08:00:00.000Z",
        "2024-11-16T23:00:00.000Z",
        "!invalid_date",
    ]


def test_datetime_dst_gap_and_overlap() -> None:
    field = {"column": "c", "type": "datetime", "timezone": "Europe/Madrid",
             "format": "%Y-%m-%d %H:%M"}
    # 02:30 on 31 March 2024 never happened in Madrid; 02:30 on 27 October happened twice
    assert run_field(field, ["2024-03-31 02:30", "2024-10-27 02:30"]) == [
        "!invalid_date", "2024-10-27T00:30:00.000Z",
    ]


def test_datetime_native_columns() -> None:
    field = {"column": "c", "type": "datetime", "timezone": "America/New_York"}
    aware = pl.Series("c", [dt.datetime(2024, 1, 1, 12, 0, 0, 123456)]).dt.replace_time_zone(
        "Europe/Madrid"
    )
    assert run_field(field, aware) == ["2024-01-01T11:00:00.123Z"]
    naive = pl.Series("c", [dt.datetime(2024, 1, 1, 12, 0)])
    assert run_field(field, naive) == ["2024-01-01T17:00:00.000Z"]
    day = pl.Series("c", [dt.date(2024, 1, 1)])
    assert run_field(field, day) == ["2024-01-01T05:00:00.000Z"]


# ---------------------------------------------------------------- phone and email


def test_phone() -> None:
    field = {"column": "c", "type": "phone", "phone_region": "ES"}
    values = ["612 34 56 78", "+34 612-345-678", "0034612345678", "+44 7911 123456", "12345",
              "tel: +1 (212) 555-0100", ""]
    assert run_field(field, values) == [
        "+34612345678", "+34612345678", "+34612345678", "+447911123456", "!invalid_phone",
        "+12125550100", MISSING,
    ]


def test_phone_without_region_needs_the_country_code() -> None:
    field = {"column": "c", "type": "phone"}
    assert run_field(field, ["+34 612345678", "612345678"]) == ["+34612345678", "!invalid_phone"]


def test_phone_from_an_integer_column() -> None:
    field = {"column": "c", "type": "phone", "phone_region": "ES"}
    assert run_field(field, [612345678], dtype=pl.Int64) == ["+34612345678"]


def test_email() -> None:
    field = {"column": "c", "type": "email"}
    good = ["  Ana.Gomez+promo@Example.COM ", "x_y@sub.domain.es", "muñoz@example.com"]
    assert run_field(field, good) == [
        "ana.gomez+promo@example.com", "x_y@sub.domain.es", "muñoz@example.com",
    ]
    bad = ["a@@b.com", "a b@c.com", "abc.com", "a@b", "a@b.c", ".a@b.com", "a.@b.com",
           "a..b@c.com", "a@-b.com", "a@b..com", "a@b.com.", "<a>@b.com"]
    assert run_field(field, bad) == ["!invalid_email"] * len(bad)


# ---------------------------------------------------------------- json and list


def test_json_cells() -> None:
    field = {"column": "c", "type": "json"}
    values = ['{"b": 1.50, "a": [1, "é"]}', "[]", "5", '"text"', "{bad", "NaN", "{} x"]
    assert run_field(field, values) == [
        {"b": 1.5, "a": [1, "é"]}, [], "!invalid_json", "!invalid_json", "!invalid_json",
        "!invalid_json", "!invalid_json",
    ]
    exact = ['{ "a" : 1 }', '{"big": 123456789012345678901234567890, "f": 0.1}']
    assert run_field(field, exact, raw=True) == [
        '{"a":1}', '{"big":123456789012345678901234567890,"f":0.1}',
    ]


def test_json_native_struct_and_list() -> None:
    field = {"column": "c", "type": "json"}
    structs = pl.Series("c", [{"a": 1, "b": "x"}])
    assert run_field(field, structs) == [{"a": 1, "b": "x"}]
    lists = pl.Series("c", [[1, 2], []])
    assert run_field({"column": "c", "type": "list"}, lists) == [[1, 2], MISSING]


def test_list_splits_trims_and_drops_empties() -> None:
    field = {"column": "c", "type": "list"}
    assert run_field(field, ["a, b ,,c", " , ", "solo", 'quo"te']) == [
        ["a", "b", "c"], MISSING, ["solo"], ['quo"te'],
    ]
    assert run_field({**field, "separator": "|"}, ["x|y,z"]) == [["x", "y,z"]]


# ---------------------------------------------------------------- transforms


@pytest.mark.parametrize(
    ("transform", "value", "expected"),
    [
        ("strip", "  a b  ", "a b"),
        ("lower", "ÁBC", "ábc"),
        ("upper", "ñandú", "ÑANDÚ"),
        ("title", "josé maría o'neil", "José María O'Neil"),
        ("collapse_spaces", " a   b\t\tc ", " a b c "),
        ("digits_only", "+34 (612) 34-56", "346123456"),
        ("digits_only", "n/a", MISSING),  # nothing left: empty, so left out
    ],
)
def test_simple_transforms(transform: str, value: str, expected: str) -> None:
    assert run_field({"column": "c", "transform": transform}, [value]) == [expected]


def test_map_and_default_and_order() -> None:
    field = {"column": "c", "transform": [{"map": {"M": "male", "F": "female", "X": None}}]}
    assert run_field(field, ["M", "F", "X", "other", None]) == [
        "male", "female", MISSING, "other", MISSING,
    ]
    field = {"column": "c", "transform": ["strip", {"default": "unknown"}, "upper"]}
    assert run_field(field, ["  a ", "   ", None]) == ["A", "UNKNOWN", "UNKNOWN"]


def test_transforms_run_before_the_type() -> None:
    field: dict[str, Any] = {"column": "c", "type": "int", "transform": ["digits_only"]}
    assert run_field(field, ["EUR 1 234", "none"]) == [1234, MISSING]
    field = {"column": "c", "type": "bool", "transform": [{"map": {"S": "1", "N": "0"}}]}
    assert run_field(field, ["S", "N", "?"]) == ["1", "0", "!invalid_bool"]


def test_transforms_on_a_native_column_see_its_text() -> None:
    field = {"column": "c", "transform": ["digits_only"]}
    assert run_field(field, [1234], dtype=pl.Int64) == ["1234"]


# ---------------------------------------------------------------- other sources


def two_columns(field: dict[str, Any], a: list[Any], b: list[Any]) -> list[Any]:
    doc = {"target": "contacts", "fields": {"_user_id": "id", "x": field}}
    spec = parse_mapping(json.dumps(doc))
    data = frame(id=[f"u{i}" for i in range(len(a))], a=a, b=b)
    mapped = compile_mapping(spec, data.columns).map_batch(SourceBatch("t.csv", data))
    out: list[Any] = [None] * data.height
    items = mapped.items["contacts"]
    for row, body in zip(items.source_rows, items.bodies, strict=True):
        out[row - 1] = orjson.loads(body).get("x", MISSING)
    for reject in mapped.rejects:
        out[reject.source_row - 1] = f"!{reject.code}"
    return out


def test_template() -> None:
    field = {"template": "{a} {b}", "transform": ["strip"]}
    assert two_columns(field, ["Ana", "Ana", None, "  "], ["Gil", None, "Gil", None]) == [
        "Ana Gil", "Ana", "Gil", MISSING,
    ]
    assert two_columns({"template": "ID-{a}"}, [None, "7"], [None, None]) == [MISSING, "ID-7"]


def test_coalesce_skips_blank_cells() -> None:
    field = {"coalesce": ["a", "b"]}
    assert two_columns(field, ["x", " ", None], ["y", "z", None]) == ["x", "z", MISSING]


def test_value_constant_takes_the_field_type() -> None:
    assert two_columns({"value": "10", "type": "int"}, ["p"], ["q"]) == [10]
    assert two_columns({"value": True, "type": "bool"}, ["p"], ["q"]) == ["1"]
    assert two_columns({"value": "NO"}, ["p"], ["q"]) == ["NO"]


# ---------------------------------------------------------------- required and messages


def test_required_missing_versus_invalid() -> None:
    field = {"column": "c", "type": "int", "required": True}
    assert run_field(field, ["1", "", "x"]) == [1, "!required_missing", "!invalid_number"]


def test_reject_message_quotes_the_raw_value_and_keeps_the_row() -> None:
    field = {"column": "c", "type": "date", "format": "%d/%m/%Y", "transform": ["strip"]}
    (rejected,) = run_field(field, ["  31/02/2024 "])
    assert isinstance(rejected, Rejected)
    assert rejected.message.startswith(
        "x: '  31/02/2024 ' from column 'c' is not a real calendar date or time of day "
        "(expected a date matching %d/%m/%Y) — "
    )
    assert rejected.values == {"id": "u0", "c": "  31/02/2024 "}


def test_long_values_are_shortened_in_messages_only() -> None:
    long = "x" * 500 + "@"
    (rejected,) = run_field({"column": "c", "type": "email"}, [long])
    assert isinstance(rejected, Rejected)
    assert "'" + "x" * 120 + "…'" in rejected.message
    assert rejected.values["c"] == long
