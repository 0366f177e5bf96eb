"""Lifetime value of purchase accounts on CDNOW (the purchase log `lifetimes` ships: 23,570
customers' CD purchases, January 1997 to June 1998): what custintel predicts each customer will
spend in the six months after 1997-09-30, against what each spent, beside the BG/NBD +
Gamma-Gamma peer (`lifetimes`) fitted in the same run on the same calibration log.

    .venv/bin/pip install -q -r bench/requirements-quality.txt   # lifetimes and its data
    .venv/bin/python bench/clv.py

The whole log goes in over HTTP as `purchase` events; the worker fits its models as of the
calibration's end (a `clv_fit` job with `as_of`), and each customer's value is asked for over
HTTP as of then, with a margin of 1, no discount and a six-month horizon: the spend it expects.
The mean absolute error per customer is printed for both, with the standard error of their
paired difference (a difference within one is a tie), next to the target: at or below the peer.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.platform import db, jobs  # noqa: E402
from bench.ingest import create_database, scratch_dir  # noqa: E402
from bench.quality import HEADERS, Purchases, cdnow_log, post_purchases, ready, serve  # noqa: E402

CUT = datetime(1997, 10, 1, tzinfo=UTC)  # calibration: purchases before it
MONTHS = 6
HOLDOUT_END = datetime(1998, 4, 1, tzinfo=UTC)


def log() -> Purchases:
    with warnings.catch_warnings():  # lifetimes (2020) sets a pandas option pandas 3 deprecates
        warnings.simplefilter("ignore")
        return cdnow_log()


def peer(events: Purchases, ids: list[str]) -> np.ndarray:
    """lifetimes' BG/NBD and Gamma-Gamma on the calibration log (purchases by day, as its
    summary_data_from_transaction_data makes them): each customer's expected spend."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter, GammaGammaFitter

        x, t_x, big_t, spend = [], [], [], []
        for account in ids:
            days: dict[datetime, float] = {}
            for t, v in events[account]:
                if t < CUT:
                    day = datetime(t.year, t.month, t.day, tzinfo=UTC)
                    days[day] = days.get(day, 0.0) + v
            ordered = sorted(days)
            x.append(len(ordered) - 1)
            t_x.append((ordered[-1] - ordered[0]).days)
            big_t.append((CUT - timedelta(days=1) - ordered[0]).days)
            repeat = [days[d] for d in ordered[1:]]
            spend.append(statistics.fmean(repeat) if repeat else 0.0)
        xa, ta, ba, sa = (np.array(v, dtype=float) for v in (x, t_x, big_t, spend))
        counts = BetaGeoFitter().fit(xa, ta, ba)
        repeat_mask = (xa > 0) & (sa > 0)
        value = GammaGammaFitter().fit(xa[repeat_mask], sa[repeat_mask])
        purchases = counts.conditional_expected_number_of_purchases_up_to_time(
            MONTHS * 30.4375, xa, ta, ba
        )
        p, q, v = (value.params_[k] for k in ("p", "q", "v"))
        own = np.where(xa > 0, sa, 0.0)
        each = p * (v + xa * own) / (p * xa + q - 1)
    return np.asarray(purchases * each, dtype=float)


async def main() -> None:
    events = log()
    ids = sorted(a for a, seen in events.items() if min(t for t, _ in seen) < CUT)
    actual = np.array(
        [sum(v for t, v in events[a] if CUT <= t < HOLDOUT_END) for a in ids], dtype=float
    )
    scratch = scratch_dir()
    external = os.environ.get("CUSTINTEL_DATABASE_URL")
    server_url = (
        db.plain_url(external)
        if external
        else await asyncio.to_thread(db.start_embedded, scratch / "pg")
    )
    url = await create_database(server_url, "bench_clv")
    port = 19500 + os.getpid() % 400
    settings = {
        "CUSTINTEL_CLV_FIT_EVERY_HOURS": "0",  # the bench's own fit, as of the cut
        "CUSTINTEL_CLV_MARGIN": "1",
        "CUSTINTEL_CLV_DISCOUNT_RATE": "0",
        "CUSTINTEL_CLV_HORIZON_MONTHS": str(MONTHS),
    }
    server = serve(url, scratch / "models", port, scratch / "server.log", settings)
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=600
        ) as client:
            await ready(client)
            t0 = time.perf_counter()
            await post_purchases(client, events)
            purchases = sum(len(seen) for seen in events.values())
            print(
                f"{len(events):,} customers, {purchases:,} purchases loaded in "
                f"{time.perf_counter() - t0:.0f} s",
                flush=True,
            )

            as_of = CUT - timedelta(microseconds=1)
            conn = await asyncpg.connect(url)
            try:
                t0 = time.perf_counter()
                job = await jobs.enqueue(conn, kind="clv_fit", params={"as_of": as_of.isoformat()})
                while True:
                    done = await jobs.get(conn, job.job_id)
                    if done.status in ("succeeded", "failed", "cancelled"):
                        break
                    await asyncio.sleep(0.5)
            finally:
                await conn.close()
            if done.status != "succeeded":
                raise RuntimeError(f"clv_fit {done.status}: {done.error}")
            print(
                f"fitted (with its bootstrap refits) in {time.perf_counter() - t0:.0f} s: "
                f"{done.result}",
                flush=True,
            )

            t0 = time.perf_counter()
            limit = asyncio.Semaphore(8)

            async def value(account: str) -> float:
                async with limit:
                    reply = await client.get(
                        f"/v1/accounts/{account}/clv", params={"as_of": as_of.isoformat()}
                    )
                body = reply.json()
                if reply.status_code != 200 or body["method"] != "purchases":
                    raise RuntimeError(f"{account}: {reply.status_code} {str(body)[:300]}")
                return float(body["clv"])

            ours = np.array(await asyncio.gather(*(value(a) for a in ids)))
            seconds = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)

    theirs = peer(events, ids)
    ours_error, their_error = np.abs(ours - actual), np.abs(theirs - actual)
    paired = ours_error - their_error
    se = float(paired.std(ddof=1) / np.sqrt(len(paired)))
    print(
        f"\n{len(ids):,} customers first seen before {CUT:%Y-%m-%d}; holdout spend "
        f"{CUT:%Y-%m-%d} to {HOLDOUT_END - timedelta(days=1):%Y-%m-%d}, mean {actual.mean():.2f}"
    )
    print(f"values asked over HTTP in {seconds:.0f} s ({len(ids) / seconds:.0f} a second)")
    print(f"{'model':44} {'MAE per customer':>17} {'mean predicted':>15}")
    print(
        f"{'custintel (GET /v1/accounts/{id}/clv)':44} {ours_error.mean():17.3f} "
        f"{ours.mean():15.2f}"
    )
    print(
        f"{'peer: lifetimes BG/NBD + Gamma-Gamma':44} {their_error.mean():17.3f} "
        f"{theirs.mean():15.2f}"
    )
    delta = float(paired.mean())
    verdict = (
        "tie (within one standard error)"
        if abs(delta) <= se
        else "meets target (below the peer)"
        if delta < 0
        else "BELOW TARGET (above the peer)"
    )
    print(
        f"difference {delta:+.4f} (standard error {se:.4f}): {verdict}; target: at or below "
        "the peer"
    )
    print(f"largest gap between the two predictions: {np.abs(ours - theirs).max():.4f}")


if __name__ == "__main__":
    asyncio.run(main())
