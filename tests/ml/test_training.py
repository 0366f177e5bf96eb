"""Training on a synthetic world whose two segments churn for different reasons."""

from __future__ import annotations

import numpy as np
import pytest

from app import errors
from app.ml import training
from tests.ml.synthetic import world


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
