from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx

from app.ml import features
from app.platform.settings import Settings
from tests.conftest import another_process


async def test_upsert_creates_then_merges_traits_key_by_key(client: httpx.AsyncClient) -> None:
    created = await client.put(
        "/v1/accounts/acme",
        json={
            "name": "Acme",
            "segment": "enterprise",
            "plan": "pro",
            "mrr": 1200.5,
            "owner_email": "csm@vendor.io",
            "traits": {"seats": 40, "region": "eu", "beta": True},
        },
    )
    assert created.status_code == 200, created.text
    updated = await client.put("/v1/accounts/acme", json={"traits": {"seats": 45, "region": None}})
    body = updated.json()
    assert body["traits"] == {"seats": 45, "beta": True}
    assert (body["name"], body["segment"], body["plan"], body["mrr"]) == (
        "Acme",
        "enterprise",
        "pro",
        1200.5,
    )
    assert body["owner_email"] == "csm@vendor.io"
    assert set(body) == {
        "account_id",
        "name",
        "segment",
        "plan",
        "mrr",
        "owner_email",
        "traits",
        "identities",
        "created_at",
        "updated_at",
        "dropped",
    }
    assert body["dropped"] == []


async def test_null_clears_a_field_and_absence_keeps_it(client: httpx.AsyncClient) -> None:
    await client.put("/v1/accounts/a1", json={"name": "A", "plan": "pro"})
    body = (await client.put("/v1/accounts/a1", json={"plan": None})).json()
    assert body["plan"] is None and body["name"] == "A"


async def test_older_upsert_goes_to_history_without_overwriting_newer_values(
    client: httpx.AsyncClient,
) -> None:
    await client.put(
        "/v1/accounts/a2",
        json={
            "plan": "enterprise",
            "traits": {"tier": "gold"},
            "observed_at": "2025-06-01T00:00:00Z",
        },
    )
    late = await client.put(
        "/v1/accounts/a2",
        json={
            "plan": "starter",
            "name": "Old Name",
            "traits": {"tier": "bronze", "legacy": 1},
            "observed_at": "2025-01-01T00:00:00Z",
        },
    )
    body = late.json()
    assert body["plan"] == "enterprise"
    assert body["traits"]["tier"] == "gold"
    # Fields no newer observation set are still learnt from the older one.
    assert body["name"] == "Old Name" and body["traits"]["legacy"] == 1
    then = await client.get("/v1/accounts/a2", params={"as_of": "2025-03-01T00:00:00Z"})
    assert then.json()["plan"] == "starter"
    assert then.json()["traits"] == {"tier": "bronze", "legacy": 1}


async def test_traits_are_read_as_of_a_past_moment(client: httpx.AsyncClient) -> None:
    for day, seats in (("2025-01-01", 10), ("2025-02-01", 20), ("2025-03-01", 30)):
        await client.put(
            "/v1/accounts/a3",
            json={
                "traits": {"seats": seats},
                "mrr": seats * 10,
                "observed_at": f"{day}T00:00:00+00:00",
            },
        )
    feb = (await client.get("/v1/accounts/a3", params={"as_of": "2025-02-15T00:00:00Z"})).json()
    now = (await client.get("/v1/accounts/a3")).json()
    assert feb["traits"] == {"seats": 20} and feb["mrr"] == 200
    assert now["traits"] == {"seats": 30}
    before = await client.get("/v1/accounts/a3", params={"as_of": "2024-12-31T00:00:00Z"})
    assert before.status_code == 404


async def test_the_same_upsert_replayed_adds_no_history(
    client: httpx.AsyncClient, conn: object
) -> None:
    body = {"plan": "pro", "observed_at": "2025-01-01T00:00:00Z"}
    await client.put("/v1/accounts/a4", json=body)
    await client.put("/v1/accounts/a4", json=body)
    count = await conn.fetchval("SELECT count(*) FROM account_history WHERE account_id = 'a4'")  # type: ignore[attr-defined]
    assert count == 1


async def test_unknown_account_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts/nobody")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404


