"""The promotion gate: a model no better than chance, or than its baselines, is never activated
by itself; a candidate replaces the active model only when it measures up to it."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import numpy as np

from app.ml import datasets, promotion, registry, training
from tests.fixtures.synthetic import CATALOG, world


async def _gate(conn: asyncpg.Connection, path: Path) -> promotion.Verdict:
    return await promotion.gate(
        conn,
        candidate=registry.load(path),
        target="churn",
        label=datasets.default_label("churn"),
        as_of=datetime(2025, 12, 31, tzinfo=UTC),
        horizon=timedelta(days=90),
        auc_tolerance=0.01,
        calibration_tolerance=0.01,
    )


async def _verdict(
    conn: asyncpg.Connection,
    ts: datasets.TrainingSet,
    folder: Path,
) -> tuple[promotion.Verdict, float]:
    trained = await asyncio.to_thread(training.train, ts, training.Options(min_segment_rows=10_000))
    path = registry.write(
        folder, target="churn", model_id=folder.name, trained=trained, catalog=CATALOG, window={}
    )
    return await _gate(conn, path), float(trained.metrics["auc"])


async def test_a_model_no_better_than_chance_stays_a_candidate_even_as_the_first(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    ts = world(n_accounts=800, snapshots=3)
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


def test_a_candidate_is_promoted_only_when_it_measures_up_to_the_active_model() -> None:
    def measured(auc: float, calibration: float) -> promotion.Measured:
        return promotion.Measured(
            auc=auc, brier=0.1, calibration_error=calibration, lift_at_10=2.0, n=500
        )

    rules = {"auc_tolerance": 0.01, "calibration_tolerance": 0.01}
    worse, reason = promotion.decide(measured(0.70, 0.02), measured(0.80, 0.02), **rules)
    assert not worse and reason.startswith("kept as a candidate: AUC 0.700 against 0.800")
    close, _ = promotion.decide(measured(0.795, 0.025), measured(0.80, 0.02), **rules)
    assert close
    miscalibrated, reason = promotion.decide(measured(0.85, 0.10), measured(0.80, 0.02), **rules)
    assert not miscalibrated and "calibration error 0.100 against 0.020" in reason


async def _first_verdict(
    conn: asyncpg.Connection, tmp_path: Path, edit: dict[str, object]
) -> promotion.Verdict:
    """The gate's verdict on a real model of a target without an active model, its measured
    metrics replaced by `edit`."""
    ts = world(n_accounts=400, snapshots=3)
    trained = await asyncio.to_thread(training.train, ts, training.Options(min_segment_rows=10_000))
    trained.metrics |= edit
    path = registry.write(
        tmp_path, target="churn", model_id="edited", trained=trained, catalog=CATALOG, window={}
    )
    return await _gate(conn, path)


async def test_a_first_model_below_a_peer_serves_and_says_how_far_below(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    # A target is never left without a model that beats chance: the peer is only measured.
    beaten = {"auc": 0.80, "baselines": {"logistic_regression": 0.82, "recency": 0.7}}
    verdict = await _first_verdict(conn, tmp_path / "beaten", beaten)
    assert verdict.status == "active"
    assert verdict.reason.startswith("the first model of its target; ")
    assert "more than 0.01 below the logistic regression baseline's (0.820)" in verdict.reason
    assert "try a longer history" in verdict.reason
    close = {"auc": 0.815, "baselines": {"logistic_regression": 0.82, "recency": 0.7}}
    verdict = await _first_verdict(conn, tmp_path / "close", close)
    assert verdict.status == "active" and verdict.reason == "the first model of its target"


async def test_a_model_whose_interval_reaches_chance_stays_a_candidate(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    edit = {"auc": 0.6, "auc_interval": [0.48, 0.72], "valid_positives": 12, "baselines": {}}
    verdict = await _first_verdict(conn, tmp_path / "wide", edit)
    assert verdict.status == "candidate"
    assert "95% interval (0.480 to 0.720, 12 positives held out) reaches 0.5" in verdict.reason
