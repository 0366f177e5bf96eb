"""Every table custintel stores. Large tables keep account_id, to distribute them by account."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.platform.db import metadata
from app.platform.jsonbody import JSONObject

Timestamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = metadata


class Account(Base):
    __tablename__ = "accounts"
    # A CSM's book and its filters read the accounts of their owners (app.web.book).
    __table_args__ = (Index(None, "owner_email", "segment"),)

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(Text)
    segment: Mapped[str | None] = mapped_column(String(255), index=True)
    plan: Mapped[str | None] = mapped_column(String(255))
    mrr: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    owner_email: Mapped[str | None] = mapped_column(String(320))
    traits: Mapped[JSONObject] = mapped_column(JSONB, server_default="{}")
    # observed_at of the newest upsert folded into the current values; NULL when only events
    # have mentioned the account so far.
    observed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class AccountHistory(Base):
    """Every accepted upsert as sent: the fields it set, at the moment they became true."""

    __tablename__ = "account_history"
    __table_args__ = (Index(None, "account_id", "observed_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("accounts.account_id", ondelete="CASCADE")
    )
    observed_at: Mapped[datetime] = mapped_column(Timestamp)
    changes: Mapped[JSONObject] = mapped_column(JSONB)
    recorded_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (Index(None, "account_id"),)

    contact_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("accounts.account_id", ondelete="CASCADE")
    )
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str | None] = mapped_column(String(64))
    traits: Mapped[JSONObject] = mapped_column(JSONB, server_default="{}")
    consent: Mapped[dict[str, bool]] = mapped_column(JSONB, server_default="{}")  # by category
    observed_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class ContactHistory(Base):
    __tablename__ = "contact_history"
    __table_args__ = (Index(None, "contact_id", "observed_at"), Index(None, "account_id"))

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    contact_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("contacts.contact_id", ondelete="CASCADE")
    )
    account_id: Mapped[str] = mapped_column(String(255))
    observed_at: Mapped[datetime] = mapped_column(Timestamp)
    changes: Mapped[JSONObject] = mapped_column(JSONB)
    recorded_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class ContactIdentity(Base):
    """An external identifier (email, CRM id, support-tool id) pointing at one contact."""

    __tablename__ = "identities"
    __table_args__ = (PrimaryKeyConstraint("kind", "value"), Index(None, "contact_id"))

    kind: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(320))
    contact_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("contacts.contact_id", ondelete="CASCADE")
    )
    account_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class AccountIdentity(Base):
    """An identifier of an account (its domain, its id in a CRM or billing system), pointing at
    that one account."""

    __tablename__ = "account_identities"
    __table_args__ = (PrimaryKeyConstraint("kind", "value"), Index(None, "account_id"))

    kind: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(320))
    account_id: Mapped[str] = mapped_column(
        String(255), ForeignKey("accounts.account_id", ondelete="CASCADE")
    )
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class MergedId(Base):
    """A contact or account merged into another (app.people.merges): its id resolves to the
    survivor, one hop (a survivor merged later takes over its merged ids)."""

    __tablename__ = "merged_ids"
    __table_args__ = (
        CheckConstraint("subject IN ('account', 'contact')", name="subject"),
        Index(None, "subject", "survivor_id"),
    )

    subject: Mapped[str] = mapped_column(String(16), primary_key=True)
    merged_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    survivor_id: Mapped[str] = mapped_column(String(255))
    merged_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Source(Base):
    """A sender whose signed webhooks arrive at /hooks/{source_id} (app.signals.sources); its
    signing secret encrypted (app.governance.vault), the one before it verifying until
    previous_secret_until."""

    __tablename__ = "sources"
    __table_args__ = (
        CheckConstraint("kind IN ('stripe', 'zendesk', 'hubspot', 'intercom')", name="kind"),
    )

    source_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_until: Mapped[datetime | None] = mapped_column(Timestamp)
    settings: Mapped[JSONObject] = mapped_column(JSONB, server_default="{}")
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class SourceDelivery(Base):
    """One event a sender delivered, by the sender's own id (idempotency, forever): what became
    of it, why when it was rejected, and its payload until the retention deletes it."""

    __tablename__ = "source_deliveries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('accepted', 'ignored', 'rejected', 'held', 'suppressed')", name="status"
        ),
        Index(None, "source_id", "status", "received_at"),
        Index(None, "received_at"),
    )

    source_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("sources.source_id", ondelete="CASCADE"), primary_key=True
    )
    delivery_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    rejection_id: Mapped[int] = mapped_column(BigInteger, Identity(), unique=True)
    event_type: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[JSONObject | None] = mapped_column(JSONB)
    redeliveries: Mapped[int] = mapped_column(Integer, server_default="0")
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    last_received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class UnresolvedSignal(Base):
    """A call that named no account custintel could find yet (app.signals.segment), kept as sent
    with the identifiers (`kind:value`) that would resolve it; attached once one does."""

    __tablename__ = "unresolved_signals"
    __table_args__ = (Index(None, "keys", postgresql_using="gin"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    source: Mapped[str] = mapped_column(String(64))
    call: Mapped[str] = mapped_column(String(32))
    keys: Mapped[list[str]] = mapped_column(ARRAY(Text))
    message: Mapped[JSONObject] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    attached_at: Mapped[datetime | None] = mapped_column(Timestamp)
    account_id: Mapped[str | None] = mapped_column(String(255))


class EventKey(Base):
    """One row per event_id ever accepted: idempotency across partitions, forever."""

    __tablename__ = "event_keys"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(Timestamp)
    digest: Mapped[bytes] = mapped_column(LargeBinary)


class Event(Base):
    """Signals. Range-partitioned by month of occurred_at (see app.platform.partitions).

    No primary key in the database: event_keys already makes event_id unique, forever and across
    partitions, and a second unique index would only slow every insert.
    """

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "account_id", "occurred_at"),
        # How the worker finds new texts to enrich (app.voc.enrich): a summary per range of
        # pages, nearly free at ingest, since events arrive in received_at order.
        Index("ix_events_received_at_brin", "received_at", postgresql_using="brin"),
        # Survey metrics over every account (app.voc.surveys); only survey answers pay for it.
        Index(
            "ix_events_surveys",
            "type",
            "occurred_at",
            postgresql_where=text("type IN ('nps_answered', 'csat_answered', 'ces_answered')"),
        ),
        # An account's survey answers and ticket events of the year, for its features
        # (app.ml.features), without reading its other events; only they pay for it.
        Index(
            "ix_events_account_surveys",
            "account_id",
            "occurred_at",
            postgresql_where=text("type IN ('nps_answered', 'csat_answered', 'ces_answered')"),
        ),
        Index(
            "ix_events_account_tickets",
            "account_id",
            "occurred_at",
            postgresql_where=text("type IN ('ticket_opened', 'ticket_closed')"),
        ),
        {"postgresql_partition_by": "RANGE (occurred_at)"},
    )
    __mapper_args__ = {"primary_key": ["event_id", "occurred_at"]}

    event_id: Mapped[str] = mapped_column(String(255), nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    account_id: Mapped[str] = mapped_column(String(255))
    contact_id: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))
    type: Mapped[str] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Double)
    properties: Mapped[JSONObject] = mapped_column(JSONB, server_default="{}")
    text: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class TextEnrichment(Base):
    """What the worker read in an event's text (app.voc.enrich): its sentiment. Keyed by the
    event's id, which is unique across events; `received_at` is the event's."""

    __tablename__ = "text_enrichments"
    __table_args__ = (
        CheckConstraint("label IN ('negative', 'neutral', 'positive')", name="label"),
        Index(None, "received_at"),
        # A theme's texts (app.voc.themes.examples, for a rare theme).
        Index(None, "themes", postgresql_using="gin"),
    )

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(Timestamp, nullable=False)
    sentiment: Mapped[float] = mapped_column(Double, nullable=False)
    label: Mapped[str] = mapped_column(String(16), nullable=False)
    enriched_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    themes: Mapped[list[str]] = mapped_column(ARRAY(String(64)), server_default="{}")
    # The sentiment reader that read it (app.voc.learned); NULL: the lexicon.
    reader_id: Mapped[str | None] = mapped_column(String(64))


class PrivacySuppression(Base):
    """An erased identifier (app.governance.privacy), as a keyed hash only: signals naming it are
    acknowledged and not stored."""

    __tablename__ = "privacy_suppressions"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    erasure_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class InstallationSecret(Base):
    """A secret of the installation itself (the privacy hashing pepper), sealed
    (app.governance.vault)."""

    __tablename__ = "installation_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class SentimentReader(Base):
    """A choice of how texts' sentiment is read (app.voc.learned), made from the installation's
    survey comments: the lexicon, a classifier learned from them, or the two blended; the
    newest row is the one in use. `model` holds a learned classifier's terms and weights."""

    __tablename__ = "sentiment_readers"
    __table_args__ = (
        CheckConstraint("kind IN ('lexicon', 'learned', 'blend')", name="kind"),
        Index(None, "created_at"),
    )

    reader_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    model: Mapped[JSONObject | None] = mapped_column(JSONB)
    metrics: Mapped[JSONObject] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Theme(Base):
    """A theme of what customers write (app.voc.themes): learned by a refit, or a seed an
    operator defined by keywords; its terms and their weights decide which texts are about it."""

    __tablename__ = "themes"

    theme_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    terms: Mapped[list[Any]] = mapped_column(JSONB)
    seed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    pinned: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    renamed: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    merged_into: Mapped[str | None] = mapped_column(String(64))
    retired_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    # NPMI of its leading words over the texts it was learnt from (a seed: none); a theme
    # whose first word is written with none of the others, or shared, is about no one subject.
    coherence: Mapped[float | None] = mapped_column(Double)
    coherent: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))


