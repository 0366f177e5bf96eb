"""A worker whose database is away says so once per outage and waits longer each time, instead
of logging on every try (four lines a second before)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import pytest

from app.activation import deliveries, schedules
from app.platform import jobs
from app.platform.settings import Settings
from app.voc import enrich
from tests.fixtures.live import free_port


@pytest.mark.parametrize("loop", ["jobs", "schedules", "deliveries", "enrichment"])
async def test_an_outage_is_logged_once_with_backoff(
    settings: Settings, caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    quick = settings.model_copy(
        update={
            "delivery_poll_seconds": 0.05,
            "rescore_every_hours": 0.0001,  # the scheduler ticks every 0.18 s
            "database_url": nowhere,
        }
    )
    pool = await asyncpg.create_pool(nowhere, min_size=0, max_size=1, timeout=1)
    runs = {
        "jobs": lambda: jobs.work(pool, {}, idle=0.05),
        "schedules": lambda: schedules.run(pool, quick),
        "deliveries": lambda: deliveries.run(pool, quick),
        "enrichment": lambda: enrich.run(pool, quick),  # ticks every second
    }
    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(runs[loop]())
        await asyncio.sleep(2)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await pool.close()
    said = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
