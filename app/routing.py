"""Routing: the inbox of insights, the rules that direct them, the destinations they go to, and
the deliveries that record every try. Raising and routing an insight lives in app.insights,
sending in app.webhooks; this module owns what the API reads and changes of them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from app import errors, insights, vault, webhooks
from app.schemas.insights import (
    Delivery,
    Destination,
    DestinationIn,
    DestinationPatch,
    DestinationWithSecret,
    Insight,
    InsightUpdate,
    RoutingRule,
    RoutingRuleIn,
    RoutingRulePatch,
    Uplift,
)
from app.settings import Settings

_INSIGHT_JSON = ("reasons", "details", "decision")
_RULE_COLUMNS = (
    "rule_id, name, match, destination_ids, owner, holdout_share, enabled, created_at, updated_at"
)
_DESTINATION_COLUMNS = (
    "destination_id, name, kind, url, enabled, disabled_reason, consent_category, created_at"
)
_DELIVERY_COLUMNS = (
    "delivery_id, insight_id, destination_id, status, attempts, next_attempt_at, created_at, "
    "delivered_at"
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


async def list_insights(
    conn: asyncpg.Connection,
    *,
    owner: str | None,
    target: str | None,
    band: str | None,
    kind: str | None,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[Insight]:
    """Newest first."""
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


async def update_insight(
    conn: asyncpg.Connection, insight_id: str, *, update: InsightUpdate
) -> Insight:
    row = await conn.fetchrow(
        "UPDATE insights SET status = coalesce($2, status), note = coalesce($3, note), "
        "updated_at = now() WHERE insight_id = $1 RETURNING *",
        insight_id,
        update.status,
        update.note,
    )
    if row is None:
        raise errors.NotFound(f"No insight {insight_id!r}.")
    return _insight(row)


async def create_rule(conn: asyncpg.Connection, *, rule: RoutingRuleIn) -> RoutingRule:
    row = await conn.fetchrow(
        f"INSERT INTO routing_rules ({_RULE_COLUMNS.rsplit(', created_at', 1)[0]}) "  # noqa: S608  (constant columns)
        f"VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7) RETURNING {_RULE_COLUMNS}",
        uuid.uuid4().hex,
        rule.name,
        rule.match.model_dump_json(exclude_none=True),
        rule.destination_ids,
        rule.owner,
        rule.holdout_share,
        rule.enabled,
    )
    assert row is not None
    return _rule(row)


async def list_rules(conn: asyncpg.Connection) -> list[RoutingRule]:
    rows = await conn.fetch(
        f"SELECT {_RULE_COLUMNS} FROM routing_rules ORDER BY created_at, rule_id"  # noqa: S608  (constant columns)
    )
    return [_rule(r) for r in rows]


async def get_rule(conn: asyncpg.Connection, rule_id: str) -> RoutingRule:
    query = f"SELECT {_RULE_COLUMNS} FROM routing_rules WHERE rule_id = $1"  # noqa: S608  (constant)
    row = await conn.fetchrow(query, rule_id)
    if row is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return _rule(row)


async def update_rule(
    conn: asyncpg.Connection, rule_id: str, *, patch: RoutingRulePatch
) -> RoutingRule:
    """Change the fields given; the others keep their value."""
    changes: dict[str, Any] = {}
    for key, value in patch.model_dump(exclude_unset=True).items():
        if key == "match":
            changes[key] = orjson.dumps(
                patch.match.model_dump(exclude_none=True) if patch.match else {}
            ).decode()
        elif value is not None or key == "owner":
            changes[key] = value
    # Column names come from the patch model's fields, never from the client.
    sets = ", ".join(
        f"{k} = ${n}{'::jsonb' if k == 'match' else ''}" for n, k in enumerate(changes, 2)
    )
    row = await conn.fetchrow(
        f"UPDATE routing_rules SET {sets + ', ' if sets else ''}updated_at = now() "  # noqa: S608  (SET of fixed column names)
        f"WHERE rule_id = $1 RETURNING {_RULE_COLUMNS}",
        rule_id,
        *changes.values(),
    )
    if row is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return _rule(row)


async def delete_rule(conn: asyncpg.Connection, rule_id: str) -> None:
    deleted = await conn.fetchval(
        "DELETE FROM routing_rules WHERE rule_id = $1 RETURNING 1", rule_id
    )
    if deleted is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")


async def rule_uplift(conn: asyncpg.Connection, rule_id: str, *, horizon_days: int) -> Uplift:
    """Did acting help? The target's outcome rate among accounts the rule delivered to, against
    those it held out."""
    if await conn.fetchval("SELECT 1 FROM routing_rules WHERE rule_id = $1", rule_id) is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    now = await conn.fetchval("SELECT now()")
    result = await insights.uplift(conn, rule_id=rule_id, horizon_days=horizon_days, now=now)
    return Uplift.model_validate(result)


async def create_destination(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    destination: DestinationIn,
    allow_private: bool,
) -> DestinationWithSecret:
    """A place to deliver insights to; its signing secret is returned this once and stored
    sealed (app.vault)."""
    await webhooks.check_url(destination.url, allow_private=allow_private)
    secret = webhooks.new_secret()
    row = await conn.fetchrow(
        "INSERT INTO destinations (destination_id, name, kind, url, secret, enabled, "  # noqa: S608  (constant columns)
        f"consent_category) VALUES ($1, $2, $3, $4, $5, true, $6) RETURNING {_DESTINATION_COLUMNS}",
        "dst_" + uuid.uuid4().hex,
        destination.name,
        destination.kind,
        destination.url,
        vault.seal(settings, secret),
        destination.consent_category,
    )
    assert row is not None
    return DestinationWithSecret(**dict(row), secret=secret)


async def list_destinations(conn: asyncpg.Connection, *, full_urls: bool) -> list[Destination]:
    """Destinations; their URLs in full only with full_urls (credentials, a Slack webhook's
    path are secrets), else scheme, host and port."""
    rows = await conn.fetch(f"SELECT {_DESTINATION_COLUMNS} FROM destinations ORDER BY created_at")  # noqa: S608  (constant columns)
    return [
        Destination(**{**dict(r), "url": r["url"] if full_urls else webhooks.masked_url(r["url"])})
        for r in rows
    ]


async def update_destination(
    conn: asyncpg.Connection,
    destination_id: str,
    *,
    patch: DestinationPatch,
    allow_private: bool,
) -> Destination:
    """Rename, move or (re-)enable a destination, or change the consent it requires; the
    fields left out keep their value."""
    if patch.url is not None:
        await webhooks.check_url(patch.url, allow_private=allow_private)
    row = await conn.fetchrow(
        "UPDATE destinations SET name = coalesce($2, name), url = coalesce($3, url), "  # noqa: S608  (constant columns)
        "enabled = coalesce($4, enabled), disabled_reason = CASE WHEN $4 THEN NULL "
        "ELSE disabled_reason END, "
        "consent_category = CASE WHEN $5 THEN $6 ELSE consent_category END "
        f"WHERE destination_id = $1 RETURNING {_DESTINATION_COLUMNS}",
        destination_id,
        patch.name,
        patch.url,
        patch.enabled,
        "consent_category" in patch.model_fields_set,
        patch.consent_category,
    )
    if row is None:
        raise errors.NotFound(f"No destination {destination_id!r}.")
    return Destination(**dict(row))


async def rotate_secret(
    conn: asyncpg.Connection, settings: Settings, destination_id: str, *, grace_hours: float
) -> DestinationWithSecret:
    """A new signing secret, returned this once; both sign for `grace_hours`."""
    secret = webhooks.new_secret()
    row = await conn.fetchrow(
        "UPDATE destinations SET previous_secret = secret, secret = $2, "  # noqa: S608  (constant columns)
        "previous_secret_until = now() + make_interval(secs => $3) "
        f"WHERE destination_id = $1 RETURNING {_DESTINATION_COLUMNS}",
        destination_id,
        vault.seal(settings, secret),
        grace_hours * 3600,
    )
    if row is None:
        raise errors.NotFound(f"No destination {destination_id!r}.")
    return DestinationWithSecret(**dict(row), secret=secret)


async def list_deliveries(
    conn: asyncpg.Connection, *, insight_id: str | None, status: str | None, limit: int
) -> list[Delivery]:
    """Newest first, each with its tries."""
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE ($1::text IS NULL OR insight_id = $1) "  # noqa: S608  (constant columns)
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


async def replay_delivery(conn: asyncpg.Connection, delivery_id: str) -> Delivery:
    """Send a dead delivery again, from the first try of the schedule (same webhook-id)."""
    row = await conn.fetchrow(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now() "  # noqa: S608  (constant columns)
        f"WHERE delivery_id = $1 AND status = 'dead' RETURNING {_DELIVERY_COLUMNS}",
        delivery_id,
    )
    if row is None:
        status = await conn.fetchval(
            "SELECT status FROM deliveries WHERE delivery_id = $1", delivery_id
        )
        if status is None:
            raise errors.NotFound(f"No delivery {delivery_id!r}.")
        raise errors.Conflict(f"Delivery {delivery_id} is {status}; only dead ones replay.")
    return Delivery(**dict(row), tries=[])
