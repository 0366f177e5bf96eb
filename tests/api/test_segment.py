"""The Segment Tracking API: what the SDKs send, as custintel's signals."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from tests.fixtures.http import basic

NOW = datetime.now(UTC).replace(microsecond=0)


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
        # (Jitsu's SDK sends an anonymousId with every call; one without either is refused)
        (
            "s2s/group",
            {
                "type": "group",
                "groupId": "jit-co",
                "anonymousId": "jit-a",
                "traits": {"name": "Jit"},
            },
        ),
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


async def test_a_key_limited_to_operations_makes_only_the_segment_calls_they_stand_for(
    client: httpx.AsyncClient,
) -> None:
    async def key_for(*operations: str) -> dict[str, str]:
        body = {"name": "limited", "scopes": ["ingest"], "operations": list(operations)}
        created = await client.post("/v1/keys", json=body)
        assert created.status_code == 201, created.text
        return basic(created.json()["key"])

    events_only = await key_for("ingest_event")
    at = (NOW - timedelta(minutes=5)).isoformat()
    track = {"userId": "u-lim", "event": "Login", "timestamp": at, "context": {"groupId": "g"}}
    taken = await client.post("/segment/v1/track", headers=events_only, json=track)
    assert taken.status_code == 200 and taken.json()["accepted"] == 1, taken.text
    calls: dict[str, dict[str, Any]] = {
        "identify": {"userId": "u-lim", "traits": {"email": "new@x.io", "name": "Renamed"}},
        "group": {"userId": "u-lim", "groupId": "g2", "traits": {"plan": "free", "mrr": 1}},
        "alias": {"userId": "u-lim", "previousId": "anon-lim"},
    }
    for call, body in calls.items():
        refused = await client.post(f"/segment/v1/{call}", headers=events_only, json=body)
        assert refused.status_code == 403, (call, refused.text)
        assert call in refused.json()["detail"]
    mixed = {"batch": [{**track, "type": "track"}, {**calls["identify"], "type": "identify"}]}
    refused = await client.post("/segment/v1/batch", headers=events_only, json=mixed)
    assert refused.status_code == 403 and "identify" in refused.json()["detail"]
    contact = await client.get("/v1/contacts/u-lim")
    assert contact.status_code == 404 or contact.json()["name"] != "Renamed"
    assert (await client.get("/v1/accounts/g2")).status_code == 404  # nothing moved
    # Its own operation, or the REST one it stands for, allows a call.
    for allowed in (await key_for("segment_identify"), await key_for("upsert_contact")):
        ok = await client.post("/segment/v1/identify", headers=allowed, json=calls["identify"])
        assert ok.status_code == 200, ok.text
    # group with a userId also moves a contact: it needs both.
    accounts_only = await key_for("upsert_account")
    half = await client.post("/segment/v1/group", headers=accounts_only, json=calls["group"])
    assert half.status_code == 403
    no_user = {k: v for k, v in calls["group"].items() if k != "userId"} | {"anonymousId": "a"}
    whole = await client.post("/segment/v1/group", headers=accounts_only, json=no_user)
    assert whole.status_code == 200, whole.text
    # The routes are in the contract, so a key can name them.
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert paths["/segment/v1/track"]["post"]["operationId"] == "segment_track"


async def test_a_call_keeps_what_can_be_kept_and_names_what_was_dropped(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    h = basic(await _ingest_key(make_key))
    at = (NOW - timedelta(minutes=5)).isoformat()
    group = {"userId": "u-k", "groupId": "keep", "timestamp": at}
    ok = await client.post(
        "/segment/v1/group", headers=h, json={**group, "traits": {"mrr": "990", "plan": "pro"}}
    )
    assert ok.status_code == 200 and ok.json()["accepted"] == 1, ok.text
    assert (await client.get("/v1/accounts/keep")).json()["mrr"] == 990
    identify = {
        "userId": "u-k",
        "timestamp": at,
        "traits": {"email": "k@keep.io", "tags": ["a", "b"], "pets": [{"n": 1}]},
    }
    taken = await client.post("/segment/v1/identify", headers=h, json=identify)
    assert taken.status_code == 200 and taken.json()["accepted"] == 1, taken.text
    contact = (await client.get("/v1/contacts/u-k")).json()
    assert contact["email"] == "k@keep.io"
    assert contact["traits"]["tags"] == "a, b" and contact["traits"]["pets"] == '[{"n":1}]'
    # A field that cannot be kept is left out, named in the answer; the rest is stored.
    bad_mrr = {**group, "traits": {"mrr": "lots", "plan": "team"}}
    partly = await client.post("/segment/v1/group", headers=h, json=bad_mrr)
    assert partly.status_code == 200 and partly.json()["accepted"] == 1, partly.text
    [dropped] = partly.json()["dropped"]
    assert dropped["index"] == 0 and dropped["detail"].startswith("mrr: ")
    account = (await client.get("/v1/accounts/keep")).json()
    assert (account["plan"], account["mrr"]) == ("team", 990)
    # A call refused whole says why once, not "group: group: ...".
    refused = await client.post("/segment/v1/group", headers=h, json={"userId": "u-k"})
    assert refused.status_code == 400
    assert refused.json()["detail"].count("group:") == 1


async def test_one_bad_call_in_a_batch_fails_alone(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    h = basic(await _ingest_key(make_key))
    at = (NOW - timedelta(minutes=5)).isoformat()
    good = {"type": "track", "userId": "u-b", "event": "Login", "timestamp": at}
    deep: dict[str, Any] = {"x": 1}
    for _ in range(20):
        deep = {"d": deep}
    batch = [
        {**good, "messageId": "b-ok-1", "context": {"groupId": "acct-b"}},
        {
            **good,
            "messageId": "b-skew",
            "timestamp": "0001-01-01T00:00:00Z",
            "sentAt": "9999-12-31T23:59:59Z",
        },
        {**good, "messageId": "b-deep", "properties": deep},
        {**good, "messageId": "b-nul", "properties": {"note": "a\u0000b"}},
        {"type": "track", "event": "Nobody", "messageId": "b-anon", "timestamp": at},
        {**good, "messageId": "b-ok-2", "context": {"groupId": "acct-b"}},
    ]
    answer = await client.post("/segment/v1/batch", headers=h, json={"batch": batch})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 2
    assert sorted(e["index"] for e in body["errors"]) == [1, 2, 3, 4]
    by_index = {e["index"]: e["detail"] for e in body["errors"]}
    assert "NUL" in by_index[3] and "userId or an anonymousId" in by_index[4]
    stored = (await client.get("/v1/accounts/acct-b/events")).json()["items"]
    assert {e["event_id"] for e in stored} == {"b-ok-1", "b-ok-2"}
    # A call with neither id is refused on its own too, as Segment refuses it.
    alone = await client.post("/segment/v1/track", headers=h, json={"event": "x"})
    assert alone.status_code == 400
    # A body nested deeper than the service writes is refused whole with words, never a 500.
    for _ in range(300):
        deep = {"d": deep}
    too_deep = await client.post("/segment/v1/track", headers=h, json={**good, "properties": deep})
    assert too_deep.status_code == 400 and "nested" in too_deep.json()["detail"]


async def test_a_delivery_held_for_an_email_lands_when_the_person_arrives_through_segment(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    # One attach rule for every door: an Intercom conversation from an unknown email waits,
    # and lands when a Segment identify brings that email, as it does for a REST upsert.
    import time

    from tests.fixtures.senders import intercom_signature, make_source

    secret = "intercom-client-secret"
    source = await make_source(client, "intercom", secret)
    conversation = {
        "type": "conversation",
        "id": "77",
        "source": {
            "type": "conversation",
            "body": "<p>Where is my invoice?</p>",
            "author": {"type": "user", "id": "x9", "email": "new.person@held.io"},
        },
    }
    body = orjson.dumps(
        {
            "type": "notification_event",
            "id": "notif_held",
            "topic": "conversation.user.created",
            "created_at": int(time.time()) - 30,
            "data": {"type": "notification_event_data", "item": conversation},
        }
    )
    sent = await client.post(source["url"], content=body, headers=intercom_signature(body, secret))
    assert sent.json()["held"] == 1, sent.text
    identify = {
        "userId": "u-held",
        "traits": {"email": "New.Person@held.io"},
        "context": {"groupId": "held-co"},
        "timestamp": (NOW - timedelta(minutes=1)).isoformat(),
    }
    h = basic(await _ingest_key(make_key))
    assert (await client.post("/segment/v1/identify", headers=h, json=identify)).status_code == 200
    events = (await client.get("/v1/accounts/held-co/events")).json()["items"]
    assert [(e["type"], e["contact_id"]) for e in events] == [("conversation_opened", "u-held")]
    assert (await client.get("/v1/unresolved", params={"status": "held"})).json()["items"] == []


async def test_a_groups_segment_is_the_accounts_and_its_site_a_domain_identity(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    h = basic(await _ingest_key(make_key))
    at = (NOW - timedelta(minutes=5)).isoformat()
    traits = {"name": "Seg Co", "segment": "enterprise", "website": "https://www.Seg-Co.io/about"}
    group = {"anonymousId": "a-seg", "groupId": "seg-co", "traits": traits, "timestamp": at}
    assert (await client.post("/segment/v1/group", headers=h, json=group)).status_code == 200
    account = (await client.get("/v1/accounts/seg-co")).json()
    assert account["segment"] == "enterprise" and "segment" not in account["traits"]
    assert {"kind": "domain", "value": "seg-co.io"} in account["identities"]
    # Another account naming the same site keeps the rest of its call; the claim is named.
    other = {**group, "groupId": "seg-other", "traits": {"plan": "pro", "domain": "seg-co.io"}}
    answer = await client.post("/segment/v1/group", headers=h, json=other)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert answer.json()["dropped"][0]["detail"].startswith("traits.domain")
    assert (await client.get("/v1/accounts/seg-other")).json()["plan"] == "pro"


async def test_a_call_over_the_trait_key_budget_keeps_its_other_fields(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]], app: Any
) -> None:
    app.state.runtime.settings = app.state.runtime.settings.model_copy(update={"max_trait_keys": 3})
    h = basic(await _ingest_key(make_key))
    at = (NOW - timedelta(minutes=5)).isoformat()
    group = {"userId": "u-tb", "groupId": "budget", "timestamp": at, "traits": {"tier": "a"}}
    assert (await client.post("/segment/v1/group", headers=h, json=group)).status_code == 200
    flood = {f"junk_{n}": n for n in range(10)}
    identify = {
        "userId": "u-tb",
        "timestamp": at,
        "traits": {"email": "tb@budget.io", "name": "Tee Bee", **flood},
    }
    answer = await client.post("/segment/v1/identify", headers=h, json=identify)
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert len(answer.json()["dropped"]) == 10
    contact = (await client.get("/v1/contacts/u-tb")).json()
    assert (contact["email"], contact["name"], contact["traits"]) == ("tb@budget.io", "Tee Bee", {})
