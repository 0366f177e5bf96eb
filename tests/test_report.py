"""The model report renders in a real browser (Debian's Chromium, headless), plots included."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.demo import simulator
from app.ml import batch
from app.platform.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.fixtures import browser
from tests.fixtures.http import load
from tests.fixtures.live import serve
from tests.fixtures.training import train

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser

END = datetime(2026, 6, 1, tzinfo=UTC)


def browser_images(page: Path, profile: Path) -> list[list[Any]]:
    """Open the page in headless Chromium and read back every image as the browser decoded it:
    [alt, complete, naturalWidth, naturalHeight]."""
    with browser.opened(page.as_uri(), profile) as evaluate:
        images: list[list[Any]] = evaluate(
            "Array.from(document.images).map("
            "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        return images


async def test_model_report_renders_with_every_plot_in_chromium(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    world = await asyncio.to_thread(simulator.generate, accounts=400, end=END, seed=12)
    await load(client, world)
    model_id = (await train(conn, settings, as_of=END))["model_id"]

    async def progress(_: float) -> None:
        return None

    # Scores old enough to have matured, so the report shows realized performance too.
    await batch.rescore(
        conn, targets=["churn"], as_of=END - timedelta(days=120), top=3, progress=progress
    )

    with serve(str(settings.database_url), models_dir=str(settings.models_dir)) as base:
        response = await asyncio.to_thread(
            httpx.get,
            f"{base}/v1/models/{model_id}/report",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=120,
        )
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "matured scores" in page and "realized (matured scores)" in page
    # It opens with what a customer-success lead needs, in words, before the plots.
    short = page.index("<h2>In short</h2>")
    assert short < page.index("<h2>The model</h2>") < page.index("ROC curve")
    opening = page[short : page.index("<h2>The model</h2>")]
    assert "Of the 10% of accounts this model puts highest, " in opening
    assert "churned within 90 days, against " in opening
    assert "on the same rows a logistic regression on the same features reaches" in opening
    assert "What drives it most: " in opening and "churn risk" in opening
    assert "<h2>Which actions work</h2>" in page
    assert "No routing rule has held out accounts and no action is logged." in page
    assert "<h2>Whom acting helps most</h2>" in page and "No uplift fit for churn yet" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    path = tmp_path / "report.html"
    path.write_text(page)

    images = await asyncio.to_thread(browser_images, path, tmp_path / "profile")
    alts = [alt for alt, *_ in images]
    for wanted in ("ROC curve", "Calibration", "Lift by decile", "SHAP summary, all segments"):
        assert wanted in alts, alts
    for alt, complete, width, height in images:
        assert complete and width > 200 and height > 150, (alt, width, height)
