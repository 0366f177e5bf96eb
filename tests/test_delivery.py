"""Insights delivered through signed webhooks to a real receiver on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from app.activation import deliveries
from app.platform import errors
from app.platform.settings import Settings
from tests.fixtures.delivery import Receiver, deliver_for
from tests.fixtures.scores import T0, new_scores, score


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


async def setup(
    client: httpx.AsyncClient, app: Any, settings: Settings, receiver: Receiver
) -> dict[str, Any]:
    app.state.runtime.settings = settings.model_copy(update={"allow_private_destinations": True})
    created = await client.post("/v1/destinations", json={"name": "crm", "url": receiver.url})
    assert created.status_code == 201, created.text
    destination = created.json()
    assert destination["secret"].startswith("whsec_")
    receiver.secrets = [destination["secret"]]
    await client.post(
        "/v1/routing-rules",
        json={"name": "all", "match": {}, "destination_ids": [destination["destination_id"]]},
    )
    for n in range(5):
        await client.put(f"/v1/accounts/a{n}", json={"owner_email": "csm@vendor.example"})
    return dict(destination)


async def test_receiver_down_then_up_gets_every_insight_exactly_once(
    client: httpx.AsyncClient,
    app: Any,
    conn: asyncpg.Connection,
    settings: Settings,
    receiver: Receiver,
) -> None:
    fast = settings.model_copy(
        update={
            "delivery_backoff_seconds": [0, 0.3, 0.3, 0.3, 0.3, 0.3],
            "allow_private_destinations": True,  # the receiver is on loopback
        }
    )
    destination = await setup(client, app, settings, receiver)
    receiver.answer = 503
    raised = await new_scores(conn, fast, [score(f"a{n}", T0, 0.7, "high") for n in range(5)])
    assert raised == 5
    await deliver_for(fast, 0.5)  # down: tries fail
    assert not receiver.received
    receiver.answer = 200
    await deliver_for(fast, 1.5)
    assert sorted(receiver.received.values()) == [1] * 5
    deliveries = (await client.get("/v1/deliveries")).json()
    assert {d["delivery_id"] for d in deliveries} == set(receiver.received)
    for d in deliveries:
        assert d["status"] == "delivered" and d["attempts"] >= 2
        assert d["tries"][0]["status_code"] == 503 and d["tries"][-1]["status_code"] == 200

    # Rotation: both secrets sign during the grace period, so either verifies.
    rotated = await client.post(f"/v1/destinations/{destination['destination_id']}/rotate")
    receiver.secrets = [destination["secret"], rotated.json()["secret"]]
    await new_scores(conn, fast, [score("a0", T0 + timedelta(days=1), 0.99, "high")])
    await deliver_for(fast, 0.5)
    assert sum(receiver.received.values()) == 6


async def test_a_410_disables_the_destination_and_a_dead_delivery_can_be_replayed(
    client: httpx.AsyncClient,
    app: Any,
    conn: asyncpg.Connection,
    settings: Settings,
    receiver: Receiver,
) -> None:
    fast = settings.model_copy(
        update={"delivery_backoff_seconds": [0, 0.2], "allow_private_destinations": True}
    )
    destination = await setup(client, app, settings, receiver)
    receiver.answer = 410
    await new_scores(conn, fast, [score("a1", T0, 0.7, "high")])
    await deliver_for(fast, 0.5)
    [listed] = (await client.get("/v1/destinations")).json()
    assert listed["enabled"] is False and "410" in listed["disabled_reason"]
    [dead] = (await client.get("/v1/deliveries", params={"status": "dead"})).json()
    assert dead["attempts"] == 1

    # Up again and re-enabled, the dead delivery is replayed.
    enabled = await client.patch(
        f"/v1/destinations/{destination['destination_id']}", json={"enabled": True}
    )
    assert enabled.json()["enabled"] is True and enabled.json()["disabled_reason"] is None
    receiver.answer = 200
    replayed = await client.post(f"/v1/deliveries/{dead['delivery_id']}/replay")
    assert replayed.status_code == 200
    await deliver_for(fast, 0.5)
    assert receiver.received[dead["delivery_id"]] == 1
    again = await client.post(f"/v1/deliveries/{dead['delivery_id']}/replay")
    assert again.status_code == 409


async def test_a_destination_on_a_private_address_is_refused(client: httpx.AsyncClient) -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://169.254.169.254/"):
        response = await client.post("/v1/destinations", json={"name": "x", "url": url})
        assert response.status_code == 422, url
        assert "private" in response.json()["detail"]


def test_slack_destinations_get_a_message_with_the_reasons() -> None:
    payload = deliveries.event(
        {
            "kind": "band_entered",
            "target": "churn",
            "account_id": "acme",
            "probability": 0.42,
            "band": "high",
            "reasons": [{"text": "Support tickets still open: 8 (typical for smb: 0)"}],
            "next_step": "Call them.",
        }
    )
    text = deliveries.slack_message(payload)["text"]
    assert text.startswith("*churn band entered*: acme (42%, high)")
    assert "Support tickets still open: 8" in text and "Next step: Call them." in text


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert deliveries._retry_after("120") == 120.0
    later = (datetime.now(UTC) + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 80 <= (deliveries._retry_after(later) or 0) <= 91
    assert deliveries._retry_after("soon") is None and deliveries._retry_after(None) is None


async def test_a_reply_with_a_nul_byte_is_recorded_and_the_delivery_is_not_sent_again(
    client: httpx.AsyncClient,
    app: Any,
    conn: asyncpg.Connection,
    settings: Settings,
    receiver: Receiver,
) -> None:
    fast = settings.model_copy(
        update={"delivery_backoff_seconds": [0, 0.2, 0.2], "allow_private_destinations": True}
    )
    await setup(client, app, settings, receiver)
    receiver.reply = b"ok\x00then"
    await new_scores(conn, fast, [score(f"a{n}", T0, 0.7, "high") for n in range(3)])
    await deliver_for(fast, 1.0)
    assert sorted(receiver.received.values()) == [1, 1, 1]  # each once, none again
    deliveries = (await client.get("/v1/deliveries")).json()
    for d in deliveries:
        assert d["status"] == "delivered" and d["attempts"] == 1
        assert d["tries"][0]["response"] == "ok\ufffdthen"


async def test_the_address_is_checked_again_when_sending(
    client: httpx.AsyncClient,
    app: Any,
    conn: asyncpg.Connection,
    settings: Settings,
    receiver: Receiver,
) -> None:
    # Saved while private addresses were allowed, as a host that resolved to a public address
    # and now resolves inside the network would be (DNS rebinding).
    await setup(client, app, settings, receiver)
    strict = settings.model_copy(update={"delivery_backoff_seconds": [0, 60]})
    await new_scores(conn, strict, [score("a1", T0, 0.7, "high")])
    await deliver_for(strict, 0.5)
    assert not receiver.verified
    [delivery] = (await client.get("/v1/deliveries")).json()
    assert delivery["status"] == "pending"
    assert "127.0.0.1" in delivery["tries"][0]["error"]


@pytest.mark.parametrize(
    "host",
    ["224.0.0.1", "[64:ff9b::a9fe:a9fe]", "[2002:a9fe:a9fe::1]", "[::ffff:10.0.0.1]", "[ff02::1]"],
)
async def test_multicast_and_ipv6_forms_of_private_addresses_are_refused(host: str) -> None:
    with pytest.raises(errors.InvalidPayload, match="private"):
        await deliveries.check_url(f"http://{host}/hook", allow_private=False)


async def test_a_read_key_sees_destination_urls_without_their_secrets(
    client: httpx.AsyncClient, app: Any, settings: Settings, make_key: Any
) -> None:
    app.state.runtime.settings = settings.model_copy(update={"allow_private_destinations": True})
    for url in (
        "https://user:pw@127.0.0.1:8443/hook?token=abc",
        "https://hooks.slack.com/services/T000/B000/XXXX",
    ):
        kind = "slack" if "slack" in url else "webhook"
        created = await client.post(
            "/v1/destinations", json={"name": kind, "url": url, "kind": kind}
        )
        assert created.status_code == 201, created.text
    read = {"Authorization": f"Bearer {await make_key('read')}"}
    shown = [d["url"] for d in (await client.get("/v1/destinations", headers=read)).json()]
    assert shown == ["https://127.0.0.1:8443/***", "https://hooks.slack.com/***"]
    full = [d["url"] for d in (await client.get("/v1/destinations")).json()]
    assert full[1] == "https://hooks.slack.com/services/T000/B000/XXXX"


def test_slack_messages_escape_what_clients_sent() -> None:
    payload = deliveries.event(
        {
            "kind": "band_entered",
            "target": "churn",
            "account_id": "<!channel>",
            "probability": 0.42,
            "band": "high",
            "reasons": [{"text": "Trait <https://evil.example|click here> & more: 1"}],
            "next_step": "Call <@U123>.",
        }
    )
    text = deliveries.slack_message(payload)["text"]
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "&amp; more" in text
