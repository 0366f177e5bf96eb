"""Receivers of senders' signed webhooks at /hooks/{source_id}, outside /v1 and its keys: the
signature is the authentication. An unknown or disabled source is refused before the body is
read; every refusal is the same 401, which does not say which check failed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request

from app.api.common import ingest_context, problem_responses
from app.platform import errors, runtime
from app.schemas.sources import HookAnswer
from app.signals import sources
from app.signals.sources import common

router = APIRouter(responses=problem_responses(400, 401, 413), tags=["hooks"])


@router.post("/hooks/{source_id}", operation_id="receive_hook")
async def receive_hook(request: Request, source_id: str) -> HookAnswer:
    """A sender's delivery (Stripe, Zendesk, HubSpot or Intercom, as the source's kind says),
    verified over the raw body with the source's secret and a replay window
    (CUSTINTEL_SOURCE_REPLAY_SECONDS). Each event is stored once by the sender's own id: a
    redelivery answers 200 and counts as a duplicate."""
    received_at = datetime.now(UTC)
    try:
        source = uuid.UUID(source_id)
    except ValueError:
        raise errors.Unauthorized("The delivery could not be verified.") from None
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        row = await sources.receiver(conn, source)  # before anything of the body is read
    # The body is read and verified holding no connection: ten slow uploads must not take the
    # pool from every other route.
    delivery = sources.verify(
        row,
        common.Request(
            method=request.method,
            url=str(request.url),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=await request.body(),
            received_at=received_at,
        ),
        settings=state.settings,
    )
    async with state.pool.acquire() as conn:
        tally = await sources.receive(conn, delivery, ctx=ingest_context(request, received_at))
    return tally
