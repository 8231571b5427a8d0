"""Classification metrics: per-class AUROC, ROC curves, the seed's report and micro confusion matrix.

A class with only positives or only negatives in a split has no AUROC. It is reported as ``None`` with
the reason, and left out of the mean, never scored as 0.5 or NaN silently.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from chexnet.labels import LABELS


def undefined_reason(truth: np.ndarray) -> str | None:
    positives = int(truth.sum())
    if positives == 0:
        return "no positives in this split"
    if positives == len(truth):
        return "no negatives in this split"
    return None


def per_class_auroc(truth: np.ndarray, scores: np.ndarray) -> dict[str, float | None]:
    """AUROC for each label; ``None`` where it is undefined."""
    out: dict[str, float | None] = {}
    for j, label in enumerate(LABELS):
        out[label] = (
            None if undefined_reason(truth[:, j]) else float(roc_auc_score(truth[:, j], scores[:, j]))
        )
    return out


def mean_auroc(per_class: dict[str, float | None]) -> float | None:
    """Mean over the classes where AUROC is defined (the CheXNet paper's summary figure)."""
    defined = [v for v in per_class.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def roc_points(truth: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """ROC curve points per defined class: ``{label: {"fpr": [...], "tpr": [...], "threshold": [...]}}``."""
    curves = {}
    for j, label in enumerate(LABELS):
        if undefined_reason(truth[:, j]):
            continue
        fpr, tpr, thresholds = roc_curve(truth[:, j], scores[:, j])
        thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf at the start
        curves[label] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thresholds.tolist()}
    return curves


def micro_confusion(truth: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    """The seed's confusion matrix: all (image, label) decisions flattened into one 2×2 table."""
    tn, fp, fn, tp = confusion_matrix(truth.ravel(), predicted.ravel(), labels=[0, 1]).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def report(truth: np.ndarray, predicted: np.ndarray) -> tuple[dict[str, object], str]:
    """scikit-learn's classification_report over the 14 labels, as a dict and as the seed's text."""
    kwargs = {"target_names": list(LABELS), "labels": list(range(len(LABELS))), "zero_division": 0}
    as_dict = classification_report(truth, predicted, output_dict=True, **kwargs)
    as_text = classification_report(truth, predicted, **kwargs)
    return as_dict, as_text


def pr_points(truth: np.ndarray, scores: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Precision-recall curve points per defined class: ``{label: {"recall", "precision", "threshold"}}``."""
    curves = {}
    for j, label in enumerate(LABELS):
        if undefined_reason(truth[:, j]):
            continue
        precision, recall, thresholds = precision_recall_curve(truth[:, j], scores[:, j])
        # sklearn gives one threshold fewer than points (the last point, recall 0, has none)
        curves[label] = {
            "recall": recall.tolist(),
            "precision": precision.tolist(),
            "threshold": [*thresholds.tolist(), 1.0],
        }
    return curves
