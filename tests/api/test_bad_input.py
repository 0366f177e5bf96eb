"""Every error a client can cause is a 4xx problem+json naming what is wrong."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.platform.settings import Settings
from tests.conftest import ADMIN_KEY, another_process

NOW = datetime.now(UTC).isoformat()
GOOD = f'"type": "login", "occurred_at": "{NOW}", "account_id": "acme"'


async def post_raw(client: httpx.AsyncClient, path: str, raw: bytes | str) -> httpx.Response:
    data = raw.encode() if isinstance(raw, str) else raw
    return await client.post(path, content=data, headers={"Content-Type": "application/json"})


def assert_problem(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    for word in words:
        assert word in response.text, f"{word!r} not in {response.text}"
    return body


@pytest.mark.parametrize(
    "raw",
    ["{", '{"type": }', "", "[1, 2", '{"a": 1} trailing', "\xff\xfe"],
    ids=["open", "no-value", "empty-string-body", "open-list", "trailing", "not-utf8"],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, raw: str) -> None:
    response = await post_raw(client, "/v1/events", raw.encode("latin-1"))
    if raw == "":
        # An empty body is a missing body: the required fields are named.
        assert_problem(response, 422, "body")
    else:
        assert_problem(response, 400, "Malformed JSON")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_nan_and_infinity_are_refused(client: httpx.AsyncClient, literal: str) -> None:
    response = await post_raw(client, "/v1/events", f'{{{GOOD}, "value": {literal}}}')
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "fragment",
    [
        '"properties": {"x": NaN}',
        '"value": -Infinity',
        '"properties": {"x": Infinity}',
        '"text": "\\ud800"',
    ],
)
@pytest.mark.parametrize("padding", [0, 100], ids=["alone", "after-many-lookalikes"])
async def test_nan_infinity_and_surrogates_in_a_batch_are_refused(
    client: httpx.AsyncClient, fragment: str, padding: int
) -> None:
    # A clean batch is validated in one pass by pydantic, whose JSON parser would take these:
    # the body is searched for them first, also past many bytes that start one (N, I, \).
    lookalikes = "Nan Inf \\n " * padding
    neighbour = f'{{"event_id": "pad", {GOOD}, "text": "{lookalikes}"}}'
    odd = f'{{"event_id": "odd", {GOOD}, {fragment}}}'
    response = await post_raw(client, "/v1/events/batch", f'{{"events": [{neighbour}, {odd}]}}')
    assert_problem(response, 400)


@pytest.mark.parametrize(
    "fragment",
    [
        '"text": "a\\u0000b"',
        '"properties": {"k\\u0000": 1}',
        '"properties": {"deep": [{"x": "\\u0000"}]}',
    ],
)
async def test_nul_characters_are_refused_anywhere(
    client: httpx.AsyncClient, fragment: str
) -> None:
    response = await post_raw(client, "/v1/events", f"{{{GOOD}, {fragment}}}")
    assert_problem(response, 400, "NUL")


async def test_nul_in_trait_key_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/accounts/acme",
        content=b'{"traits": {"a\\u0000": 1}}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "NUL")


@pytest.mark.parametrize(
    "fragment",
    ['"text": "\\ud800"', '"properties": {"\\udfff": 1}', '"source": "x\\ud83d"'],
)
async def test_lone_surrogates_are_refused(client: httpx.AsyncClient, fragment: str) -> None:
    response = await post_raw(client, "/v1/events", f"{{{GOOD}, {fragment}}}")
    assert_problem(response, 400, "surrogate")


async def test_paired_surrogates_are_fine(client: httpx.AsyncClient) -> None:
    response = await post_raw(client, "/v1/events", f'{{{GOOD}, "text": "\\ud83d\\ude00"}}')
    assert response.status_code == 202


async def test_wrong_types_name_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events",
        json={"type": 5, "occurred_at": NOW, "account_id": "acme", "value": "high"},
    )
    body = assert_problem(response, 422)
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert ("body", "type") in locs and ("body", "value") in locs


async def test_missing_required_fields_are_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", json={"account_id": "acme"})
    body = assert_problem(response, 422)
    locs = {tuple(e["loc"]) for e in body["errors"]}
    assert {("body", "type"), ("body", "occurred_at")} <= locs


@pytest.mark.parametrize(
    "stamp", ["2025-01-01T10:00:00", "2025-01-01", "1735725600", "01/02/2025 10:00"]
)
async def test_timestamps_without_offset_are_refused(client: httpx.AsyncClient, stamp: str) -> None:
    response = await client.post(
        "/v1/events", json={"type": "login", "occurred_at": stamp, "account_id": "acme"}
    )
    assert_problem(response, 422, "occurred_at", "offset")


async def test_numeric_timestamp_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", json={"type": "login", "occurred_at": 1735725600, "account_id": "acme"}
    )
    assert_problem(response, 422, "occurred_at")


async def test_occurred_at_far_in_the_future_is_refused(client: httpx.AsyncClient) -> None:
    soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
    later = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
    ok = await client.post("/v1/events", json={"type": "x", "occurred_at": soon, "account_id": "a"})
    bad = await client.post(
        "/v1/events", json={"type": "x", "occurred_at": later, "account_id": "a"}
    )
    assert ok.status_code == 202
    assert_problem(bad, 422, "future")


async def test_deeply_nested_properties_are_refused(client: httpx.AsyncClient) -> None:
    nested: object = 1
    for _ in range(9):
        nested = {"n": nested}
    response = await client.post(
        "/v1/events",
        json={"type": "x", "occurred_at": NOW, "account_id": "a", "properties": nested},
    )
    assert_problem(response, 422, "properties", "nested")


async def test_absurdly_deep_json_is_refused_before_validation(client: httpx.AsyncClient) -> None:
    raw = '{"type": "x", "properties": {"p": ' + "[" * 5000 + "]" * 5000 + "}}"
    assert_problem(await post_raw(client, "/v1/events", raw), 400, "depth")


async def test_unknown_fields_are_refused_by_name(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events", json={"type": "x", "occurred_at": NOW, "account_id": "a", "colour": "red"}
    )
    assert_problem(response, 422, "colour")
    account = await client.put("/v1/accounts/a", json={"seats": 4})
    assert_problem(account, 422, "seats")


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/json", "application/jsonl", "application/json/x"],
)
async def test_non_json_content_type_is_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        "/v1/events",
        content=f"{{{GOOD}}}".encode(),
        headers={"Content-Type": content_type},
    )
    assert_problem(response, 415)


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=utf-8", "Application/JSON", " application/json ;x=y", "", None],
)
async def test_json_content_types_are_accepted(
    client: httpx.AsyncClient, content_type: str | None
) -> None:
    """A missing content type is taken as JSON (curl and hand-written clients forget it)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await client.post("/v1/events", content=f"{{{GOOD}}}".encode(), headers=headers)
    assert response.status_code == 202, response.text


