"""Themes of what customers write, learned per installation from its own texts.

- fit: TF-IDF over words and word pairs (English stop words out, terms in at least MIN_DF texts
  and at most half of them), then NMF into k themes; each theme's top terms, and a readable name
  from its top three. k is the largest (at most MAX_THEMES, and one per TEXTS_PER_THEME texts)
  at which the themes stay distinct: no theme's leading word is among another's first words.
  Past the number of themes the texts hold, NMF splits a theme by its phrasings ("invoice
  totals", "invoice for extra seats"), and the parts share their leading word; below it, unlike
  themes are joined. Candidates are tried from the largest down, within FIT_SECONDS.
- stable ids across refits: a new theme takes the id of the previous theme whose term weights it
  is closest to (cosine at least MATCH), so counts stay comparable from one refit to the next;
  otherwise it gets a new id.
- match: a text is about the themes whose terms it holds enough of (so that a seed theme,
  defined by keywords, matches as a learnt one does, and matching needs no fitted model).
- the refit runs in the worker (app.voc.enrich); a merge or a seed theme enqueues a
  `themes_rematch` job, so that recent texts are matched again off the request path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import numpy as np
import orjson

from app import voc
from app.platform import errors, jobs
from app.platform.jsonbody import JSONObject
from app.schemas.voc import ThemeCount, ThemeOut

if TYPE_CHECKING:  # scikit-learn is imported where a fit or a text's terms need it: an API
    # process that never reads a text does not pay its second of import
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

MIN_DF = 5
MAX_THEMES = 20
TEXTS_PER_THEME = 100
TOP_TERMS = 8
MATCH = 0.5
HEAD_WORDS = 3
JOINED = 0.05
WEIGHTY = 0.3
FIT_SECONDS = 120.0


@dataclass
class Theme:
    theme_id: str
    name: str
    terms: list[tuple[str, float]]  # the top terms and their weights, heaviest first
    coherence: float | None = None  # NPMI of its first word with its next leading words
    coherent: bool = True  # about one subject: named, and a feature


@dataclass
class Fitted:
    vectorizer: TfidfVectorizer
    nmf: NMF
    themes: list[Theme] = field(default_factory=list)


def _name(terms: list[tuple[str, float]], together: set[str] | None = None) -> str:
    """Up to three of its top terms, none inside another; with `together`, only terms written
    with its first word (a theme named "excellent, reporting, failing" joined two subjects)."""
    words: list[str] = []
    for term, _ in terms:
        if words and together is not None and term not in together:
            continue
        if not any(term in w or w in term for w in words):
            words.append(term)
        if len(words) == 3:
            break
    return ", ".join(words)


def _npmi(present: Any, a: int, b: int) -> float:
    """Normalised pointwise mutual information of two terms' presence in the texts: 1 always
    together, 0 independent, -1 never together."""
    n = present.shape[0]
    pa, pb = present[:, a].sum() / n, present[:, b].sum() / n
    pab = present[:, a].multiply(present[:, b]).sum() / n
    if pab == 0:
        return -1.0
    if pab == 1:
        return 1.0
    return float(math.log(pab / (pa * pb)) / -math.log(pab))


def assess(
    found: list[list[tuple[str, float]]], present: Any, column: dict[str, int]
) -> list[tuple[float | None, bool, set[str]]]:
    """For each theme: its coherence (the mean NPMI of its first word with its next leading
    words, over the texts), whether it is about one subject (its first word is written with at
    least one of them, and one of its leading words leads no other theme), and the terms
    written with its first word (its name is made of those)."""
    heads = [[t for t, _ in terms if " " not in t and t in column][:HEAD_WORDS] for terms in found]
    assessed: list[tuple[float | None, bool, set[str]]] = []
    for i, terms in enumerate(found):
        words = heads[i]
        if len(words) < 2:
            assessed.append((None, True, {t for t, _ in terms}))
            continue
        first, partners = words[0], words[1:]
        scores = {w: _npmi(present, column[first], column[w]) for w in partners}
        # terms written with the first: its partners that co-occur, and phrases of those
        together = {w for w, v in scores.items() if v > 0}
        together |= {t for t, _ in terms if " " in t and set(t.split()) <= together | {first}}
        others = {w for j, head in enumerate(heads) if j != i for w in head}
        own = any(w not in others for w in words)
        coherence = sum(scores.values()) / len(scores)
        assessed.append((coherence, max(scores.values()) > 0 and own, together))
    return assessed


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(w * b.get(t, 0.0) for t, w in a.items())
    norm = math.sqrt(sum(w * w for w in a.values())) * math.sqrt(sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0


def _new_id(terms: list[tuple[str, float]]) -> str:
    return "th_" + hashlib.sha256("\x00".join(t for t, _ in terms).encode()).hexdigest()[:12]


def _terms(component: np.ndarray, vocabulary: np.ndarray) -> list[tuple[str, float]]:
    top = np.argsort(-component, kind="stable")[:TOP_TERMS]
    total = float(component[top].sum()) or 1.0
    return [(str(vocabulary[i]), float(component[i]) / total) for i in top]


def _faults(found: list[list[tuple[str, float]]], x: Any, column: dict[str, int]) -> int:
    """What speaks against a set of themes, from each theme's leading words (its first
    HEAD_WORDS words weighing at least WEIGHTY of the first's): pairs of themes sharing one
    (one theme split in two), and themes with a leading word seldom written with the first, in
    under JOINED of the texts holding the rarer (two themes joined)."""
    heads = []
    for terms in found:
        weighed = [(t, w) for t, w in terms if " " not in t][:HEAD_WORDS]
        heads.append([t for t, w in weighed if w >= WEIGHTY * weighed[0][1]])
    faults = sum(1 for i, a in enumerate(heads) for b in heads[i + 1 :] if set(a) & set(b))
    columns = sorted({column[w] for head in heads for w in head})
    index = {c: n for n, c in enumerate(columns)}
    present = (x[:, columns] > 0).astype(np.int64)
    counts = np.asarray(present.sum(axis=0)).ravel()
    together = (present.T @ present).toarray()
    for head in heads:
        if not head:
            continue
        first, *others = [index[column[w]] for w in head]
        faults += any(together[first, o] < JOINED * min(counts[first], counts[o]) for o in others)
    return int(faults)


def fit(texts: list[str], *, previous: list[Theme], seed: int = 0) -> Fitted | None:
    """Themes of `texts`, ids carried over from `previous`; None with too few texts."""
    most = min(MAX_THEMES, len(texts) // TEXTS_PER_THEME)
    if most < 2:
        return None
    from sklearn.decomposition import NMF
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        stop_words="english",
        ngram_range=(1, 2),
        min_df=MIN_DF,
        max_df=0.5,
        sublinear_tf=True,
        max_features=20_000,
    )
    try:
        x = vectorizer.fit_transform(texts)
    except ValueError:  # no term in enough texts
        return None
    most = min(most, x.shape[1] - 1)
    if most < 2:
        return None
    vocabulary = vectorizer.get_feature_names_out()
    column = {str(term): i for i, term in enumerate(vocabulary)}
    chosen: tuple[int, NMF, list[list[tuple[str, float]]]] | None = None
    started = time.monotonic()
    for k in range(most, 1, -1):
        nmf = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=400)
        nmf.fit(x)
        found = [_terms(c, vocabulary) for c in nmf.components_]
        faults = _faults(found, x, column)
        if chosen is None or faults < chosen[0]:
            chosen = (faults, nmf, found)
        if faults == 0 or time.monotonic() - started > FIT_SECONDS:
            break
    assert chosen is not None
    _, nmf, found = chosen
    present = (x > 0).astype(np.int64).tocsc()
    assessed = assess(found, present, column)
    taken: set[str] = set()
    themes = []
    for terms, (coherence, coherent, together) in zip(found, assessed, strict=True):
        weights = dict(terms)
        best = max(
            (p for p in previous if p.theme_id not in taken),
            key=lambda p: _cosine(weights, dict(p.terms)),
            default=None,
        )
        if best is not None and _cosine(weights, dict(best.terms)) >= MATCH:
            theme_id = best.theme_id
        else:
            theme_id = _new_id(terms)
        taken.add(theme_id)
        # A theme about no one subject stays unnamed ("") and is no feature (app.ml.features).
        name = _name(terms, together) if coherent else ""
        themes.append(Theme(theme_id, name, terms, coherence, coherent))
    return Fitted(vectorizer, nmf, themes)


# --- themes in Postgres: the refit, and the themes of each text -------------------------------

MATCH_SCORE = 0.2  # a text is about a theme when its terms hold this much of the theme's weight
REFIT_TEXTS = 50_000  # a refit learns from this many texts, the newest


@functools.cache
def _analyzer() -> Callable[[str], list[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyze: Callable[[str], list[str]] = TfidfVectorizer(
        stop_words="english", ngram_range=(1, 2)
    ).build_analyzer()
    return analyze


def terms_of(text: str) -> set[str]:
    """The words and word pairs of a text, as the fit reads them."""
    return set(_analyzer()(text[:5_000]))


def match(terms: set[str], candidates: list[Theme]) -> list[str]:
    """The themes a text with these terms is about, the strongest first: those whose terms it
    holds at least MATCH_SCORE of (a seed theme's keywords weigh 1 each: one is enough)."""
    scored = []
    for theme in candidates:
        score = sum(w for term, w in theme.terms if term in terms)
        if score >= MATCH_SCORE:
            scored.append((-score, theme.theme_id))
    return [theme_id for _, theme_id in sorted(scored)]


def seed_terms(keywords: list[str]) -> list[tuple[str, float]]:
    return [(" ".join(_analyzer()(k)) or k.lower(), 1.0) for k in keywords]


async def active(conn: asyncpg.Connection) -> list[Theme]:
    """The themes texts are matched against: not retired, not merged into another (a merged
    theme's terms count for the one it was merged into)."""
    rows = await conn.fetch(
        "SELECT theme_id, name, terms, merged_into, coherence, coherent FROM themes "
        "WHERE retired_at IS NULL"
    )
    themes: dict[str, Theme] = {}
    merged: list[asyncpg.Record] = []
    for r in rows:
        if r["merged_into"] is None:
            themes[r["theme_id"]] = Theme(
                r["theme_id"],
                r["name"],
                [tuple(t) for t in orjson.loads(r["terms"])],
                r["coherence"],
                r["coherent"],
            )
        else:
            merged.append(r)
    for r in merged:
        into = themes.get(r["merged_into"])
        if into is not None:
            into.terms = into.terms + [tuple(t) for t in orjson.loads(r["terms"])]
    return list(themes.values())


_REFIT_LOCK = 0x7E47_0003  # one worker refits at a time


async def refit_if_due(conn: asyncpg.Connection, *, every: timedelta) -> dict[str, int] | None:
    """Refit when no theme was learnt yet and there are texts enough, when the last refit is
    older than `every`, or when the texts have doubled since it (while they are fewer than a
    refit reads: themes learnt from a new installation's first few hundred texts would
    otherwise stand for a day); what the refit did, or None."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _REFIT_LOCK):
            return None
        last = await conn.fetchval(
            "SELECT max(updated_at) FROM themes WHERE NOT seed AND merged_into IS NULL"
        )
        if last is not None and await conn.fetchval("SELECT now() - $1::timestamptz", last) < every:
            before = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM text_enrichments WHERE enriched_at <= $1 "
                "LIMIT $2) t",
                last,
                REFIT_TEXTS,
            )
            if before >= REFIT_TEXTS:
                return None
            since = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM text_enrichments WHERE enriched_at > $1 "
                "LIMIT $2) t",
                last,
                max(before, 1),
            )
            if since < max(before, 1):
                return None
        if last is None:
            enough = 2 * TEXTS_PER_THEME
            have = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM text_enrichments LIMIT $1) t", enough
            )
            if have < enough:
                return None
        return await refit(conn)


async def refit(conn: asyncpg.Connection, *, seed: int = 0) -> dict[str, int]:
    """Learn the themes again from the recent texts, keeping the ids (and operators' names) of
    those found again, retiring learnt ones not found again unless pinned, then match every
    recent text again; what changed, counted."""
    rows = await _recent(conn)
    previous = [
        Theme(r["theme_id"], r["name"], [tuple(t) for t in orjson.loads(r["terms"])])
        for r in await conn.fetch(
            "SELECT theme_id, name, terms FROM themes WHERE NOT seed AND retired_at IS NULL "
            "AND merged_into IS NULL"
        )
    ]
    texts = [r["text"] for r in rows]
    fitted = await asyncio.to_thread(fit, texts, previous=previous, seed=seed)
    found = fitted.themes if fitted else []
    if not found:  # too few texts, or too few shared words: the themes stay as they were
        return {"texts": len(texts), "themes": 0, "retired": 0, "matched": 0}
    async with conn.transaction():
        for theme in found:
            await conn.execute(
                "INSERT INTO themes (theme_id, name, terms, coherence, coherent) "
                "VALUES ($1, $2, $3::jsonb, $4, $5) "
                "ON CONFLICT (theme_id) DO UPDATE SET terms = excluded.terms, "
                "name = CASE WHEN themes.renamed THEN themes.name ELSE excluded.name END, "
                "coherence = excluded.coherence, coherent = excluded.coherent, "
                "retired_at = NULL, updated_at = now()",
                theme.theme_id,
                theme.name,
                orjson.dumps(theme.terms).decode(),
                theme.coherence,
                theme.coherent,
            )
        retired = await conn.execute(
            "UPDATE themes SET retired_at = now() WHERE NOT seed AND NOT pinned "
            "AND retired_at IS NULL AND merged_into IS NULL AND NOT (theme_id = ANY($1::text[]))",
            [t.theme_id for t in found],
        )
        matched = await rematch(conn, [r["event_id"] for r in rows], texts)
    return {
        "texts": len(texts),
        "themes": len(found),
        "retired": int(retired.split()[-1]),
        "matched": matched,
    }


async def _recent(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """The texts a refit learns from and a rematch matches again: the newest REFIT_TEXTS
    enriched ones written by now (the newest, not those of the last days: a backfilled
    history's themes are learnt from its own latest texts)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT e.event_id, e.text FROM events e "
        "JOIN text_enrichments x ON x.event_id = e.event_id "
        "WHERE e.text IS NOT NULL AND e.occurred_at <= now() "
        "ORDER BY e.occurred_at DESC LIMIT $1",
        REFIT_TEXTS,
    )
    return rows


async def rematch_recent(conn: asyncpg.Connection) -> dict[str, int]:
    """Match the recent texts against the themes as they are now (after a merge or a new
    seed theme); how many were read and how many are about one or more."""
    rows = await _recent(conn)
    async with conn.transaction():
        matched = await rematch(conn, [r["event_id"] for r in rows], [r["text"] for r in rows])
    return {"texts": len(rows), "matched": matched}


async def rematch_handler(
    conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
) -> JSONObject:
    """The `themes_rematch` job."""
    return await rematch_recent(conn)


async def rematch(conn: asyncpg.Connection, event_ids: list[str], texts: list[str]) -> int:
    """Match these texts against the active themes again; how many are about one or more."""
    candidates = await active(conn)
    found = await asyncio.to_thread(lambda: [match(terms_of(t), candidates) for t in texts])
    await voc.lock_enrichments(conn, event_ids)
    await conn.execute(
        "UPDATE text_enrichments x SET themes = u.themes::text[] "
        "FROM (SELECT * FROM unnest($1::text[], $2::text[])) AS u(event_id, themes) "
        "WHERE x.event_id = u.event_id",
        event_ids,
        ["{" + ",".join(f'"{t}"' for t in ids) + "}" for ids in found],
    )
    return sum(1 for ids in found if ids)


# --- what the API reads and changes -----------------------------------------------------------

_COUNTS = """
    SELECT t.theme_id, count(*) AS texts
    FROM events e
    JOIN text_enrichments x ON x.event_id = e.event_id
    JOIN accounts a ON a.account_id = e.account_id
    CROSS JOIN LATERAL unnest(x.themes) AS t(theme_id)
    WHERE e.text IS NOT NULL AND e.occurred_at >= $1 AND e.occurred_at < $2
      AND ($3::text IS NULL OR a.segment = $3)
      AND ($4::text IS NULL OR t.theme_id = $4)
    GROUP BY 1"""


async def counts(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None = None,
    theme_id: str | None = None,
) -> dict[str, int]:
    """Texts about each theme (or only this one) written in [since, until)."""
    return {r[0]: r[1] for r in await conn.fetch(_COUNTS, since, until, segment, theme_id)}


async def top(
    conn: asyncpg.Connection,
    *,
    since: datetime,
    until: datetime,
    segment: str | None,
    limit: int = 10,
) -> list[ThemeCount]:
    """The themes most written about in [since, until), with the period before's counts."""
    now = await counts(conn, since=since, until=until, segment=segment)
    before = await counts(
        conn, since=voc.earlier(since, until - since), until=since, segment=segment
    )
    names = dict(await conn.fetch("SELECT theme_id, name FROM themes"))
    busiest = sorted(now, key=lambda t: (-now[t], t))[:limit]
    return [
        ThemeCount(
            theme_id=t,
            name=names.get(t, t),
            texts=now[t],
            previous=before.get(t, 0),
            change=now[t] / before[t] - 1 if before.get(t) else None,
        )
        for t in busiest
    ]


def _view(r: asyncpg.Record, now: dict[str, int], before: dict[str, int]) -> ThemeOut:
    terms = orjson.loads(r["terms"])
    return ThemeOut(
        theme_id=r["theme_id"],
        name=r["name"],
        terms=[t[0] for t in terms],
        seed=r["seed"],
        pinned=r["pinned"],
        merged_into=r["merged_into"],
        coherence=r["coherence"],
        coherent=r["coherent"],
        texts_30d=now.get(r["theme_id"], 0),
        texts_previous_30d=before.get(r["theme_id"], 0),
    )


_THEME = "SELECT theme_id, name, terms, seed, pinned, merged_into, coherence, coherent FROM themes"


async def _monthly(
    conn: asyncpg.Connection, theme_id: str | None = None
) -> tuple[dict[str, int], dict[str, int]]:
    """Texts about each theme (or this one) in the last 30 days, and in the 30 before."""
    today = await conn.fetchval("SELECT now()")
    month = timedelta(days=30)
    now = await counts(conn, since=today - month, until=today, theme_id=theme_id)
    before = await counts(conn, since=today - 2 * month, until=today - month, theme_id=theme_id)
    return now, before


async def listing(conn: asyncpg.Connection) -> list[ThemeOut]:
    """Every theme in use (learnt, seeded or merged), busiest in the last 30 days first."""
    now, before = await _monthly(conn)
    rows = await conn.fetch(f"{_THEME} WHERE retired_at IS NULL")
    views = [_view(r, now, before) for r in rows]
    return sorted(views, key=lambda v: (-v.texts_30d, v.name, v.theme_id))


async def _read_one(conn: asyncpg.Connection, theme_id: str) -> ThemeOut:
    now, before = await _monthly(conn, theme_id)
    return _view(await _one(conn, theme_id), now, before)


async def _one(conn: asyncpg.Connection, theme_id: str) -> asyncpg.Record:
    row = await conn.fetchrow(f"{_THEME} WHERE theme_id = $1 AND retired_at IS NULL", theme_id)
    if row is None:
        raise errors.NotFound(f"No theme {theme_id!r}.")
    return row


async def update(
    conn: asyncpg.Connection,
    theme_id: str,
    *,
    name: str | None,
    pinned: bool | None,
    merge_into: str | None,
    unmerge: bool = False,
) -> ThemeOut:
    """Rename (kept across refits), pin (kept even when a refit does not find it again), merge
    into another theme (its texts count for that one once the `themes_rematch` job this
    enqueues has matched them again) or stand alone again (`unmerge`)."""
    async with conn.transaction():
        await _one(conn, theme_id)
        if merge_into is not None:
            if merge_into == theme_id:
                raise errors.Conflict("A theme cannot be merged into itself.")
            # Both rows locked in one order: two crossing merges (A into B, B into A) at once
            # would otherwise both see the other unmerged and make a cycle.
            await conn.execute(
                "SELECT 1 FROM themes WHERE theme_id = ANY($1::text[]) ORDER BY theme_id "
                "FOR UPDATE",
                sorted({theme_id, merge_into}),
            )
            into = await _one(conn, merge_into)
            if into["merged_into"] is not None:
                raise errors.Conflict(f"{merge_into!r} is merged into another theme already.")
            await conn.execute(
                "UPDATE themes SET merged_into = $2, updated_at = now() "
                "WHERE theme_id = $1 OR merged_into = $1",
                theme_id,
                merge_into,
            )
        if unmerge:
            await conn.execute(
                "UPDATE themes SET merged_into = NULL, updated_at = now() WHERE theme_id = $1",
                theme_id,
            )
        if name is not None:
            await conn.execute(
                "UPDATE themes SET name = $2, renamed = true, updated_at = now() "
                "WHERE theme_id = $1",
                theme_id,
                name,
            )
        if pinned is not None:
            await conn.execute(
                "UPDATE themes SET pinned = $2, updated_at = now() WHERE theme_id = $1",
                theme_id,
                pinned,
            )
        if merge_into is not None or unmerge:
            await _rematch_soon(conn)
    return await _read_one(conn, theme_id)


async def _rematch_soon(conn: asyncpg.Connection) -> None:
    """Queue a `themes_rematch` job unless one is queued already (it will see this change)."""
    queued = await conn.fetchval(
        "SELECT 1 FROM jobs WHERE kind = 'themes_rematch' AND status = 'queued' LIMIT 1"
    )
    if queued is None:
        await jobs.enqueue(conn, kind="themes_rematch", params={})


async def create_seed(conn: asyncpg.Connection, *, name: str, keywords: list[str]) -> ThemeOut:
    """A theme an operator defines by keywords (a text with any of them is about it), kept
    across refits; recent texts are matched against it by the `themes_rematch` job this
    enqueues, new ones as they are read."""
    theme_id = "seed_" + hashlib.sha256(name.encode()).hexdigest()[:12]
    async with conn.transaction():
        inserted = await conn.fetchval(
            "INSERT INTO themes (theme_id, name, terms, seed, pinned, renamed) "
            "VALUES ($1, $2, $3::jsonb, true, true, true) ON CONFLICT (theme_id) DO NOTHING "
            "RETURNING theme_id",
            theme_id,
            name,
            orjson.dumps(seed_terms(keywords)).decode(),
        )
        if inserted is None:
            raise errors.Conflict(f"A seed theme named {name!r} exists already.")
        await _rematch_soon(conn)
    return await _read_one(conn, theme_id)


# --- themes that jump: a week's texts about a theme far above its usual weeks ----------------

JUMP_WEEKS = 4  # the usual week: the mean of this many weeks before the last
JUMP_MIN_TEXTS = 10  # a jump has at least this many texts in its week ...
JUMP_MIN_ACCOUNTS = 3  # ... from this many accounts (one loud account is not a trend)
JUMP_RATIO = 2.0  # ... at least this many times the usual week ...
JUMP_P = 0.01  # ... and unlikely under it: P(as many or more | Poisson at the usual rate)
JUMP_EXAMPLES = 3
EXAMPLE_CHARS = 500

_WEEKS = """
    SELECT t.theme_id, th.name,
      count(*) FILTER (WHERE e.occurred_at > $1::timestamptz - interval '7 days') AS week,
      count(*) FILTER (WHERE e.occurred_at <= $1::timestamptz - interval '7 days') AS before,
      count(DISTINCT e.account_id)
        FILTER (WHERE e.occurred_at > $1::timestamptz - interval '7 days') AS accounts
    FROM events e
    JOIN text_enrichments x ON x.event_id = e.event_id
    CROSS JOIN LATERAL unnest(x.themes) AS t(theme_id)
    JOIN themes th ON th.theme_id = t.theme_id
      AND th.retired_at IS NULL AND th.merged_into IS NULL AND th.coherent
    WHERE e.text IS NOT NULL AND e.occurred_at <= $1::timestamptz
      AND e.occurred_at > $1::timestamptz - make_interval(days => 7 * ($2 + 1))
    GROUP BY 1, 2"""

_EXAMPLES = """
    SELECT e.event_id, e.account_id, e.occurred_at, left(e.text, $3) AS text, x.sentiment,
           x.label
    FROM events e JOIN text_enrichments x ON x.event_id = e.event_id
    WHERE $2 = ANY(x.themes) AND e.text IS NOT NULL
      AND e.occurred_at <= $1::timestamptz
      AND e.occurred_at > $1::timestamptz - interval '7 days'
    ORDER BY x.sentiment, e.occurred_at DESC, e.event_id
    LIMIT $4"""


async def jumps(conn: asyncpg.Connection, *, now: datetime) -> list[JSONObject]:
    """Themes whose texts of the week up to `now` jumped across accounts (JUMP_*), with the
    week's count, the usual week, how many accounts wrote, the chance of so many by the usual
    rate, and example verbatims of the week (the most negative first)."""
    from scipy.stats import poisson

    found = []
    for r in await conn.fetch(_WEEKS, now, JUMP_WEEKS):
        usual = r["before"] / JUMP_WEEKS
        if r["week"] < JUMP_MIN_TEXTS or r["accounts"] < JUMP_MIN_ACCOUNTS:
            continue
        # A theme never written about before is measured against half a text a week.
        rate = max(usual, 0.5)
        chance = float(poisson.sf(r["week"] - 1, rate))
        if r["week"] < JUMP_RATIO * rate or chance >= JUMP_P:
            continue
        examples = await conn.fetch(_EXAMPLES, now, r["theme_id"], EXAMPLE_CHARS, JUMP_EXAMPLES)
        found.append(
            {
                "theme_id": r["theme_id"],
                "name": r["name"],
                "texts_7d": r["week"],
                "usual_week": usual,
                "accounts_7d": r["accounts"],
                "chance": chance,
                "week_ending": now.isoformat(),
                "examples": [
                    {
                        "event_id": e["event_id"],
                        "account_id": e["account_id"],
                        "occurred_at": e["occurred_at"].isoformat(),
                        "text": e["text"],
                        "sentiment": {"score": e["sentiment"], "label": e["label"]},
                    }
                    for e in examples
                ],
            }
        )
    return sorted(found, key=lambda j: (j["chance"], j["theme_id"]))


# A theme's newest texts: first among the RECENT newest texts of all (one short walk of the
# received_at index finds them for every common theme), then, for a theme with too few there,
# by the themes' GIN index (a rare theme has few texts to sort). Walking received_at backwards
# for each theme until two of its texts turned up read every text for a rare one: 5 s for a
# page of 12 themes at 100,000 accounts. An event is found by its key (event_keys: account and
# moment, which ix_events_account_id and the partitions hold), never by its id alone: events
# have no index on it, and the join by id read all 11 million of them (5 s).
RECENT = 5_000
# RECENT is written into the statement, not passed: a cached statement is planned generically
# after five runs, and a generic plan of "LIMIT $n" sorted every text instead of walking the
# index (1.6 s a page at 100,000 accounts).
_RECENT_TEXTS = """
    WITH recent AS (
        SELECT event_id, received_at, themes, sentiment, label FROM text_enrichments
        ORDER BY received_at DESC LIMIT {recent:d}
    ), picked AS (
        SELECT t.theme_id, r.event_id, r.sentiment, r.label,
               row_number() OVER (PARTITION BY t.theme_id
                                  ORDER BY r.received_at DESC, r.event_id) AS n
        FROM recent r JOIN unnest($1::text[]) AS t(theme_id) ON t.theme_id = ANY(r.themes)
    )
    SELECT p.theme_id, e.event_id, e.account_id, e.occurred_at, left(e.text, $2) AS text,
           p.sentiment, p.label
    FROM picked p
    JOIN event_keys k ON k.event_id = p.event_id  -- events has no index on event_id alone
    JOIN events e ON e.account_id = k.account_id AND e.occurred_at = k.occurred_at
                 AND e.event_id = p.event_id
    WHERE p.n <= $3"""
_LATEST_TEXTS = """
    SELECT t.theme_id, e.event_id, e.account_id, e.occurred_at, left(e.text, $2) AS text,
           x.sentiment, x.label
    FROM unnest($1::text[]) AS t(theme_id)
    CROSS JOIN LATERAL (
        SELECT x.event_id, x.sentiment, x.label FROM text_enrichments x
        WHERE x.themes @> ARRAY[t.theme_id]::varchar[]  -- ix_text_enrichments_themes (GIN)
        ORDER BY x.received_at DESC LIMIT {per_theme:d}
    ) x
    JOIN event_keys k ON k.event_id = x.event_id
    JOIN events e ON e.account_id = k.account_id AND e.occurred_at = k.occurred_at
                 AND e.event_id = x.event_id"""


@dataclass(frozen=True, slots=True)
class Example:
    event_id: str
    account_id: str
    occurred_at: datetime
    text: str
    sentiment: float | None
    label: str | None


async def examples(
    conn: asyncpg.Connection, theme_ids: list[str], *, per_theme: int = 2
) -> dict[str, list[Example]]:
    """A few recent verbatims about each theme, for people to see what a theme means."""
    found: dict[str, list[Example]] = {t: [] for t in theme_ids}
    recent = _RECENT_TEXTS.format(recent=RECENT)
    rows = list(await conn.fetch(recent, theme_ids, EXAMPLE_CHARS, per_theme))
    seen: dict[str, int] = {}
    for r in rows:
        seen[r["theme_id"]] = seen.get(r["theme_id"], 0) + 1
    rare = [t for t in theme_ids if seen.get(t, 0) < per_theme]
    if rare:
        rows = [r for r in rows if r["theme_id"] not in rare]
        latest = _LATEST_TEXTS.format(per_theme=per_theme)  # as RECENT
        rows += await conn.fetch(latest, rare, EXAMPLE_CHARS)
    for r in sorted(rows, key=lambda r: r["occurred_at"], reverse=True):
        found[r["theme_id"]].append(
            Example(
                r["event_id"],
                r["account_id"],
                r["occurred_at"],
                r["text"],
                r["sentiment"],
                r["label"],
            )
        )
    return found
