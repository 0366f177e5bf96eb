"""Features as of t: what custintel knows about an account at a moment t (the kinds of feature
and their words are app.ml.catalog).

Point-in-time by construction: events are read only where occurred_at <= t, profiles and contacts
only where observed_at <= t, so nothing stamped after t can change a feature as of t. Aggregation
happens in Postgres; Python folds the (small) profile histories and assembles the matrix.

Conventions the catalog relies on, so that tools map onto them:
- support tickets: events `ticket_opened` and `ticket_closed`, linked by `properties.ticket_id`;
- surveys: `nps_answered` (0-10) and `csat_answered` (1-5) with the score in `value`;
- billing: `payment_failed`; revenue: the sum of `value` of `invoice_paid` events;
- texts: any event's `text`, by the sentiment the worker read in it (app.voc.enrich): how many
  read negative over 30 and 90 days, their share, the mean sentiment and its trend; and per
  theme (app.voc.themes) how many texts were about it over 90 days and how many of those of the
  last 30 read negative. A text's sentiment depends on the text alone; its themes on the
  installation's themes, learnt from its texts (like a lexicon: they say what a text is about,
  not what happened after t); only texts written at or before t are counted.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import orjson

from app.ml import rollups
from app.ml.catalog import (
    CHANGE_DAYS,
    LONG_WINDOWS,
    RECENCY_CAP_DAYS,
    WINDOWS,
    Catalog,
    is_number,
)
from app.people import profiles
from app.platform import partitions
from app.platform.jsonbody import JSONObject
from app.voc import surveys, themes

TICKET_OPENED, TICKET_CLOSED = "ticket_opened", "ticket_closed"
# Feature values of one (account, t) by feature name: numbers, or None for unknown.
Values = dict[str, float | None]

PAYMENT_FAILED = "payment_failed"
# Where product use comes from: Segment's track, page and screen calls, and events a client
# marks `"source": "product"`. Most of a type's events from these make it a usage type.
USAGE_SOURCES = ("segment", "product")
REVENUE_TYPES = ("invoice_paid",)
EXECUTIVE_SPONSOR = "executive_sponsor"
SURVEY_TYPES = (surveys.NPS, surveys.CSAT, surveys.CES)  # as the partial index on events names them


@dataclass
class Frame:
    """Features of (account, moment) pairs: one row each, NaN where unknown."""

    catalog: Catalog
    keys: list[tuple[str, datetime]]
    matrix: np.ndarray
    segments: list[str | None]

    @property
    def names(self) -> tuple[str, ...]:
        return self.catalog.names

    def column(self, name: str) -> np.ndarray:
        return self.matrix[:, self.catalog.names.index(name)]


async def build_catalog(
    conn: asyncpg.Connection,
    *,
    as_of: datetime,
    max_event_types: int,
    max_levels: int,
    max_traits: int = 50,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    history: timedelta | None = None,
    longest: timedelta | None = None,
) -> Catalog:
    """The features the data up to as_of supports: the most frequent event types, the
    max_traits traits observed most often (numbers as numbers, strings as categories with at
    most max_levels levels), and the long windows the `history` (how far back the bulk of the
    data reaches) covers. `history` is the shortest any training snapshot sees: a long
    window that the earliest snapshots cannot fill would count less there than at serving,
    and days on record and since a first event may be capped at it (a stationary catalog,
    app.ml.stationarity). `longest` is the longest any snapshot sees: recency beyond it is
    none (Catalog.recency_days)."""
    types = await conn.fetch(
        "SELECT type, bool_or(value IS NOT NULL) AS valued, "
        "avg(coalesce(source = ANY($3::text[]), false)::int) > 0.5 AS usage "
        "FROM events WHERE occurred_at <= $1 "
        "GROUP BY type ORDER BY count(*) DESC, type LIMIT $2",
        as_of,
        max_event_types,
        list(USAGE_SOURCES),
    )
    traits = await conn.fetch(
        """
        SELECT t.key, jsonb_typeof(t.value) AS kind, t.value #>> '{}' AS text, count(*) AS n
        FROM account_history h, jsonb_each(h.changes -> 'traits') t
        WHERE h.observed_at <= $1 AND jsonb_typeof(h.changes -> 'traits') = 'object'
        GROUP BY 1, 2, 3
        """,
        as_of,
    )
    kinds: dict[str, set[str]] = defaultdict(set)
    values: dict[str, Counter[str]] = defaultdict(Counter)
    for row in traits:
        if row["kind"] == "null":
            continue
        kinds[row["key"]].add(row["kind"])
        values[row["key"]][row["text"]] += row["n"]
    used = sorted(kinds, key=lambda k: (-values[k].total(), k))[:max_traits]
    numeric = tuple(sorted(k for k in used if kinds[k] == {"number"}))
    strings = {
        k: tuple(level for level, _ in values[k].most_common(max_levels))
        for k in sorted(used)
        if k not in numeric
    }
    fields = await conn.fetch(
        """
        SELECT key, value #>> '{}' AS text, count(*) AS n
        FROM account_history h, jsonb_each(h.changes) f
        WHERE h.observed_at <= $1 AND f.key IN ('plan', 'segment')
          AND jsonb_typeof(f.value) = 'string'
        GROUP BY 1, 2 ORDER BY n DESC, text
        """,
        as_of,
    )
    plans = tuple(r["text"] for r in fields if r["key"] == "plan")[:max_levels]
    segments = tuple(r["text"] for r in fields if r["key"] == "segment")[:max_levels]
    roles = await conn.fetch(
        "SELECT DISTINCT changes ->> 'role' AS role FROM contact_history "
        "WHERE observed_at <= $1 AND changes ->> 'role' IS NOT NULL ORDER BY 1",
        as_of,
    )
    reach = history.days if history is not None else 0
    about = [t for t in await themes.active(conn) if t.coherent]  # one subject each
    return Catalog(
        event_types=tuple(r["type"] for r in types),
        valued_types=tuple(r["type"] for r in types if r["valued"]),
        usage_types=tuple(r["type"] for r in types if r["usage"]),
        windows=WINDOWS + tuple(w for w in LONG_WINDOWS if reach >= w),
        numeric_traits=numeric,
        string_traits=strings,
        plans=plans,
        segments=segments,
        roles=tuple(r["role"] for r in roles)[:max_levels],
        themes=tuple(sorted((t.theme_id, t.name) for t in about)),
        include=tuple(include),
        exclude=tuple(exclude),
        stationary=True,
        cap_days=max(1, history.days) if history is not None else None,
        recency_days=_whole_days(longest) if longest is not None else None,
    )


def _whole_days(span: timedelta) -> int | None:
    """A history in whole days, rounded up (so that no value a snapshot saw lies beyond it),
    or None where it covers the year."""
    days = math.ceil(span / timedelta(days=1))
    return days if days < RECENCY_CAP_DAYS else None


_YEAR = f"e.occurred_at > s.t{RECENCY_CAP_DAYS}"


def _events_sql() -> str:
    """Per pair and event type, the aggregates of the account's events read one by one (a
    handful per event, pivoted in Python), in three ranges: from the start of the UTC month
    RAW_DAYS before t (`lo`, earlier where a month is not rolled up) up to t (part 1), and the
    parts before `lo` of the months where the 180 and 365 day windows begin (parts 2 and 3).
    Each range again as parameters, over every pair at once: Postgres prunes month partitions
    by parameters when the statement starts, but by per-row values only when it runs, after it
    has opened every partition for every subquery (most of a single score's time)."""
    # The year's events, less part 2: it lies in a month the rollups count for the year.
    yearly = f"e.part <> 2 AND e.occurred_at > e.t{RECENCY_CAP_DAYS}"
    # The UTC days with an event of the type, each as its distance from t's day (the cadence
    # is the median gap between them). One sorted array per type: six 64-bit words of day
    # bits, each its own filtered aggregate, took half of a score's time in Postgres.
    day = (
        "(floor(extract(epoch FROM e.t) / 86400)"
        " - floor(extract(epoch FROM e.occurred_at) / 86400))::int"
    )
    columns = (
        "s.i, s.t, s.t7, s.t30, s.t60, s.t90, s.t180, s.t365, "
        "e.type, e.occurred_at, e.value, e.contact_id"
    )
    return f"""
      SELECT q.i, json_agg(q) AS per_type FROM (
        SELECT e.i, e.type,
          count(*) FILTER (WHERE e.occurred_at > e.t7) AS c7,
          count(*) FILTER (WHERE e.occurred_at > e.t30) AS c30,
          count(*) FILTER (WHERE e.occurred_at > e.t90) AS c90,
          count(*) FILTER (WHERE e.part <> 3 AND e.occurred_at > e.t180) AS c180,
          count(*) FILTER (WHERE {yearly}) AS c365,
          count(*) FILTER (WHERE e.part = 1) AS scanned,
          count(*) FILTER (WHERE e.occurred_at <= e.t30 AND e.occurred_at > e.t60) AS p30,
          extract(epoch FROM max(e.occurred_at) FILTER (WHERE {yearly})) AS last,
          extract(epoch FROM min(e.occurred_at) FILTER (WHERE e.part = 1)) AS first_scanned,
          bit_or(1::bigint << {day}) FILTER (WHERE e.occurred_at > e.t30) AS days30,
          array_agg(DISTINCT {day} ORDER BY {day}) FILTER (WHERE {yearly}) AS days_year,
          array_agg(DISTINCT e.contact_id)
              FILTER (WHERE e.occurred_at > e.t30 AND e.contact_id IS NOT NULL) AS contacts30,
          sum(e.value) FILTER (WHERE e.occurred_at > e.t90) AS value90,
          sum(e.value) FILTER (WHERE {yearly}) AS value365,
          count(e.value) FILTER (WHERE {yearly}) AS valued365,
          sum(e.value) FILTER (WHERE e.part = 1) AS value_scanned
        FROM (
          SELECT 1 AS part, {columns} FROM s JOIN events e
            ON e.account_id = s.account_id AND e.occurred_at >= s.lo AND e.occurred_at <= s.t
          WHERE e.occurred_at >= $6 AND e.occurred_at <= $7
          UNION ALL
          SELECT 2, {columns} FROM s JOIN events e
            ON e.account_id = s.account_id AND e.occurred_at > s.t{LONG_WINDOWS[0]}
               AND e.occurred_at < s.r2
          WHERE e.occurred_at > $8 AND e.occurred_at < $9
          UNION ALL
          SELECT 3, {columns} FROM s JOIN events e
            ON e.account_id = s.account_id AND e.occurred_at > s.t{RECENCY_CAP_DAYS}
               AND e.occurred_at < s.r3
          WHERE e.occurred_at > $10 AND e.occurred_at < $11
        ) e
        GROUP BY e.i, e.type
      ) q GROUP BY q.i"""  # noqa: S608  (constants)


_T_DAY = "floor(extract(epoch FROM s.t) / 86400)"


def _rolled_sql() -> str:
    """Per pair and event type, the rolled-up months before `lo` (app.ml.rollups): the lifetime's
    count, value and first instant, and each window's months that lie wholly inside it (a
    window's first month is read event by event, _events_sql), with their days."""
    month = "(r.month::timestamp AT TIME ZONE 'UTC')"
    return f"""
      SELECT r.i, json_object_agg(r.type, json_build_array(
          r.events, r.value_sum, r.first, r.c180, r.c365, r.value365, r.valued365, r.last,
          r.days)) AS rolled
      FROM (
        SELECT s.i, r.type, sum(r.events) AS events, sum(r.value_sum) AS value_sum,
          extract(epoch FROM min(r.first_at)) AS first,
          coalesce(sum(r.events) FILTER (WHERE {month} > s.t180), 0) AS c180,
          coalesce(sum(r.events) FILTER (WHERE {month} > s.t365), 0) AS c365,
          sum(r.value_sum) FILTER (WHERE {month} > s.t365) AS value365,
          coalesce(sum(r.valued) FILTER (WHERE {month} > s.t365), 0) AS valued365,
          extract(epoch FROM max(r.last_at) FILTER (WHERE {month} > s.t365)) AS last,
          -- the days of the year's months with an event, as distances from t's day
          json_agg(json_build_array({_T_DAY} - (r.month - date '1970-01-01'), r.days))
              FILTER (WHERE {month} > s.t365) AS days
        FROM s JOIN event_rollups r
          ON r.account_id = s.account_id AND r.month < (s.lo AT TIME ZONE 'UTC')::date
        GROUP BY s.i, r.type
      ) r GROUP BY r.i"""  # noqa: S608  (constants)


def _surveys_sql() -> str:
    """The year's two latest answers of each survey, the latest first (a partial index by
    account and time: the account's other events are not read)."""
    year = _YEAR
    return f"""
      (SELECT json_object_agg(a.type, a.answers) FROM (
          SELECT e.type,
            (array_agg(e.value ORDER BY e.occurred_at DESC, e.value DESC))[1:2] AS answers
          FROM events e
          WHERE e.account_id = s.account_id AND {year} AND e.occurred_at <= s.t
            AND e.type IN ({", ".join(f"'{k}'" for k in SURVEY_TYPES)})
            AND e.value IS NOT NULL AND e.occurred_at > $10 AND e.occurred_at <= $7
          GROUP BY e.type
       ) a)"""  # noqa: S608  (constants)


def _tickets_sql() -> str:
    """The year's ticket events, [type, ticket id, instant] (a partial index too)."""
    year = _YEAR
    return f"""
      (SELECT json_agg(json_build_array(e.type, e.properties ->> 'ticket_id',
                                        (extract(epoch FROM e.occurred_at) * 1e6)::bigint))
       FROM events e
       WHERE e.account_id = s.account_id AND {year} AND e.occurred_at <= s.t
         AND e.type IN ('{TICKET_OPENED}', '{TICKET_CLOSED}') AND e.properties ? 'ticket_id'
         AND e.occurred_at > $10 AND e.occurred_at <= $7)"""  # noqa: S608  (constants)


def _texts_sql() -> str:
    """Per pair, what the account's people wrote in the 90 days up to t: counts, negative ones,
    mean sentiment, and each text's themes."""
    return """
      SELECT s.i, json_build_array(
          count(*) FILTER (WHERE e.occurred_at > s.t30),
          count(*) FILTER (WHERE e.occurred_at > s.t30 AND x.label = 'negative'),
          count(*),
          count(*) FILTER (WHERE x.label = 'negative'),
          avg(x.sentiment) FILTER (WHERE e.occurred_at > s.t30),
          avg(x.sentiment) FILTER (WHERE e.occurred_at <= s.t30),
          avg(x.sentiment),
          -- each text's themes, and whether it is a negative one of the last 30 days
          json_agg(json_build_array(x.themes, e.occurred_at > s.t30 AND x.label = 'negative'))
              FILTER (WHERE cardinality(x.themes) > 0)) AS texts
      FROM s JOIN events e
        ON e.account_id = s.account_id AND e.occurred_at > s.t90 AND e.occurred_at <= s.t
      JOIN text_enrichments x ON x.event_id = e.event_id
      WHERE e.text IS NOT NULL AND e.occurred_at >= $6 AND e.occurred_at <= $7
      GROUP BY s.i"""


def _sql() -> str:
    """Everything Postgres knows about each (account, t) in one statement, one row per pair (so
    one round trip per call, however many pairs): each family of features by one set-based
    join of the pairs with its table, grouped by pair (a fifth less time per account than a
    subquery per pair and family, for a page of accounts and for one). The survey answers and
    ticket events stay a subquery per pair: joined, a plan made once per connection, without
    knowing how many pairs come, read the whole installation's answers through their partial
    index for one account (9 against 1.1 ms). The families:

    - `per_type` (_events_sql): events read one by one, per event type;
    - `rolled` (_rolled_sql): the event rollups of the months before those (app.ml.rollups);
    - `surveys` and `tickets`: the year's survey answers and ticket events;
    - `texts`: the 90 days' texts with their sentiment and themes;
    - the account's and its contacts' history up to t, and when it was first seen.

    Window bounds are computed once per pair, not per event; instants come as epoch seconds
    (ticket instants as whole microseconds, compared exactly) and days are UTC days, whatever
    the session's zone."""
    bounds = ", ".join(
        f"s.t - interval '{d} days' AS t{d}"
        for d in sorted({*WINDOWS, *LONG_WINDOWS, 60, RECENCY_CAP_DAYS})
    )
    return f"""
    WITH s AS (
        SELECT s.i, s.account_id, s.t, s.lo, s.r2, s.r3, {bounds}
        FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
                    $5::timestamptz[]) WITH ORDINALITY AS s(account_id, t, lo, r2, r3, i)
    )
    SELECT s.i,
      ({rollups.UNROLLED_SQL.replace("$1", "$12")}) AS unrolled,
      EXISTS (SELECT 1 FROM accounts a WHERE a.account_id = s.account_id) AS known,
      account_first_seen(s.account_id) AS first_seen,
      h.account_history, c.contact_history, p.per_type, r.rolled,
      {_surveys_sql()} AS surveys,
      {_tickets_sql()} AS tickets,
      -- no texts: counts of none, means of none
      coalesce(x.texts, json_build_array(0, 0, 0, 0, NULL, NULL, NULL, NULL)) AS texts
    FROM s
    LEFT JOIN ({_events_sql()}) p ON p.i = s.i
    LEFT JOIN ({_rolled_sql()}) r ON r.i = s.i
    LEFT JOIN ({_texts_sql()}) x ON x.i = s.i
    LEFT JOIN (
      SELECT s.i, json_agg(json_build_array(extract(epoch FROM h.observed_at), h.changes)
                           ORDER BY h.observed_at, h.id) AS account_history
      FROM s JOIN account_history h ON h.account_id = s.account_id AND h.observed_at <= s.t
      GROUP BY s.i) h ON h.i = s.i
    LEFT JOIN (
      SELECT s.i, json_agg(json_build_array(h.contact_id, h.changes)
                           ORDER BY h.observed_at, h.id) AS contact_history
      FROM s JOIN contact_history h ON h.account_id = s.account_id AND h.observed_at <= s.t
      GROUP BY s.i) c ON c.i = s.i
    ORDER BY s.i
    """  # noqa: S608  (windows and event type names are constants)


@dataclass(frozen=True)
class _Ranges:
    """Where features as of each t read events one by one (app.ml.rollups): from `lo` on, and the
    parts before `lo` of the months where the 180 and 365 day windows begin (up to r2, r3)."""

    lo: list[datetime]
    r2: list[datetime]
    r3: list[datetime]


def _ranges(moments: Sequence[datetime], floor: datetime | None) -> _Ranges:
    """The ranges of each moment, with every month from `floor` on (not rolled up) read event by
    event too."""
    lo: list[datetime] = []
    r2: list[datetime] = []
    r3: list[datetime] = []
    for t in moments:
        start = rollups.read_from(t)
        if floor is not None and floor < start:
            start = floor
        lo.append(start)
        for long, ends in ((LONG_WINDOWS[0], r2), (RECENCY_CAP_DAYS, r3)):
            begins = partitions.month_of(t - timedelta(days=long))
            following = partitions.next_month(begins)
            end = datetime(following.year, following.month, 1, tzinfo=UTC)
            ends.append(min(end, start))
    return _Ranges(lo, r2, r3)


async def fetch(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, datetime]]
) -> list[asyncpg.Record]:
    """What Postgres knows about each (account_id, t), one record per pair in order. It does not
    depend on a catalog, so one fetch serves every model that scores the same pairs. Months
    that are not rolled up are read event by event (the same features, slower)."""
    if not keys:
        return []
    moments = [t for _, t in keys]
    records: list[asyncpg.Record] = await conn.fetch(
        _SQL, *_arguments(keys, _ranges(moments, None))
    )
    if records[0]["unrolled"]:  # a month the rollups should hold is not rolled up
        floor = await rollups.first_unrolled(conn)
        records = await conn.fetch(_SQL, *_arguments(keys, _ranges(moments, floor)))
    return records


