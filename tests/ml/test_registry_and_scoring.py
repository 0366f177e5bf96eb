"""The registry round trip, damaged files refused, and reasons that are the model's own."""

from __future__ import annotations

import struct
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import shap

from app.ml import features, registry, scoring, training
from app.ml.catalog import Catalog, money
from app.ml.datasets import TrainingSet
from app.ml.model import GLOBAL, Trained
from tests.fixtures.synthetic import CATALOG, world


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trained]:
    ts = world(n_accounts=800, snapshots=4)
    trained = training.train(ts, training.Options(min_segment_rows=200, min_segment_positives=20))
    root = tmp_path_factory.mktemp("models")
    path = registry.write(
        root,
        target="churn",
        model_id="m1",
        trained=trained,
        catalog=CATALOG,
        window={"as_of": "2025-06-01"},
    )
    return path, trained


def test_round_trip_gives_identical_predictions(saved: tuple[Path, Trained]) -> None:
    path, trained = saved
    loaded = registry.load(path)
    x = world(n_accounts=50, snapshots=1, seed=11).frame.matrix
    for name, model in trained.models.items():
        np.testing.assert_array_equal(model.margin(x), loaded.models[name].margin(x))
        assert loaded.models[name].calibration == model.calibration
    manifest = loaded.manifest
    assert {
        "features",
        "catalog",
        "params",
        "metrics",
        "window",
        "rows",
        "data_hash",
        "libraries",
        "models",
    } <= set(manifest)
    assert all(len(m["sha256"]) == 64 for m in manifest["models"].values())


