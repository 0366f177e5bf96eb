"""A believable B2B SaaS, generated: accounts in enterprise, mid-market and SMB, contacts with
roles, a year of product usage, support tickets with text, NPS answers with comments, invoices
and failed payments, CRM meetings, and churned, renewed and expanded outcomes.

The outcomes follow planted drivers that differ by segment, so a model can be checked against
the truth: enterprise churns when its executive sponsor goes quiet; SMB churns on usage drops
and failed payments; mid-market churns when support tickets pile up, turn angry about one topic
and NPS falls. Accounts whose usage grows for weeks (and who answer NPS warmly) expand.

Some accounts act as advocates: a referral, a review, a reference call or a case study (the
signal vocabulary's advocacy acts). Acts follow their own drivers (ADVOCACY_WEEKLY): an engaged
executive sponsor, usage that has been growing, a year or more as a customer, and an act before;
a warm NPS answer alone predicts little (most promoters never act), and trouble stops them. They
are drawn from a stream of their own, so the rest of a seed's world is what it was before.

What people write is about planted topics (TOPICS: each a handful of phrasings, so that themes
can be learnt from them and checked against the truth, topic_of): a healthy account's tickets
are mostly neutral questions about any topic; a troubled mid-market account's tickets and
detractor comments complain about the topic its trouble is with.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.ml.catalog import Feature
from app.platform.jsonbody import JSONObject

# Weekly hazards, felt once a course has lasted its weeks: churn after 3 weeks of trouble,
# expansion after 5 weeks of growth (growth shows in more logins, reports and active users).
CHURN_HAZARD, CHURN_AFTER_WEEKS = 0.12, 3
EXPAND_HAZARD, EXPAND_AFTER_WEEKS = 0.15, 5
GROWTH_PER_WEEK, GROWTH_CAP = 1.07, 2.5
LEAD_DAYS = 150
# Weekly chance of an advocacy act: a base, plus each driver that holds (see the docstring).
ADVOCACY_WEEKLY = {
    "base": 0.002,
    "sponsor": 0.010,
    "growing": 0.012,
    "tenure": 0.008,
    "acted": 0.025,
}
ADVOCACY_KINDS = (
    ("referral_made", 0.4),
    ("review_posted", 0.35),
    ("reference_given", 0.2),
    ("case_study_published", 0.05),
)
SEGMENTS = (("enterprise", 0.2), ("mid-market", 0.3), ("smb", 0.5))
# Concept drift: after a switch, trouble shows in none of the old ways, whatever the segment,
# only as a burst of report exports (customers taking their data out before they leave): a model
# trained before it has never seen that sign, whichever features it leaned on.
SWITCHED = {"enterprise": "export", "mid-market": "export", "smb": "export"}


@dataclass(frozen=True)
class Drivers:
    """What the outcomes of a segment follow, in the catalog's terms (app.ml.catalog): every
    feature about one of `about` (event types, roles), and the features of `specs`."""

    about: tuple[str, ...]
    specs: tuple[str, ...]

    def measured_by(self, feature: Feature) -> bool:
        return feature.about in self.about or feature.spec.key in self.specs


_ACTIVITY = ("events_30d", "events_trend", "active_days_30d", "active_contacts_30d")
_NPS = ("nps_latest", "nps_average", "nps_change", "nps_detractor")
TEXT_SIGNALS = (
    "negative_texts_30d",
    "negative_texts_90d",
    "negative_share_90d",
    "sentiment_90d",
    "sentiment_trend",
    "negative_{theme}_30d",
    "texts_{theme}_90d",
)
DRIVERS: dict[str, dict[str, Drivers]] = {
    "churn": {
        # A quiet sponsor is also one active contact fewer.
        "enterprise": Drivers(
            ("meeting", "executive_sponsor"),
            ("executive_sponsor_active_30d", "active_contacts_30d"),
        ),
        "smb": Drivers(
            ("login", "payment_failed", "invoice_paid"),
            (*_ACTIVITY, "executive_sponsor_active_30d", "payments_failed_90d", "revenue_90d"),
        ),
        "mid-market": Drivers(
            ("ticket_opened", "ticket_closed", "nps_answered"),
            ("tickets_opened_90d", "tickets_open", *_NPS, *TEXT_SIGNALS),
        ),
    },
    "expansion": dict.fromkeys(
        ("enterprise", "smb", "mid-market"),
        Drivers(
            ("login", "report_exported", "nps_answered"),
            (*_ACTIVITY, "executive_sponsor_active_30d", *_NPS),
        ),
    ),
    "advocacy": dict.fromkeys(
        ("enterprise", "smb", "mid-market"),
        Drivers(
            (
                "login",
                "report_exported",
                "meeting",
                "executive_sponsor",
                "referral_made",
                "review_posted",
                "reference_given",
                "case_study_published",
            ),
            (*_ACTIVITY, "executive_sponsor_active_30d", "tenure_days"),
        ),
    ),
}
# Each topic's phrasings share its word, as a product area's tickets share its name.
TOPICS: dict[str, tuple[str, ...]] = {
    "export": (
        "the CSV export",
        "the report export",
        "the export to spreadsheets",
        "the export job",
    ),
    "sso": ("SSO login", "SSO with Okta", "the SAML SSO setup", "SSO for new users"),
    "billing": ("the invoice", "the invoice totals", "the invoice for extra seats", "our invoice"),
    "performance": (
        "dashboard loading",
        "dashboard performance",
        "dashboard load times",
        "the dashboard speed",
    ),
    "api": ("the API rate limit", "the nightly API sync", "API webhooks", "the API tokens"),
}
TROUBLE_TOPICS = ("export", "performance", "api")  # what a mid-market account's trouble is with
QUESTIONS = (
    "How do we set up {t}?",
    "Question about {t} for our team",
    "Where are the docs on {t}?",
    "Can you walk us through {t}?",
)
COMPLAINTS = (
    "{T} is broken again and nobody answered our ticket",
    "Still no fix for {t}, this is unacceptable",
    "{T} keeps failing and we are frustrated",
    "Third ticket about {t}, terrible experience",
    "We are considering cancelling over {t}",
)
STRAY_COMPLAINTS = 0.1  # the share of a healthy account's tickets that complain all the same
PRAISE = ["Great support team", "Saves us hours every week", "Reporting is excellent"]
GRIPES = ["Too slow lately", "Pricing went up without warning", "Missing features we need"]


def _about(rng: random.Random, topic: str, templates: tuple[str, ...]) -> str:
    phrase = rng.choice(TOPICS[topic])
    return rng.choice(templates).format(t=phrase, T=phrase[0].upper() + phrase[1:])


def topic_of(text: str) -> str | None:
    """The planted topic a text is about, or None (praise and gripes are about none)."""
    lowered = text.lower()
    for topic, phrases in TOPICS.items():
        if any(p.lower() in lowered for p in phrases):
            return topic
    return None


@dataclass
class World:
    accounts: list[JSONObject] = field(default_factory=list)
    contacts: list[JSONObject] = field(default_factory=list)
    events: list[JSONObject] = field(default_factory=list)
    outcomes: list[JSONObject] = field(default_factory=list)


def _segment(rng: random.Random) -> str:
    roll, total = rng.random(), 0.0
    for name, share in SEGMENTS:
        total += share
        if roll < total:
            return name
    return SEGMENTS[-1][0]


def generate(
    *,
    accounts: int,
    end: datetime,
    days: int = 365,
    seed: int = 1,
    first: int = 0,
    usage: float = 1.0,
    switch_at: datetime | None = None,
) -> World:
    """A world of `accounts` accounts over the `days` before `end`, numbered from `first`
    (so that large worlds can be made in pieces); `usage` scales product usage (logins). From
    `switch_at` on, each segment churns for another segment's reasons (SWITCHED)."""
    rng = random.Random(seed)
    # What people write is drawn apart, so that the accounts, events and outcomes of a seed do
    # not change with the wording (they are what the models' tests were written against).
    wording = random.Random(f"{seed}:wording")
    acts = random.Random(f"{seed}:advocacy")
    world = World()
    start = end - timedelta(days=days)
    for n in range(first, first + accounts):
        _account(
            world,
            rng,
            wording,
            acts,
            f"acct-{n:05d}",
            start=start,
            end=end,
            usage=usage,
            switch_at=switch_at,
        )
    return world


