"""Retention and revenue, month by month, from what is stored: each account's MRR as its history
says it was (upserts, and the billing senders' subscription changes, which arrive as upserts),
its churned and reactivated outcomes, and its purchases.

Definitions (the README states them with their edge cases):
- An account's MRR at a moment is the last MRR observed before it, except that an account whose
  last churned outcome came at or after that observation has none (0) until a later observation
  of a positive MRR (or a `reactivated` outcome) brings it back: a reactivation.
- A month is [its first instant, the next month's) in UTC; what happens in it is what is stamped
  in it. Its start is the state just before its first instant; its end, just before the next's.
- Of the accounts with MRR at the start: expansion is the sum of their rises, contraction of
  their falls (to a positive MRR), churned MRR the start MRR of those with none at the end (a
  churn mid-month loses the whole month's MRR; a rise and a fall within one month are netted).
- New MRR: the end MRR of accounts without MRR at the start that never had any before;
  reactivation MRR: of those that had some before.
- Gross revenue retention = (start - contraction - churned) / start; net revenue retention =
  (start + expansion - contraction - churned) / start. End = start + new + reactivation +
  expansion - contraction - churned, exactly.
- Logo churn rate: of the accounts that existed and were not churned at the start (with MRR or
  without), the share churned at the end.
- An account counts in the segment it had at the end of the month; in the signup cohort of the
  month it was first observed.
- Repeat-purchase rate: of the accounts with a purchase (an event of a purchase type) in the
  month, the share with two or more.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from app.ml import datasets
from app.platform import db, errors
from app.schemas.metrics import CohortRetention, RetentionReport, RevenueMonth

ZERO = Decimal(0)
REACTIVATED = "reactivated"
MAX_MONTHS = 60


def month_start(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


END_OF_TIME = datetime.max.replace(tzinfo=UTC)


def next_month(moment: datetime) -> datetime:
    if moment.year == END_OF_TIME.year and moment.month == 12:
        return END_OF_TIME  # the last month there is ends at the end of time
    return datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)


class TooLong(errors.BadRequest):
    pass


def months(since: datetime, until: datetime) -> list[datetime]:
    """The first instants of the months from since's to the one holding until (exclusive end);
    TooLong past MAX_MONTHS."""
    out: list[datetime] = []
    at = month_start(since)
    while at < until:
        if len(out) == MAX_MONTHS:
            raise TooLong(f"A report covers at most {MAX_MONTHS} months: narrow since and until.")
        out.append(at)
        at = next_month(at)
    return out


@dataclass
class Account:
    """One account's timeline: MRR observations, churns and reactivations, segment changes."""

    first_seen: datetime | None = None
    mrr: list[tuple[datetime, Decimal]] = field(default_factory=list)  # in order
    churns: list[datetime] = field(default_factory=list)
    returns: list[datetime] = field(default_factory=list)  # reactivated outcomes
    segments: list[tuple[datetime, str | None]] = field(default_factory=list)

    def mrr_before(self, t: datetime) -> Decimal:
        """The MRR just before t, churns considered (0: none)."""
        i = bisect.bisect_left(self.mrr, (t,), key=lambda x: (x[0],)) - 1
        observed_at, value = self.mrr[i] if i >= 0 else (None, ZERO)
        churned = _last_before(self.churns, t)
        if churned is not None and (observed_at is None or churned >= observed_at):
            back = _last_before(self.returns, t)
            return value if back is not None and back > churned else ZERO
        return value

    def churned_before(self, t: datetime) -> bool:
        """Churned, and not back, just before t (an account with no MRR counts too)."""
        churned = _last_before(self.churns, t)
        if churned is None:
            return False
        back = max(
            [x for x in (_last_before(self.returns, t),) if x is not None]
            + [at for at, v in self.mrr if churned < at < t and v > 0],
            default=None,
        )
        return back is None

    def ever_paid_before(self, t: datetime) -> bool:
        return any(at < t and value > 0 for at, value in self.mrr)

    def segment_before(self, t: datetime) -> str | None:
        i = bisect.bisect_left(self.segments, (t,), key=lambda x: (x[0],)) - 1
        return self.segments[i][1] if i >= 0 else None

    def existed_before(self, t: datetime) -> bool:
        return self.first_seen is not None and self.first_seen < t


def _last_before(moments: Sequence[datetime], t: datetime) -> datetime | None:
    i = bisect.bisect_left(moments, t) - 1
    return moments[i] if i >= 0 else None