def _arguments(keys: Sequence[tuple[str, datetime]], ranges: _Ranges) -> tuple[Any, ...]:
    moments = [t for _, t in keys]
    upper = max(moments)
    r180 = [t - timedelta(days=LONG_WINDOWS[0]) for t in moments]
    r365 = [t - timedelta(days=RECENCY_CAP_DAYS) for t in moments]
    lo = min(ranges.lo)
    return (
        [a for a, _ in keys],
        moments,
        ranges.lo,
        ranges.r2,
        ranges.r3,
        lo,
        upper,
        min(r180),
        max(ranges.r2),
        min(r365),
        max(ranges.r3),
        partitions.partition_name(partitions.month_of(lo)),
    )


def known(record: asyncpg.Record) -> bool:
    """Whether the account is stored at all."""
    return bool(record["known"])


def existed(record: asyncpg.Record, t: datetime) -> bool:
    """Whether the account had been observed, or had an event, at or before t."""
    return profiles.existed(record["first_seen"], t)


async def compute(
    conn: asyncpg.Connection, catalog: Catalog, keys: Sequence[tuple[str, datetime]]
) -> Frame:
    """Features of each (account_id, t), reading nothing stamped after its t."""
    return assemble(catalog, keys, await fetch(conn, keys))


def assemble(
    catalog: Catalog, keys: Sequence[tuple[str, datetime]], records: Sequence[asyncpg.Record]
) -> Frame:
    """The feature matrix of `catalog` from fetch()'s records of the same keys."""
    names = catalog.names
    position = {name: j for j, name in enumerate(names)}
    levels = {name: {v: code for code, v in enumerate(lv)} for name, lv in catalog.levels().items()}
    matrix = np.full((len(keys), len(names)), np.nan)
    segments: list[str | None] = []
    for row, ((_, t), agg) in enumerate(zip(keys, records, strict=True)):
        per_type = _per_type(agg)
        answers = orjson.loads(agg["surveys"] or "{}")
        values = _event_values(catalog, per_type, answers, t.timestamp())
        texts = orjson.loads(agg["texts"] or "null")
        values |= _text_values(texts, answers)
        if catalog.themes:
            values |= _theme_values(catalog, (texts[7] if texts else None) or [])
        values["tickets_open"] = _open_tickets(orjson.loads(agg["tickets"] or "[]"))
        active = set().union(*(p["contacts30"] or () for p in per_type.values()))
        values["active_contacts_30d"] = len(active)
        history = orjson.loads(agg["account_history"] or "[]")
        profile, changed = _profile_changes(history, t.timestamp())
        values |= changed
        segments.append(profile.get("segment"))
        first_seen = agg["first_seen"] if profiles.existed(agg["first_seen"], t) else None
        values |= {
            "plan": profile.get("plan"),
            "segment": profile.get("segment"),
            "mrr": profile.get("mrr"),
            "tenure_days": (t - first_seen).total_seconds() / 86400 if first_seen else None,
        }
        for trait, value in (profile.get("traits") or {}).items():
            values[f"trait_{trait}"] = value
        roles = _roles(orjson.loads(agg["contact_history"] or "[]"))
        values["contacts"] = len(roles)
        for role in catalog.roles:
            values[f"contacts_{role}"] = sum(1 for r in roles.values() if r == role)
        sponsors = {c for c, r in roles.items() if r == EXECUTIVE_SPONSOR}
        values["executive_sponsor_active_30d"] = (
            float(bool(sponsors & active)) if sponsors else None
        )
        for name, value in values.items():
            j = position.get(name)
            if j is None or value is None:
                continue
            if name in levels:
                code = levels[name].get(str(value))
                if code is not None:
                    matrix[row, j] = code
            elif isinstance(value, bool | int | float):
                matrix[row, j] = float(value)
    return Frame(catalog=catalog, keys=list(keys), matrix=matrix, segments=segments)


