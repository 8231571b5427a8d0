"""Classification metrics: per-class AUROC, ROC curves, the seed's report and micro confusion matrix.

Every function takes the label list (``labels``, the names of the columns in output order) and truth
matrices that may hold NaN where a label is masked (CheXpert-style uncertain or blank entries under
``ignore``): masked entries are left out of every figure, never counted as negatives.

A class with only positives or only negatives in a split has no AUROC. It is reported as ``None`` with
the reason, and left out of the mean, never scored as 0.5 or NaN silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    classification_report,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)


def known(column: np.ndarray) -> np.ndarray:
    """Where a truth column holds a label (not masked)."""
    return ~np.isnan(np.asarray(column, dtype=float))


def undefined_reason(truth: np.ndarray) -> str | None:
    truth = np.asarray(truth, dtype=float)
    truth = truth[known(truth)]
    positives = int(truth.sum())
    if len(truth) == 0:
        return "every label masked in this split"
    if positives == 0:
        return "no positives in this split"
    if positives == len(truth):
        return "no negatives in this split"
    return None


def per_class_auroc(truth: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> dict[str, float | None]:
    """AUROC for each label over its unmasked entries; ``None`` where it is undefined."""
    out: dict[str, float | None] = {}
    for j, label in enumerate(labels):
        ok = known(truth[:, j])
        out[label] = (
            None if undefined_reason(truth[:, j]) else float(roc_auc_score(truth[ok, j], scores[ok, j]))
        )
    return out


def mean_auroc(per_class: dict[str, float | None]) -> float | None:
    """Mean over the classes where AUROC is defined (the CheXNet paper's summary figure)."""
    defined = [v for v in per_class.values() if v is not None]
    return float(np.mean(defined)) if defined else None


def roc_points(
    truth: np.ndarray, scores: np.ndarray, labels: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """ROC curve points per defined class: ``{label: {"fpr": [...], "tpr": [...], "threshold": [...]}}``."""
    curves = {}
    for j, label in enumerate(labels):
        if undefined_reason(truth[:, j]):
            continue
        ok = known(truth[:, j])
        fpr, tpr, thresholds = roc_curve(truth[ok, j], scores[ok, j])
        thresholds = np.minimum(thresholds, 1.0)  # sklearn puts +inf at the start
        curves[label] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "threshold": thresholds.tolist()}
    return curves


def pr_points(
    truth: np.ndarray, scores: np.ndarray, labels: Sequence[str]
) -> dict[str, dict[str, list[float]]]:
    """Precision-recall curve points per defined class: ``{label: {"recall", "precision", "threshold"}}``,
    in rising recall (0 → 1, thresholds falling), so a chart drawn in point order runs left to right as
    the ROC curve does (sklearn lists them the other way round)."""
    curves = {}
    for j, label in enumerate(labels):
        if undefined_reason(truth[:, j]):
            continue
        ok = known(truth[:, j])
        precision, recall, thresholds = precision_recall_curve(truth[ok, j], scores[ok, j])
        # sklearn gives one threshold fewer than points (the last point, recall 0, has none)
        curves[label] = {
            "recall": recall[::-1].tolist(),
            "precision": precision[::-1].tolist(),
            "threshold": [1.0, *thresholds[::-1].tolist()],
        }
    return curves


def micro_confusion(truth: np.ndarray, predicted: np.ndarray) -> dict[str, int]:
    """The seed's confusion matrix: all unmasked (image, label) decisions flattened into one 2×2 table."""
    ok = known(truth).ravel()
    tn, fp, fn, tp = confusion_matrix(
        np.asarray(truth).ravel()[ok].astype(int), np.asarray(predicted).ravel()[ok], labels=[0, 1]
    ).ravel()
    return {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)}


def report(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> tuple[dict[str, object], str]:
    """scikit-learn's classification_report over the labels, as a dict and as the seed's text.

    With masked entries, scikit-learn cannot leave single cells out, so each class is scored on its own
    unmasked rows and the averages are built the way scikit-learn builds them (micro from pooled counts).
    """
    labels = list(labels)
    if known(truth).all():
        kwargs = {"target_names": labels, "labels": list(range(len(labels))), "zero_division": 0}
        truth = np.asarray(truth).astype(int)
        as_dict = classification_report(truth, predicted, output_dict=True, **kwargs)
        return as_dict, classification_report(truth, predicted, **kwargs)
    rows: dict[str, dict[str, float]] = {}
    pooled = np.zeros(3)  # tp, fp, fn
    for j, label in enumerate(labels):
        ok = known(truth[:, j])
        y, p = truth[ok, j].astype(int), np.asarray(predicted)[ok, j].astype(int)
        precision, recall, f1, _ = precision_recall_fscore_support(
            y, p, labels=[1], average=None, zero_division=0
        )
        rows[label] = {
            "precision": float(precision[0]),
            "recall": float(recall[0]),
            "f1-score": float(f1[0]),
            "support": int(y.sum()),
        }
        pooled += [
            int(((p == 1) & (y == 1)).sum()),
            int(((p == 1) & (y == 0)).sum()),
            int(((p == 0) & (y == 1)).sum()),
        ]
    tp, fp, fn = pooled
    micro_p, micro_r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    support = sum(r["support"] for r in rows.values())
    as_dict: dict[str, object] = dict(rows)
    as_dict["micro avg"] = {
        "precision": micro_p,
        "recall": micro_r,
        "f1-score": 2 * tp / max(2 * tp + fp + fn, 1),
        "support": support,
    }
    for name, weights in (("macro avg", None), ("weighted avg", [r["support"] for r in rows.values()])):
        as_dict[name] = {
            key: float(np.average([r[key] for r in rows.values()], weights=weights if support else None))
            for key in ("precision", "recall", "f1-score")
        } | {"support": support}
    width = max(len(name) for name in [*labels, "weighted avg"])
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, row in as_dict.items():
        if name == "micro avg":
            lines.append("")
        lines.append(
            f"{name:>{width}} {row['precision']:>9.2f} {row['recall']:>9.2f} {row['f1-score']:>9.2f} "
            f"{row['support']:>9}"
        )
    lines.append(f"\n(masked labels left out per class: {int((~known(truth)).sum())} entries)")
    return as_dict, "\n".join(lines) + "\n"
