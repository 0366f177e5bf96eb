"""What every router shares: strict JSON bodies, problem responses in the contract, batches."""

from __future__ import annotations

import re
import typing
import urllib.parse
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any, TypedDict, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError

from app.governance import auth
from app.people import profiles
from app.platform import errors, jsonbody, runtime
from app.platform.errors import PROBLEM_JSON
from app.platform.jsonbody import JSONObject
from app.schemas.admin import Problem
from app.schemas.common import ID_PATTERN, ID_RULE, NO_NUL, TIMESTAMP_PATTERN, TIMESTAMP_RULE
from app.signals import ingest

T = TypeVar("T")


class InvalidItem(TypedDict):
    """An item of a batch that was not taken: its index, why in words, and pydantic's errors."""

    index: int
    detail: str
    errors: list[errors.FieldError] | None


def future_tolerance(request: Request) -> timedelta:
    """How far ahead a moment a client reports (occurred_at, observed_at) may lie."""
    return timedelta(hours=runtime.of(request).settings.future_tolerance_hours)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # no Content-Type (hand-written clients forget it): JSON, not a refusal
    # type/subtype before any parameters, case-insensitive (RFC 9110 8.3.1)
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, subtype = media_type.partition("/")
    return main == "application" and (subtype == "json" or subtype.endswith("+json"))


def _check_path(raw_path: bytes) -> None:
    """A percent-encoded path must decode to UTF-8: the server turns bad bytes into U+FFFD, and
    two different ids would then name the same record."""
    try:
        urllib.parse.unquote_to_bytes(raw_path).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.BadRequest("The path is not valid UTF-8 once percent-decoded.") from None


def _query_params(dependant: Dependant) -> dict[str, bool]:
    """Query parameter names, each with whether it may repeat (a list)."""
    params = {p.alias: _is_list(p.field_info.annotation) for p in dependant.query_params}
    for sub in dependant.dependencies:
        params |= _query_params(sub)
    return params


def _check_query(request: Request, known: dict[str, bool]) -> None:
    if b"%00" in request.scope["query_string"]:
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                raise errors.BadRequest(
                    f"NUL character (%00) in query parameter {name!r}: it may not contain it"
                )
    unknown = sorted(set(request.query_params) - set(known))
    repeated = sorted(
        name
        for name, repeats in known.items()
        if not repeats and len(request.query_params.getlist(name)) > 1
    )
    if repeated:
        raise _query_problem(
            "given more than once", repeated, "Give this parameter once", "repeated"
        )
    if unknown:  # a misspelt filter must not silently widen a query
        raise _query_problem("unknown", unknown, "Unknown query parameter", "extra_forbidden")


def _query_problem(what: str, names: list[str], msg: str, kind: str) -> errors.InvalidPayload:
    return errors.InvalidPayload(
        f"Query parameter(s) {what}: {', '.join(map(repr, names))}.",
        errors=[{"loc": ["query", name], "msg": msg, "type": kind} for name in names],
    )


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))


