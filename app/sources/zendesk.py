"""Zendesk: deliveries signed `X-Zendesk-Webhook-Signature`, the base64 HMAC-SHA256 of the
`X-Zendesk-Webhook-Signature-Timestamp` value followed by the body, with the webhook's signing
secret. A delivery is one event (an event subscription's `{id, type, detail, event}`); its id,
else the invocation id Zendesk sends with each call, makes redeliveries duplicates.

Its events are counted and not mapped yet (README, "Sources").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

from app.sources.common import Ignored, Item, Mapped, Request, same


def _moment(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def verify(request: Request, secrets: list[str], *, window: int, settings: dict[str, Any]) -> bool:
    signature = request.headers.get("x-zendesk-webhook-signature", "")
    timestamp = request.headers.get("x-zendesk-webhook-signature-timestamp", "")
    sent = _moment(timestamp)
    if not signature or sent is None or sent.tzinfo is None:
        return False
    if abs((request.received_at - sent).total_seconds()) > window:
        return False
    signed = timestamp.encode() + request.body
    for secret in secrets:
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        if same(base64.b64encode(digest), signature):
            return True
    return False


def items(payload: Any, request: Request) -> list[Item]:
    if not isinstance(payload, dict):
        raise ValueError("a Zendesk delivery is one JSON object")
    delivery_id = payload.get("id") or request.headers.get("x-zendesk-webhook-invocation-id")
    if not isinstance(delivery_id, str | int) or isinstance(delivery_id, bool) or not delivery_id:
        raise ValueError("a Zendesk delivery has an id or an X-Zendesk-Webhook-Invocation-Id")
    event_type = payload.get("type")
    return [Item(str(delivery_id), str(event_type or "trigger"), payload)]


def map_item(item: Item, settings: dict[str, Any]) -> Mapped:
    raise Ignored(f"{item.event_type}: Zendesk events are not mapped yet")
