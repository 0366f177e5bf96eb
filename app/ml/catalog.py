"""The feature catalog: every kind of feature custintel computes, described once.

One table of specs says what each feature measures, in the words a customer-success manager
reads, in which unit it is shown, whether a person can act on it, and which way it is expected to
push each target when that is known. The catalog of a model (which event types, roles and traits
it has features for) names its features from these specs and keeps, for each name, the spec and
what it is about (an event type, a role, a trait key), so nothing is parsed back from a name.
Reason texts (app.ml.scoring) and the simulator's planted drivers read the same table.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from app.platform.jsonbody import JSONObject

WINDOWS = (7, 30, 90)  # every catalog counts events in these
LONG_WINDOWS = (180, 365)  # ... and in these when the data reaches back that far
RECENCY_CAP_DAYS = 365  # how far back an event counts (days since: at most this, also when none)
CHANGE_DAYS = 90  # profile changes (mrr, numeric traits) are measured over this many days

# How a value is shown: count and days as whole numbers, ago as a time since ("2 hours ago",
# "none in the last year"), trend as a percent change (it is a log ratio), flag as yes/no, score
# and number with one decimal when not whole, money as whole units of the installation's
# currency ("$13,758"; CUSTINTEL_CURRENCY), sentiment in words ("mostly negative"), category as
# its level, ratio as "3.2 times", share as a percentage
Unit = Literal[
    "count",
    "days",
    "ago",
    "trend",
    "flag",
    "score",
    "money",
    "number",
    "category",
    "ratio",
    "share",
    "sentiment",
]
Direction = Literal[1, -1] | None  # +1: a higher value raises the target's probability


@dataclass(frozen=True)
class Spec:
    key: str  # the name, or its pattern with {type}, {window}, {role} or {trait}
    words: str  # the same placeholders, filled in the reader's words
    unit: Unit
    actionable: bool  # a person can change it (usage, tickets, sponsors), not a given (segment)
    churn: Direction = None
    expansion: Direction = None
    # What a reason says when the value means there was none ("No login in the last year"
    # rather than "Last login: none in the last year"), with the same placeholders.
    none: str | None = None
    # One of the few features a small training set can afford, which the search also tries
    # alone (app.ml.training): every account-level feature and trait, and of each event type
    # only its 30-day count. A hundred per-type columns on a few thousand rows let trees chase
    # noise (an online shop's clickstream: 0.630 with all, 0.655 with these alone).
    compact: bool = True
    # Features saying nearly the same thing share a family ("Failed payments in the last 90
    # days" and "Payment failed in the last 30 days"): a score's reasons name one of each, the
    # stronger. Same placeholders; None: a family of its own.
    family: str | None = None
    # It can grow with the installation's own age (days on record, days since a first event,
    # tenure where the record is the only start known, lifetime counts, and a year's counts
    # until the installation is a year old: the demo's invoice value over the year shifted by
    # 0.41 between its latest snapshot and now): the stationarity check at training
    # (app.ml.stationarity) drops it when its values now have shifted from the snapshots'.
    grows: bool = False


SPECS: tuple[Spec, ...] = (
    Spec(
        "events_{type}_{window}d",
        "{Type} in the last {window} days",
        "count",
        True,
        family="type:{type}",
    ),
    Spec(
        "events_{type}_trend",
        "{Type} in the last 30 days against the 30 before",
        "trend",
        True,
        compact=False,
        family="type:{type}",
    ),
    Spec(
        "days_since_{type}",
        "Last {type}",
        "ago",
        True,
        none="No {type} in the last {span}",
        compact=False,
        family="type:{type}",
    ),
    Spec(
        "days_since_first_{type}",
        "Days since the first {type}",
        "days",
        False,
        compact=False,
        family="type:{type}",
        grows=True,
    ),
    Spec(
        "events_{type}_lifetime",
        "{Type} ever",
        "count",
        False,
        compact=False,
        family="type:{type}",
        grows=True,
    ),
    Spec(
        "gap_{type}",
        "Typical days between {type} events in the last year",
        "days",
        True,
        compact=False,
    ),
    Spec(
        "overdue_{type}",
        "Time since the last {type}, in typical gaps between them",
        "ratio",
        True,
        compact=False,
    ),
    Spec(
        "value_{type}_365d",
        "Value of {type} events in the last year",
        "number",
        False,
        compact=False,
        grows=True,  # until the installation is a year old, as the year's other counts
    ),
    Spec(
        "value_per_{type}",
        "Average value of a {type} event in the last year",
        "number",
        False,
        compact=False,
    ),
    Spec(
        "value_{type}_lifetime",
        "Value of {type} events ever",
        "number",
        False,
        compact=False,
        grows=True,
    ),
    Spec("events_30d", "Events in the last 30 days", "count", True, -1, 1, family="activity"),
    Spec("days_since_active", "Last activity", "ago", True, none="No activity in the last {span}"),
    Spec("events_lifetime", "Events ever", "count", False, grows=True),
    # The lifetime count re-expressed so it does not grow with the installation's age: the
    # rate over the account's own days on record.
    Spec("events_per_day", "Events per day on record", "number", False, family="activity"),
    Spec(
        "events_trend", "Activity in the last 30 days against the 30 before", "trend", True, -1, 1
    ),
    Spec(
        "active_days_30d",
        "Active days in the last 30 days",
        "count",
        True,
        -1,
        1,
        family="activity",
    ),
    Spec("active_contacts_30d", "People active in the last 30 days", "count", True, -1, 1),
    Spec(
        "tickets_opened_90d",
        "Support tickets opened in the last 90 days",
        "count",
        True,
        1,
        family="type:ticket_opened",
    ),
    Spec("tickets_open", "Support tickets still open", "count", True, 1),
    Spec("nps_latest", "Latest NPS answer", "score", True, -1, 1, family="nps_latest"),
    Spec("nps_average", "Average NPS answer over the last year", "score", True, -1, 1),
    Spec("nps_change", "Change between the last two NPS answers", "number", True, -1, 1),
    Spec(
        "nps_detractor",
        "Latest NPS answer from a detractor (0 to 6)",
        "flag",
        True,
        1,
        -1,
        family="nps_latest",
    ),
    Spec("csat_latest", "Latest CSAT answer (1 to 5)", "score", True, -1, 1),
    Spec(
        "negative_texts_30d",
        "Negative texts in the last 30 days",
        "count",
        True,
        1,
        family="negative_texts",
    ),
    Spec(
        "negative_texts_90d",
        "Negative texts in the last 90 days",
        "count",
        True,
        1,
        family="negative_texts",
    ),
    Spec(
        "negative_share_90d",
        "Share of the last 90 days' texts that read negative",
        "share",
        True,
        1,
        family="negative_texts",
    ),
    Spec("sentiment_90d", "Mean sentiment of the last 90 days' texts", "sentiment", True, -1, 1),
    Spec(
        "negative_{theme}_30d",
        "Negative texts about {theme} in the last 30 days",
        "count",
        True,
        1,
        compact=False,
        family="theme:{about}",
    ),
    Spec(
        "texts_{theme}_90d",
        "Texts about {theme} in the last 90 days",
        "count",
        True,
        compact=False,
        family="theme:{about}",
    ),
    Spec(
        "sentiment_trend",
        "Sentiment of the last 30 days' texts against the 60 before",
        "number",
        True,
        -1,
        1,
    ),
    Spec(
        "payments_failed_90d",
        "Failed payments in the last 90 days",
        "count",
        True,
        1,
        family="type:payment_failed",
    ),
    Spec("revenue_90d", "Revenue in the last 90 days", "money", False),
    Spec("value_sum_90d", "Sum of event values in the last 90 days", "number", False),
    Spec("plan", "Plan", "category", False),
    Spec("segment", "Segment", "category", False),
    Spec("mrr", "MRR", "money", False),
    Spec("tenure_days", "Days as a customer", "days", False, grows=True),
    Spec("data_days", "Days of activity on record", "days", False, grows=True),
    Spec("mrr_change_90d", "MRR change over the last 90 days", "money", False, -1),
    Spec("mrr_decreases_365d", "MRR decreases in the last year", "count", False, 1, grows=True),
    Spec("plan_changes_365d", "Plan changes in the last year", "count", False, grows=True),
    Spec("contacts", "Contacts", "count", True),
    Spec("contacts_{role}", "Contacts who are {role}", "count", True),
    Spec(
        "executive_sponsor_active_30d",
        "Executive sponsor active in the last 30 days",
        "flag",
        True,
        -1,
        1,
    ),
    Spec("trait_{trait}", "{Trait}", "number", False, family="trait:{about}"),
    Spec("trait_{trait}:category", "{Trait}", "category", False, family="trait:{about}"),
    Spec(
        "trait_{trait}_change_90d",
        "Change in {trait} over the last 90 days",
        "number",
        False,
        compact=False,
    ),
)
SPEC = {s.key: s for s in SPECS}
# Directions of an event type's own features (churn, expansion) where the type's meaning is
# known. Product use: more of it, and more recently, never raises churn risk nor lowers the
# chance of expansion ("Login in the last 30 days: 247 (typical 35); raises churn risk" was a
# model's reading of noise). Tickets opened and payments failed never lower churn risk.
Pair = tuple[Direction, Direction]
USAGE: dict[str, Pair] = {
    "events_{type}_{window}d": (-1, 1),
    "events_{type}_trend": (-1, 1),
    "days_since_{type}": (1, -1),
    "overdue_{type}": (1, -1),
}
_TROUBLE: dict[str, Pair] = {"events_{type}_{window}d": (1, None), "days_since_{type}": (-1, None)}
TYPE_DIRECTIONS: dict[str, dict[str, Pair]] = {
    "ticket_opened": _TROUBLE,
    "payment_failed": _TROUBLE,
}
# Capped at the shortest history a training snapshot saw, in a stationary catalog.
CAPPED = ("data_days", "days_since_first_{type}")


@dataclass(frozen=True)
class Feature:
    """One feature of a catalog: its name, its spec, and what it is about."""

    name: str
    spec: Spec
    about: str | None = None  # the event type, role, trait key or theme id
    window: int | None = None
    title: str | None = None  # a theme's name when the feature was made
    # How far back a recency ("ago") looks: a year, or less where the catalog's recency_days
    # says so; beyond it, there was none.
    within: int = RECENCY_CAP_DAYS

    @property
    def words(self) -> str:
        return self._fill(self.spec.words)

    @property
    def family(self) -> str:
        """What the feature is about, shared by the features saying nearly the same thing."""
        family = self.spec.family
        if family is None:
            return self.name
        # the raw id (not words): two event types that read alike stay two families
        return family.replace("{type}", self.about or "").replace("{about}", self.about or "")

    @property
    def compact(self) -> bool:
        return self.spec.compact and self.window in (None, 30)

    def stated(self, value: Any) -> str:
        """The feature and its value as a person says it: "Last login: 3 days ago", or "No
        login in the last year" where the spec has words for none."""
        none = self.spec.none
        if none and self.spec.unit == "ago" and is_number(value) and value >= RECENCY_CAP_DAYS:
            return self._fill(none)
        return f"{self.words}: {self.show(value)}"

    def _fill(self, template: str) -> str:
        about = (self.about or "").replace("_", " ")
        return template.format(
            type=about,
            Type=about.capitalize(),
            role=about,
            trait=about,
            Trait=about.capitalize(),
            theme=self.title or about,
            window=self.window,
            span=_span(self.within),
        )

    def show(self, value: Any) -> str:
        """A value of this feature as a person reads it."""
        if value is None:
            return "unknown"
        if isinstance(value, str):
            return value
        unit = self.spec.unit
        if unit == "flag":
            return "yes" if value >= 0.5 else "no"
        if unit == "ago":
            return _ago(value, self.within)
        if unit == "trend":
            return f"{math.exp(value) - 1:+.0%}"
        if unit == "share":
            return f"{value:.0%}"
        if unit == "ratio":
            return f"{value:,.1f} times"
        if unit == "sentiment":
            return _feeling(value)
        if unit == "money":
            from app.platform.settings import get_settings  # the installation's, at display time

            return money(value, get_settings().currency)
        if unit in ("count", "days") or abs(value - round(value)) < 1e-9:
            return f"{round(value):,}"
        return f"{value:,.1f}"


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean, which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


