"""Training sets: snapshots of the accounts that existed, their features as of each snapshot, and
whether the label's condition happened in the horizon after it.

Nothing dated after as_of is read: snapshots end at as_of - horizon, so every label window
(s, s + horizon] closes at or before as_of, and every query is bounded by as_of.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import numpy as np
from pydantic import TypeAdapter

from app.ml import features
from app.ml.catalog import Catalog
from app.people import profiles
from app.platform import errors
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.models import (
    EventLabel,
    InactivityLabel,
    Label,
    MrrIncreaseLabel,
    OutcomeLabel,
    TrainRequest,
)

__all__ = ["EventLabel", "InactivityLabel", "Label", "MrrIncreaseLabel", "OutcomeLabel"]
AnyLabel = OutcomeLabel | InactivityLabel | EventLabel | MrrIncreaseLabel


# The outcome each built-in target predicts; any other target predicts the outcome of its name.
OUTCOME_OF = {"churn": "churned", "expansion": "expanded"}
CHURNED = OUTCOME_OF["churn"]


def outcome_of(target: str) -> str:
    return OUTCOME_OF.get(target, target)


# The acts of an advocate (the signal vocabulary's advocacy acts): what the advocacy target
# predicts, acts rather than intentions (most who say they would refer do not).
ADVOCACY = "advocacy"
ADVOCACY_ACTS = ["referral_made", "review_posted", "reference_given", "case_study_published"]
ADVOCACY_ASKED = "advocacy_asked"
# Targets whose outcome a team wants more of (acting should raise it); any other target's
# outcome is one to prevent.
WANTED = frozenset({"expansion", ADVOCACY})


def happened(target: str) -> str:
    """What a positive of the target did, in words ("churned")."""
    if target == ADVOCACY:
        return "acted as an advocate (a referral, review, reference or case study)"
    return OUTCOME_OF.get(target, f"had {target}")


_LABEL: TypeAdapter[Label] = TypeAdapter(Label)


def label_of(stored: JSONObject | str) -> AnyLabel:
    """A label as a model keeps it (its JSON, or the object parsed from it)."""
    if isinstance(stored, str):
        return _LABEL.validate_json(stored)
    return _LABEL.validate_python(stored)


def default_label(target: str) -> OutcomeLabel | EventLabel:
    if target == ADVOCACY:
        return EventLabel(type="event", event_types=ADVOCACY_ACTS)
    return OutcomeLabel(type="outcome", kinds=[outcome_of(target)])


def excluded_outcomes(target: str) -> list[str]:
    """Outcomes that take an account out of a target's training and evaluation populations:
    a churned account can neither churn again nor expand, and batch scoring leaves it out for
    every target. Rows of gone accounts in an expansion model's training set were the easiest
    of its negatives: they raised its held-out AUC, and the population it was measured on
    (its drift reference) was not the one it scores (the simulator: a score PSI of 0.99
    between the latest snapshot and the first batch scoring)."""
    del target  # the same for every target
    return [CHURNED]


@dataclass
class TrainingSet:
    frame: features.Frame
    labels: np.ndarray
    snapshot_of_row: np.ndarray  # index into snapshots, per row
    snapshots: list[datetime]
    stray_events: int = 0  # events before the bulk of the data, which did not move the window


def snapshot_dates(
    *,
    as_of: datetime,
    horizon: timedelta,
    every: timedelta,
    first_data: datetime,
    warm_up: timedelta,
) -> list[datetime]:
    """Every `every` going back from as_of - horizon to the first stored data plus a warm-up,
    oldest first. The warm-up keeps out snapshots that see almost nothing; those after it see
    less history than later ones, and say so (`data_days`, the days of activity on record, is a
    feature), so a short history still yields many snapshots. When the data is too short for
    any warmed-up snapshot, snapshots reach back to the first data."""
    for start in (first_data + warm_up, first_data):
        dates = []
        moment = as_of - horizon
        while moment >= start:
            dates.append(moment)
            moment -= every
        if dates:
            break
    return dates[::-1]


def snapshot_count(
    *,
    as_of: datetime,
    horizon: timedelta,
    every: timedelta,
    first_data: datetime,
    warm_up: timedelta,
) -> int:
    """len(snapshot_dates(...)), computed without making them (a request may ask for millions)."""
    last = as_of - horizon
    for start in (first_data + warm_up, first_data):
        if last >= start:
            return (last - start) // every + 1
    return 0


PAGE = 5_000  # (account, moment) rows whose features one statement reads
STRAY_GAP = timedelta(days=60)  # a silence this long before a few events sets them apart
STRAY_SHARE = 0.01  # ... when they are fewer than this share of all events
STRAY_FEW = 10  # ... or no more than this many


@dataclass(frozen=True)
class DataStart:
    at: datetime  # where the bulk of the signals begins
    ignored: int  # stray events before it, which do not move the training window


async def first_data(conn: asyncpg.Connection, *, as_of: datetime) -> DataStart | None:
    """Where snapshots may begin: where the bulk of the signals begins, or the first profile
    when there are no signals. Profiles often reach back years before signals were sent (a CRM
    import keeps the customer's start date); a snapshot before the first signal would show every
    account silent, and a model would learn that silence is safe when it only means nobody was
    listening yet. A few events dated long before the rest (a backfill, a mistyped year: at most
    STRAY_FEW or under STRAY_SHARE of all, before a silence of STRAY_GAP) are strays: counted,
    not followed."""
    row = await conn.fetchrow(
        """
        WITH days AS (
            SELECT date_trunc('day', occurred_at) AS d, count(*) AS n
            FROM events WHERE occurred_at <= $1 GROUP BY 1
        ), marked AS (
            SELECT d, d - lag(d) OVER w AS gap,
                   coalesce(sum(n) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
                     AS before,
                   sum(n) OVER () AS total
            FROM days WINDOW w AS (ORDER BY d)
        ), bulk AS (
            SELECT d, before FROM marked
            WHERE gap > $2 AND (before <= $4 OR before < $3 * total) ORDER BY d DESC LIMIT 1
        )
        SELECT coalesce(
                 (SELECT min(occurred_at) FROM events WHERE occurred_at <= $1
                    AND occurred_at >= coalesce((SELECT d FROM bulk), '-infinity')),
                 (SELECT min(observed_at) FROM account_history WHERE observed_at <= $1)) AS at,
               coalesce((SELECT before FROM bulk), 0) AS ignored
        """,
        as_of,
        STRAY_GAP,
        STRAY_SHARE,
        STRAY_FEW,
    )
    if row is None or row["at"] is None:
        return None
    return DataStart(row["at"], int(row["ignored"]))


async def population(
    conn: asyncpg.Connection,
    *,
    at: datetime,
    exclude_kinds: list[str],
    active: tuple[list[str], timedelta] | None = None,
    with_signals: bool = False,
) -> list[str]:
    """Accounts that existed at `at` (a profile observation or an event at or before it), less
    those with an outcome of exclude_kinds at or before it (a churned account cannot churn);
    with `active` (event types, a span), only those with such an event in the span up to `at`
    (an account that has already lapsed cannot lapse); `with_signals`, only those with an
    event at or before `at`, in the rollups (most) or not rolled up yet (a CRM record with no
    activity yet has nothing a score could say)."""
    types, span = active if active is not None else (None, timedelta(0))
    rows = await conn.fetch(
        """
        SELECT account_id FROM accounts a
        WHERE account_first_seen(a.account_id) <= $1  -- existed at $1 (profiles.existed)
          AND NOT EXISTS (SELECT 1 FROM outcomes o
                          WHERE o.account_id = a.account_id AND o.kind = ANY($2::text[])
                            AND o.occurred_at <= $1)
          AND ($3::text[] IS NULL OR EXISTS (
                SELECT 1 FROM events e WHERE e.account_id = a.account_id
                  AND e.type = ANY($3::text[]) AND e.occurred_at > $1 - $4::interval
                  AND e.occurred_at <= $1))
          AND (NOT $5::bool
               OR EXISTS (SELECT 1 FROM event_rollups r
                          WHERE r.account_id = a.account_id AND r.first_at <= $1)
               OR EXISTS (SELECT 1 FROM events e
                          WHERE e.account_id = a.account_id AND e.occurred_at <= $1))
        ORDER BY account_id
        """,
        at,
        exclude_kinds,
        types,
        span,
        with_signals,
    )
    return [r[0] for r in rows]


async def labels(
    conn: asyncpg.Connection,
    label: AnyLabel,
    *,
    keys: list[tuple[str, datetime]],
    horizon: timedelta,
) -> np.ndarray:
    """1.0 where the label's condition happens in (t, t + horizon], per (account_id, t)."""
    accounts = [a for a, _ in keys]
    starts = [t for _, t in keys]
    ends = [t + horizon for _, t in keys]
    if isinstance(label, OutcomeLabel):
        sql = """
        SELECT s.i FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
            WITH ORDINALITY AS s(account_id, t, u, i)
        WHERE EXISTS (SELECT 1 FROM outcomes o WHERE o.account_id = s.account_id
                      AND o.kind = ANY($4::text[]) AND o.occurred_at > s.t AND o.occurred_at <= s.u)
        """
        hits = {r[0] for r in await conn.fetch(sql, accounts, starts, ends, label.kinds)}
    elif isinstance(label, InactivityLabel | EventLabel):
        # An event label came true where such an event happened in the window; inactivity
        # where none did.
        negated = "NOT " if isinstance(label, InactivityLabel) else ""
        sql = f"""
        SELECT s.i FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
            WITH ORDINALITY AS s(account_id, t, u, i)
        WHERE {negated}EXISTS (SELECT 1 FROM events e WHERE e.account_id = s.account_id
                          AND e.type = ANY($4::text[]) AND e.occurred_at > s.t
                          AND e.occurred_at <= s.u)
        """  # noqa: S608  (a constant keyword)
        hits = {r[0] for r in await conn.fetch(sql, accounts, starts, ends, label.event_types)}
    else:
        hits = await _mrr_increases(conn, keys, ends, min_pct=label.min_pct)
    return np.array([1.0 if i + 1 in hits else 0.0 for i in range(len(keys))])


async def _mrr_increases(
    conn: asyncpg.Connection,
    keys: list[tuple[str, datetime]],
    ends: list[datetime],
    *,
    min_pct: float,
) -> set[int]:
    rows = await conn.fetch(
        "SELECT account_id, observed_at, changes FROM account_history "
        "WHERE account_id = ANY($1::text[]) AND observed_at <= $2 ORDER BY observed_at, id",
        sorted({a for a, _ in keys}),
        max(ends),
    )
    history: dict[str, list[tuple[datetime, JSONObject]]] = {}
    for r in rows:
        history.setdefault(r["account_id"], []).append(
            (r["observed_at"], features.json_object(r["changes"]))
        )

    def mrr(account_id: str, at: datetime) -> float | None:
        state = profiles.fold(c for when, c in history.get(account_id, ()) if when <= at)
        value = state.get("mrr")
        return float(value) if value is not None else None

    hits = set()
    for i, ((account_id, t), end) in enumerate(zip(keys, ends, strict=True)):
        before, after = mrr(account_id, t), mrr(account_id, end)
        if before and after is not None and after >= before * (1 + min_pct / 100):
            hits.add(i + 1)
    return hits


async def build(
    conn: asyncpg.Connection,
    *,
    target: str,
    label: AnyLabel,
    as_of: datetime,
    horizon: timedelta,
    every: timedelta,
    dates: list[datetime] | None,
    catalog: Catalog,
    first: DataStart | None,
    warm_up: timedelta,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> TrainingSet:
    """`first` is first_data(conn, as_of=as_of), which the caller has read already; `progress`
    is told the rows built so far, and of how many."""
    stray = 0
    if dates is None:
        if first is None:
            raise errors.InvalidPayload(f"No data stored at or before {as_of.isoformat()}.")
        stray = first.ignored
        dates = snapshot_dates(
            as_of=as_of, horizon=horizon, every=every, first_data=first.at, warm_up=warm_up
        )
    late = [d for d in dates if d + horizon > as_of]
    if late:
        raise errors.InvalidPayload(
            f"Snapshot {late[0].isoformat()} plus the horizon ends after as_of; its label "
            "would read the future."
        )
    if not dates:
        raise errors.InvalidPayload(
            "No snapshot fits: the data does not reach back one horizon before as_of."
        )
    exclude = excluded_outcomes(target)
    # A lapse is learnt among accounts still active: one horizon without the label's events
    # already is the lapse, and rows of long-gone accounts would teach only that.
    active = (label.event_types, horizon) if isinstance(label, InactivityLabel) else None
    keys: list[tuple[str, datetime]] = []
    snapshot_of_row: list[int] = []
    for n, date in enumerate(dates):
        for account_id in await population(conn, at=date, exclude_kinds=exclude, active=active):
            keys.append((account_id, date))
            snapshot_of_row.append(n)
    if not keys:
        raise errors.InvalidPayload("No account existed at any snapshot.")
    records: list[asyncpg.Record] = []
    for start in range(0, len(keys), PAGE):  # a page at a time, each told to `progress`
        records += await features.fetch(conn, keys[start : start + PAGE])
        progress(len(records), len(keys))
    frame = features.assemble(catalog, keys, records)
    y = await labels(conn, label, keys=keys, horizon=horizon)
    return TrainingSet(frame, y, np.array(snapshot_of_row), list(dates), stray)


async def check_size(
    conn: asyncpg.Connection, settings: Settings, request: TrainRequest, *, now: datetime
) -> None:
    """Refuse, before any work, a request whose training set would pass the settings' limits
    (one asking for a snapshot every day until the year 9999 ran without end)."""
    as_of = request.as_of or now
    tolerance = timedelta(hours=settings.future_tolerance_hours)
    if as_of > now + tolerance:
        raise _too_large(
            "as_of", f"as_of lies more than {settings.future_tolerance_hours:g} h in the future"
        )
    if request.snapshot_dates:
        snapshots = len(request.snapshot_dates)
    else:
        first = await first_data(conn, as_of=as_of)
        snapshots = (
            0
            if first is None
            else snapshot_count(
                as_of=as_of,
                horizon=timedelta(days=request.horizon_days),
                every=timedelta(days=request.snapshot_every_days),
                first_data=first.at,
                warm_up=timedelta(days=request.warm_up_days),
            )
        )
    if snapshots > settings.train_max_snapshots:
        raise _too_large(
            "snapshot_every_days",
            f"this request makes {snapshots:,} snapshots; at most {settings.train_max_snapshots:,} "
            "(CUSTINTEL_TRAIN_MAX_SNAPSHOTS): take a larger snapshot_every_days or an earlier "
            "as_of",
        )
    accounts: int = await conn.fetchval("SELECT count(*) FROM accounts")
    if snapshots * accounts > settings.train_max_rows:
        raise _too_large(
            "snapshot_every_days",
            f"this request makes up to {snapshots * accounts:,} rows ({snapshots:,} snapshots of "
            f"{accounts:,} accounts); at most {settings.train_max_rows:,} "
            "(CUSTINTEL_TRAIN_MAX_ROWS): take a larger snapshot_every_days",
        )


def _too_large(field: str, detail: str) -> errors.InvalidPayload:
    return errors.InvalidPayload(
        detail, errors=[{"loc": ["body", field], "msg": detail, "type": "value_error"}]
    )
