"""The vectorised phone fast path must agree with phonenumbers on every input."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # decided without phonenumbers: the Spanish forms (valid or not) and +33 6… (France has
    # +33 to itself); left to it: a national prefix after +33, two +44 numbers that are not
    # valid in GB (+44 is shared with Jersey, Guernsey and Man, where 7911 12… is a
    # mobile), and text with an extension
    assert phone.to_e164.cache_info().currsize == 4


def test_nulls_and_no_region() -> None:
    values = pl.Series(["+34612345678", None, "612345678"], dtype=pl.String)
    assert phone.normalize(values, None).to_list() == ["+34612345678", None, None]
