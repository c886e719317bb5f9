"""The token never leaves the process: one redaction applied wherever text goes out.

A server or proxy in front of the API may answer with an error page that reflects the request
headers; that text becomes messages, report fields and rejects cells. So every such boundary
(the rejects writer, the report, the CLI's error line, messages built from server bodies)
passes its text through :func:`redact`, which removes

- every token in use (:func:`hidden` wraps each library call that uses credentials; the CLI
  passes the command's token explicitly), including a token cut short at the end of a
  truncated excerpt;
- any ``Authorization`` header value and any ``Bearer …`` credential, whoever's they are.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections import Counter
from collections.abc import Iterable, Iterator

import polars as pl

MASK = "***"

#: A cut-off excerpt may end inside a token; a tail this long that starts a token is masked.
_MIN_TAIL = 8

_lock = threading.Lock()
_secrets: Counter[str] = Counter()

# `Authorization: Bearer x`, `"authorization": "x"`, `authorization=x` (header dumps, JSON,
# query-string style): the whole value, up to the end of the line or the quoted string.
_AUTH_HEADER = r"(?i)(authorization\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\r\n\"'\\]*"
_BEARER = r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/=]+"
_AUTH_RE = re.compile(_AUTH_HEADER)
_BEARER_RE = re.compile(_BEARER)


#: Shorter strings are not real tokens (Instasent's are far longer); masking them would
#: garble every message that happens to contain them (a test's token "t" would mask each t).
MIN_SECRET = 8


@contextlib.contextmanager
def hidden(*secrets: str) -> Iterator[None]:
    """Mask these secrets (the token) everywhere in this process while the block runs.

    Counted, so runs with different tokens can overlap in one process (threads, an
    orchestrator's worker) and each token stays masked until its last user is done.
    """
    kept = [s for s in secrets if len(s) >= MIN_SECRET]
    with _lock:
        _secrets.update(kept)
    try:
        yield
    finally:
        with _lock:
            _secrets.subtract(kept)
            for secret in kept:
                if _secrets.get(secret, 0) <= 0:
                    _secrets.pop(secret, None)


def _known() -> tuple[str, ...]:
    with _lock:
        # Longest first, so a token containing another registered one is masked whole.
        return tuple(sorted(_secrets, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without tokens, ``Authorization`` values or ``Bearer`` credentials."""
    if not text:
        return text
    known = (*_known(), *(s for s in secrets if len(s) >= MIN_SECRET))
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    text = _AUTH_RE.sub(lambda m: m.group(1) + MASK, text)
    text = _BEARER_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _cut_tail(text, known)


def _cut_tail(text: str, secrets: Iterable[str]) -> str:
    """An excerpt cut at N characters may end with the first characters of a token."""
    for secret in secrets:
        for n in range(min(len(secret) - 1, len(text)), _MIN_TAIL - 1, -1):
            if text.endswith(secret[:n]):
                return text[:-n] + MASK
    return text


def redact_expr(column: str) -> pl.Expr:
    """:func:`redact` as a polars expression over a text column (vectorised, for frames)."""
    expr = pl.col(column)
    for secret in _known():
        expr = expr.str.replace_all(secret, MASK, literal=True)
    # polars' regex engine (Rust's) has no look-behind either: same patterns, `$1` for group 1.
    expr = expr.str.replace_all(_AUTH_HEADER, "${1}" + MASK)
    expr = expr.str.replace_all(_BEARER, "${1} " + MASK)
    return expr
