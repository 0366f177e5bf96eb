"""Realized performance of a model, checked against a hand computation."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest

NOW = datetime.now(UTC)
# Six in the morning, so that scores an hour apart fall on the same day.
AS_OF = (NOW - timedelta(days=60)).replace(hour=6, minute=0, second=0, microsecond=0)


async def score(
    conn: asyncpg.Connection, account: str, as_of: datetime, p: float, lead: str, scored: int = 0
) -> None:
    reasons = [{"feature": lead, "value": 1.0, "contribution": 0.5, "text": "t"}]
    await conn.execute(
        "INSERT INTO scores (account_id, target, model_id, segment, as_of, scored_at, probability, "
        "band, percentile, margin, reasons, base_value, other_contribution) "
        "VALUES ($1, 'churn', 'm1', 'smb', $2, $3, $4, 'low', 50, 0, $5::jsonb, 0, 0)",
        account,
        as_of,
        as_of + timedelta(seconds=scored),
        p,
        orjson.dumps(reasons).decode(),
    )


async def test_realized_metrics_match_a_hand_computation(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    insert_model: Callable[..., Awaitable[None]],
) -> None:
    await insert_model(as_of=AS_OF - timedelta(days=100))
    for account in ("a1", "a2", "a3", "a4"):
        await client.put(f"/v1/accounts/{account}", json={"segment": "smb"})

    async def churned(account: str, at: datetime) -> None:
        body = {"account_id": account, "kind": "churned", "occurred_at": at.isoformat()}
        assert (await client.post("/v1/outcomes", json=body)).status_code == 202

    await churned("a1", AS_OF + timedelta(days=10))  # inside the 30-day horizon: 1
    await churned("a2", AS_OF + timedelta(days=40))  # after it: 0
    await churned("a4", AS_OF - timedelta(days=1))  # already gone when scored: left out
    await score(conn, "a1", AS_OF, 0.8, "tickets_open")
    await score(conn, "a2", AS_OF, 0.6, "events_login_30d")
    await score(conn, "a3", AS_OF, 0.9, "events_login_30d", scored=0)  # same day, replaced
    await score(conn, "a3", AS_OF + timedelta(hours=1), 0.3, "events_login_30d", scored=5)
    await score(conn, "a4", AS_OF, 0.99, "tickets_open")
    await score(conn, "a1", NOW - timedelta(days=10), 0.7, "tickets_open")  # not matured

    response = await client.get("/v1/models/m1/performance")
    assert response.status_code == 200, response.text
    body = response.json()
    overall = body["overall"]
    # y = [1, 0, 0], p = [0.8, 0.6, 0.3]
    assert overall["n"] == 3 and overall["positives"] == 1
    assert overall["auc"] == 1.0
    assert overall["brier"] == pytest.approx((0.2**2 + 0.6**2 + 0.3**2) / 3)
    assert overall["lift_at_10"] == pytest.approx(3.0)
    assert [b["n"] for b in overall["calibration"]] == [1, 1, 1]
    assert [b["observed"] for b in overall["calibration"]] == [0.0, 0.0, 1.0]
    assert body["segments"]["smb"]["n"] == 3
    assert body["validation"]["auc"] == 0.8
    lead = {r["feature"]: r for r in body["preceding_reasons"]}
    assert lead["tickets_open"]["happened"] == 1 and lead["tickets_open"]["did_not_happen"] == 0
    assert lead["events_login_30d"]["did_not_happen"] == 2
    assert lead["events_login_30d"]["did_not_happen_share"] == 1.0

    later = await client.get(
        "/v1/models/m1/performance", params={"since": (AS_OF + timedelta(minutes=30)).isoformat()}
    )
    assert later.json()["overall"]["n"] == 1  # only a3's later score
    assert (await client.get("/v1/models/nope/performance")).status_code == 404


async def test_jobs_are_listed_newest_first_with_filters(client: httpx.AsyncClient) -> None:
    first = (await client.post("/v1/models/train", json={"target": "churn"})).json()
    second = (await client.post("/v1/scores/rescore", json={})).json()
    listed = (await client.get("/v1/jobs")).json()
    assert [j["job_id"] for j in listed] == [second["job_id"], first["job_id"]]
    only = (await client.get("/v1/jobs", params={"kind": "train", "status": "queued"})).json()
    assert [j["job_id"] for j in only] == [first["job_id"]]
    assert (await client.get("/v1/jobs", params={"status": "done"})).status_code == 422
