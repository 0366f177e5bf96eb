"""Realized performance: a model's stored scores measured against what happened since.

A score is matured once its horizon has passed (as_of + horizon_days <= now); its label is then
known, computed exactly as at training (the model's own label over (as_of, as_of + horizon]).
Many scores of one account on one day count once (the last one), so an account scored on every
page view does not outweigh the rest. For churn, scores given after the account had churned are
left out, as they are from training.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypedDict

import asyncpg
import numpy as np
import orjson

from app.activation import insights, routing
from app.ml import datasets, drift, history, metrics, registry
from app.ml.catalog import Catalog
from app.platform import errors, jobs
from app.platform.jsonbody import JSONObject


class Measures(TypedDict):
    n: int
    positives: int
    auc: float | None
    brier: float | None
    lift_at_10: float | None
    positive_rate: float | None
    calibration: list[dict[str, float]]


class PrecedingReason(TypedDict):
    feature: str
    text: str
    happened: int
    happened_share: float | None
    did_not_happen: int
    did_not_happen_share: float | None


class Realized(TypedDict):
    """How a model's past scores fared against what happened (schemas.models.ModelPerformance)."""

    model_id: str
    target: str
    matured_before: str
    overall: Measures
    validation: JSONObject
    segments: dict[str, Measures]
    preceding_reasons: list[PrecedingReason]


