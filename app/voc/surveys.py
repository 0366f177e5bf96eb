"""Survey metrics, computed exactly from the answers, with counts and 95% intervals.

- NPS from `nps_answered` (0 to 10): promoters answer 9 or 10, detractors 0 to 6; NPS is the
  percentage of promoters less that of detractors (-100 to 100). Its interval is the normal one
  of a difference of two shares of one trinomial sample.
- CSAT from `csat_answered` (1 to 5): the percentage of 4 and 5 (Wilson interval).
- CES from `ces_answered` (1 to 7): the mean (normal interval) and the
  percentage at 5 or more (Wilson interval).

Beside them, the sentiment mix of the texts written in the period (app.voc.enrich reads it).

The score is the event's `value`. An answer that is not a whole number on its scale is not
counted, and is counted as `ignored`, so a typo never moves a score. Aggregated in Postgres
over the answers in [since, until): overall, by UTC month, by segment (the account's current
segment) and per account.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.people import identities, timeline
from app.platform import db
from app.schemas.voc import (
    AccountVoc,
    Ces,
    Csat,
    MonthMetrics,
    MonthSentiment,
    Nps,
    SegmentMetrics,
    SentimentMix,
    SurveyMetrics,
    Verbatim,
)

NPS, CSAT, CES = "nps_answered", "csat_answered", "ces_answered"
# type: (lowest, highest, "high" from, "low" up to): promoters >= 9 and detractors <= 6;
# satisfied >= 4; easy >= 5.
SCALES: dict[str, tuple[int, int, int, int | None]] = {
    NPS: (0, 10, 9, 6),  # features.py reads the detractors' bound from here
    CSAT: (1, 5, 4, None),
    CES: (1, 7, 5, None),
}
Z = 1.959963984540054  # the 97.5% quantile of the standard normal

# One row per survey, UTC month and segment: the finest grain every summary adds up from, live
# here and kept by app.voc.monthly for the console.
_ANSWER_CELLS = """
    WITH scales (type, lo, hi, high, low) AS (
        SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::int[]))
    , answers AS (
        SELECT e.type, e.value, a.segment,
               to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month,
               (e.value IS NOT NULL AND e.value = trunc(e.value)
                AND e.value BETWEEN s.lo AND s.hi) AS valid,
               s.high, s.low
        FROM events e
        JOIN scales s ON s.type = e.type
        JOIN accounts a ON a.account_id = e.account_id
        WHERE e.type IN ('nps_answered', 'csat_answered', 'ces_answered')  -- ix_events_surveys
          AND e.occurred_at >= $6 AND e.occurred_at < $7
          AND ($8::text IS NULL OR a.segment = $8)
          AND ($9::text IS NULL OR e.account_id = $9))
    SELECT type, month, segment,
           count(*) FILTER (WHERE valid) AS n,
           count(*) FILTER (WHERE NOT valid) AS ignored,
           count(*) FILTER (WHERE valid AND value >= high) AS high,
           count(*) FILTER (WHERE valid AND value <= low) AS low,
           coalesce(sum(value) FILTER (WHERE valid), 0)::float8 AS total,
           coalesce(sum(value * value) FILTER (WHERE valid), 0)::float8 AS squares
    FROM answers
    GROUP BY type, month, segment
"""


_ACCOUNT_ANSWER_CELLS = db.for_one(_ANSWER_CELLS, 9, "e.account_id")


@dataclass
class Counts:
    n: int = 0
    ignored: int = 0
    high: int = 0
    low: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, other: Counts) -> None:
        self.n += other.n
        self.ignored += other.ignored
        self.high += other.high
        self.low += other.low
        self.total += other.total
        self.squares += other.squares


def wilson(successes: int, n: int) -> list[float] | None:
    """The Wilson score interval of a share, in percent."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / (1 + Z * Z / n)
    return [100 * max(0.0, centre - half), 100 * min(1.0, centre + half)]


