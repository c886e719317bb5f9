"""The one function that gives an HTTP response its meaning (client.interpret)."""

from __future__ import annotations

import json

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.client import AnswerTemplates, Verdict, _docs_items, interpret, parse_rate

KEYS = ["U1", "U2", "U3"]


def _docs(items: list[dict[str, object]]) -> bytes:
    ok = sum(1 for i in items if i["status"] == "success")
    return orjson.dumps({"entity": {"successful": ok, "failed": len(items) - ok, "items": items}})


def test_docs_envelope_maps_items_by_position() -> None:
    body = _docs([
        {"status": "success", "_user_id": "U1"},
        {"status": "success", "_user_id": "U2", "duplicate": True},
        {"status": "error", "_user_id": "U3", "errors": {"_email": ["Invalid format"]}},
    ])
    answer = interpret(202, {"x-request-id": "r-1"}, body, KEYS)
    assert answer.verdict is Verdict.ITEMS
    assert [o.ok for o in answer.items] == [True, True, False]
    assert answer.items[1].duplicate
    bad = answer.items[2]
    assert (bad.code, bad.field, bad.retryable) == ("invalid_format", "_email", False)
    assert bad.message == "_email: Invalid format"
    assert answer.request_id == "r-1"


def test_echoed_ids_win_when_the_order_disagrees() -> None:
    body = _docs([
        {"status": "error", "_user_id": "U3", "errors": {"_email": ["bad"]}},
        {"status": "success", "_user_id": "U1"},
        {"status": "success", "_user_id": "U2"},
    ])
    answer = interpret(202, {}, body, KEYS)
    assert [o.ok for o in answer.items] == [True, True, False]


def test_an_answer_that_cannot_be_matched_is_retried_not_guessed() -> None:
    body = _docs([{"status": "success", "_user_id": "U1"}])  # 1 outcome for 3 items
    assert interpret(202, {}, body, KEYS).verdict is Verdict.RETRY
    assert interpret(202, {}, b"<html>", KEYS).verdict is Verdict.RETRY


def test_422_is_items_all_failed() -> None:
    body = _docs([
        {"status": "error", "_user_id": k, "errors": {"_user_id": ["Required"]}} for k in KEYS
    ])
    answer = interpret(422, {}, body, KEYS)
    assert answer.verdict is Verdict.ITEMS
    assert not any(o.ok for o in answer.items)
    assert {o.code for o in answer.items} == {"required"}


def test_activepieces_envelope() -> None:
    body = orjson.dumps({
        "success": True, "entitiesSuccess": 2, "streamId": "s",
        "accepted": [{"position": 0, "item": {}}, {"position": 2, "item": {}}],
        "errors": [{"position": 1, "errors": {"_phone_mobile": ["Not international"]}}],
    })
    answer = interpret(202, {}, body, KEYS)
    assert [o.ok for o in answer.items] == [True, False, True]
    assert answer.items[1].field == "_phone_mobile"


def test_activepieces_item_without_outcome_is_retryable() -> None:
    body = orjson.dumps({"success": True, "accepted": [{"position": 0}], "errors": []})
    answer = interpret(202, {}, body, KEYS)
    assert answer.items[0].ok
    assert all(o.retryable and not o.ok for o in answer.items[1:])


def test_status_verdicts() -> None:
    assert interpret(400, {}, b'{"message": "Body should be an array"}', KEYS).verdict is (
        Verdict.SPLIT
    )
    assert interpret(400, {}, b'{"message": "x"}', KEYS).message == "x"
    assert interpret(401, {}, b"{}", KEYS).verdict is Verdict.AUTH
    assert interpret(404, {}, b"{}", KEYS).verdict is Verdict.NOT_FOUND
    assert interpret(429, {}, b"", KEYS).verdict is Verdict.RATE
    for status in (500, 502, 503, 504):
        assert interpret(status, {}, b"", KEYS).verdict is Verdict.RETRY
    assert interpret(403, {}, b"{}", KEYS).verdict is Verdict.FAILED


