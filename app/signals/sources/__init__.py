"""Sources: the senders whose signed webhooks arrive at /hooks/{source_id} (Stripe, Zendesk,
HubSpot, Intercom), and what became of each event they delivered.

Owns `sources` (signing secrets sealed by app.governance.vault; a rotated-out secret keeps
verifying for a grace period) and `source_deliveries` (one row per event by the sender's own id, so
a redelivery is a duplicate forever; its status, the reason when it was rejected, and its payload
until the retention deletes it). A delivery is verified, stored and mapped in one transaction:
each sender module (app/signals/sources/<kind>.py) checks the signature and turns its events into
custintel's events, outcomes and profile changes; an event whose account cannot be found yet is
held with the identities that would find it (`unresolved_signals`) and attached when an account
claims one of them.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import ModuleType

import asyncpg
import orjson
from pydantic import TypeAdapter, ValidationError

from app.governance import audit, privacy, vault
from app.people import identities, merges, profiles
from app.platform import errors, jsonbody
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.common import Id
from app.schemas.profiles import AccountUpsert, ContactUpsert
from app.schemas.signals import EventIn, OutcomeIn
from app.schemas.sources import HookAnswer, Rejection, Replay, Source
from app.signals import ingest
from app.signals.sources import common, hubspot, intercom, stripe, zendesk

SENDERS: dict[str, ModuleType] = {
    "stripe": stripe,
    "zendesk": zendesk,
    "hubspot": hubspot,
    "intercom": intercom,
}
HELD_SOURCE = "hooks"  # unresolved_signals.source of held deliveries
log = logging.getLogger(__name__)
_events_in = TypeAdapter(EventIn)
_account_id = TypeAdapter(Id)
_REFUSED = "The delivery could not be verified."  # never says which check failed

_VIEW = """
    SELECT s.source_id, s.kind, s.name, s.enabled, s.settings, s.created_at, s.updated_at,
           s.previous_secret_until,
           coalesce(d.received, 0) AS received, coalesce(d.accepted, 0) AS accepted,
           coalesce(d.ignored, 0) AS ignored, coalesce(d.rejected, 0) AS rejected,
           coalesce(d.held, 0) AS held, coalesce(d.duplicates, 0) AS duplicates,
           d.last_received_at
    FROM sources s
    LEFT JOIN LATERAL (
        SELECT count(*) + sum(redeliveries) AS received,
               count(*) FILTER (WHERE status = 'accepted') AS accepted,
               count(*) FILTER (WHERE status = 'ignored') AS ignored,
               count(*) FILTER (WHERE status = 'rejected') AS rejected,
               count(*) FILTER (WHERE status = 'held') AS held,
               sum(redeliveries) AS duplicates,
               max(last_received_at) AS last_received_at
        FROM source_deliveries WHERE source_id = s.source_id
    ) d ON true