def nps(c: Counts) -> Nps:
    value, interval = None, None
    if c.n:
        promoters, detractors = c.high / c.n, c.low / c.n
        score = promoters - detractors
        half = Z * math.sqrt(max(0.0, promoters + detractors - score * score) / c.n)
        value = 100 * score
        interval = [100 * max(-1.0, score - half), 100 * min(1.0, score + half)]
    return Nps(
        responses=c.n,
        promoters=c.high,
        passives=c.n - c.high - c.low,
        detractors=c.low,
        nps=value,
        interval=interval,
        ignored=c.ignored,
    )


def csat(c: Counts) -> Csat:
    return Csat(
        responses=c.n,
        satisfied=c.high,
        csat=100 * c.high / c.n if c.n else None,
        interval=wilson(c.high, c.n),
        ignored=c.ignored,
    )


def ces(c: Counts) -> Ces:
    mean = c.total / c.n if c.n else None
    interval = None
    if mean is not None and c.n > 1:
        variance = max(0.0, (c.squares - c.n * mean * mean) / (c.n - 1))
        half = Z * math.sqrt(variance / c.n)
        interval = [max(1.0, mean - half), min(7.0, mean + half)]
    return Ces(
        responses=c.n,
        mean=mean,
        mean_interval=interval,
        easy=c.high,
        easy_share=100 * c.high / c.n if c.n else None,
        easy_interval=wilson(c.high, c.n),
        ignored=c.ignored,
    )


def _measures(counts: dict[str, Counts]) -> dict[str, Nps | Csat | Ces]:
    return {
        "nps": nps(counts.get(NPS, Counts())),
        "csat": csat(counts.get(CSAT, Counts())),
        "ces": ces(counts.get(CES, Counts())),
    }


def metrics(counts: dict[str, Counts]) -> SurveyMetrics:
    """NPS, CSAT and CES from the counts of each survey's answers."""
    return SurveyMetrics.model_validate(_measures(counts))


@dataclass(frozen=True, slots=True)
class Summary:
    overall: SurveyMetrics
    by_month: list[MonthMetrics]  # oldest first
    by_segment: list[SegmentMetrics]


async def summarise(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None = None,
    account_id: str | None = None,
) -> Summary:
    """The answers in [since, until): overall, by month (oldest first) and by segment."""
    return fold(
        await answer_cells(conn, since=since, until=until, segment=segment, account_id=account_id)
    )


@dataclass(frozen=True, slots=True)
class AnswerCell:
    """The answers to one survey in one UTC month ('YYYY-MM') from one segment's accounts."""

    type: str
    month: str
    segment: str | None
    counts: Counts


async def answer_cells(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None = None,
    account_id: str | None = None,
) -> list[AnswerCell]:
    types = list(SCALES)
    rows = await conn.fetch(
        _ANSWER_CELLS if account_id is None else _ACCOUNT_ANSWER_CELLS,
        types,
        [SCALES[t][0] for t in types],
        [SCALES[t][1] for t in types],
        [SCALES[t][2] for t in types],
        [SCALES[t][3] for t in types],
        since,
        until,
        segment,
        account_id,
    )
    return [
        AnswerCell(
            r["type"],
            r["month"],
            r["segment"],
            Counts(r["n"], r["ignored"], r["high"], r["low"], r["total"], r["squares"]),
        )
        for r in rows
    ]


def fold(cells: Sequence[AnswerCell]) -> Summary:
    """Overall, by month (oldest first) and by segment, from the cells (counts add up)."""
    overall: dict[str, Counts] = {}
    months: dict[str, dict[str, Counts]] = {}
    segments: dict[str | None, dict[str, Counts]] = {}
    for c in cells:
        for into in (overall, months.setdefault(c.month, {}), segments.setdefault(c.segment, {})):
            into.setdefault(c.type, Counts()).add(c.counts)
    return Summary(
        overall=metrics(overall),
        by_month=[
            MonthMetrics.model_validate({"month": m, **_measures(months[m])})
            for m in sorted(months)
        ],
        by_segment=[
            SegmentMetrics.model_validate({"segment": s, **_measures(segments[s])})
            for s in sorted(segments, key=lambda s: (s is None, s or ""))
        ],
    )


