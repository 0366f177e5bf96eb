"""The Segment Tracking API's calls as custintel's signals, and the signals held until an identity
resolves them.

identify and group upsert contacts and accounts, alias gives a contact another identifier, track,
page and screen are events. A call that names no account custintel can find yet (a track before
its user's identify or group) is held in `unresolved_signals`, as sent, with the identifiers that
would resolve it (`user_id:...`, `anonymous_id:...`), and goes through the same mapping again
as soon as a profile call or upsert makes one of them known. The README has the mapping table.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import orjson
from pydantic import TypeAdapter, ValidationError

from app.governance import privacy
from app.people import identities, profiles
from app.platform import jsonbody
from app.platform.jsonbody import JSONObject
from app.schemas.common import MAX_NESTING
from app.schemas.profiles import AccountUpsert, ContactUpsert
from app.schemas.signals import EventIn
from app.signals import ingest

MAX_CALL_BYTES = 32 * 1024  # per call, and per message of a batch
MAX_BATCH_BYTES = 500 * 1024
# A call's properties, traits and context nest at most as deep as the REST routes' fields do,
# with two levels for the call itself and its context.
MAX_CALL_NESTING = MAX_NESTING + 2
CALLS = ("identify", "group", "track", "page", "screen", "alias")
PROFILE_CALLS = ("identify", "group", "alias")
SOURCE = "segment"
# Reserved group traits that are account fields; the rest are account traits.
ACCOUNT_FIELDS = ("name", "plan", "mrr", "segment")
DOMAIN_TRAITS = ("domain", "website")  # a group's site: the account's `domain` identity
_EVENT_TYPE = {"page": "page_viewed", "screen": "screen_viewed"}
_events_in = TypeAdapter(EventIn)
Upsert = TypeVar("Upsert", AccountUpsert, ContactUpsert)


class Invalid(ValueError):
    """A call custintel cannot take, with the words saying why."""


@dataclass
class Message:
    """One call: its position in the request, its type, what was sent (batch context merged in,
    `timestamp` corrected for the sender's clock), and the moment it describes."""

    index: int
    call: str
    body: JSONObject
    at: datetime


@dataclass
class Tally:
    accepted: int = 0
    duplicates: int = 0
    unresolved: int = 0
    suppressed: int = 0  # acknowledged, not stored: an erased identifier, or no consent
    errors: list[tuple[int, str]] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)  # fields left out of a call
    held: list[tuple[Message, list[str], str]] = field(default_factory=list)
    stored: set[int] = field(default_factory=set)  # indexes taken (stored, or duplicates)
    screened: set[int] = field(default_factory=set)  # indexes suppressed (among `stored`)
    known: set[str] = field(default_factory=set)  # keys profile calls made resolvable
    accounts: set[str] = field(default_factory=set)
    contacts: set[str] = field(default_factory=set)


