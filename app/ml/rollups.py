"""Monthly rollups of events: per account, event type and UTC month, the count, the value, the
first and last instants and the days with an event (`event_rollups`), so that features read a
row per type and month instead of every event an account sent.

Features as of t read events one by one only from the start of the UTC month RAW_DAYS before t
(`read_from`; the 7 to 90 day windows, contacts, sums), and the rollups of every month before
it (the 180 and 365 day windows, the cadence, first and last instants, lifetime), with the
parts of the months where a long window begins read event by event (app.ml.features). A month
that is not rolled up is read event by event too: the features are the same either way, only
slower. Months are rolled up by training and batch rescoring (`catch_up`, which also rolls the
months that scores on request will read from the rollups in the coming weeks), not at ingest:
a trigger that kept the rollups at ingest cost 40% of the batch ingest rate. A month is rolled
from its partition in one transaction, under a lock per month, and remembered with the count of
events it held (`event_rollup_months`). An event that lands in a month that may be rolled up (a
backfill) unrolls that month in the same transaction (`unroll`), so features read it event by
event until it is rolled again; a training or a batch rescoring also checks the counts
(`recount`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import asyncpg

from app.platform import partitions

RAW_DAYS = 90  # features read events one by one from the start of the month this far back
# Training and batch rescoring roll up this far ahead of now, so that a score on request finds
# its months rolled (a month that is not is read event by event, slower).
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
            (account_id, type, month, events, valued, value_sum, first_at, last_at, days)
        SELECT account_id, type, $3::date, count(*), count(value), coalesce(sum(value), 0),
               min(occurred_at), max(occurred_at),
               bit_or(1 << (extract(day FROM occurred_at AT TIME ZONE 'UTC')::int - 1))
        FROM events
        WHERE occurred_at >= $1 AND occurred_at < $2
        GROUP BY account_id, type
        RETURNING events
    )
    SELECT coalesce(sum(events), 0)::bigint FROM rolled
"""


def read_from(t: datetime) -> datetime:
    """The start of the UTC month RAW_DAYS before t: features as of t read events from it on
    one by one, and the rolled-up months before it from the rollups."""
    earliest = (t - timedelta(days=RAW_DAYS)).astimezone(UTC)
    return earliest.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def before(t: datetime) -> str:
    """The name of the first partition features as of t read event by event when every
    partition named below it is rolled up."""
    return partitions.partition_name(partitions.month_of(read_from(t)))


def rollable(now: datetime) -> datetime:
    """Every month that may be rolled up as of `now` begins before this (`ensure` rolls none
    after it): an event before it may land in a rolled-up month."""
    return read_from(now + ROLL_AHEAD)


async def first_unrolled(conn: asyncpg.Connection) -> datetime | None:
    """The start of the earliest month of events that is not rolled up (or not any more)."""
    months = [
        month
        for row in await conn.fetch(MONTHS_SQL)
        if row["events"] is None and (month := _month(row["partition"])) is not None
    ]
    if not months:
        return None
    first = min(months)
    return datetime(first.year, first.month, 1, tzinfo=UTC)


async def unroll(conn: asyncpg.Connection, moments: Iterable[datetime], *, now: datetime) -> None:
    """Before events at these moments are stored, in their transaction: the months among them
    that may be rolled up are marked not rolled up, so that features read them event by event
    until a training or a batch rescoring rolls them again. The month's lock, shared, waits for
    a rolling of it under way, and keeps one from starting before the events are committed."""
    cutoff = rollable(now)
    months = sorted({partitions.month_of(m) for m in moments if m < cutoff})
    if not months:
        return
    await conn.execute(
        "SELECT pg_advisory_xact_lock_shared($1, m) FROM unnest($2::int[]) AS m ORDER BY m",
        _LOCK_KEY,
        [m.toordinal() for m in months],
    )
    await conn.execute("DELETE FROM event_rollup_months WHERE month = ANY($1::date[])", months)


def _month(name: str) -> date | None:
    found = _PARTITION.fullmatch(name)
    return date(int(found[1]), int(found[2]), 1) if found else None


async def ensure(conn: asyncpg.Connection, *, until: datetime, recount: bool = False) -> int:
    """Roll up every month of events that features as of `until` (or earlier) read from the
    rollups and that is not rolled up yet; with `recount`, also every one whose count of events
    changed since it was rolled. Returns how many months were rolled. None after `rollable`:
    ingest unrolls only the months before it."""
    first_scanned = before(min(until, datetime.now(UTC) + ROLL_AHEAD))
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


async def roll(conn: asyncpg.Connection, month: date) -> int:
    """The month rolled up, or counted again if its events changed since (1), before its
    partition is dropped (app.governance.retention): lifetime features keep counting what it
    held."""
    return await _roll(conn, partitions.partition_name(month), month, recount=True)


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
