"""Insights raised from new scores, routed by rules with stable holdouts, read and updated as an
inbox; routing rules managed over the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from app.activation import insights, routing
from app.platform.settings import Settings
from app.voc import enrich, sentiment
from tests.fixtures.scores import T0, new_scores, score


async def test_entering_high_and_sharp_rises_raise_routed_insights_once(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    for account in ("a1", "a2", "a3"):
        body = {"segment": "enterprise", "owner_email": f"owner-{account}@vendor.example"}
        assert (await client.put(f"/v1/accounts/{account}", json=body)).status_code == 200
    enterprise = await client.post(
        "/v1/routing-rules",
        json={
            "name": "enterprise churn to CSM",
            "match": {"target": "churn", "band": "high", "segment": "enterprise"},
            "destination_ids": ["crm"],
        },
    )
    assert enterprise.status_code == 201, enterprise.text
    rises = await client.post(
        "/v1/routing-rules",
        json={"name": "rises", "match": {"kind": "score_rise"}, "owner": "team@vendor.example"},
    )
    await client.post("/v1/routing-rules", json={"name": "smb only", "match": {"segment": ["smb"]}})

    first = await new_scores(
        conn, settings, [score("a1", T0, 0.1, "low"), score("a2", T0, 0.6, "high")]
    )
    assert first == 1  # a2's first score is high
    raised = await new_scores(
        conn,
        settings,
        [
            score("a1", T0 + timedelta(days=1), 0.5, "high"),  # entered high, rose by 0.4
            score("a2", T0 + timedelta(days=1), 0.65, "high"),  # was high already
            score("a3", T0 + timedelta(days=1), 0.7, "high"),  # first score, high
        ],
    )
    assert raised == 3
    listed = (await client.get("/v1/insights", params={"owner": "owner-a1@vendor.example"})).json()
    assert sorted(i["kind"] for i in listed) == ["band_entered", "score_rise"]
    entered = next(i for i in listed if i["kind"] == "band_entered")
    assert entered["previous_band"] == "low" and entered["band"] == "high"
    assert entered["reasons"][0]["text"] == "Support tickets still open: 3"
    assert entered["next_step"]
    [rule] = entered["decision"]["rules"]
    assert rule["rule_id"] == enterprise.json()["rule_id"]
    assert rule["owner"] == "owner-a1@vendor.example" and rule["destination_ids"] == ["crm"]
    rise = next(i for i in listed if i["kind"] == "score_rise")
    assert [r["rule_id"] for r in rise["decision"]["rules"]] == [
        enterprise.json()["rule_id"],
        rises.json()["rule_id"],
    ]
    assert rise["decision"]["rules"][1]["owner"] == "team@vendor.example"

    # Out of high and back in within the cooldown: nothing new.
    await new_scores(conn, settings, [score("a1", T0 + timedelta(days=2), 0.2, "medium")])
    again = await new_scores(conn, settings, [score("a1", T0 + timedelta(days=3), 0.5, "high")])
    assert again == 0

    # The inbox: acknowledge with a note.
    patched = await client.patch(
        f"/v1/insights/{entered['insight_id']}", json={"status": "acknowledged", "note": "called"}
    )
    assert patched.status_code == 200
    assert patched.json()["status"] == "acknowledged" and patched.json()["note"] == "called"
    acknowledged = (await client.get("/v1/insights", params={"status": "acknowledged"})).json()
    assert [i["insight_id"] for i in acknowledged] == [entered["insight_id"]]
    assert (await client.patch("/v1/insights/nope", json={"status": "resolved"})).status_code == 404
    bad = await client.patch(f"/v1/insights/{entered['insight_id']}", json={"status": "done"})
    assert bad.status_code == 422


def test_holdout_assignment_is_stable_and_near_its_share() -> None:
    accounts = [f"acct-{n}" for n in range(20_000)]
    held = [routing.in_holdout("rule-1", a, 0.1) for a in accounts]
    assert held == [routing.in_holdout("rule-1", a, 0.1) for a in accounts]
    assert 0.09 <= sum(held) / len(held) <= 0.11
    other = [routing.in_holdout("rule-2", a, 0.1) for a in accounts]
    assert held != other  # each rule draws its own holdout


async def test_routing_rules_are_managed_over_the_api(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/routing-rules",
        json={
            "name": "expansion",
            "match": {"target": "expansion", "traits": {"region": ["eu", "na"]}},
            "holdout_share": 0.1,
        },
    )
    assert created.status_code == 201
    rule_id = created.json()["rule_id"]
    patched = await client.patch(f"/v1/routing-rules/{rule_id}", json={"enabled": False})
    assert patched.json()["enabled"] is False and patched.json()["name"] == "expansion"
    assert patched.json()["match"]["traits"] == {"region": ["eu", "na"]}
    assert [r["rule_id"] for r in (await client.get("/v1/routing-rules")).json()] == [rule_id]
    assert (await client.delete(f"/v1/routing-rules/{rule_id}")).status_code == 204
    assert (await client.get(f"/v1/routing-rules/{rule_id}")).status_code == 404
    too_much = await client.post("/v1/routing-rules", json={"name": "x", "holdout_share": 0.9})
    assert too_much.status_code == 422


async def test_uplift_compares_delivered_with_held_out_accounts(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    rule = (
        await client.post(
            "/v1/routing-rules", json={"name": "playbook", "match": {}, "holdout_share": 0.5}
        )
    ).json()
    accounts = [f"u{n}" for n in range(40)]
    for account in accounts:
        await client.put(f"/v1/accounts/{account}", json={"segment": "smb"})
    await new_scores(conn, settings, [score(a, T0, 0.8, "high") for a in accounts])
    held = {a for a in accounts if routing.in_holdout(rule["rule_id"], a, 0.5)}
    assert 8 <= len(held) <= 32

    # Delivered accounts churn less: every third of them, against every other held-out one.
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    delivered = [a for a in accounts if a not in held]
    churners = delivered[::3] + sorted(held)[::2]
    for account in churners:
        body = {"account_id": account, "kind": "churned", "occurred_at": soon}
        assert (await client.post("/v1/outcomes", json=body)).status_code == 202
    # A churn before the insight does not count.
    before = {"account_id": delivered[1], "kind": "churned", "occurred_at": "2020-01-01T00:00:00Z"}
    await client.post("/v1/outcomes", json=before)

    body = (await client.get(f"/v1/routing-rules/{rule['rule_id']}/uplift")).json()
    n1, k1 = len(delivered), len(delivered[::3])
    n0, k0 = len(held), len(sorted(held)[::2])
    assert body["delivered"] == {"accounts": n1, "outcomes": k1, "rate": k1 / n1}
    assert body["held_out"] == {"accounts": n0, "outcomes": k0, "rate": k0 / n0}
    p1, p0 = k1 / n1, k0 / n0
    assert body["difference"] == pytest.approx(p1 - p0)
    se = (p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0) ** 0.5
    assert body["interval_95"] == pytest.approx([p1 - p0 - 1.96 * se, p1 - p0 + 1.96 * se])
    assert body["difference"] < 0 and body["window_closed"] is False
    # Held-out accounts' insights are recorded but not delivered anywhere.
    inbox = (await client.get("/v1/insights", params={"limit": 100})).json()
    for insight in inbox:
        [decision] = insight["decision"]["rules"]
        assert decision["holdout"] == (insight["account_id"] in held)


async def test_a_detractor_answer_from_an_account_at_risk_raises_one_insight(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    bands = {"risky": (0.6, "high"), "watched": (0.3, "medium"), "calm": (0.05, "low")}
    for account, (p, band) in bands.items():
        body = {"segment": "enterprise", "owner_email": f"owner-{account}@vendor.example"}
        assert (await client.put(f"/v1/accounts/{account}", json=body)).status_code == 200
        await new_scores(conn, settings, [score(account, T0, p, band)])
    await conn.execute("DELETE FROM insights")  # the scores' own insights are not this test's
    now = datetime.now(UTC)
    answers = [
        ("n1", "risky", 3, "Support never answered my ticket"),
        ("n2", "calm", 2, "Meh"),  # low churn risk: no insight
        ("n3", "watched", 9, "Great"),  # a promoter: no insight
        ("n4", "watched", 6, None),  # a detractor without a comment
        ("n5", "risky", 11, None),  # off the scale: no insight
    ]
    events = [
        {
            "event_id": i,
            "type": "nps_answered",
            "account_id": a,
            "value": v,
            "occurred_at": now.isoformat(),
        }
        | ({"text": t} if t else {})
        for i, a, v, t in answers
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["errors"] == []

    assert await insights.from_detractors(conn, settings) == 2
    assert await insights.from_detractors(conn, settings) == 0  # once per answer
    listed = (await client.get("/v1/insights", params={"kind": "detractor"})).json()
    by_account = {i["account_id"]: i for i in listed}
    assert set(by_account) == {"risky", "watched"}
    risky = by_account["risky"]
    assert (risky["target"], risky["band"], risky["probability"]) == ("churn", "high", 0.6)
    assert risky["details"]["nps"] == 3
    assert risky["details"]["comment"] == "Support never answered my ticket"
    assert risky["reasons"][0]["text"] == "Support tickets still open: 3"
    assert "detractor" in risky["next_step"]
    assert by_account["watched"]["details"]["comment"] is None
    # Another detractor answer within the cooldown: no second insight for the account.
    later = {**events[0], "event_id": "n6", "value": 1}
    await client.post("/v1/events", json=later)
    assert await insights.from_detractors(conn, settings) == 0


async def test_a_theme_whose_week_jumps_across_accounts_raises_one_insight_with_verbatims(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    for name, word in (("Exports", "export"), ("Invoices", "invoice"), ("SSO", "sso")):
        seeded = await client.post("/v1/voc/themes", json={"name": name, "keywords": [word]})
        assert seeded.status_code == 201
    rule = await client.post(
        "/v1/routing-rules",
        json={"name": "product", "match": {"kind": "theme_jump"}, "owner": "pm@vendor.example"},
    )
    assert rule.status_code == 201
    texts = [
        # Exports: two texts in the four weeks before, then fourteen from five accounts.
        *[(f"a{n % 5}", 1 + n % 6, f"The export failed again, attempt {n}") for n in range(14)],
        ("a1", 10, "How does the export work?"),
        ("a2", 20, "Is there an export to Excel?"),
        # Invoices: three a week for five weeks, as usual.
        *[(f"a{n % 4}", 2 + 7 * (n // 3), f"Invoice question {n}") for n in range(15)],
        # SSO: one loud account alone.
        *[("a9", 1 + n % 5, f"SSO is down for us, try {n}") for n in range(12)],
    ]
    events = [
        {
            "event_id": f"t{n}",
            "type": "ticket_opened",
            "account_id": account,
            "occurred_at": (T0 - timedelta(days=days)).isoformat(),
            "text": text,
        }
        for n, (account, days, text) in enumerate(texts)
    ]
    assert (await client.post("/v1/events/batch", json={"events": events})).json()["errors"] == []
    await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=100)

    assert await insights.from_theme_jumps(conn, settings, now=T0) == 1
    assert await insights.from_theme_jumps(conn, settings, now=T0) == 0  # once per theme
    [jump] = (await client.get("/v1/insights", params={"kind": "theme_jump"})).json()
    details = jump["details"]
    assert (details["name"], details["texts_7d"], details["accounts_7d"]) == ("Exports", 14, 5)
    assert details["usual_week"] == 2 / 4 and details["chance"] < 0.01
    assert len(details["examples"]) == 3
    assert all("export failed" in e["text"] for e in details["examples"])
    scores = [e["sentiment"]["score"] for e in details["examples"]]
    assert scores == sorted(scores)  # the most negative first
    assert jump["account_id"] is None and "example texts" in jump["next_step"]
    [decision] = jump["decision"]["rules"]
    assert (
        decision["owner"] == "pm@vendor.example" and decision["rule_id"] == rule.json()["rule_id"]
    )


async def test_old_survey_answers_imported_today_raise_no_detractor_insight(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    body = {"segment": "enterprise", "owner_email": "owner@vendor.example"}
    assert (await client.put("/v1/accounts/risky", json=body)).status_code == 200
    await new_scores(conn, settings, [score("risky", T0, 0.6, "high")])
    now = datetime.now(UTC)
    backfill = [
        {
            "event_id": f"old-{days}",
            "type": "nps_answered",
            "account_id": "risky",
            "value": 2,
            "text": "Imported from last year's survey",
            "occurred_at": (now - timedelta(days=days)).isoformat(),
        }
        for days in (2, 40, 300)
    ]
    assert (await client.post("/v1/events/batch", json={"events": backfill})).json()["errors"] == []
    assert await insights.from_detractors(conn, settings) == 0
    fresh = {**backfill[0], "event_id": "today", "occurred_at": now.isoformat()}
    assert (await client.post("/v1/events", json=fresh)).status_code == 202
    assert await insights.from_detractors(conn, settings) == 1
