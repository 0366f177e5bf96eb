"""Bodies of the voice of the customer: survey metrics and verbatims."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints

from app.schemas.common import STRICT
from app.schemas.signals import TextSentiment

Interval = list[float]
ThemeName = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ThemeId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
Keyword = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
]


class Nps(BaseModel):
    """NPS from `nps_answered` (0-10): % promoters (9-10) less % detractors (0-6)."""

    responses: int
    promoters: int
    passives: int
    detractors: int
    nps: float | None = Field(description="-100 to 100; null without answers.")
    interval: Interval | None = Field(description="95% interval of the NPS.")
    ignored: int = Field(description="Answers not a whole number from 0 to 10: not counted.")


class Csat(BaseModel):
    """CSAT from `csat_answered` (1-5): % of answers at 4 or 5."""

    responses: int
    satisfied: int
    csat: float | None = Field(description="0 to 100; null without answers.")
    interval: Interval | None = Field(description="95% Wilson interval of the CSAT.")
    ignored: int = Field(description="Answers not a whole number from 1 to 5: not counted.")


class Ces(BaseModel):
    """CES from `ces_answered` (1-7): the mean, and % of answers at 5 or more."""

    responses: int
    mean: float | None
    mean_interval: Interval | None = Field(description="95% interval of the mean.")
    easy: int = Field(description="Answers at 5 or more.")
    easy_share: float | None = Field(description="% of answers at 5 or more.")
    easy_interval: Interval | None = Field(description="95% Wilson interval of easy_share.")
    ignored: int = Field(description="Answers not a whole number from 1 to 7: not counted.")


class SurveyMetrics(BaseModel):
    nps: Nps
    csat: Csat
    ces: Ces


class MonthMetrics(SurveyMetrics):
    month: str = Field(description="UTC month, YYYY-MM.", examples=["2026-11"])


class SegmentMetrics(SurveyMetrics):
    segment: str | None = Field(description="The accounts' current segment (null: none).")


class ThemeCount(BaseModel):
    theme_id: str
    name: str
    texts: int = Field(description="Texts about it in the period.")
    previous: int = Field(description="... in the period of the same length before.")
    change: float | None = Field(description="texts / previous - 1; null when previous is 0.")


class VocSummary(BaseModel):
    since: datetime
    until: datetime
    segment: str | None
    overall: SurveyMetrics = Field(description="Answers in [since, until).")
    previous: SurveyMetrics = Field(
        description="Answers in the period of the same length just before since."
    )
    by_month: list[MonthMetrics] = Field(description="Oldest first.")
    by_segment: list[SegmentMetrics]
    sentiment: SentimentMix
    themes: list[ThemeCount] = Field(
        description="The themes most written about in the period, with the previous period's "
        "counts."
    )


class SentimentMix(BaseModel):
    """The texts written in the period (tickets, survey comments, call notes) by sentiment."""

    texts: int
    negative: int
    neutral: int
    positive: int
    pending: int = Field(description="Texts the worker has not read yet (seconds after arrival).")
    mean: float | None = Field(description="Mean sentiment (-1 to 1) of the texts read.")


class MonthSentiment(BaseModel):
    month: str = Field(description="UTC month, YYYY-MM.", examples=["2026-11"])
    texts: int
    negative: int
    mean: float | None = Field(description="Mean sentiment (-1 to 1) of the month's texts read.")
    pending: int = Field(description="Texts the worker has not read yet.")


class Verbatim(BaseModel):
    """Something the account's people wrote (a ticket, a survey comment, a call note)."""

    event_id: str
    type: str
    occurred_at: datetime
    contact_id: str | None
    value: float | None = Field(description="The survey score, for survey answers.")
    text: str
    sentiment: TextSentiment | None = Field(description="Null until the worker has read it.")


class AccountVoc(BaseModel):
    account_id: str
    since: datetime
    until: datetime
    overall: SurveyMetrics
    by_month: list[MonthMetrics] = Field(description="Oldest first.")
    sentiment: SentimentMix
    sentiment_by_month: list[MonthSentiment] = Field(
        description="The sentiment trend: what the account's people wrote, by UTC month, oldest "
        "first."
    )
    verbatims: list[Verbatim] = Field(description="The latest texts, newest first.")


class ThemeOut(BaseModel):
    """A theme of what customers write: learnt from the installation's texts, or a seed."""

    theme_id: str = Field(description="Stable across refits while the theme is found again.")
    name: str = Field(
        description="Made from its top terms written together, unless an operator renamed "
        "it; empty for a theme about no one subject (`coherent` false)."
    )
    terms: list[str] = Field(description="Its top terms (a seed: its keywords).")
    seed: bool = Field(description="Defined by an operator's keywords, kept across refits.")
    pinned: bool = Field(description="Kept even when a refit does not find it again.")
    merged_into: str | None = Field(description="Its texts count for this theme.")
    coherence: float | None = Field(
        description="NPMI of its first word with its next leading words over the texts it was "
        "learnt from: 1 always written together, 0 independent, -1 never (a seed: null)."
    )
    coherent: bool = Field(
        description="About one subject: its first word is written with another of its leading "
        "words and leads no other theme's terms. Only such themes are model features."
    )
    texts_30d: int = Field(description="Texts about it written in the last 30 days.")
    texts_previous_30d: int = Field(description="... and in the 30 days before.")


class ThemePatch(BaseModel):
    model_config = STRICT

    name: ThemeName | None = None
    pinned: bool | None = None
    merge_into: ThemeId | None = Field(
        None, description="Merge this theme into that one; null undoes a merge."
    )


class SeedTheme(BaseModel):
    model_config = STRICT

    name: ThemeName
    keywords: Annotated[list[Keyword], Field(min_length=1, max_length=50)] = Field(
        description="A text holding any of these words (or phrases) is about the theme."
    )


class ReaderAccuracy(BaseModel):
    """Share of the held-out survey comments each reader labelled as their scores say."""

    lexicon: float
    learned: float
    blend: float


class SentimentReaderOut(BaseModel):
    """How texts' sentiment is read now: `lexicon` (VADER adapted to support language),
    `learned` (a classifier learnt from this installation's survey comments) or `blend` (the
    mean of the two); chosen by accuracy on the newest quarter of the comments."""

    kind: str
    chosen_at: datetime | None = Field(description="Null: no choice yet (too few comments).")
    comments: int | None = None
    held_out: int | None = None
    accuracy: ReaderAccuracy | None = None
    labels: dict[str, int] | None = Field(
        None, description="The comments by how their writers felt (from their scores)."
    )
    mix: dict[str, Any] | None = Field(
        None,
        description="How the best learnt reader and the lexicon label a sample of the other "
        "texts (`texts`: its size), each label's share: a reader that cannot say neutral there, "
        "or reads them as another mix altogether, is refused.",
    )
    refused: str | None = Field(None, description="Why the best learnt reader was not used.")
