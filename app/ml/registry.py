"""The model registry: artefacts under models_store/<target>/<model_id>/, records in `models`.

A model folder holds model.txt (the global booster, LightGBM's text format), one file per segment
model under segments/, and manifest.json (features, categorical levels, parameters, metrics,
training window, row counts, data hash, the sha256 of every model file, library versions,
calibrations, per-segment bands and typical values). Folders are written under a temporary name
and renamed into place, so a reader sees a whole model or none. Every model file's sha256 is
checked before LightGBM reads it: LightGBM can take the process down on a truncated file rather
than raise, so a damaged file must never reach it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import asyncpg
import numpy as np
import orjson

from app.ml import linear
from app.ml.catalog import Catalog
from app.ml.model import GLOBAL, Blend, SegmentModel, SegmentStats, Trained
from app.platform import errors
from app.platform.jsonbody import JSONObject
from app.schemas.models import ModelInfo

if TYPE_CHECKING:
    from app.ml.features import Frame

# Percentiles keep this many points of each segment's training distribution.
REFERENCE_POINTS = 1001


class DamagedModel(errors.CustintelError):
    status = 409
    slug = "damaged-model"
    title = "Damaged model"


class ModelFile(TypedDict):
    file: str
    sha256: str
    calibration: list[float]
    regression: JSONObject | None  # the logistic regression blended in (app.ml.linear)
    blend: list[float]  # weights of the trees' margin and the regression's


class StatsEntry(TypedDict):
    thresholds: list[float]
    reference: list[float]
    typical: dict[str, float]


class Importance(TypedDict):
    name: str
    importance: float


class Manifest(TypedDict):
    """manifest.json of a model folder: everything needed to load, verify and explain it."""

    model_id: str
    target: str
    features: list[str]
    categorical: list[str]
    catalog: JSONObject  # Catalog.to_json()
    params: JSONObject
    metrics: JSONObject
    reliability: list[JSONObject]
    reference: JSONObject
    curves: JSONObject
    segments: JSONObject
    importance: list[Importance]
    window: JSONObject
    rows: dict[str, int]  # total, positives, by segment
    data_hash: str
    models: dict[str, ModelFile]  # by segment name, or the global model
    stats: dict[str, StatsEntry]
    libraries: dict[str, str]
    search: JSONObject  # the parameter search: candidates, their scores, the choice, time
    timings: dict[str, float]  # seconds per stage: building the training set, search, refit...


@dataclass
class Loaded:
    """A model ready to score: boosters, calibrations, the catalog and per-segment statistics."""

    model_id: str
    target: str
    manifest: Manifest
    catalog: Catalog
    features: list[str]
    models: dict[str, SegmentModel]
    stats: dict[str, SegmentStats]

    @functools.cached_property
    def positions(self) -> list[int]:
        """Where each of the model's features sits among its catalog's columns."""
        position = {name: j for j, name in enumerate(self.catalog.names)}
        return [position[f] for f in self.features]

    @functools.cached_property
    def actionable_list(self) -> list[bool]:
        """For each of the model's features, whether a person can act on it."""
        return [self.catalog.feature(f).spec.actionable for f in self.features]

    @functools.cached_property
    def families(self) -> list[str]:
        """For each of the model's features, the family of features saying nearly the same."""
        return [self.catalog.feature(f).family for f in self.features]

    @functools.cached_property
    def levels(self) -> dict[str, tuple[str, ...]]:
        return self.catalog.levels()

    @functools.cached_property
    def directions(self) -> np.ndarray:
        """For each of the model's features, +1 or -1 where the catalog knows which way it
        pushes the target, else 0."""
        known = self.catalog.directions(self.target)
        return np.array([known.get(f, 0) for f in self.features], dtype=np.float64)

    @functools.cached_property
    def _typical(self) -> dict[str, np.ndarray]:
        return {
            name: np.array([s.typical.get(f, np.nan) for f in self.features], dtype=np.float64)
            for name, s in self.stats.items()
        }

    def typical_for(self, segment: str | None) -> np.ndarray:
        """The segment's median of each of the model's features (NaN where none)."""
        return self._typical.get(segment or "", self._typical[GLOBAL])

    def matrix(self, frame: Frame) -> np.ndarray:
        """The frame's values of the model's features, in the model's order."""
        if frame.names == self.catalog.names:
            return frame.matrix[:, self.positions]
        return frame.matrix[:, [frame.names.index(f) for f in self.features]]

    def serving(self, segment: str | None) -> tuple[str, SegmentModel]:
        name = segment if segment in self.models else GLOBAL
        return name, self.models[name]

    def served(self, segments: Sequence[str | None]) -> dict[str, list[int]]:
        """Row positions grouped by the model that serves them (their segment's or the global)."""
        out: dict[str, list[int]] = {}
        for i, segment in enumerate(segments):
            out.setdefault(self.serving(segment)[0], []).append(i)
        return out

    def stats_for(self, segment: str | None) -> SegmentStats:
        return self.stats.get(segment or "", self.stats[GLOBAL])


