"""Delivery of insights to destinations: the destinations themselves (their sealed secrets),
Standard Webhooks signatures, an outbox, retries, and the record of every try.

Each delivery is written in the same transaction as its insight (the outbox), then sent by the
workers: claimed with FOR UPDATE SKIP LOCKED and leased, so one worker sends it at a time.
Headers follow the Standard Webhooks specification: webhook-id (the delivery id, the same on
every retry, so receivers deduplicate by it), webhook-timestamp, and webhook-signature (during
a secret rotation's grace period, one signature per valid secret). Retries follow
CUSTINTEL_DELIVERY_BACKOFF_SECONDS, later when the receiver asks so with Retry-After; a 410
disables the destination; after the last try the delivery is dead until replayed.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import logging
import secrets
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from app.governance import vault
from app.platform import errors
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.insights import (
    Delivery,
    Destination,
    DestinationIn,
    DestinationPatch,
    DestinationWithSecret,
)

if TYPE_CHECKING:
    from app.activation import routing

log = logging.getLogger(__name__)

LEASE_SECONDS = 60
RESPONSE_KEPT = 1000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or resolve to loopback, private, link-local, multicast or
    other non-public addresses, also when written in an IPv6 form that carries an IPv4 address
    (mapped, NAT64, 6to4, Teredo), unless allowed: a destination must not reach inside the
    network. Checked when saved, and again when sending (`resolve`)."""
    await resolve(url, allow_private=allow_private)