async def test_control_characters_in_path_ids_are_refused(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/accounts/a%00b"), 422, "account_id")
    assert_problem(await client.put("/v1/accounts/a%01b", json={}), 422)


async def test_too_long_event_id_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/events",
        json={"event_id": "e" * 256, "type": "x", "occurred_at": NOW, "account_id": "a"},
    )
    assert_problem(response, 422, "event_id")


async def test_batch_that_is_not_an_object_with_a_list_is_422(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/v1/events/batch", json=[1, 2]), 422, "events")
    assert_problem(await client.post("/v1/events/batch", json={"events": {}}), 422, "list")
    assert_problem(await client.post("/v1/events/batch", json={"events": [], "x": 1}), 422, "x")


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/v1/nothing"), 404)
    assert_problem(await client.delete("/v1/events"), 405)


@pytest.fixture
async def small_limit_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"max_body_bytes": 2048}))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://t",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        ) as c:
            yield c


async def test_body_over_the_limit_is_413(small_limit_client: httpx.AsyncClient) -> None:
    big = {"type": "x", "occurred_at": NOW, "account_id": "a", "text": "y" * 4000}
    assert_problem(await small_limit_client.post("/v1/events", json=big), 413, "2048")


async def test_streamed_body_over_the_limit_is_413(small_limit_client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "x", "text": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}'

    response = await small_limit_client.post(
        "/v1/events", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 413)


async def test_nul_in_one_batch_item_spares_its_neighbours(client: httpx.AsyncClient) -> None:
    good = f'{{"event_id": "ok-1", {GOOD}}}'
    bad = f'{{"event_id": "bad-1", {GOOD}, "properties": {{"k": "a\\u0000"}}}}'
    response = await post_raw(client, "/v1/events/batch", f'{{"events": [{good}, {bad}]}}')
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert body["errors"][0]["index"] == 1 and "NUL" in body["errors"][0]["detail"]


