"""The logistic regression blended with the trees: exact per-feature contributions, the
catalog's directions, categories it has not seen, and its stored form."""

from __future__ import annotations

import numpy as np

from app.ml import linear


def _data(n: int = 3000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logins = rng.poisson(8, size=n).astype(float)
    tickets = rng.poisson(2, size=n).astype(float)
    plan = rng.integers(0, 3, size=n).astype(float)
    plan[rng.random(n) < 0.1] = np.nan
    logins[rng.random(n) < 0.1] = np.nan
    logit = -0.3 * np.nan_to_num(logins, nan=8) + 0.5 * tickets + (plan == 2) - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return np.column_stack([logins, tickets, plan]), y


NAMES = ["logins", "tickets", "plan"]


def test_contributions_are_centred_and_sum_with_the_base_to_the_margin() -> None:
    x, y = _data()
    fitted = linear.fit(x, y, names=NAMES, categorical=["plan"])
    parts = fitted.contributions(x)
    assert parts.shape == x.shape
    np.testing.assert_allclose(fitted.base + parts.sum(axis=1), fitted.margin(x))
    # Centred on the training rows: the base value is the average training margin.
    np.testing.assert_allclose(parts.mean(axis=0), 0.0, atol=1e-9)
    # The signs found: more logins lower the risk, more tickets raise it.
    assert np.corrcoef(np.nan_to_num(x[:, 0], nan=8), parts[:, 0])[0, 1] < 0
    assert np.corrcoef(x[:, 1], parts[:, 1])[0, 1] > 0


def test_a_weight_against_the_catalogs_direction_is_dropped() -> None:
    x, y = _data()
    # Say more logins raise the risk (they lower it here): the regression gives them no weight.
    fitted = linear.fit(x, y, names=NAMES, categorical=["plan"], directions=[1, 1, 0])
    assert fitted.weight[0] == 0.0 and fitted.weight[1] > 0
    unconstrained = linear.fit(x, y, names=NAMES, categorical=["plan"])
    assert unconstrained.weight[0] < 0


def test_an_unseen_category_gets_no_weight_and_the_stored_form_predicts_the_same() -> None:
    x, y = _data()
    fitted = linear.fit(x, y, names=NAMES, categorical=["plan"])
    unseen = x[:5].copy()
    unseen[:, 2] = 7.0
    weights, centre = fitted.levels[2]
    np.testing.assert_allclose(fitted.contributions(unseen)[:, 2], -centre)
    assert set(weights) == {-1, 0, 1, 2}  # the missing value is a level of its own
    again = linear.Linear.from_json(fitted.to_json())
    np.testing.assert_array_equal(again.margin(x), fitted.margin(x))
