"""A synthetic training set whose two segments churn for different reasons."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from app import features
from app.ml.catalog import Catalog
from app.ml.datasets import TrainingSet

CATALOG = Catalog(
    event_types=("login",),
    numeric_traits=(),
    string_traits={},
    plans=("pro", "basic"),
    segments=("enterprise", "smb"),
    roles=(),
    include=(
        "events_login_30d",
        "payments_failed_90d",
        "executive_sponsor_active_30d",
        "mrr",
        "segment",
        "plan",
    ),
)


def world(n_accounts: int = 1500, snapshots: int = 6, seed: int = 3) -> TrainingSet:
    """Enterprise churns when the executive sponsor goes quiet; SMB on usage drops and failed
    payments. Plan carries nothing."""
    rng = np.random.default_rng(seed)
    names = CATALOG.names
    rows, labels, keys, snap = [], [], [], []
    segs: list[str | None] = []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(snapshots):
        for a in range(n_accounts):
            enterprise = a % 2 == 0
            logins = rng.poisson(30 if enterprise else 12)
            failed = rng.poisson(0.3)
            sponsor = float(rng.random() < 0.7)
            mrr = rng.lognormal(8 if enterprise else 5, 0.3)
            if enterprise:
                logit = -2.5 + 3.0 * (1 - sponsor)
            else:
                logit = -2.0 - 0.25 * (logins - 12) + 1.2 * failed
            y = float(rng.random() < 1 / (1 + np.exp(-logit)))
            value = {
                "events_login_30d": logins,
                "payments_failed_90d": failed,
                "executive_sponsor_active_30d": sponsor,
                "mrr": mrr,
                "segment": 0 if enterprise else 1,
                "plan": float(rng.integers(0, 2)),
            }
            rows.append([value[n] for n in names])
            labels.append(y)
            keys.append((f"acct-{a}", start + timedelta(days=30 * s)))
            segs.append("enterprise" if enterprise else "smb")
            snap.append(s)
    frame = features.Frame(CATALOG, keys, np.array(rows, dtype=float), segs)
    return TrainingSet(
        frame,
        np.array(labels),
        np.array(snap),
        [start + timedelta(days=30 * s) for s in range(snapshots)],
    )
