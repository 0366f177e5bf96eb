"""Events and outcomes."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from app.schemas.common import (
    STRICT,
    BatchResult,
    Email,
    Id,
    Kind,
    Name,
    Properties,
    Text,
    Timestamp,
)

MAX_EVENT_BATCH = 5000
MAX_OUTCOME_BATCH = 5000


class EventIn(BaseModel):
    """A signal. It must resolve to an account: account_id, or a known contact_id or email."""

    model_config = STRICT

    event_id: Id | None = Field(
        None, description="Your idempotency key (at most 255 characters); generated when absent."
    )
    type: Name = Field(min_length=1, description="e.g. login, ticket_opened, nps_answered")
    source: Name | None = Field(None, description="The sending system, e.g. zendesk, stripe.")
    occurred_at: Timestamp
    account_id: Id | None = None
    contact_id: Id | None = None
    email: Email | None = None
    value: float | None = None
    properties: Properties = Field(default_factory=dict)
    text: Text | None = Field(None, description="Free text: a ticket body, an NPS comment.")

    @model_validator(mode="after")
    def _needs_a_subject(self) -> EventIn:
        if self.account_id is None and self.contact_id is None and self.email is None:
            raise ValueError("an event needs account_id, contact_id or email")
        return self


class EventBatch(BaseModel):
    model_config = STRICT

    events: list[EventIn] = Field(max_length=MAX_EVENT_BATCH)


class EventAccepted(BaseModel):
    event_id: str
    duplicate: bool = Field(description="True when this event_id was already stored.")


class OutcomeIn(BaseModel):
    """What really happened to an account."""

    model_config = STRICT

    outcome_id: Id | None = Field(None, description="Your idempotency key; generated when absent.")
    account_id: Id
    kind: Kind = Field(description="A lowercase word: churned, renewed, expanded, contracted, ...")
    occurred_at: Timestamp
    amount: float | None = Field(None, ge=-1e15, le=1e15)
    properties: Properties = Field(default_factory=dict)


class OutcomeBatch(BaseModel):
    model_config = STRICT

    outcomes: list[OutcomeIn] = Field(max_length=MAX_OUTCOME_BATCH)


class OutcomeAccepted(BaseModel):
    outcome_id: str
    duplicate: bool


__all__ = [
    "BatchResult",
    "EventAccepted",
    "EventBatch",
    "EventIn",
    "OutcomeAccepted",
    "OutcomeBatch",
    "OutcomeIn",
]
