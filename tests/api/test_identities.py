from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

NOW = datetime.now(UTC).isoformat()


async def _resolve(client: httpx.AsyncClient, kind: str, value: str) -> httpx.Response:
    return await client.get("/v1/identities", params={"kind": kind, "value": value})


async def test_a_contact_lists_its_identities_and_each_resolves_to_it(
    client: httpx.AsyncClient,
) -> None:
    response = await client.put(
        "/v1/contacts/c é",
        json={
            "account_id": "acme",
            "email": "Bo@Acme.io",
            "identities": [
                {"kind": "crm", "value": "003X/ü"},
                {"kind": "email", "value": "  Bo.Work@ACME.io "},
                {"kind": "anonymous_id", "value": "Anon-1"},
            ],
        },
    )
    assert response.status_code == 200, response.text
    expected = [
        {"kind": "anonymous_id", "value": "Anon-1"},
        {"kind": "crm", "value": "003X/ü"},
        {"kind": "email", "value": "bo.work@acme.io"},
        {"kind": "email", "value": "bo@acme.io"},
    ]
    assert response.json()["identities"] == expected
    assert (await client.get("/v1/contacts/c é")).json()["identities"] == expected
    for kind, value in [("email", "BO@acme.io"), ("crm", "003X/ü"), ("anonymous_id", "Anon-1")]:
        found = await _resolve(client, kind, value)
        assert found.status_code == 200, found.text
        assert found.json() == {
            "matches": [{"subject": "contact", "contact_id": "c é", "account_id": "acme"}]
        }
    assert (await _resolve(client, "anonymous_id", "anon-1")).status_code == 404  # exact


