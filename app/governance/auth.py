"""API keys: creation, hashing, and the scope check every /v1 route runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.governance import audit
from app.platform import errors, runtime
from app.platform.settings import Settings
from app.schemas.admin import ApiKeyInfo

# ingest: write profiles, events and outcomes; read: read profiles, scores and insights;
# insights: acknowledge and resolve insights (an inbox in a CRM or support tool); privacy:
# erasures and the suppression list; sources: register and manage webhook sources; admin: all.
Scope = Literal["ingest", "read", "insights", "privacy", "sources", "admin"]
SCOPES: tuple[Scope, ...] = ("ingest", "read", "insights", "privacy", "sources", "admin")
# What a key limited to some sources may call: those sources' own routes, the list (filtered),
# and minting keys limited at least as much. Nothing else, whatever its scopes.
SOURCE_OPERATIONS = frozenset(
    {
        "list_sources",
        "get_source",
        "update_source",
        "delete_source",
        "list_source_rejections",
        "replay_source_rejection",
        "create_api_key",
    }
)
KEY_PREFIX = "ci_"
PRINCIPAL = "custintel.principal"  # the request scope's key for the authenticated principal


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    expires_at: datetime | None = None
    operations: frozenset[str] | None = None  # None: every operation its scopes allow
    sources: frozenset[str] | None = None  # None: every source (ids as text)

    def reaches(self, source_id: object) -> bool:
        """Whether this key may act on a source (a key limited to some sources, on others not)."""
        return self.sources is None or str(source_id) in self.sources

    def within(
        self,
        operations: list[str] | None,
        sources: list[str] | None,
        expires_at: datetime | None = None,
    ) -> bool:
        """Whether a key limited so would hold no more than this one does (and no longer)."""
        if self.operations is not None and (
            operations is None or set(operations) - self.operations
        ):
            return False
        if self.expires_at is not None and (expires_at is None or expires_at > self.expires_at):
            return False
        return self.sources is None or (sources is not None and set(sources) <= self.sources)

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(secret: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough; a slow one would only cost latency.
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


KEY_COLUMNS = (
    "key_id, name, prefix, scopes, created_at, revoked_at, expires_at, operations, sources, "
    "(SELECT u.last_used_at FROM api_key_usage u WHERE u.key_id = api_keys.key_id) "
    "AS last_used_at"
)


async def create_key(
    conn: asyncpg.Connection,
    *,
    name: str,
    scopes: list[Scope],
    actor: str,
    expires_at: datetime | None = None,
    operations: list[str] | None = None,
    sources: list[uuid.UUID] | None = None,
) -> tuple[ApiKeyInfo, str]:
    """A new key and its secret (shown once, stored as a hash), audited, in the caller's
    transaction; it may expire, and be limited to some operations (by operationId) and to some
    sources (which must exist)."""
    if sources:
        unknown = await conn.fetchval(
            "SELECT min(s::text) FROM unnest($1::uuid[]) s "
            "WHERE NOT EXISTS (SELECT 1 FROM sources WHERE source_id = s)",
            sources,
        )
        if unknown is not None:
            raise errors.InvalidPayload(
                f"sources: no source {unknown!r}",
                errors=[{"loc": ["body", "sources"], "msg": "unknown", "type": "value_error"}],
            )
    secret = generate_key()
    key = await conn.fetchrow(
        "INSERT INTO api_keys (key_id, name, prefix, key_hash, scopes, expires_at, operations, "  # noqa: S608  (constant columns)
        "sources) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING " + KEY_COLUMNS,
        uuid.uuid4(),
        name,
        secret[:10],
        hash_key(secret),
        sorted(set(scopes)),
        expires_at,
        None if operations is None else sorted(set(operations)),
        None if sources is None else sorted(set(sources)),
    )
    assert key is not None
    await audit.record(
        conn,
        actor=actor,
        action="api_key.created",
        target=str(key["key_id"]),
        details={
            "name": name,
            "scopes": list(key["scopes"]),
            "expires_at": None if expires_at is None else expires_at.isoformat(),
            "operations": key["operations"],
            "sources": None if key["sources"] is None else [str(s) for s in key["sources"]],
        },
    )
    return info(key), secret


def info(key: asyncpg.Record) -> ApiKeyInfo:
    return ApiKeyInfo(
        key_id=str(key["key_id"]),
        name=key["name"],
        prefix=key["prefix"],
        scopes=list(key["scopes"]),
        created_at=key["created_at"],
        revoked_at=key["revoked_at"],
        expires_at=key["expires_at"],
        operations=key["operations"],
        sources=None if key["sources"] is None else [str(s) for s in key["sources"]],
        last_used_at=key["last_used_at"],
    )


async def list_keys(conn: asyncpg.Connection) -> list[ApiKeyInfo]:
    rows = await conn.fetch(
        "SELECT " + KEY_COLUMNS + " FROM api_keys ORDER BY created_at"  # noqa: S608  (constant columns)
    )
    return [info(r) for r in rows]


USAGE_EVERY_SECONDS = 60.0  # how often one process records that a key is being used


class Usage:
    """When keys were last used, recorded without a write per request: at most once a minute
    per key and process, off the request's path."""

    def __init__(self) -> None:
        self._written: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def touch(self, pool: asyncpg.Pool, key_id: str) -> None:
        now = time.monotonic()
        if now - self._written.get(key_id, -math.inf) < USAGE_EVERY_SECONDS:
            return
        self._written[key_id] = now
        task = asyncio.create_task(self._write(pool, key_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, pool: asyncpg.Pool, key_id: str) -> None:
        with contextlib.suppress(Exception):  # a missed mark only makes last_used_at older
            async with pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO api_key_usage (key_id, last_used_at) VALUES ($1, now()) "
                    "ON CONFLICT (key_id) DO UPDATE SET last_used_at = excluded.last_used_at",
                    uuid.UUID(key_id),
                )


