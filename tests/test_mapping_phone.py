"""The vectorised phone fast path must agree with phonenumbers on every input."""

from __future__ import annotations

import functools
import gc

import phonenumbers
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneNumberType
from phonenumbers.phonenumberutil import _is_number_matching_desc

from importer.mapping import phone

REGIONS = ["ES", "FR", "DE", "IT", "PT", "NL", "US", "MX", "GB", "AR"]
SEPARATORS = st.sampled_from(["", " ", "-", ".", "(", ")"])


@st.composite
def phone_like(draw: st.DrawFn) -> str:
    """Realistic and near-miss phone texts: optional +CC / 00CC / national prefix, digits
    with separators, sometimes a letter or an extension."""
    prefix = draw(st.sampled_from(["", "", "+", "+34", "+33 ", "0034", "0", "+1 ", "00",
                                   "+44", "(+34) ", "34", "+49 0"]))
    body = draw(st.text(alphabet="0123456789", min_size=1, max_size=13))
    out = prefix
    for digit in body:
        out += draw(SEPARATORS) if draw(st.integers(0, 3)) == 0 else ""
        out += digit
    tail = draw(st.sampled_from(["", "", "", " ext. 12", "x", " "]))
    return out + tail


@st.composite
def real_numbers(draw: st.DrawFn) -> str:
    """Numbers shaped like real mobiles/landlines of several countries."""
    shape = draw(st.sampled_from([
        "6########", "7########", "9########", "+34 6## ### ###", "06########",
        "+33 6 ## ## ## ##", "015#########", "+49 15# #######", "3#########",
        "(212) 555-####", "+1 212 555 ####", "9#########", "+39 3## #######",
    ]))
    return "".join(str(draw(st.integers(0, 9))) if c == "#" else c for c in shape)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([None, *REGIONS]),
       st.lists(st.one_of(phone_like(), real_numbers()), max_size=40))
def test_normalize_equals_phonenumbers(region: str | None, values: list[str]) -> None:
    got = phone.normalize(pl.Series(values, dtype=pl.String), region).to_list()
    assert got == [phone.to_e164(v, region) for v in values]


@functools.cache
def _examples() -> list[tuple[int, str]]:
    """Country code and national number of phonenumbers' example numbers, every type."""
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (
            PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
            PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST, PhoneNumberType.VOIP,
            PhoneNumberType.PERSONAL_NUMBER, PhoneNumberType.PAGER, PhoneNumberType.UAN,
            PhoneNumberType.VOICEMAIL,
        ):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                nsn = phonenumbers.national_significant_number(number)
                out.append((int(number.country_code), nsn))
    return out


def _near_misses(nsn: str) -> list[str]:
    """The number, one digit shorter, one longer, and with its last digit changed."""
    return [nsn, nsn[:-1], nsn + "5", nsn[:-1] + str((int(nsn[-1]) + 1) % 10)]


def test_every_country_code_equals_phonenumbers(monkeypatch: pytest.MonkeyPatch) -> None:
    """+CC numbers of every region and their near misses: each country's patterns and
    length rules, and the choice among the regions sharing a code (even for a few)."""
    monkeypatch.setattr(phone, "_FEW", 0)
    values = [f"+{cc} {v}" for cc, nsn in _examples() for v in _near_misses(nsn)]
    got = phone.normalize(pl.Series(values), None).to_list()
    assert got == [phone.to_e164(v, None) for v in values]


def test_national_numbers_of_shared_codes_equal_phonenumbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """National numbers in the main region of a shared code, including those of the other
    regions (a Guernsey mobile with region GB, an Antigua number with region US…)."""
    monkeypatch.setattr(phone, "_FEW", 0)
    for region in ("GB", "US", "IT", "RE", "GP"):
        cc = phonenumbers.country_code_for_region(region)
        values = [v for code, nsn in _examples() if code == cc for v in _near_misses(nsn)]
        assert len(values) > 20
        got = phone.normalize(pl.Series(values), region).to_list()
        assert got == [phone.to_e164(v, region) for v in values]


def test_length_tests_are_left_out_only_when_redundant() -> None:
    """A number type's possible lengths are tested unless its pattern matches no other
    length; either way the result is phonenumbers' ``_is_number_matching_desc``."""
    assert phone._lengths(r"8\d{5}(?:\d{2,4})?") == {6, 8, 9, 10}
    assert phone._lengths(r"[1-9]\d+") is None  # no bound: the test stays
    texts = pl.Series("nsn", ["8" + "0" * n for n in range(3, 12)])
    for pattern, lengths in [(r"\d{6,8}", (6, 8)), (r"\d{6,8}", (6, 7, 8)),
                             (r"8\d{5}(?:\d{2,4})?", (6, 8, 10)), (r"8\d+", (7, 9)),
                             (r"8\d{5}(?:\d{2,4})?", ())]:
        desc = phonenumbers.PhoneNumberDesc(national_number_pattern=pattern,
                                            possible_length=lengths)
        check = phone._Check(pattern, lengths)
        nsn = pl.col("nsn")
        got = texts.to_frame().select(check.expr(nsn, nsn.str.len_bytes())).to_series()
        assert got.to_list() == [_is_number_matching_desc(t, desc) for t in texts]


