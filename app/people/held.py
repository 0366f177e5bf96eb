"""Signals held for want of an identity, and the one rule that lands them.

Segment calls that name no account yet, and senders' deliveries (a Stripe invoice of a customer
no account holds, a ticket from an unknown email) wait in `unresolved_signals` under the
identifiers that would resolve them (`kind:value`). Every door that creates or changes an
identity (a REST upsert, a Segment identify, group or alias) says which identifiers it made
known (`known`) and calls `attach` once: the held calls and deliveries those identifiers find
land, whichever door held them and whichever door brought the person. `listing` pages through
what is still held, and what expired.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import asyncpg
import orjson

from app.people import profiles
from app.platform import cursors
from app.schemas.common import Identity
from app.schemas.signals import UnresolvedSignal
from app.signals import ingest, segment, sources


def known(kind: profiles.Kind, item: profiles.Item) -> set[str]:
    """The identifiers an upsert makes known: those it claims (its identities, its email) and,
    for a contact, its id as the `user_id` a Segment SDK sends."""
    found = {f"{k}:{v}" for k, v in item.claims()}
    if kind == "contact":
        found.add(f"user_id:{item.profile_id}")
    return found


async def attach(conn: asyncpg.Connection, keys: Iterable[str], *, ctx: ingest.Context) -> int:
    """Land what was held for these identifiers, inside one transaction; how many landed."""
    wanted = set(keys)
    if not wanted:
        return 0
    async with conn.transaction():
        landed = await segment.attach(conn, wanted, ctx=ctx)
        landed += await sources.attach(conn, wanted, ctx=ctx)
    return landed


async def listing(
    conn: asyncpg.Connection,
    *,
    status: str | None,
    cursor: str | None,
    limit: int,
    now: datetime,
    days: int,
) -> tuple[list[UnresolvedSignal], str | None]:
    """Calls not attached, newest first: `held` while an identity may still resolve them,
    `expired` after `days`."""
    before = None if cursor is None else cursors.decode(cursor, int)[0]
    cutoff = now - timedelta(days=days)
    rows = await conn.fetch(
        """
        SELECT u.id, u.received_at, coalesce(s.kind, u.source) AS source, u.call, u.keys,
               u.message, u.reason
        FROM unresolved_signals u
        LEFT JOIN sources s ON s.source_id = CASE WHEN u.source = 'hooks'
            AND u.message ->> 'source_id' ~ '^[0-9a-f-]{36}$'
            THEN (u.message ->> 'source_id')::uuid END
        WHERE u.attached_at IS NULL AND ($1::bigint IS NULL OR u.id < $1)
          AND ($2::text IS NULL OR ($2 = 'held') = (u.received_at > $3))
        ORDER BY u.id DESC LIMIT $4""",
        before,
        status,
        cutoff,
        limit + 1,
    )
    page = [
        UnresolvedSignal(
            id=r["id"],
            received_at=r["received_at"],
            expires_at=r["received_at"] + timedelta(days=days),
            status="held" if r["received_at"] > cutoff else "expired",
            source=r["source"],
            call=r["call"],
            keys=[
                Identity.model_validate(dict(zip(("kind", "value"), k.split(":", 1), strict=True)))
                for k in r["keys"]
            ],
            reason=r["reason"],
            message=orjson.loads(r["message"]),
        )
        for r in rows[:limit]
    ]
    return page, cursors.encode(page[-1].id) if len(rows) > limit else None


def _identity(key: str) -> Identity:
    kind, value = key.split(":", 1)
    return Identity(kind=kind, value=value)
