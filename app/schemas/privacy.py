"""Bodies of privacy: erasures and the suppression list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, RootModel, StringConstraints

from app.schemas.common import STRICT, Email, Id

Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class ContactById(BaseModel):
    """A contact, by its id."""

    model_config = STRICT

    contact_id: Id


class ContactByEmail(BaseModel):
    """A contact, by its email (every contact holding it)."""

    model_config = STRICT

    email: Email


class AccountById(BaseModel):
    """An account, with every contact it ever had."""

    model_config = STRICT

    account_id: Id


class ErasureRequest(RootModel[ContactById | ContactByEmail | AccountById]):
    """Whom to erase: exactly one of a contact (by id or email) or an account."""


class Erasure(BaseModel):
    """An erasure job: its progress and, once done, what it removed (counts per kind of row,
    never a personal value) and how many identifiers are now suppressed. The subject is named by
    its keyed hash only."""

    erasure_id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float
    subject: Hash = Field(description="The keyed hash of the subject (HMAC-SHA256).")
    removed: dict[str, int] | None = Field(
        None, description="Rows deleted or redacted, per table (for example `events`)."
    )
    suppressed: int | None = Field(None, description="Identifiers added to the suppression list.")
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class RetentionSettings(BaseModel):
    """Days each kind of data is kept (0: forever)."""

    event_retention_days: int
    score_retention_days: int
    delivery_attempt_retention_days: int
    job_retention_days: int
    held_retention_days: int
    source_payload_retention_days: int


class Oldest(BaseModel):
    """The oldest record of each kind (null: none)."""

    event: datetime | None
    event_partition: str | None = Field(description="The oldest monthly partition of events.")
    score: datetime | None
    delivery_attempt: datetime | None
    job: datetime | None
    source_payload: datetime | None
    audit_entry: datetime | None


class Retention(BaseModel):
    """What is kept and how old the oldest of each kind is; the daily `retention` job applies
    the settings (audited as `retention.applied`)."""

    settings: RetentionSettings
    oldest: Oldest
    last_applied: datetime | None


class Suppression(BaseModel):
    """A suppressed identifier, as its keyed hash: signals naming it are acknowledged and not
    stored."""

    hash: Hash
    kind: Literal["account", "contact", "email", "identity"]
    erasure_id: str | None = Field(description="The subject hash of the erasure that made it.")
    created_at: datetime
