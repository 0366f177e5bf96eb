"""Accounts and contacts: upserts in, current (or as-of) profiles out."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from app.schemas.common import (
    STRICT,
    Email,
    Id,
    Identities,
    Identity,
    Kind,
    Name,
    Timestamp,
    Traits,
)

MAX_PROFILE_BATCH = 1000

# Consent categories: the names a consent manager uses ("analytics", "marketing", "C0002").
CONSENT_CATEGORY = r"^[A-Za-z0-9_.-]{1,64}$"


def _categories(consent: dict[str, bool]) -> dict[str, bool]:
    for category in consent:
        if not re.fullmatch(CONSENT_CATEGORY, category):
            raise ValueError(f"consent category {category!r}: letters, digits, _ . - (1-64)")
    return consent


Consent = Annotated[
    dict[str, bool],
    Field(
        max_length=50,
        json_schema_extra={"propertyNames": {"pattern": CONSENT_CATEGORY}},
    ),
    AfterValidator(_categories),
]


class AccountUpsert(BaseModel):
    """Fields left out keep their value; null clears a field. Traits merge key by key."""

    model_config = STRICT

    name: Name | None = None
    segment: Name | None = None
    plan: Name | None = None
    mrr: float | None = Field(None, ge=0, le=1e15)
    owner_email: Email | None = None
    traits: Traits = Field(
        default_factory=dict, description="Merged key by key; a null value removes the key."
    )
    identities: Identities = Field(
        default_factory=list,
        examples=[[{"kind": "domain", "value": "acme.io"}, {"kind": "crm", "value": "001A7"}]],
    )
    observed_at: Timestamp | None = Field(
        None, description="When these values became true (RFC 3339 with offset). Default: now."
    )


class AccountBatchItem(AccountUpsert):
    account_id: Id


class AccountBatch(BaseModel):
    model_config = STRICT

    accounts: list[AccountBatchItem] = Field(max_length=MAX_PROFILE_BATCH)


DROPPED = (
    "Trait keys left out of a stored upsert because the installation's or this writer's budget "
    "of distinct keys is spent (CUSTINTEL_MAX_TRAIT_KEYS, CUSTINTEL_MAX_TRAIT_KEYS_PER_WRITER); "
    "the upsert's other fields were stored."
)


class Account(BaseModel):
    account_id: str
    name: str | None
    segment: str | None
    plan: str | None
    mrr: float | None
    owner_email: str | None
    traits: dict[str, str | bool | int | float]
    identities: list[Identity] = Field(description="By kind, then value.")
    created_at: datetime
    updated_at: datetime


class AccountUpserted(Account):
    dropped: list[str] = Field(default_factory=list, description=DROPPED)


class AccountPage(BaseModel):
    items: list[Account]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


class ProfileBatchError(BaseModel):
    index: int
    detail: str


class ProfileBatchResult(BaseModel):
    upserted: int
    suppressed: int = Field(
        0, description="Acknowledged and not stored: they name an erased identifier."
    )
    errors: list[ProfileBatchError]
    dropped: list[ProfileBatchError] = Field(default_factory=list, description=DROPPED)


class SuppressedProfile(BaseModel):
    """The upsert names an erased identifier: acknowledged, and not stored."""

    profile_id: str
    suppressed: bool = True


class ContactUpsert(BaseModel):
    model_config = STRICT

    account_id: Id
    email: Email | None = None
    name: Name | None = None
    role: Kind | None = Field(None, description="e.g. admin, end_user, executive_sponsor")
    traits: Traits = Field(
        default_factory=dict, description="Merged key by key; null removes a key."
    )
    consent: Consent | None = Field(
        None,
        description="Consent by category, merged key by key (its history kept): with "
        "CUSTINTEL_CONSENT_REQUIRED, a contact's signals are stored only when every required "
        "category is true.",
        examples=[{"analytics": True, "marketing": False}],
    )
    identities: Identities = Field(
        default_factory=list,
        examples=[[{"kind": "user_id", "value": "u-812"}, {"kind": "crm", "value": "003A1"}]],
    )
    observed_at: Timestamp | None = None


class ContactBatchItem(ContactUpsert):
    contact_id: Id


class ContactBatch(BaseModel):
    model_config = STRICT

    contacts: list[ContactBatchItem] = Field(max_length=MAX_PROFILE_BATCH)


class IdentityMatch(BaseModel):
    subject: Literal["contact", "account"] = Field(description="What the identifier names.")
    contact_id: str | None = Field(description="The contact, when it names one.")
    account_id: str = Field(description="The account, or the contact's account.")


class IdentityMatches(BaseModel):
    matches: list[IdentityMatch] = Field(
        description="One per table the identifier is found in: a kind such as crm may name a "
        "contact and, with another value, an account."
    )


class Contact(BaseModel):
    contact_id: str
    account_id: str
    email: str | None
    name: str | None
    role: str | None
    traits: dict[str, str | bool | int | float]
    consent: dict[str, bool] = Field(default_factory=dict, description="Consent by category.")
    identities: list[Identity] = Field(
        description="By kind, then value; the email field is one of them."
    )
    created_at: datetime
    updated_at: datetime


class ContactUpserted(Contact):
    dropped: list[str] = Field(default_factory=list, description=DROPPED)


class MergeRequest(BaseModel):
    model_config = STRICT

    merged_from: Id = Field(
        alias="from",
        description="The id to merge into the one in the path: it stops existing as a profile "
        "of its own, and every read and write naming it resolves to the survivor from now on.",
    )


class Merge(BaseModel):
    survivor_id: str
    merged_id: str
    again: bool = Field(
        description="The pair had been merged before: this call moved only what reached the "
        "merged id since."
    )
    moved: dict[str, int] = Field(
        description="Rows moved to the survivor, by kind: history, identities, events; for "
        "accounts also contacts, outcomes, scores, insights, findings and held_signals."
    )
    merged_at: datetime
