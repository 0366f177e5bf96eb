from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

NOW = datetime.now(UTC)


def event(**fields: object) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "login",
        "occurred_at": (NOW - timedelta(hours=1)).isoformat(),
        "account_id": "acme",
    }
    body.update(fields)
    return body


async def test_event_is_stored_and_answered_202(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    response = await client.post(
        "/v1/events", json=event(event_id="e1", value=3.5, properties={"a": [1, {"b": None}]})
    )
    assert response.status_code == 202, response.text
    assert response.json() == {"event_id": "e1", "duplicate": False}
    row = await conn.fetchrow(
        "SELECT account_id, type, value, properties FROM events WHERE event_id = 'e1'"
    )
    assert row is not None
    assert (row["account_id"], row["type"], row["value"]) == ("acme", "login", 3.5)


async def test_event_without_id_gets_one_generated(client: httpx.AsyncClient) -> None:
    first = await client.post("/v1/events", json=event())
    second = await client.post("/v1/events", json=event())
    assert first.status_code == second.status_code == 202
    assert first.json()["event_id"] != second.json()["event_id"]


async def test_unknown_account_is_created_by_an_event(client: httpx.AsyncClient) -> None:
    await client.post("/v1/events", json=event(account_id="newco"))
    response = await client.get("/v1/accounts/newco")
    assert response.status_code == 200
    assert response.json()["account_id"] == "newco"


async def test_unknown_contact_with_account_is_created_under_it(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/v1/events", json=event(account_id="acme", contact_id="u1"))
    contact = await client.get("/v1/contacts/u1")
    assert contact.status_code == 200
    assert contact.json()["account_id"] == "acme"
    # Now known, the contact alone resolves the account.
    response = await client.post(
        "/v1/events", json={"type": "login", "occurred_at": NOW.isoformat(), "contact_id": "u1"}
    )
    assert response.status_code == 202, response.text


async def test_event_resolves_account_through_a_known_email(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await client.put("/v1/contacts/c9", json={"account_id": "globex", "email": "Ann@Globex.com"})
    response = await client.post(
        "/v1/events",
        json={
            "type": "ticket_opened",
            "occurred_at": NOW.isoformat(),
            "email": "ann@globex.com",
            "event_id": "t1",
        },
    )
    assert response.status_code == 202, response.text
    row = await conn.fetchrow("SELECT account_id, contact_id FROM events WHERE event_id = 't1'")
    assert row is not None and tuple(row) == ("globex", "c9")


async def test_event_that_resolves_to_no_account_is_422(client: httpx.AsyncClient) -> None:
    unknown_contact = await client.post(
        "/v1/events", json={"type": "x", "occurred_at": NOW.isoformat(), "contact_id": "ghost"}
    )
    unknown_email = await client.post(
        "/v1/events",
        json={"type": "x", "occurred_at": NOW.isoformat(), "email": "ghost@nowhere.io"},
    )
    nothing = await client.post("/v1/events", json={"type": "x", "occurred_at": NOW.isoformat()})
    for response, field in ((unknown_contact, "contact_id"), (unknown_email, "email")):
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", field]
    assert nothing.status_code == 422
    assert "account_id, contact_id or email" in nothing.json()["detail"]


async def test_same_event_id_same_content_is_a_duplicate_stored_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    body = event(event_id="dup-1")
    first = await client.post("/v1/events", json=body)
    again = await client.post("/v1/events", json=body)
    assert first.json()["duplicate"] is False
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert await conn.fetchval("SELECT count(*) FROM events WHERE event_id = 'dup-1'") == 1


async def test_same_event_id_other_content_is_409_and_first_version_kept(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await client.post("/v1/events", json=event(event_id="c-1", value=1))
    response = await client.post("/v1/events", json=event(event_id="c-1", value=2))
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert await conn.fetchval("SELECT value FROM events WHERE event_id = 'c-1'") == 1


async def test_idempotency_holds_across_months(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    january = datetime(2025, 1, 15, tzinfo=UTC).isoformat()
    june = datetime(2025, 6, 15, tzinfo=UTC).isoformat()
    await client.post("/v1/events", json=event(event_id="m-1", occurred_at=january))
    moved = await client.post("/v1/events", json=event(event_id="m-1", occurred_at=june))
    same = await client.post("/v1/events", json=event(event_id="m-1", occurred_at=january))
    assert moved.status_code == 409
    assert same.json()["duplicate"] is True
    assert await conn.fetchval("SELECT count(*) FROM events WHERE event_id = 'm-1'") == 1
    batch = await client.post(
        "/v1/events/batch", json={"events": [event(event_id="m-1", occurred_at=june)]}
    )
    assert batch.json()["accepted"] == 0 and batch.json()["errors"][0]["index"] == 0


async def test_events_land_in_monthly_partitions(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await client.post(
        "/v1/events", json=event(event_id="p-1", occurred_at="2024-03-10T12:00:00+02:00")
    )
    table = await conn.fetchval(
        "SELECT tableoid::regclass::text FROM events WHERE event_id = 'p-1'"
    )
    assert table == "events_2024_03"


async def test_batch_stores_good_items_and_reports_bad_ones_by_index(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    items = [
        event(event_id="b-0"),
        {"type": "login", "occurred_at": "yesterday", "account_id": "acme"},
        event(event_id="b-2"),
        event(event_id="b-0"),
        event(event_id="b-4", occurred_at=(NOW + timedelta(days=3)).isoformat()),
        "not an object",
        event(event_id="b-0", value=9),
    ]
    response = await client.post("/v1/events/batch", json={"events": items})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["duplicates"] == 1
    assert [e["index"] for e in body["errors"]] == [1, 4, 5, 6]
    assert "occurred_at" in body["errors"][0]["detail"]
    assert "future" in body["errors"][1]["detail"]
    stored = await conn.fetch("SELECT event_id FROM events ORDER BY event_id")
    assert [r["event_id"] for r in stored] == ["b-0", "b-2"]


async def test_batch_over_the_item_limit_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events/batch", json={"events": [event()] * 5001})
    assert response.status_code == 422
    assert "at most 5000" in response.json()["detail"]


async def test_outcome_idempotency_duplicate_and_conflict(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    body = {
        "outcome_id": "o-1",
        "account_id": "acme",
        "kind": "churned",
        "occurred_at": NOW.isoformat(),
    }
    first = await client.post("/v1/outcomes", json=body)
    again = await client.post("/v1/outcomes", json=body)
    changed = await client.post("/v1/outcomes", json={**body, "kind": "renewed"})
    assert first.status_code == 202 and first.json() == {
        "outcome_id": "o-1",
        "duplicate": False,
        "suppressed": False,
    }
    assert again.json()["duplicate"] is True
    assert changed.status_code == 409
    assert await conn.fetchval("SELECT kind FROM outcomes WHERE outcome_id = 'o-1'") == "churned"


async def test_outcome_batch_reports_bad_kind_by_index(client: httpx.AsyncClient) -> None:
    good = {
        "account_id": "acme",
        "kind": "expanded",
        "occurred_at": NOW.isoformat(),
        "amount": 120.5,
    }
    response = await client.post(
        "/v1/outcomes/batch", json={"outcomes": [good, {**good, "kind": "Churned!"}]}
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 1
    assert response.json()["errors"][0]["index"] == 1
