"""Jobs: work done off the request path, in `custintel worker` processes.

Jobs live in Postgres and are claimed with FOR UPDATE SKIP LOCKED, so any number of workers can
run side by side and each job runs once. A running job's worker beats a heartbeat; a job whose
heartbeat stops (its worker died) is claimed again, up to MAX_ATTEMPTS times.

A job runs at most its time limit and can be cancelled. Async work is cancelled as a task; work in
threads (training) checks `stop_requested()` and stops itself, since nothing can stop a thread
from outside. Work that has not stopped GRACE_SECONDS later takes its worker process down with it
(`custintel serve` starts another; elsewhere the process manager does): a job that cannot be
stopped would otherwise hold its memory and a core for good.

Each worker process also beats in the `workers` table, so readiness can say whether any runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import threading
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import asyncpg
import orjson

from app.platform import errors
from app.platform.jsonbody import JSONObject

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
STALE_SECONDS = 30.0  # default; CUSTINTEL_JOB_STALE_SECONDS
TIMEOUT_SECONDS = 7200.0  # default; CUSTINTEL_JOB_TIMEOUT_SECONDS
GRACE_SECONDS = 10.0  # how long stopped work may take to end before its process is ended
EXIT_ABANDONED = 70  # the exit status of a worker that ended because a job would not stop
FINISHED = ("succeeded", "failed", "cancelled")
MAX_BACKOFF_SECONDS = 30.0

Progress = Callable[[float], Awaitable[None]]
Handler = Callable[[asyncpg.Connection, JSONObject, Progress], Awaitable[JSONObject]]

_COLUMNS = (
    "job_id, kind, status, params, progress, result, error, attempts, created_at, "
    "started_at, finished_at, cancel_requested_at, stage"
)
_STOP: ContextVar[threading.Event | None] = ContextVar("custintel_job_stop", default=None)
# Below this share done, an estimate of the time left is a guess, not a measurement.
ETA_FROM = 0.05
REPORT_EVERY_SECONDS = 1.0  # the most often a stage's steps are written to the job's row


@dataclass(frozen=True)
class Stage:
    """Where a running job is: its stage, and the steps of that stage done so far of all."""

    name: str
    done: int
    total: int

    def words(self) -> str:
        return f"{self.name} {self.done} of {self.total}" if self.total > 1 else self.name


Reporter = Callable[[float, Stage], None]
Watch = Callable[["Report"], Awaitable[None]]  # what a job run in the foreground shows
_REPORT: ContextVar[Reporter | None] = ContextVar("custintel_job_report", default=None)


def reporter() -> Reporter:
    """A callable for the running job's work to say where it is (the share of the whole job
    done, and the stage); safe to call from a thread started by asyncio.to_thread, which sees
    the job's context, and cheap to call often (a stage's first and last steps are written,
    the others at most every REPORT_EVERY_SECONDS). Outside a job it does nothing."""
    return _REPORT.get() or _ignore


def _ignore(value: float, stage: Stage) -> None:
    return None


def eta_seconds(elapsed: float, value: float) -> float | None:
    """The time a job `value` done after `elapsed` seconds has left, at the pace so far."""
    if not ETA_FROM <= value < 1:
        return None
    return elapsed * (1 - value) / value


@dataclass(frozen=True)
class Report:
    """What a job in the foreground shows: the share done, the stage, the time left."""

    value: float
    stage: Stage | None = None
    eta: float | None = None

    def line(self, label: str, *, bar: bool = True) -> str:
        """E.g. "training churn [#########           ]  31%  search 3 of 8, about 2 min
        left"."""
        filled = round(self.value * 30)
        head = f"{label} [{'#' * filled}{' ' * (30 - filled)}]" if bar else label
        tail = [] if self.stage is None else [self.stage.words()]
        if self.eta is not None:
            tail.append(f"about {_duration(self.eta)} left")
        return f"{head} {self.value:4.0%}" + (f"  {', '.join(tail)}" if tail else "")


