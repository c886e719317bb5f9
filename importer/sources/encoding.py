"""Which codec a text file is read with: given (``--encoding``), or detected from a sample."""

from __future__ import annotations

import codecs

from importer.exceptions import InputError
from importer.sources import limits
from importer.sources.textstream import _SURROGATE, _read_raw_sample


def detect_encoding(sample: bytes, complete: bool) -> str:
    """BOM, else UTF-8 if the sample is valid UTF-8, else charset-normalizer's best guess.

    On the short samples of a CSV, charset-normalizer often ranks many code pages alike
    (cp1250, even cp1006); when cp1252 fits as well as its best guess, cp1252 wins: that is
    what Spanish and Western European CRM exports are. Cyrillic, Greek, ... still win when
    they fit better. Anyone else passes ``--encoding``; the choice is reported either way.
    """
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
    for bom, name in boms:
        if sample.startswith(bom):
            return name
    # A UTF-8 BOM is no proof: Excel writes one in front of cp1252 text too, and a rejects
    # file that went through a spreadsheet comes back exactly so.
    sample = sample.removeprefix(codecs.BOM_UTF8)
    if _mostly_utf8(sample if complete else sample[: len(sample) - 3]):
        return "utf-8"
    from charset_normalizer import from_bytes  # only for text that is not UTF-8 (start-up cost)

    matches = from_bytes(sample)
    best = matches.best()
    if best is None:
        return "cp1252" if _decodes(sample, "cp1252") else "latin-1"
    if _decodes(sample, "cp1252"):
        if "cp1252" in best.could_be_from_charset:  # decodes the sample identically
            return "cp1252"
        # On a short sample every code page scores alike: prefer the likeliest for a CRM.
        western = next((m for m in matches if "cp1252" in m.could_be_from_charset), None)
        if western and western.chaos <= best.chaos and western.coherence >= best.coherence:
            return "cp1252"
    return codecs.lookup(best.encoding).name


def _mostly_utf8(body: bytes) -> bool:
    """Valid UTF-8, or UTF-8 with fewer bad bytes than good non-ASCII characters.

    An export that is UTF-8 but for one row pasted from a cp1252 system must stay UTF-8
    (that row becomes a reject): guessing cp1252 would garble every other accent silently.
    A UTF-16 sample is valid UTF-8 too, but full of NULs.
    """
    if b"\x00" in body:
        return False
    text = body.decode("utf-8", "surrogateescape")
    bad = len(_SURROGATE.findall(text))
    return bad == 0 or bad <= sum(1 for ch in text if ord(ch) > 127) - bad


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


def _resolve_encoding(path: str, compression: str | None, given: str | None) -> str:
    if given is not None:
        try:
            return codecs.lookup(given).name
        except LookupError:
            raise InputError(path, f"unknown encoding {given!r}",
                             "use a name such as utf-8, cp1252, latin-1 or utf-16") from None
    sample, complete = _read_raw_sample(path, compression, limits.SAMPLE_BYTES)
    return detect_encoding(sample, complete)


def _report_encoding(encoding: str) -> str:
    return "utf-8" if encoding == "utf-8-sig" else encoding
