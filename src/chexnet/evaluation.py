"""Clinical-study evaluation: operating thresholds chosen on validation, per-class operating points,
calibration, and test-time augmentation.

Thresholds are chosen from **validation** predictions only and saved, so the test split is touched
once, to measure; :func:`choose_thresholds` never sees test labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import precision_recall_curve, roc_curve

from chexnet.metrics import known, undefined_reason

THRESHOLD_METHODS = ("youden", "max_f1")
TTA_MODES = ("none", "hflip", "tencrop")


def choose_thresholds(
    val_truth: np.ndarray, val_scores: np.ndarray, labels: Sequence[str], method: str = "youden"
) -> tuple[dict[str, float], dict[str, str]]:
    """One threshold per class from validation predictions.

    ``youden``: maximise sensitivity + specificity − 1 on the ROC curve; ``max_f1``: maximise F1 on
    the precision-recall curve. A class with no positives or no negatives in validation keeps 0.5
    (the seed's) and the reason is returned in the second dict. Masked entries take no part.
    """
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"evaluate.threshold_method must be one of {THRESHOLD_METHODS}, got {method!r}")
    thresholds: dict[str, float] = {}
    fallbacks: dict[str, str] = {}
    for j, label in enumerate(labels):
        reason = undefined_reason(val_truth[:, j])
        if reason:
            thresholds[label], fallbacks[label] = 0.5, f"{reason} (validation): the seed's 0.5 is used"
            continue
        ok = known(val_truth[:, j])
        truth, scores = val_truth[ok, j], val_scores[ok, j]
        if method == "youden":
            fpr, tpr, cuts = roc_curve(truth, scores)
            best = int(np.argmax(tpr - fpr))
        else:
            precision, recall, cuts = precision_recall_curve(truth, scores)
            f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
            best = int(np.argmax(f1))
        thresholds[label] = float(min(cuts[best], 1.0))  # roc_curve's first cut is +inf
    return thresholds, fallbacks


def operating_points(
    truth: np.ndarray, scores: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]
) -> dict[str, dict]:
    """Sensitivity, specificity, PPV, F1 and the 2×2 counts per class at the given thresholds."""
    out = {}
    for j, label in enumerate(labels):
        ok = known(truth[:, j])
        predicted = scores[ok, j] >= thresholds[label]
        actual = truth[ok, j].astype(bool)
        tp, fp = int((predicted & actual).sum()), int((predicted & ~actual).sum())
        fn, tn = int((~predicted & actual).sum()), int((~predicted & ~actual).sum())

        def ratio(a: int, b: int) -> float | None:
            return a / b if b else None

        out[label] = {
            "threshold": thresholds[label],
            "sensitivity": ratio(tp, tp + fn),
            "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp),
            "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "tn": tn,
        }
    return out


def binarize_at(scores: np.ndarray, thresholds: dict[str, float], labels: Sequence[str]) -> np.ndarray:
    return (scores >= np.array([thresholds[label] for label in labels])[None, :]).astype(np.uint8)


def reliability(
    truth: np.ndarray, scores: np.ndarray, bins: int = 10
) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error over equal-width probability bins, and the diagram's points.

    ECE = Σ_b (n_b / n) · |observed frequency_b − mean predicted probability_b|, over unmasked entries.
    """
    if bins < 1:
        raise ValueError(f"evaluate.calibration_bins must be 1 or more, got {bins}")
    truth, scores = np.asarray(truth, float).ravel(), np.asarray(scores, float).ravel()
    ok = known(truth)
    truth, scores = truth[ok], scores[ok]
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    ece, points = 0.0, []
    for b in range(bins):
        inside = which == b
        if not inside.any():
            continue
        predicted, observed = float(scores[inside].mean()), float(truth[inside].mean())
        ece += inside.mean() * abs(observed - predicted)
        points.append({"bin": b, "predicted": predicted, "observed": observed, "count": int(inside.sum())})
    return float(ece), points


def tta_views(batch: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of a normalised ``B×3×S×S`` batch whose probabilities are averaged.

    ``hflip``: the image and its mirror. ``tencrop`` (as arnoweng/CheXNet): the image enlarged by
    256/224 and cut into the four corners and centre, plus their mirrors; from the prepared cache,
    which already holds the image at S px, the enlargement is an upsampling.
    """
    if mode == "none":
        return [batch]
    if mode == "hflip":
        return [batch, batch.flip(-1)]
    if mode != "tencrop":
        raise ValueError(f"evaluate.tta must be one of {TTA_MODES}, got {mode!r}")
    size = batch.shape[-1]
    big = round(size * 256 / 224)
    enlarged = F.interpolate(batch, size=(big, big), mode="bilinear", align_corners=False, antialias=False)
    off = big - size
    corners = [(0, 0), (0, off), (off, 0), (off, off), (off // 2, off // 2)]
    crops = [enlarged[..., y : y + size, x : x + size] for y, x in corners]
    return crops + [crop.flip(-1) for crop in crops]