_SQL = _sql()


def _per_type(record: asyncpg.Record) -> dict[str, JSONObject]:
    """Per event type, the events read one by one and the rolled-up months of one (account, t)
    as one set of aggregates: counts over each window, the year's value, last instant and days
    with an event, and the lifetime's count, value and first instant."""
    rolled: dict[str, list[Any]] = orjson.loads(record["rolled"] or "{}")
    merged: dict[str, JSONObject] = {}
    for p in orjson.loads(record["per_type"] or "[]"):
        p["lifetime"], p["value_lifetime"], p["first"] = (
            p["scanned"],
            p["value_scanned"] or 0,
            p["first_scanned"],
        )
        p["days_year"] = p["days_year"] or []
        p["value365"] = p["value365"] or 0
        merged[p["type"]] = p
    for kind, old in rolled.items():
        events, value_sum, first, c180, c365, value365, valued365, last, days = old
        p = merged.setdefault(kind, dict(_NO_EVENTS, type=kind))
        p["lifetime"] += events
        p["value_lifetime"] += value_sum
        p["first"] = first if p["first"] is None else min(first, p["first"])
        p["c180"] += c180
        p["c365"] += c365
        p["value365"] += value365 or 0
        p["valued365"] += valued365
        if last is not None and (p["last"] is None or last > p["last"]):
            p["last"] = last
        if days:
            p["days_year"] = sorted({*p["days_year"], *_days(days)})
    return merged


