"""The book: the accounts a user sees, ranked by value at risk (MRR x churn probability, from
each account's latest churn score), a page at a time, with filters and saved views.

Ranking reads `latest_scores`, where app.ml.history keeps each churn score's value at risk (and
a trigger keeps it when the account's MRR changes), indexed, so a page costs its own rows at
100,000 accounts; the page's last activity is read for its rows only. Ties come by account id
(descending), and the accounts with no churn score after every scored one, by account id, so
the order is total and a cursor (which of the two, value at risk, account id) resumes it
exactly. Once an uplift fit has ranked the accounts (app.value.uplift), the book can instead be
ordered by how much acting helps: the accounts the newest churn fit ranked, walking its benefit
index backwards, with their risk beside.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import orjson

from app.governance import audit
from app.platform import cursors, errors
from app.platform.jsonbody import JSONObject
from app.web.users import User

PAGE = 50
BANDS = ("high", "medium", "low")
# Account traits read as the renewal date, first found first (an ISO date or timestamp).
RENEWAL_TRAITS = ("renewal_date", "renews_at", "contract_end")


RISK, UPLIFT = "risk", "uplift"  # the book's orders: value at risk, or where acting helps most


@dataclass(frozen=True, slots=True)
class Filters:
    segment: str | None = None
    band: str | None = None
    owner: str | None = None
    order: str = RISK

    def as_json(self) -> JSONObject:
        return {
            k: v
            for k, v in (
                ("segment", self.segment),
                ("band", self.band),
                ("owner", self.owner),
                ("order", self.order if self.order != RISK else None),
            )
            if v
        }

    @classmethod
    def of(cls, data: JSONObject) -> Filters:
        band = data.get("band")
        return cls(
            segment=_text(data.get("segment")),
            band=band if band in BANDS else None,
            owner=_text(data.get("owner")),
            order=UPLIFT if data.get("order") == UPLIFT else RISK,
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


@dataclass(frozen=True, slots=True)
class Score:
    probability: float
    band: str
    previous: float | None

    @property
    def change(self) -> float | None:
        return None if self.previous is None else self.probability - self.previous


@dataclass(frozen=True, slots=True)
class Row:
    account_id: str
    name: str | None
    segment: str | None
    mrr: float | None
    owner_email: str | None
    churn: Score | None
    expansion: Score | None
    at_risk: float
    top_reason: str | None
    renewal: str | None
    last_activity: datetime | None = None
    # How much less likely churn is if its insight is delivered, by the newest uplift fit
    # (app.value.uplift); None where no fit ranked the account.
    churn_benefit: float | None = None


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    next_cursor: str | None
    segments: list[str] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    uplift_ranked: bool = False  # a churn uplift fit ranked accounts: the column is shown
    by_uplift: datetime | None = None  # ordered by the uplift fit that ranked as of this


_COLUMNS = """
    a.account_id, a.name, a.segment, a.mrr, a.owner_email, a.traits,
    x.probability AS expansion, x.band AS expansion_band, x.previous_probability AS expansion_before
