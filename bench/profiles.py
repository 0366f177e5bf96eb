"""Profile batch benchmark: accounts and contacts upserted per second through
POST /v1/accounts/batch and /v1/contacts/batch over real HTTP (batches of 1000, set-based).

    .venv/bin/python bench/profiles.py [--accounts 20000] [--clients 4]

Three passes over the same accounts: creation, an update of every account (new traits, a newer
observed_at), and an older observation of each (kept in history, folded in where no newer one
set the field); then one contact per account with an identity. Starts its own embedded Postgres
(or uses CUSTINTEL_DATABASE_URL) and custintel with one API process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import asyncpg
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform import db  # noqa: E402
from bench.ingest import (  # noqa: E402
    CpuMeter,
    bench_batches,
    create_database,
    scratch_dir,
    start_server,
    wait_ready,
)

BATCH = 1000


def account_bodies(accounts: int, *, day: int, seats: int) -> list[bytes]:
    items = [
        {
            "account_id": f"acct-{i:06d}",
            "name": f"Company {i}",
            "segment": ("enterprise", "mid-market", "smb")[i % 3],
            "plan": ("pro", "business")[i % 2],
            "mrr": 100.0 + i % 997,
            "traits": {"seats": seats + i % 50, "region": ("eu", "na")[i % 2], "nps": i % 11},
            "observed_at": f"2026-01-{day:02d}T00:00:00Z",
        }
        for i in range(accounts)
    ]
    return [orjson.dumps({"accounts": items[i : i + BATCH]}) for i in range(0, accounts, BATCH)]


def contact_bodies(accounts: int) -> list[bytes]:
    items = [
        {
            "contact_id": f"user-{i:06d}",
            "account_id": f"acct-{i:06d}",
            "email": f"user{i}@example.com",
            "role": "admin",
            "identities": [{"kind": "crm", "value": f"003{i:06d}"}],
            "observed_at": "2026-01-10T00:00:00Z",
        }
        for i in range(accounts)
    ]
    return [orjson.dumps({"contacts": items[i : i + BATCH]}) for i in range(0, accounts, BATCH)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    scratch = scratch_dir()
    server_url = (
        db.plain_url(external) if external else await asyncio.to_thread(db.start_embedded, scratch)
    )
    url = await create_database(server_url, "bench_profiles")
    port = 19000 + os.getpid() % 1000
    server = start_server(url, port, 1)
    passes = [
        ("create", "/v1/accounts/batch", account_bodies(args.accounts, day=1, seats=10)),
        ("update", "/v1/accounts/batch", account_bodies(args.accounts, day=20, seats=20)),
        ("older", "/v1/accounts/batch", account_bodies(args.accounts, day=5, seats=30)),
        ("contacts", "/v1/contacts/batch", contact_bodies(args.accounts)),
    ]
    rows = []
    try:
        await wait_ready(port)
        for name, path, bodies in passes:
            meter = await CpuMeter.of(url, server=server.pid)
            seconds = await bench_batches(port, bodies, args.clients, path)
            rows.append((name, args.accounts / seconds, meter.report(args.accounts, "upsert")))
    finally:
        server.terminate()
        server.wait(30)
    conn = await asyncpg.connect(url)
    seats = await conn.fetchval("SELECT count(*) FROM accounts WHERE (traits->>'seats')::int >= 20")
    history = await conn.fetchval("SELECT count(*) FROM account_history")
    await conn.close()
    assert seats == args.accounts and history == 3 * args.accounts, (seats, history)
    print(
        f"\nmachine: {os.cpu_count()} cores; one API process, {args.clients} clients, "
        f"batches of {BATCH}"
    )
    for name, rate, cpu in rows:
        print(f"{name:<9}: {rate:>8,.0f} upserts/s")
        print(f"  {cpu}")


if __name__ == "__main__":
    asyncio.run(main())
