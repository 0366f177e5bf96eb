"""Training: LightGBM binary models, per segment where the data supports it, with parameters
chosen for the data at hand, calibrated out of fold, measured out of time and out of account.

CPU-bound throughout: run it in a worker process, never on the event loop.

How a model is made from a training set:
- folds: accounts are hashed into `folds` groups, and the latest snapshots into as many
  consecutive time blocks; fold i evaluates group i's accounts in block i and learns from the
  other accounts' snapshots before block i (with one snapshot, or too few, from the other
  accounts at the same time). No fold ever sees an account it is evaluated on, so a model
  cannot score well by recognising accounts;
- search: a fixed, ordered list of candidate parameters, from additive depth-1 boosting (close
  to a regularised linear model) to deeper trees, each trained on the earlier folds
  with early stopping, scored by their mean AUC there; the best is chosen (ties go to the
  simpler). The search is bounded in time: candidates left when the budget is spent are
  skipped and named;
- blend: the chosen trees and a logistic regression on the same features (app.ml.linear),
  weighted by a regression on both out-of-fold margins, where that ranks the search's rows
  better than the trees alone (`_blend`);
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
import itertools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    brier_score_loss,
)

from app import errors
from app.ml import baselines, linear, psi
from app.ml.datasets import TrainingSet
from app.ml.metrics import (
    auc_difference_error,
    auc_interval,
    auc_within,
    curves,
    metrics,
    reliability,
)
from app.ml.model import GLOBAL, Blend, SegmentModel, SegmentStats, Trained

SEED = 7


@dataclass(frozen=True)
class Options:
    min_segment_rows: int = 300
    min_segment_positives: int = 30
    max_features: int | None = None
    num_threads: int = 2
    folds: int = 3  # account groups, and blocks of the latest snapshots
    holdout_share: float = 0.45  # share of the latest snapshots the folds evaluate on
    max_rounds: int = 500
    early_stopping_rounds: int = 30
    search_seconds: float = 300.0  # candidates left when this is spent are skipped
    # At most about this many training rows per fold, in the search and the estimate (whole
    # accounts by hash); the served model learns from every row.
    search_rows: int = 50_000
    monotone: dict[str, int] = field(default_factory=dict)  # feature -> +1 / -1, from the catalog
    high_share: float = 0.10
    medium_share: float = 0.20
    # Checked after every boosting round: true once the job is cancelled or out of time.
    stop_requested: Callable[[], bool] = field(default=lambda: False, compare=False)


# What one served model may cost to explain: TreeSHAP of one row on one core, in microseconds.
# Every score on request and every row of a batch pays it, so it bounds each candidate's trees.
SHAP_BUDGET_US = 400.0


@dataclass(frozen=True)
class Candidate:
    name: str
    params: dict[str, Any]

    @property
    def max_trees(self) -> int:
        """The most trees a served model of these parameters may have within SHAP_BUDGET_US.
        TreeSHAP visits every leaf of every tree along its path, so a tree costs about its
        leaves times its depth squared; measured with LightGBM 4 on this project's bench
        machine: 0.3 us + 0.0075 us per leaf x depth^2 (2 leaves: 0.36 us, 8 leaves at depth 3:
        1.1 us, 15 at depth 5: 2.3 us, 31 unbounded: 16 us per tree and row)."""
        leaves, depth = self.params["num_leaves"], self.params["max_depth"]
        per_tree = 0.3 + 0.0075 * leaves * depth * depth
        return int(SHAP_BUDGET_US / per_tree)


# Simplest first: a tie (within SEARCH_TIE) goes to the earlier one. Most use extremely
# randomised split points (extra_trees) and half the features per tree: on the few thousand rows
# of a small customer base they behave like a smooth, regularised additive model, where exact
# splits chase noise; the exact ones are for large training sets. Every candidate bounds its
# depth: an unbounded tree of 63 leaves costs 40 us per row to explain, and a served model of
# hundreds of them would make every score on request wait milliseconds for its reasons.
CANDIDATES: tuple[Candidate, ...] = (
    Candidate(
        "additive",  # one feature per tree: a regularised generalised additive model
        {
            "num_leaves": 2,
            "max_depth": 1,
            "min_data_in_leaf": 20,
            "lambda_l2": 5.0,
            "learning_rate": 0.1,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "extra_trees": True,
        },
    ),
    Candidate(
        "shallow",
        {
            "num_leaves": 4,
            "max_depth": 2,
            "min_data_in_leaf": 40,
            "lambda_l2": 10.0,
            "learning_rate": 0.05,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "extra_trees": True,
        },
    ),
    Candidate(
        "medium",
        {
            "num_leaves": 8,
            "max_depth": 3,
            "min_data_in_leaf": 50,
            "lambda_l2": 10.0,
            "learning_rate": 0.1,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "extra_trees": True,
        },
    ),
    Candidate(
        "wide",
        {
            "num_leaves": 31,
            "max_depth": 5,
            "min_data_in_leaf": 100,
            "lambda_l2": 10.0,
            "learning_rate": 0.1,
            "feature_fraction": 0.5,
            "bagging_fraction": 0.8,
            "extra_trees": True,
        },
    ),
    Candidate(
        "exact",
        {
            "num_leaves": 15,
            "max_depth": 5,
            "min_data_in_leaf": 20,
            "lambda_l2": 1.0,
            "learning_rate": 0.1,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.9,
            "extra_trees": False,
        },
    ),
)
SEARCH_TIE = 0.001
MAX_ROUNDS_SCALE = 2.0  # the served model's rounds grow with its extra rows, at most this much


def base_params(options: Options) -> dict[str, Any]:
    return {
        "objective": "binary",
        "bagging_freq": 1,
        "max_cat_to_onehot": 8,
        "cat_smooth": 10,
        "seed": SEED,
        "deterministic": True,
        "force_col_wise": True,
        "num_threads": options.num_threads,
        "verbose": -1,
    }


def _hash(account_id: str) -> int:
    return int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:4], "big")


@dataclass(frozen=True)
class Fold:
    """Rows a model learns from and rows it is measured on: never the same account."""

    train: np.ndarray  # boolean masks over the training set's rows
    evaluate: np.ndarray
    snapshots: tuple[int, ...]  # the snapshots evaluated

    def describe(self, ts: TrainingSet, y: np.ndarray) -> dict[str, Any]:
        return {
            "evaluated_snapshots": [ts.snapshots[s].isoformat() for s in self.snapshots],
            "train_rows": int(self.train.sum()),
            "train_positives": int(y[self.train].sum()),
            "evaluation_rows": int(self.evaluate.sum()),
            "evaluation_positives": int(y[self.evaluate].sum()),
        }


def make_folds(
    ts: TrainingSet, options: Options, hashes: np.ndarray
) -> tuple[list[Fold], list[Fold]]:
    """The search's folds and the estimate's. The latest snapshots are split in two blocks: the
    search evaluates each account group in the earlier block, learning from the other groups
    before it; the estimate does the same in the later block, which the search never reads.
    With too few snapshots for two blocks, the groups are split instead: the search evaluates
    every group but the last, never learning from it, and the estimate evaluates the last."""
    k, n_snap = options.folds, len(ts.snapshots)
    groups = hashes % k
    snap = ts.snapshot_of_row
    held = max(min(2, n_snap - 1), round(n_snap * options.holdout_share), 1)
    if held % 2 and held + 1 < n_snap:
        held += 1  # two equal blocks, each choosing for the other on as much evidence
    latest = tuple(range(n_snap - held, n_snap))
    cut = max(1, held // 2)
    estimate_block, search_block = latest[-cut:], latest[:-cut]

    def fold(group: int, block: tuple[int, ...], learn: np.ndarray) -> Fold:
        before = learn & (snap < block[0])
        train = before if before.any() else learn & (snap <= block[-1])
        return Fold(train, np.isin(snap, block) & (groups == group), block)

    if search_block:
        search = [fold(g, search_block, groups != g) for g in range(k)]
        return search, [fold(g, estimate_block, groups != g) for g in range(k)]
    last = k - 1
    search = [fold(g, estimate_block, (groups != g) & (groups != last)) for g in range(last)]
    return search, [fold(last, estimate_block, groups != last)]


def _groups(hashes: np.ndarray, options: Options, y: np.ndarray) -> list[Fold]:
    """Each account group evaluated by learning from all the others (plain k-fold): the usable
    ones."""
    groups = hashes % options.folds
    folds = [Fold(groups != g, groups == g, (0,)) for g in range(options.folds)]
    return [f for f in folds if _usable(f, y)]


def _usable(fold: Fold, y: np.ndarray) -> bool:
    """Both classes on both sides."""
    return all(0 < y[m].sum() < m.sum() for m in (fold.train, fold.evaluate))


def _thinned(fold: Fold, y: np.ndarray, hashes: np.ndarray, limit: int) -> Fold:
    """The fold learning from at most about `limit` of its training rows (whole accounts by
    hash), unless that leaves it without both classes."""
    thinned = replace(fold, train=_thin(fold.train, hashes, limit))
    return thinned if _usable(thinned, y) else fold


def _thin(mask: np.ndarray, hashes: np.ndarray, limit: int) -> np.ndarray:
    """At most about `limit` rows of mask, whole accounts chosen by their hash (deterministic)."""
    n = int(mask.sum())
    if n <= limit:
        return mask
    return mask & ((hashes // 7) % 10_000 < math.ceil(10_000 * limit / n))


class _Fitter:
    """Trains boosters on column subsets of one matrix with one set of options."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        names: list[str],
        categorical: list[str],
        options: Options,
        hashes: np.ndarray,
        snapshots: np.ndarray,
    ) -> None:
        self.x, self.y, self.names, self.categorical, self.options = (
            x,
            y,
            names,
            categorical,
            options,
        )
        self.hashes = hashes
        self.snapshots = snapshots
        self.regressions: dict[tuple[tuple[str, ...], bytes], linear.Linear] = {}

    def regression(self, cols: list[str], rows: np.ndarray) -> linear.Linear:
        """The logistic regression on `rows`, fitted once per columns and rows, on at most
        about search_rows of them (whole accounts by hash): a regression of a few hundred
        coefficients has what it needs there, and lbfgs on every row of a large set cost
        minutes per training."""
        thinned = _thin(rows, self.hashes, self.options.search_rows)
        if 0 < self.y[thinned].sum() < thinned.sum():
            rows = thinned
        key = (tuple(cols), hashlib.sha256(np.packbits(rows).tobytes()).digest())
        if key not in self.regressions:
            idx = [self.names.index(c) for c in cols]
            self.regressions[key] = linear.fit(
                self.x[rows][:, idx],
                self.y[rows],
                names=cols,
                categorical=[c for c in self.categorical if c in cols],
                directions=[self.options.monotone.get(c, 0) for c in cols],
            )
        return self.regressions[key]

    def auc(self, rows: np.ndarray, scores: np.ndarray, *, packed: bool = False) -> float:
        """The AUC within snapshots (auc_within) of `rows`' scores: `scores` over every row,
        or over `rows` only when packed."""
        mine = scores if packed else scores[rows]
        return float(auc_within(self.y[rows], mine, self.snapshots[rows]) or 0.5)

    def params(self, candidate: Candidate, cols: list[str]) -> dict[str, Any]:
        result = base_params(self.options) | candidate.params
        directions = [self.options.monotone.get(c, 0) for c in cols]
        if any(directions):
            result |= {"monotone_constraints": directions, "monotone_constraints_method": "basic"}
        return result

    def fit(
        self,
        candidate: Candidate,
        cols: list[str],
        rows: np.ndarray,
        *,
        rounds: int | None = None,
        stop_on: np.ndarray | None = None,
        blend: Blend | None = None,
    ) -> SegmentModel:
        """A model on `rows` (uncalibrated): `rounds` rounds, or up to max_rounds stopped early
        on `stop_on`."""
        # Feature names derive from names clients send (trait keys, event types); LightGBM
        # refuses some characters in them (JSON's special ones) and writes them into model.txt.
        # It gets positions only: our names live in the manifest, in the same order as the
        # columns.
        idx = [self.names.index(c) for c in cols]
        x = self.x[rows][:, idx]
        data = lgb.Dataset(
            x,
            self.y[rows],
            feature_name=[f"f{j}" for j in range(len(cols))],
            categorical_feature=[cols.index(c) for c in self.categorical if c in cols],
            free_raw_data=False,
        )
        callbacks = [_stopper(self.options.stop_requested)]
        valid = []
        if stop_on is not None:
            held = self.x[stop_on][:, idx]
            valid = [lgb.Dataset(held, self.y[stop_on], reference=data)]
            callbacks.append(lgb.early_stopping(self.options.early_stopping_rounds, verbose=False))
        # The search stops early within half the served trees: the served model's rounds grow
        # with its extra rows, up to MAX_ROUNDS_SCALE times.
        searched = min(self.options.max_rounds, int(candidate.max_trees / MAX_ROUNDS_SCALE))
        booster = lgb.train(
            self.params(candidate, cols),
            data,
            num_boost_round=rounds or max(1, searched),
            valid_sets=valid,
            callbacks=callbacks,
        )
        if blend is None or not blend.regression:
            return SegmentModel(booster, (1.0, 0.0))
        return SegmentModel(booster, (1.0, 0.0), self.regression(cols, rows), blend)

    def margin(self, model: SegmentModel, cols: list[str], rows: np.ndarray) -> np.ndarray:
        return model.margin(self.x[rows][:, [self.names.index(c) for c in cols]])