"""
# The scored accounts, walking ix_latest_scores_at_risk backwards: a page reads its own rows
# (and, with filters, those it skips), not every account.
_SCORED = f"""
    SELECT {_COLUMNS},
           c.probability AS churn, c.band AS churn_band, c.previous_probability AS churn_before,
           c.reasons AS churn_reasons, c.at_risk
    FROM latest_scores c
    JOIN accounts a ON a.account_id = c.account_id
    LEFT JOIN latest_scores x ON x.account_id = c.account_id AND x.target = 'expansion'
    WHERE c.target = 'churn'
      AND ($1::text[] IS NULL OR a.owner_email = ANY($1::text[]))
      AND ($2::text IS NULL OR a.segment = $2)
      AND ($3::text IS NULL OR c.band = $3)
      AND ($4::text IS NULL OR a.owner_email = $4)
      {{after}}
    ORDER BY c.at_risk DESC, c.account_id DESC
    LIMIT $7"""  # noqa: S608  (constant columns)
_SCORED_FIRST = _SCORED.format(after="AND $5::float8 IS NULL AND $6::text IS NULL")
_SCORED_AFTER = _SCORED.format(after="AND (c.at_risk, c.account_id) < ($5::float8, $6::text)")
# Then the accounts without a churn score, by id.
_UNSCORED = f"""
    SELECT {_COLUMNS},
           NULL::float8 AS churn, NULL::text AS churn_band, NULL::float8 AS churn_before,
           NULL::jsonb AS churn_reasons, 0::float8 AS at_risk
    FROM accounts a
    LEFT JOIN latest_scores x ON x.account_id = a.account_id AND x.target = 'expansion'
    WHERE NOT EXISTS (
            SELECT 1 FROM latest_scores c WHERE c.account_id = a.account_id AND c.target = 'churn')
      AND ($1::text[] IS NULL OR a.owner_email = ANY($1::text[]))
      AND ($2::text IS NULL OR a.segment = $2)
      AND $3::text IS NULL
      AND ($4::text IS NULL OR a.owner_email = $4)
      AND ($5::text IS NULL OR a.account_id < $5)
    ORDER BY a.account_id DESC
    LIMIT $6"""  # noqa: S608  (constant columns)

_LAST_ACTIVITY = """
    SELECT a, (SELECT max(occurred_at) FROM events WHERE account_id = a)
    FROM unnest($1::text[]) AS a"""
# The newest churn uplift fit that ranked accounts, and each shown account's benefit in it.
_RANKED = """
    SELECT fit_id, as_of FROM uplift_fits WHERE target = 'churn' AND status = 'ranked'
    ORDER BY fitted_at DESC, fit_id DESC LIMIT 1"""
_BENEFIT = """
    SELECT account_id, benefit FROM uplift_scores
    WHERE fit_id = $2 AND account_id = ANY($1::text[])"""
# The accounts that fit ranked, by how much acting helps (ix_uplift_scores_benefit backwards).
_HELPED = f"""
    SELECT {_COLUMNS},
           c.probability AS churn, c.band AS churn_band, c.previous_probability AS churn_before,
           c.reasons AS churn_reasons, coalesce(c.at_risk, 0) AS at_risk, u.benefit
    FROM uplift_scores u
    JOIN accounts a ON a.account_id = u.account_id
    LEFT JOIN latest_scores c ON c.account_id = u.account_id AND c.target = 'churn'
    LEFT JOIN latest_scores x ON x.account_id = u.account_id AND x.target = 'expansion'
    WHERE u.fit_id = $8
      AND ($1::text[] IS NULL OR a.owner_email = ANY($1::text[]))
      AND ($2::text IS NULL OR a.segment = $2)
      AND ($3::text IS NULL OR c.band = $3)
      AND ($4::text IS NULL OR a.owner_email = $4)
      {{after}}
    ORDER BY u.benefit DESC, u.account_id DESC
    LIMIT $7"""  # noqa: S608  (constant columns)
_HELPED_FIRST = _HELPED.format(after="AND $5::float8 IS NULL AND $6::text IS NULL")
_HELPED_AFTER = _HELPED.format(after="AND (u.benefit, u.account_id) < ($5::float8, $6::text)")
SCORED, UNSCORED, HELPED = "s", "u", "h"


async def page(
    conn: asyncpg.Connection,
    *,
    visible: Sequence[str] | None,
    filters: Filters,
    cursor: str | None,
    size: int = PAGE,
) -> Page:
    """A page of the book: the accounts with a churn score by value at risk, highest first
    (ties by id, descending), then those without one, by id; or, ordered by uplift once a fit
    ranked accounts, the accounts it ranked by how much acting helps (ties by id)."""
    ranked = await conn.fetchrow(_RANKED)
    stream, after = (HELPED if filters.order == UPLIFT and ranked else SCORED), None
    if cursor is not None:
        stream, risk, account_id = cursors.decode(cursor, str, str, str)
        try:
            after = (float(risk), account_id)  # written as repr(float): read back exactly
        except ValueError:
            raise errors.BadRequest("cursor is not one this service issued") from None
        if stream not in (SCORED, UNSCORED, HELPED) or (stream == HELPED and not ranked):
            raise errors.BadRequest("cursor is not one this service issued")
    owners = None if visible is None else list(visible)
    given = (owners, filters.segment, filters.band, filters.owner)
    rows: list[asyncpg.Record] = []
    if stream == HELPED:
        assert ranked is not None
        rows = await conn.fetch(
            _HELPED_FIRST if after is None else _HELPED_AFTER,
            *given,
            None if after is None else after[0],
            None if after is None else after[1],
            size + 1,
            ranked["fit_id"],
        )
        shown = await _with_activity(conn, [_row(r) for r in rows[:size]], None)
        more = None
        if len(rows) > size:
            more = cursors.encode(HELPED, repr(rows[size - 1]["benefit"]), shown[-1].account_id)
        return Page(shown, more, uplift_ranked=True, by_uplift=ranked["as_of"])
    if stream == SCORED:
        rows = await conn.fetch(
            _SCORED_FIRST if after is None else _SCORED_AFTER,
            *given,
            None if after is None else after[0],
            None if after is None else after[1],
            size + 1,
        )
    if len(rows) <= size:
        rows += await conn.fetch(
            _UNSCORED,
            *given,
            after[1] if stream == UNSCORED and after is not None else None,
            size + 1 - len(rows),
        )
    shown = await _with_activity(conn, [_row(r) for r in rows[:size]], ranked)
    next_cursor = None
    if len(rows) > size:
        last = shown[-1]
        kind = SCORED if last.churn is not None else UNSCORED
        next_cursor = cursors.encode(kind, repr(last.at_risk), last.account_id)
    return Page(shown, next_cursor, uplift_ranked=ranked is not None)


async def _with_activity(
    conn: asyncpg.Connection, shown: list[Row], ranked: asyncpg.Record | None
) -> list[Row]:
    """The rows with their last activity and, from the uplift fit `ranked` (None: the rows
    read it already, or there is none), their benefit."""
    if not shown:
        return shown
    ids = [r.account_id for r in shown]
    activity = dict(await conn.fetch(_LAST_ACTIVITY, ids))
    benefit = dict(await conn.fetch(_BENEFIT, ids, ranked["fit_id"])) if ranked else {}
    return [
        dataclasses.replace(
            r,
            last_activity=activity.get(r.account_id),
            churn_benefit=benefit.get(r.account_id, r.churn_benefit),
        )
        for r in shown
    ]


def _row(r: asyncpg.Record) -> Row:
    traits = orjson.loads(r["traits"]) if r["traits"] else {}
    reasons = orjson.loads(r["churn_reasons"]) if r["churn_reasons"] else []
    headline = next((x for x in reasons if x.get("kind", "headline") == "headline"), None)
    renewal = next((str(traits[k]) for k in RENEWAL_TRAITS if traits.get(k)), None)
    return Row(
        account_id=r["account_id"],
        name=r["name"],
        segment=r["segment"],
        mrr=None if r["mrr"] is None else float(r["mrr"]),
        owner_email=r["owner_email"],
        churn=_score(r["churn"], r["churn_band"], r["churn_before"]),
        expansion=_score(r["expansion"], r["expansion_band"], r["expansion_before"]),
        at_risk=float(r["at_risk"]),
        top_reason=None if headline is None else headline.get("text"),
        renewal=renewal[:10] if renewal else None,
        churn_benefit=r.get("benefit"),  # the rows ordered by uplift read it
    )


def _score(probability: float | None, band: str | None, before: float | None) -> Score | None:
    if probability is None or band is None:
        return None
    return Score(probability, band, before)


async def choices(
    conn: asyncpg.Connection, visible: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The segments and the owners there are among the accounts a user sees, for the filters."""
    if visible is None:  # every account: one index probe per distinct value, not a scan
        segments = sorted(r[0] for r in await conn.fetch(_DISTINCT.format(column="segment")))
        owners = sorted(r[0] for r in await conn.fetch(_DISTINCT.format(column="owner_email")))
        return segments, owners
    rows = await conn.fetch(
        "SELECT DISTINCT segment, owner_email FROM accounts WHERE owner_email = ANY($1::text[])",
        list(visible),
    )
    return sorted({r[0] for r in rows if r[0]}), sorted({r[1] for r in rows if r[1]})


