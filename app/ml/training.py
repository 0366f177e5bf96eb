"""Training: LightGBM binary models, per segment where the data supports it, calibrated, measured
out of time.

CPU-bound throughout: run it in a worker process, never on the event loop.

How a model is made from a training set:
- hold out the latest snapshots (a set with one snapshot is split by account instead); metrics are
  measured there and nowhere else;
- of the rest, a fifth of the accounts stop the boosting early and fit the calibration;
- a global model is trained with segment as a feature; a segment with enough rows and positives
  also gets its own model, kept when it does at least as well as the global model on that
  segment's held-out rows (the comparison is recorded either way);
- probability = sigmoid(a * margin + b) (Platt scaling of the model's log-odds), used when it
  lowers the Brier score, else a = 1, b = 0.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
    roc_curve,
)

from app import errors
from app.ml import baselines, psi
from app.ml.datasets import TrainingSet

SEED = 7


@dataclass(frozen=True)
class Options:
    min_segment_rows: int = 300
    min_segment_positives: int = 30
    max_features: int | None = None
    num_threads: int = 2
    learning_rate: float = 0.05
    max_rounds: int = 600
    early_stopping_rounds: int = 40
    holdout_share: float = 0.25  # share of the latest snapshots held out
    high_share: float = 0.10
    medium_share: float = 0.20
    # Checked after every boosting round: true once the job is cancelled or out of time.
    stop_requested: Callable[[], bool] = field(default=lambda: False, compare=False)


@dataclass
class SegmentModel:
    """One booster and its calibration: probability = sigmoid(a * margin + b)."""

    booster: lgb.Booster
    calibration: tuple[float, float]

    def probability(self, raw: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return _sigmoid(a * raw + b)


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
    metrics: dict[str, Any]
    segments: dict[str, Any]
    importance: list[tuple[str, float]]
    reliability: list[dict[str, float]]
    params: dict[str, Any]
    data_hash: str
    rows: dict[str, int] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)  # training distributions (drift)
    curves: dict[str, Any] = field(default_factory=dict)  # held-out ROC and lift (report)


GLOBAL = "__global__"


def params(options: Options) -> dict[str, Any]:
    return {
        "objective": "binary",
        "learning_rate": options.learning_rate,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.9,
        "bagging_freq": 1,
        "lambda_l2": 1.0,
        "max_cat_to_onehot": 8,
        "cat_smooth": 10,
        "seed": SEED,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": options.num_threads,
        "verbose": -1,
    }


def _account_bucket(account_id: str) -> int:
    return int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:4], "big") % 100


def split(ts: TrainingSet, options: Options) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks: train, stop (early stopping and calibration), holdout (metrics)."""
    n_snap = len(ts.snapshots)
    # An account is in every snapshot: hash it once.
    bucket_of = {a: _account_bucket(a) for a in dict.fromkeys(a for a, _ in ts.frame.keys)}
    buckets = np.array([bucket_of[a] for a, _ in ts.frame.keys])
    if n_snap > 1:
        held = max(1, round(n_snap * options.holdout_share))
        holdout = ts.snapshot_of_row >= n_snap - held
    else:
        holdout = buckets < 25
    stop = ~holdout & (buckets % 5 == 0)
    train = ~holdout & ~stop
    return train, stop, holdout


def _fit(
    x: np.ndarray,
    y: np.ndarray,
    x_stop: np.ndarray,
    y_stop: np.ndarray,
    *,
    names: list[str],
    categorical: list[str],
    options: Options,
) -> lgb.Booster:
    # Feature names derive from names clients send (trait keys, event types); LightGBM refuses
    # some characters in them (JSON's special ones) and writes them into model.txt. It gets
    # positions only: our names live in the manifest, in the same order as the columns.
    train = lgb.Dataset(
        x,
        y,
        feature_name=[f"f{j}" for j in range(len(names))],
        categorical_feature=[names.index(c) for c in categorical],
        free_raw_data=False,
    )
    valid = lgb.Dataset(x_stop, y_stop, reference=train)
    return lgb.train(
        params(options),
        train,
        num_boost_round=options.max_rounds,
        valid_sets=[valid],
        callbacks=[
            lgb.early_stopping(options.early_stopping_rounds, verbose=False),
            _stopper(options.stop_requested),
        ],
    )


def _stopper(stop_requested: Callable[[], bool]) -> Callable[[Any], None]:
    def check(_: Any) -> None:
        if stop_requested():
            raise errors.Stopped("training stopped: its job was cancelled or ran out of time")

    return check