class EventRollup(Base):
    """Per account, event type and UTC month: the events' count, value, first and last instants
    and days (app.ml.rollups). Features read it for every month before the ones they read event by
    event."""

    __tablename__ = "event_rollups"
    __table_args__ = (Index(None, "month"),)

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(255), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    valued: Mapped[int] = mapped_column(BigInteger)
    value_sum: Mapped[float] = mapped_column(Double)
    first_at: Mapped[datetime] = mapped_column(Timestamp)
    last_at: Mapped[datetime] = mapped_column(Timestamp)
    # The month's days with an event: bit d-1 for day d (UTC), for the cadence.
    days: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class EventRollupMonth(Base):
    """A month of events (its partition) that is rolled up, and how many events it held then."""

    __tablename__ = "event_rollup_months"

    partition: Mapped[str] = mapped_column(String(63), primary_key=True)
    month: Mapped[date] = mapped_column(Date)
    events: Mapped[int] = mapped_column(BigInteger)
    rolled_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Outcome(Base):
    __tablename__ = "outcomes"
    __table_args__ = (Index(None, "account_id", "occurred_at"), Index(None, "kind", "occurred_at"))

    outcome_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(Timestamp)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2))
    properties: Mapped[JSONObject] = mapped_column(JSONB, server_default="{}")
    digest: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class ApiKey(Base):
    """Keys are stored as SHA-256 of the secret; the secret itself is shown once."""

    __tablename__ = "api_keys"

    key_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(ARRAY(String(32)))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    operations: Mapped[list[str] | None] = mapped_column(ARRAY(String(64)))  # None: any
    sources: Mapped[list[uuid.UUID] | None] = mapped_column(ARRAY(UUID))  # None: any


