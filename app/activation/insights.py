"""Insights: what is worth acting on, raised from scores and findings, routed
(app.activation.routing) and queued for delivery (app.activation.deliveries) in the same
transaction; and the inbox that reads and updates them.

Raised (each at most once per account, target and kind within CUSTINTEL_INSIGHT_COOLDOWN_HOURS):
- band_entered: a score lands in one of CUSTINTEL_INSIGHT_BANDS (default high) that the
  account's previous score of that target was not in (or it had none): churn risk became high,
  expansion propensity became high;
- score_rise: the probability rose by at least CUSTINTEL_INSIGHT_MIN_RISE since the previous
  score;
- drift: a drift finding of the evaluation job (no account);
- detractor: an NPS answer of 0 to 6 from an account whose latest churn score is medium or high
  (once per answer, raised by the worker within a scheduler tick of the answer's arrival; its
  score, comment and the churn score's reasons come with it);
- theme_jump: a theme of what customers write whose texts of the last week jumped across
  accounts (app.voc.themes.jumps; no account: for a product owner), with example verbatims;
  at most once per theme within the cooldown.
Every insight is routed when it is recorded, in the same transaction: the rules that matched,
whether the account is in a rule's holdout, and the destinations chosen are stored with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from pydantic import TypeAdapter

from app.activation import deliveries, routing
from app.governance import audit
from app.ml import datasets, scoring
from app.platform import db, errors
from app.platform.settings import Settings
from app.schemas.insights import Insight, InsightUpdate
from app.schemas.signals import EventIn
from app.signals import ingest

NEXT_STEPS = {
    ("churn", "band_entered"): "Reach out to the account within a week about its leading reason.",
    ("churn", "score_rise"): "Check what changed: churn risk rose sharply since the last score.",
    ("expansion", "band_entered"): "Open an expansion conversation: usage points to more need.",
    ("expansion", "score_rise"): "Watch for an expansion opportunity: propensity rose sharply.",
    ("churn", "detractor"): "Call the account about its NPS comment: it is a detractor while its "
    "churn risk is up.",
    ("advocacy", "band_entered"): "Ask for a referral, review or reference: the account is among "
    "the likeliest to act as an advocate. Log the ask as an advocacy_asked event.",
    ("advocacy", "score_rise"): "Consider asking for a referral or review: advocacy propensity "
    "rose sharply. Log the ask as an advocacy_asked event.",
}
THEME_JUMP_STEP = (
    "Read the example texts: customers across accounts are suddenly writing about this theme; "
    "check for an incident or a release behind it."
)
DETRACTOR_LOOKBACK = timedelta(days=1)  # answers received this recently are looked at
_DETRACTOR_LOCK = 0x7E47_0002  # one worker raises them at a time
_THEME_JUMP_LOCK = 0x7E47_0004

_DETRACTORS = """
    SELECT e.event_id, e.account_id, e.contact_id, e.value, e.text, e.occurred_at, s.model_id,
           s.segment, s.probability, s.band, s.reasons, s.as_of, a.owner_email, a.plan,
           a.segment AS account_segment, a.traits
    FROM events e
    JOIN LATERAL (
        SELECT model_id, segment, probability, band, reasons, as_of FROM scores
        WHERE account_id = e.account_id AND target = 'churn'
        ORDER BY as_of DESC, scored_at DESC LIMIT 1) s ON true
    JOIN accounts a ON a.account_id = e.account_id
    WHERE e.type = 'nps_answered' AND e.received_at > now() - $1::interval
      AND e.occurred_at > now() - $1::interval
      AND e.value >= 0 AND e.value <= $2 AND s.band = ANY($3::text[])
      AND NOT EXISTS (
          SELECT 1 FROM insights i
          WHERE i.account_id = e.account_id AND i.target = 'churn' AND i.kind = 'detractor'
            AND (i.details ->> 'event_id' = e.event_id OR i.created_at > now() - $4::interval))
    ORDER BY e.received_at, e.event_id"""
DRIFT_STEP = "Review the model: its population has shifted; retrain or check the data feeds."


def next_step(target: str | None, kind: str) -> str:
    if kind == "drift":
        return DRIFT_STEP
    if kind == "theme_jump":
        return THEME_JUMP_STEP
    return NEXT_STEPS.get((target or "", kind), "Review the account's score and its reasons.")


async def record(
    conn: asyncpg.Connection, insight: routing.Raised, profile: routing.Profile
) -> str:
    insight_id = uuid.uuid4().hex
    decision = await routing.route(conn, insight, profile)
    await conn.execute(
        """
        INSERT INTO insights (insight_id, kind, target, account_id, owner_email, model_id,
                              segment, probability, band, previous_probability, previous_band,
                              reasons, next_step, details, status, decision)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, $13, $14::jsonb,
                'open', $15::jsonb)
        """,
        insight_id,
        insight.kind,
        insight.target,
        insight.account_id,
        profile.owner_email,
        insight.model_id,
        insight.segment,
        insight.probability,
        insight.band,
        insight.previous_probability,
        insight.previous_band,
        orjson.dumps(insight.reasons).decode(),
        next_step(insight.target, insight.kind),
        orjson.dumps(insight.details).decode(),
        orjson.dumps(decision).decode(),
    )
    payload = deliveries.event(
        {
            "insight_id": insight_id,
            "owner_email": profile.owner_email,
            "next_step": next_step(insight.target, insight.kind),
            **asdict(insight),  # every field, null where it does not apply (drift)
            "decision": decision,
        }
    )
    await deliveries.enqueue(conn, insight_id=insight_id, payload=payload, decision=decision)
    return insight_id


async def from_scores(
    conn: asyncpg.Connection, settings: Settings, scores: Sequence[scoring.Score]
) -> int:
    """Raise the insights a batch of new scores calls for (in the caller's transaction)."""
    if not scores:
        return 0
    by_target: dict[str, list[scoring.Score]] = {}
    for s in scores:
        by_target.setdefault(s.target, []).append(s)
    raised = 0
    cooldown = timedelta(hours=settings.insight_cooldown_hours)
    for target, batch in by_target.items():
        ids = [s.account_id for s in batch]
        as_of = min(s.as_of for s in batch)
        previous = {
            r["account_id"]: r
            for r in await conn.fetch(
                "SELECT DISTINCT ON (account_id) account_id, probability, band FROM scores "
                "WHERE target = $1 AND account_id = ANY($2::text[]) AND as_of < $3 "
                "ORDER BY account_id, as_of DESC, scored_at DESC",
                target,
                ids,
                as_of,
            )
        }
        recent = {
            (r["account_id"], r["kind"])
            for r in await conn.fetch(
                "SELECT account_id, kind FROM insights WHERE target = $1 "
                "AND account_id = ANY($2::text[]) AND created_at > now() - $3::interval",
                target,
                ids,
                cooldown,
            )
        }
        # Asks are limited: an account whose people were asked to advocate lately is not asked
        # again (CUSTINTEL_ADVOCACY_ASK_MIN_DAYS).
        asked = set()
        if target == datasets.ADVOCACY:
            asked = {
                r[0]
                for r in await conn.fetch(
                    "SELECT DISTINCT account_id FROM events WHERE type = $1 "
                    "AND account_id = ANY($2::text[]) AND occurred_at > $3",
                    datasets.ADVOCACY_ASKED,
                    ids,
                    max(s.as_of for s in batch) - timedelta(days=settings.advocacy_ask_min_days),
                )
            }
        profiles = {
            r["account_id"]: routing.Profile(
                r["owner_email"], r["segment"], r["plan"], orjson.loads(r["traits"] or "{}")
            )
            for r in await conn.fetch(
                "SELECT account_id, owner_email, segment, plan, traits FROM accounts "
                "WHERE account_id = ANY($1::text[])",
                ids,
            )
        }
        for s in batch:
            if s.account_id in asked:
                continue
            before = previous.get(s.account_id)
            kinds = []
            if s.band in settings.insight_bands and (before is None or before["band"] != s.band):
                kinds.append("band_entered")
            if before is not None and s.probability - before["probability"] >= (
                settings.insight_min_rise
            ):
                kinds.append("score_rise")
            for kind in kinds:
                if (s.account_id, kind) in recent:
                    continue
                await record(
                    conn,
                    routing.Raised(
                        kind=kind,
                        target=target,
                        account_id=s.account_id,
                        model_id=s.model_id,
                        segment=s.segment,
                        probability=s.probability,
                        band=s.band,
                        previous_probability=before["probability"] if before else None,
                        previous_band=before["band"] if before else None,
                        reasons=[
                            {"feature": r.feature, "contribution": r.contribution, "text": r.text}
                            for r in s.reasons
                        ],
                        details={"as_of": s.as_of.isoformat(), "percentile": s.percentile},
                    ),
                    profiles.get(s.account_id, routing.Profile()),
                )
                recent.add((s.account_id, kind))
                raised += 1
    return raised


async def from_detractors(conn: asyncpg.Connection, settings: Settings) -> int:
    """Raise a `detractor` insight for each NPS answer of 0-6 given and received lately (an
    imported history of old answers raises none) from an account
    whose latest churn score is medium or high (once per answer, and at most once per account
    within the cooldown); how many were raised."""
    from app.voc import surveys  # the NPS scale lives there

    raised = 0
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _DETRACTOR_LOCK):
            return 0
        rows = await conn.fetch(
            _DETRACTORS,
            DETRACTOR_LOOKBACK,
            surveys.SCALES[surveys.NPS][3],
            ["medium", "high"],
            timedelta(hours=settings.insight_cooldown_hours),
        )
        seen: set[str] = set()
        for r in rows:
            if r["account_id"] in seen:  # one per account within the cooldown
                continue
            seen.add(r["account_id"])
            stored = orjson.loads(r["reasons"])
            await record(
                conn,
                routing.Raised(
                    kind="detractor",
                    target="churn",
                    account_id=r["account_id"],
                    model_id=r["model_id"],
                    segment=r["segment"],
                    probability=r["probability"],
                    band=r["band"],
                    reasons=[
                        {k: x[k] for k in ("feature", "contribution", "text")}
                        for x in stored
                        if x.get("kind", scoring.HEADLINE) == scoring.HEADLINE
                    ],
                    details={
                        "event_id": r["event_id"],
                        "contact_id": r["contact_id"],
                        "nps": r["value"],
                        "comment": r["text"],
                        "answered_at": r["occurred_at"].isoformat(),
                        "scored_as_of": r["as_of"].isoformat(),
                    },
                ),
                routing.Profile(
                    r["owner_email"],
                    r["account_segment"],
                    r["plan"],
                    orjson.loads(r["traits"] or "{}"),
                ),
            )
            raised += 1
    return raised


