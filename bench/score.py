"""Scoring benchmark on 100,000 simulated accounts and about 10,000,000 events: scores on request
over real HTTP, batch scoring of every account, and training time against bare lightgbm.train.

    .venv/bin/python bench/score.py [--accounts 100000] [--usage 0.05] [--seconds 30]
                                    [--compare REV]

The simulator's world is loaded with COPY (the ingest path has its own benchmark). Starts its own
embedded Postgres (or uses CUSTINTEL_DATABASE_URL, creating scratch databases there) and
custintel under uvicorn on loopback, with a worker process that runs the training and the batch
rescoring as jobs. Prints each figure next to its target. With --compare REV, that revision is
checked out in a scratch worktree and measured the same way on the same world right after, and
the ratios are printed: a figure never depends on which machine or hour it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import lightgbm as lgb
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.demo import simulator  # noqa: E402
from app.ml import batch, features, pipeline, scoring  # noqa: E402
from app.people import profiles  # noqa: E402
from app.platform import db, partitions  # noqa: E402
from app.platform.settings import Settings  # noqa: E402
from app.schemas.models import TrainRequest  # noqa: E402
from app.signals import ingest  # noqa: E402
from bench.ingest import (  # noqa: E402
    Connection,
    CpuMeter,
    create_database,
    scratch_dir,
    source_env,
    start_server,
    verdict,
    wait_ready,
)

TARGET_RPS = 1_000
TARGET_P50_MS = 5.0
TARGET_P99_MS = 25.0
TARGET_BATCH_APS = 3_000
TARGET_BATCH_RATIO = 0.7
TARGET_TRAIN_RATIO = 5.0  # the parameter search included
TARGET_PIPELINE_RATIO = 2.0  # of the revision compared with (--compare), in the same run

END = datetime(2026, 6, 1, tzinfo=UTC)
PIECE = 2_000


def _piece(first: int, count: int, usage: float) -> dict[str, list[tuple[Any, ...]]]:
    """Rows for COPY of one piece of the world (run in a separate process)."""
    world = simulator.generate(accounts=count, end=END, seed=first + 1, first=first, usage=usage)
    history: dict[str, list[dict[str, Any]]] = {}
    rows: dict[str, list[tuple[Any, ...]]] = {k: [] for k in ("ah", "a", "ch", "c", "e", "o")}
    for upsert in world.accounts:
        changes = {k: v for k, v in upsert.items() if k not in ("account_id", "observed_at")}
        observed = datetime.fromisoformat(upsert["observed_at"])
        history.setdefault(upsert["account_id"], []).append(changes)
        rows["ah"].append((upsert["account_id"], observed, orjson.dumps(changes).decode()))
    for account_id, observations in history.items():
        state = profiles.fold(observations)
        rows["a"].append(
            (
                account_id,
                state.get("name"),
                state.get("segment"),
                state.get("plan"),
                Decimal(str(state["mrr"])) if state.get("mrr") is not None else None,
                state.get("owner_email"),
                orjson.dumps(state["traits"]).decode(),
            )
        )
    for c in world.contacts:
        observed = datetime.fromisoformat(c["observed_at"])
        changes = {k: c[k] for k in ("account_id", "email", "role")}
        rows["c"].append((c["contact_id"], c["account_id"], c["email"], c["role"], observed))
        rows["ch"].append(
            (c["contact_id"], c["account_id"], observed, orjson.dumps(changes).decode())
        )
    for n, e in enumerate(world.events):
        rows["e"].append(
            (
                f"{e['account_id']}-e{n}",
                datetime.fromisoformat(e["occurred_at"]),
                e["account_id"],
                e.get("contact_id"),
                None,
                e["type"],
                e.get("source"),
                e.get("value"),
                orjson.dumps(e.get("properties") or {}).decode(),
                e.get("text"),
            )
        )
    for o in world.outcomes:
        rows["o"].append(
            (
                o["outcome_id"],
                o["account_id"],
                o["kind"],
                datetime.fromisoformat(o["occurred_at"]),
                Decimal(str(o["amount"])) if o.get("amount") is not None else None,
                b"",
            )
        )
    return rows


async def world(accounts: int, usage: float) -> list[dict[str, list[tuple[Any, ...]]]]:
    """The simulated world's rows for COPY, in pieces made in parallel; made once per run, so
    that every revision measured loads the same world."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [
            loop.run_in_executor(pool, _piece, f, min(PIECE, accounts - f), usage)
            for f in range(0, accounts, PIECE)
        ]
        return [await future for future in futures]


