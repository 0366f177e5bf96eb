"""Sentiment learned from the installation's own survey comments, where it reads them better
than the lexicon.

A survey answer with a comment is a labelled text: its score says how its writer felt (NPS 0-6
negative, 7-8 neutral, 9-10 positive; CSAT 1-2, 3, 4-5; CES 1-3, 4, 5-7). Once there are
MIN_COMMENTS of them, with MIN_PER_LABEL negative and positive ones, three readers are measured
on the newest HOLDOUT of them, having learnt from the older ones (out of time): the lexicon
(app.voc.sentiment), a classifier learnt from the comments (TF-IDF over words and word pairs,
multinomial logistic regression with balanced classes; scikit-learn), and the two blended (the
mean of their scores). A learnt reader is used only where its accuracy beats the lexicon's by
more than MARGIN, and where it reads plausibly the texts it would read: comments are not
tickets or call notes, so it is also run over a sample of the installation's other texts
(OTHER_TEXTS), and refused when it cannot say neutral there (its neutral share under half the
lexicon's) or reads them as a different mix altogether (total variation over MAX_MIX_SHIFT from
the lexicon's mix). Seen in a demo: a reader 2 points more accurate on comments read 0 of
22,281 texts as neutral and 78% as negative while NPS was +46. It is then learnt again from
every comment. Each choice is stored with its
measured accuracies (sentiment_readers), the newest in use. When the reader changes, every
text is read again (a `sentiment_reread` job), so that features of old and new texts stay
comparable.

The classifier is stored as its terms, their idf and the regression's weights (JSON, never a
pickle) and applied by hand: terms as the fit reads them, sublinear tf times idf, L2-normalised,
then a softmax of the weights; its score is P(positive) - P(negative), in [-1, 1].
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import numpy as np
import orjson

from app import voc
from app.platform import jobs
from app.platform.jsonbody import JSONObject
from app.platform.settings import Settings
from app.schemas.voc import SentimentReaderOut
from app.voc import sentiment, surveys

log = logging.getLogger(__name__)

MIN_COMMENTS = 300
MIN_PER_LABEL = 30
HOLDOUT = 0.25
MARGIN = 0.02  # accuracy a learnt reader must gain over the lexicon to replace it
OTHER_TEXTS = 2_000  # texts other than survey comments sampled to check a reader's mix
MIN_OTHER_TEXTS = 50  # fewer: the mix check rests on the held-out comments alone
MAX_MIX_SHIFT = 0.3  # total variation between a reader's label mix and the lexicon's
MAX_COMMENTS = 50_000  # the newest comments learnt from
# A reader learnt from some comments is learnt again, before its period is over, once there are
# this many times as many (the first choice of a new installation is made on its first few).
GROWTH = 1.5
LABELS: tuple[sentiment.Label, ...] = ("negative", "neutral", "positive")
# type: (negative up to, positive from)
BOUNDS = {surveys.NPS: (6, 9), surveys.CSAT: (2, 4), surveys.CES: (3, 5)}
_LOCK = 0x7E47_0005


def label_of_answer(kind: str, value: float) -> sentiment.Label | None:
    """How an answer's writer felt, by its score; None off its scale."""
    lo, hi = surveys.SCALES[kind][:2]
    if value != math.trunc(value) or not lo <= value <= hi:
        return None
    negative, positive = BOUNDS[kind]
    return "negative" if value <= negative else "positive" if value >= positive else "neutral"


@dataclass(frozen=True)
class Classifier:
    """A learnt reader, applied without scikit-learn's objects (see the module's docstring)."""

    terms: dict[str, int]
    idf: np.ndarray
    weights: np.ndarray  # one row per label of LABELS
    intercepts: np.ndarray

    def score(self, text: str) -> float:
        counts = Counter(
            self.terms[t] for t in _analyzer()(text[: sentiment.MAX_CHARS]) if t in self.terms
        )
        if not counts:
            return 0.0
        columns = np.fromiter(counts, dtype=np.int64)
        values = (1 + np.log(np.fromiter(counts.values(), dtype=np.float64))) * self.idf[columns]
        values /= np.linalg.norm(values)
        margins = self.weights[:, columns] @ values + self.intercepts
        p = np.exp(margins - margins.max())
        p /= p.sum()
        return float(p[2] - p[0])

    def to_json(self) -> JSONObject:
        return {
            "terms": self.terms,
            "idf": self.idf.tolist(),
            "weights": self.weights.tolist(),
            "intercepts": self.intercepts.tolist(),
        }

    @classmethod
    def from_json(cls, data: JSONObject) -> Classifier:
        return cls(
            data["terms"],
            np.asarray(data["idf"]),
            np.asarray(data["weights"]),
            np.asarray(data["intercepts"]),
        )


