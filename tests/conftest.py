"""Every test that touches storage runs on a real Postgres built by the real migrations.

CUSTINTEL_DATABASE_URL (a role allowed to create databases) is used when set; otherwise an
embedded Postgres is started for the session. Each test gets a fresh database cloned from a
migrated template, so tests never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
import pytest

from app.main import create_app
from app.platform import db, migrate
from app.platform.settings import Settings

ADMIN_KEY = "test-admin-key-" + "x" * 24
# One sealing key for every process a test starts (servers, workers, the demo), as an
# installation with several processes sets CUSTINTEL_SECRET_KEY: otherwise each would make a
# key file of its own data dir and refuse the secrets another sealed.
TEST_SECRET_KEY = "dGVzdC1zZWNyZXQta2V5LWZvci1jdXN0aW50ZWwtMDE="
os.environ.setdefault("CUSTINTEL_SECRET_KEY", TEST_SECRET_KEY)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    if external:
        yield db.plain_url(external)
        return
    data_dir = tmp_path_factory.mktemp("pg")
    yield db.start_embedded(data_dir)


@pytest.fixture(scope="session")
def template_url(server_url: str) -> Iterator[str]:
    name = f"custintel_tpl_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            await db.create_database(conn, name)
        finally:
            await conn.close()

    asyncio.run(create())
    url = with_database(server_url, name)
    migrate.upgrade(url)
    yield url

    async def drop() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
async def database_url(server_url: str, template_url: str) -> AsyncIterator[str]:
    name = f"custintel_t_{uuid.uuid4().hex[:12]}"
    template = urlsplit(template_url).path.lstrip("/")
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    yield with_database(server_url, name)
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        bootstrap_admin_key=ADMIN_KEY,
        models_dir=tmp_path / "models",
        data_dir=tmp_path / "data",
        access_log=False,
        run_worker=False,
        job_wait_seconds=240,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[object]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://custintel.test",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ) as c:
        yield c


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, for checking what was really stored."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
def make_key(client: httpx.AsyncClient) -> Callable[..., Awaitable[str]]:
    async def make(*scopes: str, name: str = "test") -> str:
        response = await client.post("/v1/keys", json={"name": name, "scopes": list(scopes)})
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    return make


@pytest.fixture
def insert_model(conn: asyncpg.Connection) -> Callable[..., Awaitable[None]]:
    """A models row without files, for tests of what is built on the score history (no
    LightGBM involved): active churn model with an outcome label and neutral metrics."""

    async def insert(
        model_id: str = "m1", *, as_of: datetime, horizon_days: int = 30, activated: bool = False
    ) -> None:
        summary = {
            "metrics": {
                "auc": 0.8,
                "pr_auc": 0.5,
                "brier": 0.1,
                "log_loss": 0.3,
                "lift_at_10": 3.0,
                "n_train": 100,
                "n_valid": 50,
                "positive_rate": 0.1,
            },
            "segments": {},
            "features": [],
        }
        await conn.execute(
            "INSERT INTO models (model_id, target, status, as_of, horizon_days, label, summary, "
            "path, activated_at) VALUES ($1, 'churn', 'active', $2, $3, $4::jsonb, $5::jsonb, "
            "'/nowhere', CASE WHEN $6 THEN now() END)",
            model_id,
            as_of,
            horizon_days,
            '{"type": "outcome", "kinds": ["churned"]}',
            orjson.dumps(summary).decode(),
            activated,
        )

    return insert


@contextlib.asynccontextmanager
async def another_process(
    settings: Settings, **changes: object
) -> AsyncIterator[httpx.AsyncClient]:
    """An API process of its own (its app, caches and change listener) on the test's database,
    with some settings changed, and an admin client of it."""
    application = create_app(settings.model_copy(update=changes))
    async with application.router.lifespan_context(application):
        deadline = time.monotonic() + 10
        while not application.state.runtime.listener.listening:
            assert time.monotonic() < deadline, "its change listener did not come up"
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://other.test",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as other:
            yield other


async def run_queued_job(settings: Settings, kind: str) -> dict[str, object]:
    """Run the one queued job of `kind` as a worker does (with every handler a worker has);
    its result, once it succeeded."""
    from app.activation import schedules
    from app.platform import jobs

    pool = await db.create_pool(str(settings.database_url), settings)
    try:
        async with pool.acquire() as conn:
            [queued] = await jobs.listed(conn, kind=kind, status="queued", limit=10)
        assert await jobs.run_one(pool, schedules.handlers(settings))
        async with pool.acquire() as conn:
            done = await jobs.get(conn, queued.job_id)
    finally:
        await pool.close()
    assert done.status == "succeeded", done.error
    return done.result or {}