"""


def _view(row: asyncpg.Record) -> Source:
    view = dict(row)
    view["settings"] = orjson.loads(view["settings"])
    view["url"] = f"/hooks/{view['source_id']}"
    view["secret_rotating_until"] = view.pop("previous_secret_until")
    return Source.model_validate(view)


async def create(
    conn: asyncpg.Connection,
    *,
    kind: str,
    name: str,
    secret: str,
    source_settings: JSONObject,
    settings: Settings,
    actor: str,
) -> Source:
    source_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO sources (source_id, kind, name, secret, settings) VALUES ($1, $2, $3, $4, $5)",
        source_id,
        kind,
        name,
        vault.seal(settings, secret),
        orjson.dumps(source_settings).decode(),
    )
    await audit.record(
        conn, actor=actor, action="source.created", target=str(source_id), details={"kind": kind}
    )
    return await get(conn, source_id)


async def get(conn: asyncpg.Connection, source_id: uuid.UUID) -> Source:
    row = await conn.fetchrow(_VIEW + " WHERE s.source_id = $1", source_id)
    if row is None:
        raise errors.NotFound(f"No source {source_id}.")
    return _view(row)


async def list_all(conn: asyncpg.Connection) -> list[Source]:
    return [_view(r) for r in await conn.fetch(_VIEW + " ORDER BY s.created_at, s.source_id")]


async def update(
    conn: asyncpg.Connection,
    source_id: uuid.UUID,
    *,
    changes: JSONObject,
    settings: Settings,
    actor: str,
) -> Source:
    """Rename, replace the settings, enable or disable, or take a new secret (the old one keeps
    verifying for `grace_hours`)."""
    row = await conn.fetchrow(
        "SELECT source_id FROM sources WHERE source_id = $1 FOR UPDATE", source_id
    )
    if row is None:
        raise errors.NotFound(f"No source {source_id}.")
    settings_json = None if changes.get("settings") is None else orjson.dumps(changes["settings"])
    await conn.execute(  # null keeps a value: none of these can be cleared
        "UPDATE sources SET name = coalesce($2, name), settings = coalesce($3::jsonb, settings), "
        "enabled = coalesce($4, enabled), updated_at = now() WHERE source_id = $1",
        source_id,
        changes.get("name"),
        None if settings_json is None else settings_json.decode(),
        changes.get("enabled"),
    )
    if "secret" in changes:
        grace = timedelta(hours=changes.get("grace_hours", 24))
        await conn.execute(
            "UPDATE sources SET previous_secret = secret, secret = $2, "
            "previous_secret_until = now() + $3::interval, updated_at = now() "
            "WHERE source_id = $1",
            source_id,
            vault.seal(settings, changes["secret"]),
            grace,
        )
    shown = sorted(k for k in changes if k != "secret") + (
        ["secret"] if "secret" in changes else []
    )
    await audit.record(
        conn,
        actor=actor,
        action="source.updated",
        target=str(source_id),
        details={"changed": shown},
    )
    return await get(conn, source_id)


async def delete(conn: asyncpg.Connection, source_id: uuid.UUID, *, actor: str) -> None:
    deleted = await conn.fetchval(
        "DELETE FROM sources WHERE source_id = $1 RETURNING source_id", source_id
    )
    if deleted is None:
        raise errors.NotFound(f"No source {source_id}.")
    await audit.record(conn, actor=actor, action="source.deleted", target=str(source_id))


async def receiver(conn: asyncpg.Connection, source_id: uuid.UUID) -> asyncpg.Record:
    """What verifies deliveries to this source; 401 when it is unknown or disabled (before
    anything of the delivery is read)."""
    row = await conn.fetchrow(
        "SELECT source_id, kind, secret, previous_secret, previous_secret_until, settings "
        "FROM sources WHERE source_id = $1 AND enabled",
        source_id,
    )
    if row is None:
        raise errors.Unauthorized(_REFUSED)
    return row


def _verify(row: asyncpg.Record, request: common.Request, settings: Settings) -> JSONObject:
    """Raise 401 unless the delivery is signed with the source's secret; the source's
    settings."""
    try:
        secrets = [vault.unseal(settings, row["secret"])]
        until = row["previous_secret_until"]
        if row["previous_secret"] is not None and until and until > request.received_at:
            secrets.append(vault.unseal(settings, row["previous_secret"]))
    except vault.Unreadable:
        # The key changed since the secret was stored: nothing can verify until the source
        # gets its secret again (PATCH), which the operator learns here.
        log.error("a source's signing secret does not decrypt", extra={"source": str(row[0])})
        raise errors.Unauthorized(_REFUSED) from None
    sender = SENDERS[row["kind"]]
    source_settings: JSONObject = orjson.loads(row["settings"])
    try:
        verified = sender.verify(
            request, secrets, window=settings.source_replay_seconds, settings=source_settings
        )
    except (OverflowError, OSError, ValueError):  # a signed moment no calendar holds
        verified = False
    if not verified:
        raise errors.Unauthorized(_REFUSED)
    return source_settings


@dataclass(frozen=True)
class Delivery:
    """A verified delivery, its events found and mapped: all that storing it needs."""

    source_id: uuid.UUID
    kind: str
    received_at: datetime
    found: list[common.Item]
    meant: JSONObject


def verify(row: asyncpg.Record, request: common.Request, *, settings: Settings) -> Delivery:
    """Verify a delivery to the source `row` (from receiver()) and map its events: no database,
    so a slow sender's upload holds no connection (the receiver reads the body before this)."""
    source_settings = _verify(row, request, settings)
    kind = row["kind"]
    try:
        payload = common.without_nul(jsonbody.parse(request.body, refuse_nul=False))
        found = SENDERS[kind].items(payload, request)
    except ValueError as problem:
        raise errors.BadRequest(str(problem)) from None
    meant = {i.delivery_id: _map(kind, i, source_settings) for i in found}
    return Delivery(row["source_id"], kind, request.received_at, found, meant)


