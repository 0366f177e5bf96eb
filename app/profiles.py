"""Accounts and contacts: upserts kept as history, current values folded from it, reads as of t.

Semantics: each field takes the value of the newest observation that set it (by observed_at, then
arrival). An upsert older than the newest one is stored in history and folded in only where no
newer observation set the same field, so it never overwrites newer values.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.schemas.profiles import AccountUpsert, ContactUpsert
from app.tables import (
    Account,
    AccountHistory,
    Contact,
    ContactHistory,
    ContactIdentity,
    Event,
    TraitKey,
)

ACCOUNT_FIELDS = ("name", "segment", "plan", "mrr", "owner_email")


@dataclass(frozen=True)
class TraitLimits:
    """Trait keys one profile may hold, and distinct trait keys per kind of profile overall
    (CUSTINTEL_MAX_TRAITS_PER_PROFILE, CUSTINTEL_MAX_TRAIT_KEYS): each key can become a
    feature, and merges only ever add keys."""

    per_profile: int
    overall: int


async def _check_traits(
    session: AsyncSession,
    *,
    kind: Literal["account", "contact"],
    current: dict[str, Any] | None,
    changes: dict[str, Any],
    limits: TraitLimits,
) -> None:
    """Refuse (422, before anything is written) an upsert that would take the profile or the
    installation past its trait key limits; otherwise record its new keys."""
    added = {k for k, v in (changes.get("traits") or {}).items() if v is not None}
    if not added:
        return
    held = set(current or ()) | added
    if len(held) > limits.per_profile:
        raise _trait_problem(
            f"this {kind} would hold {len(held)} trait keys; at most {limits.per_profile} "
            "(CUSTINTEL_MAX_TRAITS_PER_PROFILE): remove some with null values first"
        )
    known = set(
        await session.scalars(
            select(TraitKey.key).where(TraitKey.kind == kind, TraitKey.key.in_(sorted(added)))
        )
    )
    new = sorted(added - known)
    if not new:
        return
    count = await session.scalar(select(func.count()).where(TraitKey.kind == kind))
    if (count or 0) + len(new) > limits.overall:
        raise _trait_problem(
            f"{len(new)} new {kind} trait key(s) would make {(count or 0) + len(new)}; at most "
            f"{limits.overall} (CUSTINTEL_MAX_TRAIT_KEYS): reuse existing keys"
        )
    await session.execute(
        insert(TraitKey).values([{"kind": kind, "key": k} for k in new]).on_conflict_do_nothing()
    )


def _trait_problem(detail: str) -> errors.InvalidPayload:
    return errors.InvalidPayload(
        detail, errors=[{"loc": ["body", "traits"], "msg": detail, "type": "too_long"}]
    )


CONTACT_FIELDS = ("account_id", "email", "name", "role")


def apply_changes(state: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key == "traits":
            traits = dict(state.get("traits") or {})
            for trait, trait_value in value.items():
                if trait_value is None:
                    traits.pop(trait, None)
                else:
                    traits[trait] = trait_value
            state["traits"] = traits
        else:
            state[key] = value


def fold(history: Iterable[dict[str, Any]]) -> dict[str, Any]:
    state: dict[str, Any] = {"traits": {}}
    for changes in history:
        apply_changes(state, changes)
    return state


def _changes(upsert: AccountUpsert | ContactUpsert) -> dict[str, Any]:
    changes = upsert.model_dump(mode="json", exclude_unset=True, exclude={"observed_at"})
    if isinstance(upsert, ContactUpsert):
        changes.pop("identities", None)  # kept in the identities table, not a profile field
    return changes


async def upsert_account(
    session: AsyncSession,
    account_id: str,
    *,
    upsert: AccountUpsert,
    now: datetime,
    limits: TraitLimits,
) -> Account:
    observed_at = upsert.observed_at or now
    changes = _changes(upsert)
    current = await session.scalar(select(Account.traits).where(Account.account_id == account_id))
    await _check_traits(session, kind="account", current=current, changes=changes, limits=limits)
    await session.execute(
        insert(Account)
        .values(account_id=account_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )
    account = await session.get(Account, account_id, with_for_update=True, populate_existing=True)
    assert account is not None
    replay = await session.scalar(
        select(AccountHistory.id)
        .where(
            AccountHistory.account_id == account_id,
            AccountHistory.observed_at == observed_at,
            AccountHistory.changes == changes,
        )
        .limit(1)
    )
    if replay is not None:
        return account  # the same upsert again: nothing new to record
    session.add(AccountHistory(account_id=account_id, observed_at=observed_at, changes=changes))
    if account.observed_at is None or observed_at >= account.observed_at:
        state = _account_state(account)
        apply_changes(state, changes)
        account.observed_at = observed_at
    else:
        await session.flush()
        state = fold(await _account_history(session, account_id, until=None))
    for field in ACCOUNT_FIELDS:
        setattr(account, field, state.get(field))
    account.traits = state.get("traits") or {}
    account.updated_at = now
    await session.flush()
    return account


def _account_state(account: Account) -> dict[str, Any]:
    state: dict[str, Any] = {f: getattr(account, f) for f in ACCOUNT_FIELDS}
    state["traits"] = dict(account.traits or {})
    return state


async def _account_history(
    session: AsyncSession, account_id: str, *, until: datetime | None
) -> list[dict[str, Any]]:
    query = select(AccountHistory.changes).where(AccountHistory.account_id == account_id)
    if until is not None:
        query = query.where(AccountHistory.observed_at <= until)
    rows = await session.scalars(query.order_by(AccountHistory.observed_at, AccountHistory.id))
    return list(rows)


async def get_account(
    session: AsyncSession, account_id: str, *, as_of: datetime | None = None
) -> dict[str, Any]:
    account = await session.get(Account, account_id)
    if account is None:
        raise errors.NotFound(f"No account {account_id!r}.")
    view: dict[str, Any] = {
        "account_id": account.account_id,
        "created_at": account.created_at,
        "updated_at": account.updated_at,
    }
    if as_of is None:
        view.update(_account_state(account))
        return view
    history = await _account_history(session, account_id, until=as_of)
    if not history:
        first_event = await session.scalar(
            select(func.min(Event.occurred_at)).where(Event.account_id == account_id)
        )
        if first_event is None or first_event > as_of:
            raise errors.NotFound(f"Account {account_id!r} did not exist at {as_of.isoformat()}.")
    state = fold(history)
    view.update({f: state.get(f) for f in ACCOUNT_FIELDS}, traits=state.get("traits") or {})
    return view


async def list_accounts(
    session: AsyncSession, *, segment: str | None, cursor: str | None, limit: int
) -> tuple[list[Account], str | None]:
    query = select(Account).order_by(Account.account_id).limit(limit + 1)
    if segment is not None:
        query = query.where(Account.segment == segment)
    if cursor is not None:
        query = query.where(Account.account_id > decode_cursor(cursor))
    rows = list(await session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1].account_id) if len(rows) > limit else None
    return rows[:limit], next_cursor


_CURSOR_MARK = "after:"


def encode_cursor(account_id: str) -> str:
    raw = (_CURSOR_MARK + account_id).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        value = ""
    if not value.startswith(_CURSOR_MARK) or "\x00" in value:
        raise errors.BadRequest("cursor is not one this service issued")
    return value[len(_CURSOR_MARK) :]


async def upsert_contact(
    session: AsyncSession,
    contact_id: str,
    *,
    upsert: ContactUpsert,
    now: datetime,
    limits: TraitLimits,
) -> Contact:
    observed_at = upsert.observed_at or now
    changes = _changes(upsert)
    current = await session.scalar(select(Contact.traits).where(Contact.contact_id == contact_id))
    await _check_traits(session, kind="contact", current=current, changes=changes, limits=limits)
    if "email" in changes and changes["email"] is not None:
        changes["email"] = changes["email"].lower()
    await session.execute(
        insert(Account)
        .values(account_id=upsert.account_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )
    await session.execute(
        insert(Contact)
        .values(contact_id=contact_id, account_id=upsert.account_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing()
    )
    contact = await session.get(Contact, contact_id, with_for_update=True, populate_existing=True)
    assert contact is not None
    replay = await session.scalar(
        select(ContactHistory.id)
        .where(
            ContactHistory.contact_id == contact_id,
            ContactHistory.observed_at == observed_at,
            ContactHistory.changes == changes,
        )
        .limit(1)
    )
    if replay is None:
        session.add(
            ContactHistory(
                contact_id=contact_id,
                account_id=upsert.account_id,
                observed_at=observed_at,
                changes=changes,
            )
        )
        if contact.observed_at is None or observed_at >= contact.observed_at:
            state: dict[str, Any] = {f: getattr(contact, f) for f in CONTACT_FIELDS}
            state["traits"] = dict(contact.traits or {})
            apply_changes(state, changes)
            contact.observed_at = observed_at
        else:
            await session.flush()
            rows = await session.scalars(
                select(ContactHistory.changes)
                .where(ContactHistory.contact_id == contact_id)
                .order_by(ContactHistory.observed_at, ContactHistory.id)
            )
            state = fold(rows)
        for field in CONTACT_FIELDS:
            setattr(contact, field, state.get(field))
        contact.traits = state.get("traits") or {}
        contact.updated_at = now
    identities = dict(upsert.identities or {})
    if contact.email:
        identities["email"] = contact.email
    await _link_identities(session, contact, identities, now=now)
    await session.flush()
    return contact


async def _link_identities(
    session: AsyncSession, contact: Contact, identities: dict[str, str], *, now: datetime
) -> None:
    """An identifier points at the contact that most recently claimed it."""
    for kind, value in sorted(identities.items()):
        stmt = insert(ContactIdentity).values(
            kind=kind,
            value=value,
            contact_id=contact.contact_id,
            account_id=contact.account_id,
            updated_at=now,
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["kind", "value"],
                set_={
                    "contact_id": stmt.excluded.contact_id,
                    "account_id": stmt.excluded.account_id,
                    "updated_at": now,
                },
            )
        )


async def get_contact(session: AsyncSession, contact_id: str) -> Contact:
    contact = await session.get(Contact, contact_id)
    if contact is None:
        raise errors.NotFound(f"No contact {contact_id!r}.")
    return contact
