"""The population stability index and the reference distributions it compares against: ten
quantile bins for numbers (plus the share missing), the share of each level for categories.
PSI = sum((a - e) * ln(a / e)) over bins; under 0.1 little change, 0.1 to 0.2 some, above 0.2 a
shift worth a look."""

from __future__ import annotations

import math

import numpy as np

from app.platform.jsonbody import JSONObject

BINS = 10
FLOOR = 1e-4  # empty bins would make the index infinite


def reference(x: np.ndarray, names: list[str], categorical: list[str], p: np.ndarray) -> JSONObject:
    """The training distribution of every feature and of the score."""
    return {
        "features": {
            name: distribution(x[:, j], categorical=name in categorical)
            for j, name in enumerate(names)
        },
        "score": distribution(p, categorical=False),
    }


def distribution(values: np.ndarray, *, categorical: bool) -> JSONObject:
    present = values[~np.isnan(values)]
    missing = 1 - len(present) / len(values) if len(values) else 0.0
    if categorical:
        codes, counts = np.unique(present.astype(int), return_counts=True)
        return {
            "levels": {str(int(c)): n / len(values) for c, n in zip(codes, counts, strict=True)},
            "missing": missing,
        }
    quantiles = np.linspace(0, 1, BINS + 1)[1:-1]
    edges: np.ndarray = np.unique(np.quantile(present, quantiles)) if len(present) else np.zeros(0)
    shares = _shares(present, edges, len(values))
    return {"edges": [float(e) for e in edges], "shares": shares, "missing": missing}


def _shares(present: np.ndarray, edges: np.ndarray, total: int) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
    return [float(c) / total if total else 0.0 for c in counts]


def psi(expected: JSONObject, values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    missing = 1 - len(present) / len(values) if len(values) else 0.0
    if "levels" in expected:
        levels = expected["levels"]
        codes, counts = np.unique(present.astype(int), return_counts=True)
        actual = {str(int(c)): n / len(values) for c, n in zip(codes, counts, strict=True)}
        keys = set(levels) | set(actual)
        pairs = [(levels.get(k, 0.0), actual.get(k, 0.0)) for k in keys]
    else:
        shares = _shares(present, np.asarray(expected["edges"]), len(values))
        pairs = list(zip(expected["shares"], shares, strict=True))
    pairs.append((expected["missing"], missing))
    total = 0.0
    for e, a in pairs:
        e, a = max(e, FLOOR), max(a, FLOOR)
        total += (a - e) * math.log(a / e)
    return total
