"""Opaque page cursors: the sort key of the last row a page returned, as base64 JSON.

A cursor is only ever read back as the values it was made of; anything else a client sends is
a 400, never a query.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from app.platform import errors


def encode(*key: str | int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode(cursor: str, *types: type[str] | type[int]) -> list[Any]:
    """The key a cursor was made of, checked to hold values of these types, in order."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = orjson.loads(base64.b64decode(padded, altchars=b"-_", validate=True))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != len(types)
        or not all(type(k) is t for k, t in zip(key, types, strict=True))
        or any(isinstance(k, str) and "\x00" in k for k in key)
    ):
        raise errors.BadRequest("cursor is not one this service issued")
    return key
