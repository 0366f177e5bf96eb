"""What every router shares: strict JSON bodies, problem responses in the contract, batches."""

from __future__ import annotations

import email.message
import typing
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fastapi import Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError

from app import errors, jsonbody
from app.errors import PROBLEM_JSON
from app.schemas.admin import Problem

M = TypeVar("M", bound=BaseModel)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # curl --data without -H: treat as JSON rather than refuse
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def _query_params(dependant: Dependant) -> dict[str, bool]:
    """Query parameter names, each with whether it may repeat (a list)."""
    params = {p.alias: _is_list(p.field_info.annotation) for p in dependant.query_params}
    for sub in dependant.dependencies:
        params |= _query_params(sub)
    return params


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return True
    return any(_is_list(arg) for arg in typing.get_args(annotation) if arg is not type(None))


class StrictJSONRoute(APIRoute):
    """Parses JSON bodies with app.jsonbody before FastAPI sees them, so bad bytes become a
    problem response that says what is wrong rather than a generic parse error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        known_query = _query_params(self.dependant)

        async def strict_handler(request: Request) -> Response:
            unknown = sorted(set(request.query_params) - set(known_query))
            repeated = sorted(
                name
                for name, repeats in known_query.items()
                if not repeats and len(request.query_params.getlist(name)) > 1
            )
            if repeated:
                raise errors.InvalidPayload(
                    f"Query parameter(s) given more than once: {', '.join(repeated)}.",
                    errors=[
                        {
                            "loc": ["query", name],
                            "msg": "Give this parameter once",
                            "type": "repeated",
                        }
                        for name in repeated
                    ],
                )
            if unknown:
                # A misspelt filter must not silently widen a query.
                raise errors.InvalidPayload(
                    f"Unknown query parameter(s): {', '.join(map(repr, unknown))}.",
                    errors=[
                        {
                            "loc": ["query", name],
                            "msg": "Unknown query parameter",
                            "type": "extra_forbidden",
                        }
                        for name in unknown
                    ],
                )
            if request.method in {"POST", "PUT", "PATCH"}:
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
    503: "Database unreachable; retry after Retry-After seconds",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
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
MANUAL_BODIES: list[type[BaseModel]] = [Problem]


def manual_body(model: type[BaseModel]) -> dict[str, Any]:
    MANUAL_BODIES.append(model)
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
            },
        }
    }


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def describe(errs: list[dict[str, Any]]) -> str:
    parts = []
    for e in errs[:5]:
        where = ".".join(str(p) for p in e["loc"]) or "item"
        parts.append(f"{where}: {e['msg']}")
    more = f" (and {len(errs) - 5} more)" if len(errs) > 5 else ""
    return "; ".join(parts) + more


async def batch_items(request: Request, key: str, limit: int) -> list[Any]:
    """The list under `key` of a batch body, checked for shape and size but not item by item."""
    body = await request.body()
    if not body:
        raise errors.InvalidPayload(
            f"Body required: an object with a `{key}` list.",
            errors=[{"loc": ["body"], "msg": "Field required", "type": "missing"}],
        )
    data = await request.json()  # already parsed strictly by StrictJSONRoute
    if not isinstance(data, dict) or key not in data:
        raise errors.InvalidPayload(
            f"Body must be an object with a `{key}` list.",
            errors=[{"loc": ["body", key], "msg": "Field required", "type": "missing"}],
        )
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
    return items


def validate_items(
    adapter: TypeAdapter[M], items: list[Any]
) -> tuple[list[tuple[int, M]], list[dict[str, Any]]]:
    """Valid items with their index, and an error entry for each invalid one."""
    valid: list[tuple[int, M]] = []
    invalid: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            valid.append((index, adapter.validate_python(item)))
        except ValidationError as exc:
            errs = validation_errors(exc)
            invalid.append({"index": index, "detail": describe(errs), "errors": errs})
    return valid, invalid
