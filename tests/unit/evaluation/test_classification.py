import numpy as np

from chexnet.evaluation import classification
from tests.helpers import LABELS


def test_auroc_undefined_classes_are_none_and_left_out_of_the_mean():
    rng = np.random.default_rng(0)
    truth = (rng.random((40, 14)) < 0.3).astype(np.uint8)
    truth[:, 13] = 0  # Hernia: no positives
    truth[:, 12] = 1  # Pleural_Thickening: no negatives
    scores = np.clip(truth * 0.6 + rng.random((40, 14)) * 0.5, 0, 1)
    per_class = classification.per_class_auroc(truth, scores, LABELS)
    assert per_class["Hernia"] is None and per_class["Pleural_Thickening"] is None
    assert classification.undefined_reason(truth[:, 13]) == "no positives in this split"
    assert classification.undefined_reason(truth[:, 12]) == "no negatives in this split"
    defined = [v for v in per_class.values() if v is not None]
    assert len(defined) == 12 and classification.mean_auroc(per_class) == np.mean(defined)
    expected = set(LABELS) - {"Hernia", "Pleural_Thickening"}
    assert (
        set(classification.roc_points(truth, scores, LABELS))
        == expected
        == set(classification.pr_points(truth, scores, LABELS))
    )


def test_perfect_and_inverted_scores():
    truth = np.tile(np.array([[1], [0], [1], [0]], np.uint8), (1, 14))
    assert (
        classification.mean_auroc(classification.per_class_auroc(truth, truth.astype(float), LABELS)) == 1.0
    )
    assert classification.mean_auroc(classification.per_class_auroc(truth, 1.0 - truth, LABELS)) == 0.0


def test_micro_confusion_counts_every_decision():
    truth = np.array([[1, 0], [0, 1]])
    predicted = np.array([[1, 1], [0, 0]])
    assert classification.micro_confusion(truth, predicted) == {"tn": 1, "fp": 1, "fn": 1, "tp": 1}


def test_masked_entries_are_left_out_not_counted_as_negatives():
    truth = np.array([[1, 0], [0, np.nan], [1, 1], [0, 0], [np.nan, 1]], dtype=float)
    scores = np.array([[0.9, 0.2], [0.1, 0.99], [0.8, 0.7], [0.3, 0.1], [0.01, 0.6]])
    per_class = classification.per_class_auroc(truth, scores, ["A", "B"])
    assert per_class == {"A": 1.0, "B": 1.0}  # the masked 0.99 / 0.01 would break both if counted
    assert classification.micro_confusion(truth, (scores >= 0.5).astype(int)) == {
        "tn": 4,
        "fp": 0,
        "fn": 0,
        "tp": 4,
    }
    report, text = classification.report(truth, (scores >= 0.5).astype(int), ["A", "B"])
    assert report["A"]["support"] == 2 and report["micro avg"]["f1-score"] == 1.0 and "masked" in text
    assert classification.undefined_reason(np.array([np.nan, np.nan])) == "every label masked in this split"
