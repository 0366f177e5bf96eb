"""Strict JSON for request bodies: orjson (which already refuses NaN, Infinity and lone
surrogates), plus the NUL characters that Postgres cannot store."""

from __future__ import annotations

from typing import Any

import orjson

from app import errors


def parse(body: bytes, *, refuse_nul: bool = True) -> Any:
    """Parsed JSON, or BadRequest. Batches pass refuse_nul=False and check item by item, so that
    one bad item does not sink its neighbours."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position and what it expected, and never echoes the body.
        raise errors.BadRequest(f"Malformed JSON: {exc}") from None
    # A NUL can only arrive escaped; the raw check keeps the walk off the common path.
    if refuse_nul and b"\\u0000" in body:
        where = find_nul(data, "body")
        if where is not None:
            raise errors.BadRequest(
                f"NUL character (\\u0000) in {where}: strings may not contain it"
            )
    return data


def find_nul(node: Any, path: str) -> str | None:
    if isinstance(node, str):
        return path if "\x00" in node else None
    if isinstance(node, dict):
        for key, value in node.items():
            if "\x00" in key:
                return f"a key of {path}"
            found = find_nul(value, f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = find_nul(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


_SCALARS = frozenset({str, int, float, bool, type(None)})


def nested_deeper(value: dict[str, Any], limit: int) -> bool:
    """Whether a JSON object nests deeper than `limit`. Flat objects, the common case, cost one
    C-level pass over their value types and no walk."""
    if set(map(type, value.values())) <= _SCALARS:
        return False
    return depth(value) > limit


def depth(node: Any) -> int:
    """Nesting depth of a JSON value: a scalar is 0, {"a": 1} is 1."""
    if isinstance(node, dict):
        return 1 + max((depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((depth(v) for v in node), default=0)
    return 0
