"""Insights (an inbox for CRM and support tools) and the routing rules that direct them."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import orjson
from fastapi import APIRouter, Query, Request, Response

from app import errors, insights, webhooks
from app.api.common import StrictJSONRoute, problem_responses
from app.auth import Admin, Insights, Read
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

_INSIGHT_JSON = ("reasons", "details", "decision")
_RULE_COLUMNS = (
    "rule_id, name, match, destination_ids, owner, holdout_share, enabled, created_at, updated_at"
)


def _insight(row: asyncpg.Record) -> Insight:
    data = dict(row)
    for key in _INSIGHT_JSON:
        data[key] = orjson.loads(data[key])
    return Insight.model_validate(data)


def _rule(row: asyncpg.Record) -> RoutingRule:
    data = dict(row)
    data["match"] = orjson.loads(data["match"])
    return RoutingRule.model_validate(data)


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
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT * FROM insights
            WHERE ($1::text IS NULL OR owner_email = $1) AND ($2::text IS NULL OR target = $2)
              AND ($3::text IS NULL OR band = $3) AND ($4::text IS NULL OR kind = $4)
              AND ($5::text IS NULL OR status = $5)
              AND ($6::timestamptz IS NULL OR created_at >= $6)
              AND ($7::timestamptz IS NULL OR created_at <= $7)
            ORDER BY created_at DESC, insight_id LIMIT $8
            """,
            owner,
            target,
            band,
            kind,
            status,
            since,
            until,
            limit,
        )
    return [_insight(r) for r in rows]


@router.patch("/insights/{insight_id}", operation_id="update_insight", tags=["insights"])
async def update_insight(
    insight_id: Id, body: InsightUpdate, request: Request, _: Insights
) -> Insight:
    """Acknowledge or resolve an insight, with a note."""
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "UPDATE insights SET status = coalesce($2, status), note = coalesce($3, note), "
            "updated_at = now() WHERE insight_id = $1 RETURNING *",
            insight_id,
            body.status,
            body.note,
        )
    if row is None:
        raise errors.NotFound(f"No insight {insight_id!r}.")
    return _insight(row)


@router.post(
    "/routing-rules", status_code=201, operation_id="create_routing_rule", tags=["routing"]
)
async def create_routing_rule(body: RoutingRuleIn, request: Request, _: Admin) -> RoutingRule:
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            f"INSERT INTO routing_rules ({_RULE_COLUMNS.rsplit(', created_at', 1)[0]}) "
            f"VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7) RETURNING {_RULE_COLUMNS}",
            uuid.uuid4().hex,
            body.name,
            body.match.model_dump_json(exclude_none=True),
            body.destination_ids,
            body.owner,
            body.holdout_share,
            body.enabled,
        )
    return _rule(row)


@router.get("/routing-rules", operation_id="list_routing_rules", tags=["routing"])
async def list_routing_rules(request: Request, _: Read) -> list[RoutingRule]:
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {_RULE_COLUMNS} FROM routing_rules ORDER BY created_at, rule_id"
        )
    return [_rule(r) for r in rows]


@router.get("/routing-rules/{rule_id}", operation_id="get_routing_rule", tags=["routing"])
async def get_routing_rule(rule_id: Id, request: Request, _: Read) -> RoutingRule:
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {_RULE_COLUMNS} FROM routing_rules WHERE rule_id = $1", rule_id
        )
    if row is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return _rule(row)


@router.patch("/routing-rules/{rule_id}", operation_id="update_routing_rule", tags=["routing"])
async def update_routing_rule(
    rule_id: Id, body: RoutingRulePatch, request: Request, _: Admin
) -> RoutingRule:
    """Change the fields given; the others keep their value."""
    given = body.model_dump(exclude_unset=True)
    changes: dict[str, Any] = {}
    for key, value in given.items():
        if key == "match":
            changes[key] = orjson.dumps(
                body.match.model_dump(exclude_none=True) if body.match else {}
            ).decode()
        elif value is not None or key == "owner":
            changes[key] = value
    async with request.app.state.pool.acquire() as conn:
        sets = ", ".join(
            f"{k} = ${n}{'::jsonb' if k == 'match' else ''}" for n, k in enumerate(changes, 2)
        )
        row = await conn.fetchrow(
            f"UPDATE routing_rules SET {sets + ', ' if sets else ''}updated_at = now() "
            f"WHERE rule_id = $1 RETURNING {_RULE_COLUMNS}",
            rule_id,
            *changes.values(),
        )
    if row is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return _rule(row)


@router.delete(
    "/routing-rules/{rule_id}",
    status_code=204,
    operation_id="delete_routing_rule",
    tags=["routing"],
    response_class=Response,
)
async def delete_routing_rule(rule_id: Id, request: Request, _: Admin) -> Response:
    async with request.app.state.pool.acquire() as conn:
        deleted = await conn.fetchval(
            "DELETE FROM routing_rules WHERE rule_id = $1 RETURNING 1", rule_id
        )
    if deleted is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return Response(status_code=204)


_DESTINATION_COLUMNS = "destination_id, name, kind, url, enabled, disabled_reason, created_at"


