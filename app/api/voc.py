"""Voice of the customer: survey metrics (NPS, CSAT, CES) overall, by month, by segment and per
account, and what the account's people wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app import voc
from app.api.common import StrictJSONRoute, problem_responses
from app.governance.auth import Admin, Read
from app.platform import errors, runtime
from app.schemas.common import Id, Name, Timestamp
from app.schemas.voc import (
    AccountVoc,
    SeedTheme,
    SentimentReaderOut,
    ThemeId,
    ThemeOut,
    ThemePatch,
    VocSummary,
)
from app.voc import learned, surveys, themes

router = APIRouter(route_class=StrictJSONRoute, responses=problem_responses(), tags=["voc"])

DEFAULT_DAYS = 365

Since = Annotated[
    Timestamp | None,
    Query(description="Answers at or after this moment. Default: a year before until."),
]
Until = Annotated[Timestamp | None, Query(description="Answers before this moment. Default: now.")]


def _period(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    until = until or datetime.now(UTC)
    since = since or voc.earlier(until, timedelta(days=DEFAULT_DAYS))
    if since >= until:
        raise errors.BadRequest("since must be before until")
    return since, until


@router.get("/voc/summary", operation_id="voc_summary")
async def voc_summary(
    request: Request,
    _: Read,
    since: Since = None,
    until: Until = None,
    segment: Annotated[Name | None, Query(description="Only accounts in this segment.")] = None,
) -> VocSummary:
    """NPS, CSAT and CES from the survey answers in [since, until), with counts and 95%
    intervals: overall, against the period of the same length before, by UTC month and by
    segment; and the sentiment mix of the texts written in the period."""
    since, until = _period(since, until)
    async with runtime.of(request).pool.acquire() as conn:
        now = await surveys.summarise(conn, since=since, until=until, segment=segment)
        before = await surveys.summarise(
            conn, since=voc.earlier(since, until - since), until=since, segment=segment
        )
        mix = await surveys.sentiment_mix(conn, since=since, until=until, segment=segment)
        top = await themes.top(conn, since=since, until=until, segment=segment)
    return VocSummary(
        since=since,
        until=until,
        segment=segment,
        overall=now.overall,
        previous=before.overall,
        by_month=now.by_month,
        by_segment=now.by_segment,
        sentiment=mix,
        themes=top,
    )


@router.get("/voc/themes", operation_id="list_themes")
async def list_themes(request: Request, _: Read) -> list[ThemeOut]:
    """The themes of what customers write, learnt from this installation's texts by a refit
    every CUSTINTEL_THEMES_REFIT_HOURS (ids stay while a theme is found again), and the seed
    themes operators defined; with the texts about each in the last 30 days and the 30 before."""
    async with runtime.of(request).pool.acquire() as conn:
        return await themes.listing(conn)


@router.patch("/voc/themes/{theme_id}", operation_id="update_theme")
async def update_theme(request: Request, theme_id: ThemeId, body: ThemePatch, _: Admin) -> ThemeOut:
    """Rename a theme (the name is kept across refits), pin it (kept even when a refit does not
    find it again), or merge it into another (its texts then count for that one, once the
    worker has matched the recent texts again: a `themes_rematch` job, seconds);
    `"merge_into": null` undoes a merge."""
    unmerge = "merge_into" in body.model_fields_set and body.merge_into is None
    async with runtime.of(request).pool.acquire() as conn:
        theme = await themes.update(
            conn,
            theme_id,
            name=body.name,
            pinned=body.pinned,
            merge_into=body.merge_into,
            unmerge=unmerge,
        )
    return theme


@router.post("/voc/themes", status_code=201, operation_id="create_seed_theme")
async def create_seed_theme(request: Request, body: SeedTheme, _: Admin) -> ThemeOut:
    """A seed theme defined by keywords ("pricing": price, expensive, cost): a text holding any
    of them is about it; it is kept across refits. New texts are matched as they are read, the
    recent ones by a `themes_rematch` job the worker runs within seconds."""
    async with runtime.of(request).pool.acquire() as conn:
        theme = await themes.create_seed(conn, name=body.name, keywords=body.keywords)
    return theme


@router.get("/voc/sentiment", operation_id="sentiment_reader")
async def sentiment_reader(request: Request, _: Read) -> SentimentReaderOut:
    """How the sentiment of texts is read now, and why: once there are survey comments enough
    (300, with 30 negative and 30 positive by their scores), the worker measures the lexicon, a
    classifier learnt from the comments and the two blended on the newest quarter of them, and
    uses a learnt reader only where it beats the lexicon's accuracy by more than 2 points;
    every text is then read again."""
    async with runtime.of(request).pool.acquire() as conn:
        return await learned.described(conn)


@router.get("/accounts/{account_id}/voc", operation_id="account_voc")
async def account_voc(
    request: Request,
    account_id: Id,
    _: Read,
    since: Since = None,
    until: Until = None,
    verbatims: Annotated[int, Query(ge=0, le=100, description="Latest texts to return.")] = 10,
) -> AccountVoc:
    """The account's survey scores over time (NPS, CSAT, CES by UTC month), the sentiment mix
    of what its people wrote, and its latest verbatims (the texts of its events: tickets,
    survey comments, call notes) with their sentiment, newest first."""
    since, until = _period(since, until)
    async with runtime.of(request).pool.acquire() as conn:
        found = await surveys.account(
            conn, account_id, since=since, until=until, verbatims=verbatims
        )
    return found
