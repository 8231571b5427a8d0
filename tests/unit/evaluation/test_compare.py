"""Two models compared properly: DeLong's paired test checked against its definition computed a second
way, Holm's adjustment by hand, and the comparison on cases with a known answer (two identical models:
no difference; a model and its inverse: a large one)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chexnet.evaluation import compare


def _delong_by_definition(truth, a, b):
    """DeLong et al. (Biometrics 1988) written out: the kernel ψ over every positive–negative pair,
    its row and column means, their covariances, the variance of the difference. O(m·n)."""

    def components(scores):
        x, y = scores[truth == 1][:, None], scores[truth == 0][None, :]
        psi = (x > y) + 0.5 * (x == y)
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = components(a), components(b)
    m, n = len(v10_a), len(v01_a)
    s10, s01 = np.cov([v10_a, v10_b]), np.cov([v01_a, v01_b])
    variance = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return auc_b - auc_a, np.sqrt(variance)


def test_delong_equals_its_definition_with_ties_and_auroc_equals_sklearn():
    rng = np.random.default_rng(0)
    truth = (rng.random(300) < 0.3).astype(float)
    a = np.round(truth * 0.3 + rng.random(300), 1)  # rounded: many ties
    b = np.round(truth * 0.6 + rng.random(300), 2)
    result = compare.delong_paired(truth, a, b)
    difference, se = _delong_by_definition(truth, a, b)
    assert result["difference"] == pytest.approx(difference, abs=1e-12)
    assert result["se"] == pytest.approx(se, rel=1e-9)
    assert result["auroc_a"] == pytest.approx(roc_auc_score(truth, a))
    assert result["auroc_b"] == pytest.approx(roc_auc_score(truth, b))
    assert 0 < result["p"] < 0.05  # B was built better


def test_holm_by_hand():
    adjusted = compare.holm({"A": 0.01, "B": 0.04, "C": 0.03, "D": 0.5})
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 = 0.04, 0.09, 0.08 → 0.09 (monotone), 0.5
    assert adjusted == pytest.approx({"A": 0.04, "C": 0.09, "B": 0.09, "D": 0.5})


def _case(seed=1, n=240):
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(n // 2), 2).astype(str)
    truth = (rng.random((n, 3)) < 0.35).astype(float)
    scores = np.clip(truth * 0.35 + rng.random((n, 3)) * 0.65, 0, 1)
    return truth, scores, patients


def test_two_identical_models_differ_by_nothing():
    truth, scores, patients = _case()
    half = dict.fromkeys("ABC", 0.5)
    result = compare.compare_models(
        truth,
        scores,
        scores.copy(),
        patients,
        ["A", "B", "C"],
        resamples=200,
        thresholds_a=half,
        thresholds_b=half,
    )
    for entry in result["findings"].values():
        assert entry["difference"] == 0 and entry["p"] == 1 and entry["p_holm"] == 1
        assert (entry["difference_ci"]["ci_low"], entry["difference_ci"]["ci_high"]) == (0, 0)
        assert entry["decisions"]["changed"] == 0
    assert result["macro"]["difference"] == 0


def test_a_model_and_its_inverse_differ_by_a_lot_and_every_call_changes():
    truth, scores, patients = _case()
    half = dict.fromkeys("ABC", 0.5)
    result = compare.compare_models(
        truth,
        scores,
        1 - scores,
        patients,
        ["A", "B", "C"],
        resamples=200,
        thresholds_a=half,
        thresholds_b=half,
    )
    for j, (name, entry) in enumerate(result["findings"].items()):
        auc = roc_auc_score(truth[:, j], scores[:, j])
        assert entry["difference"] == pytest.approx(1 - 2 * auc)
        assert entry["difference_ci"]["ci_high"] < 0 and entry["p_holm"] < 1e-6, name
        assert entry["decisions"]["changed"] == int(
            ((scores[:, j] >= 0.5) != (1 - scores[:, j] >= 0.5)).sum()
        )
    assert result["macro"]["difference_ci"]["ci_high"] < 0
    assert result["adjustment"] == "Holm over 3 finding(s)"
