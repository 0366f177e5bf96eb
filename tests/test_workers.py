"""Worker processes on one database: scheduled jobs run exactly once, and a job whose worker
dies is taken over and finished."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from app.demo import simulator
from app.platform.settings import Settings
from tests.fixtures.http import load

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser


def start_worker(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CUSTINTEL_DATABASE_URL": str(settings.database_url),
        "CUSTINTEL_MODELS_DIR": str(settings.models_dir),
        "CUSTINTEL_RESCORE_EVERY_HOURS": "0",
        "CUSTINTEL_RETRAIN_EVERY_DAYS": "0",
        "CUSTINTEL_EVALUATE_EVERY_HOURS": "0",
        "CUSTINTEL_RETENTION_EVERY_HOURS": "0",
        "CUSTINTEL_VOC_REFRESH_MINUTES": "0",
        "CUSTINTEL_CLV_FIT_EVERY_HOURS": "0",
        "CUSTINTEL_UPLIFT_FIT_EVERY_HOURS": "0",
        **{f"CUSTINTEL_{k.upper()}": v for k, v in extra.items()},
    }
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)


def stop(*workers: subprocess.Popen[bytes]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            # A worker finishes its job's current step before it stops; on a machine busy
            # enough for that to take longer, it is killed (no test here is about stopping).
            worker.kill()
            worker.wait()


async def test_two_workers_run_every_scheduled_job_exactly_once(
    settings: Settings,
    conn: asyncpg.Connection,
    insert_model: Callable[..., Awaitable[None]],
) -> None:
    await insert_model(as_of=datetime.now(UTC), activated=True)
    # A period of 4.5 s: both workers' schedulers tick every 2.25 s, until three periods have
    # been run (starting a worker takes seconds on a busy machine, so wait for work, not time).
    workers = [start_worker(settings, evaluate_every_hours="0.00125") for _ in range(2)]
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'succeeded'")
            if done >= 3:
                break
            await asyncio.sleep(0.5)
    finally:
        stop(*workers)
    rows = await conn.fetch("SELECT slot, status, attempts, error FROM jobs ORDER BY created_at")
    assert len(rows) >= 3, rows
    assert len({r["slot"] for r in rows}) == len(rows)
    numbers = sorted(int(r["slot"].split(":")[1]) for r in rows)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # none skipped
    finished = [r for r in rows if r["status"] != "queued"]
    assert len(finished) >= len(rows) - 1  # the last may have been enqueued just before the end
    assert all(r["status"] == "succeeded" and r["attempts"] == 1 for r in finished), finished


async def test_a_job_whose_worker_dies_is_retried_and_finishes(
    client: httpx.AsyncClient, settings: Settings, conn: asyncpg.Connection
) -> None:
    end = datetime(2026, 6, 1, tzinfo=UTC)
    world = await asyncio.to_thread(simulator.generate, accounts=300, end=end, seed=8)
    await load(client, world)
    first = start_worker(settings, job_stale_seconds="3")
    queued = await client.post(
        "/v1/models/train", json={"target": "churn", "as_of": end.isoformat()}
    )
    job_id = queued.json()["job_id"]
    try:
        deadline = time.monotonic() + 60
        while await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id) != "running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id) == "running"

    second = start_worker(settings, job_stale_seconds="3")
    try:
        job = (await client.get(f"/v1/jobs/{job_id}", params={"wait": "true"})).json()
    finally:
        stop(second)
    assert job["status"] == "succeeded", job
    assert await conn.fetchval("SELECT attempts FROM jobs WHERE job_id = $1", job_id) == 2
    assert (await client.get(f"/v1/models/{job['result']['model_id']}")).status_code == 200


async def test_a_worker_reads_the_sentiment_of_a_new_text_within_seconds(
    settings: Settings, conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    worker = start_worker(settings, sentiment_words='{"flaky": -2}')
    try:
        event = {
            "event_id": "t-1",
            "type": "ticket_opened",
            "occurred_at": datetime.now(UTC).isoformat(),
            "account_id": "acme",
            "text": "The sync is flaky again",
        }
        assert (await client.post("/v1/events", json=event)).status_code == 202
        deadline = time.monotonic() + 60  # starting a worker takes seconds on a busy machine
        while time.monotonic() < deadline:
            if await conn.fetchval("SELECT count(*) FROM text_enrichments"):
                break
            await asyncio.sleep(0.2)
    finally:
        stop(worker)
    [read] = (await client.get("/v1/accounts/acme/events")).json()["items"]
    # The operator's word made it negative (VADER alone reads the text as neutral).
    assert read["sentiment"]["label"] == "negative", read
