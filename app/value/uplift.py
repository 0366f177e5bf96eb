"""Whom acting helps most: each account's expected uplift (how much delivering the target's
insight changes the probability of its outcome within the horizon), learnt from the routing
holdouts on the features the target's model uses, ranked beside raw risk.

The highest-risk accounts are not necessarily those an intervention helps most (Ascarza 2018),
so a ranking by risk alone can spend a team's hours where they change nothing. Uplift is only
learnable where who was acted on was drawn at random: the learner reads each account's first
insight of the target that matched a routing rule, delivered (a rule delivered it) or held out
(every rule it matched held it out; holdouts are drawn per rule and account), with features as
of that insight and the model's own label over the horizon after it. It is an intent-to-treat
effect: of delivering, not of what a person then did. Below the accounts per arm needed to tell
a 30% change of the held-out rate (app.value.effects.needed_per_arm) it says "not enough
evidence yet" and how many more it takes, and fits nothing.

Two learners are tried on the accounts, and the one that ranks better serves (the simpler wins
ties), as the churn models earn their place: an X-learner of smooth boosters (Kunzel et al.
2019: outcome models for each arm, mu1 on delivered and mu0 on held out; the imputed effects,
delivered y - mu0(x) and held out mu1(x) - y, regressed on x within each arm as tau1 and tau0;
blended by the delivered share e as e * tau0 + (1 - e) * tau1, so the arm with more accounts
carries the estimate: holdouts are often 10%), and a T-learner of the service's logistic
regressions (app.ml.linear), mu1(x) - mu0(x). Each is fitted on one random half and ranks the
other by its Qini coefficient. The result is measured on the accounts themselves by two-fold
cross-fitting: the outcome rates of delivered and held-out accounts among the share ranked
first by uplift, against the same share ranked first by risk (mu0, the outcome probability
without the insight). The worker fits it (job `uplift_fit`) and ranks every live account as of
the fit; the newest fit per target is kept.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import asyncpg
import numpy as np
import orjson

from app.ml import datasets, features, linear, registry, rollups
from app.ml.catalog import Catalog
from app.platform import cursors, errors, jobs
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.metrics import (
    UpliftAccount,
    UpliftEvaluation,
    UpliftRanking,
    UpliftShare,
)
from app.value import effects

JOB = "uplift_fit"
DEFAULT_HORIZON_DAYS = 90
TOP_SHARE = 0.3  # the share of accounts a team can reach, where the rankings are compared
FOLDS = 2
CHUNK = 2000  # accounts whose features are read at once when ranking
MIN_ROUNDS, MAX_ROUNDS = 20, 300
TREES, REGRESSIONS = "X-learner of gradient-boosted trees", "T-learner of logistic regressions"
SELECT_SEED = 11
SELECT_SPLITS = 3  # random halves the learners are compared on, each both ways


# Each account's first insight of the target that matched a routing rule, and whether any rule
# delivered it.
_FIRST = """
    WITH firsts AS (
        SELECT DISTINCT ON (i.account_id) i.insight_id, i.account_id, i.created_at
        FROM insights i
        WHERE i.target = $1 AND i.account_id IS NOT NULL
          AND jsonb_typeof(i.decision -> 'rules') = 'array'
          AND i.decision -> 'rules' <> '[]'::jsonb
        ORDER BY i.account_id, i.created_at, i.insight_id)
    SELECT f.account_id, f.created_at AS at,
           bool_or(NOT coalesce((r.value ->> 'holdout')::boolean, false)) AS delivered
    FROM firsts f JOIN insights i ON i.insight_id = f.insight_id,
         jsonb_array_elements(i.decision -> 'rules') r
    GROUP BY f.account_id, f.created_at
    ORDER BY f.account_id"""


@dataclass(frozen=True, slots=True)
class Entries:
    keys: list[tuple[str, datetime]]
    delivered: np.ndarray  # bool per key
    outcome: np.ndarray  # 1.0 where the label came true within the horizon
    pending: tuple[int, int]  # delivered, held out: horizon not passed yet


async def entries(
    conn: asyncpg.Connection,
    *,
    target: str,
    label: datasets.AnyLabel,
    horizon: timedelta,
    now: datetime,
) -> Entries:
    rows = await conn.fetch(_FIRST, target)
    matured = [r for r in rows if r["at"] + horizon <= now]
    pending = [r for r in rows if r["at"] + horizon > now]
    keys = [(r["account_id"], r["at"]) for r in matured]
    outcome = (
        await datasets.labels(conn, label, keys=keys, horizon=horizon) if keys else np.zeros(0)
    )
    return Entries(
        keys=keys,
        delivered=np.array([bool(r["delivered"]) for r in matured], dtype=bool),
        outcome=outcome,
        pending=(
            sum(1 for r in pending if r["delivered"]),
            sum(1 for r in pending if not r["delivered"]),
        ),
    )


def wanted_sign(target: str) -> float:
    """+1 where the target's outcome is wanted (expansion, advocacy): acting should raise it;
    -1 where it is not (churn and any other outcome)."""
    return 1.0 if target in datasets.WANTED else -1.0


# -- the learner (CPU: run off the event loop) -----------------------------------------------


def _params(rows: int, objective: str, threads: int) -> JSONObject:
    from app.ml import search  # the training recipe: not imported by the API

    # Smooth trees: an effect is a small difference of two noisy rates, and leaves of a few
    # dozen accounts fit the noise (bench/uplift.py: 7 leaves of 20 ranked at chance on
    # Thornton's experiment, 3 leaves of 50 or more did not).
    return {
        "objective": objective,
        "learning_rate": 0.05,
        "num_leaves": 3,
        "min_data_in_leaf": max(50, rows // 20),
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_cat_to_onehot": 8,
        "cat_smooth": 10,
        "seed": search.SEED,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": threads,
        "verbose": -1,
    }


def _fit(x: np.ndarray, y: np.ndarray, categorical: list[int], objective: str, threads: int) -> Any:
    """A small booster whose rounds three-fold cross-validation chose (few rows: the rounds
    are what overfits)."""
    import lightgbm as lgb

    from app.ml import search

    params = _params(len(y), objective, threads)
    if objective == "binary" and (y.min() == y.max()):
        params["objective"] = "regression"  # one class: a constant, as a regression gives it
    data = lgb.Dataset(x, y, categorical_feature=categorical, free_raw_data=False)
    rounds = MAX_ROUNDS // 3
    if len(y) >= 3 * int(params["min_data_in_leaf"]):
        found = lgb.cv(
            params,
            data,
            num_boost_round=MAX_ROUNDS,
            nfold=3,
            stratified=params["objective"] == "binary",
            seed=search.SEED,
            callbacks=[lgb.early_stopping(20, verbose=False)],
        )
        losses = next(v for k, v in found.items() if k.endswith("-mean"))
        rounds = max(MIN_ROUNDS, len(cast(list[float], losses)))
    return lgb.train(params, data, num_boost_round=rounds)


class Learner(Protocol):
    @property
    def name(self) -> str: ...

    def effect(self, x: np.ndarray) -> np.ndarray:
        """Expected change of the outcome's probability if the insight is delivered."""
        ...

    def untreated(self, x: np.ndarray) -> np.ndarray:
        """The outcome's probability without the insight (the held-out arm's model)."""
        ...


