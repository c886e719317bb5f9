"""Date formats read with Python's meaning: a property test against ``datetime.strptime``,
then the named cases (ISO 8601 spellings, epoch, Excel serials, refusals with the directive)."""

from __future__ import annotations

import datetime as dt
import json
import warnings
import zoneinfo
from typing import Any

import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importer.exceptions import MappingError
from importer.mapping import compile_mapping, dateformat, parse_mapping
from importer.records import SourceBatch

UTC = dt.UTC
OUT_OF_PYTHON_RANGE = "<not comparable>"  # see python_reading
ZONES = ("UTC", "Europe/Madrid", "America/Sao_Paulo", "Asia/Kolkata")


def map_values(field: dict[str, Any], values: list[str], **top: Any) -> list[str | None]:
    """Per value: the JSON value of field ``x`` as sent, or None when the row is rejected."""
    doc = {"target": "contacts", "fields": {"_user_id": "id", "x": field}, **top}
    spec = parse_mapping(json.dumps(doc))
    n = len(values)
    frame = pl.DataFrame({
        "id": [f"u{i}" for i in range(n)],
        "c": pl.Series(values, dtype=pl.String),
        "_source_file": ["t.csv"] * n,
        "_source_row": list(range(1, n + 1)),
    })
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # polars' format warnings must never fire
        mapped = compile_mapping(spec, frame.columns).map_batch(SourceBatch("t.csv", frame))
    out: list[str | None] = [None] * n
    items = mapped.items["contacts"]
    for row, body in zip(items.source_rows, items.bodies, strict=True):
        out[row - 1] = orjson.loads(body)["x"]
    for reject in mapped.rejects:
        assert reject.code == "invalid_date", reject.message
    return out


def refusal(field: dict[str, Any]) -> str:
    doc = {"target": "contacts", "fields": {"_user_id": "id", "x": field}}
    with pytest.raises(MappingError) as caught:
        parse_mapping(json.dumps(doc))
    return str(caught.value)


# ---------------------------------------------------------------- Python's strptime, exactly


