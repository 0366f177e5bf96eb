from __future__ import annotations

import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from app.voc.sentiment import Analyzer, label_of

ANALYZER = Analyzer()


def test_support_words_no_longer_make_a_complaint_positive() -> None:
    complaint = "Support never answered my ticket"
    # VADER as shipped reads it as positive ("support" is a positive word).
    assert SentimentIntensityAnalyzer().polarity_scores(complaint)["compound"] > 0.05
    assert ANALYZER(complaint).label == "negative"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("The export is still not fixed", "negative"),
        ("Please help, we were overcharged", "negative"),
        ("Our ticket is unanswered after a week and the app is slow", "negative"),
        ("I would like to export to CSV please", "neutral"),
        ("Can support help us set up the free plan?", "neutral"),
        ("Thanks, the team fixed it quickly!", "positive"),
        ("Love the new dashboard", "positive"),
    ],
)
def test_support_language_reads_as_people_mean_it(text: str, label: str) -> None:
    read = ANALYZER(text)
    assert read.label == label, read
    assert -1 <= read.score <= 1


def test_an_operators_words_extend_the_table() -> None:
    text = "The sync with Salesforce is flaky"
    assert ANALYZER(text).label == "neutral"
    assert Analyzer({"Flaky": -2.0})(text).label == "negative"
    assert Analyzer({"love": 0})("Love the new dashboard").label == "neutral"


def test_labels_use_vaders_thresholds() -> None:
    assert [label_of(s) for s in (-0.05, -0.049, 0.0, 0.049, 0.05)] == [
        "negative",
        "neutral",
        "neutral",
        "neutral",
        "positive",
    ]
