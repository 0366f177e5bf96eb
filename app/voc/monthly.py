"""The survey answers and the texts of the last 12 months and this one, counted by UTC month and
segment and kept for the console's voice-of-the-customer page.

Counting a year of an installation's answers and texts takes seconds at 100,000 accounts
(1.4 s at 20,000), far over what a page may take. The counts add up, so the worker keeps them
(a `voc_refresh` job every CUSTINTEL_VOC_REFRESH_MINUTES, a whole recount of the window in one
transaction: late answers, texts read since, segment changes and erasures all show at the next
refresh) and the page folds the kept cells with the same functions that fold live ones
(app.voc.surveys). The page says when they were counted. The API's VoC endpoints stay live.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from app.platform import jobs
from app.platform.jsonbody import JSONObject
from app.schemas.voc import SentimentMix
from app.voc import surveys

JOB = "voc_refresh"
MONTHS = 12  # whole months before the current one


def window_start(now: datetime) -> datetime:
    """The first moment of the month MONTHS months before now's (UTC)."""
    now = now.astimezone(UTC)
    months = now.year * 12 + now.month - 1 - MONTHS
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Kept:
    summary: surveys.Summary
    mix: SentimentMix
    since: datetime
    counted_at: datetime


async def refresh(conn: asyncpg.Connection, *, now: datetime) -> JSONObject:
    """Count the window up to `now` again and keep it, replacing what was kept."""
    since = window_start(now)
    answers = await surveys.answer_cells(conn, since=since, until=now)
    texts = await surveys.text_cells(conn, since=since, until=now)
    async with conn.transaction():
        await conn.execute("DELETE FROM voc_answer_months")
        await conn.execute("DELETE FROM voc_text_months")
        await conn.execute("DELETE FROM voc_refreshes")
        await conn.copy_records_to_table(
            "voc_answer_months",
            columns=["type", "month", "segment", "n", "ignored", "high", "low", "total", "squares"],
            records=[
                (
                    c.type,
                    c.month,
                    c.segment,
                    c.counts.n,
                    c.counts.ignored,
                    c.counts.high,
                    c.counts.low,
                    c.counts.total,
                    c.counts.squares,
                )
                for c in answers
            ],
        )
        await conn.copy_records_to_table(
            "voc_text_months",
            columns=["month", "segment", "label", "n", "total"],
            records=[(c.month, c.segment, c.label, c.n, c.total) for c in texts],
        )
        await conn.execute(
            "INSERT INTO voc_refreshes (counted_at, since) VALUES ($1, $2)", now, since
        )
    return {"since": since.isoformat(), "answer_cells": len(answers), "text_cells": len(texts)}


async def read(conn: asyncpg.Connection, *, segment: str | None) -> Kept | None:
    """What the last refresh kept, of one segment or of all; None before the first refresh."""
    refreshed = await conn.fetchrow("SELECT counted_at, since FROM voc_refreshes")
    if refreshed is None:
        return None
    answers = await conn.fetch(
        "SELECT type, month, segment, n, ignored, high, low, total, squares "
        "FROM voc_answer_months WHERE $1::text IS NULL OR segment = $1",
        segment,
    )
    texts = await conn.fetch(
        "SELECT month, segment, label, n, total FROM voc_text_months "
        "WHERE $1::text IS NULL OR segment = $1",
        segment,
    )
    return Kept(
        summary=surveys.fold(
            [
                surveys.AnswerCell(
                    r["type"],
                    r["month"],
                    r["segment"],
                    surveys.Counts(
                        r["n"], r["ignored"], r["high"], r["low"], r["total"], r["squares"]
                    ),
                )
                for r in answers
            ]
        ),
        mix=surveys.mix_of(
            [
                surveys.TextCell(r["month"], r["segment"], r["label"], r["n"], r["total"])
                for r in texts
            ]
        ),
        since=refreshed["since"],
        counted_at=refreshed["counted_at"],
    )


async def segments(conn: asyncpg.Connection) -> list[str]:
    """The segments the kept counts have (for the page's filter)."""
    rows = await conn.fetch(
        "SELECT segment FROM voc_answer_months WHERE segment IS NOT NULL "
        "UNION SELECT segment FROM voc_text_months WHERE segment IS NOT NULL ORDER BY 1"
    )
    return [r[0] for r in rows]


async def refresh_job(
    conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
) -> JSONObject:
    return await refresh(conn, now=await conn.fetchval("SELECT now()"))
