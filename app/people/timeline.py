"""An account's signals read back, newest first, a page at a time; its outcomes.

Pages are keyset pages on (occurred_at, event_id), the order the events index serves, so a deep
page costs what the first one does and events arriving meanwhile never shift a page.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from app.people import identities
from app.platform import cursors, errors
from app.schemas.signals import EventOut, OutcomeOut, TextSentiment

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_PAGE = """
    SELECT e.event_id, type, source, occurred_at, e.received_at, account_id, contact_id, email,
           value, properties, text, t.sentiment, t.label, t.themes
    FROM events e LEFT JOIN text_enrichments t ON t.event_id = e.event_id
    WHERE account_id = $1
      AND ($2::timestamptz IS NULL OR occurred_at >= $2)
      AND ($3::timestamptz IS NULL OR occurred_at <= $3)
      AND ($4::text[] IS NULL OR type = ANY($4::text[]))
      AND ($5::timestamptz IS NULL OR (occurred_at, e.event_id) < ($5, $6::text))
    ORDER BY occurred_at DESC, e.event_id DESC
    LIMIT $7"""


def sentiment_of(row: asyncpg.Record) -> TextSentiment | None:
    """An event's enrichment as read back (columns sentiment and label), None until the worker
    has read its text."""
    if row["label"] is None:
        return None
    return TextSentiment(score=row["sentiment"], label=row["label"])


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


async def events(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    since: datetime | None,
    until: datetime | None,
    types: Sequence[str] | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[EventOut], str | None]:
    """One page of an account's events (since and until inclusive) and the cursor of the next,
    None on the last page. A merged account's id pages through its survivor's events."""
    after: tuple[datetime, str] | None = None
    if cursor is not None:
        micros, event_id = cursors.decode(cursor, int, str)
        try:
            after = (_EPOCH + timedelta(microseconds=micros), event_id)
        except OverflowError:
            raise errors.BadRequest("cursor is not one this service issued") from None
    account_id = await identities.existing_account(conn, account_id)
    rows = await conn.fetch(
        _PAGE,
        account_id,
        since,
        until,
        None if types is None else list(types),
        None if after is None else after[0],
        None if after is None else after[1],
        limit + 1,
    )
    page = [
        EventOut.model_validate(
            dict(
                r,
                properties=orjson.loads(r["properties"]),
                sentiment=sentiment_of(r),
                themes=r["themes"] or [],
            )
        )
        for r in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = cursors.encode(_micros(last.occurred_at), last.event_id)
    return page, next_cursor


async def outcomes(
    conn: asyncpg.Connection, account_id: str, *, kinds: Sequence[str] | None, limit: int
) -> list[OutcomeOut]:
    """What really happened to an account (churned, renewed, expanded, ...), newest first; a
    merged account's id reads its survivor's. An account has a few of them, so no pages."""
    account_id = await identities.existing_account(conn, account_id)
    rows = await conn.fetch(
        "SELECT outcome_id, account_id, kind, occurred_at, amount, properties, received_at "
        "FROM outcomes WHERE account_id = $1 AND ($2::text[] IS NULL OR kind = ANY($2::text[])) "
        "ORDER BY occurred_at DESC, outcome_id DESC LIMIT $3",
        account_id,
        None if kinds is None else list(kinds),
        limit,
    )
    return [
        OutcomeOut.model_validate(dict(r, properties=orjson.loads(r["properties"]))) for r in rows
    ]
