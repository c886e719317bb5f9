"""HTTP semantics of the Ingest API: one thin client, and one function that turns a response
into per-item outcomes (:func:`interpret`). Scheduling (pacing, retries) lives in upload.py.

Status → verdict (API.md §4, §6):

    202/200  ITEMS      per-item outcomes (both success envelopes: docs and activepieces)
    422      ITEMS      every item failed validation, with its field errors
    400/413  SPLIT      the whole batch was refused: split it to isolate the offending items
    401      AUTH       fatal: token missing, malformed or revoked
    404      NOT_FOUND  fatal: unknown project/datasource, or token not allowed there
    429      RATE       wait until X-RateLimit-Reset (or Retry-After); not an attempt
    5xx      RETRY      exponential backoff; so are timeouts and dropped connections
    other    FAILED     the batch's rows become permanent rejects with the status
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from importer import __version__
from importer.config import Credentials
from importer.transport import LeanTransport

USER_AGENT = f"instasent-import/{__version__}"


class Verdict(enum.Enum):
    ITEMS = "items"
    SPLIT = "split"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    RATE = "rate"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What the API said of one item. ``retryable`` failures may succeed when sent again."""

    ok: bool
    duplicate: bool = False
    code: str = ""
    field: str | None = None
    message: str = ""
    retryable: bool = False


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The rate-limit headers of one response (None when absent)."""

    limit: int | None = None
    remaining: int | None = None
    reset: float | None = None  # Unix seconds
    retry_after: float | None = None  # seconds


@dataclass(frozen=True, slots=True)
class BatchResponse:
    verdict: Verdict
    status: int | None
    items: tuple[ItemOutcome, ...] = ()
    rate: RateInfo = RateInfo()
    request_id: str | None = None
    message: str = ""


#: The outcome of an accepted item (one shared object: counting them is cheap).
ACCEPTED = ItemOutcome(ok=True)
_DUPLICATE = ItemOutcome(ok=True, duplicate=True)


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(float(value)) if value is not None else None
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str], now: float | None) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:  # an HTTP date
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(when - now, 0.0) if now is not None else None


def parse_rate(headers: Mapping[str, str], now: float | None = None) -> RateInfo:
    reset = _int_header(headers, "x-ratelimit-reset")
    return RateInfo(
        limit=_int_header(headers, "x-ratelimit-limit"),
        remaining=_int_header(headers, "x-ratelimit-remaining"),
        reset=float(reset) if reset is not None else None,
        retry_after=_retry_after(headers, now),
    )


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return slug[:40] or "rejected"


def _item_error(errors: Any, fallback: str = "rejected by the API") -> ItemOutcome:
    """``{"_email": ["Invalid format"]}`` → code ``invalid_format``, field ``_email``."""
    if isinstance(errors, Mapping) and errors:
        parts = []
        for name, messages in errors.items():
            msgs = messages if isinstance(messages, list) else [messages]
            parts.append(f"{name}: {'; '.join(str(m) for m in msgs)}")
        field, first = next(iter(errors.items()))
        first_msg = first[0] if isinstance(first, list) and first else first
        return ItemOutcome(
            ok=False, code=_slug(str(first_msg)), field=str(field), message=" | ".join(parts)
        )
    if isinstance(errors, str) and errors:
        return ItemOutcome(ok=False, code=_slug(errors), message=errors)
    return ItemOutcome(ok=False, code="rejected", message=fallback)


_STATUS = operator.itemgetter("status")
_EVENT_ID = operator.itemgetter("_event_id")
_USER_ID = operator.itemgetter("_user_id")


def _all_accepted(items: list[Any], keys: Sequence[str], content: bytes) -> bool:
    """True when every item says ``success``, none is flagged a duplicate, and each echoes its
    own id at its own position — nearly every answer of a run, checked without a Python loop
    per item (``map`` with ``itemgetter`` runs in C). Anything else: the careful path decides.
    """
    # No item can carry a "duplicate" flag if the word is nowhere in the body (\u escapes
    # could spell it otherwise: then look item by item).
    if b"duplicate" in content or b"\\u" in content:
        return False
    try:
        if list(map(_STATUS, items)).count("success") != len(items):
            return False
        try:
            echoed = list(map(_EVENT_ID, items))
        except KeyError:
            echoed = list(map(_USER_ID, items))
    except (TypeError, KeyError):  # an item that is not an object, or without an id
        return False
    return echoed == list(keys)


def _docs_items(
    entity: Mapping[str, Any], keys: Sequence[str], content: bytes = b"\\u"
) -> tuple[ItemOutcome, ...] | None:
    items = entity.get("items")
    if not isinstance(items, list) or len(items) != len(keys):
        return None
    if _all_accepted(items, keys, content):
        return (ACCEPTED,) * len(items)
    # Item by item: some failed, some are duplicates, or the ids need a closer look.
    out: list[ItemOutcome] = []
    for item, key in zip(items, keys, strict=True):
        if type(item) is not dict:
            return None
        echoed = item.get("_event_id", item.get("_user_id"))
        if echoed is not None and echoed != key and str(echoed) != key:
            return _items_by_id(items, keys)
        if item.get("status") == "success":
            out.append(_DUPLICATE if item.get("duplicate") else ACCEPTED)
        else:
            out.append(_item_error(item.get("errors") or item.get("message")))
    return tuple(out)


def _echoed_id(item: Any) -> str | None:
    if type(item) is not dict:
        return None
    value = item.get("_event_id", item.get("_user_id"))
    return str(value) if value is not None else None


def _items_by_id(items: list[Any], keys: Sequence[str]) -> tuple[ItemOutcome, ...] | None:
    """Position and echoed id disagree: trust the ids if they identify every item once."""
    echoed = [_echoed_id(it) for it in items]
    if len(set(keys)) != len(keys) or sorted(e or "" for e in echoed) != sorted(keys):
        return None
    where = {e: item for e, item in zip(echoed, items, strict=True)}
    reordered = [dict(where[k]) for k in keys]
    return _docs_items({"items": reordered}, keys)


def _activepieces_items(body: Mapping[str, Any], n: int) -> tuple[ItemOutcome, ...] | None:
    """``{success, entitiesSuccess, errors[{position, …}], accepted[{position, item}]}``."""
    accepted = body.get("accepted")
    errors = body.get("errors")
    if not isinstance(accepted, list) or not isinstance(errors, list):
        return None
    outcomes: list[ItemOutcome | None] = [None] * n
    for entry in accepted:
        pos = entry.get("position") if isinstance(entry, Mapping) else None
        if isinstance(pos, int) and 0 <= pos < n:
            dup = isinstance(entry, Mapping) and bool(entry.get("duplicate"))
            outcomes[pos] = _DUPLICATE if dup else ACCEPTED
    for entry in errors:
        pos = entry.get("position") if isinstance(entry, Mapping) else None
        if isinstance(pos, int) and 0 <= pos < n and isinstance(entry, Mapping):
            outcomes[pos] = _item_error(entry.get("errors") or entry.get("message"))
    missing = ItemOutcome(
        ok=False, code="no_outcome", message="the API answered without this item", retryable=True
    )
    return tuple(o if o is not None else missing for o in outcomes)


def _parse_items(
    content: bytes, keys: Sequence[str], known: AnswerTemplates | None = None
) -> tuple[ItemOutcome, ...] | None:
    if known is not None and known.accepts(content, keys):
        return (ACCEPTED,) * len(keys)
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, Mapping):
        return None
    entity = body.get("entity")
    if isinstance(entity, Mapping):
        items = _docs_items(entity, keys, content)
        if known is not None and items is not None and items.count(ACCEPTED) == len(items):
            known.learn(content, keys)
        return items
    return _activepieces_items(body, len(keys))


#: Learn a batch size's template from at most this many answers; a server whose every answer
#: differs (a timestamp, a request id in the body) gets no template and costs nothing more.
_LEARN_ATTEMPTS = 3


class AnswerTemplates:
    """This server's all-accepted answers as byte templates, one per batch size.

    Reading an answer item by item (JSON parse, then status, duplicate flag and echoed id of
    each item) was ~30 µs of the event loop per 100-item answer — the largest Python cost of
    a request. Nearly every answer of a run says "all accepted" in the same bytes except for
    the ids: ``head + ids[0] + mid + ids[1] + … + tail``. The first such answer of a batch size
    is read the careful way; if it splits into that shape, the shape is proved to mean "every
    item accepted, ids echoed in order" by reading a copy with made-up ids the careful way.
    Later answers equal to the template filled with their own ids are then all accepted with
    no parse. Anything else — an error, a duplicate, another format — is read the careful
    way, so the outcome never depends on the template.

    Ids containing ``"``, ``\\`` or unprintable characters never use a template: in the
    template they must sit inside a JSON string unchanged.
    """

    def __init__(self) -> None:
        self._shapes: dict[int, tuple[str, str, str]] = {}
        self._attempts: dict[int, int] = {}
        self.hits = 0

    def accepts(self, content: bytes, keys: Sequence[str]) -> bool:
        shape = self._shapes.get(len(keys))
        if shape is None:
            return False
        head, mid, tail = shape
        if not _plain_ids(keys) or content != (head + mid.join(keys) + tail).encode():
            return False
        self.hits += 1
        return True

    def learn(self, content: bytes, keys: Sequence[str]) -> None:
        """Note the shape of an answer the careful reading found all accepted."""
        n = len(keys)
        if n == 0 or n in self._shapes or self._attempts.get(n, 0) >= _LEARN_ATTEMPTS:
            return
        self._attempts[n] = self._attempts.get(n, 0) + 1
        if not _plain_ids(keys):
            return
        shape = _split_shape(content, keys)
        if shape is None:
            return
        head, mid, tail = shape
        made_up = [f"id-{i}" for i in range(n)]
        proof = _parse_items((head + mid.join(made_up) + tail).encode(), made_up)
        if proof is not None and proof.count(ACCEPTED) == n:
            self._shapes[n] = shape


def _plain_ids(keys: Sequence[str]) -> bool:
    text = " ".join(keys)
    return text.isprintable() and '"' not in text and "\\" not in text


def _split_shape(content: bytes, keys: Sequence[str]) -> tuple[str, str, str] | None:
    """``(head, mid, tail)`` with ``content == head + mid.join(keys) + tail``, each id found
    as a whole JSON string in order; None when the text between ids is not always the same."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return None
    starts: list[int] = []
    pos = 0
    for key in keys:
        found = text.find(f'"{key}"', pos)
        if found < 0:
            return None
        starts.append(found + 1)
        pos = found + len(key) + 2
    ends = [start + len(key) for start, key in zip(starts, keys, strict=True)]
    mids = {text[end:start] for end, start in zip(ends, starts[1:], strict=False)}
    if len(mids) > 1:
        return None
    return text[: starts[0]], mids.pop() if mids else "", text[ends[-1]:]


