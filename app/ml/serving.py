"""Scores on request: the active model per target, loaded once and verified, applied to features
computed as of the moment asked for; the scores given now are kept in the score history (a
score as of a past moment answers a question and is not)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from pathlib import Path

import asyncpg
import orjson

from app.ml import features, history, registry, scoring
from app.platform import errors
from app.platform.jsonbody import JSONObject
from app.schemas.models import RankedScores

log = logging.getLogger(__name__)


class NoActiveModel(errors.CustintelError):
    status = 409
    slug = "no-active-model"
    title = "No active model"

    @classmethod
    def of(cls, target: str) -> NoActiveModel:
        return cls(
            f"No active model for target {target!r}. Train one: POST /v1/models/train "
            f'{{"target": "{target}"}}.',
            target=target,
        )


MODELS_CHANNEL = "custintel_models"  # notified by a trigger on every change to `models`


class Models:
    """Loaded models by id, and for each target the last one that loaded cleanly, which keeps
    serving when a newer file turns out to be damaged.

    Which model is active is cached per target while the process's change listener is up
    (app.platform.notifications, subscribed to MODELS_CHANNEL): any change to the models table,
    from any process, empties the cache. Without that connection every request reads the models
    table."""

    def __init__(self) -> None:
        self._loaded: dict[str, registry.Loaded] = {}
        self._last_good: dict[str, registry.Loaded] = {}
        self._lock = asyncio.Lock()
        self._active: dict[str, tuple[str, str]] = {}  # target -> model_id, path
        self._listening = False
        self._generation = 0  # bumped on every change, so a read racing one is not cached

    def forget_active(self, *_: object) -> None:
        self._generation += 1
        self._active.clear()

    def listening(self, up: bool) -> None:
        """The change listener (app.platform.notifications) came up or went down: the cache of
        active models is used only while it is up."""
        self._listening = up
        self.forget_active()

    async def active(self, conn: asyncpg.Connection, target: str) -> registry.Loaded:
        cached = self._active.get(target)
        if cached is None:
            generation = self._generation
            record = await registry.active(conn, target)
            if record is None:
                raise NoActiveModel.of(target)
            cached = (record.model_id, str(record.path))
            if self._listening and generation == self._generation:
                self._active[target] = cached
        model_id, path = cached
        loaded = self._loaded.get(model_id)
        if loaded is not None:
            return loaded
        async with self._lock:
            try:
                loaded = await self.load(model_id, Path(path))
            except registry.DamagedModel:
                fallback = self._last_good.get(target)
                if fallback is None:
                    raise
                log.error(
                    "active model damaged; serving the last good one",
                    extra={"model_id": model_id, "serving": fallback.model_id},
                )
                return fallback
        self._last_good[target] = loaded
        return loaded

    async def load(self, model_id: str, path: Path) -> registry.Loaded:
        loaded = self._loaded.get(model_id)
        if loaded is None:
            loaded = await asyncio.to_thread(registry.load, path)
            self._loaded[model_id] = loaded
        return loaded


# Up to this many accounts, scoring runs on the event loop: half a millisecond per account and
# target, about what handing it to a thread costs, and a thread holding the GIL made the loop
# wait for it after every socket call (measured: 17% less CPU per on-request score, p99 lower).
INLINE_ACCOUNTS = 4


async def score(
    pool: asyncpg.Pool,
    models: Models,
    *,
    kept: history.Buffer,
    limiter: asyncio.Semaphore,
    account_ids: list[str],
    targets: list[str],
    as_of: datetime,
    as_of_given: bool,
    top: int,
) -> tuple[dict[str, list[scoring.Score]], dict[str, str]]:
    """Scores per account for each target, and an error per account that cannot be scored.
    Scores given now are kept in the history; scores as of a moment the caller named
    (as_of_given) answer a question about the past and are not. `limiter` bounds the threads
    doing CPU work on request."""
    keys = [(a, as_of) for a in dict.fromkeys(account_ids)]
    async with pool.acquire() as conn:
        loaded = [await models.active(conn, t) for t in dict.fromkeys(targets)]
        records = await features.fetch(conn, keys)
    problems: dict[str, str] = {}
    scorable = []
    for key, record in zip(keys, records, strict=True):
        account_id = key[0]
        if not features.known(record):
            problems[account_id] = f"No account {account_id!r}."
        elif as_of_given and not features.existed(record, as_of):
            problems[account_id] = f"Account {account_id!r} did not exist at {as_of.isoformat()}."
        else:
            scorable.append((key, record))
    results: dict[str, list[scoring.Score]] = {key[0]: [] for key, _ in scorable}
    if not scorable:
        return results, problems
    frames: dict[int, features.Frame] = {}

    def assemble_and_score(model: registry.Loaded) -> list[scoring.Score]:
        # Both are CPU work: in a thread for more than INLINE_ACCOUNTS accounts.
        frame = frames.get(id(model.catalog))
        if frame is None:
            frame = frames[id(model.catalog)] = features.assemble(
                model.catalog, [k for k, _ in scorable], [r for _, r in scorable]
            )
        return scoring.score_frame(model, frame, top=top)

    for model in loaded:
        if len(scorable) <= INLINE_ACCOUNTS:
            scores = assemble_and_score(model)
        else:
            async with limiter:
                scores = await asyncio.to_thread(assemble_and_score, model)
        for s in scores:
            results[s.account_id].append(s)
    if not as_of_given:
        kept.keep([s for per in results.values() for s in per])
    return results, problems


def as_dict(score: scoring.Score) -> JSONObject:
    """The Score of the API (without account_id), shallow: reasons stay dataclasses, which
    orjson writes as objects."""
    return {
        "target": score.target,
        "model_id": score.model_id,
        "segment": score.segment,
        "as_of": score.as_of,
        "probability": score.probability,
        "band": score.band,
        "percentile": score.percentile,
        "margin": score.margin,
        "base_value": score.base_value,
        "other_contribution": score.other_contribution,
        "reasons": score.reasons,
        "counter_reasons": score.counter_reasons,
        "context": score.context,
    }


async def ranked(
    conn: asyncpg.Connection,
    *,
    target: str,
    segment: str | None,
    band: str | None,
    limit: int,
) -> RankedScores:
    """The latest stored score of each account by the target's active model, highest
    probability first: the list a customer-success team works down."""
    active = await registry.active(conn, target)
    if active is None:
        raise NoActiveModel.of(target)
    model_id = active.model_id
    rows = await conn.fetch(
        """
        SELECT * FROM (
            SELECT DISTINCT ON (account_id) account_id, target, model_id, segment, as_of,
                   probability, band, percentile, margin, base_value, other_contribution, reasons
            FROM scores WHERE model_id = $1
            ORDER BY account_id, as_of DESC, scored_at DESC
        ) latest
        WHERE ($2::text IS NULL OR segment = $2) AND ($3::text IS NULL OR band = $3)
        ORDER BY probability DESC, account_id
        LIMIT $4
        """,
        model_id,
        segment,
        band,
        limit,
    )
    results = []
    for row in rows:
        score = dict(row)
        score |= history.split_reasons(orjson.loads(score["reasons"]))
        results.append({"account_id": score.pop("account_id"), "score": score})
    return RankedScores.model_validate({"target": target, "model_id": model_id, "results": results})
