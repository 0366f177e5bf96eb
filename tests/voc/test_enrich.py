from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.platform import db, partitions
from app.platform.settings import Settings
from app.voc import enrich, sentiment

_TEXTS = """
    INSERT INTO events (event_id, occurred_at, received_at, account_id, type, text)
    SELECT 'e-' || n, $1::timestamptz, $1::timestamptz + n * interval '1 ms', 'acct',
           'ticket_opened', 'export broken'
    FROM generate_series($2::int, $3::int) AS n"""


async def test_a_round_reads_the_stored_enrichments_once_on_a_connection_that_began_with_none(
    settings: Settings,
) -> None:
    # The worker's pool keeps a connection's plans. Planned when Postgres knew text_enrichments
    # empty (a first import after an ANALYZE, a restored dump), a round must still not try every
    # text against every enrichment stored since.
    pool = await db.create_pool(
        db.database_url(settings), settings.model_copy(update={"db_pool_size": 1})
    )
    written = datetime.now(UTC) - timedelta(hours=1)
    analyzer = sentiment.Analyzer()
    try:
        await partitions.PartitionManager(pool).ensure([partitions.month_of(written)])
        async with pool.acquire() as conn:
            await conn.execute(_TEXTS, written, 1, 3000)
            await conn.execute("ANALYZE events, text_enrichments")
            assert await enrich.enrich_pending(conn, analyzer, limit=10) == 10
            assert await enrich.enrich_pending(conn, analyzer, limit=2000) == 2000
            async with conn.transaction():  # one round's reads, counted before it commits
                assert await enrich.enrich_pending(conn, analyzer, limit=2000) == 990
                read = await conn.fetchval(
                    "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) "
                    "FROM pg_stat_xact_user_tables WHERE relname = 'text_enrichments'"
                )
            stored = await conn.fetchval("SELECT count(*) FROM text_enrichments")
    finally:
        await pool.close()
    assert stored == 3000
    assert read < 10 * 2010, f"a round read {read} rows of 2,010 stored enrichments"