def _days(months: list[list[int]]) -> list[int]:
    """The days with an event of rolled-up months, as distances from t's day, from each month's
    [distance of its first day, bits]: bit d-1 is the month's day d, d-1 days after its first."""
    days = []
    for distance, bits in months:
        while bits:  # one turn per day with an event
            low = bits & -bits
            days.append(distance - low.bit_length() + 1)
            bits ^= low
    return days


# A type with rolled-up months but no event read one by one.
_NO_EVENTS: JSONObject = {
    "c7": 0,
    "c30": 0,
    "c90": 0,
    "c180": 0,
    "c365": 0,
    "p30": 0,
    "last": None,
    "days30": None,
    "days_year": [],
    "contacts30": None,
    "value90": None,
    "value365": 0,
    "valued365": 0,
    "lifetime": 0,
    "value_lifetime": 0,
    "first": None,
}


def _event_values(
    catalog: Catalog,
    per_type: dict[str, JSONObject],
    answers: dict[str, list[float]],
    t: float,
) -> Values:
    """The event features from the per-type aggregates of one (account, t) (`_per_type`) and
    the year's latest survey answers; t in epoch seconds."""
    values: Values = {}
    for kind in catalog.event_types:
        p = per_type.get(kind)
        for w in catalog.windows:
            values[f"events_{kind}_{w}d"] = p[f"c{w}"] if p else 0
        values[f"events_{kind}_trend"] = _trend(p["c30"], p["p30"]) if p else 0.0
        values[f"events_{kind}_lifetime"] = p["lifetime"] if p else 0
        values[f"value_{kind}_lifetime"] = p["value_lifetime"] if p else 0
        if p and p["first"] is not None:
            name = f"days_since_first_{kind}"
            values[name] = catalog.cap(name, (t - p["first"]) / 86400)
        if p is None or not p["c365"]:
            values[f"days_since_{kind}"] = RECENCY_CAP_DAYS
            values[f"value_{kind}_365d"] = 0
            continue
        since = min((t - p["last"]) / 86400, RECENCY_CAP_DAYS)
        values[f"days_since_{kind}"] = catalog.recency(since)
        gap = _median_gap(p["days_year"])
        if gap is not None:
            values[f"gap_{kind}"] = gap
            values[f"overdue_{kind}"] = since / gap
        values[f"value_{kind}_365d"] = p["value365"]
        if p["valued365"]:
            values[f"value_per_{kind}"] = p["value365"] / p["valued365"]
    types = per_type.values()
    events_30d = sum(p["c30"] for p in types)
    nps = per_type.get(surveys.NPS) or {}  # not CSAT's or CES's answers: other scales
    latest, counted = answers.get(surveys.NPS), nps.get("valued365") or 0
    values |= {
        "events_30d": events_30d,
        "events_trend": _trend(events_30d, sum(p["p30"] for p in types)),
        # days30: bit k set when there was an event k UTC days before t's day (k <= 30)
        "active_days_30d": functools.reduce(
            operator.or_, (p["days30"] or 0 for p in types), 0
        ).bit_count(),
        "tickets_opened_90d": per_type[TICKET_OPENED]["c90"] if TICKET_OPENED in per_type else 0,
        "nps_latest": latest[0] if latest else None,
        "nps_average": nps["value365"] / counted if counted else None,
        "payments_failed_90d": per_type[PAYMENT_FAILED]["c90"] if PAYMENT_FAILED in per_type else 0,
        "revenue_90d": sum(per_type[k]["value90"] or 0 for k in REVENUE_TYPES if k in per_type),
        "value_sum_90d": sum(p["value90"] or 0 for p in types),
        "days_since_active": catalog.recency(
            min([(t - p["last"]) / 86400 for p in types if p["c365"]], default=RECENCY_CAP_DAYS)
        ),
    }
    lifetime = sum(p["lifetime"] for p in types)
    on_record = max([(t - p["first"]) / 86400 for p in types if p["first"] is not None], default=0)
    values |= {
        "events_lifetime": lifetime,
        # a day at least: a first event an hour ago is a day's events, not 24 days'
        "events_per_day": lifetime / max(on_record, 1.0) if lifetime else 0.0,
        "data_days": catalog.cap("data_days", on_record),
    }
    return values


