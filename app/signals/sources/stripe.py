"""Stripe: deliveries signed `Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]`, the HMAC-SHA256 of
`{t}.{body}` with the endpoint's `whsec_...` secret (any v1 may match: Stripe sends one per
secret while a rolled secret still works); one event per delivery, its `evt_...` id the
delivery's.

Mapping (README, "Stripe"): invoices paid and failed become events, a subscription's end the
outcome `churned` with the monthly revenue lost, a change of its monthly amount `expanded` or
`contracted` with the difference (and the account's mrr set), trial ends, pauses and resumptions
events. The customer is the account named by its metadata key (the source's setting
`account_metadata_key`, default `account_id`, on the customer, the subscription or the invoice),
else the account holding the customer id as a `stripe` identity, else the account holding its
email's domain.
"""

from __future__ import annotations

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

# ISO 4217 currencies Stripe counts in whole units, and those with three decimals.
_ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
# How many of each interval fall in a month.
_PER_MONTH = {"day": 365.25 / 12, "week": 52.1775 / 12, "month": 1.0, "year": 1 / 12}
_EVENTS = {
    "invoice.paid": "invoice_paid",
    "invoice.payment_failed": "payment_failed",
    "customer.subscription.trial_will_end": "subscription_trial_will_end",
    "customer.subscription.paused": "subscription_paused",
    "customer.subscription.resumed": "subscription_resumed",
}


def verify(request: Request, secrets: list[str], *, window: int, settings: JSONObject) -> bool:
    header = request.headers.get("stripe-signature", "")
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or len(timestamp) > 12 or not signatures:
        return False
    if abs(request.received_at.timestamp() - int(timestamp)) > window:
        return False
    signed = timestamp.encode() + b"." + request.body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(same(expected, given) for given in signatures):
            return True
    return False


def items(payload: Any, request: Request) -> list[Item]:
    if not isinstance(payload, dict):
        raise ValueError("a Stripe delivery is one event object")
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise ValueError("a Stripe event has a string id and type")
    return [Item(event_id, event_type, payload)]


def major(amount: Any, currency: Any) -> float:
    """An amount in Stripe's smallest unit, in the currency's major unit."""
    if not isinstance(amount, int | float) or isinstance(amount, bool):
        raise Rejected("an amount is not a number")
    code = str(currency or "").lower()
    digits = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    return float(round(float(amount) / 10**digits, digits))


def monthly(subscription: JSONObject, line_items: Any = None) -> float:
    """What a subscription bills a month, in major units: each licensed item's unit amount times
    its quantity, per month of its interval. Metered and tiered items (no unit amount) count 0."""
    data = line_items if line_items is not None else (subscription.get("items") or {})
    lines = data.get("data") if isinstance(data, dict) else data
    if not isinstance(lines, list):
        raise Rejected("missing items.data")
    total = 0.0
    currency = subscription.get("currency")
    for line in lines:
        if not isinstance(line, dict):
            continue
        price = line.get("price") or line.get("plan") or {}
        recurring = price.get("recurring") or price
        if recurring.get("usage_type") == "metered":
            continue
        unit = price.get("unit_amount", price.get("amount"))
        if unit is None:
            continue
        interval = recurring.get("interval")
        count = recurring.get("interval_count") or 1
        if interval not in _PER_MONTH or not isinstance(count, int) or count < 1:
            raise Rejected(f"an item bills every {count} {interval!r}: not a known interval")
        quantity = line.get("quantity")
        quantity = 1 if quantity is None else quantity
        per_month = _PER_MONTH[interval] / count
        total += major(unit, price.get("currency") or currency) * float(quantity) * per_month
    return round(total, 2)


