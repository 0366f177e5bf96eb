"""The promotion gate's floor: a model no better than chance is never activated by itself."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np

from app.ml import datasets, promotion, registry, training
from tests.ml.synthetic import CATALOG, world


async def _verdict(
    conn: asyncpg.Connection,
    ts: datasets.TrainingSet,
    folder: Path,
    peers: dict[str, float | None] | None = None,
) -> tuple[promotion.Verdict, float]:
    trained = await asyncio.to_thread(training.train, ts, training.Options(min_segment_rows=10_000))
    path = registry.write(
        folder, target="churn", model_id=folder.name, trained=trained, catalog=CATALOG, window={}
    )
    loaded = registry.load(path)
    if peers is not None:  # peers stronger than the ones measured on these rows
        loaded.manifest["metrics"]["baselines"] = peers
    verdict = await promotion.gate(
        conn,
        candidate=loaded,
        target="churn",
        label=datasets.default_label("churn"),
        as_of=datetime(2025, 12, 31, tzinfo=UTC),
        horizon=timedelta(days=90),
        auc_tolerance=0.01,
        calibration_tolerance=0.01,
    )
    return verdict, float(trained.metrics["auc"])


async def test_a_model_no_better_than_chance_stays_a_candidate_even_as_the_first(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    ts = world(n_accounts=400, snapshots=2)
    shuffled = dataclasses.replace(ts, labels=np.random.default_rng(0).permutation(ts.labels))
    verdict, auc = await _verdict(conn, shuffled, tmp_path / "chance")
    assert auc <= promotion.MIN_AUC
    assert verdict.status == "candidate" and verdict.replaced is None
    assert f"held-out AUC ({auc:.3f}) is not above 0.55" in verdict.reason
    assert "/activate" in verdict.reason
    # The same data with its real labels makes the target's first active model.
    verdict, auc = await _verdict(conn, ts, tmp_path / "real")
    assert auc > promotion.MIN_AUC
    assert verdict.status == "active" and verdict.reason == "the first model of its target"


async def test_a_model_below_its_best_baseline_stays_a_candidate(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    ts = world(n_accounts=400, snapshots=2)
    verdict, auc = await _verdict(conn, ts, tmp_path / "measured")
    assert verdict.status == "active"  # it beats the peers measured on its own rows
    stronger = {"logistic_regression": auc + 0.05, "recency": None}
    verdict, auc = await _verdict(conn, ts, tmp_path / "beaten", stronger)
    assert verdict.status == "candidate"
    assert f"below the logistic regression baseline's ({auc + 0.05:.3f})" in verdict.reason
