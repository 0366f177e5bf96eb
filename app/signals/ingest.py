"""Events and outcomes: resolution to an account, idempotency by the caller's ids, storage.

Idempotency holds forever and across partitions: event_keys has one row per event_id ever
accepted with a digest of its content. The same id and digest again is a duplicate (stored once);
the same id with another digest is a conflict, and the first version stays.

This is the hot path, so it talks to asyncpg directly rather than through an ORM session: one
statement (and so one round trip and one implicit transaction) for a single event, and for a batch
one transaction that claims the keys and COPYs the new rows. Its callers commit nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson

from app.governance import privacy
from app.ml import rollups
from app.people import identities, profiles
from app.platform import jsonbody, partitions
from app.schemas.common import EARLIEST, MAX_NESTING
from app.schemas.signals import EventIn, OutcomeIn

Status = Literal["accepted", "duplicate", "error", "suppressed"]


@dataclass(slots=True)
class ItemResult:
    index: int
    item_id: str
    status: Status
    detail: str | None = None
    conflict: bool = False
    field: str | None = None  # the request field the error is about

    def reject(self, field: str, detail: str, *, conflict: bool = False) -> None:
        self.status, self.field, self.detail, self.conflict = "error", field, detail, conflict


@dataclass
class KnownIds:
    """Ids this process has seen committed, so steady-state ingest skips existence checks.

    Accounts and contacts are deleted only by merges, and a merged id is rewritten to its
    survivor before this is asked, so an id once committed stays valid. `linked`: senders' ids
    (kind, value) seen held by an account, so that receivers do not look again before linking
    (a stale entry only skips a link).
    """

    accounts: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)
    linked: dict[tuple[str, str], str] = field(default_factory=dict)
    limit: int = 500_000

    def remember(self, *, accounts: set[str], contacts: set[str]) -> None:
        """Call only after the rows are committed."""
        if len(self.accounts) + len(accounts) > self.limit:
            self.accounts.clear()
        if len(self.contacts) + len(contacts) > self.limit:
            self.contacts.clear()
        self.accounts |= accounts
        self.contacts |= contacts


def _digest(payload: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).digest()


def parse_timestamp(value: str) -> datetime | None:
    """An RFC 3339 string (already matched by the schema's pattern) as an aware datetime."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    try:  # lowercase t and z are RFC 3339 too, but not ISO to Python
        return datetime.fromisoformat(value.upper())
    except ValueError:
        return None


def check_moment(
    at: datetime, *, now: datetime, tolerance: timedelta, name: str = "occurred_at"
) -> str | None:
    """Why a moment a client says something happened cannot be taken, or None: the same bounds
    for every such field (occurred_at, observed_at)."""
    if at > now + tolerance:
        hours = tolerance.total_seconds() / 3600
        return f"{name} lies more than {hours:g} h in the future"
    if at < EARLIEST:
        return f"{name} before 1970-01-01 is not accepted"
    return None


EVENT_COLUMNS = (
    "event_id",
    "occurred_at",
    "account_id",
    "contact_id",
    "email",
    "type",
    "source",
    "value",
    "properties",
    "text",
)

# One statement for one event: create its account and contact if new, claim its key, store it
# if the key was free, and report the digest stored before (NULL when the key is new). CTEs see
# the snapshot from before the statement, hence `stored` is the earlier version's digest.
_STORE_ONE_EVENT = """
WITH new_account AS (
    INSERT INTO accounts (account_id) SELECT $3 WHERE $11 ON CONFLICT DO NOTHING
), new_contact AS (
    INSERT INTO contacts (contact_id, account_id) SELECT $4, $3 WHERE $12
    ON CONFLICT DO NOTHING
), claimed AS (
    INSERT INTO event_keys (event_id, account_id, occurred_at, digest) VALUES ($1, $3, $2, $13)
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), stored_event AS (
    INSERT INTO events (event_id, occurred_at, account_id, contact_id, email, type, source,
                        value, properties, text)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10 FROM claimed
)
SELECT EXISTS (SELECT 1 FROM claimed) AS fresh,
       (SELECT digest FROM event_keys WHERE event_id = $1) AS stored
"""

_NEW_ACCOUNTS = """
INSERT INTO accounts (account_id) SELECT a FROM unnest($1::text[]) AS a ORDER BY a
ON CONFLICT DO NOTHING
"""
_NEW_CONTACTS = """
INSERT INTO contacts (contact_id, account_id)
SELECT c, a FROM unnest($1::text[], $2::text[]) AS t(c, a) ORDER BY c
ON CONFLICT DO NOTHING
"""
# The ids claimed come back as one array: a row each cost more to decode than the claim itself.
_CLAIM_EVENT_KEYS = """
WITH claimed AS (
    INSERT INTO event_keys (event_id, account_id, occurred_at, digest)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bytea[]) ORDER BY 1
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
)
SELECT coalesce(array_agg(event_id), '{}') FROM claimed
"""
_INSERT_FEW_EVENTS = """
INSERT INTO events (event_id, occurred_at, account_id, contact_id, email, type, source,
                    value, properties, text)
SELECT e, o, a, c, m, t, s, v, p::jsonb, x
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::float8[], $9::text[], $10::text[]) AS u(e, o, a, c, m, t, s, v, p, x)
"""
# Below this many rows an INSERT beats COPY, whose protocol costs several round trips.
_COPY_FROM = 64


@dataclass
class Stored:
    """What an ingest call did: a result per item, and the profiles it made sure exist."""

    results: list[ItemResult]
    accounts: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)