class ApiKeyUsage(Base):
    """When a key was last used, written at most once a minute per key and process (apart from
    api_keys, whose changes empty every process's key cache)."""

    __tablename__ = "api_key_usage"

    key_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("api_keys.key_id", ondelete="CASCADE"), primary_key=True
    )
    last_used_at: Mapped[datetime] = mapped_column(Timestamp)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index(None, "at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[JSONObject] = mapped_column(JSONB, server_default="{}")


class Model(Base):
    """The registry's record of a trained model; its files live under models_store/."""

    __tablename__ = "models"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'candidate', 'retired')", name="status"),
        Index(None, "target", "status"),
        Index(
            "uq_models_one_active",
            "target",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
    )

    model_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(Timestamp)
    as_of: Mapped[datetime] = mapped_column(Timestamp)
    horizon_days: Mapped[int] = mapped_column(Integer)
    label: Mapped[JSONObject] = mapped_column(JSONB)
    summary: Mapped[JSONObject] = mapped_column(JSONB)
    path: Mapped[str] = mapped_column(Text)
    # Lineage: the model this one replaced when it became active, and why its status is what
    # it is (promoted by the gate, kept as a candidate, activated by hand, rolled back).
    replaced_model_id: Mapped[str | None] = mapped_column(String(64))
    status_reason: Mapped[str | None] = mapped_column(Text)