class Shown:
    """A job's progress shown on a stream: one line redrawn in place on a terminal; elsewhere
    (a log, a CI run, a pipe) a whole line each time the stage moves or the share done moves by
    a tenth, never a carriage return."""

    def __init__(self, out: TextIO, label: str) -> None:
        self.out, self.label = out, label
        self.tty = out.isatty()
        self.said: tuple[str, int] | None = None

    def show(self, report: Report) -> None:
        if self.tty:
            print(f"\r{report.line(self.label)}", end="", file=self.out, flush=True)
            return
        now = ("" if report.stage is None else report.stage.words(), int(report.value * 10))
        if now != self.said:
            self.said = now
            print(report.line(self.label, bar=False), file=self.out, flush=True)

    def end(self) -> None:
        if self.tty:
            print(file=self.out, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def stop_requested() -> Callable[[], bool]:
    """A check that becomes true once the running job is cancelled or out of time, for work in
    threads to call between steps (a thread started by asyncio.to_thread sees the job's context).
    Outside a job it is always false."""
    event = _STOP.get()
    return event.is_set if event is not None else _never


def _never() -> bool:
    return False


async def enqueue(conn: asyncpg.Connection, *, kind: str, params: JSONObject) -> Job:
    row = await conn.fetchrow(
        f"INSERT INTO jobs (job_id, kind, status, params) VALUES ($1, $2, 'queued', $3::jsonb) "  # noqa: S608  (constant columns)
        f"RETURNING {_COLUMNS}",
        uuid.uuid4().hex,
        kind,
        orjson.dumps(params).decode(),
    )
    assert row is not None
    return record(row)


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Job:
    """A row of `jobs`, with its JSON decoded."""

    job_id: str
    kind: str
    status: JobStatus
    params: JSONObject
    progress: float
    result: JSONObject | None
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    stage: Stage | None = None  # while it runs, where it is (the jobs that report stages)

    @property
    def eta_seconds(self) -> float | None:
        """While it runs: the time it has left at its pace so far."""
        if self.status != "running" or self.started_at is None:
            return None
        elapsed = (datetime.now(UTC) - self.started_at).total_seconds()
        return eta_seconds(max(0.0, elapsed), self.progress)


def record(row: asyncpg.Record) -> Job:
    data = dict(row)
    for key in ("params", "result", "stage"):
        if isinstance(data.get(key), str):
            data[key] = orjson.loads(data[key])
    if data.get("stage") is not None:
        data["stage"] = Stage(**data["stage"])
    return Job(**data)


async def get(conn: asyncpg.Connection, job_id: str) -> Job:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = $1", job_id)  # noqa: S608  (constant columns)
    if row is None:
        raise errors.NotFound(f"No job {job_id!r}.")
    return record(row)


async def enqueue_once(
    conn: asyncpg.Connection, *, kind: str, params: JSONObject, slot: str
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
) -> list[Job]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM jobs WHERE ($1::text IS NULL OR kind = $1) "  # noqa: S608  (constant columns)
        "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, job_id LIMIT $3",
        kind,
        status,
        limit,
    )
    return [record(r) for r in rows]


async def wait(pool: asyncpg.Pool, job_id: str, *, within: float) -> Job:
    """The job once it has finished, or as it is when the timeout runs out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        async with pool.acquire() as conn:
            job = await get(conn, job_id)
        if job.status in FINISHED or loop.time() >= deadline:
            return job
        await asyncio.sleep(0.25)


# One statement per poll: a cancelled job whose worker died ends as cancelled (the CTE; those rows
# are not claimable, so the two updates never touch the same row), and the oldest claimable job
# is taken.
_CLAIM = f"""
WITH ended AS (
    UPDATE jobs SET status = 'cancelled', finished_at = now()
    WHERE status = 'running' AND cancel_requested_at IS NOT NULL
      AND heartbeat_at < now() - make_interval(secs => $1)
)
UPDATE jobs SET status = 'running', started_at = now(), heartbeat_at = now(),
                attempts = attempts + 1, error = NULL, stage = NULL
