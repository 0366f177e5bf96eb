"""Jobs: work done off the request path, in `custintel worker` processes.

Jobs live in Postgres and are claimed with FOR UPDATE SKIP LOCKED, so any number of workers can
run side by side and each job runs once. A running job's worker beats a heartbeat; a job whose
heartbeat stops (its worker died) is claimed again, up to MAX_ATTEMPTS times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson

from app import errors

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
STALE_SECONDS = 30.0  # default; CUSTINTEL_JOB_STALE_SECONDS

Progress = Callable[[float], Awaitable[None]]
Handler = Callable[[asyncpg.Connection, dict[str, Any], Progress], Awaitable[dict[str, Any]]]

_COLUMNS = (
    "job_id, kind, status, params, progress, result, error, attempts, created_at, "
    "started_at, finished_at"
)


async def enqueue(conn: asyncpg.Connection, *, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"INSERT INTO jobs (job_id, kind, status, params) VALUES ($1, $2, 'queued', $3::jsonb) "
        f"RETURNING {_COLUMNS}",
        uuid.uuid4().hex,
        kind,
        orjson.dumps(params).decode(),
    )
    assert row is not None
    return record(row)


def record(row: asyncpg.Record) -> dict[str, Any]:
    job = dict(row)
    for key in ("params", "result"):
        if isinstance(job.get(key), str):
            job[key] = orjson.loads(job[key])
    return job


async def get(conn: asyncpg.Connection, job_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = $1", job_id)
    if row is None:
        raise errors.NotFound(f"No job {job_id!r}.")
    return record(row)


async def enqueue_once(
    conn: asyncpg.Connection, *, kind: str, params: dict[str, Any], slot: str
) -> bool:
    """Enqueue a scheduled job unless its slot already has one; True when this call did."""
    created = await conn.fetchval(
        "INSERT INTO jobs (job_id, kind, status, params, slot) "
        "VALUES ($1, $2, 'queued', $3::jsonb, $4) ON CONFLICT (slot) DO NOTHING RETURNING 1",
        uuid.uuid4().hex,
        kind,
        orjson.dumps(params).decode(),
        slot,
    )
    return created is not None


async def listed(
    conn: asyncpg.Connection, *, kind: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR kind = $1) "
        "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, job_id LIMIT $3",
        kind,
        status,
        limit,
    )
    return [record(r) for r in rows]


async def wait(pool: asyncpg.Pool, job_id: str, *, within: float) -> dict[str, Any]:
    """The job once it has finished, or as it is when the timeout runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        async with pool.acquire() as conn:
            job = await get(conn, job_id)
        if job["status"] in ("succeeded", "failed") or loop.time() >= deadline:
            return job
        await asyncio.sleep(0.25)


_CLAIM = f"""
UPDATE jobs SET status = 'running', started_at = now(), heartbeat_at = now(),
                attempts = attempts + 1, error = NULL
WHERE job_id = (
    SELECT job_id FROM jobs
    WHERE status = 'queued'
       OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => $1))
    ORDER BY created_at
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING {_COLUMNS}
"""


async def claim(conn: asyncpg.Connection, *, stale: float = STALE_SECONDS) -> dict[str, Any] | None:
    """Take the oldest queued job, or one whose worker stopped beating; fail it for good when it
    has been tried MAX_ATTEMPTS times."""
    while True:
        row = await conn.fetchrow(_CLAIM, stale)
        if row is None:
            return None
        job = record(row)
        if job["attempts"] <= MAX_ATTEMPTS:
            return job
        await finish(conn, job["job_id"], error=f"gave up after {MAX_ATTEMPTS} attempts")


async def finish(
    conn: asyncpg.Connection,
    job_id: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    await conn.execute(
        "UPDATE jobs SET status = $2::text, result = $3::jsonb, error = $4, finished_at = now(), "
        "progress = CASE WHEN $2::text = 'succeeded' THEN 1 ELSE progress END WHERE job_id = $1",
        job_id,
        "failed" if error else "succeeded",
        orjson.dumps(result).decode() if result is not None else None,
        error,
    )


async def run_one(
    pool: asyncpg.Pool, handlers: dict[str, Handler], *, stale: float = STALE_SECONDS
) -> bool:
    """Claim and run one job; False when there was none."""
    async with pool.acquire() as conn:
        job = await claim(conn, stale=stale)
    if job is None:
        return False
    handler = handlers.get(job["kind"])
    try:
        if handler is None:
            raise errors.InvalidPayload(f"No handler for jobs of kind {job['kind']!r}.")
        await _run(pool, job, handler, stale=stale)
    except errors.CustintelError as exc:
        async with pool.acquire() as conn:
            await finish(conn, job["job_id"], error=exc.detail)
    except Exception:  # noqa: BLE001  (whatever happens, the job must end as failed)
        log.error("job failed", extra={"job_id": job["job_id"], "trace": traceback.format_exc()})
        async with pool.acquire() as conn:
            await finish(
                conn, job["job_id"], error="internal error while running the job; see the logs"
            )
    return True


async def run_here(
    pool: asyncpg.Pool,
    *,
    kind: str,
    params: dict[str, Any],
    handler: Handler,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run a job in this process now (the CLI's foreground commands), recorded in the jobs table
    like any other and kept alive by heartbeats, so no worker takes it over. A CustintelError
    fails the job and is raised."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO jobs (job_id, kind, status, params, started_at, heartbeat_at, attempts) "
            f"VALUES ($1, $2, 'running', $3::jsonb, now(), now(), 1) RETURNING {_COLUMNS}",
            uuid.uuid4().hex,
            kind,
            orjson.dumps(params).decode(),
        )
    assert row is not None
    job = record(row)
    try:
        return await _run(pool, job, handler, also=progress)
    except errors.CustintelError as exc:
        async with pool.acquire() as conn:
            await finish(conn, job["job_id"], error=exc.detail)
        raise


async def _run(
    pool: asyncpg.Pool,
    job: dict[str, Any],
    handler: Handler,
    *,
    also: Progress | None = None,
    stale: float = STALE_SECONDS,
) -> dict[str, Any]:
    job_id = job["job_id"]

    async def progress(value: float) -> None:
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE jobs SET progress = $2, heartbeat_at = now() WHERE job_id = $1",
                job_id,
                max(0.0, min(1.0, value)),
            )
        if also is not None:
            await also(value)

    async def beat() -> None:
        while True:
            await asyncio.sleep(stale / 6)
            async with pool.acquire() as conn:
                await conn.execute("UPDATE jobs SET heartbeat_at = now() WHERE job_id = $1", job_id)

    heart = asyncio.create_task(beat())
    try:
        async with pool.acquire() as conn:
            result = await handler(conn, job["params"], progress)
        async with pool.acquire() as conn:
            await finish(conn, job_id, result=result)
        log.info("job succeeded", extra={"job_id": job_id, "kind": job["kind"]})
        return result
    finally:
        heart.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heart


async def work(
    pool: asyncpg.Pool,
    handlers: dict[str, Handler],
    *,
    idle: float = 0.5,
    stale: float = STALE_SECONDS,
) -> None:
    """Run jobs until cancelled."""
    while True:
        try:
            ran = await run_one(pool, handlers, stale=stale)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            log.warning("database unreachable; worker waiting")
            ran = False
        except Exception:  # a job that cannot even be closed stays running and is retried later
            log.exception("worker loop error")
            ran = False
        if not ran:
            await asyncio.sleep(idle)
