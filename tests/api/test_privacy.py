"""Erasure of a person and of an account, leaving nothing of them in any column; the
suppression that keeps them out afterwards, and its lifting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from app.activation import insights, schedules
from app.governance import privacy, retention
from app.platform import db, jobs, partitions
from app.platform.settings import Settings
from app.voc import enrich, sentiment
from tests.conftest import ADMIN_KEY
from tests.fixtures.http import basic
from tests.fixtures.scores import new_scores, score
from tests.fixtures.senders import deliver_stripe, invoice, make_source, stripe_event
from tests.fixtures.uplift import ranked_fit

# Unique strings that mark the subject: its ids, its email, its words. After an erasure none of
# them may be anywhere in the database.
ZEBRA = "c-zebra-q4x11"
EMAIL = "Zebra.q4x11@Example.com"
SENTENCE = "The zebra export q4x11 keeps failing for me"
COMMENT = "zebra comment q4x11: support never answered"


async def scan(conn: asyncpg.Connection, needle: str) -> list[str]:
    """Every table.column holding `needle` (case-insensitive) in a text, varchar, jsonb, array
    or bytea column."""
    columns = await conn.fetch(
        """
        SELECT c.table_name, c.column_name FROM information_schema.columns c
        JOIN information_schema.tables t USING (table_schema, table_name)
        WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
          AND (c.data_type IN ('text', 'character varying', 'jsonb', 'bytea', 'ARRAY'))
        """
    )
    found = []
    for table, column in columns:
        holds = await conn.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE $1',
            f"%{needle}%",
        )
        if holds:
            found.append(f"{table}.{column}")
    return found


async def run_jobs(settings: Settings) -> None:
    pool = await db.create_pool(str(settings.database_url), settings)
    try:
        while await jobs.run_one(pool, schedules.handlers(settings)):
            pass
    finally:
        await pool.close()


async def world(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> dict[str, Any]:
    """An account with the subject and another person: profiles, identities, tickets, an NPS
    comment that raised a routed insight, a Stripe delivery naming the subject's email, and
    the other person's ticket quoting the subject's email."""
    now = datetime.now(UTC)
    ok = await client.put("/v1/accounts/acct-zq", json={"segment": "smb", "owner_email": "o@v.io"})
    assert ok.status_code == 200
    subject = {
        "account_id": "acct-zq",
        "email": EMAIL,
        "name": "Zebra Person",
        "identities": [{"kind": "user_id", "value": "u-zebra-q4x11"}],
    }
    assert (await client.put(f"/v1/contacts/{ZEBRA}", json=subject)).status_code == 200
    other = {"account_id": "acct-zq", "email": "other@example.org"}
    assert (await client.put("/v1/contacts/c-other", json=other)).status_code == 200
    events = [
        {
            "event_id": "zebra-ticket-1",
            "type": "ticket_opened",
            "contact_id": ZEBRA,
            "account_id": "acct-zq",
            "occurred_at": (now - timedelta(days=2)).isoformat(),
            "text": SENTENCE,
        },
        {
            "event_id": "zebra-login",
            "type": "login",
            "email": EMAIL,
            "occurred_at": (now - timedelta(days=1)).isoformat(),
        },
        {
            "event_id": "other-ticket",
            "type": "ticket_opened",
            "contact_id": "c-other",
            "account_id": "acct-zq",
            "occurred_at": (now - timedelta(days=1)).isoformat(),
            "text": f"Please copy {EMAIL.lower()} on this",
        },
        {
            "event_id": "other-login",
            "type": "login",
            "contact_id": "c-other",
            "account_id": "acct-zq",
            "occurred_at": now.isoformat(),
        },
    ]
    batch = await client.post("/v1/events/batch", json={"events": events})
    assert batch.json()["accepted"] == len(events), batch.text
    # A detractor comment while the account's churn risk is high: an insight routed to a
    # destination carries the comment.
    app.state.runtime.settings = settings.model_copy(update={"allow_private_destinations": True})
    destination = await client.post(
        "/v1/destinations", json={"name": "crm", "url": "http://127.0.0.1:9/hook"}
    )
    assert destination.status_code == 201, destination.text
    rule = {"name": "all", "destination_ids": [destination.json()["destination_id"]]}
    assert (await client.post("/v1/routing-rules", json=rule)).status_code == 201
    await new_scores(conn, settings, [score("acct-zq", now - timedelta(days=3), 0.7, "high")])
    nps = {
        "event_id": "zebra-nps",
        "type": "nps_answered",
        "contact_id": ZEBRA,
        "account_id": "acct-zq",
        "value": 2,
        "text": COMMENT,
        "occurred_at": now.isoformat(),
    }
    assert (await client.post("/v1/events", json=nps)).status_code == 202
    assert await insights.from_detractors(conn, settings) == 1
    await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=100)
    # A Stripe invoice naming the account and the subject's email.
    source = await make_source(client)
    paid = stripe_event(
        "invoice.paid",
        invoice(customer="cus_Q1", customer_email=EMAIL, metadata={"account_id": "acct-zq"}),
    )
    assert (await deliver_stripe(client, source, paid)).json()["accepted"] == 1
    for needle in ("zebra", EMAIL):
        assert await scan(conn, needle), needle  # the world really holds them
    return {"source": source, "paid": paid}


async def erase(client: httpx.AsyncClient, settings: Settings, **subject: str) -> dict[str, Any]:
    asked = await client.post("/v1/privacy/erasures", json=subject)
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "queued"
    await run_jobs(settings)
    done = await client.get(f"/v1/privacy/erasures/{asked.json()['erasure_id']}")
    assert done.status_code == 200
    body: dict[str, Any] = done.json()
    assert body["status"] == "succeeded", body
    return body


async def test_erasing_a_person_leaves_nothing_of_them_and_keeps_them_out(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    made = await world(client, conn, settings, app)
    done = await erase(client, settings, email=EMAIL)

    removed = done["removed"]
    assert removed["events"] == 3 and removed["contacts"] == 1 and removed["insights"] == 1
    assert removed["events_redacted"] == 1  # the other person's ticket quoting the email
    assert done["suppressed"] >= 3  # the contact id, the email, the user id
    # "q4x11" holds letters no hexadecimal hash or id has: the subject's own hash must not match
    for needle in ("zebra", EMAIL, "q4x11"):
        assert await scan(conn, needle) == [], needle
    # The audit names the subject by its hash alone.
    trail = [
        r
        for r in await conn.fetch("SELECT action, target FROM audit_log")
        if r["action"].startswith("privacy.")
    ]
    assert {r["action"] for r in trail} == {"privacy.erasure_requested", "privacy.erased"}
    assert {r["target"] for r in trail} == {done["subject"]}
    # The other person, the account and its other signals are still there.
    kept = (await client.get("/v1/accounts/acct-zq/events")).json()["items"]
    # (and the account's Stripe invoice, which named the email only in its payload)
    assert {e["event_id"] for e in kept} - {"other-ticket", "other-login"} == {
        f"stripe-{made['paid']['id']}"
    }
    [quoted] = [e for e in kept if e["event_id"] == "other-ticket"]
    assert quoted["text"].startswith("Please copy [erased ") and quoted["text"].endswith(" on this")
    assert (await client.get(f"/v1/contacts/{ZEBRA}")).status_code == 404

    # Later signals naming the subject are acknowledged and not stored.
    later = {"type": "login", "email": EMAIL.upper(), "occurred_at": datetime.now(UTC).isoformat()}
    single = await client.post("/v1/events", json=later)
    assert single.status_code == 202 and single.json()["suppressed"] is True
    batch = await client.post(
        "/v1/events/batch",
        json={
            "events": [
                {**later, "event_id": "z2"},
                {**later, "contact_id": ZEBRA, "account_id": "acct-zq", "email": None},
            ]
        },
    )
    assert (batch.json()["accepted"], batch.json()["suppressed"]) == (0, 2), batch.text
    again = await client.put(f"/v1/contacts/{ZEBRA}", json={"account_id": "acct-zq"})
    assert again.status_code == 202 and again.json() == {"profile_id": ZEBRA, "suppressed": True}
    stripe_again = stripe_event(
        "invoice.paid",
        invoice(
            id="in_2", customer="cus_Q1", customer_email=EMAIL, metadata={"account_id": "acct-zq"}
        ),
    )
    hooked = await deliver_stripe(client, made["source"], stripe_again)
    assert hooked.status_code == 200 and hooked.json()["suppressed"] == 1
    for needle in ("zebra", EMAIL):
        assert await scan(conn, needle) == [], needle

    # Lifting the suppression of the email lets it in again (audited).
    [entry] = (await client.get("/v1/privacy/suppressions", params={"email": EMAIL})).json()
    assert entry["hash"] != EMAIL and entry["kind"] == "email"
    assert (await client.delete(f"/v1/privacy/suppressions/{entry['hash']}")).status_code == 204
    assert (
        await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE action = 'privacy.suppression_lifted'"
        )
        == 1
    )
    back = {**later, "account_id": "acct-zq"}
    assert (await client.post("/v1/events", json=back)).json().get("suppressed") is not True
    assert await scan(conn, EMAIL.lower())


async def test_erasing_an_account_removes_it_its_people_and_its_scores(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    await world(client, conn, settings, app)
    outcome = {
        "account_id": "acct-zq",
        "kind": "churned",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    assert (await client.post("/v1/outcomes", json=outcome)).status_code == 202
    await ranked_fit(conn, {"acct-zq": 0.1})  # its expected uplift, as a fit ranked it
    done = await erase(client, settings, account_id="acct-zq")
    removed = done["removed"]
    assert removed["accounts"] == 1 and removed["contacts"] == 2
    assert removed["outcomes"] == 1 and removed["scores"] == 1
    assert removed["uplift_scores"] == 1
    for needle in ("acct-zq", "zebra", EMAIL, "other@example.org", "q4x11"):
        assert await scan(conn, needle) == [], needle
    assert (await client.get("/v1/accounts/acct-zq")).status_code == 404
    refused = await client.post("/v1/outcomes", json=outcome)
    assert refused.status_code == 202 and refused.json().get("suppressed") is True


async def test_an_erasure_names_exactly_one_subject_and_needs_the_privacy_scope(
    client: httpx.AsyncClient, make_key: Any
) -> None:
    two = await client.post("/v1/privacy/erasures", json={"email": EMAIL, "contact_id": ZEBRA})
    assert two.status_code == 422
    none = await client.post("/v1/privacy/erasures", json={})
    assert none.status_code == 422
    reader = await make_key("read")
    refused = await client.post(
        "/v1/privacy/erasures", json={"email": EMAIL}, headers={"Authorization": f"Bearer {reader}"}
    )
    assert refused.status_code == 403
    privacy_key = await make_key("privacy")
    allowed = await client.post(
        "/v1/privacy/erasures",
        json={"email": EMAIL},
        headers={"Authorization": f"Bearer {privacy_key}"},
    )
    assert allowed.status_code == 202
    assert (await client.get("/v1/privacy/erasures/nope")).status_code == 404


async def test_an_export_holds_everything_sent_about_a_person_or_an_account(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    await world(client, conn, settings, app)
    outcome = {
        "account_id": "acct-zq",
        "kind": "renewed",
        "occurred_at": datetime.now(UTC).isoformat(),
    }
    assert (await client.post("/v1/outcomes", json=outcome)).status_code == 202

    person = await client.get("/v1/privacy/exports", params={"email": EMAIL.upper()})
    assert person.status_code == 200 and person.headers["content-type"] == "application/json"
    document = person.json()
    [contact] = document["contacts"]
    assert (contact["contact_id"], contact["email"], contact["name"]) == (
        ZEBRA,
        EMAIL.lower(),
        "Zebra Person",
    )
    assert contact["history"] and contact["history"][0]["changes"]["name"] == "Zebra Person"
    assert {"kind": "user_id", "value": "u-zebra-q4x11"} in contact["identities"]
    assert contact["consent"] == {}
    by_id = {e["event_id"]: e for e in document["events"]}
    assert {"zebra-ticket-1", "zebra-login", "zebra-nps"} <= set(by_id)
    assert "other-ticket" not in by_id and "other-login" not in by_id
    assert by_id["zebra-ticket-1"]["text"] == SENTENCE
    assert by_id["zebra-nps"]["text"] == COMMENT and by_id["zebra-nps"]["sentiment_label"]
    [insight] = document["insights"]
    assert insight["kind"] == "detractor" and insight["details"]["comment"] == COMMENT
    assert document["accounts"] == [] and document["scores"] == []

    account = (await client.get("/v1/privacy/exports", params={"account_id": "acct-zq"})).json()
    [profile] = account["accounts"]
    assert profile["account_id"] == "acct-zq" and profile["history"]
    assert {c["contact_id"] for c in account["contacts"]} == {ZEBRA, "c-other"}
    assert {"zebra-ticket-1", "other-ticket"} <= {e["event_id"] for e in account["events"]}
    assert [o["kind"] for o in account["outcomes"]] == ["renewed"]
    assert account["scores"][0]["reasons"][0]["feature"] == "tickets_open"

    assert (
        await client.get("/v1/privacy/exports", params={"email": "nobody@nowhere.example"})
    ).status_code == 404
    both = await client.get("/v1/privacy/exports", params={"email": EMAIL, "account_id": "a"})
    assert both.status_code == 400


async def test_retention_drops_whole_months_past_the_limit_and_nothing_newer(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    now = datetime.now(UTC)
    events = [
        {
            "event_id": "old",
            "type": "ticket_opened",
            "account_id": "a1",
            "occurred_at": (now - timedelta(days=430)).isoformat(),
            "text": "Old words",
        },
        {
            "event_id": "kept",
            "type": "ticket_opened",
            "account_id": "a1",
            "occurred_at": (now - timedelta(days=100)).isoformat(),
            "text": "Newer words",
        },
        {"event_id": "today", "type": "login", "account_id": "a1", "occurred_at": now.isoformat()},
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["accepted"] == 3
    await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=10)
    await conn.execute(
        "INSERT INTO jobs (job_id, kind, status, params, created_at, finished_at) VALUES "
        "('old-job', 'score', 'succeeded', '{}', now() - interval '200 days', "
        "now() - interval '200 days')"
    )
    for days in (200, 10):  # a held call long expired, and one still waiting
        await conn.execute(
            "INSERT INTO unresolved_signals (received_at, source, call, keys, message, reason) "
            "VALUES (now() - make_interval(days => $1), 'segment', 'track', '{user_id:x}', "
            "'{}', 'no account yet')",
            days,
        )
    for traits in ({"temp": 1, "kept": 2}, {"temp": None}):  # a trait key no one holds now
        assert (await client.put("/v1/accounts/a1", json={"traits": traits})).status_code == 200
    await conn.execute("UPDATE trait_keys SET created_at = now() - interval '2 days'")
    keep = settings.model_copy(update={"event_retention_days": 365})
    done = await retention.apply(conn, keep)
    assert done["trait_keys"] == 1
    assert {r[0] for r in await conn.fetch("SELECT key FROM trait_keys")} == {"kept"}
    old_month = partitions.partition_name(partitions.month_of(now - timedelta(days=430)))
    assert done["event_partitions"] == [old_month]
    assert done["jobs"] == 1
    assert done["unresolved_signals"] == 1
    assert await conn.fetchval("SELECT count(*) FROM unresolved_signals") == 1
    left = {r[0] for r in await conn.fetch("SELECT event_id FROM events")}
    assert left == {"kept", "today"}
    assert await conn.fetchval("SELECT count(*) FROM text_enrichments") == 1
    assert await conn.fetchval("SELECT count(*) FROM event_keys WHERE event_id = 'old'") == 0
    assert await conn.fetchval("SELECT to_regclass($1)", old_month) is None
    # The month dropped was rolled up first: lifetime features still count its ticket.
    lifetime = await conn.fetchval(
        "SELECT sum(events) FROM event_rollups WHERE account_id = 'a1' AND type = 'ticket_opened'"
    )
    assert lifetime == 1
    # Applying again changes nothing.
    assert (await retention.apply(conn, keep))["event_partitions"] == []

    # What is kept, and the oldest of each kind.
    app.state.runtime.settings = keep
    shown = (await client.get("/v1/privacy/retention")).json()
    assert shown["settings"]["event_retention_days"] == 365
    assert shown["oldest"]["event"][:10] == (now - timedelta(days=100)).date().isoformat()
    assert shown["last_applied"] is not None
    # An event older than the retention is refused, clearly, rather than stored and dropped.
    app.state.runtime.partitions.retention_days = 365
    stale = {**events[0], "event_id": "stale"}
    refused = await client.post("/v1/events", json=stale)
    assert refused.status_code == 422 and "CUSTINTEL_EVENT_RETENTION_DAYS" in refused.text


async def test_consent_by_category_keeps_history_and_gates_a_persons_signals(
    client: httpx.AsyncClient, settings: Settings, app: Any
) -> None:
    base = {"account_id": "acme", "observed_at": "2026-01-01T00:00:00Z"}
    given = {**base, "consent": {"analytics": True, "marketing": False}}
    assert (await client.put("/v1/contacts/c1", json=given)).status_code == 200
    later = {**base, "consent": {"marketing": True}, "observed_at": "2026-02-01T00:00:00Z"}
    now = (await client.put("/v1/contacts/c1", json=later)).json()
    assert now["consent"] == {"analytics": True, "marketing": True}  # merged by category
    then = await client.get("/v1/contacts/c1", params={"as_of": "2026-01-15T00:00:00Z"})
    assert then.json()["consent"] == {"analytics": True, "marketing": False}  # its history
    assert (await client.put("/v1/contacts/c2", json=base)).status_code == 200
    # Segment's consent preferences on identify set it too.
    segment = await client.post(
        "/segment/v1/identify",
        headers=basic(ADMIN_KEY),
        json={
            "userId": "c3",
            "traits": {"email": "c3@acme.io"},
            "context": {
                "groupId": "acme",
                "consent": {"categoryPreferences": {"analytics": True, "ads": False}},
            },
        },
    )
    assert segment.status_code == 200, segment.text
    c3 = (await client.get("/v1/contacts/c3")).json()
    assert c3["consent"] == {"analytics": True, "ads": False}

    required = settings.model_copy(update={"consent_required": ["analytics"]})
    app.state.runtime.settings = required
    app.state.runtime.screen = privacy.Screen(required)
    at = datetime.now(UTC).isoformat()
    events = [
        {
            "event_id": "e1",
            "type": "login",
            "contact_id": "c1",
            "account_id": "acme",
            "occurred_at": at,
        },
        {
            "event_id": "e2",
            "type": "login",
            "contact_id": "c2",
            "account_id": "acme",
            "occurred_at": at,
        },
        {
            "event_id": "e3",
            "type": "login",
            "contact_id": "c9",
            "account_id": "acme",
            "occurred_at": at,
        },
        {"event_id": "e4", "type": "invoice_paid", "account_id": "acme", "occurred_at": at},
    ]
    answer = (await client.post("/v1/events/batch", json={"events": events})).json()
    assert (answer["accepted"], answer["suppressed"]) == (2, 2), answer
    kept = (await client.get("/v1/accounts/acme/events")).json()["items"]
    assert {e["event_id"] for e in kept} == {"e1", "e4"}


async def test_segment_calls_carry_consent_the_profile_keeps_and_each_call_obeys(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    required = settings.model_copy(update={"consent_required": ["analytics"]})
    app.state.runtime.settings = required
    app.state.runtime.screen = privacy.Screen(required)
    assert (await client.put("/v1/accounts/acme", json={"segment": "smb"})).status_code == 200
    at = datetime.now(UTC)

    def track(message: str, seconds: int, preferences: dict[str, bool] | None) -> dict[str, Any]:
        context: dict[str, Any] = {"groupId": "acme"}
        if preferences is not None:
            context["consent"] = {"categoryPreferences": preferences}
        return {
            "type": "track",
            "event": "Report Exported",
            "userId": "u-1",
            "messageId": message,
            "timestamp": (at + timedelta(seconds=seconds)).isoformat(),
            "context": context,
        }

    async def send(*calls: dict[str, Any]) -> dict[str, Any]:
        answer = await client.post(
            "/segment/v1/batch", headers=basic(ADMIN_KEY), json={"batch": list(calls)}
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    # No consent known for u-1: suppressed; a call that grants it is stored, and the profile
    # keeps what it said.
    assert (await send(track("m1", 0, None)))["suppressed"] == 1
    assert (await send(track("m2", 1, {"analytics": True, "ads": False})))["accepted"] == 1
    contact = (await client.get("/v1/contacts/u-1")).json()
    assert contact["consent"] == {"analytics": True, "ads": False}
    # Consent on the profile lets calls without a consent object in.
    assert (await send(track("m3", 2, None)))["accepted"] == 1
    # Segment's preference update withdraws it: that call and later ones are suppressed.
    withdrawn = track("m4", 3, {"analytics": False})
    withdrawn["event"] = "Segment Consent Preference Updated"
    assert (await send(withdrawn))["suppressed"] == 1
    assert (await send(track("m5", 4, None)))["suppressed"] == 1
    contact = (await client.get("/v1/contacts/u-1")).json()
    assert contact["consent"] == {"analytics": False, "ads": False}
    changes = await conn.fetch(
        "SELECT changes FROM contact_history WHERE contact_id = 'u-1' ORDER BY observed_at"
    )
    assert len(changes) == 2  # a call repeating consent changed nothing
    then = (at + timedelta(seconds=2.5)).isoformat()
    before = (await client.get("/v1/contacts/u-1", params={"as_of": then})).json()
    assert before["consent"] == {"analytics": True, "ads": False}  # with its history
    kept = (await client.get("/v1/accounts/acme/events")).json()["items"]
    assert sorted(e["event_id"] for e in kept) == ["m2", "m3"]


async def test_a_destination_requiring_consent_gets_only_insights_on_people_who_gave_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    app.state.runtime.settings = settings.model_copy(update={"allow_private_destinations": True})
    made = []
    for name, category in (("crm", None), ("marketing-tool", "marketing")):
        body = {"name": name, "url": "http://127.0.0.1:9/hook", "consent_category": category}
        answer = await client.post("/v1/destinations", json=body)
        assert answer.status_code == 201, answer.text
        assert answer.json()["consent_category"] == category
        made.append(answer.json()["destination_id"])
    crm, marketing = made
    rule = {"name": "all", "destination_ids": [crm, marketing]}
    assert (await client.post("/v1/routing-rules", json=rule)).status_code == 201
    now = datetime.now(UTC)
    for account, consent in (("yes-co", {"marketing": True}), ("no-co", {"marketing": False})):
        await client.put(f"/v1/accounts/{account}", json={"segment": "smb"})
        person: dict[str, Any] = {"account_id": account, "consent": consent}
        assert (await client.put(f"/v1/contacts/p-{account}", json=person)).status_code == 200
        await new_scores(conn, settings, [score(account, now - timedelta(days=1), 0.7, "high")])
    await conn.execute("DELETE FROM deliveries")  # the scores' own insights name no person
    events = [
        {
            "event_id": f"nps-{account}",
            "type": "nps_answered",
            "contact_id": f"p-{account}",
            "account_id": account,
            "value": 1,
            "text": "Support never answered",
            "occurred_at": now.isoformat(),
        }
        for account in ("yes-co", "no-co")
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["errors"] == []
    assert await insights.from_detractors(conn, settings) == 2

    sent = await conn.fetch(
        "SELECT i.account_id, d.destination_id FROM deliveries d JOIN insights i USING "
        "(insight_id) WHERE i.kind = 'detractor'"
    )
    assert sorted((r[0], r[1]) for r in sent) == sorted(
        [("yes-co", crm), ("yes-co", marketing), ("no-co", crm)]
    )
    listed = (await client.get("/v1/insights", params={"kind": "detractor"})).json()
    decisions = {i["account_id"]: i["decision"]["rules"][0] for i in listed}
    assert decisions["no-co"]["withheld"] == {marketing: "consent: marketing"}
    assert decisions["no-co"]["destination_ids"] == [crm]
    assert decisions["yes-co"]["withheld"] == {}
    # The requirement can be lifted (null) and read back.
    patched = await client.patch(f"/v1/destinations/{marketing}", json={"consent_category": None})
    assert patched.json()["consent_category"] is None
    renamed = await client.patch(f"/v1/destinations/{crm}", json={"name": "crm 2"})
    assert renamed.json()["consent_category"] is None


async def test_an_erasure_follows_a_person_to_every_account_and_every_field(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    app: Any,
    make_key: Any,
) -> None:
    # The subject's events sent to an account they were never linked to (through REST and
    # Segment), another person's ticket there quoting them, an event carrying their email,
    # and their email as an account's owner, in another contact's traits and in a rule.
    await world(client, conn, settings, app)
    now = datetime.now(UTC)
    far = {"segment": "smb", "owner_email": EMAIL, "traits": {"champion": EMAIL}}
    assert (await client.put("/v1/accounts/acct-far", json=far)).status_code == 200
    colleague = {"account_id": "acct-far", "email": "c@far.io", "traits": {"manager": EMAIL}}
    assert (await client.put("/v1/contacts/c-far", json=colleague)).status_code == 200
    rule = {"name": "theirs", "destination_ids": [], "owner": EMAIL.lower()}
    assert (await client.post("/v1/routing-rules", json=rule)).status_code == 201, "rule"
    sent = [
        {
            "event_id": "zebra-far-1",
            "type": "ticket_opened",
            "contact_id": ZEBRA,
            "account_id": "acct-far",
            "occurred_at": (now - timedelta(hours=5)).isoformat(),
            "text": "zebra writes from far away",
            "properties": {"browser": "zebra-browser"},
        },
        {
            "event_id": "far-by-email",
            "type": "login",
            "email": EMAIL,
            "account_id": "acct-far",
            "occurred_at": (now - timedelta(hours=4)).isoformat(),
        },
        {
            "event_id": "far-quote",
            "type": "ticket_opened",
            "contact_id": "c-far",
            "account_id": "acct-far",
            "occurred_at": (now - timedelta(hours=3)).isoformat(),
            "text": f"Ask {EMAIL} about it",
            "properties": {"cc": EMAIL.upper()},
        },
    ]
    assert (await client.post("/v1/events/batch", json={"events": sent})).json()["accepted"] == 3
    track = {
        "userId": ZEBRA,
        "event": "Zebra Report Exported",
        "messageId": "zebra-seg-1",
        "properties": {"note": "zebra q4x11 from segment"},
        "context": {"groupId": "acct-far"},
        "timestamp": (now - timedelta(hours=2)).isoformat(),
    }
    key = await make_key("ingest", name="segment")
    tracked = await client.post("/segment/v1/track", headers=basic(key), json=track)
    assert tracked.json()["accepted"] == 1, tracked.text
    at_far = {
        e["event_id"] for e in (await client.get("/v1/accounts/acct-far/events")).json()["items"]
    }
    assert {"zebra-far-1", "far-by-email", "far-quote", "zebra-seg-1"} <= at_far

    # The export finds the person's events wherever they were sent, and not the colleague's.
    exported = (await client.get("/v1/privacy/exports", params={"contact_id": ZEBRA})).json()
    mine = {e["event_id"] for e in exported["events"]}
    assert {"zebra-far-1", "far-by-email", "zebra-seg-1", "zebra-ticket-1"} <= mine
    assert "far-quote" not in mine

    done = await erase(client, settings, contact_id=ZEBRA)
    # "q4x11" holds letters no hexadecimal hash or id has: the subject's own hash must not match
    for needle in ("zebra", EMAIL, "q4x11"):
        assert await scan(conn, needle) == [], needle
    kept = (await client.get("/v1/accounts/acct-far/events")).json()["items"]
    assert {e["event_id"] for e in kept} == {"far-quote"}
    assert kept[0]["text"].startswith("Ask [erased ")
    far_now = (await client.get("/v1/accounts/acct-far")).json()
    assert far_now["owner_email"] is None and far_now["segment"] == "smb"
    assert (await client.get("/v1/contacts/c-far")).json()["email"] == "c@far.io"
    assert done["removed"]["events"] >= 6

    # Afterwards the email is kept out whichever field it comes back in.
    later = now.isoformat()
    back = [
        {"type": "note", "account_id": "acct-far", "occurred_at": later, "text": f"hi {EMAIL}"},
        {"type": "x", "account_id": "acct-far", "occurred_at": later, "properties": {"e": EMAIL}},
    ]
    batch = (await client.post("/v1/events/batch", json={"events": back})).json()
    assert (batch["accepted"], batch["suppressed"]) == (0, 2), batch
    trait = await client.put(
        "/v1/contacts/c-far", json={"account_id": "acct-far", "traits": {"boss": EMAIL}}
    )
    assert trait.status_code == 202 and trait.json()["suppressed"] is True
    owner = await client.put("/v1/accounts/acct-far", json={"owner_email": EMAIL})
    assert owner.status_code == 202 and owner.json()["suppressed"] is True
    outcome = {
        "account_id": "acct-far",
        "kind": "renewed",
        "occurred_at": later,
        "properties": {"signed_by": EMAIL},
    }
    assert (await client.post("/v1/outcomes", json=outcome)).json().get("suppressed") is True
    again = {**track, "userId": "someone-else", "messageId": "m-far-2"}
    again["properties"] = {"invited": EMAIL}
    seg = (await client.post("/segment/v1/track", headers=basic(key), json=again)).json()
    assert (seg["accepted"], seg.get("suppressed")) == (0, 1), seg
    assert await scan(conn, EMAIL) == []


async def test_erasing_an_account_spares_a_former_contact_who_moved_elsewhere(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    await world(client, conn, settings, app)
    moved = {"account_id": "acct-new", "email": "other@example.org"}
    assert (await client.put("/v1/contacts/c-other", json=moved)).status_code == 200
    done = await erase(client, settings, account_id="acct-zq")
    assert done["removed"]["contacts"] == 1  # the subject, not the one who moved
    kept = (await client.get("/v1/contacts/c-other")).json()
    assert (kept["account_id"], kept["email"]) == ("acct-new", "other@example.org")
    # ... and is not suppressed: their later upserts are stored.
    assert (await client.put("/v1/contacts/c-other", json=moved)).status_code == 200
    for needle in ("acct-zq", "zebra", EMAIL):
        assert await scan(conn, needle) == [], needle
    # What was sent about the erased account went with it, theirs included.
    assert await conn.fetchval("SELECT count(*) FROM events WHERE contact_id = 'c-other'") == 0


async def test_segment_calls_naming_an_erased_person_are_neither_stored_nor_held(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    app: Any,
    make_key: Any,
) -> None:
    await world(client, conn, settings, app)
    h = basic(await make_key("ingest", name="segment"))
    at = datetime.now(UTC).isoformat()
    # Held before the erasure: an unknown user's track whose properties name the subject.
    early = {"userId": "u-stranger", "event": "Shared", "properties": {"with": EMAIL}}
    held = await client.post("/segment/v1/track", headers=h, json={**early, "timestamp": at})
    assert held.json()["unresolved"] == 1
    await erase(client, settings, email=EMAIL)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("identify", {"userId": "u-new-z", "traits": {"email": EMAIL}}),
        (
            "identify",
            {"userId": "u-new-z", "traits": {"email": EMAIL}, "context": {"groupId": "acct-zq"}},
        ),
        ("track", {"userId": "u-zebra-q4x11", "event": "Login"}),
        ("track", {"userId": ZEBRA, "event": "Login", "context": {"groupId": "acct-zq"}}),
        ("group", {"userId": ZEBRA, "groupId": "acct-zq"}),
    ]
    for call, body in calls:
        answer = await client.post(f"/segment/v1/{call}", headers=h, json={**body, "timestamp": at})
        assert answer.status_code == 200, answer.text
        counts = answer.json()
        assert (counts["accepted"], counts["unresolved"], counts["suppressed"]) == (0, 0, 1), (
            call,
            counts,
        )
    # The stranger arrives: what was held for them names the erased email, so it is forgotten.
    group = {"userId": "u-stranger", "groupId": "acct-zq", "timestamp": at}
    assert (await client.post("/segment/v1/group", headers=h, json=group)).json()["accepted"] == 1
    assert (await client.get("/v1/unresolved")).json()["items"] == []
    for needle in (EMAIL, "zebra"):
        assert await scan(conn, needle) == [], needle