async def receive(
    conn: asyncpg.Connection, delivery: Delivery, *, ctx: ingest.Context
) -> HookAnswer:
    """Store and land each event of a verified delivery that is new; what became of them,
    counted."""
    source_id, kind, found, meant = (
        delivery.source_id,
        delivery.kind,
        delivery.found,
        delivery.meant,
    )
    tally = {"received": len(found), "duplicates": 0}
    tally.update(accepted=0, ignored=0, rejected=0, held=0, suppressed=0)
    # Mapping needed no database: most events are recorded with their final status in one
    # statement.
    async with conn.transaction():
        fresh = await _claim(conn, source_id, found, meant, delivery.received_at)
        tally["duplicates"] = len(found) - len(fresh)
        for item in fresh:
            mapped = meant[item.delivery_id]
            if isinstance(mapped, tuple):
                tally[mapped[0]] += 1
                continue
            status, reason = await _land(conn, source_id, kind, item, mapped, ctx)
            if status != "accepted":
                await _mark(conn, source_id, item.delivery_id, status, reason)
            tally[status] += 1
    return HookAnswer(**tally)


async def _mark(
    conn: asyncpg.Connection,
    source_id: uuid.UUID,
    delivery_id: str,
    status: str,
    reason: str | None,
) -> None:
    # A suppressed event's payload names an erased identifier: it is not kept.
    await conn.execute(
        "UPDATE source_deliveries SET status = $3::text, reason = $4, "
        "payload = CASE WHEN $3::text = 'suppressed' THEN NULL ELSE payload END "
        "WHERE source_id = $1 AND delivery_id = $2",
        source_id,
        delivery_id,
        status,
        reason,
    )


async def _claim(
    conn: asyncpg.Connection,
    source_id: uuid.UUID,
    found: list[common.Item],
    meant: dict[str, common.Mapped | tuple[str, str]],
    at: datetime,
) -> list[common.Item]:
    """Record the delivery's events (mapped ones as accepted until landing says otherwise);
    those seen before count a redelivery and are not new."""
    unique = {i.delivery_id: i for i in found}
    status = {
        d: ("accepted", None) if isinstance(m, common.Mapped) else m for d, m in meant.items()
    }
    new = set(
        await conn.fetchval(
            """
            WITH u AS (
                SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $6::text[], $7::text[])
                    AS u(d, t, p, s, r))
            , inserted AS (
                INSERT INTO source_deliveries
                    (source_id, delivery_id, event_type, status, reason, payload, received_at,
                     last_received_at)
                SELECT $1, d, t, s, r, p::jsonb, $5, $5 FROM u ORDER BY d
                ON CONFLICT (source_id, delivery_id) DO NOTHING
                RETURNING delivery_id)
            SELECT coalesce(array_agg(delivery_id), '{}') FROM inserted
            """,
            source_id,
            list(unique),
            [i.event_type[:255] for i in unique.values()],
            [orjson.dumps(i.payload).decode() for i in unique.values()],
            at,
            [status[d][0] for d in unique],
            [status[d][1] for d in unique],
        )
    )
    again = [d for d in unique if d not in new]
    if again:
        await conn.execute(
            "UPDATE source_deliveries SET redeliveries = redeliveries + 1, last_received_at = $3 "
            "WHERE source_id = $1 AND delivery_id = ANY($2::text[])",
            source_id,
            again,
            at,
        )
    return [unique[d] for d in unique if d in new]


async def _contact(conn: asyncpg.Connection, party: common.Party) -> Person | None:
    """The contact (and its account) a party's person identifiers name."""
    for kind, value in party.contact_pairs():
        for match in await identities.resolve(conn, kind, value):
            if match.contact_id is not None:
                return match.contact_id, match.account_id
    return None


Person = tuple[str, str]  # (contact_id, account_id)


async def _account(
    conn: asyncpg.Connection, party: common.Party
) -> tuple[str | None, str, Person | None]:
    """The account a party names, how it was found, and the person when that is how."""
    if party.account_id:
        return party.account_id, "metadata", None
    held = await identities.owners(conn, "account", party.account_identities)
    for pair in party.account_identities:
        if pair in held:
            return held[pair], "identity", None
    if party.domain:
        by_domain = await identities.owners(conn, "account", [("domain", party.domain)])
        if by_domain:
            return next(iter(by_domain.values())), "domain", None
    person = await _contact(conn, party)
    if person is not None:
        return person[1], "contact", person
    return None, "", None


