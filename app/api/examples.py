"""A request body example per operation, shown by /docs and /redoc and put in the contract
(tests/test_contract.py checks each against its operation's schema)."""

from __future__ import annotations

from app.platform.jsonbody import JSONObject

_EVENT = {
    "event_id": "zd-ticket-4521-opened",
    "type": "ticket_opened",
    "source": "zendesk",
    "occurred_at": "2026-02-04T10:00:00Z",
    "account_id": "acme",
    "email": "bo@acme.io",
    "properties": {"ticket_id": "4521", "priority": "high"},
    "text": "Export to CSV fails again since yesterday.",
}
_OUTCOME = {
    "outcome_id": "renewal-acme-2026",
    "account_id": "acme",
    "kind": "renewed",
    "occurred_at": "2026-03-01T00:00:00Z",
    "amount": 50400,
}
_ACCOUNT = {
    "name": "Acme",
    "segment": "enterprise",
    "plan": "pro",
    "mrr": 4200,
    "owner_email": "csm@vendor.io",
    "traits": {"seats": 40, "region": "eu"},
    "identities": [{"kind": "domain", "value": "acme.io"}, {"kind": "crm", "value": "001A7"}],
    "observed_at": "2026-01-01T00:00:00Z",
}
_CONTACT = {
    "account_id": "acme",
    "email": "bo@acme.io",
    "name": "Bo Lind",
    "role": "executive_sponsor",
    "traits": {"title": "VP Operations"},
    "identities": [{"kind": "user_id", "value": "u-812"}],
}
_RULE = {
    "name": "High churn risk to the owner",
    "match": {"target": "churn", "kind": "band_entered", "band": "high"},
    "destination_ids": ["d0b5f7e2-4c1a-4f7e-9a51-2f1f4bb8a001"],
    "holdout_share": 0.1,
    "enabled": True,
}

EXAMPLES: JSONObject = {
    "ingest_event": _EVENT,
    "ingest_events_batch": {
        "events": [
            _EVENT,
            {
                "type": "login",
                "occurred_at": "2026-02-04T09:12:00Z",
                "account_id": "acme",
                "contact_id": "c-17",
            },
        ]
    },
    "record_outcome": _OUTCOME,
    "record_outcomes_batch": {"outcomes": [_OUTCOME]},
    "score_accounts_batch": {"account_ids": ["acme", "globex"], "targets": ["churn"], "top": 3},
    "rescore": {"targets": ["churn", "expansion"], "top": 3},
    "upsert_account": _ACCOUNT,
    "upsert_accounts_batch": {"accounts": [{"account_id": "acme", **_ACCOUNT}]},
    "upsert_contact": _CONTACT,
    "upsert_contacts_batch": {"contacts": [{"contact_id": "c-17", **_CONTACT}]},
    "merge_contacts": {"from": "c-17-duplicate"},
    "merge_accounts": {"from": "acme-inc"},
    "train_model": {"target": "churn", "horizon_days": 90},
    "fit_uplift": {"target": "churn"},
    "rollback_model": {"target": "churn"},
    "update_insight": {"status": "acknowledged", "note": "Called Bo; renewal meeting booked."},
    "create_routing_rule": _RULE,
    "update_routing_rule": {"holdout_share": 0.2, "enabled": True},
    "create_destination": {
        "name": "CRM tasks",
        "kind": "webhook",
        "url": "https://hooks.example.com/custintel",
    },
    "update_destination": {"enabled": False},
    "create_source": {
        "kind": "stripe",
        "name": "Stripe (live)",
        "secret": "whsec_0123456789abcdef0123456789abcdef",
        "settings": {"account_metadata_key": "account_id"},
    },
    "update_source": {"secret": "whsec_fedcba9876543210fedcba9876543210", "grace_hours": 24},
    "create_seed_theme": {"name": "Pricing", "keywords": ["price", "expensive", "cost"]},
    "update_theme": {"name": "CSV export failures", "pinned": True},
    "create_api_key": {"name": "segment relay", "scopes": ["ingest"]},
    "request_erasure": {"email": "bo@acme.io"},
    "segment_identify": {
        "userId": "u-17",
        "traits": {"email": "bo@acme.io", "name": "Bo Lind", "title": "VP Operations"},
        "context": {"groupId": "acme"},
        "timestamp": "2026-02-04T10:00:00Z",
    },
    "segment_group": {
        "userId": "u-17",
        "groupId": "acme",
        "traits": {"name": "Acme", "plan": "pro", "mrr": 4200, "website": "https://acme.io"},
    },
    "segment_track": {
        "userId": "u-17",
        "event": "Report Exported",
        "properties": {"format": "csv"},
        "messageId": "m-2026-02-04-0001",
        "timestamp": "2026-02-04T10:00:00Z",
    },
    "segment_page": {"userId": "u-17", "name": "Pricing", "messageId": "m-2026-02-04-0002"},
    "segment_screen": {"userId": "u-17", "name": "Dashboard", "messageId": "m-2026-02-04-0003"},
    "segment_alias": {"userId": "u-17", "previousId": "anon-5f1c"},
    "segment_batch": {
        "batch": [
            {"type": "identify", "userId": "u-17", "traits": {"email": "bo@acme.io"}},
            {"type": "track", "userId": "u-17", "event": "Login", "messageId": "m-3"},
        ],
        "context": {"groupId": "acme"},
        "sentAt": "2026-02-04T10:00:01Z",
    },
}


def add_to(schema: JSONObject) -> None:
    """Put each operation's example beside its request body's schema."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None and operation.get("operationId") in EXAMPLES:
                body["example"] = EXAMPLES[operation["operationId"]]
