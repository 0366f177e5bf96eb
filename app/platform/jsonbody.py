"""Strict JSON for request bodies, the same on every route.

orjson reads (and already refuses NaN, Infinity, lone surrogates, invalid UTF-8 and numbers
beyond a double, such as 1e309); on top of it a body is refused (400) when it has:
- a NUL character anywhere (Postgres cannot store it),
- a key twice in one object (JSON parsers silently keep the last: an idempotency key among them),
- an integer beyond 64 bits or a number that only underflows to zero (orjson would store either
  as a different value),
- nesting deeper than orjson writes (254 levels; it reads 1024): the one limit of the service
  for a whole body (fields have their own, smaller ones).

`parse` checks every body exactly. Batches of thousands of events take `plain` first: a test at
the speed of a few byte scans that a body cannot hold any of these, so that the one-pass
validation stands; a body it cannot clear goes through `parse`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from app.platform import errors

# A JSON object whose shape its sender or its jsonb column decides: a payload as a client or a
# sender sent it, a job's parameters and result, a stored model's record. The functions a router,
# the CLI or the worker calls return typed values (STYLE.md); this type is for those edges only.
JSONObject = dict[str, Any]

WRITABLE_DEPTH = 254  # orjson writes no deeper
_INT64 = (-(1 << 63), (1 << 64) - 1)  # orjson's range (signed and unsigned 64-bit)
_SCALARS = frozenset({str, int, float, bool, type(None)})


def parse(body: bytes, *, refuse_nul: bool = True) -> Any:
    """Parsed JSON, or BadRequest naming what is wrong. Batches pass refuse_nul=False and check
    item by item, so that one bad item does not sink its neighbours."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson's message names the position and what it expected, and never echoes the body.
        raise errors.BadRequest(f"Malformed JSON: {exc}") from None
    if not _as_written(body, data):
        _exact(body)
    # A NUL can only arrive escaped; the raw check keeps the walk off the common path.
    if refuse_nul and b"\\u0000" in body:
        where = find_nul(data, "body")
        if where is not None:
            raise errors.BadRequest(
                f"NUL character (\\u0000) in {where}: strings may not contain it"
            )
    return data


def _as_written(body: bytes, data: Any) -> bool:
    """Whether orjson's reading of the body kept every key and number as written; True is
    certain (the same colon count as `plain`, and numbers checked in the text, since orjson
    turns an integer beyond 64 bits into a float)."""
    if not _plain_numbers(body) or b"\\u003a" in body or b"\\u003A" in body:
        return False
    try:
        written = orjson.dumps(data)
    except (orjson.JSONEncodeError, TypeError):
        # Nested deeper than orjson writes (254 levels): nothing could store or answer it, so
        # every route refuses it here, once, rather than fail wherever it is written.
        raise errors.BadRequest(f"JSON nested deeper than {WRITABLE_DEPTH} levels") from None
    return body.count(b":") == written.count(b":")


def _exact(body: bytes) -> None:
    """Read the body again with the standard library, whose hooks see every key and number as
    written, and raise BadRequest for the first that would not be stored as sent."""
    try:
        json.loads(body, object_pairs_hook=_unique, parse_int=_int64, parse_float=_finite_nonzero)
    except _Refused as exc:
        raise errors.BadRequest(str(exc)) from None
    except RecursionError:
        raise errors.BadRequest("JSON nested too deeply") from None


class _Refused(ValueError):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> JSONObject:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        repeated = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _Refused(f"Key {repeated!r} appears more than once in one object")
    return obj


def _int64(text: str) -> int:
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise _Refused(f"Integer {text[:30]} exceeds 64 bits: send it as a string")
    return value


def _finite_nonzero(text: str) -> float:
    value = float(text)
    if value == 0 and any(c in "123456789" for c in text.lower().partition("e")[0]):
        raise _Refused(f"Number {text[:30]} is too small for a double: send it as a string")
    return value


# Every digit as "0", so that a run of digits or an exponent is found with one substring search.
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_NUMBERS = (b"0" * 20, b"0e000", b"0E000", b"0e+000", b"0E+000", b"0e-000", b"0E-000")


def _plain_numbers(body: bytes) -> bool:
    """No run of 20 digits and no digit followed by a three-digit exponent anywhere (in strings
    too): then every number fits 64 bits or a double as written. A body with one is read
    exactly instead."""
    zeroed = body.translate(_DIGITS)
    return not any(pattern in zeroed for pattern in _LONG_NUMBERS)


def _key_marks(body: bytes) -> int:
    """An upper bound of the keys in the text: each key ends in `":`, and when no whitespace
    stands before any colon, no key escapes the count (a string holding `":` only adds to it).
    -1 when whitespace stands before a colon."""
    if b" :" in body or b"\t:" in body or b"\n:" in body or b"\r:" in body:
        return -1
    return body.count(b'":')


def plain(body: bytes, items: list[Any]) -> bool:
    """Whether a batch body `{"key": [...]}` already validated into `items` holds no repeated
    key and no number that pydantic changed. True is certain; False means "read it exactly".

    Checked by writing the items out again with orjson (which refuses integers beyond 64 bits)
    and counting bytes on both sides, all at C speed (a walk over the items in Python cost as
    much as validating them):
    - colons: every key has one, and strings keep theirs; a dropped repeated key makes the body
      count more. An escaped colon (\\u003a) counts only after, so such a body is read exactly.
    - `null`: a number beyond a double became inf, which is written as null.
    - minus signs: a number that underflowed to zero lost the one of its exponent (orjson
      writing 0.00001 as 1e-5 gains one, which only sends the body the exact way).
    """
    try:
        written = orjson.dumps(items)
    except (orjson.JSONEncodeError, TypeError):  # beyond 64 bits, or nested very deep
        return False
    if b"\\u003a" in body or b"\\u003A" in body:
        return False
    if body.count(b":") != written.count(b":") + 1:  # + 1: the wrapper's key
        return False
    if body.count(b"null") != written.count(b"null"):
        return False
    return body.count(b"-") == written.count(b"-")


def find_nul(node: Any, path: str) -> str | None:
    """Where the first NUL character is (in a string or a key), or None; without recursion."""
    stack = [(node, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return where
        elif isinstance(current, dict):
            for key, value in reversed(list(current.items())):
                if "\x00" in key:
                    return f"a key of {where}"
                stack.append((value, f"{where}.{key}"))
        elif isinstance(current, list):
            for i in range(len(current) - 1, -1, -1):
                stack.append((current[i], f"{where}[{i}]"))
    return None


def nested_deeper(value: JSONObject, limit: int) -> bool:
    """Whether a JSON object nests deeper than `limit`. Flat objects, the common case, cost one
    C-level pass over their value types and no walk."""
    if set(map(type, value.values())) <= _SCALARS:
        return False
    return depth(value) > limit


def depth(node: Any) -> int:
    """Nesting depth of a JSON value: a scalar is 0, {"a": 1} is 1; without recursion."""
    deepest = 0
    stack = [(node, 1)]
    while stack:
        current, level = stack.pop()
        if type(current) is dict:
            children: Iterable[Any] = current.values()
        elif type(current) is list:
            children = current
        else:
            continue
        deepest = max(deepest, level)
        for child in children:
            if type(child) is dict or type(child) is list:
                stack.append((child, level + 1))
    return deepest
