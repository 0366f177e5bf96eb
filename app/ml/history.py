"""The score history: every score given "now" (on request or by batch scoring), with its model
and reasons, appended. It is what realized performance, drift, insights and uplift read. A score
asked for as of a past moment is a question, not a new fact, and is not stored here."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import orjson

from app.ml import scoring
from app.platform.jsonbody import JSONObject

log = logging.getLogger(__name__)

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


# Each account's latest score per target, and the one it replaced (the book's "since the last
# score"); a score for the same moment as the latest replaces it without becoming "previous".
# A churn score's value at risk (MRR x probability) is what the book ranks by.
_LATEST = """
    INSERT INTO latest_scores AS l
        (account_id, target, model_id, as_of, probability, band, reasons, at_risk)
    SELECT DISTINCT ON (s.account_id, s.target) s.*,
           CASE WHEN s.target = 'churn'
                THEN coalesce(a.mrr, 0)::float8 * s.probability ELSE 0 END
    FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[], $6::text[],
                $7::jsonb[]) AS s(account_id, target, model_id, as_of, probability, band, reasons)
    LEFT JOIN accounts a ON a.account_id = s.account_id
    ORDER BY s.account_id, s.target, s.as_of DESC
    ON CONFLICT (account_id, target) DO UPDATE SET
        previous_as_of = CASE WHEN excluded.as_of > l.as_of THEN l.as_of
                              ELSE l.previous_as_of END,
        previous_probability = CASE WHEN excluded.as_of > l.as_of THEN l.probability
                                    ELSE l.previous_probability END,
        previous_band = CASE WHEN excluded.as_of > l.as_of THEN l.band ELSE l.previous_band END,
        model_id = excluded.model_id, as_of = excluded.as_of,
        probability = excluded.probability, band = excluded.band, reasons = excluded.reasons,
        at_risk = excluded.at_risk
    WHERE excluded.as_of >= l.as_of"""


async def store(conn: asyncpg.Connection, scores: list[scoring.Score]) -> None:
    """Append scores to the history, and keep each account's latest per target."""
    if not scores:
        return
    # orjson writes dataclasses as objects; each says its kind
    reasons = [orjson.dumps(s.reasons + s.counter_reasons + s.context).decode() for s in scores]
    async with conn.transaction():
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
                    kept,
                    s.base_value,
                    s.other_contribution,
                )
                for s, kept in zip(scores, reasons, strict=True)
            ],
        )
        await conn.execute(
            _LATEST,
            [s.account_id for s in scores],
            [s.target for s in scores],
            [s.model_id for s in scores],
            [s.as_of for s in scores],
            [s.probability for s in scores],
            [s.band for s in scores],
            reasons,
        )


def split_reasons(stored: list[JSONObject]) -> dict[str, list[JSONObject]]:
    """A stored score's reasons as the API lists them: reasons, counter_reasons and context
    (scores stored before the kinds existed have headline reasons only)."""
    lists: dict[str, list[JSONObject]] = {"reasons": [], "counter_reasons": [], "context": []}
    key = {scoring.HEADLINE: "reasons", scoring.COUNTER: "counter_reasons"}
    for reason in stored:
        lists[key.get(reason.get("kind", scoring.HEADLINE), "context")].append(reason)
    return lists


FLUSH_SECONDS = 0.5
FLUSH_ROWS = 2000


class Buffer:
    """Scores given on request, written to the history after their response so that no request
    waits on it: buffered and written in one COPY every FLUSH_SECONDS (or FLUSH_ROWS), and at
    shutdown (close)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._unsaved: list[scoring.Score] = []
        self._pending: set[asyncio.Task[None]] = set()

    def keep(self, scores: list[scoring.Score]) -> None:
        if not scores:
            return
        self._unsaved.extend(scores)
        if len(self._unsaved) >= FLUSH_ROWS or not self._pending:
            delay = 0.0 if len(self._unsaved) >= FLUSH_ROWS else FLUSH_SECONDS
            task = asyncio.get_running_loop().create_task(self._flush_later(delay))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.flush()

    async def flush(self) -> None:
        scores, self._unsaved = self._unsaved, []
        if not scores:
            return
        try:
            async with self._pool.acquire() as conn:
                await store(conn, scores)
        except Exception:
            log.exception("storing scores failed", extra={"scores": len(scores)})

    async def close(self) -> None:
        await asyncio.gather(*self._pending, return_exceptions=True)
        await self.flush()