@functools.cache
def _analyzer() -> Callable[[str], list[str]]:
    # scikit-learn is imported when a text is first read or a reader trained, not with the
    # module: an API process that reads no text does not pay its second of import.
    from sklearn.feature_extraction.text import TfidfVectorizer

    analyze: Callable[[str], list[str]] = TfidfVectorizer(ngram_range=(1, 2)).build_analyzer()
    return analyze


def train(texts: list[str], labels: list[sentiment.Label]) -> Classifier:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x = vectorizer.fit_transform(texts)
    model = LogisticRegression(C=4.0, class_weight="balanced", max_iter=2000)
    model.fit(x, [LABELS.index(label) for label in labels])
    weights = np.zeros((len(LABELS), x.shape[1]))
    intercepts = np.full(len(LABELS), -1e3)  # a label never seen is never read
    for row, label in enumerate(model.classes_):
        if len(model.classes_) == 2:  # a binary fit has one row: the second class's margin
            weights[label] = model.coef_[0] if row == 1 else 0.0
            intercepts[label] = model.intercept_[0] if row == 1 else 0.0
        else:
            weights[label], intercepts[label] = model.coef_[row], model.intercept_[row]
    terms = {str(t): int(i) for t, i in vectorizer.vocabulary_.items()}
    return Classifier(terms, vectorizer.idf_, weights, intercepts)


@dataclass(frozen=True)
class Reader:
    """How texts are read: the lexicon, a classifier, or their mean."""

    kind: str  # lexicon, learned, blend
    lexicon: sentiment.Analyzer
    classifier: Classifier | None = None
    # Its row in sentiment_readers, stored beside each text it reads; None for the lexicon,
    # which reads a text the same way whichever row chose it.
    reader_id: str | None = None

    def __call__(self, text: str) -> sentiment.Sentiment:
        if self.classifier is None or self.kind == "lexicon":
            return self.lexicon(text)
        learned = self.classifier.score(text)
        if self.kind == "blend":
            learned = (learned + self.lexicon(text).score) / 2
        return sentiment.Sentiment(learned, sentiment.label_of(learned))


def _mix(reader: Reader, texts: list[str]) -> dict[str, float]:
    """The share of each label a reader gives these texts."""
    said = Counter(reader(t).label for t in texts)
    return {label: said[label] / len(texts) for label in LABELS}


def implausible(
    candidate: Reader, lexicon: Reader, texts: list[str]
) -> tuple[str | None, dict[str, dict[str, float]]]:
    """Why a learnt reader may not replace the lexicon on these texts (None: it may), and both
    readers' label mixes."""
    if not texts:
        return None, {}
    mine, theirs = _mix(candidate, texts), _mix(lexicon, texts)
    mixes = {candidate.kind: mine, "lexicon": theirs}
    if theirs["neutral"] >= 0.1 and mine["neutral"] < theirs["neutral"] / 2:
        return (
            f"it reads {mine['neutral']:.0%} of the texts as neutral where the lexicon reads "
            f"{theirs['neutral']:.0%}",
            mixes,
        )
    shift = sum(abs(mine[k] - theirs[k]) for k in LABELS) / 2
    if shift > MAX_MIX_SHIFT:
        return f"its mix of labels differs from the lexicon's by {shift:.2f}", mixes
    return None, mixes