def test_a_truncated_model_file_is_refused_and_not_loaded(
    saved: tuple[Path, Trained], tmp_path: Path
) -> None:
    path, _ = saved
    copy = tmp_path / "m1"
    import shutil

    shutil.copytree(path, copy)
    text = (copy / "model.txt").read_bytes()
    (copy / "model.txt").write_bytes(text[: len(text) // 3])
    with pytest.raises(registry.DamagedModel, match="sha256"):
        registry.load(copy)
    # The intact model still loads and serves.
    assert registry.load(path).models[GLOBAL].booster.num_trees() > 0


def test_reasons_add_up_to_the_margin(saved: tuple[Path, Trained]) -> None:
    path, _ = saved
    loaded = registry.load(path)
    frame = world(n_accounts=40, snapshots=1, seed=12).frame
    scores = scoring.score_frame(loaded, frame, top=3)
    assert len(scores) == 40
    for s in scores:
        total = s.base_value + sum(r.contribution for r in s.reasons) + s.other_contribution
        assert total == pytest.approx(s.margin, abs=1e-9)
        model = loaded.serving(s.segment)[1]
        assert s.probability == pytest.approx(model.probability(np.array([s.margin]))[0])
        for listed in (s.reasons, s.counter_reasons, s.context):
            magnitudes = [abs(r.contribution) for r in listed]
            assert magnitudes == sorted(magnitudes, reverse=True) and len(listed) <= 3
        assert s.band in {"high", "medium", "low"} and 0 <= s.percentile <= 100


def test_headline_reasons_push_the_way_the_score_points_and_can_be_acted_on(
    saved: tuple[Path, Trained],
) -> None:
    path, _ = saved
    loaded = registry.load(path)
    scores = scoring.score_frame(loaded, world(n_accounts=60, snapshots=1, seed=14).frame, top=3)
    kinds = {"headline": 0, "counter": 0, "context": 0}
    for s in scores:
        pointing = np.sign(s.margin - s.base_value)
        actionable = {r.feature: CATALOG.feature(r.feature).spec.actionable for r in s.reasons}
        assert all(actionable.values()), s.reasons
        assert all(np.sign(r.contribution) == pointing for r in s.reasons)
        assert all(np.sign(r.contribution) == -pointing for r in s.counter_reasons)
        assert all(not CATALOG.feature(r.feature).spec.actionable for r in s.context)
        for r in s.reasons + s.counter_reasons + s.context:
            kinds[r.kind] += 1
    assert all(kinds.values()), kinds  # each list is used on these scores


def test_a_random_static_trait_never_leads_a_reason(tmp_path: Path) -> None:
    # Each account keeps one random "age" in every snapshot: a model can memorise accounts by
    # it, and it may carry weight in the score, but it is no reason anyone can act on.
    catalog = Catalog(
        event_types=("login",),
        numeric_traits=("age",),
        string_traits={},
        plans=(),
        segments=(),
        roles=(),
        include=("events_login_30d", "trait_age"),
    )
    rng = np.random.default_rng(4)
    accounts, snapshots = 600, 4
    age = rng.integers(18, 80, size=accounts).astype(float)
    rows, labels, keys, snap = [], [], [], []
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for s in range(snapshots):
        logins = rng.poisson(10, size=accounts).astype(float)
        churn = rng.random(accounts) < 1 / (1 + np.exp(1.0 + 0.2 * (logins - 10)))
        for a in range(accounts):
            rows.append([logins[a], age[a]])
            labels.append(float(churn[a]))
            keys.append((f"acct-{a}", start + timedelta(days=30 * s)))
            snap.append(s)
    frame = features.Frame(catalog, keys, np.array(rows), [None] * len(keys))
    dates = [start + timedelta(days=30 * s) for s in range(snapshots)]
    ts = TrainingSet(frame, np.array(labels), np.array(snap), dates)
    trained = training.train(ts, training.Options())
    path = registry.write(
        tmp_path, target="churn", model_id="m", trained=trained, catalog=catalog, window={}
    )
    scores = scoring.score_frame(registry.load(path), frame, top=3)
    assert all(r.feature != "trait_age" for s in scores for r in s.reasons + s.counter_reasons)
    assert any(r.feature == "trait_age" for s in scores for r in s.context)


def test_lightgbm_contributions_match_shap_tree_explainer(
    saved: tuple[Path, Trained],
) -> None:
    path, _ = saved
    loaded = registry.load(path)
    model = loaded.models[GLOBAL]
    x = world(n_accounts=30, snapshots=1, seed=13).frame.matrix
    ours = scoring.contributions(model, x)
    explainer = shap.TreeExplainer(model.booster)
    with warnings.catch_warnings():
        # shap announces a change of its output shape for binary LightGBM; handled below.
        warnings.filterwarnings(
            "ignore", message="LightGBM binary classifier", category=UserWarning
        )
        theirs = explainer.shap_values(x)
    theirs = theirs[1] if isinstance(theirs, list) else theirs
    # Ours are the trees' TreeSHAP, plus the exact contributions of the logistic regression when
    # the model blends one in, each times its weight.
    expected, base = theirs, np.full(len(x), explainer.expected_value)
    if model.regression is not None:
        expected = model.blend.trees * theirs
        expected += model.blend.regression * model.regression.contributions(x)
        base = model.blend.trees * base + model.blend.regression * model.regression.base
    np.testing.assert_allclose(ours[:, :-1], expected, atol=1e-6)
    np.testing.assert_allclose(ours[:, -1], base, atol=1e-6)
    np.testing.assert_allclose(ours.sum(axis=1), model.margin(x), atol=1e-9)


def test_reason_text_names_the_feature_value_and_what_is_typical() -> None:
    feature = Catalog(("login",), (), {}, (), (), ()).feature
    logins = feature("events_login_30d")
    text = scoring.describe(logins, 4.0, 37.0, "enterprise", contribution=0.4, target="churn")
    assert text == "Login in the last 30 days: 4 (typical for enterprise: 37); raises churn risk"
    sponsor = feature("executive_sponsor_active_30d")
    assert scoring.describe(
        sponsor, 0.0, 1.0, "enterprise", contribution=0.4, target="churn"
    ).startswith("Executive sponsor active in the last 30 days: no (typical for enterprise: yes)")
    trend = feature("events_login_trend")
    text = scoring.describe(trend, np.log(0.5), 0.0, "smb", contribution=-0.2, target="expansion")
    assert "-50%" in text and text.endswith("; lowers the chance of expansion")


def test_every_feature_of_a_catalog_has_its_spec_and_words() -> None:
    catalog = Catalog(
        event_types=("page:view", "login"),
        numeric_traits=("seats",),
        string_traits={"tier": ("gold",)},
        plans=("pro",),
        segments=("smb",),
        roles=("executive_sponsor",),
    )
    assert set(catalog.features) == set(catalog.names)
    words = {n: f.words for n, f in catalog.features.items()}
    assert words["events_page:view_7d"] == "Page:view in the last 7 days"
    assert words["days_since_login"] == "Last login"
    last = catalog.feature("days_since_login")
    assert [last.show(v) for v in (0.01, 0.1, 1.0, 3.4, 365.0)] == [
        "within the hour",
        "2 hours ago",
        "1 day ago",
        "3 days ago",
        "none in the last year",
    ]
    assert last.stated(3.4) == "Last login: 3 days ago"
    assert last.stated(365.0) == "No login in the last year"
    assert words["contacts_executive_sponsor"] == "Contacts who are executive sponsor"
    assert words["trait_seats"] == "Seats" and words["trait_tier"] == "Tier"
    assert catalog.feature("trait_tier").spec.unit == "category"
    assert catalog.feature("tickets_open").spec.churn == 1
    assert not catalog.feature("segment").spec.actionable
    # Money in whole units of the installation's currency, days whole, sentiment in words.
    assert catalog.feature("revenue_90d").show(13757.5) == "$13,758"
    assert catalog.feature("mrr_change_90d").show(-300.4) == "-$300"
    assert catalog.feature("tenure_days").show(947.96) == "948"
    assert catalog.feature("sentiment_90d").show(-0.52) == "mostly negative"
    assert catalog.feature("sentiment_90d").show(0.0) == "neutral"
    assert money(1200.0, "CHF") == "1,200 CHF"
    # Names from clients are data: a brace in an event type is not a placeholder.
    odd = Catalog(("{window}",), (), {}, (), (), ())
    assert odd.feature("events_{window}_30d").words == "{window} in the last 30 days"


def test_shap_draws_the_global_summary_from_the_served_contributions(
    saved: tuple[Path, Trained],
) -> None:
    path, _ = saved
    loaded = registry.load(path)
    frame = world(n_accounts=200, snapshots=1, seed=12).frame
    png = scoring.summary_png(loaded, frame)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200
    assert scoring.summary_png(loaded, frame, segment="smb") != png


def test_near_duplicate_features_share_one_reason_slot() -> None:
    catalog = Catalog(("payment_failed", "login", "Login"), (), {}, (), (), ())
    family = {n: catalog.feature(n).family for n in catalog.names}
    assert family["payments_failed_90d"] == family["events_payment_failed_30d"]
    assert family["events_login_30d"] == family["days_since_login"] == "type:login"
    assert family["events_Login_30d"] != family["events_login_30d"]  # ids, not words
    assert family["tickets_open"] != family["tickets_opened_90d"]  # open now, opened lately
    names = ["payments_failed_90d", "events_payment_failed_30d", "events_login_30d", "mrr"]
    families = [family.get(n, n) for n in names]
    # strongest first: the 90-day count, then its 30-day twin, then logins; all raise it
    up, acts = [True] * 4, [True, True, True, False]

    def headline(order: list[int], top: int) -> list[int]:
        picked = scoring._pick(order, [1.0] * 4, up, acts, families, top)
        return picked[scoring.HEADLINE]

    assert headline([0, 1, 2, 3], 2) == [0, 2]
    assert headline([1, 0, 3], 3) == [1]  # mrr is context, not a headline reason
    assert scoring._pick([1, 0, 3], [1.0] * 4, up, acts, families, 3)[scoring.CONTEXT] == [3]
    # A strength of 0 (a zero, or a contribution against the catalog's direction) is not said.
    assert scoring._pick([2, 0], [1.0, 0, 0.0, 0], up, acts, families, 3)[scoring.HEADLINE] == []
