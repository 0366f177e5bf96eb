"""Accounts and contacts: upserts kept as history, current values folded from it, reads as of t.

Semantics: each field takes the value of the newest observation that set it (by observed_at, then
arrival). An upsert older than the newest one is stored in history and folded in only where no
newer observation set the same field, so it never overwrites newer values.

A batch is written set-based: one statement per step for all of its items (lock the profiles,
find replays, check the trait limits, insert the history, update the profiles), not one round of
statements per item. A single upsert is a batch of one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import orjson

from app.governance import privacy
from app.people import identities
from app.platform import cursors, db, errors
from app.platform.jsonbody import JSONObject
from app.schemas.profiles import Account, AccountUpsert, Contact, ContactUpsert

ACCOUNT_FIELDS = ("name", "segment", "plan", "mrr", "owner_email")
CONTACT_FIELDS = ("account_id", "email", "name", "role")
Kind = Literal["account", "contact"]


@dataclass(frozen=True)
class TraitLimits:
    """Trait keys one profile may hold, and distinct trait keys per kind of profile overall
    (CUSTINTEL_MAX_TRAITS_PER_PROFILE, CUSTINTEL_MAX_TRAIT_KEYS): each key can become a
    feature, and merges only ever add keys."""

    per_profile: int
    overall: int
    # One writer (an API key, a webhook source) adds at most this many keys of the overall
    # budget (CUSTINTEL_MAX_TRAIT_KEYS_PER_WRITER), so one cannot take it all for good.
    per_writer: int | None = None
    writer: str | None = None
    # Over a budget of keys (overall or the writer's), leave the keys new to the installation
    # out and keep the rest of the item (Segment's SDKs and the senders never read an error),
    # naming them in Outcome.dropped; otherwise the item is refused whole.
    keep_rest: bool = False


@dataclass
class Item:
    """One upsert of a batch: its index in the request, the profile it names, what it sets."""

    index: int
    profile_id: str
    observed_at: datetime
    changes: JSONObject
    identities: list[tuple[str, str]] = field(default_factory=list)  # (kind, value)

    def claims(self) -> list[tuple[str, str]]:
        """The identifiers this upsert gives its profile: those it lists, and its email."""
        email = self.changes.get("email")
        return [*self.identities, ("email", email)] if email else list(self.identities)


@dataclass
class Outcome:
    """What a batch did: the profiles as they are now (by id), an error per item refused by the
    limits, and one per item claiming an identifier another profile holds."""

    profiles: dict[str, JSONObject]
    upserted: int
    errors: list[tuple[int, str]]
    conflicts: list[tuple[int, str]]
    suppressed: list[int] = field(default_factory=list)  # items naming an erased identifier
    dropped: list[tuple[int, str]] = field(default_factory=list)  # keys left out (keep_rest)


def apply_changes(state: JSONObject, changes: JSONObject) -> None:
    for key, value in changes.items():
        if key == "consent":  # by category, merged
            state["consent"] = {**(state.get("consent") or {}), **value}
        elif key == "traits":
            traits = dict(state.get("traits") or {})
            for trait, trait_value in value.items():
                if trait_value is None:
                    traits.pop(trait, None)
                else:
                    traits[trait] = trait_value
            state["traits"] = traits
        else:
            state[key] = value


def fold(history: Iterable[JSONObject]) -> JSONObject:
    state: JSONObject = {"traits": {}}
    for changes in history:
        apply_changes(state, changes)
    return state


def existed(first_seen: datetime | None, t: datetime) -> bool:
    """Whether an account existed at t: observed (an upsert) or named by an event at or before
    it. `first_seen` is Postgres's `account_first_seen(account_id)`, the one definition."""
    return first_seen is not None and first_seen <= t


