"""HubSpot: deliveries signed `X-HubSpot-Signature-v3`, the base64 HMAC-SHA256 of method, URI,
body and the `X-HubSpot-Request-Timestamp` (milliseconds) with the app's client secret; the
subscriptions that still sign v1 send `X-HubSpot-Signature`, the hex SHA-256 of the secret
followed by the body (no timestamp: the event ids make a replay a duplicate). The URI is the
one HubSpot called: behind a proxy that rewrites it, set the source's `url` setting to the
receiver's public URL. A delivery is a JSON array of events, each with its `eventId`.

Its events are counted and not mapped yet (README, "Sources").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import unquote

from app.sources.common import Ignored, Item, Mapped, Request, same


def verify(request: Request, secrets: list[str], *, window: int, settings: dict[str, Any]) -> bool:
    v3 = request.headers.get("x-hubspot-signature-v3")
    if v3:
        timestamp = request.headers.get("x-hubspot-request-timestamp", "")
        if not timestamp.isdigit() or len(timestamp) > 15:
            return False
        if abs(request.received_at.timestamp() * 1000 - int(timestamp)) > window * 1000:
            return False
        # HubSpot signs the URI with these characters decoded.
        uri = str(settings.get("url") or request.url)
        for encoded in ("%3A", "%2F", "%3F", "%40", "%21", "%24", "%27", "%28", "%29", "%2A"):
            uri = uri.replace(encoded, unquote(encoded)).replace(encoded.lower(), unquote(encoded))
        signed = (request.method + uri).encode() + request.body + timestamp.encode()
        for secret in secrets:
            digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
            if same(base64.b64encode(digest), v3):
                return True
        return False
    v1 = request.headers.get("x-hubspot-signature")
    if v1 and request.headers.get("x-hubspot-signature-version", "v1") == "v1":
        return any(
            same(hashlib.sha256(secret.encode() + request.body).hexdigest(), v1)
            for secret in secrets
        )
    return False


def items(payload: Any, request: Request) -> list[Item]:
    events = payload if isinstance(payload, list) else [payload]
    found = []
    for event in events:
        if not isinstance(event, dict) or isinstance(event.get("eventId"), bool):
            raise ValueError("a HubSpot delivery is an array of events, each with an eventId")
        if not isinstance(event.get("eventId"), int | str):
            raise ValueError("a HubSpot delivery is an array of events, each with an eventId")
        found.append(Item(str(event["eventId"]), str(event.get("subscriptionType")), event))
    return found


def map_item(item: Item, settings: dict[str, Any]) -> Mapped:
    raise Ignored(f"{item.event_type}: HubSpot events are not mapped yet")
