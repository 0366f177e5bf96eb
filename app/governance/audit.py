"""The audit trail: who did what to which admin resource, stored with the change itself."""

from __future__ import annotations

import asyncpg
import orjson

from app.platform.jsonbody import JSONObject
from app.schemas.admin import AuditEntry


async def record(
    conn: asyncpg.Connection,
    *,
    actor: str,
    action: str,
    target: str | None = None,
    details: JSONObject | None = None,
) -> None:
    """Inside the caller's transaction, so the entry commits with the change it describes."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, details) VALUES ($1, $2, $3, $4::jsonb)",
        actor,
        action,
        target,
        orjson.dumps(details or {}).decode(),
    )


async def entries(
    conn: asyncpg.Connection, *, limit: int, before_id: int | None
) -> list[AuditEntry]:
    """Newest first."""
    rows = await conn.fetch(
        "SELECT id, at, actor, action, target, details FROM audit_log "
        "WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
        before_id,
        limit,
    )
    return [AuditEntry.model_validate({**r, "details": orjson.loads(r["details"])}) for r in rows]
