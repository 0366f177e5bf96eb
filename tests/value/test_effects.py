"""Which actions work: a planted effect is recovered within its interval, and too few accounts
say so with how many more it takes."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson

from app.value import effects

NOW = datetime(2026, 9, 1, tzinfo=UTC)
RULE: dict[str, object] = {
    "rule_id": "r1",
    "name": "Red accounts",
    "owner": None,
    "destination_ids": [],
}


def test_the_sample_size_of_ten_to_seven_percent_is_1355_per_arm() -> None:
    # 1,355.4, rounded up: "about 1,355 accounts per arm" for a 10% to 7% churn change.
    assert effects.needed_per_arm(0.10) == 1356
    assert effects.needed_per_arm(0.0) is None


async def _world(
    conn: asyncpg.Connection,
    client: httpx.AsyncClient,
    *,
    per_arm: int,
    held_rate: float,
    acted_rate: float,
    seed: int,
    recent: int = 0,
) -> None:
    """Accounts whose churn insight a rule delivered (and a CSM called) or held out, 120 days
    ago, churning within 90 days at the planted rates; `recent` more whose horizon is open."""
    rng = random.Random(seed)
    rows, insights, events, outcomes = [], [], [], []
    for n in range(2 * per_arm + recent):
        account = f"acc-{n}"
        holdout = n % 2 == 1
        at = NOW - timedelta(days=5 if n >= 2 * per_arm else 120)
        rows.append((account,))
        insight_id = uuid.uuid4().hex
        decision = {"rules": [{**RULE, "holdout": holdout}]}
        insights.append((insight_id, account, orjson.dumps(decision).decode(), at))
        if not holdout:
            properties = {"kind": "call", "insight_id": insight_id, "by": "ana@example.com"}
            events.append(
                {
                    "event_id": f"act-{n}",
                    "type": "action_taken",
                    "source": "console",
                    "account_id": account,
                    "occurred_at": at.isoformat(),
                    "properties": properties,
                }
            )
        if at < NOW - timedelta(days=90) and rng.random() < (held_rate if holdout else acted_rate):
            churned = at + timedelta(days=rng.randint(1, 89))
            outcomes.append(
                {
                    "outcome_id": f"o-{n}",
                    "account_id": account,
                    "kind": "churned",
                    "occurred_at": churned.isoformat(),
                }
            )
    await conn.executemany("INSERT INTO accounts (account_id) VALUES ($1)", rows)
    await conn.executemany(
        "INSERT INTO insights (insight_id, kind, target, account_id, reasons, next_step, details, "
        "status, decision, created_at, updated_at) "
        "VALUES ($1, 'score', 'churn', $2, '[]', 'Call', '{}', 'open', $3::jsonb, $4, $4)",
        insights,
    )
    # The actions and outcomes go in as every sender's do; insights are raised by custintel.
    for path, key, items in (("events", "events", events), ("outcomes", "outcomes", outcomes)):
        answer = await client.post(f"/v1/{path}/batch", json={key: items})
        assert answer.status_code == 200 and answer.json()["errors"] == [], answer.text[:500]


async def test_a_planted_effect_is_recovered_within_its_interval(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await _world(conn, client, per_arm=900, held_rate=0.30, acted_rate=0.15, seed=3, recent=40)
    found = await effects.effects(conn, target="churn", horizon_days=90, now=NOW)
    [rule] = found.rules
    [call] = found.actions
    for effect in (rule, call):
        assert effect.treated.accounts == 900 and effect.held_out.accounts == 900
        assert effect.treated.pending == 20 and effect.held_out.pending == 20
        assert effect.interval_95 is not None
        low, high = effect.interval_95
        assert low < -0.15 < high and high < 0  # the planted 15-point drop, told apart from 0
        assert effect.enough_evidence
        assert "acting went with fewer churned outcomes" in effect.verdict
    assert rule.name == "Red accounts (r1)" and call.name == "call"


async def test_too_few_accounts_are_not_enough_evidence_yet(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    await _world(conn, client, per_arm=60, held_rate=0.10, acted_rate=0.07, seed=4)
    answer = await client.get("/v1/actions/effects", params={"target": "churn", "horizon_days": 90})
    assert answer.status_code == 200, answer.text
    [rule] = answer.json()["rules"]
    assert not rule["enough_evidence"]
    assert rule["verdict"].startswith(
        "Not enough evidence yet: 60 accounts acted on and 60 held out"
    )
    needed = rule["needed_per_arm"]
    assert needed == effects.needed_per_arm(rule["held_out"]["rate"])
    assert f"about {needed - 60:,} more" in rule["verdict"]


async def test_advocacy_counts_its_acts_which_are_events_not_outcomes(
    conn: asyncpg.Connection, client: httpx.AsyncClient
) -> None:
    at = NOW - timedelta(days=120)
    accounts = [f"adv-{n}" for n in range(6)]
    rows = [(a,) for a in accounts]
    await conn.executemany("INSERT INTO accounts (account_id) VALUES ($1)", rows)
    insights = [
        (
            uuid.uuid4().hex,
            a,
            orjson.dumps({"rules": [{**RULE, "holdout": n % 2 == 1}]}).decode(),
            at,
        )
        for n, a in enumerate(accounts)
    ]
    await conn.executemany(
        "INSERT INTO insights (insight_id, kind, target, account_id, reasons, next_step, details, "
        "status, decision, created_at, updated_at) "
        "VALUES ($1, 'score', 'advocacy', $2, '[]', 'Ask', '{}', 'open', $3::jsonb, $4, $4)",
        insights,
    )
    # Two of the three delivered accounts refer someone within 90 days, one held out does; a
    # review after the horizon does not count.
    acts = [("adv-0", 10, "referral_made"), ("adv-2", 30, "review_posted")]
    acts += [("adv-1", 60, "reference_given"), ("adv-3", 100, "review_posted")]
    events = [
        {
            "event_id": f"act-{a}",
            "type": kind,
            "account_id": a,
            "occurred_at": (at + timedelta(days=days)).isoformat(),
        }
        for a, days, kind in acts
    ]
    answer = await client.post("/v1/events/batch", json={"events": events})
    assert answer.status_code == 200 and answer.json()["errors"] == [], answer.text
    found = await effects.effects(conn, target="advocacy", horizon_days=90, now=NOW)
    [rule] = found.rules
    assert (rule.treated.accounts, rule.treated.outcomes) == (3, 2)
    assert (rule.held_out.accounts, rule.held_out.outcomes) == (3, 1)