@pytest.mark.parametrize(
    "moment",
    ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999Z"],
)
@pytest.mark.parametrize("resource", ["accounts", "contacts"])
async def test_observed_at_out_of_range_is_422_and_the_profile_stays_usable(
    client: httpx.AsyncClient, resource: str, moment: str
) -> None:
    body: dict[str, object] = {"name": "x", "observed_at": moment}
    if resource == "contacts":
        body["account_id"] = "acme"
    response = await client.put(f"/v1/{resource}/p1", json=body)
    assert_problem(response, 422, "observed_at")
    body["observed_at"] = NOW
    assert (await client.put(f"/v1/{resource}/p1", json=body)).status_code == 200


@pytest.mark.parametrize("resource", ["accounts", "contacts"])
async def test_a_profile_batch_reports_each_out_of_range_observed_at_and_keeps_the_rest(
    client: httpx.AsyncClient, resource: str
) -> None:
    id_field = resource[:-1] + "_id"
    moments = [NOW, "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999Z", NOW]
    items: list[dict[str, object]] = [
        {id_field: f"p{i}", "name": f"n{i}", "observed_at": m} for i, m in enumerate(moments)
    ]
    if resource == "contacts":
        for item in items:
            item["account_id"] = "acme"
    response = await client.post(f"/v1/{resource}/batch", json={resource: items})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["upserted"] == 2
    assert [e["index"] for e in result["errors"]] == [1, 2]
    assert all("observed_at" in e["detail"] for e in result["errors"])
    for i in (0, 3):
        stored = await client.get(f"/v1/{resource}/p{i}")
        assert stored.status_code == 200 and stored.json()["name"] == f"n{i}"
    assert (await client.get(f"/v1/{resource}/p1")).status_code == 404


async def test_nul_in_a_query_parameter_is_400(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/accounts", params={"segment": "a\x00b"})
    assert_problem(response, 400, "NUL", "segment")


EVENT_PATHS = ["/v1/events", "/v1/events/batch"]


def _on(path: str, fragment: str) -> str:
    item = f'{{"event_id": "e1", {GOOD}, {fragment}}}'
    return f'{{"events": [{item}]}}' if path.endswith("/batch") else item


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize(
    ("fragment", "words"),
    [
        ('"properties": {"x": 1e309}', "infinity"),
        ('"properties": {"x": [1, 2, 1e400]}', "infinity"),
        ('"properties": {"x": -1e309}', "infinity"),
        ('"properties": {"x": 123456789012345678901234567890}', "exceeds 64 bits"),
        ('"properties": {"x": 1e-400}', "too small"),
    ],
)
async def test_a_number_that_cannot_be_stored_as_sent_is_400_on_every_route(
    client: httpx.AsyncClient, conn: asyncpg.Connection, path: str, fragment: str, words: str
) -> None:
    response = await post_raw(client, path, _on(path, fragment))
    assert_problem(response, 400, words)
    assert await conn.fetchval("SELECT count(*) FROM events") == 0


@pytest.mark.parametrize("path", EVENT_PATHS)
async def test_a_large_integer_within_64_bits_is_stored_exactly(
    client: httpx.AsyncClient, conn: asyncpg.Connection, path: str
) -> None:
    response = await post_raw(client, path, _on(path, '"properties": {"x": 9223372036854775807}'))
    assert response.status_code in (200, 202), response.text
    stored = await conn.fetchval("SELECT properties ->> 'x' FROM events")
    assert stored == "9223372036854775807"


@pytest.mark.parametrize("path", EVENT_PATHS)
@pytest.mark.parametrize(
    "fragment",
    [
        '"event_id": "e2"',
        '"properties": {"a": 1, "a": 2}',
        '"properties": {"a": 1, "a" : "\\u003a"}',
    ],
)
async def test_a_repeated_key_is_400_naming_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection, path: str, fragment: str
) -> None:
    response = await post_raw(client, path, _on(path, fragment))
    name = "event_id" if "event_id" in fragment else "a"
    assert_problem(response, 400, f"'{name}' appears more than once")
    assert await conn.fetchval("SELECT count(*) FROM events") == 0