# Symbols of the commonest currencies; any other is written after the amount ("1,200 CHF").
_SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "JPY": "¥", "INR": "₹", "CAD": "CA$", "AUD": "A$"}


def money(value: float, currency: str) -> str:
    """An amount in whole units of a currency: "$13,758", "-€300", "1,200 CHF"."""
    amount = f"{abs(round(value)):,}"
    sign = "-" if round(value) < 0 else ""
    symbol = _SYMBOLS.get(currency.upper())
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency.upper()}"


def _feeling(score: float) -> str:
    """A sentiment score (-1 to 1) in words."""
    if score <= -0.5:
        return "mostly negative"
    if score < -0.05:
        return "somewhat negative"
    if score <= 0.05:
        return "neutral"
    if score < 0.5:
        return "somewhat positive"
    return "mostly positive"


def _span(days: int) -> str:
    return "year" if days >= RECENCY_CAP_DAYS else f"{days:,} days"


def _ago(days: float, within: int = RECENCY_CAP_DAYS) -> str:
    if days >= RECENCY_CAP_DAYS:
        return f"none in the last {_span(within)}"
    if days < 1:
        hours = round(days * 24)
        return "within the hour" if hours < 1 else f"{hours} hour{'s' * (hours != 1)} ago"
    whole = round(days)
    return f"{whole} day{'s' * (whole != 1)} ago"


