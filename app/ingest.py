"""Events and outcomes: resolution to an account, idempotency by the caller's ids, storage.

Idempotency holds forever and across partitions: event_keys has one row per event_id ever
accepted with a digest of its content. The same id and digest again is a duplicate (stored once);
the same id with another digest is a conflict, and the first version stays.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import bindparam, event, text
from sqlalchemy.dialects.postgresql import ARRAY, BYTEA, DOUBLE_PRECISION, TEXT, TIMESTAMP
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app import jsonbody, partitions
from app.schemas.common import MAX_NESTING
from app.schemas.signals import EventIn, OutcomeIn

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)

Status = Literal["accepted", "duplicate", "error"]


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

    Accounts and contacts are never deleted, so an id once committed stays valid.
    """

    accounts: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)
    limit: int = 500_000

    def remember_on_commit(
        self, session: AsyncSession, *, accounts: set[str], contacts: set[str]
    ) -> None:
        if not accounts and not contacts:
            return

        def _remember(_: Session) -> None:
            if len(self.accounts) + len(accounts) > self.limit:
                self.accounts.clear()
            if len(self.contacts) + len(contacts) > self.limit:
                self.contacts.clear()
            self.accounts |= accounts
            self.contacts |= contacts

        event.listen(session.sync_session, "after_commit", _remember, once=True)


def _digest(payload: Any) -> bytes:
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).digest()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


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


_SCALARS = frozenset({str, int, float, bool, type(None)})


def too_deep(properties: dict[str, Any]) -> bool:
    # Flat properties are the common case: one C-level pass over the value types, no walk.
    if set(map(type, properties.values())) <= _SCALARS:
        return False
    return jsonbody.depth(properties) > MAX_NESTING


def check_occurred_at(occurred_at: datetime, *, now: datetime, tolerance: timedelta) -> str | None:
    if occurred_at > now + tolerance:
        hours = tolerance.total_seconds() / 3600
        return f"occurred_at lies more than {hours:g} h in the future"
    if occurred_at < EARLIEST:
        return "occurred_at before 1970-01-01 is not accepted"
    return None


_ARR_TEXT = ARRAY(TEXT)


async def _ensure_profiles(
    session: AsyncSession, known: KnownIds, *, accounts: set[str], contacts: dict[str, str]
) -> None:
    """Create the accounts and contacts events mention before any profile upsert arrives."""
    new_accounts = sorted(accounts - known.accounts)
    if new_accounts:
        await session.execute(
            text(
                "INSERT INTO accounts (account_id) SELECT a FROM unnest(:ids) AS a ORDER BY a "
                "ON CONFLICT DO NOTHING"
            ).bindparams(bindparam("ids", type_=_ARR_TEXT)),
            {"ids": new_accounts},
        )
    new_contacts = sorted(c for c in contacts if c not in known.contacts)
    if new_contacts:
        await session.execute(
            text(
                "INSERT INTO contacts (contact_id, account_id) "
                "SELECT c, a FROM unnest(:cids, :aids) AS t(c, a) ORDER BY c "
                "ON CONFLICT DO NOTHING"
            ).bindparams(bindparam("cids", type_=_ARR_TEXT), bindparam("aids", type_=_ARR_TEXT)),
            {"cids": new_contacts, "aids": [contacts[c] for c in new_contacts]},
        )