WHERE job_id = (
    SELECT job_id FROM jobs
    WHERE (status = 'queued'
       OR (status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)
           AND cancel_requested_at IS NULL))
      AND ($2::text[] IS NULL OR kind = ANY($2::text[]))
      -- a job may wait to be due (a merge's catch-up)
      AND (params ->> 'not_before' IS NULL OR (params ->> 'not_before')::timestamptz <= now())
    ORDER BY created_at
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING {_COLUMNS}
"""  # noqa: S608  (constant columns)


async def claim(
    conn: asyncpg.Connection,
    *,
    stale: float = STALE_SECONDS,
    kinds: Sequence[str] | None = None,
) -> Job | None:
    """Take the oldest queued job (of these kinds, if given), or one whose worker stopped
    beating; fail it for good when it has been tried MAX_ATTEMPTS times. A cancelled job whose
    worker died ends as cancelled."""
    while True:
        row = await conn.fetchrow(_CLAIM, stale, None if kinds is None else list(kinds))
        if row is None:
            return None
        job = record(row)
        if job.attempts <= MAX_ATTEMPTS:
            return job
        await finish(conn, job.job_id, error=f"gave up after {MAX_ATTEMPTS} attempts")


async def finish(
    conn: asyncpg.Connection,
    job_id: str,
    *,
    result: JSONObject | None = None,
    error: str | None = None,
    cancelled: bool = False,
) -> None:
    status = "cancelled" if cancelled else "failed" if error else "succeeded"
    await conn.execute(
        "UPDATE jobs SET status = $2::text, result = $3::jsonb, error = $4, finished_at = now(), "
        "progress = CASE WHEN $2::text = 'succeeded' THEN 1 ELSE progress END, stage = NULL "
        "WHERE job_id = $1",
        job_id,
        status,
        orjson.dumps(result).decode() if result is not None else None,
        error,
    )


async def cancel(conn: asyncpg.Connection, job_id: str) -> Job:
    """Cancel a job: a queued one at once, a running one by its worker within a few seconds.
    409 for a job that has finished."""
    row = await conn.fetchrow(
        f"""
        UPDATE jobs SET cancel_requested_at = coalesce(cancel_requested_at, now()),
            status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
            finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
        WHERE job_id = $1 AND status IN ('queued', 'running')
        RETURNING {_COLUMNS}
        """,  # noqa: S608  (constant columns)
        job_id,
    )
    if row is None:
        job = await get(conn, job_id)
        raise errors.Conflict(f"Job {job_id!r} has already finished ({job.status}).")
    return record(row)


async def run_one(
    pool: asyncpg.Pool,
    handlers: dict[str, Handler],
    *,
    stale: float = STALE_SECONDS,
    limit: float = TIMEOUT_SECONDS,
    kinds: Sequence[str] | None = None,
) -> bool:
    """Claim and run one job (of these kinds, if given); False when there was none."""
    async with pool.acquire() as conn:
        job = await claim(conn, stale=stale, kinds=kinds)
    if job is None:
        return False
    handler = handlers.get(job.kind)
    try:
        if handler is None:
            raise errors.InvalidPayload(f"No handler for jobs of kind {job.kind!r}.")
        await _run(pool, job, handler, stale=stale, limit=limit)
    except errors.Stopped:
        pass  # recorded by _run
    except errors.CustintelError as exc:
        async with pool.acquire() as conn:
            await finish(conn, job.job_id, error=exc.detail)
    except Exception:  # noqa: BLE001  (whatever happens, the job must end as failed)
        log.error("job failed", extra={"job_id": job.job_id, "trace": traceback.format_exc()})
        async with pool.acquire() as conn:
            await finish(
                conn, job.job_id, error="internal error while running the job; see the logs"
            )
    return True


async def run_here(
    pool: asyncpg.Pool,
    *,
    kind: str,
    params: JSONObject,
    handler: Handler,
    progress: Watch | None = None,
    limit: float = TIMEOUT_SECONDS,
) -> JSONObject:
    """Run a job in this process now (the CLI's foreground commands), recorded in the jobs table
    like any other and kept alive by heartbeats, so no worker takes it over. A CustintelError
    fails the job and is raised; so is errors.Stopped, when it is cancelled or out of time."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO jobs (job_id, kind, status, params, started_at, heartbeat_at, attempts) "  # noqa: S608  (constant columns)
            f"VALUES ($1, $2, 'running', $3::jsonb, now(), now(), 1) RETURNING {_COLUMNS}",
            uuid.uuid4().hex,
            kind,
            orjson.dumps(params).decode(),
        )
    assert row is not None
    job = record(row)
    try:
        return await _run(pool, job, handler, also=progress, limit=limit)
    except errors.CustintelError as exc:
        async with pool.acquire() as conn:
            await finish(conn, job.job_id, error=exc.detail)
        raise


async def _run(
    pool: asyncpg.Pool,
    job: Job,
    handler: Handler,
    *,
    also: Watch | None = None,
    stale: float = STALE_SECONDS,
    limit: float = TIMEOUT_SECONDS,
) -> JSONObject:
    """Run the handler while watching for a cancel and the time limit; raises errors.Stopped
    (after recording it) when either stops the job."""
    job_id = job.job_id
    loop = asyncio.get_running_loop()
    started = loop.time()
    # The latest word from the work, and whether it is written: one writer at a time, which
    # always writes the latest, so a stage's steps land in order however fast they come.
    latest: dict[str, Any] = {"value": 0.0, "stage": None, "written_at": -math.inf}
    writing = asyncio.Lock()
    pending: set[asyncio.Task[None]] = set()

    async def write() -> None:
        async with writing:
            value, stage = latest["value"], latest["stage"]
            latest["written_at"] = loop.time()
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE jobs SET progress = $2, stage = $3::jsonb, heartbeat_at = now() "
                    "WHERE job_id = $1",
                    job_id,
                    value,
                    None if stage is None else orjson.dumps(stage).decode(),
                )
            if also is not None:
                eta = eta_seconds(loop.time() - started, value)
                await also(Report(value, stage, eta))

    async def progress(value: float) -> None:
        latest["value"] = max(0.0, min(1.0, value))
        await write()

    def report(value: float, stage: Stage) -> None:
        def note() -> None:
            # A stage's first and last steps are always written, the ones between at most
            # every REPORT_EVERY_SECONDS.
            edge = stage.done in (0, stage.total) or latest["stage"] is None
            edge = edge or latest["stage"].name != stage.name
            latest["value"], latest["stage"] = max(0.0, min(1.0, value)), stage
            if edge or loop.time() - latest["written_at"] >= REPORT_EVERY_SECONDS:
                latest["written_at"] = loop.time()
                task = loop.create_task(write())
                pending.add(task)
                task.add_done_callback(pending.discard)

        loop.call_soon_threadsafe(note)

    async def call() -> JSONObject:
        async with pool.acquire() as conn:
            return await handler(conn, job.params, progress)

    stop = threading.Event()
    token, told = _STOP.set(stop), _REPORT.set(report)
    try:
        work = asyncio.create_task(call())  # the task keeps the context with them in it
    finally:
        _STOP.reset(token)
        _REPORT.reset(told)
    watch = asyncio.create_task(_watch(pool, job_id, stale=stale, limit=limit))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            reason = watch.result()
            stop.set()
            work.cancel()
            await asyncio.wait({work}, timeout=GRACE_SECONDS)
            detail = (
                "cancelled"
                if reason == "cancelled"
                else f"stopped after its time limit of {limit:g} s (CUSTINTEL_JOB_TIMEOUT_SECONDS)"
            )
            async with pool.acquire() as conn:
                await finish(conn, job_id, error=detail, cancelled=reason == "cancelled")
            log.warning("job stopped", extra={"job_id": job_id, "reason": reason})
            if not work.done():
                _abandon(job_id)
            raise errors.Stopped(detail)
        result = work.result()
        async with pool.acquire() as conn:
            await finish(conn, job_id, result=result)
        log.info("job succeeded", extra={"job_id": job_id, "kind": job.kind})
        return result
    finally:
        for task in (work, watch):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watch


