"""Sentiment learned from survey comments: used where it reads them better than the lexicon,
and then every text is read again by it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.platform import jobs
from app.platform.settings import Settings
from app.voc import enrich, learned, sentiment
from tests.conftest import run_queued_job

# What this installation's customers say, in words the lexicon reads as neutral.
LEAVING = [
    "We are moving to another vendor next quarter",
    "Downgrading to the basic plan",
    "Half our seats sit unused",
    "Nobody on the team logs in anymore",
    "Evaluating alternatives this spring",
]
STAYING = [
    "Rolled it out to every team",
    "Renewing for three years",
    "Our whole company lives in it now",
    "Adding two more departments",
    "Expanding to our EU offices",
]
PLAIN = ["Great product, love it", "Terrible support, awful experience"]


def answers(n: int, *, say: dict[str, list[str]], seed: int) -> list[dict[str, Any]]:
    """n NPS answers over the last n hours, each comment chosen by its score's feeling."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    made = []
    for i in range(n):
        score = rng.choice([0, 2, 4, 6, 9, 10])
        words = say["negative" if score <= 6 else "positive"]
        made.append(
            {
                "event_id": f"nps-{seed}-{i}",
                "type": "nps_answered",
                "account_id": f"a{i % 40}",
                "occurred_at": (now - timedelta(hours=n - i)).isoformat(),
                "value": score,
                "text": f"{rng.choice(words)} ({rng.choice(['', 'honestly', 'as said'])})",
            }
        )
    return made


def test_an_answer_says_how_its_writer_felt_by_its_scale() -> None:
    assert [learned.label_of_answer("nps_answered", v) for v in (0, 6, 7, 8, 9, 10)] == [
        "negative",
        "negative",
        "neutral",
        "neutral",
        "positive",
        "positive",
    ]
    assert learned.label_of_answer("csat_answered", 3) == "neutral"
    assert learned.label_of_answer("ces_answered", 5) == "positive"
    assert learned.label_of_answer("nps_answered", 11) is None
    assert learned.label_of_answer("nps_answered", 8.5) is None