async def load(url: str, pieces: list[dict[str, list[tuple[Any, ...]]]]) -> tuple[int, float]:
    """The world into a migrated database with COPY, its month partitions made by plain SQL (as
    every revision makes them), so that any revision's schema takes it."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    month = partitions.month_of(END - timedelta(days=400))
    while month <= partitions.month_of(END):
        following = partitions.next_month(month)
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS events_{month:%Y_%m} PARTITION OF events FOR VALUES "
            f"FROM ('{month.isoformat()} 00:00:00+00') TO ('{following.isoformat()} 00:00:00+00')"
        )
        month = following
    events = 0
    for rows in pieces:
        tables = [
            (
                "accounts",
                rows["a"],
                ("account_id", "name", "segment", "plan", "mrr", "owner_email", "traits"),
            ),
            ("account_history", rows["ah"], ("account_id", "observed_at", "changes")),
            ("contacts", rows["c"], ("contact_id", "account_id", "email", "role", "observed_at")),
            ("contact_history", rows["ch"], ("contact_id", "account_id", "observed_at", "changes")),
            ("events", rows["e"], ingest.EVENT_COLUMNS),
            (
                "outcomes",
                rows["o"],
                ("outcome_id", "account_id", "kind", "occurred_at", "amount", "digest"),
            ),
        ]
        async with conn.transaction():
            for table, records, columns in tables:
                await conn.copy_records_to_table(table, records=records, columns=columns)
        events += len(rows["e"])
        print(f"\r  loaded {events:,} events", end="", flush=True)
    print()
    # What ingest keeps beside every event it accepts (its key: idempotency forever, and where
    # an event is found by its id), as ingest would have written it.
    await conn.execute(
        "INSERT INTO event_keys (event_id, account_id, occurred_at, digest) "
        "SELECT event_id, account_id, occurred_at, sha256(convert_to(event_id, 'UTF8')) "
        "FROM events"
    )
    await conn.execute("ANALYZE")
    await conn.close()
    return events, time.perf_counter() - started


@dataclass
class Revision:
    """A source tree measured: this one, or a scratch worktree of another commit."""

    label: str
    root: Path


def worktree(rev: str, scratch: Path) -> Revision:
    """`rev` checked out in a scratch worktree (removed again at exit)."""
    path = scratch / f"rev-{rev}"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(path), rev], check=True)
    atexit.register(subprocess.run, [*git, "worktree", "remove", "--force", str(path)], check=False)
    commit = subprocess.run(
        [*git, "rev-parse", "--short", rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    return Revision(commit, path)


async def run_job(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Queue a job over HTTP and wait for it; the finished job."""
    conn = await Connection.open(port)
    try:
        status, reply = await conn.post(path, orjson.dumps(body))
        if status != 202:
            raise RuntimeError(f"{path} answered {status}: {reply[:500]!r}")
        job_id = orjson.loads(reply)["job_id"]
        while True:
            status, reply = await conn.request("GET", f"/v1/jobs/{job_id}")
            job: dict[str, Any] = orjson.loads(reply)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            await asyncio.sleep(0.5)
    finally:
        conn.close()
    if job["status"] != "succeeded":
        raise RuntimeError(f"{path}: {job['status']}: {job.get('error')}")
    return job


async def texts_read(url: str) -> float | None:
    """Seconds until the worker has chosen its sentiment reader, read every text stored by it
    and learnt the themes (None: a revision without text enrichment); at most 15 minutes."""
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < 900:
            try:
                left = await conn.fetchval(
                    "SELECT (SELECT count(*) FROM events WHERE text IS NOT NULL) "
                    "- (SELECT count(*) FROM text_enrichments) "
                    "+ (SELECT count(*) FROM jobs WHERE kind = 'sentiment_reread' "
                    "   AND status IN ('queued', 'running')) "
                    "+ (SELECT CASE WHEN EXISTS (SELECT 1 FROM themes) THEN 0 ELSE 1 END)"
                    # the reader chosen from the comments (then the texts read by it)
                    "+ (SELECT CASE WHEN EXISTS (SELECT 1 FROM sentiment_readers) "
                    "   THEN 0 ELSE 1 END)"
                )
            except asyncpg.UndefinedTableError:
                return None
            if left <= 0:
                break
            await asyncio.sleep(1.0)
        return time.perf_counter() - started
    finally:
        await conn.close()