def _theme_values(catalog: Catalog, about: list[list[Any]]) -> dict[str, int]:
    """Per theme of the catalog: texts about it over 90 days, and negative ones over 30, from
    each text's [themes, negative in the last 30 days]."""
    texts: Counter[str] = Counter()
    negative: Counter[str] = Counter()
    for themes_of, negative30 in about:
        texts.update(themes_of)
        if negative30:
            negative.update(themes_of)
    values: dict[str, int] = {}
    for theme_id, _ in catalog.themes:
        values[f"texts_{theme_id}_90d"] = texts[theme_id]
        values[f"negative_{theme_id}_30d"] = negative[theme_id]
    return values


def _text_values(texts: list[Any] | None, answers: dict[str, list[float]]) -> Values:
    """What the account's people wrote in the 90 days up to t (the sentiment the worker read,
    app.voc.enrich) and how their NPS and CSAT answers stand (the year's two latest of each)."""
    values: Values = {}
    if texts:  # counts over none are 0, means null
        n30, negative30, n90, negative90, mean30, mean_before, mean90, _ = texts
        values |= {
            "negative_texts_30d": negative30,
            "negative_texts_90d": negative90,
            "negative_share_90d": negative90 / n90 if n90 else None,
            "sentiment_90d": mean90,
            "sentiment_trend": mean30 - mean_before if n30 and mean_before is not None else None,
        }
    nps = answers.get(surveys.NPS)
    if nps:
        latest: Any = nps[0]
        values["nps_detractor"] = float(latest <= surveys.SCALES[surveys.NPS][3])
        if len(nps) > 1:
            values["nps_change"] = nps[0] - nps[1]
    csat = answers.get(surveys.CSAT)
    if csat:
        values["csat_latest"] = csat[0]
    return values


