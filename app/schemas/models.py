"""Models, jobs and scores."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from app.schemas.common import Id, Int, Kind, Timestamp, integral


class JobResult(BaseModel):
    """What a finished job made: a model (train), scores (score), an uplift ranking
    (uplift_fit; its status is the fit's)."""

    model_id: str | None = Field(None, description="train: the new model.")
    status: str | None = Field(None, description="train: the new model's status.")
    window: dict[str, Any] | None = Field(
        None,
        description="train: the data it used: as_of, horizon, snapshots, and stray_events (events "
        "dated before the bulk of the data, which did not move the training window).",
    )
    as_of: datetime | None = Field(None, description="score: the moment scored.")
    accounts: int | None = Field(None, description="score: live accounts at as_of.")
    scores: dict[str, int] | None = Field(None, description="score: scores stored per target.")
    models: dict[str, str] | None = Field(None, description="score: the model used per target.")
    insights: int | None = Field(None, description="score: insights the new scores raised.")
    evaluations: dict[str, Any] | None = Field(
        None, description="evaluate: per target, realized performance and drift."
    )
    target: str | None = Field(None, description="uplift_fit: the target fitted.")
    ranked: int | None = Field(None, description="uplift_fit: live accounts ranked by uplift.")
    verdict: str | None = Field(
        None, description="uplift_fit: how the ranking did, or what it still needs (in words)."
    )


class JobStage(BaseModel):
    """Where a running job is: a training's "training set" (rows built), "search" (candidates
    tried), "estimate" (folds), "refit", "segments", "bands", "baselines", "saving"."""

    name: str
    done: int = Field(description="Steps of this stage done.")
    total: int = Field(description="Steps of this stage in all.")


class Job(BaseModel):
    job_id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float = Field(description="The share of the job done, 0 to 1.")
    stage: JobStage | None = Field(
        None, description="While it runs, the stage it is at (the jobs that report stages)."
    )
    eta_seconds: float | None = Field(
        None,
        description="While it runs, the seconds it has left at its pace so far (once 5% is done).",
    )
    result: JobResult | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cancel_requested_at: datetime | None


class ModelMetrics(BaseModel):
    auc: float | None
    pr_auc: float | None
    brier: float | None
    log_loss: float | None
    lift_at_10: float | None
    n_train: int = Field(description="Rows the served model was trained on: every row.")
    n_valid: int = Field(
        description="Held-out rows the metrics were measured on: the latest snapshots' held-out "
        "accounts, which no model measured here had seen."
    )
    valid_positives: int | None = Field(None, description="Positives among the held-out rows.")
    auc_interval: list[float] | None = Field(
        None, description="A 95% interval of the held-out AUC (Hanley and McNeil)."
    )
    positive_rate: float | None
    baselines: dict[str, float | None] = Field(
        default_factory=dict,
        description="Held-out AUC of simple peers on the same rows: logistic_regression (the "
        "same features) and recency (days since the last activity).",
    )


class CalibrationBin(BaseModel):
    predicted: float = Field(description="Mean predicted probability in this decile.")
    observed: float = Field(description="Share of the decile where the label came true.")
    n: int


class Realized(BaseModel):
    n: int = Field(description="Matured scores (one per account and day).")
    positives: int
    auc: float | None
    brier: float | None
    lift_at_10: float | None
    positive_rate: float | None
    calibration: list[CalibrationBin]


class PrecedingReason(BaseModel):
    feature: str
    text: str
    happened: int = Field(description="Accounts where the label came true and this reason led.")
    happened_share: float | None
    did_not_happen: int = Field(description="Accounts where it did not, and this reason led.")
    did_not_happen_share: float | None


class ModelPerformance(BaseModel):
    model_id: str
    target: str
    matured_before: datetime = Field(
        description="Scores with as_of up to here have matured (their horizon has passed)."
    )
    overall: Realized
    validation: ModelMetrics = Field(description="Held-out metrics at training, to compare.")
    segments: dict[str, Realized]
    preceding_reasons: list[PrecedingReason] = Field(
        description="Which reason led each account's last matured score, by feature: where the "
        "label came true against where it did not."
    )


class FeatureDrift(BaseModel):
    feature: str
    psi: float = Field(description="Population stability index against training.")
    importance: float = Field(description="The feature's share of the model's gain importance.")


class DriftReport(BaseModel):
    model_id: str
    target: str
    batch_as_of: datetime = Field(description="The latest batch scoring, compared with training.")
    accounts: int
    threshold: float
    min_importance: float = Field(description="Importance a feature needs for its drift to count.")
    score_psi: float
    features: list[FeatureDrift] = Field(description="Largest index first.")
    drifted: list[str] = Field(
        description="Features above the threshold with at least min_importance, largest first."
    )
    drift: bool = Field(description="The score, or any feature in drifted, is above the threshold.")


class FeatureImportance(BaseModel):
    name: str
    importance: float


class WindowInfo(BaseModel):
    at: datetime = Field(description="Snapshot: accounts alive then, features as of then.")
    horizon_days: int
    accounts: int
    positives: int


class WindowMetrics(BaseModel):
    auc: float | None
    brier: float | None
    calibration_error: float | None = Field(
        description="Mean |predicted - observed| over deciles, weighted by their size."
    )
    lift_at_10: float | None
    n: int


class Comparison(BaseModel):
    candidate_id: str
    active_id: str
    promoted: bool
    reason: str
    window: WindowInfo
    candidate_metrics: WindowMetrics
    active_metrics: WindowMetrics
    created_at: datetime


class ModelInfo(BaseModel):
    model_id: str
    target: str
    status: Literal["active", "candidate", "retired"]
    created_at: datetime
    activated_at: datetime | None
    as_of: datetime
    horizon_days: int
    label: dict[str, Any]
    segments: dict[str, Any] = Field(
        description="Per segment: which model serves it (its own or the global one), and how "
        "each did on the held-out rows."
    )
    metrics: ModelMetrics
    features: list[FeatureImportance]
    served: Literal["logistic_regression", "trees", "blend"] | None = Field(
        None,
        description="Which candidate of the search serves: the logistic regression alone, the "
        "trees alone, or their blend (null for models trained before it was recorded).",
    )
    replaced_model_id: str | None = Field(
        None, description="The model this one replaced when it became active."
    )
    status_reason: str | None = Field(None, description="Why its status is what it is.")
    comparisons: list[Comparison] = Field(
        default_factory=list,
        description="Candidate against active on the same recent window, newest first.",
    )


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target: Kind


class Reason(BaseModel):
    feature: str
    value: float | str | None
    contribution: float = Field(description="TreeSHAP contribution, in log-odds.")
    text: str = Field(description="The feature in words, its value, and which way it pushes.")
    kind: Literal["headline", "counter", "context"] = Field(
        "headline",
        description="headline: pushes the score the way it points; counter: the other way; "
        "context: describes who the customer is (nobody can act on it).",
    )


class Score(BaseModel):
    target: str
    model_id: str
    segment: str | None
    as_of: datetime
    probability: float = Field(description="sigmoid(a * margin + b), the model's calibration.")
    band: Literal["high", "medium", "low"]
    percentile: float = Field(description="Rank among the segment's scores at training, 0-100.")
    margin: float = Field(description="base_value + sum of all contributions, in log-odds.")
    base_value: float
    other_contribution: float = Field(
        description="Sum of every contribution not in reasons (counter_reasons and context "
        "included): base_value + sum(reasons) + other_contribution = margin."
    )
    reasons: list[Reason] = Field(
        description="The largest contributions pushing the score the way it points (above the "
        "average account: what raises it), among features a person can act on."
    )
    counter_reasons: list[Reason] = Field(
        default_factory=list,
        description="The largest actionable contributions pushing the other way (for a high "
        "churn risk: the protective factors). Inside other_contribution.",
    )
    context: list[Reason] = Field(
        default_factory=list,
        description="The largest contributions of what describes the customer (plan, segment, "
        "traits): never a headline reason. Inside other_contribution.",
    )


class AccountScores(BaseModel):
    account_id: str
    scores: list[Score]


class RankedScore(BaseModel):
    account_id: str
    score: Score


class RankedScores(BaseModel):
    target: str
    model_id: str = Field(description="The active model whose stored scores are listed.")
    results: list[RankedScore]


class ScoreError(BaseModel):
    account_id: str
    detail: str


class ScoreBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    account_ids: list[Id] = Field(min_length=1, max_length=1000)
    targets: list[Kind] = Field(min_length=1, max_length=10)
    as_of: Timestamp | None = None
    top: Int = Field(3, ge=0, le=50)


class ScoreBatchResult(BaseModel):
    results: list[AccountScores]
    errors: list[ScoreError]


class OutcomeLabel(BaseModel):
    type: Literal["outcome"]
    kinds: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]] = Field(
        min_length=1, max_length=20
    )


