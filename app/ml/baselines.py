"""Simple peers every model is measured against, on the same held-out rows: a logistic regression
on the same features, and a recency rule ("days since the last activity of any kind"). A team
could build either in an afternoon; a model that does not beat them has not earned its place:
the promotion gate (app.ml.promotion) keeps it a candidate.

Both are fitted on the latest fold's training rows (never its evaluation rows): the regression's
coefficients and scaling, and the rule's sign (whether recent activity means more or less of
the outcome), so the comparison is fair in both directions.
"""

from __future__ import annotations

import warnings

import numpy as np

from app.ml import linear

LOGISTIC = "logistic_regression"
RECENCY = "recency"


def logistic(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_eval: np.ndarray,
    *,
    names: list[str],
    categorical: list[str],
) -> np.ndarray:
    """Probabilities of a regularised logistic regression (app.ml.linear, without the catalog's
    directions: a team's own regression would not know them)."""
    fitted = linear.fit(x_fit, y_fit, names=names, categorical=categorical)
    return linear.sigmoid(fitted.margin(x_eval))


def recency(
    x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, *, columns: list[int]
) -> np.ndarray | None:
    """Days since the last event of any type (the least of the `columns`, each the days since
    the last event of one type), signed on the fitting rows; None without such columns."""
    if not columns:
        return None

    def days(x: np.ndarray) -> np.ndarray:
        quiet: np.ndarray = np.nan_to_num(np.nanmin(x[:, columns], axis=1), nan=1e6)
        return quiet

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no activity known
        fit, scored = days(x_fit), days(x_eval)
    fitted = _auc(y_fit, fit)
    return -scored if fitted is not None and fitted < 0.5 else scored


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score  # here: an API process imports this module

    return float(roc_auc_score(y, p)) if len(y) and 0 < y.sum() < len(y) else None


def predict(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_eval: np.ndarray,
    *,
    names: list[str],
    categorical: list[str],
    recency_columns: list[str],
) -> dict[str, np.ndarray | None]:
    """Each peer's scores of the evaluation rows, fitted on the fitting rows (None where it
    cannot be fitted). `recency_columns` are the days-since-the-last-event features."""
    results: dict[str, np.ndarray | None] = {LOGISTIC: None, RECENCY: None}
    if len(y_fit) and 0 < y_fit.sum() < len(y_fit):
        results[LOGISTIC] = logistic(x_fit, y_fit, x_eval, names=names, categorical=categorical)
    columns = [names.index(n) for n in recency_columns if n in names]
    results[RECENCY] = recency(x_fit, y_fit, x_eval, columns=columns)
    return results


def measure(y: np.ndarray, scores: dict[str, np.ndarray | None]) -> dict[str, float | None]:
    """Each peer's AUC on labels y (None where it cannot be measured)."""
    return {name: None if p is None else _auc(y, p) for name, p in scores.items()}


def best(results: dict[str, float | None]) -> tuple[str, float] | None:
    measured = [(auc, name) for name, auc in results.items() if auc is not None]
    if not measured:
        return None
    auc, name = max(measured)
    return name, auc
