"""What every sender module gives the receiver: the checks of a signature, the events of a
delivery, and their meaning in custintel's vocabulary."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.platform.jsonbody import JSONObject


@dataclass(frozen=True)
class Request:
    """A delivery as it arrived: what the signature covers."""

    method: str
    url: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    received_at: datetime


@dataclass
class Item:
    """One event of a delivery, by the sender's own id (what makes redeliveries duplicates)."""

    delivery_id: str
    event_type: str
    payload: JSONObject


@dataclass
class Party:
    """Whom an item is about, as the sender names it: an account id custintel knows already,
    else identities an account or contact may hold (kind, value)."""

    account_id: str | None = None
    account_identities: list[tuple[str, str]] = field(default_factory=list)
    domain: str | None = None
    contact_identities: list[tuple[str, str]] = field(default_factory=list)
    contact_email: str | None = None

    def contact_pairs(self) -> list[tuple[str, str]]:
        email = [("email", self.contact_email.strip().lower())] if self.contact_email else []
        return [*self.contact_identities, *email]

    def keys(self) -> list[str]:
        """What would resolve a held item, as `kind:value`."""
        keys = [f"{k}:{v}" for k, v in self.account_identities]
        if self.domain:
            keys.append(f"domain:{self.domain}")
        return keys + [f"{k}:{v}" for k, v in self.contact_pairs()]


@dataclass
class Mapped:
    """An item in custintel's vocabulary. Events and outcomes leave account_id out: the receiver
    fills it once the party is resolved. `account` holds account upsert fields."""

    party: Party
    events: list[JSONObject] = field(default_factory=list)
    outcomes: list[JSONObject] = field(default_factory=list)
    account: JSONObject | None = None
    contacts: list[tuple[str, JSONObject]] = field(default_factory=list)
    create_account: str | None = None  # the id an account the sender just created gets
    # The contact the item names belongs to the item's account: created there with this id
    # when no contact holds its identities yet, moved there when one does (an association).
    create_contact: str | None = None


class Ignored(Exception):
    """A type custintel has no use for: counted, not an error."""


class Rejected(Exception):
    """A type custintel maps, missing what the mapping needs: kept with this reason, to replay
    after a settings change."""


def same(expected: str | bytes, given: str | bytes) -> bool:
    """Constant-time comparison."""
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def text(value: Any, limit: int = 65536) -> str | None:
    """A string as custintel stores text: None for anything else; NUL characters dropped (Postgres
    refuses them), cut at `limit`."""
    if not isinstance(value, str) or not value:
        return None
    return value.replace("\x00", "")[:limit] or None


def without_nul(value: Any) -> Any:
    """A payload with NUL characters dropped from its keys and strings: Postgres cannot store
    them in jsonb, and no sender means anything by them."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    if isinstance(value, dict):
        return {k.replace("\x00", ""): without_nul(v) for k, v in value.items()}
    return value


def need(mapping: Any, *path: str) -> Any:
    """mapping[path[0]][path[1]]...; Rejected naming the field when it is missing."""
    value = mapping
    for i, key in enumerate(path):
        if not isinstance(value, dict) or value.get(key) is None:
            raise Rejected(f"missing {'.'.join(path[: i + 1])}")
        value = value[key]
    return value
