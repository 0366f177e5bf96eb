"""Field types shared by every resource."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    JsonValue,
    StringConstraints,
)

from app import jsonbody

# Unknown fields are rejected with a 422 naming them, never dropped: free-form data belongs in
# traits (profiles) or properties (events, outcomes), which keep every key.
STRICT = ConfigDict(extra="forbid", allow_inf_nan=False, str_max_length=65536)

MAX_NESTING = 8
MAX_KEYS = 500

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-01-31T09:30:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]

# Caller-chosen ids: printable, at most 255 characters.
Id = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")]
Name = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$")]
Kind = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
Email = Annotated[EmailStr, StringConstraints(max_length=320)]


def _limit_keys(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} keys")
    for key in value:
        if not key or len(key) > 255:
            raise ValueError("keys must be 1 to 255 characters")
    return value


def _limit_nesting(value: dict[str, Any]) -> dict[str, Any]:
    if jsonbody.depth(value) > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    return _limit_keys(value)


TraitValue = str | bool | int | float | None
Traits = Annotated[dict[str, TraitValue], AfterValidator(_limit_keys)]
Properties = Annotated[dict[str, JsonValue], AfterValidator(_limit_nesting)]


class ItemError(BaseModel):
    """One rejected item of a batch, by its position in the request."""

    index: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="Validation errors with their fields, when the item was invalid."
    )


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    errors: list[ItemError]
