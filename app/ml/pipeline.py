"""Training as a job: a training set from Postgres, a model into the registry, a record in
`models`. Runs in a worker process; the CPU-bound part runs in a thread so heartbeats go on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson

from app.ml import datasets, features, promotion, registry, rollups, stationarity, training
from app.ml.catalog import Catalog
from app.ml.model import Trained
from app.platform import jobs
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.models import TrainRequest
from app.voc import enrich, learned, sentiment, themes


def options(settings: Settings, request: TrainRequest, catalog: Catalog) -> training.Options:
    return training.Options(
        min_segment_rows=settings.segment_min_rows,
        min_segment_positives=settings.segment_min_positives,
        max_features=request.max_features,
        search_seconds=settings.train_search_seconds,
        monotone=catalog.directions(request.target),
        high_share=settings.band_high_share,
        medium_share=settings.band_medium_share,
        stop_requested=jobs.stop_requested(),
        report=_training_reporter(),
    )


# Where a training job's stages fall in its progress: preparing (the texts read, the catalog,
# the training set and the features of now), training (app.ml.training.STAGES within it) and
# saving the model.
PREPARE = {
    "rollups": (0.0, 0.02),  # the months features read from the rollups, rolled and recounted
    "texts": (0.02, 0.04),  # the sentiment reader chosen if due, every text read by it
    "themes": (0.04, 0.05),  # learnt if due
    "catalog": (0.05, 0.08),
    "training set": (0.08, 0.3),
}
NOW = (0.3, 0.35)
TRAINING = (0.35, 0.93)
SAVING = 0.93


def _within(span: tuple[float, float], done: float, total: float = 1) -> float:
    lo, hi = span
    return lo + (hi - lo) * done / max(1, total)


def _training_reporter() -> Callable[[str, int, int], None]:
    """training.train's stages told to the running job, as its share of the whole job."""
    report = jobs.reporter()

    def told(name: str, done: int, total: int) -> None:
        share = _within(training.STAGES.get(name, (0.0, 1.0)), done, total)
        report(_within(TRAINING, share), jobs.Stage(name, done, total))

    return told


@dataclass
class Prepared:
    request: TrainRequest
    as_of: datetime
    label: datasets.AnyLabel
    catalog: Catalog
    training_set: datasets.TrainingSet
    stationarity: stationarity.Described | None = None  # what app.ml.stationarity did
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of preparing


async def prepare(conn: asyncpg.Connection, settings: Settings, request: TrainRequest) -> Prepared:
    """The feature catalog and the training set, from Postgres, reading nothing after as_of."""
    as_of = request.as_of or datetime.now(UTC)
    label = request.label or datasets.default_label(request.target)
    report = jobs.reporter()
    timings: dict[str, float] = {}
    mark = time.perf_counter()

    def stage(name: str, span: tuple[float, float], done: int = 0, total: int = 1) -> None:
        nonlocal mark
        now = time.perf_counter()
        if done == 0:  # a new stage: the one before ends
            mark = now
        timings[name] = round(now - mark, 3)
        report(_within(span, done, total), jobs.Stage(name, done, total))

    stage("rollups", PREPARE["rollups"])
    await rollups.catch_up(conn, as_of=as_of)
    stage("rollups", PREPARE["rollups"], 1, 1)
    stage("texts", PREPARE["texts"])
    # The sentiment reader chosen again if it is due (or the comments grew since), here rather
    # than whenever the worker's round comes: otherwise the same data trains on one reader's
    # sentiment or another's depending on timing (seen: held-out AUC 0.717 and 0.763).
    refit_every = timedelta(hours=settings.themes_refit_hours)
    lexicon = await asyncio.to_thread(sentiment.analyzer_of, settings.sentiment_words)
    await learned.relearn_if_due(conn, lexicon, every=refit_every, wait=True)
    await enrich.catch_up(conn, settings)  # the texts' sentiment, by that reader
    stage("texts", PREPARE["texts"], 1, 1)
    stage("themes", PREPARE["themes"])
    # The themes of the texts, learnt once there are texts enough (then by the worker's refit).
    await themes.refit_if_due(conn, every=refit_every)
    first = await datasets.first_data(conn, as_of=as_of)
    horizon = timedelta(days=request.horizon_days)
    warm_up = timedelta(days=request.warm_up_days)
    dates = request.snapshot_dates or (
        []
        if first is None
        else datasets.snapshot_dates(
            as_of=as_of,
            horizon=horizon,
            every=timedelta(days=request.snapshot_every_days),
            first_data=first.at,
            warm_up=warm_up,
        )
    )
    # The shortest history a snapshot sees: what features that grow with the installation's
    # age are capped at, and the longest window every snapshot can fill.
    shortest = min(dates) - first.at if first is not None and dates else None
    longest = max(dates) - first.at if first is not None and dates else None
    stage("themes", PREPARE["themes"], 1, 1)
    stage("catalog", PREPARE["catalog"])
    catalog = await features.build_catalog(
        conn,
        as_of=as_of,
        max_event_types=settings.feature_max_event_types,
        max_levels=settings.feature_max_levels,
        max_traits=settings.feature_max_traits,
        include=settings.feature_include,
        exclude=settings.feature_exclude,
        history=max(shortest, timedelta(0)) if shortest is not None else None,
        longest=max(longest, timedelta(0)) if longest is not None else None,
    )
    stage("catalog", PREPARE["catalog"], 1, 1)
    stage("training set", PREPARE["training set"])
    ts = await datasets.build(
        conn,
        target=request.target,
        label=label,
        as_of=as_of,
        horizon=horizon,
        every=timedelta(days=request.snapshot_every_days),
        dates=request.snapshot_dates,
        catalog=catalog,
        first=first,
        warm_up=warm_up,
        progress=lambda done, total: stage("training set", PREPARE["training set"], done, total),
    )
    stage("features now", NOW)
    # The accounts a model of this target scores now, as batch scoring finds them.
    scored = await datasets.population(
        conn,
        at=as_of,
        exclude_kinds=datasets.excluded_outcomes(request.target),
        with_signals=True,
    )
    now = await features.compute(conn, catalog, [(a, as_of) for a in scored])
    threshold = stationarity.SHIFT
    measured = stationarity.check(ts, now, threshold=threshold)
    ts = stationarity.stable(ts, measured)
    catalog = ts.frame.catalog
    stable = stationarity.describe(catalog, measured, threshold)
    stage("features now", NOW, 1, 1)
    return Prepared(request, as_of, label, catalog, ts, stable, timings)


