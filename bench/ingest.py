"""Ingest benchmark: events/s through POST /v1/events/batch over real HTTP against the COPY
ceiling, single POST /v1/events and Stripe-signed deliveries to /hooks/{id} at concurrency 16,
and profile upserts through
POST /v1/accounts/batch and /v1/contacts/batch (new profiles, then a second observation of each).

    .venv/bin/python bench/ingest.py [--events 1000000] [--accounts 10000] [--profiles 100000]

Starts its own embedded Postgres (or uses CUSTINTEL_DATABASE_URL, creating scratch databases
there) and custintel under uvicorn on loopback. The load generator speaks HTTP/1.1 over raw
asyncio streams so that the client costs little of the machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import hashlib
import hmac
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform import db, migrate, partitions  # noqa: E402
from app.signals import ingest  # noqa: E402

ADMIN_KEY = "bench-admin-key-" + "k" * 24
TYPES = ["login", "page_view", "feature_used", "ticket_opened", "invoice_paid", "nps_answered"]

TARGET_BATCH_EPS = 60_000
TARGET_BATCH_RATIO = 0.5
TARGET_SINGLE_RPS = 2_500
TARGET_SINGLE_P99_MS = 20.0
TARGET_HOOKS_PER_SECOND = 1_000
TARGET_HOOKS_P99_MS = 50.0
STRIPE_SECRET = "whsec_bench" + "b" * 24
TARGET_PROFILES_PER_SECOND = 15_000
TARGET_PROFILE_RATIO = 0.3  # of the events rate of the same run
PROFILE_BATCH = 1_000


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        return cls(reader, writer)

    async def post(self, path: str, body: bytes, extra: str = "") -> tuple[int, bytes]:
        return await self.request("POST", path, body, extra)

    async def request(
        self, method: str, path: str, body: bytes = b"", extra: str = ""
    ) -> tuple[int, bytes]:
        """`extra`: more header lines, each ending in CRLF."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = 0
        for line in header.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class CpuMeter:
    """CPU time spent by the processes behind a figure: the custintel server's process tree,
    the Postgres server's (when it runs on this machine) and this load generator. Divided by
    the work done, it gives each part's CPU cost per unit and the most the machine's cores could
    do at that cost: what a target asks of the machine, printed next to what it did. How much
    of the cores the run used, and how busy each server worker was, tell a run held back by
    something else (one worker holding most of the connections, say) from one out of CPU."""

    def __init__(self, *, server: int | None = None, postgres: int | None = None) -> None:
        self.roots = {"server": server, "Postgres": postgres}
        self.started = self.read()
        self.workers = self.read_workers()
        self.wall = time.perf_counter()

    @classmethod
    async def of(cls, database_url: str, *, server: int | None = None) -> CpuMeter:
        return cls(server=server, postgres=await postmaster(database_url))

    def read(self) -> dict[str, float]:
        seconds = {name: tree_seconds(pid) for name, pid in self.roots.items() if pid}
        me = psutil.Process().cpu_times()
        seconds["client"] = me.user + me.system
        return seconds

    def read_workers(self) -> dict[int, float]:
        server = self.roots["server"]
        return {} if server is None else children_seconds(server)

    def report(self, units: int, unit: str, *, micro: bool = False) -> str:
        """E.g. "CPU per request: server 1.47 + Postgres 0.74 + client 0.11 = 2.32 ms; 2 cores
        allow at most 862 requests/s; used 96% of them (server workers at 99% and 48% of a
        core)"."""
        now, workers = self.read(), self.read_workers()
        wall = time.perf_counter() - self.wall
        scale, per, digits = (1e6, "us", 1) if micro else (1e3, "ms", 2)
        parts = {k: (now[k] - self.started[k]) / units for k in now}
        total = sum(parts.values())
        cores = os.cpu_count() or 1
        shown = " + ".join(f"{k} {v * scale:.{digits}f}" for k, v in parts.items())
        busy = sorted(
            (seconds - self.workers.get(pid, 0.0)) / wall for pid, seconds in workers.items()
        )
        split = " and ".join(f"{b:.0%}" for b in reversed(busy) if b >= 0.01)
        return (
            f"CPU per {unit}: {shown} = {total * scale:.{digits}f} {per}; {cores} cores allow "
            f"at most {cores / total:,.0f} {unit}s/s; used {total * units / wall / cores:.0%} "
            f"of them" + (f" (server workers at {split} of a core)" if split else "")
        )


