"""Events and outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from pydantic import TypeAdapter

from app import errors, ingest
from app.api.common import (
    StrictJSONRoute,
    batch_items,
    manual_body,
    problem_responses,
)
from app.auth import Ingest
from app.db import SessionDep
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

_events = TypeAdapter(EventIn)
_event_batch = TypeAdapter(EventBatch)
_outcomes = TypeAdapter(OutcomeIn)


def _tolerance(request: Request) -> timedelta:
    return timedelta(hours=request.app.state.settings.future_tolerance_hours)


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


@router.post("/events", status_code=202, operation_id="ingest_event", tags=["events"])
async def ingest_event(
    body: EventIn, request: Request, session: SessionDep, _: Ingest
) -> EventAccepted:
    """Store one signal. Answered once committed; the same event_id again is a duplicate."""
    state = request.app.state
    [result] = await ingest.ingest_events(
        session,
        [(0, body)],
        now=datetime.now(UTC),
        tolerance=_tolerance(request),
        known=state.known_ids,
        partition_manager=state.partitions,
    )
    _single(result)
    await session.commit()
    return EventAccepted(event_id=result.item_id, duplicate=result.status == "duplicate")


@router.post(
    "/events/batch",
    operation_id="ingest_events_batch",
    tags=["events"],
    openapi_extra=manual_body(EventBatch),
)
async def ingest_events_batch(request: Request, session: SessionDep, _: Ingest) -> BatchResult:
    """Up to 5000 events. Valid ones are stored; each invalid one is reported by its index."""
    valid, invalid = await batch_items(request, "events", MAX_EVENT_BATCH, _events, _event_batch)
    state = request.app.state
    results = await ingest.ingest_events(
        session,
        valid,
        now=datetime.now(UTC),
        tolerance=_tolerance(request),
        known=state.known_ids,
        partition_manager=state.partitions,
    )
    await session.commit()
    return _summary(results, invalid)


@router.post("/outcomes", status_code=202, operation_id="record_outcome", tags=["outcomes"])
async def record_outcome(
    body: OutcomeIn, request: Request, session: SessionDep, _: Ingest
) -> OutcomeAccepted:
    """Record what really happened to an account (churned, renewed, expanded, ...)."""
    [result] = await ingest.ingest_outcomes(
        session,
        [(0, body)],
        now=datetime.now(UTC),
        tolerance=_tolerance(request),
        known=request.app.state.known_ids,
    )
    _single(result)
    await session.commit()
    return OutcomeAccepted(outcome_id=result.item_id, duplicate=result.status == "duplicate")


@router.post(
    "/outcomes/batch",
    operation_id="record_outcomes_batch",
    tags=["outcomes"],
    openapi_extra=manual_body(OutcomeBatch),
)
async def record_outcomes_batch(request: Request, session: SessionDep, _: Ingest) -> BatchResult:
    valid, invalid = await batch_items(request, "outcomes", MAX_OUTCOME_BATCH, _outcomes)
    results = await ingest.ingest_outcomes(
        session,
        valid,
        now=datetime.now(UTC),
        tolerance=_tolerance(request),
        known=request.app.state.known_ids,
    )
    await session.commit()
    return _summary(results, invalid)
