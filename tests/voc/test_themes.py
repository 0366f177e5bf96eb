from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import numpy as np

from app.platform.settings import Settings
from app.voc import enrich, sentiment, themes
from tests.conftest import run_queued_job

PLANTED = {
    "export": ["the csv export keeps failing", "export to csv is broken", "csv export times out"],
    "billing": [
        "we were charged twice",
        "the invoice shows a double charge",
        "charged twice again",
    ],
    "sso": ["single sign-on login fails", "sso login broken for our team", "cannot login with sso"],
}


async def run_rematch_job(settings: Settings) -> None:
    """Run the `themes_rematch` job queued by the request, as a worker does."""
    done = await run_queued_job(settings, "themes_rematch")
    assert int(str(done.get("texts", 0))) > 0


def texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    kinds = [rng.choice(sorted(PLANTED)) for _ in range(n)]
    return [
        f"{rng.choice(PLANTED[k])} {rng.choice(['', 'today', 'please help'])}" for k in kinds
    ], kinds


async def load(
    client: httpx.AsyncClient, conn: asyncpg.Connection, written: list[str], *, spread_hours: int
) -> list[dict[str, Any]]:
    """The texts sent as tickets of 30 accounts, each read (sentiment) as the worker would."""
    now = datetime.now(UTC)
    events = [
        {
            "event_id": f"t-{n}",
            "type": "ticket_opened",
            "occurred_at": (now - timedelta(hours=n % spread_hours)).isoformat(),
            "account_id": f"a{n % 30}",
            "text": t,
        }
        for n, t in enumerate(written)
    ]
    response = await client.post("/v1/events/batch", json={"events": events})
    assert response.json()["accepted"] == len(events)
    assert await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=2000) == len(events)
    return events


def test_planted_themes_are_found_named_and_matched() -> None:
    written, kinds = texts(900, seed=1)
    fitted = themes.fit(written, previous=[])
    assert fitted is not None
    assigned = [themes.match(themes.terms_of(t), fitted.themes) for t in written]
    by_kind: dict[str, set[str]] = {}
    for kind, found in zip(kinds, assigned, strict=True):
        by_kind.setdefault(kind, set()).update(found[:1])
    # Each planted theme's texts land mostly on one theme of their own.
    leading = {
        k: max(
            v,
            key=lambda t: sum(
                1 for kk, f in zip(kinds, assigned, strict=True) if kk == k and f[:1] == [t]
            ),
        )
        for k, v in by_kind.items()
    }
    assert len(set(leading.values())) == 3
    names = {t.theme_id: t.name for t in fitted.themes}
    assert "csv" in names[leading["export"]] or "export" in names[leading["export"]]


def test_a_refit_keeps_the_ids_of_the_themes_it_finds_again() -> None:
    first = themes.fit(texts(900, seed=1)[0], previous=[])
    assert first is not None
    second = themes.fit(texts(900, seed=2)[0], previous=first.themes)
    assert second is not None
    assert {t.theme_id for t in first.themes} & {t.theme_id for t in second.themes}


def test_too_few_texts_make_no_themes() -> None:
    assert themes.fit(["one text"] * 10, previous=[]) is None


