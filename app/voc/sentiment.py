"""Sentiment of what customers write, offline: VADER's lexicon and rules (Hutto and Gilbert,
2014; the lexicon ships inside the vaderSentiment package), adapted to support language.

Out of the box VADER reads "Support never answered my ticket" as positive: "support" is a
positive word. SUPPORT_LANGUAGE below is the adaptation, applied over VADER's lexicon: words
that name the service rather than a feeling are neutral; what a ticket complains of is
negative; and what support does ("answered", "fixed") is mildly positive, so that VADER's own
negation makes "never answered" and "still not fixed" negative. An operator extends or
overrides it with CUSTINTEL_SENTIMENT_WORDS ({"word": valence from -4 to 4}).

Each text gets VADER's compound score in [-1, 1] and a label: negative at -0.05 or below,
positive at 0.05 or above, neutral between (VADER's own thresholds).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

Label = Literal["negative", "neutral", "positive"]
THRESHOLD = 0.05
MAX_CHARS = 5_000  # a long text's sentiment is read from its beginning

# word: valence on VADER's scale (-4 to 4); 0 neutralises a word VADER scores.
SUPPORT_LANGUAGE: dict[str, float] = {
    # The service and politeness, not a feeling.
    "support": 0.0,
    "supported": 0.0,
    "supporting": 0.0,
    "help": 0.0,
    "helps": 0.0,
    "please": 0.0,
    "like": 0.0,  # "I would like to export"
    "free": 0.0,  # "free trial", "free plan"
    "credit": 0.0,
    "credits": 0.0,
    "share": 0.0,
    "pretty": 0.0,
    "kind": 0.0,
    "sure": 0.0,
    "yes": 0.0,
    "ok": 0.0,
    "okay": 0.0,
    "care": 0.0,  # "customer care"
    "save": 0.0,  # "the save button"
    "interest": 0.0,  # "interest charged"
    "true": 0.0,
    "charged": 0.0,  # billing's word; overcharged below carries the complaint
    # What a ticket complains of.
    "bug": -1.5,
    "bugs": -1.5,
    "buggy": -2.0,
    "glitch": -1.5,
    "slow": -1.5,
    "slower": -1.5,
    "laggy": -1.5,
    "outage": -2.0,
    "downtime": -2.0,
    "unanswered": -1.8,
    "unresponsive": -2.0,
    "unusable": -2.5,
    "workaround": -0.8,
    "overcharged": -2.0,
    "refund": -1.0,
    "timeout": -1.2,
    "timeouts": -1.2,
    "missing": -1.0,
    "escalate": -1.2,
    "escalated": -1.2,
    "cancellation": -1.5,
    # What support does: mildly positive, so that "never answered" is negative.
    "answered": 1.0,
    "responded": 1.0,
    "replied": 1.0,
    "resolved": 1.5,
    "fixed": 1.5,
    "working": 0.8,
    "works": 0.8,
}


@dataclass(frozen=True)
class Sentiment:
    score: float
    label: Label


def label_of(score: float) -> Label:
    if score >= THRESHOLD:
        return "positive"
    if score <= -THRESHOLD:
        return "negative"
    return "neutral"


class Analyzer:
    """VADER with SUPPORT_LANGUAGE and the operator's words over its lexicon. Build one per
    process (loading the lexicon takes tens of milliseconds) and reuse it."""

    def __init__(self, words: Mapping[str, float] | None = None) -> None:
        self._vader = SentimentIntensityAnalyzer()
        self._vader.lexicon.update(SUPPORT_LANGUAGE)
        self._vader.lexicon.update({w.lower(): float(v) for w, v in (words or {}).items()})

    def __call__(self, text: str) -> Sentiment:
        score = float(self._vader.polarity_scores(text[:MAX_CHARS])["compound"])
        return Sentiment(score, label_of(score))


@functools.cache
def _analyzer(words: tuple[tuple[str, float], ...]) -> Analyzer:
    return Analyzer(dict(words))


def analyzer_of(words: Mapping[str, float]) -> Analyzer:
    """The process's analyzer with these extra words (built once per set of words)."""
    return _analyzer(tuple(sorted(words.items())))
