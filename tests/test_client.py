"""The one function that gives an HTTP response its meaning (client.interpret)."""

from __future__ import annotations

import math
import random
from email.utils import formatdate

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from importer.client import (
    CLOCK_SKEW_TOLERANCE,
    DATE_LAG,
    ServerClock,
    Verdict,
    _docs_items,
    interpret,
    parse_rate,
)

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


def test_rate_limit_reset_is_read_robustly() -> None:
    """X-RateLimit-Reset: a Unix time as is when the clocks agree; read against the answer's
    Date when this machine's clock is off by more than CLOCK_SKEW_TOLERANCE; a small value
    is seconds from now; garbage is ignored and said once (the problem is reported)."""
    now = 1_700_000_000.0
    date = "Tue, 14 Nov 2023 22:13:20 GMT"  # == 1_700_000_000
    agreed = parse_rate({"x-ratelimit-reset": "1700000042", "date": date}, now=now + 1)
    assert agreed.reset == 1_700_000_042.0 and agreed.problem == ""
    # our clock is 5 minutes behind the server's: the window ends 42 s after the answer
    behind = parse_rate({"x-ratelimit-reset": "1700000042", "date": date}, now=now - 300)
    assert behind.reset == now - 300 + 42
    # and 2 hours ahead: same
    ahead = parse_rate({"x-ratelimit-reset": "1700000042", "date": date}, now=now + 7200)
    assert ahead.reset == now + 7200 + 42
    # a Date that lags ours by less than CLOCK_SKEW_TOLERANCE + DATE_LAG is the header's own
    # lag (cut to the second, refreshed once a second, in transit), not a skew: reading the
    # reset against it would put the window's end seconds late
    for lag in (0.5, 2.05, CLOCK_SKEW_TOLERANCE + DATE_LAG - 0.01):
        lagging = parse_rate({"x-ratelimit-reset": "1700000042", "date": date}, now=now + lag)
        assert lagging.reset == 1_700_000_042.0
    beyond = parse_rate({"x-ratelimit-reset": "1700000042", "date": date},
                        now=now + CLOCK_SKEW_TOLERANCE + DATE_LAG + 0.5)
    assert beyond.reset == now + CLOCK_SKEW_TOLERANCE + DATE_LAG + 0.5 + 42
    # while a Date ahead of ours by more than the tolerance is a skew (our clock behind)
    early = parse_rate({"x-ratelimit-reset": "1700000042", "date": date},
                       now=now - CLOCK_SKEW_TOLERANCE - 0.5)
    assert early.reset == now - CLOCK_SKEW_TOLERANCE - 0.5 + 42
    # no Date to compare with: the header is taken as it is
    assert parse_rate({"x-ratelimit-reset": "1700000042"}, now=now - 300).reset == 1700000042
    # seconds from now (below 10^9), as some APIs send it
    assert parse_rate({"x-ratelimit-reset": "37"}, now=now).reset == now + 37
    assert parse_rate({"x-ratelimit-reset": "0.5"}, now=now).reset == now + 0.5
    for garbage in ("soon", "", "-5", "nan", "inf", "1e400"):
        rate = parse_rate({"x-ratelimit-reset": garbage, "x-ratelimit-remaining": "9"}, now=now)
        assert rate.reset is None and rate.remaining == 9
        assert rate.problem.startswith("ignored an unreadable X-RateLimit-Reset header")
    # an unreadable Date is no reason to distrust the reset
    odd = parse_rate({"x-ratelimit-reset": "1700000042", "date": "yesterday"}, now=now - 300)
    assert odd.reset == 1_700_000_042.0


def _lagging_answers(skew: float, n: int, seed: int) -> list[tuple[dict[str, str], float]]:
    """``n`` answers 0.25 s apart of a window ending at server time 1_700_000_060, read on a
    clock ``skew`` seconds ahead of the server's; each ``Date`` cut to the second and 0-2 s
    late, as uvicorn's are under load."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        server_now = 1_700_000_000.0 + i * 0.25
        date = formatdate(math.floor(server_now - rng.uniform(0, 2)), usegmt=True)
        out.append(({"x-ratelimit-reset": "1700000060", "date": date}, server_now + skew))
    return out


def test_a_skewed_clock_reads_one_steady_reset_never_early() -> None:
    """Read against each answer's own Date, the window's end moved by up to ~3 s from answer
    to answer (more than upload.RESET_SLACK: the pacer saw new windows); against the
    connection's ServerClock it settles within a second of the truth, and is never early."""
    for skew in (30.0, -30.0, 7200.0):
        answers = _lagging_answers(skew, 200, seed=int(skew))
        truth = 1_700_000_060 + skew
        alone = [parse_rate(h, now=now).reset or 0.0 for h, now in answers]
        assert max(alone) - min(alone) > 2.0  # the jitter this fixes
        server = ServerClock()
        steady = [parse_rate(h, now=now, server=server).reset or 0.0 for h, now in answers]
        assert all(r >= truth for r in steady)
        assert max(steady[8:]) - min(steady[8:]) < 1.0
        assert steady[-1] - truth < 1.0


def test_the_server_clock_forgets_a_clock_set_since() -> None:
    """Our clock set 30 s forward mid-run: the offset learnt before stays the largest until
    it is a WINDOW old (by our clock), then the new one is used; set back, at once."""
    server = ServerClock()
    for i in range(100):
        assert server.offset(1_000.0 + i, 1_000.0 + i) == 0.0
    assert server.offset(1_100.0, 1_130.0) == 0.0  # the answer at 1_099 is 31 s old
    assert ServerClock.WINDOW == 60.0
    assert server.offset(1_131.0, 1_161.0) == -30.0  # and now 62 s old: forgotten
    assert server.offset(1_300.0, 1_300.0) == 0.0  # set right again


def test_a_503_with_retry_after_keeps_it() -> None:
    answer = interpret(503, {"retry-after": "7"}, b"", KEYS)
    assert answer.verdict is Verdict.RETRY and answer.rate.retry_after == 7.0
