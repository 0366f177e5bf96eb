"""Which model serves: the active model is cached per API process, and a change made anywhere
(another process, another service, plain SQL) reaches every process through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.ml import registry, training
from app.ml.model import Trained
from app.platform.settings import Settings
from tests.fixtures.synthetic import CATALOG, world


@pytest.fixture(scope="module")
def trained() -> Trained:
    ts = world(n_accounts=400, snapshots=2)
    return training.train(ts, training.Options(min_segment_rows=10_000))


@pytest.fixture
async def two_models(trained: Trained, settings: Settings, conn: asyncpg.Connection) -> None:
    """m1 active and m2 a candidate, both real models on disk, registered for churn."""
    for model_id, status in (("m1", "active"), ("m2", "candidate")):
        path = registry.write(
            Path(settings.models_dir),
            target="churn",
            model_id=model_id,
            trained=trained,
            catalog=CATALOG,
            window={"as_of": "2025-06-01"},
        )
        await conn.execute(
            "INSERT INTO models (model_id, target, status, as_of, horizon_days, label, summary, "
            "path) VALUES ($1, 'churn', $2, '2025-06-01', 90, "
            """'{"type": "outcome", "kinds": ["churned"]}', '{}', $3)""",
            model_id,
            status,
            str(path),
        )


async def served_by(client: httpx.AsyncClient) -> str:
    response = await client.get("/v1/accounts/a1/scores", params={"target": "churn"})
    assert response.status_code == 200, response.text
    return str(response.json()["scores"][0]["model_id"])


async def until_served_by(client: httpx.AsyncClient, model_id: str) -> None:
    deadline = time.monotonic() + 10
    while (seen := await served_by(client)) != model_id:
        assert time.monotonic() < deadline, f"still served by {seen}"
        await asyncio.sleep(0.05)


async def listener_pid(conn: asyncpg.Connection) -> int:
    deadline = time.monotonic() + 10
    while True:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'custintel-listener'"
        )
        if pid is not None:
            return int(pid)
        assert time.monotonic() < deadline, "no change listener connected"
        await asyncio.sleep(0.05)


async def activate_elsewhere(conn: asyncpg.Connection, model_id: str) -> None:
    """What another API process or worker does when it promotes a model."""
    async with conn.transaction():
        await conn.execute("UPDATE models SET status = 'retired' WHERE status = 'active'")
        await conn.execute("UPDATE models SET status = 'active' WHERE model_id = $1", model_id)


async def answered_from_the_cache(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    """With the notifications switched off, a model activated elsewhere goes unseen: the answers
    come from the cache, not from the models table. The activation is then announced."""
    await conn.execute("ALTER TABLE models DISABLE TRIGGER models_changed")
    try:
        await activate_elsewhere(conn, "m2")
        for _ in range(3):
            assert await served_by(client) == "m1"
    finally:
        await conn.execute("ALTER TABLE models ENABLE TRIGGER models_changed")
    await activate_elsewhere(conn, "m2")


async def test_a_model_activated_by_another_process_serves_the_next_requests(
    client: httpx.AsyncClient, conn: asyncpg.Connection, two_models: None
) -> None:
    await client.put("/v1/accounts/a1", json={"segment": "smb", "mrr": 100})
    await listener_pid(conn)
    assert await served_by(client) == "m1"
    await answered_from_the_cache(client, conn)
    await until_served_by(client, "m2")
    await activate_elsewhere(conn, "m1")
    await until_served_by(client, "m1")


async def test_a_lost_listener_reconnects_and_changes_still_arrive(
    app: Any, client: httpx.AsyncClient, conn: asyncpg.Connection, two_models: None
) -> None:
    await client.put("/v1/accounts/a1", json={"segment": "smb", "mrr": 100})
    first = await listener_pid(conn)
    assert await served_by(client) == "m1"
    await conn.execute("SELECT pg_terminate_backend($1)", first)
    deadline = time.monotonic() + 10
    while await listener_pid(conn) == first:
        assert time.monotonic() < deadline, "the listener did not reconnect"
        await asyncio.sleep(0.05)
    # Connected is not yet listening: the cache comes back on once LISTEN has run (on a busy
    # machine, a while after the connection shows).
    while not app.state.runtime.listener.listening:
        assert time.monotonic() < deadline, "the listener did not listen again"
        await asyncio.sleep(0.05)
    assert await served_by(client) == "m1"
    await answered_from_the_cache(client, conn)  # the cache is back on with the listener
    await until_served_by(client, "m2")


async def test_a_score_given_now_is_kept_and_one_as_of_the_past_is_not(
    client: httpx.AsyncClient, conn: asyncpg.Connection, two_models: None
) -> None:
    await client.put(
        "/v1/accounts/a1", json={"segment": "smb", "observed_at": "2025-01-01T00:00:00Z"}
    )
    past = await client.get(
        "/v1/accounts/a1/scores", params={"target": "churn", "as_of": "2025-03-01T00:00:00Z"}
    )
    assert past.status_code == 200, past.text
    now = await client.get("/v1/accounts/a1/scores", params={"target": "churn"})
    assert now.status_code == 200, now.text
    deadline = time.monotonic() + 10
    while not await conn.fetchval("SELECT count(*) FROM scores"):  # written behind the answer
        assert time.monotonic() < deadline, "the score given now was not kept"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)  # one more flush interval: anything else buffered is written too
    kept = await conn.fetch("SELECT as_of FROM scores")
    given = datetime.fromisoformat(now.json()["scores"][0]["as_of"])
    assert [r["as_of"] for r in kept] == [given]
