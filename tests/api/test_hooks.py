"""Senders' signed webhooks at /hooks/{source_id}: signatures made the way each sender makes
them (checked against the senders' own libraries where they publish one), Stripe's events as
custintel's signals, idempotency, rotation, held and rejected deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import stripe
from hubspot.utils.signature import Signature

from app.signals import sources
from tests.fixtures.senders import (
    STRIPE_SECRET,
    deliver_stripe,
    intercom_signature,
    invoice,
    make_source,
    stripe_event,
    stripe_header,
)


def subscription(unit_amount: int, quantity: int = 1, interval: str = "month") -> dict[str, Any]:
    return {
        "id": "sub_1",
        "object": "subscription",
        "customer": "cus_A",
        "currency": "usd",
        "status": "active",
        "metadata": {"account_id": "acme"},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": "si_1",
                    "object": "subscription_item",
                    "quantity": quantity,
                    "price": {
                        "id": "price_1",
                        "currency": "usd",
                        "unit_amount": unit_amount,
                        "recurring": {
                            "interval": interval,
                            "interval_count": 1,
                            "usage_type": "licensed",
                        },
                    },
                }
            ],
        },
    }


async def test_stripe_invoices_become_events_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    source = await make_source(client)
    event = stripe_event("invoice.paid", invoice(metadata={"account_id": "acme"}))
    body = orjson.dumps(event)
    header = stripe_header(body)
    # Stripe's own library accepts the signature as made here.
    assert stripe.WebhookSignature.verify_header(body.decode(), header, STRIPE_SECRET, 300)
    sent = await client.post(source["url"], content=body, headers={"Stripe-Signature": header})
    assert sent.status_code == 200, sent.text
    assert sent.json() == {
        "received": 1,
        "accepted": 1,
        "ignored": 0,
        "rejected": 0,
        "held": 0,
        "suppressed": 0,
        "duplicates": 0,
    }
    again = await client.post(source["url"], content=body, headers={"Stripe-Signature": header})
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    events = (await client.get("/v1/accounts/acme/events")).json()["items"]
    assert [(e["type"], e["value"], e["source"]) for e in events] == [
        ("invoice_paid", 123.45, "stripe")
    ]
    assert events[0]["properties"]["currency"] == "eur"
    # The metadata linked the customer: later events without it find the account.
    failed = stripe_event("invoice.payment_failed", invoice(id="in_2", amount_due=990))
    assert (await deliver_stripe(client, source, failed)).json()["accepted"] == 1
    account = (await client.get("/v1/accounts/acme")).json()
    assert {"kind": "stripe", "value": "cus_A"} in account["identities"]
    types = {e["type"] for e in (await client.get("/v1/accounts/acme/events")).json()["items"]}
    assert types == {"invoice_paid", "payment_failed"}
    counts = (await client.get(f"/v1/sources/{source['source_id']}")).json()
    assert (counts["received"], counts["accepted"], counts["duplicates"]) == (3, 2, 1)
    assert counts["last_received_at"] is not None
    # The secret is stored encrypted, never in the clear.
    stored = await conn.fetchval("SELECT secret FROM sources")
    assert STRIPE_SECRET.encode() not in bytes(stored)


async def test_subscription_changes_are_outcomes_with_the_monthly_amount(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    source = await make_source(client)
    before = subscription(5000, quantity=2)["items"]
    upgraded = stripe_event(
        "customer.subscription.updated",
        subscription(5000, quantity=5),
        previous_attributes={"items": before},
    )
    assert (await deliver_stripe(client, source, upgraded)).json()["accepted"] == 1
    yearly = stripe_event(
        "customer.subscription.updated",
        subscription(120000, interval="year"),
        previous_attributes={"items": subscription(5000, quantity=5)["items"]},
    )
    assert (await deliver_stripe(client, source, yearly)).json()["accepted"] == 1
    assert (await client.get("/v1/accounts/acme")).json()["mrr"] == 100  # $1,200 a year
    ended = stripe_event("customer.subscription.deleted", subscription(120000, interval="year"))
    assert (await deliver_stripe(client, source, ended)).json()["accepted"] == 1
    assert (await client.get("/v1/accounts/acme")).json()["mrr"] == 0
    untouched = stripe_event(
        "customer.subscription.updated", subscription(100), previous_attributes={"status": "x"}
    )
    assert (await deliver_stripe(client, source, untouched)).json()["ignored"] == 1
    rows = await conn.fetch("SELECT kind, amount FROM outcomes WHERE account_id = 'acme'")
    assert sorted((r[0], float(r[1])) for r in rows) == [
        ("churned", 100.0),  # the monthly revenue lost
        ("contracted", 150.0),  # $250 a month down to $100
        ("expanded", 150.0),  # 2 seats of $50 up to 5
    ]


async def test_refusals_are_401_and_store_nothing(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    source = await make_source(client)
    event = stripe_event("invoice.paid", invoice(metadata={"account_id": "acme"}))
    body = orjson.dumps(event)
    good = stripe_header(body)
    tampered = body.replace(b"12345", b"99999")
    cases = [
        (source["url"], body, {"Stripe-Signature": good.replace("v1=", "v1=0")}),
        (source["url"], tampered, {"Stripe-Signature": good}),
        (source["url"], body, {"Stripe-Signature": stripe_header(body, secret="whsec_other")}),
        (source["url"], body, {"Stripe-Signature": stripe_header(body, at=time.time() - 600)}),
        (source["url"], body, {}),
        (f"/hooks/{uuid.uuid4()}", body, {"Stripe-Signature": good}),
        ("/hooks/not-a-uuid", body, {"Stripe-Signature": good}),
    ]
    details = set()
    for url, content, headers in cases:
        refused = await client.post(url, content=content, headers=headers)
        assert refused.status_code == 401, (url, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        details.add(refused.json()["detail"])
    assert len(details) == 1  # the answer never says which check failed
    disabled = await client.patch(f"/v1/sources/{source['source_id']}", json={"enabled": False})
    assert disabled.json()["enabled"] is False
    refused = await client.post(source["url"], content=body, headers={"Stripe-Signature": good})
    assert refused.status_code == 401
    assert await conn.fetchval("SELECT count(*) FROM source_deliveries") == 0
    assert await conn.fetchval("SELECT count(*) FROM events") == 0


async def test_a_rotated_secret_verifies_during_its_grace_period(
    client: httpx.AsyncClient,
) -> None:
    source = await make_source(client)
    new_secret = "whsec_" + "next" * 8
    path = f"/v1/sources/{source['source_id']}"
    rotated = await client.patch(path, json={"secret": new_secret, "grace_hours": 1})
    assert rotated.status_code == 200 and rotated.json()["secret_rotating_until"] is not None
    for secret, invoice_id in ((STRIPE_SECRET, "in_old"), (new_secret, "in_new")):
        event = stripe_event("invoice.paid", invoice(id=invoice_id, metadata={"account_id": "a"}))
        sent = await deliver_stripe(client, source, event, secret=secret)
        assert sent.status_code == 200, (secret, sent.text)
    await client.patch(path, json={"secret": "whsec_" + "last" * 8, "grace_hours": 0})
    event = stripe_event("invoice.paid", invoice(id="in_late", metadata={"account_id": "a"}))
    assert (await deliver_stripe(client, source, event, secret=new_secret)).status_code == 401


async def test_an_unmapped_customer_is_held_then_attached_by_an_identity(
    client: httpx.AsyncClient,
) -> None:
    source = await make_source(client)
    event = stripe_event("invoice.paid", invoice(customer="cus_Z", customer_email="bo@Zeta.io"))
    sent = await deliver_stripe(client, source, event)
    assert sent.json()["held"] == 1, sent.text
    held = (await client.get("/v1/unresolved")).json()["items"]
    assert [sorted((k["kind"], k["value"]) for k in h["keys"]) for h in held] == [
        [("domain", "zeta.io"), ("stripe", "cus_Z")]
    ]
    assert (held[0]["source"], held[0]["call"]) == ("stripe", "invoice.paid")  # the sender
    claimed = await client.put(
        "/v1/accounts/zeta", json={"identities": [{"kind": "domain", "value": "zeta.io"}]}
    )
    assert claimed.status_code == 200, claimed.text
    events = (await client.get("/v1/accounts/zeta/events")).json()["items"]
    assert [(e["type"], e["value"]) for e in events] == [("invoice_paid", 123.45)]
    counts = (await client.get(f"/v1/sources/{source['source_id']}")).json()
    assert (counts["held"], counts["accepted"]) == (0, 1)
    assert (await client.get("/v1/unresolved", params={"status": "held"})).json()["items"] == []


async def test_a_rejection_is_listed_and_replays_after_a_settings_fix(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    source = await make_source(client)
    bad = invoice(metadata={"account_id": "team/acme", "crm_id": "acme"})
    sent = await deliver_stripe(client, source, stripe_event("invoice.paid", bad))
    assert sent.json()["rejected"] == 1, sent.text
    missing = stripe_event("invoice.paid", invoice(id="in_9", amount_paid=None))
    missing["data"]["object"]["metadata"] = {"account_id": "acme"}
    assert (await deliver_stripe(client, source, missing)).json()["rejected"] == 1
    path = f"/v1/sources/{source['source_id']}"
    listed = (await client.get(f"{path}/rejections")).json()
    assert [r["reason"] for r in listed] == [
        "missing data.object.amount_paid",
        listed[1]["reason"],
    ]
    assert "'team/acme' is not an account id" in listed[1]["reason"] and listed[1]["replayable"]
    fixed = await client.patch(path, json={"settings": {"account_metadata_key": "crm_id"}})
    assert fixed.json()["settings"] == {"account_metadata_key": "crm_id"}
    replayed = await client.post(f"{path}/rejections/{listed[1]['rejection_id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "accepted"
    events = (await client.get("/v1/accounts/acme/events")).json()["items"]
    assert [e["type"] for e in events] == ["invoice_paid"]
    assert [r["rejection_id"] for r in (await client.get(f"{path}/rejections")).json()] == [
        listed[0]["rejection_id"]
    ]
    gone = await client.post(f"{path}/rejections/{listed[1]['rejection_id']}/replay")
    assert gone.status_code == 404
    # Past the retention the payload is gone: the rejection stays listed, not replayable.
    assert await sources.forget_payloads(conn, before=datetime.now(UTC) + timedelta(seconds=1)) == 2
    [kept] = (await client.get(f"{path}/rejections")).json()
    assert kept["replayable"] is False
    expired = await client.post(f"{path}/rejections/{kept['rejection_id']}/replay")
    assert expired.status_code == 409, expired.text


def _zendesk(body: bytes, secret: str, at: datetime) -> dict[str, str]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
    }


async def test_zendesk_hubspot_and_intercom_signatures(client: httpx.AsyncClient) -> None:
    secret = "s3cret-" + "x" * 20
    now = datetime.now(UTC)
    zendesk = await make_source(client, "zendesk", secret)
    body = orjson.dumps({"id": "zd-1", "type": "zen:event-type:ticket.created", "detail": {}})
    ok = await client.post(zendesk["url"], content=body, headers=_zendesk(body, secret, now))
    assert ok.status_code == 200 and ok.json()["received"] == 1, ok.text
    stale = _zendesk(body, secret, now - timedelta(minutes=10))
    assert (await client.post(zendesk["url"], content=body, headers=stale)).status_code == 401
    wrong = _zendesk(body, "another-secret", now)
    assert (await client.post(zendesk["url"], content=body, headers=wrong)).status_code == 401

    hubspot = await make_source(client, "hubspot", secret)
    events = [
        {"eventId": 101, "subscriptionType": "contact.creation", "objectId": 7},
        {"eventId": 102, "subscriptionType": "contact.creation", "objectId": 8},
    ]
    body = orjson.dumps(events)
    uri = f"http://custintel.test{hubspot['url']}"
    stamp = str(int(time.time() * 1000))
    # HubSpot's own library signs it, as HubSpot does.
    v3 = Signature.get_signature(secret, body.decode(), "v3", uri, "POST", stamp)
    headers = {"X-HubSpot-Signature-v3": v3, "X-HubSpot-Request-Timestamp": stamp}
    ok = await client.post(hubspot["url"], content=body, headers=headers)
    assert ok.status_code == 200 and ok.json()["received"] == 2, ok.text
    again = await client.post(hubspot["url"], content=body, headers=headers)
    assert again.json()["duplicates"] == 2
    v1 = Signature.get_signature(secret, body.decode(), "v1")
    ok = await client.post(hubspot["url"], content=body, headers={"X-HubSpot-Signature": v1})
    assert ok.status_code == 200
    old = str(int(time.time() * 1000) - 600_000)
    stale_v3 = Signature.get_signature(secret, body.decode(), "v3", uri, "POST", old)
    stale = {"X-HubSpot-Signature-v3": stale_v3, "X-HubSpot-Request-Timestamp": old}
    assert (await client.post(hubspot["url"], content=body, headers=stale)).status_code == 401

    intercom = await make_source(client, "intercom", secret)
    body = orjson.dumps(
        {"type": "notification_event", "id": "notif_1", "topic": "conversation.user.created"}
    )
    sha1 = hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()
    ok = await client.post(
        intercom["url"], content=body, headers={"X-Hub-Signature": f"sha1={sha1}"}
    )
    # Verified; a conversation topic without its conversation is a rejection, kept to replay.
    assert ok.status_code == 200 and ok.json()["rejected"] == 1, ok.text
    bad = {"X-Hub-Signature": f"sha1={'0' * 40}"}
    assert (await client.post(intercom["url"], content=body, headers=bad)).status_code == 401


async def _zendesk_deliver(
    client: httpx.AsyncClient, source: dict[str, Any], secret: str, event: dict[str, Any]
) -> dict[str, Any]:
    body = orjson.dumps(event)
    sent = await client.post(
        source["url"], content=body, headers=_zendesk(body, secret, datetime.now(UTC))
    )
    assert sent.status_code == 200, sent.text
    answer: dict[str, Any] = sent.json()
    return answer


def _ticket(event_type: str, ticket: dict[str, Any], **event: Any) -> dict[str, Any]:
    return {
        "type": f"zen:event-type:ticket.{event_type}",
        "account_id": 88888888,
        "id": str(uuid.uuid4()),
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "zendesk_event_version": "2022-11-06",
        "subject": f"zen:ticket:{ticket['id']}",
        "detail": ticket,
        "event": event,
    }


async def test_zendesk_tickets_become_support_signals(client: httpx.AsyncClient) -> None:
    secret = "zendesk-signing-secret"
    source = await make_source(client, "zendesk", secret)
    org = {"identities": [{"kind": "zendesk", "value": "9"}]}
    await client.put("/v1/accounts/acme", json=org)
    person = {"account_id": "acme", "identities": [{"kind": "zendesk", "value": "77"}]}
    await client.put("/v1/contacts/c1", json=person)
    ticket = {
        "id": "35436",
        "subject": "Export fails",
        "description": "The CSV export breaks\u0000 since Monday.",
        "organization_id": "9",
        "requester_id": "77",
        "priority": "high",
        "status": "NEW",
        "via": {"channel": "web"},
    }
    answers = [
        await _zendesk_deliver(client, source, secret, _ticket("created", ticket)),
        await _zendesk_deliver(
            client,
            source,
            secret,
            _ticket(
                "comment_added",
                ticket,
                comment={"body": "Still broken.", "is_public": True, "author": {"is_staff": False}},
            ),
        ),
        await _zendesk_deliver(
            client,
            source,
            secret,
            _ticket("comment_added", ticket, comment={"body": "internal", "is_public": False}),
        ),
        await _zendesk_deliver(
            client, source, secret, _ticket("status_changed", ticket, current="SOLVED")
        ),
    ]
    assert [(a["accepted"], a["ignored"]) for a in answers] == [(1, 0), (1, 0), (0, 1), (1, 0)]
    events = (await client.get("/v1/accounts/acme/events")).json()["items"]
    found = sorted((e["type"], e.get("text"), e["contact_id"]) for e in events)
    assert found == [
        ("ticket_closed", None, "c1"),
        ("ticket_comment", "Still broken.", "c1"),
        ("ticket_opened", "Export fails\n\nThe CSV export breaks since Monday.", "c1"),
    ]
    assert {e["properties"]["ticket_id"] for e in events} == {"35436"}
    # A ticket of an organization no account holds yet waits for one that does.
    other = {**ticket, "id": "40000", "organization_id": 10, "requester_id": 0}
    held = await _zendesk_deliver(client, source, secret, _ticket("created", other))
    assert held["held"] == 1
    await client.put(
        "/v1/accounts/globex", json={"identities": [{"kind": "zendesk", "value": "10"}]}
    )
    events = (await client.get("/v1/accounts/globex/events")).json()["items"]
    assert [(e["type"], e["properties"]["ticket_id"]) for e in events] == [
        ("ticket_opened", "40000")
    ]


async def test_intercom_conversations_become_support_signals(client: httpx.AsyncClient) -> None:
    secret = "intercom-client-secret"
    source = await make_source(client, "intercom", secret)
    await client.put(
        "/v1/contacts/u-1",
        json={"account_id": "acme", "identities": [{"kind": "user_id", "value": "u-1"}]},
    )
    conversation = {
        "type": "conversation",
        "id": "1911149811",
        "contacts": {"type": "contact.list", "contacts": [{"id": "650f", "external_id": "u-1"}]},
        "source": {
            "type": "conversation",
            "body": "<p>Hi &amp; hello, <b>billing</b> is wrong</p>",
            "author": {"type": "user", "id": "650f", "email": "bo@acme.io"},
        },
        "conversation_rating": {"rating": 2, "remark": "Slow answer"},
    }
    for n, topic in enumerate(["conversation.user.created", "conversation.rating.added"]):
        body = orjson.dumps(
            {
                "type": "notification_event",
                "id": f"notif_{n}",
                "topic": topic,
                "created_at": int(time.time()) - 30,
                "data": {"type": "notification_event_data", "item": conversation},
            }
        )
        sent = await client.post(
            source["url"], content=body, headers=intercom_signature(body, secret)
        )
        assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
    events = (await client.get("/v1/accounts/acme/events")).json()["items"]
    assert sorted((e["type"], e["value"], e["text"], e["contact_id"]) for e in events) == [
        ("conversation_opened", None, "Hi & hello, billing is wrong", "u-1"),
        ("csat_answered", 2.0, "Slow answer", "u-1"),
    ]
    # Intercom's contacts and companies get their Intercom ids as identities.
    for n, (topic, record) in enumerate(
        [
            ("contact.user.created", {"type": "contact", "id": "650f", "external_id": "u-1"}),
            (
                "company.created",
                {"type": "company", "id": "5f1", "company_id": "acme", "name": "Acme"},
            ),
        ]
    ):
        body = orjson.dumps(
            {
                "type": "notification_event",
                "id": f"notif_link_{n}",
                "topic": topic,
                "created_at": int(time.time()) - 20,
                "data": {"type": "notification_event_data", "item": record},
            }
        )
        sent = await client.post(
            source["url"], content=body, headers=intercom_signature(body, secret)
        )
        assert sent.status_code == 200 and sent.json()["accepted"] == 1, sent.text
    contact = (await client.get("/v1/contacts/u-1")).json()
    assert {"kind": "intercom", "value": "650f"} in contact["identities"]
    account = (await client.get("/v1/accounts/acme")).json()
    assert account["name"] == "Acme" and account["identities"] == [
        {"kind": "intercom", "value": "5f1"}
    ]


async def test_hubspot_companies_and_contacts_become_profile_changes(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    secret = "hubspot-client-secret"
    source = await make_source(client, "hubspot", secret, settings={"segment_property": "tier"})
    await client.put(
        "/v1/accounts/acme", json={"identities": [{"kind": "hubspot", "value": "556"}]}
    )
    await client.put(
        "/v1/contacts/c1",
        json={"account_id": "acme", "identities": [{"kind": "hubspot", "value": "901"}]},
    )
    at = int(time.time() * 1000) - 5_000
    changes = [
        ("company.creation", 555, None, None),
        ("company.propertyChange", 555, "name", "Initech"),
        ("company.propertyChange", 555, "domain", "initech.com"),
        ("company.propertyChange", 555, "tier", "enterprise"),
        ("company.propertyChange", 555, "industry", "software"),
        ("company.propertyChange", 556, "name", "Acme Corp"),
        ("contact.propertyChange", 901, "email", "Bo@Acme.io"),
        ("deal.propertyChange", 12, "dealstage", "closedwon"),
    ]
    events = [
        {
            "eventId": 1000 + n,
            "subscriptionId": 1,
            "portalId": 62515,
            "appId": 4,
            "occurredAt": at + n,
            "subscriptionType": kind,
            "attemptNumber": 0,
            "objectId": object_id,
            "changeSource": "CRM",
            **({"propertyName": name, "propertyValue": value} if name else {}),
        }
        for n, (kind, object_id, name, value) in enumerate(changes)
    ]
    body = orjson.dumps(events)
    v1 = Signature.get_signature(secret, body.decode(), "v1")
    sent = await client.post(source["url"], content=body, headers={"X-HubSpot-Signature": v1})
    assert sent.status_code == 200, sent.text
    # The deal's company is not known yet: held until its association arrives.
    assert (sent.json()["accepted"], sent.json()["held"]) == (7, 1)
    created = (await client.get("/v1/accounts/hubspot-555")).json()
    assert (created["name"], created["segment"]) == ("Initech", "enterprise")
    assert created["traits"] == {"hubspot.industry": "software"}
    assert created["identities"] == [
        {"kind": "domain", "value": "initech.com"},
        {"kind": "hubspot", "value": "555"},
    ]
    assert (await client.get("/v1/accounts/acme")).json()["name"] == "Acme Corp"
    assert (await client.get("/v1/contacts/c1")).json()["email"] == "bo@acme.io"
    association = {
        "eventId": 2000,
        "occurredAt": at + 100,
        "subscriptionType": "deal.associationChange",
        "associationType": "DEAL_TO_COMPANY",
        "fromObjectId": 12,
        "toObjectId": 556,
        "associationRemoved": False,
    }
    body = orjson.dumps([association])
    v1 = Signature.get_signature(secret, body.decode(), "v1")
    sent = await client.post(source["url"], content=body, headers={"X-HubSpot-Signature": v1})
    assert sent.json()["accepted"] == 1, sent.text
    rows = await conn.fetch("SELECT account_id, kind, properties FROM outcomes")
    assert [(r[0], r[1], orjson.loads(r[2])["deal_id"]) for r in rows] == [
        ("acme", "expanded", "12")
    ]


async def test_a_hubspot_contact_is_created_by_its_association_with_a_company(
    client: httpx.AsyncClient,
) -> None:
    secret = "hubspot-client-secret"
    source = await make_source(client, "hubspot", secret)
    await client.put("/v1/accounts/acme", json={"identities": [{"kind": "hubspot", "value": "7"}]})
    known = {
        "account_id": "acme",
        "identities": [{"kind": "hubspot", "value": "901"}],
        "observed_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
    }
    await client.put("/v1/contacts/c1", json=known)
    at = int(time.time() * 1000) - 5_000

    def association(n: int, contact: int, company: int) -> dict[str, Any]:
        return {
            "eventId": 3000 + n,
            "occurredAt": at + n,
            "subscriptionType": "contact.associationChange",
            "associationType": "CONTACT_TO_COMPANY",
            "fromObjectId": contact,
            "toObjectId": company,
            "associationRemoved": False,
        }

    events = [
        # What HubSpot sends when a contact is created: its id and nothing else.
        {
            "eventId": 2999,
            "occurredAt": at,
            "subscriptionType": "contact.creation",
            "objectId": 902,
        },
        association(1, 902, 7),
        {
            "eventId": 3002,
            "occurredAt": at + 2,
            "subscriptionType": "contact.propertyChange",
            "objectId": 902,
            "propertyName": "email",
            "propertyValue": "Al@Acme.io",
        },
        association(3, 901, 8),  # a contact known already moves to a company new to custintel
    ]
    body = orjson.dumps(events)
    v1 = Signature.get_signature(secret, body.decode(), "v1")
    sent = await client.post(source["url"], content=body, headers={"X-HubSpot-Signature": v1})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["accepted"], sent.json()["ignored"]) == (3, 1), sent.text
    created = (await client.get("/v1/contacts/hubspot-902")).json()
    assert (created["account_id"], created["email"]) == ("acme", "al@acme.io")
    assert created["identities"] == [
        {"kind": "email", "value": "al@acme.io"},
        {"kind": "hubspot", "value": "902"},
    ]
    moved = (await client.get("/v1/contacts/c1")).json()
    assert moved["account_id"] == "hubspot-8"
    assert (await client.get("/v1/accounts/hubspot-8")).status_code == 200


async def test_zendesk_trigger_bodies_find_the_requester_by_email(
    client: httpx.AsyncClient,
) -> None:
    # The body a Zendesk trigger sends with the placeholders the README gives; a hash of the
    # signed body is the delivery's id (the invocation id is signed by nothing).
    secret = "zendesk-signing-secret"
    source = await make_source(client, "zendesk", secret)
    await client.put("/v1/contacts/c1", json={"account_id": "acme", "email": "bo@acme.io"})
    ticket = {
        "ticket_id": "812",
        "subject": "Invoice wrong",
        "description": "We were billed twice.",
        "status": "Open",
        "requester_email": "Bo@Acme.io",
        "organization_id": "",
    }
    bodies = [
        {"custintel": "ticket_created", **ticket},
        {
            "custintel": "ticket_rated",
            **ticket,
            "satisfaction": "Bad",
            "satisfaction_comment": "Slow",
        },
        {"custintel": "ticket_rated", **ticket, "satisfaction": "meh"},
    ]
    answers = []
    for n, payload in enumerate(bodies):
        body = orjson.dumps(payload)
        headers = {
            **_zendesk(body, secret, datetime.now(UTC)),
            "X-Zendesk-Webhook-Invocation-Id": f"inv-{n}",
        }
        sent = await client.post(source["url"], content=body, headers=headers)
        assert sent.status_code == 200, sent.text
        answers.append((sent.json()["accepted"], sent.json()["rejected"]))
    assert answers == [(1, 0), (1, 0), (0, 1)]
    # A captured delivery replayed with new invocation ids is one delivery.
    body = orjson.dumps(bodies[0])
    for n in range(3):
        headers = {
            **_zendesk(body, secret, datetime.now(UTC)),
            "X-Zendesk-Webhook-Invocation-Id": f"replayed-{n}",
        }
        again = await client.post(source["url"], content=body, headers=headers)
        assert again.json()["duplicates"] == 1, again.text
    events = (await client.get("/v1/accounts/acme/events")).json()["items"]
    assert sorted((e["type"], e["value"], e["text"], e["contact_id"]) for e in events) == [
        ("csat_answered", 1.0, "Slow", "c1"),
        ("ticket_opened", None, "Invoice wrong\n\nWe were billed twice.", "c1"),
    ]


async def test_a_stripe_cancellation_keeps_why_and_the_outcomes_read_back(
    client: httpx.AsyncClient,
) -> None:
    source = await make_source(client)
    cancelled = {
        **subscription(5000),
        "cancellation_details": {
            "reason": "cancellation_requested",
            "feedback": "too_expensive",
            "comment": "Budget cut for next year",
        },
    }
    ended = stripe_event("customer.subscription.deleted", cancelled)
    assert (await deliver_stripe(client, source, ended)).json()["accepted"] == 1
    [outcome] = (await client.get("/v1/accounts/acme/outcomes")).json()
    assert (outcome["kind"], outcome["amount"]) == ("churned", 50.0)
    assert outcome["properties"]["cancellation_reason"] == "cancellation_requested"
    assert outcome["properties"]["cancellation_feedback"] == "too_expensive"
    assert outcome["properties"]["cancellation_comment"] == "Budget cut for next year"
    filtered = await client.get("/v1/accounts/acme/outcomes", params={"kind": "renewed"})
    assert filtered.json() == []
    assert (await client.get("/v1/accounts/nobody/outcomes")).status_code == 404
    # A timestamp no calendar holds refuses that event, never a 500 or a false 503.
    far = {**subscription(100), "id": "sub_far", "ended_at": 10**14}
    answer = await deliver_stripe(
        client, source, stripe_event("customer.subscription.deleted", far)
    )
    assert answer.status_code == 200 and answer.json()["rejected"] == 1, answer.text
    body = orjson.dumps(stripe_event("invoice.paid", invoice(metadata={"account_id": "acme"})))
    signed_far = {"Stripe-Signature": stripe_header(body, at=10**20)}
    refused = await client.post(source["url"], content=body, headers=signed_far)
    assert refused.status_code == 401, refused.text


async def test_a_hubspot_company_whose_domain_an_account_holds_is_that_account(
    client: httpx.AsyncClient,
) -> None:
    secret = "hubspot-client-secret"
    source = await make_source(client, "hubspot", secret)
    held = {"identities": [{"kind": "domain", "value": "globex.com"}], "plan": "pro"}
    assert (await client.put("/v1/accounts/globex", json=held)).status_code == 200
    assert (
        await client.put(
            "/v1/accounts/umbrella",
            json={**held, "identities": [{"kind": "domain", "value": "umbrella.com"}]},
        )
    ).status_code == 200
    at = int(time.time() * 1000) - 5_000

    def change(n: int, kind: str, object_id: int, name: str | None, value: str | None) -> Any:
        return {
            "eventId": 5000 + n,
            "occurredAt": at + n,
            "subscriptionType": kind,
            "objectId": object_id,
            **({"propertyName": name, "propertyValue": value} if name else {}),
        }

    events = [
        # A company new to custintel whose domain an account holds: found by it.
        change(0, "company.propertyChange", 71, "domain", "Globex.com"),
        change(1, "company.propertyChange", 71, "name", "Globex Inc"),
        # One HubSpot creates first (so custintel makes hubspot-72), then names its domain.
        change(2, "company.creation", 72, None, None),
        change(3, "company.propertyChange", 72, "name", "Umbrella Corp"),
        change(4, "company.propertyChange", 72, "domain", "umbrella.com"),
    ]
    body = orjson.dumps(events)
    v1 = Signature.get_signature(secret, body.decode(), "v1")
    sent = await client.post(source["url"], content=body, headers={"X-HubSpot-Signature": v1})
    assert sent.status_code == 200 and sent.json()["accepted"] == 5, sent.text
    globex = (await client.get("/v1/accounts/globex")).json()
    assert globex["name"] == "Globex Inc"
    assert {"kind": "hubspot", "value": "71"} in globex["identities"]
    assert (await client.get("/v1/accounts/hubspot-71")).status_code == 404
    umbrella = (await client.get("/v1/accounts/umbrella")).json()
    assert umbrella["name"] == "Umbrella Corp" and umbrella["plan"] == "pro"
    assert {"kind": "hubspot", "value": "72"} in umbrella["identities"]
    # The account made for want of it now resolves to the one that holds the domain.
    assert (await client.get("/v1/accounts/hubspot-72")).json()["account_id"] == "umbrella"
