"""`custintel demo`: a simulated B2B SaaS sent through the HTTP API (the real path), churn,
expansion and advocacy models trained on it by the worker, every account scored, the riskiest
and the likeliest advocates printed with their reasons, and curl commands to go on with. The
service keeps running afterwards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TextIO

import httpx

from app.demo import simulator
from app.platform import jobs
from app.platform.jsonbody import JSONObject

TARGETS = ("churn", "expansion", "advocacy")


class DemoFailed(Exception):
    pass


async def run(
    base_url: str,
    key: str,
    *,
    accounts: int,
    seed: int,
    out: TextIO,
    people: Sequence[tuple[str, str, str]] = (),
) -> None:
    """`people`: console users made for the demo, as (role, email, password)."""
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=300) as client:
        await _ready(client)
        if (await client.get("/v1/accounts/acct-00000")).status_code == 200:
            print("The demo data is already loaded (delete .custintel to start over).", file=out)
        else:
            await _load(client, accounts=accounts, seed=seed, out=out)
        for target in TARGETS:
            await _train(client, target, out=out)
        job = await _job(client, await client.post("/v1/scores/rescore", json={}), "scoring", out)
        print(f"Scored {job['result']['accounts']:,} live accounts.\n", file=out)
        # Segments churn for different reasons: show the riskiest of each.
        for segment in ("enterprise", "mid-market", "smb"):
            await _show(
                client,
                "churn",
                f"Riskiest {segment} accounts (churn, 90 days)",
                out,
                segment=segment,
                n=2,
            )
        await _show(client, "expansion", "Most likely to expand (90 days)", out, n=3)
        await _show(
            client,
            "advocacy",
            "Likeliest advocates (a referral, review, reference or case study in 90 days)",
            out,
            n=3,
        )
        await _voice(client, out)
        _tour(base_url, key, await _example(client), out, people)


async def _voice(client: httpx.AsyncClient, out: TextIO) -> None:
    """NPS by segment over the last year, and the sentiment of what customers wrote (the
    worker reads every text within seconds of its arrival)."""
    summary: JSONObject = {}
    for _ in range(60):  # until the worker has read the texts
        summary = (await client.get("/v1/voc/summary")).json()
        if not summary["sentiment"]["pending"]:
            break
        await asyncio.sleep(1)
    print("Voice of the customer over the last year (GET /v1/voc/summary):", file=out)
    for row in [{"segment": "all", **summary["overall"]}, *summary["by_segment"]]:
        nps = row["nps"]
        if nps["nps"] is None:
            continue
        low, high = nps["interval"]
        print(
            f"  NPS {row['segment'] or 'no segment'}: {nps['nps']:+.0f} "
            f"(95% {low:+.0f} to {high:+.0f}; {nps['responses']:,} answers, "
            f"{nps['promoters']:,} promoters, {nps['detractors']:,} detractors)",
            file=out,
        )
    mix = summary["sentiment"]
    print(
        f"  What customers wrote: {mix['texts']:,} texts, {mix['negative']:,} negative, "
        f"{mix['neutral']:,} neutral, {mix['positive']:,} positive"
        + (f" ({mix['pending']:,} not read yet)" if mix["pending"] else ""),
        file=out,
    )
    learnt: list[JSONObject] = []
    for _ in range(60):  # the worker learns the themes once it has read the texts
        learnt = (await client.get("/v1/voc/themes")).json()
        if learnt:
            break
        await asyncio.sleep(1)
    print("  What they wrote about (GET /v1/voc/themes), the last 30 days:", file=out)
    for theme in [t for t in learnt if t["coherent"]][:5]:  # unnamed ones are about no subject
        print(f"    {theme['name']}: {theme['texts_30d']:,} texts", file=out)
    if not learnt:
        print("    (the themes are not learnt yet)", file=out)
    print(file=out)


async def _ready(client: httpx.AsyncClient) -> None:
    for _ in range(600):
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise DemoFailed("the service did not become ready")


async def _load(client: httpx.AsyncClient, *, accounts: int, seed: int, out: TextIO) -> None:
    end = datetime.now(UTC).replace(microsecond=0)
    started = time.monotonic()
    world = await asyncio.to_thread(simulator.generate, accounts=accounts, end=end, seed=seed)
    print(
        f"Simulated a year of a B2B SaaS: {accounts:,} accounts, {len(world.contacts):,} "
        f"contacts, {len(world.events):,} events, {len(world.outcomes):,} outcomes.",
        file=out,
    )
    plan = [
        ("/v1/accounts/batch", "accounts", world.accounts, 1000),
        ("/v1/contacts/batch", "contacts", world.contacts, 1000),
        ("/v1/events/batch", "events", world.events, 5000),
        ("/v1/outcomes/batch", "outcomes", world.outcomes, 5000),
    ]
    for path, field, items, size in plan:
        # Upserts of one kind go in order (a later observation of an account follows the
        # earlier one); events and outcomes are independent and go four batches at a time.
        lanes = 1 if field in ("accounts", "contacts") else 4
        await _send(client, path, field, list(simulator.batches(items, size)), lanes, out)
    print(f"Loaded in {time.monotonic() - started:.0f} s.\n", file=out)


async def _send(
    client: httpx.AsyncClient,
    path: str,
    field: str,
    chunks: list[list[JSONObject]],
    lanes: int,
    out: TextIO,
) -> None:
    sent = 0

    async def lane(first: int) -> None:
        nonlocal sent
        for chunk in chunks[first::lanes]:
            response = await client.post(path, json={field: chunk})
            body = response.json()
            if response.status_code != 200 or body.get("errors"):
                raise DemoFailed(f"{path} refused data: {str(body)[:500]}")
            sent += len(chunk)
            if tty:  # elsewhere (a log, a pipe) one whole line once they are sent
                print(f"\rSending {field} through the API: {sent:,}", end="", file=out, flush=True)

    tty = out.isatty()
    await asyncio.gather(*(lane(n) for n in range(lanes)))
    print("" if tty else f"Sent {field} through the API: {sent:,}", file=out, flush=True)


async def _train(client: httpx.AsyncClient, target: str, *, out: TextIO) -> None:
    models = (await client.get("/v1/models", params={"target": target})).json()
    active = [m for m in models if m["status"] == "active"]
    if active:
        print(f"{target}: using the active model {active[0]['model_id']}.", file=out)
        return
    job = await _job(
        client, await client.post("/v1/models/train", json={"target": target}), target, out
    )
    model = (await client.get(f"/v1/models/{job['result']['model_id']}")).json()
    metrics, segments = model["metrics"], model["segments"]
    own = sorted(s for s, e in segments.items() if e.get("model") == "segment")
    print(
        f"  model {model['model_id']}: held-out AUC {metrics['auc']:.2f}, lift in the top 10% "
        f"{metrics['lift_at_10']:.1f}x, {metrics['n_train']:,} training rows; "
        f"own models for {', '.join(own) or 'no segment'}, the global one for the rest.",
        file=out,
    )
    if model["status"] != "active":
        # The gate keeps a model that does not beat its simple peers; an operator can still put
        # it to work (audited), as the demo does so that every part can be seen.
        print(f"  It was {model['status_reason']}", file=out)
        await client.post(f"/v1/models/{model['model_id']}/activate")
        print("  The demo activates it anyway (POST /v1/models/{id}/activate).", file=out)


async def _job(
    client: httpx.AsyncClient, queued: httpx.Response, label: str, out: TextIO
) -> JSONObject:
    if queued.status_code != 202:
        raise DemoFailed(f"{label}: {queued.text[:500]}")
    job_id = queued.json()["job_id"]
    shown = jobs.Shown(out, f"{label:<10}")
    while True:
        job: JSONObject = (await client.get(f"/v1/jobs/{job_id}")).json()
        stage = None if job.get("stage") is None else jobs.Stage(**job["stage"])
        shown.show(jobs.Report(job["progress"], stage, job.get("eta_seconds")))
        if job["status"] == "succeeded":
            shown.end()
            return job
        if job["status"] == "failed":
            raise DemoFailed(f"{label} failed: {job['error']}")
        await asyncio.sleep(0.5)


async def _show(
    client: httpx.AsyncClient,
    target: str,
    title: str,
    out: TextIO,
    *,
    n: int,
    segment: str | None = None,
) -> None:
    params: JSONObject = {"target": target, "limit": n}
    if segment:
        params["segment"] = segment
    listed = (await client.get("/v1/scores", params=params)).json()
    print(title, file=out)
    for entry in listed["results"]:
        score = entry["score"]
        print(
            f"  {entry['account_id']}  {score['segment']:<10} {score['probability']:6.1%}  "
            f"{score['band']} (percentile {score['percentile']:.0f} in its segment)",
            file=out,
        )
        for reason in score["reasons"]:  # the text says which way it moves the score
            print(f"      {reason['text']}", file=out)
    print(file=out)


async def _example(client: httpx.AsyncClient) -> str:
    listed = (await client.get("/v1/scores", params={"target": "churn", "limit": 1})).json()
    return str(listed["results"][0]["account_id"]) if listed["results"] else "acct-00000"


def _tour(
    base_url: str, key: str, account_id: str, out: TextIO, people: Sequence[tuple[str, str, str]]
) -> None:
    if people:
        print(f"The console for the people who act: {base_url}/app/ . Sign in as", file=out)
        for role, email, password in people:
            sees = "every account" if role != "csm" else "the accounts they own"
            print(f"  {email}  password {password}  ({role}: sees {sees})", file=out)
        print("The passwords are shown once; `custintel users create` makes more.\n", file=out)
    earlier = (datetime.now(UTC) - timedelta(days=90)).strftime("%Y-%m-%dT00:00:00Z")
    print(
        f"""Go on from here (the key below has the admin scope; it is shown once):

  export KEY={key}
  curl -s '{base_url}/v1/accounts/{account_id}/scores?target=churn&target=expansion' \\
       -H "Authorization: Bearer $KEY"
  curl -s '{base_url}/v1/scores?target=churn&segment=enterprise&band=high&limit=10' \\
       -H "Authorization: Bearer $KEY"
  curl -s '{base_url}/v1/accounts/{account_id}/scores?target=churn&as_of={earlier}' \\
       -H "Authorization: Bearer $KEY"
  curl -s '{base_url}/v1/models?target=churn' -H "Authorization: Bearer $KEY"

The API is browsable at {base_url}/docs. Ctrl-C stops the service.""",
        file=out,
        flush=True,
    )