def python_reading(text: str, fmt: str, zone: str, kind: str) -> str | None:
    """What the mapping promises: Python's strptime on the trimmed text, then to UTC (an
    offset as written; %Z or a trailing literal Z: UTC; otherwise the field's timezone)."""
    try:
        wall = dt.datetime.strptime(text.strip(), fmt)
    except ValueError:
        return None
    if zone != "UTC" and wall.year > 2037:
        return OUT_OF_PYTHON_RANGE  # polars' zone rules stop daylight saving after 2037
    says_utc = "%Z" in fmt or fmt.endswith("Z")
    tz = zoneinfo.ZoneInfo(zone)
    if wall.tzinfo is None and says_utc:
        wall = wall.replace(tzinfo=UTC)
    if kind == "date":
        try:
            day = wall.astimezone(tz).date() if wall.tzinfo else wall.date()
        except OverflowError:
            return OUT_OF_PYTHON_RANGE
        return day.isoformat()
    if wall.tzinfo is None:
        local = wall.replace(tzinfo=tz)
        if local.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall:
            return None  # a wall-clock time the zone skips (spring forward)
        wall = local
    try:
        moment = wall.astimezone(UTC)
    except OverflowError:  # 0001-01-01 east of Greenwich: year 0, which Python lacks
        return OUT_OF_PYTHON_RANGE
    return (f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z")


_SEP = st.sampled_from(["-", "/", ".", " ", "", ", ", "  ", "_"])


@st.composite
def formats(draw: st.DrawFn) -> str:
    """A format of the directives read without Python's help, in any order and spacing."""
    year = draw(st.sampled_from(["%Y", "%Y", "%y"]))
    if draw(st.integers(0, 5)) == 0:
        date_parts = [year, "%j"]
    else:
        date_parts = [year, draw(st.sampled_from(["%m", "%m", "%b", "%B"])), "%d"]
    date_parts = draw(st.permutations(date_parts))
    out = date_parts[0]
    for part in date_parts[1:]:
        out += draw(_SEP) + part
    if draw(st.booleans()):
        out = draw(st.sampled_from(["%a ", "%A, ", "%a"])) + out
    if draw(st.integers(0, 3)):
        twelve = draw(st.integers(0, 3)) == 0
        clock = "%I" if twelve else "%H"
        colon = draw(st.sampled_from([":", ":", ""]))
        clock += colon + "%M"
        if draw(st.booleans()):
            clock += colon + "%S"
            clock += draw(st.sampled_from(["", ".%f", ".%f", ",%f"]))
        if twelve:
            clock += draw(st.sampled_from([" %p", "%p"]))
        out += draw(st.sampled_from(["T", " ", "t", " at ", "|"])) + clock
        out += draw(st.sampled_from(["", "", "%z", " %z", " %Z", "Z"]))
    if draw(st.integers(0, 9)) == 0:
        out = draw(st.sampled_from(["%% ", "on "])) + out
    return out


_OFFSETS = st.sampled_from(["+0100", "+01:00", "-0530", "-05:30", "Z", "+0000", "+01:00:30",
                            "+010030.5", "+2359", "+01:0030", "+24:00", "+01"])


@st.composite
def texts(draw: st.DrawFn, fmt: str, zone: str) -> list[str]:
    """The format's own writing of random moments, plus damaged and re-cased copies."""
    out: list[str] = []
    # polars' zone rules stop daylight saving after 2037 where Python's go on (not a format
    # matter): far dates are drawn in UTC only
    last = dt.datetime(9999, 12, 30) if zone == "UTC" else dt.datetime(2037, 12, 31)
    for _ in range(draw(st.integers(1, 4))):
        moment = draw(st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=last))
        if "%y" in fmt:
            moment = moment.replace(year=draw(st.integers(1969, 2068)))
        written = moment.strftime(fmt.replace("%z", "\x00").replace("%Z", "\x01"))
        written = written.replace("\x00", draw(_OFFSETS))
        written = written.replace("\x01", draw(st.sampled_from(["UTC", "GMT", "utc", "CET"])))
        out.append(written)
        mutation = draw(st.integers(0, 7))
        if mutation == 0:
            out.append(written.lower())
        elif mutation == 1:
            out.append(written.upper())
        elif mutation == 2 and len(written) > 1:
            at = draw(st.integers(0, len(written) - 1))
            out.append(written[:at] + written[at + 1:])
        elif mutation == 3:
            at = draw(st.integers(0, len(written)))
            out.append(written[:at] + draw(st.sampled_from(["0", "1", "9", " ", "\t", "\xa0",
                                                             ":", "3"])) + written[at:])
        elif mutation == 4:
            digits = [i for i, c in enumerate(written) if c.isdigit()]
            if digits:
                at = draw(st.sampled_from(digits))
                out.append(written[:at] + draw(st.sampled_from("0123456789")) + written[at + 1:])
        elif mutation == 5:
            out.append(written.replace(" ", "  ").replace("-", "-0"))
    return out


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), fmt=formats(), zone=st.sampled_from(ZONES),
       kind=st.sampled_from(["datetime", "datetime", "date"]))
def test_formats_read_exactly_as_python_strptime(
    data: st.DataObject, fmt: str, zone: str, kind: str
) -> None:
    problem = dateformat.format_problem(fmt, kind)
    assert problem is None, problem  # the strategy draws usable formats only
    values = data.draw(texts(fmt, zone))
    field = {"column": "c", "type": kind, "format": fmt}
    if kind == "datetime":
        field["timezone"] = zone
    top = {"defaults": {"timezone": zone}} if kind == "date" else {}
    got = map_values(field, values, **top)
    expected = [python_reading(v, fmt, zone, kind) for v in values]
    kept = [i for i, e in enumerate(expected) if e != OUT_OF_PYTHON_RANGE]
    got, expected, values = ([x[i] for i in kept] for x in (got, expected, values))
    assert got == expected, (fmt, dateformat.path_of(fmt),
                             list(zip(values, got, expected, strict=True)))


@pytest.mark.parametrize("fmt", [
    "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%Y-%m-%d %H:%M:%S.%f",
    "%d.%m.%Y %H:%M:%S", "%m/%d/%Y %H:%M:%S,%f",
])
def test_common_formats_take_polars_own_parser(fmt: str) -> None:
    assert dateformat.path_of(fmt) == ("chrono" if ",%f" not in fmt else "exact")


@pytest.mark.parametrize("fmt", ["%Y-%m-%dT%H:%M:%S%z", "%d %b %Y", "%Y%m%d", "%y-%m-%d",
                                 "%Y-%m-%d %I:%M %p", "%Y-%j"])
