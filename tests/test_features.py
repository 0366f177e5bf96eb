"""Features as of t: exact values on a small account, and nothing after t changes them."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from app.ml import features, rollups
from app.ml.catalog import Catalog
from app.voc import enrich, sentiment

T = datetime(2025, 6, 30, 12, tzinfo=UTC)


def at(days_before: float) -> str:
    return (T - timedelta(days=days_before)).isoformat()


async def seed(client: httpx.AsyncClient) -> None:
    await client.put(
        "/v1/accounts/acme",
        json={
            "segment": "enterprise",
            "plan": "pro",
            "mrr": 1000,
            "observed_at": at(200),
            "traits": {"seats": 40, "region": "eu"},
        },
    )
    await client.put("/v1/accounts/acme", json={"mrr": 1500, "observed_at": at(20)})
    await client.put(
        "/v1/contacts/boss",
        json={
            "account_id": "acme",
            "role": "executive_sponsor",
            "observed_at": at(150),
        },
    )
    await client.put(
        "/v1/contacts/u1", json={"account_id": "acme", "role": "end_user", "observed_at": at(150)}
    )
    events: list[dict[str, Any]] = [
        # logins: 2 in the last 7 days, 3 more within 30, 1 within 90, 2 in the 30 before
        *(
            {"type": "login", "contact_id": "u1", "occurred_at": at(d)}
            for d in (1, 3, 10, 12, 25, 45, 50, 80)
        ),
        {"type": "ticket_opened", "occurred_at": at(40), "properties": {"ticket_id": "T1"}},
        {"type": "ticket_closed", "occurred_at": at(35), "properties": {"ticket_id": "T1"}},
        {"type": "ticket_opened", "occurred_at": at(5), "properties": {"ticket_id": "T2"}},
        {"type": "nps_answered", "occurred_at": at(100), "value": 9},
        {"type": "nps_answered", "occurred_at": at(15), "value": 3},
        {"type": "payment_failed", "occurred_at": at(60)},
        {"type": "invoice_paid", "occurred_at": at(70), "value": 1500},
        {"type": "meeting", "contact_id": "boss", "occurred_at": at(100)},
    ]
    body = {
        "events": [{**e, "account_id": "acme", "event_id": f"e{i}"} for i, e in enumerate(events)]
    }
    response = await client.post("/v1/events/batch", json=body)
    assert response.json()["errors"] == []


async def frame_at(
    conn: asyncpg.Connection, t: datetime, *, stationary: bool = True
) -> features.Frame:
    """The catalog and the features both as of t, as a model trained at t would see them (or,
    not stationary, as a model trained before stationary catalogs)."""
    catalog = await features.build_catalog(conn, as_of=t, max_event_types=10, max_levels=10)
    if not stationary:
        catalog = dataclasses.replace(catalog, stationary=False)
    return await features.compute(conn, catalog, [("acme", t)])


async def test_features_of_an_account_as_of_t(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)
    frame = await frame_at(conn, T)
    value = {name: frame.column(name)[0] for name in frame.names}
    assert (value["events_login_7d"], value["events_login_30d"], value["events_login_90d"]) == (
        2,
        5,
        8,
    )
    assert value["events_login_trend"] == np.log((5 + 1) / (2 + 1))
    assert value["days_since_login"] == 1
    assert value["active_contacts_30d"] == 1  # u1 logged in; the sponsor did not
    assert value["executive_sponsor_active_30d"] == 0
    assert value["contacts"] == 2 and value["contacts_executive_sponsor"] == 1
    assert value["tickets_opened_90d"] == 2 and value["tickets_open"] == 1
    assert value["nps_latest"] == 3 and value["nps_average"] == 6
    assert value["payments_failed_90d"] == 1 and value["revenue_90d"] == 1500
    assert value["mrr"] == 1500 and value["trait_seats"] == 40
    assert value["tenure_days"] == 200
    levels = frame.catalog.levels()
    assert levels["plan"][int(value["plan"])] == "pro"
    assert levels["trait_region"][int(value["trait_region"])] == "eu"
    assert frame.segments == ["enterprise"]


async def test_nothing_after_t_changes_a_feature_as_of_t(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)
    t = T - timedelta(days=30)
    before = await frame_at(conn, t)
    # Later events, a later trait change, a later contact role change and a later outcome.
    later = [
        {"type": "login", "account_id": "acme", "contact_id": "boss", "occurred_at": at(29)},
        {"type": "nps_answered", "account_id": "acme", "value": 0, "occurred_at": at(28)},
        {
            "type": "ticket_closed",
            "account_id": "acme",
            "occurred_at": at(27),
            "properties": {"ticket_id": "T9"},
        },
    ]
    assert (await client.post("/v1/events/batch", json={"events": later})).json()["accepted"] == 3
    await client.put(
        "/v1/accounts/acme", json={"plan": "starter", "traits": {"seats": 2}, "observed_at": at(10)}
    )
    await client.put(
        "/v1/contacts/u1",
        json={"account_id": "acme", "role": "executive_sponsor", "observed_at": at(5)},
    )
    await client.post(
        "/v1/outcomes", json={"account_id": "acme", "kind": "churned", "occurred_at": at(1)}
    )
    after = await frame_at(conn, t)
    assert after.names == before.names
    np.testing.assert_array_equal(after.matrix, before.matrix)
    # ...while the same changes do show as of now.
    now = await frame_at(conn, T)
    assert now.column("trait_seats")[0] == 2


async def test_a_ticket_is_open_when_its_latest_event_in_the_window_opens_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    def ticket(kind: str, ticket_id: object, days_before: float) -> dict[str, object]:
        return {"type": f"ticket_{kind}", "occurred_at": at(days_before), "ticket": ticket_id}

    tickets = [
        ticket("opened", "reopened", 50),
        ticket("closed", "reopened", 40),
        ticket("opened", "reopened", 30),  # open again
        ticket("opened", "closed", 20),
        ticket("closed", "closed", 10),
        ticket("opened", "same-instant", 5),
        ticket("closed", "same-instant", 5),  # a close at the same instant wins
        ticket("opened", 7, 3),  # a numeric id is an id too
        ticket("closed", "closed-long-ago", 400),  # outside the 365-day window...
        ticket("opened", "closed-long-ago", 2),  # ...so this one is open
        ticket("opened", "closed-later", 2),
        ticket("closed", "closed-later", 0.5),
    ]
    events = [
        {
            "event_id": f"t{i}",
            "account_id": "acme",
            "type": e["type"],
            "occurred_at": e["occurred_at"],
            "properties": {"ticket_id": e["ticket"]},
        }
        for i, e in enumerate(tickets)
    ]
    events.append(  # no ticket_id: not a ticket anyone can close
        {"account_id": "acme", "type": "ticket_opened", "occurred_at": at(1), "event_id": "t-none"}
    )
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.json()["errors"] == []
    tickets_open = await frame_at(conn, T)
    assert tickets_open.column("tickets_open")[0] == 3  # reopened, 7, closed-long-ago
    one_day_earlier = await frame_at(conn, T - timedelta(days=1))
    assert one_day_earlier.column("tickets_open")[0] == 4  # closed-later was still open


async def test_cadence_value_and_profile_changes_as_of_t(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    for days, changes in (
        (300, {"plan": "pro", "mrr": 100, "traits": {"seats": 10}}),
        (200, {"mrr": 80}),  # a decrease, within the year
        (60, {"mrr": 120, "plan": "basic", "traits": {"seats": 14}}),
        (30, {"mrr": 130}),
    ):
        await client.put("/v1/accounts/acme", json={**changes, "observed_at": at(days)})
    # Purchases every 10 days from 100 to 20 days ago, each worth 5.
    purchases = [
        {"type": "purchase", "account_id": "acme", "occurred_at": at(d), "value": 5.0}
        for d in range(100, 10, -10)
    ]
    assert (await client.post("/v1/events/batch", json={"events": purchases})).status_code == 200
    frame = await frame_at(conn, T)
    value = {name: frame.column(name)[0] for name in frame.names}
    assert value["days_since_purchase"] == 20 and value["days_since_first_purchase"] == 100
    assert value["gap_purchase"] == 10 and value["overdue_purchase"] == 2
    assert value["value_purchase_365d"] == 45 and value["value_per_purchase"] == 5
    assert value["data_days"] == 100
    # 90 days ago mrr was 80 and seats 10; over the year one plan change and one decrease of
    # mrr (100 to 80; the two rises are not counted).
    assert value["mrr_change_90d"] == 50 and value["trait_seats_change_90d"] == 4
    assert value["mrr_decreases_365d"] == 1 and value["plan_changes_365d"] == 1


async def test_lifetime_aggregates_reach_past_the_year_through_the_rollups(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # Purchases 800, 700, 500, 400 (months before the scanned year), 370 (in the month the scan
    # starts, before t - 365 d) and 20 days before T, worth 1 to 6.
    days = (800, 700, 500, 400, 370, 20)
    purchases = [
        {
            "event_id": f"p{d}",
            "type": "purchase",
            "account_id": "acme",
            "occurred_at": at(d),
            "value": float(n + 1),
        }
        for n, d in enumerate(days)
    ]
    for _ in range(2):  # sent twice: the duplicates are not counted again
        reply = await client.post("/v1/events/batch", json={"events": purchases})
        assert reply.status_code == 200
    # A catalog of a model trained before stationary catalogs still has the lifetime features.
    frame = await frame_at(conn, T, stationary=False)
    value = {name: frame.column(name)[0] for name in frame.names}
    assert value["events_purchase_lifetime"] == 6 and value["value_purchase_lifetime"] == 21
    assert "events_per_day" not in value
    assert value["days_since_first_purchase"] == 800 and value["data_days"] == 800
    assert value["days_since_purchase"] == 20 and value["value_purchase_365d"] == 6
    assert np.isnan(value["gap_purchase"])  # one purchase in the year: no cadence
    # A stationary catalog adds the rate over the account's days on record, which does not
    # grow with the installation's age (app.ml.stationarity drops the lifetime counts that do).
    stationary = await frame_at(conn, T)
    assert stationary.column("events_purchase_lifetime")[0] == 6
    assert stationary.column("events_per_day")[0] == pytest.approx(6 / 800)
    # As of 450 days before T: only what happened by then (800, 700 and 500 days before T).
    earlier = await frame_at(conn, T - timedelta(days=450), stationary=False)
    assert earlier.column("events_purchase_lifetime")[0] == 3
    assert earlier.column("value_purchase_lifetime")[0] == 6
    assert earlier.column("days_since_first_purchase")[0] == 350
    # Rolled up, the months before the last three are read from the rollups (all but the
    # purchase of 20 days before T), and every feature stays what it was.
    assert await rollups.ensure(conn, until=T) == 5
    rolled = await conn.fetchval(
        "SELECT sum(events) FROM event_rollups WHERE account_id = 'acme' AND type = 'purchase'"
    )
    assert rolled == 5
    for frame_then, t in ((stationary, T), (earlier, T - timedelta(days=450))):
        again = await frame_at(conn, t, stationary=frame_then is stationary)
        np.testing.assert_array_equal(again.matrix, frame_then.matrix)


async def test_a_backfill_into_a_rolled_up_month_counts_at_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    def purchase(n: int, days: int) -> dict[str, Any]:
        return {
            "event_id": f"b{n}",
            "type": "purchase",
            "account_id": "acme",
            "occurred_at": at(days),
        }

    def lifetime(frame: features.Frame) -> float:
        return float(frame.column("events_purchase_lifetime")[0])

    await client.post("/v1/events/batch", json={"events": [purchase(0, 600), purchase(1, 5)]})
    assert await rollups.ensure(conn, until=T) == 1  # the month of 600 days before T
    assert lifetime(await frame_at(conn, T, stationary=False)) == 2
    # A backfill into the month rolled up, alone and in a batch: the month is read event by
    # event again at once, for scores on request as for a training.
    await client.post("/v1/events", json=purchase(2, 601))
    assert await conn.fetchval("SELECT count(*) FROM event_rollup_months") == 0
    assert lifetime(await frame_at(conn, T, stationary=False)) == 3
    assert await rollups.ensure(conn, until=T) == 1
    await client.post("/v1/events/batch", json={"events": [purchase(3, 602), purchase(4, 4)]})
    assert lifetime(await frame_at(conn, T, stationary=False)) == 5
    # What a training or batch rescoring does first: recount, and roll the months that scores
    # on request will need in the coming weeks (T is in the past: every month with an event).
    assert await rollups.catch_up(conn, as_of=T) == 2
    assert await conn.fetchval("SELECT count(*) FROM event_rollup_months") == 2
    assert lifetime(await frame_at(conn, T, stationary=False)) == 5


async def test_a_backfill_waits_for_the_rolling_of_its_month_and_unrolls_it(
    client: httpx.AsyncClient, conn: asyncpg.Connection, database_url: str
) -> None:
    def purchase(n: int, days: int) -> dict[str, Any]:
        return {
            "event_id": f"p{n}",
            "type": "purchase",
            "account_id": "acme",
            "occurred_at": at(days),
        }

    await client.post("/v1/events", json=purchase(0, 600))
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():  # a rolling of the month, not committed yet
            assert await rollups.ensure(other, until=T) == 1
            backfill = asyncio.ensure_future(client.post("/v1/events", json=purchase(1, 601)))
            await asyncio.sleep(0.5)
            assert not backfill.done()  # it waits for the rolling to end
    finally:
        await other.close()
    assert (await backfill).status_code == 202
    # The month rolled without the backfill is read event by event, with it.
    assert await conn.fetchval("SELECT count(*) FROM event_rollup_months") == 0
    assert (await frame_at(conn, T, stationary=False)).column("events_purchase_lifetime")[0] == 2


async def test_features_are_the_same_read_from_the_rollups_or_event_by_event(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # Two years of events of every kind features read, at random instants: as of any moment,
    # each feature is the same whether the months are rolled up or read event by event.
    rng = random.Random(7)
    kinds = ["login", "purchase", "nps_answered", "csat_answered", "payment_failed", "meeting"]
    events: list[dict[str, Any]] = []
    for n in range(900):
        kind = rng.choice([*kinds, "ticket_opened", "ticket_closed"])
        event: dict[str, Any] = {
            "event_id": f"r{n}",
            "type": kind,
            "account_id": rng.choice(["acme", "beta", "gamma"]),
            "occurred_at": at(rng.uniform(0, 730)),
        }
        if kind in ("purchase", "nps_answered", "csat_answered"):
            event["value"] = rng.randint(0, 10)
        if kind.startswith("ticket"):
            event["properties"] = {"ticket_id": f"T{rng.randint(0, 60)}"}
        if kind in ("login", "meeting"):
            event["contact_id"] = rng.choice(["c1", "c2", "c3", None])
        events.append(event)
    for chunk in range(0, len(events), 300):
        reply = await client.post("/v1/events/batch", json={"events": events[chunk : chunk + 300]})
        assert reply.json()["errors"] == []
    catalog = await features.build_catalog(
        conn, as_of=T, max_event_types=20, max_levels=10, history=timedelta(days=400)
    )
    catalog = dataclasses.replace(catalog, stationary=False)  # the lifetime counts too
    assert 365 in catalog.windows
    moments = [
        T - timedelta(days=d, hours=h) for d in (0, 29, 95, 181, 200, 366, 500) for h in (0, 7)
    ]
    keys = [(a, t) for a in ("acme", "beta", "gamma") for t in moments]
    unrolled = await features.compute(conn, catalog, keys)
    assert await conn.fetchval("SELECT count(*) FROM event_rollup_months") == 0
    assert await rollups.ensure(conn, until=T) > 20
    rolled = await features.compute(conn, catalog, keys)
    for j, name in enumerate(catalog.names):
        np.testing.assert_array_equal(rolled.matrix[:, j], unrolled.matrix[:, j], err_msg=name)
    assert np.isfinite(rolled.column("gap_login")).sum() > 30  # the cadence was compared


async def test_cadence_is_the_median_gap_between_days_with_the_event(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # Purchases 300, 290, 280, 270 and 20 days before T, two on the 280th day: gaps 10, 10, 10
    # and 250 between the days with one. The mean gap (70) would call this customer overdue at
    # a fraction of a gap; the median (10) says 2 gaps.
    days = (300, 290, 280, 280, 270, 20)
    purchases = [
        {"event_id": f"p{n}", "type": "purchase", "account_id": "acme", "occurred_at": at(d)}
        for n, d in enumerate(days)
    ]
    assert (await client.post("/v1/events/batch", json={"events": purchases})).status_code == 200
    value = await frame_at(conn, T)
    assert value.column("gap_purchase")[0] == 10
    assert value.column("overdue_purchase")[0] == 2


async def test_what_people_wrote_and_how_they_answered_surveys_as_of_t(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)  # NPS 9 a hundred days back, then 3
    texts = [
        (5, "ticket_opened", "Support never answered my ticket"),  # negative
        (12, "ticket_comment", "The export is still not fixed"),  # negative
        (50, "nps_comment", "Love the new dashboard"),  # positive
        (70, "call_note", "Discussed the renewal"),  # neutral
        (-1, "ticket_opened", "Everything is broken"),  # after t: never counted
    ]
    events: list[dict[str, Any]] = [
        {"type": kind, "account_id": "acme", "event_id": f"t{i}", "occurred_at": at(d), "text": x}
        for i, (d, kind, x) in enumerate(texts)
    ]
    events.append({"type": "csat_answered", "account_id": "acme", "occurred_at": at(8), "value": 2})
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["errors"] == []
    seeded = await client.post(
        "/v1/voc/themes", json={"name": "Broken exports", "keywords": ["export", "broken"]}
    )
    theme_id = seeded.json()["theme_id"]
    analyzer = sentiment.Analyzer()
    assert await enrich.enrich_pending(conn, analyzer, limit=100) == len(texts)
    frame = await frame_at(conn, T)
    value = {name: frame.column(name)[0] for name in frame.names}
    assert (value["negative_texts_30d"], value["negative_texts_90d"]) == (2, 2)
    assert value["negative_share_90d"] == 2 / 4
    scores = [analyzer(x).score for d, _, x in texts if d >= 0]
    assert value["sentiment_90d"] == pytest.approx(sum(scores) / 4)
    assert value["sentiment_trend"] == pytest.approx(sum(scores[:2]) / 2 - sum(scores[2:]) / 2)
    assert (value["nps_change"], value["nps_detractor"], value["csat_latest"]) == (-6, 1, 2)
    # The nps features read only NPS answers, not the CSAT one that came later.
    assert value["nps_latest"] == 3
    # Per theme: the export text of 12 days back, negative; not the broken one after t.
    assert (value[f"texts_{theme_id}_90d"], value[f"negative_{theme_id}_30d"]) == (1, 1)
    feature = frame.catalog.feature(f"negative_{theme_id}_30d")
    assert feature.words == "Negative texts about Broken exports in the last 30 days"


async def test_product_use_is_known_by_its_source_and_given_its_directions(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    sent = [
        ("login", "product"),
        ("login", "product"),
        ("login", None),
        ("dashboard_viewed", "segment"),
        ("ticket_opened", "zendesk"),
        ("export", None),
        ("export", "product"),  # one of two: not most of them
    ]
    events = [
        {"type": kind, "account_id": "acme", "occurred_at": at(5 + n)}
        | ({"source": source} if source else {})
        for n, (kind, source) in enumerate(sent)
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).status_code == 200
    catalog = await features.build_catalog(conn, as_of=T, max_event_types=10, max_levels=10)
    assert set(catalog.usage_types) == {"login", "dashboard_viewed"}
    churn, expansion = catalog.directions("churn"), catalog.directions("expansion")
    # More use never raises churn risk, nor does a recent one; an opened ticket never lowers it.
    assert churn["events_login_30d"] == -1 and expansion["events_login_30d"] == 1
    assert churn["days_since_dashboard_viewed"] == 1 and churn["events_login_trend"] == -1
    assert churn["events_ticket_opened_90d"] == 1 and churn["days_since_ticket_opened"] == -1
    assert "events_ticket_opened_90d" not in expansion
    assert "events_export_30d" not in churn  # its meaning is not known
    # A model keeps what its catalog knew.
    assert Catalog.from_json(catalog.to_json()).directions("churn") == churn