def new_model_id() -> str:
    return uuid.uuid4().hex


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _segment_file(segment: str) -> str:
    return "segments/" + hashlib.sha256(segment.encode()).hexdigest()[:16] + ".txt"


def write(
    root: Path,
    *,
    target: str,
    model_id: str,
    trained: Trained,
    catalog: Catalog,
    window: JSONObject,
) -> Path:
    """Write the model's folder atomically and return its path."""
    final = root / target / model_id
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_id}-", dir=final.parent))
    try:
        files: dict[str, str] = {}
        for name, model in trained.models.items():
            relative = "model.txt" if name == GLOBAL else _segment_file(name)
            path = staging / relative
            path.parent.mkdir(exist_ok=True)
            model.booster.save_model(str(path))
            files[name] = relative
        manifest: Manifest = {
            "model_id": model_id,
            "target": target,
            "features": trained.features,
            "categorical": trained.categorical,
            "catalog": catalog.to_json(),
            "params": trained.params,
            "metrics": trained.metrics,
            "reliability": trained.reliability,
            "reference": trained.reference,
            "curves": trained.curves,
            "segments": trained.segments,
            "importance": [{"name": n, "importance": v} for n, v in trained.importance],
            "window": window,
            "rows": trained.rows,
            "search": trained.search,
            "timings": trained.timings,
            "data_hash": trained.data_hash,
            "models": {
                name: {
                    "file": files[name],
                    "sha256": _sha256(staging / files[name]),
                    "calibration": list(model.calibration),
                    "regression": None if model.regression is None else model.regression.to_json(),
                    "blend": [model.blend.trees, model.blend.regression],
                }
                for name, model in trained.models.items()
            },
            "stats": {
                name: {
                    "thresholds": list(s.thresholds),
                    "reference": _thin(s.reference),
                    "typical": s.typical,
                }
                for name, s in trained.stats.items()
            },
            "libraries": {
                "lightgbm": importlib.metadata.version("lightgbm"),
                # versions without the imports: shap alone cost an API process 3 s to start
                "shap": importlib.metadata.version("shap"),
                "numpy": np.__version__,
                "scikit-learn": importlib.metadata.version("scikit-learn"),
                "python": platform.python_version(),
            },
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
        for path in staging.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def _thin(values: list[float]) -> list[float]:
    if len(values) <= REFERENCE_POINTS:
        return values
    q = np.quantile(np.array(values), np.linspace(0, 1, REFERENCE_POINTS))
    return [float(v) for v in q]


def load(path: Path) -> Loaded:
    """Read and verify a model folder. Raises DamagedModel, never crashes the process."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise DamagedModel(f"Model at {path.name} has no readable manifest.") from exc
    models: dict[str, SegmentModel] = {}
    for name, entry in manifest["models"].items():
        file = path / entry["file"]
        try:
            text = file.read_bytes()
        except OSError as exc:
            raise DamagedModel(f"Model file {entry['file']} of {path.name} is missing.") from exc
        if hashlib.sha256(text).hexdigest() != entry["sha256"]:
            raise DamagedModel(
                f"Model file {entry['file']} of {path.name} does not match its sha256; "
                "it was not loaded."
            )
        import lightgbm as lgb  # here, not at import: it brings scikit-learn and pandas (1 s)

        booster = lgb.Booster(model_str=text.decode())
        a, b = entry["calibration"]
        regression = entry.get("regression")
        trees, weight = entry.get("blend", (1.0, 0.0))
        models[name] = SegmentModel(
            booster,
            (float(a), float(b)),
            None if regression is None else linear.Linear.from_json(regression),
            Blend(float(trees), float(weight)),
        )
    stats = {
        name: SegmentStats(
            (float(s["thresholds"][0]), float(s["thresholds"][1])),
            [float(v) for v in s["reference"]],
            {k: float(v) for k, v in s["typical"].items()},
        )
        for name, s in manifest["stats"].items()
    }
    return Loaded(
        model_id=manifest["model_id"],
        target=manifest["target"],
        manifest=manifest,
        catalog=Catalog.from_json(manifest["catalog"]),
        features=list(manifest["features"]),
        models=models,
        stats=stats,
    )


def catalog_at(path: Path) -> Catalog | None:
    """The catalog a stored model was trained with; None when its folder cannot be read."""
    try:
        return Catalog.from_json(json.loads((path / "manifest.json").read_text())["catalog"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def summary(trained: Trained) -> JSONObject:
    """What the models table keeps for listing without opening the folder."""
    return {
        "metrics": trained.metrics,
        "segments": trained.segments,
        "features": [{"name": n, "importance": v} for n, v in trained.importance],
        "served": trained.search.get("blend", {}).get("chosen"),
    }


# The model records in Postgres: one function per question, so that "which model is active" is
# asked one way everywhere.


@dataclass(frozen=True)
class Record:
    model_id: str
    target: str
    path: Path
    horizon_days: int
    label: JSONObject  # the label it was trained on (schemas.models.Label, as JSON)
    activated_at: datetime | None
    replaced_model_id: str | None  # the model it replaced as active, which a rollback restores


def _record(row: asyncpg.Record) -> Record:
    return Record(
        row["model_id"],
        row["target"],
        Path(row["path"]),
        row["horizon_days"],
        orjson.loads(row["label"]),
        row["activated_at"],
        row["replaced_model_id"],
    )


async def active(conn: asyncpg.Connection, target: str) -> Record | None:
    """The model that scores `target` now."""
    row = await conn.fetchrow(
        "SELECT model_id, target, path, horizon_days, label, activated_at, replaced_model_id "
        "FROM models WHERE target = $1 AND status = 'active'",
        target,
    )
    return None if row is None else _record(row)


async def all_active(
    conn: asyncpg.Connection, targets: Sequence[str] | None = None
) -> list[Record]:
    """The active model of every target (of `targets`, when given), by target."""
    rows = await conn.fetch(
        "SELECT model_id, target, path, horizon_days, label, activated_at, replaced_model_id "
        "FROM models WHERE status = 'active' "
        "AND ($1::text[] IS NULL OR target = ANY($1::text[])) ORDER BY target",
        None if targets is None else list(targets),
    )
    return [_record(r) for r in rows]


async def located(conn: asyncpg.Connection, model_id: str) -> Record:
    """The model's record; NotFound when there is no such model."""
    row = await conn.fetchrow(
        "SELECT model_id, target, path, horizon_days, label, activated_at, replaced_model_id "
        "FROM models WHERE model_id = $1",
        model_id,
    )
    if row is None:
        raise errors.NotFound(f"No model {model_id!r}.")
    return _record(row)


async def replaced_by_active(conn: asyncpg.Connection, target: str) -> Record | None:
    """The model that the target's active model replaced, which a rollback would put back."""
    current = await active(conn, target)
    if current is None or current.replaced_model_id is None:
        return None
    return await located(conn, current.replaced_model_id)


_MODEL_COLUMNS = (
    "model_id, target, status, created_at, activated_at, as_of, horizon_days, label, summary, "
    "replaced_model_id, status_reason"
)


def _info(row: asyncpg.Record, comparisons: Sequence[asyncpg.Record] = ()) -> ModelInfo:
    data = dict(row)
    for key in ("label", "summary"):
        if isinstance(data[key], str):
            data[key] = orjson.loads(data[key])
    summary = data.pop("summary")
    return ModelInfo(
        **data,
        metrics=summary["metrics"],
        segments=summary["segments"],
        features=summary["features"],
        served=summary.get("served"),
        comparisons=[
            {
                **dict(c),
                **{
                    k: orjson.loads(c[k]) for k in ("window", "candidate_metrics", "active_metrics")
                },
            }
            for c in comparisons
        ],
    )


async def info(conn: asyncpg.Connection, model_id: str) -> ModelInfo:
    """The model's record with every comparison it was part of (as candidate or as active)."""
    row = await conn.fetchrow(f"SELECT {_MODEL_COLUMNS} FROM models WHERE model_id = $1", model_id)  # noqa: S608  (constant columns)
    if row is None:
        raise errors.NotFound(f"No model {model_id!r}.")
    comparisons = await conn.fetch(
        'SELECT candidate_id, active_id, promoted, reason, "window", candidate_metrics, '
        "active_metrics, created_at FROM model_comparisons "
        "WHERE candidate_id = $1 OR active_id = $1 ORDER BY created_at DESC, id DESC",
        model_id,
    )
    return _info(row, comparisons)


async def infos(conn: asyncpg.Connection, *, target: str | None) -> list[ModelInfo]:
    """Every model's record (of `target`, when given), newest first."""
    rows = await conn.fetch(
        f"SELECT {_MODEL_COLUMNS} FROM models WHERE $1::text IS NULL OR target = $1 "  # noqa: S608  (constant columns)
        "ORDER BY created_at DESC",
        target,
    )
    return [_info(r) for r in rows]