def test_other_directive_formats_take_the_exact_vectorised_path(fmt: str) -> None:
    assert dateformat.path_of(fmt) == "exact"


def test_week_directives_call_python_once_per_distinct_value() -> None:
    fmt = "%G-W%V-%u %H:%M"
    assert dateformat.path_of(fmt) == "python"
    values = ["2024-W46-4 19:21", "2024-W46-4 19:21", "2024-W01-1 00:00", "2024-W54-1 10:00",
              "2024-W53-1 10:00"]  # Python rolls week 53 of a 52-week year into the next
    assert map_values({"column": "c", "type": "datetime", "format": fmt}, values) == [
        "2024-11-14T19:21:00.000Z", "2024-11-14T19:21:00.000Z", "2024-01-01T00:00:00.000Z",
        None, "2024-12-30T10:00:00.000Z",
    ]
    sunday = {"column": "c", "type": "date", "format": "%Y %U %a"}  # weeks start on Sunday
    assert map_values(sunday, ["2024 46 Thu"]) == ["2024-11-21"]


# ---------------------------------------------------------------- the cases


def test_fraction_of_a_second_is_kept_not_truncated() -> None:
    """Issue 15: ``%S.%f`` stored 19:21:00.000 for 19:21:00.123, with polars warnings."""
    fmt = {"column": "c", "type": "datetime", "format": "%Y-%m-%d %H:%M:%S.%f"}
    assert map_values(fmt, ["2024-11-14 19:21:00.123", "2024-11-14 19:21:00.5",
                            "2024-11-14 19:21:00.123456", "2024-11-14 19:21:00",
                            "2024-11-14 19:21:00.1234567"]) == [
        "2024-11-14T19:21:00.123Z", "2024-11-14T19:21:00.500Z", "2024-11-14T19:21:00.123Z",
        None, None,
    ]


def test_python_directives_with_their_python_meaning() -> None:
    cases = {
        "%Y-%m-%dT%H:%M:%S%z": [("2024-11-14T19:21:00+0100", "2024-11-14T18:21:00.000Z"),
                                ("2024-11-14T19:21:00-05:30", "2024-11-15T00:51:00.000Z"),
                                ("2024-11-14T19:21:00Z", "2024-11-14T19:21:00.000Z"),
                                ("2024-11-14T19:21:00+01", None)],
        "%d/%m/%Y %I:%M %p": [("14/11/2024 07:21 PM", "2024-11-14T19:21:00.000Z"),
                              ("14/11/2024 12:05 am", "2024-11-14T00:05:00.000Z"),
                              ("14/11/2024 12:05 PM", "2024-11-14T12:05:00.000Z"),
                              ("14/11/2024 13:05 PM", None)],
        "%a, %d %b %Y %H:%M:%S %Z": [("Thu, 14 Nov 2024 19:21:00 GMT",
                                      "2024-11-14T19:21:00.000Z"),
                                     ("thu, 14 NOV 2024 19:21:00 utc",
                                      "2024-11-14T19:21:00.000Z"),
                                     ("Thu, 14 Nov 2024 19:21:00 CET", None)],
        "%B %d, %Y": [("November 14, 2024", "2024-11-14T00:00:00.000Z"),
                      ("Nov 14, 2024", None)],
        "%Y-%j": [("2024-319", "2024-11-14T00:00:00.000Z"),
                  ("2023-366", "2024-01-01T00:00:00.000Z")],
        "%d/%m/%y": [("14/11/68", "2068-11-14T00:00:00.000Z"),
                     ("14/11/69", "1969-11-14T00:00:00.000Z")],
        "100%% on %Y-%m-%d": [("100% on 2024-11-14", "2024-11-14T00:00:00.000Z")],
    }
    for fmt, pairs in cases.items():
        field = {"column": "c", "type": "datetime", "format": fmt}
        got = map_values(field, [v for v, _ in pairs])
        assert got == [e for _, e in pairs], fmt


