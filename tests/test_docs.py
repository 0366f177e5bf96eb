"""An integrator's documentation works on a server with no network: /docs and /redoc render in
a real browser (headless Chromium, host names other than the server's unresolvable) with every
asset served by custintel itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from app.platform.settings import Settings
from tests.fixtures import browser
from tests.fixtures.live import serve

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser

# Every operation of the contract is rendered (there are more; a blank page has none).
OPERATIONS = 30


def _render(url: str, base: str, profile: Path, operations: str) -> tuple[int, list[str]]:
    with browser.opened(url, profile, offline=True) as evaluate:
        count = browser.wait_for(
            evaluate,
            f"document.querySelectorAll({operations!r}).length >= {OPERATIONS} && "
            f"document.querySelectorAll({operations!r}).length",
            what=f"{url} did not render {OPERATIONS} operations",
        )
        # Scripts, styles, the spec: what the page needs. (ReDoc's sidebar also shows Redocly's
        # logo from their CDN, an <img> that offline is simply not shown.)
        resources: list[str] = evaluate(
            "performance.getEntriesByType('resource')"
            ".filter(e => e.initiatorType !== 'img').map(e => e.name)"
        )
    assert any(r.endswith(".js") for r in resources), resources
    return count, [r for r in resources if not r.startswith(base)]


@pytest.mark.parametrize(
    ("page", "operations"), [("/docs", ".opblock"), ("/redoc", "li[data-item-id]")]
)
async def test_docs_render_offline_from_the_server_alone(
    settings: Settings, tmp_path: Path, page: str, operations: str
) -> None:
    with serve(str(settings.database_url)) as base:
        count, elsewhere = await asyncio.to_thread(
            _render, base + page, base, tmp_path / "profile", operations
        )
    assert count >= OPERATIONS
    assert elsewhere == []
