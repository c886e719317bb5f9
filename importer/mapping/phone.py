"""Phone numbers to E.164, with the ``phonenumbers`` library as the single source of truth.

``phonenumbers.parse`` costs ~25 µs a call and phone columns are mostly unique, so a million
rows would take half a minute. Two tiers keep the hot path vectorised:

* a polars fast path over plain digit strings (spaces, dashes, dots, brackets removed), in the
  forms whose outcome can be derived from the region metadata alone — the same patterns,
  possible lengths and prefix rules ``phonenumbers.parse`` + ``is_valid_number`` apply:

  - ``+CC rest`` for a country code whose main region has simple metadata;
  - a national number of the default region, and ``IDD CC rest`` (``0034…``).

  Where ``phonenumbers`` would certainly interpret the digits the same way (no national
  prefix or international prefix it could strip, no shared country code to search), the fast
  path's verdict is final, valid or not; elsewhere only a *valid* result is final;
* everything undecided (letters, extensions, other prefixes, exotic metadata) goes through
  ``phonenumbers`` once per distinct value, cached across batches.

Tests compare the result with ``phonenumbers`` on generated inputs for many regions.
"""

from __future__ import annotations

import functools
import re

import phonenumbers
import polars as pl
from phonenumbers import PhoneMetadata, PhoneNumberFormat
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

_SEPARATORS = r"[ \-.()]"
_DIGITS = r"^[0-9]+$"
_TYPE_DESCS = (
    "premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan",
    "voicemail", "fixed_line", "mobile",
)
_CCS = {str(cc) for cc in COUNTRY_CODE_TO_REGION_CODE if cc}