def item(
    index: int, profile_id: str, upsert: AccountUpsert | ContactUpsert, *, now: datetime
) -> Item:
    # A batch item names its profile in the body: that id is not a change.
    named = "contact_id" if isinstance(upsert, ContactUpsert) else "account_id"
    changes = upsert.model_dump(
        mode="json", exclude_unset=True, exclude={"observed_at", "identities", named}
    )
    held = [(i.kind, identities.normalize(i.kind, i.value)) for i in upsert.identities]
    if isinstance(upsert, ContactUpsert):
        changes["account_id"] = upsert.account_id
        if changes.get("consent") is None:  # null says nothing about consent
            changes.pop("consent", None)
        if changes.get("email") is not None:
            changes["email"] = identities.normalize("email", changes["email"])
    return Item(index, profile_id, upsert.observed_at or now, changes, list(dict.fromkeys(held)))


# Statements per kind of profile, written out (no SQL is assembled from strings).
_LOCK = {
    "account": "SELECT * FROM accounts WHERE account_id = ANY($1::text[]) "
    "ORDER BY account_id FOR UPDATE",
    "contact": "SELECT * FROM contacts WHERE contact_id = ANY($1::text[]) "
    "ORDER BY contact_id FOR UPDATE",
}
_CREATE = {
    "account": """
        INSERT INTO accounts (account_id, created_at, updated_at)
        SELECT a, $2, $2 FROM unnest($1::text[]) AS a ORDER BY a
        ON CONFLICT DO NOTHING RETURNING account_id""",
    "contact": """
        INSERT INTO contacts (contact_id, account_id, created_at, updated_at)
        SELECT c, a, $3, $3 FROM unnest($1::text[], $2::text[]) AS u(c, a) ORDER BY c
        ON CONFLICT DO NOTHING RETURNING contact_id""",
}
_DROP = {
    "account": "DELETE FROM accounts WHERE account_id = ANY($1::text[])",
    "contact": "DELETE FROM contacts WHERE contact_id = ANY($1::text[])",
}
_REPLAYS = {
    "account": """
        SELECT h.account_id, h.observed_at, h.changes FROM account_history h
        JOIN unnest($1::text[], $2::timestamptz[]) AS u(p, o)
          ON h.account_id = u.p AND h.observed_at = u.o""",
    "contact": """
        SELECT h.contact_id, h.observed_at, h.changes FROM contact_history h
        JOIN unnest($1::text[], $2::timestamptz[]) AS u(p, o)
          ON h.contact_id = u.p AND h.observed_at = u.o""",
}
_RECORD = {
    "account": """
        INSERT INTO account_history (account_id, observed_at, changes)
        SELECT p, o, c::jsonb FROM unnest($1::text[], $2::timestamptz[], $3::text[]) AS u(p, o, c)
        """,
    "contact": """
        INSERT INTO contact_history (contact_id, account_id, observed_at, changes)
        SELECT p, a, o, c::jsonb
        FROM unnest($1::text[], $4::text[], $2::timestamptz[], $3::text[]) AS u(p, a, o, c)""",
}
_HISTORY = {
    "account": """
        SELECT account_id, changes FROM account_history WHERE account_id = ANY($1::text[])
        ORDER BY account_id, observed_at, id""",
    "contact": """
        SELECT contact_id, changes FROM contact_history WHERE contact_id = ANY($1::text[])
        ORDER BY contact_id, observed_at, id""",
}
_UPDATE = {
    "account": """
        UPDATE accounts a
        SET name = u.name, segment = u.segment, plan = u.plan, mrr = u.mrr::numeric(18, 2),
            owner_email = u.owner_email, traits = u.traits::jsonb, observed_at = u.observed_at,
            updated_at = $9
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::text[],
                    $7::text[], $8::timestamptz[])
             AS u(account_id, name, segment, plan, mrr, owner_email, traits, observed_at)
        WHERE a.account_id = u.account_id
        RETURNING a.*""",
    "contact": """
        UPDATE contacts c
        SET account_id = u.account_id, email = u.email, name = u.name, role = u.role,
            traits = u.traits::jsonb, observed_at = u.observed_at, updated_at = $9,
            consent = u.consent::jsonb
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                    $7::timestamptz[], $8::text[])
             AS u(contact_id, account_id, email, name, role, traits, observed_at, consent)
        WHERE c.contact_id = u.contact_id
        RETURNING c.*""",
}
_LATEST = {
    "account": "SELECT max(observed_at) FROM account_history WHERE account_id = $1",
    "contact": "SELECT max(observed_at) FROM contact_history WHERE contact_id = $1",
}
# A contact's identities carry its account: they follow it when it moves.
_FOLLOW = """
    UPDATE identities i SET account_id = c.account_id, updated_at = $2
    FROM contacts c
    WHERE c.contact_id = ANY($1::text[]) AND i.contact_id = c.contact_id
      AND i.account_id <> c.account_id"""


