"""API keys and the audit trail of admin actions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from app import audit, auth, errors
from app.api.common import StrictJSONRoute, problem_responses
from app.auth import Admin
from app.db import SessionDep
from app.schemas.admin import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, AuditEntry
from app.tables import ApiKey
from app.tables import AuditEntry as AuditRow

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses(), tags=["admin"])


def _info(key: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=str(key.key_id),
        name=key.name,
        prefix=key.prefix,
        scopes=list(key.scopes),
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.post("/keys", status_code=201, operation_id="create_api_key")
async def create_api_key(
    body: ApiKeyCreate, session: SessionDep, principal: Admin
) -> ApiKeyCreated:
    """Create a key. The secret is in the response once and stored only as a hash."""
    key, secret = await auth.create_key(session, name=body.name, scopes=list(body.scopes))
    await session.refresh(key)
    audit.record(
        session,
        actor=principal.name,
        action="api_key.created",
        target=str(key.key_id),
        details={"name": key.name, "scopes": list(key.scopes)},
    )
    await session.commit()
    return ApiKeyCreated(**_info(key).model_dump(), key=secret)


@router.get("/keys", operation_id="list_api_keys")
async def list_api_keys(session: SessionDep, _: Admin) -> list[ApiKeyInfo]:
    rows = await session.scalars(select(ApiKey).order_by(ApiKey.created_at))
    return [_info(k) for k in rows]


@router.delete("/keys/{key_id}", operation_id="revoke_api_key")
async def revoke_api_key(
    key_id: uuid.UUID, request: Request, session: SessionDep, principal: Admin
) -> ApiKeyInfo:
    key = await session.get(ApiKey, key_id, with_for_update=True)
    if key is None:
        raise errors.NotFound(f"No API key {key_id}.")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        audit.record(session, actor=principal.name, action="api_key.revoked", target=str(key_id))
    await session.commit()
    request.app.state.key_cache.forget()
    return _info(key)


@router.get("/audit-log", operation_id="list_audit_log")
async def list_audit_log(
    session: SessionDep,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> list[AuditEntry]:
    """Newest first; page with before_id."""
    query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(AuditRow.id < before_id)
    return [
        AuditEntry.model_validate(r, from_attributes=True) for r in await session.scalars(query)
    ]
