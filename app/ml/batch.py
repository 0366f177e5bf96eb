"""Batch scoring: every account that exists (and has not churned) at a moment, scored by each
active model with its reasons, and stored in the score history. Runs as a job (kind "score") in
a worker, or in the foreground with `custintel score --all`.

Chunks flow through a small pipeline: while one chunk is scored in a thread (LightGBM releases
the GIL), the features of the next are computed in Postgres, and scores are written with COPY.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import orjson

from app.activation import insights
from app.ml import datasets, features, history, registry, rollups, scoring
from app.platform import errors, jobs
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.models import RescoreRequest
from app.voc import enrich

CHUNK = 2000


async def active_models(
    conn: asyncpg.Connection, targets: list[str] | None
) -> list[registry.Loaded]:
    rows = await registry.all_active(conn, targets)
    missing = sorted(set(targets or ()) - {r.target for r in rows})
    if missing or not rows:
        raise errors.InvalidPayload(
            f"No active model for {', '.join(missing) or 'any target'}; train one first "
            "(POST /v1/models/train or custintel train)."
        )
    return [await asyncio.to_thread(registry.load, r.path) for r in rows]


async def rescore(
    conn: asyncpg.Connection,
    *,
    targets: list[str] | None,
    as_of: datetime,
    top: int,
    progress: jobs.Progress,
    chunk: int = CHUNK,
    settings: Settings | None = None,
) -> JSONObject:
    """Score every live account with every active model (or those of `targets`); with
    settings, raise the insights the new scores call for (app/activation/insights.py)."""
    models = await active_models(conn, targets)
    await rollups.catch_up(conn, as_of=as_of)
    if settings is not None:
        await enrich.catch_up(conn, settings)  # the texts' sentiment, which features read
    # An account with no signal yet (a CRM record, just created) gets no score, and so raises
    # no insight: every feature would be a default, and its band would say nothing.
    accounts = await datasets.population(
        conn, at=as_of, exclude_kinds=[datasets.CHURNED], with_signals=True
    )
    catalogs = {id(m.catalog): m.catalog for m in models}
    chunks = [accounts[i : i + chunk] for i in range(0, len(accounts), chunk)]

    async def frames(ids: list[str]) -> dict[int, features.Frame]:
        keys = [(a, as_of) for a in ids]
        records = await features.fetch(conn, keys)  # once, whatever the number of models
        return {k: features.assemble(c, keys, records) for k, c in catalogs.items()}

    def score(frame_by_catalog: dict[int, features.Frame]) -> list[scoring.Score]:
        return [
            s
            for m in models
            for s in scoring.score_frame(m, frame_by_catalog[id(m.catalog)], top=top)
        ]

    counts = dict.fromkeys((m.target for m in models), 0)
    raised = 0
    ready = await frames(chunks[0]) if chunks else {}
    for n in range(len(chunks)):
        scoring_task = asyncio.create_task(asyncio.to_thread(score, ready))
        if n + 1 < len(chunks):
            ready = await frames(chunks[n + 1])
        scores = await scoring_task
        async with conn.transaction():
            await history.store(conn, scores)
            if settings is not None:
                raised += await insights.from_scores(conn, settings, scores)
        for s in scores:
            counts[s.target] += 1
        await progress((n + 1) / len(chunks))
    return {
        "as_of": as_of.isoformat(),
        "accounts": len(accounts),
        "scores": counts,
        "models": {m.target: m.model_id for m in models},
        "insights": raised,
    }


def handler(settings: Settings) -> jobs.Handler:
    async def score_job(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        request = RescoreRequest.model_validate_json(orjson.dumps(params))
        return await rescore(
            conn,
            targets=request.targets,
            as_of=request.as_of or datetime.now(UTC),
            top=request.top,
            progress=progress,
            settings=settings,
        )

    return score_job