@pytest.mark.parametrize(("fmt", "needle"), [
    ("%Y-%m-%d %H:%M:%S%.f", "uses %.f, which Python's strptime does not know; use .%f"),
    ("%Y-%m-%dT%H:%M:%S%:z", "uses %:z, which Python's strptime does not know; use %z"),
    ("%e/%m/%Y", "uses %e, which Python's strptime does not know; use %d"),
    ("%Y-%m-%d %T", "uses %T, which Python's strptime does not know; use %H:%M:%S"),
    ("%Y-%m-%d %Q", "uses %Q, which Python's strptime does not know"),
    ("%d/%m/%Y %", "ends with a lone %"),
    ("%Y-%m-%d %I:%M", "uses %I (12-hour clock) without %p"),
    ("%m/%d %H:%M", "has no year (%Y, or %y for two digits)"),
    ("%Y-%m %H:%M", "has no day"),
    ("%Y-%m-%d %Y", "uses %Y twice"),
    ("%Y-W%V-%u", "is refused by Python's strptime"),
])
def test_refusals_name_the_directive(fmt: str, needle: str) -> None:
    message = refusal({"column": "c", "type": "datetime", "format": fmt})
    assert needle in message, message
    assert "must name the year, month and day" not in message


def test_offset_directive_is_no_longer_refused_for_a_wrong_reason() -> None:
    """Issue 15: ``%z`` was refused with "must name the year, month and day"."""
    assert dateformat.format_problem("%Y-%m-%d %H:%M:%S %z", "datetime") is None
    assert dateformat.format_problem("%Y-%m-%d %H:%M:%S %z", "date") is None


def test_iso_8601_spellings_without_a_format() -> None:
    field = {"column": "c", "type": "datetime", "timezone": "Europe/Madrid"}
    cases = [
        ("2024-11-14T19:21+01:00", "2024-11-14T18:21:00.000Z"),
        ("2024-11-14T19:21Z", "2024-11-14T19:21:00.000Z"),
        ("2024-11-14T19:21:00+01", "2024-11-14T18:21:00.000Z"),
        ("2024-11-14T19:21:00-0230", "2024-11-14T21:51:00.000Z"),
        ("2024-11-14t19:21:00z", "2024-11-14T19:21:00.000Z"),
        ("2024-11-14 19:21:00.123 UTC", "2024-11-14T19:21:00.123Z"),
        ("2024-11-14 19:21:00 GMT", "2024-11-14T19:21:00.000Z"),
        ("2024-11-14T19:21:00.123456789Z", "2024-11-14T19:21:00.123Z"),
        ("2024-11-14T19:21:00,5Z", "2024-11-14T19:21:00.500Z"),
        ("2024-11-14 19:21", "2024-11-14T18:21:00.000Z"),  # naive: Madrid
        ("2024-11-14", "2024-11-13T23:00:00.000Z"),
        ("2024-11-14T19:21:00+25:00", None),
        ("2024-11-31T10:00:00Z", None),
        ("2024-11-14T24:00:00Z", None),
        ("2024-11-14T19:21:60Z", None),
        ("14/11/2024", None),
        ("2024-11-14 19:21:00 CET", None),
        ("0000-01-01T00:00:00Z", None),
    ]
    assert map_values(field, [v for v, _ in cases]) == [e for _, e in cases]


def test_epoch_seconds_and_milliseconds() -> None:
    seconds = {"column": "c", "type": "datetime", "format": "epoch_s"}
    assert map_values(seconds, ["1731612060", "1731612060.123", "0", "-86400", "1.7e9", "x",
                                "253402300800"]) == [
        "2024-11-14T19:21:00.000Z", "2024-11-14T19:21:00.123Z", "1970-01-01T00:00:00.000Z",
        "1969-12-31T00:00:00.000Z", None, None, None,
    ]
    millis = {"column": "c", "type": "datetime", "format": "epoch_ms"}
    assert map_values(millis, ["1731612060123", "1731612060123.9"]) == [
        "2024-11-14T19:21:00.123Z", "2024-11-14T19:21:00.123Z",
    ]
    # an instant: its date is the date in the field's timezone
    day = {"column": "c", "type": "date", "format": "epoch_s"}
    assert map_values(day, ["1731622860"], defaults={"timezone": "Asia/Tokyo"}) == [
        "2024-11-15",
    ]


