"""Features that mean the same at serving as in training.

A model learns from snapshots that span the installation's history and scores every account
now. A feature that grows with the installation's own age (days on record, a lifetime count,
days since a first event) is larger at serving than in any snapshot: trees cannot extrapolate,
so every account sits at the edge of what training saw, and the bands inflate (the demo: 47% of
live accounts in the expansion `high` band where the design is 10%; days on record had a PSI of
7.9 between training and the first evaluation). Two steps keep them honest:

- by construction (app.ml.catalog, stationary catalogs): a rate per day on record beside the
  lifetime counts; long windows only when every snapshot can fill them;
- by measurement (check, here): each feature's values now, over the accounts that would be
  scored, are compared by the population stability index with the training rows' (all of
  them for a feature that can grow with the installation's age, as its spec says; the latest
  snapshot's for any other, as drift is measured). One that grows and shifted significantly
  (SHIFT) is re-expressed where it can be (days on record and since a first event, capped at
  the shortest history any snapshot saw) and dropped where that does not hold either; any
  other shift is reported, not acted on (a cohort that ages or a business that grows moves
  real signals too, and they still carry what the model needs). Where accounts keep arriving
  little grows, and nothing is lost.

The manifest keeps every measurement and what was done (`window.stationarity`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypedDict

import numpy as np

from app.ml import features, psi
from app.ml.catalog import CAPPED, Catalog
from app.ml.datasets import TrainingSet

# A significant shift of a population (PSI above 0.25; Siddiqi, Credit Risk Scorecards, 2006).
# The days on record of the demo's accounts shifted by 7.9 between the snapshots and now; an
# online shop's clickstream, whose users keep arriving, by at most 0.23 (its tenure), and capping
# or dropping at the drift findings' 0.2 cost it 0.016 AUC on its weekly backtest.
SHIFT = 0.25


@dataclass(frozen=True)
class Measured:
    """One feature: its PSI between the training rows and the values now, and what was done."""

    feature: str
    psi: float
    action: str  # "dropped", "capped at N days", "reported" (shifted, not acted on), "kept"

    def to_json(self) -> MeasuredJson:
        return {"feature": self.feature, "psi": round(self.psi, 4), "action": self.action}


class MeasuredJson(TypedDict):
    feature: str
    psi: float
    action: str


class Described(TypedDict):
    """What the manifest keeps (window.stationarity)."""

    cap_days: int | None
    threshold: float
    features: list[MeasuredJson]  # every feature not simply kept


def check(ts: TrainingSet, now: features.Frame, *, threshold: float) -> list[Measured]:
    """Every feature of the training set measured against its values now: against every
    training row (what the model learnt from) for a feature that grows with the installation's
    age, against the latest snapshot's rows (what drift is measured from) for any other. A
    feature that can be capped (days on record, since a first event) and shifted is measured
    again capped at the catalog's cap_days: kept so if that holds, else dropped."""
    catalog = ts.frame.catalog
    categorical = set(catalog.levels())
    latest = ts.snapshot_of_row == ts.snapshot_of_row.max()
    found = []
    for j, name in enumerate(catalog.names):
        feature = catalog.feature(name)
        grows = feature.spec.grows
        then = ts.frame.matrix[:, j] if grows else ts.frame.matrix[latest, j]
        value = _psi(then, now.matrix[:, j], categorical=name in categorical)
        action = "reported" if value > threshold else "kept"
        if grows and value > threshold:
            action = "dropped"
            if feature.spec.key in CAPPED and catalog.cap_days is not None:
                cap = float(catalog.cap_days)
                capped = _psi(np.minimum(then, cap), np.minimum(now.matrix[:, j], cap))
                if capped <= threshold:
                    action, value = f"capped at {catalog.cap_days} days", capped
        found.append(Measured(name, value, action))
    return found


def _psi(then: np.ndarray, now: np.ndarray, *, categorical: bool = False) -> float:
    if not len(now):
        return 0.0
    return psi.psi(psi.distribution(then, categorical=categorical), now)


def stable(ts: TrainingSet, measured: list[Measured]) -> TrainingSet:
    """The training set as the check leaves it: capped features capped, dropped ones left
    out; its catalog says which, so serving computes the same."""
    frame = ts.frame
    cut = tuple(m.feature for m in measured if m.action == "dropped")
    capped = tuple(m.feature for m in measured if m.action.startswith("capped"))
    if not cut and not capped:
        return ts
    catalog: Catalog = replace(
        frame.catalog, shifted=frame.catalog.shifted + cut, capped=frame.catalog.capped + capped
    )
    matrix = frame.matrix.copy()
    for name in capped:
        j = frame.catalog.names.index(name)
        matrix[:, j] = np.minimum(matrix[:, j], float(catalog.cap_days or 0))
    kept = [frame.catalog.names.index(n) for n in catalog.names]
    narrowed = features.Frame(catalog, frame.keys, matrix[:, kept], frame.segments)
    return replace(ts, frame=narrowed)


def describe(catalog: Catalog, measured: list[Measured], threshold: float) -> Described:
    """What the manifest keeps: the cap, the threshold, and every feature that was not
    simply kept."""
    return {
        "cap_days": catalog.cap_days,
        "threshold": threshold,
        "features": [m.to_json() for m in measured if m.action != "kept"],
    }
