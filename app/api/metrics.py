"""What the business counts: retention and revenue by month and by signup cohort, each account's
lifetime value, and which actions work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from app import voc
from app.api.common import StrictJSONRoute, problem_responses
from app.governance.auth import Admin, Read
from app.people import identities
from app.platform import errors, jobs, runtime
from app.schemas.common import Id, Kind, Name, Timestamp
from app.schemas.metrics import (
    ActionEffects,
    Clv,
    RetentionReport,
    UpliftFitRequest,
    UpliftRanking,
)
from app.schemas.models import Job
from app.value import clv, effects, revenue, uplift

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses(), tags=["metrics"])


@router.get("/metrics/retention", operation_id="retention_metrics")
async def retention_metrics(
    request: Request,
    _: Read,
    period: Annotated[Literal["month"], Query(description="Months (UTC).")] = "month",
    segment: Annotated[Name | None, Query(description="Accounts in this segment.")] = None,
    since: Annotated[
        Timestamp | None, Query(description="From the month holding this. Default: a year back.")
    ] = None,
    until: Annotated[
        Timestamp | None, Query(description="Up to this moment. Default: now.")
    ] = None,
) -> RetentionReport:
    """Gross and net revenue retention, new, expansion, contraction, churned and reactivation MRR,
    logo churn and the repeat-purchase rate, month by month, and the retention curves of the
    period's signup cohorts; each definition is in the README (Retention and revenue). At most
    60 months."""
    until = until or datetime.now(UTC)
    since = since or voc.earlier(until, timedelta(days=365))
    if since >= until:
        raise errors.BadRequest("since must be before until")
    types = runtime.of(request).settings.purchase_event_types
    async with runtime.of(request).pool.acquire() as conn:
        return await revenue.retention(
            conn, since=since, until=until, segment=segment, purchase_types=types
        )


@router.get("/actions/effects", operation_id="action_effects")
async def action_effects(
    request: Request,
    _: Read,
    target: Annotated[Kind, Query(description="The outcome's target, e.g. churn.")] = "churn",
    horizon_days: Annotated[int, Query(ge=1, le=730)] = 90,
) -> ActionEffects:
    """Which actions work: per routing rule, the target's outcome rate among the accounts it
    delivered to against those it held out; per kind of action logged (`action_taken`), among
    the accounts acted on against every held-out account. With 95% intervals, and below the
    sample size needed, "not enough evidence yet" and how many more accounts it takes."""
    async with runtime.of(request).pool.acquire() as conn:
        return await effects.effects(
            conn, target=target, horizon_days=horizon_days, now=datetime.now(UTC)
        )


@router.get("/actions/uplift", operation_id="uplift_ranking")
async def uplift_ranking(
    request: Request,
    _: Read,
    target: Annotated[Kind, Query(description="The outcome's target, e.g. churn.")] = "churn",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> UpliftRanking:
    """Whom acting helps most: live accounts by expected uplift (how much delivering the
    target's insight changes the probability of its outcome within the horizon, in the
    direction that helps), beside their raw risk, from the newest fit of the better of two
    learners on the routing holdouts; with how that ranking did against ranking by risk on
    accounts it never saw. Below the sample size, "not enough evidence yet" and how many more
    accounts it takes. Uplift is only as trustworthy as the holdouts are random (README: Which
    actions work)."""
    async with runtime.of(request).pool.acquire() as conn:
        return await uplift.ranking(conn, target=target, limit=limit, cursor=cursor)


@router.post(
    "/actions/uplift/fit", status_code=202, operation_id="fit_uplift", tags=["metrics", "jobs"]
)
async def fit_uplift(body: UpliftFitRequest, request: Request, _: Admin) -> Job:
    """Queue a fit of the target's uplift learner now (the worker also fits each target with an
    active model every CUSTINTEL_UPLIFT_FIT_EVERY_HOURS). Poll GET /v1/jobs/{job_id}."""
    async with runtime.of(request).pool.acquire() as conn:
        job = await jobs.enqueue(conn, kind=uplift.JOB, params=body.model_dump(mode="json"))
    return Job.model_validate(job, from_attributes=True)


@router.get("/accounts/{account_id}/clv", operation_id="account_clv")
async def account_clv(
    request: Request,
    account_id: Id,
    _: Read,
    as_of: Annotated[
        Timestamp | None,
        Query(
            description="Value the account as of this moment (its history up to it). Default: now."
        ),
    ] = None,
) -> Clv:
    """The account's customer lifetime value: the margin it is expected to bring over the next
    CUSTINTEL_CLV_HORIZON_MONTHS, discounted, with a 95% interval, the method (subscription:
    MRR and the churn model's hazard; purchases: BG/NBD and Gamma-Gamma) and every input it came
    from. The README (Lifetime value) states the formulas."""
    settings = runtime.of(request).settings
    async with runtime.of(request).pool.acquire() as conn:
        resolved = await identities.existing_account(conn, account_id)
        return await clv.of_account(conn, settings, resolved, as_of=as_of or datetime.now(UTC))
