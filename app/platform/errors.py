"""The error tree. Every error a client can cause is one of these, rendered as problem+json.

CustintelError
  BadRequest (400)            malformed JSON, NUL characters, unsupported content type (415)
  Unauthorized (401)          missing or unknown API key
  Forbidden (403)             key lacks a scope
  NotFound (404)
  Conflict (409)              same idempotency key, different content
  PayloadTooLarge (413)
  InvalidPayload (422)        well-formed but wrong: validation errors with their fields
  TooManyRequests (429)       a rate limit; carries Retry-After
  ServiceUnavailable (503)    database unreachable; carries Retry-After

Stopped                       not a client's error: work whose job was cancelled or ran out of
                              time stopped itself (app.platform.jobs records which)
"""

from __future__ import annotations

from typing import Any, TypedDict

PROBLEM_JSON = "application/problem+json"


class FieldError(TypedDict):
    """One entry of a problem body's `errors`: where, in words, and the kind (pydantic's)."""

    loc: list[str | int]
    msg: str
    type: str


class CustintelError(Exception):
    status = 500
    slug = "internal"
    title = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra

    def problem(self) -> dict[str, object]:
        """The problem+json body (RFC 9457)."""
        body: dict[str, object] = {
            "type": problem_type(self.slug),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


def problem_type(slug: str) -> str:
    return f"urn:custintel:problem:{slug}"


class BadRequest(CustintelError):
    status = 400
    slug = "bad-request"
    title = "Bad request"


class UnsupportedMediaType(CustintelError):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


class Unauthorized(CustintelError):
    status = 401
    slug = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(CustintelError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class NotFound(CustintelError):
    status = 404
    slug = "not-found"
    title = "Not found"


class Conflict(CustintelError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class PayloadTooLarge(CustintelError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class InvalidPayload(CustintelError):
    status = 422
    slug = "validation"
    title = "Invalid payload"


class TooManyRequests(CustintelError):
    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class ServiceUnavailable(CustintelError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


class Stopped(Exception):
    """Work stopped because its job was cancelled or ran longer than its time limit."""