_HISTORY = """
    SELECT account_id, observed_at, changes ->> 'mrr' AS mrr, changes ? 'mrr' AS has_mrr,
           changes ->> 'segment' AS segment, changes ? 'segment' AS has_segment
    FROM account_history
    WHERE changes ?| array['mrr', 'segment'] AND observed_at < $1
      AND ($2::text IS NULL OR account_id = $2)
    ORDER BY account_id, observed_at, id"""
_OUTCOMES = """
    SELECT account_id, kind, occurred_at FROM outcomes
    WHERE kind = ANY($1::text[]) AND occurred_at < $2 AND ($3::text IS NULL OR account_id = $3)
    ORDER BY account_id, occurred_at"""
_FIRST_SEEN = """
    SELECT a.account_id,
           coalesce((SELECT min(observed_at) FROM account_history h
                     WHERE h.account_id = a.account_id),
                    account_first_seen(a.account_id)) AS first_seen
    FROM accounts a WHERE ($1::text IS NULL OR a.account_id = $1)"""
_ACCOUNT_HISTORY = db.for_one(_HISTORY, 2, "account_id")
_ACCOUNT_OUTCOMES = db.for_one(_OUTCOMES, 3, "account_id")
_ACCOUNT_FIRST_SEEN = db.for_one(_FIRST_SEEN, 1, "a.account_id")
_PURCHASES = """
    SELECT account_id, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM') AS month, count(*) AS n
    FROM events
    WHERE type = ANY($1::text[]) AND occurred_at >= $2 AND occurred_at < $3
    GROUP BY 1, 2"""


async def timelines(
    conn: asyncpg.Connection, *, until: datetime, account_id: str | None = None
) -> dict[str, Account]:
    """Every account's timeline up to `until` (or this account's)."""
    accounts: dict[str, Account] = {}
    one = account_id is not None
    for r in await conn.fetch(_ACCOUNT_FIRST_SEEN if one else _FIRST_SEEN, account_id):
        accounts[r["account_id"]] = Account(first_seen=r["first_seen"])
    for r in await conn.fetch(_ACCOUNT_HISTORY if one else _HISTORY, until, account_id):
        a = accounts.setdefault(r["account_id"], Account())
        if r["has_mrr"]:
            a.mrr.append((r["observed_at"], _money(r["mrr"])))
        if r["has_segment"]:
            a.segments.append((r["observed_at"], r["segment"]))
    kinds = [datasets.CHURNED, REACTIVATED]
    for r in await conn.fetch(_ACCOUNT_OUTCOMES if one else _OUTCOMES, kinds, until, account_id):
        a = accounts.setdefault(r["account_id"], Account())
        (a.churns if r["kind"] == datasets.CHURNED else a.returns).append(r["occurred_at"])
    return accounts


def _money(value: str | None) -> Decimal:
    if value is None:
        return ZERO
    try:
        return max(Decimal(value), ZERO)
    except ArithmeticError:
        return ZERO


@dataclass
class Month:
    month: str
    start_mrr: Decimal = ZERO
    new_mrr: Decimal = ZERO
    reactivation_mrr: Decimal = ZERO
    expansion_mrr: Decimal = ZERO
    contraction_mrr: Decimal = ZERO
    churned_mrr: Decimal = ZERO
    end_mrr: Decimal = ZERO
    accounts_start: int = 0  # existed and not churned at the start
    paying_start: int = 0  # with MRR at the start
    logos_churned: int = 0
    purchasers: int = 0
    repeat_purchasers: int = 0

    @property
    def grr(self) -> float | None:
        lost = self.contraction_mrr + self.churned_mrr
        return float((self.start_mrr - lost) / self.start_mrr) if self.start_mrr else None

    @property
    def nrr(self) -> float | None:
        kept = self.start_mrr + self.expansion_mrr - self.contraction_mrr - self.churned_mrr
        return float(kept / self.start_mrr) if self.start_mrr else None

    @property
    def logo_churn_rate(self) -> float | None:
        return self.logos_churned / self.accounts_start if self.accounts_start else None

    @property
    def repeat_purchase_rate(self) -> float | None:
        return self.repeat_purchasers / self.purchasers if self.purchasers else None