def _profile_changes(history: list[list[Any]], t: float) -> tuple[JSONObject, Values]:
    """The profile at t (profiles.fold of the history), and how it moved: mrr and numeric traits
    against CHANGE_DAYS before t (unknown when the account was not known then), and mrr
    decreases and plan changes in the last year. `history` is [[epoch seconds, changes], ...]
    up to t, in order."""
    then, year = t - CHANGE_DAYS * 86400, t - RECENCY_CAP_DAYS * 86400
    # One pass: the state as it stood CHANGE_DAYS before t, and the year's mrr and plan moves.
    before: JSONObject | None = None
    state: JSONObject = {"traits": {}}
    decreases = plan_changes = 0
    for at, changes in history:
        if at > then and before is None:
            before = dict(state)
        old_mrr: Any = state.get("mrr")
        old_plan = state.get("plan")
        profiles.apply_changes(state, changes)
        if at > year:
            new_mrr: Any = state.get("mrr")
            if is_number(old_mrr) and is_number(new_mrr) and new_mrr < old_mrr:
                decreases += 1
            if old_plan is not None and state.get("plan") != old_plan:
                plan_changes += 1
    values: Values = {}
    if before is None and history:
        before = state  # every change is older than CHANGE_DAYS
    profile = state
    if before is not None and history[0][0] <= then:
        now_mrr: Any = profile.get("mrr")
        then_mrr: Any = before.get("mrr")
        if is_number(now_mrr) and is_number(then_mrr):
            values["mrr_change_90d"] = now_mrr - then_mrr
        for trait, value in (profile.get("traits") or {}).items():
            old = (before.get("traits") or {}).get(trait)
            if is_number(value) and is_number(old):
                values[f"trait_{trait}_change_90d"] = value - old
    values["mrr_decreases_365d"], values["plan_changes_365d"] = decreases, plan_changes
    return profile, values


