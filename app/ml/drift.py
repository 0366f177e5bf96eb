"""Drift: how far today's population has moved from the one a model was trained on.

At training, each feature's distribution over the training rows is kept in the manifest as a
reference: ten quantile bins for numbers (plus the share missing), the share of each level for
categories, and the same for the score. Drift compares the latest batch scoring of the model
(its accounts, features as of that moment, and the scores it stored) with that reference by the
population stability index, PSI = sum((a - e) * ln(a / e)) over bins: under 0.1 little change,
0.1 to 0.2 some, above 0.2 (the default threshold) a shift worth a look. A feature the model
hardly uses (under `min_importance` of its gain) is reported but does not count as drift: a
shift there changes no score, and flags nobody can act on teach people to ignore the next one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypedDict

import asyncpg
import numpy as np

from app.ml import features, registry
from app.ml.psi import psi
from app.platform import errors
from app.platform.settings import Settings


@dataclass(frozen=True)
class Rule:
    threshold: float  # population stability index above which a distribution has shifted
    min_importance: float  # share of the model's gain a feature needs for its shift to count

    @classmethod
    def of(cls, settings: Settings) -> Rule:
        return cls(settings.drift_threshold, settings.drift_min_importance)


class FeatureDrift(TypedDict):
    feature: str
    psi: float
    importance: float


class Report(TypedDict):
    """A model's drift, as GET /v1/models/{id}/drift answers it (schemas.models.DriftReport)."""

    model_id: str
    target: str
    batch_as_of: str
    accounts: int
    threshold: float
    min_importance: float
    score_psi: float
    features: list[FeatureDrift]
    drifted: list[str]
    drift: bool


async def measure(conn: asyncpg.Connection, *, model_id: str, rule: Rule) -> Report:
    record = await registry.located(conn, model_id)
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
    loaded = await asyncio.to_thread(registry.load, record.path)
    expected = loaded.manifest["reference"]
    scored = await conn.fetch(
        "SELECT DISTINCT ON (account_id) account_id, probability FROM scores "
        "WHERE model_id = $1 AND as_of = $2 ORDER BY account_id, scored_at DESC",
        model_id,
        latest["as_of"],
    )
    frame = await features.compute(
        conn, loaded.catalog, [(r["account_id"], latest["as_of"]) for r in scored]
    )
    x = loaded.matrix(frame)
    indices = {
        name: psi(expected["features"][name], x[:, j]) for j, name in enumerate(loaded.features)
    }
    importance = {f["name"]: f["importance"] for f in loaded.manifest["importance"]}
    by_feature = [
        FeatureDrift(feature=name, psi=value, importance=importance.get(name, 0.0))
        for name, value in sorted(indices.items(), key=lambda item: -item[1])
    ]
    score_psi = psi(expected["score"], np.array([r["probability"] for r in scored], dtype=float))
    drifted = [
        f["feature"]
        for f in by_feature
        if f["psi"] > rule.threshold and f["importance"] >= rule.min_importance
    ]
    return Report(
        model_id=model_id,
        target=record.target,
        batch_as_of=latest["as_of"].isoformat(),
        accounts=len(scored),
        threshold=rule.threshold,
        min_importance=rule.min_importance,
        score_psi=score_psi,
        features=by_feature,
        drifted=drifted,
        drift=score_psi > rule.threshold or bool(drifted),
    )