def _account(
    world: World,
    rng: random.Random,
    wording: random.Random,
    acts: random.Random,
    account_id: str,
    *,
    start: datetime,
    end: datetime,
    usage: float,
    switch_at: datetime | None,
) -> None:
    segment, mrr, joined, users = _profile(world, rng, account_id, start=start)

    # The latent course of the year: whether and when trouble starts (of the segment's own kind)
    # and whether and when usage starts to grow. Both arrive at a constant rate, before the
    # window too, and an account whose trouble or growth began before the window may already
    # have run its course; so the share of accounts in trouble does not drift with the calendar,
    # and nothing but the planted drivers tells a model who will churn or expand.
    trouble_at, churned_before = _course(
        rng, start, end, rate=0.45, hazard=CHURN_HAZARD, after_weeks=CHURN_AFTER_WEEKS
    )
    if churned_before:  # it would be gone; this account is one whose trouble passed
        trouble_at = None
    grow_at, expanded_before = _course(
        rng, start, end, rate=0.3, hazard=EXPAND_HAZARD, after_weeks=EXPAND_AFTER_WEEKS
    )
    login_rate = usage * {"enterprise": 1.5, "mid-market": 2.0, "smb": 2.5}[segment]
    cause = wording.choice(TROUBLE_TOPICS)
    expanded_at: datetime | None = None
    ticket_n = 0
    acted = 0
    churned_at: datetime | None = None
    # Whole weeks that end at `end`: a week's events squeezed into a last partial one (a
    # year is 52 weeks and a day) made every account look busier at the end than at any
    # other moment, a shift drift checks rightly flagged.
    day = end - timedelta(weeks=math.ceil((end - start) / timedelta(weeks=1)))
    while day < end:
        week_end = min(day + timedelta(days=7), end)
        troubled = trouble_at is not None and day >= trouble_at
        # Which kind of trouble this segment has; after switch_at (concept drift) another.
        kind = segment if switch_at is None or day < switch_at else SWITCHED[segment]
        sponsor_quiet = kind == "enterprise" and trouble_at is not None
        tickets_pile = kind == "mid-market" and trouble_at is not None
        usage_drop = kind == "smb" and trouble_at is not None
        weeks_in = (day - trouble_at).days / 7 if troubled and trouble_at else 0.0
        # Trouble stops growth where it stands.
        growing = grow_at is not None and day >= grow_at and not troubled
        weeks_grown = (min(day, trouble_at or day) - grow_at).days / 7 if grow_at else 0.0
        weeks_grown = max(0.0, weeks_grown)
        growth = min(GROWTH_CAP, GROWTH_PER_WEEK**weeks_grown)
        rate = login_rate * growth
        if usage_drop and troubled:
            rate *= max(0.05, 0.75**weeks_in)
        active = min(len(users), max(1, round(len(users) / 3 * growth)))
        _use(
            world,
            rng,
            account_id,
            users,
            day,
            week_end,
            active=active,
            rate=rate,
            share=rate / login_rate,
            exporting=kind == "export" and troubled,
            sponsor=segment != "smb" and not (sponsor_quiet and troubled),
        )
        piling = tickets_pile and troubled
        ticket_n = _tickets(
            world,
            rng,
            wording,
            account_id,
            users,
            day,
            week_end,
            end,
            cause if piling else None,
            ticket_n,
        )
        if rng.random() < 1 / 13:  # about quarterly
            _survey(world, rng, wording, account_id, users, day, week_end, growing, piling, cause)
        engaged = segment != "smb" and not (sponsor_quiet and troubled)
        acted += _advocacy(
            world,
            acts,
            account_id,
            users,
            day,
            week_end,
            engaged=engaged,
            growing=growing and weeks_grown > 2,
            tenured=(day - joined).days > 365,
            acted=acted > 0,
            troubled=troubled,
        )
        # Billed every four weeks from the day it joined (a subscription's anniversary): on one
        # calendar shared by every account, revenue in the last 90 days held three invoices at
        # some moments and four at others for everyone, a shift drift checks rightly flagged.
        if (day - joined).days % 28 < 7:
            _bill(world, rng, account_id, day, week_end, end, mrr, failing=usage_drop and troubled)
        # Churn follows the segment's own driver once the trouble has lasted a few weeks;
        # expansion follows growth that has lasted, and happens once.
        if troubled and weeks_in > CHURN_AFTER_WEEKS and rng.random() < CHURN_HAZARD:
            churned_at = week_end - timedelta(hours=rng.uniform(1, 100))
            break
        if (
            growing
            and not expanded_before
            and expanded_at is None
            and weeks_grown > EXPAND_AFTER_WEEKS
            and rng.random() < EXPAND_HAZARD
        ):
            expanded_at = week_end - timedelta(hours=rng.uniform(1, 100))
        day = week_end
    _outcomes(world, account_id, mrr, joined, start, end, churned_at, expanded_at)


