"""A regularised logistic regression written out in the open: the simple peer every model is
measured against (app.ml.baselines) and the regression blended with the trees
(app.ml.model.Blend).

Numbers are log-scaled (signed log1p) after missing values are replaced by the training median
(with an indicator of the missing ones), then standardised on the training rows; categories are
one-hot over the codes seen in training (an unknown code gets no weight). Its margin is a sum of
one exact contribution per feature, each centred on the training rows (so the base value is the
average training margin): a model that blends it with trees still explains every score as
base + the sum of its features' contributions, TreeSHAP's for the trees plus these.

Where the catalog knows which way a feature pushes the target, a weight of the other sign is
dropped and the rest refitted, as the trees are constrained the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.platform.jsonbody import JSONObject

MISSING_CODE = -1  # a category's missing value, one-hot like any level


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without overflow for any margin (a row far outside the training range)."""
    result: np.ndarray = np.exp(-np.logaddexp(0.0, -z))
    return result


def _signed_log(x: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.sign(x) * np.log1p(np.abs(x))
    return result


@dataclass(frozen=True)
class Linear:
    width: int  # the model's features: contributions has one column per feature
    base: float
    numbers: np.ndarray  # positions of the numeric features
    median: np.ndarray  # per numeric feature: what a missing value becomes
    mean: np.ndarray  # of the signed log, on the training rows
    scale: np.ndarray
    weight: np.ndarray
    missing_rate: np.ndarray  # share of training rows missing it
    missing_weight: np.ndarray  # weight of the standardised missing indicator
    levels: dict[int, tuple[dict[int, float], float]]  # position -> (weight per code, centre)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """One column per feature; each row sums to margin - base."""
        out = np.zeros((len(x), self.width))
        values = x[:, self.numbers]
        missing = np.isnan(values)
        z = (_signed_log(np.where(missing, self.median, values)) - self.mean) / self.scale
        spread = np.sqrt(self.missing_rate * (1 - self.missing_rate))
        m = np.divide(missing - self.missing_rate, spread, out=np.zeros_like(z), where=spread > 0)
        out[:, self.numbers] = self.weight * z + self.missing_weight * m
        for j, (weights, centre) in self.levels.items():
            known = np.array(sorted(weights), dtype=np.int64)
            values = np.array([weights[c] for c in known.tolist()])
            codes = _codes(x[:, j])
            at = np.minimum(np.searchsorted(known, codes), len(known) - 1)
            out[:, j] = np.where(known[at] == codes, values[at], 0.0) - centre
        return out

    def margin(self, x: np.ndarray) -> np.ndarray:
        result: np.ndarray = self.base + self.contributions(x).sum(axis=1)
        return result

    def to_json(self) -> JSONObject:
        return {
            "width": self.width,
            "base": self.base,
            "numbers": self.numbers.tolist(),
            "median": self.median.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weight": self.weight.tolist(),
            "missing_rate": self.missing_rate.tolist(),
            "missing_weight": self.missing_weight.tolist(),
            "levels": [
                [j, [[c, w] for c, w in weights.items()], centre]
                for j, (weights, centre) in self.levels.items()
            ],
        }

    @classmethod
    def from_json(cls, data: JSONObject) -> Linear:
        def floats(key: str) -> np.ndarray:
            return np.array(data[key], dtype=np.float64)

        return cls(
            width=int(data["width"]),
            base=float(data["base"]),
            numbers=np.array(data["numbers"], dtype=np.int64),
            median=floats("median"),
            mean=floats("mean"),
            scale=floats("scale"),
            weight=floats("weight"),
            missing_rate=floats("missing_rate"),
            missing_weight=floats("missing_weight"),
            levels={
                int(j): ({int(c): float(w) for c, w in weights}, float(centre))
                for j, weights, centre in data["levels"]
            },
        )


def _codes(column: np.ndarray) -> np.ndarray:
    codes: np.ndarray = np.nan_to_num(column, nan=MISSING_CODE).astype(np.int64)
    return codes


def fit(
    x: np.ndarray,
    y: np.ndarray,
    *,
    names: Sequence[str],
    categorical: Sequence[str],
    directions: Sequence[int] = (),
    c: float = 1.0,
) -> Linear:
    """A regression on rows x (columns named `names`) and labels y (both classes present).
    `directions`: per column +1 or -1 where the sign of its weight is known, else 0."""
    numbers = np.array([j for j, n in enumerate(names) if n not in categorical], dtype=np.int64)
    values = x[:, numbers]
    missing = np.isnan(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no value at all
        median = np.nan_to_num(np.nanmedian(values, axis=0)) if len(numbers) else np.zeros(0)
    logged = _signed_log(np.where(missing, median, values))
    mean, scale = logged.mean(axis=0), logged.std(axis=0)
    scale[scale == 0] = 1.0
    z = (logged - mean) / scale
    rate = missing.mean(axis=0)
    spread = np.sqrt(rate * (1 - rate))
    m = np.divide(missing - rate, spread, out=np.zeros_like(z), where=spread > 0)
    one_hot: list[tuple[int, int]] = []  # (position, code) of each one-hot column
    columns = [z, m]
    for j, name in enumerate(names):
        if name in categorical:
            codes = _codes(x[:, j])
            for code in np.unique(codes).tolist():
                one_hot.append((j, code))
                columns.append((codes == code).astype(np.float64)[:, None])
    design = np.hstack(columns)
    signs = np.array([directions[j] if directions else 0 for j in numbers.tolist()])

    # Imported here: serving loads fitted regressions and never needs scikit-learn.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    def regression(design: np.ndarray) -> LogisticRegression:
        # Newton steps with a Cholesky solve: a handful of iterations where lbfgs took 30 to
        # 160 on a few hundred columns (the same optimum; 1.7 s against 1 to 4.3 s per fit on
        # 15,760 rows of the simulator).
        model = LogisticRegression(C=c, max_iter=200, solver="newton-cholesky")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(design, y)

    model = regression(design)
    k = len(numbers)
    wrong = signs * model.coef_[0][:k] < 0
    if wrong.any():  # against the catalog's direction: dropped (a zero column gets no weight)
        design[:, :k][:, wrong] = 0.0
        model = regression(design)
    coef = model.coef_[0]
    weight, missing_weight = coef[:k].copy(), coef[k : 2 * k]
    weight[wrong] = 0.0
    levels: dict[int, tuple[dict[int, float], float]] = {}
    for (j, code), w in zip(one_hot, coef[2 * k :].tolist(), strict=True):
        levels.setdefault(j, ({}, 0.0))[0][code] = w
    base = float(model.intercept_[0])
    for j, (weights, _) in list(levels.items()):
        codes = _codes(x[:, j])
        centre = float(np.mean([weights[c] for c in codes.tolist()]))
        levels[j] = (weights, centre)
        base += centre
    return Linear(
        width=len(names),
        base=base,
        numbers=numbers,
        median=median,
        mean=mean,
        scale=scale,
        weight=weight,
        missing_rate=rate,
        missing_weight=missing_weight,
        levels=levels,
    )