_VERBATIMS = """
    SELECT e.event_id, type, occurred_at, contact_id, value, text, t.sentiment, t.label
    FROM events e LEFT JOIN text_enrichments t ON t.event_id = e.event_id
    WHERE account_id = $1 AND text IS NOT NULL AND text <> ''
      AND occurred_at >= $2 AND occurred_at < $3
    ORDER BY occurred_at DESC, e.event_id DESC
    LIMIT $4"""

_MONTHLY = """
    SELECT to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, count(*) AS texts,
           count(*) FILTER (WHERE t.label = 'negative') AS negative, avg(t.sentiment) AS mean,
           count(*) FILTER (WHERE t.label IS NULL) AS pending
    FROM events e LEFT JOIN text_enrichments t ON t.event_id = e.event_id
    WHERE e.account_id = $1 AND e.text IS NOT NULL AND e.text <> ''
      AND e.occurred_at >= $2 AND e.occurred_at < $3
    GROUP BY 1 ORDER BY 1"""

# One row per UTC month, segment and label (NULL: not read yet), as _ANSWER_CELLS.
_TEXT_CELLS = """
    SELECT to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, a.segment, t.label,
           count(*) AS n, coalesce(sum(t.sentiment), 0)::float8 AS total
    FROM events e
    JOIN accounts a ON a.account_id = e.account_id
    LEFT JOIN text_enrichments t ON t.event_id = e.event_id
    WHERE e.text IS NOT NULL AND e.text <> ''
      AND e.occurred_at >= $1 AND e.occurred_at < $2
      AND ($3::text IS NULL OR a.segment = $3)
      AND ($4::text IS NULL OR e.account_id = $4)
    GROUP BY 1, 2, 3"""
_ACCOUNT_TEXT_CELLS = db.for_one(_TEXT_CELLS, 4, "e.account_id")


async def sentiment_mix(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None = None,
    account_id: str | None = None,
) -> SentimentMix:
    """How many texts written in [since, until) read negative, neutral and positive, their mean
    sentiment, and how many the worker has not read yet (`pending`)."""
    return mix_of(
        await text_cells(conn, since=since, until=until, segment=segment, account_id=account_id)
    )


@dataclass(frozen=True, slots=True)
class TextCell:
    """The texts written in one UTC month by one segment's accounts that read `label` (None:
    not read yet): how many, and their sentiments' sum."""

    month: str
    segment: str | None
    label: str | None
    n: int
    total: float


async def text_cells(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None = None,
    account_id: str | None = None,
) -> list[TextCell]:
    sql = _TEXT_CELLS if account_id is None else _ACCOUNT_TEXT_CELLS
    rows = await conn.fetch(sql, since, until, segment, account_id)
    return [TextCell(r["month"], r["segment"], r["label"], r["n"], r["total"]) for r in rows]


def mix_of(cells: Sequence[TextCell]) -> SentimentMix:
    mix = {"texts": 0, "negative": 0, "neutral": 0, "positive": 0, "pending": 0}
    total = 0.0
    for c in cells:
        mix["texts"] += c.n
        mix[c.label or "pending"] += c.n
        total += c.total
    read = mix["texts"] - mix["pending"]
    return SentimentMix(**mix, mean=total / read if read else None)


async def account(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    since: datetime,
    until: datetime,
    verbatims: int,
) -> AccountVoc:
    """An account's survey metrics over time and its latest verbatims; a merged account's id
    reads its survivor's."""
    account_id = await identities.existing_account(conn, account_id)
    summary = await summarise(conn, since=since, until=until, account_id=account_id)
    mix = await sentiment_mix(conn, since=since, until=until, account_id=account_id)
    monthly = await conn.fetch(_MONTHLY, account_id, since, until)
    rows = await conn.fetch(_VERBATIMS, account_id, since, until, verbatims)
    return AccountVoc(
        account_id=account_id,
        since=since,
        until=until,
        overall=summary.overall,
        by_month=summary.by_month,
        sentiment=mix,
        sentiment_by_month=[MonthSentiment.model_validate(dict(r)) for r in monthly],
        verbatims=[
            Verbatim.model_validate(dict(r, sentiment=timeline.sentiment_of(r))) for r in rows
        ],
    )