def handler(settings: Settings) -> jobs.Handler:
    async def train_job(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        request = TrainRequest.model_validate_json(orjson.dumps(params))
        await datasets.check_size(conn, settings, request, now=datetime.now(UTC))
        prepared = await prepare(conn, settings, request)  # its stages, then training's, told
        trained = await asyncio.to_thread(
            training.train,
            prepared.training_set,
            options(settings, request, prepared.catalog),
        )
        jobs.reporter()(SAVING, jobs.Stage("saving", 0, 1))
        # Where the time went, in the manifest: the preparing stages, then training's.
        trained.timings = prepared.timings | trained.timings
        return await register(conn, settings, prepared, trained)

    return train_job


async def register(
    conn: asyncpg.Connection, settings: Settings, prepared: Prepared, trained: Trained
) -> JSONObject:
    """Write the model to the registry, pass it through the promotion gate, record it."""
    request, as_of, label, catalog = (
        prepared.request,
        prepared.as_of,
        prepared.label,
        prepared.catalog,
    )
    ts = prepared.training_set
    horizon = timedelta(days=request.horizon_days)
    model_id = registry.new_model_id()
    window = {
        "as_of": as_of.isoformat(),
        "horizon_days": request.horizon_days,
        "snapshots": [d.isoformat() for d in ts.snapshots],
        "first_snapshot": ts.snapshots[0].isoformat(),
        "last_snapshot": ts.snapshots[-1].isoformat(),
        "stray_events": ts.stray_events,  # dated before the bulk of the data: not followed
        "stationarity": prepared.stationarity,
    }
    path = await asyncio.to_thread(
        registry.write,
        settings.models_dir,
        target=request.target,
        model_id=model_id,
        trained=trained,
        catalog=catalog,
        window=window,
    )
    loaded = await asyncio.to_thread(registry.load, path)
    verdict = await promotion.gate(
        conn,
        candidate=loaded,
        target=request.target,
        label=label,
        as_of=as_of,
        horizon=horizon,
        auc_tolerance=settings.promotion_auc_tolerance,
        calibration_tolerance=settings.promotion_calibration_tolerance,
    )
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO models (model_id, target, status, as_of, horizon_days, label, summary,
                                path, status_reason)
            VALUES ($1, $2, 'candidate', $3, $4, $5::jsonb, $6::jsonb, $7, $8)
            """,
            model_id,
            request.target,
            as_of,
            request.horizon_days,
            label.model_dump_json(),
            orjson.dumps(registry.summary(trained)).decode(),
            str(path),
            verdict.reason,
        )
        if verdict.comparison is not None:
            await promotion.record_comparison(
                conn, target=request.target, candidate_id=model_id, comparison=verdict.comparison
            )
        status = verdict.status
        if status == "active":
            # Under the target's lock: if another model became active while this one was
            # being compared, the comparison no longer holds and this one stays a candidate.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", request.target)
            now_active = await registry.active(conn, request.target)
            if (now_active.model_id if now_active else None) == verdict.replaced:
                await promotion.activate(
                    conn,
                    model_id=model_id,
                    target=request.target,
                    reason=verdict.reason,
                    actor=None,
                )
            else:
                status = "candidate"
                await conn.execute(
                    "UPDATE models SET status_reason = $2 WHERE model_id = $1",
                    model_id,
                    f"kept as a candidate: {now_active} became active during the comparison",
                )
    return {"model_id": model_id, "status": status, "window": window}
