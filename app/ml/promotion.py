"""The promotion gate, activation and rollback: which model scores a target, and why.

A new model is compared with the active one of its target on the same most recent out-of-time
window: the accounts alive at as_of - horizon, labelled by what happened in the horizon after.
It replaces the active model only when its AUC is not worse by more than a tolerance and its
calibration error is not worse by more than another; the comparison is stored either way, and
every status change says why (`status_reason`) and what it replaced (`replaced_model_id`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, TypedDict

import asyncpg
import numpy as np
import orjson

from app.governance import audit
from app.ml import baselines, datasets, features, metrics, registry, serving
from app.platform import errors
from app.platform.jsonbody import JSONObject


@dataclass
class Window:
    at: datetime
    horizon: timedelta
    keys: list[tuple[str, datetime]]
    labels: np.ndarray

    def describe(self) -> JSONObject:
        return {
            "at": self.at.isoformat(),
            "horizon_days": self.horizon.days,
            "accounts": len(self.keys),
            "positives": int(self.labels.sum()),
        }


async def recent_window(
    conn: asyncpg.Connection,
    *,
    target: str,
    label: datasets.AnyLabel,
    as_of: datetime,
    horizon: timedelta,
) -> Window:
    at = as_of - horizon
    exclude = datasets.excluded_outcomes(target)
    keys = [(a, at) for a in await datasets.population(conn, at=at, exclude_kinds=exclude)]
    labels = await datasets.labels(conn, label, keys=keys, horizon=horizon) if keys else np.zeros(0)
    return Window(at, horizon, keys, labels)


def probabilities(loaded: registry.Loaded, frame: features.Frame) -> np.ndarray:
    """Calibrated probabilities of every row, each through the model that serves its segment."""
    x = loaded.matrix(frame)
    out = np.zeros(len(frame.keys))
    for name, rows in loaded.served(frame.segments).items():
        model = loaded.models[name]
        out[rows] = model.probability(model.margin(x[rows]))
    return out


def calibration_error(y: np.ndarray, p: np.ndarray) -> float | None:
    """Expected calibration error over deciles: mean |predicted - observed|, weighted by n."""
    table = metrics.reliability(y, p)
    n = sum(b["n"] for b in table)
    return sum(abs(b["predicted"] - b["observed"]) * b["n"] for b in table) / n if n else None


class Measured(TypedDict):
    """A model's measures on the recent window (stored as JSON with the comparison)."""

    auc: float | None
    brier: float | None
    calibration_error: float | None
    lift_at_10: float | None
    n: int


@dataclass(frozen=True)
class Comparison:
    """A candidate measured against the active model on the same recent window."""

    active_id: str
    promoted: bool
    reason: str
    window: JSONObject
    candidate_metrics: Measured
    active_metrics: Measured


MIN_AUC = 0.55  # a held-out AUC at or below this is chance: never activated automatically
CHANCE = 0.5  # ... nor one whose 95% interval reaches this
BASELINE_TOLERANCE = 0.01  # how far below its best simple peer a model is before its reason says so


@dataclass(frozen=True)
class Verdict:
    """What the gate decided for a new model: its status, why, the model it would replace (the
    target's active model when it was compared), and the comparison when there was one."""

    status: Literal["active", "candidate"]
    reason: str
    replaced: str | None = None
    comparison: Comparison | None = None


async def evaluate(conn: asyncpg.Connection, loaded: registry.Loaded, window: Window) -> Measured:
    frame = await features.compute(conn, loaded.catalog, window.keys)
    p = await asyncio.to_thread(probabilities, loaded, frame)
    measured = metrics.metrics(window.labels, p)
    return Measured(
        auc=measured["auc"],
        brier=measured["brier"],
        calibration_error=calibration_error(window.labels, p),
        lift_at_10=measured["lift_at_10"],
        n=int(measured["n"] or 0),
    )


