"""Retention and revenue metrics (app.value.revenue states each definition)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Kind


class RevenueMonth(BaseModel):
    month: str = Field(description="UTC month, YYYY-MM.", examples=["2026-11"])
    start_mrr: float = Field(description="MRR of the accounts paying just before the month.")
    new_mrr: float = Field(description="End MRR of accounts that had never paid before.")
    reactivation_mrr: float = Field(description="End MRR of accounts back after a churn.")
    expansion_mrr: float
    contraction_mrr: float
    churned_mrr: float = Field(description="Start MRR of accounts with none at the end.")
    end_mrr: float = Field(
        description="start + new + reactivation + expansion - contraction - churned."
    )
    gross_revenue_retention: float | None = Field(
        description="(start - contraction - churned) / start; null without start MRR."
    )
    net_revenue_retention: float | None = Field(
        description="(start + expansion - contraction - churned) / start."
    )
    accounts_start: int = Field(description="Accounts that existed and were not churned.")
    paying_start: int = Field(description="Of them, with MRR.")
    logos_churned: int
    logo_churn_rate: float | None
    purchasers: int = Field(description="Accounts with a purchase event in the month.")
    repeat_purchase_rate: float | None = Field(description="Of them, the share with two or more.")


class CohortRetention(BaseModel):
    cohort: str = Field(description="The UTC month the accounts were first observed, YYYY-MM.")
    accounts: int
    logo_retention: list[float] = Field(
        description="From the cohort's month on: the share not churned at each month's end."
    )
    revenue_retention: list[float | None] = Field(
        description="MRR at each month's end over MRR at the end of the cohort's month."
    )


class RetentionReport(BaseModel):
    period: str = Field(description="month (the only period for now).")
    since: datetime
    until: datetime
    segment: str | None
    months: list[RevenueMonth] = Field(description="Oldest first.")
    cohorts: list[CohortRetention] = Field(
        description="Signup cohorts of the period, oldest first."
    )


class EffectArm(BaseModel):
    accounts: int = Field(description="Accounts whose horizon has passed.")
    outcomes: int = Field(description="Of them, where the target's outcome happened.")
    rate: float | None
    pending: int = Field(description="Accounts whose horizon has not passed yet: not counted.")


class ActionEffect(BaseModel):
    name: str = Field(description="The rule (name and id) or the kind of action.")
    kind: str = Field(
        description="rule: delivered against held out (randomised); action: "
        "accounts acted on with this kind against those held out (not randomised)."
    )
    treated: EffectArm
    held_out: EffectArm
    difference: float | None = Field(description="Treated rate minus held-out rate.")
    interval_95: list[float] | None
    needed_per_arm: int | None = Field(
        description="Accounts per group needed to tell a 30% relative change of the held-out "
        "rate (10% to 7%: 1,355), at 5% two-sided and 80% power."
    )
    enough_evidence: bool
    verdict: str = Field(description="In words: the effect, or how many more accounts it needs.")


class ActionEffects(BaseModel):
    target: str
    horizon_days: int
    rules: list[ActionEffect]
    actions: list[ActionEffect]


class ClvInputs(BaseModel):
    """What an account's lifetime value came from; the fields of its method are set."""

    margin: float = Field(description="CUSTINTEL_CLV_MARGIN: the share of revenue kept.")
    annual_discount_rate: float = Field(description="CUSTINTEL_CLV_DISCOUNT_RATE.")
    horizon_months: int = Field(description="Months of future counted.")
    # subscription
    mrr: float | None = None
    churn_probability: float | None = Field(
        None, description="The latest stored churn score at or before as_of."
    )
    churn_probability_interval: list[float] | None = Field(
        None,
        description="The 95% (Wilson) interval of the churn rate that the model's held-out "
        "accounts scored like this one showed.",
    )
    churn_horizon_days: int | None = None
    monthly_survival: float | None = Field(
        None, description="(1 - churn probability) ^ (30.4375 / horizon days): constant hazard."
    )
    expected_paying_months: float | None = Field(None, description="Of the horizon, undiscounted.")
    model_id: str | None = None
    scored_as_of: datetime | None = None
    # purchases
    purchases: int | None = Field(None, description="Distinct days with a purchase.")
    days_since_first_purchase: float | None = None
    days_since_last_purchase: float | None = None
    mean_repeat_spend: float | None = Field(
        None, description="The mean spend of a purchase day after the first."
    )
    probability_alive: float | None = Field(None, description="BG/NBD: still buying.")
    expected_purchases: float | None = Field(None, description="BG/NBD, over the horizon.")
    expected_spend_per_purchase: float | None = Field(None, description="Gamma-Gamma.")
    fitted_at: datetime | None = None
    fit_customers: int | None = Field(None, description="Customers the models were fitted on.")


