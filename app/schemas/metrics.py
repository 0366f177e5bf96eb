"""Retention and revenue metrics (app.value.revenue states each definition)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


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
