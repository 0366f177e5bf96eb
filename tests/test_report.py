"""The model report renders in a real browser (Debian's Chromium, headless), plots included."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.sync.client import connect

from app import simulator
from app.ml import batch
from app.settings import Settings
from tests.api.test_models import load
from tests.conftest import ADMIN_KEY
from tests.live import free_port, serve
from tests.ml.test_closed_loop import train

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser

END = datetime(2026, 6, 1, tzinfo=UTC)
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_images(page: Path, profile: Path) -> list[list[Any]]:
    """Open the page in headless Chromium and read back every image as the browser decoded it:
    [alt, complete, naturalWidth, naturalHeight]."""
    assert CHROMIUM, "the browser test needs Chromium (Debian: apt-get install chromium)"
    port = free_port()
    browser = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-sync",
            "--no-first-run",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={profile}",
            page.as_uri(),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        socket_url = None
        while socket_url is None:
            assert time.monotonic() < deadline, "Chromium did not open the page"
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2).json()
                socket_url = next(
                    (t["webSocketDebuggerUrl"] for t in targets if t["url"] == page.as_uri()),
                    None,
                )
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with connect(socket_url, max_size=None) as ws:
            ids = iter(range(1, 10_000))

            def evaluate(expression: str) -> Any:
                n = next(ids)
                ws.send(
                    json.dumps(
                        {
                            "id": n,
                            "method": "Runtime.evaluate",
                            "params": {"expression": expression, "returnByValue": True},
                        }
                    )
                )
                while True:
                    message = json.loads(ws.recv(timeout=30))
                    if message.get("id") == n:
                        return message["result"]["result"]["value"]

            while evaluate("document.readyState") != "complete":
                assert time.monotonic() < deadline, "the page did not finish loading"
                time.sleep(0.2)
            images: list[list[Any]] = evaluate(
                "Array.from(document.images).map("
                "i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
            )
            return images
    finally:
        browser.terminate()
        browser.wait(30)


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
    assert "http://" not in page and "https://" not in page  # self-contained
    path = tmp_path / "report.html"
    path.write_text(page)

    images = await asyncio.to_thread(browser_images, path, tmp_path / "profile")
    alts = [alt for alt, *_ in images]
    for wanted in ("ROC curve", "Calibration", "Lift by decile", "SHAP summary, all segments"):
        assert wanted in alts, alts
    for alt, complete, width, height in images:
        assert complete and width > 200 and height > 150, (alt, width, height)