def test_fast_path_covers_common_regions() -> None:
    for region in ("ES", "FR", "DE", "IT", "US", "GB"):
        assert phone._plan_for_region(region) is not None
    # not the main region of its code (CA shares +1) / a prefix transform rule: slow path only
    for region in ("CA", "AR"):
        assert phone._plan_for_region(region) is None


def test_verdicts_are_final_only_where_phonenumbers_agrees() -> None:
    """The fast tier decides plain national/+CC forms itself, and passes on the rest."""
    values = ["612345678", "12345", "+33 6 12 34 56 78", "+33 0612345678", "06 12 34 56 78",
              "+44 7911 123456", "+44 1234", "(612) 345 678", "612 345 678 ext 9"]
    assert phone.normalize(pl.Series(values), "ES").to_list() == [
        phone.to_e164(v, "ES") for v in values
    ]
    phone.to_e164.cache_clear()
    phone.normalize(pl.Series(values), "ES")
    # decided without phonenumbers: the Spanish forms (valid or not), +33 6… (France has
    # +33 to itself) and +44 1234 (a length no region of +44 allows); left to it: a
    # national prefix after +33, +44 7911 123456 (not valid in GB, but +44 is shared with
    # Jersey, Guernsey and Man, where 7911 12… is a mobile: one such number is cheaper for
    # phonenumbers than the other regions' regexes), and text with an extension
    assert phone.to_e164.cache_info().currsize == 3


def test_other_regions_of_a_shared_code_without_phonenumbers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Numbers not valid in the main region of their code (GB, US, RE, IT) but maybe in
    another one sharing it (Guernsey, Man, Jersey, Antigua, Mayotte, Vatican): settled by
    the fast path, as phonenumbers settles them — "+1 268 100 1234" is Antigua's by its
    leading digits, and not valid there. (Normally only when there are many of them.)"""
    monkeypatch.setattr(phone, "_FEW", 0)
    values = ["+44 7781 123456", "+44 7624 123456", "+44 7797 712345", "+44 7911 1234",
              "+1 268 464 1234", "+1 268 100 1234", "+262 639 01 23 45", "+262 639 01 23 4",
              "+39 06 698 12345"]
    for value in values:
        number = phonenumbers.parse(value)
        main = phonenumbers.region_code_for_country_code(number.country_code)
        assert not phonenumbers.is_valid_number_for_region(number, main)
    expected = [phone.to_e164(v, None) for v in values]
    assert expected.count(None) == 3
    phone.to_e164.cache_clear()
    assert phone.normalize(pl.Series(values), None).to_list() == expected
    assert phone.to_e164.cache_info().currsize == 0


def test_without_a_region_digits_alone_are_not_numbers() -> None:
    """With no default region, or one phonenumbers does not know, it reads only "+…" texts:
    the fast path decides the others made of digits and separators."""
    values = ["612345678", "(612) 345-678", "", "()", "0034612345678", "+34612345678",
              "612 345 678 x"]
    for region in (None, "XX", "es"):
        phone.to_e164.cache_clear()
        got = phone.normalize(pl.Series(values), region).to_list()
        assert phone.to_e164.cache_info().currsize == 1  # the text with a letter
        assert got == [phone.to_e164(v, region) for v in values]
    # a known region reads them as national numbers
    assert phone.normalize(pl.Series(values), "ES").to_list()[:2] == ["+34612345678"] * 2


def test_nulls_and_no_region() -> None:
    values = pl.Series(["+34612345678", None, "612345678"], dtype=pl.String)
    assert phone.normalize(values, None).to_list() == ["+34612345678", None, None]


def test_an_unreadable_number_leaves_no_reference_cycle() -> None:
    """phonenumbers' parse keeps a traceback in a local: unbroken, that cycle kept the
    mapping's frames (a whole batch of polars data) alive until the next collection."""


    phone.to_e164.cache_clear()
    gc.collect()
    gc.disable()
    try:
        assert phone.to_e164("+999 1234 5678", "ES") is None  # raised inside phonenumbers
        assert phone.to_e164("+1 abc", None) is None
        found = gc.collect()
    finally:
        gc.enable()
    assert found == 0