def _scaled(candidate: Candidate, rounds: float, ratio: float) -> int:
    """Rounds for `ratio` times the rows `rounds` were found on, within the serving budget."""
    scaled = round(rounds * min(MAX_ROUNDS_SCALE, max(1.0, ratio)))
    return max(1, min(candidate.max_trees, scaled))


@dataclass
class _Trials:
    """Every candidate tried on some folds: what each scored, and its out-of-fold margins (NaN
    outside the folds' evaluation rows), in the order tried."""

    tried: list[dict[str, Any]]
    margins: list[np.ndarray]
    skipped: list[str]
    seconds: float
    folds: int


@dataclass
class Choice:
    """What a search chose: parameters, columns, the blend with a logistic regression, the
    rounds its folds stopped at on average (and their training rows), the blended out-of-fold
    margins it was chosen on, and its record for the manifest."""

    candidate: Candidate
    cols: list[str]
    blend: Blend
    rounds: float
    train_rows: float
    oof: np.ndarray
    record: dict[str, Any]

    def rounds_for(self, rows: float) -> int:
        """The rounds for a model learning from `rows` rows."""
        return _scaled(self.candidate, self.rounds, rows / self.train_rows)


def _trials(fitter: _Fitter, folds: list[Fold], columns: dict[str, list[str]]) -> _Trials:
    """Every candidate on each column set (the compact one first: simpler), each stopped early
    on its folds' evaluation rows, until the search's time is spent."""
    options, y = fitter.options, fitter.y
    started = time.monotonic()
    tried: list[dict[str, Any]] = []
    skipped: list[str] = []
    margins: list[np.ndarray] = []
    for candidate, (columns_name, cols) in itertools.product(CANDIDATES, columns.items()):
        if tried and time.monotonic() - started > options.search_seconds:
            skipped.append(f"{candidate.name} ({columns_name})")
            continue
        aucs, rounds, rows = [], [], []
        oof = np.full(len(y), np.nan)
        for fold in folds:
            model = fitter.fit(candidate, cols, fold.train, stop_on=fold.evaluate)
            oof[fold.evaluate] = fitter.margin(model, cols, fold.evaluate)
            aucs.append(fitter.auc(fold.evaluate, oof))
            rounds.append(model.booster.best_iteration or model.booster.current_iteration())
            rows.append(int(fold.train.sum()))
        margins.append(oof)
        evaluated = ~np.isnan(oof)
        tried.append(
            {
                "name": candidate.name,
                "columns": columns_name,
                "features": len(cols),
                "params": candidate.params,
                "auc": fitter.auc(evaluated, oof),
                "fold_aucs": aucs,
                "rounds": float(np.mean(rounds)),
                "train_rows": float(np.mean(rows)),
            }
        )
    return _Trials(tried, margins, skipped, time.monotonic() - started, len(folds))


