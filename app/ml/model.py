"""The served model: what serving loads, scores and explains, apart from the recipe that makes
it (app.ml.training), so a process that only scores never imports the search, scikit-learn's
estimators or the training set builder.

A target's model is one LightGBM booster per segment (and a global one), each with the logistic
regression blended with it where that ranked better (app.ml.linear) and its Platt calibration;
each segment keeps the statistics that explain a score within it (bands, percentiles, typical
values)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from app.ml import linear
from app.platform.jsonbody import JSONObject

if TYPE_CHECKING:  # imported where a model is loaded (app.ml.registry) or trained
    import lightgbm as lgb

_sigmoid = linear.sigmoid


@dataclass(frozen=True)
class Blend:
    """margin = trees x the trees' margin + regression x the logistic regression's (when the
    regression is used), weights fitted on the search's out-of-fold margins."""

    trees: float = 1.0
    regression: float = 0.0
    # The regression's inverse regularisation strength, chosen out of fold (only used to fit).
    c: float = 1.0


@dataclass
class SegmentModel:
    """One booster, the logistic regression blended with it (if any) and its calibration:
    margin = blend.trees x the trees' margin + blend.regression x the regression's,
    probability = sigmoid(a * margin + b)."""

    booster: lgb.Booster
    calibration: tuple[float, float]
    regression: linear.Linear | None = None
    blend: Blend = field(default_factory=Blend)

    def probability(self, raw: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return _sigmoid(a * raw + b)

    def margin(self, x: np.ndarray) -> np.ndarray:
        """The model's raw score, in log-odds."""
        trees = np.asarray(self.booster.predict(x, raw_score=True), dtype=np.float64)
        if self.regression is None:
            return trees
        result: np.ndarray = (
            self.blend.trees * trees + self.blend.regression * self.regression.margin(x)
        )
        return result

    def contributions(self, x: np.ndarray, *, threads: int = 0) -> np.ndarray:
        """Per feature, the trees' TreeSHAP contribution plus the regression's, each times its
        weight in the blend; the last column is the base value. Each row sums to the margin."""
        out = np.asarray(
            self.booster.predict(x, pred_contrib=True, num_threads=threads), dtype=np.float64
        )
        if self.regression is not None:
            out *= self.blend.trees
            out[:, :-1] += self.blend.regression * self.regression.contributions(x)
            out[:, -1] += self.blend.regression * self.regression.base
        return out


@dataclass
class SegmentStats:
    """What explains a score within a segment, from its training rows."""

    thresholds: tuple[float, float]  # probability at or above which a score is high, medium
    reference: list[float]  # sorted training probabilities, for percentiles
    typical: dict[str, float]  # median of each feature


@dataclass
class Trained:
    features: list[str]
    categorical: list[str]
    models: dict[str, SegmentModel]  # "__global__" and segment names
    stats: dict[str, SegmentStats]  # per segment, and "__global__" for the rest
    metrics: JSONObject
    segments: JSONObject
    importance: list[tuple[str, float]]
    reliability: list[dict[str, float]]
    params: JSONObject
    data_hash: str
    rows: dict[str, int] = field(default_factory=dict)
    reference: JSONObject = field(default_factory=dict)  # training distributions (drift)
    curves: JSONObject = field(default_factory=dict)  # held-out ROC and lift (report)
    search: JSONObject = field(default_factory=dict)  # candidates, scores, choice, time
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage (the manifest's)


GLOBAL = "__global__"
