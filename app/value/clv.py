"""Customer lifetime value per account: the margin an account is expected to bring over the next
CUSTINTEL_CLV_HORIZON_MONTHS, discounted to the moment asked about, with a 95% interval and the
inputs it came from.

- **Subscription** (an account paying MRR at that moment, as app.value.revenue defines it): its
  latest stored churn score p says how likely it is to churn within the model's horizon of H
  days. Read as a constant hazard, it stays another month with probability
  s = (1 - p) ^ (30.4375 / H), so month k is paid with probability s^k:
  CLV = margin x MRR x sum over k = 1..K of s^k / (1 + d)^k, d the monthly discount rate made
  from the annual one. The interval puts in place of p the 95% (Wilson) interval of the churn
  rate that the model's held-out accounts in the same decile of scores showed (its manifest's
  reliability table): how far "accounts scored like this" really churned.
- **Purchases** (no MRR, but purchase events, CUSTINTEL_PURCHASE_EVENT_TYPES, whose `value` is
  the spend): BG/NBD gives the expected purchases of each month ahead from the account's
  purchase days, Gamma-Gamma the expected spend of each (app.value.bgnbd), both fitted over
  every account's purchases by the worker (`clv_fit`). CLV = margin x expected spend x sum over
  k of (purchases expected by the end of month k - by the end of month k-1) / (1 + d)^k. The
  interval is that of the expectation under the fitted parameters' uncertainty: the same sum
  under each of BOOTSTRAPS refits on resampled customers, its 2.5th and 97.5th percentiles.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import numpy as np
import orjson

from app.platform import db, jobs
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.metrics import Clv, ClvInputs
from app.value import bgnbd, revenue
from app.voc import surveys

MONTH_DAYS = 30.4375
BOOTSTRAPS = 40
MIN_REPEAT_CUSTOMERS = 20  # fewer customers seen buying twice: no fit (Gamma-Gamma rests on them)
JOB = "clv_fit"


def monthly_rate(annual: float) -> float:
    return float((1 + annual) ** (1 / 12) - 1)


def subscription_value(
    *, mrr: float, probability: float, horizon_days: int, margin: float, annual: float, months: int
) -> tuple[float, float, float]:
    """(CLV, monthly survival, expected paying months) of an account paying `mrr` whose churn
    probability within `horizon_days` is `probability`."""
    survival = (1 - min(max(probability, 0.0), 1.0)) ** (MONTH_DAYS / horizon_days)
    d = monthly_rate(annual)
    paid = survival ** np.arange(1, months + 1)
    value = margin * mrr * float((paid / (1 + d) ** np.arange(1, months + 1)).sum())
    return value, survival, float(paid.sum())


def _wilson(observed: float, n: int) -> tuple[float, float]:
    found = surveys.wilson(round(observed * n), n)
    assert found is not None
    return found[0] / 100, found[1] / 100


def churn_interval(reliability: list[JSONObject], probability: float) -> tuple[float, float] | None:
    """The 95% interval of the churn rate held-out accounts showed in the decile of scores
    nearest `probability`, widened to hold it."""
    usable = [r for r in reliability if r.get("n")]
    if not usable:
        return None
    nearest = min(usable, key=lambda r: abs(float(r["predicted"]) - probability))
    low, high = _wilson(float(nearest["observed"]), int(nearest["n"]))
    return min(low, probability), max(high, probability)


@dataclass(frozen=True, slots=True)
class History:
    """An account's purchase days up to a moment: BG/NBD's (x, t_x, T) in days, and its mean
    spend per purchase day after the first."""

    x: float
    t_x: float
    big_t: float
    mean_spend: float


_HISTORIES = """
    WITH days AS (
        SELECT account_id, (occurred_at AT TIME ZONE 'UTC')::date AS day,
               sum(coalesce(value, 0))::float8 AS spend
        FROM events e
        WHERE type = ANY($1::text[]) AND occurred_at <= $2
          AND ($3::text IS NULL OR e.account_id = $3)
        GROUP BY 1, 2
    ), ranked AS (
        SELECT *, row_number() OVER (PARTITION BY account_id ORDER BY day) AS k FROM days
    )
    SELECT account_id, count(*) - 1 AS x, max(day) - min(day) AS t_x, $4::date - min(day) AS t,
           coalesce(avg(spend) FILTER (WHERE k > 1), 0)::float8 AS mean_spend
    FROM ranked GROUP BY account_id"""
_ACCOUNT_HISTORIES = db.for_one(_HISTORIES, 3, "e.account_id")


async def histories(
    conn: asyncpg.Connection, types: list[str], *, as_of: datetime, account_id: str | None = None
) -> dict[str, History]:
    sql = _HISTORIES if account_id is None else _ACCOUNT_HISTORIES
    rows = await conn.fetch(sql, types, as_of, account_id, _day(as_of))
    return {
        r["account_id"]: History(float(r["x"]), float(r["t_x"]), float(r["t"]), r["mean_spend"])
        for r in rows
    }


def _day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


@dataclass(frozen=True, slots=True)
class PurchaseFit:
    fitted_at: datetime
    as_of: datetime
    customers: int
    model: bgnbd.BgNbd
    spend: bgnbd.GammaGamma
    draws: list[tuple[bgnbd.BgNbd, bgnbd.GammaGamma]]


def fit_purchases(
    found: dict[str, History], *, seed: int = 0
) -> tuple[bgnbd.BgNbd, bgnbd.GammaGamma, list[tuple[bgnbd.BgNbd, bgnbd.GammaGamma]]] | None:
    """BG/NBD and Gamma-Gamma on these histories, with BOOTSTRAPS refits on resampled
    customers; None with too few repeat customers to fit spend."""
    h = list(found.values())
    x = np.array([c.x for c in h])
    t_x = np.array([c.t_x for c in h])
    big_t = np.array([c.big_t for c in h])
    spend = np.array([c.mean_spend for c in h])
    repeat = (x > 0) & (spend > 0)
    if repeat.sum() < MIN_REPEAT_CUSTOMERS:
        return None
    model = bgnbd.fit_bgnbd(x, t_x, big_t)
    value = bgnbd.fit_gamma_gamma(x[repeat], spend[repeat])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAPS):
        weights = rng.multinomial(len(h), np.full(len(h), 1 / len(h))).astype(np.float64)
        if (weights[repeat] > 0).sum() < MIN_REPEAT_CUSTOMERS:
            continue
        draws.append(
            (
                bgnbd.fit_bgnbd(x, t_x, big_t, weights, start=model),
                bgnbd.fit_gamma_gamma(x[repeat], spend[repeat], weights[repeat], start=value),
            )
        )
    return model, value, draws


def purchase_values(
    fits: Sequence[tuple[bgnbd.BgNbd, bgnbd.GammaGamma]],
    h: History,
    *,
    margin: float,
    annual: float,
    months: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CLV, expected purchases and expected spend per purchase of one history under each fit,
    in one pass over them all (bgnbd.stacked)."""
    model, spend = bgnbd.stacked(fits)
    x, t_x, big_t = (np.array([v]) for v in (h.x, h.t_x, h.big_t))
    ends = (np.arange(0, months + 1) * MONTH_DAYS).astype(np.float64)
    expected = bgnbd.expected_purchases(model, ends, x, t_x, big_t)  # fits x (months + 1)
    per_month = np.diff(expected, axis=1)
    d = monthly_rate(annual)
    each = bgnbd.expected_spend(spend, x, np.array([h.mean_spend]))[:, 0]
    discounted = (per_month / (1 + d) ** np.arange(1, months + 1)).sum(axis=1)
    return margin * each * discounted, expected[:, -1], each


