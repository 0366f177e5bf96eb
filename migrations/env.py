"""Alembic environment: runs migrations over asyncpg against CUSTINTEL_DATABASE_URL or the URL set
by app.platform.migrate."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.platform import db, tables  # noqa: F401  (tables registers every table on the metadata)
from app.platform.settings import get_settings

config = context.config
target_metadata = db.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or get_settings().database_url
    if not url:
        raise RuntimeError("no database URL: set CUSTINTEL_DATABASE_URL")
    return db.asyncpg_url(url)


def _include(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Monthly event partitions are created at run time (app.platform.partitions), not by migrations.
    return not (type_ == "table" and reflected and name is not None and name.startswith("events_"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, include_object=_include
    )
    with context.begin_transaction():
        # One migrator at a time, even with several processes starting together.
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7310001)")
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