def _median_gap(days: Sequence[int]) -> float | None:
    """The median number of days between consecutive days with an event, from the days of the
    year with one (each its distance from t's day, ascending; several events on one day are one
    day); None with fewer than two such days."""
    if len(days) < 2:
        return None
    return float(statistics.median(b - a for a, b in itertools.pairwise(days)))


def _open_tickets(tickets: list[list[Any]]) -> int:
    """Tickets whose latest event in the year is an opening (a close at the same instant wins),
    from the year's [type, ticket id, instant] of ticket events."""
    latest: dict[str, dict[str | None, int]] = {TICKET_OPENED: {}, TICKET_CLOSED: {}}
    for kind, ticket, at in tickets:
        last = latest[kind]
        last[ticket] = max(at, last.get(ticket, at))
    closed = latest[TICKET_CLOSED]
    return sum(1 for ticket, at in latest[TICKET_OPENED].items() if at > closed.get(ticket, at - 1))


def _trend(recent: int, before: int) -> float:
    """Log ratio of the last 30 days to the 30 before, smoothed: 0 is flat, -1 about a drop by
    e (2.7) times, and an account going from nothing to nothing is flat rather than undefined."""
    return math.log((recent + 1) / (before + 1))


def _roles(history: Iterable[list[Any]]) -> dict[str, str | None]:
    """Each contact's role after the (already cut, ordered) [contact_id, changes] history."""
    state: dict[str, str | None] = {}
    for contact, changes in history:
        if "role" in changes or contact not in state:
            state[contact] = changes.get("role", state.get(contact))
    return state


def json_object(value: Any) -> JSONObject:
    if isinstance(value, str):
        loaded: JSONObject = orjson.loads(value)
        return loaded
    return dict(value)
