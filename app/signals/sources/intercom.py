"""Intercom: deliveries signed `X-Hub-Signature: sha1=<hex>`, the HMAC-SHA1 of the body with the
app's client secret (Intercom signs no timestamp: its notification id makes a replay a
duplicate). A delivery is one notification `{type: notification_event, id, topic, data}`.

Conversation topics map to custintel's support signals (README, "Intercom"): a conversation a
customer starts is `conversation_opened` with its first message as text, a customer's reply
`conversation_reply`, an admin closing it `conversation_closed`, a rating `csat_answered` with
the rating (1 to 5) as value and the remark as text. The person is the contact holding the
Intercom contact id as an `intercom` identity, its `external_id` as `user_id`, or its email;
the account is that contact's. A contact Intercom creates or updates (`contact.user.*`,
`contact.lead.*`) gives the custintel contact with its `external_id` (as `user_id`) or email
an `intercom` identity; a company (`company.created`, `company.updated`) whose `company_id` is an
account id gives that account an `intercom` identity and its name.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import re
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

_TAGS = re.compile(r"<[^>]*>")
_EVENTS = {
    "conversation.user.created": "conversation_opened",
    "conversation.user.replied": "conversation_reply",
    "conversation.admin.closed": "conversation_closed",
    "conversation.rating.added": "csat_answered",
}


def verify(request: Request, secrets: list[str], *, window: int, settings: JSONObject) -> bool:
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


def _plain(body: Any) -> str | None:
    """Intercom's message HTML as plain text."""
    found = text(body)
    if found is None:
        return None
    return " ".join(html.unescape(_TAGS.sub(" ", found)).split()) or None


def _party(conversation: JSONObject) -> Party:
    party = Party()
    contacts = (conversation.get("contacts") or {}).get("contacts") or []
    first = contacts[0] if contacts and isinstance(contacts[0], dict) else {}
    for key, kind in (("id", "intercom"), ("external_id", "user_id")):
        if isinstance(first.get(key), str) and first[key]:
            party.contact_identities.append((kind, first[key]))
    author = (conversation.get("source") or {}).get("author") or {}
    if author.get("type") in ("user", "lead", "contact") and isinstance(author.get("email"), str):
        party.contact_email = author["email"]
    return party


def _link(item: Item) -> Mapped:
    """A contact or company of Intercom's, linked to custintel's by an `intercom` identity."""
    record = need(item.payload, "data", "item")
    intercom_id = text(record.get("id"))
    if intercom_id is None:
        raise Rejected("missing data.item.id")
    at = item.payload.get("created_at")
    observed = (
        datetime.fromtimestamp(at, UTC).isoformat()
        if isinstance(at, int) and not isinstance(at, bool)
        else None
    )
    if item.event_type.startswith("company."):
        company = text(record.get("company_id"))
        if company is None:
            raise Rejected("missing data.item.company_id")
        fields: JSONObject = {"identities": [{"kind": "intercom", "value": intercom_id}]}
        if text(record.get("name")):
            fields["name"] = text(record.get("name"))
        if observed:
            fields["observed_at"] = observed
        return Mapped(Party(account_id=company), account=fields)
    party = Party(contact_email=text(record.get("email")))
    if text(record.get("external_id")):
        party.contact_identities.append(("user_id", str(record["external_id"])))
    if not party.contact_pairs():
        raise Rejected("the contact has neither external_id nor email to find it by")
    link: JSONObject = {"identities": [{"kind": "intercom", "value": intercom_id}]}
    if observed:
        link["observed_at"] = observed
    return Mapped(party, contacts=[("", link)])


def map_item(item: Item, settings: JSONObject) -> Mapped:
    topic = item.event_type
    if topic.startswith(("contact.user.", "contact.lead.", "company.")) and topic.endswith(
        (".created", ".updated")
    ):
        return _link(item)
    if item.event_type not in _EVENTS:
        raise Ignored(f"{item.event_type} is not mapped")
    conversation = need(item.payload, "data", "item")
    created = item.payload.get("created_at")
    if not isinstance(created, int) or isinstance(created, bool):
        raise Rejected("created_at is not a Unix time")
    party = _party(conversation)
    if not party.contact_pairs():
        raise Rejected("the conversation names no contact (id, external_id or email)")
    event: JSONObject = {
        "event_id": f"intercom-{item.delivery_id}",
        "type": _EVENTS[item.event_type],
        "source": "intercom",
        "occurred_at": datetime.fromtimestamp(created, UTC).isoformat(),
        "properties": {"conversation_id": text(str(conversation.get("id") or "")) or None},
    }
    if item.event_type == "conversation.user.created":
        event["text"] = _plain((conversation.get("source") or {}).get("body"))
    elif item.event_type == "conversation.user.replied":
        parts = (conversation.get("conversation_parts") or {}).get("conversation_parts") or []
        last = parts[-1] if parts and isinstance(parts[-1], dict) else {}
        event["text"] = _plain(last.get("body"))
    elif item.event_type == "conversation.rating.added":
        rating = need(item.payload, "data", "item", "conversation_rating", "rating")
        if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
            raise Rejected("conversation_rating.rating is not 1 to 5")
        event["value"] = float(rating)
        event["text"] = text((conversation.get("conversation_rating") or {}).get("remark"))
    if event.get("text") is None:
        event.pop("text", None)
    return Mapped(party, events=[event])
