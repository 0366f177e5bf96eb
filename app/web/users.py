"""The console's users: who they are, what they may see, and how they sign in.

Roles: a `csm` sees the accounts they own (an account's `owner_email`); a `lead` sees the
accounts of every user of their team, or every account when they have no team; an `admin` sees
every account and also manages users. Passwords are kept as argon2id hashes (argon2-cffi's
defaults). A sign-in gives a random session token in an HttpOnly cookie; the database keeps its
SHA-256 only, with the session's CSRF token, which every form and every htmx request sends back.
Failed sign-ins are limited per email and per address over a quarter of an hour.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from app.governance import audit
from app.platform import errors
from app.platform.settings import Settings

Role = Literal["csm", "lead", "admin"]
ROLES: tuple[Role, ...] = ("csm", "lead", "admin")
LIMIT_WINDOW = timedelta(minutes=15)
_HASHER = PasswordHasher()
# Verified against when the email is unknown, so that an unknown email takes as long as a wrong
# password and the answer does not tell which emails have users.
_DECOY = _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True, slots=True)
class User:
    user_id: uuid.UUID
    email: str
    name: str
    role: Role
    team: str | None

    @property
    def actor(self) -> str:
        """How the audit trail names what this user changed."""
        return f"user:{self.email}"

    def may(self, role: Role) -> bool:
        """At least this role (csm < lead < admin)."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf: str


def role_of(value: str) -> Role:
    for role in ROLES:
        if value == role:
            return role
    raise errors.InvalidPayload(f"role must be one of {', '.join(ROLES)}")


def _user(row: asyncpg.Record) -> User:
    return User(row["user_id"], row["email"], row["name"], row["role"], row["team"])


def normal_email(email: str) -> str:
    return email.strip().lower()