async def from_theme_jumps(conn: asyncpg.Connection, settings: Settings, *, now: Any) -> int:
    """Raise a `theme_jump` insight for each theme whose last week's texts up to `now` jumped
    (app.voc.themes.jumps), unless one was raised for it within the cooldown; how many were."""
    from app.voc import themes

    raised = 0
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _THEME_JUMP_LOCK):
            return 0
        recent = {
            r[0]
            for r in await conn.fetch(
                "SELECT details ->> 'theme_id' FROM insights "
                "WHERE kind = 'theme_jump' AND created_at > now() - $1::interval",
                timedelta(hours=settings.insight_cooldown_hours),
            )
        }
        for jump in await themes.jumps(conn, now=now):
            if jump["theme_id"] in recent:
                continue
            await record(conn, routing.Raised(kind="theme_jump", details=jump), routing.Profile())
            raised += 1
    return raised


_INSIGHT_JSON = ("reasons", "details", "decision")


def _insight(row: asyncpg.Record) -> Insight:
    data = dict(row)
    for key in _INSIGHT_JSON:
        data[key] = orjson.loads(data[key])
    return Insight.model_validate(data)


_LISTED = """
    SELECT * FROM insights
    WHERE ($1::text IS NULL OR owner_email = $1) AND ($2::text IS NULL OR target = $2)
      AND ($3::text IS NULL OR band = $3) AND ($4::text IS NULL OR kind = $4)
      AND ($5::text IS NULL OR status = $5)
      AND ($6::timestamptz IS NULL OR created_at >= $6)
      AND ($7::timestamptz IS NULL OR created_at <= $7)
      AND ($9::text IS NULL OR account_id = $9)
      AND (NOT $10 OR status <> 'resolved')
    ORDER BY created_at DESC, insight_id LIMIT $8"""
