"""Secrets custintel must be able to read back (the signing secrets senders issue, which verify
their deliveries) are stored encrypted with Fernet (AES-128-CBC and HMAC-SHA256, from
`cryptography`), never in the clear.

The key is CUSTINTEL_SECRET_KEY when set (every process of an installation needs the same one);
otherwise a key file under the data dir, made on first use, readable by its owner only. Losing
the key loses the stored secrets, not the data: the sources then need their secrets again.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from app.settings import Settings

KEY_FILE = "secret.key"


class Unreadable(RuntimeError):
    """A stored secret this key cannot decrypt (the key changed since it was stored)."""


@lru_cache(maxsize=8)
def _fernet(key: bytes) -> Fernet:
    return Fernet(key)


def _key(settings: Settings) -> bytes:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    return _file_key(str(settings.data_dir))


@lru_cache(maxsize=8)
def _file_key(data_dir: str) -> bytes:
    """Read (or made) once per data dir: not a file read for every delivery verified."""
    path = Path(data_dir).resolve() / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written whole under another name, then linked into place: two processes starting
        # together agree on the first key linked, and none reads a half-written file.
        draft = path.with_name(f"{path.name}.{os.getpid()}.draft")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_bytes().strip()


def seal(settings: Settings, secret: str) -> bytes:
    return _fernet(_key(settings)).encrypt(secret.encode())


def unseal(settings: Settings, sealed: bytes) -> str:
    try:
        return _fernet(_key(settings)).decrypt(sealed).decode()
    except InvalidToken:
        raise Unreadable("a stored secret does not decrypt with this key") from None