class Clv(BaseModel):
    account_id: str
    as_of: datetime
    method: str | None = Field(
        description="`subscription` (MRR and the churn model's hazard), `purchases` (BG/NBD "
        "and Gamma-Gamma on the purchase log), or null when neither applies (see `why`)."
    )
    clv: float | None = Field(
        description="Expected margin over the horizon, discounted to as_of, in MRR's currency."
    )
    interval: list[float] | None = Field(
        description="95% interval: of the churn rate (subscription), or of the fitted "
        "parameters by bootstrap (purchases). It bounds the expectation, not one account's "
        "realised value."
    )
    why: str = Field(description="In words: how it was computed, or why there is none.")
    inputs: ClvInputs


class UpliftShare(BaseModel):
    ranked_by: str = Field(
        description="all: every account; uplift or risk: the share ranked first by it."
    )
    delivered: EffectArm
    held_out: EffectArm
    gain: float | None = Field(
        description="The difference of outcome rates (delivered minus held out) in the "
        "direction that helps: lower churn, higher expansion or advocacy."
    )
    interval_95: list[float] | None


class UpliftEvaluation(BaseModel):
    """Cross-fitted: every account ranked by a learner fitted without it."""

    folds: int
    top_share: float = Field(description="The share of accounts the rankings are compared on.")
    learner: str | None = Field(
        None,
        description="The learner that ranks the accounts: the X-learner of gradient-boosted "
        "trees where it ranked better than the T-learner of logistic regressions by more than "
        "a standard error, else the regressions.",
    )
    selection: dict[str, float] | None = Field(
        None,
        description="Each learner's mean Qini coefficient when fitted on a random half of the "
        "accounts and ranking the other (three draws, both ways; 0: chance).",
    )
    overall: UpliftShare
    top_by_uplift: UpliftShare
    top_by_risk: UpliftShare


class UpliftAccount(BaseModel):
    account_id: str
    name: str | None
    segment: str | None
    owner_email: str | None
    uplift: float = Field(
        description="Expected change of the outcome's probability within the horizon if the "
        "insight is delivered (negative: less likely)."
    )
    benefit: float = Field(
        description="The uplift in the direction that helps (churn: how much less likely); the "
        "ranking's order."
    )
    probability_if_not_acted: float = Field(
        description="The outcome's probability without the insight, by the held-out arm's model."
    )
    risk: float | None = Field(description="The target's latest served score (raw risk).")
    risk_band: str | None


class UpliftRanking(BaseModel):
    target: str
    status: Literal["ranked", "not_enough_evidence", "not_fitted"]
    verdict: str = Field(description="In words: how the ranking did, or what it still needs.")
    fitted_at: datetime | None
    as_of: datetime | None = Field(description="The moment the accounts were ranked as of.")
    horizon_days: int | None
    model_id: str | None = Field(
        description="The target's model whose features and label the learner used (null: the "
        "features the data supports, and the target's default label)."
    )
    delivered: EffectArm | None = Field(
        description="Accounts whose first routed insight of the target was delivered."
    )
    held_out: EffectArm | None = Field(description="Those every matching rule held out.")
    needed_per_arm: int | None
    evaluation: UpliftEvaluation | None
    accounts: list[UpliftAccount] = Field(description="By benefit, highest first.")
    next_cursor: str | None


class UpliftFitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target: Kind = Field(description="The target whose holdouts the learner reads, e.g. churn.")
