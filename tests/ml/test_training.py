"""Training on a synthetic world whose two segments churn for different reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app import errors, features
from app.ml import training
from app.ml.datasets import TrainingSet

CATALOG = features.Catalog(
    event_types=("login",),
    numeric_traits=(),
    string_traits={},
    plans=("pro", "basic"),
    segments=("enterprise", "smb"),
    roles=(),
    include=(
        "events_login_30d",
        "payments_failed_90d",
        "executive_sponsor_active_30d",
        "mrr",
        "segment",
        "plan",
    ),
)


def world(n_accounts: int = 1500, snapshots: int = 6, seed: int = 3) -> TrainingSet:
    """Enterprise churns when the executive sponsor goes quiet; SMB on usage drops and failed
    payments. Plan carries nothing."""
    rng = np.random.default_rng(seed)
    names = CATALOG.names
    rows, labels, keys, segs, snap = [], [], [], [], []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(snapshots):
        for a in range(n_accounts):
            enterprise = a % 2 == 0
            logins = rng.poisson(30 if enterprise else 12)
            failed = rng.poisson(0.3)
            sponsor = float(rng.random() < 0.7)
            mrr = rng.lognormal(8 if enterprise else 5, 0.3)
            if enterprise:
                logit = -2.5 + 3.0 * (1 - sponsor)
            else:
                logit = -2.0 - 0.25 * (logins - 12) + 1.2 * failed
            y = float(rng.random() < 1 / (1 + np.exp(-logit)))
            value = {
                "events_login_30d": logins,
                "payments_failed_90d": failed,
                "executive_sponsor_active_30d": sponsor,
                "mrr": mrr,
                "segment": 0 if enterprise else 1,
                "plan": float(rng.integers(0, 2)),
            }
            rows.append([value[n] for n in names])
            labels.append(y)
            keys.append((f"acct-{a}", start + timedelta(days=30 * s)))
            segs.append("enterprise" if enterprise else "smb")
            snap.append(s)
    frame = features.Frame(CATALOG, keys, np.array(rows, dtype=float), segs)
    return TrainingSet(
        frame,
        np.array(labels),
        np.array(snap),
        [start + timedelta(days=30 * s) for s in range(snapshots)],
    )


@pytest.fixture(scope="module")
def trained() -> training.Trained:
    return training.train(world(), training.Options())


def test_held_out_auc_is_useful_and_metrics_are_complete(trained: training.Trained) -> None:
    m = trained.metrics
    assert m["auc"] >= 0.75
    assert {
        "auc",
        "pr_auc",
        "brier",
        "log_loss",
        "lift_at_10",
        "n_train",
        "n_valid",
        "positive_rate",
    } <= set(m)
    assert m["lift_at_10"] > 1.5
    assert len(trained.reliability) == 10


def test_each_segment_model_is_kept_only_when_it_does_as_well_on_held_out_rows(
    trained: training.Trained,
) -> None:
    for segment in ("enterprise", "smb"):
        entry = trained.segments[segment]
        own, shared = entry["segment_holdout"]["auc"], entry["global_holdout"]["auc"]
        assert entry["model"] == ("segment" if own >= shared else "global"), entry
        assert (segment in trained.models) == (entry["model"] == "segment")


def test_a_segment_too_small_for_its_own_model_uses_the_global_one() -> None:
    options = training.Options(min_segment_rows=10**6)
    trained = training.train(world(n_accounts=300, snapshots=3), options)
    assert set(trained.models) == {training.GLOBAL}
    assert "needs" in trained.segments["smb"]["reason"]


def test_training_is_deterministic() -> None:
    ts = world(n_accounts=400, snapshots=4, seed=5)
    options = training.Options(min_segment_rows=10**9)
    first, second = training.train(ts, options), training.train(ts, options)
    x = ts.frame.matrix
    np.testing.assert_array_equal(
        training.margin(first.models[training.GLOBAL].booster, x),
        training.margin(second.models[training.GLOBAL].booster, x),
    )


def test_bands_put_about_a_tenth_of_each_segment_high(trained: training.Trained) -> None:
    for segment in ("enterprise", "smb"):
        stats = trained.stats[segment]
        ref = np.array(stats.reference)
        high, medium = stats.thresholds
        assert 0.07 <= (ref >= high).mean() <= 0.13
        assert 0.25 <= (ref >= medium).mean() <= 0.35


def test_feature_cap_keeps_the_most_important(trained: training.Trained) -> None:
    capped = training.train(world(n_accounts=600, snapshots=4), training.Options(max_features=3))
    assert len(capped.features) == 3


def test_no_positives_is_a_clear_error() -> None:
    ts = world(n_accounts=100, snapshots=2)
    ts.labels[:] = 0
    with pytest.raises(errors.InvalidPayload, match="no positive"):
        training.train(ts, training.Options())
