"""Recurring jobs: batch rescoring, retraining of every target with an active model, the
evaluation of the active models (realized performance and drift), retention, the fit of the
purchase-log lifetime-value models, and the recount of the voice of the customer that the
console reads.

Every worker runs the scheduler. A due job is enqueued once however many workers there are,
because its slot (kind, target, and the number of the period since the epoch) is unique in the
jobs table. Retraining is due once the active model is older than the period, not merely when a
new period begins, so a fresh model is not retrained at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from app.activation import insights
from app.governance import privacy, retention
from app.ml import registry
from app.people import merges
from app.platform import db, jobs
from app.platform.settings import Settings
from app.signals import sources
from app.value import clv, uplift
from app.voc import monthly

log = logging.getLogger(__name__)

TICK_SECONDS = 10.0
THEME_JUMP_EVERY = timedelta(hours=1)  # a week's texts per theme are counted this often


# Jobs of a few seconds that people wait on (an erasure owed within a deadline, a theme merge
# shown at once): a worker's second lane runs them while a training takes minutes.
SHORT_JOBS = (privacy.JOB, "themes_rematch", merges.CATCH_UP, monthly.JOB)


def handlers(settings: Settings) -> dict[str, jobs.Handler]:
    """What a worker can run, by job kind."""
    from app.ml import batch, drift, performance, pipeline
    from app.voc import learned, themes

    return {
        "train": pipeline.handler(settings),
        "score": batch.handler(settings),
        "evaluate": performance.handler(drift.Rule.of(settings)),
        "themes_rematch": themes.rematch_handler,
        "sentiment_reread": learned.reread_handler(settings),
        privacy.JOB: privacy.handler(settings),
        merges.CATCH_UP: merges.catch_up,
        monthly.JOB: monthly.refresh_job,
        clv.JOB: clv.handler(settings),
        uplift.JOB: uplift.handler(settings),
        retention.JOB: retention.handler(settings),
    }


def _slot(name: str, now: datetime, every: timedelta) -> str:
    return f"{name}:{int(now.timestamp() // every.total_seconds())}"


async def enqueue_due(conn: asyncpg.Connection, settings: Settings, *, now: datetime) -> list[str]:
    """Enqueue whatever is due at `now`; the slots this call created."""
    created = []
    active = await registry.all_active(conn)
    if settings.rescore_every_hours > 0 and active:
        slot = _slot("score", now, timedelta(hours=settings.rescore_every_hours))
        if await jobs.enqueue_once(conn, kind="score", params={}, slot=slot):
            created.append(slot)
    if settings.evaluate_every_hours > 0 and active:
        slot = _slot("evaluate", now, timedelta(hours=settings.evaluate_every_hours))
        if await jobs.enqueue_once(conn, kind="evaluate", params={}, slot=slot):
            created.append(slot)
    if settings.retention_every_hours > 0:
        slot = _slot(retention.JOB, now, timedelta(hours=settings.retention_every_hours))
        if await jobs.enqueue_once(conn, kind=retention.JOB, params={}, slot=slot):
            created.append(slot)
    if settings.clv_fit_every_hours > 0:
        slot = _slot(clv.JOB, now, timedelta(hours=settings.clv_fit_every_hours))
        if await jobs.enqueue_once(conn, kind=clv.JOB, params={}, slot=slot):
            created.append(slot)
    if settings.uplift_fit_every_hours > 0:
        every = timedelta(hours=settings.uplift_fit_every_hours)
        for target in sorted({m.target for m in active}):
            slot = _slot(f"{uplift.JOB}:{target}", now, every)
            if await jobs.enqueue_once(conn, kind=uplift.JOB, params={"target": target}, slot=slot):
                created.append(slot)
    if settings.voc_refresh_minutes > 0:
        slot = _slot(monthly.JOB, now, timedelta(minutes=settings.voc_refresh_minutes))
        if await jobs.enqueue_once(conn, kind=monthly.JOB, params={}, slot=slot):
            created.append(slot)
    if settings.retrain_every_days > 0:
        every = timedelta(days=settings.retrain_every_days)
        for model in active:
            if model.activated_at is not None and now - model.activated_at < every:
                continue
            params = {
                "target": model.target,
                "horizon_days": model.horizon_days,
                "label": model.label,
            }
            slot = _slot(f"train:{model.target}", now, every)
            if await jobs.enqueue_once(conn, kind="train", params=params, slot=slot):
                created.append(slot)
    return created


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    """Enqueue due jobs every TICK_SECONDS (or twice per shortest period) until cancelled."""
    periods = [
        settings.rescore_every_hours * 3600,
        settings.evaluate_every_hours * 3600,
        settings.retrain_every_days * 86400,
        settings.retention_every_hours * 3600,
        settings.voc_refresh_minutes * 60,
        settings.clv_fit_every_hours * 3600,
        settings.uplift_fit_every_hours * 3600,
    ]
    tick = min([TICK_SECONDS] + [p / 2 for p in periods if p > 0])

    last_jumps: list[datetime] = []  # when this worker last looked for theme jumps

    async def step(conn: asyncpg.Connection) -> None:
        now = await conn.fetchval("SELECT now()")  # one clock for every worker
        for slot in await enqueue_due(conn, settings, now=now):
            log.info("scheduled job enqueued", extra={"slot": slot})
        # Senders' raw payloads past their retention (an indexed update, cheap to repeat on
        # every tick and in every worker).
        retention = timedelta(days=settings.source_payload_retention_days)
        await sources.forget_payloads(conn, before=now - retention)
        raised = await insights.from_detractors(conn, settings)
        if raised:
            log.info("detractor insights raised", extra={"count": raised})
        if not last_jumps or now - last_jumps[0] >= THEME_JUMP_EVERY:
            last_jumps[:] = [now]  # hourly in each worker; the cooldown keeps one per theme
            raised = await insights.from_theme_jumps(conn, settings, now=now)
            if raised:
                log.info("theme jump insights raised", extra={"count": raised})

    await db.every(pool, tick, step, what="scheduler")
