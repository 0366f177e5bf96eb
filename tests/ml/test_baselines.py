"""The simple peers: fitted on the learning rows only, measured on the held-out ones."""

from __future__ import annotations

import numpy as np

from app.ml import baselines


def test_the_logistic_baseline_finds_a_linear_signal_and_the_rule_learns_its_sign() -> None:
    rng = np.random.default_rng(1)
    n = 3000
    signal = rng.normal(size=n)
    quiet = rng.exponential(30, size=n)
    plan = rng.integers(0, 3, size=n).astype(float)
    x = np.column_stack([signal, quiet, plan])
    x[rng.random(n) < 0.1, 0] = np.nan  # unknown values are imputed, not dropped
    logit = 1.5 * np.nan_to_num(signal) - 0.04 * quiet  # recent activity: more of the outcome
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    names = ["signal", "days_since_login", "plan"]
    fit, held = slice(0, 2000), slice(2000, None)
    scores = baselines.predict(
        x[fit], y[fit], x[held], names=names, categorical=["plan"], recency_columns=[names[1]]
    )
    results = baselines.measure(y[held], scores)
    assert results["logistic_regression"] is not None and results["logistic_regression"] > 0.75
    # Fewer quiet days go with more positives here: the rule's sign is learnt on the fitting
    # rows, so it still ranks well above chance.
    assert results["recency"] is not None and results["recency"] > 0.6
    assert baselines.best(results) == ("logistic_regression", results["logistic_regression"])


def test_without_a_days_since_the_last_event_feature_there_is_no_recency_rule() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 2))
    y = (x[:, 0] > 0).astype(float)
    scores = baselines.predict(
        x[:300], y[:300], x[300:], names=["a", "b"], categorical=[], recency_columns=[]
    )
    results = baselines.measure(y[300:], scores)
    assert results["recency"] is None and results["logistic_regression"] is not None