class StrictJSONRoute(APIRoute):
    """Parses JSON bodies with app.platform.jsonbody before FastAPI sees them, so bad bytes become a
    problem response that says what is wrong rather than a generic parse error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        # The content type is checked below, where a missing one means JSON; FastAPI's own
        # strict check would leave such a body unparsed and answer "not a valid dictionary".
        self.strict_content_type = False
        handler = super().get_route_handler()
        known_query = _query_params(self.dependant)
        # Routes with a hand-parsed body (batches) read it themselves, in one pass, after their
        # dependencies (the key check) have run.
        parses_body = self.body_field is not None
        # FastAPI reads a declared body before it runs any dependency: the key is checked here
        # first, so that nobody without one gets a body read, buffered or parsed.
        key_checks = [
            d.call for d in self.dependant.dependencies if isinstance(d.call, auth.ScopeCheck)
        ]

        async def strict_handler(request: Request) -> Response:
            for check in key_checks:
                await check(request)
            if b"%" in request.scope.get("raw_path", b""):
                _check_path(request.scope["raw_path"])
            if request.scope["query_string"]:
                _check_query(request, known_query)
            if parses_body:
                body = await request.body()
                if body:
                    if not _is_json(request.headers.get("content-type")):
                        raise errors.UnsupportedMediaType(
                            "Send JSON: Content-Type: application/json."
                        )
                    request._json = jsonbody.parse(body)  # Starlette's own cache of request.json()
            return await handler(request)

        return strict_handler


_PROBLEM_STATUSES = {
    400: "Malformed request (bad JSON, NUL characters, bad cursor)",
    401: "Missing or unknown API key",
    403: "The key lacks the scope this operation needs",
    404: "Not found",
    409: "Conflict with what is already stored",
    413: "Body larger than the configured limit",
    415: "Body is not JSON",
    422: "Invalid payload; `errors` names each offending field",
    429: "Rate limit reached; retry after Retry-After seconds",
    503: "Database unreachable; retry after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, JSONObject]:
    chosen = statuses or tuple(_PROBLEM_STATUSES)
    return {
        status: {
            "description": _PROBLEM_STATUSES[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in chosen
    }


# Bodies parsed by hand (batches, to report each bad item by index) are declared to the contract
# here; app.main adds their schemas to the components.
MANUAL_BODIES: list[type[Any]] = [Problem]


def manual_body(model: type[Any]) -> JSONObject:
    MANUAL_BODIES.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


# Patterns whose mismatch deserves words rather than the regular expression itself.
_PATTERN_WORDS = {
    TIMESTAMP_PATTERN: TIMESTAMP_RULE,
    ID_PATTERN: ID_RULE,
    NO_NUL: "may not contain NUL (U+0000)",
}


def field_errors(raw: list[Any]) -> list[errors.FieldError]:
    """Pydantic's errors as the problem body's `errors`: location, words, type; never the input."""
    out: list[errors.FieldError] = []
    for e in raw:
        msg = str(e.get("msg", ""))
        pattern = (e.get("ctx") or {}).get("pattern")
        if e.get("type") == "string_pattern_mismatch" and pattern in _PATTERN_WORDS:
            msg = _PATTERN_WORDS[pattern]
        out.append({"loc": list(e.get("loc", ())), "msg": msg, "type": str(e.get("type", ""))})
    return out


def validation_errors(exc: ValidationError) -> list[errors.FieldError]:
    return field_errors(exc.errors(include_url=False, include_input=False))


def describe(errs: list[errors.FieldError]) -> str:
    parts = []
    for e in errs[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "item"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
    return "; ".join(parts) + more


# What sends a batch down the careful path: NaN and Infinity (pydantic's JSON parser would take
# them inside free-form JSON), any surrogate escape, any NUL escape.
_ESCAPES = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")


def _suspect(body: bytes) -> bool:
    """Whether a body may hold NaN, Infinity, a surrogate or a NUL. Scans for each token's rare
    first byte (memchr, a few microseconds per megabyte) instead of running a regex over the
    whole body, which cost about 1 us per event of a batch."""
    return (
        _contains(body, b"NaN")
        or _contains(body, b"Infinity")
        or (b"\\" in body and _ESCAPES.search(body) is not None)
    )


def _contains(body: bytes, token: bytes) -> bool:
    first = token[:1]
    at = body.find(first)
    for _ in range(64):
        if at == -1:
            return False
        if body.startswith(token, at):
            return True
        at = body.find(first, at + 1)
    return body.find(token, at) != -1  # the first byte is common here: one scan of the rest


async def batch_items(
    request: Request,
    key: str,
    limit: int,
    item: TypeAdapter[T],
    batch: TypeAdapter[Any] | None = None,
) -> tuple[list[tuple[int, T]], list[InvalidItem]]:
    """The items of a batch body `{key: [...]}` with their indexes, and an error per bad item.

    With an adapter for the whole `batch`, a clean body is validated in one pass; a body with any
    problem takes the careful path, which parses strictly and validates item by item so that
    each bad item is named by its index and the rest are kept.
    """
    body = await request.body()
    if body and not _is_json(request.headers.get("content-type")):
        raise errors.UnsupportedMediaType("Send JSON: Content-Type: application/json.")
    if not body:
        raise errors.InvalidPayload(
            f"Body required: an object with a `{key}` list.",
            errors=[{"loc": ["body"], "msg": "Field required", "type": "missing"}],
        )
    if batch is not None and not _suspect(body):
        try:
            items = batch.validate_json(body)[key]
        except ValidationError:
            pass
        else:
            # pydantic keeps the last of repeated keys and turns 1e309 into inf: such a body
            # is read again below, where it is refused like on every other route.
            if jsonbody.plain(body, items):
                return list(enumerate(items)), []
    data = jsonbody.parse(body, refuse_nul=False)
    if not isinstance(data, dict) or key not in data:
        raise errors.InvalidPayload(
            f"Body must be an object with a `{key}` list.",
            errors=[{"loc": ["body", key], "msg": "Field required", "type": "missing"}],
        )
    problem = _nul_problem({k: v for k, v in data.items() if k != key}, "body")
    if problem is not None or any("\x00" in k for k in data):
        raise errors.BadRequest(problem or "NUL character (\\u0000) in a key of body")
    extra = sorted(set(data) - {key})
    if extra:
        raise errors.InvalidPayload(
            f"Unknown field(s): {', '.join(extra)}.",
            errors=[
                {
                    "loc": ["body", k],
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
                for k in extra
            ],
        )
    items = data[key]
    if not isinstance(items, list):
        raise errors.InvalidPayload(
            f"`{key}` must be a list.",
            errors=[
                {"loc": ["body", key], "msg": "Input should be a valid list", "type": "list_type"}
            ],
        )
    if len(items) > limit:
        raise errors.InvalidPayload(
            f"`{key}` holds {len(items)} items; at most {limit} per request.",
            errors=[{"loc": ["body", key], "msg": f"at most {limit} items", "type": "too_long"}],
        )
    # JSON can carry a NUL only escaped: a body without the escape holds none to look for.
    return validate_items(item, items, nul=b"\\u0000" in body)


def _nul_problem(node: Any, path: str) -> str | None:
    where = jsonbody.find_nul(node, path)
    return (
        None if where is None else f"NUL character (\\u0000) in {where}: strings may not contain it"
    )


def validate_items(
    adapter: TypeAdapter[T], items: list[Any], *, nul: bool = True
) -> tuple[list[tuple[int, T]], list[InvalidItem]]:
    """Valid items with their index, and an error entry for each invalid one (`nul`: whether
    the items may hold a NUL character, to be named)."""
    valid: list[tuple[int, T]] = []
    invalid: list[InvalidItem] = []
    for index, item in enumerate(items):
        problem = _nul_problem(item, f"item {index}") if nul else None
        if problem is not None:
            invalid.append(InvalidItem(index=index, detail=problem, errors=None))
            continue
        try:
            valid.append((index, adapter.validate_python(item)))
        except ValidationError as exc:
            errs = validation_errors(exc)
            invalid.append(InvalidItem(index=index, detail=describe(errs), errors=errs))
    return valid, invalid


def ingest_context(request: Request, now: datetime, *, writer: str | None = None) -> ingest.Context:
    """What storing a door's signals needs, the same for every door; `writer` (else the
    request's key) is whose trait-key budget counts."""
    state = runtime.of(request)
    settings = state.settings
    if writer is None:
        principal: auth.Principal | None = request.scope.get(auth.PRINCIPAL)
        writer = None if principal is None else f"key:{principal.key_id}"
    return ingest.Context(
        now=now,
        tolerance=future_tolerance(request),
        limits=profiles.TraitLimits(
            per_profile=settings.max_traits_per_profile,
            overall=settings.max_trait_keys,
            per_writer=settings.max_trait_keys_per_writer,
            writer=writer,
            keep_rest=True,  # SDKs and senders never read an error: keep what can be kept
        ),
        known=state.known_ids,
        partition_manager=state.partitions,
        unresolved_days=settings.unresolved_days,
        screen=state.screen,
    )
