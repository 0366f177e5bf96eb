"""Drift: how far today's population has moved from the one a model was trained on.

At training, each feature's distribution over the training rows is kept in the manifest as a
reference: ten quantile bins for numbers (plus the share missing), the share of each level for
categories, and the same for the score. Drift compares the latest batch scoring of the model
(its accounts, features as of that moment, and the scores it stored) with that reference by the
population stability index, PSI = sum((a - e) * ln(a / e)) over bins: under 0.1 little change,
0.1 to 0.2 some, above 0.2 (the default threshold) a shift worth a look.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np

from app import errors, features
from app.ml import registry
from app.ml.psi import psi


async def measure(conn: asyncpg.Connection, *, model_id: str, threshold: float) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT target, path FROM models WHERE model_id = $1", model_id)
    if row is None:
        raise errors.NotFound(f"No model {model_id!r}.")
    latest = await conn.fetchrow(
        "SELECT as_of, count(*) AS n FROM scores WHERE model_id = $1 GROUP BY as_of "
        "HAVING count(*) > 1 ORDER BY as_of DESC LIMIT 1",
        model_id,
    )
    if latest is None:
        raise errors.Conflict(
            f"Model {model_id} has no batch scoring to compare with its training population; "
            "run one: custintel score --all, or POST /v1/scores/rescore."
        )
    loaded = await asyncio.to_thread(registry.load, Path(row["path"]))
    expected = loaded.manifest.get("reference")
    if expected is None:
        raise errors.Conflict(f"Model {model_id} was trained before drift references were kept.")
    scored = await conn.fetch(
        "SELECT DISTINCT ON (account_id) account_id, probability FROM scores "
        "WHERE model_id = $1 AND as_of = $2 ORDER BY account_id, scored_at DESC",
        model_id,
        latest["as_of"],
    )
    frame = await features.compute(
        conn, loaded.catalog, [(r["account_id"], latest["as_of"]) for r in scored]
    )
    columns = [frame.names.index(f) for f in loaded.features]
    x = frame.matrix[:, columns]
    indices = {
        name: psi(expected["features"][name], x[:, j]) for j, name in enumerate(loaded.features)
    }
    by_feature = [
        {"feature": name, "psi": value}
        for name, value in sorted(indices.items(), key=lambda item: -item[1])
    ]
    score_psi = psi(expected["score"], np.array([r["probability"] for r in scored], dtype=float))
    drifted = [name for name, value in indices.items() if value > threshold]
    return {
        "model_id": model_id,
        "target": row["target"],
        "batch_as_of": latest["as_of"].isoformat(),
        "accounts": len(scored),
        "threshold": threshold,
        "score_psi": score_psi,
        "features": by_feature,
        "drifted": drifted,
        "drift": score_psi > threshold or bool(drifted),
    }
