"""Serving computes exactly what training computed: for any account and moment, the features
the serving paths build (one account on request, a batch at one moment) equal the training-set
builder's row for the same (account, moment), and the score served over HTTP is the model's
score of that row."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import pytest

from app.demo import simulator
from app.ml import datasets, features, pipeline, registry, scoring
from app.platform.settings import Settings
from tests.fixtures.http import load

END = datetime(2026, 6, 1, tzinfo=UTC)
# Equal but for the last bit of a float: Postgres sums float8 in the order its plan reads the
# rows (a mean sentiment was 0.26187499999999997 one way and 0.261875 the other).
FLOAT_SUMS = 1e-12


async def _progress(_: float) -> None:
    return None


@pytest.mark.slow  # loads a simulated world and trains on it
async def test_serving_and_training_compute_the_same_features_and_scores(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=250, end=END, days=300, seed=11)
    await load(client, world)
    rng = random.Random(7)
    # Moments at any time of day (day boundaries are where two paths part), across the world.
    moments = sorted(
        END - timedelta(days=rng.uniform(100, 260), seconds=rng.randrange(86_400)) for _ in range(4)
    )
    params = {
        "target": "churn",
        "as_of": END.isoformat(),
        "snapshot_dates": [m.isoformat() for m in moments],
    }
    result = await pipeline.handler(settings)(conn, params, _progress)
    model_id = result["model_id"]
    if result["status"] != "active":
        assert (await client.post(f"/v1/models/{model_id}/activate")).status_code == 200
    loaded = await asyncio.to_thread(registry.load, (await registry.located(conn, model_id)).path)
    catalog = loaded.catalog

    # The training-set builder's rows, with the model's own catalog.
    ts = await datasets.build(
        conn,
        target="churn",
        label=datasets.default_label("churn"),
        as_of=END,
        horizon=timedelta(days=90),
        every=timedelta(days=30),
        dates=moments,
        catalog=catalog,
        first=await datasets.first_data(conn, as_of=END),
        warm_up=timedelta(days=30),
    )
    rows = rng.sample(range(len(ts.frame.keys)), 40)
    picked = [ts.frame.keys[i] for i in rows]
    built = ts.frame.matrix[rows]
    assert len({t for _, t in picked}) > 1 and len({a for a, _ in picked}) > 30

    # On request: one account at a time, as GET /v1/accounts/{id}/scores fetches it.
    for (account_id, t), expected in zip(picked, built, strict=True):
        one = await features.compute(conn, catalog, [(account_id, t)])
        np.testing.assert_allclose(one.matrix[0], expected, rtol=FLOAT_SUMS, err_msg=f"{t}")
    # A batch: every picked account of one moment together, as batch scoring fetches them.
    for moment in {t for _, t in picked}:
        same = [(k, v) for k, v in zip(picked, built, strict=True) if k[1] == moment]
        batch = await features.compute(conn, catalog, [k for k, _ in same])
        np.testing.assert_allclose(batch.matrix, np.array([v for _, v in same]), rtol=FLOAT_SUMS)

    # Over HTTP, the served margin is the model's margin of the builder's row.
    expected_scores = scoring.score_frame(
        loaded,
        features.Frame(catalog, picked, built, [ts.frame.segments[i] for i in rows]),
        top=0,
    )
    for (account_id, t), score in zip(picked, expected_scores, strict=True):
        reply = await client.get(
            f"/v1/accounts/{account_id}/scores",
            params={"target": "churn", "as_of": t.isoformat(), "top": 0},
        )
        assert reply.status_code == 200, reply.text
        [served] = reply.json()["scores"]
        assert served["model_id"] == model_id
        assert served["margin"] == pytest.approx(score.margin, abs=1e-9), (account_id, t)
        assert served["probability"] == pytest.approx(score.probability, abs=1e-12)