def _state(kind: Kind, row: asyncpg.Record | JSONObject) -> JSONObject:
    fields = ACCOUNT_FIELDS if kind == "account" else CONTACT_FIELDS
    state: JSONObject = {f: row[f] for f in fields}
    if state.get("mrr") is not None:
        state["mrr"] = float(state["mrr"])
    traits = row["traits"]
    state["traits"] = orjson.loads(traits) if isinstance(traits, str) else dict(traits or {})
    if kind == "contact":
        consent = row["consent"]
        state["consent"] = (
            orjson.loads(consent) if isinstance(consent, str) else dict(consent or {})
        )
    return state


def _view(row: asyncpg.Record) -> JSONObject:
    view = dict(row)
    view["traits"] = orjson.loads(view["traits"]) if view["traits"] else {}
    if "consent" in view:
        view["consent"] = orjson.loads(view["consent"]) if view["consent"] else {}
    if view.get("mrr") is not None:
        view["mrr"] = float(view["mrr"])
    return view


class _TraitKeys:
    """The installation-wide trait key count, and the writer's own, checked item by item as a
    batch is read."""

    def __init__(
        self,
        kind: Kind,
        known: set[str],
        count: int,
        limits: TraitLimits,
        written: int = 0,
    ) -> None:
        self.kind, self.known, self.count, self.limits = kind, known, count, limits
        self.written = written  # keys this writer added before
        self.new: list[str] = []

    def admit(self, keys: set[str]) -> str | None:
        new = sorted(keys - self.known)
        limit, per_writer = self.limits.overall, self.limits.per_writer
        if new and self.count + len(new) > limit:
            return (
                f"{len(new)} new {self.kind} trait key(s) would make {self.count + len(new)}; "
                f"at most {limit} (CUSTINTEL_MAX_TRAIT_KEYS): reuse existing keys"
            )
        if new and per_writer is not None and self.written + len(new) > per_writer:
            return (
                f"{len(new)} new {self.kind} trait key(s) would make {self.written + len(new)} "
                f"added by this key or source; at most {per_writer} "
                "(CUSTINTEL_MAX_TRAIT_KEYS_PER_WRITER): reuse existing keys"
            )
        self.known |= set(new)
        self.count += len(new)
        self.written += len(new)
        self.new += new
        return None


async def _trait_keys(
    conn: asyncpg.Connection, kind: Kind, items: Sequence[Item], limits: TraitLimits
) -> _TraitKeys:
    traits = [i.changes.get("traits") or {} for i in items]
    added = sorted({k for t in traits for k, v in t.items() if v is not None})
    if not added:  # most batches: nothing to look up
        return _TraitKeys(kind, set(), 0, limits)
    known = {
        r[0]
        for r in await conn.fetch(
            "SELECT key FROM trait_keys WHERE kind = $1 AND key = ANY($2::text[])", kind, added
        )
    }
    count = written = 0
    if set(added) - known:  # the counts matter only when keys would be added
        count, written = await conn.fetchrow(
            "SELECT count(*), count(*) FILTER (WHERE added_by = $2) FROM trait_keys "
            "WHERE kind = $1",
            kind,
            limits.writer,
        )
    return _TraitKeys(kind, known, count, limits, written)


@dataclass
class _Plan:
    """What a batch will write, decided in Python from the locked rows."""

    states: dict[str, JSONObject]  # each profile's fields after the batch
    observed: dict[str, datetime | None]  # the newest observation folded into each
    kept: list[Item] = field(default_factory=list)  # accepted items, replays included
    recorded: list[Item] = field(default_factory=list)  # accepted items new to history
    refold: set[str] = field(default_factory=set)  # profiles that got an older observation
    problems: list[tuple[int, str]] = field(default_factory=list)
    conflicts: list[tuple[int, str]] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)


