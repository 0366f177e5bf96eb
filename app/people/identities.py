"""Identifiers and the one contact or account each belongs to.

A contact's identifiers (email, user_id, anonymous_id, its id in a CRM or support tool, any kind
a caller names) live in `identities`, with the contact's account beside them so that an event
naming only an identifier resolves in one lookup; an account's (domain, CRM or billing customer
id) in `account_identities`. One value, one owner: a claim on a value another holds is refused,
never doubled. Emails and domains are compared trimmed and lower-cased; other values as sent.
A contact or account merged into another (app.people.merges) leaves its id in `merged_ids`: it
resolves to the survivor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import asyncpg

from app.platform import errors
from app.schemas.profiles import IdentityMatch

Subject = Literal["account", "contact"]
Pair = tuple[str, str]  # (kind, value)

_CASELESS = frozenset({"email", "domain"})

# Statements per subject, written out (no SQL is assembled from strings).
_OWNERS = {
    "contact": """
        SELECT i.kind, i.value, i.contact_id FROM identities i
        JOIN unnest($1::text[], $2::text[]) AS u(k, v) ON i.kind = u.k AND i.value = u.v""",
    "account": """
        SELECT i.kind, i.value, i.account_id FROM account_identities i
        JOIN unnest($1::text[], $2::text[]) AS u(k, v) ON i.kind = u.k AND i.value = u.v""",
}
# A claim on a value someone else holds updates nothing and so returns no row.
_CLAIM = {
    "contact": """
        INSERT INTO identities AS i (kind, value, contact_id, account_id, updated_at)
        SELECT k, v, c, a, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
             AS u(k, v, c, a)
        ORDER BY k, v
        ON CONFLICT (kind, value) DO UPDATE
        SET account_id = excluded.account_id, updated_at = excluded.updated_at
        WHERE i.contact_id = excluded.contact_id
        RETURNING kind, value""",
    "account": """
        INSERT INTO account_identities AS i (kind, value, account_id, updated_at)
        SELECT k, v, a, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
             AS u(k, v, a, _)
        ORDER BY k, v
        ON CONFLICT (kind, value) DO UPDATE SET updated_at = excluded.updated_at
        WHERE i.account_id = excluded.account_id
        RETURNING kind, value""",
}
_RELEASE = {
    "contact": """
        DELETE FROM identities i USING unnest($1::text[], $2::text[], $3::text[]) AS u(k, v, o)
        WHERE i.kind = u.k AND i.value = u.v AND i.contact_id = u.o""",
    "account": """
        DELETE FROM account_identities i
        USING unnest($1::text[], $2::text[], $3::text[]) AS u(k, v, o)
        WHERE i.kind = u.k AND i.value = u.v AND i.account_id = u.o""",
}
_OF = {
    "contact": "SELECT contact_id, kind, value FROM identities "
    "WHERE contact_id = ANY($1::text[]) ORDER BY contact_id, kind, value",
    "account": "SELECT account_id, kind, value FROM account_identities "
    "WHERE account_id = ANY($1::text[]) ORDER BY account_id, kind, value",
}

_SURVIVORS = """
    SELECT subject, merged_id, survivor_id FROM merged_ids
    WHERE (subject = 'account' AND merged_id = ANY($1::text[]))
       OR (subject = 'contact' AND merged_id = ANY($2::text[]))"""
# The account of each contact id that names a contact, a merged id its survivor's.
_CONTACT_ACCOUNTS = """
    SELECT u.id, c.account_id FROM unnest($1::text[]) AS u(id)
    LEFT JOIN merged_ids m ON m.subject = 'contact' AND m.merged_id = u.id
    JOIN contacts c ON c.contact_id = coalesce(m.survivor_id, u.id)"""


def normalize(kind: str, value: str) -> str:
    return value.strip().lower() if kind in _CASELESS else value


def describe(subject: Subject, pair: Pair, owner: str) -> str:
    return f"{pair[0]} {pair[1]!r} already belongs to {subject} {owner!r}"


async def owners(
    conn: asyncpg.Connection, subject: Subject, pairs: Iterable[Pair]
) -> dict[Pair, str]:
    """Who holds each of these values now."""
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    rows = await conn.fetch(_OWNERS[subject], [k for k, _ in wanted], [v for _, v in wanted])
    return {(r[0], r[1]): r[2] for r in rows}


async def claim(
    conn: asyncpg.Connection,
    subject: Subject,
    claims: dict[Pair, tuple[str, str]],
    *,
    now: datetime,
) -> None:
    """Give each value to its (owner, account); raises Conflict if one is held by another owner
    (one that claimed it in a concurrent transaction since it was checked)."""
    if not claims:
        return
    pairs = sorted(claims)
    taken = set(pairs) - {
        (r[0], r[1])
        for r in await conn.fetch(
            _CLAIM[subject],
            [k for k, _ in pairs],
            [v for _, v in pairs],
            [claims[p][0] for p in pairs],
            [claims[p][1] for p in pairs],
            now,
        )
    }
    if taken:
        held = await owners(conn, subject, taken)
        pair = min(taken)
        raise errors.Conflict(describe(subject, pair, held.get(pair, "another")))


async def release(
    conn: asyncpg.Connection, subject: Subject, released: Sequence[tuple[str, str, str]]
) -> None:
    """Drop (kind, value, owner) identities, each only if that owner still holds it."""
    if released:
        await conn.execute(
            _RELEASE[subject],
            [k for k, _, _ in released],
            [v for _, v, _ in released],
            [o for _, _, o in released],
        )


async def of(
    conn: asyncpg.Connection, subject: Subject, ids: Sequence[str]
) -> dict[str, list[dict[str, str]]]:
    """The identities each of these contacts or accounts holds, by kind then value."""
    held: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    for r in await conn.fetch(_OF[subject], list(ids)):
        held[r[0]].append({"kind": r[1], "value": r[2]})
    return held


async def resolve(conn: asyncpg.Connection, kind: str, value: str) -> list[IdentityMatch]:
    """The contact and the account an identifier names (either, or both when a kind such as a
    CRM's id names a contact in one table and an account in the other)."""
    value = normalize(kind, value)
    matches: list[IdentityMatch] = []
    contact = await conn.fetchrow(
        "SELECT contact_id, account_id FROM identities WHERE kind = $1 AND value = $2",
        kind,
        value,
    )
    if contact is not None:
        matches.append(IdentityMatch(subject="contact", **dict(contact)))
    account = await conn.fetchval(
        "SELECT account_id FROM account_identities WHERE kind = $1 AND value = $2", kind, value
    )
    if account is not None:
        matches.append(IdentityMatch(subject="account", contact_id=None, account_id=account))
    return matches


@dataclass
class Survivors:
    """Merged ids among some account and contact ids, each with its survivor."""

    accounts: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, str] = field(default_factory=dict)

    def account(self, account_id: str) -> str:
        return self.accounts.get(account_id, account_id)

    def contact(self, contact_id: str) -> str:
        return self.contacts.get(contact_id, contact_id)


