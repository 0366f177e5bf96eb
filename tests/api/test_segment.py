"""The Segment Tracking API: what the SDKs send, as custintel's signals."""

from __future__ import annotations

import base64
import gzip
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson

NOW = datetime.now(UTC).replace(microsecond=0)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


async def _ingest_key(make_key: Callable[..., Awaitable[str]]) -> str:
    return await make_key("ingest", name="segment")


async def test_identify_group_track_resolve_to_the_account(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await _ingest_key(make_key)
    h = basic(key)
    at = (NOW - timedelta(hours=1)).isoformat()
    group = await client.post(
        "/segment/v1/group",
        headers=h,
        json={
            "userId": "u-1",
            "groupId": "acme",
            "traits": {
                "name": "Acme",
                "plan": "pro",
                "mrr": 990,
                "industry": "retail",
                "employees": 40,
            },
            "timestamp": at,
        },
    )
    assert group.status_code == 200, group.text
    assert group.json()["success"] is True and group.json()["accepted"] == 1
    identify = await client.post(
        "/segment/v1/identify",
        headers=h,
        json={
            "userId": "u-1",
            "anonymousId": "anon-1",
            "traits": {
                "email": "Bo@Acme.io",
                "name": "Bo",
                "title": "VP Sales",
                "address": {"city": "Oslo"},
            },
            "timestamp": at,
        },
    )
    assert identify.status_code == 200, identify.text
    track = await client.post(
        "/segment/v1/track",
        headers=h,
        json={
            "anonymousId": "anon-1",
            "event": "Report Exported",
            "messageId": "m-1",
            "properties": {"format": "csv", "revenue": 12.5},
            "timestamp": at,
            "context": {"ip": "10.0.0.1"},
        },
    )
    assert track.json()["accepted"] == 1, track.text
    page = await client.post(
        "/segment/v1/page",
        headers=h,
        json={"userId": "u-1", "name": "Pricing", "messageId": "m-2", "timestamp": at},
    )
    assert page.json()["accepted"] == 1, page.text
    account = (await client.get("/v1/accounts/acme")).json()
    assert (account["name"], account["plan"], account["mrr"]) == ("Acme", "pro", 990)
    assert account["traits"] == {"industry": "retail", "employees": 40}
    contact = (await client.get("/v1/contacts/u-1")).json()
    assert (contact["account_id"], contact["email"], contact["name"], contact["role"]) == (
        "acme",
        "bo@acme.io",
        "Bo",
        "vp_sales",
    )
    assert contact["traits"] == {"address.city": "Oslo"}
    assert {"kind": "anonymous_id", "value": "anon-1"} in contact["identities"]
    events = (await client.get("/v1/accounts/acme/events")).json()["items"]
    by_id = {e["event_id"]: e for e in events}
    assert by_id["m-1"]["type"] == "Report Exported" and by_id["m-1"]["contact_id"] == "u-1"
    assert by_id["m-1"]["value"] == 12.5 and by_id["m-1"]["source"] == "segment"
    assert by_id["m-1"]["properties"]["format"] == "csv"
    assert by_id["m-1"]["properties"]["$context"] == {"ip": "10.0.0.1"}
    assert by_id["m-2"]["type"] == "page_viewed"
    assert by_id["m-2"]["properties"] == {"name": "Pricing"}


async def test_write_key_in_the_body_and_bad_keys(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await _ingest_key(make_key)
    call = {"event": "Login", "userId": "u", "context": {"groupId": "g"}}
    bare = {"Authorization": ""}
    ok = await client.post("/segment/v1/track", headers=bare, json={**call, "writeKey": key})
    assert ok.status_code == 200, ok.text
    for headers, body in [
        (bare, call),
        (bare, {**call, "writeKey": "ci_" + "x" * 43}),
        (basic("ci_" + "x" * 43), call),
        ({"Authorization": "Basic %%%"}, call),
    ]:
        refused = await client.post("/segment/v1/track", headers=headers, json=body)
        assert refused.status_code == 401, refused.text
    reader = await make_key("read")
    assert (
        await client.post("/segment/v1/track", headers=basic(reader), json=call)
    ).status_code == 403


async def test_jitsu_paths_and_its_write_key_header(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    # What Jitsu's JavaScript SDK (libs/jitsu-js) sends: each call to {host}/api/s/{type}, or
    # /api/s/s2s/{type} from a server, its key in X-Write-Key, the call's type in the body.
    key = await _ingest_key(make_key)
    h = {"Authorization": "", "X-Write-Key": key}
    at = (NOW - timedelta(minutes=5)).isoformat()
    calls: list[tuple[str, dict[str, Any]]] = [
        ("s2s/group", {"type": "group", "groupId": "jit-co", "traits": {"name": "Jit"}}),
        ("identify", {"type": "identify", "userId": "jit-u", "traits": {"companyId": "x"}}),
        ("track", {"type": "track", "event": "Signed Up", "userId": "jit-u", "messageId": "j-1"}),
        ("s2s/page", {"type": "page", "userId": "jit-u", "messageId": "j-2"}),
    ]
    calls[1][1]["context"] = {"groupId": "jit-co"}
    for path, body in calls:
        sent = await client.post(
            f"/segment/api/s/{path}", headers=h, json={**body, "timestamp": at}
        )
        assert sent.status_code == 200 and sent.json()["accepted"] == 1, (path, sent.text)
    events = (await client.get("/v1/accounts/jit-co/events")).json()["items"]
    assert sorted((e["event_id"], e["type"], e["contact_id"]) for e in events) == [
        ("j-1", "Signed Up", "jit-u"),
        ("j-2", "page_viewed", "jit-u"),
    ]
    bad = await client.post(
        "/segment/api/s/track", headers={**h, "X-Write-Key": "ci_" + "x" * 43}, json=calls[2][1]
    )
    assert bad.status_code == 401


async def test_skew_correction_and_batch_context(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    h = basic(await _ingest_key(make_key))
    # The sender's clock runs two hours fast: its timestamps are moved back by as much.
    fast = NOW + timedelta(hours=2)
    batch = await client.post(
        "/segment/v1/batch",
        headers=h,
        json={
            "sentAt": fast.isoformat(),
            "context": {"groupId": "acme", "library": {"name": "analytics-python"}},
            "batch": [
                {
                    "type": "track",
                    "event": "A",
                    "userId": "u",
                    "messageId": "a",
                    "timestamp": (fast - timedelta(minutes=10)).isoformat(),
                },
                {
                    "type": "track",
                    "event": "B",
                    "userId": "u",
                    "messageId": "b",
                    "originalTimestamp": (fast - timedelta(minutes=20)).isoformat(),
                    "context": {"groupId": "other", "ip": "10.0.0.2"},
                },
            ],
        },
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["accepted"] == 2
    a = (await client.get("/v1/accounts/acme/events")).json()["items"]
    [b] = (await client.get("/v1/accounts/other/events")).json()["items"]
    assert [e["event_id"] for e in a] == ["a"]
    occurred = datetime.fromisoformat(a[0]["occurred_at"])
    received = datetime.fromisoformat(a[0]["received_at"])
    assert abs((received - occurred) - timedelta(minutes=10)) < timedelta(seconds=30)
    assert b["properties"]["$context"] == {
        "groupId": "other",
        "library": {"name": "analytics-python"},
        "ip": "10.0.0.2",
    }


async def test_oversize_and_malformed_are_400_and_one_message_twice_is_a_duplicate(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    h = basic(await _ingest_key(make_key))
    big = {
        "event": "x",
        "userId": "u",
        "context": {"groupId": "g"},
        "properties": {"p": "x" * 33_000},
    }
    assert (await client.post("/segment/v1/track", headers=h, json=big)).status_code == 400
    huge = {"batch": [{**big, "type": "track", "properties": {"p": "x" * 30_000}}] * 20}
    assert (await client.post("/segment/v1/batch", headers=h, json=huge)).status_code == 400
    gz = gzip.compress(orjson.dumps(huge))
    zipped = await client.post(
        "/segment/v1/batch", headers={**h, "Content-Encoding": "gzip"}, content=gz
    )
    assert zipped.status_code == 400  # the limit applies to what it inflates to
    malformed = await client.post("/segment/v1/batch", headers=h, content=b'{"batch": [')
    assert malformed.status_code == 400
    mixed = await client.post(
        "/segment/v1/batch",
        headers=h,
        json={
            "batch": [
                {**big, "type": "track"},
                {
                    "type": "track",
                    "event": "ok",
                    "userId": "u",
                    "messageId": "m",
                    "context": {"groupId": "g"},
                },
                {"type": "launch"},
                {
                    "type": "track",
                    "event": "ok",
                    "userId": "u",
                    "messageId": "m",
                    "context": {"groupId": "g"},
                },
            ]
        },
    )
    body = mixed.json()
    assert (body["accepted"], body["duplicates"]) == (1, 1)
    assert [e["index"] for e in body["errors"]] == [0, 2]
    again = await client.post(
        "/segment/v1/track",
        headers=h,
        json={"event": "ok", "userId": "u", "messageId": "m", "context": {"groupId": "g"}},
    )
    assert again.json()["duplicates"] == 1


async def test_a_track_before_its_identify_is_held_then_attached(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]], conn: asyncpg.Connection
) -> None:
    h = basic(await _ingest_key(make_key))
    early = await client.post(
        "/segment/v1/track",
        headers=h,
        json={"event": "Signed Up", "anonymousId": "anon-9", "messageId": "s-1"},
    )
    assert early.status_code == 200, early.text
    assert (early.json()["accepted"], early.json()["unresolved"]) == (0, 1)
    held = (await client.get("/v1/unresolved")).json()["items"]
    assert [(u["call"], u["status"]) for u in held] == [("track", "held")]
    assert held[0]["keys"] == [{"kind": "anonymous_id", "value": "anon-9"}]
    # identify with no group is held too; the group resolves both.
    identify = await client.post(
        "/segment/v1/identify",
        headers=h,
        json={"userId": "u-9", "anonymousId": "anon-9", "traits": {"email": "n@x.io"}},
    )
    assert identify.json()["unresolved"] == 1
    group = await client.post(
        "/segment/v1/group", headers=h, json={"userId": "u-9", "groupId": "globex"}
    )
    assert group.json()["accepted"] == 1, group.text
    events = (await client.get("/v1/accounts/globex/events")).json()["items"]
    assert [(e["event_id"], e["contact_id"]) for e in events] == [("s-1", "u-9")]
    assert (await client.get("/v1/contacts/u-9")).json()["email"] == "n@x.io"
    assert (await client.get("/v1/unresolved")).json()["items"] == []
    attached = await conn.fetchval(
        "SELECT count(*) FROM unresolved_signals WHERE attached_at IS NOT NULL"
    )
    assert attached == 2


async def test_held_signals_expire_but_stay_listed(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]], conn: asyncpg.Connection
) -> None:
    h = basic(await _ingest_key(make_key))
    await client.post("/segment/v1/track", headers=h, json={"event": "x", "userId": "late"})
    await conn.execute("UPDATE unresolved_signals SET received_at = now() - interval '31 days'")
    listed = (await client.get("/v1/unresolved")).json()["items"]
    assert [u["status"] for u in listed] == ["expired"]
    await client.post("/segment/v1/group", headers=h, json={"userId": "late", "groupId": "g"})
    assert (await client.get("/v1/accounts/g/events")).json()["items"] == []
    assert [u["status"] for u in (await client.get("/v1/unresolved")).json()["items"]] == [
        "expired"
    ]
    only = await client.get("/v1/unresolved", params={"status": "held"})
    assert only.json()["items"] == []


async def test_a_contact_upserted_through_the_api_attaches_what_was_held_for_it(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    h = basic(await _ingest_key(make_key))
    for body in (
        {"event": "Visited", "anonymousId": "a-7", "messageId": "v-1"},
        {"event": "Logged In", "userId": "crm-7", "messageId": "v-2"},
    ):
        assert (await client.post("/segment/v1/track", headers=h, json=body)).json()[
            "unresolved"
        ] == 1
    response = await client.put(
        "/v1/contacts/crm-7",
        json={"account_id": "initech", "identities": [{"kind": "anonymous_id", "value": "a-7"}]},
    )
    assert response.status_code == 200, response.text
    events = (await client.get("/v1/accounts/initech/events")).json()["items"]
    assert sorted((e["event_id"], e["contact_id"]) for e in events) == [
        ("v-1", "crm-7"),
        ("v-2", "crm-7"),
    ]
    assert (await client.get("/v1/unresolved")).json()["items"] == []