async def upsert(
    conn: asyncpg.Connection,
    kind: Kind,
    items: Sequence[Item],
    *,
    now: datetime,
    limits: TraitLimits,
    answer: bool = True,
    screen: privacy.Screen | None = None,
) -> Outcome:
    """Store a batch of upserts of one kind (_upsert), its statements planned to find their rows
    by key (db.planned_by_key)."""
    async with db.planned_by_key(conn):
        return await _upsert(
            conn, kind, items, now=now, limits=limits, answer=answer, screen=screen
        )


async def _upsert(
    conn: asyncpg.Connection,
    kind: Kind,
    items: Sequence[Item],
    *,
    now: datetime,
    limits: TraitLimits,
    answer: bool,
    screen: privacy.Screen | None,
) -> Outcome:
    """Store a batch of upserts of one kind, inside the caller's transaction (with `answer`, the
    Outcome holds the profiles as they are now; batches skip reading them back). Items are taken in
    id order (so that parallel batches lock profiles in one order), then as sent. An item refused
    by the trait limits is an error entry and writes nothing, not even its new profile. An item
    naming a merged profile (for a contact, also a merged account) is rewritten to name the
    survivor. An item naming a suppressed identifier (app.governance.privacy: its id, its account,
    its email or one of its identities) writes nothing and is listed as suppressed."""
    suppressed: list[int] = []
    if screen is not None:
        blocked = await screen.blocked(conn, (n for i in items for n in _names(kind, i)))
        if blocked:
            suppressed = sorted(i.index for i in items if set(_names(kind, i)) & blocked)
            items = [i for i in items if i.index not in suppressed]
            if not items:
                return Outcome({}, 0, [], [], suppressed)
    await _to_survivors(conn, kind, items)
    items = sorted(items, key=lambda i: (i.profile_id, i.index))
    ids = sorted({i.profile_id for i in items})
    created_accounts: set[str] = set()
    if kind == "contact":
        owners = sorted({i.changes["account_id"] for i in items})
        created_accounts = {r[0] for r in await conn.fetch(_CREATE["account"], owners, now)}
        first_owner = {i.profile_id: i.changes["account_id"] for i in reversed(items)}
        created = await conn.fetch(_CREATE[kind], ids, [first_owner[p] for p in ids], now)
    else:
        created = await conn.fetch(_CREATE[kind], ids, now)
    rows = {r[0]: r for r in await conn.fetch(_LOCK[kind], ids)}
    replays = {
        (r[0], r[1], _canonical(orjson.loads(r[2])))
        for r in await conn.fetch(
            _REPLAYS[kind], [i.profile_id for i in items], [i.observed_at for i in items]
        )
    }
    keys = await _trait_keys(conn, kind, items, limits)
    refused = await _refuse_taken(conn, kind, items)
    plan = _plan(kind, items, rows, replays, keys, limits, refused)
    await _take_back(conn, kind, plan, {r[0] for r in created}, created_accounts)
    if keys.new:
        await conn.execute(
            "INSERT INTO trait_keys (kind, key, added_by) "
            "SELECT $1, k, $3 FROM unnest($2::text[]) AS k ON CONFLICT DO NOTHING",
            kind,
            keys.new,
            limits.writer,
        )
    current = await _write(conn, kind, plan, rows, now=now, answer=answer)
    await _link(conn, kind, plan, rows, now=now)
    return Outcome(
        current,
        len(plan.kept),
        sorted(plan.problems),
        sorted(plan.conflicts),
        suppressed,
        sorted(plan.dropped),
    )


def _names(kind: Kind, item: Item) -> list[tuple[privacy.Kind, str]]:
    """The identifiers an upsert names, as the suppression list knows them."""
    names: list[tuple[privacy.Kind, str]] = [(kind, item.profile_id)]
    if kind == "contact" and item.changes.get("account_id"):
        names.append(("account", item.changes["account_id"]))
    email = item.changes.get("email")
    if isinstance(email, str):
        names.append(("email", email.lower()))
    names += privacy.emails_in(item.changes)  # an email anywhere: a trait, the owner's address
    names += [("identity", f"{k}:{v}") for k, v in item.identities]
    return names