async def _watch(
    pool: asyncpg.Pool, job_id: str, *, stale: float, limit: float
) -> Literal["cancelled", "timed_out"]:
    """Beat the job's heartbeat (every stale / 6 seconds) until it is cancelled or out of time,
    and say which. A cancel is looked for every second, with a read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    every = stale / 6
    beaten = loop.time()
    while True:
        await asyncio.sleep(max(0.0, min(every, 1.0, deadline - loop.time())))
        async with pool.acquire() as conn:
            if loop.time() - beaten >= every:
                beaten = loop.time()
                cancelled = await conn.fetchval(
                    "UPDATE jobs SET heartbeat_at = now() WHERE job_id = $1 "
                    "RETURNING cancel_requested_at IS NOT NULL",
                    job_id,
                )
            else:
                cancelled = await conn.fetchval(
                    "SELECT cancel_requested_at IS NOT NULL FROM jobs WHERE job_id = $1", job_id
                )
        if cancelled:
            return "cancelled"
        if loop.time() >= deadline:
            return "timed_out"


def _abandon(job_id: str) -> None:
    """Work that would not stop: end the process, since its thread cannot be ended otherwise."""
    log.critical(
        "stopped job did not end; the worker process exits so that a fresh one takes its place",
        extra={"job_id": job_id},
    )
    logging.shutdown()
    os._exit(EXIT_ABANDONED)


async def beat_worker(pool: asyncpg.Pool, *, every: float) -> None:
    """This worker process's heartbeat in `workers` until cancelled; rows of workers silent for
    a day are removed. The row goes when the worker stops."""
    worker_id = uuid.uuid4().hex
    try:
        while True:
            with contextlib.suppress(
                OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError
            ):
                async with pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO workers (worker_id, hostname, pid) VALUES ($1, $2, $3) "
                        "ON CONFLICT (worker_id) DO UPDATE SET beat_at = now()",
                        worker_id,
                        socket.gethostname()[:255],
                        os.getpid(),
                    )
                    await conn.execute(
                        "DELETE FROM workers WHERE beat_at < now() - interval '1 day'"
                    )
            await asyncio.sleep(every)
    finally:
        with contextlib.suppress(Exception):
            async with pool.acquire() as conn:
                await conn.execute("DELETE FROM workers WHERE worker_id = $1", worker_id)


async def live_workers(conn: asyncpg.Connection, *, within: float) -> int:
    """Worker processes that beat within the last `within` seconds."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM workers WHERE beat_at >= now() - make_interval(secs => $1)", within
    )
    return count