def _features(
    event_types: tuple[str, ...],
    valued_types: tuple[str, ...],
    windows: tuple[int, ...],
    roles: tuple[str, ...],
    numeric_traits: tuple[str, ...],
    string_traits: tuple[str, ...],
    themes: tuple[tuple[str, str], ...],
    stationary: bool,
) -> list[Feature]:
    found: list[Feature] = []
    for kind in event_types:
        found += [
            Feature(f"events_{kind}_{w}d", SPEC["events_{type}_{window}d"], kind, w)
            for w in windows
        ]
        found.append(Feature(f"events_{kind}_trend", SPEC["events_{type}_trend"], kind))
        for key in (
            "events_{type}_lifetime",
            "days_since_{type}",
            "days_since_first_{type}",
            "gap_{type}",
            "overdue_{type}",
        ):
            found.append(Feature(key.format(type=kind), SPEC[key], kind))
        if kind in valued_types:
            for key in ("value_{type}_365d", "value_{type}_lifetime", "value_per_{type}"):
                found.append(Feature(key.format(type=kind), SPEC[key], kind))
    fixed = [s for s in SPECS if "{" not in s.key]
    found += [Feature(s.key, s) for s in fixed if s.key != "executive_sponsor_active_30d"]
    # Lifetime counts grow with the installation where accounts are as old as it (a model
    # trained on snapshots that saw 150 days scores accounts that have 365); where accounts
    # keep arriving they need not. A stationary catalog adds the rate per day on record, which
    # does not grow, and the stationarity check drops the lifetime counts where they shifted
    # (app.ml.stationarity). Catalogs of models trained before keep what they were trained on.
    if not stationary:
        found = [f for f in found if f.spec is not SPEC["events_per_day"]]
    found += [Feature(f"contacts_{role}", SPEC["contacts_{role}"], role) for role in roles]
    found.append(Feature("executive_sponsor_active_30d", SPEC["executive_sponsor_active_30d"]))
    for t in numeric_traits:
        found.append(Feature(f"trait_{t}", SPEC["trait_{trait}"], t))
        found.append(Feature(f"trait_{t}_change_90d", SPEC["trait_{trait}_change_90d"], t))
    found += [Feature(f"trait_{t}", SPEC["trait_{trait}:category"], t) for t in string_traits]
    for theme_id, name in themes:
        for key in ("negative_{theme}_30d", "texts_{theme}_90d"):
            found.append(Feature(key.format(theme=theme_id), SPEC[key], theme_id, title=name))
    return found


