"""The score history: every score given "now" (on request or by batch scoring), with its model
and reasons, appended. It is what realized performance, drift, insights and uplift read. A score
asked for as of a past moment is a question, not a new fact, and is not stored here."""

from __future__ import annotations

import asyncpg
import orjson

from app.ml import scoring

SCORE_COLUMNS = (
    "account_id",
    "target",
    "model_id",
    "segment",
    "as_of",
    "probability",
    "band",
    "percentile",
    "margin",
    "reasons",
    "base_value",
    "other_contribution",
)


async def store(conn: asyncpg.Connection, scores: list[scoring.Score]) -> None:
    """Append scores to the history."""
    await conn.copy_records_to_table(
        "scores",
        columns=SCORE_COLUMNS,
        records=[
            (
                s.account_id,
                s.target,
                s.model_id,
                s.segment,
                s.as_of,
                s.probability,
                s.band,
                s.percentile,
                s.margin,
                orjson.dumps(s.reasons).decode(),  # orjson writes dataclasses as objects
                s.base_value,
                s.other_contribution,
            )
            for s in scores
        ],
    )
