"""Scores with reasons: the model's own TreeSHAP contributions, in log-odds, in plain words.

For each account: margin = base_value + the sum of every feature's contribution (LightGBM's
TreeSHAP, pred_contrib, plus the exact contribution of the logistic regression blended with the
trees when there is one, each times its weight: app.ml.Blend, app.ml.linear). The
reasons are the largest contributions that push the score the way it points (above the average
account: what raises it; below: what lowers it), among features a person can act on;
other_contribution sums the rest, so base_value + sum(reasons) + other_contribution = margin.
Listed apart, and inside other_contribution: counter_reasons, the largest actionable
contributions pushing the other way (for a high churn risk, the protective factors), and
context, the largest contributions of what describes who the customer is (plan, segment, region,
age: never a headline reason, since nobody can act on them).
probability = sigmoid(a * margin + b), where a and b are the model's Platt calibration (1 and 0
when calibration did not help). Text is derived from the numbers; it never invents a cause.
"""

from __future__ import annotations

import bisect
import io
import math
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from app.ml import features, registry
from app.ml.catalog import Feature
from app.ml.model import SegmentModel

HEADLINE, COUNTER, CONTEXT = "headline", "counter", "context"


@dataclass
class Reason:
    feature: str
    value: float | str | None
    contribution: float
    text: str
    kind: str = HEADLINE  # HEADLINE, COUNTER or CONTEXT


@dataclass
class Score:
    account_id: str
    target: str
    model_id: str
    segment: str | None
    as_of: datetime
    probability: float
    band: str
    percentile: float
    margin: float
    base_value: float
    other_contribution: float
    reasons: list[Reason]
    counter_reasons: list[Reason]
    context: list[Reason]


# Below this many rows one thread is faster: waking OpenMP threads for a handful of rows costs
# more than the work, and their spinning takes CPU from Postgres and the event loop.
SMALL = 256


def contributions(model: SegmentModel, x: np.ndarray) -> np.ndarray:
    """TreeSHAP contributions per feature, last column the base value; rows sum to the margin."""
    threads = 1 if len(x) < SMALL else 0  # 0: LightGBM's default, every core
    return model.contributions(x, threads=threads)


# pyplot keeps global state: one figure at a time, process-wide (reentrant: the model report
# draws its own figures and calls summary_png while holding it).
PYPLOT = threading.RLock()