async def survivors(
    conn: asyncpg.Connection, *, accounts: Iterable[str] = (), contacts: Iterable[str] = ()
) -> Survivors:
    """Which of these ids were merged, and into what."""
    wanted_accounts, wanted_contacts = sorted(set(accounts)), sorted(set(contacts))
    found = Survivors()
    if wanted_accounts or wanted_contacts:
        for subject, merged, survivor in await conn.fetch(
            _SURVIVORS, wanted_accounts, wanted_contacts
        ):
            (found.accounts if subject == "account" else found.contacts)[merged] = survivor
    return found


async def survivor(conn: asyncpg.Connection, kind: Subject, profile_id: str) -> str:
    """The id a profile id names now: itself, or the survivor it was merged into."""
    if kind == "account":
        return (await survivors(conn, accounts=[profile_id])).account(profile_id)
    return (await survivors(conn, contacts=[profile_id])).contact(profile_id)


async def existing_account(conn: asyncpg.Connection, account_id: str) -> str:
    """The account an id names now (itself, or the survivor it was merged into); NotFound
    when there is none."""
    account_id = await survivor(conn, "account", account_id)
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = $1)", account_id
    ):
        raise errors.NotFound(f"No account {account_id!r}.")
    return account_id


async def contact_accounts(conn: asyncpg.Connection, contact_ids: Iterable[str]) -> dict[str, str]:
    """The account of each of these contact ids that names a contact (a merged id: its
    survivor's account)."""
    wanted = sorted(set(contact_ids))
    if not wanted:
        return {}
    return {r[0]: r[1] for r in await conn.fetch(_CONTACT_ACCOUNTS, wanted)}
