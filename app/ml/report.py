"""The model report: one self-contained HTML page (plots embedded as PNG) that shows what a model
is, how it was measured at training, and, once outcomes have matured, how it really did.

Plots: ROC curve and lift by decile on the held-out rows, calibration (held out, and realized
when there is any), and shap's beeswarm of the model's own TreeSHAP contributions overall and
for each segment with a model of its own, over live accounts as of the model's last snapshot.
"""

from __future__ import annotations

import asyncio
import base64
import html
import io
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson

from app.ml import datasets, features, performance, registry, scoring
from app.ml.model import GLOBAL
from app.platform import errors
from app.platform.jsonbody import JSONObject
from app.schemas.metrics import ActionEffects
from app.value import effects, uplift

SAMPLE = 1000  # accounts in the SHAP summaries


async def render(conn: asyncpg.Connection, *, model_id: str, now: datetime) -> str:
    row = await conn.fetchrow(
        "SELECT target, status, status_reason, replaced_model_id, created_at, as_of, "
        "horizon_days, label, summary, path FROM models WHERE model_id = $1",
        model_id,
    )
    if row is None:
        raise errors.NotFound(f"No model {model_id!r}.")
    loaded = await asyncio.to_thread(registry.load, Path(row["path"]))
    window = loaded.manifest.get("window", {})
    at = datetime.fromisoformat(window.get("last_snapshot") or row["as_of"].isoformat())
    exclude = datasets.excluded_outcomes(row["target"])
    accounts = (await datasets.population(conn, at=at, exclude_kinds=exclude))[:SAMPLE]
    frame = await features.compute(conn, loaded.catalog, [(a, at) for a in accounts])
    realized = await performance.realized(conn, model_id=model_id, now=now, catalog=loaded.catalog)
    images = await asyncio.to_thread(_plots, loaded, frame, realized)
    drivers = await asyncio.to_thread(_drivers, loaded, frame)
    acted = await effects.effects(
        conn, target=row["target"], horizon_days=row["horizon_days"], now=now
    )
    helped = await uplift.verdict_of(conn, row["target"])
    return _page(model_id, row, loaded, realized, images, drivers, acted, helped)


def _drivers(loaded: registry.Loaded, frame: features.Frame, top: int = 3) -> list[str]:
    """The features with the largest mean absolute contribution over the frame's accounts
    (global model), each with the way it pushes the score: the sign of the correlation of its
    values with its contributions."""
    x = loaded.matrix(frame)
    if not len(x):
        return []
    parts = scoring.contributions(loaded.models[GLOBAL], x)[:, :-1]
    outcome = scoring.OUTCOME_WORDS.get(loaded.target, f"the {loaded.target} score")
    levels = loaded.catalog.levels()
    lines = []
    for j in np.argsort(-np.abs(parts).mean(axis=0), kind="stable")[:top]:
        name = loaded.features[j]
        words = loaded.catalog.feature(name).words
        known = ~np.isnan(x[:, j])
        values, pushes = x[known, j], parts[known, j]
        if name in levels or len(values) < 3 or values.std() == 0 or pushes.std() == 0:
            lines.append(f"{words} (its effect depends on the value)")
            continue
        way = "raise" if np.corrcoef(values, pushes)[0, 1] > 0 else "lower"
        lines.append(f"{words}: higher values {way} {outcome}")
    return lines


def _summary(row: asyncpg.Record, manifest: registry.Manifest, drivers: list[str]) -> str:
    """What a customer-success lead needs first, in words."""
    metrics = manifest["metrics"]
    target, horizon = row["target"], row["horizon_days"]
    happened = datasets.happened(target)
    parts = []
    lift, rate = (manifest.get("curves") or {}).get("lift"), metrics.get("positive_rate")
    if lift and rate:
        parts.append(
            f"Of the 10% of accounts this model puts highest, {lift[0] * rate:.0%} {happened} "
            f"within {horizon} days, against {rate:.0%} overall (measured on "
            f"{metrics.get('n_valid', 0):,} held-out accounts and moments it never learnt from)."
        )
    auc, interval = metrics.get("auc"), metrics.get("auc_interval")
    peers = {k: v for k, v in (metrics.get("baselines") or {}).items() if v is not None}
    if auc is not None:
        spread = f" (95% interval {interval[0]:.2f} to {interval[1]:.2f})" if interval else ""
        text = f"It ranks accounts with an AUC of {auc:.2f}{spread}"
        if peers:
            names = {
                "logistic_regression": "a logistic regression on the same features",
                "recency": "days since the last activity",
            }
            text += "; on the same rows " + ", ".join(
                f"{names.get(k, k)} reaches {v:.2f}" for k, v in sorted(peers.items())
            )
            best = max(peers.values())
            text += (
                ": the model is ahead."
                if auc > best
                else f": the model is {best - auc:.2f} behind the best of them."
            )
        parts.append(text if text.endswith(".") else text + ".")
    if drivers:
        parts.append("What drives it most: " + "; ".join(drivers) + ".")
    body = " ".join(html.escape(p) for p in parts)
    return f"<h2>In short</h2>\n<p>{body}</p>"


