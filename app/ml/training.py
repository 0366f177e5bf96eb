"""Training: LightGBM binary models, per segment where the data supports it, with parameters
chosen for the data at hand, calibrated out of fold, measured out of time and out of account.

CPU-bound throughout: run it in a worker process, never on the event loop.

How a model is made from a training set:
- the search (app.ml.search): folds out of time and out of account, candidate trees, column
  sets, and the choice between the trees, a logistic regression and their blend;
- estimate: the latest snapshots' two blocks (as many snapshots each) each measured with what
  the other block's search chose (cross-fitting), with a fixed number of rounds, so no held-out
  row chose the parameters or the rounds it is measured with; with one snapshot, the last
  account group measured with what the others chose. The baselines (app.ml.baselines) are
  fitted and measured on the same rows. These are the recorded metrics, with their counts and a
  95% interval. The served model is chosen on every evaluated row: both blocks, or with one
  snapshot every account group, each learning from the others;
- the served model is refit on every row, the latest included, with the chosen parameters and
  the rounds scaled to the extra rows; its calibration, probability = sigmoid(a * margin + b)
  (Platt scaling of the log-odds), is fitted on the folds' out-of-fold margins and kept where it
  lowers their Brier score;
- a segment with enough rows and positives also gets its own model, kept when it does better
  than the global model on that segment's evaluation rows of the latest fold by more than the
  paired error of the difference (the comparison is recorded either way);
- where the catalog knows which way a feature pushes the target, the trees are constrained to
  that direction (`Options.monotone`), so a reason never says that, for instance, more active
  days raise churn risk because of noise.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from sklearn.metrics import (
    brier_score_loss,
)

from app.ml import baselines, linear, psi, search
from app.ml.datasets import TrainingSet
from app.ml.metrics import (
    auc_difference_error,
    auc_interval,
    auc_within,
    curves,
    metrics,
    reliability,
)
from app.ml.model import GLOBAL, SegmentModel, SegmentStats, Trained
from app.ml.search import Options as Options  # the options of a training
from app.platform import errors
from app.platform.jsonbody import JSONObject

# The stages of a training in order, each with about the share of a training's time it took
# on the simulator's 20,000 accounts (search 54 s, estimate 9, refit 4, segments 15, bands 1,
# baselines 3 of 87): how far along a job says it is.
STAGES = {
    "search": (0.0, 0.62),
    "estimate": (0.62, 0.72),
    "refit": (0.72, 0.76),
    "segments": (0.76, 0.94),
    "bands": (0.94, 0.96),
    "baselines": (0.96, 1.0),
}


class Stages:
    """Where a training is, told to `Options.report` as it goes, and the seconds each stage
    took (the manifest's `timings`)."""

    def __init__(self, report: Callable[[str, int, int], None]) -> None:
        self.report = report
        self.started = self.mark = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.name: str | None = None
        self.done = self.total = 0

    def enter(self, name: str, total: int = 1) -> None:
        self._close()
        self.name, self.done, self.total = name, 0, max(1, total)
        self.report(name, 0, self.total)

    def step(self) -> None:
        self.done = min(self.done + 1, self.total)
        if self.name is not None:
            self.report(self.name, self.done, self.total)

    def finish(self) -> dict[str, float]:
        self._close()
        self.timings["train"] = time.perf_counter() - self.started
        return {k: round(v, 3) for k, v in self.timings.items()}

    def _close(self) -> None:
        if self.name is None:  # what comes before the first stage (the folds) counts in it
            return
        now = time.perf_counter()
        self.timings[self.name] = self.timings.get(self.name, 0.0) + now - self.mark
        self.mark = now


@dataclass
class _Run:
    """What every stage of one training reads."""

    ts: TrainingSet
    options: Options
    stages: Stages
    y: np.ndarray
    x: np.ndarray
    names: list[str]
    categorical: list[str]
    hashes: np.ndarray  # each row's account, hashed (its fold)
    snapshots: np.ndarray
    fitter: search.Fitter


@dataclass
class _Searched:
    """What the search chose: for each block of the estimate, its folds and the choice made on
    the other block (`plans`), and the choice the served model is made with."""

    searched: list[search.Fold]
    estimate: list[search.Fold]
    crossed: bool
    plans: list[tuple[list[search.Fold], search.Choice]]
    chosen: search.Choice
    found: JSONObject


def train(ts: TrainingSet, options: Options) -> Trained:
    run, searched, estimate = _prepare(ts, options)
    choice = _search(run, searched, estimate)
    y, stages = run.y, run.stages
    cols = _served_columns(run, choice)
    restricted = cols != choice.chosen.cols  # then every estimate uses the served columns
    xs = run.x[:, [run.names.index(c) for c in cols]]
    # Each plan's evaluated rows (a block), and all of them: the held-out rows.
    blocks = [np.logical_or.reduce([fold.evaluate for fold in folds]) for folds, _ in choice.plans]
    held = np.logical_or.reduce(blocks)
    est_margin, est_p = _estimate(run, choice, cols, blocks, restricted=restricted)
    # The served model: every row, the rounds scaled to them; calibrated on out-of-fold margins
    # (the search's, and the estimate's where the search has none).
    chosen = choice.chosen
    rounds = chosen.rounds_for(len(y))
    stages.enter("refit")
    everything = np.ones(len(y), dtype=bool)
    served = run.fitter.fit(chosen.candidate, cols, everything, rounds=rounds, blend=chosen.blend)
    oof = np.full(len(y), np.nan) if restricted or not searched else chosen.oof.copy()
    fill = held & np.isnan(oof)
    oof[fill] = est_margin[fill]
    known = ~np.isnan(oof)
    models = {GLOBAL: replace(served, calibration=_calibration(oof[known], y[known]))}
    segments = np.array([s or "" for s in ts.frame.segments])
    report = _segment_models(
        run, choice, cols, segments, models, held=held, est_p=est_p, rounds=rounds
    )
    stages.enter("bands")
    p = np.empty(len(y))
    served_by = np.array([s if s in models else GLOBAL for s in segments])
    for name, model in models.items():
        rows_of = served_by == name
        if rows_of.any():
            p[rows_of] = model.probability(model.margin(xs[rows_of]))
    # Bands and percentiles place a score among the served model's scores of the latest
    # snapshot, the moment most like the one scored next. Over every snapshot, a world whose
    # base rate moves (a cohort that has mostly expanded already) put 4% of the simulator's
    # enterprise accounts in the expansion `high` band where the design is 10%. A segment
    # with too few rows there is ranked among all of its rows.
    latest = run.snapshots == run.snapshots.max()
    stats = {GLOBAL: _stats(_ranked(p, latest), xs, cols, options)}
    for segment in sorted(str(s) for s in set(segments) - {""}):
        rows_of = segments == segment
        stats[segment] = _stats(_ranked(p[rows_of], latest[rows_of]), xs[rows_of], cols, options)
    choice.found["rounds"] = {
        "searched": chosen.rounds,
        "estimate": [c.rounds_for(f.train.sum()) for folds, c in choice.plans for f in folds],
        "served": rounds,
    }
    return _trained(
        run, choice, cols, xs, models, stats, report, held=held, est_p=est_p, p=p, latest=latest
    )


def _prepare(
    ts: TrainingSet, options: Options
) -> tuple[_Run, list[search.Fold], list[search.Fold]]:
    """The training's rows, its folds (the search's and the estimate's, each thinned to at most
    `search_rows` rows to learn from) and its fitter; refuses a set it cannot measure."""
    stages = Stages(options.report)
    y = ts.labels
    if y.sum() == 0 or y.sum() == len(y):
        kind = "no positive" if y.sum() == 0 else "only positive"
        raise errors.InvalidPayload(
            f"The training set has {kind} examples ({len(y)} rows): the label never "
            f"{'happens' if y.sum() == 0 else 'fails to happen'} in the horizon. Widen the "
            "horizon, move as_of, or check the label."
        )
    names = list(ts.frame.names)
    categorical = [n for n in ts.frame.catalog.levels() if n in names]
    x = ts.frame.matrix
    # An account is in every snapshot: hash it once.
    hash_of = {a: search.hash_account(a) for a in dict.fromkeys(a for a, _ in ts.frame.keys)}
    hashes = np.array([hash_of[a] for a, _ in ts.frame.keys], dtype=np.int64)
    search_folds, estimate_folds = search.make_folds(ts, options, hashes)
    # Every fold's models learn from at most about search_rows rows: on a large customer base
    # an estimate of the procedure on fewer rows is a little pessimistic, where full-size fits
    # per fold (and per segment) cost minutes. The served model learns from every row.
    limit = options.search_rows
    searched = [search.thinned(f, y, hashes, limit) for f in search_folds if search.usable(f, y)]
    estimate = [search.thinned(f, y, hashes, limit) for f in estimate_folds if search.usable(f, y)]
    held = np.zeros(len(y), dtype=bool)
    for fold in estimate:
        held |= fold.evaluate
    if not estimate or not 0 < y[held].sum() < held.sum():
        raise errors.InvalidPayload(
            "Too few positive examples to train and measure out of time and out of account: "
            f"{int(y.sum())} positives in {len(y)} rows, {int(y[held].sum())} of them among the "
            "latest snapshots' held-out accounts. Widen the horizon or train on a longer history."
        )
    snapshots = np.asarray(ts.snapshot_of_row)
    fitter = search.Fitter(x, y, names, categorical, options, hashes, snapshots)
    run = _Run(ts, options, stages, y, x, names, categorical, hashes, snapshots, fitter)
    return run, searched, estimate


def _search(run: _Run, searched: list[search.Fold], estimate: list[search.Fold]) -> _Searched:
    """The parameters, columns and blend, chosen for each block of the estimate by the other
    block's search, and for the served model on every evaluated row."""
    fitter, stages, x, names = run.fitter, run.stages, run.x, run.names
    distinct = _distinct(x, names)
    # The search tries the compact columns alone too, where they are fewer than the others
    # that vary (app.ml.catalog: a few thousand rows cannot afford a hundred per-type columns).
    columns = {"full": distinct}
    compact = [c for c in distinct if run.ts.frame.catalog.feature(c).compact]
    if compact and _varying(x, names, compact) != _varying(x, names, distinct):
        columns = {"compact": compact} | columns
    # Two blocks of time (the usual case): each block's search chooses for the other block's
    # estimate (cross-fitting, as nested cross-validation does), so every row of both is
    # measured by a procedure that did not choose on it, and the estimate has twice the rows
    # and positives it had with the later block alone (the simulator's: 63 positives, an
    # interval 0.14 wide, within which trees and a regression swapped places between blocks).
    # The served model is chosen on both blocks. With one block (one snapshot: accounts split
    # instead) the earlier groups choose for the last; without an earlier usable fold, the
    # search is scored on the estimate's own rows: optimistic.
    crossed = bool(searched) and searched[0].snapshots != estimate[0].snapshots
    stages.enter("search", len(search.CANDIDATES) * len(columns) * (2 if searched else 1))
    first = search.trials(fitter, searched or estimate, columns, tried_one=stages.step)
    if crossed:
        second = search.trials(fitter, estimate, columns, tried_one=stages.step)
        early, late = (
            search.choose(fitter, searched, columns, first),
            search.choose(fitter, estimate, columns, second),
        )
        chosen = search.choose(
            fitter, searched + estimate, columns, search.pooled(fitter, first, second)
        )
        plans = [(estimate, early), (searched, late)]
    else:
        early = search.choose(fitter, searched or estimate, columns, first)
        plans = [(estimate, early)]
        # One moment: the served model is chosen on every group, each measured by models that
        # learnt from all the others (plain k-fold), as it will learn from all of them; the
        # search above, on fewer rows and without the last group, chose for the estimate only.
        y, options, hashes, limit = run.y, run.options, run.hashes, run.options.search_rows
        every = [search.thinned(f, y, hashes, limit) for f in search.groups(hashes, options, y)]
        chosen = (
            search.choose(
                fitter,
                every,
                columns,
                search.trials(fitter, every, columns, tried_one=stages.step),
            )
            if searched and len(every) == options.folds
            else early
        )
    found = chosen.record
    found["scored_on"] = (
        "both blocks, each choosing for the other"
        if crossed
        else "every group, each learning from the others; the estimate's by the earlier groups"
        if chosen is not plans[0][1]
        else "earlier folds"
        if searched
        else "the held-out rows (optimistic)"
    )
    if crossed:
        found["blocks"] = [
            {k: choice.record[k] for k in ("chosen", "columns", "blend")}
            | {"measured": [f.describe(run.ts, run.y) for f in folds]}
            for folds, choice in plans
        ]
    return _Searched(searched, estimate, crossed, plans, chosen, found)


def _served_columns(run: _Run, choice: _Searched) -> list[str]:
    """The chosen columns, or with `max_features` the most important of them to a model of the
    latest estimate fold."""
    chosen, cols = choice.chosen, choice.chosen.cols
    if not run.options.max_features or run.options.max_features >= len(cols):
        return cols
    latest = choice.estimate[-1]
    probe = run.fitter.fit(
        chosen.candidate, cols, latest.train, rounds=chosen.rounds_for(latest.train.sum())
    )
    top = np.argsort(-probe.booster.feature_importance("gain"), kind="stable")[
        : run.options.max_features
    ]
    return [c for c in run.names if c in {cols[j] for j in top}]


def _out_of_fold(
    run: _Run,
    choice: _Searched,
    cols: list[str],
    rows: np.ndarray,
    *,
    restricted: bool,
    step: Callable[[], None] = lambda: None,
) -> np.ndarray:
    """Margins of `rows`' held-out rows from models that never saw their accounts, each block's
    with the choice that was not made on it."""
    y = run.y
    result = np.full(len(y), np.nan)
    for folds, made in choice.plans:
        use = cols if restricted else made.cols
        for fold in folds:
            train_rows, evaluated = fold.train & rows, fold.evaluate & rows
            if evaluated.any() and 0 < y[train_rows].sum() < train_rows.sum():
                model = run.fitter.fit(
                    made.candidate,
                    use,
                    train_rows,
                    rounds=made.rounds_for(fold.train.sum()),
                    blend=made.blend,
                )
                result[evaluated] = run.fitter.margin(model, use, evaluated)
            step()
    return result


def _estimate(
    run: _Run, choice: _Searched, cols: list[str], blocks: list[np.ndarray], *, restricted: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The honest estimate: margins and probabilities of rows that neither chose the parameters
    nor the rounds. Each block's probabilities are calibrated on the margins its choice was made
    on, unless those were of other columns or of these very rows (its AUC does not depend on
    it). Each block's own held-out AUC goes into the search's record."""
    y, snapshots = run.y, run.snapshots
    run.stages.enter("estimate", sum(len(folds) for folds, _ in choice.plans))
    everything = np.ones(len(y), dtype=bool)
    est_margin = _out_of_fold(
        run, choice, cols, everything, restricted=restricted, step=run.stages.step
    )
    est_p = np.full(len(y), np.nan)
    aucs: list[float | None] = []
    for block, (_, made) in zip(blocks, choice.plans, strict=True):
        known = ~np.isnan(made.oof)
        if restricted or not choice.searched:
            a_b = _calibration(est_margin[block], y[block])
        else:
            a_b = _calibration(made.oof[known], y[known])
        est_p[block] = _sigmoid(a_b[0] * est_margin[block] + a_b[1])
        aucs.append(auc_within(y[block], est_p[block], snapshots[block]))
    for block_record, auc in zip(choice.found.get("blocks", []), aucs, strict=False):
        block_record["auc"] = auc  # each block's own held-out AUC
    return est_margin, est_p


def _segment_models(
    run: _Run,
    choice: _Searched,
    cols: list[str],
    segments: np.ndarray,
    models: dict[str, SegmentModel],
    *,
    held: np.ndarray,
    est_p: np.ndarray,
    rounds: int,
) -> JSONObject:
    """Each named segment's record; a segment whose own model ranks its held-out rows better
    than the global one by more than the paired error gets it (into `models`, its estimate
    into `est_p`)."""
    y, snapshots, options = run.y, run.snapshots, run.options
    chosen = choice.chosen
    report: JSONObject = {}
    named = sorted(str(s) for s in set(segments) - {""})
    run.stages.enter("segments", len(named))
    for segment in named:
        in_seg = segments == segment
        seg_held = in_seg & held
        rows, positives = int(in_seg.sum()), int(y[in_seg].sum())
        entry: JSONObject = {
            "train_rows": rows,
            "train_positives": positives,
            "model": "global",
        }
        entry["global_holdout"] = metrics(y[seg_held], est_p[seg_held], snapshots[seg_held])
        learnt = in_seg & choice.estimate[-1].train
        if (
            int(learnt.sum()) >= options.min_segment_rows
            and int(y[learnt].sum()) >= options.min_segment_positives
            and 0 < y[seg_held].sum() < seg_held.sum()
        ):
            own_margin = _out_of_fold(run, choice, cols, in_seg, restricted=cols != chosen.cols)
            evaluated = seg_held & ~np.isnan(own_margin)
            own_calibration = _calibration(own_margin[evaluated], y[evaluated])
            own_p = _sigmoid(own_calibration[0] * own_margin[evaluated] + own_calibration[1])
            entry["segment_holdout"] = metrics(y[evaluated], own_p, snapshots[evaluated])
            own_auc, global_auc = entry["segment_holdout"]["auc"], entry["global_holdout"]["auc"]
            # One model unless the segment's own ranks its rows better by more than the paired
            # error of the difference (as the search prefers the simpler): a segment's held-out
            # rows are few, and a model chosen on a lucky draw serves worse (the simulator's
            # test rows: 0.832 with the global model alone, 0.787 with the segment models the
            # plain comparison kept).
            error = auc_difference_error(y[evaluated], own_p, est_p[evaluated])
            entry["difference_error"] = error
            if own_auc is not None and (global_auc is None or own_auc - global_auc > error):
                ratio = rows / max(1, (in_seg & ~held).sum())
                own = run.fitter.fit(
                    chosen.candidate,
                    cols,
                    in_seg,
                    rounds=search.scaled(chosen.candidate, rounds, ratio),
                    blend=chosen.blend,
                )
                models[segment] = replace(own, calibration=own_calibration)
                est_p[evaluated] = own_p
                entry["model"] = "segment"
        else:
            entry["reason"] = (
                f"needs {options.min_segment_rows} rows and {options.min_segment_positives} "
                "positives among its training rows to train its own model"
            )
        report[segment] = entry
        run.stages.step()
    return report


def _trained(
    run: _Run,
    choice: _Searched,
    cols: list[str],
    xs: np.ndarray,
    models: dict[str, SegmentModel],
    stats: dict[str, SegmentStats],
    report: JSONObject,
    *,
    held: np.ndarray,
    est_p: np.ndarray,
    p: np.ndarray,
    latest: np.ndarray,
) -> Trained:
    """The training's record: the served models and what was measured of them."""
    ts, y, x, options = run.ts, run.y, run.x, run.options
    used = [c for c in run.categorical if c in cols]
    held_y, held_p = y[held], est_p[held]
    summary = metrics(held_y, held_p, run.snapshots[held])
    measured = [fold for folds, _ in choice.plans for fold in folds]
    run.stages.enter("baselines")
    peers = _baselines(ts, xs, y, cols, used, measured, held)
    gains = _importance(models[GLOBAL], xs, run.hashes)
    total = float(gains.sum()) or 1.0
    rounds = choice.found["rounds"]["served"]
    return Trained(
        features=cols,
        categorical=used,
        models=models,
        stats=stats,
        metrics={
            **{k: v for k, v in summary.items() if k != "n"},
            "auc_interval": auc_interval(summary["auc"], held_y),
            "n_train": len(y),
            "n_valid": int(held.sum()),
            "valid_positives": int(held_y.sum()),
            "baselines": peers,
            "validation": {
                "method": (
                    "out of time and out of account: accounts hashed into "
                    f"{options.folds} groups, the latest snapshots in two blocks, each measured "
                    "by models that learnt from earlier snapshots and other accounts, with the "
                    "parameters the other block's search chose"
                    if choice.crossed
                    else "out of time and out of account: accounts hashed into "
                    f"{options.folds} groups; the earlier folds chose the parameters, the latest "
                    "snapshots' accounts that the search did not evaluate measured them"
                ),
                "search_folds": [f.describe(ts, y) for f in choice.searched],
                "estimate_folds": [f.describe(ts, y) for f in measured],
            },
        },
        segments=report,
        importance=sorted(
            ((c, float(g) / total) for c, g in zip(cols, gains, strict=True)),
            key=lambda pair: -pair[1],
        ),
        reliability=reliability(held_y, held_p),
        params=run.fitter.params(choice.chosen.candidate, cols) | {"num_boost_round": rounds},
        data_hash=_data_hash(x, y),
        rows={
            "train": len(y),
            "holdout": int(held.sum()),
            "total": len(y),
            "positives": int(y.sum()),
        },
        curves=curves(held_y, held_p),
        # Drift is a move away from the population training saw last: the latest snapshot's
        # rows. Pooled over a year of snapshots, a world whose accounts age and whose churners
        # leave differs from any one moment, and every evaluation would call that drift.
        reference=psi.reference(xs[latest], cols, used, p[latest]),
        search=choice.found,
        timings=run.stages.finish(),
    )


def _baselines(
    ts: TrainingSet,
    xs: np.ndarray,
    y: np.ndarray,
    cols: list[str],
    categorical: list[str],
    folds: list[search.Fold],
    held: np.ndarray,
) -> dict[str, float | None]:
    """The simple peers' AUC on the held-out rows, each fold's fitted on that fold's training
    rows, as the model's estimate was."""
    catalog = ts.frame.catalog
    # Days since the last event of each type, or of any (which replaces the one type's when an
    # account has only one: the duplicate columns are dropped).
    recency = [
        c for c in cols if catalog.feature(c).spec.key in ("days_since_{type}", "days_since_active")
    ]
    pooled: dict[str, np.ndarray | None] = {}
    for fold in folds:
        scores = baselines.predict(
            xs[fold.train],
            y[fold.train],
            xs[fold.evaluate],
            names=cols,
            categorical=categorical,
            recency_columns=recency,
        )
        for name, s in scores.items():
            if name not in pooled:
                pooled[name] = np.full(len(y), np.nan)
            target = pooled[name]
            if s is None or target is None:
                pooled[name] = None
            else:
                target[fold.evaluate] = s
    strata = np.asarray(ts.snapshot_of_row)[held]
    return {
        k: None if v is None else auc_within(y[held], v[held], strata) for k, v in pooled.items()
    }


def _varying(x: np.ndarray, names: list[str], cols: list[str]) -> list[str]:
    """The columns of `cols` with more than one value (NaN counting as one)."""
    varying = []
    for c in cols:
        column = x[:, names.index(c)]
        known = column[~np.isnan(column)]
        if len(np.unique(known)) + (len(known) < len(column)) > 1:
            varying.append(c)
    return varying


def _distinct(x: np.ndarray, names: list[str]) -> list[str]:
    """The columns less those that repeat another exactly (two counts of the same tickets, a
    year's count on data shorter than half a year): of each set of equal ones, the last in
    catalog order is kept (fixed, named features come after the generic ones)."""
    seen: set[bytes] = set()
    kept: set[str] = set()
    for j in reversed(range(len(names))):
        digest = hashlib.sha256(np.ascontiguousarray(x[:, j]).tobytes()).digest()
        if digest not in seen:
            seen.add(digest)
            kept.add(names[j])
    return [n for n in names if n in kept]


def _calibration(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling (a, b) fitted on out-of-fold margins, kept only where it lowers their Brier
    score; else (1, 0)."""
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    model = search.unpenalised(margin.reshape(-1, 1), y)
    a, b = float(model.coef_[0][0]), float(model.intercept_[0])
    if brier_score_loss(y, _sigmoid(a * margin + b)) >= brier_score_loss(y, _sigmoid(margin)):
        return 1.0, 0.0
    return a, b


_sigmoid = linear.sigmoid


def _importance(model: SegmentModel, x: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Each feature's mean absolute contribution (the reasons' own numbers) over at most about
    IMPORTANCE_ROWS rows, whole accounts chosen by their hash."""
    rows = search.thin(np.ones(len(x), dtype=bool), hashes, IMPORTANCE_ROWS)
    result: np.ndarray = np.abs(model.contributions(x[rows])[:, :-1]).mean(axis=0)
    return result


IMPORTANCE_ROWS = 5_000


def _data_hash(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the matrix's and the labels' bytes, read in place (a copy of the matrix cost
    twice the hashing)."""
    digest = hashlib.sha256(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y).data)
    return digest.hexdigest()


MIN_RANKED_ROWS = 50  # rows of the latest snapshot a segment needs to place its bands among


def _ranked(p: np.ndarray, latest: np.ndarray) -> np.ndarray:
    """The scores bands are placed among: the latest snapshot's where there are enough."""
    return p[latest] if latest.sum() >= MIN_RANKED_ROWS else p


def _stats(p: np.ndarray, xs: np.ndarray, cols: list[str], options: Options) -> SegmentStats:
    reference = np.sort(p)
    high = float(np.quantile(reference, 1 - options.high_share))
    medium = float(np.quantile(reference, 1 - options.high_share - options.medium_share))
    typical = {}
    for j, c in enumerate(cols):
        column = xs[:, j]
        if not np.isnan(column).all():
            typical[c] = float(np.nanmedian(column))
    return SegmentStats((high, medium), [float(v) for v in reference], typical)
