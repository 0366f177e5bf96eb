"""Accounts and contacts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from app import errors, ingest, profiles
from app.api.common import (
    StrictJSONRoute,
    batch_items,
    future_tolerance,
    manual_body,
    problem_responses,
)
from app.auth import Ingest, Read
from app.db import SessionDep
from app.schemas.common import Id, Timestamp
from app.schemas.profiles import (
    MAX_PROFILE_BATCH,
    Account,
    AccountBatch,
    AccountBatchItem,
    AccountPage,
    AccountUpsert,
    Contact,
    ContactBatch,
    ContactBatchItem,
    ContactUpsert,
    ProfileBatchError,
    ProfileBatchResult,
)

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses())


def _observed_problem(
    request: Request, upsert: AccountUpsert | ContactUpsert, now: datetime
) -> str | None:
    if upsert.observed_at is None:
        return None
    return ingest.check_moment(
        upsert.observed_at, now=now, tolerance=future_tolerance(request), name="observed_at"
    )


def _trait_limits(request: Request) -> profiles.TraitLimits:
    settings = request.app.state.settings
    return profiles.TraitLimits(
        per_profile=settings.max_traits_per_profile, overall=settings.max_trait_keys
    )


async def _upsert_each(
    request: Request,
    session: AsyncSession,
    valid: Sequence[tuple[int, AccountBatchItem | ContactBatchItem]],
    invalid: list[dict[str, Any]],
    *,
    key: Literal["account_id", "contact_id"],
    upsert_type: type[AccountUpsert] | type[ContactUpsert],
    store: Callable[..., Awaitable[object]],
) -> ProfileBatchResult:
    """Store each valid item of a profile batch (in id order, so that parallel batches lock
    profiles in one order); an item refused on the way is an error entry and writes nothing."""
    now = datetime.now(UTC)
    limits = _trait_limits(request)
    upserted = 0
    for index, item in sorted(valid, key=lambda pair: getattr(pair[1], key)):
        problem = _observed_problem(request, item, now)
        if problem is not None:
            invalid.append({"index": index, "detail": problem})
            continue
        upsert = upsert_type.model_validate(item.model_dump(exclude={str(key)}, exclude_unset=True))
        try:
            await store(session, getattr(item, key), upsert=upsert, now=now, limits=limits)
        except errors.InvalidPayload as exc:  # raised before the item wrote anything
            invalid.append({"index": index, "detail": exc.detail})
            continue
        upserted += 1
    await session.commit()
    return ProfileBatchResult(
        upserted=upserted,
        errors=[
            ProfileBatchError(index=e["index"], detail=e["detail"])
            for e in sorted(invalid, key=lambda e: e["index"])
        ],
    )


def _check_observed(request: Request, upsert: AccountUpsert | ContactUpsert, now: datetime) -> None:
    problem = _observed_problem(request, upsert, now)
    if problem is not None:
        raise errors.InvalidPayload(
            problem,
            errors=[{"loc": ["body", "observed_at"], "msg": problem, "type": "value_error"}],
        )


@router.put("/accounts/{account_id}", operation_id="upsert_account", tags=["accounts"])
async def upsert_account(
    request: Request, account_id: Id, body: AccountUpsert, session: SessionDep, _: Ingest
) -> Account:
    """Create or update an account. Fields left out keep their value; traits merge key by key."""
    now = datetime.now(UTC)
    _check_observed(request, body, now)
    account = await profiles.upsert_account(
        session, account_id, upsert=body, now=now, limits=_trait_limits(request)
    )
    await session.commit()
    return Account.model_validate(account, from_attributes=True)


@router.post(
    "/accounts/batch",
    operation_id="upsert_accounts_batch",
    tags=["accounts"],
    openapi_extra=manual_body(AccountBatch),
)
async def upsert_accounts_batch(
    request: Request, session: SessionDep, _: Ingest
) -> ProfileBatchResult:
    """Up to 1000 account upserts; each invalid item is reported by index, the rest are stored."""
    valid, invalid = await batch_items(
        request, "accounts", MAX_PROFILE_BATCH, TypeAdapter(AccountBatchItem)
    )
    return await _upsert_each(
        request,
        session,
        valid,
        invalid,
        key="account_id",
        upsert_type=AccountUpsert,
        store=profiles.upsert_account,
    )


@router.get("/accounts/{account_id}", operation_id="get_account", tags=["accounts"])
async def get_account(
    account_id: Id,
    session: SessionDep,
    _: Read,
    as_of: Annotated[
        Timestamp | None, Query(description="Read the profile as it was at this moment.")
    ] = None,
) -> Account:
    return Account.model_validate(await profiles.get_account(session, account_id, as_of=as_of))


@router.get("/accounts", operation_id="list_accounts", tags=["accounts"])
async def list_accounts(
    session: SessionDep,
    _: Read,
    segment: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AccountPage:
    rows, next_cursor = await profiles.list_accounts(
        session, segment=segment, cursor=cursor, limit=limit
    )
    return AccountPage(
        items=[Account.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )


@router.put("/contacts/{contact_id}", operation_id="upsert_contact", tags=["contacts"])
async def upsert_contact(
    request: Request, contact_id: Id, body: ContactUpsert, session: SessionDep, _: Ingest
) -> Contact:
    """Create or update a contact of an account (created if unknown)."""
    now = datetime.now(UTC)
    _check_observed(request, body, now)
    contact = await profiles.upsert_contact(
        session, contact_id, upsert=body, now=now, limits=_trait_limits(request)
    )
    await session.commit()
    return Contact.model_validate(contact, from_attributes=True)


@router.post(
    "/contacts/batch",
    operation_id="upsert_contacts_batch",
    tags=["contacts"],
    openapi_extra=manual_body(ContactBatch),
)
async def upsert_contacts_batch(
    request: Request, session: SessionDep, _: Ingest
) -> ProfileBatchResult:
    valid, invalid = await batch_items(
        request, "contacts", MAX_PROFILE_BATCH, TypeAdapter(ContactBatchItem)
    )
    return await _upsert_each(
        request,
        session,
        valid,
        invalid,
        key="contact_id",
        upsert_type=ContactUpsert,
        store=profiles.upsert_contact,
    )


@router.get("/contacts/{contact_id}", operation_id="get_contact", tags=["contacts"])
async def get_contact(contact_id: Id, session: SessionDep, _: Read) -> Contact:
    return Contact.model_validate(
        await profiles.get_contact(session, contact_id), from_attributes=True
    )
