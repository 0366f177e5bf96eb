"""Events and outcomes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from app.schemas.common import (
    STRICT,
    BatchResult,
    Email,
    EventProperties,
    Id,
    Identity,
    Kind,
    Name,
    Properties,
    Text,
    Timestamp,
    TimestampText,
)

MAX_EVENT_BATCH = 5000
MAX_OUTCOME_BATCH = 5000


class EventIn(TypedDict):
    """A signal. It must resolve to an account: account_id, or a known contact_id or email.

    A TypedDict rather than a model: batches of 5000 are validated in one pass of pydantic-core,
    which is what lets ingest keep up with a busy CRM sync.
    """

    __pydantic_config__ = STRICT  # type: ignore[misc]

    event_id: NotRequired[
        Annotated[
            Id | None,
            Field(
                description="Your idempotency key (at most 255 characters); generated when absent."
            ),
        ]
    ]
    type: Annotated[
        Name, Field(min_length=1, description="e.g. login, ticket_opened, nps_answered")
    ]
    source: NotRequired[
        Annotated[Name | None, Field(description="The sending system, e.g. zendesk, stripe.")]
    ]
    occurred_at: TimestampText
    account_id: NotRequired[Id | None]
    contact_id: NotRequired[Id | None]
    email: NotRequired[Email | None]
    value: NotRequired[float | None]
    properties: NotRequired[EventProperties]
    text: NotRequired[
        Annotated[Text | None, Field(description="Free text: a ticket body, an NPS comment.")]
    ]


class EventBatch(TypedDict):
    __pydantic_config__ = STRICT  # type: ignore[misc]

    events: Annotated[list[EventIn], Field(max_length=MAX_EVENT_BATCH)]


class EventAccepted(BaseModel):
    event_id: str
    duplicate: bool = Field(description="True when this event_id was already stored.")
    suppressed: bool = Field(
        False, description="True when it names an erased identifier: acknowledged, not stored."
    )


class TextSentiment(BaseModel):
    score: float = Field(description="-1 (most negative) to 1 (most positive).")
    label: Literal["negative", "neutral", "positive"] = Field(
        description="negative at -0.05 or below, positive at 0.05 or above, else neutral."
    )


class EventOut(BaseModel):
    """A stored signal, as it was sent; `received_at` is when custintel stored it."""

    event_id: str
    type: str
    source: str | None
    occurred_at: datetime
    received_at: datetime
    account_id: str
    contact_id: str | None
    email: str | None
    value: float | None
    properties: dict[str, Any]
    text: str | None
    sentiment: TextSentiment | None = Field(
        None,
        description="The text's sentiment, read by the worker within seconds of storing; null "
        "for events without text and until it is read.",
    )
    themes: list[str] = Field(
        default_factory=list,
        description="The ids of the themes its text is about (GET /v1/voc/themes), strongest "
        "first.",
    )


class EventPage(BaseModel):
    items: list[EventOut] = Field(description="Newest first (occurred_at, then event_id).")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class UnresolvedSignal(BaseModel):
    """A call that named no account custintel could find yet, kept as sent."""

    id: int
    received_at: datetime
    expires_at: datetime = Field(description="received_at + CUSTINTEL_UNRESOLVED_DAYS.")
    status: Literal["held", "expired"] = Field(
        description="held: attached as soon as an identity resolves it; expired: no longer."
    )
    source: str = Field(
        description="Where it came from: segment, or the sender of a webhook (stripe, zendesk, "
        "hubspot, intercom; hooks when its source was deleted since)."
    )
    call: str = Field(
        description="identify, group, track, page, screen or alias; for hooks, the sender's "
        "event type."
    )
    keys: list[Identity] = Field(description="The identifiers that would resolve it.")
    reason: str = Field(description="Why it is not attached yet.")
    message: dict[str, Any] = Field(
        description="The call as sent, batch context merged in; for hooks, the source and the "
        "sender's id of the delivery (its payload is kept with the source's deliveries)."
    )


class UnresolvedPage(BaseModel):
    items: list[UnresolvedSignal] = Field(description="Newest first.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class OutcomeIn(BaseModel):
    """What really happened to an account."""

    model_config = STRICT

    outcome_id: Id | None = Field(None, description="Your idempotency key; generated when absent.")
    account_id: Id
    kind: Kind = Field(description="A lowercase word: churned, renewed, expanded, contracted, ...")
    occurred_at: Timestamp
    amount: float | None = Field(None, ge=-1e15, le=1e15)
    properties: Properties = Field(default_factory=dict)


class OutcomeOut(BaseModel):
    outcome_id: str
    account_id: str
    kind: str
    occurred_at: datetime
    amount: float | None
    properties: dict[str, Any] = Field(
        description="As sent; a Stripe cancellation carries `cancellation_reason`, "
        "`cancellation_feedback` and `cancellation_comment` when Stripe has them."
    )
    received_at: datetime


class OutcomeBatch(BaseModel):
    model_config = STRICT

    outcomes: list[OutcomeIn] = Field(max_length=MAX_OUTCOME_BATCH)


class OutcomeAccepted(BaseModel):
    outcome_id: str
    duplicate: bool
    suppressed: bool = Field(
        False, description="True when it names an erased account: acknowledged, not stored."
    )


__all__ = [
    "BatchResult",
    "EventAccepted",
    "EventBatch",
    "EventIn",
    "EventOut",
    "EventPage",
    "OutcomeAccepted",
    "OutcomeBatch",
    "OutcomeIn",
    "OutcomeOut",
    "UnresolvedPage",
    "UnresolvedSignal",
]
