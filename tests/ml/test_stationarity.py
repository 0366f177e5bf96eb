"""Features mean the same at serving as in training: bands say what they say, and the first
evaluation after training finds no drift on unchanged data."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import httpx
import numpy as np
import pytest

from app.demo import simulator
from app.ml import batch, datasets, drift, features, pipeline, registry, stationarity
from app.ml.catalog import Catalog
from app.ml.datasets import TrainingSet
from app.platform.settings import Settings
from tests.fixtures.http import load

END = datetime(2026, 6, 1, tzinfo=UTC)

CATALOG = Catalog(  # days on record may be capped at 60: the shortest snapshot's history
    event_types=(),
    numeric_traits=(),
    string_traits={},
    plans=(),
    segments=(),
    roles=(),
    include=("data_days", "tenure_days", "events_30d", "mrr"),
    stationary=True,
    cap_days=60,
)


async def _progress(_: float) -> None:
    return None


async def _train(conn: asyncpg.Connection, settings: Settings, target: str) -> str:
    params = {"target": target, "as_of": END.isoformat()}
    return str((await pipeline.handler(settings)(conn, params, _progress))["model_id"])


def _frame(rows: np.ndarray, at: datetime) -> features.Frame:
    keys = [(f"a{i}", at) for i in range(len(rows))]
    return features.Frame(CATALOG, keys, rows, [None] * len(rows))


def test_a_feature_that_grows_with_the_installation_is_dropped_when_it_shifted() -> None:
    """A world whose history is longer than its snapshots: tenure (the record being the only
    start known) was 30 to 270 days in the snapshots and reaches 400 now, as new accounts
    keep arriving; usage doubled too, but a shift of usage is the world's, not the
    installation's age."""
    rng = np.random.default_rng(1)
    n = 2000
    start = datetime(2025, 1, 1, tzinfo=UTC)
    columns = list(CATALOG.names)

    def rows(tenure: np.ndarray, events: np.ndarray) -> np.ndarray:
        value = {
            "data_days": tenure,  # on record as long as it is a customer
            "tenure_days": tenure,
            "events_30d": events,
            "mrr": rng.lognormal(6, 0.5, n),
        }
        return np.column_stack([value[c] for c in columns])

    then = rows(rng.uniform(30, 270, n), rng.poisson(20, n).astype(float))
    now = rows(rng.uniform(30, 400, n), rng.poisson(40, n).astype(float))
    ts = TrainingSet(_frame(then, start), np.zeros(n), np.zeros(n, dtype=int), [start])
    measured = {m.feature: m for m in stationarity.check(ts, _frame(now, END), threshold=0.2)}
    assert measured["tenure_days"].action == "dropped" and measured["tenure_days"].psi > 0.2
    assert measured["events_30d"].action == "reported" and measured["events_30d"].psi > 0.2
    assert measured["data_days"].action == "capped at 60 days"
    assert measured["mrr"].action == "kept" and measured["mrr"].psi < 0.1

    kept = stationarity.stable(ts, list(measured.values()))
    assert "tenure_days" not in kept.frame.names and kept.frame.catalog.shifted == ("tenure_days",)
    assert kept.frame.catalog.capped == ("data_days",)
    assert kept.frame.matrix.shape == (n, 3)
    assert np.array_equal(kept.frame.column("events_30d"), ts.frame.column("events_30d"))
    capped = np.minimum(ts.frame.column("data_days"), 60)
    assert np.array_equal(kept.frame.column("data_days"), capped)
    # The model's catalog leaves it out at serving too, and says why in the manifest.
    again = Catalog.from_json(kept.frame.catalog.to_json())
    assert again.names == kept.frame.names
    described = stationarity.describe(kept.frame.catalog, list(measured.values()), 0.2)
    assert {f["feature"]: f["action"] for f in described["features"]} == {
        "tenure_days": "dropped",
        "events_30d": "reported",
        "data_days": "capped at 60 days",
    }


