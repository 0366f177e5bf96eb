"""openapi/openapi.json is the app's own spec, with stable, readable names."""

from __future__ import annotations

import json
from typing import Any

import orjson
from pydantic import TypeAdapter

from app.cli import OPENAPI_PATH
from app.main import create_app
from app.platform.settings import Settings
from app.schemas import (
    admin,
    common,
    insights,
    metrics,
    models,
    privacy,
    profiles,
    segment,
    signals,
    sources,
    voc,
)


def test_committed_spec_matches_the_app() -> None:
    committed = json.loads(OPENAPI_PATH.read_text())
    current = create_app(Settings()).openapi()
    assert committed == current, "openapi/openapi.json is stale: run `custintel openapi`"


def test_operation_ids_are_stable_snake_case_names() -> None:
    spec = create_app(Settings()).openapi()
    ids = {op["operationId"] for path in spec["paths"].values() for op in path.values()}
    assert {
        "upsert_account",
        "upsert_accounts_batch",
        "get_account",
        "list_accounts",
        "upsert_contact",
        "upsert_contacts_batch",
        "get_contact",
        "ingest_event",
        "ingest_events_batch",
        "record_outcome",
        "record_outcomes_batch",
        "create_api_key",
        "healthz",
        "readyz",
    } <= ids
    assert all(i.replace("_", "").isalnum() and i.islower() for i in ids)


def test_batch_bodies_are_typed_in_the_contract() -> None:
    spec = create_app(Settings()).openapi()
    body = spec["paths"]["/v1/events/batch"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventBatch"
    }
    items = spec["components"]["schemas"]["EventBatch"]["properties"]["events"]
    assert items["items"] == {"$ref": "#/components/schemas/EventIn"}
    assert items["maxItems"] == 5000


def test_every_v1_operation_requires_a_bearer_key() -> None:
    spec = create_app(Settings()).openapi()
    for path, operations in spec["paths"].items():
        for op in operations.values():
            if path.startswith("/v1/"):
                assert op.get("security") == [{"HTTPBearer": []}], path


def _body_types() -> dict[str, Any]:
    """Request body types by their name in the contract."""
    found: dict[str, Any] = {}
    for module in (
        admin,
        common,
        insights,
        metrics,
        models,
        privacy,
        profiles,
        segment,
        signals,
        sources,
        voc,
    ):
        found.update(
            (name, value)
            for name, value in vars(module).items()
            if isinstance(value, type) and value.__module__ == module.__name__
        )
    return found


def test_every_operation_is_described_and_every_body_has_an_example_it_accepts() -> None:
    spec = create_app(Settings()).openapi()
    types = _body_types()
    bodies = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert op.get("description"), f"{method} {path} has no description"
            content = op.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            bodies += 1
            assert "example" in content, f"{method} {path} has no request body example"
            name = content["schema"]["$ref"].rsplit("/", 1)[-1]
            # Validated as the route reads JSON: strictly, from the bytes.
            TypeAdapter(types[name]).validate_json(orjson.dumps(content["example"]))
    assert bodies >= 18


def test_every_reference_in_the_contract_resolves() -> None:
    # A dangling $ref (FastAPI's default 422 schema, dropped from the components) makes ReDoc
    # and client generators refuse the whole spec.
    spec = create_app(Settings()).openapi()
    schemas = spec["components"]["schemas"]
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                found.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert found
    dangling = {r for r in found if r.rsplit("/", 1)[-1] not in schemas}
    assert dangling == set()
