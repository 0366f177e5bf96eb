"""Sources (senders of signed webhooks): created with their signing secret, read with what they
delivered; their rejections and replays; what a receiver answers."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import STRICT, Name

SourceKind = Literal["stripe", "zendesk", "hubspot", "intercom"]
Secret = Annotated[str, StringConstraints(min_length=8, max_length=1024, pattern=r"^[\x21-\x7e]+$")]
SourceSettings = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=64)], Any],
    Field(
        max_length=50,
        description="Mapping choices of this source: Stripe's `account_metadata_key` (default "
        "`account_id`); HubSpot's `url`, the receiver's URL as HubSpot calls it, when a proxy "
        "rewrites it.",
    ),
]


class SourceCreate(BaseModel):
    model_config = STRICT

    kind: SourceKind
    name: Name
    secret: Secret = Field(
        description="The signing secret the sender issued (Stripe's whsec_..., Zendesk's webhook "
        "secret, the HubSpot or Intercom app's client secret). Stored encrypted; never returned."
    )
    settings: SourceSettings = Field(default_factory=dict)


class SourceUpdate(BaseModel):
    model_config = STRICT

    name: Name | None = None
    secret: Secret | None = Field(
        None, description="A new signing secret; the current one keeps verifying for grace_hours."
    )
    grace_hours: float = Field(24, ge=0, le=720)
    enabled: bool | None = Field(None, description="A disabled source's deliveries get 401.")
    settings: SourceSettings | None = Field(None, description="Replaces the settings.")


class Source(BaseModel):
    source_id: uuid.UUID
    kind: SourceKind
    name: str
    url: str = Field(description="The receiver path to paste into the sender's console.")
    enabled: bool
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    secret_rotating_until: datetime | None = Field(
        description="Until when the secret before the current one still verifies."
    )
    received: int = Field(description="Events delivered, redeliveries included.")
    accepted: int
    ignored: int = Field(description="Of types custintel does not map: counted, not errors.")
    rejected: int = Field(description="Verified but not mappable: see /rejections.")
    held: int = Field(description="Waiting for an account to claim their customer or domain.")
    duplicates: int = Field(description="Redeliveries of events already received.")
    last_received_at: datetime | None


class Rejection(BaseModel):
    rejection_id: int
    delivery_id: str = Field(description="The sender's id of the event.")
    event_type: str
    reason: str | None
    received_at: datetime
    replayable: bool = Field(description="Its payload is still kept (retention).")


class Replay(BaseModel):
    rejection_id: int
    status: Literal["accepted", "ignored", "rejected", "held"]
    reason: str | None


class HookAnswer(BaseModel):
    received: int
    accepted: int
    ignored: int
    rejected: int
    held: int
    suppressed: int = Field(
        0, description="Naming an erased identifier: acknowledged, not stored (nor its payload)."
    )
    duplicates: int