def _plots(
    loaded: registry.Loaded, frame: features.Frame, realized: performance.Realized
) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    manifest = loaded.manifest
    curves = manifest.get("curves") or {}
    images: dict[str, str] = {}
    with scoring.PYPLOT:
        if curves.get("roc"):
            fig, ax = plt.subplots(figsize=(4.5, 4))
            fpr, tpr = zip(*curves["roc"], strict=True)
            ax.plot(fpr, tpr, label=f"held out (AUC {manifest['metrics']['auc']:.3f})")
            ax.plot([0, 1], [0, 1], linestyle=":", color="grey")
            ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
            ax.legend(loc="lower right")
            images["roc"] = _png(fig, plt)
        if curves.get("lift"):
            fig, ax = plt.subplots(figsize=(4.5, 4))
            ax.bar(range(1, len(curves["lift"]) + 1), curves["lift"])
            ax.axhline(1, linestyle=":", color="grey")
            ax.set(xlabel="decile (highest scores first)", ylabel="lift", title="Lift by decile")
            images["lift"] = _png(fig, plt)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        held = manifest.get("reliability") or []
        ax.plot(
            [b["predicted"] for b in held], [b["observed"] for b in held], "o-", label="held out"
        )
        matured = realized["overall"]["calibration"]
        if matured:
            ax.plot(
                [b["predicted"] for b in matured],
                [b["observed"] for b in matured],
                "s-",
                label=f"realized ({realized['overall']['n']:,} scores)",
            )
        top = max(
            [b["predicted"] for b in held + matured]
            + [b["observed"] for b in held + matured]
            + [0.05]
        )
        ax.plot([0, top], [0, top], linestyle=":", color="grey")
        ax.set(xlabel="mean predicted", ylabel="observed", title="Calibration by decile")
        ax.legend(loc="upper left")
        images["calibration"] = _png(fig, plt)
    if frame.keys:
        images["shap"] = _b64(scoring.summary_png(loaded, frame))
        for segment in sorted({s for s in frame.segments if s}):
            if loaded.serving(segment)[0] != GLOBAL:
                images[f"shap {segment}"] = _b64(
                    scoring.summary_png(loaded, frame, segment=segment)
                )
    return images


def _png(fig: Any, plt: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return _b64(buffer.getvalue())


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _effects(acted: ActionEffects) -> str:
    found = acted.rules + acted.actions
    if not found:
        return "<p class=note>No routing rule has held out accounts and no action is logged.</p>"
    return _table(
        ["rule or action", "acted on", "rate", "held out", "rate", "in words"],
        [
            [
                e.name,
                e.treated.accounts,
                e.treated.rate,
                e.held_out.accounts,
                e.held_out.rate,
                e.verdict,
            ]
            for e in found
        ],
    )


def _img(images: dict[str, str], key: str, alt: str) -> str:
    if key not in images:
        return f"<p class=note>{html.escape(alt)}: not available for this model.</p>"
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{images[key]}">'


def _page(
    model_id: str,
    row: asyncpg.Record,
    loaded: registry.Loaded,
    realized: performance.Realized,
    images: dict[str, str],
    drivers: list[str],
    acted: ActionEffects,
    helped: str,
) -> str:
    manifest = loaded.manifest
    overall = realized["overall"]
    window = manifest.get("window", {})
    label = row["label"] if isinstance(row["label"], dict) else orjson.loads(row["label"])
    compared = _compared(manifest["metrics"], overall)
    segments = _segments(manifest, realized)
    importance = _table(
        ["feature", "in words", "share of gain"],
        [
            [f["name"], loaded.catalog.feature(f["name"]).words, f["importance"]]
            for f in manifest["importance"]
        ],
    )
    reasons = _table(
        ["reason that led", "label came true", "share", "did not", "share"],
        [
            [
                r["text"],
                r["happened"],
                r["happened_share"],
                r["did_not_happen"],
                r["did_not_happen_share"],
            ]
            for r in realized["preceding_reasons"][:15]
        ],
    )
    shap_segments = "".join(
        f"<figure>{_img(images, key, key)}</figure>" for key in images if key.startswith("shap ")
    )
    matured = (
        f"{overall['n']:,} matured scores (as_of before {realized['matured_before'][:10]})"
        if overall["n"]
        else "no matured scores yet: realized performance appears once scores are older than "
        f"the horizon ({row['horizon_days']} days)"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>custintel model {html.escape(model_id)}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }}