def test_rate_headers_and_retry_after() -> None:
    rate = parse_rate(
        {
            "x-ratelimit-limit": "600",
            "x-ratelimit-remaining": "12",
            "x-ratelimit-reset": "1700000060",
            "retry-after": "3",
        }
    )
    assert (rate.limit, rate.remaining, rate.reset) == (600, 12, 1700000060.0)
    assert rate.retry_after == 3.0
    http_date = parse_rate({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0)
    assert http_date.retry_after == 10.0
    assert parse_rate({"x-ratelimit-remaining": "lots"}).remaining is None


_ITEM = st.fixed_dictionaries(
    {"status": st.sampled_from(["success", "success", "success", "error"])},
    optional={"duplicate": st.booleans(), "errors": st.just({"_email": ["Invalid format"]})},
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_ITEM, st.sampled_from(["own", "own", "own", "none", "other"])),
                min_size=1, max_size=12),
       st.sampled_from(["_user_id", "_event_id"]))
def test_the_all_accepted_shortcut_agrees_with_the_item_by_item_reading(
    drawn: list[tuple[dict[str, object], str]], id_field: str
) -> None:
    keys = [f"K{i}" for i in range(len(drawn))]
    items = []
    for (item, echo), key in zip(drawn, keys, strict=True):
        item = dict(item)
        if echo != "none":
            item[id_field] = key if echo == "own" else "somebody-else"
        items.append(item)
    content = orjson.dumps({"entity": {"items": items}})
    fast = interpret(202, {}, content, keys)
    careful = _docs_items({"items": items}, keys)  # no body given: never the shortcut
    assert fast.items == careful if careful is not None else fast.verdict is Verdict.RETRY


# ---- answer templates: a shortcut that must never change an outcome


def _answer(items: list[dict[str, object]], style: str) -> bytes:
    """An answer as servers might write it: compact, spaced, or with extra members."""
    ok = sum(1 for i in items if i.get("status") == "success")
    entity = {"successful": ok, "failed": len(items) - ok, "items": items}
    if style == "compact":
        return orjson.dumps({"entity": entity})
    if style == "spaced":
        return json.dumps({"entity": entity}, ensure_ascii=False).encode()
    return orjson.dumps({"entity": {**entity, "note": "x"}, "meta": {"n": len(items)}})


def _accepted(keys: list[str], id_field: str = "_user_id") -> list[dict[str, object]]:
    return [{"status": "success", id_field: k} for k in keys]


_KEY = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
               max_size=8)


_HITS: list[int] = []


@settings(max_examples=300, deadline=None)
@given(st.lists(_KEY, min_size=1, max_size=6), st.sampled_from(["compact", "spaced", "extra"]),
       st.data())
def test_learnt_templates_never_change_an_outcome(
    first: list[str], style: str, data: st.DataObject
) -> None:
    """Learn from one all-accepted answer, then read other answers with and without the
    templates: ids with quotes, backslashes, control or non-ASCII characters, errors,
    duplicates, foreign ids and other formats all read the same."""
    known = AnswerTemplates()
    interpret(202, {}, _answer(_accepted(first), style), first, known=known)
    n = len(first)
    for _ in range(data.draw(st.integers(1, 5))):
        size = data.draw(st.sampled_from([n, n, n + 1]))  # mostly the learnt batch size
        keys = data.draw(st.lists(_KEY, min_size=size, max_size=size))
        later_style = data.draw(st.sampled_from([style, style, "compact", "spaced", "extra"]))
        if data.draw(st.booleans()):  # the common case: every item accepted, ids echoed
            items = _accepted(keys)
        else:
            drawn = data.draw(st.lists(
                st.tuples(_ITEM, st.sampled_from(["own", "own", "other"])),
                min_size=size, max_size=size))
            items = [{**item, "_user_id": key if echo == "own" else "other"}
                     for (item, echo), key in zip(drawn, keys, strict=True)]
        content = _answer(items, later_style)
        assert interpret(202, {}, content, keys, known=known) == interpret(202, {}, content, keys)
    _HITS.append(known.hits)


