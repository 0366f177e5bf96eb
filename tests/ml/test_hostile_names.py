"""Names clients send (trait keys, event types, segments) reach LightGBM, matplotlib and the
reasons' words as data: any character trains, scores and explains."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from app.demo import simulator
from app.platform.settings import Settings
from tests.fixtures.http import load
from tests.fixtures.training import train

END = datetime(2026, 6, 1, tzinfo=UTC)
# Each of these made LightGBM refuse the feature names ("special JSON characters"), which failed
# every training job of every target; the last would be parsed as mathtext by matplotlib.
HOSTILE = ["crm:stage", 'tier{"x"}', "a,b[0]", "$\\frac{1}{0$"]


@pytest.mark.slow  # trains on a simulated world: 20 s or more
async def test_trait_keys_and_event_types_with_json_characters_train_score_and_explain(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=400, end=END, seed=4)
    for n, account in enumerate(world.accounts):
        account["traits"] = {
            **account.get("traits", {}),
            HOSTILE[0]: n % 7,
            HOSTILE[1]: ["gold", "silver", "bronze"][n % 3],
            HOSTILE[2]: float(n % 5),
            HOSTILE[3]: n % 2,
        }
    accounts = sorted({a["account_id"] for a in world.accounts})
    # Two types with different rhythms: columns that repeat another exactly are dropped.
    world.events += [
        {
            "type": kind,
            "account_id": account_id,
            "occurred_at": (END - timedelta(days=every * k + 1)).isoformat(),
        }
        for kind, every in (("page:view", 3), ('click{"button"}', 5))
        for account_id in accounts
        for k in range(40)
    ]
    await load(client, world)

    model_id = (await train(conn, settings, as_of=END))["model_id"]

    model = (await client.get(f"/v1/models/{model_id}")).json()
    names = {f["name"] for f in model["features"]}
    assert {f"trait_{k}" for k in HOSTILE} <= names
    # Whichever columns the search chose (all, or the compact ones), the event types are in.
    assert 'events_click{"button"}_30d' in names
    scored = await client.get(
        f"/v1/accounts/{accounts[0]}/scores", params={"target": "churn", "top": 50}
    )
    assert scored.status_code == 200, scored.text
    [score] = scored.json()["scores"]
    texts = {r["feature"]: r["text"] for r in score["reasons"]}
    # Each reason reads as words made from the name as it was sent.
    for feature, text in texts.items():
        if feature == "trait_crm:stage":
            assert text.startswith("Crm:stage: ")
        if feature == "events_page:view_30d":
            assert text.startswith("Page:view in the last 30 days: ")
    total = score["base_value"] + sum(r["contribution"] for r in score["reasons"])
    assert abs(total + score["other_contribution"] - score["margin"]) < 1e-9
    # The report draws shap's beeswarm with these names as labels.
    report = await client.get(f"/v1/models/{model_id}/report")
    assert report.status_code == 200, report.text
