"""Delivery of insights to destinations: Standard Webhooks signatures, an outbox, retries.

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
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from app import errors
from app.settings import Settings

log = logging.getLogger(__name__)

LEASE_SECONDS = 60
RESPONSE_KEPT = 1000


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that are not http(s) or resolve to loopback, private, link-local or other
    non-public addresses (unless allowed): a destination must not reach inside the network."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise errors.InvalidPayload("url: not a valid URL.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidPayload("url: an http or https URL with a host is required.")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname, port or (443 if parts.scheme == "https" else 80)
        )
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise errors.InvalidPayload("url: the host does not resolve.") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise errors.InvalidPayload(
                f"url: {parts.hostname!r} resolves to {address}, a loopback, private or "
                "link-local address; set CUSTINTEL_ALLOW_PRIVATE_DESTINATIONS to allow it."
            )


def event(insight: dict[str, Any]) -> dict[str, Any]:
    """The webhook payload (openapi.json's webhooks section describes it)."""
    return {
        "type": f"insight.{insight['kind']}",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": insight,
    }


def slack_message(payload: dict[str, Any]) -> dict[str, Any]:
    data = payload["data"]
    reasons = "\n".join(f"• {r['text']}" for r in data.get("reasons", [])[:3])
    who = data.get("account_id") or data.get("model_id") or ""
    head = f"*{data.get('target') or ''} {data['kind'].replace('_', ' ')}*: {who}"
    if data.get("probability") is not None:
        head += f" ({data['probability']:.0%}, {data.get('band')})"
    return {"text": f"{head}\n{reasons}\nNext step: {data.get('next_step', '')}".strip()}


async def enqueue(
    conn: asyncpg.Connection, *, insight_id: str, payload: dict[str, Any], decision: dict[str, Any]
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
    await asyncio.gather(
        *(_attempt(pool, settings, client, d, destinations.get(d["destination_id"])) for d in due)
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
        headers |= _signed(delivery["delivery_id"], body, destination)
    status, response, error, retry_after = None, None, None, None
    started = time.perf_counter()
    try:
        reply = await client.post(destination["url"], content=body, headers=headers)
        status, response = reply.status_code, reply.text[:RESPONSE_KEPT]
        retry_after = _retry_after(reply.headers.get("retry-after"))
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {str(exc)[:RESPONSE_KEPT]}"
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


def _signed(message_id: str, body: bytes, destination: asyncpg.Record) -> dict[str, str]:
    now = datetime.now(UTC)
    secrets_now = [destination["secret"]]
    until = destination["previous_secret_until"]
    if destination["previous_secret"] and until is not None and until > now:
        secrets_now.append(destination["previous_secret"])
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
    async with httpx.AsyncClient(timeout=settings.delivery_timeout_seconds) as client:
        while True:
            try:
                sent = await send_due(pool, settings, client)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                log.warning("database unreachable; deliveries waiting")
                sent = 0
            except Exception:
                log.exception("delivery loop error")
                sent = 0
            if not sent:
                await asyncio.sleep(settings.delivery_poll_seconds)
