"""Merges of contacts and of accounts: what moves, how history folds, and how the merged id keeps
resolving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from app.ml import rollups

NOW = datetime.now(UTC).replace(microsecond=0)


def _at(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


async def _events(client: httpx.AsyncClient, *events: dict[str, Any]) -> None:
    sent = await client.post("/v1/events/batch", json={"events": list(events)})
    assert sent.status_code == 200 and sent.json()["errors"] == [], sent.text


async def _timeline(client: httpx.AsyncClient, account_id: str) -> list[dict[str, Any]]:
    page = await client.get(f"/v1/accounts/{account_id}/events")
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def test_merging_contacts_moves_identities_history_and_events(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    old = {"account_id": "acme", "email": "bo@old.io", "name": "Bo Old", "role": "admin"}
    await client.put("/v1/contacts/c-old", json={**old, "traits": {"a": 1}, "observed_at": _at(3)})
    await client.put(
        "/v1/contacts/c-new",
        json={
            "account_id": "acme",
            "name": "Bo",
            "identities": [{"kind": "crm", "value": "003X"}],
            "observed_at": _at(1),
        },
    )
    await _events(
        client,
        {"event_id": "o1", "type": "login", "occurred_at": _at(2), "contact_id": "c-old"},
        {"event_id": "o2", "type": "login", "occurred_at": _at(2), "contact_id": "c-old"},
        {"event_id": "n1", "type": "login", "occurred_at": _at(1), "contact_id": "c-new"},
    )
    merged = await client.post("/v1/contacts/c-new/merge", json={"from": "c-old"})
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert (body["survivor_id"], body["merged_id"], body["again"]) == ("c-new", "c-old", False)
    assert body["moved"] == {"history": 1, "identities": 1, "events": 2}

    contact = (await client.get("/v1/contacts/c-new")).json()
    # Each field from the newest observation that set it, whichever contact it was sent for.
    assert (contact["name"], contact["email"], contact["role"]) == ("Bo", "bo@old.io", "admin")
    assert contact["traits"] == {"a": 1}
    assert contact["identities"] == [
        {"kind": "crm", "value": "003X"},
        {"kind": "email", "value": "bo@old.io"},
    ]
    # Older observations stay older: two days ago the person was still "Bo Old".
    then = await client.get("/v1/contacts/c-new", params={"as_of": _at(2)})
    assert then.json()["name"] == "Bo Old"
    # The merged id resolves to the survivor, for reads, upserts and late events.
    assert (await client.get("/v1/contacts/c-old")).json()["contact_id"] == "c-new"
    upsert = await client.put("/v1/contacts/c-old", json={"account_id": "acme", "role": "owner"})
    assert upsert.status_code == 200 and upsert.json()["contact_id"] == "c-new", upsert.text
    await _events(
        client,
        {"event_id": "late", "type": "login", "occurred_at": _at(0), "contact_id": "c-old"},
        {"event_id": "mail", "type": "login", "occurred_at": _at(0), "email": "BO@old.io"},
    )
    by_id = {e["event_id"]: e["contact_id"] for e in await _timeline(client, "acme")}
    assert by_id == {"o1": "c-new", "o2": "c-new", "n1": "c-new", "late": "c-new", "mail": "c-new"}
    assert await conn.fetchval("SELECT count(*) FROM contacts WHERE contact_id = 'c-old'") == 0
    audited = await client.get("/v1/audit-log")
    [entry] = [e for e in audited.json() if e["action"] == "contact.merged"]
    assert entry["target"] == "c-new"
    assert entry["details"] == {"from": "c-old", "again": False, "moved": body["moved"]}


async def test_a_merge_refuses_itself_and_unknown_ids_and_can_be_sent_again(
    client: httpx.AsyncClient,
) -> None:
    for contact_id in ("c1", "c2", "c3"):
        await client.put(f"/v1/contacts/{contact_id}", json={"account_id": "acme"})
    assert (await client.post("/v1/contacts/c1/merge", json={"from": "c1"})).status_code == 409
    unknown = await client.post("/v1/contacts/c1/merge", json={"from": "nobody"})
    assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
    assert (await client.post("/v1/contacts/nobody/merge", json={"from": "c1"})).status_code == 404
    assert (await client.post("/v1/contacts/c1/merge", json={"from": "c2"})).status_code == 200
    again = await client.post("/v1/contacts/c1/merge", json={"from": "c2"})
    assert again.status_code == 200, again.text
    assert again.json()["again"] is True and again.json()["moved"]["events"] == 0
    # c2 now names c1: merging c1 into it is merging c1 into itself.
    assert (await client.post("/v1/contacts/c2/merge", json={"from": "c1"})).status_code == 409
    taken = await client.post("/v1/contacts/c3/merge", json={"from": "c2"})
    assert taken.status_code == 409 and "'c1'" in taken.json()["detail"]
    # A survivor merged later takes its merged ids along: c2 resolves to c3 in one hop.
    assert (await client.post("/v1/contacts/c3/merge", json={"from": "c1"})).status_code == 200
    assert (await client.get("/v1/contacts/c2")).json()["contact_id"] == "c3"
    bad = await client.post("/v1/contacts/c3/merge", json={"from": "c1", "extra": 1})
    assert bad.status_code == 422


async def test_merging_accounts_moves_contacts_signals_and_history(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await client.put(
        "/v1/accounts/acme-old",
        json={
            "name": "Acme Inc",
            "plan": "basic",
            "mrr": 100,
            "identities": [{"kind": "domain", "value": "acme.io"}],
            "observed_at": _at(3),
        },
    )
    await client.put("/v1/accounts/acme", json={"name": "Acme", "observed_at": _at(1)})
    await client.put(
        "/v1/contacts/u1", json={"account_id": "acme-old", "name": "Ann", "observed_at": _at(3)}
    )
    long_ago = (NOW - timedelta(days=730)).isoformat()
    old_events = [
        {"event_id": "x1", "type": "login", "occurred_at": _at(2), "account_id": "acme-old"},
        {"event_id": "x2", "type": "login", "occurred_at": long_ago, "account_id": "acme-old"},
        {"event_id": "x3", "type": "login", "occurred_at": _at(2), "contact_id": "u1"},
    ]
    await _events(
        client,
        *old_events,
        {"event_id": "y1", "type": "login", "occurred_at": long_ago, "account_id": "acme"},
    )
    outcome = {
        "outcome_id": "r1",
        "account_id": "acme-old",
        "kind": "renewed",
        "occurred_at": _at(2),
    }
    assert (await client.post("/v1/outcomes", json=outcome)).status_code == 202
    assert await rollups.ensure(conn, until=NOW) > 0  # the month two years ago, rolled up

    merged = await client.post("/v1/accounts/acme/merge", json={"from": "acme-old"})
    assert merged.status_code == 200, merged.text
    moved = merged.json()["moved"]
    assert {k: moved[k] for k in ("history", "identities", "contacts", "events", "outcomes")} == {
        "history": 1,
        "identities": 1,
        "contacts": 1,
        "events": 3,
        "outcomes": 1,
    }
    account = (await client.get("/v1/accounts/acme")).json()
    assert (account["name"], account["plan"], account["mrr"]) == ("Acme", "basic", 100)
    assert account["identities"] == [{"kind": "domain", "value": "acme.io"}]
    assert (await client.get("/v1/accounts/acme-old")).json()["account_id"] == "acme"
    then = await client.get("/v1/accounts/acme", params={"as_of": _at(2)})
    assert then.json()["name"] == "Acme Inc"
    assert (await client.get("/v1/contacts/u1")).json()["account_id"] == "acme"
    ann = await client.get("/v1/contacts/u1", params={"as_of": _at(2)})
    assert ann.json()["account_id"] == "acme"  # its history names the survivor too
    found = await client.get("/v1/identities", params={"kind": "domain", "value": "acme.io"})
    assert found.json()["matches"][0]["account_id"] == "acme"

    # Late signals for the merged id land on the survivor; retries are still duplicates.
    await _events(
        client,
        *old_events,
        {"event_id": "x4", "type": "login", "occurred_at": _at(0), "account_id": "acme-old"},
    )
    again = await client.post("/v1/events", json=old_events[0])
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert (await client.post("/v1/outcomes", json=outcome)).json()["duplicate"] is True
    timeline = await _timeline(client, "acme-old")
    assert sorted(e["event_id"] for e in timeline) == ["x1", "x2", "x3", "x4", "y1"]
    assert {e["account_id"] for e in timeline} == {"acme"}
    keys = await conn.fetch("SELECT DISTINCT account_id FROM event_keys")
    assert [r[0] for r in keys] == ["acme"]
    assert await conn.fetchval("SELECT account_id FROM outcomes WHERE outcome_id = 'r1'") == "acme"
    # The rolled-up month holds both accounts' events under the survivor.
    rolled = await conn.fetch("SELECT account_id, events FROM event_rollups")
    assert [tuple(r) for r in rolled] == [("acme", 2)]
    assert await conn.fetchval("SELECT count(*) FROM accounts WHERE account_id = 'acme-old'") == 0
    upsert = await client.put("/v1/accounts/acme-old", json={"plan": "pro"})
    assert upsert.json()["account_id"] == "acme" and upsert.json()["plan"] == "pro"
    details = await conn.fetchval(
        "SELECT details FROM audit_log WHERE action = 'account.merged' AND target = 'acme'"
    )
    assert orjson.loads(details)["moved"] == moved


async def test_crossing_merges_at_once_end_in_answers_never_a_500(
    client: httpx.AsyncClient,
) -> None:
    import asyncio

    now = datetime.now(UTC)
    pairs = [(f"cross-{n}", f"cross-{n + 1}") for n in range(0, 12, 2)]
    for a, b in pairs:
        for account in (a, b):
            assert (await client.put(f"/v1/accounts/{account}", json={"plan": "p"})).is_success
            contact = {"account_id": account, "email": f"{account}@x.io"}
            assert (await client.put(f"/v1/contacts/c-{account}", json=contact)).is_success
            event = {"type": "login", "account_id": account, "occurred_at": now.isoformat()}
            assert (await client.post("/v1/events", json=event)).status_code == 202
    # Each pair merged both ways at once, several times over.
    calls = [
        client.post(f"/v1/accounts/{into}/merge", json={"from": away})
        for a, b in pairs
        for into, away in ((a, b), (b, a), (a, b), (b, a))
    ]
    answers = await asyncio.gather(*calls)
    assert {r.status_code for r in answers} <= {200, 404, 409}, [r.text for r in answers]
    for a, b in pairs:  # each pair ended as one account, whichever won
        alive = [(await client.get(f"/v1/accounts/{x}")).json()["account_id"] for x in (a, b)]
        assert alive[0] == alive[1]


async def test_events_that_reached_the_merged_id_while_it_merged_are_caught_up(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Any
) -> None:
    from app.activation import schedules
    from app.people import merges
    from app.platform import db, jobs

    now = datetime.now(UTC)
    for account in ("late-a", "late-b"):
        assert (await client.put(f"/v1/accounts/{account}", json={"plan": "p"})).is_success
    merged = await client.post("/v1/accounts/late-b/merge", json={"from": "late-a"})
    assert merged.status_code == 200, merged.text
    # A batch that resolved its ids just before the merge committed lands on the merged id.
    event = {"type": "login", "account_id": "late-b", "occurred_at": now.isoformat()}
    assert (await client.post("/v1/events", json={**event, "event_id": "straggler"})).is_success
    await conn.execute("UPDATE events SET account_id = 'late-a' WHERE event_id = 'straggler'")
    pool = await db.create_pool(str(settings.database_url), settings)
    try:
        handlers = schedules.handlers(settings)
        # Not before every request in flight at the merge has ended.
        assert not await jobs.run_one(pool, handlers, kinds=[merges.CATCH_UP])
        await conn.execute(
            "UPDATE jobs SET params = jsonb_set(params, '{not_before}', to_jsonb(now()::text)) "
            "WHERE kind = $1 AND job_id = (SELECT job_id FROM jobs WHERE kind = $1 "
            "ORDER BY params ->> 'not_before' LIMIT 1)",
            merges.CATCH_UP,
        )
        assert await jobs.run_one(pool, handlers, kinds=[merges.CATCH_UP])
    finally:
        await pool.close()
    [done] = await jobs.listed(conn, kind=merges.CATCH_UP, status="succeeded", limit=5)
    assert done.result is not None and done.result["moved"]["events"] == 1
    found = await conn.fetchval("SELECT account_id FROM events WHERE event_id = 'straggler'")
    assert found == "late-b"
    assert len(await jobs.listed(conn, kind=merges.CATCH_UP, status="queued", limit=5)) == 1