def test_excel_serial_dates() -> None:
    """Excel's 1900 system: 45612 is 2024-11-16; serial 60 is Excel's 29 February 1900, a day
    that never existed, refused; 1-59 count from 1900-01-01, 61 is 1900-03-01."""
    field = {"column": "c", "type": "datetime", "format": "excel"}
    assert map_values(field, ["45612", "45612.5", "45612.604166666664", "1", "59", "60", "61",
                              "0", "-1", "45612,5", "2958465.99999999"]) == [
        "2024-11-16T00:00:00.000Z", "2024-11-16T12:00:00.000Z", "2024-11-16T14:30:00.000Z",
        "1900-01-01T00:00:00.000Z", "1900-02-28T00:00:00.000Z", None,
        "1900-03-01T00:00:00.000Z", None, None, None, "9999-12-31T23:59:59.999Z",
    ]
    # a serial is a wall-clock time: read in the field's timezone
    madrid = {**field, "timezone": "Europe/Madrid"}
    assert map_values(madrid, ["45612.5"]) == ["2024-11-16T11:00:00.000Z"]
    day = {"column": "c", "type": "date", "format": "excel"}
    assert map_values(day, ["45612", "45612.99"]) == ["2024-11-16", "2024-11-16"]


def test_a_list_of_formats_mixes_named_and_strptime_formats() -> None:
    field = {"column": "c", "type": "datetime", "format": ["iso8601", "%d/%m/%Y %H:%M", "excel"]}
    assert map_values(field, ["2024-11-14T19:21Z", "14/11/2024 19:21", "45612"]) == [
        "2024-11-14T19:21:00.000Z", "2024-11-14T19:21:00.000Z", "2024-11-16T00:00:00.000Z",
    ]


def test_failure_reasons_say_what_is_wrong() -> None:
    doc = {"target": "contacts", "fields": {"_user_id": "id", "x": {
        "column": "c", "type": "datetime", "timezone": "Europe/Madrid"}}}
    spec = parse_mapping(json.dumps(doc))
    frame = pl.DataFrame({"id": ["a", "b", "c", "d"],
                          "c": ["14/11/2024", "2024-02-30T10:00:00Z", "2024-03-31 02:30",
                                "2024-11-31 10:00 UTC"],
                          "_source_file": ["t.csv"] * 4, "_source_row": [1, 2, 3, 4]})
    mapped = compile_mapping(spec, frame.columns).map_batch(SourceBatch("t.csv", frame))
    messages = [r.message.split(" — ")[0] for r in mapped.rejects]
    assert messages == [
        "x: '14/11/2024' from column 'c' is not an ISO 8601 date/time (such as "
        "2024-11-17T10:00:00Z or 2024-11-17 10:00)",
        "x: '2024-02-30T10:00:00Z' from column 'c' is not a real calendar date or time of day "
        "(expected an ISO 8601 date/time (such as 2024-11-17T10:00:00Z or 2024-11-17 10:00))",
        "x: '2024-03-31 02:30' from column 'c' is a time that does not exist in Europe/Madrid "
        "(the clocks skip it)",
        "x: '2024-11-31 10:00 UTC' from column 'c' is not a real calendar date or time of day "
        "(expected an ISO 8601 date/time (such as 2024-11-17T10:00:00Z or 2024-11-17 10:00))",
    ]
    assert not any("in UTC" in m or "in Europe/Madrid" in m for m in messages[:2])


def test_epoch_and_excel_from_native_number_columns() -> None:
    """Parquet exports keep numbers as numbers: an Int64 epoch and a Float64 Excel serial."""
    doc = {"target": "contacts", "fields": {
        "_user_id": "id",
        "s": {"column": "epoch", "type": "datetime", "format": "epoch_ms"},
        "e": {"column": "serial", "type": "datetime", "format": "excel"},
    }}
    frame = pl.DataFrame({"id": ["a", "b"], "epoch": [1731612060123, -1],
                          "serial": [45612.604166666664, 61.0],
                          "_source_file": ["t.parquet"] * 2, "_source_row": [1, 2]})
    mapped = compile_mapping(parse_mapping(json.dumps(doc)), frame.columns).map_batch(
        SourceBatch("t.parquet", frame))
    assert [orjson.loads(b) for b in mapped.items["contacts"].bodies] == [
        {"_user_id": "a", "s": "2024-11-14T19:21:00.123Z", "e": "2024-11-16T14:30:00.000Z"},
        {"_user_id": "b", "s": "1969-12-31T23:59:59.999Z", "e": "1900-03-01T00:00:00.000Z"},
    ]
