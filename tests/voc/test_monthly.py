from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app.platform.settings import Settings
from app.voc import enrich, monthly, sentiment, surveys
from tests.conftest import run_queued_job

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


def test_the_window_is_the_last_twelve_whole_months_and_this_one() -> None:
    assert monthly.window_start(NOW) == datetime(2025, 6, 1, tzinfo=UTC)
    assert monthly.window_start(datetime(2026, 1, 1, tzinfo=UTC)) == datetime(
        2025, 1, 1, tzinfo=UTC
    )
    assert monthly.window_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2025, 12, 1, tzinfo=UTC
    )


async def _world(client: httpx.AsyncClient, seed: int, now: datetime) -> None:
    """Answers on and off their scales and texts, over 15 months and three kinds of account."""
    rng = random.Random(seed)
    for n, segment in enumerate(("smb", "enterprise", None)):
        body: dict[str, Any] = {"segment": segment} if segment else {}
        assert (await client.put(f"/v1/accounts/a{n}", json=body)).is_success
    events = []
    for n in range(600):
        kind = rng.choice(["nps_answered", "csat_answered", "ces_answered", "ticket_opened"])
        value: Any = {
            "nps_answered": rng.choice([*range(11), 11, 7.5]),
            "csat_answered": rng.randint(0, 5),
            "ces_answered": rng.randint(1, 7),
            "ticket_opened": None,
        }[kind]
        event: dict[str, Any] = {
            "event_id": f"e{seed}-{n}",
            "type": kind,
            "occurred_at": (now - timedelta(days=rng.uniform(0, 450))).isoformat(),
            "account_id": f"a{rng.randrange(3)}",
        }
        if value is not None:
            event["value"] = value
        if rng.random() < 0.5:
            event["text"] = rng.choice(
                ["Slow and broken again", "Love the new reports", "Renewal call next week"]
            )
        events.append(event)
    answer = await client.post("/v1/events/batch", json={"events": events})
    assert answer.status_code == 200 and answer.json()["accepted"] == len(events), answer.text


async def test_kept_counts_add_up_to_what_counting_live_gives(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await _world(client, 1, NOW)
    await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=200)  # some read, some not
    assert await monthly.read(conn, segment=None) is None  # nothing counted yet

    await monthly.refresh(conn, now=NOW)

    since = monthly.window_start(NOW)
    for segment in (None, "smb", "enterprise", "nobody's"):
        kept = await monthly.read(conn, segment=segment)
        assert kept is not None and kept.since == since and kept.counted_at == NOW
        live = await surveys.summarise(conn, since=since, until=NOW, segment=segment)
        assert kept.summary == live, segment
        mix = await surveys.sentiment_mix(conn, since=since, until=NOW, segment=segment)
        assert kept.mix == mix, segment
    everyone = await monthly.read(conn, segment=None)
    assert everyone is not None
    assert everyone.mix.pending and everyone.mix.texts > everyone.mix.pending  # both kinds
    assert everyone.summary.overall.nps.ignored  # answers off the scale are counted apart
    assert len(everyone.summary.by_month) == 13
    assert [s.segment for s in everyone.summary.by_segment] == ["enterprise", "smb", None]


async def test_what_arrives_after_a_count_shows_at_the_next_one(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    now = datetime.now(UTC)  # the worker counts up to its own now
    await _world(client, 2, now)
    await monthly.refresh(conn, now=now - timedelta(minutes=1))
    before = await monthly.read(conn, segment=None)
    late = {
        "event_id": "late",
        "type": "nps_answered",
        "value": 0,
        "occurred_at": (now - timedelta(days=200)).isoformat(),  # a closed month
        "account_id": "a0",
    }
    assert (await client.post("/v1/events", json=late)).status_code in (200, 201, 202)
    assert await monthly.read(conn, segment=None) == before  # kept, not live

    # The worker's job, as the scheduler queues it.
    from app.platform import jobs

    await jobs.enqueue(conn, kind=monthly.JOB, params={})
    result = await run_queued_job(settings, monthly.JOB)
    assert result["answer_cells"]
    after = await monthly.read(conn, segment=None)
    assert before is not None and after is not None
    assert after.summary.overall.nps.detractors == before.summary.overall.nps.detractors + 1
    assert after.counted_at > before.counted_at