async def revoke_key(conn: asyncpg.Connection, key_id: uuid.UUID, *, actor: str) -> ApiKeyInfo:
    """Revoke a key (once: revoking it again changes nothing), audited, in the caller's
    transaction."""
    key = await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL "  # noqa: S608  (constant columns)
        "RETURNING " + KEY_COLUMNS,
        key_id,
    )
    if key is not None:
        await audit.record(conn, actor=actor, action="api_key.revoked", target=str(key_id))
        return info(key)
    key = await conn.fetchrow("SELECT " + KEY_COLUMNS + " FROM api_keys WHERE key_id = $1", key_id)  # noqa: S608  (constant columns)
    if key is None:
        raise errors.NotFound(f"No API key {key_id}.")
    return info(key)


KEYS_CHANNEL = "custintel_keys"  # notified by a trigger on every change to `api_keys`


class KeyCache:
    """Verified keys, and keys found unknown, so that hot paths and floods of bad keys skip a
    lookup. Every change to api_keys, from any process, empties it (app.platform.notifications): a
    revoked key stops working everywhere at once, a new key works at once. While that listener is
    down, verified keys are trusted for `ttl` seconds only, and unknown keys are not remembered."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal | None]] = {}
        self._listening = False

    def get(self, digest: str) -> Principal | Literal[False] | None:
        """The principal, None for a key known to be unknown, False when not cached."""
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return False
        return entry[1]

    def put(self, digest: str, principal: Principal | None) -> None:
        if principal is None and not self._listening:
            return
        if len(self._entries) > 10_000:
            self._entries.clear()
        # While listening, a notification ends an entry; the lifetime only bounds the memory of
        # keys seen once.
        ttl = max(self.ttl, 300.0) if self._listening else self.ttl
        self._entries[digest] = (time.monotonic() + ttl, principal)

    def forget(self) -> None:
        self._entries.clear()

    def listening(self, up: bool) -> None:
        self._listening = up
        self.forget()


class Limiter:
    """Token buckets by name (a key, an address): `rate` per second, bursts up to `burst`. Per
    process: with N API processes a client gets up to N times the rate."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, name: str) -> float:
        """0 when a request may go ahead (and it is counted), else the seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1:
            self._buckets[name] = (tokens, now)
            return (1 - tokens) / self.rate
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[name] = (tokens - 1, now)
        return 0.0

    def peek(self, name: str) -> float:
        """The seconds to wait before a request would go ahead, without counting one."""
        if self.rate <= 0 or name not in self._buckets:
            return 0.0
        tokens, last = self._buckets[name]
        tokens = min(self.burst, tokens + (time.monotonic() - last) * self.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate


@dataclass
class Limits:
    per_key: Limiter
    per_address: Limiter
    auth_failures: Limiter  # per address: bad keys, before any lookup


def limits(settings: Settings) -> Limits:
    return Limits(
        per_key=Limiter(settings.rate_limit_key_per_second, settings.rate_limit_key_per_second),
        per_address=Limiter(
            settings.rate_limit_address_per_second, settings.rate_limit_address_per_second
        ),
        auth_failures=Limiter(
            settings.auth_failures_per_minute / 60, settings.auth_failures_per_minute
        ),
    )


def _too_many(wait: float, what: str) -> errors.TooManyRequests:
    seconds = max(1, math.ceil(wait))
    return errors.TooManyRequests(
        f"Too many requests {what}; retry after {seconds} s.", retry_after=seconds
    )


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
        operation = getattr(request.scope.get("route"), "operation_id", None)
        if principal.operations is not None and operation not in principal.operations:
            raise errors.Forbidden(f"This key may not call `{operation}`.")
        if principal.sources is not None:
            if operation not in SOURCE_OPERATIONS:
                raise errors.Forbidden("This key is limited to webhook sources.")
            source = request.path_params.get("source_id")
            if source is not None and not principal.reaches(source):
                raise errors.Forbidden("This key is limited to other sources.")
        return principal


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    state = runtime.of(request)
    rate: Limits = state.limits
    address = request.client.host if request.client else ""
    wait = rate.per_address.take(address)
    if wait:
        raise _too_many(wait, "from this address")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise errors.Unauthorized("Missing API key: send `Authorization: Bearer <key>`.")
    digest = hash_key(credentials.credentials)
    bootstrap: str | None = state.bootstrap_key_hash
    if bootstrap is not None and hmac.compare_digest(digest, bootstrap):
        principal: Principal | None = Principal(
            "bootstrap", "bootstrap admin", frozenset({"admin"})
        )
    else:
        cache: KeyCache = state.key_cache
        cached = cache.get(digest)
        if cached is False:
            # An address that keeps sending bad keys is refused before any lookup.
            wait = rate.auth_failures.peek(address)
            if wait:
                raise _too_many(wait, "with unknown keys from this address")
            async with state.pool.acquire() as conn:
                key = await conn.fetchrow(
                    "SELECT key_id, name, scopes, expires_at, operations, sources FROM api_keys "
                    "WHERE key_hash = $1 AND revoked_at IS NULL",
                    digest,
                )
            cached = (
                None
                if key is None
                else Principal(
                    str(key["key_id"]),
                    key["name"],
                    frozenset(key["scopes"]),
                    key["expires_at"],
                    None if key["operations"] is None else frozenset(key["operations"]),
                    None if key["sources"] is None else frozenset(str(s) for s in key["sources"]),
                )
            )
            cache.put(digest, cached)
        principal = cached
    if principal is None:
        rate.auth_failures.take(address)
        raise errors.Unauthorized("Unknown or revoked API key.")
    if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
        raise errors.Unauthorized("This API key has expired.")
    if principal.key_id != "bootstrap":
        state.key_usage.touch(state.pool, principal.key_id)
    wait = rate.per_key.take(principal.key_id)
    if wait:
        raise _too_many(wait, "with this key")
    return principal


Ingest = Annotated[Principal, Depends(ScopeCheck("ingest"))]
Read = Annotated[Principal, Depends(ScopeCheck("read"))]
Insights = Annotated[Principal, Depends(ScopeCheck("insights"))]
Privacy = Annotated[Principal, Depends(ScopeCheck("privacy"))]
Sources = Annotated[Principal, Depends(ScopeCheck("sources"))]
Admin = Annotated[Principal, Depends(ScopeCheck("admin"))]