def _map(
    kind: str, item: common.Item, source_settings: JSONObject
) -> common.Mapped | tuple[str, str]:
    """An event in custintel's vocabulary, or the status it ends with and why."""
    try:
        mapped: common.Mapped = SENDERS[kind].map_item(item, source_settings)
    except common.Ignored as ignored:
        return "ignored", str(ignored)
    except common.Rejected as rejected:
        return "rejected", str(rejected)
    except (OverflowError, OSError, ValueError):
        # A sender's timestamp no calendar holds (year 10000, 1e20 seconds): this event alone is
        # refused, saying so; never a 500, nor the 503 an OSError would otherwise read as.
        return "rejected", "a timestamp in it lies outside the years 1 to 9999"
    return mapped


async def _apply(
    conn: asyncpg.Connection,
    source_id: uuid.UUID,
    kind: str,
    item: common.Item,
    source_settings: JSONObject,
    ctx: ingest.Context,
) -> tuple[str, str | None]:
    """Map one event and store what it means; its status and, unless accepted, why."""
    mapped = _map(kind, item, source_settings)
    if isinstance(mapped, tuple):
        return mapped
    return await _land(conn, source_id, kind, item, mapped, ctx)


async def _land(
    conn: asyncpg.Connection,
    source_id: uuid.UUID,
    kind: str,
    item: common.Item,
    mapped: common.Mapped,
    ctx: ingest.Context,
) -> tuple[str, str | None]:
    """Find the account a mapped event is about and store it there, or hold it."""
    account_id, found_by, person = await _account(conn, mapped.party)
    if ctx.screen is not None:
        party = mapped.party
        names: list[tuple[privacy.Kind, str | None]] = [
            ("identity", f"{k}:{v}") for k, v in party.account_identities + party.contact_pairs()
        ]
        names += [("email", party.contact_email.strip().lower() if party.contact_email else None)]
        names += [("account", account_id), ("account", party.account_id)]
        names += [("contact", person[0] if person else None)]
        # Any email the payload holds (a Stripe invoice's customer_email, a CC on a ticket).
        names += privacy.emails_in(item.payload)
        if await ctx.screen.blocked(conn, names):
            return "suppressed", None
    if found_by == "contact" and mapped.create_contact is not None:
        # An association: the company decides where the contact belongs, not where it was.
        account_id, found_by, person = None, "", None
    if account_id is None and mapped.create_account is not None:
        account_id, found_by = mapped.create_account, "created"
    if account_id is None:
        keys = mapped.party.keys()
        if not keys:
            return "rejected", "names no customer, account or email to find its account by"
        reason = "no account holds " + ", ".join(keys)
        await conn.execute(
            "INSERT INTO unresolved_signals (received_at, source, call, keys, message, reason) "
            "VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
            ctx.now,
            HELD_SOURCE,
            item.event_type[:32],
            keys,
            orjson.dumps(
                {"source_id": str(source_id), "delivery_id": item.delivery_id, "kind": kind}
            ).decode(),
            reason,
        )
        return "held", reason
    if found_by == "identity" and account_id == mapped.create_account and mapped.party.domain:
        # An account this sender made for want of another (`hubspot-<id>`), whose domain turns
        # out to be an account's already: it is that account, merged into it with its history.
        holder = await identities.owners(conn, "account", [("domain", mapped.party.domain)])
        survivor = next(iter(holder.values()), None)
        if survivor is not None and survivor != account_id:
            async with conn.transaction():
                await merges.merge(
                    conn,
                    "account",
                    survivor_id=survivor,
                    merged_id=account_id,
                    actor=f"{kind} (same domain)",
                    now=ctx.now,
                )
            account_id, found_by = survivor, "domain"
    linking = (
        found_by in ("metadata", "created")
        or (found_by == "domain" and mapped.create_account is not None)
    ) and not all(p in ctx.known.linked for p in mapped.party.account_identities)
    writes = (bool(mapped.account) or linking) + len(mapped.contacts)
    writes += bool(mapped.events) + bool(mapped.outcomes)
    try:
        if writes > 1:
            async with conn.transaction():  # a refusal below leaves nothing of this event
                await _store(conn, account_id, mapped, found_by, person, ctx)
        else:  # one statement: nothing to undo when it refuses
            await _store(conn, account_id, mapped, found_by, person, ctx)
    except common.Rejected as rejected:
        return "rejected", str(rejected)
    return "accepted", None


