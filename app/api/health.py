"""Liveness and readiness, outside /v1 and without auth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.api.common import StrictJSONRoute
from app.platform import db, jobs, migrate, runtime
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
    """The database is reachable, its schema is at the newest migration and, when this service
    runs its own job worker, a worker is alive."""
    state = runtime.of(request)
    head = state.migration_head
    try:
        workers = None
        async with state.pool.acquire() as conn:
            revision = await migrate.current_revision(conn)
            if revision == head:  # an older schema may not have the workers table
                workers = await jobs.live_workers(conn, within=state.settings.job_stale_seconds)
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
    ready = current and (bool(workers) or not state.settings.run_worker)
    body = Readiness(
        status="ready" if ready else "not_ready",
        database="reachable",
        migrations="current" if current else "pending",
        revision=revision,
        head=head,
        workers=workers,
    )
    if not ready:
        return JSONResponse(body.model_dump(), status_code=503)  # type: ignore[return-value]
    return body
