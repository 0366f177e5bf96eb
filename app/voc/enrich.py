"""Enrichment of texts off the request path: the worker finds events with text that have no
enrichment yet (by a BRIN index on events' received_at: events arrive in that order, so the
newest pages hold them), reads their sentiment in batches and stores it in text_enrichments.
Ingest pays next to nothing for it.

New texts are found from the latest enriched one's received_at, less an overlap
(OVERLAP_SECONDS) for transactions that committed after later ones; an event already enriched
is skipped, so the overlap costs a few index reads. One worker enriches at a time (an advisory
lock): others skip the round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

import asyncpg

from app.platform import db
from app.platform.settings import Settings
from app.voc import learned, sentiment, themes

log = logging.getLogger(__name__)

LOCK = 0x7E47_0001  # pg_try_advisory_xact_lock key of the enrichment round
# Ingest transactions last well under a second; the overlap re-reads (and skips) the last
# minute's texts on each round, so it stays short.
OVERLAP_SECONDS = 60
TICK_SECONDS = 1.0
RELEARN_TRY_SECONDS = 600.0
REFIT_TRY_SECONDS = 10.0

_PENDING = """
    SELECT e.event_id, e.received_at, e.text
    FROM events e
    WHERE e.text IS NOT NULL
      AND ($1::timestamptz IS NULL OR e.received_at > $1)
      AND NOT EXISTS (SELECT 1 FROM text_enrichments t WHERE t.event_id = e.event_id)
    ORDER BY e.received_at
    LIMIT $2"""

_STORE = """
    INSERT INTO text_enrichments (event_id, received_at, sentiment, label, themes, reader_id)
    SELECT u.event_id, u.received_at, u.sentiment, u.label, u.themes::text[], $6
    FROM unnest($1::text[], $2::timestamptz[], $3::float8[], $4::text[], $5::text[])
        AS u(event_id, received_at, sentiment, label, themes)
    ON CONFLICT (event_id) DO NOTHING"""


Read = Callable[[str], sentiment.Sentiment]  # the lexicon, or the reader learned.Reader chose


async def enrich_pending(conn: asyncpg.Connection, analyzer: Read, *, limit: int) -> int:
    """Enrich up to `limit` texts not enriched yet; how many were."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK):
            return 0
        latest = await conn.fetchval("SELECT max(received_at) FROM text_enrichments")
        since = None if latest is None else latest - timedelta(seconds=OVERLAP_SECONDS)
        # Planned for this round's tables and bound, not once per connection: a plan made while
        # text_enrichments was empty (a first import) tried every text against every stored
        # enrichment (a nested loop with no key), 1.5 s a batch of 2,000 at 10,000 enriched and
        # growing, until an autovacuum's ANALYZE happened to replan it; planned per round, it
        # is a hash or keyed anti-join (36 ms). One plan a second is nothing to the worker.
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        rows = await conn.fetch(_PENDING, since, limit)
        if not rows:
            return 0
        candidates = await themes.active(conn)
        # CPU work off the event loop (the worker's heartbeats go on meanwhile).
        read = await asyncio.to_thread(lambda: [_read(analyzer, r) for r in rows])
        about: list[list[str]] = [[] for _ in rows]
        if candidates:  # none before the first refit
            about = await asyncio.to_thread(
                lambda: [themes.match(themes.terms_of(r["text"]), candidates) for r in rows]
            )
        await conn.execute(
            _STORE,
            [r["event_id"] for r in rows],
            [r["received_at"] for r in rows],
            [s.score for s in read],
            [s.label for s in read],
            ["{" + ",".join(f'"{t}"' for t in ids) + "}" for ids in about],
            analyzer.reader_id if isinstance(analyzer, learned.Reader) else None,
        )
    return len(rows)


def _read(analyzer: Read, row: asyncpg.Record) -> sentiment.Sentiment:
    """A text's sentiment; a text the analyzer fails on reads neutral (and is logged by its
    event id, never its words), so that one text cannot stop every later one being read."""
    try:
        return analyzer(row["text"])
    except Exception:
        log.exception("a text could not be read", extra={"event_id": row["event_id"]})
        return sentiment.Sentiment(0.0, "neutral")


async def catch_up(conn: asyncpg.Connection, settings: Settings) -> int:
    """Every text stored so far read, and read by the reader in use, before a training set or a
    batch rescoring reads their sentiment: one reader for all of them, even while the
    `sentiment_reread` job is under way (unless another worker is enriching the newest);
    how many this call read."""
    analyzer = await learned.in_use(conn, settings)
    done = 0
    while read := await enrich_pending(conn, analyzer, limit=settings.enrich_batch):
        done += read
    return done + await learned.reread(conn, analyzer)


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    """Enrich new texts every TICK_SECONDS, batch after batch while there are more; refit the
    themes and choose the sentiment reader again when they are due."""
    lexicon = await asyncio.to_thread(sentiment.analyzer_of, settings.sentiment_words)
    refit_every = timedelta(hours=settings.themes_refit_hours)
    using: dict[str | None, learned.Reader] = {}  # the reader in use, by its id
    tried: list[float] = []  # when this worker last looked at the survey comments
    refitted: list[float] = []  # ... and whether the themes are due

    async def step(conn: asyncpg.Connection) -> None:
        row = await learned.current(conn)
        key = None if row is None else row["reader_id"]
        if key not in using:  # another worker (or this one) chose a new reader
            using.clear()
            using[key] = await asyncio.to_thread(learned.reader_of, row, lexicon)
        limit = settings.enrich_batch
        while await enrich_pending(conn, using[key], limit=limit) == limit:
            pass
        now = asyncio.get_running_loop().time()
        if not refitted or now - refitted[0] >= REFIT_TRY_SECONDS:
            refitted[:] = [now]
            done = await themes.refit_if_due(conn, every=refit_every)
            if done is not None:
                log.info("themes refit", extra=done)
        # Reading every comment is not for each tick: at most every RELEARN_TRY_SECONDS.
        if not tried or now - tried[0] >= RELEARN_TRY_SECONDS:
            tried[:] = [now]
            await learned.relearn_if_due(conn, lexicon, every=refit_every)

    await db.every(pool, TICK_SECONDS, step, what="text enrichment")
