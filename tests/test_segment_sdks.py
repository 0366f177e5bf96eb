"""The real Segment and RudderStack Python SDKs, pointed at custintel's /segment with an ingest
key, send identify, group, track, page, screen and alias: everything arrives, resolved."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from app.platform.settings import Settings
from tests.conftest import ADMIN_KEY
from tests.fixtures.live import serve

pytestmark = pytest.mark.slow  # starts a server, a subprocess or a browser


def _send(client: Any, prefix: str) -> None:
    user, anonymous, group = f"{prefix}-user", f"{prefix}-anon", f"{prefix}-co"
    # Anonymous first, as a website visit comes before the sign-up: held until resolved.
    client.track(anonymous_id=anonymous, event="Pricing Viewed", properties={"plan": "pro"})
    client.page(anonymous_id=anonymous, name="Pricing")
    client.identify(user, {"email": f"{prefix}@acme.io", "name": "Bo", "role": "admin"})
    client.group(user, group, {"name": f"{prefix} Inc", "plan": "pro", "mrr": 500})
    client.alias(anonymous, user)
    client.track(user, "Report Exported", {"format": "csv", "revenue": 10})
    client.screen(user, name="Dashboard")


def _check(base: str, prefix: str) -> None:
    h = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base, headers=h) as http:
        account = http.get(f"/v1/accounts/{prefix}-co").json()
        assert (account["name"], account["plan"], account["mrr"]) == (f"{prefix} Inc", "pro", 500)
        contact = http.get(f"/v1/contacts/{prefix}-user").json()
        assert (contact["account_id"], contact["email"], contact["role"]) == (
            f"{prefix}-co",
            f"{prefix}@acme.io",
            "admin",
        )
        assert {"kind": "anonymous_id", "value": f"{prefix}-anon"} in contact["identities"]
        events = http.get(f"/v1/accounts/{prefix}-co/events").json()["items"]
        assert sorted(e["type"] for e in events) == [
            "Pricing Viewed",
            "Report Exported",
            "page_viewed",
            "screen_viewed",
        ]
        assert {e["contact_id"] for e in events} == {f"{prefix}-user"}
        assert all(e["source"] == "segment" for e in events)
        unresolved = http.get("/v1/unresolved").json()["items"]
        assert [u for u in unresolved if prefix in str(u["keys"])] == []


def test_the_segment_and_rudderstack_sdks_deliver_everything_resolved(settings: Settings) -> None:
    with serve(str(settings.database_url)) as base:
        created = httpx.post(
            f"{base}/v1/keys",
            json={"name": "sdk", "scopes": ["ingest"]},
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        )
        key = created.json()["key"]
        failures: list[Any] = []
        # Segment's SDK as most apps run it: queued, sent in batches by its thread.
        segment = SegmentClient(
            key,
            host=f"{base}/segment",
            on_error=lambda e, batch: failures.append(e),
            max_retries=1,
        )
        _send(segment, "seg")
        segment.flush()
        segment.join()
        assert failures == []
        _check(base, "seg")
        # RudderStack's, sending each call as it is made (gzip on, its default).
        rudder = RudderClient(key, host=f"{base}/segment", sync_mode=True, max_retries=1)
        _send(rudder, "rud")
        _check(base, "rud")
