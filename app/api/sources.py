"""Sources (admin): the senders whose signed webhooks custintel receives at /hooks/{id}."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from app.api import common
from app.api.common import StrictJSONRoute, problem_responses
from app.governance.auth import Sources
from app.platform import errors, runtime
from app.schemas.sources import Rejection, Replay, Source, SourceCreate, SourceUpdate
from app.signals import sources

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses(), tags=["sources"])


@router.post("/sources", status_code=201, operation_id="create_source")
async def create_source(request: Request, body: SourceCreate, who: Sources) -> Source:
    """Register a sender. Paste the answer's `url` (behind this server's address) into the
    sender's webhook console; `secret` is the signing secret it issued, stored encrypted and
    never returned."""
    if who.sources is not None:
        raise errors.Forbidden("This key is limited to some sources and creates none.")
    state = runtime.of(request)
    async with state.pool.acquire() as conn, conn.transaction():
        created = await sources.create(
            conn,
            kind=body.kind,
            name=body.name,
            secret=body.secret,
            source_settings=body.settings,
            settings=state.settings,
            actor=who.name,
        )
    return created


@router.get("/sources", operation_id="list_sources")
async def list_sources(request: Request, who: Sources) -> list[Source]:
    """Every source with what it delivered (those the key is limited to, if it is)."""
    async with runtime.of(request).pool.acquire() as conn:
        return [s for s in await sources.list_all(conn) if who.reaches(s.source_id)]


@router.get("/sources/{source_id}", operation_id="get_source")
async def get_source(request: Request, source_id: uuid.UUID, _: Sources) -> Source:
    """A source with its counts: received, accepted, ignored, rejected, held, duplicates."""
    async with runtime.of(request).pool.acquire() as conn:
        return await sources.get(conn, source_id)


@router.patch("/sources/{source_id}", operation_id="update_source")
async def update_source(
    request: Request, source_id: uuid.UUID, body: SourceUpdate, who: Sources
) -> Source:
    """Rename, replace the settings, disable or enable, or give a new secret: the current one
    keeps verifying for `grace_hours`, so the sender can be switched over meanwhile."""
    state = runtime.of(request)
    changes = body.model_dump(exclude_unset=True)
    if body.secret is None:
        changes.pop("grace_hours", None)
    async with state.pool.acquire() as conn, conn.transaction():
        updated = await sources.update(
            conn, source_id, changes=changes, settings=state.settings, actor=who.name
        )
    return updated


@router.delete("/sources/{source_id}", status_code=204, operation_id="delete_source")
async def delete_source(request: Request, source_id: uuid.UUID, who: Sources) -> Response:
    """Remove a source; its receiver answers 401 from now on."""
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        await sources.delete(conn, source_id, actor=who.name)
    return Response(status_code=204)


@router.get("/sources/{source_id}/rejections", operation_id="list_source_rejections")
async def list_rejections(
    request: Request,
    source_id: uuid.UUID,
    _: Sources,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> list[Rejection]:
    """Events that verified but could not be mapped (a mapped type missing a field), newest
    first, with the reason; page with `before` (the last rejection_id seen)."""
    async with runtime.of(request).pool.acquire() as conn:
        found = await sources.rejections(conn, source_id, before=before, limit=limit)
    return found


@router.post(
    "/sources/{source_id}/rejections/{rejection_id}/replay", operation_id="replay_source_rejection"
)
async def replay_rejection(
    request: Request,
    source_id: uuid.UUID,
    rejection_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
    who: Sources,
) -> Replay:
    """Map a rejected event again with the source's settings as they are now (after fixing
    them); 409 once its payload is past the retention."""
    now = datetime.now(UTC)
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        replayed = await sources.replay(
            conn, source_id, rejection_id, ctx=common.ingest_context(request, now)
        )
    return replayed
