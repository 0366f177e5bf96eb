"""Retention: what custintel keeps, and for how long (a daily `retention` job, audited).

- events: whole monthly partitions are detached and dropped once their last day is older than
  CUSTINTEL_EVENT_RETENTION_DAYS (never row by row), with their event keys and text
  enrichments; the monthly rollups stay (counts, no personal data), so lifetime features still
  count what was dropped;
- score history, webhook delivery attempts and finished jobs: rows older than their setting;
- senders' raw payloads: forgotten after CUSTINTEL_SOURCE_PAYLOAD_RETENTION_DAYS (by the
  scheduler, app.signals.sources.forget_payloads).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import asyncpg

from app.governance import audit
from app.ml import rollups
from app.platform import jobs, partitions
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.privacy import Retention

log = logging.getLogger(__name__)

JOB = "retention"


async def _months(conn: asyncpg.Connection) -> list[date]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
    )
    months = []
    for (name,) in rows:
        _, year, month = name.split("_")
        months.append(date(int(year), int(month), 1))
    return months


async def drop_old_events(conn: asyncpg.Connection, *, before: datetime) -> list[str]:
    """Detach and drop every event partition whose month ends at or before `before`, with its
    events' keys and text enrichments; the partitions dropped."""
    dropped = []
    for month in await _months(conn):
        ends = datetime(*partitions.next_month(month).timetuple()[:3], tzinfo=before.tzinfo)
        if ends > before:
            continue
        name = partitions.partition_name(month)  # made here from a date, never from a client
        await rollups.roll(conn, month)  # its counts stay: lifetime features still count them
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", partitions.LOCK_KEY)
            await conn.execute(f"ALTER TABLE events DETACH PARTITION {name}")
            await conn.execute(
                f"DELETE FROM text_enrichments x USING {name} e WHERE x.event_id = e.event_id"  # noqa: S608  (a name made from a date)
            )
            await conn.execute(
                f"DELETE FROM event_keys k USING {name} e WHERE k.event_id = e.event_id"  # noqa: S608  (a name made from a date)
            )
            await conn.execute(f"DROP TABLE {name}")
        dropped.append(name)
        log.info("event partition dropped", extra={"partition": name})
    return dropped


async def apply(conn: asyncpg.Connection, settings: Settings) -> JSONObject:
    """Everything past its retention removed; what was, counted, audited."""
    now: datetime = await conn.fetchval("SELECT now()")
    done: JSONObject = {}
    if settings.event_retention_days:
        done["event_partitions"] = await drop_old_events(
            conn, before=now - timedelta(days=settings.event_retention_days)
        )
    for name, days, sql in (
        ("scores", settings.score_retention_days, "DELETE FROM scores WHERE scored_at < $1"),
        (
            "delivery_attempts",
            settings.delivery_attempt_retention_days,
            "DELETE FROM delivery_attempts WHERE at < $1",
        ),
        (
            "jobs",
            settings.job_retention_days,
            "DELETE FROM jobs WHERE finished_at < $1 AND status IN "
            "('succeeded', 'failed', 'cancelled')",
        ),
        (
            "unresolved_signals",
            settings.held_retention_days,
            "DELETE FROM unresolved_signals WHERE received_at < $1",
        ),
    ):
        if days:
            status = await conn.execute(sql, now - timedelta(days=days))
            done[name] = int(status.split()[-1])
    # Trait keys no profile holds any more count against nobody's budget: freed (a day's grace
    # for upserts still in flight).
    freed = 0
    for kind, table in (("account", "accounts"), ("contact", "contacts")):
        status = await conn.execute(
            "DELETE FROM trait_keys WHERE kind = $1 AND created_at < now() - interval '1 day' "  # noqa: S608  (constant names)
            f"AND key NOT IN (SELECT DISTINCT jsonb_object_keys(traits) FROM {table})",
            kind,
        )
        freed += int(status.split()[-1])
    done["trait_keys"] = freed
    await audit.record(conn, actor="retention", action="retention.applied", details=done)
    return done


def handler(settings: Settings) -> jobs.Handler:
    async def retention_job(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        return await apply(conn, settings)

    return retention_job


async def overview(conn: asyncpg.Connection, settings: Settings) -> Retention:
    """The retention settings and the oldest data of each kind."""
    months = await _months(conn)
    oldest_event = None
    for month in months:  # the oldest month with an event
        name = partitions.partition_name(month)
        oldest_event = await conn.fetchval(f"SELECT min(occurred_at) FROM {name}")  # noqa: S608  (a name made from a date)
        if oldest_event is not None:
            break
    return Retention.model_validate(
        {
            "settings": {
                "event_retention_days": settings.event_retention_days,
                "score_retention_days": settings.score_retention_days,
                "delivery_attempt_retention_days": settings.delivery_attempt_retention_days,
                "job_retention_days": settings.job_retention_days,
                "held_retention_days": settings.held_retention_days,
                "source_payload_retention_days": settings.source_payload_retention_days,
            },
            "oldest": {
                "event": oldest_event,
                "event_partition": partitions.partition_name(months[0]) if months else None,
                "score": await conn.fetchval("SELECT min(scored_at) FROM scores"),
                "delivery_attempt": await conn.fetchval("SELECT min(at) FROM delivery_attempts"),
                "job": await conn.fetchval("SELECT min(created_at) FROM jobs"),
                "source_payload": await conn.fetchval(
                    "SELECT min(received_at) FROM source_deliveries WHERE payload IS NOT NULL"
                ),
                "audit_entry": await conn.fetchval("SELECT min(at) FROM audit_log"),
            },
            "last_applied": await conn.fetchval(
                "SELECT max(at) FROM audit_log WHERE action = 'retention.applied'"
            ),
        }
    )
