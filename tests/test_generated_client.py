"""A client generated from openapi/openapi.json works against the running service."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.cli import OPENAPI_PATH
from tests.conftest import ADMIN_KEY
from tests.fixtures.live import serve

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser


def _generate(target: Path) -> None:
    config = target / "config.yaml"
    config.write_text("post_hooks: []\n")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(OPENAPI_PATH),
            "--meta",
            "none",
            "--config",
            str(config),
            "--output-path",
            str(target / "custintel_client"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # Every operation and schema must make it into the client, not be skipped with a warning.
    assert "Warning" not in done.stdout + done.stderr, done.stdout


async def test_generated_client_upserts_an_account_and_sends_an_event(
    database_url: str, tmp_path: Path
) -> None:
    await asyncio.to_thread(_generate, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        client_mod = importlib.import_module("custintel_client")
        upsert_account = importlib.import_module("custintel_client.api.accounts.upsert_account")
        get_account = importlib.import_module("custintel_client.api.accounts.get_account")
        ingest_event = importlib.import_module("custintel_client.api.events.ingest_event")
        models = importlib.import_module("custintel_client.models")
        with serve(database_url) as base:
            async with client_mod.AuthenticatedClient(base_url=base, token=ADMIN_KEY) as client:
                await _exercise(client, models, upsert_account, get_account, ingest_event)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m.startswith("custintel_client")]:
            del sys.modules[name]


async def _exercise(
    client: Any, models: Any, upsert_account: Any, get_account: Any, ingest_event: Any
) -> None:
    traits = models.AccountUpsertTraits.from_dict({"seats": 12, "region": "eu"})
    account = await upsert_account.asyncio(
        "gen-acme",
        client=client,
        body=models.AccountUpsert(name="Gen Acme", segment="smb", mrr=99.0, traits=traits),
    )
    # The upsert answers the profile and the trait keys left out past a budget (none here).
    assert isinstance(account, models.AccountUpserted), account
    assert account.dropped == []
    assert account.name == "Gen Acme" and account.traits.to_dict() == {
        "seats": 12,
        "region": "eu",
    }

    accepted = await ingest_event.asyncio(
        client=client,
        body=models.EventIn(
            type_="login",
            occurred_at=datetime.now(UTC),
            account_id="gen-acme",
            event_id="gen-1",
        ),
    )
    assert isinstance(accepted, models.EventAccepted), accepted
    assert accepted.event_id == "gen-1" and accepted.duplicate is False

    missing = await get_account.asyncio("nobody", client=client)
    assert isinstance(missing, models.Problem) and missing.status == 404