def _use(
    world: World,
    rng: random.Random,
    account_id: str,
    users: list[str],
    day: datetime,
    week_end: datetime,
    *,
    active: int,
    rate: float,
    share: float,
    exporting: bool,
    sponsor: bool,
) -> None:
    """A week's product use: logins and exports by its active users, the exports of an export
    trouble, and the sponsor's meeting and login (about one week in three)."""
    for user in rng.sample(users, k=active):
        for _ in range(_poisson(rng, rate)):
            world.events.append(_event(rng, account_id, user, "login", day, week_end))
        if rng.random() < 0.3 * share:
            world.events.append(_event(rng, account_id, user, "report_exported", day, week_end))
    if exporting:
        for _ in range(_poisson(rng, 3.0)):
            world.events.append(
                _event(rng, account_id, rng.choice(users), "report_exported", day, week_end)
            )
    if sponsor and rng.random() < 0.35:
        world.events.append(
            _event(rng, account_id, f"{account_id}-sponsor", "meeting", day, week_end, source="crm")
        )
        world.events.append(
            _event(rng, account_id, f"{account_id}-sponsor", "login", day, week_end)
        )


def _advocacy(
    world: World,
    acts: random.Random,
    account_id: str,
    users: list[str],
    day: datetime,
    week_end: datetime,
    *,
    engaged: bool,
    growing: bool,
    tenured: bool,
    acted: bool,
    troubled: bool,
) -> int:
    """A week's advocacy act, or none; how many (0 or 1)."""
    w = ADVOCACY_WEEKLY
    chance = w["base"] + (
        w["sponsor"] * engaged + w["growing"] * growing + w["tenure"] * tenured + w["acted"] * acted
    )
    if troubled or acts.random() >= chance:
        return 0
    roll, total, kind = acts.random(), 0.0, ADVOCACY_KINDS[-1][0]
    for name, share in ADVOCACY_KINDS:
        total += share
        if roll < total:
            kind = name
            break
    who = f"{account_id}-sponsor" if engaged and acts.random() < 0.5 else acts.choice(users)
    world.events.append(_event(acts, account_id, who, kind, day, week_end, source="crm"))
    return 1


