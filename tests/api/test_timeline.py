from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx

NOW = datetime.now(UTC).replace(microsecond=0)


async def _send(client: httpx.AsyncClient, events: list[dict[str, object]]) -> None:
    for start in range(0, len(events), 5000):
        chunk = events[start : start + 5000]
        response = await client.post("/v1/events/batch", json={"events": chunk})
        assert response.status_code == 200, response.text[:500]
        assert response.json()["accepted"] == len(chunk)


async def test_timeline_pages_through_ten_thousand_events_newest_first(
    client: httpx.AsyncClient,
) -> None:
    # Two events share each instant, so the order must break ties by event_id too.
    events: list[dict[str, object]] = [
        {
            "event_id": f"e:{i:05d} ü",
            "type": "login",
            "occurred_at": (NOW - timedelta(minutes=i // 2)).isoformat(),
            "account_id": "acme é",
        }
        for i in range(10_000)
    ]
    events[0]["account_id"] = "other"
    await _send(client, events)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if cursor is not None:
            params["cursor"] = cursor
        response = await client.get("/v1/accounts/acme é/events", params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [e["event_id"] for e in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    mine = [e for e in events if e["account_id"] == "acme é"]
    expected = sorted(mine, key=lambda e: (str(e["occurred_at"]), str(e["event_id"])), reverse=True)
    assert seen == [e["event_id"] for e in expected]
    assert pages == 10


async def test_timeline_filters_by_time_and_type_and_returns_what_was_sent(
    client: httpx.AsyncClient,
) -> None:
    def at(days: int) -> str:
        return (NOW - timedelta(days=days)).isoformat()

    await _send(
        client,
        [
            {"event_id": "old", "type": "login", "occurred_at": at(30), "account_id": "a"},
            {
                "event_id": "t1",
                "type": "ticket_opened",
                "occurred_at": at(10),
                "account_id": "a",
                "properties": {"ticket_id": "T-1", "n": [1, {"x": None}]},
                "value": 2.5,
                "text": "Export is broken",
                "source": "zendesk",
            },
            {"event_id": "l1", "type": "login", "occurred_at": at(10), "account_id": "a"},
            {"event_id": "p1", "type": "payment_failed", "occurred_at": at(5), "account_id": "a"},
            {"event_id": "new", "type": "login", "occurred_at": at(1), "account_id": "a"},
        ],
    )
    response = await client.get(
        "/v1/accounts/a/events",
        params=[
            ("since", at(10)),
            ("until", at(5)),
            ("type", "ticket_opened"),
            ("type", "payment_failed"),
        ],
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [e["event_id"] for e in items] == ["p1", "t1"]
    ticket = items[1]
    assert ticket["properties"] == {"ticket_id": "T-1", "n": [1, {"x": None}]}
    assert (ticket["value"], ticket["text"], ticket["source"]) == (
        2.5,
        "Export is broken",
        "zendesk",
    )
    assert response.json()["next_cursor"] is None


async def test_timeline_of_an_unknown_account_is_404_and_a_forged_cursor_is_400(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/v1/accounts/nobody/events")).status_code == 404
    await _send(client, [{"type": "login", "occurred_at": NOW.isoformat(), "account_id": "a"}])
    for forged in ["%%%", "WyJ4Il0", "WzEsMl0", "WyJ4IiwxXQ"]:  # ["x"], [1,2], ["x",1]
        response = await client.get("/v1/accounts/a/events", params={"cursor": forged})
        assert response.status_code == 400, (forged, response.text)
        assert "cursor" in response.json()["detail"]


async def test_timeline_needs_the_read_scope(
    client: httpx.AsyncClient, make_key: Callable[..., Awaitable[str]]
) -> None:
    key = await make_key("ingest")
    response = await client.get("/v1/accounts/a/events", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 403