class ModelComparison(Base):
    """A candidate against the active model on the same recent window: kept either way."""

    __tablename__ = "model_comparisons"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    target: Mapped[str] = mapped_column(String(64))
    candidate_id: Mapped[str] = mapped_column(String(64), index=True)
    active_id: Mapped[str] = mapped_column(String(64), index=True)
    promoted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    window: Mapped[JSONObject] = mapped_column(JSONB)
    candidate_metrics: Mapped[JSONObject] = mapped_column(JSONB)
    active_metrics: Mapped[JSONObject] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Job(Base):
    """Work done off the request path, claimed with FOR UPDATE SKIP LOCKED."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name="status"
        ),
        Index(None, "status", "created_at"),
    )

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    params: Mapped[JSONObject] = mapped_column(JSONB)
    progress: Mapped[float] = mapped_column(Double, server_default="0")
    # While it runs, the stage it is at: {"name", "done", "total"} (app.platform.jobs.Stage).
    stage: Mapped[JSONObject | None] = mapped_column(JSONB)
    result: Mapped[JSONObject | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # A scheduled job's slot (e.g. "rescore:2026-11-22T06"): unique, so that however many
    # workers enqueue it, it is enqueued once.
    slot: Mapped[str | None] = mapped_column(String(255), unique=True)


class TraitKey(Base):
    """Every trait key ever used, per kind of profile: their number is capped, since each one
    can become a feature."""

    __tablename__ = "trait_keys"
    __table_args__ = (
        CheckConstraint("kind IN ('account', 'contact')", name="kind"),
        Index("ix_trait_keys_added_by", "kind", "added_by"),
    )

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    # the writer that added it ("key:<id>" or "source:<id>"), whose own budget it counts against
    added_by: Mapped[str | None] = mapped_column(String(80))


class Worker(Base):
    """A running `custintel worker`, beating while it lives: readiness counts the live ones."""

    __tablename__ = "workers"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    beat_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Score(Base):
    """Every score given, with its reasons and model: what the closed loop measures."""

    __tablename__ = "scores"
    __table_args__ = (
        Index(None, "account_id", "target", "as_of"),
        Index(None, "model_id", "as_of"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    target: Mapped[str] = mapped_column(String(64))
    model_id: Mapped[str] = mapped_column(String(64))
    segment: Mapped[str | None] = mapped_column(String(255))
    as_of: Mapped[datetime] = mapped_column(Timestamp)
    scored_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    probability: Mapped[float] = mapped_column(Double)
    band: Mapped[str] = mapped_column(String(16))
    percentile: Mapped[float] = mapped_column(Double)
    margin: Mapped[float] = mapped_column(Double)
    reasons: Mapped[list[JSONObject]] = mapped_column(JSONB)
    base_value: Mapped[float] = mapped_column(Double)
    other_contribution: Mapped[float] = mapped_column(Double)


class Finding(Base):
    """Something the closed loop noticed (drift of a model's population, for now), kept for
    routing to deliver to the people who act on it."""

    __tablename__ = "findings"
    __table_args__ = (Index(None, "kind", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(64))
    model_id: Mapped[str | None] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[JSONObject] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Insight(Base):
    """Something worth acting on for one account (or a model, for drift): raised by a rule of
    app/activation/insights.py, routed by routing_rules, with the routing decision kept beside
    it."""

    __tablename__ = "insights"
    __table_args__ = (
        CheckConstraint("status IN ('open', 'acknowledged', 'resolved')", name="status"),
        Index(None, "account_id", "target", "kind", "created_at"),
        Index(None, "owner_email", "created_at"),
        Index(None, "created_at"),
    )

    insight_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(64))
    account_id: Mapped[str | None] = mapped_column(String(255))
    owner_email: Mapped[str | None] = mapped_column(String(320))
    model_id: Mapped[str | None] = mapped_column(String(64))
    segment: Mapped[str | None] = mapped_column(String(255))
    probability: Mapped[float | None] = mapped_column(Double)
    band: Mapped[str | None] = mapped_column(String(16))
    previous_probability: Mapped[float | None] = mapped_column(Double)
    previous_band: Mapped[str | None] = mapped_column(String(16))
    reasons: Mapped[list[JSONObject]] = mapped_column(JSONB)
    next_step: Mapped[str] = mapped_column(Text)
    details: Mapped[JSONObject] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    decision: Mapped[JSONObject] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class RoutingRule(Base):
    """Which insights go where: a match on target, band, segment, plan or traits; destinations;
    an owner (the account's owner_email when unset); a holdout share kept undelivered."""

    __tablename__ = "routing_rules"

    rule_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    match: Mapped[JSONObject] = mapped_column(JSONB)
    destination_ids: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    owner: Mapped[str | None] = mapped_column(String(320))
    holdout_share: Mapped[float] = mapped_column(Double)
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Destination(Base):
    """Where insights are delivered: a webhook signed per Standard Webhooks, or a Slack
    incoming webhook. The signing secret must be usable to sign, so it is sealed
    (app.governance.vault), not hashed, and shown once, at creation or rotation. A destination may
    require a consent category of the people an insight names (app.activation.routing.route)."""

    __tablename__ = "destinations"
    __table_args__ = (CheckConstraint("kind IN ('webhook', 'slack')", name="kind"),)

    destination_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[bytes] = mapped_column(LargeBinary)  # sealed (app.governance.vault)
    previous_secret: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_until: Mapped[datetime | None] = mapped_column(Timestamp)
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    consent_category: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class Delivery(Base):
    """The outbox: one insight to one destination, written with the insight."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'dead')", name="status"),
        Index(None, "status", "next_attempt_at"),
    )

    delivery_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    insight_id: Mapped[str] = mapped_column(String(64), index=True)
    destination_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    payload: Mapped[JSONObject] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(Timestamp)


class DeliveryAttempt(Base):
    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(64), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    status_code: Mapped[int | None] = mapped_column(Integer)
    response: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Double)


# --- the console ------------------------------------------------------------------------------


class User(Base):
    """A person who uses the console: a csm sees the accounts they own, a lead their team's (or
    every account, without a team), an admin every account and the users. The password is kept
    as an argon2 hash only."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('csm', 'lead', 'admin')", name="role"),
        UniqueConstraint("email"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(255))
    password_hash: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    disabled_at: Mapped[datetime | None] = mapped_column(Timestamp)