async def test_a_refit_stores_themes_and_every_text_is_matched_to_them(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    written, kinds = texts(900, seed=3)
    events = await load(client, conn, written, spread_hours=len(written))
    analyzer = sentiment.Analyzer()
    done = await themes.refit(conn)
    assert done["texts"] == len(events) and done["themes"] >= 3
    about = dict(await conn.fetch("SELECT event_id, themes FROM text_enrichments"))
    assert sum(1 for ids in about.values() if ids) / len(about) > 0.8
    # The export texts share a leading theme, which no billing text leads with.
    export = {about[f"t-{n}"][0] for n, k in enumerate(kinds) if k == "export" and about[f"t-{n}"]}
    billing = {
        about[f"t-{n}"][0] for n, k in enumerate(kinds) if k == "billing" and about[f"t-{n}"]
    }
    assert len(export) == 1 and not export & billing
    # A new text is matched as it is read; a second refit keeps the ids it finds again.
    new = {**events[0], "event_id": "late", "text": "the csv export keeps failing today"}
    await client.post("/v1/events", json=new)
    assert await enrich.enrich_pending(conn, analyzer, limit=10) == 1
    [late] = await conn.fetchval(
        "SELECT array_agg(themes[1]) FROM text_enrichments WHERE event_id = 'late'"
    )
    assert late in export
    before = {r[0] for r in await conn.fetch("SELECT theme_id FROM themes")}
    await themes.refit(conn, seed=1)
    after = {r[0] for r in await conn.fetch("SELECT theme_id FROM themes WHERE retired_at IS NULL")}
    assert before & after


async def test_operators_rename_merge_pin_and_seed_themes_over_the_api(
    client: httpx.AsyncClient, conn: asyncpg.Connection, settings: Settings
) -> None:
    written, _ = texts(900, seed=4)
    events = await load(client, conn, written, spread_hours=500)
    await themes.refit(conn)
    listed = (await client.get("/v1/voc/themes")).json()
    assert len(listed) >= 3 and all(t["texts_30d"] > 0 for t in listed[:3])
    timeline = (await client.get("/v1/accounts/a0/events")).json()["items"]
    about = [e["themes"] for e in timeline if e["themes"]]
    assert len(about) >= 0.8 * len(timeline)
    assert all(ids[0] in {t["theme_id"] for t in listed} for ids in about)

    first, second = listed[0], listed[1]
    renamed = await client.patch(f"/v1/voc/themes/{first['theme_id']}", json={"name": "Exports"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "Exports"
    merged = await client.patch(
        f"/v1/voc/themes/{second['theme_id']}", json={"merge_into": first["theme_id"]}
    )
    assert merged.json()["merged_into"] == first["theme_id"]
    # The texts are matched again off the request path, by a job the merge enqueued.
    await run_rematch_job(settings)
    after = {t["theme_id"]: t for t in (await client.get("/v1/voc/themes")).json()}
    # The merged theme's texts now count for the one it went into.
    assert after[first["theme_id"]]["texts_30d"] >= first["texts_30d"] + second["texts_30d"] * 0.9
    assert after[second["theme_id"]]["texts_30d"] == 0
    itself = await client.patch(
        f"/v1/voc/themes/{first['theme_id']}", json={"merge_into": first["theme_id"]}
    )
    assert itself.status_code == 409
    assert (await client.patch("/v1/voc/themes/nope", json={"pinned": True})).status_code == 404
    # Two crossing merges at once: one wins, the other is refused; no cycle.
    third = listed[2]["theme_id"]
    crossing = await asyncio.gather(
        client.patch(f"/v1/voc/themes/{third}", json={"merge_into": first["theme_id"]}),
        client.patch(f"/v1/voc/themes/{first['theme_id']}", json={"merge_into": third}),
    )
    assert sorted(r.status_code for r in crossing) == [200, 409], [r.text for r in crossing]
    rows = dict(await conn.fetch("SELECT theme_id, merged_into FROM themes"))
    assert not any(rows.get(into) == theme for theme, into in rows.items() if into)
    # A merge undone: the theme stands alone again, and its texts count for it once more.
    for theme in (second["theme_id"], third, first["theme_id"]):
        undone = await client.patch(f"/v1/voc/themes/{theme}", json={"merge_into": None})
        assert undone.status_code == 200 and undone.json()["merged_into"] is None
    await run_rematch_job(settings)
    again_listed = {t["theme_id"]: t for t in (await client.get("/v1/voc/themes")).json()}
    assert again_listed[second["theme_id"]]["texts_30d"] > 0

    seeded = await client.post(
        "/v1/voc/themes", json={"name": "Pricing", "keywords": ["price", "expensive"]}
    )
    assert seeded.status_code == 201 and seeded.json()["seed"] and seeded.json()["pinned"]
    again = await client.post("/v1/voc/themes", json={"name": "Pricing", "keywords": ["cost"]})
    assert again.status_code == 409
    await run_rematch_job(settings)
    listed = {t["theme_id"]: t for t in (await client.get("/v1/voc/themes")).json()}
    assert listed[seeded.json()["theme_id"]]["texts_30d"] == 0  # no text says price yet
    await client.post(
        "/v1/events",
        json={**events[0], "event_id": "p-1", "text": "The new price is too expensive for us"},
    )
    await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=10)
    [read] = [
        e
        for e in (await client.get("/v1/accounts/a0/events")).json()["items"]
        if e["event_id"] == "p-1"
    ]
    assert read["themes"][0] == seeded.json()["theme_id"]
    # A refit keeps the name an operator gave and the seed.
    await themes.refit(conn, seed=2)
    kept = {t["theme_id"]: t for t in (await client.get("/v1/voc/themes")).json()}
    assert seeded.json()["theme_id"] in kept
    if first["theme_id"] in kept:
        assert kept[first["theme_id"]]["name"] == "Exports"
    summary = (await client.get("/v1/voc/summary")).json()
    assert summary["themes"] and summary["themes"][0]["texts"] > 0


async def test_themes_are_learnt_again_once_the_texts_have_doubled(
    client: httpx.AsyncClient, conn: asyncpg.Connection
) -> None:
    written, _ = texts(1200, seed=5)
    now = datetime.now(UTC)

    async def send(part: list[str], first: int) -> None:
        events = [
            {
                "event_id": f"d-{first + n}",
                "type": "ticket_opened",
                "occurred_at": (now - timedelta(hours=n)).isoformat(),
                "account_id": f"a{n % 30}",
                "text": t,
            }
            for n, t in enumerate(part)
        ]
        assert (await client.post("/v1/events/batch", json={"events": events})).status_code == 200
        await enrich.enrich_pending(conn, sentiment.Analyzer(), limit=2000)

    day = timedelta(days=1)
    await send(written[:300], 0)
    assert await themes.refit_if_due(conn, every=day) is not None  # the first themes
    await send(written[300:500], 300)
    assert await themes.refit_if_due(conn, every=day) is None  # 200 more: not doubled
    await send(written[500:], 500)
    again = await themes.refit_if_due(conn, every=day)
    assert again is not None and again["texts"] == 1200


def test_a_theme_is_named_by_words_written_together_and_one_about_no_subject_is_flagged() -> None:
    from scipy import sparse

    texts = (
        ["alpha beta"] * 20  # alpha and beta are written together
        + ["gamma"] * 20  # gamma never with alpha
        + ["delta"] * 20
        + ["eps"] * 20  # delta and eps never together
    )
    column = {w: i for i, w in enumerate(["alpha", "beta", "gamma", "delta", "eps"])}
    present = sparse.csc_matrix(
        [[int(w in t.split()) for w in column] for t in texts], dtype=np.int64
    )
    found = [
        [("alpha", 0.4), ("gamma", 0.3), ("beta", 0.2), ("alpha beta", 0.1)],
        [("delta", 0.5), ("eps", 0.5)],
    ]
    (one, one_ok, together), (two, two_ok, _) = themes.assess(found, present, column)
    assert one_ok and one is not None and two_ok is False and two == -1.0
    assert themes._name(found[0], together) == "alpha, beta"  # not "alpha, gamma, beta"
    # A theme whose leading words all lead other themes is no subject of its own.
    shared = [found[0], [("beta", 0.6), ("alpha", 0.4)], [("gamma", 0.5), ("alpha", 0.5)]]
    assert [ok for _, ok, _ in themes.assess(shared, present, column)][1] is False


async def test_matching_themes_waits_for_a_writer_of_the_same_texts_without_a_deadlock(
    client: httpx.AsyncClient, conn: asyncpg.Connection, database_url: str
) -> None:
    # Another writer (the re-reading of sentiment) locks texts in the order of their ids. The
    # matching must take them in that order too, whatever order it is given them and whatever
    # order its UPDATE's join visits them in: then it waits on the first one held and holds none
    # that the other writer reaches next.
    written, _ = texts(40, seed=5)
    await load(client, conn, written, spread_hours=len(written))
    stored = [r[0] for r in await conn.fetch("SELECT event_id FROM text_enrichments ORDER BY ctid")]
    given = stored[2:11]  # as stored, so that a scan or the array meets given[0] first
    first = min(given)
    assert first != given[0]  # what the test rests on
    other = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE text_enrichments SET label = label WHERE event_id = $1", first
            )

            async def match() -> int:
                async with other.transaction():
                    return await themes.rematch(other, given, [written[int(i[2:])] for i in given])

            matching = asyncio.create_task(match())
            for _ in range(200):  # until the matching waits on a lock
                if await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 "
                    "AND wait_event_type = 'Lock'",
                    other.get_server_pid(),
                ):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the matching never waited on the locked text")
            await conn.execute(
                "UPDATE text_enrichments SET label = label WHERE event_id = $1", given[0]
            )
        assert await asyncio.wait_for(matching, 30) >= 0
    finally:
        await other.close()