def _moment(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise Invalid(f"{name} must be an ISO 8601 timestamp")
    try:
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise Invalid(f"{name} {value!r} is not an ISO 8601 timestamp") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def read(
    payload: Any, *, call: str | None, received_at: datetime
) -> tuple[list[Message], list[tuple[int, str]]]:
    """The messages of a call (`call` names it) or of a batch (`call` None), and an error per
    message that cannot be taken. Raises Invalid when the request as a whole is wrong."""
    if not isinstance(payload, dict):
        raise Invalid("the body must be a JSON object")
    if call is not None:
        if jsonbody.nested_deeper(payload, MAX_CALL_NESTING):
            raise Invalid(f"nested deeper than {MAX_CALL_NESTING} levels")
        return [_message(0, {**payload, "type": call}, {}, payload.get("sentAt"), received_at)], []
    batch = payload.get("batch")
    if not isinstance(batch, list):
        raise Invalid("a batch is an object with a `batch` list of calls")
    shared = payload.get("context")
    if shared is not None and not isinstance(shared, dict):
        raise Invalid("context must be an object")
    messages: list[Message] = []
    problems: list[tuple[int, str]] = []
    for index, item in enumerate(batch):
        try:
            if isinstance(item, dict) and jsonbody.nested_deeper(item, MAX_CALL_NESTING):
                raise Invalid(f"nested deeper than {MAX_CALL_NESTING} levels")
            if len(orjson.dumps(item)) > MAX_CALL_BYTES:
                raise Invalid(f"larger than {MAX_CALL_BYTES // 1024} KB")
            if not isinstance(item, dict):
                raise Invalid("each call must be an object")
            messages.append(_message(index, item, shared or {}, payload.get("sentAt"), received_at))
        except Invalid as problem:
            problems.append((index, str(problem)))
    return messages, problems


def _message(
    index: int, item: JSONObject, shared: JSONObject, sent_at: Any, received_at: datetime
) -> Message:
    call = item.get("type")
    if call not in CALLS:
        raise Invalid(f"type must be one of {', '.join(CALLS)}")
    if not keys(item):
        raise Invalid("a call needs a userId or an anonymousId")
    if b"\\u0000" in orjson.dumps(item):  # Postgres stores no NUL in text or JSON
        where = jsonbody.find_nul(item, "call")
        if where is not None:
            raise Invalid(f"NUL character (\\u0000) in {where}: strings may not contain it")
    context = item.get("context") or {}
    if not isinstance(context, dict):
        raise Invalid("context must be an object")
    body = {k: v for k, v in item.items() if k not in ("sentAt", "writeKey")}
    if body.get("messageId") in (None, ""):  # kept with the call, so a replay is a duplicate
        body["messageId"] = uuid.uuid4().hex
    if shared or context:
        body["context"] = {**shared, **context}
    # Segment's clock-skew correction: the sender's clock is trusted for intervals, not instants.
    original = item.get("originalTimestamp", item.get("timestamp"))
    sent = item.get("sentAt", sent_at)
    if original is None:
        at = received_at
    elif sent is None:
        at = _moment(original, "timestamp")
    else:
        try:
            at = received_at - (_moment(sent, "sentAt") - _moment(original, "timestamp"))
        except OverflowError:
            raise Invalid("timestamp and sentAt lie too far apart to correct the clock") from None
    body["timestamp"] = at.isoformat()
    return Message(index, call, body, at)


def _id(body: JSONObject, name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise Invalid(f"{name} must be a string")
    return str(value)


def keys(body: JSONObject) -> list[str]:
    """The identifiers that would resolve a held call, as `kind:value` (kinds have no colon)."""
    found = []
    for name, kind in (("userId", "user_id"), ("anonymousId", "anonymous_id")):
        value = body.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
            found.append(f"{kind}:{value}")
    return found


def _traits_of(body: JSONObject) -> Any:
    """A call's traits: at the root as Segment sends them, or in context.traits, where
    RudderStack's SDKs put an identify's."""
    if body.get("traits") is not None:
        return body["traits"]
    context = body.get("context")
    return context.get("traits") if isinstance(context, dict) else None


def _group_of(body: JSONObject) -> str | None:
    context = body.get("context") or {}
    group = context.get("groupId") if isinstance(context, dict) else None
    if group is None:
        traits = _traits_of(body)
        company = traits.get("company") if isinstance(traits, dict) else None
        group = company.get("id") if isinstance(company, dict) else None
    if group is None or group == "":
        return None
    if isinstance(group, bool) or not isinstance(group, str | int):
        raise Invalid("context.groupId must be a string")
    return str(group)


def _traits(raw: Any, name: str = "traits") -> JSONObject:
    """Traits as custintel keeps them: nested objects flattened to dotted keys; a list (a trait
    holds one value) kept as its items joined by ", " when they are plain values
    (`["a", "b"]` is "a, b"), else as its JSON text."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Invalid(f"{name} must be an object")
    flat: JSONObject = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in _traits(value, f"{name}.{key}").items()})
        elif isinstance(value, list):
            plain = all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in value)
            flat[key] = ", ".join(map(str, value)) if plain else orjson.dumps(value).decode()
        else:
            flat[key] = value
    return flat


def _domain(value: Any) -> str | None:
    """A site as the domain identity custintel keys accounts by: "https://www.Acme.io/about"
    is "acme.io"."""
    if not isinstance(value, str) or not value.strip():
        return None
    host = value.strip().lower()
    host = host.split("://", 1)[-1].split("/", 1)[0].split("?", 1)[0].split("@")[-1]
    host = host.split(":", 1)[0].removeprefix("www.").strip(".")
    return host if "." in host and len(host) <= 253 else None


def _number(value: Any) -> Any:
    """A number sent as a string ("990", " 12.5 ") as the number; anything else as it is."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return value
        if math.isfinite(number):
            return int(number) if number.is_integer() and abs(number) < 2**53 else number
    return value


def _role(value: Any) -> str | None:
    """A role or job title as a lowercase word: "VP Sales" is vp_sales."""
    if not isinstance(value, str):
        return None
    word = re.sub(r"[^a-z0-9]+", "_", value.lower()).strip("_")[:64]
    return word if word and word[0].isalpha() else None


# Fields without which a call means nothing: a problem there refuses the call.
_NEEDED = frozenset({"account_id", "identities"})


def _validated(model: type[Upsert], body: JSONObject, message: Message, tally: Tally) -> Upsert:
    """The upsert a call makes. A field that cannot be kept (a trait or field of the wrong
    type, too long, ...) is left out and named in the answer (`dropped`); the rest is kept."""
    while True:
        try:
            return model.model_validate_json(orjson.dumps(body))
        except ValidationError as invalid:
            first = invalid.errors()[0]
            loc = [str(p) for p in first["loc"]]
            where = ".".join(loc)
            field_name = loc[0] if loc else ""
            needed = _NEEDED if model is ContactUpsert else frozenset()
            if field_name in needed or field_name not in body:
                raise Invalid(f"{where}: {first['msg']}") from None
            traits = body.get("traits")
            if field_name == "traits" and len(loc) > 1 and isinstance(traits, dict):
                if loc[1] not in traits:
                    raise Invalid(f"{where}: {first['msg']}") from None
                del traits[loc[1]]
                where = f"traits.{loc[1]}"
            else:
                del body[field_name]
            tally.dropped.append((message.index, f"{where}: {first['msg']}"))


async def _account_of(conn: asyncpg.Connection, contact_id: str) -> str | None:
    return (await identities.contact_accounts(conn, [contact_id])).get(contact_id)


async def _upsert(
    conn: asyncpg.Connection,
    kind: profiles.Kind,
    profile_id: str,
    upsert: AccountUpsert | ContactUpsert,
    message: Message,
    ctx: ingest.Context,
    tally: Tally | None = None,
) -> None:
    problem = ingest.check_moment(
        message.at, now=ctx.now, tolerance=ctx.tolerance, name="timestamp"
    )
    if problem is not None:
        raise Invalid(problem)
    item = profiles.item(message.index, profile_id, upsert, now=ctx.now)
    item.observed_at = message.at
    async with conn.transaction():
        outcome = await profiles.upsert(
            conn, kind, [item], now=ctx.now, limits=ctx.limits, screen=ctx.screen
        )
    if outcome.suppressed:
        raise _Suppressed
    for _, detail in outcome.errors + outcome.conflicts:
        raise Invalid(detail)
    if tally is not None:  # what the upsert made known (its email too): for app.people.held.attach
        tally.known |= {f"{k}:{v}" for k, v in item.claims()}
        tally.dropped += [(message.index, detail) for _, detail in outcome.dropped]


async def _profile_call(
    conn: asyncpg.Connection, message: Message, ctx: ingest.Context, tally: Tally
) -> None:
    """Store an identify, group or alias; hold it when it names no account yet."""
    body = message.body
    user = _id(body, "userId")
    anonymous = _id(body, "anonymousId")
    held: list[tuple[str, str]] = []
    if anonymous is not None:
        held.append(("anonymous_id", anonymous))
    if message.call == "identify":
        if user is None:
            raise Invalid("identify needs a userId (anonymous traits are not kept)")
        traits = _traits(_traits_of(body))
        account = _group_of(body) or await _account_of(conn, user)
        if account is None:
            tally.held.append((message, keys(body), "no group yet: send group, or context.groupId"))
            return
        fields: JSONObject = {"account_id": account, "traits": {}}
        for name in ("email", "name"):
            if traits.get(name) is not None:
                fields[name] = traits.pop(name)
        if "name" not in fields and (traits.get("firstName") or traits.get("lastName")):
            fields["name"] = " ".join(
                str(traits[k]) for k in ("firstName", "lastName") if traits.get(k)
            )
        said = "role" if "role" in traits else "title"
        role = _role(traits.get(said))
        if role is not None:
            fields["role"] = role
            del traits[said]
        traits = {k: v for k, v in traits.items() if not k.startswith("company.")}
        fields["traits"] = traits
        consent = _consent_of(body)
        if consent:
            fields["consent"] = consent
        fields["identities"] = [{"kind": "user_id", "value": user}] + [
            {"kind": k, "value": v} for k, v in held
        ]
        upsert = _validated(ContactUpsert, fields, message, tally)
        await _upsert(conn, "contact", user, upsert, message, ctx, tally)
        tally.contacts.add(user)
        tally.known |= {f"user_id:{user}", *(f"{k}:{v}" for k, v in held)}
    elif message.call == "group":
        group = _id(body, "groupId")
        if group is None:
            raise Invalid("group needs a groupId")
        traits = _traits(_traits_of(body))
        fields = {f: traits.pop(f) for f in ACCOUNT_FIELDS if traits.get(f) is not None}
        if "mrr" in fields:
            fields["mrr"] = _number(fields["mrr"])
        domains = sorted({d for t in DOMAIN_TRAITS if (d := _domain(traits.get(t)))})
        if domains:
            fields["identities"] = [{"kind": "domain", "value": d} for d in domains]
        fields["traits"] = traits
        account_upsert = _validated(AccountUpsert, fields, message, tally)
        try:
            await _upsert(conn, "account", group, account_upsert, message, ctx, tally)
        except Invalid as refused:
            if not account_upsert.identities:
                raise
            # The site is another account's: the rest of the call is kept, the claim named.
            tally.dropped.append((message.index, f"traits.domain: {refused}"))
            del fields["identities"]
            account_upsert = _validated(AccountUpsert, fields, message, tally)
            await _upsert(conn, "account", group, account_upsert, message, ctx, tally)
        tally.accounts.add(group)
        if user is not None:
            link = {
                "account_id": group,
                "identities": [{"kind": "user_id", "value": user}]
                + [{"kind": k, "value": v} for k, v in held],
            }
            contact = _validated(ContactUpsert, link, message, tally)
            await _upsert(conn, "contact", user, contact, message, ctx, tally)
            tally.contacts.add(user)
            tally.known |= {f"user_id:{user}", *(f"{k}:{v}" for k, v in held)}
    else:  # alias
        previous = _id(body, "previousId")
        if user is None or previous is None:
            raise Invalid("alias needs a userId and a previousId")
        account = await _account_of(conn, user)
        if account is None:
            tally.held.append((message, [f"user_id:{user}"], "no identify or group for userId yet"))
            return
        alias = {"account_id": account, "identities": [{"kind": "anonymous_id", "value": previous}]}
        await _upsert(
            conn, "contact", user, _validated(ContactUpsert, alias, message, tally), message, ctx
        )
        tally.known |= {f"user_id:{user}", f"anonymous_id:{previous}"}
    tally.accepted += 1
    tally.stored.add(message.index)


def _consent_of(body: JSONObject) -> dict[str, bool]:
    """Segment's consent: `context.consent.categoryPreferences` ({"analytics": true, ...}); the
    categories with a yes or no, others left out."""
    context = body.get("context")
    consent = context.get("consent") if isinstance(context, dict) else None
    preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
    if not isinstance(preferences, dict):
        return {}
    return {str(k): v for k, v in preferences.items() if isinstance(v, bool)}


async def _event_calls(
    conn: asyncpg.Connection, messages: Sequence[Message], ctx: ingest.Context, tally: Tally
) -> None:
    """Store tracks, pages and screens that resolve to an account; hold the others."""
    users = {u for m in messages if (u := _safe_id(m.body, "userId"))}
    anonymous = {a for m in messages if (a := _safe_id(m.body, "anonymousId"))}
    contacts = await identities.contact_accounts(conn, users)
    by_anonymous = {
        r[0]: (r[1], r[2])
        for r in await conn.fetch(
            "SELECT value, contact_id, account_id FROM identities "
            "WHERE kind = 'anonymous_id' AND value = ANY($1::text[])",
            sorted(anonymous),
        )
    }
    items: list[tuple[int, EventIn]] = []
    required = ctx.screen.settings.consent_required if ctx.screen is not None else []
    said: dict[str, tuple[Message, str, dict[str, bool]]] = {}  # contact: its latest consent
    for m in messages:
        try:
            event = _event(m, contacts, by_anonymous)
        except Invalid as problem:
            tally.errors.append((m.index, str(problem)))
            continue
        if event is None:
            tally.held.append((m, keys(m.body), "no account yet: no identify or group for it"))
            continue
        preferences = _consent_of(m.body)
        contact = event.get("contact_id")
        if (
            preferences
            and contact is not None
            and (contact not in said or said[contact][0].at <= m.at)
        ):
            said[contact] = (m, event["account_id"], preferences)
        if any(preferences.get(c) is False for c in required):
            # The call itself says the person declined a required category.
            tally.suppressed += 1
            tally.stored.add(m.index)
            continue
        try:
            items.append((m.index, _events_in.validate_python(event)))
        except ValidationError as invalid:
            first = invalid.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            tally.errors.append((m.index, f"{m.call}: {where}: {first['msg']}"))
    # A messageId seen before is a duplicate whatever else differs: an SDK's retry sends a new
    # sentAt, which moves the corrected timestamp by the network's jitter.
    seen = {
        r[0]
        for r in await conn.fetch(
            "SELECT event_id FROM event_keys WHERE event_id = ANY($1::text[])",
            [e["event_id"] for _, e in items],
        )
    }
    tally.duplicates += sum(e["event_id"] in seen for _, e in items)
    tally.stored |= {i for i, e in items if e["event_id"] in seen}
    items = [(i, e) for i, e in items if e["event_id"] not in seen]
    if said:
        await _consent_said(conn, said, ctx)
    if not items:
        return
    stored = await ctx.ingest_events(conn, items)
    ctx.known.remember(accounts=stored.accounts, contacts=stored.contacts)
    for result in stored.results:
        if result.status == "error":
            tally.errors.append((result.index, result.detail or "refused"))
            continue
        tally.stored.add(result.index)
        if result.status == "duplicate":
            tally.duplicates += 1
        elif result.status == "suppressed":
            tally.suppressed += 1
        else:
            tally.accepted += 1


async def _consent_said(
    conn: asyncpg.Connection,
    said: dict[str, tuple[Message, str, dict[str, bool]]],
    ctx: ingest.Context,
) -> None:
    """Keep the consent the calls carried on their contacts' profiles, as Segment keeps the
    consent object of every event (its `Segment Consent Preference Updated` track included):
    only where it changes something, so a stream of calls repeating it writes nothing."""
    stored = {
        r[0]: (r[1], orjson.loads(r[2]))
        for r in await conn.fetch(
            "SELECT contact_id, account_id, consent FROM contacts "
            "WHERE contact_id = ANY($1::text[])",
            sorted(said),
        )
    }
    for contact, (message, account, preferences) in sorted(said.items()):
        if contact in stored:
            account, before = stored[contact]  # consent moves no one to another account
            if {**before, **preferences} == before:
                continue
        fields = {"account_id": account, "consent": preferences}
        try:
            upsert = _validated(ContactUpsert, fields, message, Tally())
            await _upsert(conn, "contact", contact, upsert, message, ctx)
        except Invalid:
            continue  # a consent object the contract refuses changes nothing; the call stands


def _safe_id(body: JSONObject, name: str) -> str | None:
    try:
        return _id(body, name)
    except Invalid:
        return None


def _event(
    m: Message,
    contacts: dict[str, str],
    by_anonymous: dict[str, tuple[str, str]],
) -> JSONObject | None:
    """The event a track, page or screen is, or None when no account is known for it yet."""
    body = m.body
    user, anonymous = _id(body, "userId"), _id(body, "anonymousId")
    contact = user if user in contacts else None
    if contact is None and anonymous in by_anonymous:
        contact = by_anonymous[anonymous][0]
    account = _group_of(body) or (contacts.get(contact) if contact in contacts else None)
    if account is None and anonymous in by_anonymous and by_anonymous[anonymous][0] == contact:
        account = by_anonymous[anonymous][1]
    if account is None:
        return None
    if contact is None:
        contact = user  # a new contact under the named account
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        raise Invalid("properties must be an object")
    properties = dict(properties)
    if m.call == "track":
        name = body.get("event")
        if not isinstance(name, str) or not name:
            raise Invalid("track needs an event name")
    else:
        name = _EVENT_TYPE[m.call]
        for key in ("name", "category"):
            if body.get(key) is not None and key not in properties:
                properties[key] = body[key]
    if "context" in body:
        properties["$context"] = body["context"]
    value = next(
        (
            properties[k]
            for k in ("revenue", "value")
            if isinstance(properties.get(k), int | float) and not isinstance(properties[k], bool)
        ),
        None,
    )
    event: JSONObject = {
        "event_id": _id(body, "messageId") or uuid.uuid4().hex,
        "type": name,
        "source": SOURCE,
        "occurred_at": m.at.isoformat(),
        "account_id": account,
        "properties": properties,
    }
    if contact is not None:
        event["contact_id"] = contact
    if value is not None:
        event["value"] = float(value)
    return event


async def store(
    conn: asyncpg.Connection, messages: Sequence[Message], *, ctx: ingest.Context
) -> Tally:
    """Store the calls of one request: profile calls first, in order (so a batch's identify
    resolves its own tracks), then the events; hold what names no account yet. `tally.known`
    says which identifiers the calls made known, for app.people.held.attach."""
    tally = await _store(conn, messages, ctx)
    if tally.held:
        await conn.executemany(
            "INSERT INTO unresolved_signals (received_at, source, call, keys, message, reason) "
            "VALUES ($1, $2, $3, $4::text[], $5::jsonb, $6)",
            [
                (ctx.now, SOURCE, m.call, k, orjson.dumps(m.body).decode(), reason)
                for m, k, reason in tally.held
            ],
        )
        tally.unresolved = len(tally.held)
    return tally  # the caller lands what its calls made resolvable (app.people.held.attach)


def _names(body: JSONObject) -> list[tuple[privacy.Kind, str]]:
    """What a call names, as the suppression list knows it: its person (the contact and its
    identities), its account, and any email anywhere in it."""
    names: list[tuple[privacy.Kind, str]] = [("identity", k) for k in keys(body)]
    pairs: tuple[tuple[privacy.Kind, str], ...] = (("contact", "userId"), ("account", "groupId"))
    for kind, name in pairs:
        value = _safe_id(body, name)
        if value is not None:
            names.append((kind, value))
    context = body.get("context")
    group = context.get("groupId") if isinstance(context, dict) else None
    if isinstance(group, str | int) and not isinstance(group, bool):
        names.append(("account", str(group)))
    return names + privacy.emails_in(body)


async def _screened(
    conn: asyncpg.Connection, messages: Sequence[Message], ctx: ingest.Context, tally: Tally
) -> list[Message]:
    """The calls that name no erased person or account; the others are counted `suppressed`
    and go no further: not stored, and not held either."""
    if ctx.screen is None or not messages:
        return list(messages)
    named = {m.index: _names(m.body) for m in messages}
    blocked = await ctx.screen.blocked(conn, (n for names in named.values() for n in names))
    if not blocked:
        return list(messages)
    kept = []
    for m in messages:
        if blocked.intersection(named[m.index]):
            tally.suppressed += 1
            tally.stored.add(m.index)
            tally.screened.add(m.index)
        else:
            kept.append(m)
    return kept


class _Suppressed(Exception):
    """An upsert the profile's own screen kept out (an identifier only it resolves)."""


async def _store(
    conn: asyncpg.Connection, messages: Sequence[Message], ctx: ingest.Context
) -> Tally:
    tally = Tally()
    messages = await _screened(conn, messages, ctx, tally)
    for m in messages:
        if m.call in PROFILE_CALLS:
            try:
                await _profile_call(conn, m, ctx, tally)
            except Invalid as problem:
                tally.errors.append((m.index, str(problem)))
            except _Suppressed:
                tally.suppressed += 1
                tally.stored.add(m.index)
                tally.screened.add(m.index)
    await _event_calls(conn, [m for m in messages if m.call not in PROFILE_CALLS], ctx, tally)
    tally.errors.sort()
    return tally


async def attach(conn: asyncpg.Connection, known: Iterable[str], *, ctx: ingest.Context) -> int:
    """Take the held calls these identifiers (`kind:value`) resolve, unless expired; the number
    attached. Calls attached here can make more identifiers known: followed a few rounds."""
    attached = 0
    wanted = sorted(set(known))
    for _ in range(3):
        if not wanted:
            break
        rows = await conn.fetch(
            "SELECT id, call, message FROM unresolved_signals "
            "WHERE source = $3 AND keys && $1::text[] AND attached_at IS NULL "
            "AND received_at > $2 ORDER BY id LIMIT 10000",
            wanted,
            ctx.now - timedelta(days=ctx.unresolved_days),
            SOURCE,
        )
        if not rows:
            break
        messages = []
        for r in rows:
            body = orjson.loads(r["message"])
            messages.append(Message(r["id"], r["call"], body, _moment(body["timestamp"], "t")))
        tally = await _store(conn, messages, ctx)
        if tally.screened:  # naming someone erased since it was held: forgotten
            await conn.execute(
                "DELETE FROM unresolved_signals WHERE id = ANY($1::bigint[])",
                sorted(tally.screened),
            )
        if tally.stored - tally.screened:
            await conn.execute(
                "UPDATE unresolved_signals SET attached_at = $2 WHERE id = ANY($1::bigint[])",
                sorted(tally.stored - tally.screened),
                ctx.now,
            )
        for index, detail in tally.errors:  # still held, saying why
            await conn.execute(
                "UPDATE unresolved_signals SET reason = $2 WHERE id = $1", index, detail
            )
        attached += len(tally.stored)
        wanted = sorted(tally.known - set(wanted))
    return attached