def _survey(
    world: World,
    rng: random.Random,
    wording: random.Random,
    account_id: str,
    users: list[str],
    day: datetime,
    week_end: datetime,
    growing: bool,
    support_trouble: bool,
    cause: str,
) -> None:
    """An NPS answer with its comment: warm while growing, low where support trouble is felt."""
    warm = growing or rng.random() < 0.6
    score = rng.randint(9, 10) if warm else rng.randint(5, 8)
    comment = wording.choice(PRAISE if score >= 9 else GRIPES)
    if support_trouble:  # NPS falls where the trouble is felt: support
        score = rng.randint(0, 4)
        comment = _about(wording, cause, COMPLAINTS)
    who = rng.choice(users)
    rng.randrange(3)  # the draw the comment once took from the stream (see generate)
    world.events.append(
        _event(
            rng,
            account_id,
            who,
            "nps_answered",
            day,
            week_end,
            source="survey",
            value=score,
            text=comment,
        )
    )


def _bill(
    world: World,
    rng: random.Random,
    account_id: str,
    day: datetime,
    week_end: datetime,
    end: datetime,
    mrr: float,
    *,
    failing: bool,
) -> None:
    """A subscription's invoice. Cards expire everywhere; a retry a few days later usually pays.
    In a troubled SMB account (`failing`) payments fail often and the retry often fails too."""
    invoice = _event(rng, account_id, None, "invoice_paid", day, week_end, source="stripe")
    invoice["value"] = mrr
    if rng.random() < (0.6 if failing else 0.03):
        world.events.append({**invoice, "type": "payment_failed"})
        retried = datetime.fromisoformat(invoice["occurred_at"]) + timedelta(days=3)
        if rng.random() < (0.4 if failing else 0.95) and retried < end:
            world.events.append({**invoice, "occurred_at": retried.isoformat()})
    else:
        world.events.append(invoice)


