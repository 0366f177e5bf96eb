from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from app.people import profiles
from app.platform import db
from app.platform.settings import Settings
from app.schemas.profiles import AccountUpsert

LIMITS = profiles.TraitLimits(per_profile=100, overall=1000)


def _batch(ids: range, *, now: datetime) -> list[profiles.Item]:
    return [
        profiles.item(i, f"acct-{n}", AccountUpsert(name=f"Company {n}"), now=now)
        for i, n in enumerate(ids)
    ]


async def test_a_batch_reads_only_its_own_profiles_on_a_connection_that_began_on_empty_tables(
    settings: Settings,
) -> None:
    # The service's pool plans each statement once per connection. A first import starts on
    # empty tables: a plan made then must not make every later batch read all stored accounts.
    pool = await db.create_pool(
        db.database_url(settings), settings.model_copy(update={"db_pool_size": 1})
    )
    now = datetime.now(UTC)
    try:
        async with pool.acquire() as conn:
            for start in (0, 2):  # the plans are made on an empty table, and used again
                async with conn.transaction():
                    await profiles.upsert(
                        conn,
                        "account",
                        _batch(range(start, start + 2), now=now),
                        now=now,
                        limits=LIMITS,
                        answer=False,
                    )
            await conn.execute(
                "INSERT INTO accounts (account_id, created_at, updated_at) "
                "SELECT 'stored-' || n, $1, $1 FROM generate_series(1, 20000) AS n",
                now,
            )
            async with conn.transaction():
                await profiles.upsert(
                    conn,
                    "account",
                    _batch(range(4, 14), now=now),
                    now=now,
                    limits=LIMITS,
                    answer=False,
                )
                read = await conn.fetchval(
                    "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) "
                    "FROM pg_stat_xact_user_tables WHERE relname = 'accounts'"
                )
            stored = await conn.fetchval("SELECT count(*) FROM accounts WHERE name IS NOT NULL")
    finally:
        await pool.close()
    assert stored == 14
    assert read < 200, f"a batch of 10 upserts read {read} rows of accounts"


async def test_a_batch_leaves_the_rest_of_its_transaction_planned_as_before(
    conn: asyncpg.Connection,
) -> None:
    # A sender's delivery upserts an account, then ingests its events in the same transaction:
    # a join of an events batch with its own keys needs the hash join a batch of upserts does
    # without.
    now = datetime.now(UTC)
    async with conn.transaction():
        await profiles.upsert(conn, "account", _batch(range(3), now=now), now=now, limits=LIMITS)
        after = [
            await conn.fetchval(f"SHOW {name}")
            for name in ("enable_seqscan", "enable_hashjoin", "enable_mergejoin")
        ]
    assert after == ["on", "on", "on"]
