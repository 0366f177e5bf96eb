"""Migrations are reversible and describe exactly the tables in app/platform/tables.py."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from app.platform import db, migrate, tables


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r[0] for r in rows}
    finally:
        await conn.close()


async def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    assert "events" in await _tables(database_url)
    await asyncio.to_thread(migrate.downgrade, database_url, "base")
    assert await _tables(database_url) <= {"alembic_version"}
    await asyncio.to_thread(migrate.upgrade, database_url)
    assert {
        "accounts",
        "events",
        "event_keys",
        "outcomes",
        "api_keys",
        "audit_log",
    } <= await _tables(database_url)


async def test_migrations_match_the_tables_module(database_url: str) -> None:
    engine = create_async_engine(db.asyncpg_url(database_url))

    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return list(compare_metadata(context, tables.Base.metadata))

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await engine.dispose()
    assert differences == []
