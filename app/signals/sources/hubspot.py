"""HubSpot: deliveries signed `X-HubSpot-Signature-v3`, the base64 HMAC-SHA256 of method, URI,
body and the `X-HubSpot-Request-Timestamp` (milliseconds) with the app's client secret; the
subscriptions that still sign v1 send `X-HubSpot-Signature`, the hex SHA-256 of the secret
followed by the body (no timestamp: the event ids make a replay a duplicate). The URI is the
one HubSpot called: behind a proxy that rewrites it, set the source's `url` setting to the
receiver's public URL. A delivery is a JSON array of events, each with its `eventId`.

Company and contact events become profile changes (README, "HubSpot"), observed when HubSpot
says they happened: a company is the account holding its id as a `hubspot` identity (a company
created or changed that no account holds yet becomes account `hubspot-<id>`); its `name`,
`domain` (an identity) and the properties the source's settings name (`segment_property`,
`plan_property`, `mrr_property`) map to account fields, other properties to traits
`hubspot.<name>`; a deletion sets the trait `hubspot.deleted`. A contact's property changes go
to the contact holding its id as a `hubspot` identity (`email` to its email, others to
traits); a contact's creation carries no field (HubSpot sends only its id), so a contact is
created by its association with a company (`contact.associationChange`, CONTACT_TO_COMPANY):
the contact holding its id, else a new contact `hubspot-<id>`, at the company's account. A
deal's company comes from its `deal.associationChange` events (the deal id becomes a
`hubspot_deal` identity of the company's account); a deal whose `dealstage` changes to one of
the source's `won_stages` (default `closedwon`) is the outcome `expanded` for that account.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

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


def verify(request: Request, secrets: list[str], *, window: int, settings: JSONObject) -> bool:
    v3 = request.headers.get("x-hubspot-signature-v3")
    if v3:
        timestamp = request.headers.get("x-hubspot-request-timestamp", "")
        if not timestamp.isdigit() or len(timestamp) > 15:
            return False
        if abs(request.received_at.timestamp() * 1000 - int(timestamp)) > window * 1000:
            return False
        # HubSpot signs the URI with these characters decoded.
        uri = str(settings.get("url") or request.url)
        for encoded in ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28", "%29", "%2A"):
            uri = uri.replace(encoded, unquote(encoded)).replace(encoded.lower(), unquote(encoded))
        signed = (request.method + uri).encode() + request.body + timestamp.encode()
        for secret in secrets:
            digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
            if same(base64.b64encode(digest), v3):
                return True
        return False
    v1 = request.headers.get("x-hubspot-signature")
    if v1 and request.headers.get("x-hubspot-signature-version", "v1") == "v1":
        return any(
            same(hashlib.sha256(secret.encode() + request.body).hexdigest(), v1)
            for secret in secrets
        )
    return False


def items(payload: Any, request: Request) -> list[Item]:
    events = payload if isinstance(payload, list) else [payload]
    found = []
    for event in events:
        if not isinstance(event, dict) or isinstance(event.get("eventId"), bool):
            raise ValueError("a HubSpot delivery is an array of events, each with an eventId")
        if not isinstance(event.get("eventId"), int | str):
            raise ValueError("a HubSpot delivery is an array of events, each with an eventId")
        found.append(Item(str(event["eventId"]), str(event.get("subscriptionType")), event))
    return found


def _field(settings: JSONObject, name: str, default: str | None = None) -> str | None:
    value = settings.get(name, default)
    return value if isinstance(value, str) and value else None


def _deal(item: Item, settings: JSONObject, at: str) -> Mapped:
    event = item.payload
    if item.event_type == "deal.associationChange":
        kind = str(event.get("associationType") or "")
        if "DEAL_TO_COMPANY" not in kind or event.get("associationRemoved"):
            raise Ignored(f"a {kind or 'deal'} association is not mapped")
        deal, company = need(event, "fromObjectId"), need(event, "toObjectId")
        party = Party(account_identities=[("hubspot", str(company))])
        link = {"identities": [{"kind": "hubspot_deal", "value": str(deal)}], "observed_at": at}
        return Mapped(party, account=link, create_account=f"hubspot-{company}")
    if item.event_type != "deal.propertyChange" or event.get("propertyName") != "dealstage":
        raise Ignored(f"{item.event_type} of {event.get('propertyName')!r} is not mapped")
    won = settings.get("won_stages") or ["closedwon"]
    if event.get("propertyValue") not in won:
        raise Ignored(f"dealstage {event.get('propertyValue')!r} is not one of {won}")
    deal = need(event, "objectId")
    outcome = {
        "outcome_id": f"hubspot-{item.delivery_id}",
        "kind": "expanded",
        "occurred_at": at,
        "properties": {"deal_id": str(deal), "dealstage": event["propertyValue"]},
    }
    return Mapped(Party(account_identities=[("hubspot_deal", str(deal))]), outcomes=[outcome])


def _contact_company(item: Item, event: JSONObject) -> Mapped:
    """A contact associated with a company: the contact (holding the HubSpot contact id as a
    `hubspot` identity, else created as `hubspot-<id>`) belongs to the company's account."""
    kind = str(event.get("associationType") or "")
    if kind != "CONTACT_TO_COMPANY" or event.get("associationRemoved"):
        raise Ignored(f"a {kind or 'contact'} association is not mapped")
    contact, company = need(event, "fromObjectId"), need(event, "toObjectId")
    for value in (contact, company):
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise Rejected("fromObjectId and toObjectId are ids")
    occurred = need(event, "occurredAt")
    if isinstance(occurred, bool) or not isinstance(occurred, int):
        raise Rejected("occurredAt is not a time in milliseconds")
    at = datetime.fromtimestamp(occurred / 1000, UTC).isoformat()
    party = Party(
        account_identities=[("hubspot", str(company))],
        contact_identities=[("hubspot", str(contact))],
    )
    fields = {"identities": [{"kind": "hubspot", "value": str(contact)}], "observed_at": at}
    return Mapped(
        party,
        contacts=[("", fields)],
        create_account=f"hubspot-{company}",
        create_contact=f"hubspot-{contact}",
    )


