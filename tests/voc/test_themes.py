from __future__ import annotations

import random

from app.voc import themes

PLANTED = {
    "export": ["the csv export keeps failing", "export to csv is broken", "csv export times out"],
    "billing": [
        "we were charged twice",
        "the invoice shows a double charge",
        "charged twice again",
    ],
    "sso": ["single sign-on login fails", "sso login broken for our team", "cannot login with sso"],
}


def texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    kinds = [rng.choice(sorted(PLANTED)) for _ in range(n)]
    return [
        f"{rng.choice(PLANTED[k])} {rng.choice(['', 'today', 'please help'])}" for k in kinds
    ], kinds


def test_planted_themes_are_found_named_and_assigned() -> None:
    written, kinds = texts(900, seed=1)
    fitted = themes.fit(written, previous=[])
    assert fitted is not None
    assigned = themes.assign(fitted, written)
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
