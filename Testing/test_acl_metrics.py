"""Classification metrics against scikit-learn (test-only dependency) and bootstrap sanity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from PlaneSSLLib.training.cls_metrics import (
    accuracy,
    bootstrap_ci,
    classification_metrics,
    roc_auc,
    sensitivity,
    specificity,
)

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_on_random_scores(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 60)
    y[:2] = [0, 1]
    s = rng.normal(size=60) + y
    assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 2, 80)
    y[:2] = [0, 1]
    s = rng.integers(0, 4, 80).astype(float)  # heavy ties, also across classes
    assert roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_threshold_metrics_match_sklearn():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 50)
    p = rng.uniform(size=50)
    pred = (p >= 0.4).astype(int)
    tn, fp, fn, tp = sk.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    assert accuracy(y, p, 0.4) == pytest.approx(sk.accuracy_score(y, pred))
    assert sensitivity(y, p, 0.4) == pytest.approx(tp / (tp + fn))
    assert specificity(y, p, 0.4) == pytest.approx(tn / (tn + fp))
    assert accuracy(y, p, 0.4) == pytest.approx(sk.accuracy_score(y, p >= 0.4))


def test_one_class_gives_nan_with_a_reason():
    out = classification_metrics([1, 1, 1], [0.2, 0.7, 0.9], n_resamples=50)
    assert math.isnan(out["auc"].value) and math.isnan(out["specificity"].value)
    assert out["sensitivity"].value == pytest.approx(2 / 3)
    assert any("one class only" in n for n in out["notes"])
    assert any("no negative case" in n for n in out["notes"])
    assert out["auc"].to_dict()["value"] is None  # JSON-able
    assert math.isnan(roc_auc([0, 0], [0.1, 0.2]))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    s = rng.normal(size=40) + 1.2 * y
    a = classification_metrics(y, 1 / (1 + np.exp(-s)), n_resamples=1000, seed=11)
    b = classification_metrics(y, 1 / (1 + np.exp(-s)), n_resamples=1000, seed=11)
    for name in ("auc", "accuracy", "sensitivity", "specificity"):
        m = a[name]
        assert m.ci_low <= m.value <= m.ci_high, name
        assert m.ci_low < m.ci_high
        assert (m.ci_low, m.ci_high) == (b[name].ci_low, b[name].ci_high)
    assert a["auc"].n_defined == 1000
    c = classification_metrics(y, 1 / (1 + np.exp(-s)), n_resamples=1000, seed=12)
    assert (c["auc"].ci_low, c["auc"].ci_high) != (a["auc"].ci_low, a["auc"].ci_high)


def test_bootstrap_skips_undefined_resamples():
    y, s = np.array([0, 0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    low, high, defined = bootstrap_ci(y, s, roc_auc, n_resamples=200, seed=0)
    assert 0 < defined < 200  # resamples without the positive case are skipped
    assert low == high == 1.0
