"""Accounts and contacts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, TypeVar

import asyncpg
from fastapi import APIRouter, Query, Request, Response
from pydantic import TypeAdapter

from app.api import common
from app.api.common import (
    StrictJSONRoute,
    batch_items,
    future_tolerance,
    manual_body,
    problem_responses,
)
from app.governance import auth
from app.governance.auth import Ingest, Principal, Read
from app.people import held, identities, merges, profiles
from app.platform import errors, runtime
from app.schemas.common import Id, Kind, Timestamp
from app.schemas.profiles import (
    MAX_PROFILE_BATCH,
    Account,
    AccountBatch,
    AccountBatchItem,
    AccountPage,
    AccountUpsert,
    AccountUpserted,
    Contact,
    ContactBatch,
    ContactBatchItem,
    ContactUpsert,
    ContactUpserted,
    IdentityMatches,
    Merge,
    MergeRequest,
    ProfileBatchError,
    ProfileBatchResult,
    SuppressedProfile,
)
from app.signals import ingest

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses())
Upserted = TypeVar("Upserted", AccountUpserted, ContactUpserted)


def _observed_problem(
    upsert: AccountUpsert | ContactUpsert, now: datetime, tolerance: timedelta
) -> str | None:
    if upsert.observed_at is None:
        return None
    return ingest.check_moment(upsert.observed_at, now=now, tolerance=tolerance, name="observed_at")


def _trait_limits(request: Request) -> profiles.TraitLimits:
    settings = runtime.of(request).settings
    principal: auth.Principal | None = request.scope.get(auth.PRINCIPAL)
    return profiles.TraitLimits(
        per_profile=settings.max_traits_per_profile,
        overall=settings.max_trait_keys,
        per_writer=settings.max_trait_keys_per_writer,
        writer=None if principal is None else f"key:{principal.key_id}",
        keep_rest=True,  # a client's other fields are not lost for one key over a budget
    )


async def _upsert_each(
    request: Request,
    valid: Sequence[tuple[int, AccountBatchItem | ContactBatchItem]],
    invalid: list[common.InvalidItem],
    *,
    kind: profiles.Kind,
) -> ProfileBatchResult:
    """Store the valid items of a profile batch; an item refused on the way is an error entry
    and writes nothing."""
    now, tolerance = datetime.now(UTC), future_tolerance(request)
    items: list[profiles.Item] = []
    for index, entry in valid:
        problem = _observed_problem(entry, now, tolerance)
        if problem is not None:
            invalid.append(common.InvalidItem(index=index, detail=problem, errors=None))
            continue
        profile_id = entry.account_id if isinstance(entry, AccountBatchItem) else entry.contact_id
        items.append(profiles.item(index, profile_id, entry, now=now))
    outcome = await _store(request, kind, items, now=now)
    invalid += [
        common.InvalidItem(index=i, detail=d, errors=None)
        for i, d in outcome.errors + outcome.conflicts
    ]
    return ProfileBatchResult(
        upserted=outcome.upserted,
        suppressed=len(outcome.suppressed),
        errors=[
            ProfileBatchError(index=e["index"], detail=e["detail"])
            for e in sorted(invalid, key=lambda e: e["index"])
        ],
        dropped=[ProfileBatchError(index=i, detail=d) for i, d in outcome.dropped],
    )


async def _store(
    request: Request,
    kind: profiles.Kind,
    items: list[profiles.Item],
    *,
    now: datetime,
    answer_profiles: bool = False,
) -> profiles.Outcome:
    async with runtime.of(request).pool.acquire() as conn:
        async with conn.transaction():
            outcome = await profiles.upsert(
                conn,
                kind,
                items,
                now=now,
                limits=_trait_limits(request),
                answer=answer_profiles,
                screen=runtime.of(request).screen,
            )
            if answer_profiles:
                shown = await profiles.with_identities(conn, kind, list(outcome.profiles.values()))
                outcome.profiles = {p[f"{kind}_id"]: p for p in shown}
        if outcome.upserted:
            # Signals held for these people and identities (a Segment track before its
            # identify, a Stripe customer, a domain, a Zendesk id, an email) land now.
            refused = {i for i, _ in outcome.errors + outcome.conflicts}
            made = {k for it in items if it.index not in refused for k in held.known(kind, it)}
            await held.attach(conn, made, ctx=common.ingest_context(request, now))
        return outcome


async def _upsert_one(
    request: Request,
    kind: profiles.Kind,
    profile_id: str,
    body: AccountUpsert | ContactUpsert,
    answer: type[Upserted],
) -> Upserted | None:
    """The profile as it is now; None when the upsert names an erased identifier."""
    now = datetime.now(UTC)
    _check_observed(request, body, now)
    item = profiles.item(0, profile_id, body, now=now)
    outcome = await _store(request, kind, [item], now=now, answer_profiles=True)
    if outcome.suppressed:
        return None
    if outcome.conflicts:
        [(_, detail)] = outcome.conflicts
        raise errors.Conflict(detail)
    if outcome.errors:
        [(_, detail)] = outcome.errors
        raise errors.InvalidPayload(
            detail, errors=[{"loc": ["body", "traits"], "msg": detail, "type": "too_long"}]
        )
    found = outcome.profiles[item.profile_id]  # a merged id's survivor
    return answer.model_validate({**found, "dropped": [d for _, d in outcome.dropped]})


def _check_observed(request: Request, upsert: AccountUpsert | ContactUpsert, now: datetime) -> None:
    problem = _observed_problem(upsert, now, future_tolerance(request))
    if problem is not None:
        raise errors.InvalidPayload(
            problem,
            errors=[{"loc": ["body", "observed_at"], "msg": problem, "type": "value_error"}],
        )


def _suppressed(profile_id: str) -> Response:
    body = SuppressedProfile(profile_id=profile_id).model_dump_json()
    return Response(body, status_code=202, media_type="application/json")


SUPPRESSED = {
    202: {
        "model": SuppressedProfile,
        "description": "The upsert names an erased identifier: acknowledged, not stored.",
    }
}


@router.put(
    "/accounts/{account_id}",
    operation_id="upsert_account",
    tags=["accounts"],
    response_model=AccountUpserted,
    responses=SUPPRESSED,  # type: ignore[arg-type]
)
async def upsert_account(
    request: Request, account_id: Id, body: AccountUpsert, _: Ingest
) -> AccountUpserted | Response:
    """Create or update an account. Fields left out keep their value; traits merge key by key.
    Trait keys new to the installation past its budget are left out and named in `dropped`."""
    found = await _upsert_one(request, "account", account_id, body, AccountUpserted)
    return _suppressed(account_id) if found is None else found


@router.post(
    "/accounts/batch",
    operation_id="upsert_accounts_batch",
    tags=["accounts"],
    openapi_extra=manual_body(AccountBatch),
)
async def upsert_accounts_batch(request: Request, _: Ingest) -> ProfileBatchResult:
    """Up to 1000 account upserts; each invalid item is reported by index, the rest are stored."""
    valid, invalid = await batch_items(
        request, "accounts", MAX_PROFILE_BATCH, TypeAdapter(AccountBatchItem)
    )
    return await _upsert_each(request, valid, invalid, kind="account")


@router.get("/accounts/{account_id}", operation_id="get_account", tags=["accounts"])
async def get_account(
    request: Request,
    account_id: Id,
    _: Read,
    as_of: Annotated[
        Timestamp | None, Query(description="Read the profile as it was at this moment.")
    ] = None,
) -> Account:
    """An account as it is now, or folded from its history as it was at `as_of` (404 when it did not
    exist then), with its identities."""
    async with runtime.of(request).pool.acquire() as conn:
        return await profiles.get_account(conn, account_id, as_of=as_of)


@router.get("/accounts", operation_id="list_accounts", tags=["accounts"])
async def list_accounts(
    request: Request,
    _: Read,
    segment: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AccountPage:
    """Accounts by id, optionally of one segment, a page at a time (`next_cursor` is null on the
    last page)."""
    async with runtime.of(request).pool.acquire() as conn:
        rows, next_cursor = await profiles.list_accounts(
            conn, segment=segment, cursor=cursor, limit=limit
        )
    return AccountPage(items=rows, next_cursor=next_cursor)


@router.put(
    "/contacts/{contact_id}",
    operation_id="upsert_contact",
    tags=["contacts"],
    response_model=ContactUpserted,
    responses=SUPPRESSED,  # type: ignore[arg-type]
)
async def upsert_contact(
    request: Request, contact_id: Id, body: ContactUpsert, _: Ingest
) -> ContactUpserted | Response:
    """Create or update a contact of an account (created if unknown). Trait keys new to the
    installation past its budget are left out and named in `dropped`."""
    found = await _upsert_one(request, "contact", contact_id, body, ContactUpserted)
    return _suppressed(contact_id) if found is None else found


@router.post(
    "/contacts/batch",
    operation_id="upsert_contacts_batch",
    tags=["contacts"],
    openapi_extra=manual_body(ContactBatch),
)
async def upsert_contacts_batch(request: Request, _: Ingest) -> ProfileBatchResult:
    """Up to 1000 contact upserts; each invalid or conflicting item is reported by index, the rest
    are stored."""
    valid, invalid = await batch_items(
        request, "contacts", MAX_PROFILE_BATCH, TypeAdapter(ContactBatchItem)
    )
    return await _upsert_each(request, valid, invalid, kind="contact")


@router.get("/contacts/{contact_id}", operation_id="get_contact", tags=["contacts"])
async def get_contact(
    request: Request,
    contact_id: Id,
    _: Read,
    as_of: Annotated[
        Timestamp | None, Query(description="Read the contact as it was at this moment.")
    ] = None,
) -> Contact:
    """A contact as it is now, or as its history says it was at `as_of` (404 when it had not
    been observed by then)."""
    async with runtime.of(request).pool.acquire() as conn:
        return await profiles.get_contact(conn, contact_id, as_of=as_of)


async def _merge(
    request: Request, kind: profiles.Kind, survivor_id: str, body: MergeRequest, who: Principal
) -> Merge:
    for attempt in (1, 2):
        try:
            async with runtime.of(request).pool.acquire() as conn, conn.transaction():
                merged = await merges.merge(
                    conn,
                    kind,
                    survivor_id=survivor_id,
                    merged_id=body.merged_from,
                    actor=who.name,
                    now=datetime.now(UTC),
                )
            return merged
        except asyncpg.DeadlockDetectedError:
            # Two merges crossing over the same rows: Postgres ended one; it is tried once more
            # (the other has committed by then), then left to the caller.
            if attempt == 2:
                raise errors.Conflict(
                    "Another merge of these profiles ran at the same moment; send it again."
                ) from None
    raise AssertionError("unreachable")


@router.post(
    "/contacts/{contact_id}/merge",
    operation_id="merge_contacts",
    tags=["contacts"],
)
async def merge_contacts(
    request: Request, contact_id: Id, body: MergeRequest, who: Ingest
) -> Merge:
    """Merge contact `from` into this one, the same person known twice: its identities, its
    history (each observation keeps its time, so older ones stay older) and its events move
    here; the fields are folded again from the combined history. `from` keeps resolving to this
    contact, so late events still land. Audited with what moved. Sending it again moves what
    reached `from` since. 404 when either is unknown; 409 for a contact merged into itself or
    one already merged into another."""
    return await _merge(request, "contact", contact_id, body, who)


@router.post(
    "/accounts/{account_id}/merge",
    operation_id="merge_accounts",
    tags=["accounts"],
)
async def merge_accounts(
    request: Request, account_id: Id, body: MergeRequest, who: Ingest
) -> Merge:
    """Merge account `from` into this one: its identities, history, contacts, events, outcomes,
    scores, insights and held signals move here, and the fields are folded again from the
    combined history (older observations stay older). `from` keeps resolving to this account,
    so late events still land. Audited with what moved. Sending it again moves what reached
    `from` since. 404 when either is unknown; 409 for an account merged into itself or one
    already merged into another."""
    return await _merge(request, "account", account_id, body, who)


@router.get("/identities", operation_id="resolve_identity", tags=["contacts"])
async def resolve_identity(
    request: Request,
    _: Read,
    kind: Annotated[Kind, Query(description="email, user_id, anonymous_id, domain, crm, ...")],
    value: Annotated[str, Query(min_length=1, max_length=320)],
) -> IdentityMatches:
    """Who an identifier belongs to: the contact (and its account) or the account it names;
    404 when no one holds it. Emails and domains match trimmed and lower-cased."""
    async with runtime.of(request).pool.acquire() as conn:
        matches = await identities.resolve(conn, kind, value)
    if not matches:
        raise errors.NotFound(f"No contact or account holds {kind} {value!r}.")
    return IdentityMatches(matches=matches)
