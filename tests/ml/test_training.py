"""Training on a synthetic world whose two segments churn for different reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from app.ml import features, search, training
from app.ml.catalog import Catalog
from app.ml.datasets import TrainingSet
from app.ml.metrics import auc_difference_error, auc_within
from app.ml.model import GLOBAL, Trained
from app.platform import errors
from tests.fixtures.synthetic import world


@pytest.fixture(scope="module")
def trained() -> Trained:
    return training.train(world(), training.Options())


def test_held_out_auc_is_useful_and_metrics_are_complete(trained: Trained) -> None:
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
    trained: Trained,
) -> None:
    for segment in ("enterprise", "smb"):
        entry = trained.segments[segment]
        own, shared = entry["segment_holdout"]["auc"], entry["global_holdout"]["auc"]
        better = own - shared > entry["difference_error"]  # by more than the paired error
        assert entry["model"] == ("segment" if better else "global"), entry
        assert (segment in trained.models) == (entry["model"] == "segment")


def test_a_segment_too_small_for_its_own_model_uses_the_global_one() -> None:
    options = training.Options(min_segment_rows=10**6)
    trained = training.train(world(n_accounts=300, snapshots=3), options)
    assert set(trained.models) == {GLOBAL}
    assert "needs" in trained.segments["smb"]["reason"]


def test_training_and_its_search_are_deterministic() -> None:
    # Small on purpose: determinism does not depend on the size, and this trains twice.
    ts = world(n_accounts=250, snapshots=3, seed=5)
    options = training.Options(min_segment_rows=10**9)
    first, second = training.train(ts, options), training.train(ts, options)
    assert len(first.search["candidates"]) > 1  # a real search was made, twice
    assert first.search["chosen"] == second.search["chosen"]
    assert [c["auc"] for c in first.search["candidates"]] == [
        c["auc"] for c in second.search["candidates"]
    ]
    # Same data, same model bytes, and the same blend.
    one, two = first.models[GLOBAL], second.models[GLOBAL]
    assert one.booster.model_to_string() == two.booster.model_to_string()
    assert one.blend == two.blend and first.search["blend"] == second.search["blend"]
    assert (one.regression and one.regression.to_json()) == (
        two.regression and two.regression.to_json()
    )


def test_the_served_model_learns_from_every_row_the_held_out_ones_included(
    trained: Trained,
) -> None:
    assert trained.rows["train"] == trained.rows["total"] == trained.metrics["n_train"]
    assert 0 < trained.rows["holdout"] == trained.metrics["n_valid"] < trained.rows["total"]
    low, high = trained.metrics["auc_interval"]
    assert low < trained.metrics["auc"] < high
    found = trained.search
    tried = {(c["name"], c["columns"]) for c in found["candidates"]}
    assert (found["chosen"], found["columns"]) in tried
    sets = {columns for _, columns in tried}
    assert {f"{name} ({columns})" for name, columns in tried} | set(found["skipped"]) == {
        f"{c.name} ({columns})" for c in search.CANDIDATES for columns in sets
    }
    assert found["seconds"] >= 0 and found["rounds"]["served"] >= 1


def test_a_spent_search_budget_skips_the_candidates_left_and_names_them() -> None:
    ts = world(n_accounts=300, snapshots=3, seed=6)
    trained = training.train(ts, training.Options(search_seconds=1e-9))
    [(name, columns)] = [(c["name"], c["columns"]) for c in trained.search["candidates"]]
    assert name == search.CANDIDATES[0].name
    # The compact columns come first where they differ from all of them.
    sets = [columns] + (["full"] if columns == "compact" else [])
    every = [f"{c.name} ({s})" for c in search.CANDIDATES for s in sets]
    assert trained.search["skipped"] == every[1:]


def test_bands_put_about_a_tenth_of_each_segment_high(trained: Trained) -> None:
    for segment in ("enterprise", "smb"):
        stats = trained.stats[segment]
        ref = np.array(stats.reference)
        high, medium = stats.thresholds
        assert 0.07 <= (ref >= high).mean() <= 0.13
        assert 0.25 <= (ref >= medium).mean() <= 0.35


def test_feature_cap_keeps_the_most_important(trained: Trained) -> None:
    capped = training.train(world(n_accounts=600, snapshots=4), training.Options(max_features=3))
    assert len(capped.features) == 3


def test_no_positives_is_a_clear_error() -> None:
    ts = world(n_accounts=100, snapshots=2)
    ts.labels[:] = 0
    with pytest.raises(errors.InvalidPayload, match="no positive"):
        training.train(ts, training.Options())


def _linear_world(n: int, snapshots: int) -> TrainingSet:
    """Accounts whose churn is a smooth logistic function of usage, payments and mrr."""
    rng = np.random.default_rng(8)
    catalog = world(n_accounts=2, snapshots=1).frame.catalog
    rows, labels, keys, snap = [], [], [], []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(snapshots):
        for a in range(n):
            logins = rng.poisson(15)
            failed = rng.poisson(0.5)
            mrr = rng.lognormal(6, 0.8)
            logit = -1.0 - 1.2 * (np.log1p(logins) - np.log1p(15)) + 0.8 * failed
            logit -= 0.5 * (np.log1p(mrr) - 6)
            labels.append(float(rng.random() < 1 / (1 + np.exp(-logit))))
            value = {
                "events_login_30d": logins,
                "payments_failed_90d": failed,
                "executive_sponsor_active_30d": float(rng.random() < 0.5),
                "mrr": mrr,
                "segment": float(a % 2),
                "plan": float(rng.integers(0, 2)),
            }
            rows.append([value[name] for name in catalog.names])
            keys.append((f"acct-{a}", start + timedelta(days=30 * s)))
            snap.append(s)
    frame = features.Frame(catalog, keys, np.array(rows, dtype=float), [None] * len(keys))
    dates = [start + timedelta(days=30 * s) for s in range(snapshots)]
    return TrainingSet(frame, np.array(labels), np.array(snap), dates)


def test_where_the_signal_is_linear_the_regression_is_blended_in_and_the_model_keeps_up() -> None:
    # A few hundred accounts: trees alone fall below a logistic regression here; the blend
    # must not.
    trained = training.train(_linear_world(500, 3), training.Options(min_segment_rows=10**9))
    model = trained.models[GLOBAL]
    assert model.regression is not None and model.blend.regression > 0, trained.search["blend"]
    metrics = trained.metrics
    assert metrics["auc"] >= metrics["baselines"]["logistic_regression"] - 0.01, metrics


def test_one_snapshot_chooses_the_served_model_on_every_group_and_measures_it_on_the_last() -> None:
    trained = training.train(_linear_world(1500, 1), training.Options(min_segment_rows=10**9))
    search, validation = trained.search, trained.metrics["validation"]
    assert search["scored_on"].startswith("every group"), search["scored_on"]
    assert search["folds"] == 3
    assert all(len(c["fold_aucs"]) == 3 for c in search["candidates"])
    # The honest estimate is still the last group's, measured with the earlier groups' choice.
    assert len(validation["estimate_folds"]) == 1
    assert len(validation["search_folds"]) == 2


def test_where_per_type_columns_are_noise_the_search_keeps_the_compact_ones() -> None:
    # Twelve event types, each with its windows, trend, recency, cadence and lifetime columns
    # of pure noise, on a few hundred accounts: the signal is in account-level features.
    catalog = Catalog(
        event_types=tuple(f"kind{i}" for i in range(12)),
        numeric_traits=(),
        string_traits={},
        plans=("basic", "pro"),
        segments=("smb",),
        roles=(),
    )
    rng = np.random.default_rng(12)
    n, snapshots = 400, 3
    rows, labels, keys, snap = [], [], [], []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(snapshots):
        for a in range(n):
            row = rng.poisson(5, len(catalog.names)).astype(float)
            value = dict(zip(catalog.names, row, strict=True))
            value |= {"plan": float(a % 2), "segment": 0.0}
            logit = -0.5 - 0.08 * (value["events_30d"] - 5) + 0.4 * (value["tickets_open"] - 5)
            labels.append(float(rng.random() < 1 / (1 + np.exp(-logit))))
            rows.append([value[name] for name in catalog.names])
            keys.append((f"acct-{a}", start + timedelta(days=30 * s)))
            snap.append(s)
    frame = features.Frame(catalog, keys, np.array(rows), [None] * len(keys))
    dates = [start + timedelta(days=30 * s) for s in range(snapshots)]
    trained = training.train(
        TrainingSet(frame, np.array(labels), np.array(snap), dates),
        training.Options(min_segment_rows=10**9),
    )
    assert trained.search["columns"] == "compact", trained.search
    assert all(catalog.feature(name).compact for name in trained.features)
    assert "events_kind0_30d" in trained.features and "gap_kind0" not in trained.features


def test_the_error_of_an_auc_difference_matches_a_bootstrap() -> None:
    rng = np.random.default_rng(12)
    y = (rng.random(2000) < 0.3).astype(float)
    a = y + rng.normal(0, 1.0, len(y))
    b = 0.5 * a + y + rng.normal(0, 1.0, len(y))
    assert auc_difference_error(y, a, a) == 0.0
    differences = []
    for _ in range(400):
        i = rng.integers(0, len(y), len(y))
        differences.append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
    assert auc_difference_error(y, a, b) == pytest.approx(np.std(differences), rel=0.15)


def test_auc_within_snapshots_compares_only_accounts_of_the_same_moment() -> None:
    # Each moment ranks its own accounts perfectly; the second moment's scores sit lower
    # across the board (another base rate), which pooling would count against the model.
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=float)
    p = np.array([0.5, 0.6, 0.7, 0.8, 0.1, 0.2, 0.3, 0.4])
    moments = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert roc_auc_score(y, p) < 1.0
    assert auc_within(y, p, moments) == 1.0
    # Strata weigh by their pairs; one with a single class adds none.
    y2 = np.array([1, 0, 0, 1, 1], dtype=float)
    p2 = np.array([0.9, 0.1, 0.8, 0.2, 0.3])
    strata = np.array([0, 0, 1, 1, 2])
    assert auc_within(y2, p2, strata) == pytest.approx((1 * 1 + 0 * 1) / 2)
    assert auc_within(y2[4:], p2[4:], strata[4:]) is None


def test_two_blocks_of_time_are_each_measured_with_the_other_blocks_choice(
    trained: Trained,
) -> None:
    search, validation = trained.search, trained.metrics["validation"]
    assert search["scored_on"] == "both blocks, each choosing for the other"
    # The earlier block's choice measures the later block's rows, and the later block's
    # choice the earlier block's (the search folds' evaluation rows): both count.
    chosen_early, chosen_late = search["blocks"]
    measured = validation["estimate_folds"]
    assert chosen_late["measured"] == validation["search_folds"]
    assert measured == chosen_early["measured"] + chosen_late["measured"]
    later = {s for f in chosen_early["measured"] for s in f["evaluated_snapshots"]}
    earlier = {s for f in chosen_late["measured"] for s in f["evaluated_snapshots"]}
    assert max(earlier) < min(later)
    assert trained.metrics["valid_positives"] == sum(f["evaluation_positives"] for f in measured)
    for block in (chosen_early, chosen_late):
        assert block["auc"] is not None and block["auc"] > 0.7


@pytest.mark.parametrize("n_snap", range(2, 13))
def test_the_latest_snapshots_split_in_two_blocks_of_as_many_snapshots(n_snap: int) -> None:
    # An odd count of held-out snapshots would let the smaller block choose the parameters
    # the larger one is measured with: it is rounded up, keeping earlier snapshots to learn from.
    catalog = Catalog(
        event_types=(), numeric_traits=(), string_traits={}, plans=(), segments=(), roles=()
    )
    accounts, start = 30, datetime(2025, 1, 1, tzinfo=UTC)
    dates = [start + timedelta(days=7 * s) for s in range(n_snap)]
    keys = [(f"acct-{a}", date) for date in dates for a in range(accounts)]
    frame = features.Frame(
        catalog, keys, np.zeros((len(keys), len(catalog.names))), [None] * len(keys)
    )
    snap = np.repeat(np.arange(n_snap), accounts)
    ts = TrainingSet(frame, np.zeros(len(keys)), snap, dates)
    options = training.Options()
    searched, estimate = search.make_folds(ts, options, np.tile(np.arange(accounts), n_snap))
    later = set(estimate[0].snapshots)
    earlier = set(searched[0].snapshots)
    assert all(set(f.snapshots) == later for f in estimate)
    assert len(later | earlier) >= round(n_snap * options.holdout_share)
    if earlier == later:  # too few snapshots for two blocks: the accounts are split instead
        assert n_snap == 2 and len(estimate) == 1
        return
    assert len(earlier) == len(later) and max(earlier) < min(later)
    assert all(f.train.any() and snap[f.train].max() < min(earlier) for f in searched)
