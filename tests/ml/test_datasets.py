"""Training sets: snapshots, population, labels, and nothing read after as_of."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import pytest

from app.ml import datasets, features, rollups
from app.platform import errors

AS_OF = datetime(2025, 12, 31, tzinfo=UTC)
H = timedelta(days=90)
WARM_UP = timedelta(days=90)


def day(n: int) -> str:
    return (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=n)).isoformat()


async def seed(client: httpx.AsyncClient) -> None:
    for account, first in (("a", 0), ("b", 100), ("c", 0)):
        await client.put(f"/v1/accounts/{account}", json={"mrr": 100, "observed_at": day(first)})
    await client.put("/v1/accounts/c", json={"mrr": 150, "observed_at": day(200)})
    await client.post(
        "/v1/events/batch",
        json={
            "events": [
                {"type": "login", "account_id": "a", "occurred_at": day(d)}
                for d in range(0, 360, 7)
            ]
            + [{"type": "login", "account_id": "b", "occurred_at": day(110)}]
        },
    )
    await client.post(
        "/v1/outcomes", json={"account_id": "b", "kind": "churned", "occurred_at": day(150)}
    )


def test_snapshots_go_back_from_as_of_minus_horizon() -> None:
    dates = datasets.snapshot_dates(
        as_of=AS_OF,
        horizon=H,
        every=timedelta(days=30),
        first_data=AS_OF - timedelta(days=200),
        warm_up=WARM_UP,
    )
    assert dates[-1] == AS_OF - H
    assert all(b - a == timedelta(days=30) for a, b in itertools.pairwise(dates))
    assert dates[0] >= AS_OF - timedelta(days=200) + WARM_UP


@pytest.mark.parametrize("warm_up_days", [0, 30, 90])
def test_snapshots_start_after_the_warm_up_the_request_asks_for(warm_up_days: int) -> None:
    first, warm_up = AS_OF - timedelta(days=400), timedelta(days=warm_up_days)
    dates = datasets.snapshot_dates(
        as_of=AS_OF, horizon=H, every=timedelta(days=7), first_data=first, warm_up=warm_up
    )
    assert min(dates) >= first + warm_up
    assert min(dates) - timedelta(days=7) < first + warm_up  # none warmed-up left out
    count = datasets.snapshot_count(
        as_of=AS_OF, horizon=H, every=timedelta(days=7), first_data=first, warm_up=warm_up
    )
    assert count == len(dates)


def test_data_too_short_for_a_warm_up_still_gets_snapshots() -> None:
    first = AS_OF - H - timedelta(days=40)
    dates = datasets.snapshot_dates(
        as_of=AS_OF, horizon=H, every=timedelta(days=30), first_data=first, warm_up=WARM_UP
    )
    assert dates == [AS_OF - H - timedelta(days=30), AS_OF - H]


async def test_population_and_labels(client: httpx.AsyncClient, conn: asyncpg.Connection) -> None:
    await seed(client)
    at_120 = datetime.fromisoformat(day(120))
    assert await datasets.population(
        conn, at=datetime.fromisoformat(day(50)), exclude_kinds=["churned"]
    ) == ["a", "c"]
    assert await datasets.population(conn, at=at_120, exclude_kinds=["churned"]) == ["a", "b", "c"]
    assert "b" not in await datasets.population(
        conn, at=datetime.fromisoformat(day(160)), exclude_kinds=["churned"]
    )
    keys = [("a", at_120), ("b", at_120), ("c", at_120)]
    churn = await datasets.labels(conn, datasets.default_label("churn"), keys=keys, horizon=H)
    inactive = await datasets.labels(
        conn,
        datasets.InactivityLabel(type="inactivity", event_types=["login"]),
        keys=keys,
        horizon=H,
    )
    grew = await datasets.labels(
        conn, datasets.MrrIncreaseLabel(type="mrr_increase", min_pct=40), keys=keys, horizon=H
    )
    assert churn.tolist() == [0, 1, 0]
    assert inactive.tolist() == [0, 1, 1]
    assert grew.tolist() == [0, 0, 1]


async def test_a_lapse_is_learnt_among_accounts_still_active(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)
    at_120, at_250 = datetime.fromisoformat(day(120)), datetime.fromisoformat(day(250))
    logins = (["login"], H)
    # b logged in on day 110, c never: at day 120 b is still active; at day 250 only a is.
    assert await datasets.population(conn, at=at_120, exclude_kinds=[], active=logins) == ["a", "b"]
    assert await datasets.population(conn, at=at_250, exclude_kinds=[], active=logins) == ["a"]
    catalog = await features.build_catalog(conn, as_of=AS_OF, max_event_types=5, max_levels=5)
    ts = await datasets.build(
        conn,
        target="lapse",
        label=datasets.InactivityLabel(type="inactivity", event_types=["login"]),
        as_of=AS_OF,
        horizon=H,
        every=timedelta(days=30),
        dates=[at_120, at_250],
        catalog=catalog,
        first=None,
        warm_up=WARM_UP,
    )
    assert ts.frame.keys == [("a", at_120), ("b", at_120), ("a", at_250)]
    assert ts.labels.tolist() == [0, 1, 0]


async def test_nothing_after_as_of_is_read(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)
    as_of = datetime.fromisoformat(day(300))

    async def build() -> datasets.TrainingSet:
        catalog = await features.build_catalog(conn, as_of=as_of, max_event_types=5, max_levels=5)
        return await datasets.build(
            conn,
            target="churn",
            label=datasets.default_label("churn"),
            as_of=as_of,
            horizon=H,
            every=timedelta(days=30),
            dates=None,
            catalog=catalog,
            first=await datasets.first_data(conn, as_of=as_of),
            warm_up=WARM_UP,
        )

    before = await build()
    await client.post(
        "/v1/outcomes", json={"account_id": "a", "kind": "churned", "occurred_at": day(301)}
    )
    await client.post(
        "/v1/events", json={"type": "page_view", "account_id": "c", "occurred_at": day(305)}
    )
    await client.put("/v1/accounts/d", json={"mrr": 1, "observed_at": day(302)})
    after = await build()
    assert after.frame.keys == before.frame.keys
    np.testing.assert_array_equal(after.frame.matrix, before.frame.matrix)
    np.testing.assert_array_equal(after.labels, before.labels)


async def test_a_snapshot_whose_label_reads_the_future_is_refused(conn: asyncpg.Connection) -> None:
    catalog = await features.build_catalog(conn, as_of=AS_OF, max_event_types=5, max_levels=5)
    with pytest.raises(errors.InvalidPayload, match="future"):
        await datasets.build(
            conn,
            target="churn",
            label=datasets.default_label("churn"),
            as_of=AS_OF,
            horizon=H,
            every=timedelta(days=30),
            dates=[AS_OF - timedelta(days=10)],
            catalog=catalog,
            first=None,
            warm_up=WARM_UP,
        )


async def test_a_few_events_dated_years_before_the_rest_do_not_move_the_window(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)  # weekly logins from 2025-01-01 on
    unmoved = await datasets.first_data(conn, as_of=AS_OF)
    strays = [
        {"type": "login", "account_id": "a", "occurred_at": f"{year}-03-01T00:00:00Z"}
        for year in (2017, 2018, 2019)
    ]
    assert (await client.post("/v1/events/batch", json={"events": strays})).status_code == 200
    start = await datasets.first_data(conn, as_of=AS_OF)
    assert unmoved is not None and start is not None
    assert start.at == unmoved.at == datetime(2025, 1, 1, tzinfo=UTC) and start.ignored == 3


async def test_a_long_silence_before_much_data_is_not_taken_for_strays(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    await seed(client)  # 53 logins in 2025, then 30 more after a silence of 90 days
    later = [{"type": "login", "account_id": "c", "occurred_at": day(450 + n)} for n in range(30)]
    assert (await client.post("/v1/events/batch", json={"events": later})).status_code == 200
    start = await datasets.first_data(conn, as_of=datetime(2027, 1, 1, tzinfo=UTC))
    assert start is not None and start.at == datetime(2025, 1, 1, tzinfo=UTC)
    assert start.ignored == 0


async def test_an_account_with_no_signal_yet_is_not_scored(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # A CRM record (a HubSpot company, say) with no activity: batch scoring leaves it out, so
    # no band and no insight stand for defaults.
    await seed(client)
    assert (await client.put("/v1/accounts/crm-only", json={"plan": "pro"})).status_code == 200
    now = datetime.now(UTC)
    await rollups.catch_up(conn, as_of=now)
    everyone = await datasets.population(conn, at=now, exclude_kinds=["churned"])
    scored = await datasets.population(conn, at=now, exclude_kinds=["churned"], with_signals=True)
    assert "crm-only" in everyone and "crm-only" not in scored
    assert scored == ["a"]  # c has profile observations and no event either; b churned


async def test_an_account_whose_signals_are_all_recent_is_scored(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    # Its months are not rolled up yet (training and batch rescoring roll only the months before
    # the last two): its events alone make it an account with signals.
    await seed(client)
    now = datetime.now(UTC)
    reply = await client.post(
        "/v1/events",
        json={"type": "login", "account_id": "new", "occurred_at": now.isoformat()},
    )
    assert reply.status_code == 202
    await rollups.catch_up(conn, as_of=now)
    scored = await datasets.population(conn, at=now, exclude_kinds=["churned"], with_signals=True)
    assert scored == ["a", "new"]
