"""Advocacy: a target trained on acts (referrals, reviews, references, case studies), not on
intentions, that beats NPS alone on the same rows; and asks that are limited."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from app.demo import simulator
from app.ml import datasets, scoring
from app.platform.settings import Settings
from tests.fixtures import training
from tests.fixtures.http import load
from tests.fixtures.scores import T0, new_scores, score

END = datetime(2026, 6, 1, tzinfo=UTC)
CUT = END - timedelta(days=90)  # trained on what is known here; judged on the 90 days after


@pytest.mark.slow  # trains on a simulated world: 20 s or more
async def test_an_advocacy_model_beats_nps_alone_on_the_same_rows(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=1000, end=END, seed=4)
    await load(client, world)

    # The default label of the advocacy target: one of the advocacy acts within the horizon.
    done = await training.train(conn, settings, as_of=CUT, target="advocacy")
    model = (await client.get(f"/v1/models/{done['model_id']}")).json()
    assert model["label"] == {"type": "event", "event_types": datasets.ADVOCACY_ACTS}

    # Out of time: every live account as of the cut, and whether it acted in the 90 days after.
    churned = {
        o["account_id"]
        for o in world.outcomes
        if o["kind"] == "churned" and datetime.fromisoformat(o["occurred_at"]) <= CUT
    }
    accounts = [a["account_id"] for a in world.accounts if a["account_id"] not in churned]
    acted = {
        e["account_id"]
        for e in world.events
        if e["type"] in datasets.ADVOCACY_ACTS
        and CUT < datetime.fromisoformat(e["occurred_at"]) <= END
    }
    latest_nps: dict[str, tuple[datetime, float]] = {}
    for e in world.events:
        at = datetime.fromisoformat(e["occurred_at"])
        account = e["account_id"]
        if (
            e["type"] == "nps_answered"
            and at <= CUT
            and (account not in latest_nps or at > latest_nps[account][0])
        ):
            latest_nps[account] = (at, float(e["value"]))
    probabilities = {}
    for i in range(0, len(accounts), 1000):
        body = (
            await client.post(
                "/v1/scores/batch",
                json={
                    "account_ids": accounts[i : i + 1000],
                    "targets": ["advocacy"],
                    "as_of": CUT.isoformat(),
                },
            )
        ).json()
        assert body["errors"] == []
        for r in body["results"]:
            probabilities[r["account_id"]] = r["scores"][0]["probability"]
    y = np.array([a in acted for a in accounts], dtype=float)
    assert 30 <= y.sum() <= 0.5 * len(y), y.sum()  # acts are neither rare nor the rule
    model_auc = roc_auc_score(y, [probabilities[a] for a in accounts])
    # NPS alone: the latest answer (a promoter ranks first); no answer ranks as a passive.
    nps_auc = roc_auc_score(y, [latest_nps.get(a, (CUT, 7.5))[1] for a in accounts])
    assert model_auc >= nps_auc + 0.05, (model_auc, nps_auc)
    assert model_auc >= 0.65, model_auc


async def test_an_account_asked_lately_raises_no_second_advocacy_insight(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    # Only the ask limit stands between two entries to the high band (no cooldown), and only
    # the entry raises (no rise is sharp enough).
    quick = settings.model_copy(update={"insight_cooldown_hours": 0, "insight_min_rise": 1.0})
    for account in ("asked", "not-asked"):
        assert (await client.put(f"/v1/accounts/{account}", json={"mrr": 100})).is_success

    def advocacy(account: str, at: datetime, p: float, band: str) -> scoring.Score:
        return dataclasses.replace(score(account, at, p, band), target="advocacy")

    first = [advocacy(a, T0, 0.8, "high") for a in ("asked", "not-asked")]
    assert await new_scores(conn, quick, first) == 2  # both entered the high band
    # The CSM asked one of them, and logged it.
    ask = {
        "event_id": "ask-1",
        "type": "advocacy_asked",
        "account_id": "asked",
        "contact_id": "c-1",
        "occurred_at": (T0 + timedelta(days=1)).isoformat(),
    }
    answer = await client.post("/v1/events/batch", json={"events": [ask]})
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    assert await conn.fetchval("SELECT count(*) FROM events WHERE type = 'advocacy_asked'") == 1
    # Both fall back, then enter the high band again a few weeks later.
    later = T0 + timedelta(days=20)
    await new_scores(conn, quick, [advocacy(a, later, 0.1, "low") for a in ("asked", "not-asked")])
    again = [advocacy(a, later + timedelta(days=7), 0.8, "high") for a in ("asked", "not-asked")]
    assert await new_scores(conn, quick, again) == 1
    raised = await conn.fetch(
        "SELECT account_id, next_step FROM insights WHERE target = 'advocacy' "
        "ORDER BY created_at, account_id"
    )
    assert [r["account_id"] for r in raised] == ["asked", "not-asked", "not-asked"]
    assert "advocacy_asked" in raised[0]["next_step"]
    # Past the limit (90 days), the account may be asked again.
    late = T0 + timedelta(days=120)
    await new_scores(conn, quick, [advocacy("asked", late, 0.1, "low")])
    assert (
        await new_scores(conn, quick, [advocacy("asked", late + timedelta(days=7), 0.8, "high")])
        == 1
    )