def decide(
    candidate: Measured,
    active: Measured,
    *,
    auc_tolerance: float,
    calibration_tolerance: float,
) -> tuple[bool, str]:
    c_auc, a_auc = candidate["auc"], active["auc"]
    if c_auc is None or a_auc is None:
        return False, "no comparison possible: the recent window has no positive or no negative"
    c_cal, a_cal = candidate["calibration_error"], active["calibration_error"]
    assert c_cal is not None and a_cal is not None  # measured whenever the AUC is
    auc_ok = c_auc >= a_auc - auc_tolerance
    cal_ok = c_cal <= a_cal + calibration_tolerance
    verdict = "promoted" if auc_ok and cal_ok else "kept as a candidate"
    return auc_ok and cal_ok, (
        f"{verdict}: AUC {c_auc:.3f} against {a_auc:.3f} (may be lower by {auc_tolerance}), "
        f"calibration error {c_cal:.3f} against {a_cal:.3f} (may be higher by "
        f"{calibration_tolerance})"
    )


async def gate(
    conn: asyncpg.Connection,
    *,
    candidate: registry.Loaded,
    target: str,
    label: datasets.AnyLabel,
    as_of: datetime,
    horizon: timedelta,
    auc_tolerance: float,
    calibration_tolerance: float,
) -> Verdict:
    """The gate's verdict on a new model of `target`. A model no better than chance on its own
    held-out rows (AUC at most MIN_AUC, or a 95% interval reaching CHANCE) is never activated
    automatically, not even as its target's first. Otherwise the first model of a target serves,
    and a later one replaces the active model only when it does at least as well on the recent
    window. A model more than BASELINE_TOLERANCE below its best simple peer is still judged so
    (the reason says how far below): the peer is measured, never served, and a target is never
    left without a model that beats chance."""
    measured = candidate.manifest["metrics"]
    held_out, interval = measured.get("auc"), measured.get("auc_interval")
    try_next = (
        "try a longer history, another horizon or label, or check that the outcomes are "
        "recorded. POST /v1/models/{id}/activate can still activate it."
    )
    if held_out is None or held_out <= MIN_AUC:
        shown = "unknown" if held_out is None else f"{held_out:.3f}"
        return Verdict(
            "candidate",
            f"kept as a candidate: its held-out AUC ({shown}) is not above {MIN_AUC}, no better "
            f"than chance; {try_next}",
        )
    if interval is not None and interval[0] <= CHANCE:
        return Verdict(
            "candidate",
            f"kept as a candidate: its held-out AUC ({held_out:.3f}) is above {MIN_AUC}, but its "
            f"95% interval ({interval[0]:.3f} to {interval[1]:.3f}, "
            f"{measured.get('valid_positives')} positives held out) reaches {CHANCE}: not "
            f"clearly better than chance; {try_next}",
        )
    peer = baselines.best(candidate.manifest["metrics"].get("baselines") or {})
    below = ""
    if peer is not None and held_out < peer[1] - BASELINE_TOLERANCE:
        below = (
            f"its held-out AUC ({held_out:.3f}) is more than {BASELINE_TOLERANCE} below the "
            f"{peer[0].replace('_', ' ')} baseline's ({peer[1]:.3f}) on the same rows: try a "
            "longer history, more snapshots (a smaller snapshot_every_days) or another horizon"
        )
    active = await registry.active(conn, target)
    if active is None:
        # Better than chance and the best this training could serve: a target is never left
        # without scores, bands and insights while a peer is only measured.
        return Verdict("active", "the first model of its target" + (f"; {below}" if below else ""))
    try:
        current = await asyncio.to_thread(registry.load, active.path)
    except registry.DamagedModel:
        reason = f"promoted: the active model {active.model_id}'s files are damaged"
        return Verdict("active", reason, active.model_id)
    window = await recent_window(conn, target=target, label=label, as_of=as_of, horizon=horizon)
    ours, theirs = await evaluate(conn, candidate, window), await evaluate(conn, current, window)
    promoted, reason = decide(
        ours, theirs, auc_tolerance=auc_tolerance, calibration_tolerance=calibration_tolerance
    )
    if below:
        reason += f"; {below}"
    comparison = Comparison(current.model_id, promoted, reason, window.describe(), ours, theirs)
    return Verdict("active" if promoted else "candidate", reason, current.model_id, comparison)


