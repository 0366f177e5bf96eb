"""Training, jobs and models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from app.api.common import StrictJSONRoute, problem_responses
from app.governance.auth import Admin, Read
from app.ml import datasets, drift, performance, promotion, registry, report
from app.platform import jobs, runtime
from app.schemas.common import Id, Kind, Timestamp
from app.schemas.models import (
    DriftReport,
    Job,
    ModelInfo,
    ModelPerformance,
    RollbackRequest,
    TrainRequest,
)

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses())


@router.post("/models/train", status_code=202, operation_id="train_model", tags=["models"])
async def train_model(body: TrainRequest, request: Request, _: Admin) -> Job:
    """Queue a training job; a worker process runs it. Poll GET /v1/jobs/{job_id}. A request
    whose training set would pass CUSTINTEL_TRAIN_MAX_SNAPSHOTS or _MAX_ROWS is refused (422)."""
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        await datasets.check_size(conn, state.settings, body, now=datetime.now(UTC))
        job = await jobs.enqueue(conn, kind="train", params=body.model_dump(mode="json"))
    return Job.model_validate(job, from_attributes=True)


@router.get("/jobs", operation_id="list_jobs", tags=["jobs"])
async def list_jobs(
    request: Request,
    _: Read,
    kind: Annotated[Kind | None, Query()] = None,
    status: Annotated[
        Literal["queued", "running", "succeeded", "failed", "cancelled"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Job]:
    """Jobs, newest first."""
    async with runtime.of(request).pool.acquire() as conn:
        found = await jobs.listed(conn, kind=kind, status=status, limit=limit)
    return [Job.model_validate(j, from_attributes=True) for j in found]


@router.post("/jobs/{job_id}/cancel", status_code=202, operation_id="cancel_job", tags=["jobs"])
async def cancel_job(job_id: Id, request: Request, _: Admin) -> Job:
    """Cancel a job: a queued one at once, a running one within seconds (its worker stops it).
    409 for a job that has finished."""
    async with runtime.of(request).pool.acquire() as conn:
        job = await jobs.cancel(conn, job_id)
    return Job.model_validate(job, from_attributes=True)


@router.get("/jobs/{job_id}", operation_id="get_job", tags=["jobs"])
async def get_job(
    job_id: Id,
    request: Request,
    _: Read,
    wait: Annotated[bool, Query(description="Wait for the job to finish.")] = False,
) -> Job:
    """A queued or finished job (training, batch scoring): its state, progress and result."""
    state = runtime.of(request)
    if wait:
        job = await jobs.wait(state.pool, job_id, within=state.settings.job_wait_seconds)
    else:
        async with state.pool.acquire() as conn:
            job = await jobs.get(conn, job_id)
    return Job.model_validate(job, from_attributes=True)


@router.get("/models", operation_id="list_models", tags=["models"])
async def list_models(
    request: Request, _: Read, target: Annotated[Kind | None, Query()] = None
) -> list[ModelInfo]:
    """Trained models, newest first, with their metrics, baselines and status (active, candidate,
    retired)."""
    async with runtime.of(request).pool.acquire() as conn:
        return await registry.infos(conn, target=target)


@router.get("/models/{model_id}", operation_id="get_model", tags=["models"])
async def get_model(model_id: Id, request: Request, _: Read) -> ModelInfo:
    """The model's record: metrics, segments, features, lineage, and every comparison it was
    part of (as the candidate or as the active model)."""
    async with runtime.of(request).pool.acquire() as conn:
        return await registry.info(conn, model_id)


@router.post("/models/{model_id}/activate", operation_id="activate_model", tags=["models"])
async def activate_model(model_id: Id, request: Request, principal: Admin) -> ModelInfo:
    """Make this model the one that scores its target, whatever the gate said; the previous one
    is retired and recorded as replaced (audited). A model whose files fail their checksum is
    refused and the active one keeps serving."""
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        await promotion.activate_by_hand(
            conn, state.models, model_id=model_id, actor=principal.name
        )
        return await registry.info(conn, model_id)


@router.post("/models/rollback", operation_id="rollback_model", tags=["models"])
async def rollback_model(body: RollbackRequest, request: Request, principal: Admin) -> ModelInfo:
    """Put back the model that the target's active model replaced (audited)."""
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        restored = await promotion.roll_back_checked(
            conn, state.models, target=body.target, actor=principal.name
        )
        return await registry.info(conn, restored)


@router.get("/models/{model_id}/performance", operation_id="get_model_performance", tags=["models"])
async def get_model_performance(
    model_id: Id,
    request: Request,
    _: Read,
    since: Annotated[Timestamp | None, Query(description="Scores with as_of from here.")] = None,
    until: Annotated[Timestamp | None, Query(description="Scores with as_of up to here.")] = None,
) -> ModelPerformance:
    """The model's stored scores against what happened once their horizon passed: AUC, Brier,
    calibration by decile and lift, overall and per segment, and the reasons that preceded."""
    async with runtime.of(request).pool.acquire() as conn:
        result = await performance.realized(
            conn, model_id=model_id, now=datetime.now(UTC), since=since, until=until
        )
    return ModelPerformance.model_validate(result)


@router.get("/models/{model_id}/drift", operation_id="get_model_drift", tags=["models"])
async def get_model_drift(model_id: Id, request: Request, _: Read) -> DriftReport:
    """Population stability index of every feature and of the score between the model's
    training rows and its latest batch scoring; 409 when it has no batch scoring yet."""
    state = runtime.of(request)
    async with state.pool.acquire() as conn:
        result = await drift.measure(conn, model_id=model_id, rule=drift.Rule.of(state.settings))
    return DriftReport.model_validate(result)


@router.get(
    "/models/{model_id}/report",
    operation_id="get_model_report",
    tags=["models"],
    response_class=HTMLResponse,
    responses={200: {"content": {"text/html": {}}, "description": "The report page."}},
)
async def get_model_report(model_id: Id, request: Request, _: Read) -> HTMLResponse:
    """A self-contained HTML page: ROC, calibration (held out and realized), lift by decile,
    SHAP summaries overall and per segment, segments, features and the training window."""
    async with runtime.of(request).pool.acquire() as conn:
        page = await report.render(conn, model_id=model_id, now=datetime.now(UTC))
    return HTMLResponse(page)