async def _to_survivors(conn: asyncpg.Connection, kind: Kind, items: Sequence[Item]) -> None:
    if kind == "account":
        found = await identities.survivors(conn, accounts=[i.profile_id for i in items])
        for it in items:
            it.profile_id = found.account(it.profile_id)
        return
    found = await identities.survivors(
        conn,
        accounts=[i.changes["account_id"] for i in items],
        contacts=[i.profile_id for i in items],
    )
    for it in items:
        it.profile_id = found.contact(it.profile_id)
        it.changes["account_id"] = found.account(it.changes["account_id"])


async def _refuse_taken(
    conn: asyncpg.Connection, kind: Kind, items: Sequence[Item]
) -> dict[int, str]:
    """Items claiming an identifier another profile holds, or one an earlier item of the batch
    (by index) claims for another profile, with what they collide with."""
    claims = {i.index: i.claims() for i in items}
    taken = await identities.owners(conn, kind, (p for c in claims.values() for p in c))
    refused: dict[int, str] = {}
    for it in sorted(items, key=lambda i: i.index):
        collisions = [p for p in claims[it.index] if taken.get(p, it.profile_id) != it.profile_id]
        if collisions:
            pair = collisions[0]
            refused[it.index] = identities.describe(kind, pair, taken[pair])
            continue
        taken.update((p, it.profile_id) for p in claims[it.index])
    return refused


def _plan(
    kind: Kind,
    items: Sequence[Item],
    rows: dict[str, asyncpg.Record],
    replays: set[tuple[str, datetime, bytes]],
    keys: _TraitKeys,
    limits: TraitLimits,
    refused: dict[int, str],
) -> _Plan:
    plan = _Plan(
        {p: _state(kind, r) for p, r in rows.items()},
        {p: r["observed_at"] for p, r in rows.items()},
    )
    for it in items:
        if it.index in refused:
            plan.conflicts.append((it.index, refused[it.index]))
            continue
        mark = (it.profile_id, it.observed_at, _canonical(it.changes))
        if mark in replays:  # the same upsert again: nothing new to record
            plan.kept.append(it)
            continue
        state = plan.states[it.profile_id]
        added = {k for k, v in (it.changes.get("traits") or {}).items() if v is not None}
        held = set(state["traits"]) | added
        if len(held) > limits.per_profile:
            problem: str | None = (
                f"this {kind} would hold {len(held)} trait keys; at most {limits.per_profile} "
                "(CUSTINTEL_MAX_TRAITS_PER_PROFILE): remove some with null values first"
            )
        else:
            problem = keys.admit(added)
            if problem is not None and limits.keep_rest:
                new = sorted(added - keys.known)
                traits = {k: v for k, v in it.changes["traits"].items() if k not in new}
                it.changes = {**it.changes, "traits": traits}
                plan.dropped += [(it.index, f"traits.{k}: {problem}") for k in new]
                problem = None
        if problem is not None:
            plan.problems.append((it.index, problem))
            continue
        replays.add(mark)
        plan.recorded.append(it)
        plan.kept.append(it)
        newest = plan.observed[it.profile_id]
        if newest is None or it.observed_at >= newest:
            apply_changes(state, it.changes)
            plan.observed[it.profile_id] = it.observed_at
        else:
            plan.refold.add(it.profile_id)
    return plan


async def _take_back(
    conn: asyncpg.Connection,
    kind: Kind,
    plan: _Plan,
    created: set[str],
    created_accounts: set[str],
) -> None:
    """Profiles made for refused items only are deleted again, so a refused item leaves no
    trace."""
    kept = {i.profile_id for i in plan.kept}
    if unused := sorted(created - kept):
        await conn.execute(_DROP[kind], unused)
    if kind == "contact":
        owners = {i.changes["account_id"] for i in plan.kept} | _owners(plan.states, kept)
        if unused_accounts := sorted(created_accounts - owners):
            await conn.execute(_DROP["account"], unused_accounts)