async def test_list_filters_by_segment_and_pages_with_a_cursor(client: httpx.AsyncClient) -> None:
    for i in range(5):
        await client.put(f"/v1/accounts/e{i}", json={"segment": "enterprise"})
    await client.put("/v1/accounts/s0", json={"segment": "smb"})
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"segment": "enterprise", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/accounts", params=params)).json()
        seen += [a["account_id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"e{i}" for i in range(5)]


async def test_bad_cursor_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts", params={"cursor": "%%%"})
    assert response.status_code == 400


async def test_account_batch_upserts_valid_items_and_reports_bad_ones(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/accounts/batch",
        json={
            "accounts": [
                {"account_id": "b1", "name": "B1"},
                {"account_id": "b2", "mrr": "lots"},
                {"name": "no id"},
                {"account_id": "b3", "segment": "smb"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["upserted"] == 2
    assert [e["index"] for e in body["errors"]] == [1, 2]
    assert "mrr" in body["errors"][0]["detail"]
    assert (await client.get("/v1/accounts/b3")).json()["segment"] == "smb"


async def test_account_batch_over_1000_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/accounts/batch", json={"accounts": [{"account_id": "x"}] * 1001}
    )
    assert response.status_code == 422


async def test_contact_upsert_history_and_role(client: httpx.AsyncClient) -> None:
    await client.put(
        "/v1/contacts/c1",
        json={
            "account_id": "acme",
            "role": "admin",
            "email": "bo@acme.io",
            "identities": [{"kind": "crm", "value": "003X"}],
            "observed_at": "2025-05-01T00:00:00Z",
        },
    )
    late = await client.put(
        "/v1/contacts/c1",
        json={"account_id": "acme", "role": "end_user", "observed_at": "2025-01-01T00:00:00Z"},
    )
    assert late.json()["role"] == "admin"
    assert late.json()["email"] == "bo@acme.io"
    batch = await client.post(
        "/v1/contacts/batch",
        json={
            "contacts": [
                {"contact_id": "c2", "account_id": "acme", "role": "executive_sponsor"},
                {"contact_id": "c3", "role": "admin"},
            ]
        },
    )
    assert batch.json()["upserted"] == 1
    assert batch.json()["errors"][0]["index"] == 1


async def test_trait_keys_are_capped_per_profile_and_overall(settings: Settings) -> None:
    async with another_process(settings, max_traits_per_profile=5, max_trait_keys=8) as c:
        first = await c.put("/v1/accounts/a", json={"traits": {f"k{i}": i for i in range(4)}})
        assert first.status_code == 200
        # Merges add up: 4 held and 2 more is past the profile's 5.
        more = await c.put("/v1/accounts/a", json={"traits": {"k8": 1, "k9": 2}})
        assert more.status_code == 422 and "at most 5" in more.json()["detail"]
        assert more.json()["errors"][0]["loc"] == ["body", "traits"]
        # Removing one makes room; known keys cost nothing overall.
        swap = await c.put("/v1/accounts/a", json={"traits": {"k0": None, "k8": 1}})
        assert swap.status_code == 200, swap.text
        assert (await c.put("/v1/accounts/b", json={"traits": {"k1": 1}})).status_code == 200
        # 5 keys exist (k0..k3, k8); 4 new ones would make 9 of 8 overall: each item says so.
        batch = await c.post(
            "/v1/accounts/batch",
            json={
                "accounts": [
                    {"account_id": "c", "traits": {"n1": 1, "n2": 2, "n3": 3}},
                    {"account_id": "d", "traits": {"n4": 1}},
                    {"account_id": "e", "name": "no traits"},
                ]
            },
        )
        assert batch.status_code == 200
        result = batch.json()
        # Over the installation's budget the new key is left out and named; the item's other
        # fields (here: the account itself) are kept.
        assert result["upserted"] == 3 and result["errors"] == []
        [dropped] = result["dropped"]
        assert dropped["index"] == 1 and "CUSTINTEL_MAX_TRAIT_KEYS" in dropped["detail"]
        assert "traits.n4" in dropped["detail"]
        d = await c.get("/v1/accounts/d")
        assert d.status_code == 200 and d.json()["traits"] == {}
        contact = await c.put(
            "/v1/contacts/p", json={"account_id": "a", "traits": {f"t{i}": i for i in range(6)}}
        )
        assert contact.status_code == 422


async def test_the_catalog_keeps_the_most_used_traits(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    for n in range(6):
        traits = {"common": n, "often": "x" if n % 2 else "y"}
        if n == 0:
            traits["rare"] = 1
        await client.put(f"/v1/accounts/a{n}", json={"traits": traits})
    catalog = await features.build_catalog(
        conn, as_of=datetime.now(UTC), max_event_types=5, max_levels=5, max_traits=2
    )
    assert catalog.numeric_traits == ("common",)
    assert list(catalog.string_traits) == ["often"]


async def test_a_batch_naming_one_account_several_times_ends_as_one_by_one(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    items = [
        {"account_id": "m", "plan": "pro", "mrr": 10, "observed_at": "2025-03-01T00:00:00Z"},
        {"account_id": "m", "plan": "basic", "name": "M", "observed_at": "2025-01-01T00:00:00Z"},
        {"account_id": "m", "plan": "pro", "mrr": 10, "observed_at": "2025-03-01T00:00:00Z"},
        {"account_id": "m", "traits": {"seats": 3}, "observed_at": "2025-04-01T00:00:00Z"},
    ]
    batch = await client.post("/v1/accounts/batch", json={"accounts": items})
    assert batch.json() == {
        "upserted": 4,
        "suppressed": 0,
        "errors": [],
        "dropped": [],
    }
    account = (await client.get("/v1/accounts/m")).json()
    # The older item fills only what no newer one set; the replayed one adds no history.
    assert (account["plan"], account["name"], account["mrr"]) == ("pro", "M", 10)
    assert account["traits"] == {"seats": 3}
    history = await conn.fetchval("SELECT count(*) FROM account_history WHERE account_id = 'm'")
    assert history == 3
    early = await client.get("/v1/accounts/m", params={"as_of": "2025-02-01T00:00:00Z"})
    assert early.json()["plan"] == "basic"


async def test_a_refused_contact_leaves_neither_it_nor_its_new_account(
    settings: Settings, conn: asyncpg.Connection
) -> None:
    async with another_process(settings, max_traits_per_profile=2) as c:
        batch = await c.post(
            "/v1/contacts/batch",
            json={
                "contacts": [
                    {
                        "contact_id": "ok",
                        "account_id": "kept",
                        "email": "A@x.io",
                        "identities": [{"kind": "crm", "value": "1"}],
                    },
                    {"contact_id": "no", "account_id": "new", "traits": {"a": 1, "b": 2, "c": 3}},
                ]
            },
        )
        assert batch.json()["upserted"] == 1 and batch.json()["errors"][0]["index"] == 1
        assert (await c.get("/v1/contacts/no")).status_code == 404
        assert (await c.get("/v1/accounts/new")).status_code == 404
        assert (await c.get("/v1/contacts/ok")).json()["email"] == "a@x.io"
    links = await conn.fetch("SELECT kind, value, contact_id FROM identities ORDER BY kind")
    assert [tuple(r) for r in links] == [("crm", "1", "ok"), ("email", "a@x.io", "ok")]


async def test_contact_is_read_as_of_a_past_moment(client: httpx.AsyncClient) -> None:
    for observed_at, body in [
        ("2025-01-01T00:00:00Z", {"account_id": "old co", "role": "end_user", "traits": {"t": 1}}),
        ("2025-03-01T00:00:00Z", {"account_id": "new co", "role": "admin", "traits": {"t": 2}}),
    ]:
        response = await client.put("/v1/contacts/c é", json={**body, "observed_at": observed_at})
        assert response.status_code == 200, response.text
    feb = await client.get("/v1/contacts/c é", params={"as_of": "2025-02-01T00:00:00Z"})
    assert feb.status_code == 200, feb.text
    assert (feb.json()["account_id"], feb.json()["role"], feb.json()["traits"]) == (
        "old co",
        "end_user",
        {"t": 1},
    )
    now = (await client.get("/v1/contacts/c é")).json()
    assert (now["account_id"], now["role"], now["traits"]) == ("new co", "admin", {"t": 2})
    before = await client.get("/v1/contacts/c é", params={"as_of": "2024-12-31T00:00:00Z"})
    assert before.status_code == 404


async def test_an_older_contact_observation_in_a_batch_folds_behind_the_newer(
    client: httpx.AsyncClient,
) -> None:
    # A batch whose item is older than what is stored folds the whole history again; the
    # fold holds only fields the history ever set (here no email), and the batch still links
    # the item's identities.
    newer = {"account_id": "acme", "name": "Bo", "observed_at": "2025-03-01T00:00:00Z"}
    assert (await client.put("/v1/contacts/c1", json=newer)).status_code == 200
    older = {
        "contact_id": "c1",
        "account_id": "acme",
        "name": "Bo Old",
        "role": "admin",
        "identities": [{"kind": "crm", "value": "003X"}],
        "observed_at": "2025-01-01T00:00:00Z",
    }
    batch = await client.post("/v1/contacts/batch", json={"contacts": [older]})
    assert batch.status_code == 200 and batch.json() == {
        "upserted": 1,
        "suppressed": 0,
        "errors": [],
        "dropped": [],
    }, batch.text
    contact = (await client.get("/v1/contacts/c1")).json()
    assert (contact["name"], contact["role"], contact["email"]) == ("Bo", "admin", None)
    assert contact["identities"] == [{"kind": "crm", "value": "003X"}]


async def test_one_writer_cannot_take_the_whole_trait_key_budget(
    settings: Settings, make_key: Any
) -> None:
    flooder = {"Authorization": f"Bearer {await make_key('ingest', name='flooder')}"}
    other = {"Authorization": f"Bearer {await make_key('ingest', name='other')}"}
    async with another_process(settings, max_trait_keys=10, max_trait_keys_per_writer=4) as c:
        flood = {"traits": {f"junk_{i}": i for i in range(4)}}
        assert (await c.put("/v1/accounts/a", json=flood, headers=flooder)).status_code == 200
        more = await c.put(
            "/v1/accounts/a",
            json={"name": "Acme", "traits": {"junk_9": 1, "junk_0": 7}},
            headers=flooder,
        )
        # The key over the writer's budget is left out and named; the rest of the call stays.
        assert more.status_code == 200, more.text
        [dropped] = more.json()["dropped"]
        assert "traits.junk_9" in dropped and "CUSTINTEL_MAX_TRAIT_KEYS_PER_WRITER" in dropped
        stored = (await c.get("/v1/accounts/a")).json()
        assert stored["name"] == "Acme" and stored["traits"]["junk_0"] == 7
        assert "junk_9" not in stored["traits"]
        # Keys it added before cost it nothing again; another writer still has room.
        again = {"traits": {"junk_0": 5}}
        assert (await c.put("/v1/accounts/b", json=again, headers=flooder)).status_code == 200
        mine = {"traits": {"tier": "gold", "seats": 40}}
        assert (await c.put("/v1/accounts/c", json=mine, headers=other)).status_code == 200
