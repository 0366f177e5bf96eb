"""A job says where it is: its stage, the steps of the stage, the time it has left; the CLI and
the demo print it as a bar on a terminal and as whole lines elsewhere."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from app.demo import simulator
from app.ml import pipeline, search
from app.platform import db, jobs
from app.platform.settings import Settings
from tests.fixtures.http import load

END = datetime(2026, 6, 1, tzinfo=UTC)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_whole_lines_where_the_output_is_not_a_terminal() -> None:
    out = io.StringIO()
    shown = jobs.Shown(out, "training churn")
    shown.show(jobs.Report(0.10, jobs.Stage("search", 1, 8), eta=130.0))
    shown.show(jobs.Report(0.11, jobs.Stage("search", 1, 8), eta=120.0))  # nothing new to say
    shown.show(jobs.Report(0.15, jobs.Stage("search", 2, 8), eta=110.0))
    shown.show(jobs.Report(1.0))
    shown.end()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == [
        "training churn  10%  search 1 of 8, about 2 min left",
        "training churn  15%  search 2 of 8, about 2 min left",
        "training churn 100%",
    ]

    tty = Terminal()
    shown = jobs.Shown(tty, "training churn")
    shown.show(jobs.Report(0.5, jobs.Stage("refit", 0, 1), eta=30.0))
    shown.end()
    assert tty.getvalue() == (
        "\rtraining churn [###############               ]  50%  refit, about 30 s left\n"
    )


async def test_a_running_job_answers_its_stage_and_the_time_left(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    reached, release = asyncio.Event(), asyncio.Event()

    async def probe(
        conn: asyncpg.Connection, params: dict[str, Any], progress: jobs.Progress
    ) -> dict[str, Any]:
        await asyncio.sleep(0.2)  # some time spent, so there is a pace to go by
        jobs.reporter()(0.5, jobs.Stage("search", 3, 8))
        reached.set()
        await release.wait()
        return {}

    queued = await jobs.enqueue(conn, kind="probe", params={})
    pool = await db.create_pool(str(settings.database_url), settings)
    try:
        running = asyncio.create_task(jobs.run_one(pool, {"probe": probe}))
        await asyncio.wait_for(reached.wait(), 30)
        for _ in range(100):  # the write lands on the loop shortly after
            job = (await client.get(f"/v1/jobs/{queued.job_id}")).json()
            if job["stage"] is not None:
                break
            await asyncio.sleep(0.05)
        assert job["status"] == "running" and job["progress"] == 0.5
        assert job["stage"] == {"name": "search", "done": 3, "total": 8}
        assert 0.1 <= job["eta_seconds"] <= 30  # as long again as it took so far
        release.set()
        assert await running
    finally:
        await pool.close()
    done = (await client.get(f"/v1/jobs/{queued.job_id}")).json()
    assert done["status"] == "succeeded"
    assert (done["stage"], done["eta_seconds"], done["progress"]) == (None, None, 1.0)


@pytest.mark.slow
async def test_a_training_tells_each_stage_and_records_where_the_time_went(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=250, end=END, seed=9)
    await load(client, world)
    seen: list[jobs.Report] = []

    async def watch(report: jobs.Report) -> None:
        seen.append(report)

    pool = await db.create_pool(str(settings.database_url), settings)
    try:
        result = await jobs.run_here(
            pool,
            kind="train",
            params={"target": "churn", "as_of": END.isoformat()},
            handler=pipeline.handler(settings),
            progress=watch,
        )
    finally:
        await pool.close()

    stages = [r.stage for r in seen if r.stage is not None]
    order = list(dict.fromkeys(s.name for s in stages))
    assert order == [
        "rollups",
        "texts",
        "themes",
        "catalog",
        "training set",
        "features now",
        "search",
        "estimate",
        "refit",
        "segments",
        "bands",
        "baselines",
        "saving",
    ]
    values = [r.value for r in seen]
    assert values == sorted(values) and values[-1] < 1
    rows = [s for s in stages if s.name == "training set"]
    assert rows[-1].done == rows[-1].total > 0  # every row of the training set built
    trials = [s for s in stages if s.name == "search"]
    assert trials[-1].total % len(search.CANDIDATES) == 0
    assert trials[-1].done == trials[-1].total
    assert any(r.eta is not None and r.eta > 0 for r in seen)

    [manifest] = settings.models_dir.rglob(f"{result['model_id']}/manifest.json")
    timings = json.loads(manifest.read_text())["timings"]
    trained = ("search", "estimate", "refit", "segments", "bands", "baselines")
    assert set(order[:6]) | set(trained) | {"train"} == set(timings)
    assert sum(timings[k] for k in trained) == pytest.approx(timings["train"], abs=0.05)
    assert all(v >= 0 for v in timings.values())