# The distinct values of an indexed column of accounts, in order, by walking its index ("skip
# scan"): a DISTINCT over 100,000 accounts read them all on every page of a lead's book.
_DISTINCT = """
    WITH RECURSIVE v (value) AS (
        (SELECT {column} FROM accounts WHERE {column} IS NOT NULL AND {column} <> ''
         ORDER BY {column} LIMIT 1)
        UNION ALL
        SELECT (SELECT {column} FROM accounts WHERE {column} > v.value ORDER BY {column} LIMIT 1)
        FROM v WHERE v.value IS NOT NULL
    )
    SELECT value FROM v WHERE value IS NOT NULL"""


@dataclass(frozen=True, slots=True)
class View:
    view_id: uuid.UUID
    name: str
    filters: Filters


async def views(conn: asyncpg.Connection, user: User) -> list[View]:
    rows = await conn.fetch(
        "SELECT view_id, name, filters FROM saved_views WHERE user_id = $1 ORDER BY name, view_id",
        user.user_id,
    )
    return [View(r["view_id"], r["name"], Filters.of(orjson.loads(r["filters"]))) for r in rows]


async def save_view(conn: asyncpg.Connection, user: User, *, name: str, filters: Filters) -> View:
    name = name.strip()
    if not name or len(name) > 255:
        raise errors.InvalidPayload("A view's name has 1 to 255 characters.")
    view = View(uuid.uuid4(), name, filters)
    await conn.execute(
        "INSERT INTO saved_views (view_id, user_id, name, filters) VALUES ($1, $2, $3, $4)",
        view.view_id,
        user.user_id,
        name,
        orjson.dumps(filters.as_json()).decode(),
    )
    await audit.record(
        conn,
        actor=user.actor,
        action="view.saved",
        target=str(view.view_id),
        details={"name": name},
    )
    return view


async def view(conn: asyncpg.Connection, user: User, view_id: uuid.UUID) -> View:
    """One of the user's own views (404 for anyone else's)."""
    for v in await views(conn, user):
        if v.view_id == view_id:
            return v
    raise errors.NotFound("No such view.")
