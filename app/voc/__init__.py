"""Voice of the customer: what customers write and answer (sentiment.py, themes.py and
enrich.py: what texts say; surveys.py: NPS, CSAT, CES)."""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg

EARLIEST = datetime.min.replace(tzinfo=UTC)


def earlier(moment: datetime, length: timedelta) -> datetime:
    """`length` before `moment`, or the earliest moment there is (a period reaching back past
    year 1 starts there)."""
    try:
        return moment - length
    except OverflowError:
        return EARLIEST


async def lock_enrichments(conn: asyncpg.Connection, event_ids: Sequence[str]) -> None:
    """Lock these texts' enrichment rows in the order of their ids, inside the caller's
    transaction. Every writer that changes many of them (the re-reading of sentiment, the
    matching of themes) takes them so before its UPDATE: an UPDATE locks in whatever order its
    join runs, and two of them over the same rows in two orders deadlocked (seen in CI)."""
    await conn.execute(
        "SELECT 1 FROM text_enrichments WHERE event_id = ANY($1::text[]) "
        "ORDER BY event_id FOR UPDATE",
        list(event_ids),
    )