async def _write(
    conn: asyncpg.Connection,
    kind: Kind,
    plan: _Plan,
    rows: dict[str, asyncpg.Record],
    *,
    now: datetime,
    answer: bool,
) -> dict[str, JSONObject]:
    """Insert the new history, fold it again where an older observation arrived, update the
    profiles; with `answer`, the profiles of the kept items as they are now."""
    if recorded := plan.recorded:
        args: list[Any] = [
            [i.profile_id for i in recorded],
            [i.observed_at for i in recorded],
            [orjson.dumps(i.changes).decode() for i in recorded],
        ]
        if kind == "contact":
            args.append([i.changes["account_id"] for i in recorded])
        await conn.execute(_RECORD[kind], *args)
    if plan.refold:
        folded: dict[str, list[JSONObject]] = {}
        for r in await conn.fetch(_HISTORY[kind], sorted(plan.refold)):
            folded.setdefault(r[0], []).append(orjson.loads(r[1]))
        for profile_id, history in folded.items():
            plan.states[profile_id] = fold(history)
    touched = sorted({i.profile_id for i in recorded})
    args = _update_args(kind, touched, plan.states, plan.observed, now) if touched else []
    current = {i.profile_id: _view(rows[i.profile_id]) for i in plan.kept} if answer else {}
    if touched:
        if answer:
            current.update((r[0], _view(r)) for r in await conn.fetch(_UPDATE[kind], *args))
        else:
            await conn.execute(_UPDATE[kind], *args)
    return current


def _owners(states: dict[str, JSONObject], kept: set[str]) -> set[str]:
    return {states[c]["account_id"] for c in kept}


def _canonical(changes: JSONObject) -> bytes:
    return orjson.dumps(changes, option=orjson.OPT_SORT_KEYS)


def _update_args(
    kind: Kind,
    order: list[str],
    states: dict[str, JSONObject],
    observed: dict[str, datetime | None],
    now: datetime,
) -> list[Any]:
    fields = ACCOUNT_FIELDS if kind == "account" else CONTACT_FIELDS
    columns: list[Any] = [order]
    columns += [[states[p].get(f) for p in order] for f in fields]
    columns.append([orjson.dumps(states[p].get("traits") or {}).decode() for p in order])
    columns.append([observed[p] for p in order])
    if kind == "contact":
        columns.append([orjson.dumps(states[p].get("consent") or {}).decode() for p in order])
    return [*columns, now]


async def _link(
    conn: asyncpg.Connection,
    kind: Kind,
    plan: _Plan,
    before: dict[str, asyncpg.Record],
    *,
    now: datetime,
) -> None:
    """Kept items' identifiers go to their profiles (checked free by _refuse_taken). A contact
    whose email changed or was cleared releases the old one, so events stop resolving by it; a
    contact's identifiers follow it to another account."""
    claims: dict[identities.Pair, tuple[str, str]] = {}
    released: list[tuple[str, str, str]] = []
    # The profiles' fields once this batch is written (a refolded state holds only the fields
    # its history ever set).
    kept, after = plan.kept, plan.states

    def account_of(profile_id: str) -> str:
        if kind == "account":
            return profile_id
        return str(after[profile_id].get("account_id") or before[profile_id]["account_id"])

    for it in kept:
        for pair in it.identities:
            claims[pair] = (it.profile_id, account_of(it.profile_id))
    if kind == "contact":
        for contact_id in sorted({i.profile_id for i in kept}):
            old, new = before[contact_id]["email"], after[contact_id].get("email")
            if old != new:
                if old:
                    released.append(("email", old, contact_id))
                if new:
                    claims[("email", new)] = (contact_id, account_of(contact_id))
    await identities.release(conn, kind, released)
    await identities.claim(conn, kind, claims, now=now)
    if kind == "contact" and kept:
        await conn.execute(_FOLLOW, sorted({i.profile_id for i in kept}), now)