class InactivityLabel(BaseModel):
    """For businesses without contracts: 1 when none of these events happens in the horizon.
    Learnt among accounts with one of these events in the horizon before the snapshot."""

    type: Literal["inactivity"]
    event_types: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=50
    )


class EventLabel(BaseModel):
    """1 when one of these events happens in the horizon: acts, such as the advocacy acts
    (referral_made, review_posted, reference_given, case_study_published)."""

    type: Literal["event"]
    event_types: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=50
    )


class MrrIncreaseLabel(BaseModel):
    """1 when the account's mrr at the end of the horizon is at least min_pct above its mrr at
    the snapshot."""

    type: Literal["mrr_increase"]
    min_pct: float = Field(10, gt=0, le=10_000)


Label = Annotated[
    OutcomeLabel | InactivityLabel | EventLabel | MrrIncreaseLabel, Field(discriminator="type")
]


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target: Kind = Field(description="What to predict, e.g. churn or expansion.")
    label: Label | None = Field(
        None,
        description="Default: churn → churned outcomes, expansion → expanded, advocacy → an "
        "advocacy act (event), else the outcome named like the target.",
    )
    horizon_days: Int = Field(90, ge=1, le=730)
    as_of: Timestamp | None = Field(None, description="Train on data up to here. Default: now.")
    snapshot_every_days: Int = Field(30, ge=1, le=365)
    warm_up_days: Int = Field(
        30,
        ge=0,
        le=365,
        description="Days of data before the first snapshot: earlier snapshots would see almost "
        "nothing. Snapshots after it know how much history they saw (the data_days feature).",
    )
    snapshot_dates: Annotated[list[Timestamp], Field(max_length=200)] | None = None
    max_features: Annotated[int, Field(ge=1, le=500), BeforeValidator(integral)] | None = None


class RescoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    targets: Annotated[list[Kind], Field(min_length=1, max_length=20)] | None = Field(
        None, description="Targets to score. Default: every target with an active model."
    )
    as_of: Timestamp | None = Field(None, description="Score as of this moment. Default: now.")
    top: Int = Field(3, ge=0, le=20, description="Reasons kept per score.")
