"""Which actions work: the outcome rate of accounts acted on, against accounts the routing held
out, per routing rule and per kind of action logged (`action_taken` events, from the console's
inbox or the API), with a 95% interval and the sample size it would take to tell.

Each account counts once per comparison, from its first insight by the rule (a rule's delivered
and held-out accounts), or from its first action of the kind on an insight of the target (an
action's accounts; held out: every account a rule for the target held out, from its first such
insight). Only entries whose horizon has passed count (the others are `pending`), so a rate is
never read before the outcome could happen. Holdouts are drawn at random, so a rule's difference
is an estimate of its effect; which action a person chose is not random, so an action's is a
comparison to keep an eye on, not proof.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from app.ml import datasets, registry
from app.schemas.metrics import ActionEffect, ActionEffects, EffectArm

Z = 1.959964  # two-sided 95%
Z_POWER = 0.841621  # 80% power
DETECT = 0.3  # the relative change to be able to tell: 10% to 7%


def needed_per_arm(rate: float, *, relative: float = DETECT) -> int | None:
    """Accounts per arm to tell a change of the outcome rate from `rate` by `relative` of it,
    at 5% two-sided and 80% power (two proportions, normal approximation): 1,355 for 10% to 7%.
    None when the rate says nothing (0 or 1)."""
    if not 0 < rate < 1:
        return None
    other = rate * (1 - relative)
    mean = (rate + other) / 2
    spread = Z * math.sqrt(2 * mean * (1 - mean)) + Z_POWER * math.sqrt(
        rate * (1 - rate) + other * (1 - other)
    )
    return math.ceil(spread**2 / (rate - other) ** 2)


@dataclass(frozen=True, slots=True)
class Arm:
    accounts: int
    outcomes: int
    pending: int

    @property
    def rate(self) -> float | None:
        return self.outcomes / self.accounts if self.accounts else None

    def out(self) -> EffectArm:
        return EffectArm(
            accounts=self.accounts, outcomes=self.outcomes, rate=self.rate, pending=self.pending
        )


def difference(treated: Arm, held: Arm) -> tuple[float, list[float]] | None:
    """The treated rate minus the held-out rate, with its 95% interval (normal approximation);
    None while either group is empty."""
    p1, p0 = treated.rate, held.rate
    if p1 is None or p0 is None:
        return None
    se = math.sqrt(p1 * (1 - p1) / treated.accounts + p0 * (1 - p0) / held.accounts)
    return p1 - p0, [p1 - p0 - Z * se, p1 - p0 + Z * se]


def compare(name: str, kind: str, target: str, treated: Arm, held: Arm) -> ActionEffect:
    """The effect of one rule or action kind, in words too."""
    p1, p0 = treated.rate, held.rate
    found = difference(treated, held)
    diff, interval = found if found is not None else (None, None)
    pooled = (treated.outcomes + held.outcomes) / max(treated.accounts + held.accounts, 1)
    base = p0 if p0 else pooled
    needed = needed_per_arm(base) if base else None
    fewest = min(treated.accounts, held.accounts)
    enough = needed is not None and fewest >= needed
    outcome = datasets.outcome_of(target)
    if needed is None:
        verdict = (
            f"Not enough evidence yet: no {outcome} outcome has been seen in either group, so "
            "no sample size can be told."
        )
    elif not enough:
        verdict = (
            f"Not enough evidence yet: {treated.accounts:,} accounts acted on and "
            f"{held.accounts:,} held out; telling a change from {base:.0%} to "
            f"{base * (1 - DETECT):.0%} takes {needed:,} per group, about "
            f"{needed - fewest:,} more."
        )
    else:
        assert diff is not None and interval is not None
        if interval[1] < 0:
            judged = f"acting went with fewer {outcome} outcomes"
        elif interval[0] > 0:
            judged = f"acting went with more {outcome} outcomes"
        else:
            judged = "no measurable difference"
        verdict = (
            f"{outcome.capitalize()} within the horizon: {p1:.1%} of the accounts acted on, "
            f"{p0:.1%} of those held out, {diff * 100:+.1f} points (95% "
            f"{interval[0] * 100:+.1f} to {interval[1] * 100:+.1f}): {judged}."
        )
    return ActionEffect(
        name=name,
        kind=kind,
        treated=treated.out(),
        held_out=held.out(),
        difference=diff,
        interval_95=interval,
        needed_per_arm=needed,
        enough_evidence=enough,
        verdict=verdict,
    )


# First insight of each account per rule matching the target, with its holdout flag.
_RULES = """
    SELECT DISTINCT ON (r.value ->> 'rule_id', i.account_id)
           r.value ->> 'rule_id' AS rule_id, r.value ->> 'name' AS name, i.account_id,
           i.created_at AS at, (r.value ->> 'holdout')::boolean AS holdout
    FROM insights i, jsonb_array_elements(i.decision -> 'rules') r
    WHERE i.target = $1 AND i.account_id IS NOT NULL
    ORDER BY r.value ->> 'rule_id', i.account_id, i.created_at"""
# First action of each kind per account, on an insight of the target.
_ACTIONS = """
    SELECT DISTINCT ON (e.properties ->> 'kind', e.account_id)
           e.properties ->> 'kind' AS kind, e.account_id, e.occurred_at AS at
    FROM events e JOIN insights i ON i.insight_id = e.properties ->> 'insight_id'
    WHERE e.type = 'action_taken' AND i.target = $1
    ORDER BY e.properties ->> 'kind', e.account_id, e.occurred_at"""


async def label_of(conn: asyncpg.Connection, target: str) -> datasets.AnyLabel:
    """What counts as the target's outcome: its active model's label (advocacy's acts are
    events, not outcomes), else the target's default."""
    model = await registry.active(conn, target)
    if model is None:
        return datasets.default_label(target)
    return datasets.label_of(model.label)


