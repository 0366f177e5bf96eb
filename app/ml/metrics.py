"""How well a model's probabilities rank and fit labels: AUC (within snapshots), its paired
standard error and interval, PR-AUC, Brier, log loss, lift, ROC and lift curves, reliability.
Shared by training, the closed loop's realized performance and the promotion gate."""

from __future__ import annotations

import math

import numpy as np

from app.platform.jsonbody import JSONObject

# scipy and scikit-learn are imported in the functions that use them: an API process imports
# this module (the closed loop's measures) and would otherwise pay a second for them at start.


def auc_difference_error(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """The standard error of AUC(a) - AUC(b) on the same rows (DeLong, DeLong and
    Clarke-Pearson, 1988; with midranks as in Sun and Xu, 2014)."""
    from scipy.stats import rankdata

    positive = y == 1
    m, n = int(positive.sum()), int((~positive).sum())
    if not m or not n:
        return 0.0
    placements = []
    for s in (a, b):
        ranks = rankdata(s)
        pos_ranks, neg_ranks = rankdata(s[positive]), rankdata(s[~positive])
        placements.append(
            (
                (ranks[positive] - pos_ranks) / n,  # per positive: share of negatives below
                1.0 - (ranks[~positive] - neg_ranks) / m,  # per negative: share of positives above
            )
        )
    (a10, a01), (b10, b01) = placements
    d10, d01 = a10 - b10, a01 - b01
    variance = float(np.var(d10, ddof=1) / m + np.var(d01, ddof=1) / n) if m > 1 and n > 1 else 0.0
    return math.sqrt(max(variance, 0.0))


def auc_interval(auc: float | None, y: np.ndarray) -> list[float] | None:
    """A 95% interval of an AUC measured on labels y (Hanley and McNeil, 1982)."""
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if auc is None or not positives or not negatives:
        return None
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / (positives * negatives)
    half = 1.96 * math.sqrt(max(variance, 0.0))
    return [max(0.0, auc - half), min(1.0, auc + half)]


def auc_within(y: np.ndarray, p: np.ndarray, strata: np.ndarray) -> float | None:
    """The AUC over pairs of the same stratum (a snapshot: an account that churned and one
    that renewed, as of the same moment), the strata weighted by their pairs; None without a
    pair. Scores are only ever compared within a moment; pooled over moments, a model is also
    marked on how well its probabilities follow each moment's base rate, which nobody asks of
    a ranking (an online shop's two blocks of weeks: 0.61 and 0.66 each, 0.46 pooled)."""
    from sklearn.metrics import roc_auc_score

    total = pairs = 0.0
    for stratum in np.unique(strata):
        rows = strata == stratum
        positives = int(y[rows].sum())
        negatives = int(rows.sum()) - positives
        if positives and negatives:
            total += float(roc_auc_score(y[rows], p[rows])) * positives * negatives
            pairs += positives * negatives
    return total / pairs if pairs else None


def metrics(
    y: np.ndarray, p: np.ndarray, strata: np.ndarray | None = None
) -> dict[str, float | int | None]:
    """AUC (within strata, when given: auc_within), PR-AUC, Brier, log loss and lift in the
    top 10%; None where undefined."""
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        log_loss,
        roc_auc_score,
    )

    n = len(y)
    both = n > 0 and 0 < y.sum() < n
    top = max(1, math.ceil(n * 0.1)) if n else 0
    order = np.argsort(-p, kind="stable")
    rate = float(y.mean()) if n else None
    lift = float(y[order[:top]].mean()) / rate if n and rate else None
    return {
        "auc": (float(roc_auc_score(y, p)) if both else None)
        if strata is None
        else auc_within(y, p, strata),
        "pr_auc": float(average_precision_score(y, p)) if both else None,
        "brier": float(brier_score_loss(y, p)) if n else None,
        "log_loss": float(log_loss(y, np.clip(p, 1e-9, 1 - 1e-9), labels=[0, 1])) if n else None,
        "lift_at_10": lift,
        "positive_rate": rate,
        "n": n,
    }


def curves(y: np.ndarray, p: np.ndarray, points: int = 101) -> JSONObject:
    """The ROC curve (thinned to about `points` points) and the lift of each decile, highest
    scores first: what the model report draws."""
    from sklearn.metrics import roc_curve

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