def _message(content: bytes) -> str:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:200].decode("utf-8", "replace")
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return content[:200].decode("utf-8", "replace")


def interpret(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    keys: Sequence[str],
    *,
    now: float | None = None,
    known: AnswerTemplates | None = None,
) -> BatchResponse:
    """The one place that knows what a batch response means. ``known``: the answer templates
    learnt from this endpoint so far (a shortcut for all-accepted answers, same outcome)."""
    rate = parse_rate(headers, now)
    request_id = headers.get("x-request-id")

    def verdict(
        v: Verdict, message: str = "", items: tuple[ItemOutcome, ...] = ()
    ) -> BatchResponse:
        return BatchResponse(v, status, items, rate, request_id, message)

    if status in (200, 201, 202, 422):
        items = _parse_items(content, keys, known)
        if items is None:
            return verdict(Verdict.RETRY, f"unreadable {status} response body")
        return verdict(Verdict.ITEMS, items=items)
    if status in (400, 413):
        return verdict(Verdict.SPLIT, _message(content))
    if status == 401:
        return verdict(Verdict.AUTH, _message(content))
    if status == 404:
        return verdict(Verdict.NOT_FOUND, _message(content))
    if status == 429:
        return verdict(Verdict.RATE)
    if status >= 500 or status == 408:
        return verdict(Verdict.RETRY, f"HTTP {status}")
    return verdict(Verdict.FAILED, f"HTTP {status}: {_message(content)}")