def choose(
    texts: list[str],
    labels: list[sentiment.Label],
    lexicon: sentiment.Analyzer,
    others: list[str] | None = None,
) -> tuple[Reader, JSONObject]:
    """The best reader of these comments (oldest first), measured on the newest HOLDOUT after
    learning from the others, and plausible on `others` (a sample of the other texts it would
    read: tickets, notes); a learnt one is then learnt again from all of them."""
    cut = int(len(texts) * (1 - HOLDOUT))
    learnt = train(texts[:cut], labels[:cut])
    held, truth = texts[cut:], labels[cut:]
    candidates = {
        "lexicon": Reader("lexicon", lexicon),
        "learned": Reader("learned", lexicon, learnt),
        "blend": Reader("blend", lexicon, learnt),
    }
    accuracy = {
        kind: sum(reader(t).label == y for t, y in zip(held, truth, strict=True)) / len(held)
        for kind, reader in candidates.items()
    }
    best = max(("learned", "blend"), key=lambda k: (accuracy[k], k == "blend"))
    metrics: JSONObject = {
        "comments": len(texts),
        "held_out": len(held),
        "accuracy": accuracy,
        "labels": dict(Counter(labels)),
    }
    if accuracy[best] <= accuracy["lexicon"] + MARGIN:
        return candidates["lexicon"], metrics
    # (Too few other texts: the held-out comments, whose truth the accuracy already measured,
    # are all there is to go by.)
    sample = others if others is not None and len(others) >= MIN_OTHER_TEXTS else []
    refused, mixes = implausible(candidates[best], candidates["lexicon"], sample)
    if sample:
        metrics["mix"] = {"texts": len(sample), **mixes}
    if refused is not None:
        metrics["refused"] = f"{best}: {refused}"
        return candidates["lexicon"], metrics
    return Reader(best, lexicon, train(texts, labels)), metrics


# The survey answers with a comment: what a reader is learnt from (its count: whether it is due).
_ANSWERED = """
        FROM events e
        WHERE e.type IN ('nps_answered', 'csat_answered', 'ces_answered')  -- ix_events_surveys
          AND e.text IS NOT NULL AND e.value IS NOT NULL AND e.occurred_at <= now()"""

_COMMENTS = f"""
    SELECT type, value, text FROM (
        SELECT e.type, e.value, e.text, e.occurred_at, e.event_id {_ANSWERED}
        ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT $1) newest
    ORDER BY occurred_at, event_id"""  # noqa: S608  (constant SQL)

_COUNT = f"SELECT count(*) FROM (SELECT 1 {_ANSWERED} LIMIT $1) newest"  # noqa: S608


_OTHERS = """
    SELECT text FROM events
    WHERE text IS NOT NULL AND occurred_at > now() - interval '90 days' AND occurred_at <= now()
      AND type NOT IN ('nps_answered', 'csat_answered', 'ces_answered')
    LIMIT $1"""


async def other_texts(conn: asyncpg.Connection) -> list[str]:
    """A sample of the recent texts that are not survey comments (tickets, notes, replies)."""
    return [r[0] for r in await conn.fetch(_OTHERS, OTHER_TEXTS) if r[0].strip()]


async def comments(conn: asyncpg.Connection) -> tuple[list[str], list[sentiment.Label]]:
    """The newest MAX_COMMENTS survey comments on their scale and how each writer felt, oldest
    first."""
    texts, labels = [], []
    for r in await conn.fetch(_COMMENTS, MAX_COMMENTS):
        label = label_of_answer(r["type"], float(r["value"]))
        if label is not None and r["text"].strip():
            texts.append(r["text"])
            labels.append(label)
    return texts, labels