async def test_examples_are_each_themes_newest_texts_common_or_rare(
    client: httpx.AsyncClient, conn: asyncpg.Connection, monkeypatch: Any
) -> None:
    monkeypatch.setattr(themes, "RECENT", 3)  # the newest texts hold only the common theme
    start = datetime(2026, 3, 1, tzinfo=UTC)
    events, tagged = [], []
    for n in range(8):
        theme = "rare" if n < 3 else "common"
        event_id = f"t-{n}"
        at = start + timedelta(days=n)
        events.append(
            {
                "event_id": event_id,
                "type": "ticket_opened",
                "occurred_at": at.isoformat(),
                "account_id": f"acct-{n % 3}",
                "text": f"{theme} words number {n}",
            }
        )
        tagged.append((event_id, at, [theme]))
    answer = await client.post("/v1/events/batch", json={"events": events})
    assert answer.status_code == 200 and answer.json()["accepted"] == 8, answer.text
    for event_id, at, listed in tagged:
        await conn.execute(
            "INSERT INTO text_enrichments (event_id, received_at, sentiment, label, themes) "
            "VALUES ($1, $2, 0, 'neutral', $3) ON CONFLICT (event_id) DO UPDATE "
            "SET received_at = $2, themes = $3",
            event_id,
            at,
            listed,
        )

    found = await themes.examples(conn, ["common", "rare", "none"])

    assert [e.event_id for e in found["common"]] == ["t-7", "t-6"]
    assert [e.event_id for e in found["rare"]] == ["t-2", "t-1"]  # older than the newest 3
    assert found["none"] == []
    assert found["rare"][0].text == "rare words number 2"
    assert found["rare"][0].account_id == "acct-2"
