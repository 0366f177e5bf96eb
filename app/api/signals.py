"""Events and outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import TypeAdapter

from app.api import common
from app.api.common import (
    StrictJSONRoute,
    batch_items,
    future_tolerance,
    ingest_context,
    manual_body,
    problem_responses,
)
from app.governance.auth import Ingest, Read
from app.people import held, timeline
from app.platform import errors, runtime
from app.schemas.common import BatchResult, Id, ItemError, Name, Timestamp
from app.schemas.signals import (
    MAX_EVENT_BATCH,
    MAX_OUTCOME_BATCH,
    EventAccepted,
    EventBatch,
    EventIn,
    EventPage,
    OutcomeAccepted,
    OutcomeBatch,
    OutcomeIn,
    OutcomeOut,
    UnresolvedPage,
)
from app.signals import ingest

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses())

_events_in = TypeAdapter(EventIn)
_batch_in = TypeAdapter(EventBatch)
_outcomes_in = TypeAdapter(OutcomeIn)


def _single(result: ingest.ItemResult) -> None:
    if result.status == "error":
        assert result.detail is not None
        if result.conflict:
            raise errors.Conflict(result.detail)
        raise errors.InvalidPayload(
            result.detail,
            errors=[
                {
                    # An event's problem names its field when there is one.
                    "loc": ["body"] if result.field is None else ["body", result.field],
                    "msg": result.detail,
                    "type": "value_error",
                }
            ],
        )


def _summary(results: list[ingest.ItemResult], invalid: list[common.InvalidItem]) -> BatchResult:
    problems = [ItemError(**e) for e in invalid] + [
        ItemError(index=r.index, detail=r.detail or "rejected")
        for r in results
        if r.status == "error"
    ]
    return BatchResult(
        accepted=sum(r.status == "accepted" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        suppressed=sum(r.status == "suppressed" for r in results),
        errors=sorted(problems, key=lambda e: e.index),
    )


async def _events(request: Request, items: list[tuple[int, EventIn]]) -> list[ingest.ItemResult]:
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        stored = await ingest_context(request, datetime.now(UTC)).ingest_events(conn, items)
    state.known_ids.remember(accounts=stored.accounts, contacts=stored.contacts)
    return stored.results


async def _outcomes(
    request: Request, items: list[tuple[int, OutcomeIn]]
) -> list[ingest.ItemResult]:
    state = runtime.of(request)
    known = state.known_ids
    async with state.pool.acquire() as conn:
        stored = await ingest.ingest_outcomes(
            conn,
            items,
            now=datetime.now(UTC),
            tolerance=future_tolerance(request),
            known=known,
            screen=state.screen,
        )
    known.remember(accounts=stored.accounts, contacts=stored.contacts)
    return stored.results


@router.post(
    "/events",
    status_code=202,
    operation_id="ingest_event",
    tags=["events"],
    response_model=EventAccepted,
)
async def ingest_event(body: EventIn, request: Request, _: Ingest) -> Response:
    """Store one signal. Answered once committed; the same event_id again is a duplicate."""
    [result] = await _events(request, [(0, body)])
    _single(result)
    # The hottest write: two fields written directly rather than validated and serialised by
    # the response model again (the contract tests check the answer against the schema).
    accepted = {"event_id": result.item_id, "duplicate": result.status == "duplicate"}
    if result.status == "suppressed":
        accepted["suppressed"] = True
    return Response(orjson.dumps(accepted), status_code=202, media_type="application/json")


@router.post(
    "/events/batch",
    operation_id="ingest_events_batch",
    tags=["events"],
    openapi_extra=manual_body(EventBatch),
)
async def ingest_events_batch(request: Request, _: Ingest) -> BatchResult:
    """Up to 5000 events. Valid ones are stored; each invalid one is reported by its index."""
    valid, invalid = await batch_items(request, "events", MAX_EVENT_BATCH, _events_in, _batch_in)
    return _summary(await _events(request, valid), invalid)


@router.get("/accounts/{account_id}/events", operation_id="list_account_events", tags=["events"])
async def list_account_events(
    request: Request,
    account_id: Id,
    _: Read,
    since: Annotated[
        Timestamp | None, Query(description="Only events that occurred at or after this moment.")
    ] = None,
    until: Annotated[
        Timestamp | None, Query(description="Only events that occurred at or before this moment.")
    ] = None,
    types: Annotated[
        list[Name] | None,
        Query(alias="type", max_length=100, description="Only these event types (repeatable)."),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    """The account's timeline: its events newest first, a page at a time (`next_cursor` is null
    on the last page). Events arriving meanwhile never shift a page."""
    async with runtime.of(request).pool.acquire() as conn:
        rows, next_cursor = await timeline.events(
            conn, account_id, since=since, until=until, types=types, cursor=cursor, limit=limit
        )
    return EventPage(items=rows, next_cursor=next_cursor)


@router.get(
    "/accounts/{account_id}/outcomes", operation_id="list_account_outcomes", tags=["outcomes"]
)
async def list_account_outcomes(
    request: Request,
    account_id: Id,
    _: Read,
    kinds: Annotated[
        list[Name] | None,
        Query(alias="kind", max_length=100, description="Only these kinds (repeatable)."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OutcomeOut]:
    """What really happened to the account (churned, renewed, expanded, ...), newest first,
    with what was sent about it (a Stripe cancellation's reason and comment)."""
    async with runtime.of(request).pool.acquire() as conn:
        rows = await timeline.outcomes(conn, account_id, kinds=kinds, limit=limit)
    return rows


@router.get("/unresolved", operation_id="list_unresolved", tags=["events"])
async def list_unresolved(
    request: Request,
    _: Read,
    status: Annotated[Literal["held", "expired"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UnresolvedPage:
    """Signals that named no account custintel could find yet (a Segment track before its
    user's identify or group), newest first. Held ones are attached as soon as an identity
    resolves them; after CUSTINTEL_UNRESOLVED_DAYS they are expired, and still listed."""
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        rows, next_cursor = await held.listing(
            conn,
            status=status,
            cursor=cursor,
            limit=limit,
            now=datetime.now(UTC),
            days=state.settings.unresolved_days,
        )
    return UnresolvedPage(items=rows, next_cursor=next_cursor)


@router.post("/outcomes", status_code=202, operation_id="record_outcome", tags=["outcomes"])
async def record_outcome(body: OutcomeIn, request: Request, _: Ingest) -> OutcomeAccepted:
    """Record what really happened to an account (churned, renewed, expanded, ...)."""
    [result] = await _outcomes(request, [(0, body)])
    _single(result)
    return OutcomeAccepted(
        outcome_id=result.item_id,
        duplicate=result.status == "duplicate",
        suppressed=result.status == "suppressed",
    )


@router.post(
    "/outcomes/batch",
    operation_id="record_outcomes_batch",
    tags=["outcomes"],
    openapi_extra=manual_body(OutcomeBatch),
)
async def record_outcomes_batch(request: Request, _: Ingest) -> BatchResult:
    """Up to 5000 outcomes; each invalid one is reported by its index, the rest are stored."""
    valid, invalid = await batch_items(request, "outcomes", MAX_OUTCOME_BATCH, _outcomes_in)
    return _summary(await _outcomes(request, valid), invalid)