@dataclass(frozen=True)
class Trees:
    """An X-learner's four boosters and the delivered share that blends them."""

    mu0: Any
    mu1: Any
    tau0: Any
    tau1: Any
    share: float
    name: str = TREES

    def effect(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.share * self.tau0.predict(x) + (1 - self.share) * self.tau1.predict(x),
            dtype=np.float64,
        )

    def untreated(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.mu0.predict(x), dtype=np.float64)


@dataclass(frozen=True)
class Regressions:
    """A T-learner of the service's logistic regressions (app.ml.linear), one per arm; an arm
    with one class has its rate."""

    mu0: linear.Linear | float
    mu1: linear.Linear | float
    name: str = REGRESSIONS

    @staticmethod
    def _p(model: linear.Linear | float, x: np.ndarray) -> np.ndarray:
        if isinstance(model, float):
            return np.full(len(x), model)
        return np.asarray(linear.sigmoid(model.margin(x)), dtype=np.float64)

    def effect(self, x: np.ndarray) -> np.ndarray:
        difference: np.ndarray = self._p(self.mu1, x) - self._p(self.mu0, x)
        return difference

    def untreated(self, x: np.ndarray) -> np.ndarray:
        return self._p(self.mu0, x)


def _trees(
    x: np.ndarray, y: np.ndarray, delivered: np.ndarray, categorical: list[int], threads: int
) -> Trees:
    treated, held = delivered, ~delivered
    mu0 = _fit(x[held], y[held], categorical, "binary", threads)
    mu1 = _fit(x[treated], y[treated], categorical, "binary", threads)
    d1 = y[treated] - mu0.predict(x[treated])
    d0 = mu1.predict(x[held]) - y[held]
    tau1 = _fit(x[treated], d1, categorical, "regression", threads)
    tau0 = _fit(x[held], d0, categorical, "regression", threads)
    return Trees(mu0, mu1, tau0, tau1, float(treated.mean()))