async def _resolve_accounts(
    conn: asyncpg.Connection, events: Sequence[tuple[int, EventIn]]
) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """Accounts of contact ids and emails, for events that did not name their account."""
    contact_ids = sorted(
        {c for _, e in events if not e.get("account_id") and (c := e.get("contact_id"))}
    )
    emails = sorted(
        {
            m.lower()
            for _, e in events
            if not e.get("account_id") and not e.get("contact_id") and (m := e.get("email"))
        }
    )
    by_contact: dict[str, str] = {}
    by_email: dict[str, tuple[str, str]] = {}
    if contact_ids:
        by_contact = await identities.contact_accounts(conn, contact_ids)
    if emails:
        rows = await conn.fetch(
            "SELECT value, contact_id, account_id FROM identities "
            "WHERE kind = 'email' AND value = ANY($1::text[])",
            emails,
        )
        by_email = {r[0]: (r[1], r[2]) for r in rows}
    return by_contact, by_email


def _event_row(
    ev: EventIn,
    event_id: str,
    result: ItemResult,
    *,
    now: datetime,
    tolerance: timedelta,
    by_contact: dict[str, str],
    by_email: dict[str, tuple[str, str]],
    horizon: datetime | None = None,
) -> tuple[tuple[Any, ...], bytes] | None:
    """A valid event's row (in EVENT_COLUMNS order, ready for COPY) and the digest of what the
    caller sent; None, with the result rejected and saying why, for an invalid one."""
    occurred_at = parse_timestamp(ev["occurred_at"])
    problem = (
        "occurred_at is not a real moment"
        if occurred_at is None
        else check_moment(occurred_at, now=now, tolerance=tolerance)
    )
    if (
        problem is None
        and horizon is not None
        and occurred_at is not None
        and occurred_at < horizon
    ):
        problem = (
            f"occurred_at is before {horizon.date().isoformat()}: events are kept "
            "only within CUSTINTEL_EVENT_RETENTION_DAYS"
        )
    if problem is not None:
        result.reject("occurred_at", problem)
        return None
    assert occurred_at is not None
    email = ev.get("email")
    email = email.lower() if email else None
    account_id, contact_id = ev.get("account_id"), ev.get("contact_id")
    if account_id is None and contact_id is not None:
        account_id = by_contact.get(contact_id)
        if account_id is None:
            result.reject(
                "contact_id", f"unknown contact_id {contact_id!r}: send account_id with it"
            )
            return None
    elif account_id is None and email is not None:
        found = by_email.get(email)
        if found is None:
            result.reject(
                "email", f"unknown email {email!r}: send account_id or contact_id with it"
            )
            return None
        contact_id, account_id = found
    elif account_id is None:
        result.reject("account_id", "an event needs account_id, contact_id or email")
        return None
    properties = ev.get("properties") or {}
    if jsonbody.nested_deeper(properties, MAX_NESTING):
        result.reject("properties", f"properties are nested deeper than {MAX_NESTING} levels")
        return None
    try:
        properties_json = orjson.dumps(properties, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        result.reject("properties", "numbers in properties must fit in 64 bits")
        return None
    # The digest is of what the caller sent; the instant, not its spelling, is compared.
    head = (
        ev["type"],
        ev.get("source"),
        occurred_at.timestamp(),
        ev.get("account_id"),
        ev.get("contact_id"),
        email,
        ev.get("value"),
        ev.get("text"),
    )
    digest = hashlib.sha256(orjson.dumps(head) + properties_json).digest()
    row = (
        event_id,
        occurred_at,
        account_id,
        contact_id,
        email,
        ev["type"],
        ev.get("source"),
        ev.get("value"),
        properties_json.decode(),
        ev.get("text"),
    )  # in EVENT_COLUMNS order, ready for COPY
    return row, digest


async def ingest_events(
    conn: asyncpg.Connection,
    events: Sequence[tuple[int, EventIn]],
    *,
    now: datetime,
    tolerance: timedelta,
    known: KnownIds,
    partition_manager: partitions.PartitionManager,
    screen: privacy.Screen | None = None,
) -> Stored:
    """Store valid events; return one result per input, by its index in the request. An event
    naming a suppressed account, contact or email (app.governance.privacy) is acknowledged and not
    stored."""
    results: list[ItemResult] = []
    if screen is not None:
        events = await _screened(conn, screen, events, results)
    by_contact, by_email = await _resolve_accounts(conn, events)
    horizon = partition_manager.horizon(now)

    rows: dict[str, tuple[ItemResult, tuple[Any, ...], bytes]] = {}
    accounts: set[str] = set()
    contacts: dict[str, str] = {}
    for index, ev in events:
        event_id = ev.get("event_id") or uuid.uuid4().hex
        result = ItemResult(index, event_id, "accepted")
        results.append(result)
        prepared = _event_row(
            ev,
            event_id,
            result,
            now=now,
            tolerance=tolerance,
            by_contact=by_contact,
            by_email=by_email,
            horizon=horizon,
        )
        if prepared is None:
            continue
        row, digest = prepared
        account_id, contact_id = row[2], row[3]
        earlier = rows.get(event_id)
        if earlier is not None:  # the same id twice in one request
            if earlier[2] == digest:
                result.status = "duplicate"
            else:
                result.reject(
                    "event_id",
                    f"event_id {event_id!r} appears twice with different content",
                    conflict=True,
                )
            continue
        rows[event_id] = (result, row, digest)
        accounts.add(account_id)
        if contact_id is not None and contact_id not in contacts:
            contacts[contact_id] = account_id

    if rows:
        rows, accounts, contacts = await _to_survivors(conn, rows, accounts, contacts)
    if screen is not None and rows:
        # A person's signals need the consent the installation requires (app.governance.privacy).
        refused = await screen.without_consent(conn, contacts)
        if refused:
            for event_id, (result, row, _) in list(rows.items()):
                if row[3] in refused:
                    result.status = "suppressed"
                    del rows[event_id]
            contacts = {c: a for c, a in contacts.items() if c not in refused}
    stored = Stored(results, accounts, set(contacts))
    if not rows:
        return stored
    await partition_manager.ensure({partitions.month_of(r[1][1]) for r in rows.values()})
    if len(rows) == 1:
        [(result, row, digest)] = rows.values()
        if row[1] >= rollups.rollable(now):  # a live event: one statement
            await _store_one_event(conn, result, row, digest, known)
            return stored
        async with conn.transaction():  # a backfill, into a month that may be rolled up
            await rollups.unroll(conn, [row[1]], now=now)
            await _store_one_event(conn, result, row, digest, known)
        return stored
    # Profile stubs are committed on their own, before the events: inside the events'
    # transaction, every concurrent batch naming the same new account or contact waited for
    # that whole transaction to end (ON CONFLICT must know whether the other row commits), which
    # serialised parallel loads. A stub left behind by a failed request is an account with no
    # profile yet, which the next attempt would have created anyway.
    await _ensure_profiles(conn, known, accounts=accounts, contacts=contacts)
    async with conn.transaction():
        inserted = set(
            await conn.fetchval(
                _CLAIM_EVENT_KEYS,
                list(rows),
                [row[2] for _, row, _ in rows.values()],
                [row[1] for _, row, _ in rows.values()],
                [digest for _, _, digest in rows.values()],
            )
        )
        fresh = [row for event_id, (_, row, _) in rows.items() if event_id in inserted]
        await rollups.unroll(conn, [row[1] for row in fresh], now=now)
        if len(fresh) >= _COPY_FROM:
            await conn.copy_records_to_table("events", records=fresh, columns=EVENT_COLUMNS)
        elif fresh:
            await conn.execute(_INSERT_FEW_EVENTS, *map(list, zip(*fresh, strict=True)))
        await _classify_existing(conn, "event_keys", "event_id", rows, inserted)
    return stored


Prepared = dict[str, tuple[ItemResult, tuple[Any, ...], bytes]]


async def _to_survivors(
    conn: asyncpg.Connection, rows: Prepared, accounts: set[str], contacts: dict[str, str]
) -> tuple[Prepared, set[str], dict[str, str]]:
    """Events naming a merged account or contact go to its survivor (their digests stay those of
    what was sent, so a retry is still a duplicate)."""
    found = await identities.survivors(conn, accounts=accounts, contacts=contacts)
    if not found.accounts and not found.contacts:
        return rows, accounts, contacts
    moved: Prepared = {}
    for event_id, (result, row, digest) in rows.items():
        contact_id = None if row[3] is None else found.contact(row[3])
        moved[event_id] = (result, (*row[:2], found.account(row[2]), contact_id, *row[4:]), digest)
    return (
        moved,
        {found.account(a) for a in accounts},
        {found.contact(c): found.account(a) for c, a in contacts.items()},
    )


async def _store_one_event(
    conn: asyncpg.Connection,
    result: ItemResult,
    row: tuple[Any, ...],
    digest: bytes,
    known: KnownIds,
) -> None:
    account_id, contact_id = row[2], row[3]
    new_account = account_id not in known.accounts
    new_contact = contact_id is not None and contact_id not in known.contacts
    answer = await conn.fetchrow(_STORE_ONE_EVENT, *row, new_account, new_contact, digest)
    assert answer is not None
    if answer["fresh"]:
        return
    earlier = answer["stored"]
    if earlier is None:  # claimed by a transaction that committed after this one began
        earlier = await conn.fetchval("SELECT digest FROM event_keys WHERE event_id = $1", row[0])
    _classify(result, "event_id", bytes(earlier) if earlier is not None else None, digest)


def _classify(result: ItemResult, key: str, earlier: bytes | None, digest: bytes) -> None:
    """An item whose key was taken: a duplicate when the content matches, else a conflict."""
    if earlier == digest:
        result.status = "duplicate"
    else:
        result.reject(
            key,
            f"{key} {result.item_id!r} was already stored with different content; "
            "the first version is kept",
            conflict=True,
        )


async def _ensure_profiles(
    conn: asyncpg.Connection, known: KnownIds, *, accounts: set[str], contacts: dict[str, str]
) -> None:
    """Create the accounts and contacts events mention before any profile upsert arrives."""
    new_accounts = sorted(accounts - known.accounts)
    if new_accounts:
        await conn.execute(_NEW_ACCOUNTS, new_accounts)
    new_contacts = sorted(c for c in contacts if c not in known.contacts)
    if new_contacts:
        await conn.execute(_NEW_CONTACTS, new_contacts, [contacts[c] for c in new_contacts])


async def _classify_existing(
    conn: asyncpg.Connection,
    table: str,
    key: str,
    rows: dict[str, tuple[ItemResult, Any, bytes]],
    inserted: set[str],
) -> None:
    """Items not inserted were stored before: a duplicate when the content matches."""
    existing = [item_id for item_id in rows if item_id not in inserted]
    if not existing:
        return
    query = f"SELECT {key}, digest FROM {table} WHERE {key} = ANY($1::text[])"  # noqa: S608  (fixed)
    found = await conn.fetch(query, existing)
    digests = {r[0]: bytes(r[1]) for r in found}
    for item_id in existing:
        result, _, digest = rows[item_id]
        _classify(result, key, digests.get(item_id), digest)


_INSERT_OUTCOMES = """
INSERT INTO outcomes (outcome_id, account_id, kind, occurred_at, amount, properties, digest)
SELECT o, a, k, t, m, p::jsonb, d
FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[], $6::text[],
            $7::bytea[]) AS u(o, a, k, t, m, p, d)
ORDER BY o
ON CONFLICT (outcome_id) DO NOTHING
RETURNING outcome_id
"""


async def _screened(
    conn: asyncpg.Connection,
    screen: privacy.Screen,
    events: Sequence[tuple[int, EventIn]],
    results: list[ItemResult],
) -> list[tuple[int, EventIn]]:
    """The events that name nothing suppressed; a result `suppressed` for each of the others."""

    def names(ev: EventIn) -> list[tuple[privacy.Kind, str | None]]:
        email = ev.get("email")
        return [
            ("account", ev.get("account_id")),
            ("contact", ev.get("contact_id")),
            ("email", email.lower() if email else None),
            # an erased email in the text or the properties keeps the event out too
            *privacy.emails_in((ev.get("text"), ev.get("properties"))),
        ]

    named = [names(ev) for _, ev in events]  # once: the emails in texts are searched for
    blocked = await screen.blocked(conn, (n for each in named for n in each))
    if not blocked:
        return list(events)
    kept = []
    for (index, ev), each in zip(events, named, strict=True):
        if any(n in blocked for n in each):
            results.append(ItemResult(index, ev.get("event_id") or "", "suppressed"))
        else:
            kept.append((index, ev))
    return kept


async def ingest_outcomes(
    conn: asyncpg.Connection,
    outcomes: Sequence[tuple[int, OutcomeIn]],
    *,
    now: datetime,
    tolerance: timedelta,
    known: KnownIds,
    screen: privacy.Screen | None = None,
) -> Stored:
    results: list[ItemResult] = []
    rows: dict[str, tuple[ItemResult, tuple[Any, ...], bytes]] = {}

    def names(oc: OutcomeIn) -> list[tuple[privacy.Kind, str]]:
        return [("account", oc.account_id), *privacy.emails_in(oc.properties)]

    named = [names(oc) for _, oc in outcomes] if screen is not None else []
    blocked = (
        await screen.blocked(conn, (n for each in named for n in each))
        if screen is not None
        else set()
    )
    for n, (index, oc) in enumerate(outcomes):
        if blocked and set(named[n]) & blocked:
            results.append(ItemResult(index, oc.outcome_id or "", "suppressed"))
            continue
        outcome_id = oc.outcome_id or uuid.uuid4().hex
        result = ItemResult(index, outcome_id, "accepted")
        results.append(result)
        problem = check_moment(oc.occurred_at, now=now, tolerance=tolerance)
        if problem is not None:
            result.reject("occurred_at", problem)
            continue
        content = (oc.account_id, oc.kind, oc.occurred_at.timestamp(), oc.amount, oc.properties)
        digest = _digest(content)
        earlier = rows.get(outcome_id)
        if earlier is not None:
            if earlier[2] == digest:
                result.status = "duplicate"
            else:
                result.reject(
                    "outcome_id",
                    f"outcome_id {outcome_id!r} appears twice with different content",
                    conflict=True,
                )
            continue
        row = (
            outcome_id,
            oc.account_id,
            oc.kind,
            oc.occurred_at,
            oc.amount,
            orjson.dumps(oc.properties).decode(),
            digest,
        )
        rows[outcome_id] = (result, row, digest)
    accounts = {r[1][1] for r in rows.values()}
    found = await identities.survivors(conn, accounts=accounts)
    if found.accounts:  # a merged account's outcomes go to its survivor
        rows = {
            key: (result, (row[0], found.account(row[1]), *row[2:]), digest)
            for key, (result, row, digest) in rows.items()
        }
        accounts = {found.account(a) for a in accounts}
    stored = Stored(results, accounts)
    if not rows:
        return stored
    async with conn.transaction():
        await _ensure_profiles(conn, known, accounts=accounts, contacts={})
        columns = list(map(list, zip(*(r[1] for r in rows.values()), strict=True)))
        inserted = {r[0] for r in await conn.fetch(_INSERT_OUTCOMES, *columns)}
        await _classify_existing(conn, "outcomes", "outcome_id", rows, inserted)
    return stored


@dataclass(frozen=True)
class Context:
    """What storing a door's signals needs besides the connection: every door (the REST API,
    Segment, the senders' webhooks, a replay, the attaching of held signals) builds this one
    (app.api.common.ingest_context)."""

    now: datetime
    tolerance: timedelta
    limits: profiles.TraitLimits
    known: KnownIds
    partition_manager: partitions.PartitionManager
    unresolved_days: int
    screen: privacy.Screen | None = None

    async def ingest_events(
        self, conn: asyncpg.Connection, events: Sequence[tuple[int, EventIn]]
    ) -> Stored:
        return await ingest_events(
            conn,
            events,
            now=self.now,
            tolerance=self.tolerance,
            known=self.known,
            partition_manager=self.partition_manager,
            screen=self.screen,
        )