def _pooled(fitter: _Fitter, first: _Trials, second: _Trials) -> _Trials:
    """Two blocks' trials as one: each candidate tried in both, scored on both blocks' rows."""
    later = {
        (t["name"], t["columns"]): (t, m) for t, m in zip(second.tried, second.margins, strict=True)
    }
    tried, margins = [], []
    # A candidate either block skipped is skipped (it is in that block's list), in trial order.
    skipped = first.skipped + [s for s in second.skipped if s not in first.skipped]
    n1, n2 = first.folds, second.folds
    for t, m in zip(first.tried, first.margins, strict=True):
        key = (t["name"], t["columns"])
        if key not in later:
            continue
        u, n = later[key]
        both = np.where(np.isnan(m), n, m)
        known = ~np.isnan(both)
        margins.append(both)
        tried.append(
            t
            | {
                "auc": fitter.auc(known, both),
                "fold_aucs": t["fold_aucs"] + u["fold_aucs"],
                "rounds": (t["rounds"] * n1 + u["rounds"] * n2) / (n1 + n2),
                "train_rows": (t["train_rows"] * n1 + u["train_rows"] * n2) / (n1 + n2),
            }
        )
    return _Trials(tried, margins, skipped, first.seconds + second.seconds, n1 + n2)


def _choose(
    fitter: _Fitter, folds: list[Fold], columns: dict[str, list[str]], trials: _Trials
) -> Choice:
    """The candidate and column set the trials on `folds` choose, blended with a logistic
    regression where that ranks their rows better."""
    options, y, tried, margins = fitter.options, fitter.y, trials.tried, trials.margins

    # Within a column set the best AUC wins (ties to the simpler). Between column sets, the
    # one-standard-error rule (Breiman et al., 1984; Hastie et al., The Elements of Statistical
    # Learning, 7.10) with the error of the paired difference on the same rows (DeLong et al.,
    # 1988): the fewer columns win unless the best of all is more than one standard error
    # better. A hundred per-type columns that score a hair better on a few hundred rows mostly
    # fit noise (an online shop's clickstream: its 117 columns scored 0.6875 against the
    # compact 21's 0.6867 and held 0.621 on the next months, the compact ones 0.652).
    def best_of(indices: list[int]) -> int:
        top = max(tried[i]["auc"] for i in indices)
        return next(i for i in indices if tried[i]["auc"] >= top - SEARCH_TIE)

    top = best_of(list(range(len(tried))))
    evaluated = ~np.isnan(margins[top])
    errors_ = [
        auc_difference_error(y[evaluated], margins[top][evaluated], m[evaluated]) for m in margins
    ]
    best = top
    for name in columns:
        of_set = [i for i, t in enumerate(tried) if t["columns"] == name]
        if of_set and tried[best_of(of_set)]["auc"] >= tried[top]["auc"] - errors_[best_of(of_set)]:
            best = best_of(of_set)
            break
    chosen = tried[best]
    record = {
        "chosen": chosen["name"],
        "columns": chosen["columns"],
        "best": {key: tried[top][key] for key in ("name", "columns", "auc")},
        "candidates": [t | {"difference_error": e} for t, e in zip(tried, errors_, strict=True)],
        "skipped": trials.skipped,
        "seconds": round(trials.seconds, 3),
        "budget_seconds": options.search_seconds,
        "folds": trials.folds,
    }
    candidate = next(c for c in CANDIDATES if c.name == chosen["name"])
    cols = columns[chosen["columns"]]
    blend, record["blend"], oof = _blend(fitter, folds, cols, margins[best])
    return Choice(candidate, cols, blend, chosen["rounds"], chosen["train_rows"], oof, record)