def _profile(
    world: World, rng: random.Random, account_id: str, *, start: datetime
) -> tuple[str, float, datetime, list[str]]:
    """The account and its contacts as first observed: segment, MRR, when it joined, users."""
    segment = _segment(rng)
    size = {"enterprise": 12, "mid-market": 6, "smb": 3}[segment]
    mrr = round(
        {"enterprise": 8000, "mid-market": 1500, "smb": 150}[segment] * rng.lognormvariate(0, 0.35),
        2,
    )
    plan = {
        "enterprise": "enterprise",
        "mid-market": rng.choice(["pro", "business"]),
        "smb": rng.choice(["starter", "pro"]),
    }[segment]
    joined = start - timedelta(days=rng.randint(10, 700))
    world.accounts.append(
        {
            "account_id": account_id,
            "name": f"Company {account_id[-5:]}",
            "segment": segment,
            "plan": plan,
            "mrr": mrr,
            "owner_email": f"csm{rng.randint(1, 8)}@vendor.example",
            "traits": {
                "seats": size * rng.randint(2, 6),
                "region": rng.choice(["eu", "na", "apac"]),
                "industry": rng.choice(["retail", "finance", "health", "software"]),
            },
            "observed_at": joined.isoformat(),
        }
    )
    people = []
    if segment != "smb":
        people.append((f"{account_id}-sponsor", "executive_sponsor"))
    people += [(f"{account_id}-admin{i}", "admin") for i in range(1 + size // 10)]
    people += [(f"{account_id}-user{i}", "end_user") for i in range(size)]
    for contact_id, role in people:
        world.contacts.append(
            {
                "contact_id": contact_id,
                "account_id": account_id,
                "role": role,
                "email": f"{contact_id}@{account_id}.example",
                "observed_at": joined.isoformat(),
            }
        )
    return segment, mrr, joined, [c for c, r in people if r != "executive_sponsor"]


def _tickets(
    world: World,
    rng: random.Random,
    wording: random.Random,
    account_id: str,
    users: list[str],
    day: datetime,
    week_end: datetime,
    end: datetime,
    piling: str | None,
    ticket_n: int,
) -> int:
    """A week's support tickets (more, fewer closed, and complaining about the topic `piling`
    names while they pile up; mostly questions otherwise); the count so far."""
    ticket_rate = 0.15 + (0.9 if piling else 0.0)
    for _ in range(_poisson(rng, ticket_rate)):
        ticket_n += 1
        ticket_id = f"{account_id}-T{ticket_n}"
        who = rng.choice(users)
        rng.randrange(5)  # the draw the text once took from the stream (see generate)
        opened = _event(
            rng,
            account_id,
            who,
            "ticket_opened",
            day,
            week_end,
            source="zendesk",
            text=(
                _about(wording, piling, COMPLAINTS)
                if piling
                else _about(
                    wording,
                    wording.choice(sorted(TOPICS)),
                    COMPLAINTS if wording.random() < STRAY_COMPLAINTS else QUESTIONS,
                )
            ),
            properties={
                "ticket_id": ticket_id,
                "priority": rng.choice(["low", "normal", "high"]),
            },
        )
        world.events.append(opened)
        if not piling or rng.random() < 0.2:
            closed_at = datetime.fromisoformat(opened["occurred_at"]) + timedelta(
                days=rng.uniform(0.2, 6)
            )
            if closed_at < end:
                world.events.append(
                    {
                        **opened,
                        "type": "ticket_closed",
                        "text": None,
                        "occurred_at": closed_at.isoformat(),
                    }
                )
    return ticket_n


def _outcomes(
    world: World,
    account_id: str,
    mrr: float,
    joined: datetime,
    start: datetime,
    end: datetime,
    churned_at: datetime | None,
    expanded_at: datetime | None,
) -> None:
    """Churned, or else expanded (with the new MRR observed) and renewed on its anniversary."""
    if churned_at is not None:
        world.outcomes.append(
            {
                "account_id": account_id,
                "kind": "churned",
                "occurred_at": churned_at.isoformat(),
                "outcome_id": f"{account_id}-churned",
            }
        )
        return
    if expanded_at is not None:
        world.outcomes.append(
            {
                "account_id": account_id,
                "kind": "expanded",
                "occurred_at": expanded_at.isoformat(),
                "amount": round(mrr * 0.3, 2),
                "outcome_id": f"{account_id}-expanded",
            }
        )
        world.accounts.append(
            {
                "account_id": account_id,
                "mrr": round(mrr * 1.3, 2),
                "observed_at": expanded_at.isoformat(),
            }
        )
    renewal = joined + timedelta(days=365 * math.ceil((start - joined).days / 365 + 0.01))
    if start < renewal < end:
        world.outcomes.append(
            {
                "account_id": account_id,
                "kind": "renewed",
                "occurred_at": renewal.isoformat(),
                "outcome_id": f"{account_id}-renewed-{renewal.year}",
            }
        )


def _course(
    rng: random.Random,
    start: datetime,
    end: datetime,
    *,
    rate: float,
    hazard: float,
    after_weeks: int,
) -> tuple[datetime | None, bool]:
    """When a latent course (trouble, growth) starts, or None; and whether it already ran its
    course before the window. Onsets are spread evenly from LEAD_DAYS before the window to its
    end; one that began before the window had weeks in which to end (the account churned or
    expanded before we look), so what the window's start shows is what a steady state shows."""
    if rng.random() >= rate:
        return None, False
    lead = timedelta(days=LEAD_DAYS)
    onset = start - lead + timedelta(days=rng.uniform(0, (end - start + lead).days))
    weeks_before = (start - onset).days / 7 - after_weeks
    done = weeks_before > 0 and rng.random() >= (1 - hazard) ** weeks_before
    return onset, done


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def _event(
    rng: random.Random,
    account_id: str,
    contact_id: str | None,
    kind: str,
    start: datetime,
    end: datetime,
    *,
    source: str = "product",
    value: float | None = None,
    text: str | None = None,
    properties: JSONObject | None = None,
) -> JSONObject:
    moment = start + timedelta(seconds=rng.uniform(0, max(1.0, (end - start).total_seconds())))
    event: JSONObject = {
        "type": kind,
        "source": source,
        "account_id": account_id,
        "occurred_at": moment.isoformat(),
    }
    if contact_id is not None:
        event["contact_id"] = contact_id
    if value is not None:
        event["value"] = value
    if text is not None:
        event["text"] = text
    if properties:
        event["properties"] = properties
    return event


def batches(items: list[JSONObject], size: int) -> Iterator[list[JSONObject]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
