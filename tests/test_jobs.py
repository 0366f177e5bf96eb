"""Jobs end: a cancel or the time limit stops them, a train request too large for the settings is
refused before it is queued, and the worker `serve` runs is replaced when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from app.activation import schedules
from app.demo import simulator
from app.governance import privacy
from app.ml import training
from app.platform import db, errors, jobs
from app.platform.settings import Settings
from tests.fixtures import synthetic
from tests.fixtures.http import load
from tests.fixtures.live import free_port, serve_env, serving

END = datetime(2026, 6, 1, tzinfo=UTC)


@contextlib.contextmanager
def worker(settings: Settings, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "CUSTINTEL_DATABASE_URL": str(settings.database_url),
        "CUSTINTEL_MODELS_DIR": str(settings.models_dir),
        **{f"CUSTINTEL_{k.upper()}": v for k, v in extra.items()},
    }
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


async def wait_for(client: httpx.AsyncClient, job_id: str, *statuses: str) -> dict[str, object]:
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, object] = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)


async def test_a_queued_job_is_cancelled_at_once_and_a_finished_one_is_409(
    client: httpx.AsyncClient,
) -> None:
    queued = (await client.post("/v1/models/train", json={"target": "churn"})).json()
    cancelled = await client.post(f"/v1/jobs/{queued['job_id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancel_requested_at"] is not None
    again = await client.post(f"/v1/jobs/{queued['job_id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    listed = (await client.get("/v1/jobs", params={"status": "cancelled"})).json()
    assert [j["job_id"] for j in listed] == [queued["job_id"]]
    assert (await client.post("/v1/jobs/nope/cancel")).status_code == 404


def test_training_stops_itself_between_boosting_rounds_when_asked() -> None:
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3  # a few rounds, then stop

    options = training.Options(num_threads=1, stop_requested=stop)
    with pytest.raises(errors.Stopped):
        training.train(synthetic.world(n_accounts=300, snapshots=3), options)
    assert len(calls) == 4


@pytest.mark.slow
async def test_a_running_job_is_cancelled_and_its_worker_goes_on(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=300, end=END, seed=4)
    await load(client, world)
    with worker(settings) as process:
        queued = (
            await client.post(
                "/v1/models/train", json={"target": "churn", "as_of": END.isoformat()}
            )
        ).json()
        await wait_for(client, queued["job_id"], "running")
        assert (await client.post(f"/v1/jobs/{queued['job_id']}/cancel")).status_code == 202
        job = await wait_for(client, queued["job_id"], "cancelled", "succeeded", "failed")
        assert job["status"] == "cancelled", job
        # The same worker takes the next job.
        second = (
            await client.post(
                "/v1/models/train", json={"target": "churn", "as_of": END.isoformat()}
            )
        ).json()
        job = await wait_for(client, second["job_id"], "succeeded", "failed")
        assert job["status"] == "succeeded", job
        assert process.poll() is None


@pytest.mark.slow
async def test_a_job_past_its_time_limit_is_stopped_and_failed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=300, end=END, seed=4)
    await load(client, world)
    with worker(settings, job_timeout_seconds="1") as process:
        queued = (
            await client.post(
                "/v1/models/train", json={"target": "churn", "as_of": END.isoformat()}
            )
        ).json()
        job = await wait_for(client, queued["job_id"], "succeeded", "failed", "cancelled")
        assert job["status"] == "failed"
        assert "time limit of 1 s" in str(job["error"])
        assert process.poll() is None


async def test_a_train_request_beyond_the_limits_is_refused_before_it_is_queued(
    client: httpx.AsyncClient, app: object
) -> None:
    await client.post(
        "/v1/events",
        json={"type": "login", "account_id": "a", "occurred_at": "2024-01-01T00:00:00Z"},
    )
    far = await client.post(
        "/v1/models/train",
        json={"target": "churn", "as_of": "9999-12-31T00:00:00Z", "snapshot_every_days": 1},
    )
    assert far.status_code == 422, far.text
    assert far.json()["errors"][0]["loc"] == ["body", "as_of"]
    daily = await client.post(
        "/v1/models/train",
        json={"target": "churn", "as_of": "2026-01-01T00:00:00Z", "snapshot_every_days": 1},
    )
    assert daily.status_code == 422, daily.text
    assert "CUSTINTEL_TRAIN_MAX_SNAPSHOTS" in daily.json()["detail"]
    app.state.runtime.settings.train_max_rows = 5  # type: ignore[attr-defined]
    rows = await client.post(
        "/v1/models/train",
        json={"target": "churn", "as_of": "2026-01-01T00:00:00Z", "snapshot_every_days": 30},
    )
    assert rows.status_code == 422 and "CUSTINTEL_TRAIN_MAX_ROWS" in rows.json()["detail"]
    assert (await client.get("/v1/jobs")).json() == []


@pytest.mark.slow
def test_serve_replaces_its_job_worker_when_it_dies_and_readiness_says_so(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    # A dead worker's last beat counts for job_stale_seconds: short here, so the test is too.
    env = serve_env(
        port,
        database_url=database_url,
        models_dir=str(tmp_path / "models"),
        job_stale_seconds="3",
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> httpx.Response | None:
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{base}/readyz", timeout=2)
        return None

    def job_workers(serve: subprocess.Popen[bytes]) -> list[psutil.Process]:
        children = psutil.Process(serve.pid).children()
        return [c for c in children if "worker" in c.cmdline()]

    with serving(env) as serve:
        deadline = time.monotonic() + 120
        while (answer := ready()) is None or answer.status_code != 200:
            assert serve.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.2)
        assert answer.json()["workers"] == 1
        [first] = job_workers(serve)
        first.send_signal(signal.SIGKILL)
        first.wait(10)

        deadline = time.monotonic() + 60
        while not (replacement := job_workers(serve)) or replacement[0].pid == first.pid:
            assert time.monotonic() < deadline, "the worker was not replaced"
            time.sleep(0.2)
        assert first.pid not in {c.pid for c in psutil.Process(serve.pid).children()}  # reaped
        while (answer := ready()) is None or answer.json()["workers"] != 1:
            assert time.monotonic() < deadline, "the new worker never beat"
            time.sleep(0.2)
        assert answer.status_code == 200
        serve.terminate()
        assert serve.wait(30) == 128 + signal.SIGTERM


async def test_a_short_job_does_not_wait_behind_a_long_one(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    release = asyncio.Event()

    async def long(_: asyncpg.Connection, __: dict[str, Any], ___: jobs.Progress) -> dict[str, Any]:
        await release.wait()  # a training of many minutes
        return {}

    async def short(
        _: asyncpg.Connection, __: dict[str, Any], ___: jobs.Progress
    ) -> dict[str, Any]:
        return {"erased": True}

    training_job = await jobs.enqueue(conn, kind="train", params={})
    erasure = await jobs.enqueue(conn, kind=privacy.JOB, params={})
    pool = await db.create_pool(str(settings.database_url), settings)
    lanes = asyncio.create_task(
        jobs.work_in_lanes(
            pool, {"train": long, privacy.JOB: short}, short=schedules.SHORT_JOBS, idle=0.05
        )
    )
    try:
        deadline = time.monotonic() + 30
        while (await jobs.get(conn, erasure.job_id)).status != "succeeded":
            assert time.monotonic() < deadline, "the erasure waited behind the training"
            await asyncio.sleep(0.05)
        assert (await jobs.get(conn, training_job.job_id)).status == "running"
        release.set()
        while (await jobs.get(conn, training_job.job_id)).status != "succeeded":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        release.set()
        lanes.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lanes
        await pool.close()
