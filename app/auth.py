"""API keys: creation, hashing, and the scope check every /v1 route runs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app import errors
from app.tables import ApiKey

Scope = Literal["ingest", "read", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "admin")
KEY_PREFIX = "ci_"
PRINCIPAL = "custintel.principal"  # the request scope's key for the authenticated principal


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough; a slow one would only cost latency.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(
    session: AsyncSession, *, name: str, scopes: list[Scope]
) -> tuple[ApiKey, str]:
    secret = generate_key()
    key = ApiKey(
        key_id=uuid.uuid4(),
        name=name,
        prefix=secret[:10],
        key_hash=hash_key(secret),
        scopes=sorted(set(scopes)),
    )
    session.add(key)
    await session.flush()
    return key, secret


class KeyCache:
    """Verified keys, trusted for a few seconds so that hot paths skip a lookup."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, principal)

    def forget(self) -> None:
        self._entries.clear()


class ScopeCheck(HTTPBearer):
    """The dependency of every /v1 route: the bearer key's principal, if it holds `scope`.

    One dependency rather than a check depending on HTTPBearer: FastAPI resolves each level of
    dependencies per request, and on the hottest routes that was a measurable share of the work.
    Subclassing HTTPBearer keeps the security scheme in the contract."""

    def __init__(self, scope: Scope) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="An API key: `Authorization: Bearer ci_...`",
        )
        self.scope: Scope = scope

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        # app.api.common checks the key before reading a body; the route's dependency reuses it.
        principal: Principal | None = request.scope.get(PRINCIPAL)
        if principal is None:
            credentials = await super().__call__(request)
            principal = await authenticate(request, credentials)
            request.scope[PRINCIPAL] = principal
        if not principal.allows(self.scope):
            raise errors.Forbidden(
                f"This key lacks the `{self.scope}` scope.", missing_scope=self.scope
            )
        return principal


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthorized("Missing API key: send `Authorization: Bearer <key>`.")
    digest = hash_key(credentials.credentials)
    state = request.app.state
    bootstrap: str | None = state.bootstrap_key_hash
    if bootstrap is not None and hmac.compare_digest(digest, bootstrap):
        return Principal("bootstrap", "bootstrap admin", frozenset({"admin"}))
    cache: KeyCache = state.key_cache
    principal = cache.get(digest)
    if principal is not None:
        return principal
    async with state.sessionmaker() as session:
        key = await session.scalar(
            select(ApiKey).where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
        )
    if key is None:
        raise errors.Unauthorized("Unknown or revoked API key.")
    principal = Principal(str(key.key_id), key.name, frozenset(key.scopes))
    cache.put(digest, principal)
    return principal


Ingest = Annotated[Principal, Depends(ScopeCheck("ingest"))]
Read = Annotated[Principal, Depends(ScopeCheck("read"))]
Admin = Annotated[Principal, Depends(ScopeCheck("admin"))]