def _blend(
    fitter: _Fitter, folds: list[Fold], cols: list[str], trees: np.ndarray
) -> tuple[Blend, dict[str, Any], np.ndarray]:
    """How the chosen trees and a logistic regression on the same features are blended
    (stacking): the regression is fitted on each search fold's training rows as the trees were,
    and the two weights on both out-of-fold margins. The regression alone, the trees alone or
    the blend, whichever ranks those rows best, the simpler within the paired standard error
    (on a few thousand rows a smooth linear signal is where trees lose to the simple peer they
    are measured against). Returns the blend, what was measured, and the blended out-of-fold
    margins."""
    y, idx = fitter.y, [fitter.names.index(c) for c in cols]
    regression = np.full(len(y), np.nan)
    for fold in folds:
        fitted = fitter.regression(cols, fold.train)  # thinned as the search's trees were
        regression[fold.evaluate] = fitted.margin(fitter.x[fold.evaluate][:, idx])
    known = ~np.isnan(trees) & ~np.isnan(regression)
    both = np.column_stack([trees[known], regression[known]])
    weights = _unpenalised(both, y[known]).coef_[0]
    a, b = float(weights[0]), float(weights[1])
    # Simplest first: the regression alone, the trees alone, then both (only with weights of
    # the same sign: a blend that subtracts one from the other is no explanation a person can
    # follow). The simplest within one standard error of the paired difference from the best
    # is chosen (the rule _choose follows between column sets): on a near-linear world the
    # trees' hair of extra AUC on the search's rows is noise, and the regression serves.
    shown = {
        "logistic_regression": (Blend(0.0, 1.0), regression[known]),
        "trees": (Blend(), trees[known]),
    }
    if a > 0 and b > 0:
        shown["blend"] = (Blend(a, b), both @ weights)
    aucs = {name: fitter.auc(known, m, packed=True) for name, (_, m) in shown.items()}
    top = max(aucs, key=lambda name: aucs[name])
    errors_ = {
        name: auc_difference_error(y[known], shown[top][1], m) for name, (_, m) in shown.items()
    }
    name = next(n for n in shown if aucs[n] >= aucs[top] - errors_[n])
    blend = shown[name][0]
    margins = trees if not blend.regression else blend.trees * trees + blend.regression * regression
    record = {
        "chosen": name,
        "weights": [blend.trees, blend.regression],
        "fitted": [a, b],
        "auc": aucs,
        "difference_error": errors_,
    }
    return blend, record, margins


