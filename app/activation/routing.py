"""Routing: the rules that direct insights, and how an insight is matched to them: which rules
match it, whether its account is in a rule's holdout (stable per rule and account), the owner
and destinations each chose, and the destinations withheld for want of consent; and whether
acting helped (each rule's uplift against its holdout). Raising an insight lives in
app.activation.insights, which records this decision with it; delivering it in
app.activation.deliveries."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypedDict

import asyncpg
import orjson

from app.ml import datasets
from app.platform import errors
from app.platform.jsonbody import JSONObject
from app.schemas.insights import RoutingRule, RoutingRuleIn, RoutingRulePatch, Uplift, UpliftGroup


class Choice(TypedDict):
    """One rule that matched an insight, and what it chose (stored as JSON with the insight)."""

    rule_id: str
    name: str
    holdout: bool
    owner: str | None
    destination_ids: list[str]
    withheld: dict[str, str]  # destination_id: why it was left out


class Decision(TypedDict):
    rules: list[Choice]


def in_holdout(rule_id: str, account_id: str | None, share: float) -> bool:
    """Stable: the same account and rule always land on the same side."""
    if share <= 0 or account_id is None:
        return False
    digest = hashlib.sha256(f"{rule_id}\x00{account_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


@dataclass(frozen=True)
class Raised:
    """An insight as raised, before it is routed and stored."""

    kind: str  # band_entered, score_rise, drift
    target: str | None = None
    account_id: str | None = None
    model_id: str | None = None
    segment: str | None = None
    probability: float | None = None
    band: str | None = None
    previous_probability: float | None = None
    previous_band: str | None = None
    reasons: list[JSONObject] = field(default_factory=list)
    details: JSONObject = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """What routing reads of the account an insight is about."""

    owner_email: str | None = None
    segment: str | None = None
    plan: str | None = None
    traits: JSONObject = field(default_factory=dict)


def matches(match: JSONObject, insight: Raised, profile: Profile) -> bool:
    """A rule's match: every given key must hold (lists mean any of)."""

    def one(wanted: Any, value: Any) -> bool:
        return value in wanted if isinstance(wanted, list) else value == wanted

    for key in ("target", "band", "kind"):
        if key in match and not one(match[key], getattr(insight, key)):
            return False
    for key in ("segment", "plan"):
        if key in match and not one(match[key], getattr(profile, key)):
            return False
    return all(one(v, profile.traits.get(k)) for k, v in (match.get("traits") or {}).items())


async def _withheld(conn: asyncpg.Connection, insight: Raised, chosen: set[str]) -> dict[str, str]:
    """The chosen destinations an insight may not go to: those requiring a consent category
    that the person it names (a detractor's contact) has not given. An insight about an account
    as a whole names no person."""
    contact = insight.details.get("contact_id")
    if not chosen or not isinstance(contact, str):
        return {}
    rows = await conn.fetch(
        "SELECT d.destination_id, d.consent_category FROM destinations d "
        "WHERE d.destination_id = ANY($1::text[]) AND d.consent_category IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.contact_id = $2 "
        "AND c.consent -> d.consent_category = 'true'::jsonb)",
        sorted(chosen),
        contact,
    )
    return {r["destination_id"]: f"consent: {r['consent_category']}" for r in rows}


async def route(conn: asyncpg.Connection, insight: Raised, profile: Profile) -> Decision:
    """The routing decision for an insight: every rule that matched, what it chose, and which
    destinations were withheld for want of consent."""
    chosen: list[Choice] = []
    for rule in await conn.fetch(
        "SELECT rule_id, name, match, destination_ids, owner, holdout_share FROM routing_rules "
        "WHERE enabled ORDER BY created_at, rule_id"
    ):
        if not matches(orjson.loads(rule["match"]), insight, profile):
            continue
        holdout = in_holdout(rule["rule_id"], insight.account_id, rule["holdout_share"])
        chosen.append(
            Choice(
                rule_id=rule["rule_id"],
                name=rule["name"],
                holdout=holdout,
                owner=rule["owner"] or profile.owner_email,
                destination_ids=[] if holdout else list(rule["destination_ids"]),
                withheld={},
            )
        )
    withheld = await _withheld(conn, insight, {d for c in chosen for d in c["destination_ids"]})
    for choice in chosen:
        choice["withheld"] = {d: withheld[d] for d in choice["destination_ids"] if d in withheld}
        choice["destination_ids"] = [d for d in choice["destination_ids"] if d not in withheld]
    return Decision(rules=chosen)


