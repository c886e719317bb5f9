"""Which codec a text file is read with: given (``--encoding``), or detected from a sample.

A wrong guess is the worst failure an importer has: "Hélène" stored as "Hélčne" is mailed,
not fixed. So detection never picks a code page on thin evidence:

1. a UTF-32/UTF-16 byte-order mark, or UTF-16 without one (NULs on every other byte);
2. UTF-8 (strict, but for a few stray bytes: see :func:`_utf8`), with or without BOM;
3. cp1252, what Western European CRM exports are, when every non-ASCII byte reads as a
   Western letter or sign in a plausible place — unless the sample holds enough text for
   charset-normalizer to make a clearly better case for another code page, and then the
   choice is the user's;
4. another code page (Cyrillic, Greek, Japanese, Chinese, ...) only on strong evidence:
   charset-normalizer's best decoding is clean, holds a few letters of one script, and no
   decoding that reads differently comes close.

Anything else stops the run before a row is sent (exit 2), showing one line decoded by each
candidate and the ``--encoding`` to pass. Every choice carries its reason, shown by
``validate`` and in the report.
"""

from __future__ import annotations

import codecs
import itertools
import re
import unicodedata
from dataclasses import dataclass

from importer.exceptions import InputError
from importer.remote import RemoteFile
from importer.sources import limits
from importer.sources.textstream import _SURROGATE, _read_raw_sample

#: The Western default and its bytes-for-bytes fallback.
WESTERN = "cp1252"

# Non-ASCII characters a Western European export holds besides letters (cp1252 signs; the
# rare ones, † ‰ ¤ ˆ ..., are left out: they are what Japanese and Chinese bytes read as).
_WESTERN_SIGNS = frozenset("\xa0\xad¡¿«»°ºª·–—‘’‚“”„…€£¥¢©®™§•²³¹½¼¾±µ¬")
# Letters outside Latin-1 that cp1252 holds and real Western text uses.
_WESTERN_EXTRA_LETTERS = frozenset("ŒœŠšŽžŸ")
# Signs that sit between two letters in Western text: "l’été", "Saint–Denis", "Ruiz·Pons";
# every other sign only at the edge of a word: "«urgent»", "Acme™", "m²".
_IN_WORD_SIGNS = frozenset("’‘·–—\xad")
# A word: letters and non-ASCII signs between ASCII separators, digits and spaces.
_WORD = re.compile(r"[^\x00-\x40\x5b-\x60\x7b-\x7f\xa0]+")
#: Valid UTF-8 with this many distinct non-ASCII characters of one script is UTF-8.
_UTF8_EVIDENCE = 3
#: Fewer non-ASCII characters than this is too little text to argue against cp1252.
_EVIDENCE_CHARS = 24
#: charset-normalizer's chaos (0 clean … 1 garbage) above which a decoding is not text.
_MAX_CHAOS = 0.1
#: A rival decoding this close to the best one (in chaos, in coherence) is a tie.
_CHAOS_MARGIN = 0.1
_COHERENCE_MARGIN = 0.2
_EAST_ASIAN_CODECS = ("cp932", "euc_jp", "gb18030", "big5", "cp949")
#: The code pages of one script, which short samples cannot tell apart.
#: (Any other script, Chinese, Japanese, Korean, Thai, ..., is checked against the East Asian
#: multi-byte code pages: they read almost any bytes as rare characters.)
_SIBLINGS: dict[str, tuple[str, ...]] = {
    # (Chinese read by a Cyrillic code page makes short words of plausible letters)
    "GREEK": ("iso8859_7", "cp1253", "mac_greek", "cp737", "cp869", *_EAST_ASIAN_CODECS),
    "CYRILLIC": ("cp1251", "koi8_r", "koi8_u", "iso8859_5", "mac_cyrillic", "cp866",
                 *_EAST_ASIAN_CODECS),
}
#: Non-ASCII bytes below which charset-normalizer's pick among siblings is not trusted.
_SIBLING_EVIDENCE = 2000
#: Letters of the chosen script needed before a non-Western code page is trusted.
_MIN_SCRIPT_LETTERS = 4


@dataclass(frozen=True, slots=True)
class EncodingChoice:
    """A codec and why: ``EncodingChoice("cp1252", "not UTF-8; ...")``."""

    encoding: str  # a Python codec name
    reason: str