@dataclass(frozen=True, slots=True)
class RawResponse:
    """A batch's answer: what :func:`interpret` needs (header names lower-case)."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes


class ApiClient:
    """One keep-alive ``httpx.AsyncClient`` bound to a datasource. The token is only a header."""

    def __init__(
        self,
        credentials: Credentials,
        *,
        timeout: float = 30.0,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self._urls: dict[str, httpx.URL] = {}
        headers = {
            "Authorization": f"Bearer {credentials.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            # Small JSON answers: compressing them costs more than it saves.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
        }
        limits = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._lean = LeanTransport() if transport is None else None
        self._raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self._timeouts = (limits.connect, limits.read, limits.write)
        self._http = httpx.AsyncClient(
            base_url=credentials.base_url,
            headers=headers,
            timeout=limits,
            transport=self._lean or transport,
        )

    async def get_stream(self) -> httpx.Response:
        return await self._http.get("/stream")

    async def post_items(self, target: str, body: bytes) -> RawResponse:
        """POST one batch. On the default transport this skips httpx's Request/Response
        objects (see LeanTransport.post); through any other transport (a test's ASGI app),
        it is an ordinary request of the same client."""
        url = self._urls.get(target)
        if url is None:  # parsed once: httpx re-parses a relative URL on every request
            url = self._urls[target] = httpx.URL(f"{self.credentials.base_url}/stream/{target}")
        if self._lean is not None:
            status, raw, content = await self._lean.post(
                url, self._raw_headers, body, self._timeouts
            )
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}
            return RawResponse(status, headers, content)
        response = await self._http.post(url, content=body)
        return RawResponse(response.status_code, response.headers, response.content)

    async def delete_contact(self, user_id: str) -> httpx.Response:
        return await self._http.delete(f"/stream/contacts/{contact_path_segment(user_id)}")

    async def get(self, path: str) -> httpx.Response:
        return await self._http.get(path)

    async def aclose(self) -> None:
        await self._http.aclose()


def contact_path_segment(user_id: str) -> str:
    """``user_id`` as one URL path segment: every reserved byte percent-encoded.

    The ids ``.`` and ``..`` need more: httpx (like any RFC 3986 client) resolves such dot
    segments, so ``DELETE /stream/contacts/..`` would go out as ``DELETE /stream``. Encoded as
    ``%2E`` they stay an id.
    """
    if user_id in (".", ".."):
        return "%2E" * len(user_id)
    return quote(user_id, safe="")


def auth_message(status: int, credentials: Credentials) -> str:
    """Say which of the two fatal refusals it was, and what to check (never the token)."""
    if status == 401:
        return (
            "the API refused the token (401): it is missing, malformed or revoked — "
            "check INSTASENT_TOKEN (or --token-file); tokens are shown once in the dashboard"
        )
    return (
        f"project {credentials.project!r} / datasource {credentials.datasource!r} not found "
        "for this token (404) — check INSTASENT_PROJECT and INSTASENT_DATASOURCE"
    )
