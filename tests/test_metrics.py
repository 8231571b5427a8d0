import numpy as np

from chexnet import metrics
from chexnet.labels import LABELS


def test_auroc_undefined_classes_are_none_and_left_out_of_the_mean():
    rng = np.random.default_rng(0)
    truth = (rng.random((40, 14)) < 0.3).astype(np.uint8)
    truth[:, 13] = 0  # Hernia: no positives
    truth[:, 12] = 1  # Pleural_Thickening: no negatives
    scores = np.clip(truth * 0.6 + rng.random((40, 14)) * 0.5, 0, 1)
    per_class = metrics.per_class_auroc(truth, scores)
    assert per_class["Hernia"] is None and per_class["Pleural_Thickening"] is None
    assert metrics.undefined_reason(truth[:, 13]) == "no positives in this split"
    assert metrics.undefined_reason(truth[:, 12]) == "no negatives in this split"
    defined = [v for v in per_class.values() if v is not None]
    assert len(defined) == 12 and metrics.mean_auroc(per_class) == np.mean(defined)
    expected = set(LABELS) - {"Hernia", "Pleural_Thickening"}
    assert set(metrics.roc_points(truth, scores)) == expected == set(metrics.pr_points(truth, scores))


def test_perfect_and_inverted_scores():
    truth = np.tile(np.array([[1], [0], [1], [0]], np.uint8), (1, 14))
    assert metrics.mean_auroc(metrics.per_class_auroc(truth, truth.astype(float))) == 1.0
    assert metrics.mean_auroc(metrics.per_class_auroc(truth, 1.0 - truth)) == 0.0


def test_micro_confusion_counts_every_decision():
    truth = np.array([[1, 0], [0, 1]])
    predicted = np.array([[1, 1], [0, 0]])
    assert metrics.micro_confusion(truth, predicted) == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}