@dataclass(frozen=True)
class Catalog:
    """Which features exist: fixed at training, stored in the manifest, reused to score."""

    event_types: tuple[str, ...]
    numeric_traits: tuple[str, ...]
    string_traits: dict[str, tuple[str, ...]]
    plans: tuple[str, ...]
    segments: tuple[str, ...]
    roles: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    windows: tuple[int, ...] = WINDOWS
    valued_types: tuple[str, ...] = ()  # event types that carry a value
    themes: tuple[tuple[str, str], ...] = ()  # (theme id, name) of what texts are about
    # What the stationarity of features asks (app.ml.stationarity): a rate per day on record
    # beside lifetime counts; the shortest history a training snapshot had (cap_days), at
    # which the features of `capped` (days on record, since a first event) are capped where
    # their values at serving had shifted from the training rows'; the features left out for
    # the same reason (shifted). False in catalogs of models trained before.
    stationary: bool = False
    # Event types that are product use (sent through the Segment door or with source
    # "product"): more of them never raises churn risk (app.ml.catalog.USAGE).
    usage_types: tuple[str, ...] = ()
    cap_days: int | None = None
    capped: tuple[str, ...] = ()
    # The longest history a training snapshot saw (the latest's), in whole days, where it is
    # under a year: a recency longer than it, which no snapshot could show, is none at serving
    # too. Without it a young installation's days since a rare event reach values at serving
    # that training never had (the demo: days since a failed payment, PSI 0.26 at the first
    # evaluation, every snapshot's history under 280 days and the year's 365 now).
    recency_days: int | None = None
    shifted: tuple[str, ...] = ()
    names: tuple[str, ...] = field(init=False)
    features: dict[str, Feature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        every = _features(
            self.event_types,
            self.valued_types,
            self.windows,
            self.roles,
            self.numeric_traits,
            tuple(self.string_traits),
            self.themes,
            self.stationary,
        )
        if self.recency_days is not None:
            every = [
                replace(f, within=self.recency_days) if f.spec.unit == "ago" else f for f in every
            ]
        kept = {f.name: f for f in every if self._wanted(f.name) and f.name not in self.shifted}
        object.__setattr__(self, "features", kept)
        object.__setattr__(self, "names", tuple(kept))

    def _wanted(self, name: str) -> bool:
        if self.include and not any(fnmatch.fnmatch(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatch(name, p) for p in self.exclude)

    def feature(self, name: str) -> Feature:
        return self.features[name]

    def directions(self, target: str) -> dict[str, int]:
        """The features whose direction on `target` the specs know (churn, expansion): +1 where
        a higher value raises its probability, -1 where it lowers it. An event type's own
        features have one where the type's meaning is known: product use (usage_types) and the
        support and billing types of TYPE_DIRECTIONS."""
        if target not in ("churn", "expansion"):
            return {}
        column = 0 if target == "churn" else 1
        known: dict[str, int] = {}
        for name, f in self.features.items():
            d = getattr(f.spec, target)
            if d is None and f.about is not None:
                per_type = USAGE if f.about in self.usage_types else TYPE_DIRECTIONS.get(f.about)
                d = (per_type or {}).get(f.spec.key, (None, None))[column]
            if d is not None:
                known[name] = d
        return known

    def levels(self) -> dict[str, tuple[str, ...]]:
        """Categorical features and their levels; a value's code is its index."""
        levels = {"plan": self.plans, "segment": self.segments}
        levels |= {f"trait_{t}": v for t, v in self.string_traits.items()}
        return {name: v for name, v in levels.items() if name in self.names}

    def to_json(self) -> JSONObject:
        data = asdict(self)
        data.pop("names")
        data.pop("features")
        return data

    @classmethod
    def from_json(cls, data: JSONObject) -> Catalog:
        return cls(
            event_types=tuple(data["event_types"]),
            numeric_traits=tuple(data["numeric_traits"]),
            string_traits={k: tuple(v) for k, v in data["string_traits"].items()},
            plans=tuple(data["plans"]),
            segments=tuple(data["segments"]),
            roles=tuple(data["roles"]),
            include=tuple(data.get("include", ())),
            exclude=tuple(data.get("exclude", ())),
            windows=tuple(data.get("windows", WINDOWS)),
            valued_types=tuple(data.get("valued_types", ())),
            themes=tuple((t[0], t[1]) for t in data.get("themes", ())),
            stationary=bool(data.get("stationary", False)),
            usage_types=tuple(data.get("usage_types", ())),
            cap_days=data.get("cap_days"),
            capped=tuple(data.get("capped", ())),
            shifted=tuple(data.get("shifted", ())),
            recency_days=data.get("recency_days"),
        )

    def recency(self, days: float) -> float:
        """Days since the last event of a kind, as a training snapshot could have seen them:
        RECENCY_CAP_DAYS (none) beyond the year or the recency_days."""
        if days > min(self.recency_days or RECENCY_CAP_DAYS, RECENCY_CAP_DAYS):
            return float(RECENCY_CAP_DAYS)
        return days

    def cap(self, name: str, days: float) -> float:
        """Days on record or since a first event, as far as every training snapshot saw where
        the feature is capped."""
        if self.cap_days is None or name not in self.capped:
            return days
        return min(days, float(self.cap_days))