async def resolve(url: str, *, allow_private: bool) -> str | None:
    """A public address the URL's host resolves to now (None when private ones are allowed, or
    the host is already an address), or InvalidPayload saying why there is none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise errors.InvalidPayload("url: not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidPayload("url: an http or https URL with a host is required.")
    if allow_private:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port or (443 if parts.scheme == "https" else 80)
        )
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise errors.InvalidPayload("url: the host does not resolve.") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not _public(address):
            raise errors.InvalidPayload(
                f"url: {parts.hostname!r} resolves to {address}, a loopback, private, "
                "link-local or multicast address; set CUSTINTEL_ALLOW_PRIVATE_DESTINATIONS to "
                "allow it."
            )
    return str(addresses[0]) if addresses else None


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if not address.is_global or address.is_multicast:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        embedded = [address.ipv4_mapped, address.sixtofour]
        if address.teredo:
            embedded += list(address.teredo)
        if address in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        return all(_public(v4) for v4 in embedded if v4 is not None)
    return True


def masked_url(url: str) -> str:
    """The URL as shown to keys without the admin scope: credentials, path and query can be
    secrets themselves (a Slack incoming webhook's path is its key), so only the scheme, host
    and port are left."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "***"
    if ":" in host:
        host = f"[{host}]"
    rest = "/***" if parts.path.strip("/") or parts.query or parts.username else ""
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{rest}"


def event(insight: JSONObject) -> JSONObject:
    """The webhook payload (openapi.json's webhooks section describes it)."""
    return {
        "type": f"insight.{insight['kind']}",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": insight,
    }


def slack_message(payload: JSONObject) -> JSONObject:
    """The insight as a Slack message. Every value from the data (account ids, reasons, which
    quote names clients sent) is escaped for Slack's markup, so that none becomes a link, a
    mention or a channel-wide ping."""
    data = payload["data"]
    reasons = "\n".join(f"• {_slack(r['text'])}" for r in data.get("reasons", [])[:3])
    who = _slack(str(data.get("account_id") or data.get("model_id") or ""))
    kind = _slack(str(data["kind"]).replace("_", " "))
    head = f"*{_slack(str(data.get('target') or ''))} {kind}*: {who}"
    if data.get("probability") is not None:
        head += f" ({data['probability']:.0%}, {_slack(str(data.get('band')))})"
    step = _slack(str(data.get("next_step", "")))
    return {"text": f"{head}\n{reasons}\nNext step: {step}".strip()}


def _slack(text: str) -> str:
    """Slack's own escaping: &, < and > are its control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def enqueue(
    conn: asyncpg.Connection,
    *,
    insight_id: str,
    payload: JSONObject,
    decision: routing.Decision,
) -> int:
    """Outbox rows for every destination the routing decision chose (in the caller's
    transaction). Unknown or disabled destinations are skipped."""
    wanted = sorted({d for rule in decision["rules"] for d in rule["destination_ids"]})
    if not wanted:
        return 0
    rows = await conn.fetch(
        "SELECT destination_id FROM destinations WHERE destination_id = ANY($1::text[]) "
        "AND enabled",
        wanted,
    )
    for row in rows:
        await conn.execute(
            "INSERT INTO deliveries (delivery_id, insight_id, destination_id, status, attempts, "
            "next_attempt_at, payload) VALUES ($1, $2, $3, 'pending', 0, now(), $4::jsonb)",
            "msg_" + uuid.uuid4().hex,
            insight_id,
            row["destination_id"],
            orjson.dumps(payload).decode(),
        )
    return len(rows)


_CLAIM = """
UPDATE deliveries SET next_attempt_at = now() + make_interval(secs => $1)
WHERE delivery_id IN (
    SELECT delivery_id FROM deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at
    FOR UPDATE SKIP LOCKED
    LIMIT $2
)
RETURNING delivery_id, destination_id, attempts, payload
"""


async def send_due(
    pool: asyncpg.Pool, settings: Settings, client: httpx.AsyncClient, *, limit: int = 20
) -> int:
    """Send what is due; the number of attempts made."""
    async with pool.acquire() as conn:
        due = await conn.fetch(_CLAIM, LEASE_SECONDS, limit)
        destinations = {
            r["destination_id"]: r
            for r in await conn.fetch(
                "SELECT * FROM destinations WHERE destination_id = ANY($1::text[])",
                sorted({d["destination_id"] for d in due}),
            )
        }
    results = await asyncio.gather(
        *(_attempt(pool, settings, client, d, destinations.get(d["destination_id"])) for d in due),
        return_exceptions=True,
    )
    for delivery, result in zip(due, results, strict=True):
        if isinstance(result, BaseException):  # one failure does not hold up the others
            log.error(
                "delivery attempt failed",
                extra={"delivery_id": delivery["delivery_id"]},
                exc_info=result,
            )
    return len(due)


async def _attempt(
    pool: asyncpg.Pool,
    settings: Settings,
    client: httpx.AsyncClient,
    delivery: asyncpg.Record,
    destination: asyncpg.Record | None,
) -> None:
    attempt = delivery["attempts"] + 1
    if destination is None or not destination["enabled"]:
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE deliveries SET status = 'dead', attempts = $2 WHERE delivery_id = $1",
                delivery["delivery_id"],
                attempt,
            )
        return
    payload = orjson.loads(delivery["payload"])
    body = orjson.dumps(slack_message(payload) if destination["kind"] == "slack" else payload)
    headers = {"content-type": "application/json", "user-agent": "custintel-webhooks"}
    if destination["kind"] == "webhook":
        headers |= _signed(delivery["delivery_id"], body, destination, settings)
    status, response, error, retry_after = None, None, None, None
    started = time.perf_counter()
    try:
        url, extensions = await _pinned(destination["url"], settings, headers)
        reply = await client.post(url, content=body, headers=headers, extensions=extensions)
        status, response = reply.status_code, _storable(reply.text[:RESPONSE_KEPT])
        retry_after = _retry_after(reply.headers.get("retry-after"))
    except httpx.HTTPError as exc:
        error = _storable(f"{type(exc).__name__}: {str(exc)[:RESPONSE_KEPT]}")
    except errors.InvalidPayload as exc:  # the host now resolves inside the network
        error = _storable(exc.detail)
    duration = (time.perf_counter() - started) * 1000
    schedule = settings.delivery_backoff_seconds
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO delivery_attempts (delivery_id, attempt, status_code, response, error, "
            "duration_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            delivery["delivery_id"],
            attempt,
            status,
            response,
            error,
            duration,
        )
        if status is not None and 200 <= status < 300:
            outcome, next_at = "delivered", None
        elif status == 410:
            outcome, next_at = "dead", None
            await conn.execute(
                "UPDATE destinations SET enabled = false, disabled_reason = $2 "
                "WHERE destination_id = $1",
                destination["destination_id"],
                "the receiver answered 410 Gone",
            )
        elif attempt >= len(schedule):
            outcome, next_at = "dead", None
        else:
            wait = max(schedule[attempt], retry_after or 0.0)
            outcome, next_at = "pending", datetime.now(UTC) + timedelta(seconds=wait)
        await conn.execute(
            "UPDATE deliveries SET status = $2::text, attempts = $3, next_attempt_at = $4, "
            "delivered_at = CASE WHEN $2::text = 'delivered' THEN now() END "
            "WHERE delivery_id = $1",
            delivery["delivery_id"],
            outcome,
            attempt,
            next_at,
        )


async def _pinned(url: str, settings: Settings, headers: dict[str, str]) -> tuple[str, JSONObject]:
    """The URL to connect to: its host resolved and checked again now (it may point elsewhere
    than when the destination was saved: DNS rebinding), and the connection made to that very
    address, with the original host in the Host header and in TLS (SNI and the certificate)."""
    address = await resolve(url, allow_private=settings.allow_private_destinations)
    if address is None:
        return url, {}
    parts = urlsplit(url)
    assert parts.hostname is not None
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc += f":{parts.port}"
    headers["host"] = parts.netloc.rpartition("@")[2]
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), extensions


def _storable(text: str) -> str:
    """Postgres text cannot hold NUL: a receiver's reply with one was never recorded, so its
    delivery was sent again forever."""
    return text.replace("\x00", "\ufffd")


def _signed(
    message_id: str, body: bytes, destination: asyncpg.Record, settings: Settings
) -> dict[str, str]:
    now = datetime.now(UTC)
    secrets_now = [vault.unseal(settings, destination["secret"])]
    until = destination["previous_secret_until"]
    if destination["previous_secret"] and until is not None and until > now:
        secrets_now.append(vault.unseal(settings, destination["previous_secret"]))
    signatures = [
        Webhook(s).sign(msg_id=message_id, timestamp=now, data=body.decode()) for s in secrets_now
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    """Send due deliveries until cancelled."""
    waiting = 0.0  # backoff while the database is unreachable, said once
    async with httpx.AsyncClient(timeout=settings.delivery_timeout_seconds) as client:
        while True:
            try:
                sent = await send_due(pool, settings, client)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                if not waiting:
                    log.warning("database unreachable; deliveries waiting")
                waiting = min(max(waiting * 2, settings.delivery_poll_seconds), 30.0)
                await asyncio.sleep(waiting)
                continue
            except Exception:
                log.exception("delivery loop error")
                sent = 0
            waiting = 0.0
            if not sent:
                await asyncio.sleep(settings.delivery_poll_seconds)


_DESTINATION_COLUMNS = (
    "destination_id, name, kind, url, enabled, disabled_reason, consent_category, created_at"
)


_DELIVERY_COLUMNS = (
    "delivery_id, insight_id, destination_id, status, attempts, next_attempt_at, created_at, "
    "delivered_at"
)


async def create_destination(
    conn: asyncpg.Connection,
    settings: Settings,
    *,
    destination: DestinationIn,
    allow_private: bool,
) -> DestinationWithSecret:
    """A place to deliver insights to; its signing secret is returned this once and stored
    sealed (app.governance.vault)."""
    await check_url(destination.url, allow_private=allow_private)
    secret = new_secret()
    row = await conn.fetchrow(
        "INSERT INTO destinations (destination_id, name, kind, url, secret, enabled, "  # noqa: S608  (constant columns)
        f"consent_category) VALUES ($1, $2, $3, $4, $5, true, $6) RETURNING {_DESTINATION_COLUMNS}",
        "dst_" + uuid.uuid4().hex,
        destination.name,
        destination.kind,
        destination.url,
        vault.seal(settings, secret),
        destination.consent_category,
    )
    assert row is not None
    return DestinationWithSecret(**dict(row), secret=secret)


async def list_destinations(conn: asyncpg.Connection, *, full_urls: bool) -> list[Destination]:
    """Destinations; their URLs in full only with full_urls (credentials, a Slack webhook's
    path are secrets), else scheme, host and port."""
    rows = await conn.fetch(f"SELECT {_DESTINATION_COLUMNS} FROM destinations ORDER BY created_at")  # noqa: S608  (constant columns)
    return [
        Destination(**{**dict(r), "url": r["url"] if full_urls else masked_url(r["url"])})
        for r in rows
    ]


async def update_destination(
    conn: asyncpg.Connection,
    destination_id: str,
    *,
    patch: DestinationPatch,
    allow_private: bool,
) -> Destination:
    """Rename, move or (re-)enable a destination, or change the consent it requires; the
    fields left out keep their value."""
    if patch.url is not None:
        await check_url(patch.url, allow_private=allow_private)
    row = await conn.fetchrow(
        "UPDATE destinations SET name = coalesce($2, name), url = coalesce($3, url), "  # noqa: S608  (constant columns)
        "enabled = coalesce($4, enabled), disabled_reason = CASE WHEN $4 THEN NULL "
        "ELSE disabled_reason END, "
        "consent_category = CASE WHEN $5 THEN $6 ELSE consent_category END "
        f"WHERE destination_id = $1 RETURNING {_DESTINATION_COLUMNS}",
        destination_id,
        patch.name,
        patch.url,
        patch.enabled,
        "consent_category" in patch.model_fields_set,
        patch.consent_category,
    )
    if row is None:
        raise errors.NotFound(f"No destination {destination_id!r}.")
    return Destination(**dict(row))


async def rotate_secret(
    conn: asyncpg.Connection, settings: Settings, destination_id: str, *, grace_hours: float
) -> DestinationWithSecret:
    """A new signing secret, returned this once; both sign for `grace_hours`."""
    secret = new_secret()
    row = await conn.fetchrow(
        "UPDATE destinations SET previous_secret = secret, secret = $2, "  # noqa: S608  (constant columns)
        "previous_secret_until = now() + make_interval(secs => $3) "
        f"WHERE destination_id = $1 RETURNING {_DESTINATION_COLUMNS}",
        destination_id,
        vault.seal(settings, secret),
        grace_hours * 3600,
    )
    if row is None:
        raise errors.NotFound(f"No destination {destination_id!r}.")
    return DestinationWithSecret(**dict(row), secret=secret)


async def list_deliveries(
    conn: asyncpg.Connection, *, insight_id: str | None, status: str | None, limit: int
) -> list[Delivery]:
    """Newest first, each with its tries."""
    rows = await conn.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries WHERE ($1::text IS NULL OR insight_id = $1) "  # noqa: S608  (constant columns)
        "AND ($2::text IS NULL OR status = $2) ORDER BY created_at DESC, delivery_id LIMIT $3",
        insight_id,
        status,
        limit,
    )
    tries = await conn.fetch(
        "SELECT delivery_id, attempt, at, status_code, response, error, duration_ms "
        "FROM delivery_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY attempt",
        [r["delivery_id"] for r in rows],
    )
    by_delivery: dict[str, list[JSONObject]] = {}
    for t in tries:
        by_delivery.setdefault(t["delivery_id"], []).append(dict(t))
    return [Delivery(**dict(r), tries=by_delivery.get(r["delivery_id"], [])) for r in rows]


async def replay_delivery(conn: asyncpg.Connection, delivery_id: str) -> Delivery:
    """Send a dead delivery again, from the first try of the schedule (same webhook-id)."""
    row = await conn.fetchrow(
        "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = now() "  # noqa: S608  (constant columns)
        f"WHERE delivery_id = $1 AND status = 'dead' RETURNING {_DELIVERY_COLUMNS}",
        delivery_id,
    )
    if row is None:
        status = await conn.fetchval(
            "SELECT status FROM deliveries WHERE delivery_id = $1", delivery_id
        )
        if status is None:
            raise errors.NotFound(f"No delivery {delivery_id!r}.")
        raise errors.Conflict(f"Delivery {delivery_id} is {status}; only dead ones replay.")
    return Delivery(**dict(row), tries=[])
