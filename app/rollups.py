"""Monthly rollups of events: per account, event type and UTC month, the count, the value and the
first and last instants (`event_rollups`), so lifetime aggregates read a few rows per type
instead of every event an account ever sent.

Features as of t read events one by one from the start of the UTC month a year before t
(`scanned_from`) and the rollups of the months before it. Those months are rolled up when a
feature first needs them, not at ingest: a live event is never that old, so ingest pays nothing
(a trigger that kept the rollups at ingest cost 40% of the batch ingest rate). A month is rolled
from its partition in one transaction, under a lock per month, and remembered with the count of
events it held (`event_rollup_months`). An event sent later for a month already rolled up (a
backfill) is counted once a training or a batch rescoring checks the counts (`recount`), which
each does before reading features (`catch_up`, which also rolls up the months that scores on
request will need in the coming weeks, so that they rarely roll one themselves).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import asyncpg

from app import partitions
from app.ml.catalog import RECENCY_CAP_DAYS

LOOKBACK = timedelta(days=RECENCY_CAP_DAYS)  # features read events one by one this far back
# Training and batch rescoring roll up this far ahead of now, so that a score on request finds
# its months rolled (rolling a month on request makes those requests wait seconds for it).
ROLL_AHEAD = timedelta(days=45)
_LOCK_KEY = 7310003  # with the month, serializes the rolling of one month across processes
_PARTITION = re.compile(r"events_(\d{4})_(\d{2})")

# Every partition of events, with its rolled-up count when it is rolled up.
MONTHS_SQL = """
    SELECT c.relname AS partition, m.events
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    LEFT JOIN event_rollup_months m ON m.partition = c.relname
    WHERE i.inhparent = 'events'::regclass
"""

# Whether some partition before the month of $1 is not rolled up (a name compares as its month).
UNROLLED_SQL = """
    SELECT EXISTS (
        SELECT 1 FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        LEFT JOIN event_rollup_months m ON m.partition = c.relname
        WHERE i.inhparent = 'events'::regclass AND m.partition IS NULL AND c.relname < $1
    )
"""

_ROLL_SQL = """
    WITH rolled AS (
        INSERT INTO event_rollups
            (account_id, type, month, events, valued, value_sum, first_at, last_at)
        SELECT account_id, type, $3::date, count(*), count(value), coalesce(sum(value), 0),
               min(occurred_at), max(occurred_at)
        FROM events
        WHERE occurred_at >= $1 AND occurred_at < $2
        GROUP BY account_id, type
        RETURNING events
    )
    SELECT coalesce(sum(events), 0)::bigint FROM rolled
"""


def scanned_from(t: datetime) -> datetime:
    """The start of the UTC month a year before t: features as of t read events from it on one
    by one, and the months before it from the rollups."""
    earliest = (t - LOOKBACK).astimezone(UTC)
    return earliest.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def before(t: datetime) -> str:
    """The name of the first partition features as of t read event by event: every partition
    named below it must be rolled up."""
    return partitions.partition_name(partitions.month_of(scanned_from(t)))


def _month(name: str) -> date | None:
    found = _PARTITION.fullmatch(name)
    return date(int(found[1]), int(found[2]), 1) if found else None


async def ensure(conn: asyncpg.Connection, *, until: datetime, recount: bool = False) -> int:
    """Roll up every month of events that features as of `until` (or earlier) read from the
    rollups and that is not rolled up yet; with `recount`, also every one whose count of events
    changed since it was rolled. Returns how many months were rolled."""
    first_scanned = before(until)
    rolled = 0
    for row in await conn.fetch(MONTHS_SQL):
        month = _month(row["partition"])
        if month is None or row["partition"] >= first_scanned:
            continue
        if row["events"] is not None and not recount:
            continue
        rolled += await _roll(conn, row["partition"], month, recount=recount)
    return rolled


async def catch_up(conn: asyncpg.Connection, *, as_of: datetime) -> int:
    """Before a training or a batch rescoring as of `as_of`: every month that features as of
    `as_of`, or of any moment up to ROLL_AHEAD from now, read from the rollups, rolled up, and
    the counts of those rolled before checked (a backfill is counted again)."""
    until = max(as_of, datetime.now(UTC) + ROLL_AHEAD)
    return await ensure(conn, until=until, recount=True)


async def _roll(conn: asyncpg.Connection, partition: str, month: date, *, recount: bool) -> int:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end_month = partitions.next_month(month)
    end = datetime(end_month.year, end_month.month, 1, tzinfo=UTC)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_KEY, month.toordinal())
        known = await conn.fetchval(
            "SELECT events FROM event_rollup_months WHERE partition = $1", partition
        )
        if known is not None:  # rolled meanwhile by another process, or recounting
            if not recount:
                return 0
            count = await conn.fetchval(
                "SELECT count(*) FROM events WHERE occurred_at >= $1 AND occurred_at < $2",
                start,
                end,
            )
            if count == known:
                return 0
        await conn.execute("DELETE FROM event_rollups WHERE month = $1", month)
        events = await conn.fetchval(_ROLL_SQL, start, end, month)
        await conn.execute(
            """
            INSERT INTO event_rollup_months (partition, month, events) VALUES ($1, $2, $3)
            ON CONFLICT (partition) DO UPDATE SET events = excluded.events, rolled_at = now()
            """,
            partition,
            month,
            events,
        )
    return 1