async def _resolve_accounts(
    session: AsyncSession, events: Sequence[tuple[int, EventIn]]
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
        rows = await session.execute(
            text(
                "SELECT contact_id, account_id FROM contacts WHERE contact_id = ANY(:ids)"
            ).bindparams(bindparam("ids", type_=_ARR_TEXT)),
            {"ids": contact_ids},
        )
        by_contact = {r[0]: r[1] for r in rows}
    if emails:
        rows = await session.execute(
            text(
                "SELECT value, contact_id, account_id FROM identities "
                "WHERE kind = 'email' AND value = ANY(:ids)"
            ).bindparams(bindparam("ids", type_=_ARR_TEXT)),
            {"ids": emails},
        )
        by_email = {r[0]: (r[1], r[2]) for r in rows}
    return by_contact, by_email


_CLAIM_EVENT_KEYS = text(
    """
    INSERT INTO event_keys (event_id, account_id, occurred_at, digest)
    SELECT * FROM unnest(:event_id, :account_id, :occurred_at, :digest) ORDER BY 1
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
    """
).bindparams(
    bindparam("event_id", type_=_ARR_TEXT),
    bindparam("account_id", type_=_ARR_TEXT),
    bindparam("occurred_at", type_=ARRAY(TIMESTAMP(timezone=True))),
    bindparam("digest", type_=ARRAY(BYTEA)),
)

_EVENT_COLUMNS = (
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


_INSERT_FEW_EVENTS = text(
    """
    INSERT INTO events (event_id, occurred_at, account_id, contact_id, email, type, source,
                        value, properties, text)
    SELECT e, o, a, c, m, t, s, v, p::jsonb, x
    FROM unnest(:e, :o, :a, :c, :m, :t, :s, :v, :p, :x) AS u(e, o, a, c, m, t, s, v, p, x)
    """
).bindparams(
    *(bindparam(n, type_=_ARR_TEXT) for n in "eacmtspx"),
    bindparam("o", type_=ARRAY(TIMESTAMP(timezone=True))),
    bindparam("v", type_=ARRAY(DOUBLE_PRECISION)),
)

# Below this many rows an INSERT beats COPY, whose protocol costs several round trips.
_COPY_FROM = 64


async def _copy_events(session: AsyncSession, records: list[tuple[Any, ...]]) -> None:
    """Store the rows whose keys this transaction claimed: COPY for many (the cheapest way into
    Postgres, and safe because event_keys already decided which rows are new), INSERT for few."""
    if not records:
        return
    if len(records) < _COPY_FROM:
        columns = list(zip(*records, strict=True))
        await session.execute(_INSERT_FEW_EVENTS, dict(zip("eoacmtsvpx", columns, strict=True)))
        return
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await driver.copy_records_to_table("events", records=records, columns=_EVENT_COLUMNS)


async def ingest_events(
    session: AsyncSession,
    events: Sequence[tuple[int, EventIn]],
    *,
    now: datetime,
    tolerance: timedelta,
    known: KnownIds,
    partition_manager: partitions.PartitionManager,
) -> list[ItemResult]:
    """Store valid events; return one result per input, by its index in the request."""
    results: list[ItemResult] = []
    by_contact, by_email = await _resolve_accounts(session, events)

    rows: dict[str, tuple[ItemResult, tuple[Any, ...], bytes]] = {}
    accounts: set[str] = set()
    contacts: dict[str, str] = {}
    for index, ev in events:
        event_id = ev.get("event_id") or uuid.uuid4().hex
        result = ItemResult(index, event_id, "accepted")
        results.append(result)
        occurred_at = parse_timestamp(ev["occurred_at"])
        problem = (
            "occurred_at is not a real moment"
            if occurred_at is None
            else check_occurred_at(occurred_at, now=now, tolerance=tolerance)
        )
        if problem is not None:
            result.reject("occurred_at", problem)
            continue
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
                continue
        elif account_id is None and email is not None:
            found = by_email.get(email)
            if found is None:
                result.reject(
                    "email", f"unknown email {email!r}: send account_id or contact_id with it"
                )
                continue
            contact_id, account_id = found
        elif account_id is None:
            result.reject("account_id", "an event needs account_id, contact_id or email")
            continue
        properties = ev.get("properties") or {}
        if too_deep(properties):
            result.reject("properties", f"properties are nested deeper than {MAX_NESTING} levels")
            continue
        try:
            properties_json = orjson.dumps(properties, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            result.reject("properties", "numbers in properties must fit in 64 bits")
            continue
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
        )  # in _EVENT_COLUMNS order, ready for COPY
        rows[event_id] = (result, row, digest)
        accounts.add(account_id)
        if contact_id is not None and contact_id not in contacts:
            contacts[contact_id] = account_id

    if not rows:
        return results
    await partition_manager.ensure({partitions.month_of(r[1][1]) for r in rows.values()})
    await _ensure_profiles(session, known, accounts=accounts, contacts=contacts)
    claimed = await session.execute(
        _CLAIM_EVENT_KEYS,
        {
            "event_id": list(rows),
            "account_id": [row[2] for _, row, _ in rows.values()],
            "occurred_at": [row[1] for _, row, _ in rows.values()],
            "digest": [digest for _, _, digest in rows.values()],
        },
    )
    inserted = set(claimed.scalars())
    await _copy_events(
        session,
        [row for event_id, (_, row, _) in rows.items() if event_id in inserted],
    )
    await _classify_existing(session, "event_keys", "event_id", rows, inserted)
    known.remember_on_commit(session, accounts=accounts, contacts=set(contacts))
    return results


async def _classify_existing(
    session: AsyncSession,
    table: str,
    key: str,
    rows: dict[str, tuple[ItemResult, Any, bytes]],
    inserted: set[str],
) -> None:
    """Items not inserted were stored before: a duplicate when the content matches."""
    existing = [item_id for item_id in rows if item_id not in inserted]
    if not existing:
        return
    found = await session.execute(
        text(f"SELECT {key}, digest FROM {table} WHERE {key} = ANY(:ids)").bindparams(
            bindparam("ids", type_=_ARR_TEXT)
        ),
        {"ids": existing},
    )
    digests = {r[0]: bytes(r[1]) for r in found}
    for item_id in existing:
        result, _, digest = rows[item_id]
        if digests.get(item_id) == digest:
            result.status = "duplicate"
        else:
            result.reject(
                key,
                f"{key} {item_id!r} was already stored with different content; "
                "the first version is kept",
                conflict=True,
            )


_INSERT_OUTCOMES = text(
    """
    INSERT INTO outcomes (outcome_id, account_id, kind, occurred_at, amount, properties, digest)
    SELECT outcome_id, account_id, kind, occurred_at, amount, properties::jsonb, digest
    FROM unnest(:outcome_id, :account_id, :kind, :occurred_at, :amount, :properties, :digest)
         AS t(outcome_id, account_id, kind, occurred_at, amount, properties, digest)
    ORDER BY outcome_id
    ON CONFLICT (outcome_id) DO NOTHING
    RETURNING outcome_id
    """
).bindparams(
    *(bindparam(n, type_=_ARR_TEXT) for n in ("outcome_id", "account_id", "kind", "properties")),
    bindparam("occurred_at", type_=ARRAY(TIMESTAMP(timezone=True))),
    bindparam("amount", type_=ARRAY(DOUBLE_PRECISION)),
    bindparam("digest", type_=ARRAY(BYTEA)),
)


async def ingest_outcomes(
    session: AsyncSession,
    outcomes: Sequence[tuple[int, OutcomeIn]],
    *,
    now: datetime,
    tolerance: timedelta,
    known: KnownIds,
) -> list[ItemResult]:
    results: list[ItemResult] = []
    rows: dict[str, tuple[ItemResult, dict[str, Any], bytes]] = {}
    for index, oc in outcomes:
        outcome_id = oc.outcome_id or uuid.uuid4().hex
        result = ItemResult(index, outcome_id, "accepted")
        results.append(result)
        problem = check_occurred_at(oc.occurred_at, now=now, tolerance=tolerance)
        if problem is not None:
            result.reject("occurred_at", problem)
            continue
        content = {
            "account_id": oc.account_id,
            "kind": oc.kind,
            "occurred_at": _utc(oc.occurred_at),
            "amount": oc.amount,
            "properties": oc.properties,
        }
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
        row = {
            "outcome_id": outcome_id,
            "account_id": oc.account_id,
            "kind": oc.kind,
            "occurred_at": oc.occurred_at,
            "amount": oc.amount,
            "properties": orjson.dumps(oc.properties or {}).decode(),
            "digest": digest,
        }
        rows[outcome_id] = (result, row, digest)
    if not rows:
        return results
    accounts = {r[1]["account_id"] for r in rows.values()}
    await _ensure_profiles(session, known, accounts=accounts, contacts={})
    columns = {name: [r[1][name] for r in rows.values()] for name in next(iter(rows.values()))[1]}
    inserted = set((await session.execute(_INSERT_OUTCOMES, columns)).scalars())
    await _classify_existing(session, "outcomes", "outcome_id", rows, inserted)
    known.remember_on_commit(session, accounts=accounts, contacts=set())
    return results
