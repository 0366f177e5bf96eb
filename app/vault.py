"""Secrets custintel must be able to read back (the signing secrets senders issue, which verify
their deliveries; those destinations sign with; the installation's hashing pepper) are stored
encrypted with AES-256-GCM (`cryptography`), never in the clear: a version byte, a random
96-bit nonce, then the ciphertext with its tag. Secrets sealed by earlier versions (Fernet)
are still read.

The key is CUSTINTEL_SECRET_KEY when set (every process of an installation needs the same one);
otherwise a key file under the data dir, made on first use, readable by its owner only. Losing
the key loses the stored secrets, not the data: the sources then need their secrets again.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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


VERSION = b"\x02"  # AES-256-GCM; a Fernet token starts with "gAAAAA"
NONCE_BYTES = 12


@lru_cache(maxsize=8)
def _aead(key: bytes) -> AESGCM:
    return AESGCM(base64.urlsafe_b64decode(key))


def seal_bytes(settings: Settings, secret: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + _aead(_key(settings)).encrypt(nonce, secret, VERSION)


def unseal_bytes(settings: Settings, sealed: bytes) -> bytes:
    key = _key(settings)
    try:
        if sealed[:1] == VERSION:
            nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
            return _aead(key).decrypt(nonce, body, VERSION)
        return _fernet(key).decrypt(sealed)
    except (InvalidTag, InvalidToken, ValueError):
        raise Unreadable("a stored secret does not decrypt with this key") from None


def seal(settings: Settings, secret: str) -> bytes:
    return seal_bytes(settings, secret.encode())


def unseal(settings: Settings, sealed: bytes) -> str:
    return unseal_bytes(settings, sealed).decode()
