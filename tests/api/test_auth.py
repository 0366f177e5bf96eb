from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.governance import auth
from app.platform.settings import Settings
from tests.conftest import ADMIN_KEY, another_process
from tests.fixtures.http import eventually

MakeKey = Callable[..., Awaitable[str]]
EVENT = {"type": "login", "occurred_at": "2025-01-01T00:00:00Z", "account_id": "a"}


async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts", headers={"Authorization": "Bearer ci_nope"})
    assert response.status_code == 401


@pytest.mark.parametrize(
    ("scopes", "method", "path", "body", "missing"),
    [
        (("read",), "POST", "/v1/events", EVENT, "ingest"),
        (("ingest",), "GET", "/v1/accounts", None, "read"),
        (("ingest", "read"), "GET", "/v1/keys", None, "admin"),
        (("ingest", "read"), "PATCH", "/v1/insights/i1", {"status": "resolved"}, "insights"),
    ],
)
async def test_missing_scope_is_403_naming_it(
    client: httpx.AsyncClient,
    make_key: MakeKey,
    scopes: tuple[str, ...],
    method: str,
    path: str,
    body: object,
    missing: str,
) -> None:
    key = await make_key(*scopes)
    response = await client.request(
        method, path, json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
    assert response.json()["missing_scope"] == missing
    assert missing in response.json()["detail"]


async def test_scoped_keys_can_do_what_their_scopes_allow(
    client: httpx.AsyncClient, make_key: MakeKey
) -> None:
    ingest = {"Authorization": f"Bearer {await make_key('ingest')}"}
    read = {"Authorization": f"Bearer {await make_key('read')}"}
    assert (await client.post("/v1/events", json=EVENT, headers=ingest)).status_code == 202
    assert (await client.get("/v1/accounts/a", headers=read)).status_code == 200
    inbox = {"Authorization": f"Bearer {await make_key('insights')}"}
    patched = await client.patch("/v1/insights/i1", json={"status": "resolved"}, headers=inbox)
    assert patched.status_code == 404  # past the key check: there is no such insight


async def test_keys_are_stored_hashed_only(
    client: httpx.AsyncClient, make_key: MakeKey, conn: object
) -> None:
    key = await make_key("read")
    rows = await conn.fetch("SELECT * FROM api_keys")  # type: ignore[attr-defined]
    assert rows and all(key not in str(dict(r)) for r in rows)


async def test_revoked_key_stops_working_and_is_audited(
    client: httpx.AsyncClient, make_key: MakeKey
) -> None:
    key = await make_key("read", name="temp")
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 200
    [info] = [k for k in (await client.get("/v1/keys")).json() if k["name"] == "temp"]
    assert (await client.delete(f"/v1/keys/{info['key_id']}")).status_code == 200
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 401
    actions = [e["action"] for e in (await client.get("/v1/audit-log")).json()]
    assert actions[:2] == ["api_key.revoked", "api_key.created"]


async def test_health_and_readiness_need_no_key(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz", headers={"Authorization": ""})).json() == {"status": "ok"}
    ready = await client.get("/readyz", headers={"Authorization": ""})
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready" and ready.json()["migrations"] == "current"


async def test_a_revoked_key_stops_working_in_every_process_at_once(
    client: httpx.AsyncClient, make_key: MakeKey, settings: Settings
) -> None:
    # Both processes trust a verified key for ten minutes without a notification.
    async with another_process(settings, api_key_cache_seconds=600) as other:
        key = await make_key("admin", name="temp")
        headers = {"Authorization": f"Bearer {key}"}
        assert (await other.get("/v1/keys", headers=headers)).status_code == 200  # cached there
        [info] = [k for k in (await client.get("/v1/keys")).json() if k["name"] == "temp"]
        assert (await client.delete(f"/v1/keys/{info['key_id']}")).status_code == 200

        async def refused() -> bool:
            return (await other.get("/v1/keys", headers=headers)).status_code == 401

        await eventually(refused)  # long before the ten minutes
        # Nor can it create keys there meanwhile.
        created = await other.post(
            "/v1/keys", json={"name": "x", "scopes": ["admin"]}, headers=headers
        )
        assert created.status_code == 401


async def test_unknown_keys_are_remembered_until_keys_change(
    app: Any, client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # An unknown key is remembered only while the change listener is up (it would not hear of
    # the key's creation otherwise): wait for it, as a busy machine brings it up late.
    deadline = time.monotonic() + 10
    while not app.state.runtime.listener.listening:
        assert time.monotonic() < deadline, "the change listener did not come up"
        await asyncio.sleep(0.02)
    secret = "ci_" + "k" * 43
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 401
    # The key appears without a notification: the remembered answer stands, no lookup is made.
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")  # triggers off
        await conn.execute(
            "INSERT INTO api_keys (key_id, name, prefix, key_hash, scopes) "
            "VALUES (gen_random_uuid(), 'quiet', $1, $2, ARRAY['read'])",
            secret[:10],
            auth.hash_key(secret),
        )
    assert (await client.get("/v1/accounts", headers=headers)).status_code == 401
    await conn.execute("SELECT pg_notify('custintel_keys', '')")  # any change to api_keys

    async def accepted() -> bool:
        return (await client.get("/v1/accounts", headers=headers)).status_code == 200

    await eventually(accepted)


async def test_an_address_sending_unknown_keys_gets_429_before_any_lookup(
    settings: Settings, make_key: MakeKey
) -> None:
    async with another_process(settings, auth_failures_per_minute=3) as other:
        for n in range(3):
            bad = {"Authorization": f"Bearer ci_bad{n}"}
            assert (await other.get("/v1/accounts", headers=bad)).status_code == 401
        limited = await other.get("/v1/accounts", headers={"Authorization": "Bearer ci_bad9"})
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["content-type"] == "application/problem+json"
        # A key it already verified still works.
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert (await other.get("/v1/accounts", headers=admin)).status_code == 200


async def test_a_key_over_its_rate_gets_429_and_others_do_not(
    settings: Settings, make_key: MakeKey
) -> None:
    first, second = await make_key("read"), await make_key("read")
    async with another_process(settings, rate_limit_key_per_second=2) as other:
        one = {"Authorization": f"Bearer {first}"}
        statuses = [(await other.get("/v1/accounts", headers=one)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        two = {"Authorization": f"Bearer {second}"}
        assert (await other.get("/v1/accounts", headers=two)).status_code == 200


async def test_an_address_over_its_rate_gets_429(settings: Settings) -> None:
    async with another_process(settings, rate_limit_address_per_second=2) as other:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        statuses = [(await other.get("/v1/accounts", headers=admin)).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        assert (await other.get("/healthz")).status_code == 200  # outside /v1


async def test_a_key_limited_to_operations_calls_only_those(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/keys", json={"name": "relay", "scopes": ["ingest"], "operations": ["ingest_event"]}
    )
    assert created.status_code == 201, created.text
    assert created.json()["operations"] == ["ingest_event"]
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    event = {"type": "login", "account_id": "a", "occurred_at": "2026-01-01T00:00:00Z"}
    assert (await client.post("/v1/events", json=event, headers=key)).status_code == 202
    batch = await client.post("/v1/events/batch", json={"events": [event]}, headers=key)
    assert batch.status_code == 403 and "ingest_events_batch" in batch.json()["detail"]
    unknown = await client.post(
        "/v1/keys", json={"name": "x", "scopes": ["read"], "operations": ["steal_everything"]}
    )
    assert unknown.status_code == 422 and "steal_everything" in unknown.json()["detail"]


async def test_a_key_limited_to_sources_reaches_only_those(client: httpx.AsyncClient) -> None:
    from tests.fixtures.senders import make_source

    billing, support = await make_source(client), await make_source(client, "zendesk", "zd-secret")
    unknown = "00000000-0000-4000-8000-000000000000"
    refused = await client.post(
        "/v1/keys", json={"name": "x", "scopes": ["admin"], "sources": [unknown]}
    )
    assert refused.status_code == 422 and unknown in refused.json()["detail"]
    body = {
        "name": "billing team",
        "scopes": ["admin"],
        "operations": ["list_sources", "get_source", "update_source", "create_api_key"],
        "sources": [billing["source_id"]],
    }
    created = await client.post("/v1/keys", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["sources"] == [billing["source_id"]]
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    listed = (await client.get("/v1/sources", headers=key)).json()
    assert [s["source_id"] for s in listed] == [billing["source_id"]]
    assert (await client.get(f"/v1/sources/{billing['source_id']}", headers=key)).status_code == 200
    other = await client.get(f"/v1/sources/{support['source_id']}", headers=key)
    assert other.status_code == 403 and "sources" in other.json()["detail"]
    renamed = await client.patch(
        f"/v1/sources/{support['source_id']}", json={"name": "mine now"}, headers=key
    )
    assert renamed.status_code == 403
    # It cannot mint a key wider than itself.
    wider = await client.post("/v1/keys", json={**body, "sources": None}, headers=key)
    assert wider.status_code == 403
    narrower = await client.post(
        "/v1/keys", json={**body, "operations": ["get_source"]}, headers=key
    )
    assert narrower.status_code == 201, narrower.text
    # Outside its sources it may do nothing, whatever its scopes.
    wide = await client.post(
        "/v1/keys", json={"name": "s", "scopes": ["admin"], "sources": [billing["source_id"]]}
    )
    wide_key = {"Authorization": f"Bearer {wide.json()['key']}"}
    unlimited = (await client.post("/v1/keys", json={"name": "u", "scopes": ["read"]})).json()
    for method, path, payload in (
        ("DELETE", f"/v1/keys/{unlimited['key_id']}", None),
        ("POST", "/v1/privacy/erasures", {"email": "a@b.io"}),
        ("POST", "/v1/models/train", {"target": "churn"}),
        ("GET", "/v1/accounts", None),
        ("POST", "/v1/sources", {"kind": "stripe", "name": "n", "secret": "whsec_x"}),
    ):
        answer = await client.request(method, path, json=payload, headers=wide_key)
        assert answer.status_code == 403, (path, answer.text)
    segment = await client.post(
        "/segment/v1/track", json={"userId": "u", "event": "e"}, headers=wide_key
    )
    assert segment.status_code == 403
    assert (await client.get(f"/v1/sources/{billing['source_id']}", headers=wide_key)).is_success
    # A key with the `sources` scope alone manages sources and nothing else.
    manager = await client.post("/v1/keys", json={"name": "m", "scopes": ["sources"]})
    manager_key = {"Authorization": f"Bearer {manager.json()['key']}"}
    assert (await client.get("/v1/sources", headers=manager_key)).status_code == 200
    assert (await client.get("/v1/accounts", headers=manager_key)).status_code == 403


async def test_an_expiring_key_mints_only_keys_that_expire_no_later(
    client: httpx.AsyncClient,
) -> None:
    ends = datetime.now(UTC) + timedelta(hours=1)
    body = {"name": "brief", "scopes": ["admin"], "expires_at": ends.isoformat()}
    brief = await client.post("/v1/keys", json=body)
    assert brief.status_code == 201, brief.text
    key = {"Authorization": f"Bearer {brief.json()['key']}"}
    forever = await client.post("/v1/keys", json={"name": "f", "scopes": ["read"]}, headers=key)
    assert forever.status_code == 403
    later = {**body, "expires_at": (ends + timedelta(days=1)).isoformat()}
    assert (await client.post("/v1/keys", json=later, headers=key)).status_code == 403
    sooner = {**body, "expires_at": (ends - timedelta(minutes=1)).isoformat()}
    assert (await client.post("/v1/keys", json=sooner, headers=key)).status_code == 201


async def test_a_key_expires_and_records_when_it_was_last_used(client: httpx.AsyncClient) -> None:
    past = await client.post(
        "/v1/keys", json={"name": "x", "scopes": ["read"], "expires_at": "2020-01-01T00:00:00Z"}
    )
    assert past.status_code == 422
    soon = (datetime.now(UTC) + timedelta(seconds=1.5)).isoformat()
    created = await client.post(
        "/v1/keys", json={"name": "brief", "scopes": ["read"], "expires_at": soon}
    )
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    assert (await client.get("/v1/accounts", headers=key)).status_code == 200
    # Its use is recorded off the request's path, at most once a minute.
    deadline = time.monotonic() + 10
    while True:
        [listed] = [k for k in (await client.get("/v1/keys")).json() if k["name"] == "brief"]
        if listed["last_used_at"] is not None or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert listed["last_used_at"] is not None and listed["expires_at"] is not None
    await asyncio.sleep(
        max(0.0, (datetime.fromisoformat(soon) - datetime.now(UTC)).total_seconds())
    )
    expired = await client.get("/v1/accounts", headers=key)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
