"""Bodies of insights and routing rules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import STRICT, Email, Id, Kind
from app.schemas.profiles import CONSENT_CATEGORY

Band = Literal["high", "medium", "low"]
InsightKind = Literal["band_entered", "score_rise", "drift", "detractor", "theme_jump"]
Text = Annotated[str, StringConstraints(max_length=10_000, pattern=r"^[^\x00]*$")]
DestinationId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]
ConsentCategory = Annotated[str, StringConstraints(pattern=CONSENT_CATEGORY)]
CONSENT_CATEGORY_DOC = (
    "Only insights whose people (the contact a detractor insight quotes) gave consent in this "
    "category are delivered here; insights about an account as a whole name no person and are "
    "delivered. Left out of a delivery, a destination is listed in the decision's `withheld`."
)


class InsightReason(BaseModel):
    feature: str
    contribution: float
    text: str


class RuleDecision(BaseModel):
    rule_id: str
    name: str
    holdout: bool = Field(description="The account is in this rule's holdout: not delivered.")
    owner: str | None
    destination_ids: list[str]
    withheld: dict[str, str] = Field(
        default_factory=dict,
        description="Destinations this rule chose that were left out, with why (the consent "
        "category the insight's person has not given).",
    )


class Decision(BaseModel):
    rules: list[RuleDecision] = Field(description="Every rule that matched, in rule order.")


class Insight(BaseModel):
    insight_id: str
    kind: InsightKind
    target: str | None
    account_id: str | None
    owner_email: str | None
    model_id: str | None
    segment: str | None
    probability: float | None
    band: Band | None
    previous_probability: float | None
    previous_band: Band | None
    reasons: list[InsightReason]
    next_step: str
    details: dict[str, Any]
    status: Literal["open", "acknowledged", "resolved"]
    note: str | None
    decision: Decision
    created_at: datetime
    updated_at: datetime


class InsightUpdate(BaseModel):
    model_config = STRICT

    status: Literal["open", "acknowledged", "resolved"] | None = None
    note: Text | None = None


class RuleMatch(BaseModel):
    model_config = STRICT

    target: Kind | list[Kind] | None = None
    kind: InsightKind | list[InsightKind] | None = None
    band: Band | list[Band] | None = None
    segment: Id | list[Id] | None = None
    plan: Id | list[Id] | None = None
    traits: dict[str, str | float | bool | list[str | float | bool]] | None = Field(
        None, description="Trait values that must hold; a list means any of them."
    )


class RoutingRuleIn(BaseModel):
    model_config = STRICT

    name: Name
    match: RuleMatch = Field(default_factory=RuleMatch)
    destination_ids: Annotated[list[DestinationId], Field(max_length=20)] = []
    owner: Email | None = Field(
        None, description="Who the insight is for; default: the account's owner_email."
    )
    holdout_share: float = Field(0.0, ge=0, le=0.5)
    enabled: bool = True


class RoutingRulePatch(BaseModel):
    model_config = STRICT

    name: Name | None = None
    match: RuleMatch | None = None
    destination_ids: Annotated[list[DestinationId], Field(max_length=20)] | None = None
    owner: Email | None = None
    holdout_share: float | None = Field(None, ge=0, le=0.5)
    enabled: bool | None = None


class RoutingRule(BaseModel):
    rule_id: str
    name: str
    match: RuleMatch
    destination_ids: list[str]
    owner: str | None
    holdout_share: float
    enabled: bool
    created_at: datetime
    updated_at: datetime


class DestinationIn(BaseModel):
    model_config = STRICT

    name: Name
    kind: Literal["webhook", "slack"] = Field(
        "webhook",
        description="webhook: the insight as JSON, signed per Standard Webhooks; slack: a "
        "message for a Slack incoming webhook.",
    )
    url: Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=r"^https?://\S+$")]
    consent_category: ConsentCategory | None = Field(None, description=CONSENT_CATEGORY_DOC)


class DestinationPatch(BaseModel):
    model_config = STRICT

    name: Name | None = None
    url: (
        Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=r"^https?://\S+$")]
        | None
    ) = None
    enabled: bool | None = Field(None, description="true re-enables one a 410 disabled.")
    consent_category: ConsentCategory | None = Field(
        None, description="Require this consent category; null (sent) removes the requirement."
    )


class Destination(BaseModel):
    destination_id: str
    name: str
    kind: Literal["webhook", "slack"]
    url: str
    enabled: bool
    disabled_reason: str | None
    consent_category: str | None = Field(None, description=CONSENT_CATEGORY_DOC)
    created_at: datetime


class DestinationWithSecret(Destination):
    secret: str = Field(
        description="The signing secret (whsec_...), shown this once; verify deliveries with "
        "any Standard Webhooks library."
    )


class DeliveryAttempt(BaseModel):
    attempt: int
    at: datetime
    status_code: int | None
    response: str | None = Field(description="The receiver's answer, truncated.")
    error: str | None
    duration_ms: float


class Delivery(BaseModel):
    delivery_id: str = Field(description="Also the webhook-id header: the same on every retry.")
    insight_id: str
    destination_id: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    tries: list[DeliveryAttempt]


class UpliftGroup(BaseModel):
    accounts: int
    outcomes: int = Field(description="Accounts where the target's outcome happened.")
    rate: float | None


class Uplift(BaseModel):
    rule_id: str
    horizon_days: int
    delivered: UpliftGroup
    held_out: UpliftGroup
    difference: float | None = Field(description="Delivered rate minus held-out rate.")
    interval_95: list[float] | None = Field(description="95% interval of the difference.")
    window_closed: bool = Field(
        description="Every counted insight is older than the horizon: the rates are final."
    )


class InsightEvent(BaseModel):
    """What a webhook destination receives (signed per Standard Webhooks)."""

    type: str = Field(
        description="insight.band_entered, insight.score_rise, insight.drift, "
        "insight.detractor or insight.theme_jump."
    )
    timestamp: datetime
    data: dict[str, Any] = Field(
        description="The insight: insight_id, kind, target, account_id, owner_email, model_id, "
        "segment, probability, band, previous_probability, previous_band, reasons, next_step, "
        "details and the routing decision."
    )