class WebSession(Base):
    """A signed-in browser: the cookie's token as a SHA-256 hash, and the session's CSRF token."""

    __tablename__ = "web_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.user_id", ondelete="CASCADE"), index=True
    )
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(Timestamp)


class LoginAttempt(Base):
    """Each sign-in attempt, for the limit on failures per email and per address."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        Index("ix_login_attempts_email", "email", "at"),
        Index("ix_login_attempts_address", "address", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    address: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class SavedView(Base):
    """A user's named filters of their book."""

    __tablename__ = "saved_views"

    view_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("users.user_id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    filters: Mapped[JSONObject] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())


class LatestScore(Base):
    """Each account's latest stored score per target and the one before it (app.ml.history
    keeps it with every score it stores): what the book ranks and compares."""

    __tablename__ = "latest_scores"
    __table_args__ = (
        Index("ix_latest_scores_target", "target", "probability"),
        Index("ix_latest_scores_at_risk", "target", "at_risk", "account_id"),
    )

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_id: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[datetime] = mapped_column(Timestamp)
    probability: Mapped[float] = mapped_column(Double)
    band: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[JSONObject]] = mapped_column(JSONB)
    previous_as_of: Mapped[datetime | None] = mapped_column(Timestamp)
    previous_probability: Mapped[float | None] = mapped_column(Double)
    previous_band: Mapped[str | None] = mapped_column(String(16))
    # Of a churn score: the account's MRR times its probability, what the book ranks by (kept
    # with the score here, and by a trigger when the account's MRR changes); 0 otherwise.
    at_risk: Mapped[float] = mapped_column(Double, server_default=text("0"))