@router.post("/destinations", status_code=201, operation_id="create_destination", tags=["routing"])
async def create_destination(
    body: DestinationIn, request: Request, _: Admin
) -> DestinationWithSecret:
    """A place to deliver insights to; its signing secret is shown once, here."""
    settings = request.app.state.settings
    await webhooks.check_url(body.url, allow_private=settings.allow_private_destinations)
    secret = webhooks.new_secret()
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "INSERT INTO destinations (destination_id, name, kind, url, secret, enabled) "
            f"VALUES ($1, $2, $3, $4, $5, true) RETURNING {_DESTINATION_COLUMNS}",
            "dst_" + uuid.uuid4().hex,
            body.name,
            body.kind,
            body.url,
            secret,
        )
    return DestinationWithSecret(**dict(row), secret=secret)


@router.get("/destinations", operation_id="list_destinations", tags=["routing"])
async def list_destinations(request: Request, principal: Read) -> list[Destination]:
    """Destinations; their URLs in full for admin keys only (credentials, a Slack webhook's
    path), else scheme, host and port."""
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {_DESTINATION_COLUMNS} FROM destinations ORDER BY created_at"
        )
    full = principal.allows("admin")
    return [
        Destination(**{**dict(r), "url": r["url"] if full else webhooks.masked_url(r["url"])})
        for r in rows
    ]


@router.patch("/destinations/{destination_id}", operation_id="update_destination", tags=["routing"])
async def update_destination(
    destination_id: Id, body: DestinationPatch, request: Request, _: Admin
) -> Destination:
    """Rename, move or (re-)enable a destination; the fields left out keep their value."""
    if body.url is not None:
        settings = request.app.state.settings
        await webhooks.check_url(body.url, allow_private=settings.allow_private_destinations)
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "UPDATE destinations SET name = coalesce($2, name), url = coalesce($3, url), "
            "enabled = coalesce($4, enabled), disabled_reason = CASE WHEN $4 THEN NULL "
            f"ELSE disabled_reason END WHERE destination_id = $1 RETURNING {_DESTINATION_COLUMNS}",
            destination_id,
            body.name,
            body.url,
            body.enabled,
        )
    if row is None:
        raise errors.NotFound(f"No destination {destination_id!r}.")
    return Destination(**dict(row))


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
    settings = request.app.state.settings
    secret = webhooks.new_secret()
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "UPDATE destinations SET previous_secret = secret, secret = $2, "
            "previous_secret_until = now() + make_interval(secs => $3) "
            f"WHERE destination_id = $1 RETURNING {_DESTINATION_COLUMNS}",
            destination_id,
            secret,
            settings.secret_rotation_grace_hours * 3600,
        )
    if row is None:
        raise errors.NotFound(f"No destination {destination_id!r}.")
    return DestinationWithSecret(**dict(row), secret=secret)


@router.get("/deliveries", operation_id="list_deliveries", tags=["routing"])
async def list_deliveries(
    request: Request,
    _: Read,
    insight_id: Annotated[Id | None, Query()] = None,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[Delivery]:
    """Newest first, each with its tries."""
    async with request.app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT delivery_id, insight_id, destination_id, status, attempts, next_attempt_at, "
            "created_at, delivered_at FROM deliveries WHERE ($1::text IS NULL OR insight_id = $1) "
            "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, delivery_id LIMIT $3",
            insight_id,
            status,
            limit,
        )
        tries = await conn.fetch(
            "SELECT delivery_id, attempt, at, status_code, response, error, duration_ms "
            "FROM delivery_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY attempt",
            [r["delivery_id"] for r in rows],
        )
    by_delivery: dict[str, list[dict[str, Any]]] = {}
    for t in tries:
        by_delivery.setdefault(t["delivery_id"], []).append(dict(t))
    return [Delivery(**dict(r), tries=by_delivery.get(r["delivery_id"], [])) for r in rows]


@router.post("/deliveries/{delivery_id}/replay", operation_id="replay_delivery", tags=["routing"])
async def replay_delivery(delivery_id: Id, request: Request, _: Admin) -> Delivery:
    """Send a dead delivery again, from the first try of the schedule (same webhook-id)."""
    async with request.app.state.pool.acquire() as conn:
        row = await conn.fetchrow(
            "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now() "
            "WHERE delivery_id = $1 AND status = 'dead' RETURNING delivery_id, insight_id, "
            "destination_id, status, attempts, next_attempt_at, created_at, delivered_at",
            delivery_id,
        )
        if row is None:
            exists = await conn.fetchval(
                "SELECT status FROM deliveries WHERE delivery_id = $1", delivery_id
            )
            if exists is None:
                raise errors.NotFound(f"No delivery {delivery_id!r}.")
            raise errors.Conflict(f"Delivery {delivery_id} is {exists}; only dead ones replay.")
    return Delivery(**dict(row), tries=[])


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
    async with request.app.state.pool.acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM routing_rules WHERE rule_id = $1", rule_id) is None:
            raise errors.NotFound(f"No routing rule {rule_id!r}.")
        now = await conn.fetchval("SELECT now()")
        result = await insights.uplift(conn, rule_id=rule_id, horizon_days=horizon_days, now=now)
    return Uplift.model_validate(result)