async def work(
    pool: asyncpg.Pool,
    handlers: dict[str, Handler],
    *,
    idle: float = 0.5,
    stale: float = STALE_SECONDS,
    limit: float = TIMEOUT_SECONDS,
    kinds: Sequence[str] | None = None,
) -> None:
    """Run jobs (of these kinds, if given) until cancelled. While the database is unreachable,
    wait longer each time (up to MAX_BACKOFF_SECONDS) and say so once, not on every try."""
    backoff = idle
    while True:
        try:
            ran = await run_one(pool, handlers, stale=stale, limit=limit, kinds=kinds)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            if backoff == idle:
                log.warning("database unreachable; worker waiting")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            continue
        except Exception:  # a job that cannot even be closed stays running and is retried later
            log.exception("worker loop error")
            ran = False
        if backoff != idle:
            log.warning("database reachable again; worker resumes")
            backoff = idle
        if not ran:
            await asyncio.sleep(idle)


async def work_in_lanes(
    pool: asyncpg.Pool,
    handlers: dict[str, Handler],
    *,
    short: Sequence[str],
    idle: float = 0.5,
    stale: float = STALE_SECONDS,
    limit: float = TIMEOUT_SECONDS,
) -> None:
    """Two lanes in one worker: one runs any job, oldest first; the other only the `short`
    kinds (an erasure, ...), so they never wait behind a long training. Training runs in a
    thread, so the lanes share the process without waiting on each other."""
    await asyncio.gather(
        work(pool, handlers, idle=idle, stale=stale, limit=limit),
        work(pool, handlers, idle=idle, stale=stale, limit=limit, kinds=short),
    )