def summary_png(
    loaded: registry.Loaded, frame: features.Frame, *, segment: str | None = None
) -> bytes:
    """The global picture as a PNG: shap's beeswarm of the TreeSHAP contributions each row gets
    from the model that serves it (the same values the reasons come from), over the frame's rows
    of `segment`, or over every row when segment is None."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import shap

    rows = [i for i, s in enumerate(frame.segments) if segment is None or s == segment]
    x = loaded.matrix(frame)[rows]
    contrib = np.zeros((len(rows), len(loaded.features) + 1))
    for name, ks in loaded.served([frame.segments[i] for i in rows]).items():
        contrib[ks] = contributions(loaded.models[name], x[ks])
    explanation = shap.Explanation(
        values=contrib[:, :-1],
        base_values=contrib[:, -1],
        data=x,
        feature_names=[_literal(loaded.catalog.feature(f).words) for f in loaded.features],
    )
    with PYPLOT:
        shap.plots.beeswarm(explanation, max_display=15, show=False)
        figure = plt.gcf()
        title = f"{loaded.target}: {segment or 'all segments'} ({len(rows):,} accounts)"
        figure.suptitle(_literal(title))
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(figure)
    return buffer.getvalue()


def _literal(text: str) -> str:
    """Text matplotlib draws as written: a pair of dollar signs in a client's trait key or
    segment name would otherwise be parsed as mathtext (and fail to parse, or render as maths)."""
    return text.replace("$", r"\$")


def score_frame(loaded: registry.Loaded, frame: features.Frame, *, top: int) -> list[Score]:
    """Scores of every row of a frame computed with loaded.catalog. Margins, probabilities,
    which contributions may be said as reasons and their order are computed for all rows at
    once (matrices); only the picking of reasons and their words are made row by row, and a
    reason's words are made once per feature, value, segment and direction."""
    x = loaded.matrix(frame)
    out: list[Score | None] = [None] * len(frame.keys)
    words: dict[tuple[int, Any, str | None, bool], str] = {}
    for name, rows in loaded.served(frame.segments).items():
        model = loaded.models[name]
        values = x[rows]
        contrib = contributions(model, values)
        base, parts = contrib[:, -1], contrib[:, :-1]
        margins = base + parts.sum(axis=1)
        probabilities = model.probability(margins)
        segments = [frame.segments[i] for i in rows]
        typical = np.vstack([loaded.typical_for(s) for s in segments])
        # A contribution whose sign is against what the catalog says of the account's value
        # (more use "raises churn risk", an NPS that rose does too) comes from a missing
        # value's share of the baseline or from an interaction, not from the value: said as a
        # reason it would mislead. It stays in other_contribution, as do zeros.
        with np.errstate(invalid="ignore"):
            against = loaded.directions * (values - typical) * parts < 0
        strength = np.where((parts != 0) & ~against, np.abs(parts), 0.0)
        order = np.argsort(-strength, axis=1, kind="stable")  # strongest first, ties by column
        pointing = np.where(parts.sum(axis=1) > 0, 1.0, -1.0)
        along = parts * pointing[:, None] > 0
        for n, i in enumerate(rows):
            out[i] = _score(
                loaded,
                frame,
                i,
                values[n],
                parts[n],
                order[n],
                strength[n],
                along[n],
                float(base[n]),
                float(margins[n]),
                float(probabilities[n]),
                top,
                words,
            )
    return [s for s in out if s is not None]


def _score(
    loaded: registry.Loaded,
    frame: features.Frame,
    i: int,
    row: np.ndarray,
    parts: np.ndarray,
    order: np.ndarray,
    strength: np.ndarray,
    along: np.ndarray,
    base: float,
    margin: float,
    probability: float,
    top: int,
    words: dict[tuple[int, Any, str | None, bool], str],
) -> Score:
    account_id, as_of = frame.keys[i]
    segment = frame.segments[i]
    stats = loaded.stats_for(segment)
    high, medium = stats.thresholds
    band = "high" if probability >= high else "medium" if probability >= medium else "low"
    reference = stats.reference
    percentile = (
        100.0 * bisect.bisect_right(reference, probability) / len(reference) if reference else 50.0
    )
    levels = loaded.levels
    values, contributions_ = row.tolist(), parts.tolist()
    lists: dict[str, list[Reason]] = {}
    picked = _pick(
        order.tolist(),
        strength.tolist(),
        along.tolist(),
        loaded.actionable_list,
        loaded.families,
        top,
    )
    for kind, columns in picked.items():
        lists[kind] = []
        for j in columns:
            name, contribution = loaded.features[j], contributions_[j]
            value = _value(name, values[j], levels)
            key = (j, value, segment, contribution > 0)
            text = words.get(key)
            if text is None:
                typical = _value(name, stats.typical.get(name, math.nan), levels)
                text = words[key] = describe(
                    loaded.catalog.feature(name),
                    value,
                    typical,
                    segment,
                    contribution=contribution,
                    target=loaded.target,
                )
            lists[kind].append(Reason(name, value, contribution, text, kind))
    reasons = lists[HEADLINE]
    other = float(parts.sum() - sum(r.contribution for r in reasons))
    return Score(
        account_id=account_id,
        target=loaded.target,
        model_id=loaded.model_id,
        segment=segment,
        as_of=as_of,
        probability=probability,
        band=band,
        percentile=round(percentile, 1),
        margin=margin,
        base_value=base,
        other_contribution=other,
        reasons=reasons,
        counter_reasons=lists[COUNTER],
        context=lists[CONTEXT],
    )