def train(ts: TrainingSet, options: Options) -> Trained:
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
    hash_of = {a: _hash(a) for a in dict.fromkeys(a for a, _ in ts.frame.keys)}
    hashes = np.array([hash_of[a] for a, _ in ts.frame.keys], dtype=np.int64)
    search_folds, estimate_folds = make_folds(ts, options, hashes)
    # Every fold's models learn from at most about search_rows rows: on a large customer base
    # an estimate of the procedure on fewer rows is a little pessimistic, where full-size fits
    # per fold (and per segment) cost minutes. The served model learns from every row.
    limit = options.search_rows
    searched = [_thinned(f, y, hashes, limit) for f in search_folds if _usable(f, y)]
    estimate = [_thinned(f, y, hashes, limit) for f in estimate_folds if _usable(f, y)]
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
    fitter = _Fitter(x, y, names, categorical, options, hashes, snapshots)
    distinct = _distinct(x, names)
    # The search tries the compact columns alone too, where they are fewer than the others
    # that vary (app.ml.catalog: a few thousand rows cannot afford a hundred per-type columns).
    columns = {"full": distinct}
    compact = [c for c in distinct if ts.frame.catalog.feature(c).compact]
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
    first = _trials(fitter, searched or estimate, columns)
    crossed = bool(searched) and searched[0].snapshots != estimate[0].snapshots
    if crossed:
        second = _trials(fitter, estimate, columns)
        early, late = (
            _choose(fitter, searched, columns, first),
            _choose(fitter, estimate, columns, second),
        )
        chosen = _choose(fitter, searched + estimate, columns, _pooled(fitter, first, second))
        plans = [(estimate, early), (searched, late)]
    else:
        early = _choose(fitter, searched or estimate, columns, first)
        plans = [(estimate, early)]
        # One moment: the served model is chosen on every group, each measured by models that
        # learnt from all the others (plain k-fold), as it will learn from all of them; the
        # search above, on fewer rows and without the last group, chose for the estimate only.
        every = [_thinned(f, y, hashes, limit) for f in _groups(hashes, options, y)]
        chosen = (
            _choose(fitter, every, columns, _trials(fitter, every, columns))
            if searched and len(every) == options.folds
            else early
        )
    search = chosen.record
    search["scored_on"] = (
        "both blocks, each choosing for the other"
        if crossed
        else "every group, each learning from the others; the estimate's by the earlier groups"
        if chosen is not plans[0][1]
        else "earlier folds"
        if searched
        else "the held-out rows (optimistic)"
    )
    if crossed:
        search["blocks"] = [
            {k: choice.record[k] for k in ("chosen", "columns", "blend")}
            | {"measured": [f.describe(ts, y) for f in folds]}
            for folds, choice in plans
        ]
    candidate, blend = chosen.candidate, chosen.blend

    cols = chosen.cols
    if options.max_features and options.max_features < len(cols):
        latest = estimate[-1]
        probe = fitter.fit(
            candidate, cols, latest.train, rounds=chosen.rounds_for(latest.train.sum())
        )
        top = np.argsort(-probe.booster.feature_importance("gain"), kind="stable")[
            : options.max_features
        ]
        cols = [c for c in names if c in {cols[j] for j in top}]
    restricted = cols != chosen.cols  # then every estimate uses the served columns
    used = [c for c in categorical if c in cols]
    xs = x[:, [names.index(c) for c in cols]]
    # Each plan's evaluated rows (a block), and all of them: the held-out rows.
    blocks = [np.logical_or.reduce([fold.evaluate for fold in folds]) for folds, _ in plans]
    held = np.logical_or.reduce(blocks)

    def out_of_fold(rows: np.ndarray) -> np.ndarray:
        """Margins of `rows`' held-out rows from models that never saw their accounts, each
        block's with the choice that was not made on it."""
        result = np.full(len(y), np.nan)
        for folds, choice in plans:
            use = cols if restricted else choice.cols
            for fold in folds:
                train_rows, evaluated = fold.train & rows, fold.evaluate & rows
                if evaluated.any() and 0 < y[train_rows].sum() < train_rows.sum():
                    model = fitter.fit(
                        choice.candidate,
                        use,
                        train_rows,
                        rounds=choice.rounds_for(fold.train.sum()),
                        blend=choice.blend,
                    )
                    result[evaluated] = fitter.margin(model, use, evaluated)
        return result

    # The honest estimate: rows that neither chose the parameters nor the rounds. Each block's
    # probabilities are calibrated on the margins its choice was made on, unless those were of
    # other columns or of these very rows (its AUC does not depend on it).
    everything = np.ones(len(y), dtype=bool)
    est_margin = out_of_fold(everything)
    est_p = np.full(len(y), np.nan)
    aucs: list[float | None] = []
    for block, (_, choice) in zip(blocks, plans, strict=True):
        known = ~np.isnan(choice.oof)
        if restricted or not searched:
            a_b = _calibration(est_margin[block], y[block])
        else:
            a_b = _calibration(choice.oof[known], y[known])
        est_p[block] = _sigmoid(a_b[0] * est_margin[block] + a_b[1])
        aucs.append(auc_within(y[block], est_p[block], snapshots[block]))
    for block_record, auc in zip(search.get("blocks", []), aucs, strict=False):
        block_record["auc"] = auc  # each block's own held-out AUC
    # The served model: every row, the rounds scaled to them; calibrated on out-of-fold margins
    # (the search's, and the estimate's where the search has none).
    rounds = chosen.rounds_for(len(y))
    served = fitter.fit(candidate, cols, everything, rounds=rounds, blend=blend)
    oof = np.full(len(y), np.nan) if restricted or not searched else chosen.oof.copy()
    fill = held & np.isnan(oof)
    oof[fill] = est_margin[fill]
    known = ~np.isnan(oof)
    calibration = _calibration(oof[known], y[known])
    models = {GLOBAL: replace(served, calibration=calibration)}

    segments = np.array([s or "" for s in ts.frame.segments])
    report: dict[str, Any] = {}
    for segment in sorted(str(s) for s in set(segments) - {""}):
        in_seg = segments == segment
        seg_held = in_seg & held
        rows, positives = int(in_seg.sum()), int(y[in_seg].sum())
        entry: dict[str, Any] = {
            "train_rows": rows,
            "train_positives": positives,
            "model": "global",
        }
        entry["global_holdout"] = metrics(y[seg_held], est_p[seg_held], snapshots[seg_held])
        learnt = in_seg & estimate[-1].train
        if (
            int(learnt.sum()) >= options.min_segment_rows
            and int(y[learnt].sum()) >= options.min_segment_positives
            and 0 < y[seg_held].sum() < seg_held.sum()
        ):
            own_margin = out_of_fold(in_seg)
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
                own = fitter.fit(
                    candidate, cols, in_seg, rounds=_scaled(candidate, rounds, ratio), blend=blend
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

    p = np.empty(len(y))
    served_by = np.array([s if s in models else GLOBAL for s in segments])
    for name, model in models.items():
        rows_of = served_by == name
        if rows_of.any():
            p[rows_of] = model.probability(model.margin(xs[rows_of]))
    stats = {GLOBAL: _stats(p, xs, cols, options)}
    for segment in sorted(str(s) for s in set(segments) - {""}):
        rows_of = segments == segment
        stats[segment] = _stats(p[rows_of], xs[rows_of], cols, options)
    held_y, held_p = y[held], est_p[held]
    summary = metrics(held_y, held_p, snapshots[held])
    measured = [fold for folds, _ in plans for fold in folds]
    peers = _baselines(ts, xs, y, cols, used, measured, held)
    gains = _importance(models[GLOBAL], xs, hashes)
    total = float(gains.sum()) or 1.0
    search["rounds"] = {
        "searched": chosen.rounds,
        "estimate": [c.rounds_for(f.train.sum()) for folds, c in plans for f in folds],
        "served": rounds,
    }
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
                    if crossed
                    else "out of time and out of account: accounts hashed into "
                    f"{options.folds} groups; the earlier folds chose the parameters, the latest "
                    "snapshots' accounts that the search did not evaluate measured them"
                ),
                "search_folds": [f.describe(ts, y) for f in searched],
                "estimate_folds": [f.describe(ts, y) for f in measured],
            },
        },
        segments=report,
        importance=sorted(
            ((c, float(g) / total) for c, g in zip(cols, gains, strict=True)),
            key=lambda pair: -pair[1],
        ),
        reliability=reliability(held_y, held_p),
        params=fitter.params(candidate, cols) | {"num_boost_round": rounds},
        data_hash=_data_hash(x, y),
        rows={
            "train": len(y),
            "holdout": int(held.sum()),
            "total": len(y),
            "positives": int(y.sum()),
        },
        curves=curves(held_y, held_p),
        reference=psi.reference(xs, cols, used, p),
        search=search,
    )