async def store_fit(conn: asyncpg.Connection, settings: Settings, *, as_of: datetime) -> JSONObject:
    found = await histories(conn, settings.purchase_event_types, as_of=as_of)
    fitted = await asyncio.to_thread(fit_purchases, found)  # seconds of CPU: off the loop
    if fitted is None:
        return {"skipped": f"fewer than {MIN_REPEAT_CUSTOMERS} customers bought twice"}
    model, spend, draws = fitted
    await conn.execute(
        "INSERT INTO clv_fits (as_of, customers, bgnbd, gamma_gamma, draws) "
        "VALUES ($1, $2, $3, $4, $5)",
        as_of,
        len(found),
        orjson.dumps(model.as_json()).decode(),
        orjson.dumps(spend.as_json()).decode(),
        orjson.dumps([[m.as_json(), s.as_json()] for m, s in draws]).decode(),
    )
    # Only the newest fit is read: the older ones go (a question about an earlier as_of is
    # answered by refitting at it).
    await conn.execute(
        "DELETE FROM clv_fits WHERE fit_id NOT IN "
        "(SELECT fit_id FROM clv_fits ORDER BY fitted_at DESC, fit_id DESC LIMIT 1)"
    )
    return {"customers": len(found), "bgnbd": model.as_json(), "gamma_gamma": spend.as_json()}