def job_seconds(job: dict[str, Any]) -> float:
    started, finished = (datetime.fromisoformat(job[k]) for k in ("started_at", "finished_at"))
    return (finished - started).total_seconds()


def read_manifest(models_dir: Path, model_id: str) -> dict[str, Any]:
    [path] = models_dir.rglob(f"{model_id}/manifest.json")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def start_worker(url: str, root: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`custintel worker` of the source tree at `root`."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker"],
        env=source_env(url, root) | env,
        cwd=root,
        stderr=subprocess.DEVNULL,
    )


async def measure(
    revision: Revision, url: str, models_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Every figure one revision gives through its public API: training and batch rescoring as
    jobs run by its worker process, scores on request from its server."""
    port = 18000 + os.getpid() % 1000
    env = {"CUSTINTEL_MODELS_DIR": str(models_dir), "CUSTINTEL_RESCORE_EVERY_HOURS": "0"}
    server = start_server(url, port, args.workers, root=revision.root, **env)
    worker = start_worker(url, revision.root, env)
    figures: dict[str, Any] = {}
    try:
        await wait_ready(port)
        # A live installation reads its texts as they arrive: the world loaded at once is read
        # by the worker first (timed apart), so that the training below is timed as it runs
        # there, not with a year of texts to read.
        figures["backlog_seconds"] = await texts_read(url)
        dates = [END - timedelta(days=90 + 30 * k) for k in reversed(range(args.snapshots))]
        meter = await CpuMeter.of(url, server=worker.pid)
        trained = await run_job(
            port,
            "/v1/models/train",
            {
                "target": "churn",
                "as_of": END.isoformat(),
                "snapshot_dates": [d.isoformat() for d in dates],
            },
        )
        figures["pipeline_seconds"] = job_seconds(trained)
        figures["train_cpu"] = meter.report(1, "training", micro=False)
        model_id = trained["result"]["model_id"]
        figures["model_id"] = model_id
        manifest = read_manifest(models_dir, model_id)
        figures["auc"] = manifest["metrics"]["auc"]
        figures["timings"] = manifest.get("timings")
        figures["search"] = manifest.get("search")

        meter = await CpuMeter.of(url, server=worker.pid)
        rescored = await run_job(port, "/v1/scores/rescore", {"as_of": END.isoformat(), "top": 3})
        accounts = rescored["result"]["accounts"]
        figures["batch_aps"] = accounts / job_seconds(rescored)
        figures["batch_accounts"] = accounts
        figures["batch_cpu"] = meter.report(accounts, "account")

        # Scores on request are measured alone: the worker's rounds (texts, insights, the
        # jobs the rescoring queued) would count in Postgres's CPU per request.
        worker.terminate()
        await asyncio.to_thread(worker.wait, 60)
        await on_request(port, args.accounts, 3, args.concurrency)  # warm: models load once
        meter = await CpuMeter.of(url, server=server.pid)
        seconds, latencies = await on_request(port, args.accounts, args.seconds, args.concurrency)
        figures["request_cpu"] = meter.report(len(latencies), "request")
    finally:
        for process in (server, worker):
            process.terminate()
            process.wait(30)
    latencies.sort()
    figures["rps"] = len(latencies) / seconds
    figures["p50"] = statistics.median(latencies) * 1000
    figures["p99"] = latencies[int(len(latencies) * 0.99) - 1] * 1000
    return figures


async def details(url: str, models_dir: Path, model_id: str, snapshots: int) -> dict[str, Any]:
    """This revision only, in process: one bare lightgbm.train (LightGBM's defaults, 100 rounds,
    as a team would start) on the training matrix the pipeline builds, and reasons on one
    matrix against bare pred_contrib."""
    settings = Settings(database_url=url, models_dir=models_dir)
    dates = [END - timedelta(days=90 + 30 * k) for k in reversed(range(snapshots))]
    request = TrainRequest(target="churn", as_of=END, snapshot_dates=dates)
    conn = await asyncpg.connect(url)
    try:
        t0 = time.perf_counter()
        prepared = await pipeline.prepare(conn, settings, request)
        prepare_seconds = time.perf_counter() - t0
        [loaded] = await batch.active_models(conn, ["churn"])
        accounts = await conn.fetch("SELECT account_id FROM accounts ORDER BY account_id")
        keys = [(r[0], END) for r in accounts[:20_000]]
        frame = await features.compute(conn, loaded.catalog, keys)
    finally:
        await conn.close()
    ts = prepared.training_set
    x, y = ts.frame.matrix, ts.labels
    names = list(ts.frame.names)
    categorical = [n for n in ts.frame.catalog.levels() if n in names]
    t0 = time.perf_counter()
    dtrain = lgb.Dataset(
        x,
        y,
        feature_name=[f"f{j}" for j in range(len(names))],
        categorical_feature=[names.index(c) for c in categorical],
    )
    lgb.train({"objective": "binary", "num_threads": 2, "verbose": -1}, dtrain, 100)
    bare = time.perf_counter() - t0

    matrix = loaded.matrix(frame)
    served = loaded.served(frame.segments)  # each segment's rows through the model serving it
    t0 = time.perf_counter()
    for name, rows in served.items():
        loaded.models[name].booster.predict(matrix[rows], pred_contrib=True)
    raw = time.perf_counter() - t0
    t0 = time.perf_counter()
    scoring.score_frame(loaded, frame, top=3)
    ours = time.perf_counter() - t0
    return {
        "rows": len(y),
        "bare_seconds": bare,
        "prepare_seconds": prepare_seconds,
        "raw_aps": len(keys) / raw,
        "ours_aps": len(keys) / ours,
    }


async def on_request(
    port: int, accounts: int, seconds: float, concurrency: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def client(n: int) -> None:
        conn = await Connection.open(port)
        rng = random.Random(n)
        try:
            while time.perf_counter() < stop_at:
                path = f"/v1/accounts/acct-{rng.randrange(accounts):05d}/scores?target=churn&top=3"
                t0 = time.perf_counter()
                status, reply = await conn.request("GET", path)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"score failed: {status} {reply[:300]!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(n) for n in range(concurrency)))
    return time.perf_counter() - started, latencies


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    """One revision's figures, each next to its target."""
    rps, p50, p99 = figures["rps"], figures["p50"], figures["p99"]
    print(
        f"  on-request GET /v1/accounts/{{id}}/scores (top 3), concurrency {args.concurrency}, "
        f"{args.workers} uvicorn workers:"
    )
    print(f"    {rps:>8,.0f} requests/s   target >= {TARGET_RPS:,}: {verdict(rps >= TARGET_RPS)}")
    print(f"    p50 {p50:6.1f} ms     target <= {TARGET_P50_MS}: {verdict(p50 <= TARGET_P50_MS)}")
    print(f"    p99 {p99:6.1f} ms     target <= {TARGET_P99_MS}: {verdict(p99 <= TARGET_P99_MS)}")
    print(f"    {figures['request_cpu']}")
    aps = figures["batch_aps"]
    print(
        f"  batch rescoring job (features in Postgres, scores with 3 reasons, stored): "
        f"{aps:,.0f} accounts/s over {figures['batch_accounts']:,}   target >= "
        f"{TARGET_BATCH_APS:,}: {verdict(aps >= TARGET_BATCH_APS)}"
    )
    print(f"    {figures['batch_cpu']}")
    print(
        f"  training job (training set built in Postgres, search, estimate, refit, segment "
        f"models, calibration): {figures['pipeline_seconds']:.1f} s; held-out AUC "
        f"{figures['auc']:.3f}"
    )
    if figures.get("backlog_seconds") is not None:
        print(
            f"    (before it, the worker read the loaded texts: {figures['backlog_seconds']:.0f} s)"
        )
    if figures.get("timings"):
        spent = ", ".join(f"{k} {v:.1f}" for k, v in figures["timings"].items())
        print(f"    where the time went (s): {spent}")
    search = figures.get("search") or {}
    if "chosen" in search:
        print(
            f"    search: chose {search['chosen']} on the {search.get('columns')} columns, "
            f"{search.get('seconds', 0):.0f} s; skipped {search.get('skipped')}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--usage", type=float, default=0.05, help="simulator's usage scale")
    parser.add_argument("--snapshots", type=int, default=3, help="training snapshots")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--compare",
        metavar="REV",
        help="also measure this git revision (built in a scratch worktree) on the same world, "
        "right after this one, and print the ratios",
    )
    args = parser.parse_args()

    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    scratch = scratch_dir()
    revisions = [Revision("this tree", ROOT)]
    if args.compare:
        revisions.append(worktree(args.compare, scratch))
    server_url = (
        db.plain_url(external)
        if external
        else await asyncio.to_thread(db.start_embedded, scratch / "pg")
    )
    print(f"simulating {args.accounts:,} accounts ...", flush=True)
    pieces = await world(args.accounts, args.usage)
    measured: list[dict[str, Any]] = []
    for n, revision in enumerate(revisions):
        print(f"{revision.label}: migrating and loading with COPY ...", flush=True)
        url = await create_database(server_url, f"bench_score_{n}", root=revision.root)
        events, load_seconds = await load(url, pieces)
        print(f"  {events:,} events in {load_seconds:.0f} s; training, batch, on request ...")
        figures = await measure(revision, url, scratch / f"models-{n}", args)
        if n == 0:
            figures |= await details(
                url, scratch / f"models-{n}", figures["model_id"], args.snapshots
            )
        measured.append(figures)

    print()
    print(f"machine: {os.cpu_count()} cores; {args.accounts:,} accounts, {events:,} events")
    for revision, figures in zip(revisions, measured, strict=True):
        print(f"{revision.label}:")
        report(figures, args)
    now = measured[0]
    ratio = now["ours_aps"] / now["raw_aps"]
    print(
        f"reasons on one matrix: {now['ours_aps']:,.0f} accounts/s, bare pred_contrib "
        f"{now['raw_aps']:,.0f}; ratio {ratio:.2f}   target >= {TARGET_BATCH_RATIO}: "
        f"{verdict(ratio >= TARGET_BATCH_RATIO)}"
    )
    training_seconds = (now.get("timings") or {}).get("train")
    if training_seconds is not None:
        train_ratio = training_seconds / now["bare_seconds"]
        print(
            f"training on {now['rows']:,} rows: {training_seconds:.1f} s, one bare "
            f"lightgbm.train {now['bare_seconds']:.1f} s; ratio {train_ratio:.1f}   target <= "
            f"{TARGET_TRAIN_RATIO}: {verdict(train_ratio <= TARGET_TRAIN_RATIO)}"
        )
    print(f"  (the training set alone, built in process: {now['prepare_seconds']:.0f} s)")
    if args.compare:
        old = measured[1]
        label = revisions[1].label
        print(f"against {label}, same run, same world:")
        rows = [
            ("on-request requests/s", now["rps"] / old["rps"], ">= 1"),
            (
                "on-request p99 (ms, lower is better)",
                now["p99"] / old["p99"],
                f"p99 <= {TARGET_P99_MS}",
            ),
            ("batch rescoring accounts/s", now["batch_aps"] / old["batch_aps"], ">= 1"),
            (
                "training job seconds (lower is better)",
                now["pipeline_seconds"] / old["pipeline_seconds"],
                f"<= {TARGET_PIPELINE_RATIO}",
            ),
        ]
        for name, value, target in rows:
            print(f"  {name}: {value:.2f} of {label}'s   target {target}")
        ok = (
            now["rps"] >= old["rps"]
            and now["batch_aps"] >= old["batch_aps"]
            and now["pipeline_seconds"] <= TARGET_PIPELINE_RATIO * old["pipeline_seconds"]
            and now["p99"] <= TARGET_P99_MS
        )
        print(f"  {verdict(ok)}")


if __name__ == "__main__":
    asyncio.run(main())
