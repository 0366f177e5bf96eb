"""Problems, API keys, the audit trail and health."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from app.schemas.common import STRICT, Name, Timestamp

OperationId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class FieldError(BaseModel):
    loc: list[str | int] = Field(description='Path to the offending field, e.g. ["body", "mrr"].')
    msg: str
    type: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class ApiKeyCreate(BaseModel):
    model_config = STRICT

    name: Name = Field(min_length=1)
    scopes: list[Literal["ingest", "read", "insights", "privacy", "sources", "admin"]] = Field(
        min_length=1
    )
    expires_at: Timestamp | None = Field(None, description="After this moment the key is refused.")
    operations: list[OperationId] | None = Field(
        None,
        max_length=200,
        description="Only these operations (their operationId in this contract), within the "
        "scopes; unset: every operation the scopes allow.",
    )
    sources: list[Annotated[uuid.UUID, Strict(False)]] | None = Field(
        None,
        max_length=200,
        description="Only these sources: the key lists, reads, changes and replays no other "
        "source, and creates none; unset: every source its scopes allow.",
    )


class ApiKeyInfo(BaseModel):
    key_id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None
    expires_at: datetime | None = None
    operations: list[str] | None = None
    sources: list[str] | None = None
    last_used_at: datetime | None = Field(
        None, description="When it was last used (recorded at most once a minute)."
    )


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="The secret. Shown once; store it now.")


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: Literal["reachable", "unreachable"]
    migrations: Literal["current", "pending", "unknown"]
    revision: str | None
    head: str | None
    workers: int | None = Field(
        None,
        description="Job workers that beat within CUSTINTEL_JOB_STALE_SECONDS (null when the "
        "database cannot say). With CUSTINTEL_RUN_WORKER (serve starts a worker), none is "
        "not ready: no job, schedule or delivery would run.",
    )