def _regressions(
    x: np.ndarray, y: np.ndarray, delivered: np.ndarray, categorical: list[int]
) -> Regressions:
    names = [f"f{j}" for j in range(x.shape[1])]

    def arm(rows: np.ndarray) -> linear.Linear | float:
        if not rows.any():
            return float(y.mean())
        if y[rows].min() == y[rows].max():
            return float(y[rows].mean())
        return linear.fit(
            x[rows], y[rows], names=names, categorical=[names[j] for j in categorical]
        )

    return Regressions(arm(~delivered), arm(delivered))


def qini(score: np.ndarray, y: np.ndarray, delivered: np.ndarray) -> float:
    """The Qini coefficient of ranking by `score`, highest first: the area between its Qini
    curve (the outcomes of the delivered among the first k, less the held out's scaled to as
    many accounts) and a random ranking's straight line, over n squared; 0 is chance."""
    order = np.lexsort((np.arange(len(score)), -score))
    yo, to = y[order], delivered[order]
    n_t, n_c = np.cumsum(to), np.cumsum(~to)
    y_t, y_c = np.cumsum(yo * to), np.cumsum(yo * ~to)
    curve = np.concatenate(([0.0], y_t - y_c * n_t / np.maximum(n_c, 1)))
    line = np.linspace(0.0, curve[-1], len(curve))
    return float((np.trapezoid(curve) - np.trapezoid(line)) / len(score) ** 2)