def _calibrate(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    model = LogisticRegression(C=1e6, solver="lbfgs").fit(margin.reshape(-1, 1), y)
    return float(model.coef_[0][0]), float(model.intercept_[0])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    result: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return result


def margin(booster: lgb.Booster, x: np.ndarray) -> np.ndarray:
    """The model's raw score, in log-odds."""
    return np.asarray(booster.predict(x, raw_score=True), dtype=np.float64)


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | int | None]:
    """AUC, PR-AUC, Brier, log loss and lift in the top 10%; None where undefined."""
    n = len(y)
    both = n > 0 and 0 < y.sum() < n
    top = max(1, math.ceil(n * 0.1)) if n else 0
    order = np.argsort(-p, kind="stable")
    rate = float(y.mean()) if n else None
    lift = float(y[order[:top]].mean()) / rate if n and rate else None
    return {
        "auc": float(roc_auc_score(y, p)) if both else None,
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)) if n else None,
        "log_loss": float(log_loss(y, np.clip(p, 1e-9, 1 - 1e-9), labels=[0, 1])) if n else None,
        "lift_at_10": lift,
        "positive_rate": rate,
        "n": n,
    }


def curves(y: np.ndarray, p: np.ndarray, points: int = 101) -> dict[str, Any]:
    """The ROC curve (thinned to about `points` points) and the lift of each decile, highest
    scores first: what the model report draws."""
    if len(y) == 0 or not 0 < y.sum() < len(y):
        return {}
    fpr, tpr, _ = roc_curve(y, p)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(points, len(fpr))).round().astype(int))
    rate = float(y.mean())
    order = np.argsort(-p, kind="stable")
    lift = [float(y[chunk].mean()) / rate for chunk in np.array_split(order, 10) if len(chunk)]
    return {"roc": [[float(fpr[i]), float(tpr[i])] for i in keep], "lift": lift}


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted against observed, by decile of the prediction."""
    if len(y) == 0:
        return []
    order = np.argsort(p, kind="stable")
    table = []
    for chunk in np.array_split(order, min(bins, len(order))):
        table.append(
            {
                "predicted": float(p[chunk].mean()),
                "observed": float(y[chunk].mean()),
                "n": len(chunk),
            }
        )
    return table


def train(ts: TrainingSet, options: Options) -> Trained:
    y = ts.labels
    if y.sum() == 0 or y.sum() == len(y):
        kind = "no positive" if y.sum() == 0 else "only positive"
        raise errors.InvalidPayload(
            f"The training set has {kind} examples ({len(y)} rows): the label never "
            f"{'happens' if y.sum() == 0 else 'fails to happen'} in the horizon. Widen the "
            "horizon, move as_of, or check the label."
        )
    names = list(ts.frame.names)
    categorical = [n for n in ts.frame.catalog.levels() if n in names]
    x = ts.frame.matrix
    train_mask, stop_mask, hold_mask = split(ts, options)
    if y[train_mask].sum() == 0 or y[stop_mask].sum() == 0:
        raise errors.InvalidPayload(
            "Too few positive examples to train and stop early: "
            f"{int(y.sum())} positives in {len(y)} rows."
        )

    def fit(mask_train: np.ndarray, mask_stop: np.ndarray, cols: list[str]) -> lgb.Booster:
        idx = [names.index(c) for c in cols]
        return _fit(
            x[mask_train][:, idx],
            y[mask_train],
            x[mask_stop][:, idx],
            y[mask_stop],
            names=cols,
            categorical=[c for c in categorical if c in cols],
            options=options,
        )

    cols = names
    booster = fit(train_mask, stop_mask, cols)
    if options.max_features and options.max_features < len(cols):
        gains = booster.feature_importance("gain")
        keep = [cols[j] for j in np.argsort(-gains, kind="stable")[: options.max_features]]
        cols = [c for c in names if c in keep]
        booster = fit(train_mask, stop_mask, cols)
    idx = [names.index(c) for c in cols]
    xs = x[:, idx]

    segments = np.array([s or "" for s in ts.frame.segments])
    models: dict[str, SegmentModel] = {}
    models[GLOBAL] = _finish(booster, margin(booster, xs[stop_mask]), y[stop_mask])
    # Predicting is a fifth of the time here: each model predicts each row it needs once.
    global_hold = np.full(len(y), np.nan)
    global_hold[hold_mask] = margin(booster, xs[hold_mask])
    own_margins: dict[str, np.ndarray] = {}  # a segment model's margins on its segment's rows
    report: dict[str, Any] = {}
    for segment in sorted(str(s) for s in set(segments) - {""}):
        in_seg = segments == segment
        rows, positives = int((in_seg & train_mask).sum()), int(y[in_seg & train_mask].sum())
        entry: dict[str, Any] = {
            "train_rows": rows,
            "train_positives": positives,
            "model": "global",
        }
        hold = in_seg & hold_mask
        g = models[GLOBAL].probability(global_hold[hold])
        entry["global_holdout"] = metrics(y[hold], g)
        if (
            rows >= options.min_segment_rows
            and positives >= options.min_segment_positives
            and y[in_seg & stop_mask].sum() > 0
        ):
            own = fit(in_seg & train_mask, in_seg & stop_mask, cols)
            own_margin = np.full(len(y), np.nan)
            own_margin[in_seg] = margin(own, xs[in_seg])
            candidate = _finish(own, own_margin[in_seg & stop_mask], y[in_seg & stop_mask])
            s = candidate.probability(own_margin[hold])
            entry["segment_holdout"] = metrics(y[hold], s)
            own_auc, global_auc = entry["segment_holdout"]["auc"], entry["global_holdout"]["auc"]
            if own_auc is not None and (global_auc is None or own_auc >= global_auc):
                models[segment] = candidate
                own_margins[segment] = own_margin
                entry["model"] = "segment"
        else:
            entry["reason"] = (
                f"needs {options.min_segment_rows} rows and {options.min_segment_positives} "
                "positives to train its own model"
            )
        report[segment] = entry

    p = np.empty(len(y))
    served_by = np.array([s if s in models else GLOBAL for s in segments])
    for name, model in models.items():
        rows = served_by == name
        if not rows.any():
            continue
        known = own_margins.get(name)
        if known is None:  # the global model: only its held-out rows are predicted already
            known, unknown = global_hold.copy(), rows & ~hold_mask
            known[unknown] = margin(model.booster, xs[unknown])
        p[rows] = model.probability(known[rows])
    stats = {GLOBAL: _stats(p[train_mask], xs[train_mask], cols, options)}
    for segment in sorted(str(s) for s in set(segments) - {""}):
        rows = train_mask & (segments == segment)
        if rows.any():
            stats[segment] = _stats(p[rows], xs[rows], cols, options)
    held_y, held_p = y[hold_mask], p[hold_mask]
    summary = metrics(held_y, held_p)
    used = [c for c in categorical if c in cols]
    peers = baselines.measure(
        xs[~hold_mask], y[~hold_mask], xs[hold_mask], held_y, names=cols, categorical=used
    )
    gains = booster.feature_importance("gain")
    total = float(gains.sum()) or 1.0
    return Trained(
        features=cols,
        categorical=[c for c in categorical if c in cols],
        models=models,
        stats=stats,
        metrics={
            **{k: v for k, v in summary.items() if k != "n"},
            "n_train": int(train_mask.sum()),
            "n_valid": int(hold_mask.sum()),
            "baselines": peers,
        },
        segments=report,
        importance=sorted(
            ((c, float(g) / total) for c, g in zip(cols, gains, strict=True)),
            key=lambda pair: -pair[1],
        ),
        reliability=reliability(held_y, held_p),
        params=params(options),
        data_hash=_data_hash(x, y),
        rows={
            "train": int(train_mask.sum()),
            "stop": int(stop_mask.sum()),
            "holdout": int(hold_mask.sum()),
            "total": len(y),
        },
        curves=curves(held_y, held_p),
        reference=psi.reference(
            xs[train_mask], cols, [c for c in categorical if c in cols], p[train_mask]
        ),
    )


def _data_hash(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the matrix's and the labels' bytes, read in place (a copy of the matrix cost
    twice the hashing)."""
    digest = hashlib.sha256(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y).data)
    return digest.hexdigest()


def _finish(booster: lgb.Booster, stop_margin: np.ndarray, y_stop: np.ndarray) -> SegmentModel:
    """Calibration fitted on the booster's margins on the early-stopping rows, kept only where it
    lowers the Brier score."""
    a, b = _calibrate(stop_margin, y_stop)
    raw = _sigmoid(stop_margin)
    calibrated = _sigmoid(a * stop_margin + b)
    if brier_score_loss(y_stop, calibrated) >= brier_score_loss(y_stop, raw):
        a, b = 1.0, 0.0
    return SegmentModel(booster, (a, b))


def _stats(p: np.ndarray, xs: np.ndarray, cols: list[str], options: Options) -> SegmentStats:
    reference = np.sort(p)
    high = float(np.quantile(reference, 1 - options.high_share))
    medium = float(np.quantile(reference, 1 - options.high_share - options.medium_share))
    typical = {}
    for j, c in enumerate(cols):
        column = xs[:, j]
        if not np.isnan(column).all():
            typical[c] = float(np.nanmedian(column))
    return SegmentStats((high, medium), [float(v) for v in reference], typical)