async def create(
    conn: asyncpg.Connection,
    *,
    email: str,
    name: str,
    role: Role,
    password: str,
    team: str | None = None,
    actor: str,
) -> User:
    """A new user (409 when the email has one already), audited."""
    if role not in ROLES:
        raise errors.InvalidPayload(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 12:
        raise errors.InvalidPayload("A password has at least 12 characters.")
    digest = await asyncio.to_thread(_HASHER.hash, password)
    row = await conn.fetchrow(
        "INSERT INTO users (user_id, email, name, role, team, password_hash) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (email) DO NOTHING "
        "RETURNING user_id, email, name, role, team",
        uuid.uuid4(),
        normal_email(email),
        name,
        role,
        team,
        digest,
    )
    if row is None:
        raise errors.Conflict(f"A user with the email {normal_email(email)!r} exists already.")
    user = _user(row)
    await audit.record(
        conn,
        actor=actor,
        action="user.created",
        target=user.email,
        details={"role": role, "team": team},
    )
    return user


async def ensure(conn: asyncpg.Connection, *, email: str, role: Role, password: str) -> None:
    """The user with this email and role, made or given this password (the demo's users)."""
    digest = await asyncio.to_thread(_HASHER.hash, password)
    await conn.execute(
        "INSERT INTO users (user_id, email, name, role, password_hash) VALUES ($1, $2, $3, $4, $5) "
        "ON CONFLICT (email) DO UPDATE SET role = excluded.role, "
        "password_hash = excluded.password_hash, disabled_at = NULL",
        uuid.uuid4(),
        normal_email(email),
        normal_email(email).split("@")[0],
        role,
        digest,
    )
    await audit.record(conn, actor="demo", action="user.ensured", target=normal_email(email))


async def listing(conn: asyncpg.Connection) -> list[tuple[User, datetime | None]]:
    """Every user with when they were disabled (None: active), by email."""
    rows = await conn.fetch(
        "SELECT user_id, email, name, role, team, disabled_at FROM users ORDER BY email"
    )
    return [(_user(r), r["disabled_at"]) for r in rows]


async def disable(conn: asyncpg.Connection, user_id: uuid.UUID, *, actor: str) -> None:
    """Disable a user and end their sessions, audited."""
    email = await conn.fetchval(
        "UPDATE users SET disabled_at = coalesce(disabled_at, now()) WHERE user_id = $1 "
        "RETURNING email",
        user_id,
    )
    if email is None:
        raise errors.NotFound(f"No user {user_id}.")
    await conn.execute("DELETE FROM web_sessions WHERE user_id = $1", user_id)
    await audit.record(conn, actor=actor, action="user.disabled", target=email)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TooManyAttempts(errors.CustintelError):
    status = 429
    slug = "too-many-sign-ins"
    title = "Too many sign-in attempts"


async def sign_in(
    conn: asyncpg.Connection, *, email: str, password: str, address: str, settings: Settings
) -> tuple[str, Session] | None:
    """A new session's token and the session, or None for a wrong email or password.
    TooManyAttempts once the failures for this email or from this address reach their limit
    within LIMIT_WINDOW, whether or not the password is right this time."""
    email = normal_email(email)
    failures = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE email = $1) AS by_email, "
        "count(*) FILTER (WHERE address = $2) AS by_address FROM login_attempts "
        "WHERE NOT ok AND at > now() - $3::interval AND (email = $1 OR address = $2)",
        email,
        address,
        LIMIT_WINDOW,
    )
    if (
        failures["by_email"] >= settings.login_failures_per_email
        or failures["by_address"] >= settings.login_failures_per_address
    ):
        raise TooManyAttempts("Too many failed sign-ins: wait a quarter of an hour.")
    row = await conn.fetchrow(
        "SELECT user_id, email, name, role, team, password_hash FROM users "
        "WHERE email = $1 AND disabled_at IS NULL",
        email,
    )
    ok = await asyncio.to_thread(_verify, row["password_hash"] if row else _DECOY, password)
    ok = ok and row is not None
    await conn.execute(
        "INSERT INTO login_attempts (email, address, ok) VALUES ($1, $2, $3)", email, address, ok
    )
    if not ok:
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO web_sessions (token_hash, user_id, csrf, expires_at) "
        "VALUES ($1, $2, $3, now() + $4::interval)",
        _token_hash(token),
        row["user_id"],
        csrf,
        timedelta(hours=settings.session_hours),
    )
    # Old attempts and sessions are of no use: cleared as people sign in.
    await conn.execute("DELETE FROM login_attempts WHERE at < now() - $1::interval", LIMIT_WINDOW)
    await conn.execute("DELETE FROM web_sessions WHERE expires_at < now()")
    return token, Session(_user(row), csrf)


def _verify(digest: str, password: str) -> bool:
    try:
        return _HASHER.verify(digest, password)
    except (VerificationError, InvalidHashError):
        return False


async def session(conn: asyncpg.Connection, token: str) -> Session | None:
    """The live session this cookie token opens, or None."""
    row = await conn.fetchrow(
        "SELECT u.user_id, u.email, u.name, u.role, u.team, s.csrf FROM web_sessions s "
        "JOIN users u USING (user_id) "
        "WHERE s.token_hash = $1 AND s.expires_at > now() AND u.disabled_at IS NULL",
        _token_hash(token),
    )
    return None if row is None else Session(_user(row), row["csrf"])


async def sign_out(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute("DELETE FROM web_sessions WHERE token_hash = $1", _token_hash(token))


def csrf_ok(session: Session, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(session.csrf.encode(), sent.encode())


async def owners(conn: asyncpg.Connection, user: User) -> Sequence[str] | None:
    """The owner emails whose accounts this user sees; None: every account."""
    if user.role == "admin" or (user.role == "lead" and user.team is None):
        return None
    if user.role == "lead":
        team: list[str] = [
            r[0]
            for r in await conn.fetch(
                "SELECT email FROM users WHERE team = $1 AND disabled_at IS NULL", user.team
            )
        ]
        return sorted({*team, user.email})
    return [user.email]


def new_password() -> str:
    """A password for a new user, shown once to whoever made the user."""
    return secrets.token_urlsafe(15)