def _pick(
    order: list[int],
    strength: list[float],
    along: list[bool],
    actionable: list[bool],
    families: list[str],
    top: int,
) -> dict[str, list[int]]:
    """The columns said, strongest first (`order`; a strength of 0: not to be said), each to
    its list: headline (actionable, along the score's direction), counter (actionable, against
    it), context (not actionable); one per family of near-duplicates ("Failed payments in the
    last 90 days", "Payment failed in the last 30 days" take one slot, the stronger's), `top`
    per list."""
    picked: dict[str, list[int]] = {HEADLINE: [], COUNTER: [], CONTEXT: []}
    seen: dict[str, set[str]] = {HEADLINE: set(), COUNTER: set(), CONTEXT: set()}
    full = 0
    for j in order:
        if strength[j] == 0 or full == len(picked):
            break
        kind = (HEADLINE if along[j] else COUNTER) if actionable[j] else CONTEXT
        if len(picked[kind]) == top or families[j] in seen[kind]:
            continue
        seen[kind].add(families[j])
        picked[kind].append(j)
        full += len(picked[kind]) == top
    return picked


def _value(name: str, raw: float, levels: dict[str, tuple[str, ...]]) -> float | str | None:
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if name in levels:
        code = int(raw)
        return levels[name][code] if 0 <= code < len(levels[name]) else None
    return float(raw)


OUTCOME_WORDS = {
    "churn": "churn risk",
    "expansion": "the chance of expansion",
    "advocacy": "the chance of advocacy",
}


def describe(
    feature: Feature,
    value: Any,
    typical: Any,
    segment: str | None,
    *,
    contribution: float,
    target: str,
) -> str:
    """E.g. "Login in the last 30 days: 4 (typical for enterprise: 37); raises churn risk", "No
    payment failed in the last year (typical: 40 days ago); lowers churn risk": the direction is
    the sign of the feature's own contribution to this score."""
    where = f"typical for {segment}" if segment else "typical"
    way = "raises" if contribution > 0 else "lowers"
    outcome = OUTCOME_WORDS.get(target, f"the {target} score")
    return f"{feature.stated(value)} ({where}: {feature.show(typical)}); {way} {outcome}"


@dataclass(frozen=True, slots=True)
class Change:
    """How one feature's contribution to the score moved between two moments, in log-odds."""

    feature: str
    before: float | str | None
    now: float | str | None
    contribution_before: float
    contribution_now: float
    text: str

    @property
    def moved(self) -> float:
        return self.contribution_now - self.contribution_before


def changes(loaded: registry.Loaded, frame: features.Frame, *, top: int) -> list[Change]:
    """The features whose contributions moved most between the frame's two rows (an account at
    an earlier moment, then at a later one), both by the model that serves the later row, so
    that the moves add up to the change of its margin. Each says its values at both moments:
    "Support tickets still open rose from 2 to 15: +1.30"."""
    x = loaded.matrix(frame)
    _, model = loaded.serving(frame.segments[1])
    parts = contributions(model, x)[:, :-1]
    moved = parts[1] - parts[0]
    levels = loaded.levels
    out = []
    for j in np.argsort(-np.abs(moved), kind="stable")[:top].tolist():
        if moved[j] == 0:
            break
        name = loaded.features[j]
        feature = loaded.catalog.feature(name)
        before, now = _value(name, x[0, j], levels), _value(name, x[1, j], levels)
        said = f"{_moved_words(feature, before, now)}: {moved[j]:+.2f}"
        out.append(Change(name, before, now, float(parts[0, j]), float(parts[1, j]), said))
    return out


def _moved_words(feature: Feature, before: float | str | None, now: float | str | None) -> str:
    if isinstance(before, float | int) and isinstance(now, float | int):
        if math.isclose(before, now):
            return f"{feature.words}: {feature.show(now)}, unchanged"
        way = "rose" if now > before else "fell"
        return f"{feature.words} {way} from {feature.show(before)} to {feature.show(now)}"
    if before == now:
        return f"{feature.words}: {feature.show(now)}, unchanged"
    return f"{feature.words} changed from {feature.show(before)} to {feature.show(now)}"