async def test_a_second_contact_claiming_an_email_is_409_naming_the_owner(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/contacts/c1", json={"account_id": "a", "email": "bo@acme.io"})
    taken = await client.put("/v1/contacts/c2", json={"account_id": "b", "email": "BO@acme.io"})
    assert taken.status_code == 409, taken.text
    assert "c1" in taken.json()["detail"] and "bo@acme.io" in taken.json()["detail"]
    assert (await client.get("/v1/contacts/c2")).status_code == 404  # nothing written
    crm = await client.put(
        "/v1/contacts/c2",
        json={"account_id": "b", "identities": [{"kind": "email", "value": "bo@acme.io"}]},
    )
    assert crm.status_code == 409
    # In a batch: an error entry for the later item; the first claim (by index) wins.
    batch = await client.post(
        "/v1/contacts/batch",
        json={
            "contacts": [
                {"contact_id": "z", "account_id": "a", "email": "new@acme.io"},
                {"contact_id": "y", "account_id": "a", "email": "new@acme.io"},
                {"contact_id": "x", "account_id": "a", "email": "bo@acme.io"},
                {"contact_id": "w", "account_id": "a", "email": "w@acme.io"},
            ]
        },
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["upserted"] == 2
    assert [(e["index"], "'z'" in e["detail"]) for e in batch.json()["errors"]] == [
        (1, True),
        (2, False),
    ]
    assert "'c1'" in batch.json()["errors"][1]["detail"]
    resolved = await _resolve(client, "email", "new@acme.io")
    assert resolved.json()["matches"][0]["contact_id"] == "z"
    for refused in ("y", "x"):
        assert (await client.get(f"/v1/contacts/{refused}")).status_code == 404


async def test_concurrent_claims_on_one_email_leave_one_owner(client: httpx.AsyncClient) -> None:
    answers = await asyncio.gather(
        *(
            client.put(f"/v1/contacts/c{i}", json={"account_id": "a", "email": "one@acme.io"})
            for i in range(6)
        )
    )
    assert sorted(a.status_code for a in answers) == [200] + [409] * 5
    [winner] = [a.json()["contact_id"] for a in answers if a.status_code == 200]
    resolved = await _resolve(client, "email", "one@acme.io")
    assert resolved.json()["matches"] == [
        {"subject": "contact", "contact_id": winner, "account_id": "a"}
    ]


async def test_clearing_or_changing_an_email_stops_resolution_by_it(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/v1/contacts/c1", json={"account_id": "a", "email": "old@acme.io"})
    event = {"type": "login", "occurred_at": NOW, "email": "old@acme.io"}
    assert (await client.post("/v1/events", json=event)).status_code == 202
    changed = await client.put("/v1/contacts/c1", json={"account_id": "a", "email": "new@acme.io"})
    assert changed.json()["identities"] == [{"kind": "email", "value": "new@acme.io"}]
    assert (await _resolve(client, "email", "old@acme.io")).status_code == 404
    refused = await client.post("/v1/events", json=event)
    assert refused.status_code == 422 and "email" in refused.text
    cleared = await client.put("/v1/contacts/c1", json={"account_id": "a", "email": None})
    assert cleared.json()["identities"] == []
    assert (await _resolve(client, "email", "new@acme.io")).status_code == 404
    # Released, an address can be taken by another contact.
    other = await client.put("/v1/contacts/c2", json={"account_id": "b", "email": "new@acme.io"})
    assert other.status_code == 200, other.text
    # An older observation setting the email back does not bring it back.
    late = await client.put(
        "/v1/contacts/c1",
        json={"account_id": "a", "email": "old@acme.io", "observed_at": "2020-01-01T00:00:00Z"},
    )
    assert late.json()["email"] is None
    assert (await _resolve(client, "email", "old@acme.io")).status_code == 404


async def test_identities_follow_a_contact_to_its_new_account(client: httpx.AsyncClient) -> None:
    await client.put(
        "/v1/contacts/c1",
        json={
            "account_id": "a",
            "email": "bo@acme.io",
            "identities": [{"kind": "user_id", "value": "u1"}],
        },
    )
    await client.put("/v1/contacts/c1", json={"account_id": "b"})
    for kind, value in [("email", "bo@acme.io"), ("user_id", "u1")]:
        assert (await _resolve(client, kind, value)).json()["matches"][0]["account_id"] == "b"
    event = {"type": "login", "occurred_at": NOW, "email": "bo@acme.io", "event_id": "e1"}
    assert (await client.post("/v1/events", json=event)).status_code == 202
    timeline = (await client.get("/v1/accounts/b/events")).json()["items"]
    assert [e["event_id"] for e in timeline] == ["e1"]


async def test_accounts_hold_identities_one_owner_each(client: httpx.AsyncClient) -> None:
    acme = await client.put(
        "/v1/accounts/acme",
        json={
            "name": "Acme",
            "identities": [
                {"kind": "domain", "value": " ACME.io"},
                {"kind": "billing", "value": "cus_9"},
            ],
        },
    )
    assert acme.status_code == 200, acme.text
    assert acme.json()["identities"] == [
        {"kind": "billing", "value": "cus_9"},
        {"kind": "domain", "value": "acme.io"},
    ]
    taken = await client.put(
        "/v1/accounts/other", json={"identities": [{"kind": "domain", "value": "acme.IO"}]}
    )
    assert taken.status_code == 409 and "'acme'" in taken.json()["detail"]
    assert (await client.get("/v1/accounts/other")).status_code == 404
    batch = await client.post(
        "/v1/accounts/batch",
        json={
            "accounts": [
                {"account_id": "b1", "identities": [{"kind": "billing", "value": "cus_9"}]},
                {"account_id": "b2", "identities": [{"kind": "billing", "value": "cus_10"}]},
            ]
        },
    )
    assert batch.json()["upserted"] == 1 and batch.json()["errors"][0]["index"] == 0
    found = await _resolve(client, "domain", "Acme.io")
    assert found.json() == {
        "matches": [{"subject": "account", "contact_id": None, "account_id": "acme"}]
    }
    listed = (await client.get("/v1/accounts")).json()["items"]
    assert {a["account_id"]: a["identities"] for a in listed}["b2"] == [
        {"kind": "billing", "value": "cus_10"}
    ]


async def test_bad_identities_are_422(client: httpx.AsyncClient) -> None:
    for identities in (
        [{"kind": "CRM", "value": "1"}],
        [{"kind": "crm", "value": "   "}],
        [{"kind": "crm", "value": "a\nb"}],
        [{"kind": "crm"}],
        {"crm": "1"},
        [{"kind": "crm", "value": str(i)} for i in range(51)],
    ):
        response = await client.put(
            "/v1/contacts/c1", json={"account_id": "a", "identities": identities}
        )
        assert response.status_code == 422, (identities, response.text)
        assert "identities" in response.text
    assert (await _resolve(client, "email", "nobody@acme.io")).status_code == 404
    assert (
        await client.get("/v1/identities", params={"kind": "Bad Kind", "value": "x"})
    ).status_code == 422