_ACCOUNT_LISTED = db.for_one(_LISTED, 9, "account_id")


async def list_insights(
    conn: asyncpg.Connection,
    *,
    owner: str | None = None,
    target: str | None = None,
    band: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    account_id: str | None = None,
    open_only: bool = False,
) -> list[Insight]:
    """Newest first (`open_only`: open or acknowledged, not resolved)."""
    rows = await conn.fetch(
        _LISTED if account_id is None else _ACCOUNT_LISTED,
        owner,
        target,
        band,
        kind,
        status,
        since,
        until,
        limit,
        account_id,
        open_only,
    )
    return [_insight(r) for r in rows]


async def update_insight(
    conn: asyncpg.Connection, insight_id: str, *, update: InsightUpdate
) -> Insight:
    row = await conn.fetchrow(
        "UPDATE insights SET status = coalesce($2, status), note = coalesce($3, note), "
        "updated_at = now() WHERE insight_id = $1 RETURNING *",
        insight_id,
        update.status,
        update.note,
    )
    if row is None:
        raise errors.NotFound(f"No insight {insight_id!r}.")
    return _insight(row)


# --- acting on an insight from the console ------------------------------------------------------

_events_in = TypeAdapter(EventIn)
ACTION_TAKEN = "action_taken"  # the signal vocabulary's event for something a person did
ACTION_KINDS = ("call", "email", "meeting", "offer", "escalation")
NOTE_CHARS = 2000


