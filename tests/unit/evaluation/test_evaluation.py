import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from chexnet.engine import inference
from chexnet.evaluation import bootstrap
from chexnet.evaluation import report as evaluation
from tests.helpers import LABELS


def test_weighted_auroc_and_ap_match_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    y = (rng.random(300) < 0.3).astype(int)
    s = np.round(rng.random(300) + 0.5 * y, 1)  # coarse scores: many ties
    w = rng.integers(0, 3, (5, 300)).astype(float)
    auroc, ap = bootstrap.weighted_auroc_ap(y, s, w)
    for i in range(5):
        assert auroc[i] == pytest.approx(roc_auc_score(y, s, sample_weight=w[i]))
        assert ap[i] == pytest.approx(average_precision_score(y, s, sample_weight=w[i]))


def test_bootstrap_interval_covers_the_true_auroc_of_a_known_separation():
    """Scores N(0,1) for negatives and N(1,1) for positives: true AUROC = Φ(1/√2) = 0.760."""
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(400), 2)
    truth = np.zeros((800, 14), np.uint8)
    truth[:, :] = (rng.random((400, 14)) < 0.3).repeat(2, axis=0)  # a patient's two images agree
    scores = truth + rng.normal(0, 1, truth.shape)
    result = bootstrap.bootstrap_metrics(truth, scores, patients, LABELS, resamples=1000, seed=0)
    true_auroc = norm.cdf(1 / np.sqrt(2))
    covered = [
        result["auroc"][label].ci_low <= true_auroc <= result["auroc"][label].ci_high for label in LABELS
    ]
    assert sum(covered) >= 12  # a 95% interval misses now and then; 14 of 14 is not guaranteed
    macro = result["auroc"]["macro"]
    assert macro.ci_low < true_auroc < macro.ci_high and macro.ci_high - macro.ci_low < 0.05
    assert 0 < result["average_precision"]["macro"].value < 1


def test_patient_resampling_widens_intervals_for_correlated_images():
    rng = np.random.default_rng(2)
    patients = np.repeat(np.arange(60), 10)  # 10 near-identical images per patient
    per_patient = (rng.random((60, 14)) < 0.4).astype(np.uint8)
    truth = per_patient.repeat(10, axis=0)
    scores = (per_patient + rng.normal(0, 1, (60, 14))).repeat(10, axis=0) + rng.normal(0, 0.01, (600, 14))
    by_patient = bootstrap.bootstrap_metrics(truth, scores, patients, LABELS, resamples=300, seed=0)["auroc"][
        "macro"
    ]
    by_image = bootstrap.bootstrap_metrics(truth, scores, np.arange(600), LABELS, resamples=300, seed=0)[
        "auroc"
    ]["macro"]
    assert (by_patient.ci_high - by_patient.ci_low) > 2 * (by_image.ci_high - by_image.ci_low)


def test_undefined_classes_are_reported_with_the_reason_never_as_numbers():
    rng = np.random.default_rng(3)
    truth = (rng.random((50, 14)) < 0.3).astype(np.uint8)
    truth[:, 13] = 0
    truth[:, 0] = 1
    result = bootstrap.bootstrap_metrics(
        truth, rng.random((50, 14)), np.arange(50), LABELS, resamples=50, seed=0
    )
    assert result["auroc"]["Hernia"].as_dict() == {
        "value": None,
        "ci_low": None,
        "ci_high": None,
        "undefined": "no positives in this split",
    }
    assert result["average_precision"]["Atelectasis"].undefined == "no negatives in this split"
    assert result["auroc"]["macro"].value is not None


def test_thresholds_youden_and_max_f1_on_a_separable_class():
    truth = np.zeros((8, 14), np.uint8)
    truth[4:] = 1
    scores = np.tile(np.linspace(0.1, 0.8, 8)[:, None], (1, 14))
    thresholds, fallbacks = evaluation.choose_thresholds(truth, scores, LABELS, "youden")
    assert thresholds["Mass"] == pytest.approx(0.5) and not fallbacks  # first positive's score
    assert evaluation.choose_thresholds(truth, scores, LABELS, "max_f1")[0]["Mass"] == pytest.approx(0.5)
    truth[:, 13] = 0
    thresholds, fallbacks = evaluation.choose_thresholds(truth, scores, LABELS, "youden")
    assert thresholds["Hernia"] == 0.5 and "no positives" in fallbacks["Hernia"]


def test_operating_points_and_calibration():
    truth = np.array([[1], [1], [0], [0]]).repeat(14, axis=1)
    scores = np.array([[0.9], [0.4], [0.6], [0.1]]).repeat(14, axis=1)
    point = evaluation.operating_points(truth, scores, dict.fromkeys(LABELS, 0.5), LABELS)["Edema"]
    assert (point["tp"], point["fp"], point["fn"], point["tn"]) == (1, 1, 1, 1)
    assert point["sensitivity"] == point["specificity"] == point["ppv"] == point["f1"] == 0.5
    rng = np.random.default_rng(4)
    p = rng.random(200_000)
    calibrated = (rng.random(200_000) < p).astype(int)
    assert evaluation.reliability(calibrated, p)[0] < 0.01
    overconfident = (rng.random(200_000) < 0.5).astype(int)
    ece, points = evaluation.reliability(overconfident, np.where(p < 0.5, 0.0, 1.0))
    assert ece == pytest.approx(0.5, abs=0.01) and len(points) == 2


def test_tta_views():
    batch = torch.randn(2, 3, 224, 224)
    assert len(inference.tta_views(batch, "none")) == 1
    flipped = inference.tta_views(batch, "hflip")
    assert torch.equal(flipped[1], batch.flip(-1))
    crops = inference.tta_views(batch, "tencrop")
    assert len(crops) == 10 and all(c.shape == batch.shape for c in crops)


def test_the_test_summary_is_built_by_the_library():
    """reports/evaluate.json's layout, from truth and scores: the stage only writes it."""
    from chexnet.config.evaluate import EvaluateParams

    rng = np.random.default_rng(0)
    truth = (rng.random((60, 2)) < 0.4).astype(float)
    truth[0, 1] = np.nan  # a masked label
    scores = np.clip(np.nan_to_num(truth, nan=0.5) * 0.6 + rng.random((60, 2)) * 0.4, 0, 1)
    patients = np.repeat(np.arange(30), 2)
    cfg = EvaluateParams(bootstrap_resamples=50, calibration_bins=5)
    result = evaluation.evaluate_test(
        truth, scores, patients, ["A", "B"], {"A": 0.5, "B": 0.6}, {}, cfg, seed=1
    )
    summary = result.summary
    assert (summary["split"], summary["findings"], summary["images"], summary["patients"]) == (
        "test",
        2,
        60,
        30,
    )
    assert summary["bootstrap"] == {"resamples": 50, "unit": "patient", "seed": 1, "level": 0.95}
    assert set(summary["auroc"]) == {"A", "B", "macro", "micro"}
    macro = summary["auroc"]["macro"]
    assert macro["ci_low"] <= macro["value"] <= macro["ci_high"]
    at_chosen = summary["at_thresholds"]
    assert (
        at_chosen["per_class"]["B"]["threshold"] == 0.6 and sum(at_chosen["micro_confusion"].values()) == 119
    )
    assert summary["at_0.5"]["threshold"] == 0.5 and summary["calibration"]["bins"] == 5
    assert result.at_thresholds.shape == (60, 2) and result.labels == ["A", "B"]
    assert (
        "thresholds chosen on validation (youden)" in result.report_text
        and "(the seed's)" in result.report_text
    )
    assert set(result.classification_reports) == {"validation_thresholds", "threshold_0.5"}
