from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

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
