"""Signing secrets at rest: sealed with a key from the settings or a key file of the data dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import ValidationError

from app import vault
from app.settings import Settings


def test_a_key_file_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    sealed = vault.seal(settings, "whsec_abc")
    assert b"whsec_abc" not in sealed
    key_file = tmp_path / "data" / vault.KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert vault.unseal(Settings(data_dir=tmp_path / "data"), sealed) == "whsec_abc"
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
    with pytest.raises(ValidationError, match="Fernet key"):
        Settings(secret_key="not-a-key")
