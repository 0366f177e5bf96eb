"""Signals held for want of an identity, and the one rule that lands them.

Segment calls that name no account yet, and senders' deliveries (a Stripe invoice of a customer
no account holds, a ticket from an unknown email) wait in `unresolved_signals` under the
identifiers that would resolve them (`kind:value`). Every door that creates or changes an
identity (a REST upsert, a Segment identify, group or alias) says which identifiers it made
known (`known`) and calls `attach` once: the held calls and deliveries those identifiers find
land, whichever door held them and whichever door brought the person.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from app.people import profiles
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