async def _store(
    conn: asyncpg.Connection,
    account_id: str,
    mapped: common.Mapped,
    found_by: str,
    person: Person | None,
    ctx: ingest.Context,
) -> None:
    """Store a mapped event at its account; `person`, when the account was found through it."""
    try:
        _account_id.validate_python(account_id)
    except ValidationError:
        raise common.Rejected(
            f"{account_id!r} is not an account id (1 to 255 characters, no control characters "
            "or /): check the source's settings"
        ) from None
    account = dict(mapped.account or {})
    if person is None and mapped.party.contact_pairs() and (mapped.events or mapped.contacts):
        person = await _contact(conn, mapped.party)
    if person is not None and person[1] == account_id:  # the person, at this account
        mapped.events = [{"contact_id": person[0], **e} for e in mapped.events]
    unknown = [p for p in mapped.party.account_identities if p not in ctx.known.linked]
    # A company record found by its domain (HubSpot's) is that account's too.
    by_domain = found_by == "domain" and mapped.create_account is not None
    if (found_by in ("metadata", "created") or by_domain) and unknown:
        # The metadata names the account (or the sender just made it): the sender's id for it
        # becomes the account's, unless another account holds it already (the metadata still
        # decides where this event goes).
        held = await identities.owners(conn, "account", unknown)
        if len(ctx.known.linked) > ctx.known.limit:
            ctx.known.linked.clear()
        ctx.known.linked.update(held)
        free = set(unknown) - set(held)
        if free:
            linked = [{"kind": k, "value": v} for k, v in sorted(free)]
            account["identities"] = [*account.get("identities", []), *linked]
    if set(account) - {"observed_at"}:
        account.setdefault("observed_at", ctx.now.isoformat())
        try:
            upsert = AccountUpsert.model_validate_json(orjson.dumps(account))
        except ValidationError as invalid:
            raise common.Rejected(_first(invalid)) from None
        item = profiles.item(0, account_id, upsert, now=ctx.now)
        outcome = await profiles.upsert(
            conn, "account", [item], now=ctx.now, limits=ctx.limits, answer=False, screen=ctx.screen
        )
        for _, detail in outcome.errors + outcome.conflicts:
            raise common.Rejected(detail)
        # Deliveries held for the identities just linked (a deal's company) land now.
        await attach(conn, {f"{k}:{v}" for k, v in item.identities}, ctx=ctx)
    if mapped.create_contact is not None:
        person = (person[0] if person else mapped.create_contact, account_id)
    for _, fields in mapped.contacts:
        if person is None:
            raise common.Rejected("no contact holds " + ", ".join(mapped.party.keys()))
        contact = {**fields, "account_id": person[1]}
        try:
            change = ContactUpsert.model_validate_json(orjson.dumps(contact))
        except ValidationError as invalid:
            raise common.Rejected(_first(invalid)) from None
        outcome = await profiles.upsert(
            conn,
            "contact",
            [profiles.item(0, person[0], change, now=ctx.now)],
            now=ctx.now,
            limits=ctx.limits,
            answer=False,
            screen=ctx.screen,
        )
        for _, detail in outcome.errors + outcome.conflicts:
            raise common.Rejected(detail)
    events = []
    for index, event in enumerate(mapped.events):
        try:
            events.append((index, _events_in.validate_python({**event, "account_id": account_id})))
        except ValidationError as invalid:
            raise common.Rejected(_first(invalid)) from None
    if events:
        stored = await ctx.ingest_events(conn, events)
        for result in stored.results:
            if result.status == "error":
                raise common.Rejected(result.detail or "the event was refused")
    outcomes = []
    for index, outcome_fields in enumerate(mapped.outcomes):
        try:
            body = orjson.dumps({**outcome_fields, "account_id": account_id})
            outcomes.append((index, OutcomeIn.model_validate_json(body)))
        except ValidationError as invalid:
            raise common.Rejected(_first(invalid)) from None
    if outcomes:
        stored = await ingest.ingest_outcomes(
            conn,
            outcomes,
            now=ctx.now,
            tolerance=ctx.tolerance,
            known=ctx.known,
            screen=ctx.screen,
        )
        for result in stored.results:
            if result.status == "error":
                raise common.Rejected(result.detail or "the outcome was refused")


def _first(invalid: ValidationError) -> str:
    first = invalid.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"


async def rejections(
    conn: asyncpg.Connection, source_id: uuid.UUID, *, before: int | None, limit: int
) -> list[Rejection]:
    """Events that verified but could not be mapped, newest first."""
    await get(conn, source_id)
    rows = await conn.fetch(
        "SELECT rejection_id, delivery_id, event_type, reason, received_at, "
        "payload IS NOT NULL AS replayable FROM source_deliveries "
        "WHERE source_id = $1 AND status = 'rejected' "
        "AND ($2::bigint IS NULL OR rejection_id < $2) ORDER BY rejection_id DESC LIMIT $3",
        source_id,
        before,
        limit,
    )
    return [Rejection.model_validate(dict(r)) for r in rows]