async def current(conn: asyncpg.Connection) -> asyncpg.Record | None:
    """The reader in use: the newest choice, or None before the first."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT reader_id, kind, model, metrics, created_at FROM sentiment_readers "
        "ORDER BY created_at DESC, reader_id LIMIT 1"
    )
    return row


async def described(conn: asyncpg.Connection) -> SentimentReaderOut:
    """The reader in use and the measurements that chose it."""
    row = await current(conn)
    if row is None:
        return SentimentReaderOut(kind="lexicon", chosen_at=None)
    metrics = orjson.loads(row["metrics"])
    return SentimentReaderOut.model_validate(
        {"kind": row["kind"], "chosen_at": row["created_at"], **metrics}
    )


def reader_of(row: asyncpg.Record | None, lexicon: sentiment.Analyzer) -> Reader:
    if row is None or row["kind"] == "lexicon":
        return Reader("lexicon", lexicon)
    return Reader(
        row["kind"],
        lexicon,
        Classifier.from_json(orjson.loads(row["model"])),
        reader_id=row["reader_id"],
    )


async def relearn_if_due(
    conn: asyncpg.Connection,
    lexicon: sentiment.Analyzer,
    *,
    every: timedelta,
    wait: bool = False,
) -> JSONObject | None:
    """Choose the reader again when the last choice is older than `every`, or learnt from
    fewer than 1/GROWTH of the comments there are now (or there is none), and there are
    comments enough; when the reader changes, enqueue the re-reading of every text. With
    `wait`, a choice another process is making is waited for (a training that reads sentiment
    next); without, it is left to that process. What was chosen, or None."""
    async with conn.transaction():
        if wait:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
        elif not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _LOCK):
            return None
        last = await current(conn)
        if last is not None and await conn.fetchval(
            "SELECT now() - $1::timestamptz < $2", last["created_at"], every
        ):
            learnt_from = orjson.loads(last["metrics"]).get("comments") or 0
            if await conn.fetchval(_COUNT, MAX_COMMENTS) < GROWTH * learnt_from:
                return None
        texts, labels = await comments(conn)
        felt = Counter(labels)
        if len(texts) < MIN_COMMENTS or min(felt["negative"], felt["positive"]) < MIN_PER_LABEL:
            return None
        others = await other_texts(conn)
        reader, metrics = await asyncio.to_thread(choose, texts, labels, lexicon, others)
        model = reader.classifier.to_json() if reader.classifier else None
        await conn.execute(
            "INSERT INTO sentiment_readers (reader_id, kind, model, metrics) "
            "VALUES ($1, $2, $3::jsonb, $4::jsonb)",
            uuid.uuid4().hex,
            reader.kind,
            None if model is None else orjson.dumps(model).decode(),
            orjson.dumps(metrics).decode(),
        )
        changed = reader.kind != "lexicon" or (last is not None and last["kind"] != "lexicon")
        if changed:
            await jobs.enqueue(conn, kind="sentiment_reread", params={})
    log.info("sentiment reader chosen", extra={"kind": reader.kind, **metrics["accuracy"]})
    return {"kind": reader.kind, **metrics}


REREAD_BATCH = 5_000
_REREAD_LOCK = 0x7E47_0006

_STALE = """
    SELECT x.event_id, e.text FROM text_enrichments x
    JOIN event_keys k ON k.event_id = x.event_id  -- events has no index on event_id alone
    JOIN events e ON e.account_id = k.account_id AND e.occurred_at = k.occurred_at
                 AND e.event_id = x.event_id
    WHERE x.event_id > $1 AND x.reader_id IS DISTINCT FROM $2 AND e.text IS NOT NULL
    ORDER BY x.event_id LIMIT $3"""


def _read_all(reader: Reader, texts: list[str]) -> list[sentiment.Sentiment]:
    return [reader(t) for t in texts]


async def reread(
    conn: asyncpg.Connection,
    reader: Reader,
    *,
    progress: Callable[[int, int], Awaitable[None]] | None = None,
) -> int:
    """Every stored text that another reader read, read again by `reader`; how many were.
    Batches of REREAD_BATCH, each in its own transaction under one lock, so that the job and a
    training's catch-up can both run it: whoever comes second finds those texts done."""
    # How many there are, only for a progress to tell: it costs a scan of every text.
    total = 0
    if progress is not None:
        total = await conn.fetchval(
            "SELECT count(*) FROM text_enrichments WHERE reader_id IS DISTINCT FROM $1",
            reader.reader_id,
        )
    after, done = "", 0
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _REREAD_LOCK)
            rows = await conn.fetch(_STALE, after, reader.reader_id, REREAD_BATCH)
            if not rows:
                break
            read = await asyncio.to_thread(_read_all, reader, [r["text"] for r in rows])
            await voc.lock_enrichments(conn, [r["event_id"] for r in rows])
            await conn.execute(
                "UPDATE text_enrichments x SET sentiment = u.sentiment, label = u.label, "
                "reader_id = $4 FROM unnest($1::text[], $2::float8[], $3::text[]) "
                "AS u(event_id, sentiment, label) WHERE x.event_id = u.event_id",
                [r["event_id"] for r in rows],
                [s.score for s in read],
                [s.label for s in read],
                reader.reader_id,
            )
        after, done = rows[-1]["event_id"], done + len(rows)
        if progress is not None:
            await progress(done, max(total, done))
    return done


async def in_use(conn: asyncpg.Connection, settings: Settings) -> Reader:
    """The reader in use: the lexicon (with these settings' words) until survey comments chose
    another."""
    lexicon = await asyncio.to_thread(sentiment.analyzer_of, settings.sentiment_words)
    return reader_of(await current(conn), lexicon)


def reread_handler(settings: Settings) -> jobs.Handler:
    """The `sentiment_reread` job: every enriched text that another reader read, read again by
    the reader in use."""

    async def run(
        conn: asyncpg.Connection, params: JSONObject, progress: jobs.Progress
    ) -> JSONObject:
        reader = await in_use(conn, settings)

        async def told(done: int, total: int) -> None:
            await progress(done / total)

        return {"texts": await reread(conn, reader, progress=told), "reader": reader.kind}

    return run