async def test_a_repeated_key_in_a_profile_is_400(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/accounts/a",
        content=b'{"name": "x", "name": "y"}',
        headers={"Content-Type": "application/json"},
    )
    assert_problem(response, 400, "'name' appears more than once")


@pytest.mark.parametrize("levels", [100, 300, 1000, 1023])
@pytest.mark.parametrize("path", [*EVENT_PATHS, "/v1/outcomes/batch"])
async def test_an_item_nested_very_deep_is_refused_without_a_500(
    client: httpx.AsyncClient, path: str, levels: int
) -> None:
    deep = "[" * levels + "]" * levels
    if path == "/v1/outcomes/batch":
        item = (
            f'{{"outcome_id": "o", "account_id": "a", "kind": "churned", '
            f'"occurred_at": "{NOW}", "properties": {{"x": {deep}}}}}'
        )
        body = f'{{"outcomes": [{item}]}}'
    else:
        body = _on(path, f'"properties": {{"x": {deep}}}')
    response = await post_raw(client, path, body)
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 200:  # a batch: the item is an error entry with its index
        assert [e["index"] for e in response.json()["errors"]] == [0]


@pytest.mark.parametrize("path", [*EVENT_PATHS, "/v1/outcomes/batch", "/v1/accounts/batch"])
async def test_a_body_that_is_not_json_is_415_on_every_route(
    client: httpx.AsyncClient, path: str
) -> None:
    body = _on(path, '"value": 1') if "events" in path else f'{{"{path.split("/")[2]}": []}}'
    response = await client.post(path, content=body, headers={"Content-Type": "text/plain"})
    assert_problem(response, 415, "application/json")


@pytest.mark.parametrize("path", EVENT_PATHS)
async def test_a_gzip_body_is_inflated_and_stored(
    client: httpx.AsyncClient, conn: asyncpg.Connection, path: str
) -> None:
    body = gzip.compress(_on(path, '"text": "compressed"').encode())
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code in (200, 202), response.text
    assert await conn.fetchval("SELECT text FROM events") == "compressed"


async def test_a_gzip_body_that_inflates_past_the_limit_is_413(settings: Settings) -> None:
    async with another_process(settings, max_body_bytes=100_000) as c:
        padding = " " * 5_000_000  # 5 MB of JSON whitespace, about 5 KB gzipped
        bomb = gzip.compress(f'{{"events": [{padding}]}}'.encode())
        assert len(bomb) < 100_000
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        response = await c.post("/v1/events/batch", content=bomb, headers=headers)
        assert_problem(response, 413, "inflates")


@pytest.mark.parametrize(
    ("encoding", "body", "status"),
    [
        ("gzip", b"not gzip at all", 400),
        ("br", b"{}", 415),
        ("gzip", gzip.compress(b"{}")[:-6], 400),
    ],
    ids=["not-gzip", "brotli", "truncated"],
)
async def test_bad_or_unknown_content_encodings_are_refused(
    client: httpx.AsyncClient, encoding: str, body: bytes, status: int
) -> None:
    headers = {"Content-Type": "application/json", "Content-Encoding": encoding}
    response = await client.post("/v1/events", content=body, headers=headers)
    assert_problem(response, status)


@pytest.mark.parametrize("bad", ["a/b", ".", "..", "x\x7f"])
async def test_an_id_outside_the_alphabet_is_refused_in_bodies_as_in_paths(
    client: httpx.AsyncClient, conn: asyncpg.Connection, bad: str
) -> None:
    batch = await client.post(
        "/v1/accounts/batch", json={"accounts": [{"account_id": bad}, {"account_id": "fine"}]}
    )
    assert batch.status_code == 200
    [error] = batch.json()["errors"]
    assert error["index"] == 0 and '"/"' in error["detail"]
    event = await client.post(
        "/v1/events", json={"type": "login", "occurred_at": NOW, "account_id": bad}
    )
    assert_problem(event, 422, "account_id")
    assert await conn.fetchval("SELECT array_agg(account_id) FROM accounts") == ["fine"]


async def test_a_path_that_is_not_utf8_is_400_not_a_lookalike_id(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.put("/v1/accounts/\ufffd", json={"name": "x"})).status_code == 200
    response = await client.get("/v1/accounts/%FF")
    assert_problem(response, 400, "UTF-8")
    response = await client.put("/v1/accounts/%FE", json={"name": "y"})
    assert_problem(response, 400, "UTF-8")