@functools.lru_cache(maxsize=500_000)
def to_e164(raw: str, region: str | None) -> str | None:
    """The reference: E.164 text if ``phonenumbers`` finds a valid number, else None."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, PhoneNumberFormat.E164))


def normalize(values: pl.Series, region: str | None) -> pl.Series:
    """E.164 text for every valid number in ``values`` (String), null for the rest."""
    frame = values.rename("raw").to_frame().with_row_index("i").with_columns(
        pl.col("raw").str.replace_all(_SEPARATORS, "").alias("clean"),
        pl.lit(None, pl.String).alias("fast"),
        pl.lit(False).alias("decided"),
    )
    own = _plan_for_region(region) if region else None
    if own is not None:
        frame = own.decide_national(frame)
    frame = _decide_international(frame)
    todo = frame.filter(~pl.col("decided") & pl.col("raw").is_not_null())["raw"].unique()
    result = frame["fast"]
    if todo.len():
        table = {v: to_e164(v, region) for v in todo.to_list()}
        slow = frame["raw"].replace_strict(
            list(table), list(table.values()), default=None, return_dtype=pl.String
        )
        result = result.fill_null(slow)
    return result.rename(values.name)


class _Plan:
    """One country's metadata as polars expressions."""

    def __init__(self, meta: PhoneMetadata, single_region: bool) -> None:
        self.cc = str(meta.country_code)
        self.meta = meta
        self.single_region = single_region
        prefix = meta.national_prefix_for_parsing
        self.prefixes: tuple[str, ...] = tuple(prefix.split("|")) if prefix else ()
        idd = meta.international_prefix
        self.idd_literal = idd if idd and re.fullmatch(r"[0-9]+", idd) else None
        self.idd_pattern = f"^(?:{idd})" if idd else None

    def no_prefix(self, digits: pl.Expr) -> pl.Expr:
        """True when phonenumbers has no national prefix to try stripping from ``digits``."""
        ok = pl.lit(True)
        for prefix in self.prefixes:
            ok = ok & ~digits.str.starts_with(prefix)
        return ok

    def decide_national(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Numbers of the default region: ``+CC…`` with our code, ``IDD CC…``, national."""
        clean = pl.col("clean")
        national_ok = clean.str.contains(_DIGITS) & ~clean.str.starts_with(self.cc)
        if self.idd_pattern:
            national_ok = national_ok & ~clean.str.contains(self.idd_pattern)
        idd = (
            clean.str.extract(f"^{self.idd_literal}{self.cc}([0-9]+)$", 1)
            if self.idd_literal else pl.lit(None, pl.String)
        )
        # materialised first: each is read several times below
        frame = frame.with_columns(
            national_ok.alias("national"),
            clean.str.extract(rf"^\+{self.cc}([0-9]+)$", 1).alias("intl"),
            idd.alias("idd"),
        )
        national, intl, idd = pl.col("national"), pl.col("intl"), pl.col("idd")
        # phonenumbers reads these digits as the national number with nothing stripped, so
        # our verdict is its verdict — if no other region shares the country code
        plain_international = intl.is_not_null() & self.no_prefix(intl)
        plain_national = national & self.no_prefix(clean)
        # otherwise only a valid outcome is certain: 0034 612… (IDD) and 0612… (prefix)
        fallbacks = [pl.when(idd.is_not_null() & self.no_prefix(idd)).then(idd)]
        if len(self.prefixes) == 1:
            prefix = self.prefixes[0]
            fallbacks.append(pl.when(national & clean.str.starts_with(prefix)).then(
                clean.str.strip_prefix(prefix)
            ))
        fallback = pl.coalesce(fallbacks)
        nsn = (
            pl.when(plain_international).then(intl)
            .when(plain_national).then(clean)
            .otherwise(fallback)
        )
        exact = (plain_national | plain_international) & pl.lit(self.single_region)
        frame = frame.with_columns(nsn.alias("nsn"), exact.alias("exact"))
        return _settle(frame.drop("national", "intl", "idd"), self)

    def valid(self, nsn: pl.Expr) -> pl.Expr:
        """``_number_type_helper(nsn) != UNKNOWN`` and a possible (not local-only) length."""
        length = nsn.str.len_bytes()
        general = self.meta.general_desc
        if general is None or not general.national_number_pattern:
            return pl.lit(False)
        lengths = tuple(general.possible_length or ())
        ok = _matches(nsn, length, general.national_number_pattern, lengths)
        local = tuple(general.possible_length_local_only or ())
        if local:
            ok = ok & ~length.is_in(local)
        # one alternation per set of possible lengths: a single regex pass instead of ten
        groups: dict[tuple[int, ...], list[str]] = {}
        for name in _TYPE_DESCS:
            desc = getattr(self.meta, name)
            if desc is not None and desc.national_number_pattern:
                key = tuple(desc.possible_length or ())
                groups.setdefault(key, []).append(desc.national_number_pattern)
        kinds = [
            _matches(nsn, length, "|".join(f"(?:{p})" for p in patterns), lengths)
            for lengths, patterns in groups.items()
        ]
        return ok & pl.any_horizontal(kinds) if kinds else pl.lit(False)


def _settle(frame: pl.DataFrame, plan: _Plan) -> pl.DataFrame:
    """Record the verdicts of a plan's ``nsn``/``exact`` columns where none was made yet."""
    valid = plan.valid(pl.col("nsn")).fill_null(False)
    e164 = pl.concat_str([pl.lit("+" + plan.cc), pl.col("nsn")])
    open_ = ~pl.col("decided")
    frame = frame.with_columns(valid.alias("valid"))
    return frame.with_columns(
        pl.when(open_ & pl.col("valid")).then(e164).otherwise(pl.col("fast")).alias("fast"),
        (pl.col("decided") | pl.col("valid") | pl.col("exact").fill_null(False)).alias(
            "decided"
        ),
    ).drop("nsn", "exact", "valid")


def _decide_international(frame: pl.DataFrame) -> pl.DataFrame:
    """``+CC…`` numbers of other countries, one country code at a time (on the few rows)."""
    clean = pl.col("clean")
    todo = frame.filter(
        ~pl.col("decided") & clean.str.starts_with("+") & clean.str.slice(1).str.contains(_DIGITS)
    )
    if todo.height == 0:
        return frame
    code = clean.str.slice(1)
    cc = pl.coalesce([pl.when(code.str.slice(0, n).is_in(list(_CCS))).then(code.str.slice(0, n))
                      for n in (1, 2, 3)])
    todo = todo.with_columns(cc.alias("cc")).filter(pl.col("cc").is_not_null())
    settled: list[pl.DataFrame] = []
    for (country,), part in todo.partition_by("cc", as_dict=True).items():
        plan = _plan_for_cc(str(country))
        if plan is None:
            continue
        rest = clean.str.slice(1 + len(plan.cc))
        plain = plan.no_prefix(rest)  # else phonenumbers may strip a national prefix
        part = part.with_columns(
            pl.when(plain).then(rest).alias("nsn"),
            (plain & pl.lit(plan.single_region)).alias("exact"),
        )
        settled.append(_settle(part.drop("cc"), plan))
    if not settled:
        return frame
    done = pl.concat(settled)
    return frame.update(done.select("i", "fast", "decided"), on="i")


def _matches(nsn: pl.Expr, length: pl.Expr, pattern: str, lengths: tuple[int, ...]) -> pl.Expr:
    ok = nsn.str.contains(f"^(?:{pattern})$")
    return (length.is_in(lengths) & ok) if lengths else ok


@functools.cache
def _plan_for_region(region: str) -> _Plan | None:
    meta = PhoneMetadata.metadata_for_region(region, None)
    if meta is None or meta.country_code is None:
        return None
    regions = COUNTRY_CODE_TO_REGION_CODE.get(meta.country_code, ())
    # with a shared country code, phonenumbers picks the number's region from the list; a
    # verdict from our metadata holds only when ours is tried first and always fits
    if not regions or regions[0] != region:
        return None
    return _checked_plan(meta, single_region=len(regions) == 1)


@functools.cache
def _plan_for_cc(cc: str) -> _Plan | None:
    regions = COUNTRY_CODE_TO_REGION_CODE.get(int(cc), ())
    meta = PhoneMetadata.metadata_for_region(regions[0], None) if regions else None
    if meta is None or meta.country_code is None:
        return None
    return _checked_plan(meta, single_region=len(regions) == 1)


def _checked_plan(meta: PhoneMetadata, *, single_region: bool) -> _Plan | None:
    if meta.leading_digits is not None or meta.national_prefix_transform_rule:
        return None
    prefix = meta.national_prefix_for_parsing
    if prefix and not re.fullmatch(r"[0-9]+(\|[0-9]+)*", prefix):
        return None
    plan = _Plan(meta, single_region)
    try:  # every metadata regex must also be valid for polars' (Rust) regex engine
        pl.select(plan.valid(pl.lit("600000000"))).item()
        if plan.idd_pattern:
            pl.select(pl.lit("0").str.contains(plan.idd_pattern)).item()
    except Exception:  # polars reports an unsupported pattern with several error types
        return None
    return plan
