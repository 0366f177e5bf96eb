from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from scipy.stats import binomtest

from app.voc import enrich, sentiment

UNTIL = datetime(2026, 6, 1, tzinfo=UTC)


def _answer(
    n: int, kind: str, value: Any, account: str, at: datetime, text: str = ""
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"{kind}-{n}",
        "type": kind,
        "value": value,
        "occurred_at": at.isoformat(),
        "account_id": account,
    }
    return event | ({"text": text} if text else {})


async def _send(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.status_code == 200 and response.json()["accepted"] == len(events), response.text


async def test_nps_csat_and_ces_are_exact_with_their_intervals_by_month_and_segment(
    client: httpx.AsyncClient,
) -> None:
    for account, segment in (("a1", "smb"), ("a2", "enterprise")):
        assert (await client.put(f"/v1/accounts/{account}", json={"segment": segment})).is_success
    may, april = UNTIL - timedelta(days=10), UNTIL - timedelta(days=40)
    nps: list[tuple[float, str, datetime]] = [
        (10, "a1", may),
        (9, "a1", may),
        (8, "a2", may),
        (7, "a2", april),
        (6, "a2", april),
    ]
    nps += [(0, "a1", april), (11, "a1", may), (7.5, "a2", may)]  # the last two: not on the scale
    events = [_answer(n, "nps_answered", v, a, t) for n, (v, a, t) in enumerate(nps)]
    events += [
        _answer(n, "csat_answered", v, "a1", may) for n, v in enumerate([5, 4, 3, 1, 5, 4, 4])
    ]
    events += [_answer(n, "ces_answered", v, "a2", may) for n, v in enumerate([7, 5, 4, 2])]
    events.append(_answer(99, "nps_answered", 0, "a1", UNTIL - timedelta(days=400)))  # before
    await _send(client, events)

    since = UNTIL - timedelta(days=90)
    response = await client.get(
        "/v1/voc/summary", params={"since": since.isoformat(), "until": UNTIL.isoformat()}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    overall = body["overall"]
    got = overall["nps"]
    assert (got["responses"], got["promoters"], got["passives"], got["detractors"]) == (6, 2, 2, 2)
    assert got["ignored"] == 2 and got["nps"] == 0.0
    # A difference of two shares of one trinomial sample: var = (p + d - (p - d)^2) / n.
    half = 100 * 1.959963984540054 * math.sqrt((2 / 6 + 2 / 6) / 6)
    assert got["interval"] == pytest.approx([-half, half])
    csat = overall["csat"]
    assert (csat["responses"], csat["satisfied"]) == (7, 5)
    assert csat["csat"] == pytest.approx(100 * 5 / 7)
    wilson = binomtest(5, 7).proportion_ci(method="wilson")
    assert csat["interval"] == pytest.approx([100 * wilson.low, 100 * wilson.high])
    ces = overall["ces"]
    assert (ces["responses"], ces["mean"], ces["easy"], ces["easy_share"]) == (4, 4.5, 2, 50.0)
    sd = math.sqrt(sum((v - 4.5) ** 2 for v in (7, 5, 4, 2)) / 3)
    low, high = 4.5 - 1.959963984540054 * sd / 2, 4.5 + 1.959963984540054 * sd / 2
    assert ces["mean_interval"] == pytest.approx([low, high])

    months = {m["month"]: m["nps"] for m in body["by_month"]}
    assert list(months) == ["2026-04", "2026-05"]
    assert (months["2026-04"]["responses"], months["2026-04"]["nps"]) == pytest.approx(
        (3, -200 / 3)
    )
    assert (months["2026-05"]["responses"], months["2026-05"]["nps"]) == pytest.approx((3, 200 / 3))
    segments = {s["segment"]: s for s in body["by_segment"]}
    assert segments["smb"]["nps"]["responses"] == 3 and segments["smb"]["csat"]["responses"] == 7
    assert segments["enterprise"]["nps"]["detractors"] == 1
    assert segments["enterprise"]["ces"]["responses"] == 4
    # The period of the same length before: only the answer 400 days back is older still.
    assert body["previous"]["nps"]["responses"] == 0 and body["previous"]["nps"]["nps"] is None

    only = await client.get(
        "/v1/voc/summary",
        params={"since": since.isoformat(), "until": UNTIL.isoformat(), "segment": "enterprise"},
    )
    assert only.json()["overall"]["nps"]["responses"] == 3
    assert only.json()["overall"]["csat"]["responses"] == 0


async def test_an_accounts_voc_has_its_scores_by_month_and_its_latest_verbatims(
    client: httpx.AsyncClient,
) -> None:
    events = [
        _answer(1, "nps_answered", 3, "acme", UNTIL - timedelta(days=35), "Export keeps failing"),
        _answer(2, "nps_answered", 9, "acme", UNTIL - timedelta(days=5), "Much better now"),
        _answer(3, "nps_answered", 10, "other", UNTIL - timedelta(days=5), "Love it"),
        {
            "event_id": "t-1",
            "type": "ticket_opened",
            "occurred_at": (UNTIL - timedelta(days=1)).isoformat(),
            "account_id": "acme",
            "text": "Support never answered my ticket",
        },
        {
            "event_id": "l-1",
            "type": "login",
            "occurred_at": (UNTIL - timedelta(hours=1)).isoformat(),
            "account_id": "acme",
        },
    ]
    await _send(client, events)
    params = {"since": (UNTIL - timedelta(days=60)).isoformat(), "until": UNTIL.isoformat()}
    response = await client.get("/v1/accounts/acme/voc", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["overall"]["nps"]["responses"] == 2 and body["overall"]["nps"]["nps"] == 0.0
    assert [(m["month"], m["nps"]["nps"]) for m in body["by_month"]] == [
        ("2026-04", -100.0),
        ("2026-05", 100.0),
    ]
    assert [v["text"] for v in body["verbatims"]] == [
        "Support never answered my ticket",
        "Much better now",
        "Export keeps failing",
    ]
    assert body["verbatims"][1]["value"] == 9
    missing = await client.get("/v1/accounts/nobody/voc")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


async def test_a_period_that_ends_before_it_starts_is_a_clear_400(
    client: httpx.AsyncClient,
) -> None:
    params = {"since": UNTIL.isoformat(), "until": (UNTIL - timedelta(days=1)).isoformat()}
    response = await client.get("/v1/voc/summary", params=params)
    assert response.status_code == 400
    assert "since" in response.json()["detail"]


async def test_the_worker_reads_each_text_once_and_every_read_carries_its_sentiment(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    at = UNTIL - timedelta(days=2)
    texts = {
        "t-1": ("ticket_opened", "Support never answered my ticket"),
        "t-2": ("ticket_comment", "Thanks, the team fixed it quickly!"),
        "t-3": ("call_note", "Discussed the renewal timeline"),
    }
    events = [
        {"event_id": i, "type": k, "occurred_at": at.isoformat(), "account_id": "acme", "text": t}
        for i, (k, t) in texts.items()
    ]
    events.append(
        {"event_id": "l-1", "type": "login", "occurred_at": at.isoformat(), "account_id": "acme"}
    )
    await _send(client, events)
    params = {"since": (UNTIL - timedelta(days=30)).isoformat(), "until": UNTIL.isoformat()}
    before = (await client.get("/v1/voc/summary", params=params)).json()["sentiment"]
    assert (before["texts"], before["pending"], before["mean"]) == (3, 3, None)

    analyzer = sentiment.Analyzer()
    assert await enrich.enrich_pending(conn, analyzer, limit=2) == 2
    assert await enrich.enrich_pending(conn, analyzer, limit=2) == 1
    assert await enrich.enrich_pending(conn, analyzer, limit=2) == 0  # each text once

    timeline = (await client.get("/v1/accounts/acme/events")).json()["items"]
    read = {e["event_id"]: e["sentiment"] for e in timeline}
    assert read["l-1"] is None
    assert (read["t-1"]["label"], read["t-2"]["label"], read["t-3"]["label"]) == (
        "negative",
        "positive",
        "neutral",
    )
    assert read["t-1"]["score"] == pytest.approx(analyzer(texts["t-1"][1]).score)
    mix = (await client.get("/v1/voc/summary", params=params)).json()["sentiment"]
    assert {k: mix[k] for k in ("texts", "negative", "neutral", "positive", "pending")} == {
        "texts": 3,
        "negative": 1,
        "neutral": 1,
        "positive": 1,
        "pending": 0,
    }
    mean = sum(r["score"] for r in read.values() if r) / 3
    assert mix["mean"] == pytest.approx(mean)
    voc = (await client.get("/v1/accounts/acme/voc", params=params)).json()
    assert {v["event_id"]: v["sentiment"]["label"] for v in voc["verbatims"]} == {
        "t-1": "negative",
        "t-2": "positive",
        "t-3": "neutral",
    }
    assert voc["sentiment"]["texts"] == 3
    [month] = voc["sentiment_by_month"]
    assert (month["texts"], month["negative"], month["pending"]) == (3, 1, 0)
    assert month["mean"] == pytest.approx(mean)


@pytest.mark.parametrize(
    "params",
    [
        {"until": "1970-01-02T00:00:00Z"},  # the default since: a year before, in 1969
        {"since": "2020-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
    ],
)
async def test_periods_at_the_ends_of_the_calendar_answer(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    await _send(client, [_answer(1, "nps_answered", 9, "acme", UNTIL)])
    # The period before one from 2020 to 9999 would start before year 1: it starts at year 1.
    summary = await client.get("/v1/voc/summary", params=params)
    assert summary.status_code == 200, summary.text
    assert summary.json()["previous"]["nps"]["responses"] == 0
    account = await client.get("/v1/accounts/acme/voc", params=params)
    assert account.status_code == 200, account.text


async def test_a_text_the_analyzer_fails_on_does_not_stop_the_others(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    class Fragile(sentiment.Analyzer):
        def __call__(self, text: str) -> sentiment.Sentiment:
            if text == "boom":
                raise ValueError("a text no lexicon expected")
            return super().__call__(text)

    at = (UNTIL - timedelta(days=1)).isoformat()
    events = [
        {"event_id": f"t-{n}", "type": "note", "occurred_at": at, "account_id": "acme", "text": t}
        for n, t in enumerate(["boom", "Love the new dashboard"])
    ]
    await _send(client, events)
    assert await enrich.enrich_pending(conn, Fragile(), limit=10) == 2
    labels = dict(await conn.fetch("SELECT event_id, label FROM text_enrichments"))
    assert labels == {"t-0": "neutral", "t-1": "positive"}