def random_half(rng: np.random.Generator, delivered: np.ndarray) -> np.ndarray:
    """A random half of the accounts, drawn within each arm (so both halves hold both)."""
    half = np.zeros(len(delivered), dtype=bool)
    for arm in (delivered, ~delivered):
        where = np.flatnonzero(arm)
        half[rng.choice(where, size=len(where) // 2, replace=False)] = True
    return half


def selection(
    x: np.ndarray,
    y: np.ndarray,
    delivered: np.ndarray,
    categorical: list[int],
    threads: int,
    *,
    sign: float,
) -> dict[str, list[float]]:
    """Each learner's Qini coefficients on these accounts: fitted on a random half (drawn within
    each arm) and ranking the other, both ways, for SELECT_SPLITS draws."""
    rng = np.random.default_rng(SELECT_SEED)
    scores: dict[str, list[float]] = {TREES: [], REGRESSIONS: []}
    for _ in range(SELECT_SPLITS):
        half = random_half(rng, delivered)
        for part in (half, ~half):
            rest = ~part
            if min(delivered[part].sum(), (~delivered[part]).sum()) < 2:
                return {TREES: [], REGRESSIONS: []}  # too few to tell: the simpler
            for kind, found in scores.items():
                fitted = _fitted(kind, x[part], y[part], delivered[part], categorical, threads)
                benefit = sign * fitted.effect(x[rest])
                found.append(qini(benefit, sign * y[rest], delivered[rest]))
    return scores


def _fitted(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    delivered: np.ndarray,
    categorical: list[int],
    threads: int,
) -> Learner:
    if kind == TREES:
        return _trees(x, y, delivered, categorical, threads)
    return _regressions(x, y, delivered, categorical)


def chosen(scores: dict[str, list[float]]) -> str:
    """The trees where they ranked better than the regressions by more than one standard error
    of the paired differences; else the regressions, the simpler."""
    differences = [t - r for t, r in zip(scores[TREES], scores[REGRESSIONS], strict=True)]
    if len(differences) < 2:
        return REGRESSIONS
    error = statistics.stdev(differences) / math.sqrt(len(differences))
    return TREES if statistics.fmean(differences) > error else REGRESSIONS


def learn(
    x: np.ndarray,
    y: np.ndarray,
    delivered: np.ndarray,
    categorical: list[int],
    threads: int,
    *,
    sign: float,
) -> Learner:
    """The better of the two learners on these accounts (as the churn models earn their
    place), fitted on every one of them."""
    scores = selection(x, y, delivered, categorical, threads, sign=sign)
    return _fitted(chosen(scores), x, y, delivered, categorical, threads)


def _share_effect(
    order: np.ndarray, y: np.ndarray, delivered: np.ndarray, sign: float, ranked_by: str
) -> UpliftShare:
    """The outcome rates of delivered and held-out accounts among the first TOP_SHARE of
    `order` (or all of it), and their difference in the direction that helps."""
    top = order[: max(1, math.ceil(len(order) * TOP_SHARE))] if ranked_by != "all" else order
    t, h = top[delivered[top]], top[~delivered[top]]
    treated = effects.Arm(len(t), int(y[t].sum()), 0)
    held = effects.Arm(len(h), int(y[h].sum()), 0)
    gain = interval = None
    found = effects.difference(treated, held)
    if found is not None:  # turned to the direction that helps
        gain, interval = sign * found[0], sorted(sign * v for v in found[1])
    return UpliftShare(
        ranked_by=ranked_by,
        delivered=treated.out(),
        held_out=held.out(),
        gain=gain,
        interval_95=interval,
    )


def evaluate(
    x: np.ndarray,
    y: np.ndarray,
    delivered: np.ndarray,
    folds: np.ndarray,
    categorical: list[int],
    *,
    sign: float,
    threads: int,
) -> UpliftEvaluation:
    """Cross-fitted: each fold ranked by a learner that never saw it."""
    benefit = np.zeros(len(y))
    risk = np.zeros(len(y))
    for k in range(FOLDS):
        rows = folds != k
        learnt = learn(x[rows], y[rows], delivered[rows], categorical, threads, sign=sign)
        benefit[folds == k] = sign * learnt.effect(x[folds == k])
        risk[folds == k] = learnt.untreated(x[folds == k])
    # Highest first; ties broken the same way for both rankings.
    by_uplift = np.lexsort((np.arange(len(y)), -benefit))
    by_risk = np.lexsort((np.arange(len(y)), -risk))
    return UpliftEvaluation(
        folds=FOLDS,
        top_share=TOP_SHARE,
        overall=_share_effect(np.arange(len(y)), y, delivered, sign, "all"),
        top_by_uplift=_share_effect(by_uplift, y, delivered, sign, "uplift"),
        top_by_risk=_share_effect(by_risk, y, delivered, sign, "risk"),
    )


# -- fitting and keeping -------------------------------------------------------------------


@dataclass(frozen=True)
class Basis:
    """What the learner reads: the target's model (its catalog, features and label) when it
    has one, else the catalog the data supports now (every feature) and the target's default
    label."""

    catalog: Catalog
    label: datasets.AnyLabel
    horizon: timedelta
    model: registry.Loaded | None

    def matrix(self, frame: features.Frame) -> np.ndarray:
        return frame.matrix if self.model is None else self.model.matrix(frame)

    @property
    def names(self) -> list[str]:
        return list(self.catalog.names) if self.model is None else self.model.features


async def basis(
    conn: asyncpg.Connection, settings: Settings, *, target: str, now: datetime
) -> Basis:
    model = await registry.active(conn, target)
    if model is not None:
        loaded = await asyncio.to_thread(registry.load, model.path)
        return Basis(
            loaded.catalog,
            datasets.label_of(model.label),
            timedelta(days=model.horizon_days),
            loaded,
        )
    catalog = await features.build_catalog(
        conn,
        as_of=now,
        max_event_types=settings.feature_max_event_types,
        max_levels=settings.feature_max_levels,
        max_traits=settings.feature_max_traits,
        include=settings.feature_include,
        exclude=settings.feature_exclude,
    )
    return Basis(
        catalog, datasets.default_label(target), timedelta(days=DEFAULT_HORIZON_DAYS), None
    )


def _verdict_short(target: str, n1: int, n0: int, needed: int | None, base: float | None) -> str:
    outcome = datasets.outcome_of(target)
    if needed is None or base is None:
        return (
            f"Not enough evidence yet: {n1:,} accounts delivered and {n0:,} held out, and no "
            f"{outcome} outcome seen in either group, so no sample size can be told."
        )
    return (
        f"Not enough evidence yet: {n1:,} accounts delivered and {n0:,} held out whose horizon "
        f"has passed; telling a change from {base:.0%} to {base * (1 - effects.DETECT):.0%} "
        f"takes {needed:,} per group, about {needed - min(n1, n0):,} more."
    )


def _verdict(target: str, ev: UpliftEvaluation) -> str:
    up, risk = ev.top_by_uplift, ev.top_by_risk
    unit = f"points of {target} {'gained' if wanted_sign(target) > 0 else 'avoided'}"

    def said(s: UpliftShare) -> str:
        if s.gain is None or s.interval_95 is None:
            return "no comparison (one group is empty)"
        low, high = s.interval_95
        return f"{s.gain * 100:+.1f} (95% {low * 100:+.1f} to {high * 100:+.1f})"

    share = f"{TOP_SHARE:.0%}"
    # The ranking a team has without uplift: by its served score, the riskiest or likeliest.
    highest = "at highest risk" if wanted_sign(target) < 0 else "with the highest score"
    judged = "uplift ranked better than risk"
    if up.gain is None or risk.gain is None or up.interval_95 is None:
        judged = "the rankings cannot be compared yet"
    elif up.interval_95[0] <= 0:
        judged = (
            "the uplift ranking's own effect is not told apart from none: rank by risk, and "
            "keep holding out"
        )
    elif up.gain <= risk.gain:
        judged = "uplift ranked no better than risk"
    return (
        f"On accounts no learner saw, delivering the insight gave, in {unit}: the {share} "
        f"ranked first by uplift {said(up)}; the {share} {highest} {said(risk)}; all "
        f"{said(ev.overall)}. {judged[0].upper()}{judged[1:]}."
    )


async def fit(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    target: str,
    now: datetime,
    threads: int = 2,
) -> JSONObject:
    """Fit the target's uplift learner on its matured holdouts and rank every live account as
    of `now`; or, below the sample size, keep why not. The newest fit per target is kept."""
    await rollups.catch_up(conn, as_of=now)  # the months features read, as training does
    found = await basis(conn, settings, target=target, now=now)
    got = await entries(conn, target=target, label=found.label, horizon=found.horizon, now=now)
    y, delivered = got.outcome, got.delivered
    n1, n0 = int(delivered.sum()), int((~delivered).sum())
    o1, o0 = int(y[delivered].sum()), int(y[~delivered].sum())
    base = (o0 / n0) if n0 and o0 else ((o0 + o1) / (n0 + n1) if n0 + n1 else None)
    needed = effects.needed_per_arm(base) if base else None
    enough = needed is not None and min(n1, n0) >= needed and o0 + o1 > 0
    evaluation: UpliftEvaluation | None = None
    ranked: list[tuple[str, float, float, float]] = []
    if not enough:
        status, verdict = (
            "not_enough_evidence",
            _verdict_short(target, n1, n0, needed, base if needed else None),
        )
    else:
        frame = await features.compute(conn, found.catalog, got.keys)
        x = found.matrix(frame)
        levels = found.catalog.levels()
        categorical = [j for j, n in enumerate(found.names) if n in levels]
        from app.ml import search

        folds = np.array([search.hash_account(a) % FOLDS for a, _ in got.keys])
        sign = wanted_sign(target)
        evaluation = await asyncio.to_thread(
            evaluate, x, y, delivered, folds, categorical, sign=sign, threads=threads
        )
        scores = await asyncio.to_thread(
            selection, x, y, delivered, categorical, threads, sign=sign
        )
        kind = chosen(scores)
        learner = await asyncio.to_thread(_fitted, kind, x, y, delivered, categorical, threads)
        evaluation = evaluation.model_copy(
            update={
                "learner": kind,
                "selection": {k: statistics.fmean(v) if v else 0.0 for k, v in scores.items()},
            }
        )
        status, verdict = "ranked", _verdict(target, evaluation)
        alive = await datasets.population(
            conn, at=now, exclude_kinds=datasets.excluded_outcomes(target), with_signals=True
        )
        for i in range(0, len(alive), CHUNK):
            ids = alive[i : i + CHUNK]
            now_frame = await features.compute(conn, found.catalog, [(a, now) for a in ids])
            xs = found.matrix(now_frame)
            effect, untreated = await asyncio.to_thread(
                lambda x: (learner.effect(x), learner.untreated(x)), xs
            )
            ranked += [
                (a, float(e), float(sign * e), float(u))
                for a, e, u in zip(ids, effect, untreated, strict=True)
            ]
    async with conn.transaction():
        fit_id = await conn.fetchval(
            "INSERT INTO uplift_fits (target, as_of, horizon_days, model_id, status, verdict, "
            "delivered, delivered_outcomes, delivered_pending, held_out, held_out_outcomes, "
            "held_out_pending, needed_per_arm, evaluation) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) "
            "RETURNING fit_id",
            target,
            now,
            found.horizon.days,
            None if found.model is None else found.model.model_id,
            status,
            verdict,
            n1,
            o1,
            got.pending[0],
            n0,
            o0,
            got.pending[1],
            needed,
            None if evaluation is None else evaluation.model_dump_json(),
        )
        await conn.copy_records_to_table(
            "uplift_scores",
            records=[(fit_id, a, e, b, u) for a, e, b, u in ranked],
            columns=["fit_id", "account_id", "uplift", "benefit", "untreated"],
        )
        await conn.execute(
            "DELETE FROM uplift_fits WHERE target = $1 AND fit_id <> $2", target, fit_id
        )
    return {"target": target, "status": status, "ranked": len(ranked), "verdict": verdict}


def handler(settings: Settings) -> jobs.Handler:
    async def uplift_fit(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        target = params.get("target")
        if not isinstance(target, str):
            raise errors.InvalidPayload("An uplift fit names its target.")
        now = await conn.fetchval("SELECT now()")
        return await fit(conn, settings, target=target, now=now)

    return uplift_fit


# -- reading -------------------------------------------------------------------------------

_PAGE = """
    SELECT s.account_id, s.uplift, s.benefit, s.untreated, a.name, a.segment, a.owner_email,
           l.probability, l.band
    FROM uplift_scores s
    JOIN accounts a ON a.account_id = s.account_id
    LEFT JOIN latest_scores l ON l.account_id = s.account_id AND l.target = $2
    WHERE s.fit_id = $1 AND ($3::float8 IS NULL OR (s.benefit, s.account_id) < ($3, $4::text))
    ORDER BY s.benefit DESC, s.account_id DESC
    LIMIT {limit}"""


async def _latest(conn: asyncpg.Connection, target: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM uplift_fits WHERE target = $1 ORDER BY fitted_at DESC, fit_id DESC LIMIT 1",
        target,
    )
    return row


def _not_fitted(target: str) -> str:
    return (
        f"No uplift fit for {target} yet: the worker fits one every "
        "CUSTINTEL_UPLIFT_FIT_EVERY_HOURS, or POST /v1/actions/uplift/fit asks now."
    )


async def verdict_of(conn: asyncpg.Connection, target: str) -> str:
    """The newest fit's verdict in words (the model report's)."""
    row = await _latest(conn, target)
    return _not_fitted(target) if row is None else str(row["verdict"])


async def ranking(
    conn: asyncpg.Connection, *, target: str, limit: int, cursor: str | None
) -> UpliftRanking:
    """The newest fit of the target, and a page of its accounts by expected benefit."""
    after: list[Any] = [None, None]
    if cursor is not None:
        benefit, account = cursors.decode(cursor, str, str)
        try:
            after = [float(benefit), account]
        except ValueError as exc:
            raise errors.BadRequest("cursor is not one this service issued") from exc
    fit_row = await _latest(conn, target)
    if fit_row is None:
        return UpliftRanking(
            target=target,
            status="not_fitted",
            verdict=_not_fitted(target),
            fitted_at=None,
            as_of=None,
            horizon_days=None,
            model_id=None,
            delivered=None,
            held_out=None,
            needed_per_arm=None,
            evaluation=None,
            accounts=[],
            next_cursor=None,
        )
    rows = await conn.fetch(_PAGE.format(limit=int(limit) + 1), fit_row["fit_id"], target, *after)
    more = len(rows) > limit
    rows = rows[:limit]
    kept = fit_row["evaluation"]
    evaluation = None if kept is None else UpliftEvaluation.model_validate(orjson.loads(kept))
    return UpliftRanking(
        target=target,
        status=fit_row["status"],
        verdict=fit_row["verdict"],
        fitted_at=fit_row["fitted_at"],
        as_of=fit_row["as_of"],
        horizon_days=fit_row["horizon_days"],
        model_id=fit_row["model_id"],
        delivered=effects.Arm(
            fit_row["delivered"], fit_row["delivered_outcomes"], fit_row["delivered_pending"]
        ).out(),
        held_out=effects.Arm(
            fit_row["held_out"], fit_row["held_out_outcomes"], fit_row["held_out_pending"]
        ).out(),
        needed_per_arm=fit_row["needed_per_arm"],
        evaluation=evaluation,
        accounts=[
            UpliftAccount(
                account_id=r["account_id"],
                name=r["name"],
                segment=r["segment"],
                owner_email=r["owner_email"],
                uplift=r["uplift"],
                benefit=r["benefit"],
                probability_if_not_acted=r["untreated"],
                risk=r["probability"],
                risk_band=r["band"],
            )
            for r in rows
        ],
        next_cursor=(
            cursors.encode(repr(rows[-1]["benefit"]), rows[-1]["account_id"]) if more else None
        ),
    )