async def act(
    conn: asyncpg.Connection,
    insight_id: str,
    *,
    owners: Sequence[str] | None,
    actor: str,
    by: str,
    status: str | None,
    action: str | None,
    note: str | None,
    ctx: ingest.Context,
) -> Insight:
    """Acknowledge or resolve an insight, or log what was done about it, in the caller's
    transaction. A logged action is stored as an `action_taken` event of the account (its kind,
    the insight it answered, who took it, the note), so that the closed loop and the holdouts
    can measure whether acting helped. `owners`: the owners whose insights this person may act
    on (None: all); anyone else's is a 404, as if it did not exist."""
    row = await conn.fetchrow(
        "SELECT insight_id, account_id, owner_email FROM insights WHERE insight_id = $1 FOR UPDATE",
        insight_id,
    )
    if row is None or (owners is not None and row["owner_email"] not in owners):
        raise errors.NotFound(f"No insight {insight_id!r}.")
    if note is not None:
        note = note.replace("\x00", "").strip()[:NOTE_CHARS] or None
    if action is not None:
        if action not in ACTION_KINDS:
            raise errors.InvalidPayload(f"An action is one of {', '.join(ACTION_KINDS)}.")
        if row["account_id"] is None:
            raise errors.Conflict("This insight names no account to log an action against.")
        event = _events_in.validate_python(
            {
                "event_id": f"action-{uuid.uuid4().hex}",
                "type": ACTION_TAKEN,
                "source": "console",
                "occurred_at": ctx.now.isoformat(),
                "account_id": row["account_id"],
                "properties": {"kind": action, "insight_id": insight_id, "by": by, "note": note},
            }
        )
        [result] = (await ctx.ingest_events(conn, [(0, event)])).results
        if result.status == "error":
            raise errors.Conflict(result.detail or "The action could not be stored.")
    if status not in (None, "open", "acknowledged", "resolved"):
        raise errors.InvalidPayload("status is open, acknowledged or resolved.")
    # The insight keeps the latest note, saying what was done when an action was logged.
    kept = f"{action}: {note}" if action and note else action or note
    updated = await update_insight(
        conn, insight_id, update=InsightUpdate.model_validate({"status": status, "note": kept})
    )
    await audit.record(
        conn,
        actor=actor,
        action=f"insight.{status}" if status else "insight.action_logged",
        target=insight_id,
        details={"action": action} if action else {},
    )
    return updated
