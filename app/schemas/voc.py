"""Bodies of the voice of the customer: survey metrics and verbatims."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas.signals import TextSentiment

Interval = list[float]


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
