"""Zendesk: deliveries signed `X-Zendesk-Webhook-Signature`, the base64 HMAC-SHA256 of the
`X-Zendesk-Webhook-Signature-Timestamp` value followed by the body, with the webhook's signing
secret. A delivery is one event (an event subscription's `{id, type, detail, event}`); its id,
else (a trigger's body, which has none) a hash of the signed body, makes redeliveries
duplicates. Not the invocation id Zendesk sends with each call: no signature covers it, so a
captured delivery replayed with new invocation ids would be stored again.

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
from datetime import UTC, datetime
from typing import Any

from app.platform.jsonbody import JSONObject
from app.signals.sources.common import (
    Ignored,
    Item,
    Mapped,
    Party,
    Rejected,
    Request,
    need,
    same,
    text,
)


def _moment(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def verify(request: Request, secrets: list[str], *, window: int, settings: JSONObject) -> bool:
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
    delivery_id = payload.get("id")
    if delivery_id is None or delivery_id == "":
        # What the signature covers, and nothing else, names it.
        delivery_id = "body-" + hashlib.sha256(request.body).hexdigest()[:32]
    if not isinstance(delivery_id, str | int) or isinstance(delivery_id, bool):
        raise ValueError("a Zendesk delivery's id is a string or a number")
    event_type = payload.get("type")
    if event_type is None and isinstance(payload.get("custintel"), str):  # a trigger's body
        event_type = f"trigger.{payload['custintel']}"
    return [Item(str(delivery_id), str(event_type or "trigger"), payload)]


_CLOSED = frozenset({"solved", "closed"})


def _zendesk_id(value: Any) -> str | None:
    """Zendesk ids come as numbers or strings; 0 and "" mean none."""
    if isinstance(value, bool) or value in (None, "", 0, "0"):
        return None
    return str(value) if isinstance(value, int | str) else None


# A trigger's body (README, "Zendesk"): what its placeholders fill in.
_TRIGGER_TYPES = {
    "trigger.ticket_created": "ticket_opened",
    "trigger.ticket_solved": "ticket_closed",
    "trigger.ticket_comment": "ticket_comment",
    "trigger.ticket_rated": "csat_answered",
}
_RATINGS = {"good": 5.0, "great": 5.0, "bad": 1.0, "poor": 1.0}


def _trigger(item: Item, at_fallback: datetime) -> Mapped:
    body = item.payload
    kind = _TRIGGER_TYPES.get(item.event_type)
    if kind is None:
        raise Ignored(f"{item.event_type} is not mapped")
    ticket = _zendesk_id(need(body, "ticket_id"))
    email = text(body.get("requester_email"))
    organization = _zendesk_id(body.get("organization_id"))
    party = Party(
        account_identities=[("zendesk", organization)] if organization else [],
        contact_email=email,
    )
    at = _moment(str(body.get("updated_at") or "")) or at_fallback
    event: JSONObject = {
        "event_id": f"zendesk-{item.delivery_id}",
        "type": kind,
        "source": "zendesk",
        "occurred_at": at.isoformat(),
        "properties": {"ticket_id": ticket, "status": text(body.get("status"))},
    }
    if kind == "ticket_opened":
        parts = (text(body.get("subject")), text(body.get("description")))
        event["text"] = "\n\n".join(t for t in parts if t) or None
    elif kind == "ticket_comment":
        event["text"] = text(need(body, "comment"))
    elif kind == "csat_answered":
        rating = need(body, "satisfaction")
        score = _RATINGS.get(str(rating).strip().lower())
        if score is None:
            try:
                score = float(rating)
            except ValueError:
                raise Rejected(f"satisfaction {rating!r} is not good, bad or a number") from None
        if not 1 <= score <= 5:
            raise Rejected(f"satisfaction {rating!r} is not on the 1 to 5 scale")
        event["value"] = score
        event["text"] = text(body.get("satisfaction_comment"))
    if event.get("text") is None:
        event.pop("text", None)
    return Mapped(party, events=[event])


def map_item(item: Item, settings: JSONObject) -> Mapped:
    payload = item.payload
    if item.event_type.startswith("trigger."):
        return _trigger(item, datetime.now(UTC))
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
    event: JSONObject = {
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
