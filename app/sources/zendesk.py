"""Zendesk: deliveries signed `X-Zendesk-Webhook-Signature`, the base64 HMAC-SHA256 of the
`X-Zendesk-Webhook-Signature-Timestamp` value followed by the body, with the webhook's signing
secret. A delivery is one event (an event subscription's `{id, type, detail, event}`); its id,
else the invocation id Zendesk sends with each call, makes redeliveries duplicates.

Ticket events map to custintel's support signals (README, "Zendesk"): a ticket created is
`ticket_opened` with its subject and description as text, solved or closed `ticket_closed`, a
public comment `ticket_comment` with its body; `properties.ticket_id` ties them together. The
ticket's organization is the account holding it as a `zendesk` identity; its requester the
contact holding the requester id as a `zendesk` identity (whose account is used when the ticket
names no organization).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime
from typing import Any

from app.sources.common import Ignored, Item, Mapped, Party, Rejected, Request, need, same, text


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


_CLOSED = frozenset({"solved", "closed"})


def _zendesk_id(value: Any) -> str | None:
    """Zendesk ids come as numbers or strings; 0 and "" mean none."""
    if isinstance(value, bool) or value in (None, "", 0, "0"):
        return None
    return str(value) if isinstance(value, int | str) else None


def map_item(item: Item, settings: dict[str, Any]) -> Mapped:
    payload = item.payload
    kind = item.event_type.removeprefix("zen:event-type:")
    if not kind.startswith("ticket."):
        raise Ignored(f"{item.event_type} is not mapped")
    detail = need(payload, "detail")
    ticket = _zendesk_id(need(payload, "detail", "id"))
    at = _moment(str(need(payload, "time")))
    if at is None or at.tzinfo is None:
        raise Rejected("time is not an ISO 8601 moment with an offset")
    organization = _zendesk_id(detail.get("organization_id"))
    requester = _zendesk_id(detail.get("requester_id"))
    party = Party(
        account_identities=[("zendesk", organization)] if organization else [],
        contact_identities=[("zendesk", requester)] if requester else [],
    )
    event: dict[str, Any] = {
        "event_id": f"zendesk-{item.delivery_id}",
        "source": "zendesk",
        "occurred_at": at.isoformat(),
        "properties": {
            "ticket_id": ticket,
            "priority": detail.get("priority"),
            "status": detail.get("status"),
            "channel": (detail.get("via") or {}).get("channel"),
        },
    }
    change = payload.get("event") or {}
    if kind == "ticket.created":
        subject, description = text(detail.get("subject")), text(detail.get("description"))
        event["type"] = "ticket_opened"
        event["text"] = "\n\n".join(t for t in (subject, description) if t) or None
    elif kind == "ticket.status_changed":
        current = change.get("current")
        status = current.get("status") if isinstance(current, dict) else current
        if not isinstance(status, str) or status.lower() not in _CLOSED:
            raise Ignored(f"status changed to {status!r}, not solved or closed")
        event["type"] = "ticket_closed"
        event["properties"]["status"] = status.lower()
    elif kind == "ticket.comment_added":
        comment = change.get("comment") or {}
        if not comment.get("is_public", False):
            raise Ignored("a private comment")
        event["type"] = "ticket_comment"
        event["text"] = text(need(payload, "event", "comment", "body"))
        author = comment.get("author") or {}
        event["properties"]["by_staff"] = author.get("is_staff")
    else:
        raise Ignored(f"{item.event_type} is not mapped")
    if event.get("text") is None:
        event.pop("text", None)
    return Mapped(party, events=[event])