async def refold(conn: asyncpg.Connection, kind: Kind, profile_id: str, *, now: datetime) -> None:
    """Fold a profile's whole history again, as after a merge gave it another's: each field takes
    the value of the newest observation that set it, wherever that observation was first sent."""
    [row] = await conn.fetch(_LOCK[kind], [profile_id])
    state = fold(orjson.loads(r[1]) for r in await conn.fetch(_HISTORY[kind], [profile_id]))
    if kind == "contact" and state.get("account_id") is None:
        state["account_id"] = row["account_id"]  # a contact only events named has no history
    observed = await conn.fetchval(_LATEST[kind], profile_id)
    args = _update_args(kind, [profile_id], {profile_id: state}, {profile_id: observed}, now)
    await conn.execute(_UPDATE[kind], *args)
    if kind == "contact":
        await conn.execute(_FOLLOW, [profile_id], now)


async def with_identities(
    conn: asyncpg.Connection, kind: Kind, views: Sequence[JSONObject]
) -> list[JSONObject]:
    """The profiles, each with the identifiers it holds now."""
    key = "account_id" if kind == "account" else "contact_id"
    held = await identities.of(conn, kind, [v[key] for v in views])
    return [{**v, "identities": held[v[key]]} for v in views]


async def get_account(
    conn: asyncpg.Connection, account_id: str, *, as_of: datetime | None = None
) -> Account:
    """An account now or as of a moment; a merged id reads as its survivor."""
    account_id = await identities.survivor(conn, "account", account_id)
    row = await conn.fetchrow(
        "SELECT *, account_first_seen(account_id) AS first_seen FROM accounts "
        "WHERE account_id = $1",
        account_id,
    )
    if row is None:
        raise errors.NotFound(f"No account {account_id!r}.")
    [view] = await with_identities(conn, "account", [_view(row)])
    del view["first_seen"]
    if as_of is None:
        return Account.model_validate(view)
    if not existed(row["first_seen"], as_of):
        raise errors.NotFound(f"Account {account_id!r} did not exist at {as_of.isoformat()}.")
    history = await conn.fetch(
        "SELECT changes FROM account_history WHERE account_id = $1 AND observed_at <= $2 "
        "ORDER BY observed_at, id",
        account_id,
        as_of,
    )
    state = fold(orjson.loads(r[0]) for r in history)
    view.update({f: state.get(f) for f in ACCOUNT_FIELDS}, traits=state.get("traits") or {})
    return Account.model_validate(view)


async def list_accounts(
    conn: asyncpg.Connection, *, segment: str | None, cursor: str | None, limit: int
) -> tuple[list[Account], str | None]:
    rows = await conn.fetch(
        "SELECT * FROM accounts WHERE ($1::text IS NULL OR segment = $1) "
        "AND ($2::text IS NULL OR account_id > $2) ORDER BY account_id LIMIT $3",
        segment,
        None if cursor is None else cursors.decode(cursor, str)[0],
        limit + 1,
    )
    next_cursor = cursors.encode(rows[limit - 1]["account_id"]) if len(rows) > limit else None
    views = await with_identities(conn, "account", [_view(r) for r in rows[:limit]])
    return [Account.model_validate(v) for v in views], next_cursor


async def get_contact(
    conn: asyncpg.Connection, contact_id: str, *, as_of: datetime | None = None
) -> Contact:
    """A contact now or as of a moment; a merged id reads as its survivor."""
    contact_id = await identities.survivor(conn, "contact", contact_id)
    row = await conn.fetchrow("SELECT * FROM contacts WHERE contact_id = $1", contact_id)
    if row is None:
        raise errors.NotFound(f"No contact {contact_id!r}.")
    [view] = await with_identities(conn, "contact", [_view(row)])
    if as_of is None:
        return Contact.model_validate(view)
    history = await conn.fetch(
        "SELECT changes FROM contact_history WHERE contact_id = $1 AND observed_at <= $2 "
        "ORDER BY observed_at, id",
        contact_id,
        as_of,
    )
    if not history:
        raise errors.NotFound(f"Contact {contact_id!r} was not observed by {as_of.isoformat()}.")
    state = fold(orjson.loads(r[0]) for r in history)
    view.update(
        {f: state.get(f) for f in CONTACT_FIELDS},
        traits=state.get("traits") or {},
        consent=state.get("consent") or {},
    )
    return Contact.model_validate(view)
