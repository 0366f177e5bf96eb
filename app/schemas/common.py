"""Field types shared by every resource."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)

from app.platform import jsonbody

# Unknown fields are rejected with a 422 naming them, never dropped: free-form data belongs in
# traits (profiles) or properties (events, outcomes), which keep every key.
# Strict: JSON types are not coerced (false is not 0, "12" is not 12), as the contract says.
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, str_max_length=65536)

MAX_NESTING = 8
MAX_KEYS = 500

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)


# The earliest moment custintel takes. Python's datetime.min and max, and the moments that
# overflow them once converted to UTC, reach Postgres as -infinity / infinity.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _TIMESTAMP.match(value):
        raise ValueError(TIMESTAMP_RULE)
    try:
        moment = datetime.fromisoformat(value.upper().replace(" ", "T"))
        in_utc = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"{value!r} is not a real moment") from None
    if in_utc < EARLIEST:
        raise ValueError("moments before 1970-01-01T00:00:00Z are not accepted")
    return moment


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339)]


def integral(value: Any) -> Any:
    # JSON Schema's integer includes 3.0; strict pydantic would refuse it.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(integral)]
TIMESTAMP_RULE = "must be an RFC 3339 timestamp with an offset, e.g. 2026-01-31T09:30:00Z"
# The same rule checked by pydantic-core alone (no Python call per value), for the event hot path;
# app.signals.ingest.parse_timestamp turns it into a datetime.
TimestampText = Annotated[
    str,
    StringConstraints(pattern=TIMESTAMP_PATTERN),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset, e.g. 2026-01-31T09:30:00Z",
        }
    ),
]

# Caller-chosen ids, the same alphabet on every route, in bodies and paths: 1 to 255 characters,
# no control characters, no "/" (an id must be reachable as one path segment), and not "." or
# ".." (clients resolve those as path segments before sending). Written without look-ahead, which
# pydantic-core's regular expressions lack.
_ID_CHAR = r"[^\x00-\x1f\x7f/]"
_ID_FIRST = r"[^\x00-\x1f\x7f/.]"
ID_PATTERN = rf"^(?:{_ID_FIRST}{_ID_CHAR}*|\.{_ID_FIRST}{_ID_CHAR}*|\.\.{_ID_CHAR}+)$"
ID_RULE = 'must be 1 to 255 characters without control characters or "/", and not "." or ".."'
Id = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=ID_PATTERN)]
Name = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f\x7f]*$")]
KIND_PATTERN = r"^[a-z][a-z0-9_]*$"
Kind = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=KIND_PATTERN)]
# Deliberately lenient: CRMs hold addresses that strict validators refuse (reserved domains,
# quoted local parts); custintel only needs a stable key, lowercased when matched.
Email = Annotated[
    str,
    StringConstraints(
        min_length=3, max_length=320, pattern=r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$"
    ),
]


def _limit_nesting(value: dict[str, Any]) -> dict[str, Any]:
    if jsonbody.nested_deeper(value, MAX_NESTING):
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    return value


# Postgres cannot store NUL; app.platform.jsonbody refuses it in any string, and the contract says
# so.
NO_NUL = r"^[^\x00]*$"
Key = Annotated[str, StringConstraints(min_length=1, max_length=255)]
# Said here rather than as a pattern on Key: pydantic turns a key pattern into patternProperties,
# which leaves other keys unconstrained in the contract.
_KEYS = {"propertyNames": {"minLength": 1, "maxLength": 255, "pattern": NO_NUL}}
Text = Annotated[str, StringConstraints(max_length=65536, pattern=NO_NUL)]
TraitValue = Text | bool | int | float | None

# What pydantic's JsonValue means. Said in words only: generated clients handle a recursive
# schema badly, and the NUL rule is enforced for every string by app.platform.jsonbody.
JSON_VALUE_SCHEMA = {
    "description": "Any JSON value. No string anywhere may contain NUL (U+0000), no object a "
    "key twice, no number exceed a double or underflow to zero, no integer exceed 64 bits "
    "(send such values as strings)."
}
Traits = Annotated[dict[Key, TraitValue], Field(max_length=MAX_KEYS, json_schema_extra=_KEYS)]


# No control characters, and something besides spaces.
_VALUE = r"^[^\x00-\x1f\x7f]*[^\x00-\x20\x7f][^\x00-\x1f\x7f]*$"


class Identity(BaseModel):
    """An identifier of a contact or an account in some system. `email` and `domain` values are
    matched trimmed and lower-cased, others exactly as sent."""

    model_config = STRICT

    kind: Kind = Field(
        description="email, user_id, anonymous_id, domain, or the system the id comes from: "
        "crm, support, billing, ..."
    )
    value: Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=_VALUE)]


Identities = Annotated[
    list[Identity],
    Field(
        max_length=50,
        description="Identifiers this profile holds, added to those it holds already. Each value "
        "belongs to one profile: one another holds is refused (409, or an error entry in a batch).",
    ),
]
# Events check nesting in app.signals.ingest (one pass with the rest of their work), so their
# properties carry only what pydantic-core checks by itself.
EventProperties = Annotated[
    dict[Key, JsonValue],
    Field(
        max_length=MAX_KEYS,
        description=f"Any JSON, nested at most {MAX_NESTING} levels.",
        json_schema_extra=_KEYS,
    ),
]
Properties = Annotated[EventProperties, AfterValidator(_limit_nesting)]


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
    suppressed: int = Field(
        0, description="Acknowledged and not stored: they name an erased identifier."
    )
    errors: list[ItemError]
