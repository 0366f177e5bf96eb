"""Scores: on request (the hottest read), batch rescoring, and the latest stored ones."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response

from app.api.common import StrictJSONRoute, problem_responses
from app.governance.auth import Admin, Read
from app.ml import serving
from app.platform import errors, jobs, runtime
from app.platform.jsonbody import JSONObject
from app.schemas.common import Id, Kind, Timestamp
from app.schemas.models import (
    AccountScores,
    Job,
    RankedScores,
    RescoreRequest,
    ScoreBatchRequest,
    ScoreBatchResult,
)

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses())


@router.get(
    "/accounts/{account_id}/scores",
    operation_id="get_account_scores",
    tags=["scores"],
    response_model=AccountScores,
)
async def get_account_scores(
    account_id: Id,
    request: Request,
    _: Read,
    target: Annotated[list[Kind], Query(min_length=1, max_length=10)],
    as_of: Annotated[Timestamp | None, Query(description="Score as the account was then.")] = None,
    top: Annotated[int, Query(ge=0, le=50)] = 3,
) -> Response:
    """Scores with reasons for one account; 409 for a target without an active model."""
    results, problems = await _score(request, [account_id], target, as_of, top)
    if account_id in problems:
        raise errors.NotFound(problems[account_id])
    return _json({"account_id": account_id, "scores": results[account_id]})


@router.get("/scores", operation_id="list_scores", tags=["scores"])
async def list_scores(
    request: Request,
    _: Read,
    target: Annotated[Kind, Query()],
    segment: Annotated[Id | None, Query()] = None,
    band: Annotated[Literal["high", "medium", "low"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> RankedScores:
    """The latest stored score of each account by the target's active model (batch scoring
    and on-request scores both store theirs), highest probability first."""
    async with runtime.of(request).pool.acquire() as conn:
        return await serving.ranked(conn, target=target, segment=segment, band=band, limit=limit)


@router.post(
    "/scores/batch",
    operation_id="score_accounts_batch",
    tags=["scores"],
    response_model=ScoreBatchResult,
)
async def score_accounts_batch(body: ScoreBatchRequest, request: Request, _: Read) -> Response:
    """Score up to 1000 accounts for the given targets with the active models, reasons included;
    stored as score history unless `as_of` is in the past."""
    results, problems = await _score(request, body.account_ids, body.targets, body.as_of, body.top)
    return _json(
        {
            "results": [{"account_id": a, "scores": s} for a, s in results.items()],
            "errors": [{"account_id": a, "detail": d} for a, d in problems.items()],
        }
    )


async def _score(
    request: Request,
    account_ids: list[str],
    targets: list[str],
    as_of: datetime | None,
    top: int,
) -> tuple[dict[str, list[JSONObject]], dict[str, str]]:
    state = runtime.of(request)
    results, problems = await serving.score(
        state.pool,
        state.models,
        kept=state.history,
        limiter=state.cpu,
        account_ids=account_ids,
        targets=targets,
        as_of=as_of or datetime.now(UTC),
        as_of_given=as_of is not None,
        top=top,
    )
    return {a: [serving.as_dict(s) for s in per] for a, per in results.items()}, problems


def _json(content: Any) -> Response:
    """Scores are the hottest read: written straight from the domain's dataclasses with orjson,
    without a second validation pass (the contract test checks them against the schema)."""
    return Response(orjson.dumps(content, option=orjson.OPT_UTC_Z), media_type="application/json")


@router.post("/scores/rescore", status_code=202, operation_id="rescore", tags=["scores"])
async def rescore(body: RescoreRequest, request: Request, _: Admin) -> Job:
    """Queue batch scoring of every live account with the active models; the scores go to the
    score history. Poll GET /v1/jobs/{job_id}."""
    async with runtime.of(request).pool.acquire() as conn:
        job = await jobs.enqueue(conn, kind="score", params=body.model_dump(mode="json"))
    return Job.model_validate(job, from_attributes=True)