table {{ border-collapse: collapse; margin: .5rem 0 1.5rem; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: left; }}
figure {{ display: inline-block; margin: .5rem; }} img {{ max-width: 100%; }}
.note {{ color: #666; }}
</style></head><body>
<h1>{html.escape(row["target"])} model {html.escape(model_id)}</h1>
{_summary(row, manifest, drivers)}
<h2>The model</h2>
<p>Status <b>{html.escape(row["status"])}</b>{
        f"; {html.escape(row['status_reason'])}" if row.get("status_reason") else ""
    }{
        f"; replaced {html.escape(row['replaced_model_id'])}"
        if row.get("replaced_model_id")
        else ""
    }.
Label {html.escape(orjson.dumps(label).decode())}, horizon {row["horizon_days"]} days. Trained
on data up to {_fmt(window.get("as_of"))}, snapshots {_fmt(window.get("first_snapshot"))} to
{_fmt(window.get("last_snapshot"))} ({len(window.get("snapshots", []))} snapshots,
{_fmt(manifest["rows"].get("total"))} rows). Libraries:
{html.escape(", ".join(f"{k} {v}" for k, v in manifest["libraries"].items()))}.</p>
<h2>Validation and realized performance</h2>
<p class=note>{html.escape(matured)}.</p>
{compared}
<figure>{_img(images, "roc", "ROC curve")}</figure>
<figure>{_img(images, "calibration", "Calibration")}</figure>
<figure>{_img(images, "lift", "Lift by decile")}</figure>
<h2>Segments</h2>
{segments}
<h2>What drives the scores</h2>
<p class=note>shap's beeswarm of the TreeSHAP contributions (log-odds) each account gets from
the model that serves its segment, over up to {SAMPLE:,} live accounts as of the last snapshot;
then each segment with a model of its own.</p>
<figure>{_img(images, "shap", "SHAP summary, all segments")}</figure>
{shap_segments}
<h2>Reasons that preceded the outcome</h2>
{reasons if realized["preceding_reasons"] else "<p class=note>None matured yet.</p>"}
<h2>Which actions work</h2>
<p>Per routing rule, the accounts it delivered to against those it held out (drawn at random);
per kind of action logged, the accounts acted on against every held-out account (who acts is not
random: a comparison to watch, not proof). Outcomes within {row["horizon_days"]} days.</p>
{_effects(acted)}
<h2>Whom acting helps most</h2>
<p class=note>Uplift learnt from the routing holdouts (GET /v1/actions/uplift ranks the
accounts).</p>
<p>{html.escape(helped)}</p>
<h2>Features</h2>
{importance}
</body></html>
"""


def _compared(metrics: JSONObject, overall: performance.Measures) -> str:
    """Held-out and realized measures of the model, and the baselines' on the same rows."""
    return _table(
        ["", "AUC", "Brier", "lift in top 10%", "positive rate", "rows"],
        [
            [
                "held out at training",
                metrics.get("auc"),
                metrics.get("brier"),
                metrics.get("lift_at_10"),
                metrics.get("positive_rate"),
                metrics.get("n_valid"),
            ],
            [
                "realized (matured scores)",
                overall["auc"],
                overall["brier"],
                overall["lift_at_10"],
                overall["positive_rate"],
                overall["n"],
            ],
            *(
                [
                    f"baseline: {name.replace('_', ' ')}, same held-out rows",
                    auc,
                    None,
                    None,
                    None,
                    metrics.get("n_valid"),
                ]
                for name, auc in sorted((metrics.get("baselines") or {}).items())
            ),
        ],
    )


def _segments(manifest: registry.Manifest, realized: performance.Realized) -> str:
    """Which model serves each segment, and how each ranked its held-out and matured rows."""
    return _table(
        ["segment", "served by", "held-out AUC, own model", "held-out AUC, global", "realized AUC"],
        [
            [
                name,
                entry.get("model"),
                (entry.get("segment_holdout") or {}).get("auc"),
                (entry.get("global_holdout") or {}).get("auc"),
                realized["segments"][name]["auc"] if name in realized["segments"] else None,
            ]
            for name, entry in sorted(manifest["segments"].items())
        ],
    )