async def realized(
    conn: asyncpg.Connection,
    *,
    model_id: str,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
    catalog: Catalog | None = None,
) -> Realized:
    """`catalog`: the model's, when the caller has loaded it; otherwise read from its folder."""
    model = await conn.fetchrow(
        "SELECT target, horizon_days, label, summary, path FROM models WHERE model_id = $1",
        model_id,
    )
    if model is None:
        raise errors.NotFound(f"No model {model_id!r}.")
    horizon = timedelta(days=model["horizon_days"])
    label = datasets.label_of(model["label"])
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (account_id, date_trunc('day', as_of))
               account_id, as_of, segment, probability, reasons
        FROM scores
        WHERE model_id = $1 AND as_of <= $2
          AND ($3::timestamptz IS NULL OR as_of >= $3)
          AND ($4::timestamptz IS NULL OR as_of <= $4)
        ORDER BY account_id, date_trunc('day', as_of), as_of DESC, scored_at DESC
        """,
        model_id,
        now - horizon,
        since,
        until,
    )
    if model["target"] == "churn":
        rows = await _not_yet_churned(conn, rows)
    keys = [(r["account_id"], r["as_of"]) for r in rows]
    y = await datasets.labels(conn, label, keys=keys, horizon=horizon) if keys else np.array([])
    p = np.array([r["probability"] for r in rows], dtype=float)
    segments = np.array([r["segment"] or "" for r in rows])
    summary = orjson.loads(model["summary"])
    if catalog is None:  # a file read: off the event loop
        catalog = await asyncio.to_thread(registry.catalog_at, Path(model["path"]))
    return Realized(
        model_id=model_id,
        target=model["target"],
        matured_before=(now - horizon).isoformat(),
        overall=_measure(y, p),
        validation=summary["metrics"],
        segments={
            s: _measure(y[segments == s], p[segments == s]) for s in sorted(set(segments) - {""})
        },
        preceding_reasons=_preceding_reasons(rows, y, catalog),
    )


async def _not_yet_churned(
    conn: asyncpg.Connection, rows: list[asyncpg.Record]
) -> list[asyncpg.Record]:
    churned = {
        r["account_id"]: r["first"]
        for r in await conn.fetch(
            "SELECT account_id, min(occurred_at) AS first FROM outcomes "
            "WHERE kind = $2 AND account_id = ANY($1::text[]) GROUP BY account_id",
            sorted({r["account_id"] for r in rows}),
            datasets.CHURNED,
        )
    }
    return [
        r for r in rows if r["account_id"] not in churned or churned[r["account_id"]] > r["as_of"]
    ]


def _measure(y: np.ndarray, p: np.ndarray) -> Measures:
    measured = metrics.metrics(y, p)
    return Measures(
        n=int(measured["n"] or 0),
        positives=int(y.sum()),
        auc=measured["auc"],
        brier=measured["brier"],
        lift_at_10=measured["lift_at_10"],
        positive_rate=measured["positive_rate"],
        calibration=metrics.reliability(y, p),
    )


def _preceding_reasons(
    rows: list[asyncpg.Record], y: np.ndarray, catalog: Catalog | None
) -> list[PrecedingReason]:
    """For accounts where the label came true, which reason led their last matured score, by
    feature, against how often the same reason led for accounts where it did not."""
    last: dict[str, tuple[datetime, int]] = {}
    for i, r in enumerate(rows):
        if r["account_id"] not in last or r["as_of"] > last[r["account_id"]][0]:
            last[r["account_id"]] = (r["as_of"], i)
    led: dict[bool, Counter[str]] = defaultdict(Counter)
    for _, i in last.values():
        reasons = history.split_reasons(orjson.loads(rows[i]["reasons"]))["reasons"]
        if reasons:
            led[bool(y[i])][reasons[0]["feature"]] += 1
    happened, not_happened = sum(led[True].values()), sum(led[False].values())
    features = sorted(
        set(led[True]) | set(led[False]), key=lambda f: (-led[True][f], -led[False][f], f)
    )
    return [
        PrecedingReason(
            feature=feature,
            text=catalog.feature(feature).words
            if catalog is not None and feature in catalog.features
            else feature,
            happened=led[True][feature],
            happened_share=led[True][feature] / happened if happened else None,
            did_not_happen=led[False][feature],
            did_not_happen_share=led[False][feature] / not_happened if not_happened else None,
        )
        for feature in features
    ]


async def evaluate_active(
    conn: asyncpg.Connection, *, now: datetime, rule: drift.Rule
) -> JSONObject:
    """Realized performance and drift of every active model; drift by the rule is recorded as a
    finding."""
    evaluations: JSONObject = {}
    for active in await registry.all_active(conn):
        result = await realized(conn, model_id=active.model_id, now=now)
        entry: JSONObject = {"model_id": active.model_id, "realized": dict(result["overall"])}
        try:
            measured = await drift.measure(conn, model_id=active.model_id, rule=rule)
        except errors.Conflict as exc:
            entry["drift"] = {"skipped": exc.detail}
        else:
            entry["drift"] = {
                "score_psi": measured["score_psi"],
                "drifted": measured["drifted"],
                "batch_as_of": measured["batch_as_of"],
                "accounts": measured["accounts"],
                "drift": measured["drift"],
            }
            if measured["drift"]:
                thresholds = {"threshold": rule.threshold, "min_importance": rule.min_importance}
                await conn.execute(
                    "INSERT INTO findings (kind, target, model_id, details) "
                    "VALUES ('drift', $1, $2, $3::jsonb)",
                    active.target,
                    active.model_id,
                    orjson.dumps(entry["drift"] | thresholds).decode(),
                )
                await insights.record(
                    conn,
                    routing.Raised(
                        kind="drift",
                        target=active.target,
                        model_id=active.model_id,
                        details=entry["drift"] | thresholds,
                    ),
                    routing.Profile(),
                )
        evaluations[active.target] = entry
    return {"evaluations": evaluations}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The worker's latest evaluation of the active models: when, and per target what it found
    (the model, its realized performance with calibration, its drift or why it was skipped)."""

    at: datetime
    targets: dict[str, JSONObject]


async def latest_evaluation(conn: asyncpg.Connection) -> Evaluation | None:
    """The latest evaluation the worker finished (the `evaluate` job, every
    CUSTINTEL_EVALUATE_EVERY_HOURS): what pages show, since measuring drift computes the
    features of every account of the latest batch scoring."""
    row = await conn.fetchrow(
        "SELECT finished_at, result FROM jobs WHERE kind = 'evaluate' AND status = 'succeeded' "
        "ORDER BY finished_at DESC LIMIT 1"
    )
    if row is None:
        return None
    result = orjson.loads(row["result"]) if isinstance(row["result"], str) else row["result"]
    return Evaluation(row["finished_at"], dict(result.get("evaluations") or {}))


def handler(rule: drift.Rule) -> jobs.Handler:
    async def evaluate_job(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        now = await conn.fetchval("SELECT now()")
        return await evaluate_active(conn, now=now, rule=rule)

    return evaluate_job
