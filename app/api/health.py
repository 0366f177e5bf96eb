"""Liveness and readiness, outside /v1 and without auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import db, migrate
from app.api.common import StrictJSONRoute
from app.schemas.admin import Health, Readiness

router = APIRouter(tags=["health"], route_class=StrictJSONRoute)


@router.get("/healthz", operation_id="healthz")
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    responses={503: {"model": Readiness, "description": "Not ready"}},
)
async def readyz(request: Request) -> Readiness:
    """The database is reachable and its schema is at the newest migration."""
    state = request.app.state
    head = state.migration_head
    try:
        revision = await migrate.current_revision(state.engine)
    except Exception as exc:  # noqa: BLE001  (any failure here means "not ready")
        reachable = not db.is_unreachable(exc)
        body = Readiness(
            status="not_ready",
            database="reachable" if reachable else "unreachable",
            migrations="unknown",
            revision=None,
            head=head,
        )
        return JSONResponse(body.model_dump(), status_code=503)  # type: ignore[return-value]
    current = revision == head
    body = Readiness(
        status="ready" if current else "not_ready",
        database="reachable",
        migrations="current" if current else "pending",
        revision=revision,
        head=head,
    )
    if not current:
        return JSONResponse(body.model_dump(), status_code=503)  # type: ignore[return-value]
    return body
