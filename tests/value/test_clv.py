"""Customer lifetime value: the purchase-log models against `lifetimes`' own fit on CDNOW, a
subscription account with a known hazard to the cent, and purchase accounts valued from the
worker's fit."""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import pytest

from app.ml import history
from app.platform import jobs
from app.platform.settings import Settings
from app.value import bgnbd, clv
from tests.conftest import run_queued_job
from tests.fixtures.scores import score

NOW = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def cdnow() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings():  # lifetimes (2020) sets a pandas option pandas 3 deprecates
        warnings.simplefilter("ignore")
        from lifetimes.datasets import load_cdnow_summary_data_with_monetary_value

        d = load_cdnow_summary_data_with_monetary_value()
    x, t_x, big_t, spend = (
        d[c].to_numpy(dtype=float) for c in ("frequency", "recency", "T", "monetary_value")
    )
    return x, t_x, big_t, spend


def test_bgnbd_on_cdnow_matches_the_fit_and_predictions_of_lifetimes(
    cdnow: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, t_x, big_t, _ = cdnow
    ours = bgnbd.fit_bgnbd(x, t_x, big_t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter

        theirs = BetaGeoFitter().fit(x, t_x, big_t)
        expected = theirs.conditional_expected_number_of_purchases_up_to_time(39, x, t_x, big_t)
        alive = theirs.conditional_probability_alive(x, t_x, big_t)
    for name in ("r", "alpha", "a", "b"):
        assert getattr(ours, name) == pytest.approx(theirs.params_[name], rel=1e-4), name
    # Fader, Hardie and Lee (2005) report r 0.243, alpha 4.414, a 0.793, b 2.426 on this log.
    assert (ours.r, ours.alpha, ours.a, ours.b) == pytest.approx(
        (0.243, 4.414, 0.793, 2.426), abs=1e-3
    )
    np.testing.assert_allclose(
        bgnbd.expected_purchases(ours, 39, x, t_x, big_t), expected, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(bgnbd.probability_alive(ours, x, t_x, big_t), alive, atol=1e-5)


def test_gamma_gamma_on_cdnow_matches_the_fit_and_predictions_of_lifetimes(
    cdnow: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    x, _, _, spend = cdnow
    repeat = x > 0
    ours = bgnbd.fit_gamma_gamma(x[repeat], spend[repeat])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import GammaGammaFitter

        theirs = GammaGammaFitter().fit(x[repeat], spend[repeat])
        expected = theirs.conditional_expected_average_profit(x[repeat], spend[repeat])
    for name in ("p", "q", "v"):
        assert getattr(ours, name) == pytest.approx(theirs.params_[name], rel=1e-4), name
    np.testing.assert_allclose(
        bgnbd.expected_spend(ours, x[repeat], spend[repeat]), expected, rtol=1e-5
    )


async def test_a_subscription_account_with_a_known_hazard_is_valued_to_the_cent(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    insert_model: Callable[..., Awaitable[None]],
    tmp_path: Path,
) -> None:
    observed = (NOW - timedelta(days=100)).isoformat()
    body = {"mrr": 1000, "observed_at": observed}
    assert (await client.put("/v1/accounts/acme", json=body)).is_success
    await insert_model("m1", as_of=NOW, horizon_days=90, activated=True)
    # Held-out accounts scored near 0.2 churned 25 times in 100.
    reliability = [
        {"predicted": 0.05, "observed": 0.04, "n": 100},
        {"predicted": 0.21, "observed": 0.25, "n": 100},
    ]
    (tmp_path / "manifest.json").write_text(json.dumps({"reliability": reliability}))
    await conn.execute("UPDATE models SET path = $1 WHERE model_id = 'm1'", str(tmp_path))
    await history.store(conn, [score("acme", NOW - timedelta(days=1), 0.2)])

    answer = await client.get("/v1/accounts/acme/clv", params={"as_of": NOW.isoformat()})
    assert answer.status_code == 200, answer.text
    got = answer.json()

    # By hand: a constant hazard that leaves 80% after 90 days, 36 months at 10% a year.
    survival = 0.8 ** (30.4375 / 90)
    monthly = 1.1 ** (1 / 12) - 1
    value = sum(1000 * survival**k / (1 + monthly) ** k for k in range(1, 37))
    assert got["method"] == "subscription"
    assert got["clv"] == pytest.approx(value, abs=0.005)
    assert got["inputs"]["monthly_survival"] == pytest.approx(survival)
    assert got["inputs"]["expected_paying_months"] == pytest.approx(
        sum(survival**k for k in range(1, 37))
    )
    assert got["inputs"]["churn_horizon_days"] == 90 and got["inputs"]["model_id"] == "m1"
    low_p, high_p = got["inputs"]["churn_probability_interval"]
    assert low_p < 0.2 < 0.25 < high_p  # the Wilson interval of 25 in 100
    low, high = got["interval"]
    assert low < got["clv"] < high
    worst = clv.subscription_value(
        mrr=1000, probability=high_p, horizon_days=90, margin=1.0, annual=0.1, months=36
    )[0]
    assert low == pytest.approx(worst)
    assert "churn probability 20.0% within 90 days" in got["why"]

    # A churn takes its MRR away: nothing left to value.
    outcome = {
        "outcome_id": "o1",
        "account_id": "acme",
        "kind": "churned",
        "occurred_at": NOW.isoformat(),
    }
    assert (await client.post("/v1/outcomes", json=outcome)).is_success
    later = (NOW + timedelta(days=1)).isoformat()
    gone = (await client.get("/v1/accounts/acme/clv", params={"as_of": later})).json()
    assert (gone["method"], gone["clv"]) == (None, None)
    assert gone["why"].startswith("churned")


async def _purchases(client: httpx.AsyncClient, accounts: int, seed: int) -> dict[str, set[str]]:
    """Shoppers with a propensity each, buying over a year; the days each bought on."""
    rng = random.Random(seed)
    days: dict[str, set[str]] = {}
    events: list[dict[str, object]] = []
    for n in range(accounts):
        account = f"shop-{n}"
        rate, spend = rng.uniform(0.005, 0.05), rng.uniform(10, 80)
        first = NOW - timedelta(days=rng.uniform(30, 365))
        at = first
        while at < NOW:
            events.append(
                {
                    "event_id": f"{account}-{len(events)}",
                    "type": "purchase",
                    "account_id": account,
                    "occurred_at": at.isoformat(),
                    "value": round(spend * rng.uniform(0.5, 1.5), 2),
                }
            )
            days.setdefault(account, set()).add(at.date().isoformat())
            at += timedelta(days=rng.expovariate(rate))
    for start in range(0, len(events), 1000):
        answer = await client.post(
            "/v1/events/batch", json={"events": events[start : start + 1000]}
        )
        assert answer.status_code == 200, answer.text
    return days


async def test_purchase_accounts_are_valued_from_the_workers_fit(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    days = await _purchases(client, 150, seed=3)
    assert (await client.put("/v1/accounts/nobody", json={})).is_success
    before = await client.get("/v1/accounts/shop-0/clv", params={"as_of": NOW.isoformat()})
    assert before.json()["method"] is None and "not fitted" in before.json()["why"]

    await jobs.enqueue(conn, kind=clv.JOB, params={"as_of": NOW.isoformat()})
    fitted = await run_queued_job(settings, clv.JOB)
    assert fitted["customers"] == len(days)

    params = {"as_of": NOW.isoformat()}
    values = {}
    for account in ("shop-0", "shop-1", "shop-2"):
        got = (await client.get(f"/v1/accounts/{account}/clv", params=params)).json()
        assert got["method"] == "purchases", got
        assert got["inputs"]["purchases"] == len(days[account])
        low, high = got["interval"]
        assert 0 < low <= got["clv"] <= high
        assert 0 < got["inputs"]["probability_alive"] <= 1
        values[account] = got
    # The value is the expected purchases times the expected spend, discounted: not more than
    # their undiscounted product.
    for got in values.values():
        inputs = got["inputs"]
        assert got["clv"] <= inputs["expected_purchases"] * inputs["expected_spend_per_purchase"]

    none = (await client.get("/v1/accounts/nobody/clv", params=params)).json()
    assert (none["method"], none["clv"], none["why"]) == (
        None,
        None,
        "no MRR and no purchases to value",
    )
    missing = await client.get("/v1/accounts/no-such-account/clv")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
