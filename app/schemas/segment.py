"""The Segment Tracking API's calls as the contract shows them. The SDKs send them unchanged;
the README's table says how each field maps to custintel's vocabulary, and Segment's spec says
the rest, so fields are described loosely here and checked by app.signals.segment."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SegmentCall(BaseModel):
    """One call (identify, group, track, page, screen or alias): `userId` or `anonymousId` is
    required; other fields as Segment's spec has them."""

    model_config = ConfigDict(extra="allow")

    type: Any = Field(None, description="In a batch: the call's type.")
    userId: Any = None  # Segment's names
    anonymousId: Any = None
    groupId: Any = None
    previousId: Any = None
    event: Any = None
    messageId: Any = None
    timestamp: Any = None
    traits: Any = None
    properties: Any = None
    context: Any = None


class SegmentBatch(BaseModel):
    """Several calls in one request, as the SDKs send them."""

    model_config = ConfigDict(extra="allow")

    batch: list[SegmentCall]
    context: Any = None
    sentAt: Any = None


class SegmentAnswer(BaseModel):
    success: bool
    accepted: int
    duplicates: int
    unresolved: int = Field(description="Held until an identity ties them to an account.")
    suppressed: int = Field(description="Naming an erased person, or without consent: not stored.")
    errors: list[dict[str, Any]] = Field(
        description="In a batch: each call that was not taken, by its index, with why."
    )
    dropped: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Fields left out of calls that were taken (a trait that cannot be kept), "
        "by the call's index, with why.",
    )