async def replay(
    conn: asyncpg.Connection, source_id: uuid.UUID, rejection_id: int, *, ctx: ingest.Context
) -> Replay:
    """Map a rejected event again, with the source's settings as they are now."""
    row = await conn.fetchrow(
        "SELECT d.delivery_id, d.event_type, d.status, d.payload, s.kind, s.settings "
        "FROM source_deliveries d JOIN sources s USING (source_id) "
        "WHERE d.source_id = $1 AND d.rejection_id = $2 FOR UPDATE OF d",
        source_id,
        rejection_id,
    )
    if row is None or row["status"] != "rejected":
        raise errors.NotFound(f"No rejection {rejection_id} of source {source_id}.")
    if row["payload"] is None:
        raise errors.Conflict(
            "Its payload is past CUSTINTEL_SOURCE_PAYLOAD_RETENTION_DAYS: it cannot be replayed."
        )
    item = common.Item(row["delivery_id"], row["event_type"], orjson.loads(row["payload"]))
    status, reason = await _apply(
        conn, source_id, row["kind"], item, orjson.loads(row["settings"]), ctx
    )
    await conn.execute(
        "UPDATE source_deliveries SET status = $3, reason = $4 "
        "WHERE source_id = $1 AND rejection_id = $2",
        source_id,
        rejection_id,
        status,
        reason,
    )
    return Replay(rejection_id=rejection_id, status=status, reason=reason)


async def attach(conn: asyncpg.Connection, keys: set[str], *, ctx: ingest.Context) -> int:
    """Deliveries held for want of an account that one of these identities (`kind:value`) now
    finds: mapped again and stored. Returns how many were attached."""
    if not keys:
        return 0
    rows = await conn.fetch(
        "SELECT u.id, u.message, d.event_type, d.payload, s.kind, s.settings "
        "FROM unresolved_signals u "
        "JOIN source_deliveries d ON d.source_id = (u.message->>'source_id')::uuid "
        "  AND d.delivery_id = u.message->>'delivery_id' "
        "JOIN sources s ON s.source_id = d.source_id "
        "WHERE u.source = $1 AND u.attached_at IS NULL AND u.keys && $2::text[] "
        "AND u.received_at > $3 AND d.payload IS NOT NULL "
        "ORDER BY u.id FOR UPDATE OF u SKIP LOCKED",
        HELD_SOURCE,
        sorted(keys),
        ctx.now - timedelta(days=ctx.unresolved_days),
    )
    if not rows:
        return 0
    # Taken before they are stored: storing one can link identities and attach again, which
    # must not find these.
    await conn.execute(
        "UPDATE unresolved_signals SET attached_at = $2 WHERE id = ANY($1::bigint[])",
        [r["id"] for r in rows],
        ctx.now,
    )
    attached = 0
    for row in rows:
        message = orjson.loads(row["message"])
        source_id = uuid.UUID(message["source_id"])
        item = common.Item(message["delivery_id"], row["event_type"], orjson.loads(row["payload"]))
        try:
            mapped = SENDERS[row["kind"]].map_item(item, orjson.loads(row["settings"]))
        except (common.Ignored, common.Rejected):
            mapped = None  # the settings changed since it was held; replayed with rejections
        account_id = None if mapped is None else (await _account(conn, mapped.party))[0]
        if mapped is None or account_id is None:
            await conn.execute(
                "UPDATE unresolved_signals SET attached_at = NULL WHERE id = $1", row["id"]
            )
            continue
        status, reason = await _land(conn, source_id, row["kind"], item, mapped, ctx)
        await _mark(conn, source_id, item.delivery_id, status, reason)
        await conn.execute(
            "UPDATE unresolved_signals SET account_id = $2 WHERE id = $1", row["id"], account_id
        )
        attached += status == "accepted"
    return attached


async def forget_payloads(conn: asyncpg.Connection, *, before: datetime) -> int:
    """Raw payloads older than the retention go; the rows stay (idempotency, counts)."""
    status = await conn.execute(
        "UPDATE source_deliveries SET payload = NULL "
        "WHERE received_at < $1 AND payload IS NOT NULL",
        before,
    )
    return int(status.rsplit(" ", 1)[-1])
