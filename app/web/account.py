"""The account as the console shows it: each target's score with every reason, what changed
since the score before it, the score's history, the timeline, contacts, what its people said,
outcomes and open insights.

Scores are read, not given: each target's active model scores the account as of its latest
stored score (the one the book ranks by) and as of the one before, as questions about those
moments, stored nowhere. Features are point in time, so the first answer is the stored score,
and the difference between the two is exactly what moved the score (scoring.changes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from app import voc
from app.activation import insights
from app.ml import features, registry, scoring, serving
from app.people import profiles, timeline
from app.platform import errors
from app.schemas.insights import Insight
from app.schemas.profiles import Account
from app.schemas.signals import EventOut, OutcomeOut
from app.schemas.voc import AccountVoc
from app.voc import surveys

EVERY_REASON = 50  # "every reason": more than any catalog says of one account
MOVERS = 5
HISTORY_POINTS = 120
TIMELINE_PAGE = 25


@dataclass(frozen=True, slots=True)
class TargetScore:
    score: scoring.Score
    stored: bool  # as of the latest stored score (else as of now: never scored yet)
    before: scoring.Score | None
    changes: list[scoring.Change]
    history: list[tuple[datetime, float]]  # (as_of, probability), oldest first


@dataclass(frozen=True, slots=True)
class Contact:
    contact_id: str
    name: str | None
    email: str | None
    role: str | None


@dataclass(frozen=True, slots=True)
class AccountView:
    account: Account
    scores: list[TargetScore]
    events: list[EventOut]
    next_events: str | None
    event_types: list[str]
    contacts: list[Contact]
    voc: AccountVoc
    outcomes: list[OutcomeOut]
    insights: list[Insight]
    theme_names: dict[str, str]


async def visible(
    conn: asyncpg.Connection, owners: Sequence[str] | None, account_id: str
) -> Account:
    """The account, if this user may see it; 404 alike for an account that does not exist and
    for one owned by someone the user does not see, so that ids cannot be probed."""
    try:
        account = await profiles.get_account(conn, account_id)
    except errors.NotFound:
        raise errors.NotFound(f"No account {account_id!r}.") from None
    if owners is not None and account.owner_email not in owners:
        raise errors.NotFound(f"No account {account_id!r}.")
    return account


async def view(
    conn: asyncpg.Connection,
    models: serving.Models,
    account: Account,
    *,
    types: Sequence[str] | None,
    cursor: str | None,
    now: datetime,
) -> AccountView:
    account_id = account.account_id
    events, next_events = await timeline.events(
        conn, account_id, since=None, until=None, types=types, cursor=cursor, limit=TIMELINE_PAGE
    )
    year = voc.earlier(now, timedelta(days=365))
    return AccountView(
        account=account,
        scores=await scores(conn, models, account_id, now=now),
        events=events,
        next_events=next_events,
        event_types=[r[0] for r in await conn.fetch(_TYPES, account_id)],
        contacts=[
            Contact(r["contact_id"], r["name"], r["email"], r["role"])
            for r in await conn.fetch(_CONTACTS, account_id)
        ],
        voc=await surveys.account(conn, account_id, since=year, until=now, verbatims=10),
        outcomes=await timeline.outcomes(conn, account_id, kinds=None, limit=20),
        insights=await insights.list_insights(
            conn, account_id=account_id, limit=20, open_only=True
        ),
        theme_names=dict(await conn.fetch("SELECT theme_id, name FROM themes")),
    )


_TYPES = """
    SELECT DISTINCT type FROM event_rollups WHERE account_id = $1
    UNION SELECT DISTINCT type FROM events WHERE account_id = $1 ORDER BY 1"""
_CONTACTS = """
    SELECT contact_id, name, email, role FROM contacts WHERE account_id = $1
    ORDER BY role NULLS LAST, name NULLS LAST, contact_id LIMIT 200"""
_LATEST = """
    SELECT target, as_of, previous_as_of FROM latest_scores WHERE account_id = $1"""
_HISTORY = """
    SELECT as_of, probability FROM (
        SELECT as_of, probability FROM scores WHERE account_id = $1 AND target = $2
        ORDER BY as_of DESC, scored_at DESC LIMIT $3
    ) h ORDER BY as_of"""


async def scores(
    conn: asyncpg.Connection, models: serving.Models, account_id: str, *, now: datetime
) -> list[TargetScore]:
    latest = {r["target"]: r for r in await conn.fetch(_LATEST, account_id)}
    # Targets scored by one batch share their moments: their features are fetched once.
    fetched_for: dict[tuple[datetime, ...], list[asyncpg.Record]] = {}
    out = []
    for record in await registry.all_active(conn):
        loaded = await models.active(conn, record.target)
        stored = latest.get(record.target)
        at = stored["as_of"] if stored else now
        before_at = stored["previous_as_of"] if stored else None
        moments = tuple(t for t in (before_at, at) if t is not None)
        keys = [(account_id, t) for t in moments]
        if moments not in fetched_for:
            fetched_for[moments] = await features.fetch(conn, keys)
        fetched = fetched_for[moments]
        if not all(features.known(r) for r in fetched):
            continue
        # Assembling and scoring are CPU work: off the event loop, in one hop.
        given, moved = await asyncio.to_thread(_score_and_compare, loaded, keys, fetched)
        history = [
            (r["as_of"], float(r["probability"]))
            for r in await conn.fetch(_HISTORY, account_id, record.target, HISTORY_POINTS)
        ]
        out.append(
            TargetScore(
                score=given[-1],
                stored=stored is not None,
                before=given[0] if len(given) == 2 else None,
                changes=moved,
                history=history,
            )
        )
    return out


def _score_and_compare(
    loaded: registry.Loaded, keys: list[tuple[str, datetime]], fetched: list[asyncpg.Record]
) -> tuple[list[scoring.Score], list[scoring.Change]]:
    frame = features.assemble(loaded.catalog, keys, fetched)
    given = scoring.score_frame(loaded, frame, top=EVERY_REASON)
    moved = scoring.changes(loaded, frame, top=MOVERS) if len(keys) == 2 else []
    return given, moved
