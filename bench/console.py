"""Console pages on bench/score.py's world (100,000 simulated accounts by default): the time each
page takes to answer over real HTTP on loopback, its median and 95th percentile, next to the
300 ms ceiling the console is held to.

    .venv/bin/python bench/console.py [--accounts 100000] [--usage 0.05] [--requests 40]
                                      [--state DIR]

With `--state DIR` the embedded Postgres and the models are kept in DIR: a later run with the
same DIR migrates that world to this tree's schema and times the pages without building the
world again (an hour at 100,000 accounts on 2 cores).

The world is loaded with COPY, a churn and an expansion model are trained by the worker (on two
snapshots), and
every account is scored twice (30 days apart, so the book shows changes and the account page
what changed). Then a lead (who sees every account) and a CSM (who owns an eighth of them) sign
in, and each page is asked for `--requests` times, one request at a time: the book's first page,
a page 20 pages deep, the book filtered to the high band, account pages of random accounts, the
inbox, the models page, the voice of the customer, and the sources page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform import db, migrate  # noqa: E402
from bench.ingest import (  # noqa: E402
    create_database,
    scratch_dir,
    start_server,
    verdict,
    wait_ready,
)
from bench.score import END, load, run_job, start_worker, world  # noqa: E402

CEILING_MS = 300.0
PASSWORD = "bench console password"


async def _users(url: str) -> None:
    from app.web import users

    conn = await asyncpg.connect(url)
    try:
        for email, role in (
            ("lead@vendor.example", "lead"),
            ("csm1@vendor.example", "csm"),
            ("admin@vendor.example", "admin"),
        ):
            await users.ensure(conn, email=email, role=users.role_of(role), password=PASSWORD)
    finally:
        await conn.close()


async def _worker_job(url: str, kind: str) -> float:
    """Queue a job of the worker's (the evaluation of the active models, which the models page
    reads back; the count of the voice of the customer, which its page reads) and wait for it;
    its seconds."""
    from app.platform import jobs

    conn = await asyncpg.connect(url)
    try:
        job = await jobs.enqueue(conn, kind=kind, params={})
        start = time.perf_counter()
        while True:
            status = await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job.job_id)
            if status in ("succeeded", "failed", "cancelled"):
                break
            await asyncio.sleep(1)
        if status != "succeeded":
            raise RuntimeError(f"{kind} {status}")
        return time.perf_counter() - start
    finally:
        await conn.close()


async def _build(port: int, url: str) -> None:
    # Two snapshots, as bench/score.py's training trains on (the training time is measured
    # there; here the models only have to exist).
    dates = [(END - timedelta(days=90 + 30 * k)).isoformat() for k in (1, 0)]
    for target in ("churn", "expansion"):
        body = {"target": target, "as_of": END.isoformat(), "snapshot_dates": dates}
        await run_job(port, "/v1/models/train", body)
    for as_of in (END - timedelta(days=30), END):
        await run_job(port, "/v1/scores/rescore", {"as_of": as_of.isoformat(), "top": 3})
    print("  evaluating the models as the worker does ...", flush=True)
    evaluated = await _worker_job(url, "evaluate")
    print(f"  evaluated in {evaluated:.0f} s (the worker's, off every page)", flush=True)


async def _signed_in(base: str, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=120)
    answer = await client.post("/app/login", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text[:300]
    return client


async def _time(client: httpx.AsyncClient, paths: list[str]) -> list[float]:
    seconds = []
    for path in paths:
        start = time.perf_counter()
        answer = await client.get(path)
        seconds.append(time.perf_counter() - start)
        assert answer.status_code == 200, (path, answer.status_code, answer.text[:300])
    return seconds


async def _deep_cursor(client: httpx.AsyncClient, pages: int) -> str:
    path = "/app/"
    for _ in range(pages):
        page = (await client.get(path)).text
        start = page.index('<a class="more" href="') + len('<a class="more" href="')
        path = page[start : page.index('"', start)].replace("&amp;", "&")
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--usage", type=float, default=0.05, help="simulator's usage scale")
    parser.add_argument("--requests", type=int, default=40, help="requests per page")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--state", type=Path, help="keep (or reuse) the world in this folder")
    args = parser.parse_args()

    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    scratch = args.state or scratch_dir()
    scratch.mkdir(parents=True, exist_ok=True)
    built = scratch / "built"
    reuse = args.state is not None and built.exists()
    server_url = (
        db.plain_url(external)
        if external
        else await asyncio.to_thread(db.start_embedded, scratch / "pg")
    )
    if reuse:
        url = urlunsplit(urlsplit(server_url)._replace(path="/bench_console"))
        await asyncio.to_thread(migrate.upgrade, url)
        events = int(built.read_text())
        print(f"reusing the world in {scratch} ({events:,} events)", flush=True)
    else:
        print(f"simulating {args.accounts:,} accounts ...", flush=True)
        pieces = await world(args.accounts, args.usage)
        url = await create_database(server_url, "bench_console", root=ROOT)
        events, seconds = await load(url, pieces)
        print(
            f"  {events:,} events loaded in {seconds:.0f} s; training and scoring ...", flush=True
        )
    models_dir = scratch / "models"
    env = {"CUSTINTEL_MODELS_DIR": str(models_dir), "CUSTINTEL_RESCORE_EVERY_HOURS": "0"}
    port = 19000 + os.getpid() % 1000
    server = start_server(url, port, args.workers, root=ROOT, **env)
    worker = start_worker(url, ROOT, env)
    try:
        await wait_ready(port)
        if not reuse:
            await _build(port, url)
            if args.state is not None:
                built.write_text(str(events))
        counted = await _worker_job(url, "voc_refresh")
        print(f"  the voice of the customer counted in {counted:.1f} s (the worker's)", flush=True)
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
        await _users(url)
        base = f"http://127.0.0.1:{port}"
        lead = await _signed_in(base, "lead@vendor.example")
        csm = await _signed_in(base, "csm1@vendor.example")
        admin = await _signed_in(base, "admin@vendor.example")
        conn = await asyncpg.connect(url)
        try:
            ids = [r[0] for r in await conn.fetch("SELECT account_id FROM accounts")]
        finally:
            await conn.close()
        rng = random.Random(7)
        n = args.requests
        deep = await _deep_cursor(lead, 20)
        pages = [
            ("book, first page (lead: every account)", lead, ["/app/"] * n),
            ("book, first page (csm: own accounts)", csm, ["/app/"] * n),
            ("book, 20 pages deep (lead)", lead, [deep] * n),
            ("book, high churn band (lead)", lead, ["/app/?band=high"] * n),
            ("account page (lead)", lead, [f"/app/accounts/{rng.choice(ids)}" for _ in range(n)]),
            ("inbox (lead, everyone)", lead, ["/app/inbox?everyone=true"] * n),
            ("models (lead)", lead, ["/app/models"] * max(n // 4, 5)),
            ("voice of the customer (lead)", lead, ["/app/voc"] * max(n // 4, 5)),
            ("sources (admin)", admin, ["/app/sources"] * n),
        ]
        print()
        print(f"machine: {os.cpu_count()} cores; {args.accounts:,} accounts, {events:,} events")
        print(f"{'page':45} {'p50 ms':>8} {'p95 ms':>8}   ceiling p95 <= {CEILING_MS:.0f} ms")
        for name, client, paths in pages:
            await _time(client, paths[:2])  # warm: the model loads once per process
            times = sorted(await _time(client, paths))
            p50 = statistics.median(times) * 1000
            p95 = times[max(0, int(len(times) * 0.95) - 1)] * 1000
            print(f"{name:45} {p50:8.1f} {p95:8.1f}   {verdict(p95 <= CEILING_MS)}", flush=True)
        for client in (lead, csm, admin):
            await client.aclose()
    finally:
        for process in (server, worker):
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
