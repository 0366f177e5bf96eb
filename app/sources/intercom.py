"""Intercom: deliveries signed `X-Hub-Signature: sha1=<hex>`, the HMAC-SHA1 of the body with the
app's client secret (Intercom signs no timestamp: its notification id makes a replay a
duplicate). A delivery is one notification `{type: notification_event, id, topic, data}`.

Its notifications are counted and not mapped yet (README, "Sources").
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from app.sources.common import Ignored, Item, Mapped, Request, same


def verify(request: Request, secrets: list[str], *, window: int, settings: dict[str, Any]) -> bool:
    scheme, _, given = request.headers.get("x-hub-signature", "").partition("=")
    if scheme != "sha1" or not given:
        return False
    for secret in secrets:
        if same(hmac.new(secret.encode(), request.body, hashlib.sha1).hexdigest(), given):
            return True
    return False


def items(payload: Any, request: Request) -> list[Item]:
    if not isinstance(payload, dict) or not isinstance(payload.get("id"), str):
        raise ValueError("an Intercom delivery is one notification with a string id")
    return [Item(payload["id"], str(payload.get("topic") or "notification"), payload)]


def map_item(item: Item, settings: dict[str, Any]) -> Mapped:
    raise Ignored(f"{item.event_type}: Intercom notifications are not mapped yet")
