"""Monthly partitions of the events table: created ahead of time, and on demand for backfills."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta

import asyncpg

log = logging.getLogger(__name__)

# Serializes partition DDL across processes; the value is arbitrary but fixed.
LOCK_KEY = 7310002


def month_of(moment: datetime) -> date:
    moment = moment.astimezone(UTC)
    return date(moment.year, moment.month, 1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"events_{month.year:04d}_{month.month:02d}"


class PartitionManager:
    """Remembers which months exist so the ingest path asks Postgres only for new ones."""

    def __init__(self, pool: asyncpg.Pool, *, retention_days: int = 0) -> None:
        self._pool = pool
        self._known: set[date] = set()
        self.retention_days = retention_days

    def horizon(self, now: datetime) -> datetime | None:
        """Events before this are past the retention (app.governance.retention drops their months):
        none is stored, so a dropped month is never written to again."""
        return now - timedelta(days=self.retention_days) if self.retention_days else None

    async def ensure(self, months: Iterable[date]) -> None:
        missing = sorted(set(months) - self._known)
        if not missing:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
            rows = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass"
            )
            existing = {r[0] for r in rows}
            for month in missing:
                name = partition_name(month)
                if name in existing:
                    continue
                # Bounds are dates in UTC; both are computed here, never taken from a client.
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF events FOR VALUES "
                    f"FROM ('{month.isoformat()} 00:00:00+00') "
                    f"TO ('{next_month(month).isoformat()} 00:00:00+00')"
                )
                log.info("created partition", extra={"partition": name})
        self._known.update(missing)

    async def ensure_ahead(self, months_ahead: int, now: datetime | None = None) -> None:
        month = month_of(now or datetime.now(UTC))
        months = []
        for _ in range(months_ahead + 1):
            months.append(month)
            month = next_month(month)
        await self.ensure(months)
