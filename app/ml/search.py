"""The search: which trees, on which columns, blended how with a logistic regression, for the
data at hand; and the folds every choice and every estimate is made on.

- folds: accounts are hashed into `folds` groups, and the latest snapshots into as many
  consecutive time blocks; fold i evaluates group i's accounts in block i and learns from the
  other accounts' snapshots before block i (with one snapshot, or too few, from the other
  accounts at the same time). No fold ever sees an account it is evaluated on;
- candidates: a fixed, ordered list of parameters, from additive depth-1 boosting (close to a
  regularised linear model) to deeper trees, each trained on the folds with early stopping,
  scored by their AUC there; the best is chosen (ties, and column sets within the paired
  error, go to the simpler). Bounded in time: candidates left when the budget is spent are
  skipped and named;
- blend: the chosen trees, a logistic regression on the same features (app.ml.linear, its
  regularisation chosen on the same folds) and their blend are three candidates measured on
  the same out-of-fold rows; the simplest within one paired standard error of the best serves.

The training recipe (app.ml.training) calls it; serving never imports it.
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

from app.ml import linear
from app.ml.datasets import TrainingSet
from app.ml.metrics import auc_difference_error, auc_within
from app.ml.model import Blend, SegmentModel
from app.platform import errors
from app.platform.jsonbody import JSONObject

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
    # (20,000 cost a purchase log of 23,570 customers 0.0012 AUC on its later months, twice the
    # paired error: 0.7746 against 0.7758.)
    search_rows: int = 50_000
    monotone: dict[str, int] = field(default_factory=dict)  # feature -> +1 / -1, from the catalog
    high_share: float = 0.10
    medium_share: float = 0.20
    # Checked after every boosting round: true once the job is cancelled or out of time.
    stop_requested: Callable[[], bool] = field(default=lambda: False, compare=False)
    # Told where the training is: a stage's name, its steps done and in all (app.platform.jobs).
    report: Callable[[str, int, int], None] = field(default=lambda *_: None, compare=False)


# What one served model may cost to explain: TreeSHAP of one row on one core, in microseconds.
# Every score on request and every row of a batch pays it, so it bounds each candidate's trees.
SHAP_BUDGET_US = 400.0


@dataclass(frozen=True)
class Candidate:
    name: str
    params: JSONObject

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
REGRESSION_C = (0.01, 0.1, 1.0)  # inverse L2 strengths the regression is tried with
MAX_ROUNDS_SCALE = 2.0  # the served model's rounds grow with its extra rows, at most this much


def base_params(options: Options) -> JSONObject:
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


def hash_account(account_id: str) -> int:
    return int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:4], "big")


@dataclass(frozen=True)
class Fold:
    """Rows a model learns from and rows it is measured on: never the same account."""

    train: np.ndarray  # boolean masks over the training set's rows
    evaluate: np.ndarray
    snapshots: tuple[int, ...]  # the snapshots evaluated

    def describe(self, ts: TrainingSet, y: np.ndarray) -> JSONObject:
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


def groups(hashes: np.ndarray, options: Options, y: np.ndarray) -> list[Fold]:
    """Each account group evaluated by learning from all the others (plain k-fold): the usable
    ones."""
    groups = hashes % options.folds
    folds = [Fold(groups != g, groups == g, (0,)) for g in range(options.folds)]
    return [f for f in folds if usable(f, y)]


def usable(fold: Fold, y: np.ndarray) -> bool:
    """Both classes on both sides."""
    return all(0 < y[m].sum() < m.sum() for m in (fold.train, fold.evaluate))


def thinned(fold: Fold, y: np.ndarray, hashes: np.ndarray, limit: int) -> Fold:
    """The fold learning from at most about `limit` of its training rows (whole accounts by
    hash), unless that leaves it without both classes."""
    thinned = replace(fold, train=thin(fold.train, hashes, limit))
    return thinned if usable(thinned, y) else fold


def thin(mask: np.ndarray, hashes: np.ndarray, limit: int) -> np.ndarray:
    """At most about `limit` rows of mask, whole accounts chosen by their hash (deterministic)."""
    n = int(mask.sum())
    if n <= limit:
        return mask
    return mask & ((hashes // 7) % 10_000 < math.ceil(10_000 * limit / n))


class Fitter:
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
        self.regressions: dict[tuple[tuple[str, ...], bytes, float], linear.Linear] = {}

    def regression(self, cols: list[str], rows: np.ndarray, c: float = 1.0) -> linear.Linear:
        """The logistic regression on `rows`, fitted once per columns and rows, on at most
        about search_rows of them (whole accounts by hash): a regression of a few hundred
        coefficients has what it needs there, and lbfgs on every row of a large set cost
        minutes per training."""
        thinned = thin(rows, self.hashes, self.options.search_rows)
        if 0 < self.y[thinned].sum() < thinned.sum():
            rows = thinned
        key = (tuple(cols), hashlib.sha256(np.packbits(rows).tobytes()).digest(), c)
        if key not in self.regressions:
            idx = [self.names.index(c) for c in cols]
            self.regressions[key] = linear.fit(
                self.x[rows][:, idx],
                self.y[rows],
                names=cols,
                categorical=[c for c in self.categorical if c in cols],
                directions=[self.options.monotone.get(name, 0) for name in cols],
                c=c,
            )
        return self.regressions[key]

    def auc(self, rows: np.ndarray, scores: np.ndarray, *, packed: bool = False) -> float:
        """The AUC within snapshots (auc_within) of `rows`' scores: `scores` over every row,
        or over `rows` only when packed."""
        mine = scores if packed else scores[rows]
        return float(auc_within(self.y[rows], mine, self.snapshots[rows]) or 0.5)

    def params(self, candidate: Candidate, cols: list[str]) -> JSONObject:
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
        # Each fit bins its own training rows. Bins made once from every row (evaluation rows
        # and later snapshots included) and shared by every fit saved a tenth of a training, but
        # moved an online shop's choice from the blend to the regression: 0.639 against 0.654
        # on its later weeks (paired error 0.0055).
        idx = [self.names.index(c) for c in cols]
        data = lgb.Dataset(
            self.x[rows][:, idx],
            self.y[rows],
            feature_name=[f"f{j}" for j in range(len(cols))],
            categorical_feature=[cols.index(c) for c in self.categorical if c in cols],
            free_raw_data=False,
        )
        callbacks = [stopper(self.options.stop_requested)]
        valid = []
        if stop_on is not None:
            valid = [lgb.Dataset(self.x[stop_on][:, idx], self.y[stop_on], reference=data)]
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
        return SegmentModel(booster, (1.0, 0.0), self.regression(cols, rows, blend.c), blend)

    def margin(self, model: SegmentModel, cols: list[str], rows: np.ndarray) -> np.ndarray:
        return model.margin(self.x[rows][:, [self.names.index(c) for c in cols]])


def scaled(candidate: Candidate, rounds: float, ratio: float) -> int:
    """Rounds for `ratio` times the rows `rounds` were found on, within the serving budget."""
    scaled = round(rounds * min(MAX_ROUNDS_SCALE, max(1.0, ratio)))
    return max(1, min(candidate.max_trees, scaled))


@dataclass
class Trials:
    """Every candidate tried on some folds: what each scored, and its out-of-fold margins (NaN
    outside the folds' evaluation rows), in the order tried."""

    tried: list[JSONObject]
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
    record: JSONObject

    def rounds_for(self, rows: float) -> int:
        """The rounds for a model learning from `rows` rows."""
        return scaled(self.candidate, self.rounds, rows / self.train_rows)


def trials(
    fitter: Fitter,
    folds: list[Fold],
    columns: dict[str, list[str]],
    *,
    tried_one: Callable[[], None] = lambda: None,
) -> Trials:
    """Every candidate on each column set (the compact one first: simpler), each stopped early
    on its folds' evaluation rows, until the search's time is spent; `tried_one` is called
    after each (or each skipped)."""
    options, y = fitter.options, fitter.y
    started = time.monotonic()
    tried: list[JSONObject] = []
    skipped: list[str] = []
    margins: list[np.ndarray] = []
    for candidate, (columns_name, cols) in itertools.product(CANDIDATES, columns.items()):
        if tried and time.monotonic() - started > options.search_seconds:
            skipped.append(f"{candidate.name} ({columns_name})")
            tried_one()
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
        tried_one()
    return Trials(tried, margins, skipped, time.monotonic() - started, len(folds))


def pooled(fitter: Fitter, first: Trials, second: Trials) -> Trials:
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
    return Trials(tried, margins, skipped, first.seconds + second.seconds, n1 + n2)


def choose(
    fitter: Fitter, folds: list[Fold], columns: dict[str, list[str]], trials: Trials
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
    blend, record["blend"], oof = blend_with_regression(fitter, folds, cols, margins[best])
    return Choice(candidate, cols, blend, chosen["rounds"], chosen["train_rows"], oof, record)


def blend_with_regression(
    fitter: Fitter, folds: list[Fold], cols: list[str], trees: np.ndarray
) -> tuple[Blend, JSONObject, np.ndarray]:
    """How the chosen trees and a logistic regression on the same features are blended
    (stacking): the regression is fitted on each search fold's training rows as the trees were,
    and the two weights on both out-of-fold margins. The regression alone, the trees alone or
    the blend, whichever ranks those rows best, the simpler within the paired standard error
    (on a few thousand rows a smooth linear signal is where trees lose to the simple peer they
    are measured against). Returns the blend, what was measured, and the blended out-of-fold
    margins."""
    y, idx = fitter.y, [fitter.names.index(c) for c in cols]
    # The regression's regularisation, chosen on the same folds as the trees' parameters: a
    # wide table with few positives wants it strong, a few strong signals weak.
    by_c: dict[float, np.ndarray] = {}
    for c in REGRESSION_C:
        margins = np.full(len(y), np.nan)
        for fold in folds:
            fitted = fitter.regression(cols, fold.train, c)  # thinned as the search's trees were
            margins[fold.evaluate] = fitted.margin(fitter.x[fold.evaluate][:, idx])
        by_c[c] = margins
    scored = {c: fitter.auc(~np.isnan(m), m) for c, m in by_c.items()}
    c = max(REGRESSION_C, key=lambda c: (scored[c], c == 1.0))  # ties to the usual default
    regression = by_c[c]
    known = ~np.isnan(trees) & ~np.isnan(regression)
    both = np.column_stack([trees[known], regression[known]])
    weights = unpenalised(both, y[known]).coef_[0]
    a, b = float(weights[0]), float(weights[1])
    # Simplest first: the regression alone, the trees alone, then both (only with weights of
    # the same sign: a blend that subtracts one from the other is no explanation a person can
    # follow). The simplest within one standard error of the paired difference from the best
    # is chosen (the rule choose follows between column sets): on a near-linear world the
    # trees' hair of extra AUC on the search's rows is noise, and the regression serves.
    shown = {
        "logistic_regression": (Blend(0.0, 1.0, c), regression[known]),
        "trees": (Blend(), trees[known]),
    }
    if a > 0 and b > 0:
        shown["blend"] = (Blend(a, b, c), both @ weights)
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
        "regression_c": {str(k): v for k, v in scored.items()},
        "fitted": [a, b],
        "auc": aucs,
        "difference_error": errors_,
    }
    return blend, record, margins


def stopper(stop_requested: Callable[[], bool]) -> Callable[[Any], None]:
    def check(_: Any) -> None:
        if stop_requested():
            raise errors.Stopped("training stopped: its job was cancelled or ran out of time")

    return check


def unpenalised(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    """A logistic regression of y on a margin or two (calibration, stacking), all but
    unpenalised. lbfgs may stop on a line search it cannot improve (margins of nearly separated
    rows): what it has reached is used all the same, and each caller keeps it only where it
    measures better than going without."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=1e6, solver="lbfgs").fit(x, y)