def _id(value: Any) -> str | None:
    """An id Stripe sends as a string, or inside the object when it was expanded."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _party(obj: JSONObject, settings: JSONObject) -> Party:
    key = str(settings.get("account_metadata_key") or "account_id")
    customer = obj.get("customer")
    places = [
        obj.get("metadata"),
        customer.get("metadata") if isinstance(customer, dict) else None,
        (obj.get("subscription_details") or {}).get("metadata"),
        ((obj.get("parent") or {}).get("subscription_details") or {}).get("metadata"),
    ]
    account_id = next(
        (str(m[key]) for m in places if isinstance(m, dict) and m.get(key) not in (None, "")),
        None,
    )
    customer_id = obj["id"] if obj.get("object") == "customer" else _id(customer)
    email = obj.get("email") if obj.get("object") == "customer" else obj.get("customer_email")
    domain = email.rpartition("@")[2].strip().lower() if isinstance(email, str) else None
    return Party(
        account_id=account_id,
        account_identities=[("stripe", customer_id)] if customer_id else [],
        domain=domain or None,
    )


def map_item(item: Item, settings: JSONObject) -> Mapped:
    payload = item.payload
    obj = need(payload, "data", "object")
    created = need(payload, "created")
    if not isinstance(created, int):
        raise Rejected("created is not a Unix time")
    at = datetime.fromtimestamp(created, UTC)
    party = _party(obj, settings)
    mapped = Mapped(party)
    key = f"stripe-{item.delivery_id}"
    if item.event_type in ("customer.created", "customer.updated"):
        mapped.account = {"observed_at": at.isoformat()}
        return mapped
    if item.event_type in ("invoice.paid", "invoice.payment_failed"):
        field = "amount_paid" if item.event_type == "invoice.paid" else "amount_due"
        currency = obj.get("currency")
        mapped.events.append(
            {
                "event_id": key,
                "type": _EVENTS[item.event_type],
                "source": "stripe",
                "occurred_at": at.isoformat(),
                "value": major(need(payload, "data", "object", field), currency),
                "properties": {
                    "currency": text(currency),
                    "invoice_id": text(obj.get("id")),
                    "subscription_id": _id(obj.get("subscription")),
                    "attempt_count": obj.get("attempt_count"),
                },
            }
        )
        return mapped
    if item.event_type in _EVENTS:  # trial ending, paused, resumed
        mapped.events.append(
            {
                "event_id": key,
                "type": _EVENTS[item.event_type],
                "source": "stripe",
                "occurred_at": at.isoformat(),
                "value": monthly(obj),
                "properties": {"subscription_id": text(obj.get("id")), "status": obj.get("status")},
            }
        )
        return mapped
    if item.event_type == "customer.subscription.deleted":
        lost = monthly(obj)
        ended = obj.get("ended_at") or obj.get("canceled_at") or created
        ended_at = datetime.fromtimestamp(ended, UTC) if isinstance(ended, int) else at
        properties = {"subscription_id": text(obj.get("id")), "source": "stripe"}
        # Why they left, in their words where Stripe asked: what a CSM reads first.
        details = obj.get("cancellation_details")
        if isinstance(details, dict):
            for name in ("reason", "feedback", "comment"):
                said = text(details.get(name))
                if said:
                    properties[f"cancellation_{name}"] = said
        mapped.outcomes.append(
            {
                "outcome_id": key,
                "kind": "churned",
                "occurred_at": ended_at.isoformat(),
                "amount": lost,
                "properties": properties,
            }
        )
        mapped.account = {"mrr": 0, "observed_at": ended_at.isoformat()}
        return mapped
    if item.event_type == "customer.subscription.updated":
        before = (payload.get("data") or {}).get("previous_attributes") or {}
        now_monthly = monthly(obj)
        if "items" in before:
            then_monthly = monthly(obj, before["items"])
        elif "plan" in before or "quantity" in before:
            line = {"plan": before.get("plan") or obj.get("plan") or {}}
            line["quantity"] = before.get("quantity", obj.get("quantity"))
            then_monthly = monthly(obj, [line])
        else:
            raise Ignored("the subscription changed, not what it bills")
        change = round(now_monthly - then_monthly, 2)
        if change == 0:
            raise Ignored("the subscription changed, not what it bills")
        mapped.outcomes.append(
            {
                "outcome_id": key,
                "kind": "expanded" if change > 0 else "contracted",
                "occurred_at": at.isoformat(),
                "amount": abs(change),
                "properties": {
                    "subscription_id": text(obj.get("id")),
                    "mrr_before": then_monthly,
                    "mrr_after": now_monthly,
                    "source": "stripe",
                },
            }
        )
        mapped.account = {"mrr": now_monthly, "observed_at": at.isoformat()}
        return mapped
    raise Ignored(f"{item.event_type} is not mapped")