def test_a_recency_no_snapshot_could_see_is_none_at_serving() -> None:
    """An installation younger than a year plus the horizon: its latest snapshot saw 200 days
    of history, so no snapshot had a last failed payment 250 days back. At serving, one that
    long ago reads as none, as training would have seen it, and the words say over what."""
    young = Catalog.from_json(
        {**CATALOG.to_json(), "event_types": ["payment_failed"], "include": [], "recency_days": 200}
    )
    assert young.recency_days == 200
    assert [young.recency(d) for d in (0.5, 199.9, 200.0, 250.0, 400.0)] == [
        0.5,
        199.9,
        200.0,
        365.0,
        365.0,
    ]
    last = young.feature("days_since_payment_failed")
    assert last.stated(young.recency(250.0)) == "No payment failed in the last 200 days"
    assert young.feature("days_since_active").show(365.0) == "none in the last 200 days"
    # An installation whose snapshots saw a year or more reads recency over the year.
    old = Catalog.from_json({**CATALOG.to_json(), "event_types": ["payment_failed"], "include": []})
    assert old.recency(250.0) == 250.0
    assert old.feature("days_since_payment_failed").stated(365.0) == (
        "No payment failed in the last year"
    )


@pytest.mark.slow  # trains two models on a simulated year
async def test_bands_at_serving_hold_the_design_and_the_first_evaluation_finds_no_drift(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=800, end=END, seed=5)
    await load(client, world)

    for target in ("churn", "expansion"):
        model_id = await _train(conn, settings, target)
        record = await registry.located(conn, model_id)
        loaded = await asyncio.to_thread(registry.load, record.path)
        # Built stationary: a rate per day on record, days on record capped, each step recorded.
        assert "events_per_day" in registry.catalog_at(record.path).features  # type: ignore[union-attr]
        stable = loaded.manifest["window"]["stationarity"]
        assert stable["cap_days"] == loaded.catalog.cap_days and stable["cap_days"] < 100
        # Recency looks back as far as the latest snapshot could (its history under a year).
        latest = datetime.fromisoformat(loaded.manifest["window"]["snapshots"][-1])
        first = await datasets.first_data(conn, as_of=END)
        assert first is not None
        history = math.ceil((latest - first.at).total_seconds() / 86400)
        assert history < 365 and loaded.catalog.recency_days == history
        actions = {f["feature"]: f["action"] for f in stable["features"]}
        # Whatever grows with the installation's age and shifted is dropped, from serving too;
        # what grows and is kept is capped, or did not shift.
        cap = f"capped at {stable['cap_days']} days"
        dropped = [name for name, action in actions.items() if action == "dropped"]
        assert not set(dropped) & set(loaded.catalog.names), dropped
        assert set(dropped) <= set(loaded.catalog.shifted), dropped
        growing = [n for n, f in loaded.catalog.features.items() if f.spec.grows]
        assert all(actions.get(n, "kept") in ("kept", cap) for n in growing), actions

        await batch.rescore(conn, targets=[target], as_of=END, top=3, progress=_progress)
        rows = await conn.fetch(
            "SELECT s.band, a.segment FROM scores s JOIN accounts a USING (account_id) "
            "WHERE s.model_id = $1 AND s.as_of = $2",
            model_id,
            END,
        )
        assert len(rows) > 300
        high, every = Counter[str](), Counter[str]()
        for r in rows:
            every[r["segment"]] += 1
            high[r["segment"]] += r["band"] == "high"
        shares = {s: high[s] / every[s] for s in every}
        # The design is the top 10% of each segment; within 5% and 20% at serving.
        assert all(0.05 <= share <= 0.20 for share in shares.values()), (target, shares)

        # Among the top 100, no headline reason says the opposite of what the catalog knows:
        # a value above the segment's typical one of a feature that lowers the target's
        # probability (more use, for churn) never "raises" it, nor one below it.
        top = (await client.get("/v1/scores", params={"target": target, "limit": 100})).json()
        directions = loaded.catalog.directions(target)
        stats = loaded.manifest["stats"]
        checked = 0
        for result in top["results"]:
            score = result["score"]
            typical = stats.get(score["segment"] or "", stats["__global__"])["typical"]
            for reason in score["reasons"]:
                d, value = directions.get(reason["feature"]), reason["value"]
                middle = typical.get(reason["feature"])
                if d is None or not isinstance(value, float | int) or middle in (None, value):
                    continue
                checked += 1
                assert d * (value - middle) > 0, (target, reason, middle)
        assert checked > 0

        report = await drift.measure(conn, model_id=model_id, rule=drift.Rule.of(settings))
        assert report["score_psi"] < report["threshold"], (target, report["score_psi"])
        assert report["drift"] is False, (target, report["features"][:6], report["score_psi"])
        # Nothing that grows with the installation's age is among what shifted.
        shifted = [f["feature"] for f in report["features"] if f["psi"] > report["threshold"]]
        assert not [n for n in shifted if loaded.catalog.feature(n).spec.grows], shifted
