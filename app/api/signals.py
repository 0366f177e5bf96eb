"""Events and outcomes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import TypeAdapter

from app import errors, ingest, runtime
from app.api.common import (
    StrictJSONRoute,
    batch_items,
    future_tolerance,
    manual_body,
    problem_responses,
)
from app.auth import Ingest
from app.schemas.common import BatchResult, ItemError
from app.schemas.signals import (
    MAX_EVENT_BATCH,
    MAX_OUTCOME_BATCH,
    EventAccepted,
    EventBatch,
    EventIn,
    OutcomeAccepted,
    OutcomeBatch,
    OutcomeIn,
)

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
            errors=[{"loc": ["body", result.field], "msg": result.detail, "type": "value_error"}],
        )


def _summary(results: list[ingest.ItemResult], invalid: list[dict[str, Any]]) -> BatchResult:
    problems = [ItemError(**e) for e in invalid] + [
        ItemError(index=r.index, detail=r.detail or "rejected")
        for r in results
        if r.status == "error"
    ]
    return BatchResult(
        accepted=sum(r.status == "accepted" for r in results),
        duplicates=sum(r.status == "duplicate" for r in results),
        errors=sorted(problems, key=lambda e: e.index),
    )


async def _events(request: Request, items: list[tuple[int, EventIn]]) -> list[ingest.ItemResult]:
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        stored = await ingest.ingest_events(
            conn,
            items,
            now=datetime.now(UTC),
            tolerance=future_tolerance(request),
            known=state.known_ids,
            partition_manager=state.partitions,
        )
    state.known_ids.remember(accounts=stored.accounts, contacts=stored.contacts)
    return stored.results


async def _outcomes(
    request: Request, items: list[tuple[int, OutcomeIn]]
) -> list[ingest.ItemResult]:
    known = runtime.of(request).known_ids
    async with runtime.of(request).pool.acquire() as conn:
        stored = await ingest.ingest_outcomes(
            conn, items, now=datetime.now(UTC), tolerance=future_tolerance(request), known=known
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


@router.post("/outcomes", status_code=202, operation_id="record_outcome", tags=["outcomes"])
async def record_outcome(body: OutcomeIn, request: Request, _: Ingest) -> OutcomeAccepted:
    """Record what really happened to an account (churned, renewed, expanded, ...)."""
    [result] = await _outcomes(request, [(0, body)])
    _single(result)
    return OutcomeAccepted(outcome_id=result.item_id, duplicate=result.status == "duplicate")


@router.post(
    "/outcomes/batch",
    operation_id="record_outcomes_batch",
    tags=["outcomes"],
    openapi_extra=manual_body(OutcomeBatch),
)
async def record_outcomes_batch(request: Request, _: Ingest) -> BatchResult:
    valid, invalid = await batch_items(request, "outcomes", MAX_OUTCOME_BATCH, _outcomes_in)
    return _summary(await _outcomes(request, valid), invalid)
