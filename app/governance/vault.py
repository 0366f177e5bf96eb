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
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import asyncpg
from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.platform.settings import Settings

KEY_FILE = "secret.key"
NEXT_KEY_FILE = "secret.key.next"  # a rotation's new key, until it is in place


class Unreadable(RuntimeError):
    """A stored secret no key can decrypt (the key changed since it was stored)."""


@lru_cache(maxsize=8)
def _fernet(key: bytes) -> Fernet:
    return Fernet(key)


def keys(settings: Settings) -> list[bytes]:
    """The keys, the one that seals first: CUSTINTEL_SECRET_KEY (a comma-separated list: the
    first seals, every one decrypts, so a rotation needs no downtime), else the key file of the
    data dir (and, after a rotation interrupted before its end, the next one)."""
    if settings.secret_key is not None:
        return _listed(settings.secret_key.get_secret_value())
    found = [_file_key(str(settings.data_dir))]
    following = Path(settings.data_dir).resolve() / NEXT_KEY_FILE
    if following.exists():
        found.append(following.read_bytes().strip())
    return found


def _listed(setting: str) -> list[bytes]:
    return [k.strip().encode() for k in setting.split(",")]


def _key(settings: Settings) -> bytes:
    """The key that seals, without looking for a rotation's next key (a file on disk)."""
    if settings.secret_key is not None:
        return _listed(settings.secret_key.get_secret_value())[0]
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


def seal_bytes(settings: Settings, secret: bytes, *, key: bytes | None = None) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return VERSION + nonce + _aead(key or _key(settings)).encrypt(nonce, secret, VERSION)


def is_sealed(value: bytes) -> bool:
    return value[:1] == VERSION or value[:6] == b"gAAAAA"


def unseal_bytes(settings: Settings, sealed: bytes) -> bytes:
    for key in _readers(settings):
        try:
            if sealed[:1] == VERSION:
                nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
                return _aead(key).decrypt(nonce, body, VERSION)
            return _fernet(key).decrypt(sealed)
        except (InvalidTag, InvalidToken, ValueError):
            continue
    raise Unreadable("a stored secret does not decrypt with any key")


def _readers(settings: Settings) -> Iterator[bytes]:
    """The key that seals, then the others only if it fails: a webhook's delivery unseals its
    source's secret, and looking for a rotation's key on disk every time cost more than the
    decryption."""
    first = _key(settings)
    yield first
    yield from (key for key in keys(settings) if key != first)


def seal(settings: Settings, secret: str) -> bytes:
    return seal_bytes(settings, secret.encode())


def unseal(settings: Settings, sealed: bytes) -> str:
    return unseal_bytes(settings, sealed).decode()


# Every sealed column: (table, key column, sealed columns).
SEALED = (
    ("sources", "source_id", ("secret", "previous_secret")),
    ("destinations", "destination_id", ("secret", "previous_secret")),
    ("installation_secrets", "name", ("sealed",)),
)
UNREADABLE = (
    "Stored secrets do not decrypt with the configured key ({where}). Start with the key they "
    "were sealed with (CUSTINTEL_SECRET_KEY, or the key file restored into the data dir); if "
    "it is lost, delete the sources and destinations and create them again with new secrets."
)


async def _locked(
    conn: asyncpg.Connection, table: str, key: str, columns: tuple[str, ...]
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {key}, {', '.join(columns)} FROM {table} FOR UPDATE"  # noqa: S608  (constant names)
    )
    return rows


def _where(settings: Settings) -> str:
    if settings.secret_key is not None:
        return "CUSTINTEL_SECRET_KEY"
    return str(Path(settings.data_dir).resolve() / KEY_FILE)


async def prepare(conn: asyncpg.Connection, settings: Settings) -> dict[str, int]:
    """Before serving: seal any secret still stored in the clear (destinations' from before
    they were sealed), then check that every sealed secret decrypts; Unreadable, saying what
    to do, when one does not."""
    sealed = checked = 0
    async with conn.transaction():
        for table, key, columns in SEALED:
            for row in await _locked(conn, table, key, columns):
                for column in columns:
                    value = row[column]
                    if value is None:
                        continue
                    if not is_sealed(value):
                        await conn.execute(
                            f"UPDATE {table} SET {column} = $2 WHERE {key} = $1",  # noqa: S608  (constant names)
                            row[key],
                            seal_bytes(settings, value),
                        )
                        sealed += 1
                        continue
                    try:
                        unseal_bytes(settings, value)
                    except Unreadable:
                        raise Unreadable(UNREADABLE.format(where=_where(settings))) from None
                    checked += 1
    return {"sealed": sealed, "checked": checked}


async def rotate(conn: asyncpg.Connection, settings: Settings, new_key: bytes) -> int:
    """Every sealed secret sealed again under `new_key`, in the caller's transaction; how
    many."""
    done = 0
    for table, key, columns in SEALED:
        for row in await _locked(conn, table, key, columns):
            for column in columns:
                if row[column] is None:
                    continue
                plain = unseal_bytes(settings, row[column])
                await conn.execute(
                    f"UPDATE {table} SET {column} = $2 WHERE {key} = $1",  # noqa: S608  (constant names)
                    row[key],
                    seal_bytes(settings, plain, key=new_key),
                )
                done += 1
    return done
