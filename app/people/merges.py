"""Merges: two contacts, or two accounts, that turn out to be one.

The survivor takes the merged profile's identities, its history (each observation keeps its
observed_at, so an older one stays older when the history is folded again) and its signals:
events, and for accounts also their contacts, outcomes, scores, insights and held signals. The
merged id is kept in `merged_ids`, and every write and read that names it resolves to the
survivor, so late events still land. Each merge is audited with what moved.

A merge can be sent again: for a pair already merged it moves whatever reached the merged id
meanwhile (a batch that resolved its ids just before the merge committed) and says so. A first
merge does that itself: it queues `merge_catch_up` jobs that send it again once every request
that could have resolved the merged id before the commit has ended (past the API's statement
timeout), and once more later (2,400 of 33,450 events acknowledged during one merge stayed on
the merged id before).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from app.governance import audit
from app.people import identities, profiles
from app.platform import errors, jobs
from app.platform.jsonbody import JSONObject
from app.schemas.profiles import Merge

CATCH_UP = "merge_catch_up"
CATCH_UP_AFTER = (timedelta(seconds=45), timedelta(minutes=10))

_LOCK = {
    "account": "SELECT account_id FROM accounts WHERE account_id = ANY($1::text[]) "
    "ORDER BY account_id FOR UPDATE",
    "contact": "SELECT contact_id FROM contacts WHERE contact_id = ANY($1::text[]) "
    "ORDER BY contact_id FOR UPDATE",
}
_DROP = {
    "account": "DELETE FROM accounts WHERE account_id = $1",
    "contact": "DELETE FROM contacts WHERE contact_id = $1",
}
# (what moved, statement) with $1 the survivor and $2 the merged id; steps named None move rows
# that mirror others (a contact's history and identities carry its account) and are not counted.
_MOVES: dict[profiles.Kind, tuple[tuple[str | None, str], ...]] = {
    "contact": (
        ("history", "UPDATE contact_history SET contact_id = $1 WHERE contact_id = $2"),
        ("identities", "UPDATE identities SET contact_id = $1 WHERE contact_id = $2"),
        ("events", "UPDATE events SET contact_id = $1 WHERE contact_id = $2"),
    ),
    "account": (
        ("history", "UPDATE account_history SET account_id = $1 WHERE account_id = $2"),
        ("identities", "UPDATE account_identities SET account_id = $1 WHERE account_id = $2"),
        ("contacts", "UPDATE contacts SET account_id = $1 WHERE account_id = $2"),
        (
            None,
            "UPDATE contact_history SET account_id = $1::text, "
            "changes = jsonb_set(changes, '{account_id}', to_jsonb($1::text)) "
            "WHERE account_id = $2",
        ),
        (None, "UPDATE identities SET account_id = $1 WHERE account_id = $2"),
        (
            "events",
            """
            WITH moved AS (
                UPDATE events SET account_id = $1 WHERE account_id = $2 RETURNING event_id)
            UPDATE event_keys k SET account_id = $1 FROM moved WHERE k.event_id = moved.event_id
            """,
        ),
        (
            None,
            """
            INSERT INTO event_rollups AS r
                (account_id, type, month, events, valued, value_sum, first_at, last_at, days)
            SELECT $1, type, month, events, valued, value_sum, first_at, last_at, days
            FROM event_rollups WHERE account_id = $2
            ON CONFLICT (account_id, type, month) DO UPDATE
            SET events = r.events + excluded.events, valued = r.valued + excluded.valued,
                value_sum = r.value_sum + excluded.value_sum,
                first_at = least(r.first_at, excluded.first_at),
                last_at = greatest(r.last_at, excluded.last_at), days = r.days | excluded.days""",
        ),
        (None, "DELETE FROM event_rollups WHERE account_id = $2 AND account_id <> $1"),
        ("outcomes", "UPDATE outcomes SET account_id = $1 WHERE account_id = $2"),
        ("scores", "UPDATE scores SET account_id = $1 WHERE account_id = $2"),
        # The survivor's latest score stays its own; the merged account's goes with its id.
        (None, "DELETE FROM latest_scores WHERE account_id = $2 AND account_id <> $1"),
        # Likewise its expected uplift, until the next fit ranks the survivor.
        (None, "DELETE FROM uplift_scores WHERE account_id = $2 AND account_id <> $1"),
        ("insights", "UPDATE insights SET account_id = $1 WHERE account_id = $2"),
        ("findings", "UPDATE findings SET account_id = $1 WHERE account_id = $2"),
        ("held_signals", "UPDATE unresolved_signals SET account_id = $1 WHERE account_id = $2"),
    ),
}
_RECORD = """
    INSERT INTO merged_ids (subject, merged_id, survivor_id, merged_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING"""
# One hop: the ids merged into the merged profile now name the survivor.
_REPOINT = "UPDATE merged_ids SET survivor_id = $3 WHERE subject = $1 AND survivor_id = $2"


def _count(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def merge(
    conn: asyncpg.Connection,
    kind: profiles.Kind,
    *,
    survivor_id: str,
    merged_id: str,
    actor: str,
    now: datetime,
) -> Merge:
    """Merge one profile into another, inside the caller's transaction; what moved, by kind."""
    locked = {r[0] for r in await conn.fetch(_LOCK[kind], sorted({survivor_id, merged_id}))}
    pair = [survivor_id, merged_id]
    if kind == "account":
        merged_before = (await identities.survivors(conn, accounts=pair)).accounts
    else:
        merged_before = (await identities.survivors(conn, contacts=pair)).contacts
    survivor = merged_before.get(survivor_id, survivor_id)
    if survivor != survivor_id:
        locked |= {r[0] for r in await conn.fetch(_LOCK[kind], [survivor])}
    earlier = merged_before.get(merged_id)
    if merged_id == survivor:
        raise errors.Conflict(f"A {kind} cannot be merged into itself ({survivor_id!r}).")
    if earlier is not None and earlier != survivor:
        raise errors.Conflict(f"{kind.title()} {merged_id!r} was merged into {earlier!r} already.")
    if survivor not in locked:
        raise errors.NotFound(f"No {kind} {survivor_id!r}.")
    if merged_id not in locked and earlier is None:
        raise errors.NotFound(f"No {kind} {merged_id!r}.")
    moved: dict[str, int] = {}
    for name, statement in _MOVES[kind]:
        status = await conn.execute(statement, survivor, merged_id)
        if name is not None:
            moved[name] = _count(status)
    await conn.execute(_DROP[kind], merged_id)
    await conn.execute(_RECORD, kind, merged_id, survivor, now)
    await conn.execute(_REPOINT, kind, merged_id, survivor)
    await profiles.refold(conn, kind, survivor, now=now)
    if earlier is None:  # what was in flight when this commits is caught up later
        for delay in CATCH_UP_AFTER:
            await jobs.enqueue(
                conn,
                kind=CATCH_UP,
                params={
                    "kind": kind,
                    "survivor_id": survivor,
                    "merged_id": merged_id,
                    "not_before": (now + delay).isoformat(),
                },
            )
    await audit.record(
        conn,
        actor=actor,
        action=f"{kind}.merged",
        target=survivor,
        details={"from": merged_id, "again": earlier is not None, "moved": moved},
    )
    return Merge(
        survivor_id=survivor,
        merged_id=merged_id,
        again=earlier is not None,
        moved=moved,
        merged_at=now,
    )


async def catch_up(
    conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
) -> JSONObject:
    """The `merge_catch_up` job: the merge sent again, moving what reached the merged id
    while it ran; nothing when the pair is gone since (erased, or merged elsewhere)."""
    kind: profiles.Kind = "account" if params.get("kind") == "account" else "contact"
    try:
        async with conn.transaction():
            done = await merge(
                conn,
                kind,
                survivor_id=str(params.get("survivor_id")),
                merged_id=str(params.get("merged_id")),
                actor="merge catch-up",
                now=datetime.now(UTC),
            )
    except (errors.NotFound, errors.Conflict) as gone:
        return {"moved": {}, "skipped": gone.detail}
    return {"moved": done.moved}