class VocAnswerMonth(Base):
    """Survey answers counted by survey, UTC month ('YYYY-MM') and segment over the last 12
    months and this one (app.voc.monthly recounts them all at each refresh)."""

    __tablename__ = "voc_answer_months"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))
    segment: Mapped[str | None] = mapped_column(String(255))
    n: Mapped[int] = mapped_column(BigInteger)
    ignored: Mapped[int] = mapped_column(BigInteger)
    high: Mapped[int] = mapped_column(BigInteger)
    low: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Double)
    squares: Mapped[float] = mapped_column(Double)


class VocTextMonth(Base):
    """Texts counted by UTC month, segment and sentiment label (NULL: not read yet), with their
    sentiments' sum, as VocAnswerMonth."""

    __tablename__ = "voc_text_months"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    month: Mapped[str] = mapped_column(String(7))
    segment: Mapped[str | None] = mapped_column(String(255))
    label: Mapped[str | None] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[float] = mapped_column(Double)


class VocRefresh(Base):
    """When the kept VoC counts were counted, and the first moment they cover (one row)."""

    __tablename__ = "voc_refreshes"

    counted_at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    since: Mapped[datetime] = mapped_column(Timestamp)


class ClvFit(Base):
    """The purchase-log lifetime-value models (app.value.clv): BG/NBD and Gamma-Gamma fitted on
    every account's purchases up to as_of, with their bootstrap refits. The newest is read."""

    __tablename__ = "clv_fits"

    fit_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    fitted_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    as_of: Mapped[datetime] = mapped_column(Timestamp)
    customers: Mapped[int] = mapped_column(Integer)
    bgnbd: Mapped[JSONObject] = mapped_column(JSONB)
    gamma_gamma: Mapped[JSONObject] = mapped_column(JSONB)
    draws: Mapped[list[Any]] = mapped_column(JSONB)


class UpliftFit(Base):
    """A target's uplift learner as last fitted (app.value.uplift): the holdout arms it read, how
    it did on accounts it never saw, and in words; or why it fitted nothing. The newest per
    target is kept."""

    __tablename__ = "uplift_fits"

    fit_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    target: Mapped[str] = mapped_column(String(64), index=True)
    fitted_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    as_of: Mapped[datetime] = mapped_column(Timestamp)
    horizon_days: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32))
    verdict: Mapped[str] = mapped_column(Text)
    delivered: Mapped[int] = mapped_column(Integer)
    delivered_outcomes: Mapped[int] = mapped_column(Integer)
    delivered_pending: Mapped[int] = mapped_column(Integer)
    held_out: Mapped[int] = mapped_column(Integer)
    held_out_outcomes: Mapped[int] = mapped_column(Integer)
    held_out_pending: Mapped[int] = mapped_column(Integer)
    needed_per_arm: Mapped[int | None] = mapped_column(Integer)
    evaluation: Mapped[JSONObject | None] = mapped_column(JSONB)


class UpliftScore(Base):
    """Each live account's expected uplift as of its fit, read by benefit, highest first."""

    __tablename__ = "uplift_scores"
    __table_args__ = (Index("ix_uplift_scores_benefit", "fit_id", "benefit", "account_id"),)

    fit_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("uplift_fits.fit_id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    uplift: Mapped[float] = mapped_column(Double)
    benefit: Mapped[float] = mapped_column(Double)
    untreated: Mapped[float] = mapped_column(Double)
