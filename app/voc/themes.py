"""Themes of what customers write, learned per installation from its own texts (work in
progress: fitted and matched here; storage, the scheduled refit, the API and the models' theme
counts are not wired yet).

- fit: TF-IDF over words and word pairs (English stop words out, terms in at least MIN_DF texts
  and at most half of them), then NMF into k themes (k grows with the texts, at most MAX_THEMES);
  each theme's top terms, and a readable name from its top three.
- stable ids across refits: a new theme takes the id of the previous theme whose term weights it
  is closest to (cosine at least MATCH), so counts stay comparable from one refit to the next;
  otherwise it gets a new id.
- assign: a text's themes are those holding at least SHARE of its NMF weight.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
from sklearn.decomposition import NMF
from sklearn.feature_extraction.text import TfidfVectorizer

MIN_DF = 5
MAX_THEMES = 20
TEXTS_PER_THEME = 200
TOP_TERMS = 8
MATCH = 0.5
SHARE = 0.3


@dataclass
class Theme:
    theme_id: str
    name: str
    terms: list[tuple[str, float]]  # the top terms and their weights, heaviest first


@dataclass
class Fitted:
    vectorizer: TfidfVectorizer
    nmf: NMF
    themes: list[Theme] = field(default_factory=list)


def _name(terms: list[tuple[str, float]]) -> str:
    words: list[str] = []
    for term, _ in terms:
        if not any(term in w or w in term for w in words):
            words.append(term)
        if len(words) == 3:
            break
    return ", ".join(words)


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    dot = sum(w * b.get(t, 0.0) for t, w in a.items())
    norm = math.sqrt(sum(w * w for w in a.values())) * math.sqrt(sum(w * w for w in b.values()))
    return dot / norm if norm else 0.0


def _new_id(terms: list[tuple[str, float]]) -> str:
    return "th_" + hashlib.sha256("\x00".join(t for t, _ in terms).encode()).hexdigest()[:12]


def fit(texts: list[str], *, previous: list[Theme], seed: int = 0) -> Fitted | None:
    """Themes of `texts`, ids carried over from `previous`; None with too few texts."""
    k = min(MAX_THEMES, len(texts) // TEXTS_PER_THEME)
    if k < 2:
        return None
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
    k = min(k, x.shape[1] - 1)
    if k < 2:
        return None
    nmf = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=400)
    nmf.fit(x)
    vocabulary = vectorizer.get_feature_names_out()
    taken: set[str] = set()
    themes = []
    for component in nmf.components_:
        top = np.argsort(-component, kind="stable")[:TOP_TERMS]
        total = float(component[top].sum()) or 1.0
        terms = [(str(vocabulary[i]), float(component[i]) / total) for i in top]
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
        themes.append(Theme(theme_id, _name(terms), terms))
    return Fitted(vectorizer, nmf, themes)


def assign(fitted: Fitted, texts: list[str]) -> list[list[str]]:
    """Each text's themes: those holding at least SHARE of its weight, heaviest first."""
    weights = fitted.nmf.transform(fitted.vectorizer.transform(texts))
    result = []
    for row in weights:
        total = float(row.sum())
        if total <= 0:
            result.append([])
            continue
        order = np.argsort(-row, kind="stable")
        result.append([fitted.themes[j].theme_id for j in order if row[j] / total >= SHARE])
    return result
