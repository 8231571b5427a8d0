import numpy as np

from chexnet import metrics
from chexnet.labels import LABELS


def test_auroc_undefined_classes_are_none_with_reason_and_left_out_of_the_mean():
    rng = np.random.default_rng(0)
    truth = (rng.random((40, 14)) < 0.3).astype(np.uint8)
    truth[:, 13] = 0  # Hernia: no positives
    truth[:, 12] = 1  # Pleural_Thickening: no negatives
    scores = np.clip(truth * 0.6 + rng.random((40, 14)) * 0.5, 0, 1)
    result = metrics.evaluate_scores(truth, scores, 0.5)
    assert result["auroc"]["Hernia"] is None and result["auroc"]["Pleural_Thickening"] is None
    assert result["auroc_undefined"] == {
        "Pleural_Thickening": "no negatives in this split",
        "Hernia": "no positives in this split",
    }
    defined = [v for k, v in result["auroc"].items() if v is not None]
    assert len(defined) == 12 and result["mean_auroc"] == np.mean(defined)
    assert set(metrics.roc_points(truth, scores)) == set(LABELS) - {"Hernia", "Pleural_Thickening"}


def test_perfect_and_inverted_scores():
    truth = np.tile(np.array([[1], [0], [1], [0]], np.uint8), (1, 14))
    assert metrics.mean_auroc(metrics.per_class_auroc(truth, truth.astype(float))) == 1.0
    assert metrics.mean_auroc(metrics.per_class_auroc(truth, 1.0 - truth)) == 0.0


def test_micro_confusion_counts_every_decision():
    truth = np.array([[1, 0], [0, 1]])
    predicted = np.array([[1, 1], [0, 0]])
    assert metrics.micro_confusion(truth, predicted) == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}