async def test_comments_the_lexicon_misreads_teach_a_reader_that_then_reads_every_text(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    events = answers(600, say={"negative": LEAVING, "positive": STAYING}, seed=1)
    ticket = {
        "event_id": "ticket-1",
        "type": "ticket_opened",
        "account_id": "a1",
        "occurred_at": datetime.now(UTC).isoformat(),
        "text": "We are moving to another vendor soon",
    }
    body = (await client.post("/v1/events/batch", json={"events": [*events, ticket]})).json()
    assert body["accepted"] == len(events) + 1
    lexicon = sentiment.Analyzer()
    await enrich.enrich_pending(conn, lexicon, limit=1000)
    before = await conn.fetchrow(
        "SELECT sentiment, label FROM text_enrichments WHERE event_id = $1", "ticket-1"
    )
    assert before["label"] == "neutral"  # the lexicon has no word for leaving
    assert (await client.get("/v1/voc/sentiment")).json() == {
        "kind": "lexicon",
        "chosen_at": None,
        "comments": None,
        "held_out": None,
        "accuracy": None,
        "labels": None,
        "mix": None,
        "refused": None,
    }

    chosen = await learned.relearn_if_due(conn, lexicon, every=timedelta(hours=1))
    assert chosen is not None and chosen["kind"] in ("learned", "blend")
    accuracy = chosen["accuracy"]
    assert accuracy[chosen["kind"]] > accuracy["lexicon"] + learned.MARGIN
    assert chosen["held_out"] == 150  # the newest quarter, out of time
    described = (await client.get("/v1/voc/sentiment")).json()
    assert described["kind"] == chosen["kind"] and described["accuracy"] == accuracy
    # Not chosen again within the period.
    assert await learned.relearn_if_due(conn, lexicon, every=timedelta(hours=1)) is None

    # Every text stored is read again by it; new ones are read by it as they come.
    result = await run_queued_job(settings, "sentiment_reread")
    assert result == {"texts": len(events) + 1, "reader": chosen["kind"]}
    after = await conn.fetchval(
        "SELECT label FROM text_enrichments WHERE event_id = $1", "ticket-1"
    )
    assert after == "negative"
    later = {**ticket, "event_id": "ticket-2", "text": "We plan on renewing for three years"}
    assert (await client.post("/v1/events", json=later)).status_code == 202
    reader = await learned.in_use(conn, settings)
    assert await enrich.enrich_pending(conn, reader, limit=10) == 1
    label = await conn.fetchval("SELECT label FROM text_enrichments WHERE event_id = 'ticket-2'")
    assert label == "positive"


async def test_comments_the_lexicon_reads_well_keep_the_lexicon(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    events = answers(400, say={"negative": PLAIN[1:], "positive": PLAIN[:1]}, seed=2)
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["errors"] == []
    lexicon = sentiment.Analyzer()
    chosen = await learned.relearn_if_due(conn, lexicon, every=timedelta(hours=1))
    assert chosen is not None and chosen["kind"] == "lexicon"
    assert chosen["accuracy"]["lexicon"] == pytest.approx(1.0)
    # Nothing to read again.
    assert await jobs.listed(conn, kind="sentiment_reread", status=None, limit=5) == []


async def test_too_few_comments_choose_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    events = answers(100, say={"negative": LEAVING, "positive": STAYING}, seed=3)
    await client.post("/v1/events/batch", json={"events": events})
    assert (
        await learned.relearn_if_due(conn, sentiment.Analyzer(), every=timedelta(hours=1)) is None
    )


async def test_a_reader_that_reads_the_other_texts_implausibly_is_refused(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # Comments teach a reader that "moving" and "another" mean leaving; the tickets it would
    # then read use those words for something else, and the lexicon reads them as neutral.
    events = answers(600, say={"negative": LEAVING, "positive": STAYING}, seed=5)
    rng = random.Random(5)
    tickets = [
        {
            "event_id": f"t-{n}",
            "type": "ticket_opened",
            "account_id": f"a{n % 40}",
            "occurred_at": (datetime.now(UTC) - timedelta(hours=n)).isoformat(),
            "text": rng.choice(
                [
                    "We are moving the export to another folder",
                    "Moving our invoices to another cost centre next quarter",
                    "Evaluating the new report for another team",
                ]
            ),
        }
        for n in range(120)
    ]
    batch = {"events": [*events, *tickets]}
    assert (await client.post("/v1/events/batch", json=batch)).json()["errors"] == []
    chosen = await learned.relearn_if_due(conn, sentiment.Analyzer(), every=timedelta(hours=1))
    assert chosen is not None and chosen["kind"] == "lexicon", chosen
    best = max(("learned", "blend"), key=lambda k: (chosen["accuracy"][k], k == "blend"))
    assert chosen["accuracy"][best] > chosen["accuracy"]["lexicon"] + learned.MARGIN
    assert chosen["refused"].startswith(best) and chosen["mix"]["texts"] == 120
    assert chosen["mix"]["lexicon"]["neutral"] > 0.5
    described = (await client.get("/v1/voc/sentiment")).json()
    assert described["kind"] == "lexicon" and described["refused"] == chosen["refused"]
    # Nothing is read again.
    assert await jobs.listed(conn, kind="sentiment_reread", status=None, limit=5) == []


async def test_a_training_reads_every_text_by_the_reader_in_use_before_the_reread_job_runs(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    events = answers(600, say={"negative": LEAVING, "positive": STAYING}, seed=7)
    ticket = {
        "event_id": "ticket-1",
        "type": "ticket_opened",
        "account_id": "a1",
        "occurred_at": datetime.now(UTC).isoformat(),
        "text": "We are moving to another vendor soon",
    }
    assert (await client.post("/v1/events/batch", json={"events": [*events, ticket]})).json()[
        "errors"
    ] == []
    lexicon = sentiment.Analyzer()
    assert await enrich.enrich_pending(conn, lexicon, limit=1000) == len(events) + 1
    chosen = await learned.relearn_if_due(conn, lexicon, every=timedelta(hours=1), wait=True)
    assert chosen is not None and chosen["kind"] in ("learned", "blend")
    [queued] = await jobs.listed(conn, kind="sentiment_reread", status=None, limit=5)
    assert queued.status == "queued"

    # A training's catch-up does not wait for the job: it reads what the new reader has not.
    assert await enrich.catch_up(conn, settings) == len(events) + 1
    current = await learned.current(conn)
    assert current is not None
    in_use = current["reader_id"]
    readers = await conn.fetch("SELECT DISTINCT reader_id FROM text_enrichments")
    assert [r["reader_id"] for r in readers] == [in_use]
    label = await conn.fetchval("SELECT label FROM text_enrichments WHERE event_id = 'ticket-1'")
    assert label == "negative"
    assert await run_queued_job(settings, "sentiment_reread") == {
        "texts": 0,
        "reader": chosen["kind"],
    }


async def test_a_reader_learnt_from_few_comments_is_learnt_again_once_they_grow(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    say = {"negative": LEAVING, "positive": STAYING}
    first = answers(400, say=say, seed=8)
    assert (await client.post("/v1/events/batch", json={"events": first})).json()["errors"] == []
    lexicon = sentiment.Analyzer()
    every = timedelta(hours=1)
    chosen = await learned.relearn_if_due(conn, lexicon, every=every)
    assert chosen is not None and chosen["comments"] == 400
    more = answers(150, say=say, seed=9)
    assert (await client.post("/v1/events/batch", json={"events": more})).json()["errors"] == []
    assert await learned.relearn_if_due(conn, lexicon, every=every) is None  # 550 < 1.5 x 400
    more = answers(100, say=say, seed=10)
    assert (await client.post("/v1/events/batch", json={"events": more})).json()["errors"] == []
    again = await learned.relearn_if_due(conn, lexicon, every=every)
    assert again is not None and again["comments"] == 650