def _baselines(
    ts: TrainingSet,
    xs: np.ndarray,
    y: np.ndarray,
    cols: list[str],
    categorical: list[str],
    folds: list[Fold],
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


def _stopper(stop_requested: Callable[[], bool]) -> Callable[[Any], None]:
    def check(_: Any) -> None:
        if stop_requested():
            raise errors.Stopped("training stopped: its job was cancelled or ran out of time")

    return check


def _calibration(margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling (a, b) fitted on out-of-fold margins, kept only where it lowers their Brier
    score; else (1, 0)."""
    if len(np.unique(y)) < 2:
        return 1.0, 0.0
    model = _unpenalised(margin.reshape(-1, 1), y)
    a, b = float(model.coef_[0][0]), float(model.intercept_[0])
    if brier_score_loss(y, _sigmoid(a * margin + b)) >= brier_score_loss(y, _sigmoid(margin)):
        return 1.0, 0.0
    return a, b


_sigmoid = linear.sigmoid


def _unpenalised(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    """A logistic regression of y on a margin or two (calibration, stacking), all but
    unpenalised. lbfgs may stop on a line search it cannot improve (margins of nearly separated
    rows): what it has reached is used all the same, and each caller keeps it only where it
    measures better than going without."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=1e6, solver="lbfgs").fit(x, y)


def _importance(model: SegmentModel, x: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Each feature's mean absolute contribution (the reasons' own numbers) over at most about
    IMPORTANCE_ROWS rows, whole accounts chosen by their hash."""
    rows = _thin(np.ones(len(x), dtype=bool), hashes, IMPORTANCE_ROWS)
    result: np.ndarray = np.abs(model.contributions(x[rows])[:, :-1]).mean(axis=0)
    return result


IMPORTANCE_ROWS = 5_000


def _data_hash(x: np.ndarray, y: np.ndarray) -> str:
    """sha256 of the matrix's and the labels' bytes, read in place (a copy of the matrix cost
    twice the hashing)."""
    digest = hashlib.sha256(np.ascontiguousarray(x).data)
    digest.update(np.ascontiguousarray(y).data)
    return digest.hexdigest()


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