class UncertainEncoding(Exception):
    """The sample does not settle the codec: ``candidates`` are the plausible ones, best first."""

    def __init__(self, why: str, candidates: tuple[str, ...]) -> None:
        super().__init__(why)
        self.why = why
        self.candidates = candidates


def detect_encoding(sample: bytes, complete: bool) -> EncodingChoice:
    """The codec of a text file from its first bytes (``complete``: the sample is the file).

    Raises :class:`UncertainEncoding` when the evidence is too thin to choose.
    """
    boms = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
            (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip
    for bom, name in boms:
        if sample.startswith(bom):
            return EncodingChoice(name, f"{name.upper()} byte-order mark")
    utf16 = _utf16_without_bom(sample)
    if utf16:
        return EncodingChoice(utf16, "UTF-16 without byte-order mark (every other byte NUL)")
    # A UTF-8 BOM is no proof: Excel writes one in front of cp1252 text too, and a rejects
    # file that went through a spreadsheet comes back exactly so.
    has_bom = sample.startswith(codecs.BOM_UTF8)
    sample = sample.removeprefix(codecs.BOM_UTF8)
    body = sample if complete else _cut_partial_utf8(sample)
    utf8 = _utf8(body, has_bom)
    if utf8 is not None:
        return utf8
    return _code_page(body if complete else body[: body.rfind(b"\n") + 1] or body)


def _code_page(sample: bytes) -> EncodingChoice:
    """Not UTF-8: cp1252 if it reads as Western text, another code page on strong evidence."""
    western = _decoded(sample, WESTERN)
    western_ok = western is not None and _reads_western(western)
    non_ascii = sum(1 for b in sample if b > 127)
    if western_ok and non_ascii < _EVIDENCE_CHARS:
        return EncodingChoice(WESTERN, "not UTF-8; every non-ASCII byte reads as a Western "
                                       "European letter (the code page of Western exports)")
    from charset_normalizer import from_bytes  # only for text that is not UTF-8 (start-up cost)

    ranked: list[tuple[str, str, float, float]] = []  # (codec, text, chaos, coherence)
    for match in from_bytes(sample):
        text = _decoded(sample, match.encoding)
        if text is not None and all(text != seen for _, seen, _, _ in ranked):
            ranked.append((codecs.lookup(match.encoding).name, text, match.chaos,
                           match.coherence))
    if western_ok:
        assert western is not None
        mine = next((r for r in ranked if r[1] == western), None)
        rival = next((r for r in ranked if r[1] != western), None)
        if (rival is None or mine is None or rival[2] > min(mine[2], _MAX_CHAOS)
                or rival[3] < mine[3] + _COHERENCE_MARGIN):
            return EncodingChoice(WESTERN, "not UTF-8; reads as Western European text, and no "
                                           "other code page reads clearly better")
        raise UncertainEncoding("it reads as Western European text, but also, and more like a "
                                "language, as another code page", (WESTERN, rival[0]))
    best = ranked[0] if ranked else None
    if best is not None and best[2] <= _MAX_CHAOS:
        script, letters = _main_script(best[1])
        close = [r for r in ranked[1:] if r[2] <= best[2] + _CHAOS_MARGIN
                 and r[3] >= best[3] - _COHERENCE_MARGIN / 2]
        if non_ascii < _SIBLING_EVIDENCE:
            # On a short sample charset-normalizer cannot tell apart the code pages of one
            # script (Japanese, Chinese and Korean read each other's bytes as rare
            # characters; koi8-r, cp1251 and mac-cyrillic each other's as other letters):
            # each one that reads the bytes as clean text of a script is a candidate.
            multi_byte = script not in _SIBLINGS
            for codec in _SIBLINGS.get(script, _EAST_ASIAN_CODECS):
                text = _decoded(sample, codec)
                if text is None or text == best[1] or any(text == r[1] for r in close):
                    continue
                if multi_byte:  # scores on little Chinese/Japanese/Korean text settle nothing
                    close.append((codec, text, 0.0, 0.0))
                    continue
                scored = from_bytes(sample, cp_isolation=[codec]).best()
                # (close in chaos or in coherence: on little text neither settles it alone)
                if scored is not None and (scored.chaos <= best[2] + _CHAOS_MARGIN
                                           or scored.coherence >= best[3] - _COHERENCE_MARGIN / 2):
                    close.append((codec, text, scored.chaos, scored.coherence))
        if (script not in ("LATIN", "MIXED", "UNKNOWN") and letters >= _MIN_SCRIPT_LETTERS
                and not close):
            return EncodingChoice(best[0], f"not UTF-8 nor Western text; reads cleanly as "
                                           f"{script.title()} text, no other code page close")
        candidates = tuple(r[0] for r in [best, *close][:3])
        if western is not None:
            candidates = (*candidates, WESTERN)[:4]
        raise UncertainEncoding("it is not UTF-8 and too little text tells its code page apart",
                                candidates)
    fallback = tuple(dict.fromkeys([*(r[0] for r in ranked[:3]), WESTERN, "latin-1"]))[:3]
    raise UncertainEncoding("it is not UTF-8, and no code page reads it as clean text", fallback)


def _reads_western(text: str) -> bool:
    """Every non-ASCII character is a Western letter or sign, placed as in Western words.

    Spanish, French, German, ... put an accented letter among plain ones ("Núñez"); Cyrillic
    or Greek read as cp1252 makes words of accented letters only ("Ïðèâåò"), Chinese and
    Japanese make short clumps of letters and signs ("Ç¿", "‘¾˜Y"). A few such words among
    many plain ones (a stray "Ñó") do not outvote the rest.
    """
    foreign = accented = 0
    for word in _WORD.findall(text):
        if word.isascii():
            continue
        if not all(ch.isascii() or _western_char(ch) for ch in word):
            return False
        accented += 1
        foreign += _foreign_word(word)
    return foreign * 10 <= accented if foreign else True


def _foreign_word(word: str) -> bool:
    run = 0
    last = len(word) - 1
    for i, ch in enumerate(word):
        run = 0 if ch.isascii() else run + 1
        if run >= 3:
            return True
        if ch.isascii() or (ch.isalpha() and ch not in "ºª"):
            continue
        edge = i in (0, last)
        between_letters = (0 < i < last and word[i - 1].isalpha() and word[i + 1].isalpha())
        if not (edge or (ch in _IN_WORD_SIGNS and between_letters)):
            return True  # a sign inside a word: "Ã£o", "“c’†"
    return len(word) >= 2 and not any(ch.isascii() for ch in word)


def _western_char(ch: str) -> bool:
    if ch in _WESTERN_SIGNS or ch in _WESTERN_EXTRA_LETTERS:
        return True
    return "\xc0" <= ch <= "\xff" and ch not in "×÷"


def _main_script(text: str, cased: bool = True) -> tuple[str, int]:
    """The script most non-ASCII letters belong to ("CYRILLIC", "CJK", ...), and how many."""
    counts: dict[str, int] = {}
    miscased = shouting = words = 0
    for word in _WORD.findall(text):
        if not word.isascii():
            words += 1
            # "оГ", "тВЕ": lower then upper case inside a word is a wrong code page's mark
            miscased += any(a.islower() and b.isupper() for a, b in itertools.pairwise(word))
            shouting += len(word) >= 2 and word.isupper()
    # ... and so is a text of mostly capitals ("ОВ;Сѕ;ЩЯКЃ": Chinese read as Cyrillic)
    if cased and (miscased * 10 > words or shouting * 3 > words):
        return "MIXED", 0
    for ch in text:
        if ch.isascii() or not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        script = name.split()[0] if name else "UNKNOWN"
        if script in ("HIRAGANA", "KATAKANA", "CJK"):  # Japanese mixes kana and kanji
            script = "CJK"
        counts[script] = counts.get(script, 0) + 1
    if not counts:
        return "UNKNOWN", 0
    script = max(counts, key=counts.__getitem__)
    # Mixed scripts (Greek and Cyrillic letters, say) are a wrong decoding's hallmark.
    if counts[script] * 10 < sum(counts.values()) * 9 and script != "CJK":
        return "MIXED", 0
    return script, counts[script]


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 text without a BOM: mostly ASCII, so a NUL on every even (BE) or odd (LE) byte."""
    head = sample[:4096]
    if len(head) < 8:
        return None
    even, odd = head[0::2], head[1::2]
    if odd.count(0) > len(odd) * 0.6 and even.count(0) < len(even) * 0.1:
        return "utf-16-le"
    if even.count(0) > len(even) * 0.6 and odd.count(0) < len(odd) * 0.1:
        return "utf-16-be"
    return None


def _cut_partial_utf8(sample: bytes) -> bytes:
    """A sample cut mid-file may end inside a multi-byte character: drop that tail."""
    return sample[: len(sample) - 3]


def _decoded(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None


def _utf8(body: bytes, has_bom: bool) -> EncodingChoice | None:
    """UTF-8 when the sample is, or is but for a few stray bytes; None when it is not.

    An export that is UTF-8 but for one row pasted from a cp1252 system must stay UTF-8
    (that row becomes a reject): guessing cp1252 would garble every other accent silently.
    But two bytes of Chinese can be valid UTF-8 by chance ("伟" in GB18030 reads "ΰ"): one or
    two characters outside Latin script are too little to call it UTF-8.
    A UTF-16 sample is valid UTF-8 too, but full of NULs (a stray NUL is a reject, later).
    """
    if body.count(b"\x00") * 10 > len(body):
        return None
    text = body.decode("utf-8", "surrogateescape")
    bad = len(_SURROGATE.findall(text))
    good = [ch for ch in text if ord(ch) > 127 and not _SURROGATE.match(ch)]
    if not bad:
        if has_bom:
            return EncodingChoice("utf-8", "UTF-8 byte-order mark and valid UTF-8")
        if not good:
            return EncodingChoice("utf-8", "ASCII text (read as UTF-8)")
        foreign = "".join(ch for ch in good if not _latin(ch))
        # (Latin beside one other script is everyday UTF-8, "Muñoz 東京"; a wrong reading
        # scatters over scripts, "ΰǿ")
        if not foreign or (len(set(good)) >= _UTF8_EVIDENCE
                           and _main_script(foreign, cased=False)[0] not in ("MIXED", "UNKNOWN")):
            return EncodingChoice("utf-8", "valid UTF-8")
        raise UncertainEncoding(f"it is valid UTF-8, but only {len(set(good))} distinct "
                                "character(s) say so", ("utf-8", *_other_readings(body)))
    if len(good) >= 2 * _UTF8_EVIDENCE and bad * 3 <= len(good):
        return EncodingChoice("utf-8", f"UTF-8 but for {bad} stray byte(s), read as rejects")
    return None


def _latin(ch: str) -> bool:
    """A Western character, or one of Latin Extended-A (ł, ő, č, ş: European names)."""
    return _western_char(ch) or "\u0100" <= ch <= "\u017f"


def _other_readings(sample: bytes) -> tuple[str, ...]:
    from charset_normalizer import from_bytes

    found: list[str] = []
    for match in from_bytes(sample):
        name = codecs.lookup(match.encoding).name
        if name != "utf-8" and name not in found:
            found.append(name)
    return tuple(found[:2]) or (WESTERN,)


def _decodes(data: bytes, encoding: str) -> bool:
    return _decoded(data, encoding) is not None


def _resolve_encoding(
    path: str, compression: str | None, given: str | None, origin: RemoteFile | None = None
) -> EncodingChoice:
    if given is not None:
        try:
            return EncodingChoice(codecs.lookup(given).name, "given with --encoding")
        except LookupError:
            raise InputError(path, f"unknown encoding {given!r}",
                             "use a name such as utf-8, cp1252, latin-1 or utf-16") from None
    sample, complete = _read_raw_sample(path, compression, limits.SAMPLE_BYTES, origin)
    try:
        return detect_encoding(sample, complete)
    except UncertainEncoding as exc:
        raise _uncertain_error(path, sample, exc) from None


def _uncertain_error(path: str, sample: bytes, exc: UncertainEncoding) -> InputError:
    """Exit 2 with one line decoded by each candidate, so the user can see which is right."""
    sample = sample.removeprefix(codecs.BOM_UTF8)
    lines = sample.split(b"\n")
    # the line where the candidates differ most: the first one with non-ASCII bytes
    line_no, raw = next(((i, ln) for i, ln in enumerate(lines) if any(b > 127 for b in ln)),
                        (0, lines[0]))
    raw = raw.rstrip(b"\r")[:160]
    width = max(len(c) for c in exc.candidates) + len("--encoding=")
    shown = [f"  {('--encoding=' + codec):<{width}}  {raw.decode(codec, 'replace')}"
             for codec in exc.candidates]
    return InputError(
        path,
        f"cannot tell the text encoding for sure: {exc.why} (candidates: "
        f"{', '.join(exc.candidates)}); nothing was sent",
        f"pass the --encoding whose line reads right; line {line_no + 1} decoded each way:\n"
        + "\n".join(shown),
    )


def _report_encoding(encoding: str) -> str:
    return "utf-8" if encoding == "utf-8-sig" else encoding
