"""Retention and revenue metrics against a ledger computed by hand, to the cent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.asyncio

# account: [(observed_at, fields)], each an upsert
LEDGER: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "a": [("2025-12-15", {"mrr": 100}), ("2026-02-10", {"mrr": 150})],  # upgrade in Feb
    "b": [("2025-12-20", {"mrr": 200, "segment": "enterprise"}), ("2026-02-20", {"mrr": 120})],
    "c": [("2025-12-01", {"mrr": 50.25})],  # churns mid-February
    "d": [("2025-11-01", {"mrr": 80}), ("2026-02-05", {"mrr": 90})],  # churns Jan, back Feb
    "e": [("2026-02-25", {"mrr": 30})],  # new in February
    "f": [("2025-12-01", {"name": "No MRR"})],  # churns in February, never paid
    "g": [("2026-01-05", {"mrr": 60}), ("2026-02-03", {"mrr": 90}), ("2026-02-27", {"mrr": 40})],
    "h": [("2026-01-01", {"mrr": 70})],  # new at the first instant of January
}
CHURNS = {
    "c": "2026-02-14T12:00:00Z",
    "d": "2026-01-10T00:00:00Z",
    "f": "2026-02-03T00:00:00Z",
    "h": "2026-02-28T23:59:59Z",
}


async def _ledger(client: httpx.AsyncClient) -> None:
    for account_id, upserts in LEDGER.items():
        for day, fields in upserts:
            body = {"segment": "smb", **fields} if day == upserts[0][0] else dict(fields)
            body["observed_at"] = f"{day}T00:00:00Z"
            answer = await client.put(f"/v1/accounts/{account_id}", json=body)
            assert answer.status_code in (200, 201), answer.text
    for account_id, at in CHURNS.items():
        answer = await client.post(
            "/v1/outcomes",
            json={"account_id": account_id, "kind": "churned", "occurred_at": at},
        )
        assert answer.status_code == 202, answer.text
    for n, (account_id, day) in enumerate(
        [("a", "2026-02-02"), ("a", "2026-02-20"), ("b", "2026-02-11"), ("a", "2026-01-04")]
    ):
        answer = await client.post(
            "/v1/events",
            json={
                "event_id": f"p{n}",
                "type": "purchase",
                "account_id": account_id,
                "occurred_at": f"{day}T10:00:00Z",
            },
        )
        assert answer.status_code == 202, answer.text


async def _report(client: httpx.AsyncClient, **query: str) -> dict[str, Any]:
    answer = await client.get("/v1/metrics/retention", params=query)
    assert answer.status_code == 200, answer.text
    report: dict[str, Any] = answer.json()
    return report


async def test_february_of_the_ledger_to_the_cent(client: httpx.AsyncClient) -> None:
    await _ledger(client)
    report = await _report(client, since="2026-01-01T00:00:00Z", until="2026-03-01T00:00:00Z")
    january, february = report["months"]
    assert january["month"] == "2026-01" and february["month"] == "2026-02"
    # January: a, b, c, d pay at the start; d churns; g and h are new (h at the first instant).
    assert january["start_mrr"] == 430.25
    assert january["churned_mrr"] == 80 and january["new_mrr"] == 130
    assert january["end_mrr"] == february["start_mrr"] == 480.25
    # February: a rises 50; b falls 80; g rises then falls within the month (-20 net); c churns
    # mid-month and h on its last second (their whole MRR); d is back (90); e is new (30).
    assert february["expansion_mrr"] == 50
    assert february["contraction_mrr"] == 100
    assert february["churned_mrr"] == 120.25
    assert february["reactivation_mrr"] == 90
    assert february["new_mrr"] == 30
    assert february["end_mrr"] == 430
    assert february["gross_revenue_retention"] == pytest.approx(260 / 480.25, abs=1e-12)
    assert february["net_revenue_retention"] == pytest.approx(310 / 480.25, abs=1e-12)
    # Logos at the start: a, b, c, f (no MRR, still a customer), g, h; d had churned.
    assert february["accounts_start"] == 6 and february["paying_start"] == 5
    assert february["logos_churned"] == 3 and february["logo_churn_rate"] == 0.5
    # Purchases in February: a twice, b once.
    assert february["purchasers"] == 2 and february["repeat_purchase_rate"] == 0.5
    assert january["purchasers"] == 1 and january["repeat_purchase_rate"] == 0


async def test_a_segment_and_the_signup_cohorts(client: httpx.AsyncClient) -> None:
    await _ledger(client)
    enterprise = await _report(
        client,
        since="2026-02-01T00:00:00Z",
        until="2026-03-01T00:00:00Z",
        segment="enterprise",
    )
    [february] = enterprise["months"]
    assert february["start_mrr"] == 200 and february["contraction_mrr"] == 80
    assert february["net_revenue_retention"] == pytest.approx(0.6)
    everyone = await _report(client, since="2026-01-01T00:00:00Z", until="2026-03-01T00:00:00Z")
    cohorts = {c["cohort"]: c for c in everyone["cohorts"]}
    # January's signups: g (60, then 40) and h (70, churned in February).
    assert cohorts["2026-01"]["accounts"] == 2
    assert cohorts["2026-01"]["logo_retention"] == [1.0, 0.5]
    assert cohorts["2026-01"]["revenue_retention"] == pytest.approx([1.0, 40 / 130])
    assert cohorts["2026-02"]["accounts"] == 1  # e


async def test_a_period_that_ends_before_it_starts_is_a_400(client: httpx.AsyncClient) -> None:
    answer = await client.get(
        "/v1/metrics/retention",
        params={"since": "2026-03-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
    )
    assert answer.status_code == 400


@pytest.mark.parametrize(
    ("since", "until", "status"),
    [
        ("2020-01-01T00:00:00Z", "2026-01-01T00:00:00Z", 400),  # 72 months: too long
        ("9999-11-01T00:00:00Z", "9999-12-31T23:59:59Z", 200),  # the last months there are
        ("1969-01-01T00:00:00Z", "1970-02-01T00:00:00Z", 422),  # the timestamps' own floor
    ],
)
async def test_periods_at_the_edges_of_time_answer_or_say_why(
    client: httpx.AsyncClient, since: str, until: str, status: int
) -> None:
    answer = await client.get("/v1/metrics/retention", params={"since": since, "until": until})
    assert answer.status_code == status, answer.text
    if status == 400:
        assert "at most 60 months" in answer.json()["detail"]
