"""API keys and the audit trail of admin actions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.api.common import StrictJSONRoute, problem_responses
from app.governance import audit, auth
from app.governance.auth import Admin
from app.platform import errors, runtime
from app.schemas.admin import ApiKeyCreate, ApiKeyCreated, ApiKeyInfo, AuditEntry

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses(), tags=["admin"])


@router.post("/keys", status_code=201, operation_id="create_api_key")
async def create_api_key(request: Request, body: ApiKeyCreate, principal: Admin) -> ApiKeyCreated:
    """Create a key. The secret is in the response once and stored only as a hash. A key may
    expire (`expires_at`) and be limited to some operations (`operations`, by operationId) and
    to some sources (`sources`). A limited key creates only keys limited at least as much."""
    sources = None if body.sources is None else [str(s) for s in body.sources]
    if not principal.within(body.operations, sources, body.expires_at):
        raise errors.Forbidden("A limited key creates only keys within its own limits.")
    if body.operations is not None:
        known = {
            op.get("operationId")
            for ops in request.app.openapi()["paths"].values()
            for op in ops.values()
        }
        unknown = sorted(set(body.operations) - known)
        if unknown:
            raise errors.InvalidPayload(
                f"operations: no operation {unknown[0]!r} in this contract",
                errors=[{"loc": ["body", "operations"], "msg": "unknown", "type": "value_error"}],
            )
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise errors.InvalidPayload(
            "expires_at lies in the past",
            errors=[{"loc": ["body", "expires_at"], "msg": "in the past", "type": "value_error"}],
        )
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        key, secret = await auth.create_key(
            conn,
            name=body.name,
            scopes=list(body.scopes),
            actor=principal.name,
            expires_at=body.expires_at,
            operations=body.operations,
            sources=body.sources,
        )
    return ApiKeyCreated(**key.model_dump(), key=secret)


@router.get("/keys", operation_id="list_api_keys")
async def list_api_keys(request: Request, _: Admin) -> list[ApiKeyInfo]:
    """Every API key: id, name, prefix, scopes, created and revoked times; never the secret."""
    async with runtime.of(request).pool.acquire() as conn:
        return await auth.list_keys(conn)


@router.delete("/keys/{key_id}", operation_id="revoke_api_key")
async def revoke_api_key(key_id: uuid.UUID, request: Request, principal: Admin) -> ApiKeyInfo:
    """Revoke a key at once in every process (audited); revoking it again changes nothing."""
    async with runtime.of(request).pool.acquire() as conn, conn.transaction():
        key = await auth.revoke_key(conn, key_id, actor=principal.name)
    runtime.of(request).key_cache.forget()
    return key


@router.get("/audit-log", operation_id="list_audit_log")
async def list_audit_log(
    request: Request,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> list[AuditEntry]:
    """Newest first; page with before_id."""
    async with runtime.of(request).pool.acquire() as conn:
        rows = await audit.entries(conn, limit=limit, before_id=before_id)
    return rows