async def record_comparison(
    conn: asyncpg.Connection, *, target: str, candidate_id: str, comparison: Comparison
) -> None:
    await conn.execute(
        "INSERT INTO model_comparisons (target, candidate_id, active_id, promoted, reason, "
        '"window", candidate_metrics, active_metrics) '
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8::jsonb)",
        target,
        candidate_id,
        comparison.active_id,
        comparison.promoted,
        comparison.reason,
        orjson.dumps(comparison.window).decode(),
        orjson.dumps(comparison.candidate_metrics).decode(),
        orjson.dumps(comparison.active_metrics).decode(),
    )


async def activate(
    conn: asyncpg.Connection, *, model_id: str, target: str, reason: str, actor: str | None
) -> str | None:
    """Make model_id the active model of target (in the caller's transaction); the previous
    active model is retired and recorded as replaced. Returns the replaced model's id."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", target)
    current = await registry.active(conn, target)
    previous = current.model_id if current is not None and current.model_id != model_id else None
    if previous is not None:
        await conn.execute(
            "UPDATE models SET status = 'retired', status_reason = $2 WHERE model_id = $1",
            previous,
            f"replaced by {model_id}",
        )
    await conn.execute(
        "UPDATE models SET status = 'active', activated_at = now(), status_reason = $2, "
        "replaced_model_id = coalesce($3, replaced_model_id) WHERE model_id = $1",
        model_id,
        reason,
        previous,
    )
    if actor is not None:
        await audit.record(
            conn,
            actor=actor,
            action="model.activated",
            target=model_id,
            details={"target": target, "replaced": previous, "reason": reason},
        )
    return previous


async def rollback(conn: asyncpg.Connection, *, target: str, actor: str) -> str:
    """Put back the model the active one replaced (in the caller's transaction); returns its
    id."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", target)
    current = await registry.active(conn, target)
    if current is None:
        raise errors.NotFound(f"No active model for target {target!r}.")
    if current.replaced_model_id is None:
        raise errors.Conflict(
            f"The active model {current.model_id} replaced none: there is nothing to roll back to."
        )
    restored = current.replaced_model_id
    await conn.execute(
        "UPDATE models SET status = 'retired', status_reason = $2 WHERE model_id = $1",
        current.model_id,
        f"rolled back by {actor}",
    )
    await conn.execute(
        "UPDATE models SET status = 'active', activated_at = now(), status_reason = $2 "
        "WHERE model_id = $1",
        restored,
        f"restored by {actor}, rolling back {current.model_id}",
    )
    await audit.record(
        conn,
        actor=actor,
        action="model.rolled_back",
        target=restored,
        details={"target": target, "retired": current.model_id},
    )
    return restored


async def activate_by_hand(
    conn: asyncpg.Connection, models: serving.Models, *, model_id: str, actor: str
) -> None:
    """An operator's activation, whatever the gate said: the model's files are verified first
    (DamagedModel, 409, and nothing moves), then it becomes active (audited)."""
    record = await registry.located(conn, model_id)
    await models.load(model_id, record.path)
    async with conn.transaction():
        await activate(
            conn,
            model_id=model_id,
            target=record.target,
            reason=f"activated by {actor}",
            actor=actor,
        )


async def roll_back_checked(
    conn: asyncpg.Connection, models: serving.Models, *, target: str, actor: str
) -> str:
    """rollback() once the files of the model it would put back are verified; its id."""
    previous = await registry.replaced_by_active(conn, target)
    if previous is not None:
        await models.load(previous.model_id, previous.path)
    async with conn.transaction():
        return await rollback(conn, target=target, actor=actor)