async def _arm(
    conn: asyncpg.Connection,
    entries: list[tuple[str, datetime]],
    *,
    label: datasets.AnyLabel,
    horizon: timedelta,
    now: datetime,
) -> Arm:
    matured = [(a, t) for a, t in entries if t + horizon <= now]
    if not matured:
        return Arm(0, 0, len(entries))
    happened = await datasets.labels(conn, label, keys=matured, horizon=horizon)
    return Arm(len(matured), int(happened.sum()), len(entries) - len(matured))


async def effects(
    conn: asyncpg.Connection, *, target: str, horizon_days: int, now: datetime
) -> ActionEffects:
    """Every rule's and every action kind's effect on the target's outcome within the horizon."""
    horizon = timedelta(days=horizon_days)
    label = await label_of(conn, target)
    rules: dict[str, tuple[str, dict[bool, list[tuple[str, datetime]]]]] = {}
    held_first: dict[str, datetime] = {}
    for r in await conn.fetch(_RULES, target):
        _, arms = rules.setdefault(r["rule_id"], (r["name"], {True: [], False: []}))
        arms[bool(r["holdout"])].append((r["account_id"], r["at"]))
        if r["holdout"]:
            seen = held_first.get(r["account_id"])
            held_first[r["account_id"]] = r["at"] if seen is None else min(seen, r["at"])
    held_out = list(held_first.items())
    held_arm = await _arm(conn, held_out, label=label, horizon=horizon, now=now)
    out_rules = []
    for rule_id, (name, arms) in sorted(rules.items()):
        treated = await _arm(conn, arms[False], label=label, horizon=horizon, now=now)
        held = await _arm(conn, arms[True], label=label, horizon=horizon, now=now)
        out_rules.append(compare(f"{name} ({rule_id})", "rule", target, treated, held))
    kinds: dict[str, list[tuple[str, datetime]]] = {}
    for r in await conn.fetch(_ACTIONS, target):
        kinds.setdefault(r["kind"], []).append((r["account_id"], r["at"]))
    out_actions = [
        compare(
            kind,
            "action",
            target,
            await _arm(conn, entries, label=label, horizon=horizon, now=now),
            held_arm,
        )
        for kind, entries in sorted(kinds.items())
    ]
    return ActionEffects(
        target=target, horizon_days=horizon_days, rules=out_rules, actions=out_actions
    )