def test_the_property_above_used_templates() -> None:
    """The property must exercise the shortcut, not only the careful reading."""
    if not _HITS:
        test_learnt_templates_never_change_an_outcome()
    assert sum(_HITS) > 20


def test_a_learnt_template_reads_later_answers_without_parsing() -> None:
    known = AnswerTemplates()
    first = [f"C{i:08d}" for i in range(100)]
    interpret(202, {}, _answer(_accepted(first), "compact"), first, known=known)
    assert known.hits == 0  # the first answer was read the careful way
    later = [f"C{i:08d}" for i in range(100, 200)]
    answer = interpret(202, {}, _answer(_accepted(later), "compact"), later, known=known)
    assert answer.verdict is Verdict.ITEMS and answer.items == interpret(
        202, {}, _answer(_accepted(later), "compact"), later).items
    assert known.hits == 1
    # an id that could not sit in a JSON string as is: the careful way
    odd = [*later[:99], 'quote"d']
    interpret(202, {}, _answer(_accepted(odd), "compact"), odd, known=known)
    # a duplicate, a failure, another batch size: all read the careful way
    dup = _accepted(later)
    dup[5]["duplicate"] = True
    assert interpret(202, {}, _answer(dup, "compact"), later, known=known).items[5].duplicate
    bad = _accepted(later)
    bad[7] = {"status": "error", "_user_id": later[7], "errors": {"_email": ["Invalid format"]}}
    assert not interpret(202, {}, _answer(bad, "compact"), later, known=known).items[7].ok
    assert known.hits == 1


def test_answers_that_differ_beyond_their_ids_get_no_template() -> None:
    """A server that puts a counter in every answer: three tries, then no more learning."""
    known = AnswerTemplates()
    keys = ["a", "b"]
    for n in range(6):
        content = orjson.dumps({"entity": {"items": _accepted(keys), "seq": n}})
        assert interpret(202, {}, content, keys, known=known).items == interpret(
            202, {}, content, keys).items
    assert known.hits == 0


def test_an_id_found_in_the_wrong_place_does_not_make_a_template() -> None:
    """Ids equal to "success" are found in a status slot and an id slot of the same item: the
    made-up ids prove that shape wrong, so no template is kept, and an answer that would fit
    it is read the careful way."""
    known = AnswerTemplates()
    keys = ["success", "success"]
    interpret(202, {}, _answer(_accepted(keys), "compact"), keys, known=known)
    fits = orjson.dumps({"entity": {"successful": 2, "failed": 0, "items": [
        {"status": "x", "_user_id": "y"}, {"status": "success", "_user_id": "success"}]}})
    careful = interpret(202, {}, fits, ["x", "y"])
    assert careful.verdict is Verdict.RETRY  # the ids do not match: not accepted
    assert interpret(202, {}, fits, ["x", "y"], known=known) == careful
    assert known.hits == 0


def test_ids_that_would_change_the_json_never_use_a_template() -> None:
    """Filled in raw, these ids would turn the template into other JSON (a duplicate flag,
    an invalid document): answers spelling exactly that are read the careful way."""
    known = AnswerTemplates()
    interpret(202, {}, _answer(_accepted(["a"]), "compact"), ["a"], known=known)
    for key in ['k","duplicate":true,"z":"w', "line\nbreak", 'back\\"slash']:
        raw = _answer(_accepted(["KEY"]), "compact").replace(b"KEY", key.encode())
        assert interpret(202, {}, raw, [key], known=known) == interpret(202, {}, raw, [key])
    assert known.hits == 0
