"""Insights (an inbox for CRM and support tools) and the routing rules that direct them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.activation import deliveries, insights, routing
from app.api.common import StrictJSONRoute, problem_responses
from app.governance.auth import Admin, Insights, Read
from app.platform import runtime
from app.schemas.common import Email, Id, Kind, Timestamp
from app.schemas.insights import (
    Band,
    Delivery,
    Destination,
    DestinationIn,
    DestinationPatch,
    DestinationWithSecret,
    Insight,
    InsightKind,
    InsightUpdate,
    RoutingRule,
    RoutingRuleIn,
    RoutingRulePatch,
    Uplift,
)

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses())


@router.get("/insights", operation_id="list_insights", tags=["insights"])
async def list_insights(
    request: Request,
    _: Read,
    owner: Annotated[Email | None, Query(description="The owner's email.")] = None,
    target: Annotated[Kind | None, Query()] = None,
    band: Annotated[Band | None, Query()] = None,
    kind: Annotated[InsightKind | None, Query()] = None,
    status: Annotated[str | None, Query(pattern="^(open|acknowledged|resolved)$")] = None,
    since: Annotated[Timestamp | None, Query()] = None,
    until: Annotated[Timestamp | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Insight]:
    """Newest first."""
    async with runtime.of(request).pool.acquire() as conn:
        return await insights.list_insights(
            conn,
            owner=owner,
            target=target,
            band=band,
            kind=kind,
            status=status,
            since=since,
            until=until,
            limit=limit,
        )


@router.patch("/insights/{insight_id}", operation_id="update_insight", tags=["insights"])
async def update_insight(
    insight_id: Id, body: InsightUpdate, request: Request, _: Insights
) -> Insight:
    """Acknowledge or resolve an insight, with a note."""
    async with runtime.of(request).pool.acquire() as conn:
        return await insights.update_insight(conn, insight_id, update=body)


@router.post(
    "/routing-rules", status_code=201, operation_id="create_routing_rule", tags=["routing"]
)
async def create_routing_rule(body: RoutingRuleIn, request: Request, _: Admin) -> RoutingRule:
    """A rule sending matching insights to destinations, with an optional holdout share kept back to
    measure the effect."""
    async with runtime.of(request).pool.acquire() as conn:
        return await routing.create_rule(conn, rule=body)


@router.get("/routing-rules", operation_id="list_routing_rules", tags=["routing"])
async def list_routing_rules(request: Request, _: Read) -> list[RoutingRule]:
    """Every routing rule, oldest first."""
    async with runtime.of(request).pool.acquire() as conn:
        return await routing.list_rules(conn)


@router.get("/routing-rules/{rule_id}", operation_id="get_routing_rule", tags=["routing"])
async def get_routing_rule(rule_id: Id, request: Request, _: Read) -> RoutingRule:
    """One routing rule."""
    async with runtime.of(request).pool.acquire() as conn:
        return await routing.get_rule(conn, rule_id)


@router.patch("/routing-rules/{rule_id}", operation_id="update_routing_rule", tags=["routing"])
async def update_routing_rule(
    rule_id: Id, body: RoutingRulePatch, request: Request, _: Admin
) -> RoutingRule:
    """Change the fields given; the others keep their value."""
    async with runtime.of(request).pool.acquire() as conn:
        return await routing.update_rule(conn, rule_id, patch=body)


@router.delete(
    "/routing-rules/{rule_id}",
    status_code=204,
    operation_id="delete_routing_rule",
    tags=["routing"],
    response_class=Response,
)
async def delete_routing_rule(rule_id: Id, request: Request, _: Admin) -> Response:
    """Delete a routing rule (audited); insights already routed keep their decisions."""
    async with runtime.of(request).pool.acquire() as conn:
        await routing.delete_rule(conn, rule_id)
    return Response(status_code=204)


@router.post("/destinations", status_code=201, operation_id="create_destination", tags=["routing"])
async def create_destination(
    body: DestinationIn, request: Request, _: Admin
) -> DestinationWithSecret:
    """A place to deliver insights to; its signing secret is shown once, here."""
    settings = runtime.of(request).settings
    async with runtime.of(request).pool.acquire() as conn:
        return await deliveries.create_destination(
            conn, settings, destination=body, allow_private=settings.allow_private_destinations
        )


@router.get("/destinations", operation_id="list_destinations", tags=["routing"])
async def list_destinations(request: Request, principal: Read) -> list[Destination]:
    """Destinations; their URLs in full for admin keys only (credentials, a Slack webhook's
    path), else scheme, host and port."""
    async with runtime.of(request).pool.acquire() as conn:
        return await deliveries.list_destinations(conn, full_urls=principal.allows("admin"))


@router.patch("/destinations/{destination_id}", operation_id="update_destination", tags=["routing"])
async def update_destination(
    destination_id: Id, body: DestinationPatch, request: Request, _: Admin
) -> Destination:
    """Rename, move or (re-)enable a destination; the fields left out keep their value."""
    allow_private = runtime.of(request).settings.allow_private_destinations
    async with runtime.of(request).pool.acquire() as conn:
        return await deliveries.update_destination(
            conn, destination_id, patch=body, allow_private=allow_private
        )


@router.post(
    "/destinations/{destination_id}/rotate",
    operation_id="rotate_destination_secret",
    tags=["routing"],
)
async def rotate_destination_secret(
    destination_id: Id, request: Request, _: Admin
) -> DestinationWithSecret:
    """A new signing secret, shown once; deliveries are signed with both for
    CUSTINTEL_SECRET_ROTATION_GRACE_HOURS, so receivers can switch without a gap."""
    settings = runtime.of(request).settings
    async with runtime.of(request).pool.acquire() as conn:
        return await deliveries.rotate_secret(
            conn, settings, destination_id, grace_hours=settings.secret_rotation_grace_hours
        )


@router.get("/deliveries", operation_id="list_deliveries", tags=["routing"])
async def list_deliveries(
    request: Request,
    _: Read,
    insight_id: Annotated[Id | None, Query()] = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Delivery]:
    """Newest first, each with its tries."""
    async with runtime.of(request).pool.acquire() as conn:
        return await deliveries.list_deliveries(
            conn, insight_id=insight_id, status=status, limit=limit
        )


@router.post("/deliveries/{delivery_id}/replay", operation_id="replay_delivery", tags=["routing"])
async def replay_delivery(delivery_id: Id, request: Request, _: Admin) -> Delivery:
    """Send a dead delivery again, from the first try of the schedule (same webhook-id)."""
    async with runtime.of(request).pool.acquire() as conn:
        return await deliveries.replay_delivery(conn, delivery_id)


@router.get(
    "/routing-rules/{rule_id}/uplift", operation_id="get_routing_rule_uplift", tags=["routing"]
)
async def get_routing_rule_uplift(
    rule_id: Id,
    request: Request,
    _: Read,
    horizon_days: Annotated[int, Query(ge=1, le=730)] = 90,
) -> Uplift:
    """Did acting help? The target's outcome rate among accounts this rule delivered to,
    against those it held out."""
    async with runtime.of(request).pool.acquire() as conn:
        return await routing.rule_uplift(conn, rule_id, horizon_days=horizon_days)