def month_of(accounts: dict[str, Account], start: datetime, *, segment: str | None) -> Month:
    end = next_month(start)
    out = Month(start.strftime("%Y-%m"))
    for a in accounts.values():
        if segment is not None and a.segment_before(end) != segment:
            continue
        before, after = a.mrr_before(start), a.mrr_before(end)
        if a.existed_before(start) and not a.churned_before(start):
            out.accounts_start += 1
            out.logos_churned += a.churned_before(end)
        out.end_mrr += after
        if before > 0:
            out.paying_start += 1
            out.start_mrr += before
            if after == 0:
                out.churned_mrr += before
            elif after > before:
                out.expansion_mrr += after - before
            else:
                out.contraction_mrr += before - after
        elif after > 0:
            if a.ever_paid_before(start):
                out.reactivation_mrr += after
            else:
                out.new_mrr += after
    return out


@dataclass
class Cohort:
    cohort: str
    accounts: int
    logo_retention: list[float]  # share not churned at the end of each month from the cohort's
    revenue_retention: list[float | None]  # MRR at each month's end over the cohort month's


def cohorts(
    accounts: dict[str, Account],
    firsts: Sequence[datetime],
    *,
    segment: str | None,
    until: datetime,
) -> list[Cohort]:
    out = []
    for first in firsts:
        end_first = next_month(first)
        members = [
            a
            for a in accounts.values()
            if a.first_seen is not None
            and first <= a.first_seen < end_first
            and (segment is None or a.segment_before(end_first) == segment)
        ]
        if not members:
            continue
        logos: list[float] = []
        revenue: list[float | None] = []
        base = sum((a.mrr_before(end_first) for a in members), ZERO)
        for at in firsts:
            if at < first:
                continue
            end = next_month(at)
            logos.append(sum(not a.churned_before(end) for a in members) / len(members))
            mrr = sum((a.mrr_before(end) for a in members), ZERO)
            revenue.append(float(mrr / base) if base else None)
        out.append(Cohort(first.strftime("%Y-%m"), len(members), logos, revenue))
    return out


async def purchases(
    conn: asyncpg.Connection, types: Sequence[str], *, since: datetime, until: datetime
) -> dict[str, dict[str, int]]:
    """Per month, each account's purchases."""
    out: dict[str, dict[str, int]] = {}
    if types:
        for r in await conn.fetch(_PURCHASES, list(types), since, until):
            out.setdefault(r["month"], {})[r["account_id"]] = r["n"]
    return out


@dataclass
class Report:
    since: datetime
    until: datetime
    segment: str | None
    months: list[Month]
    cohorts: list[Cohort]


async def report(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None,
    purchase_types: Sequence[str],
) -> Report:
    firsts = months(since, until)
    accounts = await timelines(conn, until=until)
    bought = await purchases(conn, purchase_types, since=since, until=until)
    rows = []
    for first in firsts:
        row = month_of(accounts, first, segment=segment)
        counts = bought.get(row.month, {})
        if segment is not None:
            counts = {
                k: n
                for k, n in counts.items()
                if k in accounts and accounts[k].segment_before(next_month(first)) == segment
            }
        row.purchasers = len(counts)
        row.repeat_purchasers = sum(n >= 2 for n in counts.values())
        rows.append(row)
    return Report(
        since, until, segment, rows, cohorts(accounts, firsts, segment=segment, until=until)
    )


def _cents(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01")))


async def retention(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None,
    purchase_types: Sequence[str],
) -> RetentionReport:
    """The report as GET /v1/metrics/retention answers it: money to the cent."""
    found = await report(
        conn, since=since, until=until, segment=segment, purchase_types=purchase_types
    )
    return RetentionReport(
        period="month",
        since=found.since,
        until=found.until,
        segment=found.segment,
        months=[
            RevenueMonth(
                month=m.month,
                start_mrr=_cents(m.start_mrr),
                new_mrr=_cents(m.new_mrr),
                reactivation_mrr=_cents(m.reactivation_mrr),
                expansion_mrr=_cents(m.expansion_mrr),
                contraction_mrr=_cents(m.contraction_mrr),
                churned_mrr=_cents(m.churned_mrr),
                end_mrr=_cents(m.end_mrr),
                gross_revenue_retention=m.grr,
                net_revenue_retention=m.nrr,
                accounts_start=m.accounts_start,
                paying_start=m.paying_start,
                logos_churned=m.logos_churned,
                logo_churn_rate=m.logo_churn_rate,
                purchasers=m.purchasers,
                repeat_purchase_rate=m.repeat_purchase_rate,
            )
            for m in found.months
        ],
        cohorts=[
            CohortRetention(
                cohort=c.cohort,
                accounts=c.accounts,
                logo_retention=c.logo_retention,
                revenue_retention=c.revenue_retention,
            )
            for c in found.cohorts
        ],
    )
