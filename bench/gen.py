"""Deterministic test data: realistic CRM contacts (CSV) and order lines (Parquet).

The same ``(rows, seed)`` always gives byte-identical files, on any machine, so benchmarks
compare like with like. Randomness is a counter-based hash of the row index (splitmix64
evaluated as polars expressions): no per-row Python, so 5M rows take seconds, and any slice
of the file can be generated on its own, which keeps memory flat.

    python -m bench.gen contacts bench/data/contacts_1m.csv --rows 1000000
    python -m bench.gen events bench/data/events_1m.parquet --rows 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

#: Rows generated per slice: bounds memory whatever ``rows`` is.
SLICE_ROWS = 250_000

CONTACT_COLUMNS = (
    "customer_id", "first_name", "last_name", "email", "phone", "country", "city",
    "birthdate", "signup_date", "loyalty_points", "vip",
)  # fmt: skip
EVENT_COLUMNS = ("order_id", "line_no", "customer_id", "sku", "amount", "currency", "ordered_at")

# (display name, ASCII form used in e-mail addresses); a few non-ASCII names on purpose.
_FIRST = (
    ("Ana", "ana"), ("José", "jose"), ("María", "maria"), ("Lucía", "lucia"), ("Javier", "javier"),
    ("Carmen", "carmen"), ("Jürgen", "jurgen"), ("Zoë", "zoe"), ("Søren", "soren"),
    ("François", "francois"), ("Emma", "emma"), ("Liam", "liam"), ("Olivia", "olivia"),
    ("Noah", "noah"), ("Sofía", "sofia"), ("Mateo", "mateo"), ("Chloé", "chloe"),
    ("Luca", "luca"), ("Giulia", "giulia"), ("João", "joao"), ("Ines", "ines"), ("David", "david"),
    ("Laura", "laura"), ("Pablo", "pablo"), ("Elena", "elena"), ("Hugo", "hugo"),
    ("Martina", "martina"), ("Álvaro", "alvaro"), ("Nuria", "nuria"), ("Iñaki", "inaki"),
    ("Björn", "bjorn"), ("Ayşe", "ayse"),
)  # fmt: skip
_LAST = (
    ("García", "garcia"), ("Fernández", "fernandez"), ("López", "lopez"), ("Martínez", "martinez"),
    ("Sánchez", "sanchez"), ("Pérez", "perez"), ("Gómez", "gomez"), ("Müller", "muller"),
    ("Schmidt", "schmidt"), ("Dubois", "dubois"), ("Rossi", "rossi"), ("Smith", "smith"),
    ("Johnson", "johnson"), ("O'Neill", "oneill"), ("Núñez", "nunez"), ("Silva", "silva"),
    ("Costa", "costa"), ("Novák", "novak"), ("Ødegaard", "odegaard"), ("Brown", "brown"),
    ("Ruiz", "ruiz"), ("Díaz", "diaz"), ("Moreno", "moreno"), ("Álvarez", "alvarez"),
    ("Romero", "romero"), ("Wilson", "wilson"), ("de la Fuente", "delafuente"),
    ("Smith, Jr.", "smithjr"),
)  # fmt: skip
_DOMAINS = ("gmail.com", "hotmail.com", "yahoo.es", "outlook.com", "icloud.com", "example.org")
# (country, phone prefix, local digits, cities)
_COUNTRIES = (
    ("ES", "+34", "6", ("Madrid", "Barcelona", "Valencia", "Sevilla", "A Coruña", "Málaga")),
    ("MX", "+52", "55", ("Ciudad de México", "Guadalajara", "Monterrey")),
    ("FR", "+33", "61", ("Paris", "Lyon", "Marseille")),
    ("DE", "+49", "151", ("Berlin", "München", "Köln")),
    ("GB", "+44", "77", ("London", "Manchester", "Edinburgh")),
    ("US", "+1", "4155", ("San Francisco", "New York", "Washington, D.C.")),
    ("IT", "+39", "33", ("Roma", "Milano", "Torino")),
    ("PT", "+351", "91", ("Lisboa", "Porto")),
)
_NATIONAL_LENGTH = {"ES": "9", "MX": "10", "FR": "9", "DE": "11", "GB": "10", "US": "10",
                    "IT": "10", "PT": "9"}
_SKUS = tuple(f"SKU-{n:05d}" for n in range(0, 5000, 7))
_CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP", "MXN")

_U64 = pl.UInt64
_MASK = (1 << 64) - 1
_EPOCH_2022 = int(dt.datetime(2022, 1, 1, tzinfo=dt.UTC).timestamp())


def _rand(index: pl.Expr, seed: int, stream: int) -> pl.Expr:
    """splitmix64 of (seed, stream, row): a uniform UInt64 that depends only on its inputs."""
    start = (seed * 0x9E3779B97F4A7C15 + stream * 0xD1B54A32D192ED03) & _MASK
    z = index.cast(_U64) * pl.lit(0x9E3779B97F4A7C15, _U64) + pl.lit(start, _U64)
    z = (z ^ (z // (1 << 30))) * pl.lit(0xBF58476D1CE4E5B9, _U64)
    z = (z ^ (z // (1 << 27))) * pl.lit(0x94D049BB133111EB, _U64)
    return z ^ (z // (1 << 31))


def _below(index: pl.Expr, seed: int, stream: int, n: int) -> pl.Expr:
    """A uniform integer in ``[0, n)`` (high bits: the low ones of splitmix are fine too)."""
    return (_rand(index, seed, stream) // (1 << 16) % n).cast(pl.Int64)


def _pick(values: tuple[str, ...], index: pl.Expr, seed: int, stream: int) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=pl.String)).gather(
        _below(index, seed, stream, len(values))
    )


def _digits(index: pl.Expr, seed: int, stream: int, width: int) -> pl.Expr:
    return _below(index, seed, stream, 10**width).cast(pl.String).str.zfill(width)


def _contacts_slice(start: int, stop: int, seed: int) -> pl.DataFrame:
    i = pl.int_range(start, stop, dtype=pl.Int64)
    frame = pl.select(i.alias("i")).with_columns(
        _below(pl.col("i"), seed, 1, len(_FIRST)).alias("fi"),
        _below(pl.col("i"), seed, 2, len(_LAST)).alias("li"),
        _below(pl.col("i"), seed, 3, len(_COUNTRIES)).alias("ci"),
        _below(pl.col("i"), seed, 4, 1000).alias("bad"),  # per-mille draw for invalid values
    )
    return frame.select(
        pl.format("C{}", (pl.col("i") + 1).cast(pl.String).str.zfill(8)).alias("customer_id"),
        _index_into([f for f, _ in _FIRST], "fi").alias("first_name"),
        _index_into([f for f, _ in _LAST], "li").alias("last_name"),
        _email(seed).alias("email"),
        _phone(seed).alias("phone"),
        _index_into([c[0] for c in _COUNTRIES], "ci").alias("country"),
        _city(seed).alias("city"),
        _birthdate(seed).alias("birthdate"),
        _signup(seed).alias("signup_date"),
        _points(seed).alias("loyalty_points"),
        _pick(("0", "0", "0", "1", "true", "no", ""), pl.col("i"), seed, 5).alias("vip"),
    )


def _index_into(values: list[str], column: str) -> pl.Expr:
    return pl.lit(pl.Series(values, dtype=pl.String)).gather(pl.col(column))


def _email(seed: int) -> pl.Expr:
    first = _index_into([a for _, a in _FIRST], "fi")
    last = _index_into([a for _, a in _LAST], "li")
    number = _below(pl.col("i"), seed, 6, 1000).cast(pl.String)
    domain = _pick(_DOMAINS, pl.col("i"), seed, 7)
    good = pl.format("{}.{}{}@{}", first, last, number, domain)
    bad = pl.col("bad")
    # ~2% invalid (missing @, trailing dot, spaces) and ~1% empty: what CRMs really hold.
    return (
        pl.when(bad < 7).then(pl.format("{}.{}{}", first, last, domain))
        .when(bad < 14).then(pl.format("{}@{}.", first, domain))
        .when(bad < 20).then(pl.format("{} {}@{}", first, last, domain))
        .when(bad < 30).then(pl.lit(None, pl.String))
        .otherwise(good)
    )  # fmt: skip


def _phone(seed: int) -> pl.Expr:
    prefix = _index_into([c[1] for c in _COUNTRIES], "ci")
    lead = _index_into([c[2] for c in _COUNTRIES], "ci")
    rest = _digits(pl.col("i"), seed, 8, 9)
    # National significant numbers have the length of a real mobile number of each country,
    # so that valid rows are valid for libphonenumber too.
    length = _index_into([_NATIONAL_LENGTH[c[0]] for c in _COUNTRIES], "ci").cast(pl.Int64)
    national = pl.format("{}{}", lead, rest).str.slice(0, length)
    style = _below(pl.col("i"), seed, 9, 4)
    # The bare national form needs the mapping's phone_region (ES) to normalise: only Spain.
    style = pl.when((style == 2) & (pl.col("ci") != 0)).then(0).otherwise(style)
    bad = pl.col("bad")
    return (
        pl.when(bad >= 980).then(_digits(pl.col("i"), seed, 10, 5))  # ~2% too short
        .when(bad >= 970).then(pl.lit(None, pl.String))
        .when(style == 0).then(pl.format("{}{}", prefix, national))
        .when(style == 1).then(pl.format("{} {}", prefix, national))
        .when(style == 2).then(national)  # national form: needs the country to normalise
        .otherwise(pl.format("({}) {}-{}", prefix, national.str.slice(0, 3), national.str.slice(3)))
    )  # fmt: skip


def _city(seed: int) -> pl.Expr:
    longest = max(len(c[3]) for c in _COUNTRIES)
    table = [c[3][k % len(c[3])] for c in _COUNTRIES for k in range(longest)]
    slot = pl.col("ci") * longest + _below(pl.col("i"), seed, 11, longest)
    return pl.lit(pl.Series(table, dtype=pl.String)).gather(slot)


def _birthdate(seed: int) -> pl.Expr:
    days = _below(pl.col("i"), seed, 12, 365 * 65)  # born 1942..2006
    date = (pl.lit(dt.date(1942, 1, 1)) + pl.duration(days=days)).dt.strftime("%Y-%m-%d")
    bad = pl.col("bad")
    return (
        pl.when(bad.is_between(500, 509)).then(pl.lit("31/02/1990"))
        .when(bad.is_between(510, 514)).then(pl.lit("unknown"))
        .when(bad.is_between(515, 559)).then(pl.lit(None, pl.String))
        .otherwise(date)
    )  # fmt: skip


def _signup(seed: int) -> pl.Expr:
    seconds = _below(pl.col("i"), seed, 13, 4 * 365 * 86_400) + _EPOCH_2022
    stamp = pl.from_epoch(seconds, time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return pl.when(pl.col("bad").is_between(600, 604)).then(pl.lit("2023-13-45")).otherwise(stamp)


def _points(seed: int) -> pl.Expr:
    points = _below(pl.col("i"), seed, 14, 20_000).cast(pl.String)
    bad = pl.col("bad")
    return (
        pl.when(bad.is_between(700, 749)).then(pl.lit(None, pl.String))
        .when(bad.is_between(750, 754)).then(pl.lit("1.234,5"))  # decimal comma, es-ES export
        .otherwise(points)
    )  # fmt: skip


def generate_contacts_csv(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Write ``rows`` contact rows (plus a header) as UTF-8 CSV; returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as handle:
        if rows == 0:
            handle.write((",".join(CONTACT_COLUMNS) + "\n").encode())
        for start in range(0, rows, SLICE_ROWS):
            part = _contacts_slice(start, min(rows, start + SLICE_ROWS), seed)
            part.write_csv(handle, include_header=start == 0)
    return out


def _events_slice(start: int, stop: int, seed: int, customers: int) -> pl.DataFrame:
    i = pl.int_range(start, stop, dtype=pl.Int64).alias("i")
    # Three lines per order, on consecutive rows, sharing customer, currency and time.
    order = pl.col("i") // 3
    seconds = _below(order, seed, 21, 3 * 365 * 86_400) + _EPOCH_2022
    cents = _below(pl.col("i"), seed, 23, 50_000) + 99
    return pl.select(i).select(
        pl.format("O{}", (order + 1).cast(pl.String).str.zfill(9)).alias("order_id"),
        (pl.col("i") % 3 + 1).cast(pl.Int32).alias("line_no"),
        pl.format("C{}", (_below(order, seed, 22, customers) + 1).cast(pl.String).str.zfill(8))
        .alias("customer_id"),
        _pick(_SKUS, pl.col("i"), seed, 24).alias("sku"),
        (cents.cast(pl.Decimal(12, 2)) / 100).cast(pl.Decimal(12, 2)).alias("amount"),
        _pick(_CURRENCIES, order, seed, 25).alias("currency"),
        pl.from_epoch(seconds * 1000 + _below(order, seed, 26, 1000), time_unit="ms")
        .dt.replace_time_zone("UTC")
        .alias("ordered_at"),
    )


def generate_events_parquet(path: str | Path, rows: int, seed: int = 0) -> Path:
    """Write ``rows`` order lines as Parquet (one row group per slice); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    customers = max(1, rows // 4)
    schema = _events_slice(0, 0, seed, customers).to_arrow().schema
    with pq.ParquetWriter(str(out), schema) as writer:
        for start in range(0, rows, SLICE_ROWS):
            part = _events_slice(start, min(rows, start + SLICE_ROWS), seed, customers)
            writer.write_table(part.to_arrow())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gen", description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=("contacts", "events"))
    parser.add_argument("path")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make = generate_contacts_csv if args.kind == "contacts" else generate_events_parquet
    out = make(args.path, args.rows, args.seed)
    print(f"{out}: {args.rows} rows, {out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
