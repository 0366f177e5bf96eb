"""The console in a real browser: Playwright driving Debian's Chromium against a real server, on
a machine whose network ends at loopback."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page, async_playwright

from app.demo import simulator
from app.ml import batch, drift, performance
from app.platform import jobs
from app.platform.settings import Settings
from tests.fixtures.console import PASSWORD, make_user
from tests.fixtures.http import load
from tests.fixtures.live import serve
from tests.fixtures.scores import new_scores, score
from tests.fixtures.training import train

pytestmark = pytest.mark.slow  # starts a server and a browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM, "browser tests need Chromium (Debian: apt-get install chromium)"
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                # As on a server with no network: every host but loopback fails to resolve.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
            ],
        )
        yield browser
        await browser.close()


async def _page(browser: Browser, base: str, *, javascript: bool = True) -> tuple[Page, list[str]]:
    """A fresh page, and the list of every URL it requests (to check none leaves the server)."""
    context = await browser.new_context(java_script_enabled=javascript)
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    return page, requested


async def _sign_in(page: Page, base: str, email: str) -> None:
    await page.goto(f"{base}/app/")
    assert page.url.startswith(f"{base}/app/login")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{base}/app/")


async def test_a_csm_works_their_book_and_inbox_in_the_browser_with_no_network(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    chromium: Browser,
) -> None:
    await make_user(conn, "ana@example.com", "csm")
    for account_id, owner, mrr in (
        ("small", "ana@example.com", 100.0),
        ("big", "ana@example.com", 1000.0),
        ("theirs", "bo@example.com", 9000.0),
    ):
        answer = await client.put(
            f"/v1/accounts/{account_id}",
            json={"name": account_id.title(), "mrr": mrr, "owner_email": owner},
        )
        assert answer.status_code in (200, 201)
    scores = [score("small", NOW, 0.9), score("big", NOW, 0.3), score("theirs", NOW, 0.9)]
    await new_scores(conn, settings, scores)
    insight_id = await conn.fetchval("SELECT insight_id FROM insights WHERE account_id = 'small'")

    with serve(str(settings.database_url), models_dir=str(settings.models_dir)) as base:
        page, requested = await _page(chromium, base)
        await _sign_in(page, base, "ana@example.com")
        # The book: my accounts only, by value at risk (1000 x 0.3 before 100 x 0.9).
        rows = await page.locator("table.book tbody tr td:first-child").all_inner_texts()
        assert rows == ["Big", "Small"]
        assert await page.locator("text=Support tickets still open: 3").count() == 2

        # Someone else's account is not there at all.
        other = await page.goto(f"{base}/app/accounts/theirs")
        assert other is not None and other.status == 404

        # The inbox: acknowledge in place (htmx), then log a call.
        await page.goto(f"{base}/app/inbox")
        row = page.locator(f"#insight-{insight_id}")
        await row.get_by_role("button", name="Acknowledge").click()
        await page.locator(f"#insight-{insight_id} .status", has_text="acknowledged").wait_for()
        row = page.locator(f"#insight-{insight_id}")
        await row.get_by_label("I did").select_option("call")
        await row.get_by_label("Note").fill("Booked a renewal review")
        await row.get_by_role("button", name="Log action").click()
        await page.locator(f"#insight-{insight_id} .meta", has_text="Booked a renewal").wait_for()

        # A post without the session's CSRF token is refused.
        refused = await page.evaluate(
            """async (id) => (await fetch('/app/inbox/' + id, {method: 'POST',
                 body: new URLSearchParams({status: 'resolved'})})).status""",
            insight_id,
        )
        assert refused == 403

        # The other pages a CSM may open render from this server alone.
        for path, heading in (
            ("/app/models", "Is the score right?"),
            ("/app/voc", "Voice of the customer"),
        ):
            opened = await page.goto(f"{base}{path}")
            assert opened is not None and opened.status == 200
            assert await page.get_by_role("heading", name=heading, exact=True).count() == 1

        # With JavaScript off the same pages and forms work.
        plain, plain_requested = await _page(chromium, base, javascript=False)
        await _sign_in(plain, base, "ana@example.com")
        await plain.goto(f"{base}/app/inbox")
        await plain.locator(f"#insight-{insight_id}").get_by_role("button", name="Resolve").click()
        await plain.wait_for_url(f"{base}/app/inbox")
        await plain.goto(f"{base}/app/accounts/small")
        assert await plain.get_by_role("heading", name="Small", exact=True).count() == 1

    assert all(u.startswith(base) for u in requested + plain_requested), [
        u for u in requested + plain_requested if not u.startswith(base)
    ]
    event = await conn.fetchrow("SELECT properties FROM events WHERE type = 'action_taken'")
    assert orjson.loads(event["properties"])["note"] == "Booked a renewal review"
    assert await conn.fetchval("SELECT status FROM insights WHERE insight_id = $1", insight_id) == (
        "resolved"
    )


END = datetime(2026, 6, 1, tzinfo=UTC)


async def test_the_account_says_what_changed_after_a_rescore_and_a_lead_opens_the_report(
    client: httpx.AsyncClient,
    conn: asyncpg.Connection,
    settings: Settings,
    chromium: Browser,
    tmp_path: Path,
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=300, end=END, seed=5)
    await load(client, world)
    model_id = (await train(conn, settings, as_of=END))["model_id"]

    async def progress(_: float) -> None:
        return None

    await batch.rescore(
        conn, targets=["churn"], as_of=END - timedelta(days=30), top=3, progress=progress
    )
    await batch.rescore(conn, targets=["churn"], as_of=END, top=3, progress=progress)
    # The account whose churn probability moved most between the two scores.
    moved = await conn.fetchrow(
        "SELECT account_id, probability, previous_probability FROM latest_scores "
        "WHERE target = 'churn' AND previous_probability IS NOT NULL "
        "ORDER BY abs(probability - previous_probability) DESC LIMIT 1"
    )
    assert moved["previous_probability"] is not None
    await make_user(conn, "lead@example.com", "lead")
    # The worker's evaluation, which the models page reads back (run here as the worker runs it).
    pool = await asyncpg.create_pool(str(settings.database_url), min_size=1, max_size=2)
    try:
        await jobs.run_here(
            pool,
            kind="evaluate",
            params={},
            handler=performance.handler(drift.Rule.of(settings)),
        )
    finally:
        await pool.close()

    with serve(str(settings.database_url), models_dir=str(settings.models_dir)) as base:
        page, requested = await _page(chromium, base)
        await _sign_in(page, base, "lead@example.com")
        await page.goto(f"{base}/app/accounts/{moved['account_id']}")
        section = page.locator("section.score").first
        heading = await section.locator("h2").inner_text()
        assert heading.startswith("Churn:") and f"{moved['probability']:.0%}" in heading
        changes = await section.locator("ul.changes li").all_inner_texts()
        assert changes and all(" from " in c or "unchanged" in c for c in changes), changes
        reasons = await section.locator("h3:has-text('Why') + ul li").all_inner_texts()
        assert reasons and reasons != ["Nothing stands out."]
        assert await section.locator("svg.chart polyline").count() == 1  # the score's history

        await page.goto(f"{base}/app/models")
        assert await page.locator("text=As the worker last evaluated the active models").count()
        assert await page.locator("section.model svg.chart").count() == 2  # calibration, lift
        await page.get_by_role("link", name="Open the report, in words first").click()
        await page.wait_for_url(f"{base}/app/models/{model_id}/report")
        assert await page.get_by_role("heading", name="In short").count() == 1
    assert all(u.startswith((base, "data:")) for u in requested)