def tree_seconds(pid: int) -> float:
    """User and system CPU seconds of a process, its reaped children and its live descendants."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    reaped = times.children_user + times.children_system
    return float(times.user + times.system + reaped + sum(seconds_of(descendants).values()))


def children_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each live child of a process (the API workers)."""
    try:
        return seconds_of(psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return {}


def seconds_of(processes: list[psutil.Process]) -> dict[int, float]:
    """User and system CPU seconds of each process still there, by pid."""
    seconds = {}
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds[process.pid] = times.user + times.system
    return seconds


async def postmaster(database_url: str) -> int | None:
    """The pid of the Postgres server behind database_url when it runs on this machine."""
    conn = await asyncpg.connect(db.plain_url(database_url))
    try:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        try:
            parent = psutil.Process(backend).parent()
        except psutil.NoSuchProcess:
            return None  # another machine (or container): not measured
        return parent.pid if parent is not None and "postgres" in parent.name() else None
    finally:
        await conn.close()


def make_events(count: int, accounts: int, seed: int = 7) -> list[dict[str, object]]:
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    span = int((datetime(2026, 6, 1, tzinfo=UTC) - start).total_seconds())
    events = []
    for i in range(count):
        account = rng.randrange(accounts)
        events.append(
            {
                "event_id": f"e{i}",
                "type": rng.choice(TYPES),
                "source": "bench",
                "occurred_at": (start + timedelta(seconds=rng.randrange(span))).isoformat(),
                "account_id": f"acct-{account}",
                "contact_id": f"acct-{account}-u{rng.randrange(8)}",
                "value": round(rng.random() * 100, 2),
                "properties": {"plan": rng.choice(["free", "pro", "enterprise"]), "n": i % 97},
            }
        )
    return events


def make_profiles(count: int, *, days_ago: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """Bodies of account and contact batches (one contact per account): every account and
    contact observed once, `days_ago` days back, with a few fields and traits."""
    rng = random.Random(seed)
    at = (datetime.now(UTC) - timedelta(days=days_ago)).isoformat()
    accounts: list[dict[str, object]] = [
        {
            "account_id": f"prof-{i}",
            "name": f"Company {i}",
            "segment": rng.choice(["smb", "mid", "enterprise"]),
            "plan": rng.choice(["free", "pro", "enterprise"]),
            "mrr": rng.randrange(10_000),
            "traits": {"seats": rng.randrange(500), "region": rng.choice(["eu", "us", "apac"])},
            "observed_at": at,
        }
        for i in range(count)
    ]
    contacts: list[dict[str, object]] = [
        {
            "contact_id": f"prof-{i}-u",
            "account_id": f"prof-{i}",
            "email": f"u{i}.{seed}@prof-{i}.example",
            "name": f"User {i}",
            "role": rng.choice(["admin", "end_user", "executive_sponsor"]),
            "traits": {"title": rng.choice(["CTO", "Engineer", "Analyst"])},
            "observed_at": at,
        }
        for i in range(count)
    ]

    def bodies(key: str, items: list[dict[str, object]]) -> list[bytes]:
        return [
            orjson.dumps({key: items[i : i + PROFILE_BATCH]})
            for i in range(0, len(items), PROFILE_BATCH)
        ]

    return bodies("accounts", accounts), bodies("contacts", contacts)


async def create_database(server_url: str, name: str, *, root: Path | None = None) -> str:
    """A new database, migrated by this tree's migrations, or by those of the source tree at
    `root` (another revision: its own `custintel migrate`)."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await db.create_database(conn, name)
    finally:
        await conn.close()
    parts = urlsplit(server_url)
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))
    if root is None:
        await asyncio.to_thread(migrate.upgrade, url)
        return url
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.cli", "migrate"],
        env=source_env(url, root),
        cwd=root,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return url


def start_server(
    database_url: str, port: int, workers: int, *, root: Path = ROOT, **env: str
) -> subprocess.Popen[bytes]:
    """`custintel serve` of the source tree at `root`, as deployed, without its job worker and
    access log; `env`: more settings."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(workers)],
        env=source_env(database_url, root) | env,
        cwd=root,
        stderr=subprocess.DEVNULL,
    )


def source_env(database_url: str, root: Path) -> dict[str, str]:
    """The environment of a custintel process of the source tree at `root` (its own `app`
    first on the path, whatever the virtualenv has installed)."""
    return {
        **os.environ,
        "PYTHONPATH": str(root),
        "CUSTINTEL_DATABASE_URL": database_url,
        "CUSTINTEL_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CUSTINTEL_RUN_WORKER": "false",
        "CUSTINTEL_ACCESS_LOG": "false",
    }


async def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /readyz HTTP/1.1\r\nHost: b\r\n\r\n")
            await writer.drain()
            line = await reader.readline()
            writer.close()
            if b" 200 " in line:
                return
        except OSError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("custintel did not become ready")


async def bench_batches(
    port: int, bodies: list[bytes], clients: int, path: str = "/v1/events/batch"
) -> float:
    """Seconds to post every body from `clients` keep-alive connections; any error fails it."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        conn = await Connection.open(port)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                status, reply = await conn.post(path, body)
                result = orjson.loads(reply)
                if status != 200 or result["errors"]:
                    raise RuntimeError(f"batch failed: {status} {reply[:300]!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return time.perf_counter() - started


async def bench_copy(url: str, events: list[dict[str, object]]) -> tuple[float, str]:
    rows = [
        (
            e["event_id"],
            datetime.fromisoformat(str(e["occurred_at"])),
            e["account_id"],
            e["contact_id"],
            None,
            e["type"],
            e["source"],
            e["value"],
            orjson.dumps(e["properties"]).decode(),
            None,
        )
        for e in events
    ]
    conn = await asyncpg.connect(url)
    try:
        for month in sorted({partitions.month_of(r[1]) for r in rows}):
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partitions.partition_name(month)} PARTITION OF "
                f"events FOR VALUES FROM ('{month}') TO ('{partitions.next_month(month)}')"
            )
        meter = await CpuMeter.of(url)
        started = time.perf_counter()
        for i in range(0, len(rows), 50_000):
            await conn.copy_records_to_table(
                "events", records=rows[i : i + 50_000], columns=ingest.EVENT_COLUMNS
            )
        return time.perf_counter() - started, meter.report(len(rows), "event", micro=True)
    finally:
        await conn.close()


async def bench_single(port: int, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    now = datetime.now(UTC)
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(n: int) -> None:
        conn = await Connection.open(port)
        rng = random.Random(n)
        try:
            while time.perf_counter() < stop_at:
                account = rng.randrange(10_000)
                body = orjson.dumps(
                    {
                        "event_id": uuid.uuid4().hex,
                        "type": "login",
                        "account_id": f"acct-{account}",
                        "occurred_at": (now - timedelta(minutes=rng.randrange(60))).isoformat(),
                        "properties": {"n": n},
                    }
                )
                t0 = time.perf_counter()
                status, reply = await conn.post("/v1/events", body)
                latencies.append(time.perf_counter() - t0)
                if status != 202:
                    raise RuntimeError(f"single failed: {status} {reply[:300]!r}")
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return time.perf_counter() - started, latencies


async def bench_stripe(
    port: int, seconds: float, concurrency: int, customers: int = 500
) -> tuple[float, list[float]]:
    """Stripe-signed invoice.paid deliveries to a Stripe source, each a new event, for
    `seconds` at `concurrency`: as Stripe delivers them, one event per request. Steady state:
    each of the `customers` sent one event before the clock starts (its first links the
    customer id to the account its metadata names, a profile upsert of its own)."""
    conn = await Connection.open(port)
    body = orjson.dumps({"kind": "stripe", "name": "bench", "secret": STRIPE_SECRET})
    status, reply = await conn.post("/v1/sources", body)
    conn.close()
    if status != 201:
        raise RuntimeError(f"source not created: {status} {reply[:300]!r}")
    url = orjson.loads(reply)["url"]
    latencies: list[float] = []
    first = list(range(customers))

    async def worker(n: int, stop_at: float) -> None:
        conn = await Connection.open(port)
        rng = random.Random(n)
        try:
            while time.perf_counter() < stop_at:
                if first:
                    account = first.pop()
                elif stop_at == float("inf"):
                    break
                else:
                    account = rng.randrange(customers)
                event = {
                    "id": f"evt_{uuid.uuid4().hex}",
                    "object": "event",
                    "type": "invoice.paid",
                    "created": int(time.time()) - 5,
                    "data": {
                        "object": {
                            "id": f"in_{uuid.uuid4().hex[:14]}",
                            "object": "invoice",
                            "customer": f"cus_{account}",
                            "currency": "usd",
                            "amount_paid": rng.randrange(100, 100_000),
                            "metadata": {"account_id": f"acct-{account}"},
                        }
                    },
                }
                body = orjson.dumps(event)
                t = int(time.time())
                signed = f"{t}.".encode() + body
                v1 = hmac.new(STRIPE_SECRET.encode(), signed, hashlib.sha256).hexdigest()
                t0 = time.perf_counter()
                status, reply = await conn.post(url, body, f"Stripe-Signature: t={t},v1={v1}\r\n")
                latencies.append(time.perf_counter() - t0)
                if status != 200 or orjson.loads(reply)["accepted"] != 1:
                    raise RuntimeError(f"delivery failed: {status} {reply[:300]!r}")
        finally:
            conn.close()

    await asyncio.gather(*(worker(n, float("inf")) for n in range(concurrency)))  # warm-up
    latencies.clear()
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(worker(n, stop_at) for n in range(concurrency)))
    return time.perf_counter() - started, latencies


def scratch_dir() -> Path:
    """A temporary directory for the run (an embedded Postgres, models), removed at exit: after
    the embedded Postgres has stopped, since exit hooks run last registered first and the
    server's are registered when it starts, later."""
    scratch = Path(tempfile.mkdtemp(prefix="custintel-bench-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch


def verdict(ok: bool) -> str:
    return "meets target" if ok else "BELOW TARGET"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--single-seconds", type=float, default=15)
    parser.add_argument("--profiles", type=int, default=100_000)
    args = parser.parse_args()

    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    scratch = scratch_dir()
    server_url = (
        db.plain_url(external) if external else await asyncio.to_thread(db.start_embedded, scratch)
    )
    print(f"generating {args.events:,} events for {args.accounts:,} accounts ...", flush=True)
    events = make_events(args.events, args.accounts)
    bodies = [
        orjson.dumps({"events": events[i : i + args.batch]})
        for i in range(0, len(events), args.batch)
    ]

    api_url = await create_database(server_url, "bench_api")
    port = 18000 + os.getpid() % 1000
    server = start_server(api_url, port, args.workers)
    try:
        await wait_ready(port)
        meter = await CpuMeter.of(api_url, server=server.pid)
        api_seconds = await bench_batches(port, bodies, args.clients)
        api_cpu = meter.report(len(events), "event", micro=True)
        meter = await CpuMeter.of(api_url, server=server.pid)
        single_seconds, latencies = await bench_single(port, args.single_seconds, 16)
        single_cpu = meter.report(len(latencies), "request")
        meter = await CpuMeter.of(api_url, server=server.pid)
        hooks_seconds, hook_latencies = await bench_stripe(port, args.single_seconds, 16)
        hooks_cpu = meter.report(len(hook_latencies), "request")
        profile_rates: list[tuple[str, float, str]] = []
        for round_, days_ago in (("new", 2), ("updated", 1)):
            account_bodies, contact_bodies = make_profiles(
                args.profiles, days_ago=days_ago, seed=days_ago
            )
            for kind, bodies_ in (("accounts", account_bodies), ("contacts", contact_bodies)):
                meter = await CpuMeter.of(api_url, server=server.pid)
                seconds = await bench_batches(port, bodies_, args.clients, f"/v1/{kind}/batch")
                report = meter.report(args.profiles, kind[:-1], micro=True)
                profile_rates.append((f"{kind} ({round_})", args.profiles / seconds, report))
    finally:
        server.terminate()
        server.wait(30)
    conn = await asyncpg.connect(api_url)
    stored = await conn.fetchval("SELECT count(*) FROM events WHERE source = 'bench'")
    await conn.close()
    assert stored == len(events), f"{stored} of {len(events)} events stored"

    copy_url = await create_database(server_url, "bench_copy")
    copy_seconds, copy_cpu = await bench_copy(copy_url, events)

    api_eps = len(events) / api_seconds
    copy_eps = len(events) / copy_seconds
    ratio = api_eps / copy_eps
    latencies.sort()
    rps = len(latencies) / single_seconds
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000

    print()
    print(
        f"machine: {os.cpu_count()} cores; custintel with {args.workers} uvicorn workers, "
        f"{args.clients} batch clients of {args.batch} events"
    )
    print(
        f"batch ingest via HTTP : {api_eps:>10,.0f} events/s  "
        f"({len(events):,} in {api_seconds:.1f} s)  "
        f"target >= {TARGET_BATCH_EPS:,}: {verdict(api_eps >= TARGET_BATCH_EPS)}"
    )
    print(f"  {api_cpu}")
    print(f"COPY ceiling          : {copy_eps:>10,.0f} events/s  ({copy_seconds:.1f} s)")
    print(f"  {copy_cpu}")
    print(
        f"ratio API / ceiling   : {ratio:>10.2f}  target >= {TARGET_BATCH_RATIO}: "
        f"{verdict(ratio >= TARGET_BATCH_RATIO)}"
    )
    print(
        f"single POST /v1/events: {rps:>10,.0f} requests/s at concurrency 16"
        f"  target >= {TARGET_SINGLE_RPS:,}: {verdict(rps >= TARGET_SINGLE_RPS)}"
    )
    print(
        f"  latency p50 {p50:.1f} ms, p99 {p99:.1f} ms  target p99 < {TARGET_SINGLE_P99_MS} ms: "
        f"{verdict(p99 < TARGET_SINGLE_P99_MS)}"
    )
    print(f"  {single_cpu}")
    hook_latencies.sort()
    hooks_rps = len(hook_latencies) / hooks_seconds
    hooks_p99 = hook_latencies[int(len(hook_latencies) * 0.99) - 1] * 1000
    print(
        f"Stripe webhooks       : {hooks_rps:>10,.0f} requests/s at concurrency 16"
        f"  target >= {TARGET_HOOKS_PER_SECOND:,}: {verdict(hooks_rps >= TARGET_HOOKS_PER_SECOND)}"
    )
    print(
        f"  latency p50 {statistics.median(hook_latencies) * 1000:.1f} ms, p99 {hooks_p99:.1f} ms"
        f"  target p99 < {TARGET_HOOKS_P99_MS} ms: {verdict(hooks_p99 < TARGET_HOOKS_P99_MS)}"
    )
    print(f"  {hooks_cpu}")
    for label, rate, report in profile_rates:
        target = ""
        if label.startswith("accounts"):
            ok = rate >= TARGET_PROFILES_PER_SECOND and rate >= TARGET_PROFILE_RATIO * api_eps
            target = (
                f"  target >= {TARGET_PROFILES_PER_SECOND:,} and >= {TARGET_PROFILE_RATIO} x "
                f"events ({TARGET_PROFILE_RATIO * api_eps:,.0f}): {verdict(ok)}"
            )
        print(
            f"{label:<22}: {rate:>10,.0f} profiles/s  ({args.profiles:,} in batches of "
            f"{PROFILE_BATCH:,}; {rate / api_eps:.2f} of the events rate){target}"
        )
        print(f"  {report}")


if __name__ == "__main__":
    asyncio.run(main())