async def latest_fit(conn: asyncpg.Connection) -> PurchaseFit | None:
    row = await conn.fetchrow(
        "SELECT fitted_at, as_of, customers, bgnbd, gamma_gamma, draws FROM clv_fits "
        "ORDER BY fitted_at DESC, fit_id DESC LIMIT 1"
    )
    if row is None:
        return None
    return PurchaseFit(
        row["fitted_at"],
        row["as_of"],
        row["customers"],
        bgnbd.BgNbd(**orjson.loads(row["bgnbd"])),
        bgnbd.GammaGamma(**orjson.loads(row["gamma_gamma"])),
        [(bgnbd.BgNbd(**m), bgnbd.GammaGamma(**s)) for m, s in orjson.loads(row["draws"])],
    )


def handler(settings: Settings) -> jobs.Handler:
    async def clv_fit(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        given = params.get("as_of")
        as_of = (
            datetime.fromisoformat(given)
            if isinstance(given, str)
            else await conn.fetchval("SELECT now()")
        )
        return await store_fit(conn, settings, as_of=as_of)

    return clv_fit


def _none(account_id: str, as_of: datetime, why: str, inputs: ClvInputs) -> Clv:
    """No value, and why."""
    return Clv(
        account_id=account_id,
        as_of=as_of,
        method=None,
        clv=None,
        interval=None,
        why=why,
        inputs=inputs,
    )


_CHURN_SCORE = """
    SELECT s.probability, s.as_of, s.model_id, m.horizon_days, m.path
    FROM scores s JOIN models m ON m.model_id = s.model_id
    WHERE s.account_id = $1 AND s.target = 'churn' AND s.as_of <= $2
    ORDER BY s.as_of DESC, s.scored_at DESC, s.id DESC LIMIT 1"""


async def of_account(
    conn: asyncpg.Connection, settings: Settings, account_id: str, *, as_of: datetime
) -> Clv:
    """The account's lifetime value as of a moment (its id resolved by the caller)."""
    months, margin, annual = (
        settings.clv_horizon_months,
        settings.clv_margin,
        settings.clv_discount_rate,
    )
    inputs = ClvInputs(margin=margin, annual_discount_rate=annual, horizon_months=months)
    timeline = (await revenue.timelines(conn, until=as_of, account_id=account_id)).get(
        account_id, revenue.Account()
    )
    mrr = float(timeline.mrr_before(as_of))
    if mrr > 0:
        return await _subscription(conn, account_id, mrr, inputs, as_of=as_of)
    fit = await latest_fit(conn)
    found = await histories(conn, settings.purchase_event_types, as_of=as_of, account_id=account_id)
    history = found.get(account_id)
    if history is None:
        why = (
            "churned: no MRR, and no purchases"
            if timeline.churned_before(as_of)
            else "no MRR and no purchases to value"
        )
        return _none(account_id, as_of, why, inputs)
    if fit is None:
        return _none(
            account_id,
            as_of,
            "the purchase models are not fitted yet (the worker's clv_fit)",
            inputs,
        )
    # Off the loop: the first value a process answers imports scipy (a quarter second).
    values, expecteds, eaches = await asyncio.to_thread(
        purchase_values,
        [(fit.model, fit.spend), *fit.draws],
        history,
        margin=margin,
        annual=annual,
        months=months,
    )
    value, expected, each = float(values[0]), float(expecteds[0]), float(eaches[0])
    if not all(math.isfinite(v) for v in (value, expected, each)):
        return _none(
            account_id, as_of, "the purchase models give no finite value for this history", inputs
        )
    spread = [float(v) for v in values[1:] if math.isfinite(v)]
    interval = (
        [float(np.percentile(spread, 2.5)), float(np.percentile(spread, 97.5))]
        if len(spread) >= 10
        else None
    )
    alive = float(
        bgnbd.probability_alive(
            fit.model, np.array([history.x]), np.array([history.t_x]), np.array([history.big_t])
        )[0]
    )
    inputs = inputs.model_copy(
        update={
            "purchases": int(history.x) + 1,
            "days_since_first_purchase": history.big_t,
            "days_since_last_purchase": history.big_t - history.t_x,
            "mean_repeat_spend": history.mean_spend if history.x else None,
            "probability_alive": alive,
            "expected_purchases": expected,
            "expected_spend_per_purchase": each,
            "fitted_at": fit.fitted_at,
            "fit_customers": fit.customers,
        }
    )
    why = (
        f"{int(history.x) + 1} purchase days, the last {history.big_t - history.t_x:.0f} days "
        f"ago: {expected:.2f} more purchases expected in {months} months "
        f"(still buying with probability {alive:.0%}), of {each:.2f} each"
    )
    return Clv(
        account_id=account_id,
        as_of=as_of,
        method="purchases",
        clv=value,
        interval=interval,
        why=why,
        inputs=inputs,
    )


async def _subscription(
    conn: asyncpg.Connection, account_id: str, mrr: float, inputs: ClvInputs, *, as_of: datetime
) -> Clv:
    months, margin, annual = inputs.horizon_months, inputs.margin, inputs.annual_discount_rate
    row = await conn.fetchrow(_CHURN_SCORE, account_id, as_of)
    inputs = inputs.model_copy(update={"mrr": mrr})
    if row is None:
        return _none(
            account_id,
            as_of,
            "pays MRR but has no churn score yet to say how long it will stay",
            inputs,
        )
    p, horizon = float(row["probability"]), int(row["horizon_days"])
    value, survival, paying = subscription_value(
        mrr=mrr, probability=p, horizon_days=horizon, margin=margin, annual=annual, months=months
    )
    band = churn_interval(_reliability(row["path"]), p)
    interval = None
    if band is not None:
        low, high = (
            subscription_value(
                mrr=mrr,
                probability=q,
                horizon_days=horizon,
                margin=margin,
                annual=annual,
                months=months,
            )[0]
            for q in (band[1], band[0])  # more churn, less value
        )
        interval = [low, high]
    inputs = inputs.model_copy(
        update={
            "churn_probability": p,
            "churn_probability_interval": None if band is None else list(band),
            "churn_horizon_days": horizon,
            "monthly_survival": survival,
            "expected_paying_months": paying,
            "model_id": row["model_id"],
            "scored_as_of": row["as_of"],
        }
    )
    why = (
        f"{mrr:,.2f} MRR, churn probability {p:.1%} within {horizon} days: it stays a month "
        f"with probability {survival:.1%}, {paying:.1f} paid months expected of {months}"
    )
    return Clv(
        account_id=account_id,
        as_of=as_of,
        method="subscription",
        clv=value,
        interval=interval,
        why=why,
        inputs=inputs,
    )


_RELIABILITY: dict[str, list[JSONObject]] = {}


def _reliability(path: str) -> list[JSONObject]:
    """The held-out reliability table of a model's manifest (read once per model folder)."""
    if path not in _RELIABILITY:
        try:
            manifest = orjson.loads((Path(path) / "manifest.json").read_bytes())
        except OSError:
            return []
        _RELIABILITY[path] = list(manifest.get("reliability") or [])
    return _RELIABILITY[path]
