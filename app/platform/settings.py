"""Every knob custintel has, read from the environment with the CUSTINTEL_ prefix."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from cryptography.fernet import Fernet
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CUSTINTEL_", extra="ignore")

    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses weak bootstrap keys."
    )
    database_url: str | None = Field(
        None,
        description="postgresql:// URL. Unset: an embedded Postgres is started under data_dir.",
    )
    data_dir: Path = Field(Path(".custintel"), description="Embedded Postgres data lives here.")
    models_dir: Path = Field(
        Path(".custintel/models_store"),
        description="Trained model artefacts. Unset: models_store inside data_dir, so one "
        "directory holds everything an installation keeps.",
    )
    host: str = Field("127.0.0.1", description="Address `custintel serve` binds.")
    port: int = Field(8000, description="Port `custintel serve` binds.")
    workers: int = Field(1, ge=1, description="API processes for `custintel serve`.")
    bootstrap_admin_key: SecretStr | None = Field(
        None, description="Accepted as an admin key in addition to stored keys."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections per API process; more get 503."
    )
    max_header_bytes: int = Field(
        32768, ge=1024, description="Largest request head (request line and headers): 431."
    )
    max_headers: int = Field(100, ge=8, description="Most header fields in a request: 431.")
    header_timeout_seconds: float = Field(
        10, gt=0, description="A request head not received within this gets 408 and is closed."
    )
    body_timeout_seconds: float = Field(
        60, gt=0, description="A request body not received within this gets 408 and is closed."
    )
    future_tolerance_hours: float = Field(
        24, ge=0, description="How far in the future an occurred_at may lie."
    )
    partitions_ahead_months: int = Field(
        3, ge=1, description="Monthly event partitions kept created ahead of now."
    )
    db_pool_size: int = Field(10, ge=1, description="Connections per process.")
    db_timeout_seconds: float = Field(
        5, gt=0, description="Connect and statement wait before answering 503."
    )
    db_statement_timeout_seconds: float = Field(
        30,
        ge=0,
        description="A statement of an API request not answered within this is 503 (0: none).",
    )
    purchase_event_types: list[str] = Field(
        ["purchase", "order_completed"],
        description="Event types that are purchases (the repeat-purchase rate, lifetime value; "
        "`value` is the spend).",
    )
    clv_margin: float = Field(
        1.0, gt=0, le=1, description="Share of revenue kept (gross margin) in lifetime value."
    )
    clv_discount_rate: float = Field(
        0.10, ge=0, le=1, description="Annual rate future revenue is discounted at (CLV)."
    )
    clv_horizon_months: int = Field(
        36, ge=1, le=240, description="Months of future a lifetime value counts."
    )
    clv_fit_every_hours: float = Field(
        24, ge=0, description="How often the purchase-log CLV models are fitted (0: never)."
    )
    uplift_fit_every_hours: float = Field(
        24,
        ge=0,
        description="How often each target's uplift learner is fitted on the routing holdouts "
        "and every live account ranked by it (0: never).",
    )
    session_hours: float = Field(
        12, gt=0, le=24 * 30, description="How long a console sign-in lasts."
    )
    login_failures_per_email: int = Field(
        5, ge=1, description="Failed console sign-ins per email in 15 minutes before refusing."
    )
    login_failures_per_address: int = Field(
        20, ge=1, description="Failed console sign-ins per address in 15 minutes before refusing."
    )
    api_key_cache_seconds: float = Field(
        10, ge=0, description="How long a verified API key is trusted without a lookup."
    )
    rate_limit_key_per_second: float = Field(
        5000, ge=0, description="Requests per second one key may make, per API process (0: off)."
    )
    rate_limit_address_per_second: float = Field(
        10000,
        ge=0,
        description="Requests per second to /v1 from one address, per API process (0: off).",
    )
    auth_failures_per_minute: float = Field(
        600,
        ge=0,
        description="Unknown keys one address may send per minute before it gets 429 (0: off).",
    )
    secret_key: SecretStr | None = Field(
        None,
        description="The key that seals stored secrets (AES-256-GCM; 32 bytes, url-safe "
        "base64), or a comma-separated list: the first seals, each decrypts (a rotation without "
        "downtime). Unset: a key file in data_dir, made on first use, readable by its owner only.",
    )
    source_replay_seconds: int = Field(
        300, ge=1, description="How old a signed delivery's timestamp may be before it is refused."
    )
    source_payload_retention_days: int = Field(
        7, ge=0, description="Days the raw payloads of senders' deliveries are kept."
    )
    consent_required: list[str] = Field(
        default_factory=list,
        description="Consent categories a contact must have given (true) for its signals to be "
        "stored (JSON list); signals of other contacts are acknowledged and not stored. Empty: "
        "none required.",
    )
    event_retention_days: int = Field(
        0,
        ge=0,
        description="Events older than this are dropped a whole month (partition) at a time, "
        "once the month's last day is past it; 0 keeps them forever. Their monthly rollups stay, "
        "so lifetime features still count them.",
    )
    score_retention_days: int = Field(
        730, ge=0, description="Days of score history kept (0: forever)."
    )
    delivery_attempt_retention_days: int = Field(
        90, ge=0, description="Days webhook delivery attempts are kept (0: forever)."
    )
    job_retention_days: int = Field(
        90, ge=0, description="Days finished jobs are kept (0: forever)."
    )
    held_retention_days: int = Field(
        90,
        ge=0,
        description="Days a held signal (attached since, or expired) is kept after it arrived "
        "(0: forever).",
    )
    sentiment_words: dict[str, Annotated[float, Field(ge=-4, le=4)]] = Field(
        default_factory=dict,
        description="Words and their valence (-4 to 4) over the sentiment lexicon and its "
        "support-language table: 0 neutralises a word (JSON object).",
    )
    themes_refit_hours: float = Field(
        24, gt=0, description="Hours between two refits of the themes learnt from the texts."
    )
    enrich_batch: int = Field(
        2000, ge=1, le=100_000, description="Texts the worker reads and enriches per batch."
    )
    unresolved_days: int = Field(
        30,
        ge=1,
        description="Days a signal that names no known account yet is held for an identity "
        "that resolves it; then it is reported as expired (and still listed).",
    )
    max_traits_per_profile: int = Field(
        500, ge=1, description="Trait keys one account or contact may hold; more is 422."
    )
    max_trait_keys: int = Field(
        2000,
        ge=1,
        description="Distinct trait keys of accounts (and of contacts) overall; keys past it are "
        "left out of a call and named in its answer's `dropped`.",
    )
    currency: str = Field(
        "USD",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code money is shown in (reasons: revenue, MRR), whole units.",
    )
    max_trait_keys_per_writer: int = Field(
        500,
        ge=1,
        description="Trait keys one API key or webhook source may add of that budget (of "
        "accounts, and of contacts); past it the new keys are left out of a call and named in its "
        "answer's `dropped`, its other fields stored.",
    )
    feature_max_traits: int = Field(
        50, ge=0, le=1000, description="Most used traits that become features."
    )
    feature_max_event_types: int = Field(
        20, ge=1, le=200, description="Most frequent event types that become features."
    )
    feature_max_levels: int = Field(
        30, ge=2, le=500, description="Most levels a string trait keeps as a category."
    )
    feature_include: list[str] = Field(
        default_factory=list, description="Only features matching these glob patterns."
    )
    feature_exclude: list[str] = Field(
        default_factory=list, description="No features matching these glob patterns."
    )
    segment_min_rows: int = Field(
        300, ge=1, description="Training rows a segment needs for a model of its own."
    )
    segment_min_positives: int = Field(
        30, ge=1, description="Positive examples a segment needs for a model of its own."
    )
    band_high_share: float = Field(0.10, gt=0, lt=1, description="Top share of a segment: high.")
    band_medium_share: float = Field(
        0.20, gt=0, lt=1, description="Next share of a segment: medium."
    )
    run_worker: bool = Field(
        True, description="`custintel serve` also starts one `custintel worker` process."
    )
    job_wait_seconds: float = Field(600, gt=0, description="Longest a `?wait=true` job read waits.")
    job_stale_seconds: float = Field(
        30, gt=0, description="A running job whose heartbeat is older is retried by a worker."
    )
    job_timeout_seconds: float = Field(
        7200, gt=0, description="A job running longer is stopped and failed."
    )
    train_max_snapshots: int = Field(
        200, ge=1, description="Most snapshots a training request may ask for."
    )
    train_max_rows: int = Field(
        5_000_000, ge=1, description="Most rows (snapshots times accounts) a training set may have."
    )
    train_search_seconds: float = Field(
        300,
        gt=0,
        description="Time a training's parameter search may take; candidates left when it is "
        "spent are skipped and named in the model's manifest.",
    )
    rescore_every_hours: float = Field(
        24, ge=0, description="Batch rescoring of every live account (0: never)."
    )
    retrain_every_days: float = Field(
        7, ge=0, description="Retraining of every target with an active model (0: never)."
    )
    evaluate_every_hours: float = Field(
        24, ge=0, description="Realized performance and drift of the active models (0: never)."
    )
    voc_refresh_minutes: float = Field(
        15,
        ge=0,
        description="How often the worker recounts the voice of the customer's last 12 months "
        "for the console (0: never; the page then counts live).",
    )
    retention_every_hours: float = Field(
        24, ge=0, description="How often data past its retention is removed (0: never)."
    )
    drift_threshold: float = Field(
        0.2, gt=0, description="Population stability index above which drift is recorded."
    )
    drift_min_importance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of a model's importance a feature needs for its drift to count.",
    )
    insight_bands: list[Literal["high", "medium", "low"]] = Field(
        ["high"], description="Bands whose entry raises an insight (JSON list)."
    )
    insight_min_rise: float = Field(
        0.2, gt=0, le=1, description="A probability rise since the last score that raises one."
    )
    insight_cooldown_hours: float = Field(
        168, ge=0, description="The same insight for the same account is not raised again sooner."
    )
    advocacy_ask_min_days: float = Field(
        90,
        ge=0,
        description="No advocacy insight for an account whose people were asked to advocate "
        "(an `advocacy_asked` event) this few days before.",
    )
    delivery_backoff_seconds: list[float] = Field(
        [0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        min_length=1,
        description="Wait before each delivery try (JSON list); after the last, dead.",
    )
    delivery_timeout_seconds: float = Field(10, gt=0, description="One delivery try's timeout.")
    delivery_poll_seconds: float = Field(
        1, gt=0, description="How often workers look for due deliveries."
    )
    allow_private_destinations: bool = Field(
        False, description="Allow destination URLs on loopback, private or link-local addresses."
    )
    secret_rotation_grace_hours: float = Field(
        24, ge=0, description="How long a rotated-out signing secret still signs."
    )
    promotion_auc_tolerance: float = Field(
        0.01,
        ge=0,
        le=1,
        description="How much lower a candidate's AUC may be and still replace the active model.",
    )
    promotion_calibration_tolerance: float = Field(
        0.01, ge=0, le=1, description="How much higher its calibration error may be."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    access_log: bool = Field(True, description="One JSON line per request.")

    @model_validator(mode="after")
    def _models_beside_the_data(self) -> Settings:
        if "models_dir" not in self.model_fields_set:
            self.models_dir = self.data_dir / "models_store"
        return self

    @model_validator(mode="after")
    def _refuse_weak_secrets(self) -> Settings:
        key = self.bootstrap_admin_key
        if self.environment == "production" and key and len(key.get_secret_value()) < 32:
            raise ValueError("CUSTINTEL_BOOTSTRAP_ADMIN_KEY must be at least 32 characters")
        if self.secret_key is not None:
            try:
                for each in self.secret_key.get_secret_value().split(","):
                    Fernet(each.strip().encode())
            except ValueError:
                raise ValueError(
                    "CUSTINTEL_SECRET_KEY must be a key (32 bytes, url-safe base64: python -c "
                    "'from cryptography.fernet import Fernet; "
                    "print(Fernet.generate_key().decode())'), or a comma-separated list of "
                    "them, the one that seals first"
                ) from None
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