async def uplift(
    conn: asyncpg.Connection, *, rule_id: str, horizon_days: int, now: datetime
) -> Uplift:
    """Outcome rates of the accounts a rule delivered to against those it held out: each
    account counted once, from its first insight by the rule, the outcome being the target's
    (churned for churn, expanded for expansion, else the target's name) within horizon_days
    after it. The difference comes with a 95% interval (normal approximation)."""
    rows = await conn.fetch(
        """
        WITH firsts AS (
            SELECT DISTINCT ON (i.account_id) i.account_id, i.target, i.created_at,
                   (r.value ->> 'holdout')::boolean AS holdout
            FROM insights i, jsonb_array_elements(i.decision -> 'rules') r
            WHERE r.value ->> 'rule_id' = $1 AND i.account_id IS NOT NULL
            ORDER BY i.account_id, i.created_at
        )
        SELECT f.holdout, f.created_at, EXISTS (
            SELECT 1 FROM outcomes o
            WHERE o.account_id = f.account_id
              AND o.kind = coalesce($2::jsonb ->> f.target, f.target)
              AND o.occurred_at > f.created_at AND o.occurred_at <= f.created_at + $3
        ) AS happened
        FROM firsts f
        """,
        rule_id,
        orjson.dumps(datasets.OUTCOME_OF).decode(),
        timedelta(days=horizon_days),
    )
    groups: dict[bool, list[int]] = {True: [0, 0], False: [0, 0]}
    for row in rows:
        groups[row["holdout"]][0] += 1
        groups[row["holdout"]][1] += int(row["happened"])

    def rate(n: int, k: int) -> float | None:
        return k / n if n else None

    delivered, held = groups[False], groups[True]
    p1, p0 = rate(*delivered), rate(*held)
    difference = interval = None
    if p1 is not None and p0 is not None:
        difference = p1 - p0
        se = (p1 * (1 - p1) / delivered[0] + p0 * (1 - p0) / held[0]) ** 0.5
        interval = [difference - 1.96 * se, difference + 1.96 * se]
    return Uplift(
        rule_id=rule_id,
        horizon_days=horizon_days,
        delivered=UpliftGroup(accounts=delivered[0], outcomes=delivered[1], rate=p1),
        held_out=UpliftGroup(accounts=held[0], outcomes=held[1], rate=p0),
        difference=difference,
        interval_95=interval,
        window_closed=all(r["created_at"] + timedelta(days=horizon_days) <= now for r in rows),
    )


_RULE_COLUMNS = (
    "rule_id, name, match, destination_ids, owner, holdout_share, enabled, created_at, updated_at"
)


def _rule(row: asyncpg.Record) -> RoutingRule:
    data = dict(row)
    data["match"] = orjson.loads(data["match"])
    return RoutingRule.model_validate(data)


async def create_rule(conn: asyncpg.Connection, *, rule: RoutingRuleIn) -> RoutingRule:
    row = await conn.fetchrow(
        f"INSERT INTO routing_rules ({_RULE_COLUMNS.rsplit(', created_at', 1)[0]}) "  # noqa: S608  (constant columns)
        f"VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7) RETURNING {_RULE_COLUMNS}",
        uuid.uuid4().hex,
        rule.name,
        rule.match.model_dump_json(exclude_none=True),
        rule.destination_ids,
        rule.owner,
        rule.holdout_share,
        rule.enabled,
    )
    assert row is not None
    return _rule(row)


async def list_rules(conn: asyncpg.Connection) -> list[RoutingRule]:
    rows = await conn.fetch(
        f"SELECT {_RULE_COLUMNS} FROM routing_rules ORDER BY created_at, rule_id"  # noqa: S608  (constant columns)
    )
    return [_rule(r) for r in rows]


async def get_rule(conn: asyncpg.Connection, rule_id: str) -> RoutingRule:
    query = f"SELECT {_RULE_COLUMNS} FROM routing_rules WHERE rule_id = $1"  # noqa: S608  (constant)
    row = await conn.fetchrow(query, rule_id)
    if row is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return _rule(row)


async def update_rule(
    conn: asyncpg.Connection, rule_id: str, *, patch: RoutingRulePatch
) -> RoutingRule:
    """Change the fields given; the others keep their value."""
    changes: JSONObject = {}
    for key, value in patch.model_dump(exclude_unset=True).items():
        if key == "match":
            changes[key] = orjson.dumps(
                patch.match.model_dump(exclude_none=True) if patch.match else {}
            ).decode()
        elif value is not None or key == "owner":
            changes[key] = value
    # Column names come from the patch model's fields, never from the client.
    sets = ", ".join(
        f"{k} = ${n}{'::jsonb' if k == 'match' else ''}" for n, k in enumerate(changes, 2)
    )
    row = await conn.fetchrow(
        f"UPDATE routing_rules SET {sets + ', ' if sets else ''}updated_at = now() "  # noqa: S608  (SET of fixed column names)
        f"WHERE rule_id = $1 RETURNING {_RULE_COLUMNS}",
        rule_id,
        *changes.values(),
    )
    if row is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    return _rule(row)


async def delete_rule(conn: asyncpg.Connection, rule_id: str) -> None:
    deleted = await conn.fetchval(
        "DELETE FROM routing_rules WHERE rule_id = $1 RETURNING 1", rule_id
    )
    if deleted is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")


async def rule_uplift(conn: asyncpg.Connection, rule_id: str, *, horizon_days: int) -> Uplift:
    """Did acting help? The target's outcome rate among accounts the rule delivered to, against
    those it held out."""
    if await conn.fetchval("SELECT 1 FROM routing_rules WHERE rule_id = $1", rule_id) is None:
        raise errors.NotFound(f"No routing rule {rule_id!r}.")
    now = await conn.fetchval("SELECT now()")
    return await uplift(conn, rule_id=rule_id, horizon_days=horizon_days, now=now)