def map_item(item: Item, settings: JSONObject) -> Mapped:
    event = item.payload
    subject, _, change = item.event_type.partition(".")
    if subject == "deal":
        occurred = need(event, "occurredAt")
        if isinstance(occurred, bool) or not isinstance(occurred, int):
            raise Rejected("occurredAt is not a time in milliseconds")
        return _deal(item, settings, datetime.fromtimestamp(occurred / 1000, UTC).isoformat())
    if item.event_type == "contact.associationChange":
        return _contact_company(item, event)
    if subject not in ("company", "contact") or change not in (
        "creation",
        "propertyChange",
        "deletion",
    ):
        raise Ignored(f"{item.event_type} is not mapped")
    object_id = need(event, "objectId")
    if isinstance(object_id, bool) or not isinstance(object_id, int | str):
        raise Rejected("objectId is not an id")
    occurred = need(event, "occurredAt")
    if isinstance(occurred, bool) or not isinstance(occurred, int):
        raise Rejected("occurredAt is not a time in milliseconds")
    at = datetime.fromtimestamp(occurred / 1000, UTC).isoformat()
    name, value = event.get("propertyName"), event.get("propertyValue")
    if change == "propertyChange" and (not isinstance(name, str) or not name):
        raise Rejected("a property change names no propertyName")
    fields: JSONObject = {"observed_at": at}
    if subject == "contact":
        if change == "creation":
            raise Ignored(
                "a contact's creation carries no field: the contact is created by its "
                "association with a company (contact.associationChange)"
            )
        party = Party(contact_identities=[("hubspot", str(object_id))])
        if change == "deletion":
            fields["traits"] = {"hubspot.deleted": True}
        elif name == "email":
            fields["email"] = text(value)
        else:
            fields["traits"] = {f"hubspot.{name}": text(value)}
        return Mapped(party, contacts=[("", fields)])
    party = Party(account_identities=[("hubspot", str(object_id))])
    if change == "deletion":
        fields["traits"] = {"hubspot.deleted": True}
    elif change == "propertyChange":
        account_fields = {
            _field(settings, "name_property", "name"): "name",
            _field(settings, "segment_property"): "segment",
            _field(settings, "plan_property"): "plan",
            _field(settings, "mrr_property"): "mrr",
        }
        if name == "domain" and text(value):
            domain = str(text(value)).strip().lower()
            fields["identities"] = [{"kind": "domain", "value": domain}]
            # A company whose domain an account holds already is that account (as Stripe's
            # customers are found by their email's domain), not a new `hubspot-<id>`.
            party.domain = domain
        elif name in account_fields:
            target = account_fields[name]
            if target == "mrr":
                try:
                    fields["mrr"] = float(value) if value not in (None, "") else None
                except (TypeError, ValueError):
                    raise Rejected(f"{name} {value!r} is not a number") from None
            else:
                fields[target] = text(value)
        else:
            fields["traits"] = {f"hubspot.{name}": text(value)}
    return Mapped(party, account=fields, create_account=f"hubspot-{object_id}")
