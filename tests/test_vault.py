"""Signing secrets at rest: sealed with a key from the settings or a key file of the data dir."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import standardwebhooks
from cryptography.fernet import Fernet
from pydantic import ValidationError

from app.activation import deliveries
from app.governance import vault
from app.platform.settings import Settings


def test_a_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", secret_key=None)
    sealed = vault.seal(settings, "whsec_abc")
    assert b"whsec_abc" not in sealed
    key_file = tmp_path / "data" / vault.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert (
        vault.unseal(Settings(data_dir=tmp_path / "data", secret_key=None), sealed) == "whsec_abc"
    )
    assert list((tmp_path / "data").iterdir()) == [key_file]  # no draft left behind


def test_the_configured_key_wins_and_another_key_cannot_read(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = Settings(data_dir=tmp_path, secret_key=key)
    sealed = vault.seal(settings, "s3cret")
    assert not (tmp_path / vault.KEY_FILE).exists()
    assert vault.unseal(settings, sealed) == "s3cret"
    with pytest.raises(vault.Unreadable):
        vault.unseal(Settings(data_dir=tmp_path, secret_key=Fernet.generate_key().decode()), sealed)


def test_a_malformed_secret_key_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="CUSTINTEL_SECRET_KEY must be a key"):
        Settings(secret_key="not-a-key")


def test_secrets_are_sealed_with_aes_gcm_and_older_fernet_tokens_still_read(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, secret_key=None)
    sealed = vault.seal(settings, "whsec_new")
    assert sealed[:1] == vault.VERSION and len(sealed) == 1 + 12 + len("whsec_new") + 16
    assert vault.seal(settings, "whsec_new") != sealed  # a fresh nonce each time
    key = vault.keys(settings)[0]
    legacy = Fernet(key).encrypt(b"whsec_old")
    assert vault.unseal(settings, legacy) == "whsec_old"


def test_a_list_of_keys_seals_with_the_first_and_reads_with_any(tmp_path: Path) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_before = vault.seal(Settings(data_dir=tmp_path, secret_key=old), "s1")
    both = Settings(data_dir=tmp_path, secret_key=f"{new},{old}")
    assert vault.unseal(both, sealed_before) == "s1"
    sealed_after = vault.seal(both, "s2")
    assert vault.unseal(Settings(data_dir=tmp_path, secret_key=new), sealed_after) == "s2"
    with pytest.raises(vault.Unreadable):
        vault.unseal(Settings(data_dir=tmp_path, secret_key=old), sealed_after)


async def _columns_holding(conn: asyncpg.Connection, needle: str) -> list[str]:
    """Every table.column holding `needle` (bytes read as they are)."""
    columns = await conn.fetch(
        "SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c "
        "JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' "
        "AND c.data_type IN ('text', 'character varying', 'jsonb', 'bytea', 'ARRAY')"
    )
    found = []
    for table, column, kind in columns:
        read = f"""encode("{column}", 'escape')""" if kind == "bytea" else f'"{column}"::text'
        query = f'SELECT count(*) FROM "{table}" WHERE position($1 in {read}) > 0'
        if await conn.fetchval(query, needle):
            found.append(f"{table}.{column}")
    return found


async def test_a_destination_secret_is_unreadable_in_postgres_and_still_signs(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings, app: Any
) -> None:
    app.state.runtime.settings = settings.model_copy(update={"allow_private_destinations": True})
    created = await client.post(
        "/v1/destinations", json={"name": "crm", "url": "http://127.0.0.1:9/hook"}
    )
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert await _columns_holding(conn, secret) == []
    assert await _columns_holding(conn, secret.removeprefix("whsec_")) == []
    row = await conn.fetchrow("SELECT * FROM destinations")
    headers = deliveries._signed("msg_1", b'{"a":1}', row, settings)
    verified = standardwebhooks.Webhook(secret).verify(b'{"a":1}', headers)
    assert verified == {"a": 1}


async def test_secrets_kept_in_the_clear_by_an_older_version_are_sealed_before_serving(
    conn: asyncpg.Connection, settings: Settings
) -> None:
    plain = "whsec_" + "b" * 40
    await conn.execute(
        "INSERT INTO destinations (destination_id, name, kind, url, secret, enabled) "
        "VALUES ('dst_old', 'old', 'webhook', 'http://127.0.0.1:9/', $1, true)",
        plain.encode(),
    )
    assert await _columns_holding(conn, plain) == ["destinations.secret"]
    done = await vault.prepare(conn, settings)
    assert done["sealed"] == 1
    assert await _columns_holding(conn, plain) == []
    row = await conn.fetchrow("SELECT * FROM destinations")
    assert vault.unseal(settings, row["secret"]) == plain
    assert (await vault.prepare(conn, settings))["sealed"] == 0  # idempotent


def _cli(
    settings: Settings, *args: str, key: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CUSTINTEL_DATABASE_URL": str(settings.database_url),
        "CUSTINTEL_DATA_DIR": str(settings.data_dir),
    }
    env.pop("CUSTINTEL_SECRET_KEY", None)
    if key is not None:
        env["CUSTINTEL_SECRET_KEY"] = key
    elif settings.secret_key is not None:
        env["CUSTINTEL_SECRET_KEY"] = settings.secret_key.get_secret_value()
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_wrong_key_stops_the_service_and_a_rotation_reseals_everything(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    source = await client.post(
        "/v1/sources", json={"kind": "stripe", "name": "s", "secret": "whsec_" + "c" * 32}
    )
    assert source.status_code == 201
    wrong = await asyncio.to_thread(_cli, settings, "migrate", key=Fernet.generate_key().decode())
    assert wrong.returncode == 78
    assert "do not decrypt with the configured key (CUSTINTEL_SECRET_KEY)" in wrong.stderr
    assert "sealed with" in wrong.stderr  # and says what to do

    # With CUSTINTEL_SECRET_KEY: sealed again under a new key, printed to be put first.
    old = settings.secret_key.get_secret_value() if settings.secret_key else ""
    rotated = await asyncio.to_thread(_cli, settings, "secrets", "rotate", key=old)
    assert rotated.returncode == 0, rotated.stderr
    line = next(x for x in rotated.stdout.splitlines() if x.startswith("CUSTINTEL_SECRET_KEY="))
    new, kept = line.removeprefix("CUSTINTEL_SECRET_KEY=").split(",")
    assert kept == old and new != old
    [sealed] = await conn.fetch("SELECT secret FROM sources")
    assert vault.unseal(Settings(secret_key=new), sealed["secret"]) == "whsec_" + "c" * 32
    assert (await asyncio.to_thread(_cli, settings, "migrate", key=f"{new},{old}")).returncode == 0
    assert (await asyncio.to_thread(_cli, settings, "migrate", key=old)).returncode == 78


async def test_a_rotation_with_the_key_file_replaces_it(
    conn: asyncpg.Connection, settings: Settings, tmp_path: Path
) -> None:
    data = Settings(data_dir=tmp_path / "keys", secret_key=None)
    await conn.execute(
        "INSERT INTO installation_secrets (name, sealed) VALUES ('x', $1)",
        vault.seal_bytes(data, b"pepper"),
    )
    before = vault.keys(data)[0]
    rotated = await asyncio.to_thread(
        _cli, data.model_copy(update={"database_url": settings.database_url}), "secrets", "rotate"
    )
    assert rotated.returncode == 0, rotated.stderr
    key_file = tmp_path / "keys" / vault.KEY_FILE
    after = key_file.read_bytes().strip()
    assert after != before and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (tmp_path / "keys" / vault.NEXT_KEY_FILE).exists()
    sealed = await conn.fetchval("SELECT sealed FROM installation_secrets WHERE name = 'x'")
    assert vault.unseal_bytes(Settings(secret_key=after.decode()), sealed) == b"pepper"
